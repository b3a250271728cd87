//! Real services in a lab namespace: TCP listeners that answer each connection with a
//! small HTTP response, and UDP sockets that echo, until dropped.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, SocketAddrV4, TcpListener, UdpSocket},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    thread::{self, JoinHandle},
    time::Duration,
};

use anyhow::{Context as _, bail};

use crate::netns::Netns;

/// Listeners running on a thread inside a namespace.
pub struct Listeners {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Listeners {
    /// Binds every TCP and UDP address inside `ns` before returning.
    pub fn start(ns: &Netns, tcp: &[SocketAddr], udp: &[SocketAddr]) -> anyhow::Result<Self> {
        let (tcp, udp) = (tcp.to_vec(), udp.to_vec());
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let (ready_tx, ready_rx) = mpsc::channel();
        let thread = ns.within(move || {
            let bound = (|| {
                let tcp = tcp
                    .iter()
                    .map(|a| TcpListener::bind(a).with_context(|| format!("bind tcp {a}")))
                    .collect::<anyhow::Result<Vec<_>>>()?;
                let udp = udp
                    .iter()
                    .map(|a| UdpSocket::bind(a).with_context(|| format!("bind udp {a}")))
                    .collect::<anyhow::Result<Vec<_>>>()?;
                for l in &tcp {
                    l.set_nonblocking(true)?;
                }
                for s in &udp {
                    s.set_nonblocking(true)?;
                }
                anyhow::Ok((tcp, udp))
            })();
            let (tcp, udp) = match bound {
                Ok(sockets) => {
                    let _ = ready_tx.send(Ok(()));
                    sockets
                }
                Err(err) => {
                    let _ = ready_tx.send(Err(format!("{err:#}")));
                    return Err(err);
                }
            };
            serve(&flag, &tcp, &udp);
            Ok(())
        })?;
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .context("the listener thread did not start")?
            .map_err(|err| anyhow::anyhow!("listeners in {}: {err}", ns.name))?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

fn serve(stop: &AtomicBool, tcp: &[TcpListener], udp: &[UdpSocket]) {
    let mut buf = [0u8; 1500];
    while !stop.load(Ordering::Relaxed) {
        let mut busy = false;
        for l in tcp {
            while let Ok((mut conn, _)) = l.accept() {
                busy = true;
                let _ = conn.set_nonblocking(false);
                let _ = conn.set_read_timeout(Some(Duration::from_millis(200)));
                let _ = conn.read(&mut buf);
                let _ = conn.write_all(
                    b"HTTP/1.0 200 OK\r\nContent-Length: 6\r\nConnection: close\r\n\r\nhello\n",
                );
            }
        }
        for s in udp {
            while let Ok((len, from)) = s.recv_from(&mut buf) {
                busy = true;
                let _ = s.send_to(&buf[..len], from);
            }
        }
        if !busy {
            thread::sleep(Duration::from_millis(2));
        }
    }
}

impl Drop for Listeners {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Connects from `local` (a fixed port, as an active-FTP server's port 20) to `remote`
/// inside `ns`, with SO_REUSEADDR so the port may be reused while an earlier connection
/// from it lingers in TIME_WAIT; reads what the other side sends until it closes.
pub fn connect_from(ns: &Netns, local: SocketAddrV4, remote: SocketAddrV4) -> anyhow::Result<()> {
    ns.within(move || {
        // SAFETY: plain socket calls on a descriptor this closure owns (wrapped in an
        // OwnedFd at once, so it is closed on every path); the sockaddr structs are
        // initialised and live across the calls that read them.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
            if fd < 0 {
                bail!("socket: {}", std::io::Error::last_os_error());
            }
            let fd = OwnedFd::from_raw_fd(fd);
            let one: libc::c_int = 1;
            let sockaddr = |a: SocketAddrV4| libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from(*a.ip()).to_be(),
                },
                sin_zero: [0; 8],
            };
            let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            let (from, to) = (sockaddr(local), sockaddr(remote));
            if libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_REUSEADDR,
                (&raw const one).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            ) != 0
                || libc::bind(fd.as_raw_fd(), (&raw const from).cast(), len) != 0
                || libc::connect(fd.as_raw_fd(), (&raw const to).cast(), len) != 0
            {
                bail!("{local} -> {remote}: {}", std::io::Error::last_os_error());
            }
            let mut stream = std::net::TcpStream::from(fd);
            stream.set_read_timeout(Some(Duration::from_secs(3)))?;
            stream.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
            let mut reply = Vec::new();
            stream.read_to_end(&mut reply)?;
            Ok(())
        }
    })?
    .join()
    .map_err(|_| anyhow::anyhow!("the connecting thread panicked"))?
}
