//! Packet parsing shared by the XDP (ingress) and TC (egress) programs: Ethernet with up to
//! two VLAN tags (802.1Q / 802.1ad), IPv4 with its header length taken from IHL, and TCP.
//!
//! Every read goes through [`ptr_at`], which checks the whole header against the end of the
//! packet before it is touched, so the verifier accepts each access and a truncated frame
//! is reported as [`Malformed`], never misread. Header structs are made of byte arrays only
//! (alignment 1), so reading them from any packet offset is sound.

use core::mem::size_of;

const ETH_P_IPV4: u16 = 0x0800;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
const IPPROTO_TCP: u8 = probe_common::IPPROTO_TCP;

/// TCP flag bits, as in the 14th byte of the TCP header.
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

const _: () = assert!(size_of::<EthHdr>() == 14);
const _: () = assert!(size_of::<VlanHdr>() == 4);
const _: () = assert!(size_of::<Ipv4Hdr>() == 20);
const _: () = assert!(size_of::<TcpHdr>() == 20);

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

/// The fields of a TCP segment over IPv4 that the programs use.
pub struct TcpPacket {
    /// Source address, network byte order.
    pub src_addr: [u8; 4],
    /// Destination address, network byte order.
    pub dst_addr: [u8; 4],
    pub src_port: u16,
    pub dst_port: u16,
    pub seq: u32,
    pub ack: u32,
    /// Flag byte (FIN, SYN, RST, PSH, ACK, URG, ECE, CWR).
    pub flags: u8,
    /// Bytes of TCP payload, from the IP total length.
    pub payload_len: u32,
}

/// Parses a frame. `Ok(None)` is a well-formed frame that is not a first-fragment TCP
/// segment over IPv4 (other protocols and non-first fragments are not ours to look at).
#[inline(always)]
pub fn parse_tcp(start: usize, end: usize) -> Result<Option<TcpPacket>, Malformed> {
    let eth: EthHdr = read_at(start, end, 0)?;
    let mut ether_type = u16::from_be_bytes(eth.ether_type);
    let mut offset = size_of::<EthHdr>();
    // Up to two tags (802.1ad outer + 802.1Q inner, or one of either), unrolled: no loop for
    // the verifier to bound.
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
    if ether_type != ETH_P_IPV4 {
        return Ok(None);
    }

    let ip: Ipv4Hdr = read_at(start, end, offset)?;
    if ip.version_ihl >> 4 != 4 {
        return Err(Malformed);
    }
    // Header length from IHL (in 32-bit words): 20 bytes plus options, at most 60.
    let ihl = usize::from(ip.version_ihl & 0x0f) * 4;
    if ihl < size_of::<Ipv4Hdr>() {
        return Err(Malformed);
    }
    let total_len = usize::from(u16::from_be_bytes(ip.total_len));
    if total_len < ihl {
        return Err(Malformed);
    }
    if ip.proto != IPPROTO_TCP {
        return Ok(None);
    }
    // Fragment offset (13 low bits) non-zero: a later fragment, with no TCP header.
    if u16::from_be_bytes(ip.frag_off) & 0x1fff != 0 {
        return Ok(None);
    }
    // The options themselves must be present too, not only announced.
    ptr_at::<u8>(start, end, offset + ihl - 1)?;
    offset += ihl;

    let tcp: TcpHdr = read_at(start, end, offset)?;
    let doff = usize::from(tcp.data_offset >> 4) * 4;
    if doff < size_of::<TcpHdr>() || total_len < ihl + doff {
        return Err(Malformed);
    }
    // Options too: a SYN's options must be there for its answer to be matched.
    ptr_at::<u8>(start, end, offset + doff - 1)?;
    Ok(Some(TcpPacket {
        src_addr: ip.src,
        dst_addr: ip.dst,
        src_port: u16::from_be_bytes(tcp.src_port),
        dst_port: u16::from_be_bytes(tcp.dst_port),
        seq: u32::from_be_bytes(tcp.seq),
        ack: u32::from_be_bytes(tcp.ack),
        flags: tcp.flags,
        payload_len: (total_len - ihl - doff) as u32,
    }))
}
