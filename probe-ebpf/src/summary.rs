//! Summaries after the verdict: once the kernel's sequential test has decided on a source
//! ([`crate::suspects`]), its further first outcomes are counted into `SUMMARIES`, one entry
//! per host, kind of outcome and block of 512 ports, instead of going through the ring buffer
//! one by one, nor inserted into `OUTCOMES` (most of a first outcome's cost): a confirmed
//! scanner's thousands of probes then cost a hash update each, wake nobody, and reach
//! userspace as a few hundred entries a second; nothing is lost: every first outcome is a
//! bit. A bit set already is a repeat within the generation; a repeat in a later
//! generation reaches userspace again, where the open scan's port list tells it.
//!
//! Entries go into one of two maps by the parity of the generation they were written in
//! (`SUMMARY_GENERATION`). Userspace takes the map of the generation before the current one
//! whole (`BPF_MAP_LOOKUP_AND_DELETE_BATCH`: one pass that reads and empties it, no entry of
//! another generation to skip), then advances the generation, so that the emptied map is
//! the one written next.

use core::{
    intrinsics::{AtomicOrdering, atomic_or},
    ptr::{read_volatile, write_volatile},
};

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::bpf_ktime_get_coarse_ns,
    macros::map,
    maps::{Array, HashMap, PerCpuArray},
};
use probe_common::{
    Counter, Outcome, Pending, SUMMARIES_ENTRIES, SUMMARY_EXACT_TTL, SUMMARY_PORTS, SUMMARY_WORDS,
    Summary, SummaryKey,
};

use crate::maps::{count, zero};

/// Per-source summaries of decided sources written in even generations (see
/// [`SUMMARIES_ENTRIES`]). A plain hash, not an LRU: an insert into a full map fails, and the
/// outcome goes through the ring instead of silently evicting an entry no one has read.
#[map]
pub(crate) static SUMMARIES: HashMap<SummaryKey, Summary> =
    HashMap::with_max_entries(SUMMARIES_ENTRIES, 0);

/// The same, for odd generations.
#[map]
pub(crate) static SUMMARIES_ODD: HashMap<SummaryKey, Summary> =
    HashMap::with_max_entries(SUMMARIES_ENTRIES, 0);

/// The generation summaries are written in now (see [`probe_common::SUMMARY_GENERATION_MAP`]).
#[map]
static SUMMARY_GENERATION: Array<u32> = Array::with_max_entries(1, 0);

/// A per-CPU key and value to build an entry in: `report`'s call chain has no stack for
/// 152 bytes.
#[map]
static SUMMARY_SCRATCH: PerCpuArray<(SummaryKey, Summary)> = PerCpuArray::with_max_entries(1, 0);

/// 1 when decided sources are summarised (set at load; 0 with `--probes`).
#[unsafe(no_mangle)]
pub(crate) static SUMMARIZE: u32 = 1;

/// True when outcomes of decided sources are summarised at all.
#[inline(always)]
pub(crate) fn summarizing() -> bool {
    // SAFETY: reading a plain global; volatile so the load-time value is used.
    unsafe { read_volatile(&SUMMARIZE) != 0 }
}

/// [`summarize`] could not count it: the map is full (the caller sends it as an event).
pub(crate) const FULL: u8 = 0;
/// [`summarize`] counted a new port.
pub(crate) const COUNTED: u8 = 1;
/// [`summarize`] found the port counted already in this generation: a repeat.
pub(crate) const REPEAT: u8 = 2;

/// Counts an outcome of a decided source into its summary: [`COUNTED`], [`REPEAT`] or
/// [`FULL`]. Inlined into `report`: a decided source's outcomes, most of a scan's, run
/// it, and a subprogram's call costs about 7 ns here (see [`crate::ours::is_home`]); its
/// key and value are built in a per-CPU slot, not on the stack.
#[inline(always)]
pub(crate) fn summarize(pending: &Pending, outcome: Outcome, icmp_type: u8, icmp_code: u8) -> u8 {
    let Some(scratch) = SUMMARY_SCRATCH.get_ptr_mut(0) else {
        return FULL;
    };
    let generation = SUMMARY_GENERATION
        .get_ptr(0)
        // SAFETY: array slot from a successful lookup, read once.
        .map_or(0, |g| unsafe { read_volatile(g) } & 3) as u8;
    let port = pending.local_port;
    let offset = port % SUMMARY_PORTS;
    // The word of the bitmap and the bit in it; the mask keeps the index within the array
    // for the verifier.
    let word = usize::from(offset / 64) & (SUMMARY_WORDS - 1);
    let bit = 1u64 << (offset % 64);
    // A TTL above the traceroute range goes into the value's range, not the key.
    let ttl = pending.ttl;
    let (key_ttl, range_ttl) = if ttl <= SUMMARY_EXACT_TTL {
        (ttl, 0)
    } else {
        (0, ttl)
    };
    // The coarse clock (the same monotonic clock, as of the last tick: a few milliseconds
    // behind at most): a summary's times are its block of ports' first and last outcomes,
    // read in `update` and `end` records, and the precise clock cost this path 10-20 ns of
    // its 200 (same-run A/B, AMD EPYC). The verdict's own time, its `start`, stays precise.
    // SAFETY: bpf_ktime_get_coarse_ns has no preconditions.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    // The key, and what `add` reads of the value, built before the lookup; the rest of
    // the value (its bitmap above all) only when there is no entry to add to, the rare
    // case under a scan. SAFETY: a per-CPU slot from a successful lookup, ours alone for
    // this run; every field of the key, padding included, is written before it is read,
    // and every field of the value before it is inserted; the bitmap word by word, in
    // place (an array built on the stack would not fit).
    let (key, value): (&SummaryKey, *mut Summary) = unsafe {
        let key = &raw mut (*scratch).0;
        (&raw mut (*key).src_addr).write(pending.remote);
        (&raw mut (*key).dst_addr).write(pending.local);
        (&raw mut (*key).block).write(port / SUMMARY_PORTS);
        (&raw mut (*key).proto).write(pending.proto);
        (&raw mut (*key).probe).write(pending.probe);
        (&raw mut (*key).outcome).write(outcome as u8);
        (&raw mut (*key).ip_version).write(pending.ip_version);
        (&raw mut (*key).generation).write(generation);
        (&raw mut (*key).ttl).write(key_ttl);
        zero(&raw mut (*key)._pad);
        let value = &raw mut (*scratch).1;
        (&raw mut (*value).first_ns).write(now);
        (&raw mut (*value).last_ns).write(now);
        (&raw mut (*value).icmp_type).write(icmp_type);
        (&raw mut (*value).icmp_code).write(icmp_code);
        (&raw mut (*value).ttl_min).write(range_ttl);
        (&raw mut (*value).ttl_max).write(range_ttl);
        (&*key, value)
    };
    let map = if generation & 1 == 0 {
        &SUMMARIES
    } else {
        &SUMMARIES_ODD
    };
    // SAFETY: as above; `add` reads only the fields written.
    let added = add(map, key, unsafe { &*value }, word, bit);
    if added != FULL {
        return added;
    }
    // SAFETY: as above.
    let value: &Summary = unsafe {
        let ports = (&raw mut (*value).ports).cast::<u64>();
        for w in 0..SUMMARY_WORDS {
            // Volatile: a loop of plain stores would become a call to a byte-wise memset.
            write_volatile(ports.add(w), 0);
        }
        ports.add(word).write(bit);
        (&raw mut (*value).ifindex).write(pending.ifindex);
        (&raw mut (*value).src_mac).write(pending.mac);
        (&raw mut (*value).tcp_flags).write(pending.tcp_flags);
        zero(&raw mut (*value)._pad);
        &*value
    };
    if map.insert(key, value, u64::from(BPF_NOEXIST)).is_ok() {
        return COUNTED;
    }
    // Another CPU inserted it meanwhile (add to it), or the map is full.
    let added = add(map, key, value, word, bit);
    if added == FULL {
        count(Counter::SummariesFull);
    }
    added
}

/// Adds the outcome `value` starts an entry with (its time, its TTL range, its port: `bit`
/// of word `word`, below [`SUMMARY_WORDS`]) to the summary of `key` in `map`, if there is
/// one: [`COUNTED`], [`REPEAT`] when its bit was set, [`FULL`] when there is no such
/// summary. The TTL widens the entry's range even for a repeat (the range is of every
/// outcome's TTL).
#[inline(always)]
fn add(
    map: &HashMap<SummaryKey, Summary>,
    key: &SummaryKey,
    value: &Summary,
    word: usize,
    bit: u64,
) -> u8 {
    let Some(entry) = map.get_ptr_mut(key) else {
        return FULL;
    };
    let ttl = value.ttl_min;
    // SAFETY: the value pointer comes from a successful lookup, is 8-byte aligned (map
    // values are) and valid for the program's run; other CPUs only OR atomically
    // (`last_ns` is a plain store: the latest of racing writers wins, either is right; the
    // TTL range's bytes are plain stores too, and a race may narrow it by one TTL).
    unsafe {
        if ttl != 0 {
            if ttl < (*entry).ttl_min || (*entry).ttl_min == 0 {
                (&raw mut (*entry).ttl_min).write(ttl);
            }
            if ttl > (*entry).ttl_max {
                (&raw mut (*entry).ttl_max).write(ttl);
            }
        }
        let ports = (&raw mut (*entry).ports).cast::<u64>().add(word);
        let before = atomic_or::<u64, u64, { AtomicOrdering::Relaxed }>(ports, bit);
        if before & bit != 0 {
            return REPEAT;
        }
        (&raw mut (*entry).last_ns).write(value.last_ns);
    }
    COUNTED
}
