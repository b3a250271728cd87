//! The global alert flood limit: at most `per_second` alerts a second; beyond that alerts
//! are counted, not written, and one record per second says how many were suppressed, so
//! a flood of (spoofed) scanners cannot turn into an alert storm. Pure logic, time passed
//! in.

use std::time::Duration;

/// The limiter's state.
#[derive(Debug)]
pub struct FloodLimit {
    per_second: u32,
    second: u64,
    sent: u32,
    suppressed: u64,
}

impl FloodLimit {
    /// At most `per_second` alerts in any one second (0 = no limit).
    pub fn new(per_second: u32) -> Self {
        Self {
            per_second,
            second: 0,
            sent: 0,
            suppressed: 0,
        }
    }

    /// True when an alert at `now` may be written; counts it either way.
    pub fn admit(&mut self, now: Duration) -> bool {
        if self.per_second == 0 {
            return true;
        }
        let second = now.as_secs();
        if second != self.second {
            self.second = second;
            self.sent = 0;
        }
        if self.sent < self.per_second {
            self.sent += 1;
            true
        } else {
            self.suppressed += 1;
            false
        }
    }

    /// Alerts suppressed since the last call; once a second or so is enough.
    pub fn take_suppressed(&mut self) -> u64 {
        std::mem::take(&mut self.suppressed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    #[test]
    fn a_storm_is_cut_to_the_limit_and_counted() {
        let mut limit = FloodLimit::new(10);
        let admitted = (0..1000).filter(|i| limit.admit(at(1000 + i / 2))).count();
        assert_eq!(admitted, 10, "500 ms of a storm within one second");
        assert_eq!(limit.take_suppressed(), 990);
        assert_eq!(limit.take_suppressed(), 0, "taken once");
        // The next second has its own allowance.
        assert!(limit.admit(at(2000)));
    }

    #[test]
    fn zero_means_no_limit() {
        let mut limit = FloodLimit::new(0);
        assert!((0..10_000).all(|_| limit.admit(at(1))));
        assert_eq!(limit.take_suppressed(), 0);
    }
}
