//! Reading packet captures in the classic pcap format (what `tcpdump -w` writes), with
//! microsecond or nanosecond timestamps, either byte order, Ethernet link type. Every
//! length is checked before it is used: a damaged file is a clear error naming the record.

use std::{net::IpAddr, time::Duration};

/// Link type of Ethernet frames (LINKTYPE_ETHERNET).
const LINKTYPE_ETHERNET: u32 = 1;
/// Largest record accepted (the kernel's test runs take at most a page or so anyway).
const MAX_RECORD: u32 = 256 * 1024;

/// Why a capture cannot be read.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum PcapError {
    /// Shorter than the 24-byte file header.
    #[error("not a pcap file: {0} bytes, shorter than a pcap header")]
    TooShort(usize),
    /// pcapng (what Wireshark and dumpcap write by default).
    #[error(
        "a pcapng file: convert it to pcap first (editcap -F pcap IN OUT, or tcpdump -r IN -w OUT)"
    )]
    Pcapng,
    /// Not a capture at all.
    #[error("not a pcap file (magic number {0:#010x})")]
    Magic(u32),
    /// Not Ethernet.
    #[error("link type {0} is not supported: only Ethernet captures (link type 1)")]
    LinkType(u32),
    /// A record runs past the end of the file or is absurdly long.
    #[error("record {index} is damaged: {problem}")]
    Record { index: usize, problem: String },
}

/// One captured packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packet<'a> {
    /// Capture time, since the Unix epoch.
    pub time: Duration,
    /// The bytes captured (possibly fewer than were on the wire).
    pub data: &'a [u8],
}

/// The packets of a capture held in memory.
#[derive(Debug)]
pub struct Capture<'a> {
    bytes: &'a [u8],
    big_endian: bool,
    nanos: bool,
}

impl<'a> Capture<'a> {
    /// Checks the file header of `bytes`.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, PcapError> {
        let header = bytes.get(..24).ok_or(PcapError::TooShort(bytes.len()))?;
        let magic = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        let (big_endian, nanos) = match magic {
            0xa1b2_c3d4 => (false, false),
            0xa1b2_3c4d => (false, true),
            0xd4c3_b2a1 => (true, false),
            0x4d3c_b2a1 => (true, true),
            0x0a0d_0d0a => return Err(PcapError::Pcapng),
            other => return Err(PcapError::Magic(other)),
        };
        let capture = Self {
            bytes,
            big_endian,
            nanos,
        };
        let linktype = capture.u32_at(20) & 0x0fff_ffff;
        if linktype != LINKTYPE_ETHERNET {
            return Err(PcapError::LinkType(linktype));
        }
        Ok(capture)
    }

    fn u32_at(&self, offset: usize) -> u32 {
        let b = [
            self.bytes[offset],
            self.bytes[offset + 1],
            self.bytes[offset + 2],
            self.bytes[offset + 3],
        ];
        if self.big_endian {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        }
    }

    /// The packets, in file order; the first damaged record ends the walk with its error.
    pub fn packets(&self) -> impl Iterator<Item = Result<Packet<'a>, PcapError>> + '_ {
        let mut offset = 24;
        let mut index = 0;
        let mut failed = false;
        std::iter::from_fn(move || {
            if failed || offset == self.bytes.len() {
                return None;
            }
            let damaged = |problem: String| PcapError::Record { index, problem };
            if self.bytes.len() - offset < 16 {
                failed = true;
                return Some(Err(damaged(format!(
                    "{} bytes left, shorter than a record header",
                    self.bytes.len() - offset
                ))));
            }
            let secs = self.u32_at(offset);
            let fraction = self.u32_at(offset + 4);
            let caplen = self.u32_at(offset + 8);
            let start = offset + 16;
            if caplen > MAX_RECORD || self.bytes.len() - start < caplen as usize {
                failed = true;
                return Some(Err(damaged(format!(
                    "{caplen} captured bytes, {} left in the file",
                    self.bytes.len() - start
                ))));
            }
            let fraction = if self.nanos {
                Duration::from_nanos(u64::from(fraction))
            } else {
                Duration::from_micros(u64::from(fraction))
            };
            let end = start + caplen as usize;
            let packet = Packet {
                time: Duration::from_secs(u64::from(secs)) + fraction,
                data: &self.bytes[start..end],
            };
            offset = end;
            index += 1;
            Some(Ok(packet))
        })
    }
}

/// What one Ethernet frame carries, as far as it can be read: addresses, protocol and
/// destination port. Replay takes the direction from it and the lab counts probes with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flow {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// IP protocol number (IPv6: after the extension headers, however many).
    pub proto: u8,
    /// TCP or UDP destination port, or the ICMP type; `None` if the header is cut short.
    pub port: Option<u16>,
    /// TCP flags, for TCP.
    pub tcp_flags: Option<u8>,
}

impl Flow {
    /// Reads an Ethernet frame with IPv4 or IPv6 (after up to two VLAN tags); `None` for
    /// anything else or a frame too short for both addresses.
    pub fn of(frame: &[u8]) -> Option<Self> {
        let be16 = |at: usize| Some(u16::from_be_bytes([*frame.get(at)?, *frame.get(at + 1)?]));
        let mut offset = 12;
        let mut ethertype = be16(offset)?;
        for _ in 0..2 {
            if ethertype != 0x8100 && ethertype != 0x88a8 {
                break;
            }
            offset += 4;
            ethertype = be16(offset)?;
        }
        let ip = offset + 2;
        let (src, dst, proto, transport) = match ethertype {
            0x0800 => {
                // A later fragment has no transport header: no flow to read.
                if be16(ip + 6)? & 0x1fff != 0 {
                    return None;
                }
                let src: [u8; 4] = frame.get(ip + 12..ip + 16)?.try_into().ok()?;
                let dst: [u8; 4] = frame.get(ip + 16..ip + 20)?.try_into().ok()?;
                let ihl = usize::from(frame[ip] & 0x0f) * 4;
                (
                    IpAddr::from(src),
                    IpAddr::from(dst),
                    frame[ip + 9],
                    ip + ihl,
                )
            }
            0x86dd => {
                let src: [u8; 16] = frame.get(ip + 8..ip + 24)?.try_into().ok()?;
                let dst: [u8; 16] = frame.get(ip + 24..ip + 40)?.try_into().ok()?;
                let (proto, transport) = walk_ipv6(frame, frame[ip + 6], ip + 40);
                // A later fragment has no transport header, as over IPv4.
                if proto == 44 && frame.get(transport..transport + 8).is_some() {
                    return None;
                }
                (IpAddr::from(src), IpAddr::from(dst), proto, transport)
            }
            _ => return None,
        };
        let (port, tcp_flags) = match proto {
            6 => (be16(transport + 2), frame.get(transport + 13).copied()),
            // UDP and SCTP: the destination port after the source port.
            17 | 132 => (be16(transport + 2), None),
            1 | 58 => (frame.get(transport).map(|&t| u16::from(t)), None),
            _ => (None, None),
        };
        Some(Self {
            src,
            dst,
            proto,
            port,
            tcp_flags: tcp_flags.filter(|_| port.is_some()),
        })
    }
}

/// Steps over IPv6 extension headers (hop-by-hop, routing, destination options, the first
/// fragment's header, AH), as many as the frame holds; returns the protocol and where its
/// header begins (a later fragment, or a chain cut short: the header's own number and
/// place).
fn walk_ipv6(frame: &[u8], mut next: u8, mut at: usize) -> (u8, usize) {
    loop {
        let len = match next {
            0 | 43 | 60 => frame.get(at + 1).map(|&l| (usize::from(l) + 1) * 8),
            51 => frame.get(at + 1).map(|&l| (usize::from(l) + 2) * 4),
            44 => {
                let offset = frame
                    .get(at + 2..at + 4)
                    .map(|b| u16::from_be_bytes([b[0], b[1]]) >> 3);
                match offset {
                    Some(0) => Some(8),
                    _ => None,
                }
            }
            _ => return (next, at),
        };
        match (len, frame.get(at)) {
            (Some(len), Some(&following)) => {
                next = following;
                at += len;
            }
            _ => return (next, at),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flow_is_read_through_vlan_tags_and_never_past_the_end() {
        let mut v4 = vec![0u8; 12];
        v4.extend_from_slice(&[0x81, 0x00, 0, 7, 0x08, 0x00]);
        v4.extend_from_slice(&[0x45, 0, 0, 40, 0, 0, 0, 0, 64, 6, 0, 0]);
        v4.extend_from_slice(&[198, 18, 0, 1, 198, 18, 0, 2]);
        v4.extend_from_slice(&[0x30, 0x39, 0, 80, 0, 0, 0, 0, 0, 0, 0, 0, 0x50, 0x02]);
        let flow = Flow::of(&v4).unwrap();
        assert_eq!(flow.src, "198.18.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(flow.dst, "198.18.0.2".parse::<IpAddr>().unwrap());
        assert_eq!(
            (flow.proto, flow.port, flow.tcp_flags),
            (6, Some(80), Some(0x02))
        );
        // Cut inside TCP: addresses but no port.
        let short = Flow::of(&v4[..v4.len() - 12]).unwrap();
        assert_eq!((short.port, short.tcp_flags), (None, None));
        let mut v6 = vec![0u8; 12];
        v6.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0, 0, 8, 58, 64]);
        let src: std::net::Ipv6Addr = "2001:db8::7".parse().unwrap();
        v6.extend_from_slice(&src.octets());
        v6.extend_from_slice(&[0; 16]);
        v6.extend_from_slice(&[128, 0, 0, 0]);
        let flow = Flow::of(&v6).unwrap();
        assert_eq!(
            (flow.src, flow.proto, flow.port),
            (IpAddr::V6(src), 58, Some(128))
        );
        // Too short, or not IP: nothing, never a panic.
        for len in 0..54 {
            assert_eq!(Flow::of(&v6[..len]), None);
        }
        assert_eq!(Flow::of(&[0; 14]), None);
        // Twelve destination options headers before TCP: walked, however many.
        let mut chain = v6[..54].to_vec();
        chain[20] = 60;
        for i in 0..12 {
            chain.extend_from_slice(&[if i == 11 { 6 } else { 60 }, 0, 1, 4, 0, 0, 0, 0]);
        }
        chain.extend_from_slice(&[0x30, 0x39, 0, 80, 0, 0, 0, 0, 0, 0, 0, 0, 0x50, 0x02]);
        let flow = Flow::of(&chain).unwrap();
        assert_eq!(
            (flow.proto, flow.port, flow.tcp_flags),
            (6, Some(80), Some(2))
        );
        // Cut inside the chain: the header it stopped at, no port, no panic.
        for len in 54..chain.len() - 4 {
            let _ = Flow::of(&chain[..len]);
        }
        assert_eq!(Flow::of(&chain[..60]).unwrap().proto, 60);
        // A first fragment's ports are read; a later fragment is no flow.
        let mut first = v6[..54].to_vec();
        first[20] = 44;
        first.extend_from_slice(&[6, 0, 0, 1, 0, 0, 0, 9]);
        first.extend_from_slice(&[0x30, 0x39, 0, 81, 0, 0, 0, 0]);
        assert_eq!(Flow::of(&first).unwrap().port, Some(81));
        let mut later = first.clone();
        later[56..58].copy_from_slice(&[0, 8]);
        assert_eq!(Flow::of(&later), None);
    }

    /// A little-endian microsecond capture of `records` (time in µs, bytes).
    fn capture(records: &[(u64, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
        out.extend_from_slice(&2u16.to_le_bytes());
        out.extend_from_slice(&4u16.to_le_bytes());
        out.extend_from_slice(&[0; 8]);
        out.extend_from_slice(&65535u32.to_le_bytes());
        out.extend_from_slice(&1u32.to_le_bytes());
        for (micros, data) in records {
            out.extend_from_slice(&((micros / 1_000_000) as u32).to_le_bytes());
            out.extend_from_slice(&((micros % 1_000_000) as u32).to_le_bytes());
            out.extend_from_slice(&(data.len() as u32).to_le_bytes());
            out.extend_from_slice(&(data.len() as u32).to_le_bytes());
            out.extend_from_slice(data);
        }
        out
    }

    #[test]
    fn records_come_out_with_their_times() {
        let bytes = capture(&[
            (1_700_000_000_250_000, b"abc"),
            (1_700_000_001_000_001, b""),
        ]);
        let packets: Vec<_> = Capture::parse(&bytes)
            .unwrap()
            .packets()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(packets.len(), 2);
        assert_eq!(packets[0].data, b"abc");
        assert_eq!(
            packets[0].time,
            Duration::from_secs(1_700_000_000) + Duration::from_millis(250)
        );
        assert_eq!(
            packets[1].time,
            Duration::from_micros(1_700_000_001_000_001)
        );
    }

    #[test]
    fn big_endian_and_nanosecond_files_read_alike() {
        let mut bytes = capture(&[(5_000_123, b"xy")]);
        // Rewrite as big-endian nanoseconds.
        bytes[..4].copy_from_slice(&0xa1b2_3c4du32.to_be_bytes());
        for range in [4..6, 6..8] {
            bytes[range.clone()].reverse();
        }
        for start in [8, 12, 16, 20, 24, 28, 32, 36] {
            bytes[start..start + 4].reverse();
        }
        bytes[28..32].copy_from_slice(&123_000u32.to_be_bytes());
        let capture = Capture::parse(&bytes).unwrap();
        let packet = capture.packets().next().unwrap().unwrap();
        assert_eq!(packet.time, Duration::from_nanos(5_000_123_000));
        assert_eq!(packet.data, b"xy");
    }

    #[test]
    fn damaged_files_are_clear_errors() {
        assert_eq!(
            Capture::parse(b"short").unwrap_err(),
            PcapError::TooShort(5)
        );
        let mut pcapng = vec![0x0a, 0x0d, 0x0d, 0x0a];
        pcapng.extend_from_slice(&[0; 28]);
        assert_eq!(Capture::parse(&pcapng).unwrap_err(), PcapError::Pcapng);
        let mut other = capture(&[]);
        other[20] = 113;
        assert_eq!(
            Capture::parse(&other).unwrap_err(),
            PcapError::LinkType(113)
        );
        // The second record claims more bytes than the file has.
        let mut cut = capture(&[(0, b"abcd"), (1, b"efgh")]);
        cut.truncate(cut.len() - 2);
        let results: Vec<_> = Capture::parse(&cut).unwrap().packets().collect();
        assert_eq!(results.len(), 2);
        assert!(results[0].is_ok());
        assert_eq!(
            results[1].clone().unwrap_err().to_string(),
            "record 1 is damaged: 4 captured bytes, 2 left in the file"
        );
        // Every truncation of a good file ends in an error or a clean end, never a panic.
        let good = capture(&[(0, b"abcd"), (1, b"efgh")]);
        for len in 0..good.len() {
            if let Ok(capture) = Capture::parse(&good[..len]) {
                let _ = capture.packets().count();
            }
        }
    }
}
