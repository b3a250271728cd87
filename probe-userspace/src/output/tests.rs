//! The output pipeline's unit tests: the clock records carry, the rate limit, the attack
//! list, recorded blocking and the start-latency histogram, through `Pipeline`.

use std::net::{IpAddr, Ipv4Addr};

use serde_json::Value;

use super::*;
use crate::{detect::EngineConfig, event::Outcome, net::cidr::Cidr, policy::protect::Spared};

fn ip(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(198, 18, 0, last))
}

/// A pipeline on the capture clock (as replay runs it) writing into a buffer.
fn pipeline(limit: u32, attack: Option<AttackList>, blocking: Blocking) -> Pipeline<Vec<u8>> {
    let config = PipelineConfig {
        probes: false,
        alert_rate_limit: limit,
        alert_rate_per_source: 0,
        fixed_iface: Some("replay".into()),
        host: "sensor-1".into(),
        clock: Clock::Unix,
    };
    Pipeline::new(
        Engine::new(EngineConfig::default()),
        config,
        attack,
        blocking,
        Vec::new(),
    )
}

fn records(p: &Pipeline<Vec<u8>>) -> Vec<Value> {
    String::from_utf8_lossy(p.out())
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// 2026-11-28 12:00:00 UTC plus `ms`, as a capture's time.
fn at(ms: u64) -> Duration {
    Duration::from_secs(1_795_867_200) + Duration::from_millis(ms)
}

/// `scanners` sources (198.18.0.`first`...) each failing on 12 ports, one millisecond
/// per source.
fn scan(p: &mut Pipeline<Vec<u8>>, first: u8, scanners: u8, start_ms: u64) {
    for s in first..first + scanners {
        for port in 0..12 {
            let mut probe = Probe::syn(ip(s), ip(2), 1000 + port, Outcome::Refused);
            probe.timestamp = at(start_ms + u64::from(s - first));
            p.observe(&probe, probe.timestamp);
        }
    }
    p.flush(|_| Some(3)).unwrap();
}

#[test]
fn the_rehearsal_writes_nothing_and_leaves_no_state() {
    let mut p = pipeline(0, None, Blocking::Off);
    p.warm_up(&[]);
    p.flush(|_| Some(3)).unwrap();
    assert!(p.out().is_empty());
    assert_eq!(p.stats().events, 0);
    // The rehearsal's source is unknown to the real engine: three more failures are
    // not a scan.
    for port in 100..103 {
        let mut probe = Probe::syn(IpAddr::from([192, 0, 2, 1]), ip(2), port, Outcome::Refused);
        probe.timestamp = at(1);
        p.observe(&probe, at(1));
    }
    p.flush(|_| Some(3)).unwrap();
    assert!(records(&p).is_empty());
}

#[test]
fn a_live_run_times_each_start_from_its_deciding_outcome_to_the_write() {
    // On the capture's clock (replay): nothing timed, its times are not now's.
    let mut replay = pipeline(0, None, Blocking::Off);
    scan(&mut replay, 1, 2, 0);
    assert_eq!(records(&replay).len(), 2);
    assert_eq!(replay.stats().start_latency.count, 0);

    let mut live = pipeline(0, None, Blocking::Off);
    live.config.clock = Clock::Monotonic;
    // Two scans decided 30 ms ago: two starts timed, when written (a margin of 70 ms
    // to the bucket's bound for a slow test machine).
    let decided = clock::monotonic_now().saturating_sub(Duration::from_millis(30));
    for s in 1..=2 {
        for port in 0..12 {
            let probe = Probe::syn(ip(s), ip(2), 1000 + port, Outcome::Refused);
            live.observe(&probe, decided);
        }
    }
    assert_eq!(live.stats().start_latency.count, 0, "not written yet");
    live.flush(|_| None).unwrap();
    let latency = &live.stats().start_latency;
    assert_eq!(latency.count, 2);
    // 30 ms and a little: the bucket from 25 to 100 ms, each.
    assert!(latency.sum_ns >= 60_000_000 && latency.sum_ns < 2 * 100_000_000);
    assert_eq!(latency.cumulative()[8], ("0.1".to_owned(), 2));
    assert_eq!(latency.cumulative()[7], ("0.025".to_owned(), 0));
}

#[test]
fn records_carry_the_given_clock_and_nothing_is_written_before_flush() {
    let mut p = pipeline(0, None, Blocking::Off);
    let mut probe = Probe::syn(ip(9), ip(2), 1, Outcome::Refused);
    for port in 0..6 {
        probe.dst_port = 100 + port;
        probe.timestamp = at(5);
        p.observe(&probe, at(5));
    }
    assert!(p.out().is_empty(), "held until flush");
    // A start asks to be flushed at once, once.
    assert!(p.take_urgent());
    assert!(!p.take_urgent());
    p.flush(|_| None).unwrap();
    let written = records(&p);
    assert_eq!(written.len(), 1);
    assert_eq!(written[0]["alert"]["context"]["scan"]["phase"], "start");
    assert_eq!(written[0]["in_iface"], "replay");
    assert_eq!(written[0]["host"], "sensor-1");
    assert!(
        written[0]["timestamp"]
            .as_str()
            .unwrap()
            .starts_with("2026-11-28T12:00:00.005"),
        "{}",
        written[0]
    );
    assert_eq!(p.stats().alerts_written[&("vertical", "start")], 1);
}

#[test]
fn the_rate_limit_runs_on_the_given_clock_and_says_what_it_held_back() {
    let mut p = pipeline(2, None, Blocking::Off);
    // Five scanners start within 5 ms of capture time: two alerts pass.
    scan(&mut p, 100, 5, 0);
    assert_eq!(records(&p).len(), 2);
    // A tick a second later (capture time) reports the three held back.
    p.tick(at(1000));
    p.flush(|_| None).unwrap();
    let written = records(&p);
    let flood = written.last().unwrap();
    assert_eq!(flood["event_type"], "engine");
    assert_eq!(flood["log_level"], "Warning");
    assert_eq!(
        flood["engine"]["message"],
        "alert flood: 3 alerts suppressed (--alert-rate-limit 2 a second): 198.18.0.0/24 3"
    );
    assert!(
        flood["timestamp"]
            .as_str()
            .unwrap()
            .starts_with("2026-11-28T12:00:01")
    );
    assert_eq!(p.stats().alerts_suppressed, 3);
    // The next capture second has its own allowance (another target: the five
    // sources of this one are one distributed incident already).
    for port in 0..12 {
        let mut probe = Probe::syn(ip(200), ip(3), 1000 + port, Outcome::Refused);
        probe.timestamp = at(2000);
        p.observe(&probe, probe.timestamp);
    }
    p.flush(|_| None).unwrap();
    assert_eq!(records(&p).len(), written.len() + 1);
}

#[test]
fn a_forged_alert_flood_at_ten_times_the_budget_does_not_delay_a_real_scanners_start() {
    // The defaults: 100 alerts a second, 5 per network.
    let config = PipelineConfig {
        probes: false,
        alert_rate_limit: 100,
        alert_rate_per_source: 5,
        fixed_iface: Some("replay".into()),
        host: "sensor-1".into(),
        clock: Clock::Unix,
    };
    let mut p = Pipeline::new(
        Engine::new(EngineConfig::default()),
        config,
        None,
        Blocking::Off,
        Vec::new(),
    );
    let victim = ip(2);
    let real = IpAddr::V4(Ipv4Addr::new(198, 19, 9, 1));
    let mut real_fourth = None;
    // Within one second: 1 000 forged sources of four /24s, each failing on four
    // ports of its own (a scan start each: ten times the global budget), and a real
    // scanner's first four probes among them, the last near the end.
    for i in 0..1000u32 {
        let ms = u64::from(i);
        let forged = IpAddr::V4(Ipv4Addr::new(
            198,
            18,
            10 + (i / 250) as u8,
            (i % 250) as u8,
        ));
        for k in 0..4u32 {
            let port = (10_000 + i * 4 + k) as u16;
            let mut probe = Probe::syn(forged, victim, port, Outcome::Refused);
            probe.timestamp = at(1000 + ms);
            p.observe(&probe, probe.timestamp);
        }
        if i % 250 == 249 {
            let n = i / 250;
            let mut probe = Probe::syn(real, ip(3), 20 + n as u16, Outcome::Refused);
            probe.timestamp = at(1000 + ms);
            p.observe(&probe, probe.timestamp);
            real_fourth = Some(probe.timestamp);
        }
    }
    p.tick(at(2000));
    p.flush(|_| None).unwrap();
    let written = records(&p);
    let starts: Vec<_> = written
        .iter()
        .filter(|r| r["event_type"] == "alert")
        .collect();
    // Twenty per forged network, and the real scanner's, stamped with its fourth probe.
    assert_eq!(starts.len(), 81, "{starts:#?}");
    let own = starts
        .iter()
        .find(|r| r["src_ip"] == real.to_string())
        .expect("the real scanner's start is written");
    let stamp = Clock::Unix.wall().at(real_fourth.unwrap());
    assert_eq!(own["timestamp"], clock::eve_timestamp(stamp));
    // One record says how many were held back, and whose.
    let flood = written.last().unwrap();
    let message = flood["engine"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("alert flood: 920 alerts suppressed")
            && message.contains("198.18.10.0/24 230")
            && message.contains("198.18.13.0/24 230"),
        "{message}"
    );
}

#[test]
fn the_attack_list_gets_every_failed_port_of_a_confirmed_scanner() {
    let path = std::env::temp_dir().join(format!("pd-pipeline-{}.csv", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let list = AttackList::open(&path, 1 << 20, 1).unwrap();
    let mut p = pipeline(0, Some(list), Blocking::Off);
    // An unconfirmed source's probes are held back.
    let mut lone = Probe::syn(ip(50), ip(2), 7, Outcome::Refused);
    lone.timestamp = at(0);
    p.observe(&lone, at(0));
    scan(&mut p, 100, 1, 10);
    let text = std::fs::read_to_string(&path).unwrap();
    let _ = std::fs::remove_file(&path);
    let rows: Vec<&str> = text.lines().skip(1).collect();
    assert_eq!(rows.len(), 12, "{text}");
    assert!(
        rows.iter()
            .all(|r| r.starts_with("2026-11-28T12:00:00.010")),
        "{text}"
    );
    assert!(
        rows.iter()
            .all(|r| r.contains(",198.18.0.100,") && r.ends_with(",3"))
    );
    assert!(!text.contains("198.18.0.50"), "never confirmed: {text}");
}

#[test]
fn recorded_blocking_marks_what_a_live_run_would_block_and_spares_the_rest() {
    let policy = BlockPolicy {
        ttl: Duration::from_secs(60),
        block_spoofed: false,
        never: vec![(Cidr::host(ip(101)), Spared::AllowListed)],
    };
    let budget = Budget::new(crate::policy::budget::BudgetConfig {
        rate: 1.0,
        burst: 1.0,
        prefix_cap: 16,
    });
    let mut p = pipeline(0, None, Blocking::Recorded(policy, budget));
    assert!(p.blocker().is_none(), "nothing is applied");
    // Three scanners within 3 ms: one block's budget.
    scan(&mut p, 100, 3, 0);
    let written = records(&p);
    let action_of = |src: &str| {
        written
            .iter()
            .find(|r| r["src_ip"] == src)
            .map(|r| r["alert"]["action"].clone())
    };
    assert_eq!(action_of("198.18.0.100"), Some("blocked".into()));
    assert_eq!(action_of("198.18.0.101"), Some("allowed".into()));
    assert_eq!(
        action_of("198.18.0.102"),
        Some("allowed".into()),
        "over --block-rate"
    );
}
