//! Packet parsing shared by the XDP (ingress) and TC (egress) programs: Ethernet with up to
//! two VLAN tags (802.1Q / 802.1ad); IPv4 with its header length from IHL, or IPv6 with a
//! bounded walk over extension headers; then TCP, UDP, ICMP or ICMPv6, including the packet
//! an ICMP error quotes.
//!
//! Every read goes through [`ptr_at`], which checks the whole header against the end of the
//! packet before it is touched, so the verifier accepts each access and a truncated frame
//! is reported as [`Malformed`], never misread. Header structs are made of byte arrays only
//! (alignment 1), so reading them at any packet offset is sound. Addresses come out as 16
//! bytes, IPv4 mapped into IPv6 (`::ffff:a.b.c.d`).

use core::mem::size_of;

/// A 16-byte address (IPv4 mapped into IPv6), network byte order, held as two native
/// words: copied, hashed and masked a word at a time. As a byte array, LLVM splits it into
/// sixteen values, each spilled to its own stack slot, and the 512-byte BPF stack runs out.
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct Addr(pub [u64; 2]);

impl Addr {
    #[inline(always)]
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        // SAFETY: [u8; 16] and [u64; 2] have the same size and every bit pattern is valid.
        Self(unsafe { core::mem::transmute::<[u8; 16], [u64; 2]>(bytes) })
    }

    /// `::ffff:a.b.c.d` for an IPv4 address in network byte order.
    #[inline(always)]
    pub fn v4(o: [u8; 4]) -> Self {
        Self([
            0,
            u64::from_ne_bytes([0, 0, 0xff, 0xff, o[0], o[1], o[2], o[3]]),
        ])
    }

    #[inline(always)]
    pub fn bytes(self) -> [u8; 16] {
        // SAFETY: as in from_bytes.
        unsafe { core::mem::transmute::<[u64; 2], [u8; 16]>(self.0) }
    }
}

const ETH_P_IPV4: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;

const PROTO_ICMP: u8 = 1;
const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;
const PROTO_ICMPV6: u8 = 58;

// IPv6 extension headers we step over; anything else is the upper layer.
const EXT_HOP_BY_HOP: u8 = 0;
const EXT_ROUTING: u8 = 43;
const EXT_FRAGMENT: u8 = 44;
const EXT_AH: u8 = 51;
const EXT_DEST_OPTS: u8 = 60;
/// Extension headers walked at most; a longer chain is reported as malformed, so a probe
/// cannot hide behind it unseen.
const MAX_EXT_HEADERS: usize = 6;

/// TCP flag bits, as in the 14th byte of the TCP header.
pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

/// The frame is cut short inside a header we parse, or a header length is impossible.
pub struct Malformed;

#[repr(C)]
#[derive(Clone, Copy)]
struct EthHdr {
    dst: [u8; 6],
    src: [u8; 6],
    ether_type: [u8; 2],
}

#[repr(C)]
#[derive(Clone, Copy)]
struct VlanHdr {
    tci: [u8; 2],
    ether_type: [u8; 2],
}

#[repr(C)]
#[derive(Clone, Copy)]
struct Ipv4Hdr {
    version_ihl: u8,
    tos: u8,
    total_len: [u8; 2],
    id: [u8; 2],
    frag_off: [u8; 2],
    ttl: u8,
    proto: u8,
    check: [u8; 2],
    src: [u8; 4],
    dst: [u8; 4],
}

#[repr(C)]
#[derive(Clone, Copy)]
struct Ipv6Hdr {
    version_class_flow: [u8; 4],
    payload_len: [u8; 2],
    next_header: u8,
    hop_limit: u8,
    src: [u8; 16],
    dst: [u8; 16],
}

/// The first two bytes every IPv6 extension header starts with.
#[repr(C)]
#[derive(Clone, Copy)]
struct ExtHdr {
    next_header: u8,
    len: u8,
    /// For the fragment header: offset (13 bits), reserved, M flag.
    frag_off: [u8; 2],
}

#[repr(C)]
#[derive(Clone, Copy)]
struct TcpHdr {
    src_port: [u8; 2],
    dst_port: [u8; 2],
    seq: [u8; 4],
    ack: [u8; 4],
    data_offset: u8,
    flags: u8,
    window: [u8; 2],
    check: [u8; 2],
    urgent: [u8; 2],
}

#[repr(C)]
#[derive(Clone, Copy)]
struct UdpHdr {
    src_port: [u8; 2],
    dst_port: [u8; 2],
    len: [u8; 2],
    check: [u8; 2],
}

/// ICMP and ICMPv6 share this layout: type, code, checksum, then 4 bytes that hold the
/// echo identifier and sequence (unused in destination-unreachable messages).
#[repr(C)]
#[derive(Clone, Copy)]
struct IcmpHdr {
    kind: u8,
    code: u8,
    check: [u8; 2],
    id: [u8; 2],
    seq: [u8; 2],
}

const _: () = assert!(size_of::<EthHdr>() == 14);
const _: () = assert!(size_of::<VlanHdr>() == 4);
const _: () = assert!(size_of::<Ipv4Hdr>() == 20);
const _: () = assert!(size_of::<Ipv6Hdr>() == 40);
const _: () = assert!(size_of::<ExtHdr>() == 4);
const _: () = assert!(size_of::<TcpHdr>() == 20);
const _: () = assert!(size_of::<UdpHdr>() == 8);
const _: () = assert!(size_of::<IcmpHdr>() == 8);

/// Returns a pointer to a `T` at `offset` bytes into the packet `[start, end)`, or
/// [`Malformed`] if the whole `T` does not fit. The only way this crate reads packet bytes.
#[inline(always)]
fn ptr_at<T>(start: usize, end: usize, offset: usize) -> Result<*const T, Malformed> {
    if start + offset + size_of::<T>() > end {
        return Err(Malformed);
    }
    Ok((start + offset) as *const T)
}

/// Reads a whole header at `offset`. Header types have alignment 1, so any offset is fine.
#[inline(always)]
fn read_at<T: Copy>(start: usize, end: usize, offset: usize) -> Result<T, Malformed> {
    let ptr = ptr_at::<T>(start, end, offset)?;
    // SAFETY: `ptr_at` checked that `size_of::<T>()` bytes at `ptr` lie inside the packet,
    // and `T` is a byte-array header struct with alignment 1, valid for any bit pattern.
    Ok(unsafe { ptr.read() })
}

/// A TCP segment's fields that the programs use.
#[derive(Clone, Copy)]
pub struct Tcp {
    pub src_port: u16,
    pub dst_port: u16,
    pub seq: u32,
    pub ack: u32,
    /// Flag byte (FIN, SYN, RST, PSH, ACK, URG, ECE, CWR).
    pub flags: u8,
    /// Bytes of TCP payload, from the IP length fields.
    pub payload_len: u32,
}

impl Tcp {
    /// The number an answer to this segment carries to identify it: for a segment with ACK
    /// set, the RST answering it has `seq` = this `ack`; otherwise the answer acknowledges
    /// this segment (`ack` = `seq` + payload + SYN + FIN).
    #[inline(always)]
    pub fn answer_id(&self) -> u32 {
        if self.flags & TCP_ACK != 0 {
            return self.ack;
        }
        self.seq
            .wrapping_add(self.payload_len)
            .wrapping_add(u32::from(self.flags & TCP_SYN != 0))
            .wrapping_add(u32::from(self.flags & TCP_FIN != 0))
    }
}

/// ICMP message kinds the programs care about, the same for ICMP and ICMPv6.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum IcmpKind {
    EchoRequest,
    EchoReply,
    /// Destination unreachable (ICMP type 3, ICMPv6 type 1).
    Unreachable,
    Other,
}

/// The attempt an ICMP error quotes: its addresses and ports as it was sent (source first),
/// and the answer id ([`Tcp::answer_id`]) when it was TCP.
#[derive(Clone, Copy)]
pub struct Quoted {
    pub src: Addr,
    pub dst: Addr,
    pub proto: u8,
    pub src_port: u16,
    pub dst_port: u16,
    pub answer_id: u32,
}

#[derive(Clone, Copy)]
pub struct Icmp {
    pub kind: IcmpKind,
    /// The raw type, for reporting.
    pub raw_type: u8,
    pub code: u8,
    pub id: u16,
    pub seq: u16,
    /// Offset of the quoted packet (for destination-unreachable messages): parsed on demand
    /// with [`parse_quoted`], so that its 40-odd bytes stay off the per-packet stack.
    pub quote_offset: usize,
}

#[derive(Clone, Copy)]
pub enum L4 {
    Tcp(Tcp),
    Udp {
        src_port: u16,
        dst_port: u16,
    },
    Icmp(Icmp),
    /// Another protocol, or a later fragment with no transport header.
    Other,
}

/// A parsed IP packet.
#[derive(Clone, Copy)]
pub struct Packet {
    /// Source address.
    pub src: Addr,
    /// Destination address.
    pub dst: Addr,
    /// IPv4 TTL or IPv6 hop limit, as received.
    pub ttl: u8,
    /// IP protocol number of the transport (after IPv6 extension headers).
    pub proto: u8,
    pub l4: L4,
}

/// Where the network header starts: after Ethernet and up to two VLAN tags (802.1ad outer,
/// 802.1Q inner, or one of either), unrolled so there is no loop for the verifier to bound.
#[inline(always)]
fn network_start(start: usize, end: usize) -> Result<(u16, usize), Malformed> {
    let eth: EthHdr = read_at(start, end, 0)?;
    let mut ether_type = u16::from_be_bytes(eth.ether_type);
    let mut offset = size_of::<EthHdr>();
    if ether_type == ETH_P_8021Q || ether_type == ETH_P_8021AD {
        let vlan: VlanHdr = read_at(start, end, offset)?;
        ether_type = u16::from_be_bytes(vlan.ether_type);
        offset += size_of::<VlanHdr>();
        if ether_type == ETH_P_8021Q || ether_type == ETH_P_8021AD {
            let vlan: VlanHdr = read_at(start, end, offset)?;
            ether_type = u16::from_be_bytes(vlan.ether_type);
            offset += size_of::<VlanHdr>();
        }
    }
    Ok((ether_type, offset))
}

/// Parses a frame. `Ok(None)` is a well-formed frame that is not IP.
///
/// Not inlined: as a BPF subprogram its temporaries (whole headers) live in a frame of
/// their own, not in the callers', which the 512-byte stack limit needs.
#[inline(never)]
pub fn parse(start: usize, end: usize) -> Result<Option<Packet>, Malformed> {
    let (ether_type, offset) = network_start(start, end)?;
    match ether_type {
        ETH_P_IPV4 => parse_ipv4(start, end, offset).map(Some),
        ETH_P_IPV6 => parse_ipv6(start, end, offset).map(Some),
        _ => Ok(None),
    }
}

/// The IPv4 header at `offset`: (header, header length); checks version and lengths and
/// that the options announced by IHL are present.
#[inline(always)]
fn ipv4_header(start: usize, end: usize, offset: usize) -> Result<(Ipv4Hdr, usize), Malformed> {
    let ip: Ipv4Hdr = read_at(start, end, offset)?;
    if ip.version_ihl >> 4 != 4 {
        return Err(Malformed);
    }
    // Header length from IHL (in 32-bit words): 20 bytes plus options, at most 60.
    let ihl = usize::from(ip.version_ihl & 0x0f) * 4;
    if ihl < size_of::<Ipv4Hdr>() || usize::from(u16::from_be_bytes(ip.total_len)) < ihl {
        return Err(Malformed);
    }
    ptr_at::<u8>(start, end, offset + ihl - 1)?;
    Ok((ip, ihl))
}

#[inline(always)]
fn parse_ipv4(start: usize, end: usize, offset: usize) -> Result<Packet, Malformed> {
    let (ip, ihl) = ipv4_header(start, end, offset)?;
    let l4_len = u32::from(u16::from_be_bytes(ip.total_len)) - ihl as u32;
    // Fragment offset (13 low bits) non-zero: a later fragment, with no transport header.
    let later_fragment = u16::from_be_bytes(ip.frag_off) & 0x1fff != 0;
    let l4 = if later_fragment {
        L4::Other
    } else {
        parse_l4(start, end, offset + ihl, ip.proto, l4_len, false)?
    };
    Ok(Packet {
        src: Addr::v4(ip.src),
        dst: Addr::v4(ip.dst),
        ttl: ip.ttl,
        proto: ip.proto,
        l4,
    })
}

#[inline(always)]
fn parse_ipv6(start: usize, end: usize, offset: usize) -> Result<Packet, Malformed> {
    let ip: Ipv6Hdr = read_at(start, end, offset)?;
    if ip.version_class_flow[0] >> 4 != 6 {
        return Err(Malformed);
    }
    let mut next = ip.next_header;
    let mut offset = offset + size_of::<Ipv6Hdr>();
    let mut remaining = u32::from(u16::from_be_bytes(ip.payload_len));
    let mut later_fragment = false;
    let mut walked = 0;
    while is_extension(next) {
        if walked == MAX_EXT_HEADERS {
            return Err(Malformed);
        }
        walked += 1;
        let ext: ExtHdr = read_at(start, end, offset)?;
        let len = match next {
            EXT_FRAGMENT => {
                later_fragment = u16::from_be_bytes(ext.frag_off) >> 3 != 0;
                8
            }
            EXT_AH => (usize::from(ext.len) + 2) * 4,
            _ => (usize::from(ext.len) + 1) * 8,
        };
        if remaining < len as u32 {
            return Err(Malformed);
        }
        // The whole extension header must be there, not only its first bytes.
        ptr_at::<u8>(start, end, offset + len - 1)?;
        remaining -= len as u32;
        offset += len;
        next = ext.next_header;
        if later_fragment {
            break;
        }
    }
    let l4 = if later_fragment {
        L4::Other
    } else {
        parse_l4(start, end, offset, next, remaining, true)?
    };
    Ok(Packet {
        src: Addr::from_bytes(ip.src),
        dst: Addr::from_bytes(ip.dst),
        ttl: ip.hop_limit,
        proto: next,
        l4,
    })
}

#[inline(always)]
fn is_extension(next_header: u8) -> bool {
    matches!(
        next_header,
        EXT_HOP_BY_HOP | EXT_ROUTING | EXT_FRAGMENT | EXT_AH | EXT_DEST_OPTS
    )
}

/// The transport header at `offset`; `l4_len` is what the IP header says follows it.
#[inline(always)]
fn parse_l4(
    start: usize,
    end: usize,
    offset: usize,
    proto: u8,
    l4_len: u32,
    v6: bool,
) -> Result<L4, Malformed> {
    match proto {
        PROTO_TCP => parse_tcp(start, end, offset, l4_len).map(L4::Tcp),
        PROTO_UDP => {
            let udp: UdpHdr = read_at(start, end, offset)?;
            Ok(L4::Udp {
                src_port: u16::from_be_bytes(udp.src_port),
                dst_port: u16::from_be_bytes(udp.dst_port),
            })
        }
        PROTO_ICMP if !v6 => parse_icmp(start, end, offset, false).map(L4::Icmp),
        PROTO_ICMPV6 if v6 => parse_icmp(start, end, offset, true).map(L4::Icmp),
        _ => Ok(L4::Other),
    }
}

#[inline(always)]
fn parse_tcp(start: usize, end: usize, offset: usize, l4_len: u32) -> Result<Tcp, Malformed> {
    let tcp: TcpHdr = read_at(start, end, offset)?;
    let doff = usize::from(tcp.data_offset >> 4) * 4;
    if doff < size_of::<TcpHdr>() || l4_len < doff as u32 {
        return Err(Malformed);
    }
    // Options too: a SYN's options must be there for its answer to be matched.
    ptr_at::<u8>(start, end, offset + doff - 1)?;
    Ok(Tcp {
        src_port: u16::from_be_bytes(tcp.src_port),
        dst_port: u16::from_be_bytes(tcp.dst_port),
        seq: u32::from_be_bytes(tcp.seq),
        ack: u32::from_be_bytes(tcp.ack),
        flags: tcp.flags,
        payload_len: l4_len - doff as u32,
    })
}

#[inline(always)]
fn parse_icmp(start: usize, end: usize, offset: usize, v6: bool) -> Result<Icmp, Malformed> {
    let icmp: IcmpHdr = read_at(start, end, offset)?;
    let kind = match (v6, icmp.kind) {
        (false, 8) | (true, 128) => IcmpKind::EchoRequest,
        (false, 0) | (true, 129) => IcmpKind::EchoReply,
        (false, 3) | (true, 1) => IcmpKind::Unreachable,
        _ => IcmpKind::Other,
    };
    Ok(Icmp {
        kind,
        raw_type: icmp.kind,
        code: icmp.code,
        id: u16::from_be_bytes(icmp.id),
        seq: u16::from_be_bytes(icmp.seq),
        quote_offset: offset + size_of::<IcmpHdr>(),
    })
}

/// The TCP or UDP packet quoted by an ICMP error at `offset`. Only the quoted IP header and
/// the transport header directly after it are read (a quoted IPv6 packet with extension
/// headers is not matched). A quote that cannot be read is not an error of the outer packet
/// (senders may cut quotes short); it only means the message cannot be matched. A
/// subprogram, so its header copies are gone before the outcome is reported.
#[inline(never)]
pub fn parse_quoted(
    start: usize,
    end: usize,
    offset: usize,
    v6: bool,
) -> Result<Quoted, Malformed> {
    let (src, dst, proto, l4_offset, l4_len) = if v6 {
        let ip: Ipv6Hdr = read_at(start, end, offset)?;
        (
            Addr::from_bytes(ip.src),
            Addr::from_bytes(ip.dst),
            ip.next_header,
            offset + size_of::<Ipv6Hdr>(),
            u32::from(u16::from_be_bytes(ip.payload_len)),
        )
    } else {
        let (ip, ihl) = ipv4_header(start, end, offset)?;
        (
            Addr::v4(ip.src),
            Addr::v4(ip.dst),
            ip.proto,
            offset + ihl,
            u32::from(u16::from_be_bytes(ip.total_len)) - ihl as u32,
        )
    };
    let (src_port, dst_port, answer_id) = match proto {
        PROTO_TCP => {
            let tcp = parse_tcp(start, end, l4_offset, l4_len)?;
            (tcp.src_port, tcp.dst_port, tcp.answer_id())
        }
        PROTO_UDP => {
            let udp: UdpHdr = read_at(start, end, l4_offset)?;
            (
                u16::from_be_bytes(udp.src_port),
                u16::from_be_bytes(udp.dst_port),
                0,
            )
        }
        _ => return Err(Malformed),
    };
    Ok(Quoted {
        src,
        dst,
        proto,
        src_port,
        dst_port,
        answer_id,
    })
}
