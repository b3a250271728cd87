//! Slow-scan detection: a compact summary of each source's failed and successful contacts
//! over a long horizon (an hour by default), so scans paced minutes apart are still caught.
//!
//! The fast detectors forget a source after a minute (threshold windows) or ten (TRW's
//! idle time), and under a flood of sources their tables forget the quiet ones first. Here
//! each source costs [`BYTES_PER_SOURCE`] bytes whatever it does: its latest
//! [`CONTACTS`] distinct contacts (local host, port and protocol), each as a 32-bit
//! fingerprint keyed with a per-process random seed and the quarter of the horizon it was
//! last seen in. A source is flagged when its distinct failed contacts within the horizon
//! reach `min_failed` plus its distinct successes (a source that
//! mostly succeeds is a client, not a scanner).
//!
//! Floods of spoofed sources: a source gets a summary only at its second contact within a
//! quarter of the horizon or so (a bitmap of [`ADMISSION_BITS`] bits, two generations,
//! remembers the first; the second is credited with it), so one-packet sources never take
//! room. When the table is full, the sources with the least evidence go first
//! ([`crate::detect::table`]), so they displace each other, not a slow scanner that has gathered
//! evidence. A flood large enough to fill the admission bitmap within a quarter of the
//! horizon (about a million sources) admits everything, and then a scanner whose first two
//! probes fall between evictions can be missed: bounded memory cannot remember every
//! source seen once.
//!
//! With the defaults (8 failed contacts within an hour) nmap -T1 (15 s between probes) is
//! flagged at its eighth probe, under two minutes in, and -T0 (5 min between probes) at its
//! eighth, 35 minutes in (the unit test below); TRW flags both sooner while their probes
//! come less than its 10-minute idle time apart.

use std::{
    hash::{BuildHasher, RandomState},
    mem::size_of,
    net::IpAddr,
    time::Duration,
};

use crate::detect::verdict::{Detector, DetectorName, Verdict};
use crate::{
    detect::table::{Activity, BoundedTable},
    event::Probe,
};

/// The horizon is kept in this many slices; a contact leaves when its slice does.
const SLICES: u64 = 4;
/// Distinct contacts remembered per source (the newest; older ones make room).
pub const CONTACTS: usize = 24;
/// Latest failed contacts kept with their addresses, for the alert.
const SAMPLE: usize = 4;

/// Memory per tracked source (summary, key and hash-table overhead), bytes.
pub const BYTES_PER_SOURCE: usize = size_of::<Summary>() + size_of::<IpAddr>() + 8;
// The summary stays small: it is what a flood of sources costs.
const _: () = assert!(BYTES_PER_SOURCE <= 360);
/// Bits of each generation of the admission bitmap (128 KiB each).
pub const ADMISSION_BITS: usize = 1 << 20;

/// The detector's parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SlowConfig {
    /// Distinct failed contacts (beyond the successes) that flag a source; at most
    /// [`CONTACTS`].
    pub min_failed: u32,
    /// How far back contacts are counted (between three quarters of it and all of it).
    pub horizon: Duration,
    /// Sources tracked at once.
    pub max_sources: usize,
}

impl Default for SlowConfig {
    fn default() -> Self {
        Self {
            min_failed: 8,
            horizon: Duration::from_secs(3600),
            max_sources: 65_536,
        }
    }
}

/// A source the detector flagged.
#[derive(Clone, Debug, PartialEq)]
pub struct SlowVerdict {
    /// Distinct failed and successful contacts within the horizon (the admitting one
    /// included).
    pub failed: u32,
    pub succeeded: u32,
    /// The latest failed contacts (up to 4): host and port, sorted.
    pub sample: Vec<(IpAddr, u16)>,
    /// When the summary started.
    pub first_seen: Duration,
}

/// One remembered contact.
#[derive(Clone, Copy, Debug, Default)]
struct Contact {
    fingerprint: u32,
    /// The slice it was last seen in, truncated (slices are compared modulo 2^16).
    slice: u16,
    failed: bool,
}

#[derive(Debug)]
struct Summary {
    contacts: [Contact; CONTACTS],
    len: u8,
    /// Contacts counted before the summary existed (the admission bitmap's one).
    credit: u8,
    flagged: bool,
    sampled: u8,
    sample: [(IpAddr, u16); SAMPLE],
    first_seen: Duration,
    last_seen: Duration,
}

impl Summary {
    fn new(now: Duration, credit: u8) -> Self {
        Self {
            contacts: [Contact::default(); CONTACTS],
            len: 0,
            credit,
            flagged: false,
            sampled: 0,
            sample: [(IpAddr::from([0u8; 4]), 0); SAMPLE],
            first_seen: now,
            last_seen: now,
        }
    }

    /// Forgets the contacts whose slice left the horizon.
    fn expire(&mut self, slice: u16) {
        let mut kept = 0;
        for i in 0..usize::from(self.len) {
            let contact = self.contacts[i];
            if u64::from(slice.wrapping_sub(contact.slice)) < SLICES {
                self.contacts[kept] = contact;
                kept += 1;
            }
        }
        self.len = kept as u8;
    }

    /// Notes a contact; true when it is new.
    fn note(&mut self, fingerprint: u32, slice: u16, failed: bool) -> bool {
        let len = usize::from(self.len);
        if let Some(c) = self.contacts[..len]
            .iter_mut()
            .find(|c| c.fingerprint == fingerprint)
        {
            c.slice = slice;
            c.failed &= failed;
            return false;
        }
        let contact = Contact {
            fingerprint,
            slice,
            failed,
        };
        if len < CONTACTS {
            self.contacts[len] = contact;
            self.len += 1;
        } else {
            // Full: the contact seen longest ago makes room.
            let oldest = (0..CONTACTS)
                .max_by_key(|&i| slice.wrapping_sub(self.contacts[i].slice))
                .unwrap_or(0);
            self.contacts[oldest] = contact;
        }
        true
    }

    fn counts(&self) -> (u32, u32) {
        let contacts = &self.contacts[..usize::from(self.len)];
        let failed = contacts.iter().filter(|c| c.failed).count() as u32;
        (
            failed + u32::from(self.credit),
            contacts.len() as u32 - failed,
        )
    }
}

impl Activity for Summary {
    fn last_seen(&self) -> Duration {
        self.last_seen
    }

    fn worth(&self) -> u32 {
        if self.flagged {
            return u32::MAX;
        }
        let (failed, succeeded) = self.counts();
        failed.saturating_sub(succeeded)
    }
}

/// Summaries of every tracked source.
#[derive(Debug)]
pub struct Slow {
    config: SlowConfig,
    slice: Duration,
    hasher: RandomState,
    sources: BoundedTable<IpAddr, Summary>,
    /// Sources seen once: this generation's and the previous one's bitmaps.
    admission: [Vec<u64>; 2],
    /// The slice of the current generation.
    admission_slice: u64,
}

impl Slow {
    /// A detector with `config`.
    pub fn new(config: SlowConfig) -> Self {
        Self {
            slice: (config.horizon / SLICES as u32).max(Duration::from_millis(1)),
            hasher: RandomState::new(),
            sources: BoundedTable::new(config.max_sources),
            admission: [vec![0; ADMISSION_BITS / 64], vec![0; ADMISSION_BITS / 64]],
            admission_slice: 0,
            config,
        }
    }

    /// Sources tracked.
    pub fn tracked(&self) -> usize {
        self.sources.len()
    }

    /// Sources forgotten to make room so far.
    pub fn evictions(&self) -> u64 {
        self.sources.evictions()
    }

    /// True when `src` failed before (then it gets a summary); notes it otherwise.
    fn admit(&mut self, src: IpAddr, slice: u64) -> bool {
        if slice > self.admission_slice {
            if slice == self.admission_slice + 1 {
                self.admission.swap(0, 1);
                self.admission[0].fill(0);
            } else {
                self.admission.iter_mut().for_each(|g| g.fill(0));
            }
            self.admission_slice = slice;
        }
        let bit = (self.hasher.hash_one(("admission", src)) as usize) % ADMISSION_BITS;
        let (word, mask) = (bit / 64, 1u64 << (bit % 64));
        if (self.admission[0][word] | self.admission[1][word]) & mask != 0 {
            return true;
        }
        self.admission[0][word] |= mask;
        false
    }

    /// Feeds one outcome; returns the verdict when it flags its source (once, until the
    /// source's summary empties).
    pub fn judge(&mut self, probe: &Probe, now: Duration) -> Option<SlowVerdict> {
        let slice = (now.as_nanos() / self.slice.as_nanos().max(1)) as u64;
        let failed = probe.failed();
        if !self.sources.contains(&probe.src) && !(failed && self.admit(probe.src, slice)) {
            return None;
        }
        let fingerprint = self
            .hasher
            .hash_one((probe.dst, probe.dst_port, probe.proto)) as u32;
        let horizon = self.config.horizon;
        // Admitted at its second failure: credited with the first.
        let summary = self
            .sources
            .entry(probe.src, now, horizon, || Summary::new(now, 1));
        if now.saturating_sub(summary.last_seen) >= horizon {
            // Everything left the horizon: a new summary, which may flag again.
            *summary = Summary::new(now, 0);
        }
        summary.expire(slice as u16);
        summary.last_seen = summary.last_seen.max(now);
        if summary.note(fingerprint, slice as u16, failed) && failed {
            summary.sample[usize::from(summary.sampled) % SAMPLE] = (probe.dst, probe.dst_port);
            summary.sampled = summary.sampled.wrapping_add(1);
        }
        let (failed, succeeded) = summary.counts();
        if summary.flagged || failed < self.config.min_failed.saturating_add(succeeded) {
            return None;
        }
        summary.flagged = true;
        let kept = usize::from(summary.sampled).min(SAMPLE);
        let mut sample = summary.sample[..kept].to_vec();
        sample.sort_unstable();
        Some(SlowVerdict {
            failed,
            succeeded,
            sample,
            first_seen: summary.first_seen,
        })
    }
}

impl Detector for Slow {
    fn table(&self) -> &'static str {
        "slow"
    }

    fn observe(&mut self, probe: &Probe, now: Duration) -> Option<Verdict> {
        let SlowVerdict {
            failed,
            succeeded,
            sample,
            first_seen,
        } = self.judge(probe, now)?;
        let mut hosts: Vec<IpAddr> = sample.iter().map(|&(h, _)| h).collect();
        hosts.dedup();
        let mut ports: Vec<u16> = sample.iter().map(|&(_, p)| p).collect();
        ports.sort_unstable();
        ports.dedup();
        Some(Verdict::of_source(
            DetectorName::Slow,
            hosts,
            ports,
            f64::from(failed) / f64::from(self.config.min_failed),
            first_seen,
            (u64::from(failed), u64::from(succeeded)),
        ))
    }

    fn tracked(&self) -> usize {
        Slow::tracked(self)
    }

    fn evictions(&self) -> u64 {
        Slow::evictions(self)
    }

    fn memory_bound(&self) -> usize {
        self.config.max_sources * BYTES_PER_SOURCE + 2 * ADMISSION_BITS / 8
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::event::Outcome;

    const SCANNER: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1));
    const VICTIM: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 19, 0, 2));

    fn mins(m: u64) -> Duration {
        Duration::from_secs(60 * m)
    }

    #[test]
    fn a_scan_paced_minutes_apart_is_flagged_at_its_eighth_port() {
        let mut slow = Slow::new(SlowConfig::default());
        // nmap -T0: five minutes between probes.
        for (i, port) in (1..=8u16).enumerate() {
            let probe = Probe::syn(SCANNER, VICTIM, port, Outcome::Refused);
            let verdict = slow.judge(&probe, mins(5 * i as u64));
            if port < 8 {
                assert_eq!(verdict, None, "flagged early at port {port}");
            } else {
                let verdict = verdict.expect("eight failed ports within the hour");
                assert_eq!(verdict.failed, 8, "{verdict:?}");
                assert_eq!(verdict.succeeded, 0);
                // The first probe only admitted the source: the summary starts with the
                // second.
                assert_eq!(verdict.sample.len(), 4);
                assert_eq!(verdict.first_seen, mins(5));
            }
        }
    }

    #[test]
    fn contacts_older_than_the_horizon_are_forgotten() {
        let mut slow = Slow::new(SlowConfig::default());
        // One probe every 20 minutes: at most three or four within any hour, never eight.
        for i in 0..30u16 {
            let probe = Probe::syn(SCANNER, VICTIM, 1000 + i, Outcome::Refused);
            assert_eq!(slow.judge(&probe, mins(20 * u64::from(i))), None, "at {i}");
        }
    }

    #[test]
    fn successes_damp_a_client() {
        let mut slow = Slow::new(SlowConfig::default());
        // A client using twelve services, three of them down, over half an hour.
        for i in 0..12u16 {
            let outcome = if i % 4 == 0 {
                Outcome::Refused
            } else {
                Outcome::Accepted
            };
            let probe = Probe::syn(SCANNER, VICTIM, 8000 + i, outcome);
            assert_eq!(slow.judge(&probe, mins(u64::from(i) * 2)), None);
        }
    }

    #[test]
    fn a_flood_of_one_packet_sources_does_not_evict_the_slow_scanner() {
        let mut slow = Slow::new(SlowConfig {
            max_sources: 64,
            ..SlowConfig::default()
        });
        let mut flagged = None;
        for i in 0..8u16 {
            let probe = Probe::syn(SCANNER, VICTIM, 20 + i, Outcome::Refused);
            flagged = slow.judge(&probe, mins(5 * u64::from(i)));
            // Between two probes, 1000 spoofed sources of one probe each.
            for j in 0..1000u32 {
                let spoofed = IpAddr::V4(Ipv4Addr::from(0xc613_0000 + u32::from(i) * 1000 + j));
                let probe = Probe::syn(spoofed, VICTIM, 80, Outcome::Refused);
                slow.judge(&probe, mins(5 * u64::from(i)) + Duration::from_secs(1));
            }
            assert!(slow.tracked() <= 64);
        }
        assert!(flagged.is_some(), "the slow scanner was forgotten");
        // One-packet sources took no room (a few share an admission bit with an earlier
        // one and got a summary).
        assert!(slow.tracked() < 64, "{} tracked", slow.tracked());
    }
}
