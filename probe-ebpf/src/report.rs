//! Reporting an outcome: allow-lists and callbacks exempt it; the first of its kind per
//! (source, destination, port) moves the source's sequential test ([`crate::suspects`])
//! and becomes a ring-buffer event (summarised instead, [`crate::summary`], once the test
//! has decided on the source), repeats bump its count; the reader is woken only when a
//! backlog builds, the wakeup gap has passed, or the event carries the test's verdict.

use aya_ebpf::{
    bindings::{BPF_NOEXIST, BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::bpf_ktime_get_ns,
    maps::lpm_trie::Key,
};
use core::{
    intrinsics::{AtomicOrdering, atomic_xadd},
    ptr::read_volatile,
};
use probe_common::{Counter, Outcome, OutcomeKey, Pending, ProbeEvent, ProbeType};

use crate::{
    autoblock::block_scanner,
    hold::{held_repeat, hold, holding, release, touch_held},
    maps::{
        ALLOW_RULES, ALLOW_SERVICE_PORTS, ALLOW_SERVICES, ALLOW_SOURCES, CALLBACK_EPOCHS,
        CONTACTED, EPOCH, EVENTS, KEY_SCRATCH, LAST_WAKEUP_NS, OUTCOMES, RECORD_BYTES, ServiceKey,
        WAKEUP_BYTES, WAKEUP_GAP_NS, count, ours_mask, zero,
    },
    ours::host_slot,
    parse::Addr,
    summary::{COUNTED, REPEAT, summarize, summarizing},
    suspects::{
        Move, Source, Standing, UNDECIDED, VERDICT, known, mark_decided, step, step_decided, wait,
    },
};

/// Reports an outcome: the first of its kind becomes an event, repeats bump its count.
/// True when it was a first success of a TCP SYN whose step waits for the connection to
/// stand (see [`crate::pending::settle`] and [`crate::suspects::confirm`]). Not inlined:
/// a BPF subprogram with its own stack frame keeps the callers within the 512-byte
/// stack, and it runs only when an outcome is seen, not per packet. What every outcome
/// asks in it (decided? known? exempt? a held repeat? the step, the summary) is inlined
/// into it; what only some outcomes need (the hold, its release, the block, the event's
/// wakeup) stays a subprogram.
#[inline(never)]
pub(crate) fn report(pending: &Pending, outcome: Outcome, icmp_type: u8, icmp_code: u8) -> bool {
    let accepted = outcome == Outcome::Accepted;
    let failure = if accepted {
        Counter::Answered
    } else {
        Counter::Failed
    };
    // A source the kernel had decided on first: under a scan its outcomes are nearly all
    // there are. Summarised (see `crate::summary`): neither sent nor inserted, and neither
    // the outcome table nor the allow-lists nor the callback window are looked at
    // (userspace drops the ports of a source allow-listed after its verdict; a decided
    // source's repeat of a port it failed on before the verdict is told by the scan's port
    // list; a scanner's probes of our high ports count even after we contacted it). Its
    // walk still steps, so that it does not idle. A full summary map sends the outcome the
    // usual way.
    // The source's unit hashed once, for every per-source table looked at below.
    let source = Source::of(pending);
    if summarizing() && step_decided(source, !accepted) {
        match summarize(pending, outcome, icmp_type, icmp_code) {
            COUNTED => {
                count(failure);
                count(Counter::Summarized);
                return false;
            }
            REPEAT => {
                count(failure);
                count(Counter::Repeats);
                return false;
            }
            _ => {}
        }
    }
    // Successes are reported once per (source, destination host, service): the sequential
    // hypothesis test's first contacts on a single host, as the userspace test counts
    // them (a client that finds two services of a host open and five closed is two
    // successes and five failures). Built in a per-CPU slot, field by field: 48 bytes this
    // frame cannot spare.
    let Some(slot) = KEY_SCRATCH.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: a per-CPU array slot from a successful lookup, valid and ours alone for this
    // run (the program is not preempted by itself on this CPU); every field is written,
    // padding included, before the key is read.
    let key: &OutcomeKey = unsafe {
        (&raw mut (*slot).src_addr).write(pending.remote);
        (&raw mut (*slot).dst_addr).write(pending.local);
        (&raw mut (*slot).dst_port).write(pending.local_port);
        (&raw mut (*slot).proto).write(pending.proto);
        // A success is of the service, whatever the probe that found it.
        (&raw mut (*slot).probe).write(if accepted { 0 } else { pending.probe });
        (&raw mut (*slot).outcome).write(outcome as u8);
        (&raw mut (*slot).ip_version).write(pending.ip_version);
        zero(&raw mut (*slot)._pad);
        &*slot
    };
    // A repeat: a lookup and an atomic add (an exempt outcome is never in the table), for
    // a source the sequential test knows: a new one has nothing on record (see `known`).
    let holds = !accepted && holding();
    // A held failure's slot, read after `known` below, is loaded alongside its set.
    if holds {
        touch_held(source);
    }
    if known(source)
        && let Some(repeats) = OUTCOMES.get_ptr_mut(key)
    {
        // SAFETY: the value pointer comes from a successful lookup, is 8-byte aligned (map
        // values are) and valid for the program's duration; other CPUs only add atomically.
        unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(repeats, 1) };
        count(failure);
        count(Counter::Repeats);
        return false;
    }
    // The allow-lists are checked here, once per first outcome, rather than per attempt:
    // an LPM lookup would cost the per-SYN path more than its whole budget.
    match exemption(pending, source) {
        Exemption::Allowed => {
            count(Counter::Allowed);
            return false;
        }
        Exemption::Callback => {
            count(Counter::Callbacks);
            return false;
        }
        Exemption::None => {}
    }
    count(failure);
    // A held first failure is not in OUTCOMES (the insert is most of a first outcome's
    // cost, and a forged flood is all first outcomes): its slot tells its repeats.
    if holds && held_repeat(pending, source, outcome) {
        count(Counter::Repeats);
        return false;
    }
    // A first outcome: the source's sequential test moves, and may decide here. A TCP
    // success only once its connection stands (`confirm`, from the expiry sweep): half-open
    // and connect scanners get our SYN-ACK too, and reset it before a byte.
    let waits = accepted && pending.probe == ProbeType::TcpSyn as u8;
    let standing = if waits {
        Standing::WAITING
    } else if accepted {
        step(source, Move::Success)
    } else {
        step(source, Move::Failure)
    };
    let state = standing.state();
    // Pointed at for `step_decided`, which only summaries use.
    if state != UNDECIDED && summarizing() {
        mark_decided(source);
    }
    // A source whose only outcome is this failure: held until its second (see
    // `crate::hold`); with its second, the first goes out just before (and into OUTCOMES).
    if state == UNDECIDED && holds {
        if standing.failures() == 1 && standing.walk() == 1 {
            if hold(pending, source, outcome, icmp_type, icmp_code) {
                return false;
            }
        } else if standing.failures() == 2 && release(pending, source) {
            count(Counter::HeldReleased);
        }
    }
    // BPF_NOEXIST: if another CPU inserted the key meanwhile, it also sent the event; and
    // a source new to the test that the table still remembers on this key (its walk idled,
    // or a flood pushed it out of the cache) made this outcome before: no event, though its
    // new walk took the step (see `known`). A success's step waits for its connection (see
    // above): a repeat of it takes none, as one from a source the test knows.
    if OUTCOMES.insert(key, &1, u64::from(BPF_NOEXIST)).is_err() {
        return false;
    }
    // A first TCP success waits for its connection to stand, and holds a verdict at the
    // line back meanwhile (see `crate::suspects::wait`).
    if waits {
        wait(source);
    }
    let verdict = state == VERDICT;
    // 1: the verdict; 2: the verdict, and the source blocked here (`--block`).
    let verdict_byte = if verdict {
        count(Counter::Verdicts);
        if block_scanner(pending) { 2u8 } else { 1 }
    } else {
        0
    };
    let Some(mut entry) = EVENTS.reserve::<ProbeEvent>(0) else {
        count(Counter::RingbufDrops);
        return waits;
    };
    // Written field by field into the ring's memory: a whole event built first would take
    // 64 bytes of a stack the deepest call chain (egress, ACK probe, report) cannot spare.
    let event = entry.as_mut_ptr();
    // SAFETY: `event` points to the reserved, writable record of size_of::<ProbeEvent>()
    // bytes; bpf_ktime_get_ns has no preconditions.
    unsafe {
        write_event(
            event,
            pending,
            (outcome, icmp_type, icmp_code),
            verdict_byte,
            bpf_ktime_get_ns(),
        );
    }
    // The verdict wakes the reader at once: its alert must not wait for the wakeup gap.
    entry.submit(if verdict {
        u64::from(BPF_RB_FORCE_WAKEUP)
    } else {
        wakeup_flags()
    });
    count(Counter::EventsSent);
    waits
}

/// Writes the event of an outcome of `pending` (the outcome, ICMP type and code), with its
/// verdict byte and time, at `event`, field by field: every field, padding included.
///
/// # Safety
///
/// `event` points to writable memory of `size_of::<ProbeEvent>()` bytes.
#[inline(always)]
pub(crate) unsafe fn write_event(
    event: *mut ProbeEvent,
    pending: &Pending,
    (outcome, icmp_type, icmp_code): (Outcome, u8, u8),
    verdict: u8,
    now: u64,
) {
    // SAFETY: the caller's promise.
    unsafe {
        (&raw mut (*event).timestamp_ns).write(now);
        (&raw mut (*event).src_addr).write(pending.remote);
        (&raw mut (*event).dst_addr).write(pending.local);
        (&raw mut (*event).ifindex).write(pending.ifindex);
        (&raw mut (*event).src_port).write(pending.remote_port);
        (&raw mut (*event).dst_port).write(pending.local_port);
        (&raw mut (*event).proto).write(pending.proto);
        (&raw mut (*event).probe).write(pending.probe);
        (&raw mut (*event).outcome).write(outcome as u8);
        (&raw mut (*event).tcp_flags).write(pending.tcp_flags);
        (&raw mut (*event).ttl).write(pending.ttl);
        (&raw mut (*event).icmp_type).write(icmp_type);
        (&raw mut (*event).icmp_code).write(icmp_code);
        (&raw mut (*event).ip_version).write(pending.ip_version);
        (&raw mut (*event).src_mac).write(pending.mac);
        (&raw mut (*event).verdict).write(verdict);
        (&raw mut (*event)._pad2).write(0);
    }
}

/// The flags of a ring-buffer submit made now. No wakeup per record: the default
/// (adaptive) notification raises an irq_work, a self-IPI, whenever the reader has caught
/// up, which is most of the time, and costs microseconds (a VM exit on a virtual machine).
/// The reader is woken when a backlog builds (by the record that takes the unread data
/// across the threshold, not by every record after it), and otherwise at most once per
/// WAKEUP_GAP_NS (1 ms by default), so the first record after a quiet spell is read at once and a scan's
/// records within about a millisecond, for at most a thousand wakeups a second. The
/// reader's drain timer catches the rest. Not inlined: the egress call chain is close to
/// the 512-byte stack limit, and this needs no stack of its own.
#[inline(never)]
pub(crate) fn wakeup_flags() -> u64 {
    // SAFETY: bpf_ktime_get_ns has no preconditions. Read again rather than passed in: a
    // value kept alive across the record's write costs the caller stack it does not have.
    let now = unsafe { bpf_ktime_get_ns() };
    // SAFETY: reading plain globals; volatile so the load-time value and other CPUs'
    // stores are seen. A race between CPUs costs at most one extra wakeup.
    let threshold = unsafe { read_volatile(&WAKEUP_BYTES) };
    // SAFETY: as above.
    let last_wakeup = unsafe { read_volatile(&raw const LAST_WAKEUP_NS) };
    let unread = EVENTS.query(u64::from(BPF_RB_AVAIL_DATA));
    let crossing = unread >= threshold && unread < threshold + RECORD_BYTES;
    // SAFETY: as above.
    let gap = unsafe { read_volatile(&WAKEUP_GAP_NS) };
    let due = now.wrapping_sub(last_wakeup) >= gap;
    if due {
        // SAFETY: as above.
        unsafe { core::ptr::write_volatile(&raw mut LAST_WAKEUP_NS, now) };
    }
    u64::from(if crossing || due {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    })
}

/// Why an outcome is not reported.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exemption {
    None,
    /// Its source or local service is allow-listed.
    Allowed,
    /// Our hosts contacted its source shortly before: a callback.
    Callback,
}

/// Whether an outcome of `source` is exempt from reporting. Inlined into `report` (see
/// [`crate::suspects::known`]).
#[inline(always)]
pub(crate) fn exemption(pending: &Pending, source: Source) -> Exemption {
    if allowed(pending) {
        return Exemption::Allowed;
    }
    // Callbacks (active FTP data, media, chat) land on our high, ephemeral ports; a host we
    // contacted that probes our service ports is still a prober, so below 1024 the window
    // is not looked at: a random line of `CONTACTED` the less (12 ns of a new source's
    // first failure, median of eight interleaved bench runs, AMD EPYC).
    if pending.local_port < 1024 {
        return Exemption::None;
    }
    // An IPv4 source's unit is its address, so its hash is the host's: not computed
    // twice (an IPv6 source's unit is its /64, and `CONTACTED` holds whole addresses).
    let (index, tag) = if pending.ip_version == 6 {
        host_slot(&Addr::from_bytes(pending.remote))
    } else {
        source.slot(0, ours_mask())
    };
    // SAFETY: array slot from a successful lookup, read once; EPOCH and the global are
    // plain reads.
    let recent = CONTACTED.get_ptr(index).is_some_and(|slot| unsafe {
        let value = *slot;
        (value >> 32) as u32 == tag
            && (read_volatile(&raw const EPOCH) as u32).wrapping_sub(value as u32) as u64
                <= read_volatile(&CALLBACK_EPOCHS)
    });
    if recent {
        Exemption::Callback
    } else {
        Exemption::None
    }
}

/// True when the attempt's source, or its local service, is allow-listed.
#[inline(always)]
pub(crate) fn allowed(pending: &Pending) -> bool {
    // SAFETY: array slot from a successful lookup, read once; userspace writes it after
    // it changed the tries.
    let rules = ALLOW_RULES
        .get_ptr(0)
        .map_or(1, |p| unsafe { read_volatile(p) });
    if rules == 0 {
        return false;
    }
    if ALLOW_SOURCES.get(&Key::new(128, pending.remote)).is_some()
        || ALLOW_SERVICES.get(&Key::new(128, pending.local)).is_some()
    {
        return true;
    }
    let data = ServiceKey {
        port: pending.local_port.to_be_bytes(),
        addr: pending.local,
    };
    ALLOW_SERVICE_PORTS.get(&Key::new(144, data)).is_some()
}
