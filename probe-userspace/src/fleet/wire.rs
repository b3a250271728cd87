//! The fleet's evidence records: one outcome a sensor saw, 48 bytes in network byte order,
//! many to a stream entry. Times are wall-clock (Unix nanoseconds): sensors' monotonic
//! clocks do not agree.

use std::{
    net::{IpAddr, Ipv6Addr},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use probe_common::{Outcome, ProbeType};

use crate::{clock::WallClock, event::Probe};

/// Bytes of one record.
pub const RECORD_BYTES: usize = 48;
/// The format's version, in each entry's `v` field: a correlator skips entries of others.
pub const VERSION: &str = "1";

/// Flag bit: the source is an IPv6 address (an IPv4-mapped one stays IPv6).
const FLAG_V6_SOURCE: u8 = 1;
/// Flag bit: the sensor's kernel decided the source on this outcome.
const FLAG_VERDICT: u8 = 2;

/// One outcome as the fleet carries it. What it leaves out of a [`Probe`]: the source port,
/// the ICMP type and code, the interface and the link-layer address (local matters).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Evidence {
    /// When the sensor's kernel saw the outcome, since the Unix epoch.
    pub time: Duration,
    /// The remote peer that made the attempt.
    pub src: IpAddr,
    /// The sensor's address it tried.
    pub dst: IpAddr,
    /// The probed port (0 for ICMP).
    pub dst_port: u16,
    /// IP protocol number.
    pub proto: u8,
    /// What kind of attempt.
    pub probe: ProbeType,
    /// How it ended.
    pub outcome: Outcome,
    /// TTL of the probe as it arrived.
    pub ttl: u8,
    /// TCP flags of the probe.
    pub tcp_flags: u8,
    /// The sensor's kernel decided the source on it.
    pub verdict: bool,
}

/// An entry's records that cannot be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    /// Not a whole number of records.
    #[error("an evidence entry of {0} bytes, not a multiple of {RECORD_BYTES}")]
    Length(usize),
    /// A probe type this build does not know.
    #[error("an evidence record of unknown probe type {0}")]
    ProbeType(u8),
    /// An outcome this build does not know.
    #[error("an evidence record of unknown outcome {0}")]
    Outcome(u8),
}

impl Evidence {
    /// The evidence of a probe, its monotonic time made wall-clock with `wall`.
    pub fn of(probe: &Probe, wall: WallClock) -> Self {
        Self {
            time: wall
                .at(probe.timestamp)
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default(),
            src: probe.src,
            dst: probe.dst,
            dst_port: probe.dst_port,
            proto: probe.proto,
            probe: probe.probe,
            outcome: probe.outcome,
            ttl: probe.ttl,
            tcp_flags: probe.tcp_flags,
            verdict: probe.kernel_verdict,
        }
    }

    /// The probe a correlator's engine observes: stamped with the Unix time, on interface
    /// `ifindex` (the correlator's number for the sensor).
    pub fn to_probe(&self, ifindex: u32) -> Probe {
        Probe {
            timestamp: self.time,
            src: self.src,
            dst: self.dst,
            src_port: 0,
            dst_port: self.dst_port,
            proto: self.proto,
            probe: self.probe,
            outcome: self.outcome,
            tcp_flags: self.tcp_flags,
            ttl: self.ttl,
            icmp: None,
            ifindex,
            src_mac: [0; 6],
            kernel_verdict: false,
            kernel_blocked: false,
        }
    }

    /// The wall-clock time.
    pub fn system_time(&self) -> SystemTime {
        UNIX_EPOCH + self.time
    }

    /// Appends the record's 48 bytes.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let nanos = u64::try_from(self.time.as_nanos()).unwrap_or(u64::MAX);
        out.extend_from_slice(&nanos.to_be_bytes());
        out.extend_from_slice(&mapped(self.src).octets());
        out.extend_from_slice(&mapped(self.dst).octets());
        out.extend_from_slice(&self.dst_port.to_be_bytes());
        let flags = (u8::from(self.src.is_ipv6()) * FLAG_V6_SOURCE)
            | (u8::from(self.verdict) * FLAG_VERDICT);
        out.extend_from_slice(&[
            self.proto,
            self.probe as u8,
            self.outcome as u8,
            self.ttl,
            self.tcp_flags,
            flags,
        ]);
    }

    /// Decodes an entry's records.
    pub fn decode_all(bytes: &[u8]) -> Result<Vec<Self>, WireError> {
        let (records, rest) = bytes.as_chunks::<RECORD_BYTES>();
        if !rest.is_empty() {
            return Err(WireError::Length(bytes.len()));
        }
        records.iter().map(Self::decode).collect()
    }

    fn decode(record: &[u8; RECORD_BYTES]) -> Result<Self, WireError> {
        let array = |at: usize| -> [u8; 16] {
            let mut out = [0; 16];
            out.copy_from_slice(&record[at..at + 16]);
            out
        };
        let mut nanos = [0; 8];
        nanos.copy_from_slice(&record[..8]);
        let flags = record[47];
        let src = Ipv6Addr::from(array(8));
        let src = if flags & FLAG_V6_SOURCE != 0 {
            IpAddr::V6(src)
        } else {
            src.to_canonical()
        };
        Ok(Self {
            time: Duration::from_nanos(u64::from_be_bytes(nanos)),
            src,
            dst: Ipv6Addr::from(array(24)).to_canonical(),
            dst_port: u16::from_be_bytes([record[40], record[41]]),
            proto: record[42],
            probe: ProbeType::from_u8(record[43]).ok_or(WireError::ProbeType(record[43]))?,
            outcome: Outcome::from_u8(record[44]).ok_or(WireError::Outcome(record[44]))?,
            ttl: record[45],
            tcp_flags: record[46],
            verdict: flags & FLAG_VERDICT != 0,
        })
    }
}

fn mapped(addr: IpAddr) -> Ipv6Addr {
    match addr {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(src: &str) -> Evidence {
        Evidence {
            time: Duration::from_nanos(1_764_400_000_123_456_789),
            src: src.parse().unwrap(),
            dst: "198.18.20.2".parse().unwrap(),
            dst_port: 22,
            proto: 6,
            probe: ProbeType::TcpSyn,
            outcome: Outcome::Refused,
            ttl: 63,
            tcp_flags: 0x02,
            verdict: true,
        }
    }

    #[test]
    fn records_come_back_as_they_went() {
        let records = [
            sample("198.18.19.2"),
            sample("2001:db8::7"),
            // An IPv4-mapped IPv6 source stays IPv6: it must not pass for the IPv4 host.
            sample("::ffff:198.18.19.2"),
        ];
        let mut bytes = Vec::new();
        for record in &records {
            record.encode(&mut bytes);
        }
        assert_eq!(bytes.len(), 3 * RECORD_BYTES);
        let back = Evidence::decode_all(&bytes).unwrap();
        assert_eq!(back, records);
        assert!(back[2].src.is_ipv6());
    }

    #[test]
    fn bad_entries_are_refused_not_misread() {
        let mut bytes = Vec::new();
        sample("198.18.19.2").encode(&mut bytes);
        assert_eq!(
            Evidence::decode_all(&bytes[..47]),
            Err(WireError::Length(47))
        );
        bytes[43] = 200;
        assert_eq!(Evidence::decode_all(&bytes), Err(WireError::ProbeType(200)));
    }

    #[test]
    fn a_probe_keeps_what_the_engine_needs() {
        let evidence = sample("198.18.19.2");
        let probe = evidence.to_probe(3);
        assert_eq!(
            (
                probe.src,
                probe.dst,
                probe.dst_port,
                probe.outcome,
                probe.ifindex
            ),
            (evidence.src, evidence.dst, 22, Outcome::Refused, 3)
        );
        assert_eq!(probe.timestamp, evidence.time);
    }
}
