//! Route netlink: a socket that hears this namespace's address, route and neighbour
//! changes (so the daemon can look again), and a dump of the neighbour table.

use std::{
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd as _, OwnedFd, RawFd},
};

/// A route-netlink socket subscribed to address, route, link and neighbour changes.
#[derive(Debug)]
pub struct Monitor {
    fd: OwnedFd,
}

impl Monitor {
    /// Opens the socket (non-blocking) and joins the change groups.
    pub fn open() -> io::Result<Self> {
        let groups = libc::RTMGRP_LINK
            | libc::RTMGRP_NEIGH
            | libc::RTMGRP_IPV4_IFADDR
            | libc::RTMGRP_IPV6_IFADDR
            | libc::RTMGRP_IPV4_ROUTE
            | libc::RTMGRP_IPV6_ROUTE;
        let fd = socket(libc::SOCK_NONBLOCK)?;
        bind(&fd, groups as u32)?;
        Ok(Self { fd })
    }

    /// Reads every message waiting; true when there was at least one (or the kernel
    /// dropped some for want of buffer: something changed all the same).
    pub fn drain(&self) -> bool {
        let mut buf = [0u8; 8192];
        let mut heard = false;
        loop {
            // SAFETY: `buf` is valid and writable for its length.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if n > 0 {
                heard = true;
                continue;
            }
            if n < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ENOBUFS) {
                heard = true;
                continue;
            }
            return heard;
        }
    }
}

impl AsRawFd for Monitor {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl AsFd for Monitor {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// A neighbour-table entry worth trusting: its address, interface and link-layer address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Neighbour {
    /// The neighbour's IP address.
    pub addr: IpAddr,
    /// The interface it is on.
    pub ifindex: u32,
    /// Its link-layer (Ethernet) address; zero when it has none of six bytes.
    pub mac: [u8; 6],
}

/// The neighbour table (ARP and NDP) entries that a host answered on: reachable, stale,
/// delayed, being probed, or permanent (not incomplete, failed or no-ARP).
pub fn neighbours() -> io::Result<Vec<Neighbour>> {
    let fd = socket(0)?;
    bind(&fd, 0)?;
    // nlmsghdr (16 bytes) then ndmsg (12 bytes), family AF_UNSPEC: both families.
    let mut request = [0u8; 28];
    request[0..4].copy_from_slice(&28u32.to_ne_bytes());
    request[4..6].copy_from_slice(&libc::RTM_GETNEIGH.to_ne_bytes());
    let flags = (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16;
    request[6..8].copy_from_slice(&flags.to_ne_bytes());
    request[8..12].copy_from_slice(&1u32.to_ne_bytes());
    // SAFETY: `request` is valid for its length; the socket is open.
    if unsafe { libc::send(fd.as_raw_fd(), request.as_ptr().cast(), request.len(), 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut found = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // SAFETY: `buf` is valid and writable for its length.
        let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        match parse_neighbours(&buf[..n as usize], &mut found) {
            Parsed::More => {}
            Parsed::Done => return Ok(found),
            Parsed::Error(code) => return Err(io::Error::from_raw_os_error(code)),
        }
    }
}

enum Parsed {
    More,
    Done,
    Error(i32),
}

/// Parses one datagram of a neighbour dump into `out`.
fn parse_neighbours(mut data: &[u8], out: &mut Vec<Neighbour>) -> Parsed {
    const GOOD: u16 = libc::NUD_REACHABLE
        | libc::NUD_STALE
        | libc::NUD_DELAY
        | libc::NUD_PROBE
        | libc::NUD_PERMANENT;
    while data.len() >= 16 {
        let len = u32::from_ne_bytes(data[0..4].try_into().unwrap_or_default()) as usize;
        let kind = u16::from_ne_bytes([data[4], data[5]]);
        if len < 16 || len > data.len() {
            return Parsed::Done;
        }
        let msg = &data[16..len];
        match i32::from(kind) {
            libc::NLMSG_DONE => return Parsed::Done,
            libc::NLMSG_ERROR => {
                let code = msg
                    .get(0..4)
                    .map_or(0, |b| i32::from_ne_bytes(b.try_into().unwrap_or_default()));
                if code != 0 {
                    return Parsed::Error(-code);
                }
            }
            _ if kind == libc::RTM_NEWNEIGH && msg.len() >= 12 => {
                let family = i32::from(msg[0]);
                let ifindex = u32::from_ne_bytes(msg[4..8].try_into().unwrap_or_default());
                let state = u16::from_ne_bytes([msg[8], msg[9]]);
                if state & GOOD != 0
                    && let Some(addr) =
                        attribute(&msg[12..], libc::NDA_DST).and_then(|raw| address(family, raw))
                {
                    let mac = attribute(&msg[12..], libc::NDA_LLADDR)
                        .and_then(|raw| <[u8; 6]>::try_from(raw).ok())
                        .unwrap_or_default();
                    out.push(Neighbour { addr, ifindex, mac });
                }
            }
            _ => {}
        }
        data = &data[align(len).min(data.len())..];
    }
    Parsed::More
}

/// The payload of the first route attribute of type `kind`.
fn attribute(mut attrs: &[u8], kind: u16) -> Option<&[u8]> {
    while attrs.len() >= 4 {
        let len = usize::from(u16::from_ne_bytes([attrs[0], attrs[1]]));
        let this = u16::from_ne_bytes([attrs[2], attrs[3]]);
        if len < 4 || len > attrs.len() {
            return None;
        }
        if this == kind {
            return Some(&attrs[4..len]);
        }
        attrs = &attrs[align(len).min(attrs.len())..];
    }
    None
}

fn address(family: i32, raw: &[u8]) -> Option<IpAddr> {
    match family {
        libc::AF_INET => <[u8; 4]>::try_from(raw)
            .ok()
            .map(|o| IpAddr::V4(Ipv4Addr::from(o))),
        libc::AF_INET6 => <[u8; 16]>::try_from(raw)
            .ok()
            .map(|o| IpAddr::V6(Ipv6Addr::from(o))),
        _ => None,
    }
}

fn align(len: usize) -> usize {
    (len + 3) & !3
}

fn socket(flags: i32) -> io::Result<OwnedFd> {
    // SAFETY: plain socket call; the result is checked.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC | flags,
            libc::NETLINK_ROUTE,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn bind(fd: &OwnedFd, groups: u32) -> io::Result<()> {
    // SAFETY: an all-zero sockaddr_nl is valid; the fields that matter are set below.
    let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as u16;
    addr.nl_groups = groups;
    // SAFETY: `addr` is a valid sockaddr_nl of the length given.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&raw const addr).cast(),
            size_of::<libc::sockaddr_nl>() as u32,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(kind: u16, body: &[u8]) -> Vec<u8> {
        let len = 16 + body.len();
        let mut m = Vec::new();
        m.extend((len as u32).to_ne_bytes());
        m.extend(kind.to_ne_bytes());
        m.extend([0u8; 10]);
        m.extend(body);
        m.resize(align(len), 0);
        m
    }

    fn neigh(family: u8, state: u16, dst: &[u8]) -> Vec<u8> {
        let mut body = vec![family, 0, 0, 0];
        body.extend(7u32.to_ne_bytes());
        body.extend(state.to_ne_bytes());
        body.extend([0, 0]);
        // A link-layer address attribute first, then NDA_DST.
        body.extend(10u16.to_ne_bytes());
        body.extend(libc::NDA_LLADDR.to_ne_bytes());
        body.extend([1, 2, 3, 4, 5, 6, 0, 0]);
        body.extend(((4 + dst.len()) as u16).to_ne_bytes());
        body.extend(libc::NDA_DST.to_ne_bytes());
        body.extend(dst);
        message(libc::RTM_NEWNEIGH, &body)
    }

    #[test]
    fn a_dump_gives_the_trusted_entries_of_both_families() {
        let mut data = neigh(libc::AF_INET as u8, libc::NUD_REACHABLE, &[198, 18, 0, 1]);
        data.extend(neigh(
            libc::AF_INET as u8,
            libc::NUD_FAILED,
            &[198, 18, 0, 2],
        ));
        data.extend(neigh(
            libc::AF_INET as u8,
            libc::NUD_INCOMPLETE,
            &[198, 18, 0, 3],
        ));
        let v6: Ipv6Addr = "2001:db8::1".parse().unwrap();
        data.extend(neigh(libc::AF_INET6 as u8, libc::NUD_STALE, &v6.octets()));
        let mut out = Vec::new();
        assert!(matches!(parse_neighbours(&data, &mut out), Parsed::More));
        let addrs: Vec<IpAddr> = out.iter().map(|n| n.addr).collect();
        assert_eq!(
            addrs,
            ["198.18.0.1".parse::<IpAddr>().unwrap(), IpAddr::V6(v6)]
        );
        assert_eq!(out[0].ifindex, 7);
        assert_eq!(out[0].mac, [1, 2, 3, 4, 5, 6]);
        assert!(matches!(
            parse_neighbours(&message(libc::NLMSG_DONE as u16, &[0; 4]), &mut out),
            Parsed::Done
        ));
    }

    #[test]
    fn cut_short_messages_end_the_parse_without_a_panic() {
        let data = neigh(libc::AF_INET as u8, libc::NUD_REACHABLE, &[198, 18, 0, 1]);
        for cut in 0..data.len() {
            let mut out = Vec::new();
            let _ = parse_neighbours(&data[..cut], &mut out);
            assert!(out.len() <= 1);
        }
    }

    #[test]
    fn the_live_table_can_be_read() {
        // Any namespace has a table, empty or not; reading it needs no privileges.
        neighbours().unwrap();
        let monitor = Monitor::open().unwrap();
        let _ = monitor.drain();
    }
}
