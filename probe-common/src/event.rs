//! The ring-buffer record (`ProbeEvent`) and what it says: the kind of attempt, its
//! outcome, and the key under which `OUTCOMES` remembers what was reported.

use core::mem::size_of;

/// What kind of attempt a probe was.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeType {
    /// A TCP SYN (connect or half-open scan).
    TcpSyn = 1,
    /// A TCP segment without SYN, ACK or RST (FIN, NULL, Xmas and the like).
    TcpStealth = 2,
    /// A TCP segment with ACK that matched no connection (ACK or Maimon FIN/ACK probe),
    /// known only from our RST answering it.
    TcpAck = 3,
    /// A UDP datagram.
    Udp = 4,
    /// An ICMP or ICMPv6 echo request (ping).
    IcmpEcho = 5,
    /// A TCP attempt cut in fragments (nmap `-f`, `--mtu`): its first fragment carried the
    /// ports and sequence number, not the flags.
    TcpFragment = 6,
    /// A TCP segment without ACK (a SYN or a stealth probe) that the ingress program never
    /// recorded (its flags beyond a fragment it could not read, or its slot taken), known
    /// only from our RST|ACK answering it.
    TcpUnseen = 7,
    /// A packet of an IP protocol nothing here speaks (nmap `-sO`), known from our ICMP
    /// protocol unreachable (ICMPv6: parameter problem, unrecognised next header); the
    /// protocol number is the event's `dst_port`.
    IpProtocol = 8,
    /// An SCTP packet (INIT, COOKIE ECHO: nmap `-sY`, `-sZ`) to a port nothing listens on,
    /// known from our ABORT or ICMP answer.
    Sctp = 9,
}

impl ProbeType {
    /// Decodes the byte; `None` for a value this build does not know.
    pub const fn from_u8(raw: u8) -> Option<Self> {
        match raw {
            1 => Some(Self::TcpSyn),
            2 => Some(Self::TcpStealth),
            3 => Some(Self::TcpAck),
            4 => Some(Self::Udp),
            5 => Some(Self::IcmpEcho),
            6 => Some(Self::TcpFragment),
            7 => Some(Self::TcpUnseen),
            8 => Some(Self::IpProtocol),
            9 => Some(Self::Sctp),
            _ => None,
        }
    }
}

/// How an attempt ended.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Closed: our RST, or ICMP port unreachable.
    Refused = 1,
    /// Open / alive: SYN-ACK, a UDP reply, an echo reply.
    Accepted = 2,
    /// ICMP destination unreachable other than port-unreachable and prohibited (no such
    /// host or network behind a gateway).
    Unreachable = 3,
    /// Filtered: ICMP administratively prohibited.
    Prohibited = 4,
    /// No answer within the pending timeout (filtered, or open for FIN/NULL/Xmas and UDP).
    Unanswered = 5,
}

impl Outcome {
    /// Decodes the byte; `None` for a value this build does not know.
    pub const fn from_u8(raw: u8) -> Option<Self> {
        match raw {
            1 => Some(Self::Refused),
            2 => Some(Self::Accepted),
            3 => Some(Self::Unreachable),
            4 => Some(Self::Prohibited),
            5 => Some(Self::Unanswered),
            _ => None,
        }
    }
}

/// One ring-buffer record: the first time an attempt from `src` to `dst:dst_port` of this
/// type ended this way (successes: the first per `src` and `dst`). Never one per packet.
///
/// Addresses are in network byte order, IPv4-mapped for IPv4; ports in host byte order. For
/// ICMP echo, `src_port` is the echo identifier and `dst_port` is 0.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbeEvent {
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) when the outcome was seen.
    pub timestamp_ns: u64,
    /// The remote peer that made the attempt.
    pub src_addr: [u8; 16],
    /// Our address that it tried to reach.
    pub dst_addr: [u8; 16],
    /// Interface index the attempt arrived on (the answer's for ACK probes).
    pub ifindex: u32,
    /// The remote peer's source port.
    pub src_port: u16,
    /// The port that was probed.
    pub dst_port: u16,
    /// IP protocol.
    pub proto: u8,
    /// [`ProbeType`] as a byte.
    pub probe: u8,
    /// [`Outcome`] as a byte.
    pub outcome: u8,
    /// TCP flags of the inbound probe (0 when not TCP or unknown).
    pub tcp_flags: u8,
    /// TTL or hop limit of the inbound probe as it arrived (0 when unknown).
    pub ttl: u8,
    /// ICMP type of the answer when it was an ICMP error, else 0.
    pub icmp_type: u8,
    /// ICMP code of the answer when it was an ICMP error, else 0.
    pub icmp_code: u8,
    /// 4 or 6: the IP version of the probe (an IPv6 probe from an IPv4-mapped source is not
    /// the IPv4 host's); 0 when unknown.
    pub ip_version: u8,
    /// The link-layer address the attempt came from: the Ethernet source of the probe (the
    /// destination of our answer for ACK probes). A neighbour's own address, or the
    /// router's when the probe crossed one: what tells a neighbour's real probes from
    /// forged ones (`--block`).
    pub src_mac: [u8; 6],
    /// 1 when this outcome took its source's walk in `SUSPECTS` to
    /// [`WALK_SCAN`](crate::WALK_SCAN): the kernel's verdict that the source scans (the
    /// record is submitted with a forced wakeup); 2 when, on it, the kernel also blocked
    /// the source (`--block`). 0 otherwise.
    pub verdict: u8,
    /// Explicit padding; always zero.
    pub _pad2: u8,
}

const _: () = assert!(size_of::<ProbeEvent>() == 64);

/// Key of the `OUTCOMES` LRU hash: what has been reported already.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct OutcomeKey {
    /// Remote peer, network byte order, IPv4-mapped for IPv4.
    pub src_addr: [u8; 16],
    /// Our address, network byte order, IPv4-mapped for IPv4.
    pub dst_addr: [u8; 16],
    /// Probed port (a success's service: successes are reported once per service).
    pub dst_port: u16,
    /// IP protocol.
    pub proto: u8,
    /// [`ProbeType`] (0 for successes: a service's, whatever probe found it).
    pub probe: u8,
    /// [`Outcome`].
    pub outcome: u8,
    /// 4 or 6: an IPv6 probe from an IPv4-mapped source is not the IPv4 host's (its
    /// outcomes must not make the host's own count as repeats).
    pub ip_version: u8,
    /// Explicit padding; always zero (it is part of the hashed key).
    pub _pad: [u8; 10],
}

const _: () = assert!(size_of::<OutcomeKey>() == 48);
