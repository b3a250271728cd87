//! Host sweeps by threshold: at least `min_hosts` distinct targets probed by one source
//! within the window: targets with failed attempts, and pinged targets whatever the
//! answer (probing many hosts for life is the sweep).

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

/// Ports kept per sweeping source, to report which ports a sweep used.
const SWEEP_PORTS: usize = 16;

/// See the module documentation.
#[derive(Debug)]
pub struct Horizontal {
    min_hosts: usize,
    window: Duration,
    sources: BoundedTable<IpAddr, Episode<IpAddr>>,
}

impl Horizontal {
    /// `min_hosts` within `window`, at most `max_tracked` sources.
    pub fn new(min_hosts: usize, window: Duration, max_tracked: usize) -> Self {
        Self {
            min_hosts,
            window,
            sources: BoundedTable::new(max_tracked),
        }
    }
}

impl Detector for Horizontal {
    fn table(&self) -> &'static str {
        "horizontal"
    }

    fn observe(&mut self, probe: &Probe, now: Duration) -> Option<Verdict> {
        let failed = probe.outcome != Outcome::Accepted;
        let ping = probe.probe == ProbeType::IcmpEcho;
        if !failed && !ping {
            return None;
        }
        let window = self.window;
        let episode = self
            .sources
            .entry(probe.src, now, window, || Episode::new(now));
        if !ping {
            episode.ports.note(probe.dst_port, now, window, SWEEP_PORTS);
        }
        let reached = episode.note(probe.dst, now, window, self.min_hosts);
        if !failed {
            episode.succeeded += 1;
        }
        if !reached {
            return None;
        }
        Some(episode.verdict(
            ScanKind::Horizontal,
            None,
            episode.ports.sorted(),
            episode.items.sorted(),
            self.min_hosts,
        ))
    }

    fn tracked(&self) -> usize {
        self.sources.len()
    }

    fn evictions(&self) -> u64 {
        self.sources.evictions()
    }

    fn memory_bound(&self) -> usize {
        self.sources.capacity()
            * (size_of::<IpAddr>()
                + size_of::<Episode<IpAddr>>()
                + ENTRY_OVERHEAD
                + self.min_hosts * size_of::<(IpAddr, Duration)>()
                + SWEEP_PORTS * size_of::<(u16, Duration)>())
    }
}
