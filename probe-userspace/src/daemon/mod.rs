//! The running daemon: one event loop that drains the kernel's ring buffer into the output
//! pipeline, runs the periodic jobs (`periodic`: the expiry sweeps, the engine's
//! lifecycle, the kernel's summaries, on one timer, `timers`), and serves the control
//! socket, the metrics endpoint, the status line and the signals (SIGHUP reloads the
//! allow-lists; SIGINT and SIGTERM stop it, after the last events and every open scan's
//! summary are written); with `--fleet`, its link to the fleet (`fleet`).

pub mod control;
mod fleet;

pub use fleet::FleetLink;
use fleet::{FLEET_READ_GAP, fleet_ready};
pub mod metrics;
mod periodic;
mod sched;
mod timers;
use periodic::Periodic;
pub mod status;

use std::{sync::Arc, time::Duration};

use anyhow::Context as _;
use aya::maps::{MapData, RingBuf};
use probe_common::{Counter, EVENTS_MAP};
use tokio::{
    io::{Interest, unix::AsyncFd},
    signal::unix::{SignalKind, signal},
};

use crate::{
    cli::settings::AllowSettings,
    clock,
    daemon::{
        control::{ControlSocket, Pending},
        metrics::Snapshot,
    },
    kernel::{self, KernelConfig},
    net::{netlink, network::Network},
    output::{OutputError, Pipeline, sink::Sinks},
    policy::{
        allow::{self, AllowLists},
        block_control::Response as BlockResponse,
    },
};

/// Ring-buffer records handled per turn of the loop at most: under an event flood the
/// loop still reaches the timers, signals, control socket and metrics between batches.
const DRAIN_BATCH: usize = 4096;
/// Time one drain may take before it gives the loop back (it finishes its record).
const DRAIN_TIME: Duration = Duration::from_millis(5);
/// How long the exit may spend on the summaries left.
const EXIT_SUMMARY_TIME: Duration = Duration::from_millis(200);
/// How long after a netlink notification the network is looked at again (a change comes
/// as a burst of messages: address, routes, neighbours).
const LOOK_SETTLE: Duration = Duration::from_millis(200);
/// A read of the network under way on a blocking thread: the network as read, or why not.
type Looking = tokio::task::JoinHandle<anyhow::Result<Network>>;
/// Attempts outside the home nets, and answers from outside them, from which the log says
/// the home nets look wrong.
const HINT_AFTER: u64 = 20;

/// What the event loop serves besides alerts, each opened before anything was attached.
pub struct Outlets {
    /// `--metrics-addr`, listening.
    pub metrics: Option<std::net::TcpListener>,
    /// `--block`'s control socket, listening.
    pub control: Option<ControlSocket>,
    /// `--status-interval`.
    pub status_interval: Option<Duration>,
}

/// The state the event loop works on.
pub struct Daemon<'a> {
    /// The loaded, attached object.
    pub ebpf: &'a mut aya::Ebpf,
    /// The configuration it was loaded with.
    pub kernel: &'a KernelConfig,
    /// The pipeline records go through.
    pub pipeline: Pipeline<Sinks>,
    /// Where the allow-lists come from (re-read on SIGHUP), and the lists in force.
    pub allow: &'a AllowSettings,
    pub allow_lists: AllowLists,
    /// Set when stdout, the only output, lost its reader (`| head`): the run ends cleanly.
    pub reader_gone: bool,
    /// `--block-state`: where the blocks are kept across restarts.
    pub block_state: Option<std::path::PathBuf>,
    /// This host on the network, looked at again when netlink says it changed.
    pub network: Network,
    /// `--fleet`: the publisher of evidence and the fleet's blocks.
    pub fleet: Option<FleetLink>,
}

impl Daemon<'_> {
    /// Reads events until SIGINT or SIGTERM, writing records to stdout.
    pub async fn run(mut self, outlets: Outlets) -> anyhow::Result<()> {
        let Outlets {
            metrics: metrics_listener,
            control,
            status_interval,
        } = outlets;
        let control_listener = control
            .as_ref()
            .map(|c| tokio::net::UnixListener::from_std(c.listener.try_clone()?))
            .transpose()
            .context("cannot serve the control socket")?;
        let (requests_tx, mut requests) = tokio::sync::mpsc::channel::<Pending>(8);
        let (bodies_tx, mut bodies) =
            tokio::sync::mpsc::channel::<metrics::BodyRequest>(metrics::MAX_CONNECTIONS);
        let scrape_slots = Arc::new(tokio::sync::Semaphore::new(metrics::MAX_CONNECTIONS));
        let started = std::time::SystemTime::now();
        // A verdict's wakeup should not wait for busy tasks (see `sched`).
        let (mut governor, refused) = sched::Governor::start();
        sched::log_class(governor.class(), refused.as_ref());
        let metrics_listener = metrics_listener
            .map(tokio::net::TcpListener::from_std)
            .transpose()
            .context("cannot serve metrics")?;
        if let Some(listener) = &metrics_listener {
            log::info!(
                "metrics at http://{}/metrics",
                listener.local_addr().context("cannot serve metrics")?
            );
        }
        let map = self
            .ebpf
            .take_map(EVENTS_MAP)
            .context("the eBPF object has no EVENTS ring buffer")?;
        let ring = RingBuf::try_from(map).context("EVENTS is not a ring buffer")?;
        // SAFETY: the RingBuf owns its map fd and neither closes nor replaces it while the
        // AsyncFd owns the RingBuf, so the registered fd stays the same open file.
        let mut ring = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
            .map_err(|err| err.into_parts().1)
            .context("cannot poll the EVENTS ring buffer")?;
        // `probe-detector | head`: when stdout is the only output and a pipe, its reader
        // leaving is seen at once (EPOLLERR), not at the next record, which may be far off.
        let stdout_gone = if self.pipeline.out().only_stdout() {
            watch_stdout()
        } else {
            None
        };
        let mut fleet_ring = match &self.fleet {
            Some(_) => {
                let map = self
                    .ebpf
                    .take_map(probe_common::FLEET_MAP)
                    .context("the eBPF object has no FLEET ring buffer")?;
                let ring = RingBuf::try_from(map).context("FLEET is not a ring buffer")?;
                // SAFETY: as for EVENTS: the RingBuf owns its fd while the AsyncFd owns it.
                Some(
                    unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
                        .map_err(|err| err.into_parts().1)
                        .context("cannot poll the FLEET ring buffer")?,
                )
            }
            None => None,
        };
        let mut fleet_next = tokio::time::Instant::now();
        let mut fleet_blocks = self.fleet.as_mut().and_then(|f| f.blocks.take());
        let mut sigint = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
        let mut sigterm = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
        let mut sighup = signal(SignalKind::hangup()).context("cannot handle SIGHUP")?;
        // Said once the signals are ours: a SIGTERM from here on stops the daemon cleanly
        // (scripts and tests wait for this line).
        let config = self.pipeline.engine().config();
        log::info!(
            "watching for port scans ({} failed ports of one host) and sweeps ({} hosts) within {:.1} s; alerts go to stdout",
            config.min_ports,
            config.min_hosts,
            config.window.as_secs_f64()
        );

        // The periodic jobs, on one timer (see `periodic` and `timers`).
        let mut jobs = Periodic::start(self.kernel, status_interval)?;
        // Addresses, routes and neighbours: netlink says when they change, and they are
        // looked at again shortly after (changes come in bursts) and every 30 s anyway
        // (`periodic`; resolv.conf has no notification).
        // SAFETY (of the registration): the Monitor owns its fd and neither closes nor
        // replaces it while the AsyncFd owns the Monitor.
        let monitor = match netlink::Monitor::open().and_then(|m| {
            // SAFETY: as said above: the registered fd stays the same open file.
            unsafe { AsyncFd::register_with_interest(m, Interest::READABLE) }
                .map_err(|err| err.into_parts().1)
        }) {
            Ok(monitor) => Some(monitor),
            Err(err) => {
                log::warn!("cannot follow address and route changes (netlink): {err}");
                None
            }
        };
        let mut look_soon: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
        // The network read under way on a blocking thread (a few netlink dumps and /proc
        // reads, about a millisecond: never on this loop, where a verdict would wait for
        // them), and whether another was asked for meanwhile.
        let mut looking: Option<Looking> = None;
        let mut look_again = false;
        loop {
            tokio::select! {
                // In this order: a flood of events (the last branch) cannot keep signals,
                // the control socket, scrapes or timers waiting; each drain is bounded.
                biased;
                _ = sigint.recv() => { log::info!("SIGINT: stopping"); break; }
                _ = sigterm.recv() => { log::info!("SIGTERM: stopping"); break; }
                _ = when(stdout_gone.as_ref().map(|fd| fd.ready(Interest::ERROR))) => {
                    self.reader_gone = true;
                }
                _ = sighup.recv() => {
                    self.reload_allow_lists();
                    // logrotate moved the files: write on in new ones.
                    match self.pipeline.out_mut().reopen() {
                        Ok(()) => log::info!("SIGHUP: outputs reopened"),
                        Err(err) => log::error!("SIGHUP: {err}"),
                    }
                }
                Some((request, reply)) = requests.recv() => {
                    let response = match self.pipeline.blocker() {
                        Some(blocker) => blocker.handle(&request, clock::monotonic_now()),
                        None => BlockResponse {
                            error: Some("blocking is off".into()),
                            ..BlockResponse::default()
                        },
                    };
                    let _ = reply.send(response);
                }
                accepted = when(control_listener.as_ref().map(|l| l.accept())) => match accepted {
                    Ok((stream, _)) => {
                        tokio::spawn(control::serve_control(stream, requests_tx.clone()));
                    }
                    Err(err) => log::warn!("control socket: {err}"),
                },
                accepted = when(metrics_listener.as_ref().map(|l| l.accept())) => match accepted {
                    // Beyond MAX_CONNECTIONS at once, a connection is closed at once.
                    Ok((stream, _)) => match Arc::clone(&scrape_slots).try_acquire_owned() {
                        Ok(permit) => {
                            tokio::spawn(metrics::serve(stream, bodies_tx.clone(), permit));
                        }
                        Err(_) => drop(stream),
                    },
                    Err(err) => {
                        // Out of descriptors (or similar): wait rather than spin on it.
                        log::warn!("metrics endpoint: {err}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                Some(block) = when(fleet_blocks.as_mut().map(|rx| rx.recv())) => {
                    self.apply_fleet_block(&block);
                }
                guard = fleet_ready(fleet_ring.as_mut(), fleet_next) => {
                    let mut guard = guard.context("cannot poll the FLEET ring buffer")?;
                    self.drain_fleet(guard.get_inner_mut());
                    guard.clear_ready();
                    fleet_next = tokio::time::Instant::now() + FLEET_READ_GAP;
                }
                Some(reply) = bodies.recv() => {
                    let _ = reply.send(metrics::render(&self.snapshot(started)));
                }
                guard = when(monitor.as_ref().map(|m| m.readable())) => {
                    if let Ok(mut guard) = guard {
                        if guard.get_inner().drain() && look_soon.is_none() {
                            look_soon = Some(Box::pin(tokio::time::sleep(LOOK_SETTLE)));
                        }
                        guard.clear_ready();
                    }
                }
                _ = when(look_soon.as_mut()) => {
                    look_soon = None;
                    look_again = true;
                }
                read = when(looking.as_mut()) => {
                    looking = None;
                    match read {
                        Ok(Ok(fresh)) => self.network_read(fresh),
                        Ok(Err(err)) => log::warn!("cannot read the network again: {err:#}"),
                        Err(err) => log::warn!("the network read failed: {err}"),
                    }
                }
                due = jobs.due() => {
                    let due = due?;
                    look_again |= self
                        .run_due(&mut jobs, due, &mut governor, ring.get_mut(), started)
                        .await?;
                }
                guard = ring.readable_mut() => {
                    let mut guard = guard.context("cannot poll the EVENTS ring buffer")?;
                    jobs.hurry();
                    // A full batch may leave records: stay ready, so the loop comes back
                    // after the other branches had their turn.
                    if self.drain(guard.get_inner_mut(), DRAIN_BATCH)? {
                        governor.backlog();
                        // Let the tasks of this thread (scrapes, control clients) run too.
                        drop(guard);
                        tokio::task::yield_now().await;
                    } else {
                        guard.clear_ready();
                    }
                }
            }
            if look_again && looking.is_none() {
                look_again = false;
                let mut fresh = self.network.clone();
                looking = Some(tokio::task::spawn_blocking(move || {
                    fresh.look_again().map(|()| fresh)
                }));
            }
            if self.reader_gone {
                log::info!("stdout's reader went away: stopping");
                break;
            }
        }
        // Whatever arrived before the signal still gets its say, and every open scan its
        // summary: on the outputs, or in the log when no output is left.
        // At most what the ring holds: a flood still going on cannot hold the exit.
        let ring_records = (self.kernel.ringbuf_bytes / kernel::RING_RECORD_BYTES) as usize;
        self.drain(ring.get_mut(), ring_records.max(DRAIN_BATCH))?;
        // Bounded like the ring's drain: under a flood, the exit comes first.
        let until = std::time::Instant::now() + EXIT_SUMMARY_TIME;
        while self.summarized(&mut jobs, true)? && std::time::Instant::now() < until {}
        if !jobs.backlog.is_empty() {
            log::warn!(
                "{} summaries of the kernel not read at exit (a flood was going on)",
                jobs.backlog.len()
            );
        }
        if let Some(ring) = fleet_ring.as_mut() {
            self.drain_fleet(ring.get_mut());
        }
        self.pipeline.finish(clock::monotonic_now());
        self.flush()?;
        self.save_blocks();
        // The fleet gets what waits for it, for a second at most.
        drop(self.pipeline.tap_mut().take());
        if let Some(fleet) = self.fleet.take() {
            fleet.publisher.finish(Duration::from_secs(1)).await;
        }
        // A slow reader gets what is queued for it, whole; a stopped one does not hold the
        // exit for long.
        self.pipeline.out_mut().finish(Duration::from_secs(5));
        let queued = self.pipeline.out_mut().take_unwritten();
        let queued = String::from_utf8_lossy(&queued).into_owned();
        let why = if self.reader_gone {
            "no reader left"
        } else {
            "stdout's reader did not take it in time"
        };
        for record in queued.lines().chain(self.pipeline.take_unwritten().lines()) {
            log::info!("not written ({why}): {record}");
        }
        let decode_errors = self.pipeline.stats().decode_errors;
        if decode_errors > 0 {
            log::warn!("{decode_errors} ring-buffer records could not be decoded");
        }
        Ok(())
    }

    /// Handles at most `limit` records waiting in the ring buffer; true when that many
    /// were handled (more may wait).
    fn drain(&mut self, ring: &mut RingBuf<MapData>, limit: usize) -> anyhow::Result<bool> {
        match drain_into(&mut self.pipeline, ring, self.ebpf, limit) {
            Ok(full) => Ok(full),
            Err(err) => self.output_result(Err(err)).map(|()| false),
        }
    }

    /// Writes what the pipeline holds.
    fn flush(&mut self) -> anyhow::Result<()> {
        let ebpf = &*self.ebpf;
        let flushed = self.pipeline.flush(|p| kernel::outcome_count(ebpf, p));
        self.output_result(flushed)
    }

    /// An output's failure: the reader of the only output gone ends the run cleanly (the
    /// loop stops at its next turn); anything else is an error.
    fn output_result(&mut self, result: Result<(), OutputError>) -> anyhow::Result<()> {
        match result {
            Err(OutputError::ReaderGone) => {
                self.reader_gone = true;
                Ok(())
            }
            other => other.map_err(Into::into),
        }
    }

    /// With `--block-state`: writes the blocks in force, for the next start.
    fn save_blocks(&mut self) {
        let Some(path) = self.block_state.clone() else {
            return;
        };
        let Some(blocker) = self.pipeline.blocker() else {
            return;
        };
        let list = blocker.list(clock::monotonic_now());
        if let Err(err) = crate::policy::block_state::save_state(&path, &list, clock::unix_now_s())
        {
            log::error!("cannot save the blocks to {}: {err}", path.display());
        }
    }

    /// SIGHUP: re-reads the allow-lists; a bad file leaves them as they were (nothing is
    /// lost on a typo).
    fn reload_allow_lists(&mut self) {
        let new = match self.allow.load() {
            Ok(new) => new,
            Err(err) => {
                log::error!("SIGHUP: allow-lists kept as they were: {err}");
                return;
            }
        };
        if let Err(err) = allow::apply(self.ebpf, &self.allow_lists, &new) {
            log::error!("SIGHUP: cannot update the allow-lists: {err:#}");
            return;
        }
        if let Some(blocker) = self.pipeline.blocker() {
            match blocker.set_allowed(&new.sources) {
                Ok(lifted) => log_lifted(&lifted),
                Err(err) => log::error!("SIGHUP: cannot update the never-block list: {err}"),
            }
        }
        log::info!(
            "SIGHUP: allow-lists reloaded: {} sources, {} services",
            new.sources.len(),
            new.services.len()
        );
        self.allow_lists = new;
    }

    /// With no `--home-net`: when many attempts went to addresses outside the home nets
    /// and many answers left from such addresses (hosts behind this one answered probes it
    /// does not count), says so once, with the flag that fixes it. True once said.
    fn hint_home_nets(&self) -> bool {
        if self.network.home_nets_given {
            return true;
        }
        // Two counters, not all of them: this runs every second until it speaks.
        let value = |wanted: Counter| kernel::counter_value(self.ebpf, wanted).unwrap_or(0);
        let (not_home, answers) = (value(Counter::NotHome), value(Counter::ForeignAnswers));
        if not_home < HINT_AFTER || answers < HINT_AFTER {
            return false;
        }
        log::warn!(
            "{not_home} attempts went to addresses outside the home nets ({}) and {answers} \
             answers to such attempts left through {} from them: hosts behind this one are \
             being probed and nothing counts it. Name the networks behind this host with \
             --home-net PREFIX, once for each{}",
            self.network.describe_home_nets(),
            self.network.ifaces.join(", "),
            if self.network.forwarding.any() {
                ""
            } else {
                "; this host does not forward (no net.ipv4.ip_forward), so none were derived \
                 from its routes"
            }
        );
        true
    }

    /// Takes the network as read again (`fresh`); what changed goes to the log, the
    /// kernel's home nets and the never-block list (lifting the blocks of sources
    /// protected now).
    fn network_read(&mut self, fresh: Network) {
        let old = std::mem::replace(&mut self.network, fresh);
        if let Some(changes) = self.network.changes_from(&old) {
            log::info!("network changed: {changes}");
        }
        if self.network.own != old.own
            && let Err(err) = kernel::set_local(self.ebpf, &self.network.own)
        {
            log::error!("cannot update our own addresses: {err}");
        }
        if self.network.home_nets != old.home_nets {
            match kernel::set_home_nets(self.ebpf, &self.network.home_nets) {
                Ok(()) => log::info!("home nets: {}", self.network.describe_home_nets()),
                Err(err) => log::error!("cannot update the home nets: {err}"),
            }
            let own = crate::cli::settings::own_addresses(&self.network.home_nets);
            self.pipeline.engine_mut().set_own(&own);
        }
        let allowed: Vec<_> = self.allow_lists.sources.iter().copied().collect();
        let never = self.network.never_block(&allowed);
        if let Some(blocker) = self.pipeline.blocker()
            && never != blocker.policy().never
        {
            match blocker.set_never(never) {
                Ok(lifted) => log_lifted(&lifted),
                Err(err) => log::error!("cannot update the never-block list: {err}"),
            }
        }
    }

    /// What a scrape or a status line reports now.
    fn snapshot(&mut self, started: std::time::SystemTime) -> Snapshot {
        let blocks = self.pipeline.blocker().map(|b| b.stats());
        let engine = self.pipeline.engine();
        let stats = self.pipeline.stats();
        Snapshot {
            kernel: kernel::counters(self.ebpf).unwrap_or_default(),
            tables: engine.tables(),
            evictions: engine.evictions(),
            memory_bound_bytes: engine.bound() as u64,
            alerts: stats.alerts_written.clone(),
            alerts_suppressed: stats.alerts_suppressed,
            decode_errors: stats.decode_errors,
            start_latency: stats.start_latency.clone(),
            start_time_s: started
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
            blocks,
            top_sources: engine.top_sources(metrics::TOP_SOURCES),
            attack_list_lost: stats.attack_list_lost,
            stdout_dropped: self.pipeline.out().stdout_dropped(),
            traceroutes: engine.traceroutes(),
            fleet: self
                .fleet
                .as_ref()
                .map(|f| metrics::FleetSnapshot::of(&f.stats)),
            output_lost: self
                .pipeline
                .out()
                .lost()
                .iter()
                .map(|(k, v)| (k.clone(), *v))
                .collect(),
        }
    }
}

/// Says which blocks were lifted and why.
fn log_lifted(lifted: &[(std::net::IpAddr, crate::policy::protect::Spared)]) {
    for (addr, why) in lifted {
        log::info!("lifted the block of {addr}: {why}");
    }
}

/// Feeds at most `limit` records waiting in `ring` to `pipeline` and writes what it made;
/// true when the limit was reached (more may wait).
fn drain_into(
    pipeline: &mut Pipeline<Sinks>,
    ring: &mut RingBuf<MapData>,
    ebpf: &aya::Ebpf,
    limit: usize,
) -> Result<bool, OutputError> {
    let started = std::time::Instant::now();
    let mut handled = 0;
    let mut full = false;
    while handled < limit {
        // Time-bounded too: a slow batch (a debug build, a busy machine) gives the loop back.
        if handled % 16 == 15 && started.elapsed() >= DRAIN_TIME {
            full = true;
            break;
        }
        let Some(record) = ring.next() else {
            break;
        };
        pipeline.record(&record);
        handled += 1;
        if pipeline.take_urgent() {
            pipeline.flush(|p| kernel::outcome_count(ebpf, p))?;
        }
    }
    pipeline.flush(|p| kernel::outcome_count(ebpf, p))?;
    Ok(full || handled == limit)
}

/// Logs the kernel counters, and how full the kernel's tables are.
pub fn log_counters(ebpf: &aya::Ebpf, config: &KernelConfig, level: log::Level) {
    if let Ok((live, slots)) = kernel::pending_occupancy(ebpf) {
        let walked = kernel::pending_walked(ebpf).unwrap_or(0);
        log::log!(
            level,
            "pending table: {live} of {slots} slots in use at the last sweep, which read \
             {walked} (those of the regions attempts were written into)"
        );
    }
    let counters = match kernel::counters(ebpf) {
        Ok(counters) => counters,
        Err(err) => {
            log::warn!("cannot read the kernel counters: {err}");
            return;
        }
    };
    // Every outcome recorded in the LRU table was either sent or dropped at the ring.
    let recorded: u64 = counters
        .iter()
        .filter(|(c, _)| matches!(c, Counter::EventsSent | Counter::RingbufDrops))
        .map(|(_, v)| v)
        .sum();
    let full = recorded > u64::from(config.outcomes_entries);
    log::log!(
        level,
        "outcome table: {recorded} outcomes recorded, {} entries{}",
        config.outcomes_entries,
        if full {
            " (full: the least recently used are evicted; an evicted outcome that recurs is reported again)"
        } else {
            ""
        }
    );
    let listed: Vec<String> = counters
        .iter()
        .map(|(c, v)| format!("{}={v}", c.name()))
        .collect();
    log::log!(level, "kernel counters: {}", listed.join(" "));
}

/// A watch on stdout for its reader going away, when stdout is something epoll can watch
/// (a pipe; not a regular file).
fn watch_stdout() -> Option<AsyncFd<std::os::fd::OwnedFd>> {
    use std::os::fd::FromRawFd as _;
    // SAFETY: dup has no memory preconditions; fd 1 is open (or dup fails).
    let fd = unsafe { libc::dup(1) };
    if fd < 0 {
        return None;
    }
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    let owned = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
    // SAFETY: the AsyncFd owns the descriptor and neither closes nor replaces it while
    // registered, so the registered fd stays the same open file.
    unsafe { AsyncFd::register_with_interest(owned, Interest::ERROR) }.ok()
}

/// What `future` gives; never, when there is none: a `select!` branch that is off.
async fn when<F: std::future::Future>(future: Option<F>) -> F::Output {
    match future {
        Some(future) => future.await,
        None => std::future::pending().await,
    }
}
