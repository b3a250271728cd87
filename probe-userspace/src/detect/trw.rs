//! Threshold random walk (Jung, Paxson, Berger and Balakrishnan, "Fast Portscan Detection
//! Using Sequential Hypothesis Testing", 2004): a sequential hypothesis test on the
//! outcomes of each remote source's first contacts with our hosts.
//!
//! Each first contact multiplies the source's likelihood ratio Λ by `θ1/θ0` when it
//! succeeds and by `(1-θ1)/(1-θ0)` when it fails. The source is a scanner when Λ reaches
//! `η1 = PD/PF`, benign when it falls to `η0 = (1-PD)/(1-PF)`. With the defaults (θ0 = 0.8,
//! θ1 = 0.2, PD = 0.99, PF = 0.01) a failure multiplies Λ by 4 and a success by 1/4, so four
//! straight failures flag a source (4⁴ = 256 ≥ 99) and interleaved successes keep it below.
//!
//! The paper's unit of first contact is a local host, which suits a gateway in front of
//! many hosts. On a single host every source contacts the same host, so there the unit is
//! a local host *and port* ([`TrwUnit::Service`]): a first contact is the first attempt on
//! each service. A benign verdict restarts the test (keeping the contacts seen), so a
//! source that later turns to scanning is still caught. State is bounded: sources in a
//! [`BoundedTable`], at most [`MAX_CONTACTS`] remembered contacts per source.

use std::{
    collections::HashSet,
    hash::{BuildHasher, RandomState},
    mem::size_of,
    net::IpAddr,
    time::Duration,
};

use crate::detect::verdict::{Detector, DetectorName, Verdict};
use crate::{
    detect::table::{Activity, BoundedTable},
    event::{Outcome, Probe, ProbeType},
};

/// First contacts remembered per source (as 32-bit fingerprints keyed with a per-process
/// random seed); further ones are not counted (conservative).
pub const MAX_CONTACTS: usize = 128;
/// Failed hosts and ports kept per source for the verdict.
const FAILED_HOSTS: usize = 16;
const FAILED_PORTS: usize = 64;

/// Memory per tracked source at most (test state, lists full, key, table overhead), bytes.
pub const BYTES_PER_SOURCE: usize = size_of::<SourceTest>()
    + MAX_CONTACTS * size_of::<u32>()
    + FAILED_HOSTS * size_of::<IpAddr>()
    + FAILED_PORTS * size_of::<u16>()
    + size_of::<IpAddr>()
    + 8;

/// What counts as one first contact.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrwUnit {
    /// A local host (the paper's unit; for gateways).
    Host,
    /// A local host and port (for a single host).
    Service,
    /// A local host and port at this host's own addresses, a local host elsewhere (`--trw
    /// auto`): a gateway's own services are counted as a single host's are, the hosts
    /// behind it as the paper's unit.
    Auto,
}

/// The unit `unit` takes at destination `dst`, `own` being this host's addresses.
pub fn unit_at(unit: TrwUnit, own: &HashSet<IpAddr>, dst: IpAddr) -> TrwUnit {
    match unit {
        TrwUnit::Auto if own.contains(&dst) => TrwUnit::Service,
        TrwUnit::Auto => TrwUnit::Host,
        fixed => fixed,
    }
}

/// The test's parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TrwConfig {
    /// P(success) of a first contact by a benign source.
    pub theta0: f64,
    /// P(success) of a first contact by a scanner.
    pub theta1: f64,
    /// Detection probability wanted.
    pub pd: f64,
    /// False-positive probability tolerated.
    pub pf: f64,
    /// The unit of first contact.
    pub unit: TrwUnit,
    /// A source idle for longer starts a new test.
    pub idle: Duration,
}

impl Default for TrwConfig {
    fn default() -> Self {
        Self {
            theta0: 0.8,
            theta1: 0.2,
            pd: 0.99,
            pf: 0.01,
            unit: TrwUnit::Service,
            idle: Duration::from_secs(600),
        }
    }
}

/// A source the test flagged.
#[derive(Clone, Debug, PartialEq)]
pub struct TrwVerdict {
    pub src: IpAddr,
    /// First contacts that failed / succeeded in the test that flagged it.
    pub failed: u32,
    pub succeeded: u32,
    /// The likelihood ratio Λ reached.
    pub score: f64,
    /// Distinct hosts among the failed first contacts (up to 16), sorted.
    pub failed_hosts: Vec<IpAddr>,
    /// Distinct ports among the failed first contacts (up to 64), sorted.
    pub failed_ports: Vec<u16>,
    /// When this test started.
    pub first_seen: Duration,
}

#[derive(Debug)]
struct SourceTest {
    first_seen: Duration,
    last_seen: Duration,
    /// ln Λ.
    llr: f64,
    /// Fingerprints of the first contacts.
    contacted: Vec<u32>,
    failed: u32,
    succeeded: u32,
    failed_hosts: Vec<IpAddr>,
    failed_ports: Vec<u16>,
    flagged: bool,
}

impl SourceTest {
    fn new(now: Duration) -> Self {
        Self {
            first_seen: now,
            last_seen: now,
            llr: 0.0,
            contacted: Vec::new(),
            failed: 0,
            succeeded: 0,
            failed_hosts: Vec::new(),
            failed_ports: Vec::new(),
            flagged: false,
        }
    }
}

impl Activity for SourceTest {
    fn last_seen(&self) -> Duration {
        self.last_seen
    }

    fn worth(&self) -> u32 {
        if self.flagged { u32::MAX } else { self.failed }
    }
}

/// The test's state for every tracked source.
#[derive(Debug)]
pub struct Trw {
    config: TrwConfig,
    ln_fail: f64,
    ln_success: f64,
    ln_eta1: f64,
    ln_eta0: f64,
    hasher: RandomState,
    sources: BoundedTable<IpAddr, SourceTest>,
    /// This host's addresses, for [`TrwUnit::Auto`].
    own: HashSet<IpAddr>,
}

impl Trw {
    /// A test with `config`, tracking at most `max_sources` sources.
    pub fn new(config: TrwConfig, max_sources: usize) -> Self {
        Self {
            ln_fail: ((1.0 - config.theta1) / (1.0 - config.theta0)).ln(),
            ln_success: (config.theta1 / config.theta0).ln(),
            ln_eta1: (config.pd / config.pf).ln(),
            ln_eta0: ((1.0 - config.pd) / (1.0 - config.pf)).ln(),
            config,
            hasher: RandomState::new(),
            sources: BoundedTable::new(max_sources),
            own: HashSet::new(),
        }
    }

    /// Failures in a row that flag a source with this configuration.
    pub fn failures_to_flag(&self) -> u32 {
        (self.ln_eta1 / self.ln_fail).ceil() as u32
    }

    /// Sources tracked.
    pub fn tracked(&self) -> usize {
        self.sources.len()
    }

    /// Feeds one outcome; returns the verdict when it flags its source (once per test).
    pub fn judge(&mut self, probe: &Probe, now: Duration) -> Option<TrwVerdict> {
        let unit = match unit_at(self.config.unit, &self.own, probe.dst) {
            TrwUnit::Service => (probe.dst, probe.dst_port),
            _ => (probe.dst, 0),
        };
        let unit = self.hasher.hash_one(unit) as u32;
        let idle = self.config.idle;
        let test = self
            .sources
            .entry(probe.src, now, idle, || SourceTest::new(now));
        if now.saturating_sub(test.last_seen) > idle {
            *test = SourceTest::new(now);
        }
        test.last_seen = test.last_seen.max(now);
        if test.flagged {
            // Decided until the source goes idle: nothing more to remember.
            return None;
        }
        // Only first contacts count; beyond the bound, nothing more is counted.
        if test.contacted.contains(&unit) || test.contacted.len() >= MAX_CONTACTS {
            return None;
        }
        test.contacted.push(unit);
        if probe.outcome == Outcome::Accepted {
            test.succeeded += 1;
            test.llr += self.ln_success;
        } else {
            test.failed += 1;
            test.llr += self.ln_fail;
            if test.failed_hosts.len() < FAILED_HOSTS && !test.failed_hosts.contains(&probe.dst) {
                test.failed_hosts.push(probe.dst);
            }
            // Pings have no port.
            if probe.probe != ProbeType::IcmpEcho
                && test.failed_ports.len() < FAILED_PORTS
                && !test.failed_ports.contains(&probe.dst_port)
            {
                test.failed_ports.push(probe.dst_port);
            }
        }
        if !test.flagged && test.llr >= self.ln_eta1 - 1e-9 {
            test.flagged = true;
            let mut failed_hosts = test.failed_hosts.clone();
            failed_hosts.sort_unstable();
            let mut failed_ports = test.failed_ports.clone();
            failed_ports.sort_unstable();
            return Some(TrwVerdict {
                src: probe.src,
                failed: test.failed,
                succeeded: test.succeeded,
                score: test.llr.exp(),
                failed_hosts,
                failed_ports,
                first_seen: test.first_seen,
            });
        }
        if !test.flagged && test.llr <= self.ln_eta0 + 1e-9 {
            // Benign: start the test over (the contacts stay first-contacted).
            test.llr = 0.0;
            test.failed = 0;
            test.succeeded = 0;
            test.failed_hosts.clear();
            test.failed_ports.clear();
            test.first_seen = now;
        }
        None
    }
}

impl Detector for Trw {
    fn table(&self) -> &'static str {
        "trw"
    }

    fn set_own(&mut self, own: &[IpAddr]) {
        self.own = own.iter().copied().collect();
    }

    fn observe(&mut self, probe: &Probe, now: Duration) -> Option<Verdict> {
        let TrwVerdict {
            failed,
            succeeded,
            failed_hosts,
            failed_ports,
            score,
            first_seen,
            ..
        } = self.judge(probe, now)?;
        Some(Verdict::of_source(
            DetectorName::Trw,
            failed_hosts,
            failed_ports,
            score,
            first_seen,
            (u64::from(failed), u64::from(succeeded)),
        ))
    }

    fn tracked(&self) -> usize {
        Trw::tracked(self)
    }

    fn memory_bound(&self) -> usize {
        self.sources.capacity() * BYTES_PER_SOURCE
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    const SRC: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1));

    fn contact(dst: u8, port: u16, ok: bool) -> Probe {
        let outcome = if ok {
            Outcome::Accepted
        } else {
            Outcome::Refused
        };
        Probe::syn(
            SRC,
            IpAddr::V4(Ipv4Addr::new(198, 18, 1, dst)),
            port,
            outcome,
        )
    }

    fn s(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    #[test]
    fn the_defaults_flag_after_exactly_four_straight_failures() {
        let mut trw = Trw::new(TrwConfig::default(), 16);
        assert_eq!(trw.failures_to_flag(), 4);
        for port in 1..=3 {
            assert_eq!(
                trw.judge(&contact(1, port, false), s(1)),
                None,
                "port {port}"
            );
        }
        let verdict = trw
            .judge(&contact(1, 4, false), s(1))
            .expect("the fourth failure flags");
        assert_eq!((verdict.failed, verdict.succeeded), (4, 0));
        assert!((verdict.score - 256.0).abs() < 1e-6, "{}", verdict.score);
        assert_eq!(verdict.failed_hosts.len(), 1);
        // Flagged once per test.
        assert_eq!(trw.judge(&contact(1, 5, false), s(1)), None);
    }

    #[test]
    fn interleaved_successes_never_flag() {
        let mut trw = Trw::new(TrwConfig::default(), 16);
        for port in 0..500u16 {
            let ok = port % 2 == 0;
            assert_eq!(
                trw.judge(&contact(1, 1000 + port, ok), s(1)),
                None,
                "contact {port}"
            );
        }
    }

    #[test]
    fn repeated_contacts_count_once() {
        let mut trw = Trw::new(TrwConfig::default(), 16);
        for _ in 0..50 {
            assert_eq!(trw.judge(&contact(1, 23, false), s(1)), None);
        }
        // Host unit: many ports of one host are one contact.
        let mut trw = Trw::new(
            TrwConfig {
                unit: TrwUnit::Host,
                ..TrwConfig::default()
            },
            16,
        );
        for port in 1..100 {
            assert_eq!(trw.judge(&contact(1, port, false), s(1)), None);
        }
        // Host 1 (all its ports) is one failed contact; hosts 2 and 3 two more.
        for host in 2..=3 {
            assert_eq!(trw.judge(&contact(host, 80, false), s(1)), None);
        }
        let verdict = trw
            .judge(&contact(4, 80, false), s(1))
            .expect("the fourth host");
        assert_eq!(verdict.failed_hosts.len(), 4);
    }

    #[test]
    fn auto_counts_services_at_our_addresses_and_hosts_behind_us() {
        let mut trw = Trw::new(
            TrwConfig {
                unit: TrwUnit::Auto,
                ..TrwConfig::default()
            },
            16,
        );
        // 198.18.1.1 is this host (a gateway with Docker, say); 198.18.1.2.. are behind it.
        trw.set_own(&[IpAddr::V4(Ipv4Addr::new(198, 18, 1, 1))]);
        // Behind us: every port of host 2 is one failed contact.
        for port in 1..50 {
            assert_eq!(trw.judge(&contact(2, port, false), s(1)), None);
        }
        // Ours: each service a contact; with host 2's, the third port is the fourth.
        assert_eq!(trw.judge(&contact(1, 21, false), s(1)), None);
        assert_eq!(trw.judge(&contact(1, 22, false), s(1)), None);
        let verdict = trw
            .judge(&contact(1, 23, false), s(1))
            .expect("four failed contacts");
        assert_eq!(verdict.failed, 4);
        let own = HashSet::from([IpAddr::V4(Ipv4Addr::new(198, 18, 1, 1))]);
        assert_eq!(
            unit_at(TrwUnit::Auto, &own, "198.18.1.9".parse().unwrap()),
            TrwUnit::Host
        );
        assert_eq!(
            unit_at(TrwUnit::Host, &own, "198.18.1.1".parse().unwrap()),
            TrwUnit::Host
        );
    }

    #[test]
    fn a_benign_verdict_restarts_the_test() {
        let mut trw = Trw::new(TrwConfig::default(), 16);
        // Four successes: benign (Λ = 1/256 < η0), the test starts over.
        for port in 1..=4 {
            assert_eq!(trw.judge(&contact(1, port, true), s(1)), None);
        }
        // The source turns to scanning: caught after four failures, not damped for ever.
        for port in 10..13 {
            assert_eq!(trw.judge(&contact(1, port, false), s(2)), None);
        }
        let verdict = trw.judge(&contact(1, 13, false), s(2)).unwrap();
        assert_eq!((verdict.failed, verdict.succeeded), (4, 0));
    }

    #[test]
    fn an_idle_source_starts_over() {
        let mut trw = Trw::new(TrwConfig::default(), 16);
        for port in 1..=3 {
            trw.judge(&contact(1, port, false), s(1));
        }
        // After the idle horizon the three old failures no longer count.
        assert_eq!(trw.judge(&contact(1, 4, false), s(1000)), None);
    }

    #[test]
    fn tracked_sources_are_bounded() {
        let mut trw = Trw::new(TrwConfig::default(), 100);
        for i in 0..10_000u32 {
            let mut p = contact(1, 80, false);
            p.src = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i));
            trw.judge(&p, s(1));
            assert!(trw.tracked() <= 100);
        }
    }
}
