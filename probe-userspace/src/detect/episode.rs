//! An episode of one key's activity for the threshold detectors: the distinct items
//! (ports, or hosts) seen within the window, and whether the threshold was reached.

use std::{net::IpAddr, time::Duration};

use crate::detect::{
    alert::ScanKind,
    table::{Activity, RecentSet},
    verdict::{DetectorName, Verdict},
};

/// One detector's state for one key: an episode of activity.
#[derive(Debug)]
pub(crate) struct Episode<T> {
    pub(crate) first_seen: Duration,
    pub(crate) last_seen: Duration,
    /// Ports (vertical) or hosts (horizontal) within the window.
    pub(crate) items: RecentSet<T>,
    /// Ports a sweep used (horizontal only).
    pub(crate) ports: RecentSet<u16>,
    pub(crate) probes: u64,
    pub(crate) succeeded: u64,
    pub(crate) alerted: bool,
}

impl<T: PartialEq + Copy + Ord> Episode<T> {
    pub(crate) fn new(now: Duration) -> Self {
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
    pub(crate) fn note(
        &mut self,
        item: T,
        now: Duration,
        window: Duration,
        threshold: usize,
    ) -> bool {
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

    /// The threshold detector's verdict on this episode, which reached `threshold` items.
    pub(crate) fn verdict(
        &self,
        kind: ScanKind,
        target: Option<IpAddr>,
        ports: Vec<u16>,
        hosts: Vec<IpAddr>,
        threshold: usize,
    ) -> Verdict {
        Verdict {
            detector: DetectorName::Threshold,
            kind,
            target,
            sources: Vec::new(),
            ports,
            hosts,
            score: self.items.len() as f64 / threshold as f64,
            first_seen: self.first_seen,
            failed: self.probes - self.succeeded,
            succeeded: self.succeeded,
            spread: false,
        }
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
