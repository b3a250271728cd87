//! The Prometheus text exposition of probe-detector's state (`--metrics-addr`): kernel
//! counters, the engine's tables, alerts by kind and phase. Rendering is pure; the event
//! loop takes the snapshot and [`serve`] answers the scrape. Every metric is listed in docs/metrics.md.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    time::Duration,
};

use probe_common::Counter;

use crate::{output::latency::Latencies, policy::block::BlockStats};

/// The metrics endpoint cannot listen.
#[derive(Debug, thiserror::Error)]
#[error("cannot serve metrics on {addr} (--metrics-addr): {source}")]
pub struct MetricsError {
    /// The address asked for.
    pub addr: SocketAddr,
    /// Why not.
    pub source: std::io::Error,
}

/// Listens on `addr` (non-blocking, for the event loop): done before anything is loaded,
/// so a port in use fails at once with nothing attached.
pub fn bind(addr: SocketAddr) -> Result<std::net::TcpListener, MetricsError> {
    std::net::TcpListener::bind(addr)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .map_err(|source| MetricsError { addr, source })
}

/// Scrapes served at once; a connection beyond them is closed at once.
pub const MAX_CONNECTIONS: usize = 8;

/// A scrape's request for the body, answered by the event loop with a fresh snapshot.
pub type BodyRequest = tokio::sync::oneshot::Sender<String>;

/// Answers one scrape: reads the request line (2 s and 8 KiB at most); only a
/// `GET /metrics` asks the loop (`body`) for a snapshot, taken then, so a connection that
/// never sends a request costs no snapshot; writes the response (2 s at most). `_permit`
/// holds one of [`MAX_CONNECTIONS`] slots until the connection is done.
pub async fn serve(
    mut stream: tokio::net::TcpStream,
    body: tokio::sync::mpsc::Sender<BodyRequest>,
    _permit: tokio::sync::OwnedSemaphorePermit,
) {
    use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _};
    let mut request = String::new();
    let mut reader = tokio::io::BufReader::new(&mut stream).take(8192);
    let read = tokio::time::timeout(Duration::from_secs(2), reader.read_line(&mut request)).await;
    if !matches!(read, Ok(Ok(n)) if n > 0) {
        return;
    }
    let text = if wants_metrics(&request) {
        let (reply, answer) = tokio::sync::oneshot::channel();
        if body.send(reply).await.is_err() {
            return;
        }
        match answer.await {
            Ok(text) => text,
            Err(_) => return,
        }
    } else {
        String::new()
    };
    let response = respond(&request, &text);
    let _ = tokio::time::timeout(
        Duration::from_secs(2),
        stream.write_all(response.as_bytes()),
    )
    .await;
}

/// True for the request line of a scrape (`GET /metrics`, any query).
fn wants_metrics(request_line: &str) -> bool {
    let mut parts = request_line.split_whitespace();
    parts.next() == Some("GET")
        && parts.next().and_then(|p| p.split('?').next()) == Some("/metrics")
}

/// Everything one scrape reports.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Kernel counters, summed over CPUs.
    pub kernel: Vec<(Counter, u64)>,
    /// Engine tables: name, entries held.
    pub tables: Vec<(&'static str, usize)>,
    /// Entries the engine forgot to make room.
    pub evictions: u64,
    /// The engine's worst-case memory with this configuration.
    pub memory_bound_bytes: u64,
    /// Alert records written, by (scan kind, phase).
    pub alerts: BTreeMap<(&'static str, &'static str), u64>,
    /// Alert records held back by the flood limit.
    pub alerts_suppressed: u64,
    /// Ring-buffer records that could not be decoded.
    pub decode_errors: u64,
    /// When probe-detector started, in seconds since the Unix epoch.
    pub start_time_s: f64,
    /// With `--block`: what the blocker did.
    pub blocks: Option<BlockStats>,
    /// The busiest sources of open scans and their probes, at most [`TOP_SOURCES`].
    pub top_sources: Vec<(String, u64)>,
    /// Attack-list rows that could not be written.
    pub attack_list_lost: u64,
    /// Records stdout dropped because its reader did not keep up.
    pub stdout_dropped: u64,
    /// Records lost to write errors, by output (only outputs that lost some).
    pub output_lost: Vec<(String, u64)>,
    /// Probes withheld as traceroutes', and traceroutes found.
    pub traceroutes: (u64, u64),
    /// With `--fleet`: what the publisher did.
    pub fleet: Option<FleetSnapshot>,
    /// How long `start` records took from their deciding outcome to stdout.
    pub start_latency: Latencies,
}

/// A sensor's fleet figures at one moment (`--fleet`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FleetSnapshot {
    /// Evidence records published.
    pub published: u64,
    /// Records not published: over `--fleet-rate`, and lost from a full backlog.
    pub dropped_rate: u64,
    pub dropped_backlog: u64,
    /// Records waiting.
    pub backlog: u64,
    /// 1 while connected.
    pub connected: u64,
    /// Connections made.
    pub connects: u64,
    /// Fleet blocks received.
    pub blocks_received: u64,
    /// Own alert records published.
    pub alerts_published: u64,
}

impl FleetSnapshot {
    /// The figures of `stats` now.
    pub fn of(stats: &crate::fleet::sensor::FleetStats) -> Self {
        use std::sync::atomic::Ordering::Relaxed;
        Self {
            published: stats.published.load(Relaxed),
            dropped_rate: stats.dropped_rate.load(Relaxed),
            dropped_backlog: stats.dropped_backlog.load(Relaxed),
            backlog: stats.backlog.load(Relaxed),
            connected: stats.connected.load(Relaxed),
            connects: stats.connects.load(Relaxed),
            blocks_received: stats.blocks_received.load(Relaxed),
            alerts_published: stats.alerts_published.load(Relaxed),
        }
    }
}

/// Sources the `probe_detector_top_source_probes` family lists at most.
pub const TOP_SOURCES: usize = 10;

/// The exposition text of `snapshot`.
pub fn render(snapshot: &Snapshot) -> String {
    let mut out = String::new();
    let mut family = |name: &str, kind: &str, help: &str, samples: &[(String, String)]| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    };
    family(
        "probe_detector_build_info",
        "gauge",
        "Always 1; the labels name the version, the commit and the eBPF object's hash.",
        &[(
            format!(
                "{{version=\"{}\",commit=\"{}\",ebpf_object=\"{}\"}}",
                env!("CARGO_PKG_VERSION"),
                crate::GIT_COMMIT,
                crate::EBPF_HASH
            ),
            "1".to_owned(),
        )],
    );
    for (counter, value) in &snapshot.kernel {
        family(
            &format!("probe_detector_kernel_{}_total", counter.name()),
            "counter",
            counter.help(),
            &[(String::new(), value.to_string())],
        );
    }
    let tables: Vec<(String, String)> = snapshot
        .tables
        .iter()
        .map(|(table, n)| (format!("{{table=\"{table}\"}}"), n.to_string()))
        .collect();
    family(
        "probe_detector_engine_entries",
        "gauge",
        "Entries held in each of the detection engine's bounded tables.",
        &tables,
    );
    family(
        "probe_detector_engine_evictions_total",
        "counter",
        "Entries the engine forgot to make room (the least worth first).",
        &[(String::new(), snapshot.evictions.to_string())],
    );
    family(
        "probe_detector_engine_memory_bound_bytes",
        "gauge",
        "The most memory the engine's state can take with this configuration.",
        &[(String::new(), snapshot.memory_bound_bytes.to_string())],
    );
    let alerts: Vec<(String, String)> = snapshot
        .alerts
        .iter()
        .map(|((kind, phase), n)| {
            (
                format!("{{kind=\"{kind}\",phase=\"{phase}\"}}"),
                n.to_string(),
            )
        })
        .collect();
    family(
        "probe_detector_alerts_total",
        "counter",
        "Alert records written, by scan kind and phase (start, update, end).",
        &alerts,
    );
    family(
        "probe_detector_alerts_suppressed_total",
        "counter",
        "Alert records held back by --alert-rate-limit.",
        &[(String::new(), snapshot.alerts_suppressed.to_string())],
    );
    family(
        "probe_detector_decode_errors_total",
        "counter",
        "Ring-buffer records that could not be decoded.",
        &[(String::new(), snapshot.decode_errors.to_string())],
    );
    if let Some(fleet) = &snapshot.fleet {
        family(
            "probe_detector_fleet_published_total",
            "counter",
            "Evidence records published to the fleet (--fleet).",
            &[(String::new(), fleet.published.to_string())],
        );
        family(
            "probe_detector_fleet_alerts_published_total",
            "counter",
            "This sensor's own alert records published to the fleet (pd:alerts:SENSOR).",
            &[(String::new(), fleet.alerts_published.to_string())],
        );
        family(
            "probe_detector_fleet_dropped_total",
            "counter",
            "Evidence records the fleet never got, by reason: over --fleet-rate, or the backlog was full (Redis away or slow).",
            &[
                ("{reason=\"rate\"}".into(), fleet.dropped_rate.to_string()),
                (
                    "{reason=\"backlog\"}".into(),
                    fleet.dropped_backlog.to_string(),
                ),
            ],
        );
        family(
            "probe_detector_fleet_backlog",
            "gauge",
            "Evidence records waiting to be published.",
            &[(String::new(), fleet.backlog.to_string())],
        );
        family(
            "probe_detector_fleet_connected",
            "gauge",
            "1 while connected to the fleet's Redis.",
            &[(String::new(), fleet.connected.to_string())],
        );
        family(
            "probe_detector_fleet_connects_total",
            "counter",
            "Connections made to the fleet's Redis (the first and every reconnection).",
            &[(String::new(), fleet.connects.to_string())],
        );
        family(
            "probe_detector_fleet_blocks_received_total",
            "counter",
            "Fleet blocks received (each applied under this host's own never-block rules, or spared).",
            &[(String::new(), fleet.blocks_received.to_string())],
        );
    }
    if let Some(blocks) = snapshot.blocks {
        family(
            "probe_detector_blocks_total",
            "counter",
            "Sources blocked so far (--block), by scans and by hand.",
            &[(String::new(), blocks.made.to_string())],
        );
        family(
            "probe_detector_blocks_active",
            "gauge",
            "Sources blocked now (--block), by kind: automatic or manual.",
            &[
                ("{kind=\"automatic\"}".into(), blocks.automatic.to_string()),
                ("{kind=\"manual\"}".into(), blocks.manual.to_string()),
            ],
        );
        family(
            "probe_detector_blocks_evicted_total",
            "counter",
            "Automatic blocks ended early to make room for newer ones (the table was full).",
            &[(String::new(), blocks.evicted.to_string())],
        );
        family(
            "probe_detector_blocks_lifted_total",
            "counter",
            "Blocks lifted because their source became protected or its scan proved spoofed.",
            &[(String::new(), blocks.lifted.to_string())],
        );
        family(
            "probe_detector_blocks_refused_total",
            "counter",
            "Automatic blocks not made, by reason: over --block-rate, over --block-prefix-cap.",
            &[
                ("{reason=\"rate\"}".into(), blocks.refused_rate.to_string()),
                (
                    "{reason=\"prefix_cap\"}".into(),
                    blocks.refused_prefix.to_string(),
                ),
            ],
        );
    }
    family(
        "probe_detector_start_time_seconds",
        "gauge",
        "When probe-detector started, in seconds since the Unix epoch.",
        &[(String::new(), format!("{:.3}", snapshot.start_time_s))],
    );
    family(
        "probe_detector_attack_list_lost_total",
        "counter",
        "Attack-list rows that could not be written (disk full, file gone); the run goes on.",
        &[(String::new(), snapshot.attack_list_lost.to_string())],
    );
    family(
        "probe_detector_traceroutes_total",
        "counter",
        "Traceroutes recognised (UDP probes arriving with a low TTL stepping with the port).",
        &[(String::new(), snapshot.traceroutes.1.to_string())],
    );
    family(
        "probe_detector_traceroute_probes_total",
        "counter",
        "Failed UDP probes of traceroutes, not counted as port-scan evidence.",
        &[(String::new(), snapshot.traceroutes.0.to_string())],
    );
    family(
        "probe_detector_stdout_dropped_total",
        "counter",
        "Records dropped because stdout's reader did not keep up (--stdout-queue-mib).",
        &[(String::new(), snapshot.stdout_dropped.to_string())],
    );
    let lost: Vec<(String, String)> = snapshot
        .output_lost
        .iter()
        .map(|(output, n)| {
            (
                format!("{{output=\"{}\"}}", label_value(output)),
                n.to_string(),
            )
        })
        .collect();
    family(
        "probe_detector_output_lost_total",
        "counter",
        "Records an output lost to write errors (disk full, syslog daemon gone); the run goes on.",
        &lost,
    );
    let top: Vec<(String, String)> = snapshot
        .top_sources
        .iter()
        .take(TOP_SOURCES)
        .enumerate()
        .map(|(rank, (src, probes))| {
            (
                format!("{{rank=\"{}\",src=\"{src}\"}}", rank + 1),
                probes.to_string(),
            )
        })
        .collect();
    family(
        "probe_detector_top_source_probes",
        "gauge",
        "Outcomes counted for the busiest sources of open scans, at most 10 (rank 1 the busiest): a bounded view, never one series per source.",
        &top,
    );
    histogram(
        &mut out,
        "probe_detector_start_latency_seconds",
        "From the outcome that decided a scan (the kernel's time of it) to the write of its start record: the wakeup, the engine and the write, not what stdout's reader adds.",
        &snapshot.start_latency,
    );
    out
}

/// A histogram family: cumulative `_bucket` samples, `_sum` (seconds) and `_count`.
fn histogram(out: &mut String, name: &str, help: &str, latencies: &Latencies) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} histogram");
    for (le, n) in latencies.cumulative() {
        let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {n}");
    }
    let sum_s = latencies.sum_ns as f64 / 1e9;
    let _ = writeln!(out, "{name}_sum {sum_s}");
    let _ = writeln!(out, "{name}_count {}", latencies.count);
}

/// `--metrics-addr`: `PORT` (on 127.0.0.1), `IP:PORT` or `[IPv6]:PORT`.
pub fn parse_addr(text: &str) -> Result<SocketAddr, String> {
    if let Ok(port) = text.parse::<u16>() {
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
    }
    text.parse().map_err(|_| {
        format!("{text:?} is not PORT, IP:PORT or [IPv6]:PORT (e.g. 9464 or 127.0.0.1:9464)")
    })
}

/// The HTTP response to a request whose first line is `request_line`: the metrics for
/// `GET /metrics`, 404 for other paths, 405 for other methods.
pub fn respond(request_line: &str, body: &str) -> String {
    let method = request_line.split_whitespace().next().unwrap_or("");
    let (status, content_type, body) = if wants_metrics(request_line) {
        ("200 OK", "text/plain; version=0.0.4", body)
    } else if method == "GET" {
        ("404 Not Found", "text/plain", "see /metrics\n")
    } else {
        (
            "405 Method Not Allowed",
            "text/plain",
            "GET /metrics only\n",
        )
    };
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// A label value in the exposition format: backslash, double quote and newline escaped.
fn label_value(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot() -> Snapshot {
        let mut alerts = BTreeMap::new();
        alerts.insert(("vertical", "start"), 2);
        Snapshot {
            kernel: Counter::ALL.iter().map(|&c| (c, 7)).collect(),
            tables: vec![("sources", 3), ("incidents", 1)],
            evictions: 4,
            memory_bound_bytes: 1 << 20,
            alerts,
            alerts_suppressed: 0,
            decode_errors: 0,
            start_time_s: 1_795_246_726.5,
            blocks: Some(BlockStats {
                made: 3,
                automatic: 2,
                manual: 1,
                evicted: 4,
                lifted: 5,
                refused_rate: 6,
                refused_prefix: 7,
            }),
            top_sources: vec![("198.18.7.1".into(), 97), ("198.18.5.0/24".into(), 12)],
            attack_list_lost: 0,
            stdout_dropped: 0,
            output_lost: vec![("file:/var/log/a \"b\".json".into(), 3)],
            traceroutes: (16, 1),
            fleet: Some(FleetSnapshot {
                published: 10,
                dropped_rate: 1,
                dropped_backlog: 2,
                backlog: 3,
                connected: 1,
                connects: 2,
                blocks_received: 4,
                alerts_published: 5,
            }),
            start_latency: {
                let mut latencies = Latencies::default();
                latencies.observe(Duration::from_micros(80));
                latencies.observe(Duration::from_micros(1_500));
                latencies
            },
        }
    }

    #[test]
    fn every_family_has_help_and_type_and_parses_as_exposition_text() {
        let text = render(&snapshot());
        let mut typed = std::collections::HashMap::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
                assert!(
                    typed.insert(name.to_owned(), kind).is_none(),
                    "{name} typed twice"
                );
            } else if !line.starts_with("# HELP ") {
                // name{labels} value
                let (series, value) = line.rsplit_once(' ').unwrap();
                value.parse::<f64>().unwrap();
                let name = series.split('{').next().unwrap();
                // A histogram's samples are its name with a suffix.
                let family = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|suffix| {
                        name.strip_suffix(suffix)
                            .filter(|f| typed.get(*f) == Some(&"histogram"))
                    })
                    .unwrap_or(name);
                assert!(
                    typed.contains_key(family),
                    "{name} has no TYPE line before it"
                );
                assert!(
                    name.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                    "{name}"
                );
            }
        }
        assert!(text.contains("probe_detector_kernel_ringbuf_drops_total 7\n"));
        assert!(
            text.contains("probe_detector_alerts_total{kind=\"vertical\",phase=\"start\"} 2\n")
        );
        assert!(text.contains("probe_detector_engine_entries{table=\"sources\"} 3\n"));
        assert!(text.contains("probe_detector_blocks_active{kind=\"automatic\"} 2\n"));
        assert!(text.contains("probe_detector_blocks_active{kind=\"manual\"} 1\n"));
        assert!(text.contains("probe_detector_blocks_evicted_total 4\n"));
        assert!(text.contains(
            "probe_detector_output_lost_total{output=\"file:/var/log/a \\\"b\\\".json\"} 3\n"
        ));
        assert!(text.contains("probe_detector_blocks_refused_total{reason=\"prefix_cap\"} 7\n"));
        assert!(
            text.contains("probe_detector_top_source_probes{rank=\"1\",src=\"198.18.7.1\"} 97\n")
        );
        assert!(
            text.contains(
                "probe_detector_top_source_probes{rank=\"2\",src=\"198.18.5.0/24\"} 12\n"
            )
        );
        for sample in [
            "probe_detector_start_latency_seconds_bucket{le=\"0.0001\"} 1\n",
            "probe_detector_start_latency_seconds_bucket{le=\"0.001\"} 1\n",
            "probe_detector_start_latency_seconds_bucket{le=\"0.0025\"} 2\n",
            "probe_detector_start_latency_seconds_bucket{le=\"+Inf\"} 2\n",
            "probe_detector_start_latency_seconds_sum 0.00158\n",
            "probe_detector_start_latency_seconds_count 2\n",
        ] {
            assert!(text.contains(sample), "{sample} in {text}");
        }
        let build = format!(
            "probe_detector_build_info{{version=\"{}\",commit=\"{}\",ebpf_object=\"{}\"}} 1\n",
            env!("CARGO_PKG_VERSION"),
            crate::GIT_COMMIT,
            crate::EBPF_HASH
        );
        assert!(text.contains(&build), "{text}");
    }

    #[test]
    fn only_a_scrape_asks_for_a_snapshot() {
        assert!(wants_metrics("GET /metrics HTTP/1.1\r\n"));
        assert!(wants_metrics("GET /metrics?x=1 HTTP/1.0\r\n"));
        assert!(!wants_metrics("GET / HTTP/1.1\r\n"));
        assert!(!wants_metrics("POST /metrics HTTP/1.1\r\n"));
        assert!(!wants_metrics(""));
    }

    #[test]
    fn docs_list_every_metric() {
        let docs = include_str!("../../../docs/metrics.md");
        for line in render(&snapshot()).lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let name = rest.split(' ').next().unwrap();
                assert!(
                    docs.contains(&format!("`{name}`")),
                    "docs/metrics.md misses {name}"
                );
            }
        }
    }

    #[test]
    fn addresses_default_to_localhost_and_requests_are_answered() {
        assert_eq!(parse_addr("9464"), Ok("127.0.0.1:9464".parse().unwrap()));
        assert_eq!(parse_addr("[::1]:9464"), Ok("[::1]:9464".parse().unwrap()));
        assert!(parse_addr("localhost").unwrap_err().contains("IP:PORT"));
        let ok = respond("GET /metrics HTTP/1.1", "x 1\n");
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n") && ok.ends_with("\r\n\r\nx 1\n"));
        assert!(respond("GET / HTTP/1.1", "").starts_with("HTTP/1.1 404"));
        assert!(respond("POST /metrics HTTP/1.1", "").starts_with("HTTP/1.1 405"));
    }
}
