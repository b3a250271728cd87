//! The expiry sweep, run by userspace through `BPF_PROG_TEST_RUN` a third of the pending
//! timeout apart, in chunks: attempts left unanswered are reported, and the table's
//! occupancy counted. It walks only the regions of the table an attempt was written into
//! in its epoch or the two before, or that it found an attempt staying in
//! (`PENDING_REGIONS`, `crate::maps::recent`), so a quiet table costs a look at each
//! region's flag, not a read of every slot.

use aya_ebpf::{helpers::generated::bpf_loop, macros::map, maps::Array};
use core::{
    ffi::c_void,
    ptr::{read_volatile, write_volatile},
};
use probe_common::{
    CONFIRM_AFTER_EPOCHS, Counter, Outcome, PENDING_ACCEPTED, PENDING_FIRST_SLOTS,
    PENDING_REGION_SHIFT, PENDING_REPORTED, PENDING_STATS_COUNTING, PENDING_STATS_CURSOR,
    PENDING_STATS_EPOCH, PENDING_STATS_FIRST, PENDING_STATS_LIVE, PENDING_STATS_WALKED,
    PENDING_STATS_WALKING,
};

use crate::{
    maps::{
        EPOCH, EXPIRE_AFTER, FIRST_CLOSED, PENDING, PENDING_MASK, PENDING_STATS, SWEEP_CHUNK,
        count, recent, region_flag, restamp,
    },
    report::report,
    suspects::confirm,
};

/// The chunk under way, for `bpf_loop`'s callback. In a map rather than on the stack: the
/// verifier follows a stack struct's exact values through every turn of the loop and never
/// sees the turns converge; a map value's fields are unknown to it.
#[map]
static SWEEP: Array<Sweep> = Array::with_max_entries(1, 0);

/// One chunk of the expiry sweep: from the sweep's cursor, looks at each region's flag
/// and walks the slots of the recently flagged ones (`bpf_loop`, no syscall per slot), reporting
/// every attempt older than the timeout as unanswered, until `SWEEP_CHUNK` slots were
/// walked or the table ends; the cursor (a slot, always a region's first) and the counts
/// live in `PENDING_STATS`.
#[inline(always)]
pub(crate) fn sweep_chunk() {
    let stat = |index: u32| {
        // SAFETY: array slot from a successful lookup, read once.
        PENDING_STATS.get_ptr(index).map_or(0, |p| unsafe { *p })
    };
    let set = |index: u32, value: u64| {
        if let Some(p) = PENDING_STATS.get_ptr_mut(index) {
            // SAFETY: array slot from a successful lookup; userspace runs one sweep at a time.
            unsafe { *p = value };
        }
    };
    // SAFETY: reading plain globals; volatile so the load-time values are used.
    let (mask, chunk) = unsafe { (read_volatile(&PENDING_MASK), read_volatile(&SWEEP_CHUNK)) };
    // The slot count is a power of two: regions of 2^shift slots, no division (a divisor
    // the compiler cannot prove non-zero brings a panic path the verifier refuses).
    let shift = mask
        .wrapping_add(1)
        .trailing_zeros()
        .min(PENDING_REGION_SHIFT);
    let region_slots = 1u32 << shift;
    let regions = (mask >> shift).wrapping_add(1);
    let cursor = (stat(PENDING_STATS_CURSOR) as u32 & mask) >> shift;
    let mut counting = stat(PENDING_STATS_COUNTING);
    let mut walking = stat(PENDING_STATS_WALKING);
    let mut first = stat(PENDING_STATS_FIRST);
    if cursor == 0 {
        // A new sweep: a new epoch, which attempts from now on are stamped with.
        // SAFETY: EPOCH is written only here; userspace runs one sweep at a time.
        let epoch = unsafe { read_volatile(&raw const EPOCH) }.wrapping_add(1);
        // SAFETY: as above.
        unsafe { write_volatile(&raw mut EPOCH, epoch) };
        set(PENDING_STATS_EPOCH, epoch);
        counting = 0;
        walking = 0;
        first = 0;
    }
    // SAFETY: as above.
    let epoch = unsafe { read_volatile(&raw const EPOCH) };
    let Some(state) = SWEEP.get_ptr_mut(0) else {
        return;
    };
    let budget = chunk.max(region_slots);
    // SAFETY: array slot from a successful lookup, valid for the run; only this program
    // uses it, and userspace runs one sweep at a time.
    unsafe {
        state.write(Sweep {
            epoch,
            // SAFETY: reading a plain global; volatile so the load-time value is used.
            after: read_volatile(&EXPIRE_AFTER),
            live: 0,
            region: cursor,
            regions,
            shift,
            offset: 0,
            budget,
            inside: 0,
            region_live: 0,
            first_live: 0,
        });
    }
    // Each turn of the loop looks at one flag or walks one slot: at most every flag and a
    // chunk's worth of slots (bpf_loop stops at 2^23 turns, far beyond either).
    let turns = regions.saturating_sub(cursor).saturating_add(budget);
    // SAFETY: `sweep_turn` has the callback signature bpf_loop expects and takes no
    // context.
    unsafe {
        bpf_loop(turns, sweep_turn as *mut c_void, core::ptr::null_mut(), 0);
    }
    // SAFETY: as above.
    let sweep = unsafe { &*state };
    counting += sweep.live;
    first += u64::from(sweep.first_live);
    walking += u64::from(budget.saturating_sub(sweep.budget));
    let next = if sweep.region >= regions {
        set(PENDING_STATS_LIVE, counting);
        // The first region is for attempts answered at once; with half its slots waiting
        // for an answer, it is being filled faster than answers free it (see
        // `crate::pending`).
        let closed = u32::from(first >= u64::from(PENDING_FIRST_SLOTS / 2));
        // SAFETY: FIRST_CLOSED is written only here; userspace runs one sweep at a time.
        unsafe { write_volatile(&raw mut FIRST_CLOSED, closed) };
        set(PENDING_STATS_WALKED, walking);
        0
    } else {
        sweep.region << shift
    };
    set(PENDING_STATS_COUNTING, counting);
    set(PENDING_STATS_WALKING, walking);
    set(PENDING_STATS_FIRST, first);
    set(PENDING_STATS_CURSOR, u64::from(next));
}

/// A chunk of the sweep under way.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct Sweep {
    pub(crate) epoch: u64,
    /// Epochs after which an attempt is unanswered.
    pub(crate) after: u64,
    /// Attempts still pending among the slots walked.
    pub(crate) live: u64,
    /// The region looked at.
    pub(crate) region: u32,
    pub(crate) regions: u32,
    /// Regions hold 2^shift slots.
    pub(crate) shift: u32,
    /// The next slot to walk within the region, while `inside`.
    pub(crate) offset: u32,
    /// Slots this chunk may still walk.
    pub(crate) budget: u32,
    /// 1: walking the region's slots (its flag is recent).
    pub(crate) inside: u32,
    /// 1: a slot walked in this region is still pending: its flag is refreshed.
    pub(crate) region_live: u32,
    /// Attempts still pending among the slots of the first region walked.
    pub(crate) first_live: u32,
}

/// bpf_loop callback: one turn of the sweep (see [`Sweep`]). Returns 1 to stop the chunk:
/// the table ended, or the budget cannot pay for a whole region.
#[inline(never)]
pub(crate) extern "C" fn sweep_turn(_: u32, _: *mut c_void) -> i64 {
    let Some(sweep) = SWEEP.get_ptr_mut(0) else {
        return 1;
    };
    // SAFETY: array slot from a successful lookup, valid for the call; only this program
    // uses it.
    let sweep = unsafe { &mut *sweep };
    if sweep.region >= sweep.regions {
        return 1;
    }
    let Some(flag) = region_flag(sweep.region) else {
        return 1;
    };
    if sweep.inside == 0 {
        // SAFETY: array slot from a successful lookup, valid for the call; attempts write
        // it concurrently, with this epoch or the one before.
        if !recent(unsafe { read_volatile(flag) }, sweep.epoch) {
            sweep.region += 1;
            return 0;
        }
        // A chunk stops between regions: its cursor is always a region's first slot.
        if sweep.budget < 1 << sweep.shift {
            return 1;
        }
        sweep.inside = 1;
        sweep.offset = 0;
        sweep.region_live = 0;
        return 0;
    }
    let index = (sweep.region << sweep.shift) | sweep.offset;
    if expire_slot(index, sweep.epoch, sweep.after) {
        sweep.live += 1;
        sweep.region_live = 1;
        if index < PENDING_FIRST_SLOTS {
            sweep.first_live += 1;
        }
    }
    sweep.offset += 1;
    sweep.budget = sweep.budget.saturating_sub(1);
    if sweep.offset >= 1 << sweep.shift {
        if sweep.region_live != 0 {
            // Walked again next sweep. Never an older epoch than an attempt's: no write
            // here or there can make a region holding an attempt look quiet.
            // SAFETY: a flag from `region_flag`, above.
            unsafe { restamp(flag, sweep.epoch) };
        }
        sweep.inside = 0;
        sweep.region += 1;
    }
    0
}

/// Reports and clears slot `index` if its attempt expired; true when an attempt stays.
#[inline(always)]
fn expire_slot(index: u32, epoch: u64, after: u64) -> bool {
    let Some(slot) = PENDING.get_ptr_mut(index) else {
        return false;
    };
    // SAFETY: the pointer comes from a successful array lookup and is valid for the call.
    let pending = unsafe { *slot };
    if pending.tag == 0 {
        return false;
    }
    let age = epoch.wrapping_sub(pending.seen_epoch);
    if pending.flags & PENDING_ACCEPTED != 0 {
        // A first success no reset took back: it stood, and counts now.
        if age < CONFIRM_AFTER_EPOCHS {
            return true;
        }
        // SAFETY: as above.
        unsafe { (*slot).tag = 0 };
        count(Counter::Confirmed);
        confirm(&pending);
        return false;
    }
    if age <= after {
        return true;
    }
    // SAFETY: as above.
    unsafe { (*slot).tag = 0 };
    // Reported when it arrived (the early verdict): its expiry only clears it.
    if pending.flags & PENDING_REPORTED != 0 {
        return false;
    }
    count(Counter::Unanswered);
    report(&pending, Outcome::Unanswered, 0, 0);
    false
}
