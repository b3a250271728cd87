//! The incident lifecycle: a recognised scan as it goes on, from `start` through `update`s
//! to its `end` summary, with the lists it reports (capped) and the TTLs of its sources.

use std::{net::IpAddr, time::Duration};

use crate::{
    detect::{
        alert::{Phase, SPREAD, ScanAlert, ScanKind, Spoof, Technique, is_martian},
        table::{Activity, RecentSet},
        verdict::DetectorName,
    },
    event::{Probe, ProbeType},
};

/// Ports listed per incident (the first seen; the counts go on).
pub const MAX_REPORTED: usize = 1024;
/// Hosts listed per incident.
pub const MAX_HOSTS: usize = 256;
/// Open incidents at most (each lists up to 1024 ports, 256 hosts and 256 sources:
/// about 11 KiB at worst); the least recently active end first when more open.
pub const MAX_INCIDENTS: usize = 4096;
/// Source addresses listed per incident (distributed scans, grouped sources).
pub const MAX_SOURCES: usize = 256;

/// Appends `item` unless it is listed already or the list holds `cap`; true when added.
pub(crate) fn push_new<T: PartialEq>(list: &mut Vec<T>, item: T, cap: usize) -> bool {
    if list.len() >= cap || list.contains(&item) {
        return false;
    }
    list.push(item);
    true
}

/// The ports a scan lists: the first [`MAX_REPORTED`] that failed, kept sorted, so that
/// telling a port listed already (a repeat, for each port of each kernel summary) is a
/// binary search, not a pass over the list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct PortList(Vec<u16>);

impl PortList {
    /// Whether `port` is listed.
    pub(crate) fn contains(&self, port: &u16) -> bool {
        self.0.binary_search(port).is_ok()
    }

    /// Lists `port` unless it is listed already or the list is full; true when added.
    pub(crate) fn insert(&mut self, port: u16) -> bool {
        if self.0.len() >= MAX_REPORTED {
            return false;
        }
        match self.0.binary_search(&port) {
            Ok(_) => false,
            Err(at) => {
                self.0.insert(at, port);
                true
            }
        }
    }

    /// The ports, in order.
    pub(crate) fn as_slice(&self) -> &[u16] {
        &self.0
    }
}

/// A sorted copy.
pub(crate) fn sorted<T: Ord + Copy>(list: &[T]) -> Vec<T> {
    let mut sorted = list.to_vec();
    sorted.sort_unstable();
    sorted
}

/// The lowest and highest TTL seen (0, 0: none known yet).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct TtlRange {
    pub(crate) min: u8,
    pub(crate) max: u8,
}

impl TtlRange {
    /// Widens the range to `ttl` (0: unknown, ignored).
    pub(crate) fn note(&mut self, ttl: u8) {
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
    pub(crate) fn merge(&mut self, other: TtlRange) {
        self.note(other.min);
        self.note(other.max);
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct IncidentKey {
    /// The source (grouped, when grouping is on); unspecified for a distributed scan.
    pub(crate) src: IpAddr,
    pub(crate) kind: ScanKind,
    /// The target of a vertical or distributed scan; none for a sweep.
    pub(crate) target: Option<IpAddr>,
    /// The protocol of a vertical scan (TCP and UDP scans of one host are two incidents);
    /// 0 for a sweep.
    pub(crate) proto: u8,
}

/// An open incident: a recognised scan, as it goes on.
#[derive(Debug)]
pub(crate) struct Incident {
    pub(crate) key: IncidentKey,
    pub(crate) detector: DetectorName,
    pub(crate) score: f64,
    pub(crate) technique: Technique,
    pub(crate) proto: u8,
    pub(crate) ifindex: u32,
    pub(crate) first_seen: Duration,
    pub(crate) last_seen: Duration,
    /// Ports that failed (the first [`MAX_REPORTED`] seen).
    pub(crate) ports: PortList,
    /// Hosts probed, in the order seen (up to [`MAX_HOSTS`]).
    pub(crate) hosts: Vec<IpAddr>,
    /// Source addresses, in the order seen.
    pub(crate) sources: Vec<IpAddr>,
    pub(crate) src_net: Option<(IpAddr, u8)>,
    pub(crate) probes: u64,
    pub(crate) failed: u64,
    pub(crate) succeeded: u64,
    pub(crate) tcp_flags: u8,
    pub(crate) ttl: TtlRange,
    pub(crate) last_alert: Duration,
    pub(crate) changed: bool,
    /// A spread scan (sources of one or two probes each), not decoys.
    pub(crate) spread: bool,
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
    pub(crate) fn add_source(&mut self, src: IpAddr) -> bool {
        push_new(&mut self.sources, src, MAX_SOURCES)
    }

    /// How long it may stay idle before it ends: `base`, or three of its average gaps
    /// between outcomes when longer (a slow scan), at most `cap`.
    pub(crate) fn idle_limit(&self, base: Duration, cap: Duration) -> Duration {
        if self.probes < 2 {
            return base;
        }
        let gap = self.last_seen.saturating_sub(self.first_seen) / (self.probes - 1) as u32;
        base.max((gap * 3).min(cap))
    }

    /// Counts one outcome of this scan; notes whether its picture changed.
    pub(crate) fn count(&mut self, probe: &Probe, now: Duration) {
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
            self.changed |= self.ports.insert(probe.dst_port);
        }
        self.changed |= push_new(&mut self.hosts, probe.dst, MAX_HOSTS);
    }

    /// Counts the outcomes `probe` stands for on each of `ports` (a kernel summary's), as
    /// [`Incident::count`] would one by one.
    pub(crate) fn count_ports(&mut self, probe: &Probe, ports: &[u16], now: Duration) {
        let Some(&first) = ports.first() else {
            return;
        };
        self.count(
            &Probe {
                dst_port: first,
                ..probe.clone()
            },
            now,
        );
        let rest = &ports[1..];
        self.probes += rest.len() as u64;
        if probe.failed() {
            self.failed += rest.len() as u64;
            if probe.probe != ProbeType::IcmpEcho {
                for &port in rest {
                    self.changed |= self.ports.insert(port);
                }
            }
        } else {
            self.succeeded += rest.len() as u64;
        }
    }

    pub(crate) fn alert(&self, phase: Phase) -> ScanAlert {
        let mut sources = self.sources.clone();
        sources.sort_unstable();
        let mut reasons = Vec::new();
        if self.spread {
            reasons.push(SPREAD);
        } else if self.key.kind == ScanKind::Distributed {
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
            ports: self.ports.as_slice().to_vec(),
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

impl Incident {
    /// The `update` alert when the scan grew and the last alert is `interval` old.
    pub(crate) fn due_update(&mut self, now: Duration, interval: Duration) -> Option<ScanAlert> {
        if !self.changed || now.saturating_sub(self.last_alert) < interval {
            return None;
        }
        self.changed = false;
        self.last_alert = now;
        Some(self.alert(Phase::Update))
    }
}

/// What was seen of a (grouped) source lately, for the incident it may open: the TTL
/// range of its probes and, when grouping is on, its addresses.
#[derive(Debug)]
pub(crate) struct Sighting {
    pub(crate) last_seen: Duration,
    pub(crate) ttl: TtlRange,
    pub(crate) addrs: RecentSet<IpAddr>,
}

impl Activity for Sighting {
    fn last_seen(&self) -> Duration {
        self.last_seen
    }
}

/// Addresses remembered per group of sources before its incident opens.
pub(crate) const GROUP_ADDRS: usize = 16;

/// The key of a distributed scan's incident on `target`.
pub(crate) fn crowd_key(target: IpAddr, proto: u8) -> IncidentKey {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_list_keeps_the_first_ports_seen_sorted_and_each_once() {
        let mut list = PortList::default();
        assert!(list.insert(80) && list.insert(22) && list.insert(443));
        assert!(!list.insert(22), "listed already");
        assert_eq!(list.as_slice(), [22, 80, 443]);
        assert!(list.contains(&80) && !list.contains(&81));
        // Full: the ports seen first stay, later ones are counted but not listed.
        for port in 1000..1000 + MAX_REPORTED as u16 {
            list.insert(port);
        }
        assert_eq!(list.as_slice().len(), MAX_REPORTED);
        assert!(list.contains(&22) && list.contains(&443));
        assert!(!list.contains(&(1000 + MAX_REPORTED as u16 - 1)));
        assert!(!list.insert(1), "no room for a lower port either");
    }
}
