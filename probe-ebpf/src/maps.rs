//! The maps and load-time globals both programs share, with their sizes, and the small
//! helpers that read them: the table masks and the per-CPU counters.

use core::{
    intrinsics::{AtomicOrdering, atomic_or},
    ptr::{read_volatile, write_volatile},
};

use aya_ebpf::{
    bindings::BPF_F_MMAPABLE,
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, RingBuf},
};
use probe_common::{
    ALLOW_ENTRIES, BLOCK_FILTER_ENTRIES, BLOCK_FILTER_WORDS, BLOCKED_ENTRIES,
    BLOCKED_MANUAL_ENTRIES, Block, Counter, EVENTS_BYTES, EXPIRE_AFTER as DEFAULT_EXPIRE_AFTER,
    HOME_TRIE_ENTRIES, HomeNets, LOCAL_ENTRIES, OURS_ENTRIES, OUTCOMES_ENTRIES, OutcomeKey,
    PEERS_ENTRIES, PENDING_ENTRIES, PENDING_REGION_SHIFT, PENDING_STATS_ENTRIES, PROTECTED_ENTRIES,
    Pending, ProbeEvent, Protection, REGION_FLAGS, RUNTIME_BLOCK_FILTER_HALF, RUNTIME_ENTRIES,
    block_filter_slot, pending_region_entries,
};

use crate::parse::{Addr, Malformed};

/// State changes for userspace; size set at load time (default [`EVENTS_BYTES`]).
#[map]
pub(crate) static EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_BYTES, 0);

/// Blocked sources (`--block`), read only when `BLOCK_ON` is set; see [`BLOCKED_ENTRIES`].
#[map]
pub(crate) static BLOCKED: LruHashMap<Addr, Block> =
    LruHashMap::with_max_entries(BLOCKED_ENTRIES, 0);

/// Blocks made by hand, never evicted by automatic ones; read only when `RUNTIME` says
/// some are in force. See [`BLOCKED_MANUAL_ENTRIES`].
#[map]
pub(crate) static BLOCKED_MANUAL: HashMap<Addr, Block> =
    HashMap::with_max_entries(BLOCKED_MANUAL_ENTRIES, 0);

/// The sources the block lists may hold, a bit each, in two halves (see
/// [`probe_common::BLOCK_FILTER_MAP`]); mmapable, so that userspace sets bits with atomic
/// operations as the kernel does.
#[map]
pub(crate) static BLOCK_FILTER: Array<u64> =
    Array::with_max_entries(BLOCK_FILTER_ENTRIES, BPF_F_MMAPABLE);

/// Settings userspace changes while running (indices in probe_common).
#[map]
pub(crate) static RUNTIME: Array<u32> = Array::with_max_entries(RUNTIME_ENTRIES, 0);

/// The home nets (one [`HomeNets`]), rewritten by userspace as addresses change.
#[map]
pub(crate) static HOME_NETS: Array<HomeNets> = Array::with_max_entries(1, 0);

/// All the home nets, when there are more than the list in `HOME_NETS` holds.
#[map]
pub(crate) static HOME_TRIE: LpmTrie<[u8; 16], u8> =
    LpmTrie::with_max_entries(HOME_TRIE_ENTRIES, 0);

/// This host's own addresses on the watched interfaces, kept current by userspace (see
/// [`probe_common::LOCAL_MAP`]).
#[map]
pub(crate) static LOCAL: HashMap<Addr, u8> = HashMap::with_max_entries(LOCAL_ENTRIES, 0);

/// Sources never blocked, by prefix, kept current by userspace (read by userspace when it
/// decides a block). See [`PROTECTED_ENTRIES`].
#[map]
pub(crate) static PROTECTED: LpmTrie<[u8; 16], Protection> =
    LpmTrie::with_max_entries(PROTECTED_ENTRIES, 0);

/// Peers: hosts that answered a connection we started, with when (see
/// [`probe_common::PEERS_MAP`]).
#[map]
pub(crate) static PEERS: LruHashMap<Addr, u64> = LruHashMap::with_max_entries(PEERS_ENTRIES, 0);

/// A per-CPU [`Pending`] to build a record in where the stack has no room for one.
#[map]
pub(crate) static SCRATCH: PerCpuArray<Pending> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU [`OutcomeKey`]s for `report` to build its key in (slot 0) and `hold::release`
/// the held one's (slot 1): the deepest call chain (egress, settle, report, a block on the
/// verdict) has no stack to spare for them.
#[map]
pub(crate) static KEY_SCRATCH: PerCpuArray<OutcomeKey> = PerCpuArray::with_max_entries(2, 0);

/// One `u64` per [`Counter`] per CPU.
#[map]
pub(crate) static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Counter::COUNT, 0);

/// Reported outcomes and their repeat counts; size set at load time (default
/// [`OUTCOMES_ENTRIES`]).
#[map]
pub(crate) static OUTCOMES: LruHashMap<OutcomeKey, u64> =
    LruHashMap::with_max_entries(OUTCOMES_ENTRIES, 0);

/// Inbound attempts awaiting an answer, two slots per flow hash (one in the first
/// `PENDING_FIRST_SLOTS`, one anywhere: [`crate::pending`]); size set at load time
/// (default [`PENDING_ENTRIES`], a power of two, mask in [`PENDING_MASK`]).
#[map]
pub(crate) static PENDING: Array<Pending> = Array::with_max_entries(PENDING_ENTRIES, 0);

/// One flag per region of `PENDING` (2^[`PENDING_REGION_SHIFT`] slots), [`REGION_FLAGS`]
/// to an entry (a cache line): the sweep epoch in which an attempt was last written there,
/// plus one ([`stamp`]; 0: never), so a sweep costs what is pending, not the table's size
/// (`crate::expire`). Attempts write it and the sweep only ever refreshes it, never clears
/// it: no write can undo another's. Entries set at load time ([`pending_region_entries`]
/// of the slot count; 16 KiB at the default).
#[map]
pub(crate) static PENDING_REGIONS: Array<[u32; REGION_FLAGS as usize]> =
    Array::with_max_entries(pending_region_entries(PENDING_ENTRIES), 0);

/// The flag of region `region` of `PENDING`, if the map has it.
#[inline(always)]
pub(crate) fn region_flag(region: u32) -> Option<*mut u32> {
    let line = PENDING_REGIONS.get_ptr_mut(region / REGION_FLAGS)?;
    // SAFETY: the flag is within the entry (the remainder is below its length).
    Some(unsafe { line.cast::<u32>().add((region % REGION_FLAGS) as usize) })
}

/// A region's flag for a write in sweep epoch `epoch`: the epoch plus one, never 0 (a
/// region never written).
#[inline(always)]
pub(crate) fn stamp(epoch: u64) -> u32 {
    (epoch as u32).wrapping_add(1).max(1)
}

/// True when the sweep of epoch `epoch` walks a region flagged `flag`: an attempt was
/// written there in this epoch or one of the [`RECENT_SWEEPS`] before it, or the sweep
/// found one staying there in one of those (it refreshes the flag).
#[inline(always)]
pub(crate) fn recent(flag: u32, epoch: u64) -> bool {
    flag != 0 && stamp(epoch).wrapping_sub(flag) <= RECENT_SWEEPS
}

/// Sweeps after its epoch for which a region's flag keeps it walked. An attempt stamped
/// epoch E (read before its slot and flag were written) is seen by sweep E + 1 unless its
/// program run was still under way when that sweep began; then by sweep E + 2, as long
/// as a program's run (microseconds) is shorter than the time between two sweeps (100 ms
/// at least). Any order in which two CPUs' stores become visible is covered, so there is
/// no race to repair.
pub(crate) const RECENT_SWEEPS: u32 = 2;

/// Sources never to report (allow-listed scanners), by prefix; see [`ALLOW_ENTRIES`].
#[map]
pub(crate) static ALLOW_SOURCES: LpmTrie<[u8; 16], u8> =
    LpmTrie::with_max_entries(ALLOW_ENTRIES, 0);

/// Allow-list rules in force (one `u32`, written by userspace after the tries): 0 leaves
/// the tries unread.
#[map]
pub(crate) static ALLOW_RULES: Array<u32> = Array::with_max_entries(1, 0);

/// Local services never to report, any port, by prefix.
#[map]
pub(crate) static ALLOW_SERVICES: LpmTrie<[u8; 16], u8> =
    LpmTrie::with_max_entries(ALLOW_ENTRIES, 0);

/// Local services never to report, one port: the key is the port (network order) then the
/// address, so that a prefix covers the port and the leading address bits.
#[map]
pub(crate) static ALLOW_SERVICE_PORTS: LpmTrie<ServiceKey, u8> =
    LpmTrie::with_max_entries(ALLOW_ENTRIES, 0);

/// The data of an `ALLOW_SERVICE_PORTS` key: port first, so that a prefix can cover the
/// port and then leading address bits. Copied whole, never built byte by byte (that would
/// spill every byte to the stack).
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct ServiceKey {
    /// Port, network byte order.
    pub(crate) port: [u8; 2],
    pub(crate) addr: [u8; 16],
}

/// Remote hosts our hosts contacted: tag << 32 | sweep epoch, direct-mapped by host hash
/// (same size as `OURS`).
#[map]
pub(crate) static CONTACTED: Array<u64> = Array::with_max_entries(OURS_ENTRIES, 0);

/// Written by each expiry sweep: live slots, epoch, slots read (indices in probe_common).
#[map]
pub(crate) static PENDING_STATS: Array<u64> = Array::with_max_entries(PENDING_STATS_ENTRIES, 0);

/// Tags of our own outbound attempts (SYNs, UDP datagrams), direct-mapped by flow hash;
/// size set at load time (default [`OURS_ENTRIES`], mask in [`OURS_MASK`]).
#[map]
pub(crate) static OURS: Array<u32> = Array::with_max_entries(OURS_ENTRIES, 0);

// Load-time configuration (set by userspace with `EbpfLoader::set_global`). Read through
// `read_volatile` so the compiler cannot fold in these defaults.
#[unsafe(no_mangle)]
pub(crate) static PENDING_MASK: u32 = PENDING_ENTRIES - 1;
#[unsafe(no_mangle)]
pub(crate) static OURS_MASK: u32 = OURS_ENTRIES - 1;
#[unsafe(no_mangle)]
pub(crate) static EXPIRE_AFTER: u64 = DEFAULT_EXPIRE_AFTER;
#[unsafe(no_mangle)]
pub(crate) static SWEEP_CHUNK: u32 = 2048;
/// Sweeps during which a host we contacted may call back unreported (about 60 s).
#[unsafe(no_mangle)]
pub(crate) static CALLBACK_EPOCHS: u64 = 60;
/// Key of the flow hash, random per load (set by userspace).
#[unsafe(no_mangle)]
pub(crate) static HASH_SEED: u64 = 0x243f_6a88_85a3_08d3;
/// The expiry sweep epoch: advanced by each run of `probe_expire`, stamped on each pending
/// attempt. Cheaper than a clock read per attempt, and exact in sweeps.
#[unsafe(no_mangle)]
pub(crate) static mut EPOCH: u64 = 0;
/// 1 while at least half the pending table's first region holds attempts waiting for an
/// answer (a flood, a scan of filtered ports): new attempts then go straight to their
/// second slot ([`crate::pending`]). Set at each sweep's end; 0 (open) at load. Beside
/// `EPOCH`, which every attempt reads too (`.bss`).
pub(crate) static mut FIRST_CLOSED: u32 = 0;
/// Bytes one record takes in the ring: the event and the ring's 8-byte header.
pub(crate) const RECORD_BYTES: u64 = core::mem::size_of::<ProbeEvent>() as u64 + 8;
/// Unread bytes in `EVENTS` from which a submit wakes the reader (a quarter of the ring).
#[unsafe(no_mangle)]
pub(crate) static WAKEUP_BYTES: u64 = EVENTS_BYTES as u64 / 4;
/// 1 when blocking is on (set at load from `--block`).
#[unsafe(no_mangle)]
pub(crate) static BLOCK_ON: u32 = 0;

/// True with `--block`. `BLOCK_ON` is a load-time constant the verifier knows, so with
/// blocking off it drops the code this guards: a call to a subprogram guarded here is
/// not made at all (a call and return cost about 7 ns, see [`crate::ours::is_home`]).
#[inline(always)]
pub(crate) fn blocking() -> bool {
    // SAFETY: reading a plain global; volatile so the load-time value is used.
    unsafe { read_volatile(&BLOCK_ON) != 0 }
}
/// When a submit last woke the reader (bpf_ktime_get_ns).
pub(crate) static mut LAST_WAKEUP_NS: u64 = 0;
/// Least time between two wakeups that no backlog asked for (set at load from
/// `--wakeup-ms`; `u64::MAX`: only a backlog wakes the reader).
#[unsafe(no_mangle)]
pub(crate) static WAKEUP_GAP_NS: u64 = 1_000_000;

#[inline(always)]
pub(crate) fn pending_mask() -> u32 {
    // SAFETY: reading a plain global; volatile so the load-time value is used.
    unsafe { read_volatile(&PENDING_MASK) }
}

/// Flags the region of `PENDING` slot `index`: an attempt was written there in sweep
/// epoch `epoch`. Written only when it changes (once per region and sweep), so that under
/// a flood the flags' cache lines stay shared between CPUs rather than bounce.
#[inline(always)]
pub(crate) fn flag_region(index: u32, epoch: u64) {
    if let Some(flag) = region_flag(index >> PENDING_REGION_SHIFT) {
        // SAFETY: a flag from `region_flag`.
        unsafe { restamp(flag, epoch) };
    }
}

/// Stamps the region flag at `flag` with `epoch` (by attempts, and by the sweep for a
/// region it found an attempt waiting in), unless it holds that stamp already.
///
/// # Safety
///
/// `flag` comes from [`region_flag`] in this program run. A concurrent write is of this
/// epoch or the one before (see [`RECENT_SWEEPS`]).
#[inline(always)]
pub(crate) unsafe fn restamp(flag: *mut u32, epoch: u64) {
    let now = stamp(epoch);
    // SAFETY: as the caller promised: an array slot valid for the program's run.
    unsafe {
        if read_volatile(flag) != now {
            write_volatile(flag, now);
        }
    }
}

#[inline(always)]
pub(crate) fn ours_mask() -> u32 {
    // SAFETY: reading a plain global; volatile so the load-time value is used.
    unsafe { read_volatile(&OURS_MASK) }
}

/// Writes zeros over the `N` bytes at `dst`, one volatile store a byte. Plain stores of a
/// zeroed array (or a loop of them) become a call to the `memset` LLVM links into the
/// object, a loop of one byte a turn behind a call: 10 bytes of padding cost a
/// summary's or an outcome's hot path more than its hash. `N` is a field's padding,
/// a handful of bytes.
///
/// # Safety
///
/// `dst` is valid for writes of `N` bytes.
#[inline(always)]
pub(crate) unsafe fn zero<const N: usize>(dst: *mut [u8; N]) {
    let bytes = dst.cast::<u8>();
    for i in 0..N {
        // SAFETY: within the `N` bytes the caller vouches for.
        unsafe { write_volatile(bytes.add(i), 0) };
    }
}

/// Adds one to a per-CPU counter.
#[inline(always)]
pub(crate) fn count(counter: Counter) {
    if let Some(value) = COUNTERS.get_ptr_mut(counter as u32) {
        // SAFETY: per-CPU array slot from a successful lookup; only this CPU writes it and
        // the program is not preempted by itself on this CPU.
        unsafe { *value += 1 };
    }
}

/// Starts loading the cache line at `p` without waiting for it: BPF has no prefetch
/// instruction, but a volatile read whose value goes unused is still issued, and the CPU
/// runs on while it is outstanding. Used where two random lines of large tables are
/// needed one after the other (a source's `SUSPECTS` set and its `HELD` slot): the second
/// miss then overlaps the first instead of following it.
///
/// # Safety
///
/// `p` is valid for reads (a map value from a successful lookup).
#[inline(always)]
pub(crate) unsafe fn touch<T>(p: *const T) {
    // SAFETY: the caller's promise.
    let _ = unsafe { read_volatile(p.cast::<u8>()) };
}

/// Passes a parse result on, counting frames we could not read.
#[inline(always)]
pub(crate) fn checked<T>(parsed: Result<T, Malformed>) -> Result<T, Malformed> {
    if parsed.is_err() {
        count(Counter::Malformed);
    }
    parsed
}

/// The word of `BLOCK_FILTER`'s half in force that holds `addr`'s bit, and the bit.
#[inline(always)]
fn block_filter_word(addr: &Addr) -> Option<(*mut u64, u64)> {
    // SAFETY: a pointer from a successful lookup of an array slot, read once.
    let half = RUNTIME
        .get_ptr(RUNTIME_BLOCK_FILTER_HALF)
        .map_or(0, |h| unsafe { read_volatile(h) } & 1);
    let (word, bit) = block_filter_slot(addr.0);
    let word = BLOCK_FILTER.get_ptr_mut(half * BLOCK_FILTER_WORDS + word)?;
    Some((word, bit))
}

/// False when `addr` is certainly in neither block list (its bit in `BLOCK_FILTER` is
/// clear); true when it may be.
#[inline(always)]
pub(crate) fn may_be_blocked(addr: &Addr) -> bool {
    // SAFETY: an array slot from a successful lookup, valid for this run; read once.
    block_filter_word(addr).is_none_or(|(word, bit)| unsafe { read_volatile(word) } & bit != 0)
}

/// Sets `addr`'s bit in `BLOCK_FILTER` (after its block was written, so that a frame that
/// finds the bit finds the block).
#[inline(always)]
pub(crate) fn note_blocked(addr: &Addr) {
    if let Some((word, bit)) = block_filter_word(addr) {
        // SAFETY: an array slot from a successful lookup, valid for this run; other CPUs
        // and userspace only OR bits in atomically, or rewrite the half not in force.
        unsafe { atomic_or::<u64, u64, { AtomicOrdering::Relaxed }>(word, bit) };
    }
}
