//! The event loop's periodic work on one kernel timer: each job keeps its period and may
//! run up to a quarter of it late, the timer (a timerfd) wakes the loop at the earliest
//! such limit, and every job due by then runs in that wakeup, so jobs share wakeups.
//!
//! Why not one tokio interval per job: each wakeup of an idle process costs far more than
//! its work on a virtual machine (its caches and TLB are cold; on an Intel Xeon VM here a
//! bare `nanosleep` loop is charged 30 µs per wakeup at 1 ms sleeps and 150 to 450 µs at
//! 0.5 to 1 s), and tokio's timer wheel wakes the loop twice for a timer more than 64 ms
//! away (once to move it to a finer level of the wheel, once to fire it). With five
//! intervals of their own, an idle detector woke about four times a second and one under
//! 1 000 SYNs a second 24 times; on the shared schedule, with the summaries' [`Pace`],
//! once and three to five times (docs/design.md has the figures).

use std::{io, os::fd::AsRawFd as _, os::fd::FromRawFd as _, os::fd::OwnedFd, time::Duration};

use tokio::io::{Interest, unix::AsyncFd};

use crate::clock;

/// The loop's periodic jobs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Job {
    /// The ring buffer and the kernel's summaries read without a wakeup from the kernel.
    Summaries,
    /// The expiry program (unanswered attempts, the kernel's clock of sweeps).
    Expiry,
    /// The engine's lifecycle (updates, ends), blocks expiring, the CPU governor.
    Lifecycle,
    /// The kernel counters logged at debug level.
    Stats,
    /// The network looked at again without a netlink notification.
    Look,
    /// `--status-interval`: the status line.
    Status,
}

const JOBS: usize = 6;

#[derive(Clone, Copy, Debug)]
struct Slot {
    period: Duration,
    due: Duration,
    /// Made due by [`Schedule::soon`]: it wakes the loop at its due time, without slack.
    urgent: bool,
}

impl Slot {
    /// How late the job may run: a quarter of its period.
    fn slack(&self) -> Duration {
        self.period / 4
    }
}

/// When each job runs next, on CLOCK_MONOTONIC ([`clock::monotonic_now`]).
#[derive(Debug, Default)]
pub(super) struct Schedule {
    slots: [Option<Slot>; JOBS],
}

/// The jobs one wakeup runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Due(u8);

impl Due {
    /// True when `job` is due.
    pub(super) fn has(self, job: Job) -> bool {
        self.0 & (1 << job as u8) != 0
    }
}

impl Schedule {
    /// Runs `job` every `period`, the first time one period after `now`. Jobs added at one
    /// `now` with periods that divide each other keep waking the loop together.
    pub(super) fn every(&mut self, job: Job, period: Duration, now: Duration) {
        self.slots[job as usize] = Some(Slot {
            period,
            due: now + period,
            urgent: false,
        });
    }

    /// Gives `job` a new period. Its next run comes when a job of that period runs next
    /// (so that they wake the loop together), or else within one new period of `now`.
    pub(super) fn set_period(&mut self, job: Job, period: Duration, now: Duration) {
        let peer = self
            .slots
            .iter()
            .enumerate()
            .filter(|&(i, _)| i != job as usize)
            .filter_map(|(_, slot)| *slot)
            .find(|slot| slot.period == period)
            .map(|slot| slot.due);
        if let Some(slot) = &mut self.slots[job as usize] {
            slot.period = period;
            slot.due = peer.unwrap_or_else(|| slot.due.min(now + period));
        }
    }

    /// Makes `job` due, and the loop's wakeup for it, at once; its later runs come a
    /// period apart from now.
    pub(super) fn soon(&mut self, job: Job, now: Duration) {
        if let Some(slot) = &mut self.slots[job as usize] {
            slot.due = slot.due.min(now);
            slot.urgent = true;
        }
    }

    /// When the loop must wake: the earliest time by which a job is due and its slack
    /// (a quarter of its period) spent.
    pub(super) fn next(&self) -> Option<Duration> {
        self.slots
            .iter()
            .flatten()
            .map(|slot| {
                if slot.urgent {
                    slot.due
                } else {
                    slot.due + slot.slack()
                }
            })
            .min()
    }

    /// Takes every job due by `now`, and schedules each one period after its due time: a
    /// late run does not shift its schedule, and a run missed by a whole period is not
    /// made up (the next comes one period after `now`).
    pub(super) fn take(&mut self, now: Duration) -> Due {
        let mut due = Due::default();
        for (i, slot) in self.slots.iter_mut().enumerate() {
            let Some(slot) = slot else { continue };
            if slot.due > now {
                continue;
            }
            due.0 |= 1 << i;
            slot.urgent = false;
            slot.due = if slot.due + slot.period <= now {
                now + slot.period
            } else {
                slot.due + slot.period
            };
        }
        due
    }
}

/// A timerfd on CLOCK_MONOTONIC, armed for one absolute time at a time.
pub(super) struct Alarm {
    fd: AsyncFd<OwnedFd>,
    armed: Option<Duration>,
}

impl Alarm {
    /// A new, disarmed timer.
    pub(super) fn new() -> io::Result<Self> {
        // SAFETY: plain system call; the flags are valid.
        let raw = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a new descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: the OwnedFd is the timerfd made above; nothing closes or replaces it
        // while the AsyncFd owns it.
        let fd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
            .map_err(|err| err.into_parts().1)?;
        Ok(Self { fd, armed: None })
    }

    /// Returns at `at` (CLOCK_MONOTONIC), at once when it has passed.
    pub(super) async fn until(&mut self, at: Duration) -> io::Result<()> {
        if at <= clock::monotonic_now() {
            return Ok(());
        }
        if self.armed != Some(at) {
            self.arm(at)?;
        }
        loop {
            let mut guard = self.fd.readable().await?;
            let mut expirations = 0u64;
            // SAFETY: reads 8 bytes into a u64 that lives across the call.
            let read = unsafe {
                libc::read(
                    self.fd.get_ref().as_raw_fd(),
                    (&raw mut expirations).cast(),
                    size_of::<u64>(),
                )
            };
            if read == size_of::<u64>() as isize {
                self.armed = None;
                return Ok(());
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::WouldBlock {
                return Err(err);
            }
            // Readiness left from a time since re-armed (arming clears the count).
            guard.clear_ready();
        }
    }

    fn arm(&mut self, at: Duration) -> io::Result<()> {
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: libc::time_t::try_from(at.as_secs()).unwrap_or(libc::time_t::MAX),
                tv_nsec: libc::c_long::from(at.subsec_nanos()),
            },
        };
        // SAFETY: a timerfd we own, a valid itimerspec, no old value asked for.
        let rc = unsafe {
            libc::timerfd_settime(
                self.fd.get_ref().as_raw_fd(),
                libc::TFD_TIMER_ABSTIME,
                &spec,
                std::ptr::null_mut(),
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        self.armed = Some(at);
        Ok(())
    }
}

/// The period of a job that reads what piles up (the ring, the kernel's summaries):
/// short after anything that asks for a prompt read, doubling with each read that found
/// little, up to a long one, so that a scan summarised in the kernel for minutes wakes the
/// loop about once a second rather than ten times. Only while something else says when a
/// prompt read is due (the kernel wakes the loop for a quiet spell's first event); else
/// the period stays short.
#[derive(Clone, Copy, Debug)]
pub(super) struct Pace {
    period: Duration,
    short: Duration,
    long: Duration,
    adapts: bool,
}

impl Pace {
    /// Starts at `short`; with `adapts` false, stays there.
    pub(super) fn new(short: Duration, long: Duration, adapts: bool) -> Self {
        Self {
            period: short,
            short,
            long,
            adapts,
        }
    }

    /// The period now.
    #[cfg(test)]
    fn period(self) -> Duration {
        self.period
    }

    /// A read went by: `pressed` when it left a backlog or found much to read (the short
    /// period again), else the period doubles. The new period, when it changed.
    pub(super) fn after_read(&mut self, pressed: bool) -> Option<Duration> {
        let period = if pressed || !self.adapts {
            self.short
        } else {
            (self.period * 2).min(self.long)
        };
        self.set(period)
    }

    /// Something asks for prompt reads (the kernel woke the loop): the short period. The
    /// new period, when it changed.
    pub(super) fn hurry(&mut self) -> Option<Duration> {
        self.set(self.short)
    }

    fn set(&mut self, period: Duration) -> Option<Duration> {
        (period != self.period).then(|| {
            self.period = period;
            period
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn at(ms: u64) -> Duration {
        MS * u32::try_from(ms).unwrap()
    }

    #[test]
    fn jobs_started_together_share_their_wakeups() {
        let mut s = Schedule::default();
        s.every(Job::Summaries, at(100), at(0));
        s.every(Job::Expiry, at(1000), at(0));
        s.every(Job::Lifecycle, at(1000), at(0));
        let mut wakeups = 0;
        let mut expiries = 0;
        let mut now = at(0);
        // Every wakeup a quarter period of the summaries late: 0.125 s, 0.225 s, ...
        while let Some(next) = s.next().filter(|&n| n <= at(10_025)) {
            now = next;
            let due = s.take(now);
            assert!(
                due.has(Job::Summaries),
                "woken at {now:?} for nothing it runs"
            );
            assert_eq!(due.has(Job::Expiry), due.has(Job::Lifecycle));
            expiries += u32::from(due.has(Job::Expiry));
            wakeups += 1;
        }
        assert_eq!(now, at(10_025));
        assert_eq!(wakeups, 100);
        assert_eq!(expiries, 10);
    }

    #[test]
    fn a_slowed_job_joins_a_job_of_its_new_period() {
        let mut s = Schedule::default();
        s.every(Job::Lifecycle, at(1000), at(0));
        s.every(Job::Summaries, at(100), at(0));
        // Slowed at 0.3 s, between two runs of Lifecycle.
        for ms in [100, 200, 300] {
            assert!(s.take(at(ms)).has(Job::Summaries));
        }
        s.set_period(Job::Summaries, at(1000), at(300));
        assert_eq!(s.next(), Some(at(1250)));
        let due = s.take(at(1250));
        assert!(due.has(Job::Summaries) && due.has(Job::Lifecycle));
        assert_eq!(s.next(), Some(at(2250)));
    }

    #[test]
    fn a_job_runs_late_with_the_next_one_due_within_its_slack() {
        let mut s = Schedule::default();
        s.every(Job::Expiry, at(1000), at(0));
        s.every(Job::Lifecycle, at(1000), at(200));
        // Expiry (due at 1.0 s) may wait until 1.25 s; Lifecycle is due at 1.2 s.
        assert_eq!(s.next(), Some(at(1250)));
        let due = s.take(at(1200));
        assert!(due.has(Job::Expiry) && due.has(Job::Lifecycle));
        // Each keeps its own schedule: Expiry late again, never early.
        assert_eq!(s.next(), Some(at(2250)));
        let due = s.take(at(2200));
        assert!(due.has(Job::Expiry) && due.has(Job::Lifecycle));
    }

    #[test]
    fn a_job_further_off_waits_for_its_own_time() {
        let mut s = Schedule::default();
        s.every(Job::Expiry, at(1000), at(0));
        s.every(Job::Lifecycle, at(1000), at(500));
        assert_eq!(s.next(), Some(at(1250)));
        let due = s.take(at(1250));
        assert!(due.has(Job::Expiry) && !due.has(Job::Lifecycle));
        assert_eq!(s.next(), Some(at(1750)));
    }

    #[test]
    fn a_frequent_job_never_pulls_a_slower_one_early() {
        let mut s = Schedule::default();
        s.every(Job::Summaries, at(100), at(0));
        s.every(Job::Expiry, at(1000), at(30));
        let mut runs = Vec::new();
        while let Some(next) = s.next().filter(|&n| n <= at(5_125)) {
            if s.take(next).has(Job::Expiry) {
                runs.push(next);
            }
        }
        // Due at 1.03 s, 2.03 s, ...: run with the summaries, at 1.125 s, 2.125 s, ...
        assert_eq!(runs, [1125, 2125, 3125, 4125, 5125].map(at));
    }

    #[test]
    fn late_wakeups_keep_the_schedule_and_a_missed_period_is_not_made_up() {
        let mut s = Schedule::default();
        s.every(Job::Expiry, at(1000), at(0));
        // 30 ms late: the next run stays at 2.0 s.
        assert!(s.take(at(1030)).has(Job::Expiry));
        assert_eq!(s.take(at(1999)), Due::default());
        assert!(s.take(at(2000)).has(Job::Expiry));
        // 2.5 s late: one run, then one period on.
        assert!(s.take(at(5500)).has(Job::Expiry));
        assert_eq!(s.take(at(6000)), Due::default());
        assert!(s.take(at(6500)).has(Job::Expiry));
    }

    #[test]
    fn soon_makes_a_job_due_at_once_and_sped_up_jobs_come_within_their_new_period() {
        let mut s = Schedule::default();
        s.every(Job::Summaries, at(1000), at(0));
        s.soon(Job::Summaries, at(300));
        assert_eq!(s.next(), Some(at(300)));
        assert!(s.take(at(300)).has(Job::Summaries));
        s.set_period(Job::Summaries, at(100), at(400));
        assert_eq!(s.next(), Some(at(525)));
    }

    #[test]
    fn jobs_run_at_once_keep_the_phase_of_their_start() {
        let mut s = Schedule::default();
        s.every(Job::Summaries, at(100), at(0));
        s.every(Job::Expiry, at(1000), at(0));
        s.soon(Job::Expiry, at(0));
        assert_eq!(s.next(), Some(at(0)));
        assert_eq!(s.take(at(0)), Due(1 << Job::Expiry as u8));
        // Then with the summaries, on the start's grid.
        assert_eq!(s.next(), Some(at(125)));
        for ms in (100..1000).step_by(100) {
            assert!(!s.take(at(ms)).has(Job::Expiry));
        }
        assert!(s.take(at(1000)).has(Job::Expiry));
    }

    #[test]
    fn jobs_never_added_never_run() {
        let mut s = Schedule::default();
        assert_eq!(s.next(), None);
        s.every(Job::Look, at(30_000), at(0));
        s.soon(Job::Status, at(0));
        s.set_period(Job::Status, at(10), at(0));
        assert!(!s.take(at(30_000)).has(Job::Status));
    }

    #[test]
    fn a_pace_doubles_on_light_reads_and_hurries_back() {
        let mut pace = Pace::new(at(100), at(1000), true);
        let grown: Vec<_> = (0..6).map(|_| pace.after_read(false)).collect();
        assert_eq!(
            grown,
            [
                Some(at(200)),
                Some(at(400)),
                Some(at(800)),
                Some(at(1000)),
                None,
                None
            ]
        );
        assert_eq!(pace.after_read(true), Some(at(100)));
        pace.after_read(false);
        assert_eq!(pace.hurry(), Some(at(100)));
        assert_eq!(pace.hurry(), None);
        assert_eq!(pace.period(), at(100));
    }

    #[test]
    fn a_pace_that_does_not_adapt_stays_short() {
        let mut pace = Pace::new(at(100), at(1000), false);
        for _ in 0..5 {
            assert_eq!(pace.after_read(false), None);
        }
        assert_eq!(pace.period(), at(100));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_alarm_rings_at_its_time_and_at_once_for_a_time_past() {
        let mut alarm = Alarm::new().unwrap();
        let start = clock::monotonic_now();
        alarm.until(start + 20 * MS).await.unwrap();
        assert!(clock::monotonic_now() >= start + 20 * MS);
        // Re-armed for a later time before the first rang: only the later one counts.
        alarm.arm(clock::monotonic_now() + 5 * MS).unwrap();
        let later = clock::monotonic_now() + 30 * MS;
        alarm.until(later).await.unwrap();
        assert!(clock::monotonic_now() >= later);
        let before = clock::monotonic_now();
        alarm.until(start).await.unwrap();
        assert!(clock::monotonic_now() - before < 5 * MS);
    }
}
