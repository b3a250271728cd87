//! The event loop's periodic jobs: their periods, the state they keep between runs, and
//! what each does when the shared timer ([`super::timers`]) finds it due: the expiry
//! sweep, the lifecycle, the reads of the ring and the kernel's summaries, the counters'
//! log, the status line, the network's second look.

use std::{collections::VecDeque, time::Duration};

use anyhow::Context as _;
use aya::maps::{MapData, RingBuf};
use probe_common::SUMMARIES_ENTRIES;

use super::{
    DRAIN_BATCH, DRAIN_TIME, Daemon, drain_into, log_counters, sched, status,
    timers::{Alarm, Due, Job, Pace, Schedule},
};
use crate::{clock, event::Summarized, kernel};

/// How often the ring buffer is read when the kernel has not woken us, and the kernel's
/// summaries of decided sources, at first: a scan's outcomes after the verdict reach its
/// `update`s and the attack list within two reads, which come further apart (up to
/// [`QUIET_INTERVAL`]) while each finds little. (A verdict wakes us at once; each wakeup
/// of an idle process on a virtual machine costs tens to hundreds of microseconds, see
/// `timers`, so the timer is not faster than it must.)
const SUMMARY_INTERVAL: Duration = Duration::from_millis(100);
/// The summaries timer's longest period: after reads that found little or nothing, while
/// the kernel wakes us for a quiet spell's first event (which brings it back to
/// [`SUMMARY_INTERVAL`]).
const QUIET_INTERVAL: Duration = Duration::from_secs(1);
/// How often the engine's lifecycle runs (updates held back by the interval, scans gone
/// quiet), blocks expire and the CPU governor reviews the loop.
const LIFECYCLE_INTERVAL: Duration = Duration::from_secs(1);
/// How often the network is looked at again without a netlink notification.
const LOOK_INTERVAL: Duration = Duration::from_secs(30);
/// How often the kernel counters are logged at debug level.
const STATS_INTERVAL: Duration = Duration::from_secs(30);

/// The periodic jobs' timer and schedule, and what they keep between runs.
pub(super) struct Periodic {
    alarm: Alarm,
    schedule: Schedule,
    /// The summaries' period: short after the kernel woke us or a read found much, longer
    /// with each read that found little, while the kernel wakes us for a quiet spell's
    /// first event (not with `--wakeup-ms 0`, where this timer reads every event).
    pace: Pace,
    reader: kernel::SummaryReader,
    /// Summaries read from the kernel and not yet fed to the pipeline.
    pub(super) backlog: VecDeque<Summarized>,
    /// When the block state file was last written.
    state_saved: std::time::Instant,
    /// Whether the log said the home nets look wrong (once a run).
    hinted: bool,
}

impl Periodic {
    /// Every job started now, so that they wake the loop together; the first sweep (the
    /// kernel's sweep epochs start) and lifecycle at once.
    pub(super) fn start(
        kernel: &kernel::KernelConfig,
        status_interval: Option<Duration>,
    ) -> anyhow::Result<Self> {
        let mut schedule = Schedule::default();
        let now = clock::monotonic_now();
        schedule.every(Job::Summaries, SUMMARY_INTERVAL, now);
        // Unanswered attempts are found by the expiry program, run often enough that none
        // waits much longer than the timeout.
        schedule.every(Job::Expiry, kernel.sweep_interval(), now);
        schedule.every(Job::Lifecycle, LIFECYCLE_INTERVAL, now);
        schedule.every(Job::Stats, STATS_INTERVAL, now);
        schedule.every(Job::Look, LOOK_INTERVAL, now);
        if let Some(period) = status_interval {
            schedule.every(Job::Status, period, now);
        }
        schedule.soon(Job::Expiry, now);
        schedule.soon(Job::Lifecycle, now);
        Ok(Self {
            alarm: Alarm::new().context("cannot make the event loop's timer")?,
            schedule,
            pace: Pace::new(
                SUMMARY_INTERVAL,
                QUIET_INTERVAL,
                kernel.wakeup_gap.is_some(),
            ),
            reader: kernel::SummaryReader::default(),
            backlog: VecDeque::new(),
            state_saved: std::time::Instant::now(),
            hinted: false,
        })
    }

    /// Waits for the next job due; the jobs due, and the time they were taken at.
    pub(super) async fn due(&mut self) -> anyhow::Result<(Due, Duration)> {
        let wake = self.schedule.next().unwrap_or(Duration::MAX);
        self.alarm
            .until(wake)
            .await
            .context("the event loop's timer failed")?;
        let now = clock::monotonic_now();
        Ok((self.schedule.take(now), now))
    }

    /// The kernel woke the loop: events (and soon summaries) are coming, so the summaries
    /// are read at the short period again.
    pub(super) fn hurry(&mut self) {
        if let Some(period) = self.pace.hurry() {
            self.schedule
                .set_period(Job::Summaries, period, clock::monotonic_now());
        }
    }
}

impl Daemon<'_> {
    /// Runs the jobs `due` (taken at `now`) in turn. True when the network is to be looked
    /// at again.
    pub(super) async fn run_due(
        &mut self,
        jobs: &mut Periodic,
        (due, now): (Due, Duration),
        governor: &mut sched::Governor,
        ring: &mut RingBuf<MapData>,
        started: std::time::SystemTime,
    ) -> anyhow::Result<bool> {
        if due.has(Job::Status) {
            log::info!("{}", status::status_line(&self.snapshot(started)));
        }
        if due.has(Job::Lifecycle) {
            // Once a minute, also the blocks the kernel lifted itself; and the state file.
            let minute = jobs.state_saved.elapsed() >= Duration::from_secs(60);
            if let Some(blocker) = self.pipeline.blocker() {
                if minute {
                    blocker.sweep(now);
                } else {
                    blocker.expire(now);
                }
            }
            self.pipeline.tick(now);
            self.flush()?;
            if let Some(change) = governor.review() {
                sched::log_change(&change);
            }
            if !jobs.hinted {
                jobs.hinted = self.hint_home_nets();
            }
            if minute {
                self.save_blocks();
                jobs.state_saved = std::time::Instant::now();
            }
        }
        if due.has(Job::Expiry) {
            // Drain between chunks: a sweep may report more than the ring holds.
            let mut drained = Ok(());
            let pipeline = &mut self.pipeline;
            kernel::expire_with(self.ebpf, |ebpf| {
                if drained.is_ok() {
                    // A chunk reports at most half a ring; a batch takes that, and a flood
                    // of other events cannot hold the sweep here.
                    drained = drain_into(pipeline, ring, ebpf, DRAIN_BATCH).map(drop);
                }
            })
            .context("the expiry program failed")?;
            self.output_result(drained)?;
        }
        if due.has(Job::Stats) {
            log_counters(self.ebpf, self.kernel, log::Level::Debug);
        }
        if due.has(Job::Summaries) {
            // The kernel wakes us for a verdict, when a backlog builds or when the wakeup
            // gap has passed; other events are read here, at most SUMMARY_INTERVAL (and
            // its slack) after they happen. The ring first: a verdict's event comes before
            // its summaries.
            let behind = self.drain(ring, DRAIN_BATCH)?;
            let left = self.summarized(jobs, false)?;
            if behind || left {
                governor.backlog();
            }
            // Much read (an eighth of a summaries map, or events a batch could not take):
            // read again soon; else less often, up to QUIET_INTERVAL, whether the reads
            // find little or nothing.
            let pressed = behind || left || jobs.reader.taken > SUMMARIES_ENTRIES as usize / 8;
            if let Some(period) = jobs.pace.after_read(pressed) {
                jobs.schedule.set_period(Job::Summaries, period, now);
            }
            if left {
                // Time ran out with summaries left: the loop's other branches have their
                // turn, and the next read comes at once.
                jobs.schedule.soon(Job::Summaries, now);
                tokio::task::yield_now().await;
            }
        }
        Ok(due.has(Job::Look))
    }

    /// Feeds the kernel's summaries of decided sources to the pipeline, for at most
    /// [`DRAIN_TIME`]: those left from the last turn, else those no program can still be
    /// adding to (with `all`, every one); writes what they made. True when some are left
    /// for the next turn. Each outcome is observed no earlier than the latest the pipeline
    /// saw, so time never runs backwards for the engine.
    pub(super) fn summarized(&mut self, jobs: &mut Periodic, all: bool) -> anyhow::Result<bool> {
        let backlog = &mut jobs.backlog;
        if backlog.is_empty() {
            match jobs.reader.collect(self.ebpf, all) {
                Ok(read) => backlog.extend(read),
                Err(err) => log::warn!("cannot read the kernel's summaries: {err}"),
            }
        }
        if backlog.is_empty() {
            return Ok(false);
        }
        let started = std::time::Instant::now();
        let allow = &self.allow_lists;
        let listed = !allow.sources.is_empty() || !allow.services.is_empty();
        while let Some(mut summary) = backlog.pop_front() {
            // A source allow-listed (SIGHUP) after the kernel's verdict on it is summarised
            // there until it idles, unchecked: its ports are dropped here instead.
            let (src, dst) = (summary.probe.src, summary.probe.dst);
            if listed && !summary.retain_ports(|&port| !allow.allows(src, dst, port)) {
                continue;
            }
            let now = summary.probe.timestamp.max(self.pipeline.latest());
            self.pipeline.observe_summary(&summary, now);
            if started.elapsed() >= DRAIN_TIME {
                break;
            }
        }
        self.flush()?;
        Ok(!backlog.is_empty())
    }
}
