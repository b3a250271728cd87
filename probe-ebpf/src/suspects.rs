//! The sequential hypothesis test in the kernel: each source's walk (first failures minus
//! first successes) in a set-associative cache of packed cells (`SUSPECTS`), moved where an
//! outcome is first reported, so the probe that decides a scan is judged in the program run
//! that sees its answer.
//!
//! A source is its unit: an IPv4 address, or the /64 of an IPv6 address. Its set comes
//! from a hash keyed per load (`HASH_SEED`), so colliding sources cannot be computed in
//! advance; its 32-bit tag tells it from the other sources of its set. A new source takes
//! the cell with the lowest walk (an empty or idle cell first, then the oldest of the
//! lowest): a forged source of one probe reaches a walk of 1 and can only ever replace
//! another such, never a source that got closer to the verdict. A source unknown to the
//! cache whose outcome is a success takes an empty or idle cell only: clients take no
//! suspect's room.
//!
//! A source one first failure from the verdict is *armed* (`ARMED`, a small direct-mapped
//! array of tags): XDP looks there for each new attempt, and for an armed source's attempt
//! it knows will fail, gives the verdict on the probe itself ([`crate::early`]). `ARMED`
//! only points: the cell in `SUSPECTS` decides. Sources that reach the line and leave it
//! (a success, the verdict) clear their entry; a collision makes the earlier source wait
//! for its answer, as before.
//!
//! Ages are counted in expiry sweeps (`EPOCH`, advanced by `probe_expire`), a clock replay
//! drives as the live daemon does. Cells are read and written without locks: two CPUs
//! moving one source's walk at the same instant may lose one step (approximate, as the
//! cache is).

use core::ptr::{read_volatile, write_volatile};

use aya_ebpf::{macros::map, maps::Array};
use probe_common::{
    Pending, SUSPECT_SETS, SUSPECT_WAYS, WALK_BENIGN, WALK_IDLE_EPOCHS, WALK_MAX, WALK_SCAN,
    suspect,
};

use crate::{
    maps::EPOCH,
    parse::Addr,
    pending::{Flow, split},
};

/// Slots of [`ARMED`]: 4 096 × 4 B = 16 KiB, read for every new attempt (it stays in the
/// CPU's caches where `SUSPECTS`, 8 MiB, would not).
const ARMED_ENTRIES: u32 = 4096;

/// Tags of the sources armed for the early verdict (walk [`WALK_SCAN`] − 1), by a keyed
/// hash of the source's unit; 0: none.
#[map]
static ARMED: Array<u32> = Array::with_max_entries(ARMED_ENTRIES, 0);

/// Slots of [`VERDICTS`]: 4 096 × 8 B = 32 KiB.
const VERDICTS_ENTRIES: u32 = 4096;

/// The sources with a verdict in force, by a keyed hash of the source's unit: the tag in
/// the high half, the sweep epoch (low 32 bits) its cell in `SUSPECTS` was last stamped
/// in the low half; 0: none. Like `ARMED` it only points: a source found here whose cell
/// was stamped this sweep is decided without a look into `SUSPECTS` (8 MiB, a cache miss
/// per look), and a source not found is not decided, which spares every other source's
/// outcome that look while a verdict is in force. A decided source pushed out by a
/// colliding one is summarised again from its next outcome that reaches [`step`].
#[map]
static VERDICTS: Array<u64> = Array::with_max_entries(VERDICTS_ENTRIES, 0);

/// Mixed into the tag so that `VERDICTS` slots and tags differ from the other tables'.
const VERDICTS_ID: u32 = 0xdec1_de0d;

/// Points `VERDICTS` at `source`, stamped now: [`step`] found it decided
/// (or decided it). Called by `report` after the step, not by `step`: the step's frame is
/// on the deepest call chain. A subprogram of its own for the same reason.
#[inline(never)]
pub(crate) fn mark_decided(source: Source) {
    let (index, tag) = source.slot(VERDICTS_ID, VERDICTS_ENTRIES - 1);
    if let Some(slot) = VERDICTS.get_ptr_mut(index) {
        // SAFETY: array slot from a successful lookup, valid for the program's run; EPOCH
        // a plain read. A racing CPU's write makes the slot name one source or the other.
        unsafe { write_volatile(slot, verdict_pointer(tag, read_volatile(&raw const EPOCH))) };
    }
}

/// A `VERDICTS` slot's value: `tag`, stamped in sweep `epoch` (its low 32 bits).
#[inline(always)]
fn verdict_pointer(tag: u32, epoch: u64) -> u64 {
    u64::from(tag) << 32 | (epoch & 0xffff_ffff)
}

/// The sweep epoch of the latest arm, plus one (0: none since load). An arm older than
/// [`WALK_IDLE`] sweeps is of a walk that has idled since, so while none is newer (a
/// quiet host, or a flood of forged sources of one probe each, which never arm) the
/// per-attempt look into `ARMED`, a keyed hash, is skipped.
static mut LAST_ARMED: u64 = 0;

/// The latest sweep epoch stamped on a decided source's cell, plus one (0: none since
/// load). When it is older than [`WALK_IDLE`] sweeps every verdict has idled, and
/// [`step_decided`] (a keyed hash and a look into the 8 MiB `SUSPECTS`, for every outcome
/// reported) has nothing to find: a quiet host, or a flood of forged sources, skips it.
/// Written once a sweep at most (read first), so the line stays shared between CPUs.
static mut LAST_DECIDED: u64 = 0;

/// Stamps `last` ([`LAST_ARMED`] or [`LAST_DECIDED`]) with the current sweep epoch, plus
/// one; read first, so that it is written once a sweep at most.
///
/// # Safety
///
/// `last` is one of those globals.
#[inline(always)]
unsafe fn stamp(last: *mut u64) {
    // SAFETY: plain globals; racing CPUs store the same epoch, or neighbours.
    unsafe {
        let now = read_volatile(&raw const EPOCH).wrapping_add(1);
        if read_volatile(last) != now {
            write_volatile(last, now);
        }
    }
}

/// True when `last` ([`LAST_ARMED`] or [`LAST_DECIDED`]) was stamped within [`WALK_IDLE`]
/// sweeps: a cell it stands for may not have idled yet.
///
/// # Safety
///
/// `last` is one of those globals.
#[inline(always)]
unsafe fn stamped_recently(last: *const u64) -> bool {
    // SAFETY: plain globals, read once each.
    let (last, epoch, idle) = unsafe {
        (
            read_volatile(last),
            read_volatile(&raw const EPOCH),
            read_volatile(&WALK_IDLE),
        )
    };
    last != 0 && epoch.wrapping_sub(last - 1) <= u64::from(idle)
}

/// Mixed into the tag so that `ARMED` slots and tags differ from `SUSPECTS`'.
const ARMED_ID: u32 = 0xa53e_d001;

/// The per-source walks; size set at load time (default [`SUSPECT_SETS`] sets).
#[map]
pub(crate) static SUSPECTS: Array<[u64; SUSPECT_WAYS]> = Array::with_max_entries(SUSPECT_SETS, 0);

/// Sets − 1 (set at load).
#[unsafe(no_mangle)]
pub(crate) static SUSPECT_MASK: u32 = SUSPECT_SETS - 1;

/// Sweeps after which an idle source's walk starts over: 10 minutes of sweeps (set at
/// load from the sweep interval).
#[unsafe(no_mangle)]
pub(crate) static WALK_IDLE: u16 = WALK_IDLE_EPOCHS;

/// 1 when a verdict waits while a first TCP success of the source waits to be settled
/// (set at load: `--settle-successes`; see [`wait`]).
#[unsafe(no_mangle)]
pub(crate) static SETTLE_SUCCESSES: u32 = 0;

/// Mixed into the tag so that `SUSPECTS` tags differ from `CONTACTED`'s for one host.
const SUSPECT_ID: u32 = 0x5c0f_f1e5;

/// The walk is below the verdict (or the source could not be placed).
pub(crate) const UNDECIDED: u8 = 0;
/// This step took the walk to the verdict ([`WALK_SCAN`]): once until the source idles.
pub(crate) const VERDICT: u8 = 1;
/// The source had its verdict before this step (its outcomes are summarised).
pub(crate) const DECIDED: u8 = 2;

/// Where a source stands after a step, packed in one register: its state
/// ([`UNDECIDED`], [`VERDICT`] or [`DECIDED`]), its distinct first failures and its walk.
#[derive(Clone, Copy)]
#[repr(transparent)]
pub(crate) struct Standing(u32);

impl Standing {
    /// A first success whose step waits ([`confirm`]): the walk did not move.
    pub(crate) const WAITING: Self = Self(UNDECIDED as u32);

    #[inline(always)]
    fn new(state: u8, failures: u8, walk: i8) -> Self {
        Self(u32::from(state) | (u32::from(failures) << 8) | (u32::from(walk as u8) << 16))
    }

    /// [`UNDECIDED`], [`VERDICT`] or [`DECIDED`].
    #[inline(always)]
    pub(crate) fn state(self) -> u8 {
        self.0 as u8
    }

    /// Distinct first failures since the walk (re)started.
    #[inline(always)]
    pub(crate) fn failures(self) -> u8 {
        (self.0 >> 8) as u8
    }

    /// The walk: first failures minus first successes.
    #[inline(always)]
    pub(crate) fn walk(self) -> i8 {
        (self.0 >> 16) as u8 as i8
    }
}

/// True when `source` has a walk in the cache that has not idled. `report`
/// asks first, and looks for a repeat in `OUTCOMES` (a keyed hash and a random bucket)
/// only for such a source: a new source's outcome, every forged one's in a flood, skips
/// it; the look into `SUSPECTS` here is the one [`step`] makes next. A source the cache
/// forgot (its walk idled, or a flood pushed it out) whose outcome `OUTCOMES` still holds
/// takes a step for it that the userspace test, sent no event, does not: one step at
/// most each time the cache forgets it, since the step makes it known again. Inlined into
/// `report`, as the other questions every outcome asks are: a subprogram's call costs
/// about 7 ns here (see [`crate::ours::is_home`]).
#[inline(always)]
pub(crate) fn known(source: Source) -> bool {
    let Some((set, tag, epoch, idle_after)) = locate(source) else {
        return true;
    };
    // SAFETY: array slot from a successful lookup, valid for the program's run, read once.
    let set = unsafe { read_volatile(set) };
    set.iter()
        .any(|&cell| suspect::tag(cell) == tag && !idle(cell, epoch, idle_after))
}

/// What moves a walk: a first failure, a first success counted at once (a UDP reply, an
/// echo reply), or a first TCP success counted once its connection stood ([`confirm`]),
/// which also settles one waiting success.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Move {
    Failure,
    Success,
    Confirmed,
}

/// Moves the walk of `source` one step, up for a first failure and down for a first
/// success; returns where the source stands. A decided source's step only counts the
/// failure and keeps the cell from idling. First outcomes are `report`'s: a failure once
/// per host, port and kind of probe, a success once per host and service. A failure that
/// takes the walk to the line is the verdict; under `--settle-successes` not while a first
/// TCP success of the source waits to be settled ([`wait`]): then the verdict waits for
/// it, and the walk counts on (up to [`WALK_MAX`]). Inlined into `report` (see [`known`]).
#[inline(always)]
pub(crate) fn step(source: Source, how: Move) -> Standing {
    let failed = how == Move::Failure;
    let Some((set, tag, epoch, idle_after)) = locate(source) else {
        return Standing::new(UNDECIDED, 0, 0);
    };
    // SAFETY: array slot from a successful lookup, valid for the program's run; other CPUs
    // may write it meanwhile (a lost step at worst, see the module documentation).
    let set = unsafe { &mut *set };
    let mut found = SUSPECT_WAYS;
    let mut victim = 0;
    let mut victim_rank = u32::MAX;
    for (way, &cell) in set.iter().enumerate() {
        if suspect::tag(cell) == tag {
            found = way;
            break;
        }
        let rank = rank(cell, epoch, idle_after);
        if rank < victim_rank {
            victim_rank = rank;
            victim = way;
        }
    }
    let (way, mut cell) = match set.get(found) {
        Some(&cell) => (found, cell),
        // A success of a source the cache does not know takes free room only.
        None if !failed && victim_rank != 0 => return Standing::new(UNDECIDED, 0, 0),
        None => (victim, 0),
    };
    if cell == 0 || idle(cell, epoch, idle_after) {
        cell = suspect::pack(tag, 0, 0, false, epoch);
    }
    let (mut walk, mut failures, decided) = (
        suspect::walk(cell),
        suspect::failures(cell),
        suspect::decided(cell),
    );
    // The waiting successes, kept as they are but by a confirmed one (read only when a
    // verdict may wait for them: the held and summary paths are spared the arithmetic).
    let mut waits = suspect::waits_of(cell);
    let mut verdict = false;
    if failed {
        failures = failures.saturating_add(1).min(15);
        if !decided {
            walk = (walk + 1).min(WALK_MAX);
            verdict = walk >= WALK_SCAN && (!settling() || suspect::waiting(cell, epoch) == 0);
        }
    } else {
        if how == Move::Confirmed {
            waits = suspect::waits(
                suspect::waiting(cell, epoch).saturating_sub(1),
                suspect::waited_epoch(cell),
            );
        }
        if !decided {
            walk -= 1;
            if walk <= WALK_BENIGN {
                // Taken for benign: the test starts over.
                walk = 0;
            }
        }
    }
    let updated = suspect::pack(tag, walk, failures, decided || verdict, epoch) | waits;
    if decided || verdict {
        // SAFETY: the global is LAST_DECIDED.
        unsafe { stamp(&raw mut LAST_DECIDED) };
    }
    if let Some(slot) = set.get_mut(way) {
        *slot = updated;
    }
    let line = WALK_SCAN - 1;
    let was_armed = !decided && suspect::walk(cell) >= line;
    let armed = !decided && !verdict && walk >= line;
    if armed != was_armed {
        arm(source, armed);
    }
    let state = if decided {
        DECIDED
    } else if verdict {
        VERDICT
    } else {
        UNDECIDED
    };
    Standing::new(state, failures, walk)
}

/// Counts the first TCP success of the source of `pending` that `report` left waiting
/// (see [`crate::pending::settle`]): its connection stood a sweep without the client's
/// reset before a byte, so it was a use of the service. The walk steps down as [`step`]
/// moves it for any first success (a source the cache forgot takes only free room; a
/// decided one is only kept from idling), which never decides, and one waiting success
/// is settled. Not inlined: only the expiry sweep runs it, once per such connection.
#[inline(never)]
pub(crate) fn confirm(pending: &Pending) {
    step(Source::of(pending), Move::Confirmed);
}

/// Notes a first TCP success of `source` that waits to be settled (our SYN-ACK answered
/// it; see [`crate::pending::settle`]): until the client resets it before a byte
/// ([`unwait`]: a half-open or connect scanner's open port) or the sweep counts it
/// ([`confirm`]), a walk at the verdict's line waits under `--settle-successes`, so that
/// a client that finds some of a host's services open and others closed at once (a mail
/// client trying every port it knows) is judged with its successes, as the userspace test
/// judges it. Not counted without the option: a first success then costs no look into
/// `SUSPECTS` until the sweep counts it. A source the cache does not know takes free
/// room only, as a success does. Not inlined: only first successes run it.
#[inline(never)]
pub(crate) fn wait(source: Source) {
    if settling() {
        settle_waiting(source, true);
    }
}

/// Settles one waiting success of the source of `pending` without a step: the client
/// reset its connection before a byte (see [`crate::pending::half_open`]), so its success
/// never counts, and a verdict it held back is given by the source's next failure. Hashes
/// the source only under `--settle-successes`. Not inlined: only such resets run it.
#[inline(never)]
pub(crate) fn unwait(pending: &Pending) {
    if settling() {
        settle_waiting(Source::of(pending), false);
    }
}

/// True under `--settle-successes` ([`SETTLE_SUCCESSES`]).
#[inline(always)]
fn settling() -> bool {
    // SAFETY: reading a plain global; volatile so the load-time value is used.
    unsafe { read_volatile(&SETTLE_SUCCESSES) != 0 }
}

/// [`wait`] (`add`) and [`unwait`].
#[inline(always)]
fn settle_waiting(source: Source, add: bool) {
    let Some((set, tag, epoch, idle_after)) = locate(source) else {
        return;
    };
    // SAFETY: array slot from a successful lookup, valid for the program's run; other CPUs
    // may write it meanwhile (a lost count at worst, see the module documentation).
    let set = unsafe { &mut *set };
    let mut found = SUSPECT_WAYS;
    let mut free = SUSPECT_WAYS;
    for (way, &cell) in set.iter().enumerate() {
        if suspect::tag(cell) == tag {
            found = way;
            break;
        }
        if free == SUSPECT_WAYS && rank(cell, epoch, idle_after) == 0 {
            free = way;
        }
    }
    let (way, cell) = match set.get(found) {
        Some(&cell) if !idle(cell, epoch, idle_after) => (found, cell),
        _ if !add => return,
        Some(_) => (found, suspect::pack(tag, 0, 0, false, epoch)),
        None if free < SUSPECT_WAYS => (free, suspect::pack(tag, 0, 0, false, epoch)),
        None => return,
    };
    let waiting = suspect::waiting(cell, epoch);
    let (waiting, waited) = if add {
        (waiting.saturating_add(1).min(3), epoch)
    } else if waiting == 0 {
        return;
    } else {
        (waiting - 1, suspect::waited_epoch(cell))
    };
    let updated = (cell & !suspect::waits_of(cell) & !0xffff)
        | u64::from(epoch)
        | suspect::waits(waiting, waited);
    if let Some(slot) = set.get_mut(way) {
        *slot = updated;
    }
}

/// When `source` has a verdict in force (its walk reached [`WALK_SCAN`]
/// and it has not idled since): returns true, having stamped its cell this sweep (kept
/// from idling: [`step`] would); otherwise moves nothing and returns false. Under a scan
/// the decided source's outcomes are the most frequent: one look into `VERDICTS` each, and
/// into `SUSPECTS` once a sweep (the cell's failure count then counts one outcome a
/// sweep: past the verdict nothing reads it). Inlined into `report`, whose first question
/// it is for every outcome: a subprogram's call and return cost about 7 ns here (see
/// [`crate::ours::is_home`]), and the summary path measured 20-30 ns less without it.
#[inline(always)]
pub(crate) fn step_decided(source: Source, failed: bool) -> bool {
    // SAFETY: the global is LAST_DECIDED.
    if !unsafe { stamped_recently(&raw const LAST_DECIDED) } {
        return false;
    }
    let (index, tag) = source.slot(VERDICTS_ID, VERDICTS_ENTRIES - 1);
    let Some(slot) = VERDICTS.get_ptr_mut(index) else {
        return false;
    };
    // SAFETY: array slot from a successful lookup, valid for the program's run; EPOCH a
    // plain read.
    let (pointed, now) = unsafe { (read_volatile(slot), read_volatile(&raw const EPOCH)) };
    if (pointed >> 32) as u32 != tag {
        return false;
    }
    if pointed as u32 == now as u32 {
        return true;
    }
    let decided = stamp_decided(source, failed);
    // SAFETY: as above; a racing CPU's write makes the slot name one source or the other.
    unsafe {
        write_volatile(
            slot,
            if decided {
                verdict_pointer(tag, now)
            } else {
                0
            },
        );
    }
    decided
}

/// [`step_decided`]'s look into `SUSPECTS`: the judge.
#[inline(always)]
fn stamp_decided(source: Source, failed: bool) -> bool {
    let Some((set, tag, epoch, idle_after)) = locate(source) else {
        return false;
    };
    // SAFETY: array slot from a successful lookup, valid for the program's run; other CPUs
    // may write it meanwhile (a lost step at worst, see the module documentation).
    let set = unsafe { &mut *set };
    for cell in set.iter_mut() {
        let value = *cell;
        if suspect::tag(value) == tag {
            if !suspect::decided(value) || idle(value, epoch, idle_after) {
                return false;
            }
            let failures = suspect::failures(value)
                .saturating_add(u8::from(failed))
                .min(15);
            *cell = suspect::pack(tag, suspect::walk(value), failures, true, epoch)
                | suspect::waits_of(value);
            // SAFETY: the global is LAST_DECIDED.
            unsafe { stamp(&raw mut LAST_DECIDED) };
            return true;
        }
    }
    false
}

/// Arms `source` (its walk is one first failure from the verdict), or disarms it (it left
/// that line): its `ARMED` slot. A disarm leaves another source's tag alone.
#[inline(always)]
fn arm(source: Source, armed: bool) {
    let (index, tag) = source.slot(ARMED_ID, ARMED_ENTRIES - 1);
    let Some(slot) = ARMED.get_ptr_mut(index) else {
        return;
    };
    // SAFETY: array slot from a successful lookup, valid for the program's run; a racing
    // CPU's write makes the slot name one source or the other (it only points); the
    // stamped global is LAST_ARMED.
    unsafe {
        if armed {
            *slot = tag;
            stamp(&raw mut LAST_ARMED);
        } else if *slot == tag {
            *slot = 0;
        }
    }
}

/// True when `src` (of IP version `version`) may be one first failure from the verdict:
/// its `ARMED` slot holds its tag. Three reads of globals when no source was armed within
/// the idle time; one hash and one read of a 16 KiB array otherwise, for every new
/// attempt; [`step`] is the judge.
#[inline(always)]
pub(crate) fn armed(src: &Addr, version: u8) -> bool {
    // SAFETY: the global is LAST_ARMED.
    if !unsafe { stamped_recently(&raw const LAST_ARMED) } {
        return false;
    }
    let (index, tag) = Source(unit_of(src, version).hash()).slot(ARMED_ID, ARMED_ENTRIES - 1);
    // SAFETY: array slot from a successful lookup, read once.
    ARMED
        .get_ptr(index)
        .is_some_and(|slot| unsafe { read_volatile(slot) } == tag)
}

/// The set of `source` in `SUSPECTS`, its tag, and the clock the cells age by: the sweep
/// epoch and the sweeps after which a cell is idle.
#[inline(always)]
fn locate(source: Source) -> Option<(*mut [u64; SUSPECT_WAYS], u32, u16, u16)> {
    // SAFETY: reading plain globals; volatile so the load-time value and the sweep's
    // latest epoch are used.
    let (mask, epoch, idle_after) = unsafe {
        (
            read_volatile(&SUSPECT_MASK),
            read_volatile(&raw const EPOCH) as u16,
            read_volatile(&WALK_IDLE),
        )
    };
    let (index, tag) = source.slot(SUSPECT_ID, mask);
    let set = SUSPECTS.get_ptr_mut(index)?;
    Some((set, tag, epoch, idle_after))
}

/// A source's unit (its address, or the /64 of an IPv6 one) hashed once ([`Flow::hash`]):
/// what every per-source table (`SUSPECTS`, `ARMED`, `VERDICTS`, `HELD`) places it by,
/// each with its own tag. `report` hashes an outcome's source once for all of them.
#[derive(Clone, Copy)]
#[repr(transparent)]
pub(crate) struct Source(u64);

impl Source {
    /// The source of `pending`.
    #[inline(always)]
    pub(crate) fn of(pending: &Pending) -> Self {
        Self(unit_of(&Addr::from_bytes(pending.remote), pending.ip_version).hash())
    }

    /// Its slot in a table of `mask` + 1 slots that mixes `id` into its tags, and its tag.
    #[inline(always)]
    pub(crate) fn slot(self, id: u32, mask: u32) -> (u32, u32) {
        split(self.0, id, mask)
    }
}

/// The unit of source `remote` of IP version `version`, as a flow of its own.
#[inline(always)]
fn unit_of(remote: &Addr, version: u8) -> Flow {
    let unit = if version == 6 {
        Addr([remote.0[0], 0])
    } else {
        *remote
    };
    Flow {
        remote: unit,
        local: Addr([0, 0]),
        remote_port: 0,
        local_port: 0,
        proto: 0,
    }
}

/// Sweeps since the cell last changed.
#[inline(always)]
fn age(cell: u64, epoch: u16) -> u16 {
    epoch.wrapping_sub(suspect::epoch(cell))
}

/// True when the cell's source has been quiet for the userspace test's idle time.
#[inline(always)]
fn idle(cell: u64, epoch: u16, idle_after: u16) -> bool {
    age(cell, epoch) > idle_after
}

/// How much a cell is worth keeping: 0 for an empty or idle one, else its walk first (a
/// decided source above all), then how recently it changed.
#[inline(always)]
fn rank(cell: u64, epoch: u16, idle_after: u16) -> u32 {
    if cell == 0 || idle(cell, epoch, idle_after) {
        return 0;
    }
    let walk = if suspect::decided(cell) {
        WALK_MAX + 1
    } else {
        suspect::walk(cell)
    };
    // Walks run from WALK_BENIGN (-4) to WALK_MAX + 1 (8): shifted to 1..=13.
    let level = (walk - WALK_BENIGN + 1) as u32;
    (level << 16) | u32::from(u16::MAX - age(cell, epoch))
}
