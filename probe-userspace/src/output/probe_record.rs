//! The probe record (`--probes`): one outcome the kernel reported, the raw evidence behind
//! the alerts (`event_type: "probe"`). It is probe-detector's own record type, not an EVE
//! event: Suricata's schema has no place for its `probe` and `service` objects, so a
//! strict EVE consumer should not be given `--probes` output (docs/alerts.md). Its
//! envelope follows EVE: the same timestamp form, addresses, ports, `in_iface`, `host`.

use serde::Serialize;

use crate::{
    clock::{self, WallClock},
    event::{Probe, outcome_name, probe_type_name, proto_name},
    output::services,
};

/// One outcome the kernel reported (`--probes`).
#[derive(Debug, Serialize)]
pub struct ProbeRecord {
    /// When the kernel saw the outcome, as EVE writes times (`+0000`).
    pub timestamp: String,
    /// Always `"probe"`.
    pub event_type: &'static str,
    pub src_ip: String,
    pub src_port: u16,
    pub dest_ip: String,
    pub dest_port: u16,
    pub proto: String,
    pub in_iface: String,
    /// The sensor's name, as in alert records.
    pub host: String,
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
    /// Builds the record of one outcome, its time converted by `clock` (see
    /// [`crate::output::record::AlertRecord::from_scan`]).
    pub fn from_probe(probe: &Probe, iface: String, host: String, clock: WallClock) -> Self {
        Self {
            timestamp: clock::eve_timestamp(clock.at(probe.timestamp)),
            event_type: "probe",
            src_ip: probe.src.to_string(),
            src_port: probe.src_port,
            dest_ip: probe.dst.to_string(),
            dest_port: probe.dst_port,
            proto: proto_name(probe.proto),
            in_iface: iface,
            host,
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

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use super::*;
    use crate::{
        event::{Outcome, ProbeType},
        output::record::json_line,
    };

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
            src_mac: [0; 6],
            kernel_verdict: false,
            kernel_blocked: false,
        };
        let v: serde_json::Value = serde_json::from_str(&json_line(&ProbeRecord::from_probe(
            &probe,
            "lo".into(),
            "sensor".into(),
            WallClock::now(),
        )))
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
}
