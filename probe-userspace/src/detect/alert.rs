//! What the engine says: the alert of a scan ([`ScanAlert`]) with its kind, technique,
//! phase and the evidence on forged sources.

use std::{net::IpAddr, time::Duration};

use crate::{
    detect::verdict::DetectorName,
    event::{Probe, ProbeType},
};

/// What a scan looked like.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ScanKind {
    /// Many ports of one target.
    Vertical,
    /// Many targets.
    Horizontal,
    /// Many sources (a scanner and its decoys, or cooperating scanners) on the same ports
    /// of one target.
    Distributed,
}

impl ScanKind {
    /// Its name in alert records and metrics.
    pub fn name(self) -> &'static str {
        match self {
            ScanKind::Vertical => "vertical",
            ScanKind::Horizontal => "horizontal",
            ScanKind::Distributed => "distributed",
        }
    }
}

/// How the probes were made, from the probe that completed the scan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Technique {
    /// TCP SYN (half-open or connect scans).
    Syn,
    /// TCP FIN alone.
    Fin,
    /// TCP with no flags.
    Null,
    /// TCP FIN, PSH and URG.
    Xmas,
    /// TCP without SYN, ACK or RST, in another combination.
    OddFlags,
    /// TCP with ACK that matched no connection (ACK or Maimon FIN/ACK scans).
    Ack,
    /// UDP.
    Udp,
    /// ICMP / ICMPv6 echo.
    Ping,
    /// TCP cut in fragments (nmap `-f`, `--mtu`): an evasion.
    Fragmented,
    /// TCP attempts without ACK the ingress side never saw whole, known from our RST|ACK
    /// or ICMP answers (fragments it could not read, or other hiding).
    Unseen,
    /// IP protocols probed (nmap `-sO`): the "ports" are protocol numbers.
    Protocol,
    /// SCTP INIT or COOKIE ECHO (nmap `-sY`, `-sZ`).
    Sctp,
}

impl Technique {
    /// The technique of one probe.
    pub fn of(probe: &Probe) -> Self {
        const FIN: u8 = 0x01;
        const PSH: u8 = 0x08;
        const URG: u8 = 0x20;
        match probe.probe {
            ProbeType::TcpSyn => Technique::Syn,
            ProbeType::TcpStealth => match probe.tcp_flags & 0x3f {
                FIN => Technique::Fin,
                0 => Technique::Null,
                f if f == FIN | PSH | URG => Technique::Xmas,
                _ => Technique::OddFlags,
            },
            ProbeType::TcpAck => Technique::Ack,
            ProbeType::Udp => Technique::Udp,
            ProbeType::IcmpEcho => Technique::Ping,
            ProbeType::TcpFragment => Technique::Fragmented,
            ProbeType::TcpUnseen => Technique::Unseen,
            ProbeType::IpProtocol => Technique::Protocol,
            ProbeType::Sctp => Technique::Sctp,
        }
    }

    /// The name used in alerts (`SYN`, `FIN`, `NULL`, `Xmas`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Technique::Syn => "SYN",
            Technique::Fin => "FIN",
            Technique::Null => "NULL",
            Technique::Xmas => "Xmas",
            Technique::OddFlags => "odd-flags",
            Technique::Ack => "ACK",
            Technique::Udp => "UDP",
            Technique::Ping => "ping",
            Technique::Fragmented => "fragmented",
            Technique::Unseen => "unseen",
            Technique::Protocol => "protocol",
            Technique::Sctp => "SCTP",
        }
    }

    /// True for segments no ordinary stack sends to start a connection, and for probes
    /// made to slip past inspection (fragments): these scans hide from connection logs and
    /// firewalls that only watch whole SYNs.
    pub fn is_stealth(self) -> bool {
        matches!(
            self,
            Technique::Fin
                | Technique::Null
                | Technique::Xmas
                | Technique::OddFlags
                | Technique::Ack
                | Technique::Fragmented
                | Technique::Unseen
        )
    }
}

/// Where an incident is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// The scan was just recognised.
    Start,
    /// The scan goes on (at most one per `update_interval`).
    Update,
    /// The scan is over (idle for `idle_timeout`, or the detector stops): the summary.
    End,
}

impl Phase {
    /// The name in alerts.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Start => "start",
            Phase::Update => "update",
            Phase::End => "end",
        }
    }
}

/// An alert about a scan.
#[derive(Clone, Debug, PartialEq)]
pub struct ScanAlert {
    /// Start, update or end.
    pub phase: Phase,
    /// The detector that recognised the scan first.
    pub detector: DetectorName,
    /// Vertical or horizontal.
    pub kind: ScanKind,
    /// The scanning source: the first seen when several are listed.
    pub src: IpAddr,
    /// Every source address of the incident, sorted (up to 256): one, unless the scan is
    /// distributed or sources are grouped.
    pub sources: Vec<IpAddr>,
    /// The network the sources were grouped by, when grouping is on.
    pub src_net: Option<(IpAddr, u8)>,
    /// The scanned targets, sorted (one for a vertical scan).
    pub targets: Vec<IpAddr>,
    /// IP protocol of the probe that completed the scan.
    pub proto: u8,
    /// How the probes were made.
    pub technique: Technique,
    /// Interface index of the probe that completed the scan.
    pub ifindex: u32,
    /// Distinct ports: of the target (vertical), or used across targets (horizontal).
    pub ports: Vec<u16>,
    /// Outcomes counted for this scan.
    pub probes: u64,
    /// Of those, failed (refused, unreachable, prohibited, unanswered) and succeeded.
    pub failed: u64,
    pub succeeded: u64,
    /// TCP flags seen in its probes, OR-ed.
    pub tcp_flags: u8,
    /// The detector's score when it fired: TRW's likelihood ratio, or the threshold
    /// detector's count over its threshold.
    pub score: f64,
    /// Time of the first counted outcome (monotonic, since boot).
    pub first_seen: Duration,
    /// Time of the latest outcome (monotonic, since boot).
    pub last_seen: Duration,
    /// Whether the source address may be forged.
    pub spoof: Spoof,
}

/// The evidence on forged source addresses, as scanlogd reports it and more.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spoof {
    /// Lowest and highest TTL (hop limit) the probes arrived with; (0, 0) when unknown.
    /// Equal when consistent, as packets from one host over one path are; nmap picks a
    /// random TTL per probe, so a wide range marks crafted packets, not forged addresses.
    pub ttl_min: u8,
    pub ttl_max: u8,
    /// Why the sources may be forged: `decoys` (a distributed scan: nmap's decoys send
    /// the same probes from addresses the scanner does not own, and nothing in the
    /// packets tells which source is real), `spread` (a distributed scan of many sources
    /// with one or two probes each, as a forged-source flood makes), `martian` (a source
    /// no packet can come from: 0/8, 127/8, multicast, 240/4, ::, ::1, ff00::/8,
    /// IPv4-mapped).
    pub reasons: Vec<&'static str>,
}

impl Spoof {
    /// True when every probe arrived with the same TTL.
    pub fn ttl_consistent(&self) -> bool {
        self.ttl_min == self.ttl_max
    }

    /// True when some reason says the sources may be forged.
    pub fn suspected(&self) -> bool {
        !self.reasons.is_empty()
    }

    /// True for a spread scan (reason `spread`): never a reason to block its sources.
    pub fn spread(&self) -> bool {
        self.reasons.contains(&SPREAD)
    }
}

/// The reason of a spread scan's sources.
pub const SPREAD: &str = "spread";

/// True for addresses no packet from the network can legitimately come from.
pub fn is_martian(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let first = v4.octets()[0];
            first == 0 || first == 127 || first >= 224
        }
        IpAddr::V6(v6) => {
            v6.is_unspecified()
                || v6.is_loopback()
                || v6.is_multicast()
                || v6.to_ipv4_mapped().is_some()
        }
    }
}
