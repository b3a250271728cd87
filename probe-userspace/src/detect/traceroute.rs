//! The traceroute family (UDP traceroute, `mtr -u`, tracepath): their probes fail on closed
//! UDP ports of the host they trace, which looks like a UDP port scan. What tells them
//! apart is the pair of signs they cannot help: the probes that reach the host arrive with
//! a low remaining TTL (they were sent with TTLs 1, 2, 3, ...), and the TTL steps with the
//! port (each probe takes the next port; every few probes, the next TTL; mtr starts over
//! at a low TTL). A low TTL alone is an evasion (`nmap --ttl 3`): a constant one, or TTLs
//! that do not step with the port, mark a scan.
//!
//! A failed UDP probe that arrives with a low TTL is held (at most [`HOLD`] per source and
//! target) until the pair shows which it is: a lockstep with [`TRACE_TTLS`] distinct TTLs
//! is a traceroute, whose probes are withheld from the scan detectors (counted, and said
//! once in the log); a constant TTL over [`CONSTANT_AFTER`] probes, or TTLs out of step
//! with the ports, release every held probe to the detectors and let the pair's later
//! probes through at once. Probes with an ordinary TTL are never held: real UDP scans are
//! seen as fast as before.
//!
//! The price: a scanner that knows its hop count and shapes its UDP probes' TTLs like a
//! traceroute's is taken for one (its TCP probes, and any probe with an ordinary TTL, are
//! not); the log line and the metrics say every traceroute taken.

use std::{mem::size_of, net::IpAddr, time::Duration};

use crate::{
    detect::table::{Activity, BoundedTable, ENTRY_OVERHEAD},
    event::{Probe, ProbeType},
};

/// Arrival TTLs at most this low are what a traceroute's probes arrive with (it sends TTLs
/// up to 30 by default); hosts send with 64, 128 or 255, so their packets arrive higher
/// unless they crossed more than 30 routers.
pub const LOW_TTL: u8 = 30;
// The kernel's summaries key on each TTL the filter judges (higher ones keep a range).
const _: () = assert!(LOW_TTL <= probe_common::SUMMARY_EXACT_TTL);
/// Probes held per (source, target) at most.
pub const HOLD: usize = 16;
/// Distinct TTLs in step with the ports that make a traceroute.
pub const TRACE_TTLS: usize = 3;
/// Low-TTL probes with one TTL after which the pair is not a traceroute (traceroute sends
/// three probes per TTL).
pub const CONSTANT_AFTER: usize = 4;
/// Probes a traceroute sends per TTL at most (traceroute's `-q` takes up to 10), each on
/// the next port.
pub const PROBES_PER_TTL: u16 = 10;
/// (source, target) pairs tracked at most.
pub const MAX_PAIRS: usize = 4096;

/// What the pair's probes showed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Seen {
    /// Not yet decided: low-TTL probes are held.
    Undecided,
    /// A traceroute: its probes are withheld.
    Traceroute,
    /// Not one: its probes go through.
    Scan,
}

#[derive(Debug)]
struct Trace {
    last_seen: Duration,
    seen: Seen,
    held: Vec<Probe>,
}

impl Trace {
    fn new(now: Duration) -> Self {
        Self {
            last_seen: now,
            seen: Seen::Undecided,
            held: Vec::new(),
        }
    }
}

impl Activity for Trace {
    fn last_seen(&self) -> Duration {
        self.last_seen
    }
}

/// See the module documentation.
#[derive(Debug)]
pub struct Traces {
    pairs: BoundedTable<(IpAddr, IpAddr), Trace>,
    window: Duration,
    withheld: u64,
    found: u64,
}

impl Traces {
    /// Remembers a pair for `window` after its last probe.
    pub fn new(window: Duration) -> Self {
        Self {
            pairs: BoundedTable::new(MAX_PAIRS),
            window,
            withheld: 0,
            found: 0,
        }
    }

    /// True for the outcomes this filter judges (a UDP failure at a low TTL); it lets
    /// every other one through untouched.
    pub fn looks_at(&self, probe: &Probe) -> bool {
        probe.probe == ProbeType::Udp && probe.failed() && (1..=LOW_TTL).contains(&probe.ttl)
    }

    /// Takes one outcome; returns the outcomes the scan detectors should see now: this
    /// one, none (held, or a traceroute's), or the held ones and this one.
    pub fn observe(&mut self, probe: &Probe, now: Duration) -> Vec<Probe> {
        let key = (probe.src, probe.dst);
        if !self.looks_at(probe) {
            return vec![probe.clone()];
        }
        let window = self.window;
        let trace = self.pairs.entry(key, now, window, || Trace::new(now));
        if now.saturating_sub(trace.last_seen) > window {
            *trace = Trace::new(now);
        }
        trace.last_seen = now;
        match trace.seen {
            Seen::Scan => return vec![probe.clone()],
            Seen::Traceroute => {
                self.withheld += 1;
                return Vec::new();
            }
            Seen::Undecided => trace.held.push(probe.clone()),
        }
        match judge(&trace.held) {
            Seen::Undecided if trace.held.len() < HOLD => Vec::new(),
            Seen::Traceroute => {
                trace.seen = Seen::Traceroute;
                self.withheld += trace.held.len() as u64;
                self.found += 1;
                trace.held.clear();
                log::info!(
                    "traceroute from {} to {}: its probes (UDP, TTL stepping with the port) are not counted as a port scan",
                    probe.src,
                    probe.dst
                );
                Vec::new()
            }
            // Out of step, constant, or more than the hold takes undecided: a scan.
            _ => {
                trace.seen = Seen::Scan;
                std::mem::take(&mut trace.held)
            }
        }
    }

    /// Probes withheld as traceroutes' so far, and traceroutes found.
    pub fn stats(&self) -> (u64, u64) {
        (self.withheld, self.found)
    }

    /// Pairs tracked now.
    pub fn tracked(&self) -> usize {
        self.pairs.len()
    }

    /// Bytes the table holds at most.
    pub fn memory_bound(&self) -> usize {
        MAX_PAIRS
            * (size_of::<(IpAddr, IpAddr)>()
                + size_of::<Trace>()
                + ENTRY_OVERHEAD
                + HOLD * size_of::<Probe>())
    }
}

/// What the held probes of a pair show.
fn judge(held: &[Probe]) -> Seen {
    let mut steps: Vec<(u16, u8)> = held.iter().map(|p| (p.dst_port, p.ttl)).collect();
    steps.sort_unstable();
    let mut ttls: Vec<u8> = steps.iter().map(|&(_, ttl)| ttl).collect();
    ttls.sort_unstable();
    ttls.dedup();
    if ttls.len() == 1 {
        return if held.len() >= CONSTANT_AFTER {
            Seen::Scan
        } else {
            Seen::Undecided
        };
    }
    // In step: as the port grows, the TTL never falls, grows by at most one a port and by
    // at least one every PROBES_PER_TTL ports (the probes between may be missing: their
    // answers came later, or never), or starts over low (mtr's next round); two probes on
    // one port (a retry) are fine.
    let lockstep = steps.windows(2).all(|w| {
        let ((port_a, ttl_a), (port_b, ttl_b)) = (w[0], w[1]);
        let (gap, rise) = (port_b - port_a, u16::from(ttl_b.saturating_sub(ttl_a)));
        port_a == port_b
            || ttl_b >= ttl_a && rise <= gap && gap <= PROBES_PER_TTL * (rise + 1)
            || ttl_b <= 2
    });
    if !lockstep {
        return Seen::Scan;
    }
    if ttls.len() >= TRACE_TTLS {
        Seen::Traceroute
    } else {
        Seen::Undecided
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::event::Outcome;

    fn udp(port: u16, ttl: u8) -> Probe {
        let ip = |last| IpAddr::V4(Ipv4Addr::new(198, 18, 0, last));
        let mut p = Probe::syn(ip(1), ip(2), port, Outcome::Refused);
        p.probe = ProbeType::Udp;
        p.proto = 17;
        p.tcp_flags = 0;
        p.ttl = ttl;
        p
    }

    fn run(traces: &mut Traces, probes: &[(u16, u8)]) -> usize {
        let now = Duration::from_secs(1);
        probes
            .iter()
            .map(|&(port, ttl)| traces.observe(&udp(port, ttl), now).len())
            .sum()
    }

    #[test]
    fn a_classic_traceroute_is_withheld() {
        // traceroute to a host one hop away: 16 probes at once, three per TTL from 1, ports
        // 33434 and up; arrival order shuffled a little.
        let mut probes: Vec<(u16, u8)> = (0..16u16)
            .map(|i| (33_434 + i, (i / 3) as u8 + 1))
            .collect();
        probes.swap(3, 5);
        probes.swap(10, 12);
        let mut traces = Traces::new(Duration::from_secs(60));
        assert_eq!(run(&mut traces, &probes), 0);
        assert_eq!(traces.stats(), (16, 1));
    }

    #[test]
    fn mtr_rounds_starting_over_are_withheld() {
        let mut probes = Vec::new();
        let mut port = 33_000;
        for _round in 0..4 {
            for ttl in 1..=6 {
                probes.push((port, ttl));
                port += 1;
            }
        }
        let mut traces = Traces::new(Duration::from_secs(60));
        assert_eq!(run(&mut traces, &probes), 0);
    }

    #[test]
    fn a_constant_low_ttl_is_a_scan_released_at_once() {
        // nmap --ttl 3: every probe held until the fourth, then all go through.
        let mut traces = Traces::new(Duration::from_secs(60));
        let probes: Vec<(u16, u8)> = (1..=10).map(|p| (p, 3)).collect();
        let seen: Vec<usize> = probes
            .iter()
            .map(|&(port, ttl)| {
                traces
                    .observe(&udp(port, ttl), Duration::from_secs(1))
                    .len()
            })
            .collect();
        assert_eq!(seen, [0, 0, 0, 4, 1, 1, 1, 1, 1, 1]);
    }

    #[test]
    fn ttls_out_of_step_with_the_ports_are_a_scan() {
        // A scan from far away with nmap's random TTLs: low, but not in step.
        let mut traces = Traces::new(Duration::from_secs(60));
        let probes = [(161, 20), (53, 12), (500, 25), (69, 9), (123, 18)];
        assert_eq!(run(&mut traces, &probes), 5);
    }

    #[test]
    fn ordinary_ttls_and_other_probes_are_never_held() {
        let mut traces = Traces::new(Duration::from_secs(60));
        assert_eq!(run(&mut traces, &[(1, 64), (2, 63), (3, 64)]), 3);
        let mut syn = udp(4, 2);
        syn.probe = ProbeType::TcpSyn;
        assert_eq!(traces.observe(&syn, Duration::from_secs(1)).len(), 1);
        assert_eq!(traces.tracked(), 0);
    }

    #[test]
    fn a_traceroute_whose_answers_come_in_any_order_is_withheld() {
        // Through a router to a host that rate-limits its ICMP errors: six probes answered
        // at once (TTLs 2 and 3), the rest unanswered, reported when they time out in the
        // order of the pending table's hash (random per load); every order of them.
        let answered = [
            (33437, 2),
            (33438, 2),
            (33439, 2),
            (33440, 3),
            (33441, 3),
            (33442, 3),
        ];
        let timed_out = [
            (33434, 1),
            (33435, 1),
            (33436, 1),
            (33443, 4),
            (33444, 4),
            (33445, 4),
            (33446, 5),
            (33447, 5),
            (33448, 5),
            (33449, 6),
        ];
        for rotation in 0..timed_out.len() {
            for reversed in [false, true] {
                let mut late = timed_out.to_vec();
                late.rotate_left(rotation);
                if reversed {
                    late.reverse();
                }
                let mut traces = Traces::new(Duration::from_secs(60));
                let probes: Vec<(u16, u8)> = answered.iter().copied().chain(late).collect();
                assert_eq!(run(&mut traces, &probes), 0, "{probes:?}");
            }
        }
    }
}
