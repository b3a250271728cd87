//! The expiry sweep, run by userspace through `BPF_PROG_TEST_RUN` a third of the pending
//! timeout apart, in chunks: attempts left unanswered are reported, and the table's
//! occupancy counted.

use aya_ebpf::helpers::generated::bpf_loop;
use core::{ffi::c_void, ptr::read_volatile};
use probe_common::{
    Counter, Outcome, PENDING_STATS_COUNTING, PENDING_STATS_CURSOR, PENDING_STATS_EPOCH,
    PENDING_STATS_LIVE,
};

use crate::{
    maps::{EPOCH, EXPIRE_AFTER, PENDING, PENDING_MASK, PENDING_STATS, SWEEP_CHUNK, count},
    report::report,
};

/// One chunk of the expiry sweep: walks the next slots of the pending table in the kernel
/// (`bpf_loop`, no syscall per slot) and reports every attempt older than the timeout as
/// unanswered; the sweep's cursor and counts live in `PENDING_STATS`.
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
    let (slots, chunk) = unsafe {
        (
            u64::from(read_volatile(&PENDING_MASK)) + 1,
            u64::from(read_volatile(&SWEEP_CHUNK)).max(1),
        )
    };
    let cursor = stat(PENDING_STATS_CURSOR) % slots;
    let mut counting = stat(PENDING_STATS_COUNTING);
    if cursor == 0 {
        // A new sweep: a new epoch, which attempts from now on are stamped with.
        // SAFETY: EPOCH is written only here; userspace runs one sweep at a time.
        let epoch = unsafe { read_volatile(&raw const EPOCH) }.wrapping_add(1);
        // SAFETY: as above.
        unsafe { core::ptr::write_volatile(&raw mut EPOCH, epoch) };
        set(PENDING_STATS_EPOCH, epoch);
        counting = 0;
    }
    let mut sweep = Sweep {
        // SAFETY: as above.
        epoch: unsafe { read_volatile(&raw const EPOCH) },
        // SAFETY: reading a plain global; volatile so the load-time value is used.
        after: unsafe { read_volatile(&EXPIRE_AFTER) },
        first: cursor as u32,
        live: 0,
    };
    let count = chunk.min(slots - cursor);
    // SAFETY: `expire_slot` has the callback signature bpf_loop expects, and `sweep` lives
    // on this stack for the whole call.
    unsafe {
        bpf_loop(
            count as u32,
            expire_slot as *mut c_void,
            (&raw mut sweep).cast::<c_void>(),
            0,
        );
    }
    counting += sweep.live;
    let next = (cursor + count) % slots;
    if next == 0 {
        set(PENDING_STATS_LIVE, counting);
    }
    set(PENDING_STATS_COUNTING, counting);
    set(PENDING_STATS_CURSOR, next);
}

pub(crate) struct Sweep {
    pub(crate) epoch: u64,
    pub(crate) after: u64,
    /// The slot the chunk starts at.
    pub(crate) first: u32,
    pub(crate) live: u64,
}

/// bpf_loop callback: reports and clears slot `index` if it expired, counts it if it stays.
/// Returns 0: go on.
#[inline(never)]
pub(crate) extern "C" fn expire_slot(index: u32, ctx: *mut c_void) -> i64 {
    // SAFETY: bpf_loop passes back the pointer probe_expire gave it, to a live `Sweep`.
    let sweep = unsafe { &mut *ctx.cast::<Sweep>() };
    let Some(slot) = PENDING.get_ptr_mut(sweep.first.wrapping_add(index)) else {
        return 0;
    };
    // SAFETY: the pointer comes from a successful array lookup and is valid for the call.
    let pending = unsafe { *slot };
    if pending.tag == 0 {
        return 0;
    }
    if sweep.epoch.wrapping_sub(pending.seen_epoch) <= sweep.after {
        sweep.live += 1;
        return 0;
    }
    // SAFETY: as above.
    unsafe { (*slot).tag = 0 };
    count(Counter::Unanswered);
    report(&pending, Outcome::Unanswered, 0, 0);
    0
}
