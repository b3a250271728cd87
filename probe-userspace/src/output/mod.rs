//! The output pipeline: from decoded kernel events to written records. One [`Pipeline`]
//! serves both the live watch loop and `replay`: it feeds the engine, renders alert and
//! probe records, holds alerts to `--alert-rate-limit`, makes or records blocking
//! decisions, and writes the attack list, all on the clock it is given (the kernel's
//! monotonic clock live, the capture's in a replay).

pub mod attack_list;
pub mod evidence;
pub mod latency;
pub mod probe_record;
pub mod rate_limit;
pub mod record;
pub mod services;
pub mod sink;
pub mod stdout;

use std::{
    collections::{BTreeMap, HashMap},
    io::Write,
    net::IpAddr,
    time::Duration,
};

use crate::{
    clock::{self, WallClock},
    detect::{Engine, Phase, ScanAlert},
    event::{Probe, Summarized, outcome_name, proto_name},
    net::iface,
    output::{
        attack_list::{AttackList, Row},
        evidence::Evidence,
        probe_record::ProbeRecord,
        rate_limit::FloodLimit,
        record::{AlertRecord, Thresholds, json_line},
    },
    policy::{
        block::Blocker,
        budget::{Budget, Refusal},
        macs::Macs,
        protect::{BlockPolicy, Spared},
    },
};

/// Which clock the times handed to a [`Pipeline`] are on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Clock {
    /// The kernel's CLOCK_MONOTONIC (a live run): converted to wall-clock time with the
    /// current offset, taken anew for each batch of records.
    Monotonic,
    /// Wall-clock time since the Unix epoch (a capture's).
    Unix,
}

impl Clock {
    fn wall(self) -> WallClock {
        match self {
            Clock::Monotonic => WallClock::now(),
            Clock::Unix => WallClock::unix(),
        }
    }
}

/// What happens to the sources of a newly recognised scan.
pub enum Blocking {
    /// Nothing (`--block` off).
    Off,
    /// Blocked in the kernel through the block list (a live run with `--block`).
    Live(Box<Blocker>),
    /// Judged by the policy and the budget and recorded in `alert.action`, never applied (a
    /// replay with `--block`: what a live run would have done, peers aside: a capture does
    /// not say whom this host talked to before it).
    Recorded(BlockPolicy, Budget),
}

/// The pipeline's settings that are not objects of their own.
#[derive(Clone, Debug)]
pub struct PipelineConfig {
    /// `--probes`: also write each outcome as a `probe` record.
    pub probes: bool,
    /// `--alert-rate-limit` (0: none).
    pub alert_rate_limit: u32,
    /// `--alert-rate-per-source` (0: none).
    pub alert_rate_per_source: u32,
    /// The interface name every record carries, instead of looking the index up (replay).
    pub fixed_iface: Option<String>,
    /// The sensor's name every record carries in `host` (`--sensor-name`).
    pub host: String,
    /// Which clock the times given are on.
    pub clock: Clock,
}

/// What the pipeline has done, for metrics and the status line.
#[derive(Clone, Debug, Default)]
pub struct PipelineStats {
    /// Alert records written, by (kind, phase).
    pub alerts_written: BTreeMap<(&'static str, &'static str), u64>,
    /// Alerts the rate limit held back.
    pub alerts_suppressed: u64,
    /// Ring-buffer records that could not be decoded.
    pub decode_errors: u64,
    /// Events decoded and observed.
    pub events: u64,
    /// Attack-list rows that could not be written (disk full, file gone).
    pub attack_list_lost: u64,
    /// Failed attack-list writes since the last one that worked.
    pub attack_list_failures: u64,
    /// Live runs: how long `start` records took from their deciding outcome to the write.
    pub start_latency: latency::Latencies,
}

/// Why the pipeline could not write.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// The only output was stdout, and its reader went away (`| head`): the run is over,
    /// cleanly.
    #[error("stdout's reader went away")]
    ReaderGone,
    /// The record stream (stdout) refused a write.
    #[error("cannot write to stdout: {0}")]
    Write(#[source] std::io::Error),
}

/// See the module documentation. `W` is where records go (stdout, or a buffer in tests).
pub struct Pipeline<W: Write> {
    engine: Engine,
    config: PipelineConfig,
    thresholds: Thresholds,
    limit: FloodLimit,
    attack: Option<(AttackList, Evidence)>,
    blocking: Blocking,
    /// The link-layer address each recent source came from (with `--block`).
    macs: Macs,
    /// The "not blocking" lines, at most a few a minute: a forged flood makes thousands.
    spared_log: LogLimit,
    iface_names: HashMap<u32, String>,
    stats: PipelineStats,
    out: W,
    /// Records rendered and not yet written, and failed probes due in the attack list.
    lines: String,
    rows: Vec<Probe>,
    /// A `start` waits among `lines`: the reader should flush without finishing its batch.
    urgent: bool,
    /// Live runs: the times of the outcomes that decided the `start` records among `lines`.
    starts: Vec<Duration>,
    /// The latest time given to `observe` or `tick`.
    latest: Duration,
    /// `--fleet`: every outcome also goes to the fleet's publisher.
    tap: Option<crate::fleet::sensor::Tap>,
    /// `correlate`: the sensors behind each source, named in its alerts.
    fleet: Option<crate::fleet::sources::FleetSources>,
    /// Sources the recorded blocking decided to block, for the caller to apply elsewhere
    /// (a correlator publishes them to the fleet).
    decided: Vec<IpAddr>,
}

impl<W: Write> Pipeline<W> {
    /// A pipeline around `engine`, writing to `out`.
    pub fn new(
        engine: Engine,
        config: PipelineConfig,
        attack_list: Option<AttackList>,
        blocking: Blocking,
        out: W,
    ) -> Self {
        let evidence = Evidence::new(engine.config().max_tracked, engine.config().window);
        Self {
            thresholds: Thresholds::of(engine.config()),
            limit: FloodLimit::new(config.alert_rate_limit, config.alert_rate_per_source),
            attack: attack_list.map(|list| (list, evidence)),
            engine,
            config,
            blocking,
            macs: Macs::default(),
            spared_log: LogLimit::default(),
            iface_names: HashMap::new(),
            stats: PipelineStats::default(),
            out,
            lines: String::new(),
            rows: Vec::new(),
            urgent: false,
            starts: Vec::new(),
            latest: Duration::ZERO,
            tap: None,
            fleet: None,
            decided: Vec::new(),
        }
    }

    /// The sources recorded blocking decided to block since the last call.
    pub fn take_decided(&mut self) -> Vec<IpAddr> {
        std::mem::take(&mut self.decided)
    }

    /// Hands every outcome observed to the fleet's publisher too (`--fleet`).
    pub fn set_tap(&mut self, tap: crate::fleet::sensor::Tap) {
        self.tap = Some(tap);
    }

    /// The fleet's publisher, for the kernel's held failures; dropped to end it.
    pub fn tap_mut(&mut self) -> &mut Option<crate::fleet::sensor::Tap> {
        &mut self.tap
    }

    /// Names the sensors behind each scan's sources in its alerts (a correlator).
    pub fn set_fleet(&mut self, fleet: crate::fleet::sources::FleetSources) {
        self.fleet = Some(fleet);
    }

    /// The sensors behind each source (a correlator).
    pub fn fleet_mut(&mut self) -> Option<&mut crate::fleet::sources::FleetSources> {
        self.fleet.as_mut()
    }

    /// The engine, for its tables and memory bound.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The engine, to tell it what changed on the network.
    pub fn engine_mut(&mut self) -> &mut Engine {
        &mut self.engine
    }

    /// What has been done so far.
    pub fn stats(&self) -> &PipelineStats {
        &self.stats
    }

    /// The live block list, when blocking is live.
    pub fn blocker(&mut self) -> Option<&mut Blocker> {
        match &mut self.blocking {
            Blocking::Live(blocker) => Some(blocker),
            _ => None,
        }
    }

    /// Where the records go.
    pub fn out(&self) -> &W {
        &self.out
    }

    /// The records rendered and not written, taken (for the log, when no output is left).
    pub fn take_unwritten(&mut self) -> String {
        std::mem::take(&mut self.lines)
    }

    /// Where the records go, to reopen it.
    pub fn out_mut(&mut self) -> &mut W {
        &mut self.out
    }

    /// The latest time given to [`Pipeline::observe`] or [`Pipeline::tick`].
    pub fn latest(&self) -> Duration {
        self.latest
    }

    /// True (once) when a scan's `start` was rendered since the last call: the caller
    /// flushes now rather than after its batch, so the alert does not wait for thousands
    /// of records behind it.
    pub fn take_urgent(&mut self) -> bool {
        std::mem::take(&mut self.urgent)
    }

    /// Decodes one ring-buffer record and observes it at its own time; an undecodable
    /// record is counted (the first one logged) and skipped.
    pub fn record(&mut self, bytes: &[u8]) {
        match Probe::decode(bytes) {
            Ok(probe) => self.observe(&probe, probe.timestamp),
            Err(err) => {
                if self.stats.decode_errors == 0 {
                    log::warn!("skipping a ring-buffer record: {err}");
                }
                self.stats.decode_errors += 1;
            }
        }
    }

    /// Observes one outcome at `now`: its probe record (`--probes`), its evidence, and the
    /// alerts it completes. Nothing is written before [`Pipeline::flush`].
    pub fn observe(&mut self, probe: &Probe, now: Duration) {
        self.stats.events += 1;
        self.latest = self.latest.max(now);
        log::debug!(
            "{:?} {:?}: {}:{} -> {}:{} (proto {}, flags {:#04x}, ttl {})",
            probe.probe,
            probe.outcome,
            probe.src,
            probe.src_port,
            probe.dst,
            probe.dst_port,
            probe.proto,
            probe.tcp_flags,
            probe.ttl
        );
        if self.config.probes {
            let iface = self.iface_name(probe.ifindex);
            let record = ProbeRecord::from_probe(
                probe,
                iface,
                self.config.host.clone(),
                self.config.clock.wall(),
            );
            self.push_line(&json_line(&record));
        }
        if let Some((_, evidence)) = self.attack.as_mut() {
            self.rows.extend(evidence.note(probe, now));
        }
        if !matches!(self.blocking, Blocking::Off) {
            self.macs.note(probe.src, probe.src_mac);
        }
        if let Some(tap) = &mut self.tap {
            tap.note(probe);
        }
        let scans = self.engine.observe(probe, now);
        self.alerts(&scans, now);
        if probe.kernel_blocked {
            self.review_kernel_block(probe, now);
        }
    }

    /// Observes the outcomes of a kernel summary at `now`: as many outcomes, their
    /// evidence, and the alerts they complete, counted in their source's open scan at a
    /// few hundred nanoseconds a port (see [`Engine::observe_ports`]).
    pub fn observe_summary(&mut self, summary: &Summarized, now: Duration) {
        if self.config.probes {
            // Every outcome its own record (the kernel sends each when `--probes` is on;
            // this is for summaries read all the same).
            for probe in summary.outcomes() {
                self.observe(&probe, now);
            }
            return;
        }
        self.stats.events += summary.ports.len() as u64;
        self.latest = self.latest.max(now);
        if let Some((_, evidence)) = self.attack.as_mut() {
            // One row per port: a port the source's scan lists already was written.
            for probe in summary.outcomes() {
                if !self.engine.lists(&probe) {
                    self.rows.extend(evidence.note(&probe, now));
                }
            }
        }
        if !matches!(self.blocking, Blocking::Off) {
            self.macs.note(summary.probe.src, summary.probe.src_mac);
        }
        if let Some(tap) = &mut self.tap {
            for probe in summary.outcomes() {
                tap.note(&probe);
            }
        }
        let scans = self.engine.observe_ports(summary, now);
        self.alerts(&scans, now);
    }

    /// Renders the alerts of scans another engine recognised (a correlator's second stage,
    /// keyed by target), as this pipeline renders its own.
    pub fn external_alerts(&mut self, scans: &[ScanAlert], now: Duration) {
        self.latest = self.latest.max(now);
        self.alerts(scans, now);
    }

    /// The scans an outcome completed or grew: their sources confirmed for the attack
    /// list (every source of a distributed or grouped scan), their alerts rendered.
    fn alerts(&mut self, scans: &[ScanAlert], now: Duration) {
        for scan in scans {
            if let Some((_, evidence)) = self.attack.as_mut() {
                for &src in &scan.sources {
                    self.rows.extend(evidence.confirm(src, now));
                }
            }
            self.alert(scan, now);
        }
    }

    /// The kernel blocked a source on its verdict: a scan's start took it over already, or
    /// it is reviewed here as one would have been (the policy, the prefix cap), and kept
    /// or lifted.
    fn review_kernel_block(&mut self, probe: &Probe, now: Duration) {
        let mac = self.macs.get(probe.src);
        let crowd = self.engine.crowd_suspicion(probe);
        let traceroute = self.engine.traceroute_shaped(probe);
        let Blocking::Live(blocker) = &mut self.blocking else {
            return;
        };
        match blocker.review_kernel_block(probe.src, now, mac, crowd, traceroute) {
            Ok(None) => {}
            Ok(Some(why)) => {
                log::info!("lifted the kernel's block of {}: {why}", probe.src);
            }
            Err(err) => log::error!("cannot review the kernel's block of {}: {err}", probe.src),
        }
    }

    /// Time passes: updates held back by the interval, the summaries of scans gone quiet,
    /// and the count of alerts the rate limit held back.
    pub fn tick(&mut self, now: Duration) {
        self.latest = self.latest.max(now);
        for scan in self.engine.tick(now) {
            self.alert(&scan, now);
        }
        self.report_suppressed(now);
    }

    /// The end: every open scan's summary.
    pub fn finish(&mut self, now: Duration) {
        for scan in self.engine.finish() {
            self.alert(&scan, now);
        }
        self.report_suppressed(now);
    }

    /// Writes what is pending: attack-list rows (each with the kernel's repeat count from
    /// `count`, 1 when it has none) and records.
    pub fn flush(&mut self, count: impl Fn(&Probe) -> Option<u64>) -> Result<(), OutputError> {
        if let Some((list, _)) = self.attack.as_mut()
            && !self.rows.is_empty()
        {
            let wall = self.config.clock.wall();
            let rows: Vec<Row> = self
                .rows
                .drain(..)
                .map(|p| Row {
                    time: wall.at(p.timestamp),
                    source: p.src,
                    destination: p.dst,
                    port: p.dst_port,
                    protocol: proto_name(p.proto),
                    outcome: outcome_name(p.outcome),
                    service: services::lookup(p.proto, p.dst_port).map_or("", |s| s.name),
                    count: count(&p).unwrap_or(1),
                })
                .collect();
            // Never fatal: the rows are counted as lost, the list reopened, and the next
            // rows tried again (disk full, file removed).
            if let Err(err) = list.append(&rows) {
                self.stats.attack_list_lost += rows.len() as u64;
                if self.stats.attack_list_failures == 0 {
                    log::error!(
                        "{err}: {} rows lost; trying again with the next rows",
                        rows.len()
                    );
                }
                self.stats.attack_list_failures += 1;
                if let Err(err) = list.reopen() {
                    log::debug!("{err}");
                }
            } else if self.stats.attack_list_failures > 0 {
                log::warn!(
                    "attack list written again after {} failed writes ({} rows lost)",
                    self.stats.attack_list_failures,
                    self.stats.attack_list_lost
                );
                self.stats.attack_list_failures = 0;
            }
        }
        // Flushed even with nothing new: what waits for a slow reader goes on.
        let result = self
            .out
            .write_all(self.lines.as_bytes())
            .and_then(|()| self.out.flush());
        match result {
            Ok(()) => {
                self.lines.clear();
                if !self.starts.is_empty() {
                    let written = clock::monotonic_now();
                    for decided in self.starts.drain(..) {
                        let latency = written.saturating_sub(decided);
                        self.stats.start_latency.observe(latency);
                    }
                }
                Ok(())
            }
            // Kept: what could not be written goes to the log instead.
            Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => {
                Err(OutputError::ReaderGone)
            }
            Err(err) => {
                self.lines.clear();
                self.starts.clear();
                Err(OutputError::Write(err))
            }
        }
    }

    /// Renders one alert, unless the rate limit holds it back; blocks (or records the
    /// block of) the sources of a new scan first.
    fn alert(&mut self, scan: &ScanAlert, now: Duration) {
        // Blocking does not wait for the rate limit: a held-back alert still blocks.
        let blocked = self.block(scan, now);
        if !self.limit.admit(scan.src, scan.phase == Phase::Start, now) {
            return;
        }
        *self
            .stats
            .alerts_written
            .entry((scan.kind.name(), scan.phase.name()))
            .or_default() += 1;
        let iface = self.iface_name(scan.ifindex);
        let mut record = AlertRecord::from_scan(
            scan,
            iface,
            self.config.host.clone(),
            self.thresholds,
            self.config.clock.wall(),
        );
        if blocked {
            record.alert.action = "blocked";
        }
        if let Some(fleet) = &self.fleet {
            record.alert.context.fleet = Some(fleet.info(&scan.sources));
        }
        let line = json_line(&record);
        if let Some(tap) = &mut self.tap {
            tap.alert(&line);
        }
        self.push_line(&line);
        // A scan's first record goes out without waiting for the rest of the batch.
        if scan.phase == Phase::Start {
            self.urgent = true;
            // Only on the kernel's clock (a replay's times are the capture's).
            if self.config.clock == Clock::Monotonic {
                self.starts.push(now);
            }
        }
    }

    /// With `--block`, blocks (live) or judges (replay) the sources of a newly recognised
    /// scan; true when one was, or would have been, blocked.
    fn block(&mut self, scan: &ScanAlert, now: Duration) -> bool {
        // Decoys that show after a block (in this scan's update, or in a distributed scan
        // its sources join later): the blocks were likely aimed by forgery.
        if let Blocking::Live(blocker) = &mut self.blocking {
            for addr in blocker.on_spoofed(scan) {
                log::info!("lifted the block of {addr}: its scan is likely spoofed (decoys)");
            }
        }
        if scan.phase != Phase::Start {
            return false;
        }
        let macs = &self.macs;
        let mac_of = |ip| macs.get(ip);
        let (verdicts, ttl, verb) = match &mut self.blocking {
            Blocking::Off => return false,
            Blocking::Recorded(policy, budget) => {
                let mut verdicts = policy.judge(scan, mac_of);
                for (addr, why) in &mut verdicts {
                    if why.is_none()
                        && let Some(fleet) = &self.fleet
                        && !fleet.enough_sensors(*addr)
                    {
                        *why = Some(Spared::FewSensors);
                    }
                    if why.is_none() {
                        *why = match budget.take(*addr, now) {
                            Ok(()) => None,
                            Err(Refusal::Rate) => Some(Spared::BlockRate),
                            Err(Refusal::PrefixCap) => Some(Spared::PrefixCap),
                        };
                    }
                    if why.is_none() {
                        self.decided.push(*addr);
                    }
                }
                (verdicts, policy.ttl, "would block")
            }
            Blocking::Live(blocker) => match blocker.on_scan(scan, now, mac_of) {
                Ok(verdicts) => (verdicts, blocker.policy().ttl, "blocked"),
                Err(err) => {
                    log::error!("cannot block the sources of a scan: {err}");
                    return false;
                }
            },
        };
        let mut blocked = false;
        for (addr, why) in verdicts {
            match why {
                None => {
                    log::info!(
                        "{verb} {addr} for {} s ({} scan)",
                        ttl.as_secs(),
                        scan.kind.name()
                    );
                    blocked = true;
                }
                Some(why) => self
                    .spared_log
                    .log(now, &format!("not blocking {addr}: {why}")),
            }
        }
        blocked
    }

    /// When the rate limit held alerts back since the last call, one EVE `engine` record
    /// (as Suricata logs its own warnings) that says how many, and whose.
    fn report_suppressed(&mut self, now: Duration) {
        let suppressed = self.limit.take_suppressed();
        if suppressed.total == 0 {
            return;
        }
        self.stats.alerts_suppressed += suppressed.total;
        let message = suppressed.describe(
            self.config.alert_rate_limit,
            self.config.alert_rate_per_source,
        );
        log::warn!("{message}");
        let timestamp = clock::eve_timestamp(self.config.clock.wall().at(now));
        self.lines.push_str(&rate_limit::engine_record(
            timestamp,
            &self.config.host,
            "probe-detector-alert-rate-limit",
            &message,
        ));
    }

    fn push_line(&mut self, line: &str) {
        self.lines.push_str(line);
        self.lines.push('\n');
    }

    /// Readies the first alert before any scan comes: the names of the watched interfaces
    /// (`ifindexes`) are looked up now, and a rehearsal scan (from 192.0.2.1, TEST-NET-1)
    /// goes through a throwaway pipeline of the same settings that writes nowhere, so the
    /// code and memory a start record needs are in place. Measured on a 2-vCPU VM, the
    /// first alert of a fresh daemon took 150-270 µs from its event to stdout without this
    /// (an interface-name lookup of 20-40 µs, and the first run of the engine's, the
    /// record's and serde's code), about the time a fast scanner takes for ten probes.
    pub fn warm_up(&mut self, ifindexes: &[u32]) {
        for &ifindex in ifindexes {
            self.iface_name(ifindex);
        }
        let mut rehearsal = Pipeline::new(
            Engine::new(self.engine.config().clone()),
            self.config.clone(),
            None,
            Blocking::Off,
            std::io::sink(),
        );
        rehearsal.config.probes = false;
        let start = clock::monotonic_now();
        for port in 1..=64u16 {
            let mut probe = Probe::syn(
                IpAddr::from([192, 0, 2, 1]),
                IpAddr::from([192, 0, 2, 2]),
                port,
                crate::event::Outcome::Refused,
            );
            probe.timestamp = start + Duration::from_micros(u64::from(port));
            probe.ifindex = ifindexes.first().copied().unwrap_or(0);
            probe.kernel_verdict = port == 4;
            rehearsal.observe(&probe, probe.timestamp);
            if rehearsal.take_urgent() {
                break;
            }
        }
        let _ = rehearsal.flush(|_| None);
    }

    /// The name of an interface, remembered; its index when it has none any more.
    fn iface_name(&mut self, ifindex: u32) -> String {
        if let Some(name) = &self.config.fixed_iface {
            return name.clone();
        }
        self.iface_names
            .entry(ifindex)
            .or_insert_with(|| iface::name_of(ifindex).unwrap_or_else(|| ifindex.to_string()))
            .clone()
    }
}

/// Lines logged at most [`LogLimit::PER_MINUTE`] a minute; the rest are counted and said in
/// one line when the next minute begins.
#[derive(Default)]
struct LogLimit {
    window: Duration,
    logged: u32,
    held: u64,
}

impl LogLimit {
    const PER_MINUTE: u32 = 20;

    fn log(&mut self, now: Duration, line: &str) {
        if now.saturating_sub(self.window) >= Duration::from_secs(60) {
            if self.held > 0 {
                log::info!(
                    "{} more sources not blocked in the last minute (not logged one by one; see probe_detector_blocks_refused_total)",
                    self.held
                );
            }
            *self = Self {
                window: now,
                ..Self::default()
            };
        }
        if self.logged < Self::PER_MINUTE {
            self.logged += 1;
            log::info!("{line}");
        } else {
            self.held += 1;
            log::debug!("{line}");
        }
    }
}

#[cfg(test)]
mod tests;
