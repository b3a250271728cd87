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
        self.sight(src, probe.src != src, &last, now);
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
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::{
        detect::is_martian,
        event::{Outcome, ProbeType},
    };

    const SCANNER: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1));
    const VICTIM: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2));
    const OTHER_VICTIM: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 3));

    fn probe(src: IpAddr, dst: IpAddr, port: u16) -> Probe {
        Probe::syn(src, dst, port, Outcome::Refused)
    }

    fn host(i: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(0xc612_0100 + i))
    }

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    /// Threshold detectors alone (TRW off), as the threshold tests need.
    fn config(min_ports: usize, window_s: u64, max_tracked: usize) -> EngineConfig {
        EngineConfig {
            min_ports,
            min_hosts: 1000,
            window: Duration::from_secs(window_s),
            max_tracked,
            trw: None,
            slow: None,
            crowd: None,
            ..EngineConfig::default()
        }
    }

    fn vertical(alerts: Vec<ScanAlert>) -> Option<ScanAlert> {
        alerts.into_iter().find(|a| a.kind == ScanKind::Vertical)
    }

    #[test]
    fn alerts_once_when_the_threshold_is_reached() {
        let mut engine = Engine::new(config(5, 60, 16));
        for (i, port) in [80, 22, 443, 21].into_iter().enumerate() {
            assert_eq!(
                engine.observe(&probe(SCANNER, VICTIM, port), secs(i as f64)),
                vec![]
            );
        }
        let alert = vertical(engine.observe(&probe(SCANNER, VICTIM, 25), secs(4.5)))
            .expect("fifth distinct port completes the scan");
        assert_eq!(
            (alert.src, alert.targets.as_slice()),
            (SCANNER, &[VICTIM][..])
        );
        assert_eq!(alert.ports, vec![21, 22, 25, 80, 443]);
        assert_eq!(alert.probes, 5);
        assert_eq!((alert.first_seen, alert.last_seen), (secs(0.0), secs(4.5)));
        assert_eq!((alert.ifindex, alert.technique), (7, Technique::Syn));
        // The scan goes on: no second alert for the same episode.
        for port in 1000..1100 {
            assert_eq!(
                engine.observe(&probe(SCANNER, VICTIM, port), secs(5.0)),
                vec![]
            );
        }
    }

    #[test]
    fn successes_and_pings_are_not_port_probes() {
        let mut engine = Engine::new(config(2, 60, 16));
        let mut accepted = probe(SCANNER, VICTIM, 80);
        accepted.outcome = Outcome::Accepted;
        let mut ping = probe(SCANNER, VICTIM, 0);
        ping.probe = ProbeType::IcmpEcho;
        ping.outcome = Outcome::Unanswered;
        for p in [&accepted, &accepted, &ping] {
            assert_eq!(vertical(engine.observe(p, secs(1.0))), None);
        }
        // Every failing outcome counts.
        let mut unanswered = probe(SCANNER, VICTIM, 81);
        unanswered.outcome = Outcome::Unanswered;
        let mut prohibited = probe(SCANNER, VICTIM, 82);
        prohibited.outcome = Outcome::Prohibited;
        assert_eq!(vertical(engine.observe(&unanswered, secs(1.0))), None);
        let alert = vertical(engine.observe(&prohibited, secs(1.0))).unwrap();
        assert_eq!(alert.ports, vec![81, 82]);
    }

    #[test]
    fn repeated_ports_do_not_count_twice() {
        let mut engine = Engine::new(config(3, 60, 16));
        for i in 0..50 {
            let port = if i % 2 == 0 { 80 } else { 81 };
            assert_eq!(
                engine.observe(&probe(SCANNER, VICTIM, port), secs(i as f64 * 0.1)),
                vec![]
            );
        }
        let alert = vertical(engine.observe(&probe(SCANNER, VICTIM, 82), secs(5.0))).unwrap();
        assert_eq!(alert.ports, vec![80, 81, 82]);
        assert_eq!(alert.probes, 51);
    }

    #[test]
    fn ports_older_than_the_window_do_not_count() {
        let mut engine = Engine::new(config(3, 10, 16));
        // One port every 6 s: never three within 10 s of each other.
        for i in 0..20u16 {
            let t = secs(f64::from(i) * 6.0);
            assert_eq!(
                engine.observe(&probe(SCANNER, VICTIM, 1000 + i), t),
                vec![],
                "port {i}"
            );
        }
        // Three within 10 s do.
        assert!(vertical(engine.observe(&probe(SCANNER, VICTIM, 1), secs(200.0))).is_none());
        assert!(vertical(engine.observe(&probe(SCANNER, VICTIM, 2), secs(201.0))).is_none());
        assert!(vertical(engine.observe(&probe(SCANNER, VICTIM, 3), secs(202.0))).is_some());
    }

    #[test]
    fn a_quiet_pair_alerts_again_in_a_new_episode() {
        let mut engine = Engine::new(EngineConfig {
            idle_timeout: Duration::from_secs(10),
            ..config(2, 10, 16)
        });
        assert!(vertical(engine.observe(&probe(SCANNER, VICTIM, 1), secs(0.0))).is_none());
        assert!(vertical(engine.observe(&probe(SCANNER, VICTIM, 2), secs(1.0))).is_some());
        assert!(vertical(engine.observe(&probe(SCANNER, VICTIM, 3), secs(2.0))).is_none());
        // Quiet for longer than the idle timeout: the incident ends...
        let end = engine.tick(secs(15.0));
        assert_eq!((end.len(), end[0].phase), (1, Phase::End));
        // ...and the next scan is a new one.
        assert!(vertical(engine.observe(&probe(SCANNER, VICTIM, 4), secs(20.0))).is_none());
        let again = vertical(engine.observe(&probe(SCANNER, VICTIM, 5), secs(21.0))).unwrap();
        assert_eq!(
            (again.phase, again.ports, again.probes),
            (Phase::Start, vec![4, 5], 2)
        );
        assert_eq!(again.first_seen, secs(20.0));
    }

    #[test]
    fn targets_and_sources_are_counted_apart() {
        let mut engine = Engine::new(config(3, 60, 16));
        let other_src = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 9));
        for (src, dst, port) in [
            (SCANNER, VICTIM, 1),
            (SCANNER, VICTIM, 2),
            (SCANNER, OTHER_VICTIM, 3),
            (SCANNER, OTHER_VICTIM, 4),
            (other_src, VICTIM, 5),
            (other_src, VICTIM, 6),
        ] {
            assert_eq!(engine.observe(&probe(src, dst, port), secs(1.0)), vec![]);
        }
        let alert = vertical(engine.observe(&probe(SCANNER, OTHER_VICTIM, 5), secs(2.0))).unwrap();
        assert_eq!((alert.src, alert.targets), (SCANNER, vec![OTHER_VICTIM]));
        assert_eq!(alert.ports, vec![3, 4, 5]);
    }

    #[test]
    fn techniques_are_named_from_the_probe() {
        let with = |probe_type, flags| {
            let mut p = probe(SCANNER, VICTIM, 1);
            p.probe = probe_type;
            p.tcp_flags = flags;
            Technique::of(&p)
        };
        assert_eq!(with(ProbeType::TcpSyn, 0x02), Technique::Syn);
        assert_eq!(with(ProbeType::TcpStealth, 0x01), Technique::Fin);
        assert_eq!(with(ProbeType::TcpStealth, 0x00), Technique::Null);
        assert_eq!(with(ProbeType::TcpStealth, 0x29), Technique::Xmas);
        assert_eq!(with(ProbeType::TcpStealth, 0x20), Technique::OddFlags);
        assert_eq!(with(ProbeType::TcpAck, 0x10), Technique::Ack);
        assert_eq!(with(ProbeType::Udp, 0), Technique::Udp);
        assert_eq!(with(ProbeType::IcmpEcho, 0), Technique::Ping);
        assert_eq!(with(ProbeType::TcpFragment, 0), Technique::Fragmented);
        assert_eq!(with(ProbeType::TcpUnseen, 0), Technique::Unseen);
        assert_eq!(with(ProbeType::IpProtocol, 0), Technique::Protocol);
        assert_eq!(with(ProbeType::Sctp, 0), Technique::Sctp);
        assert!(Technique::Xmas.is_stealth() && Technique::Ack.is_stealth());
        assert!(!Technique::Syn.is_stealth() && !Technique::Udp.is_stealth());
    }

    #[test]
    fn a_ping_sweep_alerts_with_its_hosts() {
        let mut engine = Engine::new(EngineConfig {
            min_hosts: 4,
            trw: None,
            ..EngineConfig::default()
        });
        let mut alert = None;
        for i in 0..6 {
            let mut ping = probe(SCANNER, host(i), 0);
            ping.probe = ProbeType::IcmpEcho;
            // Live hosts answer, others do not: both are the sweep.
            ping.outcome = if i % 2 == 0 {
                Outcome::Accepted
            } else {
                Outcome::Unanswered
            };
            for a in engine.observe(&ping, secs(f64::from(i))) {
                assert!(alert.is_none(), "one alert per sweep");
                alert = Some(a);
            }
        }
        let alert = alert.expect("four hosts make a sweep");
        assert_eq!(
            (alert.kind, alert.technique, alert.src),
            (ScanKind::Horizontal, Technique::Ping, SCANNER)
        );
        assert_eq!(alert.targets, (0..4).map(host).collect::<Vec<_>>());
        assert!(alert.ports.is_empty());
    }

    #[test]
    fn a_port_sweep_reports_its_port_and_ignores_answered_connects() {
        let mut engine = Engine::new(EngineConfig {
            min_hosts: 3,
            trw: None,
            ..EngineConfig::default()
        });
        // Successful connections to many hosts are not a sweep (think of a busy client).
        for i in 0..50 {
            let mut ok = probe(SCANNER, host(i), 80);
            ok.outcome = Outcome::Accepted;
            assert_eq!(engine.observe(&ok, secs(1.0)), vec![]);
        }
        // Failed SYNs to port 80 of three hosts are.
        let mut alerts = Vec::new();
        for i in 100..103 {
            let mut p = probe(SCANNER, host(i), 80);
            p.outcome = Outcome::Unreachable;
            alerts.extend(engine.observe(&p, secs(2.0)));
        }
        assert_eq!(alerts.len(), 1);
        assert_eq!(
            (alerts[0].kind, alerts[0].ports.as_slice()),
            (ScanKind::Horizontal, &[80][..])
        );
    }

    #[test]
    fn state_stays_bounded_under_a_flood_of_sources() {
        let mut engine = Engine::new(config(3, 60, 1000));
        for i in 0..50_000u32 {
            let spoofed = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i));
            let alerts = engine.observe(&probe(spoofed, VICTIM, 80), secs(f64::from(i) * 1e-4));
            assert!(vertical(alerts).is_none());
            // Three tables of 1000: sightings, pairs, sources.
            assert!(engine.tracked() <= 3000);
        }
        assert!(engine.evictions() >= 2 * 49_000);
        // A real scanner in the middle of the flood is still caught.
        let mut caught = None;
        for port in 1..=3 {
            caught = vertical(engine.observe(&probe(SCANNER, VICTIM, port), secs(6.0)));
            for j in 0..200u32 {
                let spoofed = IpAddr::V4(Ipv4Addr::from(0x0b00_0000 + j));
                engine.observe(&probe(spoofed, VICTIM, 80), secs(6.0));
            }
        }
        assert!(caught.is_some(), "scanner lost in the flood");
    }

    #[test]
    fn trw_opens_the_incident_after_four_failures_and_thresholds_add_nothing() {
        let mut engine = Engine::new(EngineConfig::default());
        for port in 1..=3 {
            assert_eq!(
                engine.observe(&probe(SCANNER, VICTIM, port), secs(0.1)),
                vec![]
            );
        }
        let start = engine.observe(&probe(SCANNER, VICTIM, 4), secs(0.2));
        assert_eq!(start.len(), 1, "{start:?}");
        let start = &start[0];
        assert_eq!(
            (start.phase, start.detector, start.kind),
            (Phase::Start, DetectorName::Trw, ScanKind::Vertical)
        );
        assert_eq!((start.probes, start.failed, start.succeeded), (4, 4, 0));
        assert_eq!(start.ports, vec![1, 2, 3, 4]);
        assert!(start.score >= 99.0);
        // The threshold detector reaches 10 ports later: the incident is open, no new alert.
        for port in 5..=20 {
            assert_eq!(
                engine.observe(&probe(SCANNER, VICTIM, port), secs(0.3)),
                vec![],
                "port {port}"
            );
        }
        assert_eq!(engine.incidents(), 1);
        let end = engine.finish();
        assert_eq!(end.len(), 1);
        assert_eq!(
            (end[0].phase, end[0].probes, end[0].ports.len()),
            (Phase::End, 20, 20)
        );
    }

    /// A kernel summary of refused SYNs from `src` to `ports` of `dst`.
    fn summary(src: IpAddr, dst: IpAddr, ports: &[u16]) -> Summarized {
        let probe = probe(src, dst, ports[0]);
        Summarized {
            ttl_max: probe.ttl,
            probe,
            ports: ports.to_vec(),
        }
    }

    #[test]
    fn a_kernel_summary_counts_in_the_open_scan_and_opens_one_where_none_is() {
        let mut engine = Engine::new(EngineConfig::default());
        for port in 1..=4 {
            engine.observe(&probe(SCANNER, VICTIM, port), secs(0.1));
        }
        assert_eq!(engine.incidents(), 1);
        // 60 more ports of the scanned host in one summary: counted, no new alert.
        let ports: Vec<u16> = (5..=64).collect();
        assert_eq!(
            engine.observe_ports(&summary(SCANNER, VICTIM, &ports), secs(0.5)),
            vec![]
        );
        // A second host's ports, no scan of it open yet: the detectors see them and open
        // one (the threshold's, at its tenth port: the sequential test decided on this
        // source already), which counts the rest.
        let other = host(9);
        let ports: Vec<u16> = (1..=20).collect();
        let opened = engine.observe_ports(&summary(SCANNER, other, &ports), secs(0.6));
        assert_eq!(opened.len(), 1, "{opened:?}");
        assert_eq!(
            (opened[0].phase, opened[0].targets.clone(), opened[0].probes),
            (Phase::Start, vec![other], 10)
        );
        let mut ends = engine.finish();
        ends.sort_by_key(|a| a.targets.clone());
        let counted: Vec<(u64, usize)> = ends.iter().map(|a| (a.probes, a.ports.len())).collect();
        assert_eq!(counted, [(64, 64), (20, 20)]);
    }

    #[test]
    fn a_kernel_summary_counts_as_its_ports_would_one_by_one() {
        // The same outcomes, one engine port by port, the other in summaries: the same
        // incidents, counts and lists; a port listed already is a repeat either way.
        let (mut single, mut batched) = (
            Engine::new(EngineConfig::default()),
            Engine::new(EngineConfig::default()),
        );
        let summaries: [(f64, Vec<u16>); 4] = [
            (0.1, (1..=30).collect()),
            (0.2, (20..=90).collect()),
            (0.3, vec![5, 500, 501, 7]),
            (0.4, (1000..1300).collect()),
        ];
        for (t, ports) in &summaries {
            for &port in ports {
                if !single.lists(&probe(SCANNER, VICTIM, port)) {
                    single.observe_ports(&summary(SCANNER, VICTIM, &[port]), secs(*t));
                }
            }
            batched.observe_ports(&summary(SCANNER, VICTIM, ports), secs(*t));
        }
        let counts = |alerts: Vec<ScanAlert>| -> Vec<(Phase, u64, u64, Vec<u16>)> {
            alerts
                .into_iter()
                .map(|a| (a.phase, a.probes, a.failed, a.ports))
                .collect()
        };
        let (single, batched) = (counts(single.finish()), counts(batched.finish()));
        assert_eq!(single, batched);
        assert_eq!((single[0].1, single[0].3.len()), (392, 392));
    }

    #[test]
    fn a_kernel_summary_widens_the_scans_ttl_range_to_its_own() {
        // nmap draws a TTL per SYN: the kernel keeps their range, not each, and the scan
        // reports the range.
        let mut engine = Engine::new(EngineConfig::default());
        for port in 1..=4 {
            engine.observe(&probe(SCANNER, VICTIM, port), secs(0.1));
        }
        let mut random = summary(SCANNER, VICTIM, &[5, 6, 7]);
        (random.probe.ttl, random.ttl_max) = (37, 71);
        engine.observe_ports(&random, secs(0.2));
        let end = engine.finish();
        assert_eq!(
            (end[0].probes, end[0].spoof.ttl_min, end[0].spoof.ttl_max),
            (7, 37, 71)
        );
    }

    #[test]
    fn incidents_update_at_most_every_interval_and_end_when_idle() {
        let mut engine = Engine::new(EngineConfig {
            update_interval: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            ..config(3, 60, 16)
        });
        let mut start = Vec::new();
        for (t, port) in [(0.0, 1), (1.0, 2), (2.0, 3)] {
            start.extend(engine.observe(&probe(SCANNER, VICTIM, port), secs(t)));
        }
        assert_eq!(start.len(), 1);
        assert_eq!(
            (start[0].phase, start[0].detector, start[0].probes),
            (Phase::Start, DetectorName::Threshold, 3)
        );
        assert_eq!(start[0].first_seen, secs(0.0));
        // Growth within the interval: no update yet.
        for port in 4..=6 {
            assert_eq!(
                engine.observe(&probe(SCANNER, VICTIM, port), secs(5.0)),
                vec![]
            );
        }
        // The interval passes: the held-back growth goes out, on the next outcome or the
        // next tick, whichever comes first.
        let update = engine.tick(secs(12.5));
        assert_eq!(update.len(), 1);
        assert_eq!(
            (update[0].phase, update[0].ports.len(), update[0].probes),
            (Phase::Update, 6, 6)
        );
        assert_eq!(engine.tick(secs(13.0)), vec![], "nothing new");
        // Growth right after an update waits for the next interval.
        assert_eq!(
            engine.observe(&probe(SCANNER, VICTIM, 7), secs(13.0)),
            vec![]
        );
        assert_eq!(
            engine.observe(&probe(SCANNER, VICTIM, 8), secs(14.0)),
            vec![],
            "throttled"
        );
        // Idle: nothing before the timeout (the pending growth goes out as an update at
        // 23 s), the summary after.
        let pending = engine.tick(secs(40.0));
        assert_eq!(
            pending.iter().map(|a| a.phase).collect::<Vec<_>>(),
            vec![Phase::Update]
        );
        let end = engine.tick(secs(45.0));
        assert_eq!(end.len(), 1);
        assert_eq!(
            (end[0].phase, end[0].ports.clone(), end[0].probes),
            (Phase::End, (1..=8).collect::<Vec<_>>(), 8)
        );
        assert_eq!(
            (end[0].first_seen, end[0].last_seen),
            (secs(0.0), secs(14.0))
        );
        assert_eq!(engine.incidents(), 0);
    }

    #[test]
    fn a_later_scan_of_another_target_is_another_incident() {
        let mut engine = Engine::new(EngineConfig::default());
        let mut starts = Vec::new();
        for port in 1..=6 {
            starts.extend(engine.observe(&probe(SCANNER, VICTIM, port), secs(1.0)));
        }
        for port in 1..=6 {
            starts.extend(engine.observe(&probe(SCANNER, OTHER_VICTIM, port), secs(2.0)));
        }
        let starts: Vec<_> = starts.iter().filter(|a| a.phase == Phase::Start).collect();
        // TRW flags the source once (on the first host); the threshold of the second host
        // is not reached; the first host's incident stays open without a second start.
        assert_eq!(starts.len(), 1, "{starts:?}");
        // A new source, the same targets: alerts on its own.
        let other = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 9));
        let mut more = Vec::new();
        for port in 1..=4 {
            more.extend(engine.observe(&probe(other, VICTIM, port), secs(3.0)));
        }
        assert_eq!(more.len(), 1);
        assert_eq!(more[0].src, other);
    }

    #[test]
    fn the_memory_bound_scales_with_the_tracked_entries() {
        let bound = Engine::memory_bound(&EngineConfig::default());
        // Printed for the record (cargo test -- --nocapture).
        eprintln!("engine memory bound with the defaults: {} MiB", bound >> 20);
        assert!(bound > 10 << 20 && bound < 512 << 20, "{bound}");
        // The crowd and incident tables have caps of their own (about 80 MiB together).
        let small = Engine::memory_bound(&EngineConfig {
            max_tracked: 1024,
            ..EngineConfig::default()
        });
        eprintln!("with --max-tracked 1024: {} MiB", small >> 20);
        assert!(small < bound / 3, "{small}");
    }

    #[test]
    fn an_incident_forgotten_for_room_still_ends_with_its_summary() {
        // Room for 8 incidents: 20 scanners, each opening one.
        let mut engine = Engine::new(config(3, 60, 8));
        let mut starts = 0;
        let mut ends = Vec::new();
        for src in 1..=20u32 {
            for port in 1..=3u16 {
                for alert in engine.observe(&probe(host(100 + src), VICTIM, port), secs(1.0)) {
                    match alert.phase {
                        Phase::Start => starts += 1,
                        Phase::End => ends.push(alert),
                        Phase::Update => {}
                    }
                }
            }
        }
        assert_eq!(starts, 20);
        assert!(engine.incidents() <= 8);
        let finished = engine.finish();
        assert_eq!(
            ends.len() + finished.len(),
            20,
            "every incident gets one end"
        );
        assert!(ends.iter().all(|e| e.ports == vec![1, 2, 3]), "{ends:?}");
        assert!(engine.evictions() >= 12);
    }

    #[test]
    fn top_sources_are_bounded_and_busiest_first() {
        let mut engine = Engine::new(config(3, 60, 1024));
        for src in 1..=20u32 {
            // Source i probes 3 + i ports: every one opens an incident.
            for port in 0..(3 + src) {
                engine.observe(&probe(host(100 + src), VICTIM, port as u16 + 1), secs(1.0));
            }
        }
        let top = engine.top_sources(5);
        assert_eq!(top.len(), 5);
        assert_eq!(top[0].0, host(120).to_string());
        assert!(top.windows(2).all(|w| w[0].1 >= w[1].1), "{top:?}");
        assert!(engine.top_sources(100).len() <= 20);
    }

    #[test]
    fn ports_kept_per_pair_are_capped() {
        let mut engine = Engine::new(config(5, 600, 4));
        let mut alert = None;
        for port in 1..=60_000u16 {
            if let Some(a) = vertical(engine.observe(&probe(SCANNER, VICTIM, port), secs(1.0))) {
                alert = Some(a);
            }
        }
        assert_eq!(alert.unwrap().ports, vec![1, 2, 3, 4, 5]);
        // Its incident lists the first 1024 ports (the episode stops at its threshold:
        // vertical.rs tests that).
        let end = engine.finish();
        assert_eq!(end[0].ports.len(), MAX_REPORTED);
        assert_eq!(end[0].probes, 60_000);
    }

    #[test]
    fn a_slow_scan_over_hours_is_caught_by_the_slow_detector_alone() {
        let mut engine = Engine::new(EngineConfig {
            slow: Some(SlowConfig {
                horizon: Duration::from_secs(2 * 3600),
                ..SlowConfig::default()
            }),
            ..EngineConfig::default()
        });
        // Eleven minutes between probes: longer than TRW's idle time (each probe starts a
        // new test) and than the threshold window.
        let gap = 11.0 * 60.0;
        let mut alerts = Vec::new();
        for i in 0..12u16 {
            let at = secs(gap * f64::from(i));
            alerts.extend(engine.observe(&probe(SCANNER, VICTIM, 100 + i), at));
            // The lifecycle timer runs in between: the incident must not end between two
            // probes of its slow scan.
            alerts.extend(engine.tick(at + secs(gap / 2.0)));
        }
        let start = alerts.iter().position(|a| a.phase == Phase::Start).unwrap();
        assert_eq!(alerts[start].detector, DetectorName::Slow);
        assert_eq!(alerts[start].kind, ScanKind::Vertical);
        // Flagged at the eighth failed port, 77 minutes in.
        assert_eq!(alerts[start].last_seen, secs(gap * 7.0));
        assert_eq!(alerts[start].failed, 8);
        assert!(!alerts.iter().any(|a| a.phase == Phase::End), "{alerts:?}");
        assert_eq!(alerts.iter().filter(|a| a.phase == Phase::Start).count(), 1);
        // Three average gaps after the last probe, it ends.
        let end = engine.tick(secs(gap * 11.0 + 3.5 * gap));
        assert_eq!(end.len(), 1);
        assert_eq!(end[0].phase, Phase::End);
        // The slow detector's sample (its latest four failed ports), then every later one.
        assert_eq!(end[0].ports, (104..112).collect::<Vec<_>>());
        assert_eq!(end[0].probes, 12);
    }

    #[test]
    fn decoys_are_one_distributed_incident_listing_the_sources() {
        let mut engine = Engine::new(EngineConfig::default());
        let sources = [host(201), host(202), SCANNER];
        let mut alerts = Vec::new();
        let mut t = 0.0;
        // nmap -D: each port from each decoy, then from the scanner.
        for port in 1..=30u16 {
            for src in sources {
                t += 0.001;
                alerts.extend(engine.observe(&probe(src, VICTIM, port), secs(t)));
            }
        }
        alerts.extend(engine.finish());
        let starts: Vec<_> = alerts.iter().filter(|a| a.phase == Phase::Start).collect();
        assert_eq!(starts.len(), 1, "{starts:#?}");
        let start = starts[0];
        assert_eq!(
            (start.kind, start.detector),
            (ScanKind::Distributed, DetectorName::Crowd)
        );
        let mut expected = sources.to_vec();
        expected.sort();
        assert_eq!(start.sources, expected);
        assert_eq!(start.targets, vec![VICTIM]);
        assert_eq!(start.ports, vec![1, 2, 3]);
        assert!(start.spoof.suspected());
        assert_eq!(start.spoof.reasons, vec!["decoys"]);
        // One incident, one end: every source's probes counted there.
        let ends: Vec<_> = alerts.iter().filter(|a| a.phase == Phase::End).collect();
        assert_eq!(ends.len(), 1);
        assert_eq!(ends[0].kind, ScanKind::Distributed);
        assert_eq!(ends[0].ports, (1..=30).collect::<Vec<_>>());
        assert_eq!(ends[0].probes, 90);
    }

    #[test]
    fn a_scanner_alone_first_then_joined_by_decoys_ends_its_own_incident() {
        let mut engine = Engine::new(EngineConfig::default());
        let mut alerts = Vec::new();
        for port in 1..=5u16 {
            alerts.extend(engine.observe(&probe(SCANNER, VICTIM, port), secs(0.1)));
        }
        assert_eq!(alerts.len(), 1);
        assert_eq!(alerts[0].kind, ScanKind::Vertical);
        for port in 1..=3u16 {
            for src in [host(201), host(202)] {
                alerts.extend(engine.observe(&probe(src, VICTIM, port), secs(0.2)));
            }
        }
        let kinds: Vec<_> = alerts.iter().map(|a| (a.phase, a.kind)).collect();
        assert_eq!(
            kinds,
            vec![
                (Phase::Start, ScanKind::Vertical),
                (Phase::End, ScanKind::Vertical),
                (Phase::Start, ScanKind::Distributed)
            ]
        );
        assert_eq!(alerts[2].sources.len(), 3);
        assert_eq!(engine.incidents(), 1);
    }

    #[test]
    fn grouped_sources_of_one_network_are_one_scanner() {
        let mut engine = Engine::new(EngineConfig {
            group_v4: 24,
            ..EngineConfig::default()
        });
        let mut alerts = Vec::new();
        // Four addresses of 198.18.1.0/24, one port each: no source alone looks like much.
        for i in 0..4u32 {
            alerts.extend(engine.observe(&probe(host(10 + i), VICTIM, 20 + i as u16), secs(1.0)));
        }
        assert_eq!(alerts.len(), 1, "{alerts:?}");
        assert_eq!(alerts[0].detector, DetectorName::Trw);
        assert_eq!(
            alerts[0].src_net,
            Some((IpAddr::V4(Ipv4Addr::new(198, 18, 1, 0)), 24))
        );
        assert_eq!(alerts[0].sources, (10..14).map(host).collect::<Vec<_>>());
        // Without grouping, nothing.
        let mut engine = Engine::new(EngineConfig::default());
        for i in 0..4u32 {
            let alerts = engine.observe(&probe(host(10 + i), VICTIM, 20 + i as u16), secs(1.0));
            assert!(alerts.is_empty());
        }
    }

    #[test]
    fn ttls_and_martian_sources_are_reported() {
        let mut engine = Engine::new(EngineConfig::default());
        let martian = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 9));
        let mut alerts = Vec::new();
        for (port, ttl) in [(1, 50), (2, 61), (3, 44), (4, 58)] {
            let mut p = probe(martian, VICTIM, port);
            p.ttl = ttl;
            alerts.extend(engine.observe(&p, secs(1.0)));
        }
        let spoof = &alerts[0].spoof;
        assert_eq!((spoof.ttl_min, spoof.ttl_max), (44, 61));
        assert!(!spoof.ttl_consistent());
        assert_eq!(spoof.reasons, vec!["martian"]);
        // An ordinary source with one TTL: consistent, not suspected.
        for port in 1..=4 {
            alerts.extend(engine.observe(&probe(SCANNER, VICTIM, port), secs(1.0)));
        }
        let spoof = &alerts[1].spoof;
        assert!(spoof.ttl_consistent() && !spoof.suspected());
        assert!(is_martian("ff02::1".parse().unwrap()) && !is_martian(SCANNER));
    }

    fn v6(low: u128) -> IpAddr {
        IpAddr::V6(std::net::Ipv6Addr::from(0x2001_0db8_u128 << 96 | low))
    }

    #[test]
    fn many_sources_one_port_each_are_one_spread_scan_never_to_block() {
        let mut engine = Engine::new(EngineConfig::default());
        let mut alerts = Vec::new();
        // Twenty sources of one /24, twenty distinct closed ports, two seconds.
        for i in 0..20u32 {
            let at = secs(0.1 * f64::from(i));
            alerts.extend(engine.observe(&probe(host(i), VICTIM, 1000 + i as u16), at));
        }
        let starts: Vec<_> = alerts.iter().filter(|a| a.phase == Phase::Start).collect();
        assert_eq!(starts.len(), 1, "{alerts:#?}");
        let start = starts[0];
        assert_eq!(
            (start.kind, start.detector),
            (ScanKind::Distributed, DetectorName::Crowd)
        );
        // At the tenth port, the ten sources so far listed.
        assert_eq!(start.ports, (1000..1010).collect::<Vec<_>>());
        assert_eq!(start.sources, (0..10).map(host).collect::<Vec<_>>());
        assert!(start.spoof.spread() && start.spoof.suspected());
        assert_eq!(start.spoof.reasons, vec!["spread"]);
        let end = engine.finish();
        assert_eq!(end.len(), 1);
        assert_eq!(end[0].sources.len(), 20);
        assert_eq!(end[0].ports.len(), 20);
        assert_eq!(end[0].probes, 20);
    }

    #[test]
    fn many_sources_on_the_same_ports_are_no_scan() {
        let mut engine = Engine::new(EngineConfig::default());
        // A service restarts: 2 000 clients retry 443 and 80 over 20 s; a load balancer's
        // health checks keep failing on 8080; peers of a closed peer-to-peer port retry it.
        for i in 0..2000u32 {
            let at = secs(0.01 * f64::from(i));
            for port in [443, 80, 443] {
                assert_eq!(engine.observe(&probe(host(i), VICTIM, port), at), vec![]);
            }
            let checker = IpAddr::V4(Ipv4Addr::new(198, 18, 9, (i % 4) as u8));
            assert_eq!(engine.observe(&probe(checker, VICTIM, 8080), at), vec![]);
            let mut peer = probe(v6(u128::from(i) << 64 | 1), VICTIM, 51413);
            peer.proto = 17;
            peer.probe = ProbeType::Udp;
            assert_eq!(engine.observe(&peer, at), vec![]);
        }
        assert_eq!(engine.finish(), vec![]);
    }

    #[test]
    fn a_64_taking_a_new_address_per_probe_is_one_scanner() {
        let mut engine = Engine::new(EngineConfig::default());
        let mut alerts = Vec::new();
        let victim = v6(2);
        for i in 0..12u16 {
            let src = v6((7 << 64) | (u128::from(i) * 7919 + 1));
            alerts.extend(engine.observe(&probe(src, victim, 2000 + i), secs(0.01 * f64::from(i))));
        }
        let start = alerts.first().expect("a scan");
        assert_eq!(
            (start.kind, start.detector),
            (ScanKind::Vertical, DetectorName::Trw)
        );
        assert_eq!(start.src_net, Some((v6(7 << 64), 64)));
        assert_eq!(start.sources.len(), 4, "the addresses seen until then");
        assert!(!start.spoof.suspected());
    }

    #[test]
    fn a_spread_member_that_scans_on_opens_its_own_incident() {
        let mut engine = Engine::new(EngineConfig {
            trw: None,
            ..EngineConfig::default()
        });
        let mut alerts = Vec::new();
        // A flood of one probe per source; the scanner's first probe among them.
        alerts.extend(engine.observe(&probe(SCANNER, VICTIM, 1), secs(0.0)));
        for i in 0..50u32 {
            alerts.extend(engine.observe(&probe(host(i), VICTIM, 5000 + i as u16), secs(0.01)));
        }
        let crowd = alerts
            .iter()
            .find(|a| a.kind == ScanKind::Distributed)
            .unwrap();
        assert!(crowd.sources.contains(&SCANNER));
        // It goes on to ten ports: its own scan, not the flood's.
        for port in 2..=10 {
            alerts.extend(engine.observe(&probe(SCANNER, VICTIM, port), secs(0.1)));
        }
        let own = alerts
            .iter()
            .find(|a| a.kind == ScanKind::Vertical)
            .expect("its own incident");
        // The slow-scan detector's eight failed contacts come before the threshold's ten.
        assert_eq!((own.src, own.detector), (SCANNER, DetectorName::Slow));
        assert!(!own.spoof.suspected());
    }

    #[test]
    fn the_kernels_verdict_opens_the_scan_when_ours_has_no_state_and_never_twice() {
        let mut engine = Engine::new(EngineConfig::default());
        // Our test forgot the source (a flood evicted it): its one outcome here carries
        // the kernel's verdict.
        let mut decided = probe(SCANNER, VICTIM, 4);
        decided.kernel_verdict = true;
        let alerts = engine.observe(&decided, secs(1.0));
        assert_eq!(alerts.len(), 1, "{alerts:?}");
        assert_eq!(
            (alerts[0].phase, alerts[0].detector, alerts[0].kind),
            (Phase::Start, DetectorName::Trw, ScanKind::Vertical)
        );
        assert_eq!(alerts[0].ports, vec![4]);
        // Ours counted a success the kernel took back (a half-open scan's open port): the
        // kernel decides first, and its start lists every port ours saw fail.
        let half_open = host(8);
        let mut alerts = engine.observe(
            &Probe::syn(half_open, VICTIM, 80, Outcome::Accepted),
            secs(3.0),
        );
        for port in [21, 23, 53, 25] {
            let mut p = probe(half_open, VICTIM, port);
            p.kernel_verdict = port == 25;
            alerts.extend(engine.observe(&p, secs(3.0)));
        }
        assert_eq!(alerts.len(), 1, "{alerts:?}");
        assert_eq!(
            (alerts[0].ports.clone(), alerts[0].failed),
            (vec![21, 23, 25, 53], 4)
        );
        // Both tests deciding on one outcome: one start.
        let other = host(7);
        let mut alerts = Vec::new();
        for port in 1..=4 {
            let mut p = probe(other, VICTIM, port);
            p.kernel_verdict = port == 4;
            alerts.extend(engine.observe(&p, secs(2.0)));
        }
        assert_eq!(alerts.len(), 1, "{alerts:?}");
        // With --trw off, the kernel's verdict opens nothing.
        let mut engine = Engine::new(EngineConfig {
            trw: None,
            ..EngineConfig::default()
        });
        assert_eq!(engine.observe(&decided, secs(1.0)), vec![]);
    }

    #[test]
    fn behind_a_gateway_the_kernels_verdict_opens_a_vertical_scan_unless_trw_host() {
        let unit = |unit| EngineConfig {
            trw: Some(TrwConfig {
                unit,
                ..TrwConfig::default()
            }),
            // The gateway's own address; VICTIM is a LAN host behind it.
            own: vec![host(200)],
            ..EngineConfig::default()
        };
        // Four ports of one LAN host: one contact for our test (it counts hosts there),
        // the kernel's verdict at the fourth.
        let scan = |engine: &mut Engine| {
            let mut alerts = Vec::new();
            for port in 1..=4 {
                let mut p = probe(SCANNER, VICTIM, port);
                p.kernel_verdict = port == 4;
                alerts.extend(engine.observe(&p, secs(1.0)));
            }
            alerts
        };
        let alerts = scan(&mut Engine::new(unit(TrwUnit::Auto)));
        assert_eq!(alerts.len(), 1, "{alerts:?}");
        assert_eq!(
            (alerts[0].phase, alerts[0].kind, alerts[0].src),
            (Phase::Start, ScanKind::Vertical, SCANNER)
        );
        // --trw host asks for the paper's unit everywhere: four ports are no scan yet.
        assert_eq!(scan(&mut Engine::new(unit(TrwUnit::Host))), vec![]);
    }
}
