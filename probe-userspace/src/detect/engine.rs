//! The engine: every detector on each outcome, and the incidents their verdicts open
//! and grow; see the module documentation of [`crate::detect`].

use std::{net::IpAddr, time::Duration};

use crate::{
    detect::{
        alert::{Phase, ScanAlert, ScanKind, Technique},
        crowd::{CrowdConfig, Crowds},
        horizontal::Horizontal,
        incident::{
            GROUP_ADDRS, Incident, IncidentKey, MAX_HOSTS, MAX_INCIDENTS, MAX_REPORTED,
            MAX_SOURCES, PortList, Sighting, TtlRange, crowd_key, push_new,
        },
        slow::{Slow, SlowConfig},
        spread::Units,
        table::{BoundedTable, ENTRY_OVERHEAD, RecentSet},
        traceroute::Traces,
        trw::{Trw, TrwConfig, TrwUnit},
        verdict::{Detector, DetectorName, Verdict},
        vertical::Vertical,
    },
    event::{Probe, Summarized},
    net::cidr,
};

/// Tuning of the detectors.
#[derive(Clone, Debug, PartialEq)]
pub struct EngineConfig {
    /// Distinct failed ports of one target from one source that make a port scan.
    pub min_ports: usize,
    /// Distinct targets probed by one source that make a sweep.
    pub min_hosts: usize,
    /// How far back ports and hosts are counted; an entry idle for longer starts over.
    pub window: Duration,
    /// Entries each detector tracks at once; the least recently active go first.
    pub max_tracked: usize,
    /// The sequential hypothesis test; `None` turns it off.
    pub trw: Option<TrwConfig>,
    /// At most one `update` alert per incident this often.
    pub update_interval: Duration,
    /// An incident idle for this long ends (its `end` alert sums it up); a slow scan's
    /// incident waits for three of its average gaps between probes, up to the slow
    /// detector's horizon.
    pub idle_timeout: Duration,
    /// The slow-scan detector; `None` turns it off.
    pub slow: Option<SlowConfig>,
    /// The distributed / decoy scan detector; `None` turns it off.
    pub crowd: Option<CrowdConfig>,
    /// Prefix length that groups IPv4 sources into one (32: every address on its own).
    pub group_v4: u8,
    /// Prefix length that groups IPv6 sources into one (128: every address on its own).
    pub group_v6: u8,
    /// This host's own addresses: where `--trw auto` counts services (see
    /// [`Engine::set_own`]).
    pub own: Vec<IpAddr>,
}

impl EngineConfig {
    /// What one source is: its address, or its prefix when grouped.
    pub fn units(&self) -> Units {
        Units {
            v4: self.group_v4.min(32),
            v6: self.group_v6.min(128),
        }
    }
}

impl Default for EngineConfig {
    /// 10 ports or 16 hosts within 60 s; TRW with its paper's defaults; slow scans of 8
    /// failed contacts within an hour; 3 sources sharing 3 failed ports within 60 s;
    /// updates at most every 60 s; incidents end after 60 s idle; 65 536 entries per table;
    /// an IPv4 source is its address, an IPv6 source its /64 (an end site's smallest
    /// network: SLAAC and privacy addresses rotate within it).
    fn default() -> Self {
        Self {
            min_ports: 10,
            min_hosts: 16,
            window: Duration::from_secs(60),
            max_tracked: 65_536,
            trw: Some(TrwConfig::default()),
            update_interval: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(60),
            slow: Some(SlowConfig::default()),
            crowd: Some(CrowdConfig::default()),
            group_v4: 32,
            group_v6: 64,
            own: Vec::new(),
        }
    }
}

/// The detectors' and incidents' state; see the module documentation.
#[derive(Debug)]
pub struct Engine {
    sightings: BoundedTable<IpAddr, Sighting>,
    config: EngineConfig,
    /// In the order they see each outcome: the crowd detector first, so the members' own
    /// verdicts on its target fold into a distributed scan.
    detectors: Vec<Box<dyn Detector + Send>>,
    incidents: BoundedTable<IncidentKey, Incident>,
    /// Traceroutes, whose probes the detectors do not see.
    traces: Traces,
}

impl Engine {
    /// Detectors with the given tuning.
    pub fn new(config: EngineConfig) -> Self {
        let tracked = config.max_tracked;
        let mut detectors: Vec<Box<dyn Detector + Send>> = Vec::new();
        if let Some(crowd) = config.crowd {
            detectors.push(Box::new(Crowds::new(crowd, config.units())));
        }
        if let Some(trw) = config.trw {
            detectors.push(Box::new(Trw::new(trw, tracked)));
        }
        if let Some(slow) = config.slow {
            detectors.push(Box::new(Slow::new(slow)));
        }
        detectors.push(Box::new(Vertical::new(
            config.min_ports,
            config.window,
            tracked,
        )));
        detectors.push(Box::new(Horizontal::new(
            config.min_hosts,
            config.window,
            tracked,
        )));
        Self::with_detectors(config, detectors)
    }

    /// An engine of the distributed-scan detector alone (`None` when `config` has it off):
    /// a correlator's second stage, which sees every source of a target.
    pub fn crowd_only(config: EngineConfig) -> Option<Self> {
        let crowd = config.crowd?;
        let detectors: Vec<Box<dyn Detector + Send>> =
            vec![Box::new(Crowds::new(crowd, config.units()))];
        Some(Self::with_detectors(config, detectors))
    }

    fn with_detectors(config: EngineConfig, detectors: Vec<Box<dyn Detector + Send>>) -> Self {
        let tracked = config.max_tracked;
        let own = config.own.clone();
        let mut engine = Self {
            sightings: BoundedTable::new(tracked),
            detectors,
            incidents: BoundedTable::new(tracked.min(MAX_INCIDENTS)),
            traces: Traces::new(config.window),
            config,
        };
        engine.set_own(&own);
        engine
    }

    /// This host's own addresses changed: with `--trw auto` the sequential test counts
    /// first contacts with each service at them, with each host elsewhere.
    pub fn set_own(&mut self, own: &[IpAddr]) {
        self.config.own = own.to_vec();
        for detector in &mut self.detectors {
            detector.set_own(own);
        }
    }

    /// Probes withheld as traceroutes' so far, and traceroutes found.
    pub fn traceroutes(&self) -> (u64, u64) {
        self.traces.stats()
    }

    /// Entries tracked, all tables together.
    pub fn tracked(&self) -> usize {
        self.sightings.len()
            + self.incidents.len()
            + self.detectors.iter().map(|d| d.tracked()).sum::<usize>()
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Entries held per table, by name (for metrics).
    pub fn tables(&self) -> Vec<(&'static str, usize)> {
        let mut tables = vec![
            ("sources", self.sightings.len()),
            ("incidents", self.incidents.len()),
            ("traceroutes", self.traces.tracked()),
        ];
        tables.extend(self.detectors.iter().map(|d| (d.table(), d.tracked())));
        tables
    }

    /// Entries forgotten to make room so far (incidents, threshold and slow-scan
    /// detectors).
    pub fn evictions(&self) -> u64 {
        self.incidents.evictions() + self.detectors.iter().map(|d| d.evictions()).sum::<u64>()
    }

    /// The most memory the engine's state can take with `config`, in bytes (every table
    /// full, every list at its cap; hash-table overhead approximated): what a flood of
    /// crafted sources can cost at worst.
    pub fn memory_bound(config: &EngineConfig) -> usize {
        Self::new(config.clone()).bound()
    }

    /// [`Engine::memory_bound`] of this engine's configuration.
    pub fn bound(&self) -> usize {
        use std::mem::size_of;
        let tracked = self.config.max_tracked;
        let grouped = self.config.group_v4 < 32 || self.config.group_v6 < 128;
        let sightings = tracked
            * (size_of::<IpAddr>()
                + size_of::<Sighting>()
                + ENTRY_OVERHEAD
                + if grouped {
                    GROUP_ADDRS * size_of::<(IpAddr, Duration)>()
                } else {
                    0
                });
        let incidents = tracked.min(MAX_INCIDENTS)
            * (size_of::<IncidentKey>()
                + size_of::<Incident>()
                + ENTRY_OVERHEAD
                + MAX_REPORTED * size_of::<u16>()
                + (MAX_HOSTS + MAX_SOURCES) * size_of::<IpAddr>());
        let detectors: usize = self.detectors.iter().map(|d| d.memory_bound()).sum();
        sightings + incidents + detectors + self.traces.memory_bound()
    }

    /// Open incidents.
    pub fn incidents(&self) -> usize {
        self.incidents.len()
    }

    /// The sources of open incidents with the most outcomes counted, busiest first, at
    /// most `n`: each incident's first source (its network when sources are grouped), its
    /// incidents' probes summed. Bounded by `n` whatever the number of sources, so a
    /// metric built on it cannot grow with a forged flood.
    pub fn top_sources(&self, n: usize) -> Vec<(String, u64)> {
        let mut by_source: std::collections::HashMap<String, u64> =
            std::collections::HashMap::new();
        for incident in self.incidents.values() {
            let label = match (incident.src_net, incident.sources.first()) {
                (Some((net, len)), _) => format!("{net}/{len}"),
                (None, Some(src)) => src.to_string(),
                (None, None) => continue,
            };
            *by_source.entry(label).or_default() += incident.probes;
        }
        let mut top: Vec<(String, u64)> = by_source.into_iter().collect();
        top.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        top.truncate(n);
        top
    }

    /// The source as the per-source detectors count it: its group's network address when
    /// grouping is on, with the prefix length.
    fn group(&self, src: IpAddr) -> (IpAddr, Option<u8>) {
        let len = match src {
            IpAddr::V4(_) => self.config.group_v4.min(32),
            IpAddr::V6(_) => self.config.group_v6.min(128),
        };
        match src {
            IpAddr::V4(_) if len == 32 => (src, None),
            IpAddr::V6(_) if len == 128 => (src, None),
            _ => (cidr::network(src, len), Some(len)),
        }
    }

    /// True when the probe's source is a member of an open distributed scan of its target.
    fn in_crowd(&self, probe: &Probe) -> bool {
        self.incidents
            .get(&crowd_key(probe.dst, probe.proto))
            .is_some_and(|i| i.sources.contains(&probe.src))
    }

    /// Why the probe's source may be forged, when it is a member of an open distributed
    /// scan of the probe's target: `Some(true)` for a spread scan's member (never blocked),
    /// `Some(false)` for a decoy scan's; `None` otherwise.
    pub fn crowd_suspicion(&self, probe: &Probe) -> Option<bool> {
        self.incidents
            .get(&crowd_key(probe.dst, probe.proto))
            .filter(|i| i.sources.contains(&probe.src))
            .map(|i| i.spread)
    }

    /// True for a probe the traceroute filter judges (a UDP failure at a low TTL) while the
    /// source has no scan of the probe's target open: a verdict on it may be a
    /// traceroute's.
    pub fn traceroute_shaped(&self, probe: &Probe) -> bool {
        self.traces.looks_at(probe) && !self.incidents.contains(&self.own_scan(probe))
    }

    /// The key of the scan of `probe`'s target by `probe`'s source (its group).
    fn own_scan(&self, probe: &Probe) -> IncidentKey {
        IncidentKey {
            src: self.group(probe.src).0,
            kind: ScanKind::Vertical,
            target: Some(probe.dst),
            proto: probe.proto,
        }
    }

    /// Whether a per-source verdict on `probe`'s target folds into the distributed scan
    /// its source is a member of: always for decoys; never for a spread scan, whose
    /// members fail on one or two ports: a source with a verdict of its own on the target
    /// (four first failures at least) scans on its own, leaves the crowd and opens its own
    /// incident.
    fn folds(&mut self, probe: &Probe) -> bool {
        let Some(crowd) = self.incidents.get_mut(&crowd_key(probe.dst, probe.proto)) else {
            return false;
        };
        if !crowd.sources.contains(&probe.src) {
            return false;
        }
        if !crowd.spread {
            return true;
        }
        crowd.sources.retain(|&s| s != probe.src);
        false
    }

    /// Notes the TTL (and, when grouped, the address) of a probe from `src`.
    fn sight(&mut self, src: IpAddr, grouped: bool, probe: &Probe, now: Duration) {
        // As long as the slowest detector that may open an incident remembers evidence.
        let idle = self
            .config
            .trw
            .map_or(self.config.window, |t| t.idle)
            .max(self.config.window);
        let sighting = self.sightings.entry(src, now, idle, || Sighting {
            last_seen: now,
            ttl: TtlRange::default(),
            addrs: RecentSet::new(),
        });
        if now.saturating_sub(sighting.last_seen) > idle {
            sighting.ttl = TtlRange::default();
            sighting.addrs = RecentSet::new();
        }
        sighting.last_seen = sighting.last_seen.max(now);
        sighting.ttl.note(probe.ttl);
        if grouped {
            sighting.addrs.note(probe.src, now, idle, GROUP_ADDRS);
        }
    }

    /// Feeds one outcome seen at `now`; returns the alerts it causes: `start` for scans it
    /// completes, `update` for scans it grows when one is due (and `end` for a source's
    /// own incident that a distributed scan absorbs).
    pub fn observe(&mut self, probe: &Probe, now: Duration) -> Vec<ScanAlert> {
        // A traceroute's probes are held back, then withheld; a scan's are let through,
        // the held ones with them.
        let mut alerts = Vec::new();
        for probe in self.traces.observe(probe, now) {
            alerts.extend(self.observe_one(&probe, now));
        }
        alerts
    }

    /// Feeds a kernel summary of a source it decided on (outcomes of one source, host and
    /// kind that differ only in their port): once the source's scan of the host is open,
    /// the ports still to come count in it together, without running the detectors again
    /// (they decided already): its incidents are looked up once per summary, not once per
    /// port. Until such a scan opens, each port goes through [`Engine::observe`].
    pub fn observe_ports(&mut self, summary: &Summarized, now: Duration) -> Vec<ScanAlert> {
        let mut alerts = Vec::new();
        for index in 0..summary.ports.len() {
            if self.count_in_open_scan(summary, index, now, &mut alerts) {
                break;
            }
            alerts.extend(self.observe(&summary.outcome(index), now));
        }
        alerts
    }

    /// Whether `probe` is a failure its source's own open scan of its target lists already:
    /// a repeat the kernel's summaries could not tell (one before the verdict, or in an
    /// earlier summary), within the [`MAX_REPORTED`] ports a scan lists.
    pub fn lists(&self, probe: &Probe) -> bool {
        probe.failed()
            && self
                .incidents
                .get(&self.own_scan(probe))
                .is_some_and(|incident| incident.ports.contains(&probe.dst_port))
    }

    /// Counts the outcomes of `summary` from its `from`th port on in their source's open
    /// scan of their target (its own, or the decoy scan it is a member of) and in the
    /// source's open sweep, with any update due (a failed port its own scan lists already
    /// is a repeat: nothing counted); false, and nothing done, when no such scan of the
    /// target is open, or when the outcomes are ones the traceroute filter looks at.
    fn count_in_open_scan(
        &mut self,
        summary: &Summarized,
        from: usize,
        now: Duration,
        alerts: &mut Vec<ScanAlert>,
    ) -> bool {
        let probe = &summary.outcome(from);
        let ports = &summary.ports[from..];
        if self.traces.looks_at(probe) {
            return false;
        }
        let own = self.own_scan(probe);
        let src = own.src;
        let mut counted = Vec::with_capacity(ports.len());
        let key = if let Some(incident) = self.incidents.get(&own) {
            // A port its scan has counted already: the kernel's repeat in a later summary
            // (it tells repeats within a summary's generation only), as `lists` tells.
            counted.extend(
                ports
                    .iter()
                    .filter(|port| !(probe.failed() && incident.ports.contains(port))),
            );
            own
        } else if self.crowd_suspicion(probe) == Some(false) {
            counted.extend_from_slice(ports);
            crowd_key(probe.dst, probe.proto)
        } else {
            return false;
        };
        if counted.is_empty() {
            return true;
        }
        let sweep = IncidentKey {
            src,
            kind: ScanKind::Horizontal,
            target: None,
            proto: 0,
        };
        // The range of the summary's TTLs: its last outcome carries the highest.
        let last = summary.outcome(summary.ports.len() - 1);
        self.sight(src, probe.src != src, probe, now);
        if last.ttl != probe.ttl {
            self.sight(src, probe.src != src, &last, now);
        }
        let interval = self.config.update_interval;
        for key in [key, sweep] {
            if let Some(incident) = self.incidents.get_mut(&key) {
                incident.count_ports(probe, &counted, now);
                incident.ttl.note(last.ttl);
                alerts.extend(incident.due_update(now, interval));
            }
        }
        true
    }

    fn observe_one(&mut self, probe: &Probe, now: Duration) -> Vec<ScanAlert> {
        let mut alerts = Vec::new();
        let (src, prefix) = self.group(probe.src);
        self.sight(src, prefix.is_some(), probe, now);
        // A member of a distributed scan of this target counts there, not on its own.
        let crowd_key = crowd_key(probe.dst, probe.proto);
        let in_crowd = self.in_crowd(probe);
        let vertical_key = IncidentKey {
            src,
            kind: ScanKind::Vertical,
            target: Some(probe.dst),
            proto: probe.proto,
        };
        let horizontal_key = IncidentKey {
            src,
            kind: ScanKind::Horizontal,
            target: None,
            proto: 0,
        };
        // Open incidents of this source count it first, so a scan opened just now by this
        // very probe is not counted twice.
        let counted = if in_crowd {
            [crowd_key, horizontal_key]
        } else {
            [vertical_key, horizontal_key]
        };
        let interval = self.config.update_interval;
        for key in counted {
            if let Some(incident) = self.incidents.get_mut(&key) {
                incident.count(probe, now);
                alerts.extend(incident.due_update(now, interval));
            }
        }
        let mut verdicts = self.detect(probe, now);
        if let Some(verdict) = self.kernel_verdict(probe, &verdicts, now) {
            verdicts.push(verdict);
        }
        for verdict in verdicts {
            match verdict.kind {
                ScanKind::Distributed => alerts.extend(self.open_crowd(verdict, probe, now)),
                // Its crowd's incident holds this source's scan of this target.
                // (Asked here: a distributed verdict of this very probe may have just
                // opened it.)
                ScanKind::Vertical if self.folds(probe) => {}
                // The slow-scan detector speaks for scans the others missed: a source with
                // an open incident is known already (rare: once per source and horizon);
                // a spread scan's member is not (anyone can name it among a flood's).
                _ if verdict.detector == DetectorName::Slow
                    && self.incidents.values().any(|i| {
                        i.key.src == src || !i.spread && i.sources.contains(&probe.src)
                    }) => {}
                _ => alerts.extend(self.open(verdict, probe, now)),
            }
        }
        alerts
    }

    /// The kernel's sequential test decided on this outcome (see [`Probe::kernel_verdict`])
    /// while ours did not (its state for the source was evicted by a flood, or counted a
    /// little differently): the verdict the engine takes as the scan's start, unless the
    /// source's scan is open already. Not with `--trw host`, which asks for the paper's
    /// unit everywhere (the kernel counts services): there its verdict only wakes the
    /// reader. With `--trw auto` it is taken at the hosts behind a gateway too, where our
    /// test counts hosts: four ports of one LAN host failing are a scan as they would be
    /// of this host, and waiting for the vertical detector would mean waiting for the
    /// kernel's summaries (up to 100 ms: a fast scan's whole run).
    fn kernel_verdict(
        &self,
        probe: &Probe,
        verdicts: &[Verdict],
        now: Duration,
    ) -> Option<Verdict> {
        let trw = self.config.trw?;
        if !probe.kernel_verdict || trw.unit == TrwUnit::Host || !probe.failed() {
            return None;
        }
        if verdicts
            .iter()
            .any(|v| v.kind != ScanKind::Distributed && v.sources.is_empty())
        {
            return None;
        }
        let (src, _) = self.group(probe.src);
        let open = |kind, target| IncidentKey {
            src,
            kind,
            target,
            proto: if kind == ScanKind::Vertical {
                probe.proto
            } else {
                0
            },
        };
        if self.crowd_suspicion(probe) == Some(false)
            || self
                .incidents
                .contains(&open(ScanKind::Vertical, Some(probe.dst)))
            || self.incidents.contains(&open(ScanKind::Horizontal, None))
        {
            return None;
        }
        // The ports the engine saw this source fail on at this target (the threshold
        // detector keeps them), so that the start lists what the kernel counted; the
        // deciding port alone when it kept none.
        let mut ports = self
            .detectors
            .iter()
            .find_map(|d| d.failed_ports(src, probe.dst, probe.proto))
            .unwrap_or_default();
        if !ports.contains(&probe.dst_port) {
            ports.push(probe.dst_port);
            ports.sort_unstable();
        }
        let failed = (ports.len() as u64).max(u64::from(probe_common::WALK_SCAN as u8));
        // Four first failures more than first successes: 4^4 over the likelihood ratio.
        Some(Verdict::of_source(
            DetectorName::Trw,
            vec![probe.dst],
            ports,
            256.0,
            now,
            (failed, 0),
        ))
    }

    /// The alerts that time alone makes due at `now`: `end` for the incidents idle for
    /// their idle limit, `update` for those whose growth was held back by the interval.
    pub fn tick(&mut self, now: Duration) -> Vec<ScanAlert> {
        let idle = self.config.idle_timeout;
        let cap = self.config.slow.map_or(idle, |s| s.horizon);
        let mut ended = self
            .incidents
            .take_where(|i| now.saturating_sub(i.last_seen) > i.idle_limit(idle, cap));
        ended.sort_by_key(|i| i.first_seen);
        let mut alerts: Vec<ScanAlert> = ended.iter().map(|i| i.alert(Phase::End)).collect();
        let interval = self.config.update_interval;
        for incident in self.incidents.values_mut() {
            alerts.extend(incident.due_update(now, interval));
        }
        alerts
    }

    /// Ends every open incident (the detector stops): their `end` alerts.
    pub fn finish(&mut self) -> Vec<ScanAlert> {
        let mut ended = self.incidents.take_where(|_| true);
        ended.sort_by_key(|i| i.first_seen);
        ended.iter().map(|i| i.alert(Phase::End)).collect()
    }

    /// Opens the incident of a verdict, unless it is open already; returns its `start`,
    /// after the `end` of any incident forgotten to make room for it.
    fn open(&mut self, verdict: Verdict, probe: &Probe, now: Duration) -> Vec<ScanAlert> {
        let (src, prefix) = self.group(probe.src);
        let key = match verdict.kind {
            ScanKind::Distributed => crowd_key(probe.dst, probe.proto),
            ScanKind::Vertical => IncidentKey {
                src,
                kind: ScanKind::Vertical,
                target: verdict.target,
                proto: probe.proto,
            },
            ScanKind::Horizontal => IncidentKey {
                src,
                kind: ScanKind::Horizontal,
                target: None,
                proto: 0,
            },
        };
        let prefix = prefix.filter(|_| verdict.kind != ScanKind::Distributed);
        if self.incidents.contains(&key) {
            return Vec::new();
        }
        let idle = self.config.idle_timeout;
        let mut evicted = Vec::new();
        let incident = self.incidents.entry_evicting(
            key,
            now,
            idle,
            || Incident {
                key,
                detector: verdict.detector,
                score: verdict.score,
                technique: Technique::of(probe),
                proto: probe.proto,
                ifindex: probe.ifindex,
                first_seen: verdict.first_seen.min(now),
                last_seen: now,
                ports: PortList::default(),
                hosts: Vec::new(),
                sources: Vec::new(),
                src_net: prefix.map(|len| (src, len)),
                // The evidence the detector gathered before the incident existed, this probe
                // included.
                probes: verdict.failed + verdict.succeeded,
                failed: verdict.failed,
                succeeded: verdict.succeeded,
                tcp_flags: probe.tcp_flags,
                ttl: TtlRange::default(),
                last_alert: now,
                changed: false,
                spread: verdict.spread,
            },
            &mut evicted,
        );
        for port in verdict.ports {
            incident.ports.insert(port);
        }
        for host in verdict.hosts {
            push_new(&mut incident.hosts, host, MAX_HOSTS);
        }
        incident.add_source(probe.src);
        for source in verdict.sources {
            incident.add_source(source);
        }
        // What was seen of its sources before the incident existed.
        let seen: Vec<IpAddr> = if key.kind == ScanKind::Distributed {
            incident.sources.clone()
        } else {
            vec![src]
        };
        for source in seen {
            if let Some(sighting) = self.sightings.get_mut(&source) {
                incident.ttl.merge(sighting.ttl);
                for addr in sighting.addrs.sorted() {
                    incident.add_source(addr);
                }
            }
        }
        let start = incident.alert(Phase::Start);
        let mut alerts: Vec<ScanAlert> = evicted.iter().map(|i| i.alert(Phase::End)).collect();
        alerts.push(start);
        alerts
    }

    /// Opens a distributed scan's incident, or grows it with new sources; returns its
    /// `start` (or a due `update`), after the `end` of each member's own incident on the
    /// target, which it absorbs.
    fn open_crowd(&mut self, verdict: Verdict, probe: &Probe, now: Duration) -> Vec<ScanAlert> {
        let key = crowd_key(probe.dst, probe.proto);
        let interval = self.config.update_interval;
        if let Some(incident) = self.incidents.get_mut(&key) {
            let joined = !incident.sources.contains(&probe.src);
            for &source in &verdict.sources {
                incident.changed |= incident.add_source(source);
            }
            // A spread scan's later verdicts list nobody: the probe's source is the member.
            if joined {
                // Not counted above: it was not a member yet.
                incident.count(probe, now);
            }
            return incident.due_update(now, interval).into_iter().collect();
        }
        let mut alerts = Vec::new();
        // A spread scan's members have no scan of their own on the target: a source that
        // has one failed on too many ports to be a member.
        let members = if verdict.spread {
            &[][..]
        } else {
            &verdict.sources[..]
        };
        for &source in members {
            let own = IncidentKey {
                src: self.group(source).0,
                kind: ScanKind::Vertical,
                target: Some(probe.dst),
                proto: probe.proto,
            };
            if let Some(incident) = self.incidents.remove(&own) {
                alerts.push(incident.alert(Phase::End));
            }
        }
        alerts.extend(self.open(verdict, probe, now));
        alerts
    }

    /// Runs every detector on one outcome; returns what they recognise, a distributed scan
    /// first (so its members' own verdicts on the target fold into it).
    fn detect(&mut self, probe: &Probe, now: Duration) -> Vec<Verdict> {
        let (src, _) = self.group(probe.src);
        let grouped = Probe {
            src,
            ..probe.clone()
        };
        self.detectors
            .iter_mut()
            .filter_map(|d| {
                let seen = if d.per_group() { &grouped } else { probe };
                d.observe(seen, now)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
