//! Holding a source's first failure: a source whose only outcome so far is one failure (a
//! forged source of one probe is exactly that) costs userspace nothing. Its event waits in
//! `HELD`, direct-mapped by source (the next such source of the slot overwrites it), and
//! is sent just before the source's second first failure, the first sign that it is worth
//! reading; a source that never fails again is never read. A held failure is not in
//! `OUTCOMES` (the insert is most of a first outcome's cost): its slot tells its repeats,
//! and it goes in when it is sent.
//!
//! What that would hide, many sources failing once each on one host (a spread scan, split
//! over sources, or a forged flood), is counted per target in `CROWDS`: from
//! `CROWD_PORTS` distinct ports within the spread window, a target's one-probe failures
//! are sent at once, at most `CROWD_EVENTS` per target and window, so the crowd detector
//! sees the crowd and a flood costs userspace a bounded rate.

use core::ptr::{read_volatile, write_volatile};

use aya_ebpf::{
    bindings::{BPF_F_MMAPABLE, BPF_NOEXIST},
    helpers::bpf_ktime_get_coarse_ns,
    macros::map,
    maps::{Array, RingBuf},
};
use probe_common::{CROWD_SLOTS, Counter, FLEET_BYTES, HELD_SLOTS, Outcome, Pending, ProbeEvent};

use crate::{
    maps::{EPOCH, EVENTS, KEY_SCRATCH, OUTCOMES, count, touch, zero},
    parse::Addr,
    pending::Flow,
    report::{wakeup_flags, write_event},
    suspects::Source,
};

/// First failures held, direct-mapped by source: [`HELD_SLOTS`] slots of one
/// [`ProbeEvent`] each, 64 B, the size of a cache line. Mmapable only for its layout: such
/// an array's values start on a page, so that each slot is one line (a held failure's
/// look-up, write and release touch one line, not two). An empty slot's `timestamp_ns` is
/// 0 (the coarse clock it is stamped with never is: it counts from boot); a slot is its
/// source's when its `src_addr` is of the source's unit (no tag: the address is there).
#[map]
static HELD: Array<ProbeEvent> = Array::with_max_entries(HELD_SLOTS, BPF_F_MMAPABLE);

/// Per target host, direct-mapped ([`CROWD_SLOTS`] slots): `[tag << 32 | epoch << 16 |
/// sent, ports]`, the window's start in sweeps, the one-probe failures sent in it, and a
/// bit per port (by hash) that one-probe failures were held or sent for.
#[map]
static CROWDS: Array<[u64; 2]> = Array::with_max_entries(CROWD_SLOTS, 0);

/// Held first failures copied for the fleet (`--fleet`): evidence a sensor publishes
/// though local detection never reads it. Written only when `FLEET_ON` is set; the
/// default (adaptive) wakeup wakes the reader when it has caught up, and the reader reads
/// it at most every 10 ms, so a flood costs it at most 100 wakeups a second; a full ring
/// counts `fleet_drops`.
#[map]
static FLEET: RingBuf = RingBuf::with_byte_size(FLEET_BYTES, 0);

/// 1 when held first failures are copied to `FLEET` (set at load: `--fleet`).
#[unsafe(no_mangle)]
pub(crate) static FLEET_ON: u32 = 0;

/// 1 when first failures are held (set at load; 0 in tests that want every event).
#[unsafe(no_mangle)]
pub(crate) static HOLD_ON: u32 = 1;
/// Distinct ports (bits of the port hash) of one-probe failures on one target within the
/// window from which they are sent (set at load: half of `--spread-ports`, so the crowd
/// detector has its evidence by the time it needs it).
#[unsafe(no_mangle)]
pub(crate) static CROWD_PORTS: u32 = 5;
/// The window, in sweeps (set at load from `--spread-window`).
#[unsafe(no_mangle)]
pub(crate) static CROWD_EPOCHS: u16 = 10;
/// One-probe failures sent per target and window at most.
#[unsafe(no_mangle)]
pub(crate) static CROWD_EVENTS: u16 = 256;

/// Mixed into the tag so that `CROWDS` tags differ from other tables' for one host.
const CROWD_ID: u32 = 0xc20d_5e75;

/// True when first failures are held at all.
#[inline(always)]
pub(crate) fn holding() -> bool {
    // SAFETY: reading a plain global; volatile so the load-time value is used.
    unsafe { read_volatile(&HOLD_ON) != 0 }
}

/// Holds the first failure of the source of `pending` in `HELD`, unless its target is a
/// crowd whose failures are sent; false when the caller sends it. Not inlined: its locals
/// stay out of `report`'s frame.
#[inline(never)]
pub(crate) fn hold(
    pending: &Pending,
    source: Source,
    outcome: Outcome,
    icmp_type: u8,
    icmp_code: u8,
) -> bool {
    if crowded(pending) {
        count(Counter::CrowdSent);
        return false;
    }
    let Some(slot) = HELD.get_ptr_mut(held_index(source)) else {
        return false;
    };
    // The coarse clock, as summaries are stamped (the same monotonic clock, as of the last
    // tick: up to a tick early, never later): a held failure is the first of a source not
    // worth reading yet, and every forged source's answer comes here.
    // SAFETY: bpf_ktime_get_coarse_ns has no preconditions.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    // SAFETY: array slot from a successful lookup, valid for the program's run; its event
    // written whole by `write_event`. A racing CPU holding another source in the same
    // slot can tear it: the event may then mix the two sources' fields, a race of
    // nanoseconds.
    unsafe {
        if read_volatile(&raw const (*slot).timestamp_ns) != 0 {
            count(Counter::HeldOverwritten);
        }
        write_event(slot, pending, (outcome, icmp_type, icmp_code), 0, now);
    }
    count(Counter::Held);
    // SAFETY: reading a plain global; volatile so the load-time value is used.
    if unsafe { read_volatile(&FLEET_ON) } != 0 {
        export(pending, outcome, icmp_type, icmp_code, now);
    }
    true
}

/// Copies a held first failure to the fleet's ring. Not inlined: its locals stay out of
/// `hold`'s frame.
#[inline(never)]
fn export(pending: &Pending, outcome: Outcome, icmp_type: u8, icmp_code: u8, now: u64) {
    let Some(mut entry) = FLEET.reserve::<ProbeEvent>(0) else {
        count(Counter::FleetDrops);
        return;
    };
    // SAFETY: the reserved record is size_of::<ProbeEvent>() bytes, ours until submitted,
    // and `write_event` writes every field.
    unsafe {
        write_event(
            entry.as_mut_ptr(),
            pending,
            (outcome, icmp_type, icmp_code),
            0,
            now,
        )
    };
    entry.submit(0);
    count(Counter::FleetExported);
}

/// Sends the held first failure of the source of `pending`, if its slot still holds it
/// (its second first failure is about to be sent). Not inlined: its locals stay out of
/// `report`'s frame. Returns whether it sent one.
#[inline(never)]
pub(crate) fn release(pending: &Pending, source: Source) -> bool {
    let Some(slot) = HELD.get_ptr_mut(held_index(source)) else {
        return false;
    };
    // SAFETY: array slot from a successful lookup, valid for the program's run.
    if !unsafe { holds(slot, pending) } {
        return false;
    }
    // Emptied first, so that a release that fails below does not send it later; its time
    // is kept for the record.
    // SAFETY: as above.
    let held_at = unsafe { read_volatile(&raw const (*slot).timestamp_ns) };
    // SAFETY: as above.
    unsafe { write_volatile(&raw mut (*slot).timestamp_ns, 0) };
    // Into OUTCOMES now, as every first outcome sent is, so that its repeats are repeats.
    if let Some(key) = KEY_SCRATCH.get_ptr_mut(1) {
        // SAFETY: a per-CPU slot from a successful lookup, ours alone for this run; every
        // field written before the key is read; the slot's event read in place.
        unsafe {
            let event = slot.cast_const();
            (&raw mut (*key).src_addr).write((*event).src_addr);
            (&raw mut (*key).dst_addr).write((*event).dst_addr);
            (&raw mut (*key).dst_port).write((*event).dst_port);
            (&raw mut (*key).proto).write((*event).proto);
            (&raw mut (*key).probe).write((*event).probe);
            (&raw mut (*key).outcome).write((*event).outcome);
            (&raw mut (*key).ip_version).write((*event).ip_version);
            zero(&raw mut (*key)._pad);
            // Taken meanwhile by another CPU's repeat: it is in, as it should be.
            let _ = OUTCOMES.insert(&*key, &1, u64::from(BPF_NOEXIST));
        }
    }
    let Some(mut entry) = EVENTS.reserve::<ProbeEvent>(0) else {
        count(Counter::RingbufDrops);
        return false;
    };
    let to = entry.as_mut_ptr().cast::<u64>();
    // SAFETY: `to` points to the reserved record of size_of::<ProbeEvent>() bytes (8-byte
    // aligned: ring records are), and the slot's event is as long and as aligned; copied
    // a word at a time, every byte: its time (the first word, emptied above) as it was.
    unsafe {
        let from = slot.cast_const().cast::<u64>();
        write_volatile(to, held_at);
        for word in 1..size_of::<ProbeEvent>() / 8 {
            // Volatile: a loop of plain copies would become a call to a byte-wise memmove.
            write_volatile(to.add(word), read_volatile(from.add(word)));
        }
    }
    entry.submit(wakeup_flags());
    count(Counter::EventsSent);
    true
}

/// True when the held first failure of the source of `pending` is this very outcome
/// (same address, host, port, kind and outcome): a repeat. Inlined into `report` (see
/// [`crate::suspects::known`]).
#[inline(always)]
pub(crate) fn held_repeat(pending: &Pending, source: Source, outcome: Outcome) -> bool {
    let Some(slot) = HELD.get_ptr(held_index(source)) else {
        return false;
    };
    // SAFETY: array slot from a successful lookup, valid for the program's run; read only.
    unsafe {
        read_volatile(&raw const (*slot).timestamp_ns) != 0
            && (*slot).src_addr == pending.remote
            && (*slot).dst_addr == pending.local
            && (*slot).dst_port == pending.local_port
            && (*slot).proto == pending.proto
            && (*slot).probe == pending.probe
            && (*slot).outcome == outcome as u8
    }
}

/// The `HELD` slot of `source`.
#[inline(always)]
fn held_index(source: Source) -> u32 {
    source.slot(0, HELD_SLOTS - 1).0
}

/// Starts the load of the `HELD` slot of `source`, which [`held_repeat`] reads after the
/// look into `SUSPECTS` (see [`touch`]).
#[inline(always)]
pub(crate) fn touch_held(source: Source) {
    if let Some(slot) = HELD.get_ptr(held_index(source)) {
        // SAFETY: array slot from a successful lookup, valid for the program's run.
        unsafe { touch(slot) };
    }
}

/// True when the `HELD` slot at `slot` holds a failure of the source of `pending`: it is
/// not empty and its address is of the source's unit (the address, or its /64).
///
/// # Safety
///
/// `slot` points to a `HELD` slot, valid for the program's run.
#[inline(always)]
unsafe fn holds(slot: *const ProbeEvent, pending: &Pending) -> bool {
    // SAFETY: the caller's promise; read only.
    let (at, src, version) = unsafe {
        (
            read_volatile(&raw const (*slot).timestamp_ns),
            Addr::from_bytes((*slot).src_addr),
            (*slot).ip_version,
        )
    };
    let remote = Addr::from_bytes(pending.remote);
    at != 0
        && version == pending.ip_version
        && src.0[0] == remote.0[0]
        && (version == 6 || src.0[1] == remote.0[1])
}

/// Notes a one-probe failure on the target of `pending`; true when the target is a crowd
/// (many distinct ports failed by one-probe sources within the window) and the window's
/// budget of sent failures is not spent.
#[inline(always)]
fn crowded(pending: &Pending) -> bool {
    let target = Flow {
        remote: Addr::from_bytes(pending.local),
        local: Addr([0, 0]),
        remote_port: 0,
        local_port: 0,
        proto: 0,
    };
    let (index, tag) = target.slot(CROWD_ID, CROWD_SLOTS - 1);
    let Some(slot) = CROWDS.get_ptr_mut(index) else {
        return false;
    };
    // SAFETY: reading plain globals; volatile so the load-time values and the sweep's
    // latest epoch are used.
    let (epoch, window, needed, budget) = unsafe {
        (
            read_volatile(&raw const EPOCH) as u16,
            read_volatile(&CROWD_EPOCHS),
            read_volatile(&CROWD_PORTS),
            read_volatile(&CROWD_EVENTS),
        )
    };
    // SAFETY: array slot from a successful lookup, valid for the program's run; racing
    // CPUs may lose a bit or a count (approximate, as the table is).
    let slot = unsafe { &mut *slot };
    let [meta, ports] = *slot;
    let (mut ports, mut sent, start) =
        if (meta >> 32) as u32 == tag && epoch.wrapping_sub((meta >> 16) as u16) <= window {
            (ports, meta as u16, (meta >> 16) as u16)
        } else {
            (0, 0, epoch)
        };
    // A bit per port, by a multiplicative hash: distinct ports light distinct bits.
    let bit = (u32::from(pending.local_port).wrapping_mul(0x9e37_79b1) >> 26) & 63;
    ports |= 1 << bit;
    let crowd = ports.count_ones() >= needed && sent < budget;
    if crowd {
        sent += 1;
    }
    *slot = [
        (u64::from(tag) << 32) | (u64::from(start) << 16) | u64::from(sent),
        ports,
    ];
    crowd
}
