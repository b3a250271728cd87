//! The scan detectors and the alert lifecycle, as pure logic.
//!
//! Detectors: a vertical port scan is at least `min_ports` distinct ports of one target
//! failing for one source within `window`; a horizontal sweep is at least `min_hosts`
//! distinct targets probed by one source within `window` (failed attempts, and pings
//! whatever their answer); and the sequential hypothesis test ([`crate::trw`]) flags a
//! source after a few failed first contacts, usually long before either threshold.
//!
//! Lifecycle: the first detector to recognise a scan opens an incident, keyed by (source,
//! kind, target), and its alert has phase `start`; while the scan goes on, at most one
//! `update` per `update_interval` reports its growth; `end` sums it up once it has been
//! idle for `idle_timeout` ([`Engine::tick`]) or when the detector stops
//! ([`Engine::finish`]). A later scan of another target is another incident and alerts.
//!
//! No I/O and no clock: outcomes come with their timestamps (monotonic time since boot, as
//! the kernel stamps them). State is bounded ([`crate::table`]): at most `max_tracked`
//! entries per detector and incidents, least recently active forgotten first, and bounded
//! lists per entry, so memory stays flat under floods of spoofed sources.

use std::{net::IpAddr, time::Duration};

use crate::{
    event::{Outcome, Probe, ProbeType},
    table::{Activity, BoundedTable, RecentSet},
    trw::{Trw, TrwConfig, TrwVerdict},
};

/// Ports or hosts kept per entry once it has alerted, for the alert's lists.
pub const MAX_REPORTED: usize = 1024;
/// Ports kept per sweeping source, to report which ports a sweep used.
const SWEEP_PORTS: usize = 16;

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
    /// An incident idle for this long ends (its `end` alert sums it up).
    pub idle_timeout: Duration,
}

impl Default for EngineConfig {
    /// 10 ports or 16 hosts within 60 s; TRW with its paper's defaults; updates at most
    /// every 60 s; incidents end after 60 s idle; 65 536 entries per table.
    fn default() -> Self {
        Self {
            min_ports: 10,
            min_hosts: 16,
            window: Duration::from_secs(60),
            max_tracked: 65_536,
            trw: Some(TrwConfig::default()),
            update_interval: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(60),
        }
    }
}

/// What a scan looked like.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ScanKind {
    /// Many ports of one target.
    Vertical,
    /// Many targets.
    Horizontal,
}

/// How the probes were made, from the probe that completed the scan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Technique {
    /// TCP SYN (half-open or connect scans).
    Syn,
    /// TCP FIN alone.
    Fin,
    /// TCP with no flags.
    Null,
    /// TCP FIN, PSH and URG.
    Xmas,
    /// TCP without SYN, ACK or RST, in another combination.
    OddFlags,
    /// TCP with ACK that matched no connection (ACK or Maimon FIN/ACK scans).
    Ack,
    /// UDP.
    Udp,
    /// ICMP / ICMPv6 echo.
    Ping,
}

impl Technique {
    /// The technique of one probe.
    pub fn of(probe: &Probe) -> Self {
        const FIN: u8 = 0x01;
        const PSH: u8 = 0x08;
        const URG: u8 = 0x20;
        match probe.probe {
            ProbeType::TcpSyn => Technique::Syn,
            ProbeType::TcpStealth => match probe.tcp_flags & 0x3f {
                FIN => Technique::Fin,
                0 => Technique::Null,
                f if f == FIN | PSH | URG => Technique::Xmas,
                _ => Technique::OddFlags,
            },
            ProbeType::TcpAck => Technique::Ack,
            ProbeType::Udp => Technique::Udp,
            ProbeType::IcmpEcho => Technique::Ping,
        }
    }

    /// The name used in alerts (`SYN`, `FIN`, `NULL`, `Xmas`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Technique::Syn => "SYN",
            Technique::Fin => "FIN",
            Technique::Null => "NULL",
            Technique::Xmas => "Xmas",
            Technique::OddFlags => "odd-flags",
            Technique::Ack => "ACK",
            Technique::Udp => "UDP",
            Technique::Ping => "ping",
        }
    }

    /// True for segments no ordinary stack sends to start a connection: these scans hide
    /// from connection logs and firewalls that only watch SYNs.
    pub fn is_stealth(self) -> bool {
        matches!(
            self,
            Technique::Fin
                | Technique::Null
                | Technique::Xmas
                | Technique::OddFlags
                | Technique::Ack
        )
    }
}

/// Where an incident is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// The scan was just recognised.
    Start,
    /// The scan goes on (at most one per `update_interval`).
    Update,
    /// The scan is over (idle for `idle_timeout`, or the detector stops): the summary.
    End,
}

impl Phase {
    /// The name in alerts.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Start => "start",
            Phase::Update => "update",
            Phase::End => "end",
        }
    }
}

/// An alert about a scan.
#[derive(Clone, Debug, PartialEq)]
pub struct ScanAlert {
    /// Start, update or end.
    pub phase: Phase,
    /// The detector that recognised the scan first (`trw`, `threshold`).
    pub detector: &'static str,
    /// Vertical or horizontal.
    pub kind: ScanKind,
    /// The scanning source.
    pub src: IpAddr,
    /// The scanned targets, sorted (one for a vertical scan).
    pub targets: Vec<IpAddr>,
    /// IP protocol of the probe that completed the scan.
    pub proto: u8,
    /// How the probes were made.
    pub technique: Technique,
    /// Interface index of the probe that completed the scan.
    pub ifindex: u32,
    /// Distinct ports: of the target (vertical), or used across targets (horizontal).
    pub ports: Vec<u16>,
    /// Outcomes counted for this scan.
    pub probes: u64,
    /// Of those, failed (refused, unreachable, prohibited, unanswered) and succeeded.
    pub failed: u64,
    pub succeeded: u64,
    /// TCP flags seen in its probes, OR-ed.
    pub tcp_flags: u8,
    /// The detector's score when it fired: TRW's likelihood ratio, or the threshold
    /// detector's count over its threshold.
    pub score: f64,
    /// Time of the first counted outcome (monotonic, since boot).
    pub first_seen: Duration,
    /// Time of the latest outcome (monotonic, since boot).
    pub last_seen: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct PairKey {
    src: IpAddr,
    dst: IpAddr,
    proto: u8,
}

/// One detector's state for one key: an episode of activity.
#[derive(Debug)]
struct Episode<T> {
    first_seen: Duration,
    last_seen: Duration,
    /// Ports (vertical) or hosts (horizontal) within the window.
    items: RecentSet<T>,
    /// Ports a sweep used (horizontal only).
    ports: RecentSet<u16>,
    probes: u64,
    succeeded: u64,
    alerted: bool,
}

impl<T: PartialEq + Copy + Ord> Episode<T> {
    fn new(now: Duration) -> Self {
        Self {
            first_seen: now,
            last_seen: now,
            items: RecentSet::new(),
            ports: RecentSet::new(),
            probes: 0,
            succeeded: 0,
            alerted: false,
        }
    }

    /// Notes one outcome at `now` for `item`; returns true when the episode reaches
    /// `threshold` distinct items for the first time.
    fn note(&mut self, item: T, now: Duration, window: Duration, threshold: usize) -> bool {
        if now.saturating_sub(self.last_seen) > window {
            // A new episode: the old one went quiet.
            *self = Self::new(now);
        }
        self.last_seen = self.last_seen.max(now);
        self.probes += 1;
        let cap = if self.alerted {
            MAX_REPORTED
        } else {
            threshold
        };
        self.items.note(item, now, window, cap);
        if self.alerted || self.items.len() < threshold {
            return false;
        }
        self.alerted = true;
        true
    }
}

impl<T> Activity for Episode<T> {
    fn last_seen(&self) -> Duration {
        self.last_seen
    }
}

/// What a detector recognised, with the evidence it gathered.
struct Verdict {
    detector: &'static str,
    kind: ScanKind,
    target: Option<IpAddr>,
    ports: Vec<u16>,
    hosts: Vec<IpAddr>,
    score: f64,
    first_seen: Duration,
    failed: u64,
    succeeded: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct IncidentKey {
    src: IpAddr,
    kind: ScanKind,
    /// The target of a vertical scan; none for a sweep.
    target: Option<IpAddr>,
    /// The protocol of a vertical scan (TCP and UDP scans of one host are two incidents);
    /// 0 for a sweep.
    proto: u8,
}

/// An open incident: a recognised scan, as it goes on.
#[derive(Debug)]
struct Incident {
    key: IncidentKey,
    detector: &'static str,
    score: f64,
    technique: Technique,
    proto: u8,
    ifindex: u32,
    first_seen: Duration,
    last_seen: Duration,
    ports: RecentSet<u16>,
    hosts: RecentSet<IpAddr>,
    probes: u64,
    failed: u64,
    succeeded: u64,
    tcp_flags: u8,
    last_alert: Duration,
    changed: bool,
}

impl Activity for Incident {
    fn last_seen(&self) -> Duration {
        self.last_seen
    }
}

impl Incident {
    /// Counts one outcome of this scan; notes whether its picture changed.
    fn count(&mut self, probe: &Probe, now: Duration) {
        self.last_seen = self.last_seen.max(now);
        self.probes += 1;
        if probe.failed() {
            self.failed += 1;
        } else {
            self.succeeded += 1;
        }
        self.tcp_flags |= probe.tcp_flags;
        self.ifindex = probe.ifindex;
        let (ports, hosts) = (self.ports.len(), self.hosts.len());
        // Reported lists cover the whole scan, not a window: the ports that failed (open
        // ports answering are not probes of unused ports), every host probed.
        if probe.failed() && probe.probe != ProbeType::IcmpEcho {
            self.ports
                .note(probe.dst_port, now, Duration::MAX, MAX_REPORTED);
        }
        self.hosts.note(probe.dst, now, Duration::MAX, MAX_REPORTED);
        self.changed |= self.ports.len() != ports || self.hosts.len() != hosts;
    }

    fn alert(&self, phase: Phase) -> ScanAlert {
        ScanAlert {
            phase,
            detector: self.detector,
            kind: self.key.kind,
            src: self.key.src,
            targets: self.hosts.sorted(),
            proto: self.proto,
            technique: self.technique,
            ifindex: self.ifindex,
            ports: self.ports.sorted(),
            probes: self.probes,
            failed: self.failed,
            succeeded: self.succeeded,
            tcp_flags: self.tcp_flags,
            score: self.score,
            first_seen: self.first_seen,
            last_seen: self.last_seen,
        }
    }
}

/// The detectors' and incidents' state; see the module documentation.
#[derive(Debug)]
pub struct Engine {
    config: EngineConfig,
    vertical: BoundedTable<PairKey, Episode<u16>>,
    horizontal: BoundedTable<IpAddr, Episode<IpAddr>>,
    trw: Option<Trw>,
    incidents: BoundedTable<IncidentKey, Incident>,
}

impl Engine {
    /// Detectors with the given tuning.
    pub fn new(config: EngineConfig) -> Self {
        Self {
            vertical: BoundedTable::new(config.max_tracked),
            horizontal: BoundedTable::new(config.max_tracked),
            trw: config.trw.map(|c| Trw::new(c, config.max_tracked)),
            incidents: BoundedTable::new(config.max_tracked),
            config,
        }
    }

    /// Entries tracked, all tables together.
    pub fn tracked(&self) -> usize {
        self.vertical.len()
            + self.horizontal.len()
            + self.incidents.len()
            + self.trw.as_ref().map_or(0, Trw::tracked)
    }

    /// Entries forgotten to make room so far (threshold detectors).
    pub fn evictions(&self) -> u64 {
        self.vertical.evictions() + self.horizontal.evictions()
    }

    /// Open incidents.
    pub fn incidents(&self) -> usize {
        self.incidents.len()
    }

    /// Feeds one outcome seen at `now`; returns the alerts it causes: `start` for scans it
    /// completes, `update` for scans it grows when one is due.
    pub fn observe(&mut self, probe: &Probe, now: Duration) -> Vec<ScanAlert> {
        let mut alerts = Vec::new();
        // Open incidents of this source count it first, so a scan opened just now by this
        // very probe is not counted twice.
        let vertical_key = IncidentKey {
            src: probe.src,
            kind: ScanKind::Vertical,
            target: Some(probe.dst),
            proto: probe.proto,
        };
        let horizontal_key = IncidentKey {
            src: probe.src,
            kind: ScanKind::Horizontal,
            target: None,
            proto: 0,
        };
        for key in [vertical_key, horizontal_key] {
            if let Some(incident) = self.incidents.get_mut(&key) {
                incident.count(probe, now);
                if incident.changed
                    && now.saturating_sub(incident.last_alert) >= self.config.update_interval
                {
                    incident.changed = false;
                    incident.last_alert = now;
                    alerts.push(incident.alert(Phase::Update));
                }
            }
        }
        for verdict in self.detect(probe, now) {
            if let Some(alert) = self.open(verdict, probe, now) {
                alerts.push(alert);
            }
        }
        alerts
    }

    /// The alerts that time alone makes due at `now`: `end` for the incidents idle for
    /// `idle_timeout`, `update` for those whose growth was held back by the interval.
    pub fn tick(&mut self, now: Duration) -> Vec<ScanAlert> {
        let idle = self.config.idle_timeout;
        let mut ended = self
            .incidents
            .take_where(|i| now.saturating_sub(i.last_seen) > idle);
        ended.sort_by_key(|i| i.first_seen);
        let mut alerts: Vec<ScanAlert> = ended.iter().map(|i| i.alert(Phase::End)).collect();
        let interval = self.config.update_interval;
        for incident in self.incidents.values_mut() {
            if incident.changed && now.saturating_sub(incident.last_alert) >= interval {
                incident.changed = false;
                incident.last_alert = now;
                alerts.push(incident.alert(Phase::Update));
            }
        }
        alerts
    }

    /// Ends every open incident (the detector stops): their `end` alerts.
    pub fn finish(&mut self) -> Vec<ScanAlert> {
        let mut ended = self.incidents.take_where(|_| true);
        ended.sort_by_key(|i| i.first_seen);
        ended.iter().map(|i| i.alert(Phase::End)).collect()
    }

    /// Opens the incident of a verdict, unless it is open already; returns its `start`.
    fn open(&mut self, verdict: Verdict, probe: &Probe, now: Duration) -> Option<ScanAlert> {
        let key = IncidentKey {
            src: probe.src,
            kind: verdict.kind,
            target: verdict.target,
            proto: if verdict.kind == ScanKind::Vertical {
                probe.proto
            } else {
                0
            },
        };
        if self.incidents.contains(&key) {
            return None;
        }
        let idle = self.config.idle_timeout;
        let incident = self.incidents.entry(key, now, idle, || Incident {
            key,
            detector: verdict.detector,
            score: verdict.score,
            technique: Technique::of(probe),
            proto: probe.proto,
            ifindex: probe.ifindex,
            first_seen: verdict.first_seen.min(now),
            last_seen: now,
            ports: RecentSet::new(),
            hosts: RecentSet::new(),
            // The evidence the detector gathered before the incident existed, this probe
            // included.
            probes: verdict.failed + verdict.succeeded,
            failed: verdict.failed,
            succeeded: verdict.succeeded,
            tcp_flags: probe.tcp_flags,
            last_alert: now,
            changed: false,
        });
        for port in verdict.ports {
            incident.ports.note(port, now, Duration::MAX, MAX_REPORTED);
        }
        for host in verdict.hosts {
            incident.hosts.note(host, now, Duration::MAX, MAX_REPORTED);
        }
        Some(incident.alert(Phase::Start))
    }

    /// Runs every detector on one outcome; returns what they recognise.
    fn detect(&mut self, probe: &Probe, now: Duration) -> Vec<Verdict> {
        let mut verdicts = Vec::new();
        if let Some(trw) = self.trw.as_mut()
            && let Some(TrwVerdict {
                failed,
                succeeded,
                failed_hosts,
                failed_ports,
                score,
                first_seen,
                ..
            }) = trw.observe(probe, now)
        {
            let one_host = failed_hosts.len() == 1;
            verdicts.push(Verdict {
                detector: "trw",
                kind: if one_host {
                    ScanKind::Vertical
                } else {
                    ScanKind::Horizontal
                },
                target: one_host.then_some(failed_hosts[0]),
                ports: failed_ports,
                hosts: failed_hosts,
                score,
                first_seen,
                failed: u64::from(failed),
                succeeded: u64::from(succeeded),
            });
        }
        let failed = probe.outcome != Outcome::Accepted;
        let window = self.config.window;
        // Vertical: failed attempts on ports (pings have none).
        if failed && probe.probe != ProbeType::IcmpEcho {
            let key = PairKey {
                src: probe.src,
                dst: probe.dst,
                proto: probe.proto,
            };
            let episode = self.vertical.entry(key, now, window, || Episode::new(now));
            if episode.note(probe.dst_port, now, window, self.config.min_ports) {
                verdicts.push(Verdict {
                    detector: "threshold",
                    kind: ScanKind::Vertical,
                    target: Some(probe.dst),
                    ports: episode.items.sorted(),
                    hosts: vec![probe.dst],
                    score: episode.items.len() as f64 / self.config.min_ports as f64,
                    first_seen: episode.first_seen,
                    failed: episode.probes - episode.succeeded,
                    succeeded: episode.succeeded,
                });
            }
        }
        // Horizontal: targets with failed attempts, and pinged targets whatever the answer
        // (probing many hosts for life is the sweep).
        if failed || probe.probe == ProbeType::IcmpEcho {
            let episode = self
                .horizontal
                .entry(probe.src, now, window, || Episode::new(now));
            if probe.probe != ProbeType::IcmpEcho {
                episode.ports.note(probe.dst_port, now, window, SWEEP_PORTS);
            }
            let reached = episode.note(probe.dst, now, window, self.config.min_hosts);
            if !failed {
                episode.succeeded += 1;
            }
            if reached {
                verdicts.push(Verdict {
                    detector: "threshold",
                    kind: ScanKind::Horizontal,
                    target: None,
                    ports: episode.ports.sorted(),
                    hosts: episode.items.sorted(),
                    score: episode.items.len() as f64 / self.config.min_hosts as f64,
                    first_seen: episode.first_seen,
                    failed: episode.probes - episode.succeeded,
                    succeeded: episode.succeeded,
                });
            }
        }
        verdicts
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

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
            assert!(engine.tracked() <= 2000);
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
            (Phase::Start, "trw", ScanKind::Vertical)
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
            (Phase::Start, "threshold", 3)
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
    fn ports_kept_per_pair_are_capped() {
        let mut engine = Engine::new(config(5, 600, 4));
        let mut alert = None;
        for port in 1..=60_000u16 {
            if let Some(a) = vertical(engine.observe(&probe(SCANNER, VICTIM, port), secs(1.0))) {
                alert = Some(a);
            }
        }
        assert_eq!(alert.unwrap().ports, vec![1, 2, 3, 4, 5]);
        let episode = engine.vertical.values().next().unwrap();
        assert_eq!(episode.items.len(), MAX_REPORTED);
    }
}
