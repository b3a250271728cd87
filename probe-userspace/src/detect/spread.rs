//! Spread scans: many sources, each failing on only one or two ports of one host, that
//! together cover many of its ports within a short window (a scan split across machines,
//! or a forged-source flood).
//!
//! A per-source detector never sees such a scan: no source fails often enough. The decoy
//! detector ([`crate::detect::crowd`]) does not either: the sources share no ports. What
//! gives it away is the target's side: within `window`, at least `min_ports` distinct
//! ports of one host failed, each for a source that failed on at most [`FEW_PORTS`] of
//! them. Benign crowds (the clients of a restarted service, peer-to-peer churn on a port
//! that closed, a load balancer's health checks) fail on the same one or two ports, so
//! they never reach the count; a source failing on more is a scanner of its own, for the
//! per-source detectors, and its ports stop counting here.
//!
//! The window is short (10 s by default) because the background scanning every
//! Internet-facing address receives (a few unrelated probes a minute, each from its own
//! source) must not add up to a scan; a split scan or a flood covers ten ports in
//! seconds.
//!
//! A source is counted by its unit: the address, or its prefix when sources are grouped
//! (by default the /64 of an IPv6 address, so a scanner that takes a new address of its
//! /64 for every probe is one source, failing on many ports, and no crowd).
//!
//! Memory: per target, at most [`PORT_SLOTS`] ports and [`UNIT_SLOTS`] sources, the
//! oldest replaced first: [`BYTES_PER_TARGET`].

use std::{mem::size_of, net::IpAddr, time::Duration};

use crate::net::cidr;

/// Distinct failed ports a source may have on the target and still count as one of a
/// spread scan's sources.
pub const FEW_PORTS: usize = 2;
/// Ports remembered per target (the most recent); more than any threshold needs.
pub const PORT_SLOTS: usize = 64;
/// Sources remembered per target with their ports (the most recent).
pub const UNIT_SLOTS: usize = 32;
/// Memory of one target's spread state when full, bytes.
pub const BYTES_PER_TARGET: usize =
    PORT_SLOTS * size_of::<PortSlot>() + UNIT_SLOTS * size_of::<UnitSlot>() + 48;

/// The prefix lengths that make a source's unit (32 and 128: the address itself).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Units {
    pub v4: u8,
    pub v6: u8,
}

impl Units {
    /// The unit of `src`: its network at the unit's prefix length.
    pub fn of(self, src: IpAddr) -> IpAddr {
        match src {
            IpAddr::V4(_) if self.v4 >= 32 => src,
            IpAddr::V6(_) if self.v6 >= 128 => src,
            IpAddr::V4(_) => cidr::network(src, self.v4),
            IpAddr::V6(_) => cidr::network(src, self.v6),
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct PortSlot {
    seen: Duration,
    /// The source address that failed on it last, and its unit.
    src: IpAddr,
    unit: IpAddr,
    port: u16,
}

#[derive(Clone, Copy, Debug)]
struct UnitSlot {
    seen: Duration,
    unit: IpAddr,
    /// Its distinct failed ports, the first ones; `count` goes one beyond [`FEW_PORTS`].
    ports: [u16; FEW_PORTS + 1],
    count: u8,
}

/// What a spread scan looks like now: in full the first time, then (while it lasts) only
/// that this failure is one of its own (empty lists: the caller knows the rest).
#[derive(Clone, Debug, PartialEq)]
pub struct SpreadVerdict {
    /// The source addresses, sorted.
    pub sources: Vec<IpAddr>,
    /// The ports they failed on, sorted.
    pub ports: Vec<u16>,
    /// The oldest of those failures still in the window.
    pub first_seen: Duration,
}

/// One target's recent failures by few-port sources.
#[derive(Debug, Default)]
pub struct Spread {
    ports: Vec<PortSlot>,
    units: Vec<UnitSlot>,
    /// The scan was reported in full; later failures are only its members' (a flood's
    /// every probe must not rebuild the lists).
    reported: bool,
}

impl Spread {
    /// Notes a failure of `src` (whose unit is `unit`) on `port` at `now`; returns the
    /// spread scan when, with it, at least `min_ports` ports within `window` failed for
    /// few-port sources and this source is one of them.
    pub fn observe(
        &mut self,
        src: IpAddr,
        unit: IpAddr,
        port: u16,
        now: Duration,
        window: Duration,
        min_ports: usize,
    ) -> Option<SpreadVerdict> {
        let fresh = |seen: Duration| now.saturating_sub(seen) <= window;
        self.ports.retain(|p| fresh(p.seen));
        self.units.retain(|u| fresh(u.seen));
        let slot = match self.units.iter().position(|u| u.unit == unit) {
            Some(i) => &mut self.units[i],
            None => {
                let slot = UnitSlot {
                    seen: now,
                    unit,
                    ports: [0; FEW_PORTS + 1],
                    count: 0,
                };
                if self.units.len() < UNIT_SLOTS {
                    self.units.push(slot);
                    self.units.last_mut()?
                } else {
                    let oldest = oldest(self.units.iter().map(|u| u.seen))?;
                    self.units[oldest] = slot;
                    &mut self.units[oldest]
                }
            }
        };
        slot.seen = slot.seen.max(now);
        let known = usize::from(slot.count).min(FEW_PORTS + 1);
        if !slot.ports[..known].contains(&port) && known <= FEW_PORTS {
            slot.ports[known] = port;
            slot.count += 1;
            if usize::from(slot.count) > FEW_PORTS {
                // A scanner of its own: none of its ports count here any more.
                let theirs = slot.ports;
                self.ports
                    .retain(|p| !(p.unit == unit && theirs.contains(&p.port)));
            }
        }
        if usize::from(slot.count) > FEW_PORTS {
            return None;
        }
        match self.ports.iter_mut().find(|p| p.port == port) {
            Some(p) => {
                p.seen = p.seen.max(now);
                p.src = src;
                p.unit = unit;
            }
            None => {
                let p = PortSlot {
                    seen: now,
                    src,
                    unit,
                    port,
                };
                if self.ports.len() < PORT_SLOTS {
                    self.ports.push(p);
                } else if let Some(i) = oldest(self.ports.iter().map(|p| p.seen)) {
                    self.ports[i] = p;
                }
            }
        }
        if self.ports.len() < min_ports {
            self.reported = false;
            return None;
        }
        if self.reported {
            return Some(SpreadVerdict {
                sources: Vec::new(),
                ports: Vec::new(),
                first_seen: now,
            });
        }
        self.reported = true;
        let mut sources: Vec<IpAddr> = self.ports.iter().map(|p| p.src).collect();
        sources.sort_unstable();
        sources.dedup();
        let mut ports: Vec<u16> = self.ports.iter().map(|p| p.port).collect();
        ports.sort_unstable();
        Some(SpreadVerdict {
            sources,
            ports,
            first_seen: self.ports.iter().map(|p| p.seen).min().unwrap_or(now),
        })
    }

    /// Ports and sources held.
    pub fn len(&self) -> (usize, usize) {
        (self.ports.len(), self.units.len())
    }
}

/// The index of the oldest time.
fn oldest(times: impl Iterator<Item = Duration>) -> Option<usize> {
    times.enumerate().min_by_key(|&(_, t)| t).map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    const WINDOW: Duration = Duration::from_secs(10);
    const UNITS: Units = Units { v4: 32, v6: 64 };

    fn v4(i: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(0xc612_0700 + i))
    }

    fn ms(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    fn feed(spread: &mut Spread, src: IpAddr, port: u16, at: Duration) -> Option<SpreadVerdict> {
        spread.observe(src, UNITS.of(src), port, at, WINDOW, 10)
    }

    #[test]
    fn twenty_sources_one_port_each_are_a_spread_scan_at_the_tenth_port() {
        let mut spread = Spread::default();
        for i in 0..20u16 {
            let verdict = feed(
                &mut spread,
                v4(u32::from(i)),
                1000 + i,
                ms(100 * u64::from(i)),
            );
            if i < 9 {
                assert_eq!(verdict, None, "port {i}");
            } else if i == 9 {
                let v = verdict.expect("ten ports from ten sources");
                assert_eq!(v.ports, (1000..1010).collect::<Vec<_>>());
                assert_eq!(v.sources.len(), 10);
                assert_eq!(v.first_seen, ms(0));
            } else {
                // Reported: each later member's failure says only that it is one.
                let v = verdict.expect("still a spread scan");
                assert!(v.ports.is_empty() && v.sources.is_empty());
            }
        }
    }

    #[test]
    fn many_sources_on_the_same_two_ports_are_not() {
        let mut spread = Spread::default();
        // A service restart: 500 clients retrying 443 and 80; health checks on 8080.
        for i in 0..500u32 {
            for port in [443, 80, 443] {
                assert_eq!(feed(&mut spread, v4(i), port, ms(u64::from(i))), None);
            }
            assert_eq!(feed(&mut spread, v4(1000), 8080, ms(u64::from(i))), None);
        }
    }

    #[test]
    fn a_source_on_many_ports_is_a_scanner_of_its_own_not_a_crowd() {
        let mut spread = Spread::default();
        // One vertical scanner (its own detectors' business) and four stray probes.
        for port in 1..=30u16 {
            assert_eq!(feed(&mut spread, v4(1), port, ms(u64::from(port))), None);
        }
        for i in 0..4u32 {
            assert_eq!(feed(&mut spread, v4(10 + i), 5000 + i as u16, ms(50)), None);
        }
        // Its first two ports counted until its third: none of them left.
        assert_eq!(spread.len().0, 4);
    }

    #[test]
    fn a_64_rotating_its_addresses_is_one_source() {
        let mut spread = Spread::default();
        let base = 0x2001_0db8_0000_0007_u128 << 64;
        for i in 0..40u16 {
            let src = IpAddr::V6(Ipv6Addr::from(base | (u128::from(i) * 7919)));
            assert_eq!(feed(&mut spread, src, 2000 + i, ms(u64::from(i))), None);
        }
        assert_eq!(spread.len(), (0, 1));
    }

    #[test]
    fn background_probes_spread_over_minutes_are_not() {
        let mut spread = Spread::default();
        // Unrelated scanners, one probe every 2 s, each from its own source: 5 within
        // any 10 s, never 10.
        for i in 0..300u32 {
            let at = Duration::from_secs(2 * u64::from(i));
            assert_eq!(feed(&mut spread, v4(i), (i * 37 % 60_000) as u16, at), None);
        }
    }

    #[test]
    fn memory_stays_at_its_slots_under_a_flood() {
        let mut spread = Spread::default();
        let mut fired = 0;
        for i in 0..100_000u32 {
            let src = IpAddr::V4(Ipv4Addr::from(0xc612_0000 + i));
            if feed(&mut spread, src, (i * 7) as u16, ms(u64::from(i / 100))).is_some() {
                fired += 1;
            }
        }
        assert_eq!(spread.len(), (PORT_SLOTS, UNIT_SLOTS));
        assert!(
            fired > 99_000,
            "a flood is a spread scan throughout: {fired}"
        );
    }

    #[test]
    fn units_are_the_address_or_its_prefix() {
        let unit = UNITS.of("2001:db8:7:7:1:2:3:4".parse().unwrap());
        assert_eq!(unit, "2001:db8:7:7::".parse::<IpAddr>().unwrap());
        assert_eq!(UNITS.of(v4(3)), v4(3));
        let units = Units { v4: 24, v6: 128 };
        assert_eq!(units.of(v4(3)), v4(0));
    }
}
