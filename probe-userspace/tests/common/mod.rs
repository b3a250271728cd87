//! Shared by the kernel tests: crafted frames. (The rule that a test which cannot run
//! fails with a reason unless skipping was asked for is probe-netlab's `require_root`.)

#![allow(
    dead_code,
    reason = "each test binary uses a different part of this module"
)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// TCP flag bits.
pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const PSH: u8 = 0x08;
pub const ACK: u8 = 0x10;
pub const URG: u8 = 0x20;

/// IPv6 extension headers: (type, body after the 2 leading bytes).
pub type ExtHeaders = Vec<(u8, Vec<u8>)>;

/// The transport part of a [`Frame`].
#[derive(Clone, Debug)]
pub enum Transport {
    Tcp {
        src_port: u16,
        dst_port: u16,
        seq: u32,
        ack: u32,
        flags: u8,
        /// Padded to a multiple of 4 bytes by the builder.
        options: Vec<u8>,
    },
    Udp {
        src_port: u16,
        dst_port: u16,
    },
    /// ICMP or ICMPv6 (by the frame's family): type, code, the 4 bytes after the checksum.
    Icmp {
        kind: u8,
        code: u8,
        rest: [u8; 4],
    },
    /// Another IP protocol: its bytes are the frame's payload.
    Raw {
        proto: u8,
    },
}

/// An IPv4 or IPv6 packet in an Ethernet frame, with optional VLAN tags, IPv4 options or
/// IPv6 extension headers.
#[derive(Clone, Debug)]
pub struct Frame {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub transport: Transport,
    pub payload: Vec<u8>,
    /// TPIDs of VLAN tags, outermost first (0x88a8, 0x8100).
    pub vlan_tpids: Vec<u16>,
    /// IPv4 options, padded to a multiple of 4 bytes by the builder.
    pub ip_options: Vec<u8>,
    /// IPv6 extension headers: (type, body after the 2 leading bytes). Bodies are padded to
    /// the header's unit (8 bytes, 4 for AH); a fragment header body is its 6 bytes.
    pub ext_headers: ExtHeaders,
    /// IPv4 fragment offset in 8-byte units.
    pub frag_offset: u16,
    pub ttl: u8,
}

/// A small, fast, seeded generator (xorshift64*), for floods and random sequences.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

pub fn v4(a: [u8; 4]) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(a))
}

pub fn v6(text: &str) -> IpAddr {
    IpAddr::V6(text.parse::<Ipv6Addr>().unwrap())
}

impl Frame {
    fn new(src: IpAddr, dst: IpAddr, transport: Transport) -> Self {
        Self {
            src,
            dst,
            transport,
            payload: Vec::new(),
            vlan_tpids: Vec::new(),
            ip_options: Vec::new(),
            ext_headers: Vec::new(),
            frag_offset: 0,
            ttl: 64,
        }
    }

    /// A TCP segment with `flags` and sequence number `seq`.
    pub fn tcp(
        src: IpAddr,
        src_port: u16,
        dst: IpAddr,
        dst_port: u16,
        flags: u8,
        seq: u32,
    ) -> Self {
        Self::new(
            src,
            dst,
            Transport::Tcp {
                src_port,
                dst_port,
                seq,
                ack: 0,
                flags,
                options: Vec::new(),
            },
        )
    }

    /// A packet of IP protocol `proto` carrying `payload` as it is.
    pub fn raw(src: IpAddr, dst: IpAddr, proto: u8, payload: &[u8]) -> Self {
        let mut f = Self::new(src, dst, Transport::Raw { proto });
        f.payload = payload.to_vec();
        f
    }

    pub fn udp(src: IpAddr, src_port: u16, dst: IpAddr, dst_port: u16) -> Self {
        Self::new(src, dst, Transport::Udp { src_port, dst_port })
    }

    /// An echo request (ICMP type 8 or ICMPv6 type 128).
    pub fn echo_request(src: IpAddr, dst: IpAddr, id: u16, seq: u16) -> Self {
        let kind = if src.is_ipv4() { 8 } else { 128 };
        let [a, b] = id.to_be_bytes();
        let [c, d] = seq.to_be_bytes();
        Self::new(
            src,
            dst,
            Transport::Icmp {
                kind,
                code: 0,
                rest: [a, b, c, d],
            },
        )
    }

    pub fn with_ack(mut self, ack_no: u32) -> Self {
        if let Transport::Tcp { ack, .. } = &mut self.transport {
            *ack = ack_no;
        }
        self
    }

    pub fn with_seq(mut self, seq_no: u32) -> Self {
        if let Transport::Tcp { seq, .. } = &mut self.transport {
            *seq = seq_no;
        }
        self
    }

    pub fn with_payload(mut self, payload: &[u8]) -> Self {
        self.payload = payload.to_vec();
        self
    }

    pub fn with_tcp_options(mut self, opts: &[u8]) -> Self {
        if let Transport::Tcp { options, .. } = &mut self.transport {
            *options = opts.to_vec();
        }
        self
    }

    fn tcp_fields(&self) -> (u16, u16, u32, u32, u8) {
        match &self.transport {
            Transport::Tcp {
                src_port,
                dst_port,
                seq,
                ack,
                flags,
                ..
            } => (*src_port, *dst_port, *seq, *ack, *flags),
            other => panic!("not TCP: {other:?}"),
        }
    }

    /// The number our answer carries: the ack of a segment with ACK, else its sequence plus
    /// payload plus SYN and FIN.
    fn answer_id(&self) -> u32 {
        let (_, _, seq, ack, flags) = self.tcp_fields();
        if flags & ACK != 0 {
            return ack;
        }
        seq.wrapping_add(self.payload.len() as u32)
            .wrapping_add(u32::from(flags & SYN != 0))
            .wrapping_add(u32::from(flags & FIN != 0))
    }

    /// Our stack's RST for this segment on a closed port: RST|ACK acknowledging it, or, for a
    /// segment with ACK, a bare RST whose seq is that ack.
    pub fn refusal(&self) -> Frame {
        let (sp, dp, _, _, flags) = self.tcp_fields();
        let mut answer = if flags & ACK != 0 {
            Frame::tcp(self.dst, dp, self.src, sp, RST, self.answer_id())
        } else {
            Frame::tcp(self.dst, dp, self.src, sp, RST | ACK, 0).with_ack(self.answer_id())
        };
        answer.vlan_tpids = self.vlan_tpids.clone();
        answer
    }

    /// Our stack's SYN-ACK for this SYN on an open port.
    pub fn acceptance(&self) -> Frame {
        let (sp, dp, _, _, _) = self.tcp_fields();
        let mut answer = Frame::tcp(self.dst, dp, self.src, sp, SYN | ACK, 0x5eed_0000)
            .with_ack(self.answer_id());
        answer.vlan_tpids = self.vlan_tpids.clone();
        answer
    }

    /// A UDP datagram answering this one.
    pub fn udp_reply(&self) -> Frame {
        match self.transport {
            Transport::Udp { src_port, dst_port } => {
                Frame::udp(self.dst, dst_port, self.src, src_port)
            }
            _ => panic!("not UDP"),
        }
    }

    /// The echo reply to this echo request.
    pub fn echo_reply(&self) -> Frame {
        match self.transport {
            Transport::Icmp { rest, .. } => {
                let kind = if self.src.is_ipv4() { 0 } else { 129 };
                Frame::new(
                    self.dst,
                    self.src,
                    Transport::Icmp {
                        kind,
                        code: 0,
                        rest,
                    },
                )
            }
            _ => panic!("not ICMP"),
        }
    }

    /// A destination-unreachable error from the probed host quoting this packet (whole, as
    /// Linux quotes as much as fits): ICMP type 3 or ICMPv6 type 1 with `code`.
    pub fn unreachable(&self, code: u8) -> Frame {
        let kind = if self.src.is_ipv4() { 3 } else { 1 };
        let mut error = Frame::new(
            self.dst,
            self.src,
            Transport::Icmp {
                kind,
                code,
                rest: [0; 4],
            },
        );
        error.payload = self.ip_packet();
        error
    }

    /// The frame's bytes.
    pub fn bytes(&self) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x02]); // dst MAC
        f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x01]); // src MAC
        for (i, tpid) in self.vlan_tpids.iter().enumerate() {
            f.extend_from_slice(&tpid.to_be_bytes());
            f.extend_from_slice(&(100 + i as u16).to_be_bytes());
        }
        let ethertype: u16 = if self.src.is_ipv4() { 0x0800 } else { 0x86dd };
        f.extend_from_slice(&ethertype.to_be_bytes());
        f.extend_from_slice(&self.ip_packet());
        f
    }

    /// The IP packet (no Ethernet header).
    pub fn ip_packet(&self) -> Vec<u8> {
        let l4 = self.transport_bytes();
        match (self.src, self.dst) {
            (IpAddr::V4(src), IpAddr::V4(dst)) => {
                let options = pad(self.ip_options.clone(), 4);
                let ihl = 20 + options.len();
                let mut p = vec![0x40 | (ihl / 4) as u8, 0];
                p.extend_from_slice(&((ihl + l4.len()) as u16).to_be_bytes());
                p.extend_from_slice(&0x1234u16.to_be_bytes());
                p.extend_from_slice(&(0x4000 | self.frag_offset).to_be_bytes());
                p.push(self.ttl);
                p.push(self.proto());
                p.extend_from_slice(&[0, 0]);
                p.extend_from_slice(&src.octets());
                p.extend_from_slice(&dst.octets());
                p.extend_from_slice(&options);
                let csum = checksum(&p);
                p[10..12].copy_from_slice(&csum.to_be_bytes());
                p.extend_from_slice(&l4);
                p
            }
            (IpAddr::V6(src), IpAddr::V6(dst)) => {
                let mut exts = Vec::new();
                let types: Vec<u8> = self
                    .ext_headers
                    .iter()
                    .map(|(t, _)| *t)
                    .chain([self.proto()])
                    .collect();
                for (i, (kind, body)) in self.ext_headers.iter().enumerate() {
                    let next = types[i + 1];
                    let mut h = vec![next, 0];
                    h.extend_from_slice(body);
                    let h = match kind {
                        44 => h,
                        51 => {
                            let h = pad(h, 4);
                            let mut h = h;
                            h[1] = (h.len() / 4 - 2) as u8;
                            h
                        }
                        _ => {
                            let mut h = pad(h, 8);
                            h[1] = (h.len() / 8 - 1) as u8;
                            h
                        }
                    };
                    exts.extend_from_slice(&h);
                }
                let mut p = vec![0x60, 0, 0, 0];
                p.extend_from_slice(&((exts.len() + l4.len()) as u16).to_be_bytes());
                p.push(types[0]);
                p.push(self.ttl);
                p.extend_from_slice(&src.octets());
                p.extend_from_slice(&dst.octets());
                p.extend_from_slice(&exts);
                p.extend_from_slice(&l4);
                p
            }
            _ => panic!("mixed address families"),
        }
    }

    fn proto(&self) -> u8 {
        match self.transport {
            Transport::Tcp { .. } => 6,
            Transport::Udp { .. } => 17,
            Transport::Icmp { .. } if self.src.is_ipv4() => 1,
            Transport::Icmp { .. } => 58,
            Transport::Raw { proto } => proto,
        }
    }

    fn transport_bytes(&self) -> Vec<u8> {
        let mut t = Vec::new();
        match &self.transport {
            Transport::Tcp {
                src_port,
                dst_port,
                seq,
                ack,
                flags,
                options,
            } => {
                let options = pad(options.clone(), 4);
                t.extend_from_slice(&src_port.to_be_bytes());
                t.extend_from_slice(&dst_port.to_be_bytes());
                t.extend_from_slice(&seq.to_be_bytes());
                t.extend_from_slice(&ack.to_be_bytes());
                t.push((((20 + options.len()) / 4) as u8) << 4);
                t.push(*flags);
                t.extend_from_slice(&64240u16.to_be_bytes());
                t.extend_from_slice(&[0, 0, 0, 0]);
                t.extend_from_slice(&options);
            }
            Transport::Udp { src_port, dst_port } => {
                t.extend_from_slice(&src_port.to_be_bytes());
                t.extend_from_slice(&dst_port.to_be_bytes());
                t.extend_from_slice(&((8 + self.payload.len()) as u16).to_be_bytes());
                t.extend_from_slice(&[0, 0]);
            }
            Transport::Icmp { kind, code, rest } => {
                t.extend_from_slice(&[*kind, *code, 0, 0]);
                t.extend_from_slice(rest);
            }
            Transport::Raw { .. } => {}
        }
        t.extend_from_slice(&self.payload);
        t
    }
}

fn pad(mut v: Vec<u8>, unit: usize) -> Vec<u8> {
    while !v.len().is_multiple_of(unit) {
        v.push(if unit == 4 { 1 } else { 0 });
    }
    v
}

/// The Internet checksum of `data`.
fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}
