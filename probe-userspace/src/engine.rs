//! The scan detectors, as pure logic: a vertical port scan is at least `min_ports`
//! distinct ports of one target failing for one source within `window`; a horizontal sweep
//! is at least `min_hosts` distinct targets probed by one source within `window` (failed
//! attempts, and pings whatever their answer).
//!
//! No I/O and no clock: [`Engine::observe`] takes each outcome with its timestamp (monotonic
//! time since boot, as the kernel stamps it) and returns the alerts this outcome completes.
//! Each (source, target) episode, and each source's sweep, alerts once; an episode ends
//! after `window` without activity. State is bounded ([`crate::table`]): at most
//! `max_tracked` entries per detector, least recently active forgotten first, and at most
//! the threshold's worth of ports or hosts per entry before it alerts, so memory stays flat
//! under floods of spoofed sources.

use std::{net::IpAddr, time::Duration};

use crate::{
    event::{Outcome, Probe, ProbeType},
    table::{Activity, BoundedTable, RecentSet},
};

/// Ports or hosts kept per entry once it has alerted, for the alert's lists.
pub const MAX_REPORTED: usize = 1024;
/// Ports kept per sweeping source, to report which ports a sweep used.
const SWEEP_PORTS: usize = 16;

/// Tuning of the detectors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineConfig {
    /// Distinct failed ports of one target from one source that make a port scan.
    pub min_ports: usize,
    /// Distinct targets probed by one source that make a sweep.
    pub min_hosts: usize,
    /// How far back ports and hosts are counted; an entry idle for longer starts over.
    pub window: Duration,
    /// Entries each detector tracks at once; the least recently active go first.
    pub max_tracked: usize,
}

impl Default for EngineConfig {
    /// 10 ports or 16 hosts within 60 s; 65 536 entries per detector.
    fn default() -> Self {
        Self {
            min_ports: 10,
            min_hosts: 16,
            window: Duration::from_secs(60),
            max_tracked: 65_536,
        }
    }
}

/// What a scan looked like.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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

/// A recognised scan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScanAlert {
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
    /// Outcomes counted for this episode.
    pub probes: u64,
    /// Time of the first counted outcome (monotonic, since boot).
    pub first_seen: Duration,
    /// Time of the outcome that completed the scan (monotonic, since boot).
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

/// The detectors' state; see the module documentation.
#[derive(Debug)]
pub struct Engine {
    config: EngineConfig,
    vertical: BoundedTable<PairKey, Episode<u16>>,
    horizontal: BoundedTable<IpAddr, Episode<IpAddr>>,
}

impl Engine {
    /// Detectors with the given tuning.
    pub fn new(config: EngineConfig) -> Self {
        Self {
            vertical: BoundedTable::new(config.max_tracked),
            horizontal: BoundedTable::new(config.max_tracked),
            config,
        }
    }

    /// Entries tracked, both detectors together.
    pub fn tracked(&self) -> usize {
        self.vertical.len() + self.horizontal.len()
    }

    /// Entries forgotten to make room so far, both detectors together.
    pub fn evictions(&self) -> u64 {
        self.vertical.evictions() + self.horizontal.evictions()
    }

    /// Feeds one outcome seen at `now`; returns the scans it completes.
    pub fn observe(&mut self, probe: &Probe, now: Duration) -> Vec<ScanAlert> {
        let mut alerts = Vec::new();
        let failed = probe.outcome != Outcome::Accepted;
        let window = self.config.window;
        let technique = Technique::of(probe);
        // Vertical: failed attempts on ports (pings have none).
        if failed && probe.probe != ProbeType::IcmpEcho {
            let key = PairKey {
                src: probe.src,
                dst: probe.dst,
                proto: probe.proto,
            };
            let episode = self.vertical.entry(key, now, window, || Episode::new(now));
            if episode.note(probe.dst_port, now, window, self.config.min_ports) {
                alerts.push(ScanAlert {
                    kind: ScanKind::Vertical,
                    src: probe.src,
                    targets: vec![probe.dst],
                    proto: probe.proto,
                    technique,
                    ifindex: probe.ifindex,
                    ports: episode.items.sorted(),
                    probes: episode.probes,
                    first_seen: episode.first_seen,
                    last_seen: now,
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
            if episode.note(probe.dst, now, window, self.config.min_hosts) {
                alerts.push(ScanAlert {
                    kind: ScanKind::Horizontal,
                    src: probe.src,
                    targets: episode.items.sorted(),
                    proto: probe.proto,
                    technique,
                    ifindex: probe.ifindex,
                    ports: episode.ports.sorted(),
                    probes: episode.probes,
                    first_seen: episode.first_seen,
                    last_seen: now,
                });
            }
        }
        alerts
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
        Probe {
            timestamp: Duration::ZERO,
            src,
            dst,
            src_port: 40000,
            dst_port: port,
            proto: 6,
            probe: ProbeType::TcpSyn,
            outcome: Outcome::Refused,
            tcp_flags: 0x02,
            ttl: 64,
            icmp: None,
            ifindex: 7,
        }
    }

    fn host(i: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(0xc612_0100 + i))
    }

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    fn config(min_ports: usize, window_s: u64, max_tracked: usize) -> EngineConfig {
        EngineConfig {
            min_ports,
            min_hosts: 1000,
            window: Duration::from_secs(window_s),
            max_tracked,
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
        let mut engine = Engine::new(config(2, 10, 16));
        assert!(vertical(engine.observe(&probe(SCANNER, VICTIM, 1), secs(0.0))).is_none());
        assert!(vertical(engine.observe(&probe(SCANNER, VICTIM, 2), secs(1.0))).is_some());
        assert!(vertical(engine.observe(&probe(SCANNER, VICTIM, 3), secs(2.0))).is_none());
        // Quiet for longer than the window: the next scan is a new one.
        assert!(vertical(engine.observe(&probe(SCANNER, VICTIM, 4), secs(20.0))).is_none());
        let again = vertical(engine.observe(&probe(SCANNER, VICTIM, 5), secs(21.0))).unwrap();
        assert_eq!(
            (again.ports, again.probes, again.first_seen),
            (vec![4, 5], 2, secs(20.0))
        );
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
