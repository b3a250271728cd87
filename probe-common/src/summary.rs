//! Summaries of a decided source's outcomes (`SUMMARIES`), the held first failures and
//! the crowds.

use core::mem::size_of;

/// Hash of per-source summaries (see [`SummaryKey`], [`Summary`]): once the kernel's
/// sequential test has decided on a source, its further first outcomes are counted here,
/// 512 ports an entry, instead of sent one by one through the ring buffer. This one holds
/// the even generations (see [`SUMMARY_GENERATION_MAP`]); userspace takes the map of the
/// generation before the current one whole, then advances the generation.
pub const SUMMARIES_MAP: &str = "SUMMARIES";
/// The same, for the odd generations (`SUMMARIES` holds the even ones).
pub const SUMMARIES_ODD_MAP: &str = "SUMMARIES_ODD";
/// Array of one `u32`: the generation (0 to 3) summaries are written in now, advanced by
/// userspace each time it reads them.
pub const SUMMARY_GENERATION_MAP: &str = "SUMMARY_GENERATION";
/// Entries of `SUMMARIES` and of `SUMMARIES_ODD` (preallocated, about 200 B each: 1.6 MiB
/// a map; 4 M ports a generation). When the one written is full, the outcomes of decided
/// sources go through the ring buffer one by one as before.
pub const SUMMARIES_ENTRIES: u32 = 8_192;
/// Global (`u32`): 1 when decided sources are summarised (0 with `--probes`, which writes
/// every outcome, and in tests that want every event).
pub const SUMMARIZE_GLOBAL: &str = "SUMMARIZE";
/// Global (`u32`): 1 when a source's first failure is held until its second (0 in
/// tests that want every event).
pub const HOLD_ON_GLOBAL: &str = "HOLD_ON";
/// Global (`u32`): 1 when held first failures are copied to the `FLEET` ring (`--fleet`).
pub const FLEET_ON_GLOBAL: &str = "FLEET_ON";
/// Slots of `HELD`, the held first failures (64 B each, a cache line: 4 MiB), direct-mapped
/// by source.
pub const HELD_SLOTS: u32 = 65_536;
/// Slots of `CROWDS`, the per-target counts of one-probe failures (16 B each: 1 MiB).
pub const CROWD_SLOTS: u32 = 65_536;
/// Globals of the crowd rule: distinct ports (`u32`), window in sweeps (`u16`), failures
/// sent per target and window (`u16`).
pub const CROWD_PORTS_GLOBAL: &str = "CROWD_PORTS";
pub const CROWD_EPOCHS_GLOBAL: &str = "CROWD_EPOCHS";
pub const CROWD_EVENTS_GLOBAL: &str = "CROWD_EVENTS";
const _: () = assert!(HELD_SLOTS.is_power_of_two() && CROWD_SLOTS.is_power_of_two());
/// Ports one summary entry covers: its `ports` bitmap. 512: a scan in random port order
/// (nmap's) touches every block of its range within one generation, so the entries read
/// a generation are the range / 512 (128 for all 65 536 ports), not the ports scanned.
pub const SUMMARY_PORTS: u16 = 512;
/// The 64-bit words of a [`Summary`]'s `ports` bitmap.
pub const SUMMARY_WORDS: usize = SUMMARY_PORTS as usize / 64;

/// Key of `SUMMARIES`: one source's outcomes of one kind, at one TTL, on one host and
/// block of [`SUMMARY_PORTS`] ports, in one generation.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SummaryKey {
    /// Remote peer, as in [`OutcomeKey`](crate::OutcomeKey).
    pub src_addr: [u8; 16],
    /// Our address, as in [`OutcomeKey`](crate::OutcomeKey).
    pub dst_addr: [u8; 16],
    /// The block of ports: port / [`SUMMARY_PORTS`].
    pub block: u16,
    /// IP protocol.
    pub proto: u8,
    /// [`ProbeType`](crate::ProbeType).
    pub probe: u8,
    /// [`Outcome`](crate::Outcome).
    pub outcome: u8,
    /// 4 or 6, as in [`OutcomeKey`](crate::OutcomeKey).
    pub ip_version: u8,
    /// The generation it was written in (0 to 3): userspace reads a generation once no
    /// program can still be writing it.
    pub generation: u8,
    /// TTL or hop limit of the attempts as they arrived, when at most
    /// [`SUMMARY_EXACT_TTL`]: part of the key, so that each such outcome keeps its own (a
    /// traceroute's TTL steps with the port). 0 for higher ones, whose range the value
    /// keeps (nmap sends each SYN with a random TTL: keyed by it, a scan's entries would
    /// be its blocks times the TTLs it drew).
    pub ttl: u8,
    /// Explicit padding; always zero (it is part of the hashed key).
    pub _pad: [u8; 8],
}

const _: () = assert!(size_of::<SummaryKey>() == 48);

/// Arrival TTLs a summary keys on one by one (see [`SummaryKey::ttl`]): those a
/// traceroute's probes arrive with (it sends up to 30), which userspace's traceroute filter
/// tells from a scan's by how they step with the port.
pub const SUMMARY_EXACT_TTL: u8 = 30;

/// Value of `SUMMARIES`: what the source's outcomes of the key's kind on that block were.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Summary {
    /// Bit i of word w set: port `block * SUMMARY_PORTS + w * 64 + i` had this outcome.
    pub ports: [u64; SUMMARY_WORDS],
    /// `bpf_ktime_get_ns()` of the first and the latest outcome counted.
    pub first_ns: u64,
    pub last_ns: u64,
    /// Interface the first attempt arrived on.
    pub ifindex: u32,
    /// The link-layer address the first attempt came from.
    pub src_mac: [u8; 6],
    /// TCP flags of the first attempt.
    pub tcp_flags: u8,
    /// ICMP type and code of the first answer when it was an ICMP error.
    pub icmp_type: u8,
    pub icmp_code: u8,
    /// The lowest and highest arrival TTL of the outcomes counted, when the key's `ttl` is
    /// 0 (0, 0: unknown). Widened without atomics: two CPUs racing may lose one of their
    /// TTLs from the range.
    pub ttl_min: u8,
    pub ttl_max: u8,
    /// Explicit padding; always zero.
    pub _pad: [u8; 9],
}

const _: () = assert!(size_of::<Summary>() == 104);
