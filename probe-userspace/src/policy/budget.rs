//! How many automatic blocks may be made: a per-second budget of new blocks (a token
//! bucket) and a cap on the blocks in force within one prefix (/24 for IPv4, /48 for
//! IPv6). Both bound what forged sources can make `--block` do: a flood of forged scans
//! blocks at most the budget's rate, and forging a network's addresses blocks at most the
//! cap of them. Pure logic: time comes in as an argument.

use std::{collections::HashMap, net::IpAddr, time::Duration};

use crate::net::cidr::Cidr;

/// Why the budget refused a block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// More new automatic blocks this second than `--block-rate` allows.
    Rate,
    /// The source's prefix already holds `--block-prefix-cap` automatic blocks.
    PrefixCap,
}

/// The budget's settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BudgetConfig {
    /// New automatic blocks a second, on average.
    pub rate: f64,
    /// New automatic blocks at once after a quiet spell.
    pub burst: f64,
    /// Automatic blocks in force within one /24 (IPv4) or /48 (IPv6), at most.
    pub prefix_cap: usize,
}

impl Default for BudgetConfig {
    fn default() -> Self {
        Self {
            rate: 5.0,
            burst: 50.0,
            prefix_cap: 16,
        }
    }
}

/// See the module documentation.
#[derive(Debug)]
pub struct Budget {
    config: BudgetConfig,
    tokens: f64,
    last: Option<Duration>,
    per_prefix: HashMap<Cidr, usize>,
}

impl Budget {
    /// A full bucket.
    pub fn new(config: BudgetConfig) -> Self {
        Self {
            config,
            tokens: config.burst,
            last: None,
            per_prefix: HashMap::new(),
        }
    }

    /// The settings.
    pub fn config(&self) -> BudgetConfig {
        self.config
    }

    /// Takes one new automatic block of `addr` at `now`, or says why not.
    pub fn take(&mut self, addr: IpAddr, now: Duration) -> Result<(), Refusal> {
        if let Some(last) = self.last {
            let elapsed = now.saturating_sub(last).as_secs_f64();
            self.tokens = (self.tokens + elapsed * self.config.rate).min(self.config.burst);
        }
        self.last = Some(now);
        let in_prefix = self.per_prefix.get(&prefix(addr)).copied().unwrap_or(0);
        if in_prefix >= self.config.prefix_cap {
            return Err(Refusal::PrefixCap);
        }
        if self.tokens < 1.0 {
            return Err(Refusal::Rate);
        }
        self.tokens -= 1.0;
        *self.per_prefix.entry(prefix(addr)).or_default() += 1;
        Ok(())
    }

    /// Counts an automatic block of `addr` made outside the rate (restored at start).
    pub fn note(&mut self, addr: IpAddr) {
        *self.per_prefix.entry(prefix(addr)).or_default() += 1;
    }

    /// An automatic block of `addr` ended (expired, lifted, evicted): its prefix has room
    /// for one more.
    pub fn release(&mut self, addr: IpAddr) {
        let key = prefix(addr);
        if let Some(n) = self.per_prefix.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                self.per_prefix.remove(&key);
            }
        }
    }
}

/// The prefix the cap counts by: /24 for IPv4, /48 for IPv6.
fn prefix(addr: IpAddr) -> Cidr {
    let len = if addr.is_ipv4() { 24 } else { 48 };
    Cidr::covering(addr, len)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn the_rate_allows_a_burst_then_its_rate() {
        let mut b = Budget::new(BudgetConfig {
            rate: 2.0,
            burst: 3.0,
            prefix_cap: 1000,
        });
        let mut made = 0;
        for i in 0..10 {
            if b.take(ip(&format!("198.18.{i}.1")), secs(100.0)).is_ok() {
                made += 1;
            }
        }
        assert_eq!(made, 3, "the burst");
        assert_eq!(
            b.take(ip("198.18.20.1"), secs(100.1)),
            Err(Refusal::Rate),
            "0.2 tokens back"
        );
        assert_eq!(b.take(ip("198.18.21.1"), secs(100.6)), Ok(()), "1.2 back");
        // A quiet hour refills the burst, no more.
        let later: usize = (0..10)
            .filter(|i| {
                b.take(ip(&format!("198.18.{}.9", 30 + i)), secs(4000.0))
                    .is_ok()
            })
            .count();
        assert_eq!(later, 3);
    }

    #[test]
    fn a_prefix_holds_at_most_its_cap_until_blocks_end() {
        let mut b = Budget::new(BudgetConfig {
            rate: 1000.0,
            burst: 1000.0,
            prefix_cap: 2,
        });
        let now = secs(1.0);
        assert_eq!(b.take(ip("198.18.5.1"), now), Ok(()));
        assert_eq!(b.take(ip("198.18.5.2"), now), Ok(()));
        assert_eq!(b.take(ip("198.18.5.3"), now), Err(Refusal::PrefixCap));
        assert_eq!(b.take(ip("198.18.6.3"), now), Ok(()), "another /24");
        assert_eq!(b.take(ip("2001:db8:1:2::1"), now), Ok(()));
        assert_eq!(b.take(ip("2001:db8:1:3::1"), now), Ok(()), "same /48");
        assert_eq!(
            b.take(ip("2001:db8:1:ffff::1"), now),
            Err(Refusal::PrefixCap)
        );
        b.release(ip("198.18.5.1"));
        assert_eq!(b.take(ip("198.18.5.3"), now), Ok(()), "room again");
    }
}
