//! A spoofed-source SYN flood through the real programs (BPF_PROG_TEST_RUN: no packet on
//! any wire), each SYN answered by the victim's RST, with a real scanner's probes hidden in
//! it, every event fed to the engine as the daemon would: what `cargo xtask flood` reports
//! and `tests/flood.rs` checks in short. Shared by both through `#[path]`.

#![allow(
    dead_code,
    reason = "the test and the example read different parts of the report"
)]

use std::{
    fs,
    net::{IpAddr, Ipv6Addr},
    time::{Duration, Instant},
};

use aya::{
    Ebpf,
    maps::{MapData, RingBuf},
};
use probe_common::{Counter, EVENTS_MAP};
use probe_userspace::{
    clock,
    detect::{Engine, ScanKind},
    event::Probe,
    kernel::{self, LoadError},
};

use crate::common::{Frame, Rng, SYN, v4};

/// The scanner hidden in the flood.
pub const SCANNER: [u8; 4] = [198, 19, 255, 1];
/// The flooded host.
pub const VICTIM: [u8; 4] = [198, 18, 0, 1];

/// The flooded host's IPv4 address (the flood's IPv4 half and the scanner probe it).
pub fn victim_v4() -> IpAddr {
    v4(VICTIM)
}

/// The flooded host's IPv6 address (the flood's IPv6 half probes it).
pub fn victim_v6() -> IpAddr {
    IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1))
}

/// How big a flood.
pub struct FloodConfig {
    /// SYNs in all (each also answered by an RST).
    pub packets: u64,
    /// One scanner probe (a new port) every this many SYNs.
    pub scanner_every: u64,
    /// A sample every this many SYNs.
    pub sample_every: u64,
}

/// The state at one moment of the flood.
#[derive(Clone, Debug)]
pub struct Sample {
    /// SYNs sent so far.
    pub packets: u64,
    /// Resident memory of this process.
    pub rss_bytes: u64,
    /// Entries in the engine's tables.
    pub tracked: usize,
    /// Entries evicted so far.
    pub evictions: u64,
    /// Events read from the ring.
    pub events: u64,
    /// Events the kernel could not put in the ring.
    pub ring_drops: u64,
    /// Since the flood began.
    pub elapsed: Duration,
}

/// The outcome of a flood.
#[derive(Debug)]
pub struct FloodReport {
    /// One per `sample_every` SYNs, and one at the end.
    pub samples: Vec<Sample>,
    /// Scanner probes sent when the scanner was first alerted on (`None`: never).
    pub scanner_alerted_after: Option<u64>,
    /// That alert's kind and detector.
    pub scanner_alert: Option<(&'static str, &'static str)>,
    /// Scanner probes sent in all.
    pub scanner_probes: u64,
    /// Scans recognised among the spoofed sources: (kind, spoofing reasons, target).
    pub other_alerts: Vec<(&'static str, Vec<&'static str>, IpAddr)>,
    /// Entries per engine table at the end.
    pub tables: Vec<(&'static str, usize)>,
    /// Bytes of kernel memory charged to the maps (memlock, /proc/self/fdinfo).
    pub map_bytes: u64,
}

/// Runs the flood; `on_sample` sees each sample as it is taken.
pub fn flood(
    ebpf: &mut Ebpf,
    engine: &mut Engine,
    config: &FloodConfig,
    mut on_sample: impl FnMut(&Sample),
) -> Result<FloodReport, LoadError> {
    let map = ebpf
        .take_map(EVENTS_MAP)
        .ok_or(LoadError::Missing("EVENTS ring buffer"))?;
    let mut ring = RingBuf::try_from(map).map_err(|_| LoadError::Missing("EVENTS ring buffer"))?;
    let mut summaries = kernel::SummaryReader::default();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let (victim, scanner) = (victim_v4(), v4(SCANNER));
    let mut report = FloodReport {
        samples: Vec::new(),
        scanner_alerted_after: None,
        scanner_alert: None,
        scanner_probes: 0,
        other_alerts: Vec::new(),
        tables: Vec::new(),
        map_bytes: map_memlock(),
    };
    let mut events = 0;
    let mut v4_used = 0u32;
    let started = Instant::now();
    let mut last_tick = started;
    for i in 0..config.packets {
        let syn = if i % config.scanner_every == 0 {
            report.scanner_probes += 1;
            Frame::tcp(
                scanner,
                40_000,
                victim,
                report.scanner_probes as u16,
                SYN,
                1,
            )
        } else {
            let r = rng.next();
            // Spoofed sources from the documentation ranges only, each sending one SYN:
            // half IPv4, each address of 198.18.0.0/15 once (an odd multiplier permutes
            // the 2^17 addresses), the rest IPv6 in 2001:db8::/32 (2^96 of them). A source
            // that sent several SYNs to failing ports would be a scan, not a flood.
            // The scanner's own address is skipped: a forged SYN from it would count as one
            // of its probes.
            let take_v4 = r & 1 == 0 && v4_used < 1 << 17;
            let host = v4_used.wrapping_mul(0x9e37).wrapping_add(0x1234) & 0x1_ffff;
            let spoofed = v4([198, 18 | (host >> 16) as u8, (host >> 8) as u8, host as u8]);
            if take_v4 {
                v4_used += 1;
            }
            let (src, dst) = if take_v4 && spoofed != scanner {
                (spoofed, victim)
            } else {
                let low = u128::from(rng.next()) << 32 | u128::from(r >> 32);
                let src = Ipv6Addr::from(0x2001_0db8_u128 << 96 | low);
                (IpAddr::V6(src), victim_v6())
            };
            Frame::tcp(
                src,
                (r >> 16) as u16 | 1024,
                dst,
                (r >> 40) as u16,
                SYN,
                r as u32,
            )
        };
        kernel::test_run(ebpf, &syn.bytes(), true)?;
        kernel::test_run(ebpf, &syn.refusal().bytes(), false)?;
        if i % 256 == 255 || i + 1 == config.packets {
            let now = clock::monotonic_now();
            events += drain(ebpf, &mut ring, &mut summaries, engine, now, &mut report);
            if last_tick.elapsed() >= Duration::from_secs(1) {
                last_tick = Instant::now();
                let ticked = engine.tick(now);
                note(&ticked, &mut report);
                kernel::expire_with(ebpf, |_| {})?;
                events += drain(ebpf, &mut ring, &mut summaries, engine, now, &mut report);
            }
        }
        if (i + 1) % config.sample_every == 0 || i + 1 == config.packets {
            let sample = Sample {
                packets: i + 1,
                rss_bytes: rss_bytes(),
                tracked: engine.tracked(),
                evictions: engine.evictions(),
                events,
                ring_drops: kernel::counters(ebpf)?
                    .into_iter()
                    .find(|(c, _)| *c == Counter::RingbufDrops)
                    .map_or(0, |(_, n)| n),
                elapsed: started.elapsed(),
            };
            on_sample(&sample);
            report.samples.push(sample);
        }
    }
    report.tables = engine.tables();
    Ok(report)
}

/// Feeds the ring's events, then the kernel's summaries of decided sources, to the
/// engine; returns how many outcomes.
fn drain(
    ebpf: &mut Ebpf,
    ring: &mut RingBuf<MapData>,
    summaries: &mut kernel::SummaryReader,
    engine: &mut Engine,
    now: Duration,
    report: &mut FloodReport,
) -> u64 {
    let mut n = 0;
    while let Some(record) = ring.next() {
        if let Ok(probe) = Probe::decode(&record) {
            n += 1;
            let alerts = engine.observe(&probe, now);
            note(&alerts, report);
        }
    }
    for summary in summaries.collect(ebpf, true).unwrap_or_default() {
        n += summary.ports.len() as u64;
        let alerts = engine.observe_ports(&summary, now);
        note(&alerts, report);
    }
    n
}

fn note(alerts: &[probe_userspace::detect::ScanAlert], report: &mut FloodReport) {
    let scanner = v4(SCANNER);
    for alert in alerts {
        // Its own scan: the flood's spread scan may list it too (its first probes were
        // one or two among the flood's).
        if alert.sources.contains(&scanner) && alert.kind != ScanKind::Distributed {
            report
                .scanner_alerted_after
                .get_or_insert(report.scanner_probes);
            report
                .scanner_alert
                .get_or_insert((alert.kind.name(), alert.detector.name()));
        } else if alert.phase == probe_userspace::detect::Phase::Start {
            report.other_alerts.push((
                alert.kind.name(),
                alert.spoof.reasons.clone(),
                alert.targets.first().copied().unwrap_or(alert.src),
            ));
        }
    }
}

/// Resident memory of this process (VmRSS).
pub fn rss_bytes() -> u64 {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// Kernel memory charged to this process's BPF maps (the `memlock` of each map fd).
pub fn map_memlock() -> u64 {
    let Ok(dir) = fs::read_dir("/proc/self/fdinfo") else {
        return 0;
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| fs::read_to_string(e.path()).ok())
        .filter(|info| info.contains("map_type:"))
        .filter_map(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("memlock:"))
                .and_then(|v| v.trim().parse::<u64>().ok())
        })
        .sum()
}
