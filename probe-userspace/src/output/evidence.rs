//! Which probes are evidence for the attack list: a source's failed probes are held back
//! (at most [`BACKLOG`] per source) until an alert confirms it as a scanner, then written
//! all at once; a confirmed source's later failed probes are written as they come. Pure
//! logic, time passed in, bounded like the detectors.

use std::{net::IpAddr, time::Duration};

use crate::{
    detect::table::{Activity, BoundedTable},
    event::Probe,
};

/// Failed probes held back per unconfirmed source.
pub const BACKLOG: usize = 64;

#[derive(Debug)]
struct Source {
    last_seen: Duration,
    confirmed: bool,
    held: Vec<Probe>,
}

impl Activity for Source {
    fn last_seen(&self) -> Duration {
        self.last_seen
    }
}

/// The evidence state; see the module documentation.
#[derive(Debug)]
pub struct Evidence {
    sources: BoundedTable<IpAddr, Source>,
    /// A confirmed source idle for longer is forgotten (a later scan needs a new alert).
    idle: Duration,
}

impl Evidence {
    /// Tracks at most `max_sources` sources; forgets them after `idle` without probes.
    pub fn new(max_sources: usize, idle: Duration) -> Self {
        Self {
            sources: BoundedTable::new(max_sources),
            idle,
        }
    }

    /// Notes a probe; returns the probes to write now (this one, if its source is
    /// confirmed and it failed).
    pub fn note(&mut self, probe: &Probe, now: Duration) -> Vec<Probe> {
        if !probe.failed() {
            return Vec::new();
        }
        let idle = self.idle;
        let source = self.sources.entry(probe.src, now, idle, || Source {
            last_seen: now,
            confirmed: false,
            held: Vec::new(),
        });
        if now.saturating_sub(source.last_seen) > idle {
            source.confirmed = false;
            source.held.clear();
        }
        source.last_seen = source.last_seen.max(now);
        if source.confirmed {
            return vec![probe.clone()];
        }
        if source.held.len() < BACKLOG {
            source.held.push(probe.clone());
        }
        Vec::new()
    }

    /// Confirms `src` as a scanner; returns its held-back probes to write.
    pub fn confirm(&mut self, src: IpAddr, now: Duration) -> Vec<Probe> {
        let idle = self.idle;
        let source = self.sources.entry(src, now, idle, || Source {
            last_seen: now,
            confirmed: false,
            held: Vec::new(),
        });
        source.confirmed = true;
        std::mem::take(&mut source.held)
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::event::Outcome;

    fn probe(src: u8, port: u16, outcome: Outcome) -> Probe {
        let src = IpAddr::V4(Ipv4Addr::new(198, 18, 0, src));
        Probe::syn(src, IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2)), port, outcome)
    }

    fn s(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    #[test]
    fn failed_probes_wait_for_confirmation_then_flow() {
        let mut e = Evidence::new(16, s(60));
        assert!(e.note(&probe(1, 21, Outcome::Refused), s(1)).is_empty());
        assert!(
            e.note(&probe(1, 80, Outcome::Accepted), s(1)).is_empty(),
            "successes are no evidence"
        );
        assert!(e.note(&probe(1, 23, Outcome::Unanswered), s(2)).is_empty());
        assert!(e.note(&probe(9, 25, Outcome::Refused), s(2)).is_empty());
        let held = e.confirm(probe(1, 0, Outcome::Refused).src, s(3));
        assert_eq!(
            held.iter().map(|p| p.dst_port).collect::<Vec<_>>(),
            vec![21, 23]
        );
        assert_eq!(e.note(&probe(1, 24, Outcome::Refused), s(4)).len(), 1);
        // Another, unconfirmed source stays held back.
        assert!(e.note(&probe(9, 26, Outcome::Refused), s(4)).is_empty());
        // A long pause ends the confirmation: the next scan needs its own alert.
        assert!(e.note(&probe(1, 30, Outcome::Refused), s(100)).is_empty());
    }

    #[test]
    fn the_backlog_is_bounded() {
        let mut e = Evidence::new(4, s(60));
        for port in 0..1000 {
            e.note(&probe(1, port, Outcome::Refused), s(1));
        }
        assert_eq!(
            e.confirm(probe(1, 0, Outcome::Refused).src, s(1)).len(),
            BACKLOG
        );
    }
}
