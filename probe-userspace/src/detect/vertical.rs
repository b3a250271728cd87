//! Vertical scans by threshold: at least `min_ports` distinct ports of one target failing
//! for one source within the window (pings have no port and do not count).

use std::{mem::size_of, net::IpAddr, time::Duration};

use crate::{
    detect::{
        alert::ScanKind,
        episode::Episode,
        table::{BoundedTable, ENTRY_OVERHEAD},
        verdict::{Detector, Verdict},
    },
    event::{Outcome, Probe, ProbeType},
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct PairKey {
    src: IpAddr,
    dst: IpAddr,
    proto: u8,
}

/// See the module documentation.
#[derive(Debug)]
pub struct Vertical {
    min_ports: usize,
    window: Duration,
    pairs: BoundedTable<PairKey, Episode<u16>>,
}

impl Vertical {
    /// `min_ports` within `window`, at most `max_tracked` (source, target) pairs.
    pub fn new(min_ports: usize, window: Duration, max_tracked: usize) -> Self {
        Self {
            min_ports,
            window,
            pairs: BoundedTable::new(max_tracked),
        }
    }
}

impl Detector for Vertical {
    fn table(&self) -> &'static str {
        "vertical"
    }

    fn observe(&mut self, probe: &Probe, now: Duration) -> Option<Verdict> {
        if probe.outcome == Outcome::Accepted || probe.probe == ProbeType::IcmpEcho {
            return None;
        }
        let key = PairKey {
            src: probe.src,
            dst: probe.dst,
            proto: probe.proto,
        };
        let window = self.window;
        let episode = self.pairs.entry(key, now, window, || Episode::new(now));
        if !episode.note(probe.dst_port, now, window, self.min_ports) {
            return None;
        }
        Some(episode.verdict(
            ScanKind::Vertical,
            Some(probe.dst),
            episode.items.sorted(),
            vec![probe.dst],
            self.min_ports,
        ))
    }

    fn tracked(&self) -> usize {
        self.pairs.len()
    }

    fn failed_ports(&self, src: IpAddr, dst: IpAddr, proto: u8) -> Option<Vec<u16>> {
        let key = PairKey { src, dst, proto };
        self.pairs.get(&key).map(|episode| episode.items.sorted())
    }

    fn evictions(&self) -> u64 {
        self.pairs.evictions()
    }

    fn memory_bound(&self) -> usize {
        self.pairs.capacity()
            * (size_of::<PairKey>()
                + size_of::<Episode<u16>>()
                + ENTRY_OVERHEAD
                + self.min_ports * size_of::<(u16, Duration)>())
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::detect::verdict::DetectorName;

    fn refused(port: u16) -> Probe {
        let ip = |last| IpAddr::V4(Ipv4Addr::new(198, 18, 0, last));
        Probe::syn(ip(1), ip(2), port, Outcome::Refused)
    }

    #[test]
    fn one_verdict_per_episode_and_the_episode_stops_at_its_threshold() {
        let mut vertical = Vertical::new(5, Duration::from_secs(600), 4);
        let now = Duration::from_secs(1);
        let verdicts: Vec<Verdict> = (1..=1000)
            .filter_map(|port| vertical.observe(&refused(port), now))
            .collect();
        assert_eq!(verdicts.len(), 1);
        assert_eq!(verdicts[0].ports, vec![1, 2, 3, 4, 5]);
        assert_eq!(verdicts[0].detector, DetectorName::Threshold);
        assert_eq!(vertical.pairs.values().next().unwrap().items.len(), 5);
        assert_eq!(vertical.tracked(), 1);
    }

    #[test]
    fn answered_attempts_and_pings_are_not_port_failures() {
        let mut vertical = Vertical::new(2, Duration::from_secs(60), 4);
        let mut accepted = refused(1);
        accepted.outcome = Outcome::Accepted;
        let mut ping = refused(2);
        ping.probe = ProbeType::IcmpEcho;
        let now = Duration::from_secs(1);
        assert!(vertical.observe(&accepted, now).is_none());
        assert!(vertical.observe(&ping, now).is_none());
        assert_eq!(vertical.tracked(), 0);
    }
}
