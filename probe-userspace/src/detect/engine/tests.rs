//! The engine's unit tests: each detector's decision, the incident lifecycle, summaries
//! and kernel verdicts, through `Engine::observe`.

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
    // Ours counted a success the kernel does not count (a half-open scan's open port, or
    // one not yet standing): the kernel decides first, and its start lists every port
    // ours saw fail.
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
