//! With `--block`, what the kernel does on its verdict ([`crate::suspects`]): the source
//! goes into `BLOCKED` in the program run that decided, so XDP drops its next frame and TC
//! drops our answers to it, unless the never-block policy spares it (a protected prefix, a
//! neighbour whose own frames these were not, a recent peer) or the budget of new blocks
//! is spent. Userspace reviews each block when the verdict's event arrives: it keeps it
//! (and counts it against the per-prefix cap), or lifts it (spoofed scans, the cap).

use core::ptr::read_volatile;

use aya_ebpf::maps::lpm_trie::Key;
use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::bpf_ktime_get_ns,
    macros::map,
    maps::{Array, PerCpuArray},
};
use probe_common::{Block, Counter, PEER_MEMORY_NS, Pending, protect};

use crate::{
    ingress::manual_block,
    maps::{BLOCK_ON, BLOCKED, PEERS, PROTECTED, blocking, count, may_be_blocked, note_blocked},
    parse::{Addr, Headers, endpoints},
};

/// The budget's state: milli-tokens left, and when they were last counted
/// (`bpf_ktime_get_ns`). Shared by every CPU without a lock: two verdicts at one instant may
/// both take the last token (one block over the budget at worst).
#[map]
pub(crate) static BLOCK_BUDGET: Array<u64> = Array::with_max_entries(2, 0);

/// Per CPU: the source this CPU last blocked on a verdict (zero: none). The answer that
/// made the verdict leaves in the same program run, after the block was made: it is
/// dropped too (the scanner learns one port fewer), and the slot forgotten. A slot left by
/// a run with no answer (the expiry sweep) names a blocked source, whose answers are
/// dropped anyway.
#[map]
static BLOCKED_NOW: PerCpuArray<Addr> = PerCpuArray::with_max_entries(1, 0);

/// How long an automatic block lasts, ns (set at load from `--block-ttl`).
#[unsafe(no_mangle)]
pub(crate) static BLOCK_TTL_NS: u64 = 3_600_000_000_000;
/// New automatic blocks a second, in thousandths (set at load from `--block-rate`).
#[unsafe(no_mangle)]
pub(crate) static BLOCK_RATE_MILLI: u64 = 5_000;
/// New automatic blocks at once after a quiet spell, in thousandths (`--block-rate`'s
/// burst).
#[unsafe(no_mangle)]
pub(crate) static BLOCK_BURST_MILLI: u64 = 50_000;

/// Blocks the source of `pending`, whose outcome was the kernel's verdict, unless the
/// policy spares it or the budget is spent; true when it did. Not inlined: its locals stay
/// out of `report`'s frame.
#[inline(never)]
pub(crate) fn block_scanner(pending: &Pending) -> bool {
    // SAFETY: reading plain globals; volatile so the load-time values are used.
    let (on, ttl) = unsafe { (read_volatile(&BLOCK_ON), read_volatile(&BLOCK_TTL_NS)) };
    if on == 0 {
        return false;
    }
    if let Some(protection) = PROTECTED.get(&Key::new(128, pending.remote)) {
        // A neighbour's own frames are its own scan; any other reason spares it.
        let others = protection.reasons & !protect::NEIGHBOUR;
        let forged_neighbour =
            protection.reasons & protect::NEIGHBOUR != 0 && protection.mac != pending.mac;
        if others != 0 || forged_neighbour {
            count(Counter::BlocksSpared);
            return false;
        }
    }
    let src = Addr::from_bytes(pending.remote);
    // SAFETY: bpf_ktime_get_ns has no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    let seen = PEERS.get_ptr(&src).map(|seen| {
        // SAFETY: a value from a successful lookup, valid for this run; read once.
        unsafe { *seen }
    });
    if seen.is_some_and(|seen| now.wrapping_sub(seen) < PEER_MEMORY_NS) {
        count(Counter::BlocksSpared);
        return false;
    }
    if !take_token(now) {
        count(Counter::BlocksOverBudget);
        return false;
    }
    let block = Block {
        until_ns: now.saturating_add(ttl),
        packets: 0,
    };
    // BPF_NOEXIST: a block in force (made by hand or earlier) stays as it is.
    if BLOCKED
        .insert(&src, &block, u64::from(BPF_NOEXIST))
        .is_err()
    {
        return false;
    }
    note_blocked(&src);
    count(Counter::KernelBlocks);
    if let Some(slot) = BLOCKED_NOW.get_ptr_mut(0) {
        // SAFETY: a per-CPU slot from a successful lookup, ours alone for this run.
        unsafe { *slot = src };
    }
    true
}

/// True when the packet, one of our answers, goes to the source this CPU's run just
/// blocked on its verdict (the verdict's own answer); forgets the source. Not inlined: its
/// value is used by the caller.
#[inline(never)]
pub(crate) fn answers_just_blocked(start: usize, end: usize, h: &Headers) -> bool {
    // Its callers test `blocking()` too, so that with `--block` off no call is made; this
    // one stays: without it the verifier gave up on `probe_egress` (E2BIG) with blocking
    // on, as the fleet tests load it.
    if !blocking() {
        return false;
    }
    let Ok(ends) = endpoints(start, end, h) else {
        return false;
    };
    take_blocked_now(&ends.dst)
}

/// True when this CPU's run just blocked `addr` on a verdict: the early verdict's in XDP
/// (its probe is dropped), or the egress verdict's (its answer is dropped). Forgets it.
#[inline(always)]
pub(crate) fn take_blocked_now(addr: &Addr) -> bool {
    let Some(slot) = BLOCKED_NOW.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: a per-CPU slot from a successful lookup, ours alone for this run.
    unsafe {
        if (*slot).0 == [0, 0] || *slot != *addr {
            return false;
        }
        *slot = Addr([0, 0]);
    }
    true
}

/// Takes one token of the budget at `now`; false when none is left.
#[inline(always)]
fn take_token(now: u64) -> bool {
    let (Some(tokens), Some(last)) = (BLOCK_BUDGET.get_ptr_mut(0), BLOCK_BUDGET.get_ptr_mut(1))
    else {
        return false;
    };
    // SAFETY: reading plain globals; volatile so the load-time values are used.
    let (rate, burst) = unsafe {
        (
            read_volatile(&BLOCK_RATE_MILLI),
            read_volatile(&BLOCK_BURST_MILLI),
        )
    };
    // SAFETY: array slots from successful lookups, valid for the run; races lose at most a
    // token's accounting (see BLOCK_BUDGET).
    unsafe {
        // The first verdict finds the bucket full.
        let elapsed = if *last == 0 {
            u64::MAX
        } else {
            now.saturating_sub(*last)
        };
        // Milli-tokens earned: rate (milli-tokens a second) × elapsed ms / 1000. A gap of
        // 1000 s or more fills the bucket; below it, elapsed ms < 10^6 and the rate (at most
        // u32::MAX × 1000) keep the product under 2^63 (a plain multiply: a checked one
        // needs a 128-bit helper BPF has not).
        let earned = if elapsed >= 1_000_000_000_000 {
            burst
        } else {
            rate.wrapping_mul(elapsed / 1_000_000) / 1_000
        };
        let mut left = (*tokens).saturating_add(earned).min(burst);
        *last = now;
        if left < 1_000 {
            *tokens = left;
            return false;
        }
        left -= 1_000;
        *tokens = left;
    }
    true
}

/// True when the packet, one of our answers (an RST, a SYN-ACK, an ICMP message), goes to
/// a blocked source: dropped, so a blocked scanner learns nothing from the probes that were
/// already inside a receive batch when its block was made. Not inlined: its value is used
/// by the caller.
#[inline(never)]
pub(crate) fn answers_blocked(start: usize, end: usize, h: &Headers) -> bool {
    // As in `answers_just_blocked`: the callers' test spares the call, this one the
    // verifier's work.
    if !blocking() {
        return false;
    }
    let Ok(ends) = endpoints(start, end, h) else {
        return false;
    };
    if !may_be_blocked(&ends.dst) {
        return false;
    }
    let block = match BLOCKED.get_ptr(&ends.dst) {
        Some(block) => block,
        None => match manual_block(&ends.dst) {
            Some(block) => block.cast_const(),
            None => return false,
        },
    };
    // SAFETY: bpf_ktime_get_ns has no preconditions; the pointer comes from a successful
    // lookup and stays valid during this run.
    unsafe { bpf_ktime_get_ns() < (*block).until_ns }
}
