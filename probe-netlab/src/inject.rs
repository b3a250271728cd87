//! Crafted frames sent onto a lab veth from inside a namespace (an AF_PACKET socket): what a
//! forger sends, at a rate no scanner tool reaches, or what no tool crafts (long IPv6
//! extension-header chains), with source addresses that must stay in 198.18.0.0/15 or
//! 2001:db8::/32 (checked here: this is the one place a test picks its own sources).

use std::{ffi::CString, net::IpAddr, os::fd::FromRawFd as _, os::fd::OwnedFd};

use anyhow::{bail, ensure};

use crate::netns::Netns;

/// A TCP SYN as an Ethernet frame with valid IPv4 and TCP checksums, so that the receiving
/// stack answers it (an RST from a closed port).
pub fn tcp_syn(
    macs: ([u8; 6], [u8; 6]),
    src: [u8; 4],
    dst: [u8; 4],
    src_port: u16,
    dst_port: u16,
) -> Vec<u8> {
    tcp_frame(macs, (src, src_port), (dst, dst_port), 0x02)
}

/// A TCP segment with `flags` and no payload as an Ethernet frame (source and destination
/// link-layer addresses in `macs`), with valid IPv4 and TCP checksums.
pub fn tcp_frame(
    macs: ([u8; 6], [u8; 6]),
    (src, src_port): ([u8; 4], u16),
    (dst, dst_port): ([u8; 4], u16),
    flags: u8,
) -> Vec<u8> {
    let (src_mac, dst_mac) = macs;
    let mut f = vec![0u8; 14 + 20 + 20];
    f[0..6].copy_from_slice(&dst_mac);
    f[6..12].copy_from_slice(&src_mac);
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    {
        let ip = &mut f[14..34];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&40u16.to_be_bytes());
        ip[8] = 64;
        ip[9] = 6;
        ip[12..16].copy_from_slice(&src);
        ip[16..20].copy_from_slice(&dst);
        let sum = checksum(0, ip);
        ip[10..12].copy_from_slice(&sum.to_be_bytes());
    }
    tcp_header(&mut f[34..54], (&src, src_port), (&dst, dst_port), flags);
    f
}

/// Fills a 20-byte TCP header (no options) with its checksum over the pseudo-header of
/// the addresses (IPv4 or IPv6: the sum is the same form).
fn tcp_header(
    tcp: &mut [u8],
    (src, src_port): (&[u8], u16),
    (dst, dst_port): (&[u8], u16),
    flags: u8,
) {
    tcp[0..2].copy_from_slice(&src_port.to_be_bytes());
    tcp[2..4].copy_from_slice(&dst_port.to_be_bytes());
    tcp[4..8].copy_from_slice(&u32::from(src_port).wrapping_mul(7919).to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = flags;
    tcp[14..16].copy_from_slice(&64_240u16.to_be_bytes());
    let mut pseudo = 0u32;
    for pair in src.chunks(2).chain(dst.chunks(2)) {
        pseudo += u32::from(u16::from_be_bytes([pair[0], pair[1]]));
    }
    pseudo += 6 + 20;
    let sum = checksum(pseudo, tcp);
    tcp[16..18].copy_from_slice(&sum.to_be_bytes());
}

/// A TCP segment with `flags` over IPv6 as an Ethernet frame, after `dest_opts`
/// destination options headers (8 bytes each, padding only; Linux accepts any number),
/// with a valid TCP checksum.
pub fn tcp6_frame(
    macs: ([u8; 6], [u8; 6]),
    (src, src_port): ([u8; 16], u16),
    (dst, dst_port): ([u8; 16], u16),
    flags: u8,
    dest_opts: usize,
) -> Vec<u8> {
    let (src_mac, dst_mac) = macs;
    let chain = 8 * dest_opts;
    let mut f = vec![0u8; 14 + 40 + chain + 20];
    f[0..6].copy_from_slice(&dst_mac);
    f[6..12].copy_from_slice(&src_mac);
    f[12..14].copy_from_slice(&0x86ddu16.to_be_bytes());
    {
        let ip = &mut f[14..54];
        ip[0] = 0x60;
        ip[4..6].copy_from_slice(&((chain + 20) as u16).to_be_bytes());
        ip[6] = if dest_opts > 0 { 60 } else { 6 };
        ip[7] = 64;
        ip[8..24].copy_from_slice(&src);
        ip[24..40].copy_from_slice(&dst);
    }
    for i in 0..dest_opts {
        let header = &mut f[54 + 8 * i..62 + 8 * i];
        header[0] = if i + 1 == dest_opts { 6 } else { 60 };
        header[1] = 0;
        // PadN of four bytes fills the header's six bytes of options with its own two.
        header[2] = 1;
        header[3] = 4;
    }
    tcp_header(
        &mut f[54 + chain..],
        (&src, src_port),
        (&dst, dst_port),
        flags,
    );
    f
}

/// A TCP segment over IPv6 in two fragments, as `nmap -f` would send it if it could over
/// IPv6: the first carries eight bytes of the TCP header (ports and sequence number, no
/// flags), the second the rest; the receiving stack reassembles and answers the segment.
pub fn tcp6_fragments(
    macs: ([u8; 6], [u8; 6]),
    src: ([u8; 16], u16),
    dst: ([u8; 16], u16),
    flags: u8,
    id: u32,
) -> [Vec<u8>; 2] {
    let whole = tcp6_frame(macs, src, dst, flags, 0);
    let (head, tcp) = whole.split_at(54);
    let fragment = |offset: usize, more: bool, data: &[u8]| {
        let mut f = head.to_vec();
        f[18..20].copy_from_slice(&((8 + data.len()) as u16).to_be_bytes());
        f[20] = 44;
        let offset_flags = ((offset / 8) as u16) << 3 | u16::from(more);
        f.extend_from_slice(&[6, 0]);
        f.extend_from_slice(&offset_flags.to_be_bytes());
        f.extend_from_slice(&id.to_be_bytes());
        f.extend_from_slice(data);
        f
    };
    [fragment(0, true, &tcp[..8]), fragment(8, false, &tcp[8..])]
}

/// True for the lab's own addresses: IPv4 in 198.18.0.0/15, IPv6 in 2001:db8::/32.
pub fn lab_address(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.octets()[0] == 198 && v4.octets()[1] & 0xfe == 18,
        IpAddr::V6(v6) => v6.segments()[..2] == [0x2001, 0xdb8],
    }
}

/// True when a frame's source address is the lab's own ([`lab_address`]).
fn lab_source(frame: &[u8]) -> bool {
    let source = match frame.get(12..14) {
        Some([0x08, 0x00]) => frame
            .get(26..30)
            .and_then(|a| <[u8; 4]>::try_from(a).ok())
            .map(IpAddr::from),
        Some([0x86, 0xdd]) => frame
            .get(22..38)
            .and_then(|a| <[u8; 16]>::try_from(a).ok())
            .map(IpAddr::from),
        _ => None,
    };
    source.is_some_and(lab_address)
}

/// The Internet checksum of `data`, starting from the partial sum `start`.
fn checksum(start: u32, data: &[u8]) -> u16 {
    let mut sum = start;
    for pair in data.chunks(2) {
        let hi = u32::from(pair[0]) << 8;
        sum += hi | pair.get(1).map_or(0, |&lo| u32::from(lo));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Sends `frames` out of `dev` inside `ns`; returns how many were sent. Refuses frames
/// that are not IP from 198.18.0.0/15 or 2001:db8::/32.
pub fn inject(ns: &Netns, dev: &str, frames: Vec<Vec<u8>>) -> anyhow::Result<usize> {
    for frame in &frames {
        ensure!(
            lab_source(frame),
            "a lab frame's source must be in 198.18.0.0/15 or 2001:db8::/32"
        );
    }
    let dev = CString::new(dev)?;
    let sent = ns.within(move || {
        // SAFETY: plain socket calls on a descriptor owned at once by an OwnedFd (closed on
        // every path); `addr` and each frame are valid for the calls that read them.
        unsafe {
            let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0);
            if fd < 0 {
                bail!("AF_PACKET socket: {}", std::io::Error::last_os_error());
            }
            let fd = OwnedFd::from_raw_fd(fd);
            let index = libc::if_nametoindex(dev.as_ptr());
            ensure!(index != 0, "no interface {dev:?} in the namespace");
            let mut addr: libc::sockaddr_ll = std::mem::zeroed();
            addr.sll_family = libc::AF_PACKET as u16;
            addr.sll_ifindex = index as i32;
            addr.sll_halen = 6;
            let mut sent = 0;
            for frame in &frames {
                let n = libc::sendto(
                    std::os::fd::AsRawFd::as_raw_fd(&fd),
                    frame.as_ptr().cast(),
                    frame.len(),
                    0,
                    (&raw const addr).cast(),
                    size_of::<libc::sockaddr_ll>() as u32,
                );
                if n < 0 {
                    let err = std::io::Error::last_os_error();
                    // The device queue is full: give it a moment and go on.
                    if err.raw_os_error() == Some(libc::ENOBUFS) {
                        std::thread::sleep(std::time::Duration::from_micros(200));
                        continue;
                    }
                    bail!("sendto: {err}");
                }
                sent += 1;
            }
            Ok(sent)
        }
    })?;
    sent.join()
        .map_err(|_| anyhow::anyhow!("the sending thread panicked"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_verify_to_zero() {
        let f = tcp_syn(
            ([2; 6], [4; 6]),
            [198, 18, 7, 1],
            [198, 18, 7, 2],
            40_000,
            22,
        );
        assert_eq!(checksum(0, &f[14..34]), 0, "IPv4 header");
        let mut pseudo = 0u32;
        for pair in f[26..34].chunks(2) {
            pseudo += u32::from(u16::from_be_bytes([pair[0], pair[1]]));
        }
        assert_eq!(checksum(pseudo + 6 + 20, &f[34..54]), 0, "TCP");
        assert!(lab_source(&f));
        let outside = tcp_syn(([2; 6], [4; 6]), [10, 0, 0, 1], [198, 18, 7, 2], 1, 22);
        assert!(!lab_source(&outside));
    }

    #[test]
    fn ipv6_chains_carry_a_valid_segment() {
        let src: [u8; 16] = "2001:db8:7::1"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets();
        let dst: [u8; 16] = "2001:db8:7::2"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets();
        let f = tcp6_frame(([2; 6], [4; 6]), (src, 40_000), (dst, 22), 0x02, 12);
        assert_eq!(f.len(), 14 + 40 + 96 + 20);
        assert_eq!((f[20], f[54], f[54 + 88]), (60, 60, 6));
        let mut pseudo = 0u32;
        for pair in f[22..54].chunks(2) {
            pseudo += u32::from(u16::from_be_bytes([pair[0], pair[1]]));
        }
        assert_eq!(checksum(pseudo + 6 + 20, &f[150..170]), 0, "TCP");
        assert!(lab_source(&f));
        let mut doc = f.clone();
        doc[23] = 0x0e;
        assert!(!lab_source(&doc));
        // In two fragments: 8 bytes, then 12, with one identification.
        let [first, second] = tcp6_fragments(([2; 6], [4; 6]), (src, 40_000), (dst, 22), 2, 7);
        assert_eq!(
            (first.len(), second.len()),
            (14 + 40 + 8 + 8, 14 + 40 + 8 + 12)
        );
        assert_eq!((first[20], first[54], first[57], second[57]), (44, 6, 1, 8));
        assert_eq!(
            &first[62..70],
            &tcp6_frame(([2; 6], [4; 6]), (src, 40_000), (dst, 22), 2, 0)[54..62]
        );
        assert!(lab_source(&first) && lab_source(&second));
    }
}
