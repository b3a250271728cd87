//! The scan detectors and the alert lifecycle, as pure logic.
//!
//! Detectors: a vertical port scan is at least `min_ports` distinct ports of one target
//! failing for one source within `window`; a horizontal sweep is at least `min_hosts`
//! distinct targets probed by one source within `window` (failed attempts, and pings
//! whatever their answer); the sequential hypothesis test ([`crate::detect::trw`]) flags a
//! source after a few failed first contacts, usually long before either threshold; the
//! slow-scan detector ([`crate::detect::slow`]) counts each source's failed contacts over an hour;
//! and the crowd detector ([`crate::detect::crowd`]) recognises several sources failing on the same
//! ports of one target (nmap's decoys, distributed scans) as one incident listing them.
//! Optionally, the sources of one /24 (IPv4) or /64 (IPv6) count as one source
//! (`group_v4`, `group_v6`), and their incident lists every address.
//!
//! Lifecycle: the first detector to recognise a scan opens an incident, keyed by (source,
//! kind, target), and its alert has phase `start`; while the scan goes on, at most one
//! `update` per `update_interval` reports its growth; `end` sums it up once it has been
//! idle for `idle_timeout` ([`Engine::tick`]) or when the detector stops
//! ([`Engine::finish`]). A later scan of another target is another incident and alerts.
//!
//! No I/O and no clock: outcomes come with their timestamps (monotonic time since boot, as
//! the kernel stamps them). State is bounded ([`crate::detect::table`]): at most `max_tracked`
//! entries per detector (the crowd detector: its own cap of targets) and at most
//! [`MAX_INCIDENTS`] incidents, the entries with the least evidence and then the least
//! recently active forgotten first, and bounded lists per entry, so memory stays flat
//! under floods of spoofed sources: [`Engine::memory_bound`] says how high at worst.

pub mod crowd;
pub mod slow;
pub mod table;
pub mod trw;

use std::{net::IpAddr, time::Duration};

use crate::{
    detect::crowd::{CrowdConfig, CrowdVerdict, Crowds},
    detect::slow::{Slow, SlowConfig, SlowVerdict},
    detect::table::{Activity, BoundedTable, RecentSet},
    detect::trw::{Trw, TrwConfig, TrwVerdict},
    event::{Outcome, Probe, ProbeType},
    net::cidr,
};

/// Ports listed per incident (the first seen; the counts go on).
pub const MAX_REPORTED: usize = 1024;
/// Hosts listed per incident.
pub const MAX_HOSTS: usize = 256;
/// Open incidents at most (each lists up to 1024 ports, 256 hosts and 256 sources:
/// about 11 KiB at worst); the least recently active end first when more open.
pub const MAX_INCIDENTS: usize = 4096;
/// Ports kept per sweeping source, to report which ports a sweep used.
const SWEEP_PORTS: usize = 16;
/// Source addresses listed per incident (distributed scans, grouped sources).
pub const MAX_SOURCES: usize = 256;

/// Tuning of the detectors.
#[derive(Clone, Debug, PartialEq)]
pub struct EngineConfig {
    /// Distinct failed ports of one target from one source that make a port scan.
    pub min_ports: usize,
    /// Distinct targets probed by one source that make a sweep.
    pub min_hosts: usize,
    /// How far back ports and hosts are counted; an entry idle for longer starts over.
    pub window: Duration,
    /// Entries each detector tracks at once; the least recently active go first.
    pub max_tracked: usize,
    /// The sequential hypothesis test; `None` turns it off.
    pub trw: Option<TrwConfig>,
    /// At most one `update` alert per incident this often.
    pub update_interval: Duration,
    /// An incident idle for this long ends (its `end` alert sums it up); a slow scan's
    /// incident waits for three of its average gaps between probes, up to the slow
    /// detector's horizon.
    pub idle_timeout: Duration,
    /// The slow-scan detector; `None` turns it off.
    pub slow: Option<SlowConfig>,
    /// The distributed / decoy scan detector; `None` turns it off.
    pub crowd: Option<CrowdConfig>,
    /// Prefix length that groups IPv4 sources into one (32: every address on its own).
    pub group_v4: u8,
    /// Prefix length that groups IPv6 sources into one (128: every address on its own).
    pub group_v6: u8,
}

impl Default for EngineConfig {
    /// 10 ports or 16 hosts within 60 s; TRW with its paper's defaults; slow scans of 8
    /// failed contacts within an hour; 3 sources sharing 3 failed ports within 60 s;
    /// updates at most every 60 s; incidents end after 60 s idle; 65 536 entries per table;
    /// no grouping.
    fn default() -> Self {
        Self {
            min_ports: 10,
            min_hosts: 16,
            window: Duration::from_secs(60),
            max_tracked: 65_536,
            trw: Some(TrwConfig::default()),
            update_interval: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(60),
            slow: Some(SlowConfig::default()),
            crowd: Some(CrowdConfig::default()),
            group_v4: 32,
            group_v6: 128,
        }
    }
}

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
        }
    }

    /// True for segments no ordinary stack sends to start a connection: these scans hide
    /// from connection logs and firewalls that only watch SYNs.
    pub fn is_stealth(self) -> bool {
        matches!(
            self,
            Technique::Fin
                | Technique::Null
                | Technique::Xmas
                | Technique::OddFlags
                | Technique::Ack
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
    /// The detector that recognised the scan first (`trw`, `threshold`).
    pub detector: &'static str,
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
    /// packets tells which source is real), `martian` (a source no packet can come from:
    /// 0/8, 127/8, multicast, 240/4, ::, ::1, ff00::/8, IPv4-mapped).
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
}

/// Appends `item` unless it is listed already or the list holds `cap`; true when added.
fn push_new<T: PartialEq>(list: &mut Vec<T>, item: T, cap: usize) -> bool {
    if list.len() >= cap || list.contains(&item) {
        return false;
    }
    list.push(item);
    true
}

/// A sorted copy.
fn sorted<T: Ord + Copy>(list: &[T]) -> Vec<T> {
    let mut sorted = list.to_vec();
    sorted.sort_unstable();
    sorted
}

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

/// The lowest and highest TTL seen (0, 0: none known yet).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct TtlRange {
    min: u8,
    max: u8,
}

impl TtlRange {
    /// Widens the range to `ttl` (0: unknown, ignored).
    fn note(&mut self, ttl: u8) {
        if ttl == 0 {
            return;
        }
        if self.min == 0 {
            *self = Self { min: ttl, max: ttl };
        }
        self.min = self.min.min(ttl);
        self.max = self.max.max(ttl);
    }

    /// Widens the range to cover `other`.
    fn merge(&mut self, other: TtlRange) {
        self.note(other.min);
        self.note(other.max);
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct PairKey {
    src: IpAddr,
    dst: IpAddr,
    proto: u8,
}

/// One detector's state for one key: an episode of activity.
#[derive(Debug)]
struct Episode<T> {
    first_seen: Duration,
    last_seen: Duration,
    /// Ports (vertical) or hosts (horizontal) within the window.
    items: RecentSet<T>,
    /// Ports a sweep used (horizontal only).
    ports: RecentSet<u16>,
    probes: u64,
    succeeded: u64,
    alerted: bool,
}

impl<T: PartialEq + Copy + Ord> Episode<T> {
    fn new(now: Duration) -> Self {
        Self {
            first_seen: now,
            last_seen: now,
            items: RecentSet::new(),
            ports: RecentSet::new(),
            probes: 0,
            succeeded: 0,
            alerted: false,
        }
    }

    /// Notes one outcome at `now` for `item`; returns true when the episode reaches
    /// `threshold` distinct items for the first time.
    fn note(&mut self, item: T, now: Duration, window: Duration, threshold: usize) -> bool {
        if now.saturating_sub(self.last_seen) > window {
            // A new episode: the old one went quiet.
            *self = Self::new(now);
        }
        self.last_seen = self.last_seen.max(now);
        self.probes += 1;
        // Its incident lists the scan from here on: the episode needs no more.
        self.items.note(item, now, window, threshold);
        if self.alerted || self.items.len() < threshold {
            return false;
        }
        self.alerted = true;
        true
    }
}

impl<T: PartialEq + Copy + Ord> Activity for Episode<T> {
    fn last_seen(&self) -> Duration {
        self.last_seen
    }

    fn worth(&self) -> u32 {
        if self.alerted {
            u32::MAX
        } else {
            self.items.len() as u32
        }
    }
}

/// What a detector recognised, with the evidence it gathered.
struct Verdict {
    detector: &'static str,
    kind: ScanKind,
    target: Option<IpAddr>,
    /// The sources of a distributed scan (empty otherwise: the probe's source).
    sources: Vec<IpAddr>,
    ports: Vec<u16>,
    hosts: Vec<IpAddr>,
    score: f64,
    first_seen: Duration,
    failed: u64,
    succeeded: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct IncidentKey {
    /// The source (grouped, when grouping is on); unspecified for a distributed scan.
    src: IpAddr,
    kind: ScanKind,
    /// The target of a vertical or distributed scan; none for a sweep.
    target: Option<IpAddr>,
    /// The protocol of a vertical scan (TCP and UDP scans of one host are two incidents);
    /// 0 for a sweep.
    proto: u8,
}

/// An open incident: a recognised scan, as it goes on.
#[derive(Debug)]
struct Incident {
    key: IncidentKey,
    detector: &'static str,
    score: f64,
    technique: Technique,
    proto: u8,
    ifindex: u32,
    first_seen: Duration,
    last_seen: Duration,
    /// Ports that failed, in the order seen (up to [`MAX_REPORTED`]).
    ports: Vec<u16>,
    /// Hosts probed, in the order seen (up to [`MAX_HOSTS`]).
    hosts: Vec<IpAddr>,
    /// Source addresses, in the order seen.
    sources: Vec<IpAddr>,
    src_net: Option<(IpAddr, u8)>,
    probes: u64,
    failed: u64,
    succeeded: u64,
    tcp_flags: u8,
    ttl: TtlRange,
    last_alert: Duration,
    changed: bool,
}

impl Activity for Incident {
    fn last_seen(&self) -> Duration {
        self.last_seen
    }

    fn worth(&self) -> u32 {
        // Every incident is a verdict: recency alone decides among them.
        u32::MAX
    }
}

impl Incident {
    /// Notes a source address; true when it is new.
    fn add_source(&mut self, src: IpAddr) -> bool {
        push_new(&mut self.sources, src, MAX_SOURCES)
    }

    /// How long it may stay idle before it ends: `base`, or three of its average gaps
    /// between outcomes when longer (a slow scan), at most `cap`.
    fn idle_limit(&self, base: Duration, cap: Duration) -> Duration {
        if self.probes < 2 {
            return base;
        }
        let gap = self.last_seen.saturating_sub(self.first_seen) / (self.probes - 1) as u32;
        base.max((gap * 3).min(cap))
    }

    /// Counts one outcome of this scan; notes whether its picture changed.
    fn count(&mut self, probe: &Probe, now: Duration) {
        self.changed |= self.add_source(probe.src);
        self.ttl.note(probe.ttl);
        self.last_seen = self.last_seen.max(now);
        self.probes += 1;
        if probe.failed() {
            self.failed += 1;
        } else {
            self.succeeded += 1;
        }
        self.tcp_flags |= probe.tcp_flags;
        self.ifindex = probe.ifindex;
        // Reported lists cover the whole scan, not a window: the ports that failed (open
        // ports answering are not probes of unused ports), every host probed.
        if probe.failed() && probe.probe != ProbeType::IcmpEcho {
            self.changed |= push_new(&mut self.ports, probe.dst_port, MAX_REPORTED);
        }
        self.changed |= push_new(&mut self.hosts, probe.dst, MAX_HOSTS);
    }

    fn alert(&self, phase: Phase) -> ScanAlert {
        let mut sources = self.sources.clone();
        sources.sort_unstable();
        let mut reasons = Vec::new();
        if self.key.kind == ScanKind::Distributed {
            reasons.push("decoys");
        }
        if self.sources.iter().any(|&s| is_martian(s)) {
            reasons.push("martian");
        }
        ScanAlert {
            phase,
            detector: self.detector,
            kind: self.key.kind,
            src: self.sources.first().copied().unwrap_or(self.key.src),
            sources,
            src_net: self.src_net,
            spoof: Spoof {
                ttl_min: self.ttl.min,
                ttl_max: self.ttl.max,
                reasons,
            },
            targets: sorted(&self.hosts),
            proto: self.proto,
            technique: self.technique,
            ifindex: self.ifindex,
            ports: sorted(&self.ports),
            probes: self.probes,
            failed: self.failed,
            succeeded: self.succeeded,
            tcp_flags: self.tcp_flags,
            score: self.score,
            first_seen: self.first_seen,
            last_seen: self.last_seen,
        }
    }
}

/// What was seen of a (grouped) source lately, for the incident it may open: the TTL
/// range of its probes and, when grouping is on, its addresses.
#[derive(Debug)]
struct Sighting {
    last_seen: Duration,
    ttl: TtlRange,
    addrs: RecentSet<IpAddr>,
}

impl Activity for Sighting {
    fn last_seen(&self) -> Duration {
        self.last_seen
    }
}

/// Addresses remembered per group of sources before its incident opens.
const GROUP_ADDRS: usize = 16;

/// The detectors' and incidents' state; see the module documentation.
#[derive(Debug)]
pub struct Engine {
    sightings: BoundedTable<IpAddr, Sighting>,
    config: EngineConfig,
    vertical: BoundedTable<PairKey, Episode<u16>>,
    horizontal: BoundedTable<IpAddr, Episode<IpAddr>>,
    trw: Option<Trw>,
    slow: Option<Slow>,
    crowds: Option<Crowds>,
    incidents: BoundedTable<IncidentKey, Incident>,
}

/// The key of a distributed scan's incident on `target`.
fn crowd_key(target: IpAddr, proto: u8) -> IncidentKey {
    IncidentKey {
        src: match target {
            IpAddr::V4(_) => IpAddr::from([0u8; 4]),
            IpAddr::V6(_) => IpAddr::from([0u8; 16]),
        },
        kind: ScanKind::Distributed,
        target: Some(target),
        proto,
    }
}

impl Engine {
    /// Detectors with the given tuning.
    pub fn new(config: EngineConfig) -> Self {
        Self {
            sightings: BoundedTable::new(config.max_tracked),
            vertical: BoundedTable::new(config.max_tracked),
            horizontal: BoundedTable::new(config.max_tracked),
            trw: config.trw.map(|c| Trw::new(c, config.max_tracked)),
            slow: config.slow.map(Slow::new),
            crowds: config.crowd.map(Crowds::new),
            incidents: BoundedTable::new(config.max_tracked.min(MAX_INCIDENTS)),
            config,
        }
    }

    /// Entries tracked, all tables together.
    pub fn tracked(&self) -> usize {
        self.sightings.len()
            + self.vertical.len()
            + self.horizontal.len()
            + self.incidents.len()
            + self.trw.as_ref().map_or(0, Trw::tracked)
            + self.slow.as_ref().map_or(0, Slow::tracked)
            + self.crowds.as_ref().map_or(0, Crowds::tracked)
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Entries held per table, by name (for metrics).
    pub fn tables(&self) -> Vec<(&'static str, usize)> {
        let mut tables = vec![
            ("sources", self.sightings.len()),
            ("vertical", self.vertical.len()),
            ("horizontal", self.horizontal.len()),
            ("incidents", self.incidents.len()),
        ];
        if let Some(trw) = &self.trw {
            tables.push(("trw", trw.tracked()));
        }
        if let Some(slow) = &self.slow {
            tables.push(("slow", slow.tracked()));
        }
        if let Some(crowds) = &self.crowds {
            tables.push(("crowds", crowds.tracked()));
        }
        tables
    }

    /// Entries forgotten to make room so far (threshold and slow-scan detectors).
    pub fn evictions(&self) -> u64 {
        self.vertical.evictions()
            + self.horizontal.evictions()
            + self.slow.as_ref().map_or(0, Slow::evictions)
    }

    /// The most memory the engine's state can take with `config`, in bytes (every table
    /// full, every list at its cap; hash-table overhead approximated): what a flood of
    /// crafted sources can cost at worst.
    pub fn memory_bound(config: &EngineConfig) -> usize {
        use std::mem::size_of;
        // Per entry: key, value, and about 8 bytes of hash-table overhead.
        const OVERHEAD: usize = 8;
        let tracked = config.max_tracked;
        let grouped = config.group_v4 < 32 || config.group_v6 < 128;
        let sightings = tracked
            * (size_of::<IpAddr>()
                + size_of::<Sighting>()
                + OVERHEAD
                + if grouped {
                    GROUP_ADDRS * size_of::<(IpAddr, Duration)>()
                } else {
                    0
                });
        let vertical = tracked
            * (size_of::<PairKey>()
                + size_of::<Episode<u16>>()
                + OVERHEAD
                + config.min_ports * size_of::<(u16, Duration)>());
        let horizontal = tracked
            * (size_of::<IpAddr>()
                + size_of::<Episode<IpAddr>>()
                + OVERHEAD
                + config.min_hosts * size_of::<(IpAddr, Duration)>()
                + SWEEP_PORTS * size_of::<(u16, Duration)>());
        let trw = config
            .trw
            .map_or(0, |_| tracked * crate::detect::trw::BYTES_PER_SOURCE);
        let slow = config.slow.map_or(0, |s| {
            s.max_sources * crate::detect::slow::BYTES_PER_SOURCE
                + 2 * crate::detect::slow::ADMISSION_BITS / 8
        });
        let crowd = config.crowd.map_or(0, |c| {
            c.max_targets * crate::detect::crowd::BYTES_PER_TARGET
        });
        let incidents = tracked.min(MAX_INCIDENTS)
            * (size_of::<IncidentKey>()
                + size_of::<Incident>()
                + OVERHEAD
                + MAX_REPORTED * size_of::<u16>()
                + (MAX_HOSTS + MAX_SOURCES) * size_of::<IpAddr>());
        sightings + vertical + horizontal + trw + slow + crowd + incidents
    }

    /// Open incidents.
    pub fn incidents(&self) -> usize {
        self.incidents.len()
    }

    /// The source as the per-source detectors count it: its group's network address when
    /// grouping is on, with the prefix length.
    fn group(&self, src: IpAddr) -> (IpAddr, Option<u8>) {
        let len = match src {
            IpAddr::V4(_) => self.config.group_v4.min(32),
            IpAddr::V6(_) => self.config.group_v6.min(128),
        };
        match src {
            IpAddr::V4(_) if len == 32 => (src, None),
            IpAddr::V6(_) if len == 128 => (src, None),
            _ => (cidr::network(src, len), Some(len)),
        }
    }

    /// True when the probe's source is a member of an open distributed scan of its target.
    fn in_crowd(&self, probe: &Probe) -> bool {
        self.incidents
            .get(&crowd_key(probe.dst, probe.proto))
            .is_some_and(|i| i.sources.contains(&probe.src))
    }

    /// Notes the TTL (and, when grouped, the address) of a probe from `src`.
    fn sight(&mut self, src: IpAddr, grouped: bool, probe: &Probe, now: Duration) {
        // As long as the slowest detector that may open an incident remembers evidence.
        let idle = self
            .config
            .trw
            .map_or(self.config.window, |t| t.idle)
            .max(self.config.window);
        let sighting = self.sightings.entry(src, now, idle, || Sighting {
            last_seen: now,
            ttl: TtlRange::default(),
            addrs: RecentSet::new(),
        });
        if now.saturating_sub(sighting.last_seen) > idle {
            sighting.ttl = TtlRange::default();
            sighting.addrs = RecentSet::new();
        }
        sighting.last_seen = sighting.last_seen.max(now);
        sighting.ttl.note(probe.ttl);
        if grouped {
            sighting.addrs.note(probe.src, now, idle, GROUP_ADDRS);
        }
    }

    /// Feeds one outcome seen at `now`; returns the alerts it causes: `start` for scans it
    /// completes, `update` for scans it grows when one is due (and `end` for a source's
    /// own incident that a distributed scan absorbs).
    pub fn observe(&mut self, probe: &Probe, now: Duration) -> Vec<ScanAlert> {
        let mut alerts = Vec::new();
        let (src, prefix) = self.group(probe.src);
        self.sight(src, prefix.is_some(), probe, now);
        // A member of a distributed scan of this target counts there, not on its own.
        let crowd_key = crowd_key(probe.dst, probe.proto);
        let in_crowd = self.in_crowd(probe);
        let vertical_key = IncidentKey {
            src,
            kind: ScanKind::Vertical,
            target: Some(probe.dst),
            proto: probe.proto,
        };
        let horizontal_key = IncidentKey {
            src,
            kind: ScanKind::Horizontal,
            target: None,
            proto: 0,
        };
        // Open incidents of this source count it first, so a scan opened just now by this
        // very probe is not counted twice.
        let counted = if in_crowd {
            [crowd_key, horizontal_key]
        } else {
            [vertical_key, horizontal_key]
        };
        let interval = self.config.update_interval;
        for key in counted {
            if let Some(incident) = self.incidents.get_mut(&key) {
                incident.count(probe, now);
                alerts.extend(incident.due_update(now, interval));
            }
        }
        for verdict in self.detect(probe, now) {
            match verdict.kind {
                ScanKind::Distributed => alerts.extend(self.open_crowd(verdict, probe, now)),
                // Its crowd's incident holds this source's scan of this target.
                // (Asked again: a distributed verdict of this very probe may have just
                // opened it.)
                ScanKind::Vertical if self.in_crowd(probe) => {}
                // The slow-scan detector speaks for scans the others missed: a source with
                // an open incident is known already (rare: once per source and horizon).
                _ if verdict.detector == "slow"
                    && self
                        .incidents
                        .values()
                        .any(|i| i.key.src == src || i.sources.contains(&probe.src)) => {}
                _ => alerts.extend(self.open(verdict, probe, now)),
            }
        }
        alerts
    }

    /// The alerts that time alone makes due at `now`: `end` for the incidents idle for
    /// their idle limit, `update` for those whose growth was held back by the interval.
    pub fn tick(&mut self, now: Duration) -> Vec<ScanAlert> {
        let idle = self.config.idle_timeout;
        let cap = self.config.slow.map_or(idle, |s| s.horizon);
        let mut ended = self
            .incidents
            .take_where(|i| now.saturating_sub(i.last_seen) > i.idle_limit(idle, cap));
        ended.sort_by_key(|i| i.first_seen);
        let mut alerts: Vec<ScanAlert> = ended.iter().map(|i| i.alert(Phase::End)).collect();
        let interval = self.config.update_interval;
        for incident in self.incidents.values_mut() {
            alerts.extend(incident.due_update(now, interval));
        }
        alerts
    }

    /// Ends every open incident (the detector stops): their `end` alerts.
    pub fn finish(&mut self) -> Vec<ScanAlert> {
        let mut ended = self.incidents.take_where(|_| true);
        ended.sort_by_key(|i| i.first_seen);
        ended.iter().map(|i| i.alert(Phase::End)).collect()
    }

    /// Opens the incident of a verdict, unless it is open already; returns its `start`.
    fn open(&mut self, verdict: Verdict, probe: &Probe, now: Duration) -> Option<ScanAlert> {
        let (src, prefix) = self.group(probe.src);
        let key = match verdict.kind {
            ScanKind::Distributed => crowd_key(probe.dst, probe.proto),
            ScanKind::Vertical => IncidentKey {
                src,
                kind: ScanKind::Vertical,
                target: verdict.target,
                proto: probe.proto,
            },
            ScanKind::Horizontal => IncidentKey {
                src,
                kind: ScanKind::Horizontal,
                target: None,
                proto: 0,
            },
        };
        let prefix = prefix.filter(|_| verdict.kind != ScanKind::Distributed);
        if self.incidents.contains(&key) {
            return None;
        }
        let idle = self.config.idle_timeout;
        let incident = self.incidents.entry(key, now, idle, || Incident {
            key,
            detector: verdict.detector,
            score: verdict.score,
            technique: Technique::of(probe),
            proto: probe.proto,
            ifindex: probe.ifindex,
            first_seen: verdict.first_seen.min(now),
            last_seen: now,
            ports: Vec::new(),
            hosts: Vec::new(),
            sources: Vec::new(),
            src_net: prefix.map(|len| (src, len)),
            // The evidence the detector gathered before the incident existed, this probe
            // included.
            probes: verdict.failed + verdict.succeeded,
            failed: verdict.failed,
            succeeded: verdict.succeeded,
            tcp_flags: probe.tcp_flags,
            ttl: TtlRange::default(),
            last_alert: now,
            changed: false,
        });
        for port in verdict.ports {
            push_new(&mut incident.ports, port, MAX_REPORTED);
        }
        for host in verdict.hosts {
            push_new(&mut incident.hosts, host, MAX_HOSTS);
        }
        incident.add_source(probe.src);
        for source in verdict.sources {
            incident.add_source(source);
        }
        // What was seen of its sources before the incident existed.
        let seen: Vec<IpAddr> = if key.kind == ScanKind::Distributed {
            incident.sources.clone()
        } else {
            vec![src]
        };
        for source in seen {
            if let Some(sighting) = self.sightings.get_mut(&source) {
                incident.ttl.merge(sighting.ttl);
                for addr in sighting.addrs.sorted() {
                    incident.add_source(addr);
                }
            }
        }
        Some(incident.alert(Phase::Start))
    }

    /// Opens a distributed scan's incident, or grows it with new sources; returns its
    /// `start` (or a due `update`), after the `end` of each member's own incident on the
    /// target, which it absorbs.
    fn open_crowd(&mut self, verdict: Verdict, probe: &Probe, now: Duration) -> Vec<ScanAlert> {
        let key = crowd_key(probe.dst, probe.proto);
        let interval = self.config.update_interval;
        if let Some(incident) = self.incidents.get_mut(&key) {
            let joined = !incident.sources.contains(&probe.src);
            for &source in &verdict.sources {
                incident.changed |= incident.add_source(source);
            }
            if joined {
                // Not counted above: it was not a member yet.
                incident.count(probe, now);
            }
            return incident.due_update(now, interval).into_iter().collect();
        }
        let mut alerts = Vec::new();
        for &source in &verdict.sources {
            let own = IncidentKey {
                src: self.group(source).0,
                kind: ScanKind::Vertical,
                target: Some(probe.dst),
                proto: probe.proto,
            };
            if let Some(incident) = self.incidents.remove(&own) {
                alerts.push(incident.alert(Phase::End));
            }
        }
        alerts.extend(self.open(verdict, probe, now));
        alerts
    }

    /// Runs every detector on one outcome; returns what they recognise, a distributed scan
    /// first (so its members' own verdicts on the target fold into it).
    fn detect(&mut self, probe: &Probe, now: Duration) -> Vec<Verdict> {
        let mut verdicts = Vec::new();
        if let Some(crowds) = self.crowds.as_mut()
            && let Some(CrowdVerdict {
                target,
                sources,
                ports,
                failed,
                first_seen,
            }) = crowds.observe(probe, now)
        {
            let min_sources = self.config.crowd.map_or(1, |c| c.min_sources);
            verdicts.push(Verdict {
                detector: "crowd",
                kind: ScanKind::Distributed,
                target: Some(target),
                score: sources.len() as f64 / min_sources as f64,
                sources,
                ports,
                hosts: vec![target],
                first_seen,
                failed,
                succeeded: 0,
            });
        }
        let (src, _) = self.group(probe.src);
        let grouped = Probe {
            src,
            ..probe.clone()
        };
        let probe = &grouped;
        if let Some(trw) = self.trw.as_mut()
            && let Some(TrwVerdict {
                failed,
                succeeded,
                failed_hosts,
                failed_ports,
                score,
                first_seen,
                ..
            }) = trw.observe(probe, now)
        {
            verdicts.push(Verdict::of_source(
                "trw",
                failed_hosts,
                failed_ports,
                score,
                first_seen,
                (u64::from(failed), u64::from(succeeded)),
            ));
        }
        if let Some(slow) = self.slow.as_mut()
            && let Some(SlowVerdict {
                failed,
                succeeded,
                sample,
                first_seen,
            }) = slow.observe(probe, now)
        {
            let min_failed = self.config.slow.map_or(1, |s| s.min_failed);
            let mut hosts: Vec<IpAddr> = sample.iter().map(|&(h, _)| h).collect();
            hosts.dedup();
            let mut ports: Vec<u16> = sample.iter().map(|&(_, p)| p).collect();
            ports.sort_unstable();
            ports.dedup();
            verdicts.push(Verdict::of_source(
                "slow",
                hosts,
                ports,
                f64::from(failed) / f64::from(min_failed),
                first_seen,
                (u64::from(failed), u64::from(succeeded)),
            ));
        }
        let failed = probe.outcome != Outcome::Accepted;
        let window = self.config.window;
        // Vertical: failed attempts on ports (pings have none).
        if failed && probe.probe != ProbeType::IcmpEcho {
            let key = PairKey {
                src: probe.src,
                dst: probe.dst,
                proto: probe.proto,
            };
            let episode = self.vertical.entry(key, now, window, || Episode::new(now));
            if episode.note(probe.dst_port, now, window, self.config.min_ports) {
                verdicts.push(Verdict {
                    detector: "threshold",
                    kind: ScanKind::Vertical,
                    target: Some(probe.dst),
                    sources: Vec::new(),
                    ports: episode.items.sorted(),
                    hosts: vec![probe.dst],
                    score: episode.items.len() as f64 / self.config.min_ports as f64,
                    first_seen: episode.first_seen,
                    failed: episode.probes - episode.succeeded,
                    succeeded: episode.succeeded,
                });
            }
        }
        // Horizontal: targets with failed attempts, and pinged targets whatever the answer
        // (probing many hosts for life is the sweep).
        if failed || probe.probe == ProbeType::IcmpEcho {
            let episode = self
                .horizontal
                .entry(probe.src, now, window, || Episode::new(now));
            if probe.probe != ProbeType::IcmpEcho {
                episode.ports.note(probe.dst_port, now, window, SWEEP_PORTS);
            }
            let reached = episode.note(probe.dst, now, window, self.config.min_hosts);
            if !failed {
                episode.succeeded += 1;
            }
            if reached {
                verdicts.push(Verdict {
                    detector: "threshold",
                    kind: ScanKind::Horizontal,
                    target: None,
                    sources: Vec::new(),
                    ports: episode.ports.sorted(),
                    hosts: episode.items.sorted(),
                    score: episode.items.len() as f64 / self.config.min_hosts as f64,
                    first_seen: episode.first_seen,
                    failed: episode.probes - episode.succeeded,
                    succeeded: episode.succeeded,
                });
            }
        }
        verdicts
    }
}

impl Verdict {
    /// The verdict of a per-source detector from the hosts and ports it failed on: a
    /// vertical scan when they are all one host, else a sweep.
    fn of_source(
        detector: &'static str,
        hosts: Vec<IpAddr>,
        ports: Vec<u16>,
        score: f64,
        first_seen: Duration,
        (failed, succeeded): (u64, u64),
    ) -> Self {
        let one_host = hosts.len() == 1;
        Self {
            detector,
            kind: if one_host {
                ScanKind::Vertical
            } else {
                ScanKind::Horizontal
            },
            target: one_host.then_some(hosts[0]),
            sources: Vec::new(),
            ports,
            hosts,
            score,
            first_seen,
            failed,
            succeeded,
        }
    }
}

impl Incident {
    /// The `update` alert when the scan grew and the last alert is `interval` old.
    fn due_update(&mut self, now: Duration, interval: Duration) -> Option<ScanAlert> {
        if !self.changed || now.saturating_sub(self.last_alert) < interval {
            return None;
        }
        self.changed = false;
        self.last_alert = now;
        Some(self.alert(Phase::Update))
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    const SCANNER: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1));
    const VICTIM: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2));
    const OTHER_VICTIM: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 3));

    fn probe(src: IpAddr, dst: IpAddr, port: u16) -> Probe {
        Probe::syn(src, dst, port, Outcome::Refused)
    }

    fn host(i: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(0xc612_0100 + i))
    }

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    /// Threshold detectors alone (TRW off), as the threshold tests need.
    fn config(min_ports: usize, window_s: u64, max_tracked: usize) -> EngineConfig {
        EngineConfig {
            min_ports,
            min_hosts: 1000,
            window: Duration::from_secs(window_s),
            max_tracked,
            trw: None,
            slow: None,
            crowd: None,
            ..EngineConfig::default()
        }
    }

    fn vertical(alerts: Vec<ScanAlert>) -> Option<ScanAlert> {
        alerts.into_iter().find(|a| a.kind == ScanKind::Vertical)
    }

    #[test]
    fn alerts_once_when_the_threshold_is_reached() {
        let mut engine = Engine::new(config(5, 60, 16));
        for (i, port) in [80, 22, 443, 21].into_iter().enumerate() {
            assert_eq!(
                engine.observe(&probe(SCANNER, VICTIM, port), secs(i as f64)),
                vec![]
            );
        }
        let alert = vertical(engine.observe(&probe(SCANNER, VICTIM, 25), secs(4.5)))
            .expect("fifth distinct port completes the scan");
        assert_eq!(
            (alert.src, alert.targets.as_slice()),
            (SCANNER, &[VICTIM][..])
        );
        assert_eq!(alert.ports, vec![21, 22, 25, 80, 443]);
        assert_eq!(alert.probes, 5);
        assert_eq!((alert.first_seen, alert.last_seen), (secs(0.0), secs(4.5)));
        assert_eq!((alert.ifindex, alert.technique), (7, Technique::Syn));
        // The scan goes on: no second alert for the same episode.
        for port in 1000..1100 {
            assert_eq!(
                engine.observe(&probe(SCANNER, VICTIM, port), secs(5.0)),
                vec![]
            );
        }
    }

    #[test]
    fn successes_and_pings_are_not_port_probes() {
        let mut engine = Engine::new(config(2, 60, 16));
        let mut accepted = probe(SCANNER, VICTIM, 80);
        accepted.outcome = Outcome::Accepted;
        let mut ping = probe(SCANNER, VICTIM, 0);
        ping.probe = ProbeType::IcmpEcho;
        ping.outcome = Outcome::Unanswered;
        for p in [&accepted, &accepted, &ping] {
            assert_eq!(vertical(engine.observe(p, secs(1.0))), None);
        }
        // Every failing outcome counts.
        let mut unanswered = probe(SCANNER, VICTIM, 81);
        unanswered.outcome = Outcome::Unanswered;
        let mut prohibited = probe(SCANNER, VICTIM, 82);
        prohibited.outcome = Outcome::Prohibited;
        assert_eq!(vertical(engine.observe(&unanswered, secs(1.0))), None);
        let alert = vertical(engine.observe(&prohibited, secs(1.0))).unwrap();
        assert_eq!(alert.ports, vec![81, 82]);
    }

    #[test]
    fn repeated_ports_do_not_count_twice() {
        let mut engine = Engine::new(config(3, 60, 16));
        for i in 0..50 {
            let port = if i % 2 == 0 { 80 } else { 81 };
            assert_eq!(
                engine.observe(&probe(SCANNER, VICTIM, port), secs(i as f64 * 0.1)),
                vec![]
            );
        }
        let alert = vertical(engine.observe(&probe(SCANNER, VICTIM, 82), secs(5.0))).unwrap();
        assert_eq!(alert.ports, vec![80, 81, 82]);
        assert_eq!(alert.probes, 51);
    }

    #[test]
    fn ports_older_than_the_window_do_not_count() {
        let mut engine = Engine::new(config(3, 10, 16));
        // One port every 6 s: never three within 10 s of each other.
        for i in 0..20u16 {
            let t = secs(f64::from(i) * 6.0);
            assert_eq!(
                engine.observe(&probe(SCANNER, VICTIM, 1000 + i), t),
                vec![],
                "port {i}"
            );
        }
        // Three within 10 s do.
        assert!(vertical(engine.observe(&probe(SCANNER, VICTIM, 1), secs(200.0))).is_none());
        assert!(vertical(engine.observe(&probe(SCANNER, VICTIM, 2), secs(201.0))).is_none());
        assert!(vertical(engine.observe(&probe(SCANNER, VICTIM, 3), secs(202.0))).is_some());
    }

    #[test]
    fn a_quiet_pair_alerts_again_in_a_new_episode() {
        let mut engine = Engine::new(EngineConfig {
            idle_timeout: Duration::from_secs(10),
            ..config(2, 10, 16)
        });
        assert!(vertical(engine.observe(&probe(SCANNER, VICTIM, 1), secs(0.0))).is_none());
        assert!(vertical(engine.observe(&probe(SCANNER, VICTIM, 2), secs(1.0))).is_some());
        assert!(vertical(engine.observe(&probe(SCANNER, VICTIM, 3), secs(2.0))).is_none());
        // Quiet for longer than the idle timeout: the incident ends...
        let end = engine.tick(secs(15.0));
        assert_eq!((end.len(), end[0].phase), (1, Phase::End));
        // ...and the next scan is a new one.
        assert!(vertical(engine.observe(&probe(SCANNER, VICTIM, 4), secs(20.0))).is_none());
        let again = vertical(engine.observe(&probe(SCANNER, VICTIM, 5), secs(21.0))).unwrap();
        assert_eq!(
            (again.phase, again.ports, again.probes),
            (Phase::Start, vec![4, 5], 2)
        );
        assert_eq!(again.first_seen, secs(20.0));
    }

    #[test]
    fn targets_and_sources_are_counted_apart() {
        let mut engine = Engine::new(config(3, 60, 16));
        let other_src = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 9));
        for (src, dst, port) in [
            (SCANNER, VICTIM, 1),
            (SCANNER, VICTIM, 2),
            (SCANNER, OTHER_VICTIM, 3),
            (SCANNER, OTHER_VICTIM, 4),
            (other_src, VICTIM, 5),
            (other_src, VICTIM, 6),
        ] {
            assert_eq!(engine.observe(&probe(src, dst, port), secs(1.0)), vec![]);
        }
        let alert = vertical(engine.observe(&probe(SCANNER, OTHER_VICTIM, 5), secs(2.0))).unwrap();
        assert_eq!((alert.src, alert.targets), (SCANNER, vec![OTHER_VICTIM]));
        assert_eq!(alert.ports, vec![3, 4, 5]);
    }

    #[test]
    fn techniques_are_named_from_the_probe() {
        let with = |probe_type, flags| {
            let mut p = probe(SCANNER, VICTIM, 1);
            p.probe = probe_type;
            p.tcp_flags = flags;
            Technique::of(&p)
        };
        assert_eq!(with(ProbeType::TcpSyn, 0x02), Technique::Syn);
        assert_eq!(with(ProbeType::TcpStealth, 0x01), Technique::Fin);
        assert_eq!(with(ProbeType::TcpStealth, 0x00), Technique::Null);
        assert_eq!(with(ProbeType::TcpStealth, 0x29), Technique::Xmas);
        assert_eq!(with(ProbeType::TcpStealth, 0x20), Technique::OddFlags);
        assert_eq!(with(ProbeType::TcpAck, 0x10), Technique::Ack);
        assert_eq!(with(ProbeType::Udp, 0), Technique::Udp);
        assert_eq!(with(ProbeType::IcmpEcho, 0), Technique::Ping);
        assert!(Technique::Xmas.is_stealth() && Technique::Ack.is_stealth());
        assert!(!Technique::Syn.is_stealth() && !Technique::Udp.is_stealth());
    }

    #[test]
    fn a_ping_sweep_alerts_with_its_hosts() {
        let mut engine = Engine::new(EngineConfig {
            min_hosts: 4,
            trw: None,
            ..EngineConfig::default()
        });
        let mut alert = None;
        for i in 0..6 {
            let mut ping = probe(SCANNER, host(i), 0);
            ping.probe = ProbeType::IcmpEcho;
            // Live hosts answer, others do not: both are the sweep.
            ping.outcome = if i % 2 == 0 {
                Outcome::Accepted
            } else {
                Outcome::Unanswered
            };
            for a in engine.observe(&ping, secs(f64::from(i))) {
                assert!(alert.is_none(), "one alert per sweep");
                alert = Some(a);
            }
        }
        let alert = alert.expect("four hosts make a sweep");
        assert_eq!(
            (alert.kind, alert.technique, alert.src),
            (ScanKind::Horizontal, Technique::Ping, SCANNER)
        );
        assert_eq!(alert.targets, (0..4).map(host).collect::<Vec<_>>());
        assert!(alert.ports.is_empty());
    }

    #[test]
    fn a_port_sweep_reports_its_port_and_ignores_answered_connects() {
        let mut engine = Engine::new(EngineConfig {
            min_hosts: 3,
            trw: None,
            ..EngineConfig::default()
        });
        // Successful connections to many hosts are not a sweep (think of a busy client).
        for i in 0..50 {
            let mut ok = probe(SCANNER, host(i), 80);
            ok.outcome = Outcome::Accepted;
            assert_eq!(engine.observe(&ok, secs(1.0)), vec![]);
        }
        // Failed SYNs to port 80 of three hosts are.
        let mut alerts = Vec::new();
        for i in 100..103 {
            let mut p = probe(SCANNER, host(i), 80);
            p.outcome = Outcome::Unreachable;
            alerts.extend(engine.observe(&p, secs(2.0)));
        }
        assert_eq!(alerts.len(), 1);
        assert_eq!(
            (alerts[0].kind, alerts[0].ports.as_slice()),
            (ScanKind::Horizontal, &[80][..])
        );
    }

    #[test]
    fn state_stays_bounded_under_a_flood_of_sources() {
        let mut engine = Engine::new(config(3, 60, 1000));
        for i in 0..50_000u32 {
            let spoofed = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i));
            let alerts = engine.observe(&probe(spoofed, VICTIM, 80), secs(f64::from(i) * 1e-4));
            assert!(vertical(alerts).is_none());
            // Three tables of 1000: sightings, pairs, sources.
            assert!(engine.tracked() <= 3000);
        }
        assert!(engine.evictions() >= 2 * 49_000);
        // A real scanner in the middle of the flood is still caught.
        let mut caught = None;
        for port in 1..=3 {
            caught = vertical(engine.observe(&probe(SCANNER, VICTIM, port), secs(6.0)));
            for j in 0..200u32 {
                let spoofed = IpAddr::V4(Ipv4Addr::from(0x0b00_0000 + j));
                engine.observe(&probe(spoofed, VICTIM, 80), secs(6.0));
            }
        }
        assert!(caught.is_some(), "scanner lost in the flood");
    }

    #[test]
    fn trw_opens_the_incident_after_four_failures_and_thresholds_add_nothing() {
        let mut engine = Engine::new(EngineConfig::default());
        for port in 1..=3 {
            assert_eq!(
                engine.observe(&probe(SCANNER, VICTIM, port), secs(0.1)),
                vec![]
            );
        }
        let start = engine.observe(&probe(SCANNER, VICTIM, 4), secs(0.2));
        assert_eq!(start.len(), 1, "{start:?}");
        let start = &start[0];
        assert_eq!(
            (start.phase, start.detector, start.kind),
            (Phase::Start, "trw", ScanKind::Vertical)
        );
        assert_eq!((start.probes, start.failed, start.succeeded), (4, 4, 0));
        assert_eq!(start.ports, vec![1, 2, 3, 4]);
        assert!(start.score >= 99.0);
        // The threshold detector reaches 10 ports later: the incident is open, no new alert.
        for port in 5..=20 {
            assert_eq!(
                engine.observe(&probe(SCANNER, VICTIM, port), secs(0.3)),
                vec![],
                "port {port}"
            );
        }
        assert_eq!(engine.incidents(), 1);
        let end = engine.finish();
        assert_eq!(end.len(), 1);
        assert_eq!(
            (end[0].phase, end[0].probes, end[0].ports.len()),
            (Phase::End, 20, 20)
        );
    }

    #[test]
    fn incidents_update_at_most_every_interval_and_end_when_idle() {
        let mut engine = Engine::new(EngineConfig {
            update_interval: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            ..config(3, 60, 16)
        });
        let mut start = Vec::new();
        for (t, port) in [(0.0, 1), (1.0, 2), (2.0, 3)] {
            start.extend(engine.observe(&probe(SCANNER, VICTIM, port), secs(t)));
        }
        assert_eq!(start.len(), 1);
        assert_eq!(
            (start[0].phase, start[0].detector, start[0].probes),
            (Phase::Start, "threshold", 3)
        );
        assert_eq!(start[0].first_seen, secs(0.0));
        // Growth within the interval: no update yet.
        for port in 4..=6 {
            assert_eq!(
                engine.observe(&probe(SCANNER, VICTIM, port), secs(5.0)),
                vec![]
            );
        }
        // The interval passes: the held-back growth goes out, on the next outcome or the
        // next tick, whichever comes first.
        let update = engine.tick(secs(12.5));
        assert_eq!(update.len(), 1);
        assert_eq!(
            (update[0].phase, update[0].ports.len(), update[0].probes),
            (Phase::Update, 6, 6)
        );
        assert_eq!(engine.tick(secs(13.0)), vec![], "nothing new");
        // Growth right after an update waits for the next interval.
        assert_eq!(
            engine.observe(&probe(SCANNER, VICTIM, 7), secs(13.0)),
            vec![]
        );
        assert_eq!(
            engine.observe(&probe(SCANNER, VICTIM, 8), secs(14.0)),
            vec![],
            "throttled"
        );
        // Idle: nothing before the timeout (the pending growth goes out as an update at
        // 23 s), the summary after.
        let pending = engine.tick(secs(40.0));
        assert_eq!(
            pending.iter().map(|a| a.phase).collect::<Vec<_>>(),
            vec![Phase::Update]
        );
        let end = engine.tick(secs(45.0));
        assert_eq!(end.len(), 1);
        assert_eq!(
            (end[0].phase, end[0].ports.clone(), end[0].probes),
            (Phase::End, (1..=8).collect::<Vec<_>>(), 8)
        );
        assert_eq!(
            (end[0].first_seen, end[0].last_seen),
            (secs(0.0), secs(14.0))
        );
        assert_eq!(engine.incidents(), 0);
    }

    #[test]
    fn a_later_scan_of_another_target_is_another_incident() {
        let mut engine = Engine::new(EngineConfig::default());
        let mut starts = Vec::new();
        for port in 1..=6 {
            starts.extend(engine.observe(&probe(SCANNER, VICTIM, port), secs(1.0)));
        }
        for port in 1..=6 {
            starts.extend(engine.observe(&probe(SCANNER, OTHER_VICTIM, port), secs(2.0)));
        }
        let starts: Vec<_> = starts.iter().filter(|a| a.phase == Phase::Start).collect();
        // TRW flags the source once (on the first host); the threshold of the second host
        // is not reached; the first host's incident stays open without a second start.
        assert_eq!(starts.len(), 1, "{starts:?}");
        // A new source, the same targets: alerts on its own.
        let other = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 9));
        let mut more = Vec::new();
        for port in 1..=4 {
            more.extend(engine.observe(&probe(other, VICTIM, port), secs(3.0)));
        }
        assert_eq!(more.len(), 1);
        assert_eq!(more[0].src, other);
    }

    #[test]
    fn the_memory_bound_scales_with_the_tracked_entries() {
        let bound = Engine::memory_bound(&EngineConfig::default());
        // Printed for the record (cargo test -- --nocapture).
        eprintln!("engine memory bound with the defaults: {} MiB", bound >> 20);
        assert!(bound > 10 << 20 && bound < 512 << 20, "{bound}");
        // The crowd and incident tables have caps of their own (about 80 MiB together).
        let small = Engine::memory_bound(&EngineConfig {
            max_tracked: 1024,
            ..EngineConfig::default()
        });
        eprintln!("with --max-tracked 1024: {} MiB", small >> 20);
        assert!(small < bound / 3, "{small}");
    }

    #[test]
    fn ports_kept_per_pair_are_capped() {
        let mut engine = Engine::new(config(5, 600, 4));
        let mut alert = None;
        for port in 1..=60_000u16 {
            if let Some(a) = vertical(engine.observe(&probe(SCANNER, VICTIM, port), secs(1.0))) {
                alert = Some(a);
            }
        }
        assert_eq!(alert.unwrap().ports, vec![1, 2, 3, 4, 5]);
        // The episode stops at its threshold; its incident lists the first 1024 ports.
        let episode = engine.vertical.values().next().unwrap();
        assert_eq!(episode.items.len(), 5);
        let end = engine.finish();
        assert_eq!(end[0].ports.len(), MAX_REPORTED);
        assert_eq!(end[0].probes, 60_000);
    }

    #[test]
    fn a_slow_scan_over_hours_is_caught_by_the_slow_detector_alone() {
        let mut engine = Engine::new(EngineConfig {
            slow: Some(SlowConfig {
                horizon: Duration::from_secs(2 * 3600),
                ..SlowConfig::default()
            }),
            ..EngineConfig::default()
        });
        // Eleven minutes between probes: longer than TRW's idle time (each probe starts a
        // new test) and than the threshold window.
        let gap = 11.0 * 60.0;
        let mut alerts = Vec::new();
        for i in 0..12u16 {
            let at = secs(gap * f64::from(i));
            alerts.extend(engine.observe(&probe(SCANNER, VICTIM, 100 + i), at));
            // The lifecycle timer runs in between: the incident must not end between two
            // probes of its slow scan.
            alerts.extend(engine.tick(at + secs(gap / 2.0)));
        }
        let start = alerts.iter().position(|a| a.phase == Phase::Start).unwrap();
        assert_eq!(alerts[start].detector, "slow");
        assert_eq!(alerts[start].kind, ScanKind::Vertical);
        // Flagged at the eighth failed port, 77 minutes in.
        assert_eq!(alerts[start].last_seen, secs(gap * 7.0));
        assert_eq!(alerts[start].failed, 8);
        assert!(!alerts.iter().any(|a| a.phase == Phase::End), "{alerts:?}");
        assert_eq!(alerts.iter().filter(|a| a.phase == Phase::Start).count(), 1);
        // Three average gaps after the last probe, it ends.
        let end = engine.tick(secs(gap * 11.0 + 3.5 * gap));
        assert_eq!(end.len(), 1);
        assert_eq!(end[0].phase, Phase::End);
        // The slow detector's sample (its latest four failed ports), then every later one.
        assert_eq!(end[0].ports, (104..112).collect::<Vec<_>>());
        assert_eq!(end[0].probes, 12);
    }

    #[test]
    fn decoys_are_one_distributed_incident_listing_the_sources() {
        let mut engine = Engine::new(EngineConfig::default());
        let sources = [host(201), host(202), SCANNER];
        let mut alerts = Vec::new();
        let mut t = 0.0;
        // nmap -D: each port from each decoy, then from the scanner.
        for port in 1..=30u16 {
            for src in sources {
                t += 0.001;
                alerts.extend(engine.observe(&probe(src, VICTIM, port), secs(t)));
            }
        }
        alerts.extend(engine.finish());
        let starts: Vec<_> = alerts.iter().filter(|a| a.phase == Phase::Start).collect();
        assert_eq!(starts.len(), 1, "{starts:#?}");
        let start = starts[0];
        assert_eq!(
            (start.kind, start.detector),
            (ScanKind::Distributed, "crowd")
        );
        let mut expected = sources.to_vec();
        expected.sort();
        assert_eq!(start.sources, expected);
        assert_eq!(start.targets, vec![VICTIM]);
        assert_eq!(start.ports, vec![1, 2, 3]);
        assert!(start.spoof.suspected());
        assert_eq!(start.spoof.reasons, vec!["decoys"]);
        // One incident, one end: every source's probes counted there.
        let ends: Vec<_> = alerts.iter().filter(|a| a.phase == Phase::End).collect();
        assert_eq!(ends.len(), 1);
        assert_eq!(ends[0].kind, ScanKind::Distributed);
        assert_eq!(ends[0].ports, (1..=30).collect::<Vec<_>>());
        assert_eq!(ends[0].probes, 90);
    }

    #[test]
    fn a_scanner_alone_first_then_joined_by_decoys_ends_its_own_incident() {
        let mut engine = Engine::new(EngineConfig::default());
        let mut alerts = Vec::new();
        for port in 1..=5u16 {
            alerts.extend(engine.observe(&probe(SCANNER, VICTIM, port), secs(0.1)));
        }
        assert_eq!(alerts.len(), 1);
        assert_eq!(alerts[0].kind, ScanKind::Vertical);
        for port in 1..=3u16 {
            for src in [host(201), host(202)] {
                alerts.extend(engine.observe(&probe(src, VICTIM, port), secs(0.2)));
            }
        }
        let kinds: Vec<_> = alerts.iter().map(|a| (a.phase, a.kind)).collect();
        assert_eq!(
            kinds,
            vec![
                (Phase::Start, ScanKind::Vertical),
                (Phase::End, ScanKind::Vertical),
                (Phase::Start, ScanKind::Distributed)
            ]
        );
        assert_eq!(alerts[2].sources.len(), 3);
        assert_eq!(engine.incidents(), 1);
    }

    #[test]
    fn grouped_sources_of_one_network_are_one_scanner() {
        let mut engine = Engine::new(EngineConfig {
            group_v4: 24,
            ..EngineConfig::default()
        });
        let mut alerts = Vec::new();
        // Four addresses of 198.18.1.0/24, one port each: no source alone looks like much.
        for i in 0..4u32 {
            alerts.extend(engine.observe(&probe(host(10 + i), VICTIM, 20 + i as u16), secs(1.0)));
        }
        assert_eq!(alerts.len(), 1, "{alerts:?}");
        assert_eq!(alerts[0].detector, "trw");
        assert_eq!(
            alerts[0].src_net,
            Some((IpAddr::V4(Ipv4Addr::new(198, 18, 1, 0)), 24))
        );
        assert_eq!(alerts[0].sources, (10..14).map(host).collect::<Vec<_>>());
        // Without grouping, nothing.
        let mut engine = Engine::new(EngineConfig::default());
        for i in 0..4u32 {
            let alerts = engine.observe(&probe(host(10 + i), VICTIM, 20 + i as u16), secs(1.0));
            assert!(alerts.is_empty());
        }
    }

    #[test]
    fn ttls_and_martian_sources_are_reported() {
        let mut engine = Engine::new(EngineConfig::default());
        let martian = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 9));
        let mut alerts = Vec::new();
        for (port, ttl) in [(1, 50), (2, 61), (3, 44), (4, 58)] {
            let mut p = probe(martian, VICTIM, port);
            p.ttl = ttl;
            alerts.extend(engine.observe(&p, secs(1.0)));
        }
        let spoof = &alerts[0].spoof;
        assert_eq!((spoof.ttl_min, spoof.ttl_max), (44, 61));
        assert!(!spoof.ttl_consistent());
        assert_eq!(spoof.reasons, vec!["martian"]);
        // An ordinary source with one TTL: consistent, not suspected.
        for port in 1..=4 {
            alerts.extend(engine.observe(&probe(SCANNER, VICTIM, port), secs(1.0)));
        }
        let spoof = &alerts[1].spoof;
        assert!(spoof.ttl_consistent() && !spoof.suspected());
        assert!(is_martian("ff02::1".parse().unwrap()) && !is_martian(SCANNER));
    }
}
