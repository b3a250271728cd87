//! The alert flood limit: at most `per_source` alerts a second for one source (an address,
//! an IPv6 /64), [`NETWORK_SHARE`] times that for the sources of one network (a /24, a
//! /48), at most `global` alerts a second in all, of which updates and ends may take no
//! more than three quarters (a `start` always finds room); beyond that
//! alerts are counted, not written, and one record a second says how many were
//! suppressed and whose, so a flood of (spoofed) scanners cannot turn into an alert storm,
//! and the scanners of a few networks cannot crowd out everyone else's `start`. Also the
//! EVE `engine` record every drop report uses ([`engine_record`]). Pure logic, time
//! passed in.

use std::{collections::HashMap, net::IpAddr, time::Duration};

use crate::net::cidr;

/// How many sources' worth of alerts the sources of one network may send together.
pub const NETWORK_SHARE: u32 = 4;
/// Networks whose suppressed alerts are counted by name, per report (the rest are summed).
pub const NAMED_NETWORKS: usize = 64;
/// Networks named in one report (the busiest).
pub const REPORTED_NETWORKS: usize = 5;

/// The network of a scan's source for the network's budget: its /24 (IPv4) or /48
/// (IPv6), as the block budget counts them.
pub fn network_of(src: IpAddr) -> (IpAddr, u8) {
    let len = if src.is_ipv4() { 24 } else { 48 };
    (cidr::network(src, len), len)
}

/// The source itself for its own budget: its address, or its /64 (IPv6).
fn unit_of(src: IpAddr) -> IpAddr {
    match src {
        IpAddr::V4(_) => src,
        IpAddr::V6(_) => cidr::network(src, 64),
    }
}

/// The limiter's state.
#[derive(Debug)]
pub struct FloodLimit {
    global: u32,
    per_source: u32,
    second: u64,
    sent: u32,
    /// Updates and ends sent this second.
    sent_later: u32,
    /// Alerts sent this second per network and per source (only those that sent: at most
    /// `global` each).
    by_network: HashMap<(IpAddr, u8), u32>,
    by_unit: HashMap<IpAddr, u32>,
    /// Suppressed since the last report, by network (at most [`NAMED_NETWORKS`]), and the
    /// rest.
    suppressed: HashMap<(IpAddr, u8), u64>,
    suppressed_others: u64,
}

/// What was suppressed since the last report.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Suppressed {
    /// Alerts suppressed in all.
    pub total: u64,
    /// The busiest networks with their counts, busiest first (at most
    /// [`REPORTED_NETWORKS`]).
    pub networks: Vec<((IpAddr, u8), u64)>,
    /// Networks suppressed beyond those listed (counted up to [`NAMED_NETWORKS`]; more
    /// when `unnamed` alerts came from networks not even counted).
    pub more_networks: usize,
    /// Alerts of networks not counted by name (the table was full).
    pub unnamed: u64,
}

impl Suppressed {
    /// One line: how many, from whom.
    pub fn describe(&self, global: u32, per_source: u32) -> String {
        let whose: Vec<String> = self
            .networks
            .iter()
            .map(|((net, len), n)| format!("{net}/{len} {n}"))
            .collect();
        let per_network = if per_source > 0 {
            format!(
                ", --alert-rate-per-source {per_source} a source, {} a network",
                per_source.saturating_mul(NETWORK_SHARE)
            )
        } else {
            String::new()
        };
        let mut text = format!(
            "alert flood: {} alerts suppressed (--alert-rate-limit {global} a second{per_network}): {}",
            self.total,
            whose.join(", ")
        );
        if self.more_networks > 0 {
            text.push_str(&format!(", {} more networks", self.more_networks));
        }
        if self.unnamed > 0 {
            text.push_str(&format!(
                " ({} alerts of networks not counted)",
                self.unnamed
            ));
        }
        text
    }
}

impl FloodLimit {
    /// At most `global` alerts in any one second (0 = no limit), at most `per_source` of
    /// one network's sources (0 = no limit).
    pub fn new(global: u32, per_source: u32) -> Self {
        Self {
            global,
            per_source,
            second: 0,
            sent: 0,
            sent_later: 0,
            by_network: HashMap::new(),
            by_unit: HashMap::new(),
            suppressed: HashMap::new(),
            suppressed_others: 0,
        }
    }

    /// True when an alert of a scan from `src` (`start`: it is a scan's first alert) at
    /// `now` may be written; counts it either way.
    pub fn admit(&mut self, src: IpAddr, start: bool, now: Duration) -> bool {
        let second = now.as_secs();
        if second != self.second {
            self.second = second;
            self.sent = 0;
            self.sent_later = 0;
            self.by_network.clear();
            self.by_unit.clear();
        }
        let network = network_of(src);
        let unit = unit_of(src);
        let ours = self.by_network.get(&network).copied().unwrap_or(0);
        let mine = self.by_unit.get(&unit).copied().unwrap_or(0);
        let global_full = self.global > 0
            && (self.sent >= self.global || !start && self.sent_later >= self.global * 3 / 4);
        let own_full = self.per_source > 0
            && (mine >= self.per_source || ours >= self.per_source.saturating_mul(NETWORK_SHARE));
        if global_full || own_full {
            let room = self.suppressed.len() < NAMED_NETWORKS;
            match self.suppressed.get_mut(&network) {
                Some(n) => *n += 1,
                None if room => drop(self.suppressed.insert(network, 1)),
                None => self.suppressed_others += 1,
            }
            return false;
        }
        self.sent += 1;
        if !start {
            self.sent_later += 1;
        }
        if self.global > 0 || self.per_source > 0 {
            *self.by_network.entry(network).or_default() += 1;
            *self.by_unit.entry(unit).or_default() += 1;
        }
        true
    }

    /// What was suppressed since the last call, taken; once a second or so is enough.
    pub fn take_suppressed(&mut self) -> Suppressed {
        let mut networks: Vec<((IpAddr, u8), u64)> = self.suppressed.drain().collect();
        let unnamed = std::mem::take(&mut self.suppressed_others);
        let total = networks.iter().map(|(_, n)| n).sum::<u64>() + unnamed;
        networks.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let more_networks = networks.len().saturating_sub(REPORTED_NETWORKS);
        networks.truncate(REPORTED_NETWORKS);
        Suppressed {
            total,
            networks,
            more_networks,
            unnamed,
        }
    }
}

/// The EVE `engine` record (a warning, as Suricata logs its own) that every drop report
/// uses: alerts held back by the flood limit, records a slow reader of stdout missed.
pub fn engine_record(timestamp: String, host: &str, module: &str, message: &str) -> String {
    let record = serde_json::json!({
        "timestamp": timestamp,
        "event_type": "engine",
        "host": host,
        "log_level": "Warning",
        "engine": {
            "module": module,
            "message": message,
        },
    });
    format!("{record}\n")
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn at(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    fn src(net: u8, host: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(198, 18, net, host))
    }

    #[test]
    fn a_storm_is_cut_to_the_limit_and_counted_by_network() {
        let mut limit = FloodLimit::new(10, 0);
        let admitted = (0..1000)
            .filter(|&i| limit.admit(src((i % 3) as u8, 1), true, at(1000 + i / 2)))
            .count();
        assert_eq!(admitted, 10, "500 ms of a storm within one second");
        let suppressed = limit.take_suppressed();
        assert_eq!(suppressed.total, 990);
        assert_eq!(suppressed.networks.len(), 3);
        assert_eq!(suppressed.networks[0], ((src(0, 0), 24), 330));
        assert_eq!(limit.take_suppressed(), Suppressed::default(), "taken once");
        // The next second has its own allowance.
        assert!(limit.admit(src(0, 1), true, at(2000)));
    }

    #[test]
    fn one_networks_flood_cannot_crowd_out_anothers_start() {
        let mut limit = FloodLimit::new(100, 5);
        // Forged scanners of two /24s start 1000 scans in one second: ten times the
        // global budget, fifty times theirs.
        for i in 0..1000u32 {
            let forged = src((i % 2) as u8, (i % 250) as u8);
            limit.admit(forged, true, at(1000 + u64::from(i) / 2));
        }
        // A real scanner elsewhere, late in that second, and one of those /24s.
        assert!(limit.admit(src(9, 1), true, at(1999)));
        let suppressed = limit.take_suppressed();
        assert_eq!(suppressed.total, 960);
        let described = suppressed.describe(100, 5);
        assert!(
            described.contains("5 a source, 20 a network): 198.18.0.0/24 480, 198.18.1.0/24 480"),
            "{described}"
        );
        // One source gets five a second, its neighbours their own.
        let mut limit = FloodLimit::new(100, 5);
        let one = (0..10)
            .filter(|_| limit.admit(src(3, 1), true, at(0)))
            .count();
        assert_eq!(one, 5);
        assert!(limit.admit(src(3, 2), true, at(0)));
    }

    #[test]
    fn updates_and_ends_leave_room_for_starts() {
        let mut limit = FloodLimit::new(100, 0);
        let later = (0..500)
            .filter(|&i| limit.admit(src((i % 200) as u8, 1), false, at(1000)))
            .count();
        assert_eq!(later, 75);
        let starts = (0..500)
            .filter(|&i| limit.admit(src((i % 200) as u8, 2), true, at(1000)))
            .count();
        assert_eq!(starts, 25);
    }

    #[test]
    fn networks_beyond_the_named_are_summed() {
        let mut limit = FloodLimit::new(1, 0);
        limit.admit(src(0, 0), true, at(0));
        for net in 0..100u8 {
            assert!(!limit.admit(src(net, 1), true, at(1)));
        }
        let suppressed = limit.take_suppressed();
        assert_eq!(suppressed.total, 100);
        assert_eq!(suppressed.unnamed, 100 - NAMED_NETWORKS as u64);
        assert_eq!(suppressed.more_networks, NAMED_NETWORKS - REPORTED_NETWORKS);
    }

    #[test]
    fn zero_means_no_limit() {
        let mut limit = FloodLimit::new(0, 0);
        assert!((0..10_000).all(|i| limit.admit(src(0, (i % 200) as u8), true, at(1))));
        assert_eq!(limit.take_suppressed().total, 0);
    }
}
