//! Decoding of the kernel's ring-buffer records (and of its summaries of decided sources)
//! into [`Probe`]s, with each record's length and kind checked before anything is read.

use std::{
    mem::size_of,
    net::{IpAddr, Ipv6Addr},
    time::Duration,
};

pub use probe_common::{Outcome, ProbeType};
use probe_common::{ProbeEvent, SUMMARY_PORTS, Summary, SummaryKey};

/// One attempt's outcome, decoded from a [`ProbeEvent`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Probe {
    /// When the kernel saw the outcome (CLOCK_MONOTONIC, since boot).
    pub timestamp: Duration,
    /// The remote peer that made the attempt.
    pub src: IpAddr,
    /// Our address it tried to reach.
    pub dst: IpAddr,
    /// The peer's source port (echo identifier for ICMP).
    pub src_port: u16,
    /// The probed port (0 for ICMP).
    pub dst_port: u16,
    /// IP protocol number.
    pub proto: u8,
    /// What kind of attempt.
    pub probe: ProbeType,
    /// How it ended.
    pub outcome: Outcome,
    /// TCP flags of the inbound probe.
    pub tcp_flags: u8,
    /// TTL / hop limit of the probe as it arrived (0 when unknown).
    pub ttl: u8,
    /// ICMP type and code of the answer when it was an ICMP error.
    pub icmp: Option<(u8, u8)>,
    /// Interface the attempt arrived on.
    pub ifindex: u32,
    /// The link-layer address the attempt came from (see [`ProbeEvent::src_mac`]).
    pub src_mac: [u8; 6],
    /// This outcome took its source's sequential test in the kernel to its verdict (see
    /// [`ProbeEvent::verdict`]).
    pub kernel_verdict: bool,
    /// And the kernel blocked the source on it (`--block`).
    pub kernel_blocked: bool,
}

/// The outcomes a kernel summary of a decided source counts: one per port, alike but for
/// the port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summarized {
    /// The outcome of the first port, stamped with the summary's latest time (the kernel
    /// keeps one time per 512 ports), its TTL the lowest of the outcomes'. What a summary
    /// does not keep: the source port (0), each port's own flags and interface (the first
    /// outcome's), and each port's own TTL above the traceroute range (the range is kept).
    pub probe: Probe,
    /// Every port, in order (`probe`'s first).
    pub ports: Vec<u16>,
    /// The highest TTL of the outcomes (`probe.ttl` the lowest).
    pub ttl_max: u8,
}

impl Summarized {
    /// Keeps the ports `keep` says yes to (the probe's own port following the first kept);
    /// false when none is left.
    pub fn retain_ports(&mut self, keep: impl FnMut(&u16) -> bool) -> bool {
        self.ports.retain(keep);
        match self.ports.first() {
            Some(&first) => {
                self.probe.dst_port = first;
                true
            }
            None => false,
        }
    }

    /// Decodes one entry of `SUMMARIES`; `None` when it counts no port.
    pub fn decode(key: &SummaryKey, summary: &Summary) -> Result<Option<Self>, DecodeError> {
        let probe = ProbeType::from_u8(key.probe).ok_or(DecodeError::ProbeType(key.probe))?;
        let outcome = Outcome::from_u8(key.outcome).ok_or(DecodeError::Outcome(key.outcome))?;
        let base = u32::from(key.block) * u32::from(SUMMARY_PORTS);
        let mut ports = Vec::new();
        for (w, &word) in summary.ports.iter().enumerate() {
            let mut bits = word;
            while bits != 0 {
                let port = base + 64 * w as u32 + bits.trailing_zeros();
                bits &= bits - 1;
                // A block past port 65 535 (a corrupt key) has nothing to decode.
                if let Ok(port) = u16::try_from(port) {
                    ports.push(port);
                }
            }
        }
        let Some(&first) = ports.first() else {
            return Ok(None);
        };
        // An exact TTL in the key (the traceroute range), or the range the value kept.
        let (ttl, ttl_max) = if key.ttl != 0 {
            (key.ttl, key.ttl)
        } else {
            (summary.ttl_min, summary.ttl_max)
        };
        let probe = Probe {
            timestamp: Duration::from_nanos(summary.last_ns),
            src: source(key.src_addr, key.ip_version),
            dst: ip_from_mapped(key.dst_addr),
            src_port: 0,
            dst_port: first,
            proto: key.proto,
            probe,
            outcome,
            tcp_flags: summary.tcp_flags,
            ttl,
            icmp: (summary.icmp_type != 0 || summary.icmp_code != 0)
                .then_some((summary.icmp_type, summary.icmp_code)),
            ifindex: summary.ifindex,
            src_mac: summary.src_mac,
            kernel_verdict: false,
            kernel_blocked: false,
        };
        Ok(Some(Self {
            probe,
            ports,
            ttl_max,
        }))
    }

    /// The outcome on the `index`th port: the last one carries the highest TTL, the others
    /// the lowest, so that whoever notes the TTLs of every outcome sees the range.
    pub fn outcome(&self, index: usize) -> Probe {
        Probe {
            dst_port: self
                .ports
                .get(index)
                .copied()
                .unwrap_or(self.probe.dst_port),
            ttl: if index + 1 == self.ports.len() {
                self.ttl_max
            } else {
                self.probe.ttl
            },
            ..self.probe.clone()
        }
    }

    /// Each outcome on its own (see [`Summarized::outcome`]).
    pub fn outcomes(&self) -> impl Iterator<Item = Probe> + '_ {
        (0..self.ports.len()).map(|index| self.outcome(index))
    }
}

/// A ring-buffer record that cannot be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    /// The record is not exactly one `ProbeEvent` long: the object and this binary disagree.
    #[error("ring-buffer record of {got} bytes, expected {expected}")]
    Length { got: usize, expected: usize },
    /// The probe type byte is unknown to this build.
    #[error("ring-buffer record of unknown probe type {0}")]
    ProbeType(u8),
    /// The outcome byte is unknown to this build.
    #[error("ring-buffer record of unknown outcome {0}")]
    Outcome(u8),
}

impl Probe {
    /// Decodes one ring-buffer record.
    pub fn decode(record: &[u8]) -> Result<Self, DecodeError> {
        if record.len() != size_of::<ProbeEvent>() {
            return Err(DecodeError::Length {
                got: record.len(),
                expected: size_of::<ProbeEvent>(),
            });
        }
        // SAFETY: the length is exactly size_of::<ProbeEvent>(), read_unaligned has no
        // alignment requirement, and ProbeEvent (integers and byte arrays, no implicit
        // padding) is valid for every bit pattern.
        let event: ProbeEvent = unsafe { record.as_ptr().cast::<ProbeEvent>().read_unaligned() };
        let probe = ProbeType::from_u8(event.probe).ok_or(DecodeError::ProbeType(event.probe))?;
        let outcome = Outcome::from_u8(event.outcome).ok_or(DecodeError::Outcome(event.outcome))?;
        Ok(Self {
            timestamp: Duration::from_nanos(event.timestamp_ns),
            src: source(event.src_addr, event.ip_version),
            dst: ip_from_mapped(event.dst_addr),
            src_port: event.src_port,
            dst_port: event.dst_port,
            proto: event.proto,
            probe,
            outcome,
            tcp_flags: event.tcp_flags,
            ttl: event.ttl,
            icmp: (event.icmp_type != 0 || event.icmp_code != 0)
                .then_some((event.icmp_type, event.icmp_code)),
            ifindex: event.ifindex,
            src_mac: event.src_mac,
            kernel_verdict: event.verdict != 0,
            kernel_blocked: event.verdict == 2,
        })
    }

    /// True when the attempt failed in a way that marks a probe of an unused port: refused,
    /// unreachable, prohibited or unanswered.
    pub fn failed(&self) -> bool {
        self.outcome != Outcome::Accepted
    }
}

impl Probe {
    /// A TCP SYN outcome (for tests, and the pipeline's rehearsal): `src` tried
    /// `dst:port`, with TTL 64 on interface 7.
    pub(crate) fn syn(src: IpAddr, dst: IpAddr, port: u16, outcome: Outcome) -> Self {
        Self {
            timestamp: Duration::ZERO,
            src,
            dst,
            src_port: 40000,
            dst_port: port,
            proto: probe_common::IPPROTO_TCP,
            probe: ProbeType::TcpSyn,
            outcome,
            tcp_flags: 0x02,
            ttl: 64,
            icmp: None,
            ifindex: 7,
            src_mac: [2, 0, 0, 0, 0, 1],
            kernel_verdict: false,
            kernel_blocked: false,
        }
    }
}

/// The name of a probe type in records (`tcp_syn`, `tcp_stealth`, `tcp_ack`, `udp`,
/// `icmp_echo`, `tcp_fragment`, `tcp_unseen`, `ip_protocol`, `sctp`).
pub fn probe_type_name(probe: ProbeType) -> &'static str {
    match probe {
        ProbeType::TcpSyn => "tcp_syn",
        ProbeType::TcpStealth => "tcp_stealth",
        ProbeType::TcpAck => "tcp_ack",
        ProbeType::Udp => "udp",
        ProbeType::IcmpEcho => "icmp_echo",
        ProbeType::TcpFragment => "tcp_fragment",
        ProbeType::TcpUnseen => "tcp_unseen",
        ProbeType::IpProtocol => "ip_protocol",
        ProbeType::Sctp => "sctp",
    }
}

/// The name of an outcome in records (`refused`, `accepted`, `unreachable`, `prohibited`,
/// `unanswered`).
pub fn outcome_name(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Refused => "refused",
        Outcome::Accepted => "accepted",
        Outcome::Unreachable => "unreachable",
        Outcome::Prohibited => "prohibited",
        Outcome::Unanswered => "unanswered",
    }
}

/// The address a 16-byte kernel address stands for: IPv4 when IPv4-mapped.
pub fn ip_from_mapped(bytes: [u8; 16]) -> IpAddr {
    Ipv6Addr::from(bytes).to_canonical()
}

/// A probe's source: like [`ip_from_mapped`], except that an IPv6 probe's IPv4-mapped
/// source stays IPv6 (`::ffff:a.b.c.d`, a martian no host sends from), so that a forger
/// cannot make it pass for the IPv4 host a.b.c.d, and get that host blocked.
fn source(bytes: [u8; 16], ip_version: u8) -> IpAddr {
    if ip_version == 6 {
        IpAddr::V6(Ipv6Addr::from(bytes))
    } else {
        ip_from_mapped(bytes)
    }
}

/// Name of an IP protocol number as EVE writes it (`TCP`, `UDP`, or the number).
pub fn proto_name(proto: u8) -> String {
    match proto {
        probe_common::IPPROTO_TCP => "TCP".to_owned(),
        probe_common::IPPROTO_UDP => "UDP".to_owned(),
        probe_common::IPPROTO_ICMP => "ICMP".to_owned(),
        probe_common::IPPROTO_ICMPV6 => "IPv6-ICMP".to_owned(),
        probe_common::IPPROTO_SCTP => "SCTP".to_owned(),
        // A protocol scan's probes, whose "port" is the protocol number.
        probe_common::IPPROTO_IP => "IP".to_owned(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use probe_common::ipv4_mapped;

    use super::*;

    fn record(event: &ProbeEvent) -> Vec<u8> {
        // SAFETY: ProbeEvent is plain old data with no implicit padding.
        unsafe {
            std::slice::from_raw_parts(
                (event as *const ProbeEvent).cast::<u8>(),
                size_of::<ProbeEvent>(),
            )
        }
        .to_vec()
    }

    fn sample() -> ProbeEvent {
        ProbeEvent {
            timestamp_ns: 1_500_000_000,
            src_addr: ipv4_mapped([198, 18, 0, 1]),
            dst_addr: ipv4_mapped([198, 18, 0, 2]),
            ifindex: 3,
            src_port: 51_000,
            dst_port: 23,
            proto: 6,
            probe: ProbeType::TcpSyn as u8,
            outcome: Outcome::Refused as u8,
            tcp_flags: 0x02,
            ttl: 64,
            icmp_type: 0,
            icmp_code: 0,
            ip_version: 4,
            src_mac: [2, 0, 0, 0, 0, 9],
            verdict: 0,
            _pad2: 0,
        }
    }

    #[test]
    fn a_summary_keeps_its_probe_on_its_first_port_left() {
        let (src, dst) = ("198.18.0.1".parse().unwrap(), "198.18.0.2".parse().unwrap());
        let mut summary = Summarized {
            probe: Probe::syn(src, dst, 64, Outcome::Refused),
            ports: vec![64, 70, 80],
            ttl_max: 0,
        };
        assert!(summary.retain_ports(|&p| p != 64));
        assert_eq!((summary.probe.dst_port, summary.ports), (70, vec![70, 80]));
        let mut summary = Summarized {
            probe: Probe::syn(src, dst, 64, Outcome::Refused),
            ports: vec![64],
            ttl_max: 0,
        };
        assert!(!summary.retain_ports(|_| false));
    }

    #[test]
    fn a_summary_decodes_to_the_ports_of_its_bits_in_order() {
        let key = SummaryKey {
            src_addr: ipv4_mapped([198, 18, 0, 1]),
            dst_addr: ipv4_mapped([198, 18, 0, 2]),
            block: 127,
            proto: 6,
            probe: ProbeType::TcpSyn as u8,
            outcome: Outcome::Refused as u8,
            ip_version: 4,
            generation: 1,
            ttl: 12,
            _pad: [0; 8],
        };
        let mut ports = [0u64; probe_common::SUMMARY_WORDS];
        // The block's first port, a port in a middle word, and the last port there is.
        ports[0] = 1;
        ports[3] = 1 << 5 | 1 << 63;
        ports[7] = 1 << 63;
        let summary = Summary {
            ports,
            first_ns: 1_000,
            last_ns: 2_000,
            ifindex: 3,
            src_mac: [2, 0, 0, 0, 0, 9],
            tcp_flags: 0x02,
            icmp_type: 0,
            icmp_code: 0,
            ttl_min: 0,
            ttl_max: 0,
            _pad: [0; 9],
        };
        let decoded = Summarized::decode(&key, &summary).unwrap().unwrap();
        assert_eq!(decoded.ports, [65_024, 65_221, 65_279, 65_535]);
        assert_eq!(
            (decoded.probe.dst_port, decoded.probe.timestamp),
            (65_024, Duration::from_nanos(2_000))
        );
        // A TTL in the key is every outcome's.
        let ttls: Vec<u8> = decoded.outcomes().map(|p| p.ttl).collect();
        assert_eq!(ttls, [12; 4]);
        // Above the traceroute range the key has none, and the value's range is kept: the
        // last outcome carries the highest.
        let random = Summary {
            ttl_min: 37,
            ttl_max: 59,
            ..summary
        };
        let decoded = Summarized::decode(&SummaryKey { ttl: 0, ..key }, &random)
            .unwrap()
            .unwrap();
        let ttls: Vec<u8> = decoded.outcomes().map(|p| p.ttl).collect();
        assert_eq!(ttls, [37, 37, 37, 59]);
        let empty = Summary {
            ports: [0; probe_common::SUMMARY_WORDS],
            ..summary
        };
        assert_eq!(Summarized::decode(&key, &empty).unwrap(), None);
    }

    #[test]
    fn decodes_a_record() {
        let probe = Probe::decode(&record(&sample())).unwrap();
        assert_eq!(probe.timestamp, Duration::from_millis(1500));
        assert_eq!(probe.src, IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1)));
        assert_eq!(probe.dst, IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2)));
        assert_eq!(
            (probe.src_port, probe.dst_port, probe.proto),
            (51_000, 23, 6)
        );
        assert_eq!(
            (probe.probe, probe.outcome),
            (ProbeType::TcpSyn, Outcome::Refused)
        );
        assert_eq!((probe.ttl, probe.icmp), (64, None));
        assert!(probe.failed());
        assert_eq!(probe.ifindex, 3);
        assert_eq!(probe.src_mac, [2, 0, 0, 0, 0, 9]);
    }

    #[test]
    fn rejects_wrong_lengths_and_kinds() {
        let bytes = record(&sample());
        assert_eq!(
            Probe::decode(&bytes[..40]),
            Err(DecodeError::Length {
                got: 40,
                expected: 64
            })
        );
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(
            Probe::decode(&longer),
            Err(DecodeError::Length { got: 65, .. })
        ));
        let mut bad = sample();
        bad.probe = 99;
        assert_eq!(
            Probe::decode(&record(&bad)),
            Err(DecodeError::ProbeType(99))
        );
        let mut bad = sample();
        bad.outcome = 0;
        assert_eq!(Probe::decode(&record(&bad)), Err(DecodeError::Outcome(0)));
    }

    #[test]
    fn an_ipv6_probe_from_a_mapped_address_stays_ipv6() {
        let mut event = sample();
        event.ip_version = 6;
        let probe = Probe::decode(&record(&event)).unwrap();
        assert_eq!(probe.src, "::ffff:198.18.0.1".parse::<IpAddr>().unwrap());
        assert!(crate::detect::is_martian(probe.src));
        // The same address in an IPv4 probe is the IPv4 host.
        event.ip_version = 4;
        assert_eq!(
            Probe::decode(&record(&event)).unwrap().src,
            IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1))
        );
    }

    #[test]
    fn ipv6_addresses_stay_ipv6() {
        let v6: Ipv6Addr = "2001:db8::1".parse().unwrap();
        assert_eq!(ip_from_mapped(v6.octets()), IpAddr::V6(v6));
    }
}
