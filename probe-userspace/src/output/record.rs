//! The records written to stdout, one JSON object per line, shaped like Suricata's EVE
//! events so jq recipes and SIEM pipelines written for EVE apply: alerts
//! (`event_type: "alert"`), and with `--probes` each outcome the kernel reported
//! (`event_type: "probe"`).

use std::time::Duration;

use serde::Serialize;

use crate::{
    clock::{self, WallClock},
    detect::{DetectorName, EngineConfig, ScanAlert, ScanKind},
    event::{Probe, outcome_name, probe_type_name, proto_name},
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
    /// When the scan was recognised: RFC 3339, UTC, microseconds.
    pub timestamp: String,
    /// Always `"alert"`.
    pub event_type: &'static str,
    /// The scanning source: the first seen when `src_ips` lists several.
    pub src_ip: String,
    /// Every source of a distributed scan or of a group of sources, sorted (up to 256).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub src_ips: Option<Vec<String>>,
    /// The network sources were grouped by (`--group-v4`, `--group-v6`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub src_net: Option<String>,
    /// The scanned target (vertical and distributed scans).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dest_ip: Option<String>,
    /// The scanned targets (sweeps).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dest_ips: Option<Vec<String>>,
    /// The probed port, when the scan touched exactly one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dest_port: Option<u16>,
    /// `"TCP"`, `"UDP"`, `"ICMP"`, `"IPv6-ICMP"` or the protocol number.
    pub proto: String,
    /// Interface the probes arrived on (its index if the name is gone).
    pub in_iface: String,
    /// What matched.
    pub alert: AlertInfo,
    /// The evidence.
    pub scan: ScanInfo,
    /// Whether the source addresses may be forged.
    pub spoof: SpoofInfo,
}

/// The `spoof` object.
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
    /// `"allowed"`: we only observe.
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
    /// 1 = high (stealth techniques) .. 3 = low.
    pub severity: u8,
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
    /// Time of the first counted outcome, RFC 3339.
    pub first_seen: String,
    /// Time of the outcome that completed the scan, RFC 3339.
    pub last_seen: String,
    /// What makes this kind of scan for the detector that recognised it: distinct ports
    /// (`--scan-ports`), hosts (`--sweep-hosts`), sources (`--crowd-sources`) or, for the
    /// slow-scan detector, failed contacts (`--slow-failed`).
    pub threshold: usize,
    /// Window they are counted in, seconds (`--scan-window`, or `--slow-horizon`).
    pub window_s: f64,
}

impl AlertRecord {
    /// Builds the record of a scan alert. `iface` is the name of the interface the probes
    /// arrived on.
    pub fn from_scan(scan: &ScanAlert, iface: String, thresholds: Thresholds) -> Self {
        Self::from_scan_at(scan, iface, thresholds, WallClock::now())
    }

    /// [`AlertRecord::from_scan`] with the scan's times converted by `clock` (a replay's
    /// times are the capture's, since the Unix epoch: [`WallClock::unix`]).
    pub fn from_scan_at(
        scan: &ScanAlert,
        iface: String,
        thresholds: Thresholds,
        clock: WallClock,
    ) -> Self {
        let proto = proto_name(scan.proto);
        let span = human_span(scan.last_seen.saturating_sub(scan.first_seen));
        let wall = |t| clock::rfc3339_micros(clock.at(t));
        let technique = scan.technique.name();
        let (signature_id, signature, kind, mut threshold) = match scan.kind {
            ScanKind::Vertical => (
                SID_VERTICAL_SCAN,
                format!(
                    "PROBE-DETECTOR {proto} {technique} port scan: {} ports of {} probed by {} in {span}",
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
                    "PROBE-DETECTOR {proto} {technique} distributed port scan: {} ports of {} probed by {} sources in {span} (decoys likely)",
                    scan.ports.len(),
                    scan.targets
                        .first()
                        .map_or_else(String::new, ToString::to_string),
                    scan.sources.len(),
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
        Self {
            timestamp: wall(scan.last_seen),
            event_type: "alert",
            src_ip: scan.src.to_string(),
            src_ips: (scan.sources.len() > 1 || scan.src_net.is_some())
                .then(|| scan.sources.iter().map(ToString::to_string).collect()),
            src_net: scan.src_net.map(|(net, len)| format!("{net}/{len}")),
            dest_ip,
            dest_ips,
            dest_port: match scan.ports.as_slice() {
                [port] => Some(*port),
                _ => None,
            },
            in_iface: iface,
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
            },
            proto,
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

/// One outcome the kernel reported (`--probes`).
#[derive(Debug, Serialize)]
pub struct ProbeRecord {
    /// When the kernel saw the outcome: RFC 3339, UTC, microseconds.
    pub timestamp: String,
    /// Always `"probe"`.
    pub event_type: &'static str,
    pub src_ip: String,
    pub src_port: u16,
    pub dest_ip: String,
    pub dest_port: u16,
    pub proto: String,
    pub in_iface: String,
    pub probe: ProbeInfo,
    /// The probed port's well-known service, with the seed's signature name
    /// (`TCP_Probe_Ftp`) and risk.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<ServiceInfo>,
}

/// The `service` object of a probe record.
#[derive(Debug, Serialize)]
pub struct ServiceInfo {
    pub name: &'static str,
    pub risk: services::Risk,
    pub signature: String,
}

/// The `probe` object.
#[derive(Debug, Serialize)]
pub struct ProbeInfo {
    /// `tcp_syn`, `tcp_stealth`, `tcp_ack`, `udp` or `icmp_echo`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// `refused` (closed), `accepted` (open / alive), `unreachable`, `prohibited`
    /// (filtered by an ICMP error) or `unanswered` (filtered, or open|filtered).
    pub outcome: &'static str,
    /// TCP flags of the probe, as hex (`0x02`).
    pub tcp_flags: String,
    /// TTL or hop limit of the probe as it arrived (0 when unknown).
    pub ttl: u8,
    /// ICMP type and code of the answer, when it was an ICMP error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub icmp_type: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub icmp_code: Option<u8>,
}

impl ProbeRecord {
    /// Builds the record of one outcome.
    pub fn from_probe(probe: &Probe, iface: String) -> Self {
        Self::from_probe_at(probe, iface, WallClock::now())
    }

    /// [`ProbeRecord::from_probe`] with the probe's time converted by `clock`.
    pub fn from_probe_at(probe: &Probe, iface: String, clock: WallClock) -> Self {
        Self {
            timestamp: clock::rfc3339_micros(clock.at(probe.timestamp)),
            event_type: "probe",
            src_ip: probe.src.to_string(),
            src_port: probe.src_port,
            dest_ip: probe.dst.to_string(),
            dest_port: probe.dst_port,
            proto: proto_name(probe.proto),
            in_iface: iface,
            service: services::lookup(probe.proto, probe.dst_port).map(|s| ServiceInfo {
                name: s.name,
                risk: s.risk,
                signature: services::probe_signature(probe.proto, s),
            }),
            probe: ProbeInfo {
                kind: probe_type_name(probe.probe),
                outcome: outcome_name(probe.outcome),
                tcp_flags: format!("{:#04x}", probe.tcp_flags),
                ttl: probe.ttl,
                icmp_type: probe.icmp.map(|(t, _)| t),
                icmp_code: probe.icmp.map(|(_, c)| c),
            },
        }
    }
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
    use crate::{
        detect::{Phase, Spoof, Technique},
        event::{Outcome, ProbeType},
    };

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

    #[test]
    fn a_vertical_scan_renders_the_documented_fields() {
        let victim = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2));
        let s = scan(
            ScanKind::Vertical,
            Technique::Syn,
            vec![victim],
            vec![1, 7, 9],
        );
        let v = render(&AlertRecord::from_scan(&s, "vic0".into(), THRESHOLDS));
        assert_eq!(v["event_type"], "alert");
        assert_eq!(v["src_ip"], "198.18.0.1");
        assert_eq!(v["dest_ip"], "198.18.0.2");
        assert!(v.get("dest_ips").is_none());
        assert_eq!(v["proto"], "TCP");
        assert_eq!(v["in_iface"], "vic0");
        assert_eq!(v["alert"]["severity"], 2);
        assert_eq!(v["alert"]["signature_id"], SID_VERTICAL_SCAN);
        assert_eq!(v["alert"]["category"], "Attempted Information Leak");
        assert_eq!(
            v["alert"]["signature"],
            "PROBE-DETECTOR TCP SYN port scan: 3 ports of 198.18.0.2 probed by 198.18.0.1 in 1.5 s"
        );
        assert_eq!(v["scan"]["ports"], serde_json::json!([1, 7, 9]));
        // Port 7 is not in the table, 1 and 9 neither: no services listed.
        assert!(v["scan"].get("services").is_none());
        assert_eq!(
            (v["scan"]["probes"].as_u64(), v["scan"]["hosts"].as_u64()),
            (Some(4), Some(1))
        );
        assert_eq!(
            (v["scan"]["kind"].as_str(), v["scan"]["technique"].as_str()),
            (Some("vertical"), Some("SYN"))
        );
        assert_eq!(v["scan"]["threshold"], 3);
        assert_eq!(
            (v["scan"]["phase"].as_str(), v["scan"]["detector"].as_str()),
            (Some("start"), Some("threshold"))
        );
        assert_eq!(
            (
                v["scan"]["failed"].as_u64(),
                v["scan"]["succeeded"].as_u64()
            ),
            (Some(4), Some(0))
        );
        assert_eq!(v["scan"]["tcp_flags"], "0x02");
        // 4 outcomes in 1.5 s.
        assert_eq!(v["scan"]["rate_pps"], 2.67);
        assert!(
            v.get("dest_port").is_none(),
            "three ports: no single dest_port"
        );
        let ts = v["timestamp"].as_str().unwrap();
        // 2026-11-21T06:01:02.123456Z
        assert_eq!(ts.len(), 27, "{ts}");
        assert!(ts.ends_with('Z') && ts.as_bytes()[19] == b'.', "{ts}");
        assert_eq!(v["scan"]["last_seen"], v["timestamp"]);
        assert!(v["scan"]["first_seen"].as_str().unwrap() < ts);
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
        let v = render(&AlertRecord::from_scan(&s, "vic0".into(), THRESHOLDS));
        assert_eq!(v["alert"]["severity"], 1);
        assert!(
            v["alert"]["signature"]
                .as_str()
                .unwrap()
                .contains("TCP Xmas port scan")
        );
    }

    #[test]
    fn a_sweep_lists_its_hosts() {
        let hosts = vec![
            IpAddr::V4(Ipv4Addr::new(198, 18, 1, 1)),
            IpAddr::V4(Ipv4Addr::new(198, 18, 1, 2)),
        ];
        let s = scan(ScanKind::Horizontal, Technique::Syn, hosts, vec![80]);
        let v = render(&AlertRecord::from_scan(&s, "wan0".into(), THRESHOLDS));
        assert!(v.get("dest_ip").is_none());
        assert_eq!(
            v["dest_ips"],
            serde_json::json!(["198.18.1.1", "198.18.1.2"])
        );
        assert_eq!(v["alert"]["signature_id"], SID_HORIZONTAL_SWEEP);
        assert_eq!(v["dest_port"], 80, "one port swept");
        assert_eq!(
            v["alert"]["signature"],
            "PROBE-DETECTOR host sweep: 2 hosts probed by 198.18.0.1 in 1.5 s (SYN, port 80)"
        );
        assert_eq!(
            (v["scan"]["kind"].as_str(), v["scan"]["hosts"].as_u64()),
            (Some("horizontal"), Some(2))
        );
        assert_eq!(v["scan"]["threshold"], 2);
    }

    #[test]
    fn probes_render_their_outcome() {
        let probe = Probe {
            timestamp: clock::monotonic_now(),
            src: IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1)),
            dst: IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2)),
            src_port: 5353,
            dst_port: 161,
            proto: 17,
            probe: ProbeType::Udp,
            outcome: Outcome::Refused,
            tcp_flags: 0,
            ttl: 63,
            icmp: Some((3, 3)),
            ifindex: 1,
        };
        let v: serde_json::Value =
            serde_json::from_str(&json_line(&ProbeRecord::from_probe(&probe, "lo".into())))
                .unwrap();
        assert_eq!(v["event_type"], "probe");
        assert_eq!(
            (v["dest_port"].as_u64(), v["proto"].as_str()),
            (Some(161), Some("UDP"))
        );
        assert_eq!(v["probe"]["type"], "udp");
        assert_eq!(v["probe"]["outcome"], "refused");
        assert_eq!(
            (
                v["probe"]["icmp_type"].as_u64(),
                v["probe"]["icmp_code"].as_u64()
            ),
            (Some(3), Some(3))
        );
        assert_eq!(v["probe"]["ttl"], 63);
    }

    #[test]
    fn spans_read_naturally() {
        assert_eq!(human_span(Duration::from_micros(42)), "42 µs");
        assert_eq!(human_span(Duration::from_micros(1740)), "1.7 ms");
        assert_eq!(human_span(Duration::from_millis(1500)), "1.5 s");
        assert_eq!(human_span(Duration::from_secs(3600)), "60 min");
    }

    #[test]
    fn the_documented_examples_and_field_tables_match_the_schema() {
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
            THRESHOLDS,
        ));
        // Present only in some alerts.
        let optional = [
            "dest_ip",
            "dest_ips",
            "dest_port",
            "src_ips",
            "src_net",
            "services",
        ];
        let keys = |v: &serde_json::Value| -> BTreeSet<String> {
            v.as_object()
                .map(|o| o.keys().cloned().collect())
                .unwrap_or_default()
        };
        let mut examples = 0;
        for line in docs.lines().filter(|l| l.starts_with("{\"timestamp\"")) {
            let example: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("docs/alerts.md: not JSON ({e}): {line}"));
            if example["event_type"] != "alert" {
                continue;
            }
            examples += 1;
            for object in ["", "alert", "scan", "spoof"] {
                let (want, have) = if object.is_empty() {
                    (keys(&rendered), keys(&example))
                } else {
                    (keys(&rendered[object]), keys(&example[object]))
                };
                let missing: Vec<_> = want
                    .difference(&have)
                    .filter(|k| !optional.contains(&k.as_str()))
                    .collect();
                let unknown: Vec<_> = have
                    .difference(&want)
                    .filter(|k| !optional.contains(&k.as_str()))
                    .collect();
                assert!(
                    missing.is_empty() && unknown.is_empty(),
                    "docs/alerts.md example is stale in `{object}`: missing {missing:?}, unknown {unknown:?}: {line}"
                );
            }
        }
        assert!(examples >= 4, "{examples} alert examples");
        // Every field has a row in the field table.
        let mut fields: Vec<String> = optional
            .iter()
            .filter(|f| **f != "services")
            .map(ToString::to_string)
            .collect();
        fields.push("scan.services".into());
        for object in ["", "alert", "scan", "spoof"] {
            let value = if object.is_empty() {
                &rendered
            } else {
                &rendered[object]
            };
            for key in keys(value) {
                if object.is_empty() && ["alert", "scan", "spoof"].contains(&key.as_str()) {
                    continue;
                }
                fields.push(if object.is_empty() {
                    key
                } else {
                    format!("{object}.{key}")
                });
            }
        }
        for field in fields {
            assert!(
                docs.contains(&format!("| `{field}`")) || docs.contains(&format!(", `{field}`")),
                "docs/alerts.md has no row for `{field}`"
            );
        }
    }
}
