//! Types shared by the eBPF programs and the userspace loader: map keys and values, the
//! ring-buffer record, counter indices, map and global names and their default sizes.
//!
//! Every type is `#[repr(C)]`, fields widest first, padding explicit, and its size pinned by
//! a `const` assertion so the two sides cannot drift apart silently. Addresses are 16 bytes
//! everywhere: IPv4 is stored IPv4-mapped (`::ffff:a.b.c.d`).
//!
//! This file names the programs, the maps and globals of general use and their default
//! sizes; each concern's types and constants are in a module of their own, all re-exported
//! here: `counter` (the counters), `event` (the ring-buffer record), `pending` (the pending
//! table's slot), `walk` (the kernel's sequential test), `summary` (summaries, held
//! failures, crowds), `block` (blocking and protection), `home` (the home nets).
#![no_std]

mod block;
mod counter;
mod event;
mod home;
mod pending;
mod summary;
mod walk;

pub use block::*;
pub use counter::*;
pub use event::*;
pub use home::*;
pub use pending::*;
pub use summary::*;
pub use walk::*;

/// Name of the XDP program (ingress) in the object file.
pub const XDP_PROGRAM: &str = "probe_ingress";
/// Name of the TC program (egress) in the object file.
pub const TC_PROGRAM: &str = "probe_egress";
/// Name of the expiry program: never attached, run by userspace through
/// `BPF_PROG_TEST_RUN` to report attempts left unanswered.
pub const EXPIRE_PROGRAM: &str = "probe_expire";

/// Ring buffer of [`ProbeEvent`]s.
pub const EVENTS_MAP: &str = "EVENTS";
/// Ring buffer of held first failures copied for the fleet ([`ProbeEvent`] records;
/// written only when `FLEET_ON` is set at load, `--fleet`).
pub const FLEET_MAP: &str = "FLEET";
/// Size of the `FLEET` ring in bytes: about 3 600 records, read at most every 10 ms.
pub const FLEET_BYTES: u32 = 256 * 1024;
/// Per-CPU array of [`Counter`]s.
pub const COUNTERS_MAP: &str = "COUNTERS";
/// LRU hash of reported outcomes, [`OutcomeKey`] to a `u64` count.
pub const OUTCOMES_MAP: &str = "OUTCOMES";
/// Direct-mapped array of inbound attempts awaiting an answer, [`Pending`] slots.
pub const PENDING_MAP: &str = "PENDING";
/// Direct-mapped array of our own outbound attempts (`u32` tags), so that answers to them
/// are not taken for probes and unsolicited answers are seen as backscatter.
pub const OURS_MAP: &str = "OURS";
/// Direct-mapped array of remote hosts our hosts contacted (outbound SYN or UDP), `u64`
/// each: a host tag (high 32 bits) and the sweep epoch of the contact (low 32 bits). An
/// attempt from such a host within `CALLBACK_EPOCHS` is a callback (active FTP data,
/// chat, media), not a probe.
pub const CONTACTED_MAP: &str = "CONTACTED";
/// Global (`u64`): sweeps during which a host we contacted may call back unreported.
pub const CALLBACK_EPOCHS_GLOBAL: &str = "CALLBACK_EPOCHS";
/// Array of [`PENDING_STATS_ENTRIES`] `u64`s kept by the expiry program:
/// [`PENDING_STATS_LIVE`], [`PENDING_STATS_EPOCH`], [`PENDING_STATS_CURSOR`],
/// [`PENDING_STATS_COUNTING`], [`PENDING_STATS_WALKED`], [`PENDING_STATS_WALKING`] and
/// [`PENDING_STATS_FIRST`].
pub const PENDING_STATS_MAP: &str = "PENDING_STATS";
/// Index in `PENDING_STATS`: pending slots holding an attempt after the last sweep (the
/// table's occupancy: the closer to full, the more attempts collide and overwrite).
pub const PENDING_STATS_LIVE: u32 = 0;
/// Index in `PENDING_STATS`: the number of complete sweeps so far (the epoch attempts are
/// stamped with).
pub const PENDING_STATS_EPOCH: u32 = 1;
/// Index in `PENDING_STATS`: the first slot the next chunk of the sweep looks at (0: the
/// next run starts a new sweep).
pub const PENDING_STATS_CURSOR: u32 = 2;
/// Index in `PENDING_STATS`: live slots counted so far by the sweep under way.
pub const PENDING_STATS_COUNTING: u32 = 3;
/// Index in `PENDING_STATS`: slots the last complete sweep read (those of the regions an
/// attempt was written into in its epoch or the two before, or found staying in).
pub const PENDING_STATS_WALKED: u32 = 4;
/// Index in `PENDING_STATS`: slots read so far by the sweep under way.
pub const PENDING_STATS_WALKING: u32 = 5;
/// Index in `PENDING_STATS`: slots of the first region ([`PENDING_FIRST_SLOTS`]) found
/// holding an attempt so far by the sweep under way.
pub const PENDING_STATS_FIRST: u32 = 6;
/// Entries of `PENDING_STATS`.
pub const PENDING_STATS_ENTRIES: u32 = 7;
/// Global (`u32`): slots one run of the expiry program looks at. A sweep is several runs,
/// so that userspace can drain the ring buffer between them: one chunk reports at most
/// this many records, which must fit the ring.
pub const SWEEP_CHUNK_GLOBAL: &str = "SWEEP_CHUNK";

/// LPM trie of sources never to report: key = prefix length + 16-byte address, value `u8`.
pub const ALLOW_SOURCES_MAP: &str = "ALLOW_SOURCES";
/// LPM trie of local services never to report, any port: key as for `ALLOW_SOURCES`.
pub const ALLOW_SERVICES_MAP: &str = "ALLOW_SERVICES";
/// LPM trie of local services never to report, one port: key = prefix length + 2-byte port
/// (network order) + 16-byte address, the prefix counting the port's 16 bits.
pub const ALLOW_SERVICE_PORTS_MAP: &str = "ALLOW_SERVICE_PORTS";
/// Entries each allow-list trie holds at most (allocated as used: no preallocation).
pub const ALLOW_ENTRIES: u32 = 4096;

/// Global (`u32`): number of `PENDING` slots minus one; the slot count is a power of two.
pub const PENDING_MASK_GLOBAL: &str = "PENDING_MASK";
/// Global (`u32`): number of `OURS` slots minus one; the slot count is a power of two.
pub const OURS_MASK_GLOBAL: &str = "OURS_MASK";
/// Global (`u64`): key of the flow hash that places attempts in the direct-mapped tables,
/// random per load so that colliding flows cannot be computed in advance.
pub const HASH_SEED_GLOBAL: &str = "HASH_SEED";
/// Global (`u64`): sweeps of the expiry program after which a pending attempt counts as
/// unanswered (the timeout divided by the sweep interval, rounded up).
pub const EXPIRE_AFTER_GLOBAL: &str = "EXPIRE_AFTER";
/// Global (`u64`): unread ring-buffer bytes from which a submitted event wakes the reader;
/// below it the reader finds events on its drain timer.
pub const WAKEUP_BYTES_GLOBAL: &str = "WAKEUP_BYTES";
/// Global (`u64`): least nanoseconds between two wakeups of the reader that no backlog
/// asked for (`u64::MAX`: wake only on a backlog).
pub const WAKEUP_GAP_GLOBAL: &str = "WAKEUP_GAP_NS";
/// Array of one [`HomeNets`]: the prefixes that are "ours", rewritten by userspace while
/// running as addresses and routes change.
pub const HOME_NETS_MAP: &str = "HOME_NETS";
/// LPM trie of the home nets (key as for `ALLOW_SOURCES`, value `u8`), read instead of
/// the list in `HOME_NETS` when there are more than [`MAX_HOME_NETS`] of them.
pub const HOME_TRIE_MAP: &str = "HOME_TRIE";
/// Hash of this host's own addresses on the watched interfaces (16 bytes, IPv4-mapped, to
/// `u8` 1), kept current by userspace: the destinations whose sockets XDP may look up to
/// know that a probe will fail (the early verdict). Empty: no early verdict.
pub const LOCAL_MAP: &str = "LOCAL";
/// Addresses in [`LOCAL_MAP`] at most.
pub const LOCAL_ENTRIES: u32 = 256;
/// Home-net prefixes the trie holds at most.
pub const HOME_TRIE_ENTRIES: u32 = 4096;

/// Default `PENDING` slots: 65 536 × 64 B = 4 MiB.
pub const PENDING_ENTRIES: u32 = 65_536;
/// `PENDING`'s first region (16 KiB): an attempt takes its slot there when it is free,
/// else its second slot, anywhere in the table; answered at once, most attempts free their
/// slot and the next ones land in the same, cached, region (an accepted one moves to its
/// second slot, where it waits for the sweep's confirmation). While the sweep finds at
/// least half the region's slots holding attempts nobody answered yet (a flood, a scan of
/// filtered ports), it closes the region and attempts go straight to their second slot.
pub const PENDING_FIRST_SLOTS: u32 = 256;
/// `PENDING` slots per region of the expiry sweep (log2): the sweep walks only the
/// regions an attempt was written into since it last found them empty.
pub const PENDING_REGION_SHIFT: u32 = 4;
/// Name of the map of region flags (a `u32` per region of `PENDING`, [`REGION_FLAGS`] to
/// an entry; entries set at load: [`pending_region_entries`]).
pub const PENDING_REGIONS_MAP: &str = "PENDING_REGIONS";
/// Region flags per entry of `PENDING_REGIONS`: one cache line of `u32`s. (An array of
/// one flag per entry spaces its values 8 bytes apart: twice the lines for an attempt's
/// look at its flag.)
pub const REGION_FLAGS: u32 = 16;

/// The number of regions of a pending table of `slots` slots (a power of two).
pub const fn pending_regions(slots: u32) -> u32 {
    let regions = slots >> PENDING_REGION_SHIFT;
    if regions == 0 { 1 } else { regions }
}

/// Entries of `PENDING_REGIONS` for a pending table of `slots` slots.
pub const fn pending_region_entries(slots: u32) -> u32 {
    pending_regions(slots).div_ceil(REGION_FLAGS)
}

/// Default `OURS` slots: 16 384 × 4 B = 64 KiB.
pub const OURS_ENTRIES: u32 = 16_384;
/// Default `OUTCOMES` entries: 65 536 × (48 B key + 8 B value + ~56 B kernel overhead)
/// ≈ 7 MiB.
pub const OUTCOMES_ENTRIES: u32 = 65_536;
/// Default size of the `EVENTS` ring buffer in bytes (a power-of-two multiple of the page
/// size): 256 KiB holds about 3 600 records (72 B with the ring's header) between two
/// reads.
pub const EVENTS_BYTES: u32 = 256 * 1024;
/// Default pending timeout: an attempt unanswered after 3 s is reported as unanswered.
pub const TIMEOUT_NS: u64 = 3_000_000_000;
/// Default sweeps before an attempt counts as unanswered (3 s at one sweep a second).
pub const EXPIRE_AFTER: u64 = 3;
/// Home-net prefixes checked by a linear scan (cheaper than an LPM trie for a handful of
/// prefixes on the per-packet path); beyond them, `HOME_TRIE` is read.
pub const MAX_HOME_NETS: usize = 16;

const _: () = assert!(PENDING_ENTRIES.is_power_of_two() && OURS_ENTRIES.is_power_of_two());

/// IP protocol numbers as carried in events and keys.
pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_ICMPV6: u8 = 58;
pub const IPPROTO_SCTP: u8 = 132;
/// The protocol field of a protocol-scan event (nmap `-sO`), whose `dst_port` carries the
/// IP protocol number probed.
pub const IPPROTO_IP: u8 = 0;

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
    use super::{
        Block, HomeNet, HomeNets, OutcomeKey, Pending, ProbeEvent, Protection, Summary, SummaryKey,
    };

    // SAFETY: `#[repr(C)]`, integers and byte arrays with explicit padding fields (no
    // implicit padding, as the size assertion proves): every bit pattern is a valid value
    // and no byte is uninitialised. The same holds for the types below.
    unsafe impl aya::Pod for ProbeEvent {}
    // SAFETY: see above.
    unsafe impl aya::Pod for OutcomeKey {}
    // SAFETY: see above.
    unsafe impl aya::Pod for SummaryKey {}
    // SAFETY: see above.
    unsafe impl aya::Pod for Summary {}
    // SAFETY: see above.
    unsafe impl aya::Pod for Pending {}
    // SAFETY: see above.
    unsafe impl aya::Pod for HomeNet {}
    // SAFETY: see above.
    unsafe impl aya::Pod for Block {}
    // SAFETY: see above.
    unsafe impl aya::Pod for HomeNets {}
    // SAFETY: see above.
    unsafe impl aya::Pod for Protection {}
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
    fn enums_round_trip() {
        for p in [
            ProbeType::TcpSyn,
            ProbeType::TcpStealth,
            ProbeType::TcpAck,
            ProbeType::Udp,
            ProbeType::IcmpEcho,
            ProbeType::TcpFragment,
            ProbeType::TcpUnseen,
            ProbeType::IpProtocol,
            ProbeType::Sctp,
        ] {
            assert_eq!(ProbeType::from_u8(p as u8), Some(p));
        }
        for o in [
            Outcome::Refused,
            Outcome::Accepted,
            Outcome::Unreachable,
            Outcome::Prohibited,
            Outcome::Unanswered,
        ] {
            assert_eq!(Outcome::from_u8(o as u8), Some(o));
        }
        assert_eq!(ProbeType::from_u8(0), None);
        assert_eq!(Outcome::from_u8(200), None);
    }

    #[test]
    fn ipv4_mapped_layout() {
        let m = ipv4_mapped([198, 18, 0, 1]);
        assert_eq!(&m[..10], &[0; 10]);
        assert_eq!(&m[10..12], &[0xff, 0xff]);
        assert_eq!(&m[12..], &[198, 18, 0, 1]);
    }
}
