//! Packet parsing shared by the XDP (ingress) and TC (egress) programs: Ethernet with up to
//! two VLAN tags (802.1Q / 802.1ad); IPv4 with its header length from IHL, or IPv6 with a
//! bounded walk over extension headers; then TCP, UDP, ICMP or ICMPv6, including the packet
//! an ICMP error quotes.
//!
//! Parsing is lazy, because most packets are established traffic that needs no more than
//! its TCP flags: [`locate`] finds the transport header, reading only lengths, versions and
//! the protocol; callers then read what they need ([`tcp_flags`], [`tcp`], [`endpoints`],
//! ...). Every header is bounds-checked whole (through [`ptr_at`]) before any of its fields
//! is read, so the verifier accepts each access and a truncated frame is reported as
//! [`Malformed`], never misread. Header structs are made of byte arrays only (alignment 1),
//! so reading them at any packet offset is sound. Addresses come out as 16 bytes, IPv4
//! mapped into IPv6 (`::ffff:a.b.c.d`).

use core::mem::{offset_of, size_of};

const ETH_P_IPV4: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;

const PROTO_ICMP: u8 = 1;
const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;
const PROTO_ICMPV6: u8 = 58;
const PROTO_SCTP: u8 = 132;

// IPv6 extension headers we step over; anything else is the upper layer.
const EXT_HOP_BY_HOP: u8 = 0;
const EXT_ROUTING: u8 = 43;
const EXT_FRAGMENT: u8 = 44;
const EXT_AH: u8 = 51;
const EXT_DEST_OPTS: u8 = 60;
/// Extension headers walked at most; a longer chain ends the walk ([`Shape::LongChain`]): counted,
/// dropped from a blocked source, never a way around the block.
pub const MAX_EXT_HEADERS: usize = 6;

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

/// The first four bytes of every IPv6 extension header.
#[repr(C)]
#[derive(Clone, Copy)]
struct ExtHdr {
    next_header: u8,
    len: u8,
    /// For the fragment header: offset (13 bits), reserved, M flag.
    frag_off: [u8; 2],
}

/// The first eight bytes of a TCP header.
#[repr(C)]
#[derive(Clone, Copy)]
struct TcpHeadHdr {
    src_port: [u8; 2],
    dst_port: [u8; 2],
    seq: [u8; 4],
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
/// [`Malformed`] if the whole `T` does not fit. Every packet read starts here.
#[inline(always)]
fn ptr_at<T>(start: usize, end: usize, offset: usize) -> Result<*const T, Malformed> {
    if offset > MAX_HEADER_OFFSET || start + offset + size_of::<T>() > end {
        return Err(Malformed);
    }
    Ok((start + offset) as *const T)
}

/// A header of type `H` whose whole extent has been checked to lie inside the packet.
struct Checked<H> {
    ptr: *const H,
}

/// No frame has headers deeper than this. Offsets that travel through memory (in
/// [`Headers`], returned by a subprogram) lose the bounds the verifier knew; checking
/// against this limit gives them back before any pointer arithmetic.
const MAX_HEADER_OFFSET: usize = 16 * 1024;

impl<H> Checked<H> {
    #[inline(always)]
    fn at(start: usize, end: usize, offset: usize) -> Result<Self, Malformed> {
        ptr_at::<H>(start, end, offset).map(|ptr| Self { ptr })
    }

    /// Reads the field of type `F` at `field` bytes into the header (an `offset_of!`).
    #[inline(always)]
    fn get<F: Copy>(&self, field: usize) -> F {
        // SAFETY: the whole `H` lies inside the packet (checked in `at`), `field` is the
        // offset of an `F` field of `H` (callers pass `offset_of!`), and field types are
        // bytes or byte arrays: alignment 1, valid for any bit pattern.
        unsafe { self.ptr.cast::<u8>().add(field).cast::<F>().read() }
    }
}

/// Reads field `$field` of header type `$hdr` from a [`Checked`] header.
macro_rules! field {
    ($checked:expr, $hdr:ty, $field:ident) => {
        $checked.get(offset_of!($hdr, $field))
    };
}

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

/// Where a frame's IP and transport headers are.
#[derive(Clone, Copy)]
pub struct Headers {
    /// Offset of the IP header.
    pub l3: usize,
    /// Offset of the transport header.
    pub l4: usize,
    /// Bytes from the transport header to the end of the IP payload (from the IP lengths).
    pub l4_len: u32,
    /// Transport protocol (after IPv6 extension headers).
    pub proto: u8,
    pub v6: bool,
    /// False for a later fragment, or past an extension-header chain longer than the walk:
    /// there is no transport header to read.
    pub transport: bool,
    /// What else the walk found: a first fragment, a chain too long (one byte with the
    /// others, so the struct stays three words: it is copied on the deepest call chains).
    pub shape: Shape,
}

/// The Ethernet source (`dst` false) or destination (`dst` true) address of a frame; zero
/// when the frame is too short to have one.
#[inline(always)]
pub fn ether_addr(start: usize, end: usize, dst: bool) -> [u8; 6] {
    match Checked::<EthHdr>::at(start, end, 0) {
        Ok(eth) if dst => field!(eth, EthHdr, dst),
        Ok(eth) => field!(eth, EthHdr, src),
        Err(_) => [0; 6],
    }
}

/// Where a frame's network header is: its EtherType and offset, after Ethernet and up to
/// two VLAN tags. Found once per frame, for the block decision and the header walk.
#[derive(Clone, Copy)]
pub struct Network {
    ether_type: u16,
    l3: usize,
}

/// Where the network header starts: after Ethernet and up to two VLAN tags (802.1ad outer,
/// 802.1Q inner, or one of either), unrolled so there is no loop for the verifier to bound.
#[inline(always)]
pub fn network(start: usize, end: usize) -> Result<Network, Malformed> {
    let eth = Checked::<EthHdr>::at(start, end, 0)?;
    let mut ether_type = u16::from_be_bytes(field!(eth, EthHdr, ether_type));
    let mut offset = size_of::<EthHdr>();
    if ether_type == ETH_P_8021Q || ether_type == ETH_P_8021AD {
        let vlan = Checked::<VlanHdr>::at(start, end, offset)?;
        ether_type = u16::from_be_bytes(field!(vlan, VlanHdr, ether_type));
        offset += size_of::<VlanHdr>();
        if ether_type == ETH_P_8021Q || ether_type == ETH_P_8021AD {
            let vlan = Checked::<VlanHdr>::at(start, end, offset)?;
            ether_type = u16::from_be_bytes(field!(vlan, VlanHdr, ether_type));
            offset += size_of::<VlanHdr>();
        }
    }
    Ok(Network {
        ether_type,
        l3: offset,
    })
}

/// Finds the transport header of a frame. `Ok(None)` is a well-formed frame that is not
/// IP. Inlined: it runs for every packet, and inline its results stay in registers.
#[inline(always)]
pub fn locate(start: usize, end: usize) -> Result<Option<Headers>, Malformed> {
    locate_in(start, end, network(start, end)?)
}

/// [`locate`] from the network header found already.
#[inline(always)]
pub fn locate_in(start: usize, end: usize, net: Network) -> Result<Option<Headers>, Malformed> {
    match net.ether_type {
        ETH_P_IPV4 => locate_v4(start, end, net.l3).map(Some),
        ETH_P_IPV6 => locate_v6(start, end, net.l3).map(Some),
        _ => Ok(None),
    }
}

/// The IPv4 header at `l3`: checks version and lengths and that the options announced by
/// IHL are present; returns (header length, total length, protocol, fragment).
#[inline(always)]
fn ipv4_lengths(
    start: usize,
    end: usize,
    l3: usize,
) -> Result<(usize, u32, u8, Fragment), Malformed> {
    let ip = Checked::<Ipv4Hdr>::at(start, end, l3)?;
    let version_ihl: u8 = field!(ip, Ipv4Hdr, version_ihl);
    if version_ihl >> 4 != 4 {
        return Err(Malformed);
    }
    // Header length from IHL (in 32-bit words): 20 bytes plus options, at most 60.
    let ihl = usize::from(version_ihl & 0x0f) * 4;
    let total_len = u32::from(u16::from_be_bytes(field!(ip, Ipv4Hdr, total_len)));
    if ihl < size_of::<Ipv4Hdr>() || total_len < ihl as u32 {
        return Err(Malformed);
    }
    ptr_at::<u8>(start, end, l3 + ihl - 1)?;
    // Fragment offset (13 low bits) non-zero: a later fragment, with no transport header;
    // offset zero with more fragments (0x2000) to come: the first one.
    let frag_off = u16::from_be_bytes(field!(ip, Ipv4Hdr, frag_off));
    let fragment = if frag_off & 0x1fff != 0 {
        Fragment::Later
    } else if frag_off & 0x2000 != 0 {
        Fragment::First
    } else {
        Fragment::Whole
    };
    Ok((ihl, total_len, field!(ip, Ipv4Hdr, proto), fragment))
}

/// What the header walk found beside the headers.
#[repr(u8)]
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// Nothing of note.
    Plain,
    /// The first fragment of a fragmented packet: its transport header may be cut short
    /// (nmap `-f`), see [`tcp_head`].
    FirstFragment,
    /// An IPv6 extension-header chain longer than [`MAX_EXT_HEADERS`] (Linux accepts such
    /// chains; they are counted, and dropped from a blocked source).
    LongChain,
}

/// Which part of a fragmented packet a frame is.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Fragment {
    /// Not fragmented.
    Whole,
    /// The first fragment: the transport header begins here, perhaps cut short.
    First,
    /// A later fragment: no transport header.
    Later,
}

#[inline(always)]
fn locate_v4(start: usize, end: usize, l3: usize) -> Result<Headers, Malformed> {
    let (ihl, total_len, proto, fragment) = ipv4_lengths(start, end, l3)?;
    Ok(Headers {
        l3,
        l4: l3 + ihl,
        l4_len: total_len - ihl as u32,
        proto,
        v6: false,
        transport: fragment != Fragment::Later,
        shape: if fragment == Fragment::First {
            Shape::FirstFragment
        } else {
            Shape::Plain
        },
    })
}

#[inline(always)]
fn locate_v6(start: usize, end: usize, l3: usize) -> Result<Headers, Malformed> {
    let ip = Checked::<Ipv6Hdr>::at(start, end, l3)?;
    let version: [u8; 4] = field!(ip, Ipv6Hdr, version_class_flow);
    if version[0] >> 4 != 6 {
        return Err(Malformed);
    }
    let mut next: u8 = field!(ip, Ipv6Hdr, next_header);
    let mut offset = l3 + size_of::<Ipv6Hdr>();
    let mut remaining = u32::from(u16::from_be_bytes(field!(ip, Ipv6Hdr, payload_len)));
    let mut later = false;
    let mut first_fragment = false;
    let mut walked = 0;
    let mut long_chain = false;
    while is_extension(next) {
        if walked == MAX_EXT_HEADERS {
            long_chain = true;
            break;
        }
        walked += 1;
        let ext = Checked::<ExtHdr>::at(start, end, offset)?;
        let ext_len: u8 = field!(ext, ExtHdr, len);
        let len = match next {
            EXT_FRAGMENT => {
                let frag_off = u16::from_be_bytes(field!(ext, ExtHdr, frag_off));
                later = frag_off >> 3 != 0;
                // Offset zero, more fragments (M, the low bit) to come.
                first_fragment = !later && frag_off & 1 != 0;
                8
            }
            EXT_AH => (usize::from(ext_len) + 2) * 4,
            _ => (usize::from(ext_len) + 1) * 8,
        };
        if remaining < len as u32 {
            return Err(Malformed);
        }
        // The whole extension header must be there, not only its first bytes.
        ptr_at::<u8>(start, end, offset + len - 1)?;
        remaining -= len as u32;
        offset += len;
        next = field!(ext, ExtHdr, next_header);
        if later {
            break;
        }
    }
    Ok(Headers {
        l3,
        l4: offset,
        l4_len: remaining,
        proto: next,
        v6: true,
        transport: !later && !long_chain,
        shape: if long_chain {
            Shape::LongChain
        } else if first_fragment {
            Shape::FirstFragment
        } else {
            Shape::Plain
        },
    })
}

/// The source address of the frame's IP header, from the fixed header alone (no option or
/// extension header is read): what the block decision needs, before anything else.
#[inline(always)]
pub fn source(start: usize, end: usize, net: Network) -> Option<Addr> {
    match net.ether_type {
        ETH_P_IPV4 => {
            let ip = Checked::<Ipv4Hdr>::at(start, end, net.l3).ok()?;
            Some(Addr::v4(field!(ip, Ipv4Hdr, src)))
        }
        ETH_P_IPV6 => {
            let ip = Checked::<Ipv6Hdr>::at(start, end, net.l3).ok()?;
            Some(Addr::from_bytes(field!(ip, Ipv6Hdr, src)))
        }
        _ => None,
    }
}

#[inline(always)]
fn is_extension(next_header: u8) -> bool {
    matches!(
        next_header,
        EXT_HOP_BY_HOP | EXT_ROUTING | EXT_FRAGMENT | EXT_AH | EXT_DEST_OPTS
    )
}

/// Source, destination and TTL (hop limit) of the IP header.
#[derive(Clone, Copy)]
pub struct Endpoints {
    pub src: Addr,
    pub dst: Addr,
    pub ttl: u8,
    /// 4 or 6: the IP version of the packet (an IPv6 packet may carry an IPv4-mapped
    /// source, which no real host sends: it must not pass for the IPv4 host).
    pub version: u8,
}

/// Reads the addresses and TTL of the located IP header.
#[inline(always)]
pub fn endpoints(start: usize, end: usize, h: &Headers) -> Result<Endpoints, Malformed> {
    if h.v6 {
        let ip = Checked::<Ipv6Hdr>::at(start, end, h.l3)?;
        Ok(Endpoints {
            src: Addr::from_bytes(field!(ip, Ipv6Hdr, src)),
            dst: Addr::from_bytes(field!(ip, Ipv6Hdr, dst)),
            ttl: field!(ip, Ipv6Hdr, hop_limit),
            version: 6,
        })
    } else {
        let ip = Checked::<Ipv4Hdr>::at(start, end, h.l3)?;
        Ok(Endpoints {
            src: Addr::v4(field!(ip, Ipv4Hdr, src)),
            dst: Addr::v4(field!(ip, Ipv4Hdr, dst)),
            ttl: field!(ip, Ipv4Hdr, ttl),
            version: 4,
        })
    }
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

/// Checks the TCP header at `l4` (whole, with a sane data offset and its options present)
/// and returns (flags, header length). The cheap first look at every TCP segment.
#[inline(always)]
fn tcp_check(start: usize, end: usize, l4: usize, l4_len: u32) -> Result<(u8, usize), Malformed> {
    let tcp = Checked::<TcpHdr>::at(start, end, l4)?;
    let data_offset: u8 = field!(tcp, TcpHdr, data_offset);
    let doff = usize::from(data_offset >> 4) * 4;
    if doff < size_of::<TcpHdr>() || l4_len < doff as u32 {
        return Err(Malformed);
    }
    // Options too: a SYN's options must be there for its answer to be matched.
    ptr_at::<u8>(start, end, l4 + doff - 1)?;
    Ok((field!(tcp, TcpHdr, flags), doff))
}

/// The first eight bytes of a TCP header: what a first fragment cut short still carries.
#[derive(Clone, Copy)]
pub struct TcpHead {
    pub src_port: u16,
    pub dst_port: u16,
    pub seq: u32,
}

/// The ports and sequence number of the located TCP segment, when a first fragment holds
/// them but not the whole header (whose flags are then unknown).
#[inline(always)]
pub fn tcp_head(start: usize, end: usize, h: &Headers) -> Result<TcpHead, Malformed> {
    if h.l4_len < 8 {
        return Err(Malformed);
    }
    let head = Checked::<TcpHeadHdr>::at(start, end, h.l4)?;
    Ok(TcpHead {
        src_port: u16::from_be_bytes(field!(head, TcpHeadHdr, src_port)),
        dst_port: u16::from_be_bytes(field!(head, TcpHeadHdr, dst_port)),
        seq: u32::from_be_bytes(field!(head, TcpHeadHdr, seq)),
    })
}

/// The flags of the located TCP segment, after checking its header.
#[inline(always)]
pub fn tcp_flags(start: usize, end: usize, h: &Headers) -> Result<u8, Malformed> {
    tcp_check(start, end, h.l4, h.l4_len).map(|(flags, _)| flags)
}

/// The located TCP segment's fields.
#[inline(always)]
pub fn tcp(start: usize, end: usize, h: &Headers) -> Result<Tcp, Malformed> {
    read_tcp(start, end, h.l4, h.l4_len)
}

#[inline(always)]
fn read_tcp(start: usize, end: usize, l4: usize, l4_len: u32) -> Result<Tcp, Malformed> {
    let (flags, doff) = tcp_check(start, end, l4, l4_len)?;
    let tcp = Checked::<TcpHdr>::at(start, end, l4)?;
    Ok(Tcp {
        src_port: u16::from_be_bytes(field!(tcp, TcpHdr, src_port)),
        dst_port: u16::from_be_bytes(field!(tcp, TcpHdr, dst_port)),
        seq: u32::from_be_bytes(field!(tcp, TcpHdr, seq)),
        ack: u32::from_be_bytes(field!(tcp, TcpHdr, ack)),
        flags,
        payload_len: l4_len - doff as u32,
    })
}

/// The first chunk type of the located SCTP packet (after its 12-byte common header), with
/// its ports.
#[inline(always)]
pub fn sctp(start: usize, end: usize, h: &Headers) -> Result<(u16, u16, u8), Malformed> {
    let common = Checked::<UdpHdr>::at(start, end, h.l4)?;
    if h.l4_len < 13 {
        return Err(Malformed);
    }
    let chunk = Checked::<u8>::at(start, end, h.l4 + 12)?;
    Ok((
        u16::from_be_bytes(field!(common, UdpHdr, src_port)),
        u16::from_be_bytes(field!(common, UdpHdr, dst_port)),
        chunk.get::<u8>(0),
    ))
}

/// The located UDP datagram's (source port, destination port).
#[inline(always)]
pub fn udp(start: usize, end: usize, h: &Headers) -> Result<(u16, u16), Malformed> {
    let udp = Checked::<UdpHdr>::at(start, end, h.l4)?;
    Ok((
        u16::from_be_bytes(field!(udp, UdpHdr, src_port)),
        u16::from_be_bytes(field!(udp, UdpHdr, dst_port)),
    ))
}

/// ICMP message kinds the programs care about, the same for ICMP and ICMPv6.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum IcmpKind {
    EchoRequest,
    EchoReply,
    /// Destination unreachable (ICMP type 3, ICMPv6 type 1).
    Unreachable,
    /// ICMPv6 parameter problem, unrecognised next header (type 4 code 1): IPv6's protocol
    /// unreachable.
    UnknownNextHeader,
    Other,
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
    /// with [`parse_quoted`].
    pub quote_offset: usize,
}

/// The located ICMP or ICMPv6 message, or `None` when the protocol does not match the IP
/// family (ICMPv4 in IPv6 or the reverse is not ours to read).
#[inline(always)]
pub fn icmp(start: usize, end: usize, h: &Headers) -> Result<Option<Icmp>, Malformed> {
    let family_matches = if h.v6 {
        h.proto == PROTO_ICMPV6
    } else {
        h.proto == PROTO_ICMP
    };
    if !family_matches {
        return Ok(None);
    }
    let icmp = Checked::<IcmpHdr>::at(start, end, h.l4)?;
    let raw_type: u8 = field!(icmp, IcmpHdr, kind);
    let code: u8 = field!(icmp, IcmpHdr, code);
    let kind = match (h.v6, raw_type) {
        (false, 8) | (true, 128) => IcmpKind::EchoRequest,
        (false, 0) | (true, 129) => IcmpKind::EchoReply,
        (false, 3) | (true, 1) => IcmpKind::Unreachable,
        (true, 4) if code == 1 => IcmpKind::UnknownNextHeader,
        _ => IcmpKind::Other,
    };
    Ok(Some(Icmp {
        kind,
        raw_type,
        code,
        id: u16::from_be_bytes(field!(icmp, IcmpHdr, id)),
        seq: u16::from_be_bytes(field!(icmp, IcmpHdr, seq)),
        quote_offset: h.l4 + size_of::<IcmpHdr>(),
    }))
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

/// The TCP, UDP or SCTP packet (or another protocol's, without ports) quoted by an ICMP
/// error at `offset`. Only the quoted IP header and
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
    let (src, dst, proto, l4, l4_len) = if v6 {
        let ip = Checked::<Ipv6Hdr>::at(start, end, offset)?;
        (
            Addr::from_bytes(field!(ip, Ipv6Hdr, src)),
            Addr::from_bytes(field!(ip, Ipv6Hdr, dst)),
            field!(ip, Ipv6Hdr, next_header),
            offset + size_of::<Ipv6Hdr>(),
            u32::from(u16::from_be_bytes(field!(ip, Ipv6Hdr, payload_len))),
        )
    } else {
        let (ihl, total_len, proto, _) = ipv4_lengths(start, end, offset)?;
        let ip = Checked::<Ipv4Hdr>::at(start, end, offset)?;
        (
            Addr::v4(field!(ip, Ipv4Hdr, src)),
            Addr::v4(field!(ip, Ipv4Hdr, dst)),
            proto,
            offset + ihl,
            total_len - ihl as u32,
        )
    };
    let (src_port, dst_port, answer_id) = match proto {
        PROTO_TCP => {
            let tcp = read_tcp(start, end, l4, l4_len)?;
            (tcp.src_port, tcp.dst_port, tcp.answer_id())
        }
        // SCTP's common header begins with the ports, as UDP's does.
        PROTO_UDP | PROTO_SCTP => {
            let udp = Checked::<UdpHdr>::at(start, end, l4)?;
            (
                u16::from_be_bytes(field!(udp, UdpHdr, src_port)),
                u16::from_be_bytes(field!(udp, UdpHdr, dst_port)),
                0,
            )
        }
        // Another protocol: no ports (a protocol scan's probe).
        _ => (0, 0, 0),
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

#[cfg(test)]
mod tests;
