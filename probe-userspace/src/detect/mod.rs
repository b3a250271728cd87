//! The scan detectors and the alert lifecycle, as pure logic.
//!
//! Detectors: a vertical port scan is at least `min_ports` distinct ports of one target
//! failing for one source within `window`; a horizontal sweep is at least `min_hosts`
//! distinct targets probed by one source within `window` (failed attempts, and pings
//! whatever their answer); the sequential hypothesis test ([`crate::detect::trw`]) flags a
//! source after a few failed first contacts, usually long before either threshold; the
//! slow-scan detector ([`crate::detect::slow`]) counts each source's failed contacts over an hour;
//! and the crowd detector ([`crate::detect::crowd`]) recognises several sources failing on the same
//! ports of one target (nmap's decoys, distributed scans) as one incident listing them,
//! and many sources failing on one or two ports each that together cover many ports of
//! one target ([`crate::detect::spread`]: split scans, forged floods).
//! A source is its address (IPv4) or its /64 (IPv6) by default (`group_v4`, `group_v6`;
//! see [`EngineConfig`]), and the incident of a grouped source lists every address.
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
//!
//! Before the detectors, the probes of traceroutes ([`traceroute`]: UDP, a low arrival TTL
//! stepping with the port) are held back and withheld, so tracing a path is no port scan.
//!
//! Files: [`engine`] runs the detectors and holds the incidents; [`incident`] is the
//! lifecycle; [`verdict`] the one detector interface; one file per detector
//! ([`vertical`], [`horizontal`], [`trw`], [`slow`], [`crowd`] with [`spread`]);
//! [`traceroute`] the filter
//! before them; [`table`] the bounded tables they keep.

pub mod alert;
pub mod crowd;
pub mod engine;
mod episode;
pub mod horizontal;
pub mod incident;
pub mod slow;
pub mod spread;
pub mod table;
pub mod traceroute;
pub mod trw;
pub mod verdict;
pub mod vertical;

pub use alert::{Phase, ScanAlert, ScanKind, Spoof, Technique, is_martian};
pub use engine::{Engine, EngineConfig};
pub use incident::{MAX_HOSTS, MAX_INCIDENTS, MAX_REPORTED, MAX_SOURCES};
pub use verdict::{Detector, DetectorName, Verdict};
