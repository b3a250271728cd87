//! Types shared by the eBPF programs and the userspace loader: map keys and values, the
//! ring-buffer record, counter indices, map names and their default sizes.
//!
//! Every type is `#[repr(C)]`, fields widest first, padding explicit, and its size pinned by
//! a `const` assertion so the two sides cannot drift apart silently. Addresses are 16 bytes
//! everywhere: IPv4 is stored IPv4-mapped (`::ffff:a.b.c.d`), so IPv6 needs no new layout.
#![no_std]

use core::mem::size_of;

/// Name of the XDP program (ingress) in the object file.
pub const XDP_PROGRAM: &str = "probe_ingress";
/// Name of the TC program (egress) in the object file.
pub const TC_PROGRAM: &str = "probe_egress";
/// Name of the ring buffer that carries [`ProbeEvent`]s.
pub const EVENTS_MAP: &str = "EVENTS";
/// Name of the per-CPU array of [`Counter`]s.
pub const COUNTERS_MAP: &str = "COUNTERS";
/// Name of the LRU hash of failed attempts, [`FailKey`] to a `u64` count.
pub const FAILURES_MAP: &str = "FAILURES";
/// Name of the direct-mapped array of inbound SYNs awaiting an answer, [`SynSlot`]s.
pub const SYN_SLOTS_MAP: &str = "SYN_SLOTS";

/// Entries of the `FAILURES` LRU hash: 65 536 × (40 B key + 8 B value + ~56 B kernel
/// overhead per element) ≈ 6.5 MiB. A flood of spoofed sources evicts the least recently
/// used pairs instead of failing inserts.
pub const FAILURES_ENTRIES: u32 = 65_536;
/// Slots of the `SYN_SLOTS` array: 65 536 × 16 B = 1 MiB. Must be a power of two: the slot
/// index is the flow hash masked by `SYN_SLOTS_ENTRIES - 1`. A colliding SYN overwrites the
/// slot (an approximate cache, as in Weaver, Staniford and Paxson 2004): under a flood some
/// answers go unmatched, but memory and per-packet cost stay fixed.
pub const SYN_SLOTS_ENTRIES: u32 = 65_536;
/// Size of the `EVENTS` ring buffer in bytes (a power-of-two multiple of the page size):
/// 256 KiB holds about 4 600 records between two reads.
pub const EVENTS_BYTES: u32 = 256 * 1024;

const _: () = assert!(SYN_SLOTS_ENTRIES.is_power_of_two());

/// IP protocol number of TCP, as carried in [`ProbeEvent::proto`] and [`FailKey::proto`].
pub const IPPROTO_TCP: u8 = 6;
/// IP protocol number of UDP.
pub const IPPROTO_UDP: u8 = 17;

/// Kernel-side counters, one slot each in the per-CPU `COUNTERS` array.
///
/// Userspace sums the per-CPU values; the order is the array index and is part of the ABI
/// between the two sides, so only append.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// Packets the XDP program looked at (every inbound frame).
    IngressPackets = 0,
    /// Packets the TC egress program looked at (every outbound frame).
    EgressPackets = 1,
    /// Inbound TCP segments with SYN set and ACK clear (connection attempts).
    Syns = 2,
    /// Outbound TCP segments with RST set.
    RstsOut = 3,
    /// Outbound RSTs that answered an inbound SYN we recorded: failed attempts.
    FailedAttempts = 4,
    /// Records submitted to the ring buffer.
    EventsSent = 5,
    /// Ring-buffer reservations that failed (ring full): events lost.
    RingbufDrops = 6,
    /// Frames cut short inside a header we parse, or with impossible header lengths.
    Malformed = 7,
    /// Outbound SYN-ACKs that answered an inbound SYN we recorded: successful attempts.
    Answered = 8,
}

impl Counter {
    /// Every counter, in index order.
    pub const ALL: [Counter; 9] = [
        Counter::IngressPackets,
        Counter::EgressPackets,
        Counter::Syns,
        Counter::RstsOut,
        Counter::FailedAttempts,
        Counter::EventsSent,
        Counter::RingbufDrops,
        Counter::Malformed,
        Counter::Answered,
    ];
    /// Number of slots in the `COUNTERS` array.
    pub const COUNT: u32 = Self::ALL.len() as u32;

    /// Stable snake_case name, used in logs and (later) metrics.
    pub const fn name(self) -> &'static str {
        match self {
            Counter::IngressPackets => "ingress_packets",
            Counter::EgressPackets => "egress_packets",
            Counter::Syns => "syns",
            Counter::RstsOut => "rsts_out",
            Counter::FailedAttempts => "failed_attempts",
            Counter::EventsSent => "events_sent",
            Counter::RingbufDrops => "ringbuf_drops",
            Counter::Malformed => "malformed",
            Counter::Answered => "answered",
        }
    }
}

/// What a [`ProbeEvent`] reports.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// The first time an inbound SYN from `src` to `dst:dst_port` was answered by our RST
    /// (the port is closed). Later failures of the same triple only bump the
    /// `FAILURES` counter.
    SynRefused = 1,
}

impl EventKind {
    /// Decodes the kind byte of a record; `None` for a kind this build does not know.
    pub const fn from_u8(raw: u8) -> Option<Self> {
        match raw {
            1 => Some(EventKind::SynRefused),
            _ => None,
        }
    }
}

/// One ring-buffer record: a state change seen by the kernel, never one per packet.
///
/// Addresses are in network byte order, IPv4-mapped for IPv4; ports in host byte order.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbeEvent {
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) when the outcome was seen.
    pub timestamp_ns: u64,
    /// The remote peer that made the attempt.
    pub src_addr: [u8; 16],
    /// Our address that it tried to reach.
    pub dst_addr: [u8; 16],
    /// Interface index the outcome was seen on.
    pub ifindex: u32,
    /// The remote peer's source port.
    pub src_port: u16,
    /// The port that was probed.
    pub dst_port: u16,
    /// IP protocol ([`IPPROTO_TCP`], ...).
    pub proto: u8,
    /// [`EventKind`] as a byte.
    pub kind: u8,
    /// TCP flags of the inbound probe.
    pub tcp_flags: u8,
    /// Explicit padding to a multiple of 8 bytes; always zero.
    pub _pad: [u8; 5],
}

const _: () = assert!(size_of::<ProbeEvent>() == 56);

/// Key of the `FAILURES` LRU hash: one (source, destination, port, protocol).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FailKey {
    /// Remote peer, network byte order, IPv4-mapped for IPv4.
    pub src_addr: [u8; 16],
    /// Our address, network byte order, IPv4-mapped for IPv4.
    pub dst_addr: [u8; 16],
    /// Probed port, host byte order.
    pub dst_port: u16,
    /// IP protocol.
    pub proto: u8,
    /// Explicit padding; always zero (it is part of the hashed key).
    pub _pad: [u8; 5],
}

const _: () = assert!(size_of::<FailKey>() == 40);

/// One slot of the `SYN_SLOTS` direct-mapped array: an inbound SYN waiting for our answer.
///
/// The slot index comes from a hash of the flow; `tag` is a second hash of the flow and of
/// the acknowledgement number our answer must carry, so an answer matches only the exact SYN
/// it replies to. A zero tag marks an empty slot.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SynSlot {
    /// `bpf_ktime_get_coarse_ns()` when the SYN arrived.
    pub seen_ns: u64,
    /// Flow and expected-ACK tag; 0 = empty.
    pub tag: u32,
    /// TCP flags of the inbound segment.
    pub tcp_flags: u8,
    /// Explicit padding; always zero.
    pub _pad: [u8; 3],
}

const _: () = assert!(size_of::<SynSlot>() == 16);

/// Builds the 16-byte IPv4-mapped form (`::ffff:a.b.c.d`) of an IPv4 address given in
/// network byte order.
#[inline(always)]
pub const fn ipv4_mapped(octets: [u8; 4]) -> [u8; 16] {
    [
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, octets[0], octets[1], octets[2], octets[3],
    ]
}

#[cfg(feature = "user")]
mod user {
    use super::{FailKey, ProbeEvent, SynSlot};

    // SAFETY: `ProbeEvent` is `#[repr(C)]`, made only of integers and byte arrays, with
    // explicit padding fields (no implicit padding, as the size assertion proves), so every
    // bit pattern is a valid value.
    unsafe impl aya::Pod for ProbeEvent {}
    // SAFETY: as above: `#[repr(C)]`, integers and byte arrays, no implicit padding.
    unsafe impl aya::Pod for FailKey {}
    // SAFETY: as above: `#[repr(C)]`, integers and byte arrays, no implicit padding.
    unsafe impl aya::Pod for SynSlot {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_indexed_in_order() {
        for (i, c) in Counter::ALL.iter().enumerate() {
            assert_eq!(*c as u32, i as u32, "{} out of order", c.name());
        }
    }

    #[test]
    fn event_kind_round_trips() {
        assert_eq!(
            EventKind::from_u8(EventKind::SynRefused as u8),
            Some(EventKind::SynRefused)
        );
        assert_eq!(EventKind::from_u8(0), None);
        assert_eq!(EventKind::from_u8(200), None);
    }

    #[test]
    fn ipv4_mapped_layout() {
        let m = ipv4_mapped([198, 18, 0, 1]);
        assert_eq!(&m[..10], &[0; 10]);
        assert_eq!(&m[10..12], &[0xff, 0xff]);
        assert_eq!(&m[12..], &[198, 18, 0, 1]);
    }
}
