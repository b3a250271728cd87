//! Running one scenario with all four detectors watching the same interface, and reading
//! off each detector's first alert against the probes recorded on the wire.

use std::{
    fs,
    net::IpAddr,
    path::Path,
    thread,
    time::{Duration, Instant, SystemTime},
};

use anyhow::Context as _;
use probe_netlab::{Netns, syslog::Syslog};

use crate::{
    capture::{Probes, Recorder},
    detectors::{Alert, Detector, Ours, PeerFiles, peer_alerts},
    scenarios::{Lab, Scenario},
    topology::{Topology, VICTIM_IF, WAN_IF, is_lan, is_victim},
};

/// How long the detectors get after a scenario's traffic ends (psad checks once a second).
const SETTLE: Duration = Duration::from_secs(5);

/// What the whole run shares.
pub struct Context<'a> {
    /// The probe-detector binary.
    pub binary: &'a Path,
    /// The lab's syslog.
    pub syslog: &'a Syslog,
    /// The peers' files.
    pub peers: &'a PeerFiles,
    /// Where recordings go.
    pub pcaps: &'a Path,
}

/// One detector on one scenario.
#[derive(Clone, Debug, Default)]
pub struct Cell {
    /// Its alerts (probe-detector: scans recognised; peers: alert lines).
    pub alerts: Vec<Alert>,
    /// Probes on the wire up to its first alert.
    pub probes: Option<usize>,
    /// Seconds from the first probe to its first alert.
    pub seconds: Option<f64>,
    /// probe-detector: probes on the wire up to the outcome that decided its first scan
    /// (the rest, up to `probes`, came while the alert was on its way to stdout).
    pub decided: Option<usize>,
    /// probe-detector: milliseconds from the outcome that decided its first scan to that
    /// scan's `start` line read from stdout.
    pub lag_ms: Option<f64>,
    /// probe-detector: probes on the wire up to its write of that `start` (the deciding
    /// outcome's time plus `probe_detector_start_latency_seconds`), when it wrote exactly
    /// one; the rest, up to `probes`, came while the record waited for its reader.
    pub written: Option<usize>,
}

impl Cell {
    /// Whether it alerted at all.
    pub fn detected(&self) -> bool {
        !self.alerts.is_empty()
    }
}

/// One scenario's results.
pub struct Row {
    /// The scenario.
    pub scenario: &'static Scenario,
    /// Distinct probes it sent (see `capture`).
    pub probes: usize,
    /// Packets it sent towards the watched addresses.
    pub packets: usize,
    /// How long its traffic took.
    pub seconds: f64,
    /// One cell per detector, in `Detector::ALL` order.
    pub cells: Vec<Cell>,
}

/// Where a topology is watched: the namespace, its interface and the watched addresses.
pub fn watch_point(lab: &Lab, topology: Topology) -> (&Netns, &'static str, fn(IpAddr) -> bool) {
    match topology {
        Topology::Host => (&lab.host.victim, VICTIM_IF, is_victim),
        Topology::Gateway => (&lab.gateway.router, WAN_IF, is_lan),
    }
}

/// probe-detector's arguments at a watch point: its defaults (on the gateway, the home nets
/// derived from the router's routes; `homenets` runs it again with them named).
pub fn detector_args(topology: Topology) -> Vec<&'static str> {
    match topology {
        Topology::Host => vec!["--iface", VICTIM_IF],
        Topology::Gateway => vec!["--iface", WAN_IF],
    }
}

/// Where the matrix's probe-detector serves its metrics (inside its namespace), read once
/// after each scenario's traffic.
const METRICS_PORT: &str = "9466";

/// probe-detector's time from the deciding outcome to the write of its scans' `start`
/// records, read from its metrics, when it wrote exactly one.
fn start_latency(ns: &Netns) -> Option<Duration> {
    let url = format!("http://127.0.0.1:{METRICS_PORT}/metrics");
    let out = ns
        .exec("curl", &["-sS", "--max-time", "2", &url])
        .output()
        .ok()?;
    one_start_latency(&String::from_utf8_lossy(&out.stdout))
}

/// `probe_detector_start_latency_seconds` of a metrics page: its sum when its count is one.
fn one_start_latency(metrics: &str) -> Option<Duration> {
    let value = |name: &str| {
        metrics.lines().find_map(|l| {
            l.strip_prefix(name)?
                .strip_prefix(' ')?
                .trim()
                .parse::<f64>()
                .ok()
        })
    };
    let count = value("probe_detector_start_latency_seconds_count")?;
    let sum = value("probe_detector_start_latency_seconds_sum")?;
    if count == 1.0 {
        Duration::try_from_secs_f64(sum).ok()
    } else {
        None
    }
}

/// Runs `scenario` with every detector watching; fresh detectors each time, so no state
/// carries over between scenarios.
pub fn run(ctx: &Context<'_>, lab: &Lab, scenario: &'static Scenario) -> anyhow::Result<Row> {
    let (ns, dev, watched) = watch_point(lab, scenario.topology);
    let pcap = ctx.pcaps.join(format!("{}.pcap", slug(scenario.name)));
    let recorder = Recorder::start(ns, dev, &pcap)?;
    // psad reads the kernel log from where it is when it starts; empty it anyway, so a
    // scenario's psad never sees an earlier scenario's lines.
    fs::write(ctx.syslog.kern_log(), b"").context("cannot empty the lab's kernel log")?;
    ctx.peers.start(ns, ctx.syslog)?;
    let mut args = detector_args(scenario.topology);
    args.extend_from_slice(scenario.flags);
    args.extend_from_slice(&["--metrics-addr", METRICS_PORT]);
    let mut ours = Ours::start(ns, ctx.binary, &args)?;
    let offset = ctx.syslog.offset();
    let started = SystemTime::now();
    let clock = Instant::now();
    let sent = (scenario.run)(lab);
    let seconds = clock.elapsed().as_secs_f64();
    // Wait for the slowest detector, but not past SETTLE.
    let settled = Instant::now();
    while settled.elapsed() < SETTLE {
        let peers = ctx.syslog.lines_since(offset)?;
        let all = !ours.alerts().is_empty()
            && Detector::ALL[1..]
                .iter()
                .all(|d| !peer_alerts(*d, &peers).is_empty());
        if all && !scenario.benign {
            break;
        }
        thread::sleep(Duration::from_millis(100));
    }
    let latency = start_latency(ns);
    let stopped = ours.stop();
    PeerFiles::stop(ns);
    recorder.stop()?;
    sent.with_context(|| format!("scenario {:?}", scenario.name))?;
    stopped.with_context(|| format!("probe-detector in scenario {:?}", scenario.name))?;
    let lines = ctx.syslog.lines_since(offset)?;
    let probes = Probes::read(&pcap, watched)?;
    let cells = Detector::ALL
        .iter()
        .map(|d| {
            let mut alerts = match d {
                Detector::Ours => ours.alerts(),
                peer => peer_alerts(*peer, &lines),
            };
            alerts.retain(|a| a.time >= started);
            let first = alerts.iter().map(|a| a.time).min();
            let decided = alerts.iter().filter_map(|a| a.decided).min();
            // One start written: its write is the deciding outcome's time plus the latency.
            let written = match (d, &alerts[..], latency) {
                (Detector::Ours, [alert], Some(latency)) => alert.decided.map(|t| t + latency),
                _ => None,
            };
            let lag_ms = alerts
                .iter()
                .filter_map(|a| Some(a.time.duration_since(a.decided?).ok()?.as_secs_f64()))
                .map(|s| s * 1e3)
                .reduce(f64::min);
            Cell {
                probes: first.map(|t| probes.before(t)),
                decided: decided.map(|t| probes.before(t)),
                lag_ms,
                written: written.map(|t| probes.before(t)),
                seconds: first.zip(probes.first()).map(|(alert, probe)| {
                    alert.duration_since(probe).map_or(0.0, |d| d.as_secs_f64())
                }),
                alerts,
            }
        })
        .collect();
    Ok(Row {
        scenario,
        probes: probes.starts.len(),
        packets: probes.packets,
        seconds,
        cells,
    })
}

/// A file name for a scenario: lowercase letters and digits joined by dashes.
pub fn slug(name: &str) -> String {
    name.split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_ascii_lowercase)
        .collect::<Vec<_>>()
        .join("-")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_write_is_read_off_the_metrics_only_for_a_single_start() {
        let page = |count: u32, sum: &str| {
            format!(
                "# TYPE probe_detector_start_latency_seconds histogram\n\
                 probe_detector_start_latency_seconds_bucket{{le=\"+Inf\"}} {count}\n\
                 probe_detector_start_latency_seconds_sum {sum}\n\
                 probe_detector_start_latency_seconds_count {count}\n"
            )
        };
        assert_eq!(
            one_start_latency(&page(1, "0.000125")),
            Some(Duration::from_micros(125))
        );
        assert_eq!(
            one_start_latency(&page(2, "0.0003")),
            None,
            "two starts: whose?"
        );
        assert_eq!(one_start_latency(&page(0, "0")), None);
        assert_eq!(one_start_latency(""), None, "no metrics page");
    }

    #[test]
    fn scenario_names_make_distinct_file_names() {
        assert_eq!(slug("nmap -D (decoys)"), "nmap-d-decoys");
        let slugs: std::collections::HashSet<String> = crate::scenarios::SCENARIOS
            .iter()
            .map(|s| slug(s.name))
            .collect();
        assert_eq!(slugs.len(), crate::scenarios::SCENARIOS.len());
    }
}
