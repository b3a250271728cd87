//! The event loop's place with the scheduler: a reserve of CPU time that it gets at once
//! when a verdict wakes it (`SCHED_DEADLINE`), bounded so that forged sources cannot turn
//! it against the host; a short time slice and a higher weight when the reserve is refused
//! or outgrown.
//!
//! **Why.** Linux's fair scheduler (EEVDF) lets the running task finish its slice, about
//! 1.5 ms on a 2-CPU machine, before a task of the same weight that wakes gets the CPU. A
//! fast scanner sends tens of probes in that time, and the verdict's start record waits.
//!
//! **The reserve.** A `SCHED_DEADLINE` thread runs before every fair task, but only for
//! its runtime in each period: [`RESERVE_NS`] of every [`PERIOD_NS`], a fifth of one CPU.
//! Having used it, the thread waits for its next period (the kernel throttles it). So
//! forged sources that make the kernel wake the loop (a verdict for every four forged
//! probes) can take at most that much from the host. A loop that falls behind the ring
//! (a drain that leaves records for the next turn) or stays busy beyond [`OUTGROWN`] of a
//! CPU over a second leaves its reserve at once for the fair class below, where it shares
//! the CPUs as any task does; back under [`QUIET`], it gets its reserve again. Without
//! the first trigger, a one-source `--probes` flood (hping3 --flood over every port,
//! about 100 000 outcomes a second) found the loop throttled for its first second, and
//! the ring dropped 80 000 records; with it, none (six runs), as in the fair class.
//! The threads the loop starts (the network reads) are fair tasks at nice 0
//! (`SCHED_FLAG_RESET_ON_FORK`).
//!
//! Measured in the lab (2026-11-30, AMD EPYC 2 vCPU; nmap, tcpdump, psad, portsentry,
//! scanlogd and rsyslog keeping both CPUs busy), probes on the wire when the start record
//! was written, runs alternated with the fair class below (in half of them the lab's
//! tcpdump ran out of immediate mode, an experiment not kept):
//!
//! | cell | fair, nice -10 and a 0.1 ms slice | the reserve |
//! |---|---|---|
//! | nmap -sU, 14 runs each | 4-70, eight runs above 10 | 4-9 |
//! | nmap -sT, 12 runs each | 4-29, four runs above 10 | 4-10 |
//!
//! In eight full labs with the reserve (`cargo xtask lab`), a fast scan's start was written
//! at most 7 probes into the scan in 86 of 88 cells (nmap -sU at 10, nmap -sS at 9), where
//! the three labs before it had written at up to 30, 26 and 13; 20 single-cell runs of
//! nmap -sS on a busier day wrote at 4-10, the build before the reserve's last changes too.
//!
//! In `perf sched` traces, the reserved loop ran 0.02-0.09 ms after the verdict's wakeup;
//! in the fair class it had waited 0.28 ms behind portsentry, rsyslog and a system daemon
//! at nice -10. The lab's reading thread, a fair task at nice 0 standing for the
//! operator's `jq`, still waits for a CPU after the write: from the decision to the read,
//! 0.1-3.8 ms in those runs, and 2.8 and 1.1 ms in the worst cells of those labs (63 and
//! 44 probes, each start written by the 7th; traced once, the reader's own wait was
//! 0.45 ms behind portsentry, rsyslog and that daemon). That wait is the reader's and is
//! left to it.
//!
//! A reserve of 0.5 ms in a 1 ms deadline was tried once: its loop waited 3.7 ms after a
//! verdict's wakeup, and the cause was not examined. `SCHED_FIFO` (tried in the same lab)
//! has no bound: a loop that forged sources can wake would outrank the host's own work.
//!
//! **When the kernel refuses the reserve**: without `CAP_SYS_NICE` (the service unit grants
//! it), with a CPU affinity that does not span the machine (`taskset`), or beyond the
//! kernel's admission limit for deadline tasks. The loop then asks for a 0.1 ms slice
//! (Linux 6.12 and later) and, from nice 0, for nice -10. The slice lets a woken task
//! take the CPU at once unless its own last run overran it, which a scan's first events
//! do (134-151 µs on a cold cache); nice -10 weighs those runs a ninth as much, so the
//! debt is small. From the deciding outcome to the start record's write
//! (`probe_detector_start_latency_seconds`, ten scans each), that took 2.7-3.1 ms on
//! average (nmap -sS) and 0.85 ms (nmap -sU) down to 0.12 ms, every start within 0.25 ms.
//! A nice value the process started with (`nice -n 5`) is kept.

use std::time::{Duration, Instant};

/// The loop's runtime in each period while reserved: its turns take 0.1-0.25 ms when a
/// scan begins (more for a burst of scans), and a turn is bounded at 5 ms.
pub const RESERVE_NS: u64 = 2_000_000;

/// The reserve's period (and deadline).
pub const PERIOD_NS: u64 = 10_000_000;

/// The share of a CPU, over a review, above which the loop leaves its reserve (which
/// caps it at `RESERVE_NS / PERIOD_NS`, 0.2).
pub const OUTGROWN: f64 = 0.15;

/// The share below which a loop that outgrew its reserve gets it back.
pub const QUIET: f64 = 0.05;

/// The shortest time a review judges: shorter spans (the loop's first turn, right after
/// its setup) say nothing about its load.
const REVIEW_SPAN: Duration = Duration::from_millis(500);

/// The slice asked for in the fair class: the shortest the kernel grants (0.1 ms).
pub const SLICE_NS: u64 = 100_000;

/// The nice value the loop asks for in the fair class when it runs at the default (0).
pub const LOOP_NICE: i32 = -10;

/// `sched_attr.sched_flags`: threads started later do not inherit the class or a negative
/// nice value.
const SCHED_FLAG_RESET_ON_FORK: u64 = 0x01;

/// `SCHED_DEADLINE` (not in the libc crate for every target).
const SCHED_DEADLINE: u32 = 6;

/// `struct sched_attr` of `sched_setattr(2)`, in its first published size (48 bytes),
/// which every kernel with the call accepts.
#[repr(C)]
#[derive(Default)]
struct SchedAttr {
    size: u32,
    policy: u32,
    flags: u64,
    nice: i32,
    priority: u32,
    runtime: u64,
    deadline: u64,
    period: u64,
}

const _: () = assert!(size_of::<SchedAttr>() == 48);

/// How the loop's thread is scheduled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// `SCHED_DEADLINE`: [`RESERVE_NS`] of every [`PERIOD_NS`].
    Reserved,
    /// `SCHED_OTHER`, the [`SLICE_NS`] slice, at `nice`; `as_wanted` when that is the
    /// nice value wanted ([`LOOP_NICE`] from 0, else the process's own).
    Shared {
        /// The thread's nice value now.
        nice: i32,
        /// Whether it is the one wanted.
        as_wanted: bool,
    },
    /// As the process started: the kernel refused the slice too.
    Unchanged,
}

/// The loop's scheduling class, reviewed against the CPU time it uses.
#[derive(Debug)]
pub struct Governor {
    class: Class,
    /// Whether the kernel granted the reserve at the start (only then is it asked again).
    reservable: bool,
    /// The last review: when, and the thread's CPU time then.
    then: (Instant, Duration),
}

/// What a review changed.
#[derive(Debug)]
pub struct Change {
    /// The class now.
    pub class: Class,
    /// The share of a CPU the loop used since the last review.
    pub used: f64,
}

impl Governor {
    /// Asks for the reserve for the calling thread, else for the fair class's slice and
    /// weight; with why the reserve was refused, if it was.
    pub fn start() -> (Self, Option<std::io::Error>) {
        let (class, refused) = match reserve() {
            Ok(()) => (Class::Reserved, None),
            Err(err) => (share(), Some(err)),
        };
        let governor = Self {
            class,
            reservable: refused.is_none(),
            then: (Instant::now(), thread_cpu_time()),
        };
        (governor, refused)
    }

    /// The class now.
    pub fn class(&self) -> Class {
        self.class
    }

    /// From the loop's thread, when a drain left records for the next turn: the loop is
    /// behind, and a throttled loop would stay behind, so it leaves its reserve at once,
    /// and says so. True when it did.
    pub fn backlog(&mut self) -> bool {
        if self.class != Class::Reserved {
            return false;
        }
        self.class = share();
        log::info!(
            "event loop: behind the ring buffer: scheduled as other tasks until it quiets down"
        );
        true
    }

    /// From the loop's thread, about once a second: leaves the reserve when the loop used
    /// more than [`OUTGROWN`] of a CPU since the last review; takes it again below
    /// [`QUIET`]. Returns what changed. Called again within [`REVIEW_SPAN`] of the last
    /// review (or of the start), it waits for the next call.
    pub fn review(&mut self) -> Option<Change> {
        let now = (Instant::now(), thread_cpu_time());
        let wall = now.0.duration_since(self.then.0);
        if wall < REVIEW_SPAN {
            return None;
        }
        let used = now.1.saturating_sub(self.then.1).as_secs_f64() / wall.as_secs_f64();
        self.then = now;
        let reserved = self.class == Class::Reserved;
        let class = match decide(reserved, self.reservable, used)? {
            true => match reserve() {
                Ok(()) => Class::Reserved,
                // Refused now (an operator's taskset meanwhile): stay as we are.
                Err(_) => {
                    self.reservable = false;
                    return None;
                }
            },
            false => share(),
        };
        self.class = class;
        Some(Change { class, used })
    }
}

/// Says how the event loop is scheduled: at debug level when as wanted.
pub fn log_class(class: Class, refused: Option<&std::io::Error>) {
    let (reserve, period) = (RESERVE_NS / 1_000_000, PERIOD_NS / 1_000_000);
    let slice_us = SLICE_NS / 1000;
    let refused = refused.map_or_else(String::new, |err| format!("no CPU reserve ({err}); "));
    match class {
        Class::Reserved => log::debug!(
            "event loop: a CPU reserve of {reserve} ms every {period} ms (SCHED_DEADLINE)"
        ),
        Class::Shared {
            nice,
            as_wanted: true,
        } => log::debug!("event loop: {refused}a {slice_us} µs time slice at nice {nice}"),
        Class::Shared { nice, .. } => {
            let wanted = LOOP_NICE;
            log::info!(
                "event loop: {refused}a {slice_us} µs time slice, but nice {nice} and not {wanted}: alerts may wait for busy tasks (give it CAP_SYS_NICE, as the service unit does)"
            );
        }
        Class::Unchanged => log::info!(
            "event loop: {refused}no short time slice either: alerts may wait for busy tasks"
        ),
    }
}

/// Says what a review of the event loop's CPU use changed.
pub fn log_change(change: &Change) {
    let percent = change.used * 100.0;
    match change.class {
        Class::Reserved => log::debug!(
            "event loop: {percent:.0} % of a CPU in the last second: its CPU reserve again"
        ),
        _ => log::info!(
            "event loop: {percent:.0} % of a CPU in the last second, beyond its reserve's {:.0} %: scheduled as other tasks until it quiets down",
            OUTGROWN * 100.0
        ),
    }
}

/// Whether to take the reserve (`Some(true)`) or leave it (`Some(false)`), from the class
/// now and the share of a CPU used since the last review.
fn decide(reserved: bool, reservable: bool, used: f64) -> Option<bool> {
    match (reserved, reservable) {
        (true, _) if used > OUTGROWN => Some(false),
        (false, true) if used < QUIET => Some(true),
        _ => None,
    }
}

/// The calling thread's CPU time.
fn thread_cpu_time() -> Duration {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a writable timespec; the clock id is valid on Linux.
    let done = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &raw mut now) };
    if done != 0 {
        return Duration::ZERO;
    }
    Duration::new(
        u64::try_from(now.tv_sec).unwrap_or(0),
        u32::try_from(now.tv_nsec).unwrap_or(0),
    )
}

/// `SCHED_DEADLINE` for the calling thread: [`RESERVE_NS`] of every [`PERIOD_NS`], reset
/// on fork.
fn reserve() -> std::io::Result<()> {
    set(&SchedAttr {
        size: size_of::<SchedAttr>() as u32,
        policy: SCHED_DEADLINE,
        flags: SCHED_FLAG_RESET_ON_FORK,
        runtime: RESERVE_NS,
        deadline: PERIOD_NS,
        period: PERIOD_NS,
        ..SchedAttr::default()
    })
}

/// The fair class for the calling thread: the slice, and [`LOOP_NICE`] when its nice value
/// is 0 and may be lowered.
fn share() -> Class {
    // SAFETY: getpriority has no memory arguments; for the calling thread it does not
    // fail.
    let nice = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
    // Leaving the reserve: the thread's nice value reads 0 then; the class it had before
    // is not known, so the loop's own choice applies.
    let wanted = if nice == 0 { LOOP_NICE } else { nice };
    match set_fair(wanted) {
        Ok(()) => Class::Shared {
            nice: wanted,
            as_wanted: true,
        },
        Err(err) if wanted != nice && err.raw_os_error() == Some(libc::EPERM) => {
            match set_fair(nice) {
                Ok(()) => Class::Shared {
                    nice,
                    as_wanted: false,
                },
                Err(_) => Class::Unchanged,
            }
        }
        Err(_) => Class::Unchanged,
    }
}

/// `SCHED_OTHER` at `nice` with the short slice, reset on fork, for the calling thread.
fn set_fair(nice: i32) -> std::io::Result<()> {
    set(&SchedAttr {
        size: size_of::<SchedAttr>() as u32,
        policy: libc::SCHED_OTHER as u32,
        flags: SCHED_FLAG_RESET_ON_FORK,
        nice,
        runtime: SLICE_NS,
        ..SchedAttr::default()
    })
}

/// `sched_setattr` of the calling thread.
fn set(attr: &SchedAttr) -> std::io::Result<()> {
    // SAFETY: `attr` is a valid, initialised sched_attr of the size it states, read by the
    // kernel during the call only; pid 0 is the calling thread; flags 0.
    let done = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, std::ptr::from_ref(attr), 0) };
    if done == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The policy, slice (or runtime) and nice value the kernel reports for the calling
    /// thread (`sched_getattr`).
    fn now() -> (u32, u64, i32) {
        let mut attr = SchedAttr::default();
        // SAFETY: `attr` is writable and 48 bytes long, the size passed; pid 0 is the
        // calling thread; flags 0.
        let done = unsafe {
            libc::syscall(
                libc::SYS_sched_getattr,
                0,
                &raw mut attr,
                size_of::<SchedAttr>() as u32,
                0,
            )
        };
        assert_eq!(
            done,
            0,
            "sched_getattr: {}",
            std::io::Error::last_os_error()
        );
        (attr.policy, attr.runtime, attr.nice)
    }

    /// The kernel's release, as (major, minor).
    fn kernel_release() -> (u32, u32) {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        let mut parts = release
            .trim()
            .split(['.', '-'])
            .map(|p| p.parse().unwrap_or(0));
        (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
    }

    /// Whether this process may ask for a deadline reserve (root, or CAP_SYS_NICE).
    fn privileged() -> bool {
        // SAFETY: geteuid has no arguments and cannot fail.
        unsafe { libc::geteuid() == 0 }
    }

    #[test]
    fn the_reserve_is_left_above_its_share_and_taken_again_when_quiet() {
        assert_eq!(decide(true, true, 0.16), Some(false));
        assert_eq!(decide(true, true, 0.15), None, "at the line it stays");
        assert_eq!(decide(true, true, 0.01), None);
        assert_eq!(decide(false, true, 0.04), Some(true));
        assert_eq!(
            decide(false, true, 0.10),
            None,
            "between the lines: as it is"
        );
        assert_eq!(
            decide(false, false, 0.0),
            None,
            "a reserve the kernel refused is not asked for again"
        );
    }

    /// With the privilege, the thread gets the reserve, its children are fair tasks at
    /// nice 0, and a review after heavy use moves it to the fair class with the slice.
    #[test]
    fn the_loop_gets_its_reserve_its_children_do_not_and_heavy_use_leaves_it() {
        if !privileged() {
            eprintln!("skipped: a deadline reserve needs root or CAP_SYS_NICE");
            return;
        }
        let (reserved, refused, child, left, after) = std::thread::spawn(|| {
            let (mut governor, refused) = Governor::start();
            let reserved = (governor.class(), now());
            let child = std::thread::spawn(now).join().expect("the child ran");
            // Work at full speed: more than the reserve's share (throttling holds the
            // thread to a fifth of a CPU meanwhile). Right after the start, the span is too
            // short to judge; a review over a longer one leaves the reserve.
            let spin = |ms| {
                let spin = Instant::now();
                while spin.elapsed() < Duration::from_millis(ms) {
                    std::hint::black_box(thread_cpu_time());
                }
            };
            spin(50);
            assert!(governor.review().is_none(), "judged within the review span");
            assert_eq!(governor.class(), Class::Reserved);
            spin(600);
            let left = governor.review().map(|c| c.class);
            (reserved, refused.map(|e| e.to_string()), child, left, now())
        })
        .join()
        .expect("the thread ran");
        assert_eq!(refused, None, "the kernel refused the reserve");
        assert_eq!(reserved.0, Class::Reserved);
        assert_eq!(
            reserved.1,
            (SCHED_DEADLINE, RESERVE_NS, 0),
            "policy, runtime, nice"
        );
        assert_eq!(
            (child.0, child.2),
            (libc::SCHED_OTHER as u32, 0),
            "a child is a fair task at nice 0"
        );
        assert_eq!(
            left,
            Some(Class::Shared {
                nice: LOOP_NICE,
                as_wanted: true
            })
        );
        assert_eq!(after.0, libc::SCHED_OTHER as u32);
        if kernel_release() >= (6, 12) {
            assert_eq!(after.1, SLICE_NS, "the fair class with the short slice");
        }
        assert_eq!(after.2, LOOP_NICE);
    }

    /// A loop behind the ring leaves its reserve at once, and a quiet second gives it back.
    #[test]
    fn a_backlog_leaves_the_reserve_and_quiet_takes_it_again() {
        if !privileged() {
            eprintln!("skipped: a deadline reserve needs root or CAP_SYS_NICE");
            return;
        }
        let (left, again, shared, back) = std::thread::spawn(|| {
            let (mut governor, refused) = Governor::start();
            assert!(
                refused.is_none(),
                "the kernel refused the reserve: {refused:?}"
            );
            let left = governor.backlog();
            let again = governor.backlog();
            let shared = (governor.class(), now().0);
            std::thread::sleep(Duration::from_millis(600));
            let back = governor.review().map(|c| c.class);
            (left, again, shared, (back, now().0))
        })
        .join()
        .expect("the thread ran");
        assert!(left, "a backlog leaves the reserve");
        assert!(!again, "once");
        assert_eq!(
            shared,
            (
                Class::Shared {
                    nice: LOOP_NICE,
                    as_wanted: true
                },
                libc::SCHED_OTHER as u32
            )
        );
        assert_eq!(back, (Some(Class::Reserved), SCHED_DEADLINE));
    }

    /// A thread bound to one CPU of several cannot have a reserve (the kernel wants the
    /// whole machine's span): it gets the fair class, and says why.
    #[test]
    fn a_refused_reserve_falls_back_to_the_slice_and_the_weight() {
        // SAFETY: sysconf has no memory arguments.
        if unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) } < 2 || !privileged() {
            eprintln!("skipped: needs two CPUs and root");
            return;
        }
        let (class, refused, policy) = std::thread::spawn(|| {
            // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET writes within it.
            let mut one: libc::cpu_set_t = unsafe { std::mem::zeroed() };
            // SAFETY: as said: 0 is within the set's size.
            unsafe { libc::CPU_SET(0, &mut one) };
            // SAFETY: `one` is a valid cpu_set_t of the size passed; pid 0 is this thread.
            let bound = unsafe { libc::sched_setaffinity(0, size_of_val(&one), &raw const one) };
            assert_eq!(bound, 0, "{}", std::io::Error::last_os_error());
            let (governor, refused) = Governor::start();
            (governor.class(), refused.is_some(), now().0)
        })
        .join()
        .expect("the thread ran");
        assert!(refused, "a one-CPU affinity must be refused a reserve");
        assert_eq!(
            class,
            Class::Shared {
                nice: LOOP_NICE,
                as_wanted: true
            }
        );
        assert_eq!(policy, libc::SCHED_OTHER as u32);
    }
}
