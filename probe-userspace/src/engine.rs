//! The first sweep heuristic, as pure logic: a vertical port scan is at least
//! `min_ports` distinct ports of one target refused to one source within `window`.
//!
//! No I/O and no clock: [`Sweep::observe`] takes each failed attempt with its timestamp
//! (monotonic time since boot, as the kernel stamps it) and returns the alert, if this
//! attempt completes a scan. The table is bounded: at most `max_pairs` (source, target)
//! pairs, the least recently active evicted first, and at most `min_ports` ports per pair
//! before it alerts ([`MAX_REPORTED_PORTS`] after), so memory stays flat under a flood of
//! spoofed sources.

use std::{collections::HashMap, net::IpAddr, time::Duration};

use crate::event::{Probe, ProbeType};

/// Distinct ports kept per pair once it has alerted, for the alert's port list.
pub const MAX_REPORTED_PORTS: usize = 1024;

/// Tuning of the sweep heuristic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SweepConfig {
    /// Distinct refused ports of one target from one source that make a scan.
    pub min_ports: usize,
    /// How far back the distinct ports are counted; a pair idle for longer starts over.
    pub window: Duration,
    /// (source, target) pairs tracked at once; the least recently active go first.
    pub max_pairs: usize,
}

impl Default for SweepConfig {
    /// 10 ports within 60 s, 65 536 pairs (about 7 MiB at most).
    fn default() -> Self {
        Self {
            min_ports: 10,
            window: Duration::from_secs(60),
            max_pairs: 65_536,
        }
    }
}

/// A recognised vertical port scan of one target by one source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScanAlert {
    /// The scanning source.
    pub src: IpAddr,
    /// The scanned target.
    pub dst: IpAddr,
    /// IP protocol of the probes.
    pub proto: u8,
    /// Interface index of the latest probe.
    pub ifindex: u32,
    /// Distinct refused ports within the window, sorted.
    pub ports: Vec<u16>,
    /// Failed attempts counted for this pair since its first one in this episode.
    pub probes: u64,
    /// Time of the first counted failure (monotonic, since boot).
    pub first_seen: Duration,
    /// Time of the failure that completed the scan (monotonic, since boot).
    pub last_seen: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct PairKey {
    src: IpAddr,
    dst: IpAddr,
    proto: u8,
}

#[derive(Debug)]
struct PairState {
    first_seen: Duration,
    last_seen: Duration,
    /// (port, time of its latest failure), unsorted, distinct ports.
    ports: Vec<(u16, Duration)>,
    probes: u64,
    alerted: bool,
}

impl PairState {
    fn new(now: Duration) -> Self {
        Self {
            first_seen: now,
            last_seen: now,
            ports: Vec::new(),
            probes: 0,
            alerted: false,
        }
    }
}

/// The vertical-scan detector's state; see the module documentation.
#[derive(Debug)]
pub struct Sweep {
    config: SweepConfig,
    // std's HashMap seeds SipHash randomly per process, so crafted addresses cannot be
    // chosen to collide.
    pairs: HashMap<PairKey, PairState>,
    evictions: u64,
}

impl Sweep {
    /// A detector with the given tuning.
    pub fn new(config: SweepConfig) -> Self {
        Self {
            pairs: HashMap::with_capacity(config.max_pairs.min(4096)),
            config,
            evictions: 0,
        }
    }

    /// Pairs currently tracked.
    pub fn tracked(&self) -> usize {
        self.pairs.len()
    }

    /// Pairs evicted to make room so far.
    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    /// Feeds one failed attempt seen at `now`; returns the alert if it completes a scan.
    /// Each (source, target) episode alerts once; it ends after `window` without failures.
    pub fn observe(&mut self, probe: &Probe, now: Duration) -> Option<ScanAlert> {
        // Only failed attempts on ports make a vertical scan; pings have no port.
        if !probe.failed() || probe.probe == ProbeType::IcmpEcho {
            return None;
        }
        let key = PairKey {
            src: probe.src,
            dst: probe.dst,
            proto: probe.proto,
        };
        if !self.pairs.contains_key(&key) && self.pairs.len() >= self.config.max_pairs {
            self.make_room(now);
        }
        let window = self.config.window;
        let state = self.pairs.entry(key).or_insert_with(|| PairState::new(now));
        if now.saturating_sub(state.last_seen) > window {
            // A new episode: the old one went quiet.
            *state = PairState::new(now);
        }
        state.last_seen = state.last_seen.max(now);
        state.probes += 1;
        state
            .ports
            .retain(|&(_, seen)| now.saturating_sub(seen) <= window);
        match state
            .ports
            .iter_mut()
            .find(|(port, _)| *port == probe.dst_port)
        {
            Some((_, seen)) => *seen = (*seen).max(now),
            None => {
                let cap = if state.alerted {
                    MAX_REPORTED_PORTS
                } else {
                    self.config.min_ports
                };
                if state.ports.len() < cap {
                    state.ports.push((probe.dst_port, now));
                }
            }
        }
        if state.alerted || state.ports.len() < self.config.min_ports {
            return None;
        }
        state.alerted = true;
        let mut ports: Vec<u16> = state.ports.iter().map(|&(port, _)| port).collect();
        ports.sort_unstable();
        Some(ScanAlert {
            src: probe.src,
            dst: probe.dst,
            proto: probe.proto,
            ifindex: probe.ifindex,
            ports,
            probes: state.probes,
            first_seen: state.first_seen,
            last_seen: now,
        })
    }

    /// Frees room for one pair: first every pair idle past the window, else the least
    /// recently active eighth of the table (amortised: one sort per many inserts).
    fn make_room(&mut self, now: Duration) {
        let window = self.config.window;
        let before = self.pairs.len();
        self.pairs
            .retain(|_, state| now.saturating_sub(state.last_seen) <= window);
        if self.pairs.len() == before {
            let mut ages: Vec<(Duration, PairKey)> = self
                .pairs
                .iter()
                .map(|(key, state)| (state.last_seen, *key))
                .collect();
            let victims = (ages.len() / 8).max(1);
            ages.select_nth_unstable_by_key(victims - 1, |(seen, _)| *seen);
            for (_, key) in &ages[..victims] {
                self.pairs.remove(key);
            }
        }
        self.evictions += (before - self.pairs.len()) as u64;
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::event::{Outcome, ProbeType};

    const SCANNER: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1));
    const VICTIM: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2));
    const OTHER_VICTIM: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 3));

    fn probe(src: IpAddr, dst: IpAddr, port: u16) -> Probe {
        Probe {
            timestamp: Duration::ZERO,
            src,
            dst,
            src_port: 40000,
            dst_port: port,
            proto: 6,
            probe: ProbeType::TcpSyn,
            outcome: Outcome::Refused,
            tcp_flags: 0x02,
            ttl: 64,
            icmp: None,
            ifindex: 7,
        }
    }

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    fn config(min_ports: usize, window_s: u64, max_pairs: usize) -> SweepConfig {
        SweepConfig {
            min_ports,
            window: Duration::from_secs(window_s),
            max_pairs,
        }
    }

    #[test]
    fn alerts_once_when_the_threshold_is_reached() {
        let mut sweep = Sweep::new(config(5, 60, 16));
        for (i, port) in [80, 22, 443, 21].into_iter().enumerate() {
            assert_eq!(
                sweep.observe(&probe(SCANNER, VICTIM, port), secs(i as f64)),
                None
            );
        }
        let alert = sweep
            .observe(&probe(SCANNER, VICTIM, 25), secs(4.5))
            .expect("fifth distinct port completes the scan");
        assert_eq!(alert.src, SCANNER);
        assert_eq!(alert.dst, VICTIM);
        assert_eq!(alert.ports, vec![21, 22, 25, 80, 443]);
        assert_eq!(alert.probes, 5);
        assert_eq!(alert.first_seen, secs(0.0));
        assert_eq!(alert.last_seen, secs(4.5));
        assert_eq!(alert.ifindex, 7);
        // The scan goes on: no second alert for the same episode.
        for port in 1000..1100 {
            assert_eq!(
                sweep.observe(&probe(SCANNER, VICTIM, port), secs(5.0)),
                None
            );
        }
    }

    #[test]
    fn successes_and_pings_are_not_port_probes() {
        let mut sweep = Sweep::new(config(2, 60, 16));
        let mut accepted = probe(SCANNER, VICTIM, 80);
        accepted.outcome = Outcome::Accepted;
        let mut ping = probe(SCANNER, VICTIM, 0);
        ping.probe = ProbeType::IcmpEcho;
        ping.outcome = Outcome::Unanswered;
        for p in [&accepted, &ping] {
            assert_eq!(sweep.observe(p, secs(1.0)), None);
        }
        assert_eq!(sweep.tracked(), 0);
        // Every failing outcome counts.
        let mut unanswered = probe(SCANNER, VICTIM, 81);
        unanswered.outcome = Outcome::Unanswered;
        let mut prohibited = probe(SCANNER, VICTIM, 82);
        prohibited.outcome = Outcome::Prohibited;
        assert!(sweep.observe(&unanswered, secs(1.0)).is_none());
        assert!(sweep.observe(&prohibited, secs(1.0)).is_some());
    }

    #[test]
    fn repeated_ports_do_not_count_twice() {
        let mut sweep = Sweep::new(config(3, 60, 16));
        for i in 0..50 {
            let port = if i % 2 == 0 { 80 } else { 81 };
            assert_eq!(
                sweep.observe(&probe(SCANNER, VICTIM, port), secs(i as f64 * 0.1)),
                None
            );
        }
        let alert = sweep
            .observe(&probe(SCANNER, VICTIM, 82), secs(5.0))
            .unwrap();
        assert_eq!(alert.ports, vec![80, 81, 82]);
        assert_eq!(alert.probes, 51);
    }

    #[test]
    fn ports_older_than_the_window_do_not_count() {
        let mut sweep = Sweep::new(config(3, 10, 16));
        // One port every 6 s: never three within 10 s of each other.
        for i in 0..20u16 {
            let t = secs(f64::from(i) * 6.0);
            assert_eq!(
                sweep.observe(&probe(SCANNER, VICTIM, 1000 + i), t),
                None,
                "port {i}"
            );
        }
        // Three within 10 s do.
        assert!(
            sweep
                .observe(&probe(SCANNER, VICTIM, 1), secs(200.0))
                .is_none()
        );
        assert!(
            sweep
                .observe(&probe(SCANNER, VICTIM, 2), secs(201.0))
                .is_none()
        );
        assert!(
            sweep
                .observe(&probe(SCANNER, VICTIM, 3), secs(202.0))
                .is_some()
        );
    }

    #[test]
    fn a_quiet_pair_alerts_again_in_a_new_episode() {
        let mut sweep = Sweep::new(config(2, 10, 16));
        assert!(
            sweep
                .observe(&probe(SCANNER, VICTIM, 1), secs(0.0))
                .is_none()
        );
        assert!(
            sweep
                .observe(&probe(SCANNER, VICTIM, 2), secs(1.0))
                .is_some()
        );
        assert!(
            sweep
                .observe(&probe(SCANNER, VICTIM, 3), secs(2.0))
                .is_none()
        );
        // Quiet for longer than the window: the next scan is a new one.
        assert!(
            sweep
                .observe(&probe(SCANNER, VICTIM, 4), secs(20.0))
                .is_none()
        );
        let again = sweep
            .observe(&probe(SCANNER, VICTIM, 5), secs(21.0))
            .unwrap();
        assert_eq!(again.ports, vec![4, 5]);
        assert_eq!(again.probes, 2);
        assert_eq!(again.first_seen, secs(20.0));
    }

    #[test]
    fn targets_and_sources_are_counted_apart() {
        let mut sweep = Sweep::new(config(3, 60, 16));
        let other_src = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 9));
        // Two ports each on two targets, and two from another source: no scan anywhere.
        for (src, dst, port) in [
            (SCANNER, VICTIM, 1),
            (SCANNER, VICTIM, 2),
            (SCANNER, OTHER_VICTIM, 3),
            (SCANNER, OTHER_VICTIM, 4),
            (other_src, VICTIM, 5),
            (other_src, VICTIM, 6),
        ] {
            assert_eq!(sweep.observe(&probe(src, dst, port), secs(1.0)), None);
        }
        let alert = sweep
            .observe(&probe(SCANNER, OTHER_VICTIM, 5), secs(2.0))
            .unwrap();
        assert_eq!((alert.src, alert.dst), (SCANNER, OTHER_VICTIM));
        assert_eq!(alert.ports, vec![3, 4, 5]);
    }

    #[test]
    fn the_table_stays_bounded_under_a_flood_of_sources() {
        let mut sweep = Sweep::new(config(3, 60, 1000));
        for i in 0..50_000u32 {
            let spoofed = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i));
            assert!(
                sweep
                    .observe(&probe(spoofed, VICTIM, 80), secs(f64::from(i) * 1e-4))
                    .is_none()
            );
            assert!(sweep.tracked() <= 1000);
        }
        assert!(sweep.evictions() >= 49_000);
        // A real scanner in the middle of the flood is still caught.
        let mut caught = None;
        for port in 1..=3 {
            caught = sweep.observe(&probe(SCANNER, VICTIM, port), secs(6.0));
            for j in 0..200u32 {
                let spoofed = IpAddr::V4(Ipv4Addr::from(0x0b00_0000 + j));
                sweep.observe(&probe(spoofed, VICTIM, 80), secs(6.0));
            }
        }
        assert!(caught.is_some(), "scanner lost in the flood");
    }

    #[test]
    fn ports_kept_per_pair_are_capped() {
        let mut sweep = Sweep::new(config(5, 600, 4));
        let mut alert = None;
        for port in 1..=60_000u16 {
            if let Some(a) = sweep.observe(&probe(SCANNER, VICTIM, port), secs(1.0)) {
                alert = Some(a);
            }
        }
        assert_eq!(alert.unwrap().ports, vec![1, 2, 3, 4, 5]);
        let state = sweep.pairs.values().next().unwrap();
        assert_eq!(state.ports.len(), MAX_REPORTED_PORTS);
    }
}
