//! Crafted frames sent onto a lab veth from inside a namespace (an AF_PACKET socket): what a
//! forger sends, at a rate no scanner tool reaches, with source addresses that must stay in
//! 198.18.0.0/15 (checked here: this is the one place a test picks its own sources).

use std::{ffi::CString, os::fd::FromRawFd as _, os::fd::OwnedFd};

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
    let tcp = &mut f[34..54];
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
    f
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
/// whose IPv4 source is outside 198.18.0.0/15.
pub fn inject(ns: &Netns, dev: &str, frames: Vec<Vec<u8>>) -> anyhow::Result<usize> {
    for frame in &frames {
        ensure!(
            frame.len() >= 34 && frame[26] == 198 && (frame[27] & 0xfe) == 18,
            "a lab frame's IPv4 source must be in 198.18.0.0/15"
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
    }
}
