//! Distributed and decoy scan detection: several sources failing on the same ports of one
//! target within a window, or many sources each failing on one or two of its ports
//! ([`crate::detect::spread`]).
//!
//! nmap's decoy scan (`-D`) sends every probe once from the scanner and once from each
//! decoy address, so the target sees several sources probe the same ports in the same
//! order at the same time; a scan split across several machines looks alike when their port
//! sets overlap. For each target (and protocol) this keeps the sources that failed on it
//! recently, each with its first [`MEMBER_PORTS`] failed ports. When a source has failed
//! on `min_common` ports that `min_sources - 1` other sources also failed on, the crowd is
//! a distributed scan, reported as one incident listing the sources. Benign crowds (many
//! clients of a server that went down) fail on one or two ports, not three of the same.
//!
//! Memory: at most `max_targets` targets, [`MAX_MEMBERS`] sources each, [`MEMBER_PORTS`]
//! ports per source, and the spread scan's slots; about [`BYTES_PER_TARGET`] bytes per
//! target when full.

use std::{mem::size_of, net::IpAddr, time::Duration};

use crate::detect::{
    alert::ScanKind,
    verdict::{Detector, DetectorName, Verdict},
};
use crate::{
    detect::{
        spread::{self, Spread, SpreadVerdict, Units},
        table::{Activity, BoundedTable, RecentSet},
    },
    event::{Probe, ProbeType},
};

/// Sources remembered per target; later ones are not counted until one leaves the window.
pub const MAX_MEMBERS: usize = 32;
/// Failed ports remembered per source of a target (the first ones: decoys share them).
pub const MEMBER_PORTS: usize = 8;
/// Memory of one target with every slot used, bytes (approximate: vectors' headers and
/// hash-table overhead included).
pub const BYTES_PER_TARGET: usize = MAX_MEMBERS
    * (size_of::<Member>() + MEMBER_PORTS * size_of::<(u16, Duration)>())
    + 64
    + spread::BYTES_PER_TARGET;

/// The detector's parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CrowdConfig {
    /// Sources (the scanner and its decoys) that make a distributed scan (0: decoy
    /// crowds not looked for).
    pub min_sources: usize,
    /// Failed ports each of them must share with the others.
    pub min_common: usize,
    /// How far back sources and their ports count.
    pub window: Duration,
    /// Targets (our hosts) tracked at once; the least recently probed go first.
    pub max_targets: usize,
    /// Distinct ports of one target, each failed by a source with one or two failed
    /// ports there, that make a spread scan (0: not looked for).
    pub spread_ports: usize,
    /// How far back the spread scan's ports count.
    pub spread_window: Duration,
}

impl Default for CrowdConfig {
    /// Three sources sharing three failed ports within a minute; ten ports, each of a
    /// source of one or two, within ten seconds.
    fn default() -> Self {
        Self {
            min_sources: 3,
            min_common: 3,
            window: Duration::from_secs(60),
            max_targets: 4096,
            spread_ports: 10,
            spread_window: Duration::from_secs(10),
        }
    }
}

/// A crowd the detector recognised, from the point of view of the source that completed
/// it.
#[derive(Clone, Debug, PartialEq)]
pub struct CrowdVerdict {
    /// The target.
    pub target: IpAddr,
    /// The sources whose failed ports overlap, sorted.
    pub sources: Vec<IpAddr>,
    /// The ports they failed on, together, sorted.
    pub ports: Vec<u16>,
    /// Failed outcomes of those sources on the target within the window.
    pub failed: u64,
    /// The earliest of them.
    pub first_seen: Duration,
}

#[derive(Debug)]
struct Member {
    src: IpAddr,
    ports: RecentSet<u16>,
    failed: u64,
    first_seen: Duration,
    last_seen: Duration,
}

#[derive(Debug, Default)]
struct Crowd {
    members: Vec<Member>,
    last_seen: Duration,
    spread: Spread,
}

impl Activity for Crowd {
    fn last_seen(&self) -> Duration {
        self.last_seen
    }

    fn worth(&self) -> u32 {
        self.members.len() as u32
    }
}

/// Shared failed ports of two port lists, each sorted.
fn common(a: &[u16], b: &[u16]) -> usize {
    let (mut i, mut j, mut n) = (0, 0, 0);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                n += 1;
                i += 1;
                j += 1;
            }
        }
    }
    n
}

/// Every tracked target's recent failing sources.
#[derive(Debug)]
pub struct Crowds {
    config: CrowdConfig,
    /// What one source is to the spread scan (its address, or its prefix).
    units: Units,
    targets: BoundedTable<(IpAddr, u8), Crowd>,
}

impl Crowds {
    /// A detector with `config`, counting sources by `units` in spread scans.
    pub fn new(config: CrowdConfig, units: Units) -> Self {
        Self {
            targets: BoundedTable::new(config.max_targets),
            config,
            units,
        }
    }

    /// Targets tracked.
    pub fn tracked(&self) -> usize {
        self.targets.len()
    }

    /// Feeds one outcome; returns the crowd its source belongs to when it is a distributed
    /// scan (each time, as the crowd grows; the engine opens one incident).
    pub fn judge(&mut self, probe: &Probe, now: Duration) -> Option<CrowdVerdict> {
        self.judge_both(probe, now).0
    }

    /// Feeds one outcome to both: the decoy crowd's verdict, and the spread scan's.
    fn judge_both(
        &mut self,
        probe: &Probe,
        now: Duration,
    ) -> (Option<CrowdVerdict>, Option<SpreadVerdict>) {
        if !probe.failed() || probe.probe == ProbeType::IcmpEcho {
            return (None, None);
        }
        let window = self.config.window;
        let crowd = self
            .targets
            .entry((probe.dst, probe.proto), now, window, Crowd::default);
        crowd.last_seen = crowd.last_seen.max(now);
        let spread = (self.config.spread_ports > 0)
            .then(|| {
                crowd.spread.observe(
                    probe.src,
                    self.units.of(probe.src),
                    probe.dst_port,
                    now,
                    self.config.spread_window,
                    self.config.spread_ports,
                )
            })
            .flatten();
        (Self::decoys(crowd, &self.config, probe, now), spread)
    }

    /// The decoy crowd's part of [`Crowds::judge_both`].
    fn decoys(
        crowd: &mut Crowd,
        config: &CrowdConfig,
        probe: &Probe,
        now: Duration,
    ) -> Option<CrowdVerdict> {
        if config.min_sources == 0 {
            return None;
        }
        let window = config.window;
        crowd
            .members
            .retain(|m| now.saturating_sub(m.last_seen) <= window);
        let index = match crowd.members.iter().position(|m| m.src == probe.src) {
            Some(index) => index,
            None if crowd.members.len() < MAX_MEMBERS => {
                crowd.members.push(Member {
                    src: probe.src,
                    ports: RecentSet::new(),
                    failed: 0,
                    first_seen: now,
                    last_seen: now,
                });
                crowd.members.len() - 1
            }
            None => return None,
        };
        let member = &mut crowd.members[index];
        member.last_seen = member.last_seen.max(now);
        member.failed += 1;
        let before = member.ports.len();
        member.ports.note(probe.dst_port, now, window, MEMBER_PORTS);
        let grew = member.ports.len() != before;
        if !grew || member.ports.len() < config.min_common {
            return None;
        }
        let mine = member.ports.sorted();
        let mut sources = vec![probe.src];
        let mut ports = mine.clone();
        let (mut failed, mut first_seen) = (member.failed, member.first_seen);
        for (i, other) in crowd.members.iter().enumerate() {
            let theirs = other.ports.sorted();
            if i == index || common(&mine, &theirs) < config.min_common {
                continue;
            }
            sources.push(other.src);
            ports.extend(theirs);
            failed += other.failed;
            first_seen = first_seen.min(other.first_seen);
        }
        if sources.len() < config.min_sources {
            return None;
        }
        sources.sort_unstable();
        ports.sort_unstable();
        ports.dedup();
        Some(CrowdVerdict {
            target: probe.dst,
            sources,
            ports,
            failed,
            first_seen,
        })
    }
}

impl Detector for Crowds {
    fn table(&self) -> &'static str {
        "crowds"
    }

    /// Each address is a member of its own: decoys are told apart by address.
    fn per_group(&self) -> bool {
        false
    }

    fn observe(&mut self, probe: &Probe, now: Duration) -> Option<Verdict> {
        match self.judge_both(probe, now) {
            (
                Some(CrowdVerdict {
                    target,
                    sources,
                    ports,
                    failed,
                    first_seen,
                }),
                _,
            ) => Some(Verdict {
                detector: DetectorName::Crowd,
                kind: ScanKind::Distributed,
                target: Some(target),
                score: sources.len() as f64 / self.config.min_sources as f64,
                sources,
                ports,
                hosts: vec![probe.dst],
                first_seen,
                failed,
                succeeded: 0,
                spread: false,
            }),
            (
                None,
                Some(SpreadVerdict {
                    sources,
                    ports,
                    first_seen,
                }),
            ) => Some(Verdict {
                detector: DetectorName::Crowd,
                kind: ScanKind::Distributed,
                target: Some(probe.dst),
                score: ports.len() as f64 / self.config.spread_ports as f64,
                // One failure per port at least (the window's, as counted).
                failed: ports.len() as u64,
                sources,
                ports,
                hosts: vec![probe.dst],
                first_seen,
                succeeded: 0,
                spread: true,
            }),
            (None, None) => None,
        }
    }

    fn tracked(&self) -> usize {
        Crowds::tracked(self)
    }

    fn memory_bound(&self) -> usize {
        self.config.max_targets * BYTES_PER_TARGET
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::event::Outcome;

    const VICTIM: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 19, 0, 2));
    const UNITS: Units = Units { v4: 32, v6: 64 };

    fn source(i: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(198, 18, 7, i))
    }

    fn ms(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    #[test]
    fn decoys_probing_the_same_ports_are_one_crowd() {
        let mut crowds = Crowds::new(CrowdConfig::default(), UNITS);
        let mut verdicts = Vec::new();
        // nmap -D d1,d2,ME: each port from each source in turn.
        let mut t = 0;
        for port in [22u16, 25, 80, 110] {
            for s in 1..=3 {
                t += 1;
                let probe = Probe::syn(source(s), VICTIM, port, Outcome::Refused);
                if let Some(v) = crowds.judge(&probe, ms(t)) {
                    verdicts.push((port, s, v));
                }
            }
        }
        // The third source's third port completes it: all three share 22, 25 and 80.
        let (port, s, first) = &verdicts[0];
        assert_eq!((*port, *s), (80, 3));
        assert_eq!(first.sources, vec![source(1), source(2), source(3)]);
        assert_eq!(first.ports, vec![22, 25, 80]);
        assert_eq!(first.failed, 9);
        assert_eq!(first.first_seen, ms(1));
        // Every later growth reports the crowd again (the engine keeps one incident).
        assert_eq!(verdicts.len(), 4);
    }

    #[test]
    fn clients_of_a_server_that_went_down_are_not_a_crowd() {
        let mut crowds = Crowds::new(CrowdConfig::default(), UNITS);
        // Fifty clients, each failing on 443 and 80 a few times.
        for c in 0..50u8 {
            for port in [443u16, 80, 443, 80] {
                let probe = Probe::syn(source(c), VICTIM, port, Outcome::Refused);
                assert_eq!(crowds.judge(&probe, ms(u64::from(c))), None);
            }
        }
    }

    #[test]
    fn sources_with_disjoint_ports_or_outside_the_window_are_not_a_crowd() {
        let mut crowds = Crowds::new(CrowdConfig::default(), UNITS);
        // Three sources, each on its own ports.
        for s in 0..3u8 {
            for p in 0..5u16 {
                let port = u16::from(s) * 100 + p;
                let probe = Probe::syn(source(s), VICTIM, port, Outcome::Refused);
                assert_eq!(crowds.judge(&probe, ms(1)), None);
            }
        }
        // The same ports, but each source two minutes after the previous one.
        let mut crowds = Crowds::new(CrowdConfig::default(), UNITS);
        for s in 0..3u8 {
            for port in [1u16, 2, 3, 4] {
                let probe = Probe::syn(source(s), VICTIM, port, Outcome::Refused);
                let at = Duration::from_secs(120 * u64::from(s));
                assert_eq!(crowds.judge(&probe, at), None);
            }
        }
    }

    #[test]
    fn memory_is_bounded_per_target() {
        let mut crowds = Crowds::new(
            CrowdConfig {
                max_targets: 8,
                ..CrowdConfig::default()
            },
            UNITS,
        );
        for i in 0..10_000u32 {
            let src = IpAddr::V4(Ipv4Addr::from(0xc612_0000 + i));
            let dst = IpAddr::V4(Ipv4Addr::from(0xc613_0000 + i % 32));
            let probe = Probe::syn(src, dst, (i % 1000) as u16, Outcome::Refused);
            crowds.judge(&probe, ms(u64::from(i)));
        }
        assert!(crowds.tracked() <= 8);
        assert!(
            crowds
                .targets
                .values()
                .all(|c| c.members.len() <= MAX_MEMBERS)
        );
    }
}
