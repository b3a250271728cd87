//! Recording a scenario's packets with tcpdump, and counting the probes in the recording:
//! a probe is the first packet of a distinct (source, destination, protocol, port or ICMP
//! type) contact from outside the watched addresses towards them.

use std::{
    collections::HashSet,
    net::IpAddr,
    path::{Path, PathBuf},
    process::{Child, Stdio},
    thread,
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context as _, bail};
use probe_userspace::net::pcap::{Capture, Flow};

use probe_netlab::netns::Netns;

/// tcpdump writing one interface's packets to a file.
pub struct Recorder {
    child: Option<Child>,
    path: PathBuf,
}

impl Recorder {
    /// Starts tcpdump on `dev` in `ns` (headers only: 256 bytes take a TCP header behind
    /// twelve IPv6 extension headers; in immediate mode, so a scan over within the capture
    /// buffer's timeout is not lost when tcpdump is stopped right after it) and waits until
    /// it listens.
    pub fn start(ns: &Netns, dev: &str, path: &Path) -> anyhow::Result<Self> {
        let file = path.display().to_string();
        let mut child = ns
            .exec(
                "tcpdump",
                &[
                    "-i",
                    dev,
                    "-n",
                    "-s",
                    "256",
                    "--immediate-mode",
                    "-U",
                    "-w",
                    &file,
                ],
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot start tcpdump")?;
        // tcpdump says "listening on DEV" on stderr once its socket is open.
        let stderr = child.stderr.take().context("no stderr")?;
        let (tx, rx) = std::sync::mpsc::channel();
        thread::spawn(move || {
            use std::io::BufRead as _;
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if line.contains("listening on") {
                    let _ = tx.send(());
                }
            }
        });
        if rx.recv_timeout(Duration::from_secs(10)).is_err() {
            let _ = child.kill();
            bail!("tcpdump did not start listening on {dev} within 10 s");
        }
        Ok(Self {
            child: Some(child),
            path: path.to_owned(),
        })
    }

    /// Stops tcpdump (SIGINT, so it flushes) and returns the file.
    pub fn stop(mut self) -> anyhow::Result<PathBuf> {
        if let Some(mut child) = self.child.take() {
            if let Ok(pid) = libc::pid_t::try_from(child.id()) {
                // SAFETY: kill with the pid of our own child and a valid signal number.
                unsafe { libc::kill(pid, libc::SIGINT) };
            }
            let started = Instant::now();
            while child.try_wait()?.is_none() {
                if started.elapsed() > Duration::from_secs(5) {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(self.path.clone())
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The probes of a recording, in time order.
#[derive(Debug, Default)]
pub struct Probes {
    /// When each new contact began.
    pub starts: Vec<SystemTime>,
    /// Packets towards the watched addresses from outside them (probes, retries, the
    /// rest of connections).
    pub packets: usize,
}

impl Probes {
    /// Reads a recording; `watched` says which addresses are the ones scanned.
    pub fn read(path: &Path, watched: impl Fn(IpAddr) -> bool) -> anyhow::Result<Self> {
        let bytes =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        let capture =
            Capture::parse(&bytes).with_context(|| format!("{} is damaged", path.display()))?;
        let mut seen = HashSet::new();
        let mut probes = Self::default();
        for packet in capture.packets() {
            let packet = packet?;
            let Some(flow) = Flow::of(packet.data) else {
                continue;
            };
            if !watched(flow.dst) || watched(flow.src) {
                continue;
            }
            // Neighbour discovery (ICMPv6 133 to 137) finds the link-layer address of an
            // address; it probes nothing.
            if flow.proto == 58 && flow.port.is_some_and(|t| (133..=137).contains(&t)) {
                continue;
            }
            probes.packets += 1;
            if seen.insert((flow.src, flow.dst, flow.proto, flow.port)) {
                probes.starts.push(SystemTime::UNIX_EPOCH + packet.time);
            }
        }
        Ok(probes)
    }

    /// When the first probe was seen.
    pub fn first(&self) -> Option<SystemTime> {
        self.starts.first().copied()
    }

    /// Probes seen up to `time`.
    pub fn before(&self, time: SystemTime) -> usize {
        self.starts.partition_point(|t| *t <= time)
    }
}
