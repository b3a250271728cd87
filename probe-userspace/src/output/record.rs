//! The alert record: one JSON object per line that validates against Suricata's EVE schema
//! (`event_type: "alert"`), so pipelines built for eve.json take it as it is. What EVE has
//! no field for goes where its schema leaves room: the scan's summary and the evidence on
//! forged sources in `alert.context`, the tags a SIEM filters on in `alert.metadata` (string
//! arrays, as Suricata writes rule metadata). docs/alerts.md has every field.

use std::time::Duration;

use serde::Serialize;

use crate::{
    clock::{self, WallClock},
    detect::{DetectorName, EngineConfig, MAX_SOURCES, ScanAlert, ScanKind, Technique},
    event::proto_name,
    output::services::{self, Service},
};

/// Signature id of the vertical port scan alert (1 000 000 - 1 999 999 is the range Snort
/// and Suricata leave for local rules).
pub const SID_VERTICAL_SCAN: u32 = 1_900_001;
/// Signature id of the horizontal sweep alert.
pub const SID_HORIZONTAL_SWEEP: u32 = 1_900_002;
/// Signature id of the distributed (decoy) scan alert.
pub const SID_DISTRIBUTED_SCAN: u32 = 1_900_003;

/// EVE severities: 1 = high, 2 = medium, 3 = low.
const SEVERITY_HIGH: u8 = 1;
const SEVERITY_MEDIUM: u8 = 2;

/// The tuning an alert reports, so a reader knows what it means.
#[derive(Clone, Copy, Debug)]
pub struct Thresholds {
    /// Distinct ports that make a port scan (`--scan-ports`).
    pub ports: usize,
    /// Distinct hosts that make a sweep (`--sweep-hosts`).
    pub hosts: usize,
    /// Window, seconds (`--scan-window`).
    pub window_s: f64,
    /// Sources that make a distributed scan (`--crowd-sources`).
    pub sources: usize,
    /// Failed contacts that make a slow scan (`--slow-failed`).
    pub slow_failed: u32,
    /// Horizon of the slow-scan detector, seconds (`--slow-horizon`).
    pub slow_horizon_s: f64,
}

impl Thresholds {
    /// The thresholds of an engine configuration.
    pub fn of(config: &EngineConfig) -> Self {
        Self {
            ports: config.min_ports,
            hosts: config.min_hosts,
            window_s: config.window.as_secs_f64(),
            sources: config.crowd.map_or(0, |c| c.min_sources),
            slow_failed: config.slow.map_or(0, |s| s.min_failed),
            slow_horizon_s: config.slow.map_or(0.0, |s| s.horizon.as_secs_f64()),
        }
    }
}

/// One alert line.
#[derive(Debug, Serialize)]
pub struct AlertRecord {
    /// When the scan was recognised, as EVE writes it (UTC, microseconds, `+0000`).
    pub timestamp: String,
    /// Always `"alert"`.
    pub event_type: &'static str,
    /// The scanning source: the first seen when `alert.context.src_ips` lists several.
    pub src_ip: String,
    /// The scanned target (vertical and distributed scans; a sweep has many, in
    /// `alert.context.dest_ips`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dest_ip: Option<String>,
    /// The probed port, when the scan touched exactly one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dest_port: Option<u16>,
    /// `"TCP"`, `"UDP"`, `"ICMP"`, `"IPv6-ICMP"` or the protocol number.
    pub proto: String,
    /// Interface the probes arrived on (its index if the name is gone).
    pub in_iface: String,
    /// The sensor's name (`--sensor-name`, default the host name), as EVE's `host`.
    pub host: String,
    /// What matched, with the scan's summary.
    pub alert: AlertInfo,
}

/// The `alert.context.spoof` object.
#[derive(Debug, Serialize)]
pub struct SpoofInfo {
    /// True when every probe arrived with the same TTL (hop limit), as packets of one
    /// host's stack over one path do; nmap randomises the TTL of its raw probes.
    pub ttl_consistent: bool,
    /// Lowest and highest TTL seen (0 when unknown).
    pub ttl_min: u8,
    pub ttl_max: u8,
    /// True when some of `reasons` applies.
    pub suspected: bool,
    /// `decoys` (a distributed scan: all sources but one may be forged) or `martian` (a
    /// source no packet can come from).
    pub reasons: Vec<&'static str>,
}

/// The `alert` object, as in EVE.
#[derive(Debug, Serialize)]
pub struct AlertInfo {
    /// `"allowed"`, or `"blocked"` when `--block` blocked the source.
    pub action: &'static str,
    /// Generator id, 1 as for rule-based alerts.
    pub gid: u32,
    /// Stable id of the detection.
    pub signature_id: u32,
    /// Revision of the detection.
    pub rev: u32,
    /// Human-readable summary.
    pub signature: String,
    /// Classification, from Snort/Suricata's classification.config.
    pub category: &'static str,
    /// 1 = high (stealth techniques, decoys) .. 3 = low.
    pub severity: u8,
    /// Tags to filter on, each a list of strings as EVE's rule metadata.
    pub metadata: AlertMetadata,
    /// The scan: its summary, the evidence on forged sources, every source and target.
    pub context: AlertContext,
}

/// The `alert.metadata` object: one-element string lists, as Suricata writes rule
/// metadata, so Elastic, Kibana and EveBox index them as keywords.
#[derive(Debug, Serialize)]
pub struct AlertMetadata {
    /// `probe-detector` and the scan's kind as a tag: `port-scan`, `host-sweep` or
    /// `distributed-scan`.
    pub tag: Vec<&'static str>,
    /// `vertical`, `horizontal` or `distributed`.
    pub scan_kind: [&'static str; 1],
    /// `start`, `update` or `end`.
    pub scan_phase: [&'static str; 1],
    /// `trw`, `threshold`, `slow` or `crowd`.
    pub detector: [&'static str; 1],
    /// `SYN`, `FIN`, `NULL`, `Xmas`, `odd-flags`, `ACK`, `UDP` or `ping`.
    pub technique: [&'static str; 1],
}

/// The `alert.context` object.
#[derive(Debug, Serialize)]
pub struct AlertContext {
    /// What was seen.
    pub scan: ScanInfo,
    /// Whether the source addresses may be forged.
    pub spoof: SpoofInfo,
    /// Every source of a distributed scan or of a group of sources, sorted (up to 256).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub src_ips: Option<Vec<String>>,
    /// The network sources were grouped by (`--group-v4`, `--group-v6`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub src_net: Option<String>,
    /// The scanned targets (sweeps).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dest_ips: Option<Vec<String>>,
    /// A correlator's alert: the sensors whose evidence made it (`probe-detector
    /// correlate`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fleet: Option<crate::fleet::sources::FleetInfo>,
}

/// The `scan` object: what was seen.
#[derive(Debug, Serialize)]
pub struct ScanInfo {
    /// `"start"` (recognised), `"update"` (goes on, at most once per `--update-interval`)
    /// or `"end"` (idle for `--idle-timeout`, or the detector stopped: the summary).
    pub phase: &'static str,
    /// `"vertical"` (many ports of one host), `"horizontal"` (many hosts) or
    /// `"distributed"` (many sources on the same ports of one host).
    pub kind: &'static str,
    /// The detector that recognised the scan first: `"trw"` (sequential hypothesis test),
    /// `"threshold"`, `"slow"` (hour-long summaries) or `"crowd"` (distributed scans).
    pub detector: &'static str,
    /// `SYN`, `FIN`, `NULL`, `Xmas`, `odd-flags`, `ACK`, `UDP` or `ping`.
    pub technique: &'static str,
    /// Distinct ports: failed on the target (vertical), or used across targets (sweeps).
    pub ports: Vec<u16>,
    /// Number of distinct hosts scanned.
    pub hosts: usize,
    /// Number of distinct sources (1 unless distributed or grouped).
    pub sources: usize,
    /// The well-known services among `ports`, with their risk.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<NamedPort>,
    /// Outcomes counted for this scan (the kernel reports the first of each kind per
    /// source, target and port; retransmissions of one probe are not counted again).
    pub probes: u64,
    /// Of those, failed (refused, unreachable, prohibited, unanswered).
    pub failed: u64,
    /// Of those, succeeded.
    pub succeeded: u64,
    /// Outcomes per second from `first_seen` to `last_seen`.
    pub rate_pps: f64,
    /// TCP flags seen in the probes, OR-ed (`0x02` SYN, `0x29` Xmas, ...).
    pub tcp_flags: String,
    /// The first detector's score: TRW's likelihood ratio (flags at 99 by default), or the
    /// threshold detector's count over its threshold.
    pub score: f64,
    /// Time of the first counted outcome, as `timestamp`.
    pub first_seen: String,
    /// Time of the outcome that completed the scan (or, for `update` and `end`, the
    /// latest), as `timestamp`.
    pub last_seen: String,
    /// What makes this kind of scan for the detector that recognised it: distinct ports
    /// (`--scan-ports`), hosts (`--sweep-hosts`), sources (`--crowd-sources`) or, for the
    /// slow-scan detector, failed contacts (`--slow-failed`).
    pub threshold: usize,
    /// Window they are counted in, seconds (`--scan-window`, or `--slow-horizon`).
    pub window_s: f64,
}

impl AlertRecord {
    /// Builds the record of a scan alert: `iface` is the name of the interface the probes
    /// arrived on, `host` the sensor's name, `clock` converts the scan's times (the
    /// kernel's monotonic clock: [`WallClock::now`]; a replay's times are the capture's,
    /// since the Unix epoch: [`WallClock::unix`]).
    pub fn from_scan(
        scan: &ScanAlert,
        iface: String,
        host: String,
        thresholds: Thresholds,
        clock: WallClock,
    ) -> Self {
        let proto = proto_name(scan.proto);
        let span = human_span(scan.last_seen.saturating_sub(scan.first_seen));
        let wall = |t| clock::eve_timestamp(clock.at(t));
        let technique = scan.technique.name();
        // "TCP SYN port scan", but "UDP port scan", not "UDP UDP"; an "IP protocol scan"
        // probes protocols, not ports.
        let (what, scan_noun, items) = if scan.technique == Technique::Protocol {
            ("IP".to_owned(), "protocol scan", "protocols")
        } else if technique == proto {
            (proto.clone(), "port scan", "ports")
        } else {
            (format!("{proto} {technique}"), "port scan", "ports")
        };
        let (signature_id, signature, kind, mut threshold) = match scan.kind {
            ScanKind::Vertical => (
                SID_VERTICAL_SCAN,
                format!(
                    "PROBE-DETECTOR {what} {scan_noun}: {} {items} of {} probed by {} in {span}",
                    scan.ports.len(),
                    scan.targets
                        .first()
                        .map_or_else(String::new, ToString::to_string),
                    scan.src
                ),
                scan.kind.name(),
                thresholds.ports,
            ),
            ScanKind::Horizontal => (
                SID_HORIZONTAL_SWEEP,
                format!(
                    "PROBE-DETECTOR host sweep: {} hosts probed by {} in {span} ({technique}{})",
                    scan.targets.len(),
                    scan.src,
                    match scan.ports.as_slice() {
                        [] => String::new(),
                        [port] => format!(", port {port}"),
                        ports => format!(", {} ports", ports.len()),
                    },
                ),
                scan.kind.name(),
                thresholds.hosts,
            ),
            ScanKind::Distributed => (
                SID_DISTRIBUTED_SCAN,
                format!(
                    "PROBE-DETECTOR {what} distributed {scan_noun}: {} {items} of {} probed by {}{} sources in {span} ({})",
                    scan.ports.len(),
                    scan.targets
                        .first()
                        .map_or_else(String::new, ToString::to_string),
                    scan.sources.len(),
                    if scan.sources.len() >= MAX_SOURCES {
                        "+"
                    } else {
                        ""
                    },
                    if scan.spoof.spread() {
                        "one or two probes per source: a split scan or a forged flood"
                    } else {
                        "decoys likely"
                    },
                ),
                scan.kind.name(),
                thresholds.sources,
            ),
        };
        let mut window_s = thresholds.window_s;
        if scan.detector == DetectorName::Slow {
            threshold = thresholds.slow_failed as usize;
            window_s = thresholds.slow_horizon_s;
        }
        let targets: Vec<String> = scan.targets.iter().map(ToString::to_string).collect();
        let span_s = scan.last_seen.saturating_sub(scan.first_seen).as_secs_f64();
        let rate_pps = if span_s > 0.0 {
            scan.probes as f64 / span_s
        } else {
            scan.probes as f64
        };
        let (dest_ip, dest_ips) = match scan.kind {
            ScanKind::Vertical | ScanKind::Distributed => (targets.first().cloned(), None),
            ScanKind::Horizontal => (None, Some(targets)),
        };
        let tag = match scan.kind {
            ScanKind::Vertical => "port-scan",
            ScanKind::Horizontal => "host-sweep",
            ScanKind::Distributed => "distributed-scan",
        };
        Self {
            timestamp: wall(scan.last_seen),
            event_type: "alert",
            src_ip: scan.src.to_string(),
            dest_ip,
            dest_port: match scan.ports.as_slice() {
                [port] => Some(*port),
                _ => None,
            },
            proto,
            in_iface: iface,
            host,
            alert: AlertInfo {
                action: "allowed",
                gid: 1,
                signature_id,
                rev: 1,
                signature,
                category: "Attempted Information Leak",
                severity: if scan.technique.is_stealth() || scan.kind == ScanKind::Distributed {
                    SEVERITY_HIGH
                } else {
                    SEVERITY_MEDIUM
                },
                metadata: AlertMetadata {
                    tag: vec!["probe-detector", tag],
                    scan_kind: [kind],
                    scan_phase: [scan.phase.name()],
                    detector: [scan.detector.name()],
                    technique: [technique],
                },
                context: AlertContext {
                    scan: ScanInfo {
                        phase: scan.phase.name(),
                        kind,
                        detector: scan.detector.name(),
                        technique,
                        ports: scan.ports.clone(),
                        hosts: scan.targets.len(),
                        sources: scan.sources.len().max(1),
                        services: named(scan.proto, &scan.ports),
                        probes: scan.probes,
                        failed: scan.failed,
                        succeeded: scan.succeeded,
                        rate_pps: (rate_pps * 100.0).round() / 100.0,
                        tcp_flags: format!("{:#04x}", scan.tcp_flags),
                        score: (scan.score * 100.0).round() / 100.0,
                        first_seen: wall(scan.first_seen),
                        last_seen: wall(scan.last_seen),
                        threshold,
                        window_s,
                    },
                    spoof: SpoofInfo {
                        ttl_consistent: scan.spoof.ttl_consistent(),
                        ttl_min: scan.spoof.ttl_min,
                        ttl_max: scan.spoof.ttl_max,
                        suspected: scan.spoof.suspected(),
                        reasons: scan.spoof.reasons.clone(),
                    },
                    src_ips: (scan.sources.len() > 1 || scan.src_net.is_some())
                        .then(|| scan.sources.iter().map(ToString::to_string).collect()),
                    src_net: scan.src_net.map(|(net, len)| format!("{net}/{len}")),
                    dest_ips,
                    fleet: None,
                },
            },
        }
    }
}

/// A port with its well-known service.
#[derive(Debug, Serialize)]
pub struct NamedPort {
    pub port: u16,
    #[serde(flatten)]
    pub service: Service,
}

/// The named services among `ports` of protocol `proto`.
fn named(proto: u8, ports: &[u16]) -> Vec<NamedPort> {
    ports
        .iter()
        .filter_map(|&port| {
            services::lookup(proto, port).map(|service| NamedPort { port, service })
        })
        .collect()
}

/// A record as one line of JSON, without the newline.
pub fn json_line(record: &impl Serialize) -> String {
    // Serialising plain strings and numbers cannot fail.
    serde_json::to_string(record).unwrap_or_default()
}

/// A duration for people: `42 µs`, `0.2 ms`, `1.5 s`, `12 min`.
fn human_span(span: Duration) -> String {
    let secs = span.as_secs_f64();
    if secs < 1e-3 {
        format!("{} µs", span.as_micros())
    } else if secs < 1.0 {
        format!("{:.1} ms", secs * 1e3)
    } else if secs < 600.0 {
        format!("{secs:.1} s")
    } else {
        format!("{:.0} min", secs / 60.0)
    }
}

#[cfg(test)]
mod tests {
    use std::{
        collections::BTreeSet,
        net::{IpAddr, Ipv4Addr},
    };

    use super::*;
    use crate::detect::{Phase, Spoof, Technique};

    const THRESHOLDS: Thresholds = Thresholds {
        ports: 3,
        hosts: 2,
        window_s: 60.0,
        sources: 3,
        slow_failed: 8,
        slow_horizon_s: 3600.0,
    };

    fn scan(
        kind: ScanKind,
        technique: Technique,
        targets: Vec<IpAddr>,
        ports: Vec<u16>,
    ) -> ScanAlert {
        let now = clock::monotonic_now();
        ScanAlert {
            phase: Phase::Start,
            detector: DetectorName::Threshold,
            failed: 4,
            succeeded: 0,
            tcp_flags: 0x02,
            score: 1.0,
            kind,
            src: IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1)),
            sources: vec![IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1))],
            src_net: None,
            spoof: Spoof {
                ttl_min: 64,
                ttl_max: 64,
                reasons: Vec::new(),
            },
            targets,
            proto: 6,
            technique,
            ifindex: 2,
            ports,
            probes: 4,
            first_seen: now - Duration::from_millis(1500),
            last_seen: now,
        }
    }

    fn render(record: &AlertRecord) -> serde_json::Value {
        let line = json_line(record);
        assert!(!line.contains('\n'));
        serde_json::from_str(&line).unwrap()
    }

    /// The rendered record of `scan`, seen on `iface` by sensor `sensor`.
    fn rendered(scan: &ScanAlert, iface: &str) -> serde_json::Value {
        render(&AlertRecord::from_scan(
            scan,
            iface.into(),
            "sensor".into(),
            THRESHOLDS,
            WallClock::now(),
        ))
    }

    #[test]
    fn a_vertical_scan_renders_the_documented_fields() {
        let victim = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2));
        let s = scan(
            ScanKind::Vertical,
            Technique::Syn,
            vec![victim],
            vec![1, 7, 9],
        );
        let v = rendered(&s, "vic0");
        assert_eq!(v["event_type"], "alert");
        assert_eq!(v["src_ip"], "198.18.0.1");
        assert_eq!(v["dest_ip"], "198.18.0.2");
        assert!(v["alert"]["context"].get("dest_ips").is_none());
        assert_eq!(v["host"], "sensor");
        assert_eq!(
            v["alert"]["metadata"],
            serde_json::json!({
                "tag": ["probe-detector", "port-scan"],
                "scan_kind": ["vertical"],
                "scan_phase": ["start"],
                "detector": ["threshold"],
                "technique": ["SYN"],
            })
        );
        assert_eq!(v["proto"], "TCP");
        assert_eq!(v["in_iface"], "vic0");
        assert_eq!(v["alert"]["severity"], 2);
        assert_eq!(v["alert"]["signature_id"], SID_VERTICAL_SCAN);
        assert_eq!(v["alert"]["category"], "Attempted Information Leak");
        assert_eq!(
            v["alert"]["signature"],
            "PROBE-DETECTOR TCP SYN port scan: 3 ports of 198.18.0.2 probed by 198.18.0.1 in 1.5 s"
        );
        assert_eq!(
            v["alert"]["context"]["scan"]["ports"],
            serde_json::json!([1, 7, 9])
        );
        // Port 7 is not in the table, 1 and 9 neither: no services listed.
        assert!(v["alert"]["context"]["scan"].get("services").is_none());
        assert_eq!(
            (
                v["alert"]["context"]["scan"]["probes"].as_u64(),
                v["alert"]["context"]["scan"]["hosts"].as_u64()
            ),
            (Some(4), Some(1))
        );
        assert_eq!(
            (
                v["alert"]["context"]["scan"]["kind"].as_str(),
                v["alert"]["context"]["scan"]["technique"].as_str()
            ),
            (Some("vertical"), Some("SYN"))
        );
        assert_eq!(v["alert"]["context"]["scan"]["threshold"], 3);
        assert_eq!(
            (
                v["alert"]["context"]["scan"]["phase"].as_str(),
                v["alert"]["context"]["scan"]["detector"].as_str()
            ),
            (Some("start"), Some("threshold"))
        );
        assert_eq!(
            (
                v["alert"]["context"]["scan"]["failed"].as_u64(),
                v["alert"]["context"]["scan"]["succeeded"].as_u64()
            ),
            (Some(4), Some(0))
        );
        assert_eq!(v["alert"]["context"]["scan"]["tcp_flags"], "0x02");
        // 4 outcomes in 1.5 s.
        assert_eq!(v["alert"]["context"]["scan"]["rate_pps"], 2.67);
        assert!(
            v.get("dest_port").is_none(),
            "three ports: no single dest_port"
        );
        let ts = v["timestamp"].as_str().unwrap();
        // 2026-11-21T06:01:02.123456+0000, as EVE writes it.
        assert_eq!(ts.len(), 31, "{ts}");
        assert!(ts.ends_with("+0000") && ts.as_bytes()[19] == b'.', "{ts}");
        assert_eq!(v["alert"]["context"]["scan"]["last_seen"], v["timestamp"]);
        assert!(
            v["alert"]["context"]["scan"]["first_seen"]
                .as_str()
                .unwrap()
                < ts
        );
    }

    #[test]
    fn stealth_scans_are_high_severity() {
        let victim = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2));
        let s = scan(
            ScanKind::Vertical,
            Technique::Xmas,
            vec![victim],
            vec![1, 2, 3],
        );
        let v = rendered(&s, "vic0");
        assert_eq!(v["alert"]["severity"], 1);
        assert!(
            v["alert"]["signature"]
                .as_str()
                .unwrap()
                .contains("TCP Xmas port scan")
        );
    }

    #[test]
    fn a_udp_scan_says_udp_once() {
        let victim = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2));
        let mut s = scan(
            ScanKind::Vertical,
            Technique::Udp,
            vec![victim],
            vec![53, 161, 500],
        );
        s.proto = 17;
        let v = rendered(&s, "vic0");
        assert_eq!(
            v["alert"]["signature"],
            "PROBE-DETECTOR UDP port scan: 3 ports of 198.18.0.2 probed by 198.18.0.1 in 1.5 s"
        );
    }

    #[test]
    fn a_protocol_scan_counts_protocols() {
        let victim = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2));
        let mut s = scan(
            ScanKind::Vertical,
            Technique::Protocol,
            vec![victim],
            vec![2, 47, 50, 51],
        );
        s.proto = 0;
        let v = rendered(&s, "vic0");
        assert_eq!(
            v["alert"]["signature"],
            "PROBE-DETECTOR IP protocol scan: 4 protocols of 198.18.0.2 probed by 198.18.0.1 in 1.5 s"
        );
        assert_eq!(v["proto"], "IP");
    }

    #[test]
    fn a_sweep_lists_its_hosts() {
        let hosts = vec![
            IpAddr::V4(Ipv4Addr::new(198, 18, 1, 1)),
            IpAddr::V4(Ipv4Addr::new(198, 18, 1, 2)),
        ];
        let s = scan(ScanKind::Horizontal, Technique::Syn, hosts, vec![80]);
        let v = rendered(&s, "wan0");
        assert!(v.get("dest_ip").is_none());
        assert_eq!(
            v["alert"]["context"]["dest_ips"],
            serde_json::json!(["198.18.1.1", "198.18.1.2"])
        );
        assert_eq!(v["alert"]["signature_id"], SID_HORIZONTAL_SWEEP);
        assert_eq!(v["dest_port"], 80, "one port swept");
        assert_eq!(
            v["alert"]["signature"],
            "PROBE-DETECTOR host sweep: 2 hosts probed by 198.18.0.1 in 1.5 s (SYN, port 80)"
        );
        assert_eq!(
            (
                v["alert"]["context"]["scan"]["kind"].as_str(),
                v["alert"]["context"]["scan"]["hosts"].as_u64()
            ),
            (Some("horizontal"), Some(2))
        );
        assert_eq!(v["alert"]["context"]["scan"]["threshold"], 2);
    }

    #[test]
    fn spans_read_naturally() {
        assert_eq!(human_span(Duration::from_micros(42)), "42 µs");
        assert_eq!(human_span(Duration::from_micros(1740)), "1.7 ms");
        assert_eq!(human_span(Duration::from_millis(1500)), "1.5 s");
        assert_eq!(human_span(Duration::from_secs(3600)), "60 min");
    }

    /// The objects of an alert record, by path; their fields are documented one by one.
    const OBJECTS: [&str; 6] = [
        "",
        "alert",
        "alert.metadata",
        "alert.context",
        "alert.context.scan",
        "alert.context.spoof",
    ];

    /// Fields present only in some alerts.
    const OPTIONAL: [&str; 6] = [
        "dest_ip",
        "dest_port",
        "alert.context.src_ips",
        "alert.context.src_net",
        "alert.context.dest_ips",
        "alert.context.scan.services",
    ];

    /// The value at a dotted path ("" is the record).
    fn at<'a>(v: &'a serde_json::Value, path: &str) -> &'a serde_json::Value {
        path.split('.')
            .filter(|p| !p.is_empty())
            .fold(v, |v, key| &v[key])
    }

    /// The dotted paths of the fields of the object at `path`.
    fn fields(v: &serde_json::Value, path: &str) -> BTreeSet<String> {
        at(v, path)
            .as_object()
            .map(|o| {
                o.keys()
                    .map(|k| {
                        if path.is_empty() {
                            k.clone()
                        } else {
                            format!("{path}.{k}")
                        }
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    #[test]
    fn the_documented_examples_and_field_tables_match_the_records() {
        let docs = include_str!("../../../docs/alerts.md");
        let victim = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2));
        let rendered = render(&AlertRecord::from_scan(
            &scan(
                ScanKind::Vertical,
                Technique::Syn,
                vec![victim],
                vec![21, 22],
            ),
            "vic0".into(),
            "sensor".into(),
            THRESHOLDS,
            WallClock::now(),
        ));
        let mut examples = 0;
        for line in docs.lines().filter(|l| l.starts_with("{\"timestamp\"")) {
            let example: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("docs/alerts.md: not JSON ({e}): {line}"));
            if example["event_type"] != "alert" {
                continue;
            }
            examples += 1;
            for object in OBJECTS {
                let (want, have) = (fields(&rendered, object), fields(&example, object));
                let missing: Vec<_> = want
                    .difference(&have)
                    .filter(|k| !OPTIONAL.contains(&k.as_str()))
                    .collect();
                let unknown: Vec<_> = have
                    .difference(&want)
                    .filter(|k| !OPTIONAL.contains(&k.as_str()))
                    .collect();
                assert!(
                    missing.is_empty() && unknown.is_empty(),
                    "docs/alerts.md example is stale in `{object}`: missing {missing:?}, unknown {unknown:?}: {line}"
                );
            }
        }
        assert!(examples >= 4, "{examples} alert examples");
        // Every field has a row in the field table.
        let mut documented: Vec<String> = OPTIONAL.iter().map(ToString::to_string).collect();
        for object in OBJECTS {
            documented.extend(
                fields(&rendered, object)
                    .into_iter()
                    .filter(|f| !OBJECTS.contains(&f.as_str())),
            );
        }
        for field in documented {
            assert!(
                docs.contains(&format!("| `{field}`")) || docs.contains(&format!(", `{field}`")),
                "docs/alerts.md has no row for `{field}`"
            );
        }
    }
}
