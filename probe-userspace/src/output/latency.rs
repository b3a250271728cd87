//! How long a scan's `start` record took to reach stdout in a live run: from the outcome
//! that decided the scan (the kernel's time of it) to the record's write, as a histogram.
//!
//! This is the userspace round trip the kernel's verdict waits for (the wakeup, the engine,
//! the write), seen from inside; what the reader of stdout adds after the write is not in
//! it. Scraped as `probe_detector_start_latency_seconds` (`--metrics-addr`).

use std::time::Duration;

/// Upper bounds of the buckets, in microseconds: a scanner sending a probe every 10 µs
/// gets 10 probes in by the first, 100 by the fourth.
pub const BOUNDS_US: [u64; 10] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 100_000, 1_000_000,
];

/// The latencies seen so far: a count per bucket (not cumulative), their sum and count.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Latencies {
    /// Latencies up to each bound of [`BOUNDS_US`] (and above the previous one).
    pub buckets: [u64; BOUNDS_US.len()],
    /// Latencies above the last bound.
    pub above: u64,
    /// Their sum, in nanoseconds.
    pub sum_ns: u128,
    /// How many.
    pub count: u64,
}

impl Latencies {
    /// Counts one latency.
    pub fn observe(&mut self, latency: Duration) {
        let us = latency.as_micros();
        match BOUNDS_US.iter().position(|&bound| us <= u128::from(bound)) {
            Some(bucket) => self.buckets[bucket] += 1,
            None => self.above += 1,
        }
        self.sum_ns += latency.as_nanos();
        self.count += 1;
    }

    /// The Prometheus `_bucket` samples: (`le` in seconds, cumulative count), `+Inf` last.
    pub fn cumulative(&self) -> Vec<(String, u64)> {
        let mut total = 0;
        let mut samples: Vec<(String, u64)> = BOUNDS_US
            .iter()
            .zip(self.buckets)
            .map(|(&bound, n)| {
                total += n;
                (seconds(bound), total)
            })
            .collect();
        samples.push(("+Inf".to_owned(), total + self.above));
        samples
    }
}

/// `us` microseconds as seconds, without float noise (`0.00025`, `1`).
fn seconds(us: u64) -> String {
    let text = format!("{}.{:06}", us / 1_000_000, us % 1_000_000);
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latencies_land_in_their_buckets_and_add_up() {
        let mut latencies = Latencies::default();
        for us in [40, 100, 101, 900, 3_000_000] {
            latencies.observe(Duration::from_micros(us));
        }
        assert_eq!(latencies.count, 5);
        assert_eq!(latencies.sum_ns, 3_001_141_000);
        let cumulative = latencies.cumulative();
        assert_eq!(cumulative[0], ("0.0001".to_owned(), 2), "40 µs and 100 µs");
        assert_eq!(cumulative[1], ("0.00025".to_owned(), 3));
        assert_eq!(cumulative[3], ("0.001".to_owned(), 4));
        assert_eq!(cumulative[9], ("1".to_owned(), 4));
        assert_eq!(
            cumulative[10],
            ("+Inf".to_owned(), 5),
            "3 s is above every bound"
        );
    }
}
