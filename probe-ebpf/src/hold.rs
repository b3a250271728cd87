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
    bindings::BPF_NOEXIST,
    helpers::bpf_ktime_get_ns,
    macros::map,
    maps::{Array, RingBuf},
};
use probe_common::{CROWD_SLOTS, Counter, FLEET_BYTES, HELD_SLOTS, Outcome, Pending, ProbeEvent};

use crate::{
    maps::{EPOCH, EVENTS, KEY_SCRATCH, OUTCOMES, count, zero},
    parse::Addr,
    pending::Flow,
    report::{wakeup_flags, write_event},
    suspects::unit,
};

/// A held first failure: the event it would have been, and its source's tag (0: empty).
#[repr(C)]
pub(crate) struct Held {
    event: ProbeEvent,
    tag: u32,
    _pad: u32,
}

/// First failures held, direct-mapped by source ([`HELD_SLOTS`] slots of 72 B).
#[map]
static HELD: Array<Held> = Array::with_max_entries(HELD_SLOTS, 0);

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

/// Mixed into the tag so that `HELD` tags differ from other tables' for one source.
const HELD_ID: u32 = 0x4e1d_f1a7;
/// Likewise for `CROWDS`.
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
pub(crate) fn hold(pending: &Pending, outcome: Outcome, icmp_type: u8, icmp_code: u8) -> bool {
    if crowded(pending) {
        count(Counter::CrowdSent);
        return false;
    }
    let (index, tag) = unit(pending).slot(HELD_ID, HELD_SLOTS - 1);
    let Some(slot) = HELD.get_ptr_mut(index) else {
        return false;
    };
    // SAFETY: bpf_ktime_get_ns has no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    // SAFETY: array slot from a successful lookup, valid for the program's run; its event
    // written whole by `write_event`. A racing CPU holding another source in the same
    // slot can tear it: the tag then names one source and the event may be the other's,
    // a race of nanoseconds.
    unsafe {
        if (*slot).tag != 0 {
            count(Counter::HeldOverwritten);
        }
        write_event(
            &raw mut (*slot).event,
            pending,
            (outcome, icmp_type, icmp_code),
            0,
            now,
        );
        (&raw mut (*slot)._pad).write(0);
        (&raw mut (*slot).tag).write(tag);
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
pub(crate) fn release(pending: &Pending) -> bool {
    let (index, tag) = unit(pending).slot(HELD_ID, HELD_SLOTS - 1);
    let Some(slot) = HELD.get_ptr_mut(index) else {
        return false;
    };
    // SAFETY: array slot from a successful lookup, valid for the program's run.
    if unsafe { (*slot).tag } != tag {
        return false;
    }
    // SAFETY: as above.
    unsafe { (*slot).tag = 0 };
    // Into OUTCOMES now, as every first outcome sent is, so that its repeats are repeats.
    if let Some(key) = KEY_SCRATCH.get_ptr_mut(1) {
        // SAFETY: a per-CPU slot from a successful lookup, ours alone for this run; every
        // field written before the key is read; the slot's event read in place.
        unsafe {
            let event = &raw const (*slot).event;
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
    // a word at a time, every byte.
    unsafe {
        let from = (&raw const (*slot).event).cast::<u64>();
        for word in 0..size_of::<ProbeEvent>() / 8 {
            // Volatile: a loop of plain copies would become a call to a byte-wise memmove.
            write_volatile(to.add(word), read_volatile(from.add(word)));
        }
    }
    entry.submit(wakeup_flags());
    count(Counter::EventsSent);
    true
}

/// True when the held first failure of the source of `pending` is this very outcome
/// (same address, host, port, kind and outcome): a repeat. Not inlined: its locals stay
/// out of `report`'s frame.
#[inline(never)]
pub(crate) fn held_repeat(pending: &Pending, outcome: Outcome) -> bool {
    let (index, tag) = unit(pending).slot(HELD_ID, HELD_SLOTS - 1);
    let Some(slot) = HELD.get_ptr(index) else {
        return false;
    };
    // SAFETY: array slot from a successful lookup, valid for the program's run; read only.
    unsafe {
        let event = &raw const (*slot).event;
        (*slot).tag == tag
            && (*event).src_addr == pending.remote
            && (*event).dst_addr == pending.local
            && (*event).dst_port == pending.local_port
            && (*event).proto == pending.proto
            && (*event).probe == pending.probe
            && (*event).outcome == outcome as u8
    }
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
