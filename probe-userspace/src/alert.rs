//! The alert record written to stdout, one JSON object per line, shaped like Suricata's EVE
//! `alert` events so jq recipes and SIEM pipelines written for EVE apply.

use std::time::Duration;

use serde::Serialize;

use crate::{clock, engine::ScanAlert, event::proto_name};

/// Signature id of the vertical port scan alert (1 000 000 - 1 999 999 is the range Snort
/// and Suricata leave for local rules).
pub const SID_VERTICAL_SCAN: u32 = 1_900_001;

/// EVE severity: 1 = high, 2 = medium, 3 = low.
const SEVERITY_MEDIUM: u8 = 2;

/// One alert line.
#[derive(Debug, Serialize)]
pub struct AlertRecord {
    /// When the scan was recognised: RFC 3339, UTC, microseconds.
    pub timestamp: String,
    /// Always `"alert"`.
    pub event_type: &'static str,
    /// The scanning source.
    pub src_ip: String,
    /// The scanned target.
    pub dest_ip: String,
    /// `"TCP"`, `"UDP"` or the protocol number.
    pub proto: String,
    /// Interface the probes arrived on (its index if the name is gone).
    pub in_iface: String,
    /// What matched.
    pub alert: AlertInfo,
    /// The evidence.
    pub scan: ScanInfo,
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
    /// 1 = high .. 3 = low.
    pub severity: u8,
}

/// The `scan` object: what was seen.
#[derive(Debug, Serialize)]
pub struct ScanInfo {
    /// `"vertical"`: many ports of one target.
    pub kind: &'static str,
    /// The detector that fired.
    pub detector: &'static str,
    /// Distinct refused ports within the window, sorted.
    pub ports: Vec<u16>,
    /// Failed attempts counted so far for this source and target (the kernel reports the
    /// first failure of each port; retransmissions of one probe are not counted again).
    pub probes: u64,
    /// Time of the first counted failure, RFC 3339.
    pub first_seen: String,
    /// Time of the failure that completed the scan, RFC 3339.
    pub last_seen: String,
    /// Distinct ports that make a scan (`--scan-ports`).
    pub threshold: usize,
    /// Window the ports are counted in, seconds (`--scan-window`).
    pub window_s: f64,
}

impl AlertRecord {
    /// Builds the record of a vertical scan alert. `iface` is the name of the interface the
    /// probes arrived on; the tuning is reported so a reader knows what the alert means.
    pub fn vertical_scan(scan: &ScanAlert, iface: String, threshold: usize, window_s: f64) -> Self {
        let proto = proto_name(scan.proto);
        let span = human_span(scan.last_seen.saturating_sub(scan.first_seen));
        let clock = clock::WallClock::now();
        let wall = |t| clock::rfc3339_micros(clock.at(t));
        Self {
            timestamp: wall(scan.last_seen),
            event_type: "alert",
            src_ip: scan.src.to_string(),
            dest_ip: scan.dst.to_string(),
            in_iface: iface,
            alert: AlertInfo {
                action: "allowed",
                gid: 1,
                signature_id: SID_VERTICAL_SCAN,
                rev: 1,
                signature: format!(
                    "PROBE-DETECTOR {proto} port scan: {} closed ports of {} probed by {} in {span}",
                    scan.ports.len(),
                    scan.dst,
                    scan.src
                ),
                category: "Attempted Information Leak",
                severity: SEVERITY_MEDIUM,
            },
            proto,
            scan: ScanInfo {
                kind: "vertical",
                detector: "sweep",
                ports: scan.ports.clone(),
                probes: scan.probes,
                first_seen: wall(scan.first_seen),
                last_seen: wall(scan.last_seen),
                threshold,
                window_s,
            },
        }
    }

    /// The record as one line of JSON, without the newline.
    pub fn to_json_line(&self) -> String {
        // Serialising plain strings and numbers cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// A duration for people: `0.2 ms`, `1.5 s`, `12 min`.
fn human_span(span: Duration) -> String {
    let secs = span.as_secs_f64();
    if secs < 1.0 {
        format!("{:.1} ms", secs * 1e3)
    } else if secs < 600.0 {
        format!("{secs:.1} s")
    } else {
        format!("{:.0} min", secs / 60.0)
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use super::*;

    #[test]
    fn renders_the_documented_fields() {
        let now = clock::monotonic_now();
        let scan = ScanAlert {
            src: IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1)),
            dst: IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2)),
            proto: 6,
            ifindex: 2,
            ports: vec![1, 7, 9],
            probes: 4,
            first_seen: now - Duration::from_millis(1500),
            last_seen: now,
        };
        let line = AlertRecord::vertical_scan(&scan, "vic0".into(), 3, 60.0).to_json_line();
        assert!(!line.contains('\n'));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["event_type"], "alert");
        assert_eq!(v["src_ip"], "198.18.0.1");
        assert_eq!(v["dest_ip"], "198.18.0.2");
        assert_eq!(v["proto"], "TCP");
        assert_eq!(v["in_iface"], "vic0");
        assert_eq!(v["alert"]["severity"], 2);
        assert_eq!(v["alert"]["signature_id"], SID_VERTICAL_SCAN);
        assert_eq!(v["alert"]["category"], "Attempted Information Leak");
        assert_eq!(
            v["alert"]["signature"],
            "PROBE-DETECTOR TCP port scan: 3 closed ports of 198.18.0.2 probed by 198.18.0.1 in 1.5 s"
        );
        assert_eq!(v["scan"]["ports"], serde_json::json!([1, 7, 9]));
        assert_eq!(v["scan"]["probes"], 4);
        assert_eq!(v["scan"]["kind"], "vertical");
        let ts = v["timestamp"].as_str().unwrap();
        // 2026-11-21T06:01:02.123456Z
        assert_eq!(ts.len(), 27, "{ts}");
        assert!(ts.ends_with('Z') && ts.as_bytes()[19] == b'.', "{ts}");
        assert_eq!(v["scan"]["last_seen"], v["timestamp"]);
        assert!(v["scan"]["first_seen"].as_str().unwrap() < ts);
    }

    #[test]
    fn spans_read_naturally() {
        assert_eq!(human_span(Duration::from_micros(174)), "0.2 ms");
        assert_eq!(human_span(Duration::from_millis(1500)), "1.5 s");
        assert_eq!(human_span(Duration::from_secs(3600)), "60 min");
    }
}
