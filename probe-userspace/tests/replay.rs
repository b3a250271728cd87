//! Offline replay of the committed captures (tests/fixtures, recorded by record.sh from
//! real nmap, curl and connect traffic): `probe-detector replay` must give the alerts the
//! live run gave on the same traffic (the `.live.json` beside each capture). Loads the
//! real programs: needs root, like the kernel tests.

use std::{path::Path, process::Command};

#[path = "common/eve.rs"]
mod eve;

use probe_netlab::require_root;
use serde_json::Value;

const HOME: &str = "198.18.12.2";

fn fixture(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

fn lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// The alerts of `probe-detector replay NAME.pcap --home-net 198.18.12.2`.
fn replay(name: &str) -> Vec<Value> {
    replay_with(name, &[])
}

/// [`replay`] with more flags.
fn replay_with(name: &str, flags: &[&str]) -> Vec<Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_probe-detector"))
        .args([
            "replay",
            &fixture(&format!("{name}.pcap")),
            "--home-net",
            HOME,
        ])
        .args(flags)
        .output()
        .expect("run probe-detector");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "replay {name} failed: {stderr}");
    assert!(stderr.contains("replayed "), "{stderr}");
    let records = lines(&String::from_utf8_lossy(&out.stdout));
    // Every record a replay writes is a valid EVE record (real scans through the real
    // programs: vertical, distributed, with and without --block).
    if let Some(eve) = eve::Eve::load(name) {
        for record in &records {
            eve.assert_valid(record);
        }
    }
    records
}

/// What must agree between a live run and a replay: everything but the clock-dependent
/// fields (times, rates), which differ by the microseconds between the kernel's clock and
/// the capture's.
fn essence(alert: &Value) -> Value {
    serde_json::json!({
        "phase": alert["alert"]["context"]["scan"]["phase"],
        "kind": alert["alert"]["context"]["scan"]["kind"],
        "detector": alert["alert"]["context"]["scan"]["detector"],
        "technique": alert["alert"]["context"]["scan"]["technique"],
        "src_ip": alert["src_ip"],
        "src_ips": alert["alert"]["context"]["src_ips"],
        "dest_ip": alert["dest_ip"],
        "ports": alert["alert"]["context"]["scan"]["ports"],
        "probes": alert["alert"]["context"]["scan"]["probes"],
        "failed": alert["alert"]["context"]["scan"]["failed"],
        "succeeded": alert["alert"]["context"]["scan"]["succeeded"],
        "signature_id": alert["alert"]["signature_id"],
        "spoof_reasons": alert["alert"]["context"]["spoof"]["reasons"],
    })
}

/// Seconds since midnight of an EVE time (`2026-11-21T07:26:01.123456+0000`).
fn seconds_of_day(time: &str) -> f64 {
    let clock = &time[11..26];
    clock
        .split(':')
        .map(|part| part.parse::<f64>().unwrap())
        .fold(0.0, |acc, part| acc * 60.0 + part)
}

fn same_as_live(name: &str) -> Vec<Value> {
    let replayed = replay(name);
    let live = lines(&std::fs::read_to_string(fixture(&format!("{name}.live.json"))).unwrap());
    assert_eq!(
        replayed.iter().map(essence).collect::<Vec<_>>(),
        live.iter().map(essence).collect::<Vec<_>>(),
        "{name}: the replay differs from the live run"
    );
    // On the capture's clock: the records carry the capture's times, not today's (the
    // live run stamped them within a millisecond of tcpdump).
    for (r, l) in replayed.iter().zip(&live) {
        let (r, l) = (
            r["timestamp"].as_str().unwrap(),
            l["timestamp"].as_str().unwrap(),
        );
        assert_eq!(r[..10], l[..10], "{name}: {r} vs {l}");
        assert!(
            (seconds_of_day(r) - seconds_of_day(l)).abs() < 0.5,
            "{name}: {r} vs {l}"
        );
    }
    replayed
}

#[test]
fn a_replayed_syn_scan_gives_the_live_alerts() {
    if !require_root("a_replayed_syn_scan_gives_the_live_alerts") {
        return;
    }
    let alerts = same_as_live("syn-scan");
    // nmap -sS -T4 of 100 ports, 22 and 80 open: one incident, start and end.
    assert_eq!(alerts.len(), 2);
    assert_eq!(
        alerts[1]["alert"]["context"]["scan"]["ports"]
            .as_array()
            .unwrap()
            .len(),
        98
    );
}

#[test]
fn a_replayed_decoy_scan_is_one_distributed_incident() {
    if !require_root("a_replayed_decoy_scan_is_one_distributed_incident") {
        return;
    }
    let alerts = same_as_live("decoy-scan");
    assert_eq!(alerts.len(), 2);
    assert_eq!(alerts[0]["alert"]["context"]["scan"]["kind"], "distributed");
    assert_eq!(
        alerts[0]["alert"]["context"]["src_ips"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
}

#[test]
fn replayed_benign_traffic_raises_nothing() {
    if !require_root("replayed_benign_traffic_raises_nothing") {
        return;
    }
    assert!(same_as_live("benign").is_empty());
}

#[test]
fn replay_writes_the_attack_list_on_the_captures_clock() {
    if !require_root("replay_writes_the_attack_list_on_the_captures_clock") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("pd-replay-attack-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let list = dir.join("attack-list.csv");
    let alerts = replay_with("syn-scan", &["--attack-list", list.to_str().unwrap()]);
    let text = std::fs::read_to_string(&list).expect("replay --attack-list writes the list");
    let _ = std::fs::remove_dir_all(&dir);
    let mut rows = text.lines();
    assert!(
        rows.next().unwrap().starts_with("time,"),
        "a header first: {text}"
    );
    let rows: Vec<Vec<&str>> = rows.map(|r| r.split(',').collect()).collect();
    // One row per probed closed port of the confirmed scanner: the 98 of the alert.
    let ported: std::collections::BTreeSet<&str> = rows.iter().map(|r| r[3]).collect();
    assert_eq!(ported.len(), 98, "{text}");
    assert_eq!(
        alerts[1]["alert"]["context"]["scan"]["ports"]
            .as_array()
            .unwrap()
            .len(),
        ported.len()
    );
    // The capture's clock, not today's: the rows carry the scan's day.
    let day = &alerts[0]["timestamp"].as_str().unwrap()[..10];
    assert!(rows.iter().all(|r| r[0].starts_with(day)), "{text}");
}

#[test]
fn replay_with_block_records_what_a_live_run_would_have_blocked() {
    if !require_root("replay_with_block_records_what_a_live_run_would_have_blocked") {
        return;
    }
    let alerts = replay_with("syn-scan", &["--block"]);
    assert_eq!(alerts[0]["alert"]["context"]["scan"]["phase"], "start");
    assert_eq!(alerts[0]["alert"]["action"], "blocked");
    // Decoys make the sources likely forged: a live run would not block them.
    let decoys = replay_with("decoy-scan", &["--block"]);
    assert_eq!(decoys[0]["alert"]["context"]["scan"]["kind"], "distributed");
    assert_eq!(decoys[0]["alert"]["action"], "allowed");
}

/// The records of a little-endian pcap file: (record header, data), after its header.
fn pcap_records(bytes: &[u8]) -> Vec<([u8; 16], Vec<u8>)> {
    assert_eq!(
        &bytes[..4],
        &[0xd4, 0xc3, 0xb2, 0xa1],
        "a little-endian pcap"
    );
    let mut records = Vec::new();
    let mut at = 24;
    while at + 16 <= bytes.len() {
        let header: [u8; 16] = bytes[at..at + 16].try_into().unwrap();
        let caplen = u32::from_le_bytes(header[8..12].try_into().unwrap()) as usize;
        records.push((header, bytes[at + 16..at + 16 + caplen].to_vec()));
        at += 16 + caplen;
    }
    records
}

/// A pcap file of the fixture's header and `records`, in the temporary directory.
fn write_pcap(name: &str, header: &[u8], records: &[([u8; 16], Vec<u8>)]) -> std::path::PathBuf {
    let mut out = header[..24].to_vec();
    for (h, data) in records {
        let mut h = *h;
        let len = (data.len() as u32).to_le_bytes();
        h[8..12].copy_from_slice(&len);
        h[12..16].copy_from_slice(&len);
        out.extend_from_slice(&h);
        out.extend_from_slice(data);
    }
    let path = std::env::temp_dir().join(format!("pd-{name}-{}.pcap", std::process::id()));
    std::fs::write(&path, out).unwrap();
    path
}

/// `probe-detector replay PATH --home-net HOME`: (alerts, stderr), in bounded time.
fn replay_path(path: &Path) -> (Vec<Value>, String) {
    let started = std::time::Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_probe-detector"))
        .arg("replay")
        .arg(path)
        .args(["--home-net", HOME])
        .output()
        .expect("run probe-detector");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "replay failed: {stderr}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "replay took {:?}",
        started.elapsed()
    );
    (lines(&String::from_utf8_lossy(&out.stdout)), stderr)
}

#[test]
fn a_hostile_time_jump_or_an_oversized_frame_does_not_stop_a_replay() {
    if !require_root("a_hostile_time_jump_or_an_oversized_frame_does_not_stop_a_replay") {
        return;
    }
    let bytes = std::fs::read(fixture("syn-scan.pcap")).unwrap();
    let records = pcap_records(&bytes);
    let live = replay("syn-scan");
    // The last packet stamped 2^32 - 1 s after the epoch: decades after the others.
    let mut jumped = records.clone();
    let last = jumped.len() - 1;
    jumped[last].0[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
    let path = write_pcap("jump", &bytes, &jumped);
    let (alerts, stderr) = replay_path(&path);
    let _ = std::fs::remove_file(&path);
    assert!(stderr.contains("time jumped forward 1 times"), "{stderr}");
    assert_eq!(
        alerts.iter().map(essence).collect::<Vec<_>>()[..1],
        live.iter().map(essence).collect::<Vec<_>>()[..1],
        "the scan is still recognised"
    );
    // The first inbound frame again, 9 000 bytes longer (merged by segmentation offload).
    let mut oversized = records.clone();
    let mut big = records[0].clone();
    big.1.extend(std::iter::repeat_n(0u8, 9000));
    oversized.insert(1, big);
    let path = write_pcap("oversized", &bytes, &oversized);
    let (alerts, stderr) = replay_path(&path);
    let _ = std::fs::remove_file(&path);
    assert!(
        stderr.contains("1 frames longer than 3000 bytes"),
        "{stderr}"
    );
    assert_eq!(
        alerts.iter().map(essence).collect::<Vec<_>>(),
        live.iter().map(essence).collect::<Vec<_>>()
    );
}
