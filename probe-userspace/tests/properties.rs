//! Property tests of the detection engine (pure logic, no kernel): memory stays bounded
//! whatever the input, benign mixtures never alert, and straight failures always do.

use std::{
    net::{IpAddr, Ipv4Addr},
    time::Duration,
};

use probe_userspace::{
    detect::crowd::CrowdConfig,
    detect::slow::SlowConfig,
    detect::trw::{TrwConfig, TrwUnit},
    detect::{Engine, EngineConfig},
    event::{Outcome, Probe, ProbeType},
};
use proptest::prelude::*;

const OUTCOMES: [Outcome; 5] = [
    Outcome::Accepted,
    Outcome::Refused,
    Outcome::Unreachable,
    Outcome::Prohibited,
    Outcome::Unanswered,
];
const TYPES: [ProbeType; 5] = [
    ProbeType::TcpSyn,
    ProbeType::TcpStealth,
    ProbeType::TcpAck,
    ProbeType::Udp,
    ProbeType::IcmpEcho,
];

fn probe(src: u32, host: u8, port: u16, outcome: Outcome, kind: ProbeType, at: Duration) -> Probe {
    Probe {
        timestamp: at,
        src: IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + src)),
        dst: IpAddr::V4(Ipv4Addr::new(198, 18, 1, host)),
        src_port: 40_000,
        dst_port: if kind == ProbeType::IcmpEcho { 0 } else { port },
        proto: match kind {
            ProbeType::Udp => 17,
            ProbeType::IcmpEcho => 1,
            _ => 6,
        },
        probe: kind,
        outcome,
        tcp_flags: 0x02,
        ttl: 64,
        icmp: None,
        ifindex: 1,
        src_mac: [0; 6],
        kernel_verdict: false,
        kernel_blocked: false,
    }
}

fn config(max_tracked: usize, unit: TrwUnit) -> EngineConfig {
    EngineConfig {
        max_tracked,
        trw: Some(TrwConfig {
            unit,
            ..TrwConfig::default()
        }),
        slow: Some(SlowConfig {
            max_sources: max_tracked,
            ..SlowConfig::default()
        }),
        crowd: Some(CrowdConfig {
            max_targets: max_tracked,
            ..CrowdConfig::default()
        }),
        ..EngineConfig::default()
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Whatever comes in (many sources, hosts, ports, outcomes; time moving forward), the
    /// engine holds at most its bound of entries per table.
    #[test]
    fn memory_stays_bounded(steps in prop::collection::vec(
        (any::<u8>(), any::<u8>(), any::<u16>(), 0u8..5, 0u8..5, 0u16..2000),
        1..3000,
    )) {
        let max = 32;
        let mut engine = Engine::new(config(max, TrwUnit::Service));
        let mut now = Duration::ZERO;
        for (i, &(src, host, port, outcome, kind, later)) in steps.iter().enumerate() {
            now += Duration::from_millis(u64::from(later));
            // Spread sources widely: the index and the step make new ones all the time.
            let src = u32::from(src) * 4096 + (i as u32 % 4096);
            let p = probe(src, host, port, OUTCOMES[outcome as usize], TYPES[kind as usize], now);
            engine.observe(&p, now);
            if i % 97 == 0 {
                engine.tick(now);
            }
            // Sightings, vertical, horizontal, TRW, slow-scan, crowd and incident tables.
            prop_assert!(engine.tracked() <= 7 * max, "{} entries", engine.tracked());
        }
    }

    /// A source with at most three failed outcomes never alerts, however many successful
    /// connections and however they are mixed: TRW needs four failures net of successes,
    /// the thresholds more.
    #[test]
    fn benign_mixtures_never_alert(
        sources in prop::collection::vec(
            (prop::collection::vec((any::<u8>(), any::<u16>(), 0u8..5), 0..40), prop::collection::vec((any::<u8>(), any::<u16>(), 1u8..5, 0u8..4), 0..=3)),
            1..20,
        ),
        host_unit in any::<bool>(),
    ) {
        let unit = if host_unit { TrwUnit::Host } else { TrwUnit::Service };
        let mut engine = Engine::new(config(65_536, unit));
        let mut now = Duration::ZERO;
        let mut steps = Vec::new();
        for (s, (successes, failures)) in sources.iter().enumerate() {
            // Successes are connections (TCP or UDP answered). Pings answered are not benign
            // evidence: pinging many hosts is a sweep whatever they answer.
            for &(host, port, kind) in successes {
                let kind = if kind % 2 == 0 { ProbeType::TcpSyn } else { ProbeType::Udp };
                steps.push((s as u32, host, port, Outcome::Accepted, kind));
            }
            for &(host, port, outcome, kind) in failures {
                steps.push((s as u32, host, port, OUTCOMES[outcome as usize], TYPES[kind as usize]));
            }
        }
        // Interleave sources and outcomes in a fixed but scrambled order.
        steps.sort_by_key(|&(s, host, port, _, _)| (u32::from(host) * 7919 + u32::from(port) * 31 + s * 131) % 1009);
        for (src, host, port, outcome, kind) in steps {
            now += Duration::from_millis(50);
            let alerts = engine.observe(&probe(src, host, port, outcome, kind, now), now);
            prop_assert!(alerts.is_empty(), "{alerts:?}");
        }
        prop_assert!(engine.finish().is_empty());
    }

    /// After k earlier successes, failed first contacts on distinct ports alert after
    /// exactly 4 + (k mod 4) of them: every four successes give a benign verdict that
    /// restarts the test, and each success left over cancels one failure (x1/4 against x4).
    #[test]
    fn failures_alert_after_exactly_what_trw_implies(
        earlier_successes in 0usize..30,
        ports in prop::collection::hash_set(1u16..60_000, 8),
        outcome in 1u8..5,
    ) {
        let mut engine = Engine::new(config(1024, TrwUnit::Service));
        let mut now = Duration::ZERO;
        for i in 0..earlier_successes {
            now += Duration::from_millis(10);
            let ok = probe(1, 1, 60_000 + i as u16, Outcome::Accepted, ProbeType::TcpSyn, now);
            prop_assert!(engine.observe(&ok, now).is_empty());
        }
        let needed = 4 + earlier_successes % 4;
        for (n, port) in ports.into_iter().enumerate() {
            now += Duration::from_millis(10);
            let failed = probe(1, 2, port, OUTCOMES[outcome as usize], ProbeType::TcpSyn, now);
            let alerts = engine.observe(&failed, now);
            if n + 1 == needed {
                prop_assert_eq!(alerts.len(), 1, "failure {} of {}", n + 1, needed);
                prop_assert_eq!(alerts[0].failed as usize, needed);
            } else {
                prop_assert!(alerts.is_empty(), "failure {} of {}: {:?}", n + 1, needed, alerts);
            }
        }
    }
}
