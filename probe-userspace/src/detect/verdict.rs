//! The one interface every detector implements ([`Detector`]) and the one verdict type
//! they return ([`Verdict`]), with the enum naming them ([`DetectorName`]).

use std::{net::IpAddr, time::Duration};

use crate::{detect::alert::ScanKind, event::Probe};

/// Which detector recognised a scan.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DetectorName {
    /// The sequential hypothesis test on first contacts.
    Trw,
    /// The vertical (ports) and horizontal (hosts) thresholds within a window.
    Threshold,
    /// The slow-scan detector (failed contacts over an hour).
    Slow,
    /// The distributed / decoy scan detector.
    Crowd,
}

impl DetectorName {
    /// Its name in alert records (`scan.detector`).
    pub fn name(self) -> &'static str {
        match self {
            DetectorName::Trw => "trw",
            DetectorName::Threshold => "threshold",
            DetectorName::Slow => "slow",
            DetectorName::Crowd => "crowd",
        }
    }
}

/// What a detector recognised, with the evidence it gathered.
#[derive(Clone, Debug, PartialEq)]
pub struct Verdict {
    /// Who recognised it.
    pub detector: DetectorName,
    /// Vertical, horizontal or distributed.
    pub kind: ScanKind,
    /// The target of a vertical or distributed scan.
    pub target: Option<IpAddr>,
    /// The sources of a distributed scan (empty otherwise: the probe's source).
    pub sources: Vec<IpAddr>,
    /// The failed ports (vertical), or those a sweep used.
    pub ports: Vec<u16>,
    /// The hosts probed.
    pub hosts: Vec<IpAddr>,
    /// The detector's score: its statistic over its threshold.
    pub score: f64,
    /// When the evidence began.
    pub first_seen: Duration,
    /// Outcomes counted as evidence, failed and succeeded.
    pub failed: u64,
    pub succeeded: u64,
    /// A distributed scan of sources with one or two probes each (anyone can forge
    /// those): never a reason to block them.
    pub spread: bool,
}

impl Verdict {
    /// The verdict of a per-source detector from the hosts and ports it failed on: a
    /// vertical scan when they are all one host, else a sweep.
    pub fn of_source(
        detector: DetectorName,
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
            spread: false,
        }
    }
}

/// A scan detector: pure logic, time passed in, bounded state.
pub trait Detector: std::fmt::Debug {
    /// The name of its table in metrics (`vertical`, `trw`, ...).
    fn table(&self) -> &'static str;

    /// True when it counts sources as grouped (`--group-v4`, `--group-v6`); false when it
    /// needs each address (the crowd detector tells sources apart).
    fn per_group(&self) -> bool {
        true
    }

    /// This host's addresses changed (the sequential test's unit depends on them).
    fn set_own(&mut self, _own: &[std::net::IpAddr]) {}

    /// Feeds one outcome seen at `now`; the verdict when this outcome completes a scan.
    fn observe(&mut self, probe: &Probe, now: Duration) -> Option<Verdict>;

    /// Entries it tracks now.
    fn tracked(&self) -> usize;

    /// Entries it forgot to make room so far (counted for the threshold and slow-scan
    /// detectors).
    fn evictions(&self) -> u64 {
        0
    }

    /// The most memory its state can take, in bytes (every table full).
    fn memory_bound(&self) -> usize;

    /// The distinct ports of `dst` (protocol `proto`) it has seen `src` fail on within its
    /// window, sorted; `None` when it does not keep them.
    fn failed_ports(&self, _src: IpAddr, _dst: IpAddr, _proto: u8) -> Option<Vec<u16>> {
        None
    }
}
