//! Time: turning the kernel's CLOCK_MONOTONIC stamps into wall-clock time, and formatting
//! wall-clock time as RFC 3339 with microseconds (`2026-11-21T06:01:02.123456Z`) or as
//! Suricata's EVE records do (`2026-11-21T06:01:02.123456+0000`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Reads a clock; `None` only if the kernel refuses, which it does not for these clocks.
fn clock_ns(clock: libc::clockid_t) -> Option<i128> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    (rc == 0).then(|| i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec))
}

/// Time since boot on CLOCK_MONOTONIC, the clock `bpf_ktime_get_ns` reads.
pub fn monotonic_now() -> Duration {
    let ns = clock_ns(libc::CLOCK_MONOTONIC).unwrap_or(0);
    Duration::from_nanos(u64::try_from(ns).unwrap_or(0))
}

/// Wall-clock seconds since the Unix epoch now.
pub fn unix_now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The offset between CLOCK_REALTIME and CLOCK_MONOTONIC at one moment: converts the
/// kernel's monotonic stamps to wall-clock time. Take a new one per alert, so a stepped
/// wall clock is followed, and convert all of one alert's times with the same one, so they
/// agree to the nanosecond.
#[derive(Clone, Copy, Debug)]
pub struct WallClock {
    offset_ns: i128,
}

impl WallClock {
    /// The current offset.
    pub fn now() -> Self {
        let offset_ns = match (
            clock_ns(libc::CLOCK_REALTIME),
            clock_ns(libc::CLOCK_MONOTONIC),
        ) {
            (Some(real), Some(mono)) => real - mono,
            _ => 0,
        };
        Self { offset_ns }
    }

    /// The clock of times that are already wall-clock times since the Unix epoch (a
    /// capture's).
    pub fn unix() -> Self {
        Self { offset_ns: 0 }
    }

    /// The wall-clock time of a CLOCK_MONOTONIC instant.
    pub fn at(self, monotonic: Duration) -> SystemTime {
        let ns = self.offset_ns + monotonic.as_nanos() as i128;
        UNIX_EPOCH + Duration::from_nanos(u64::try_from(ns.max(0)).unwrap_or(u64::MAX))
    }
}

/// Formats a wall-clock time as RFC 3339 in UTC with microseconds.
pub fn rfc3339_micros(time: SystemTime) -> String {
    format!("{}Z", utc_micros(time))
}

/// Formats a wall-clock time as Suricata's EVE records carry it: UTC with microseconds and
/// a numeric offset (`2026-11-28T17:05:22.120650+0000`), the form its schema requires.
pub fn eve_timestamp(time: SystemTime) -> String {
    format!("{}+0000", utc_micros(time))
}

/// `YYYY-MM-DDTHH:MM:SS.ffffff` in UTC.
fn utc_micros(time: SystemTime) -> String {
    let since_epoch = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since_epoch.as_secs();
    let micros = since_epoch.subsec_micros();
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{micros:06}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// (year, month, day) of a day count since 1970-01-01, proleptic Gregorian (Howard
/// Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64, micros: u32) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_micros(u64::from(micros))
    }

    #[test]
    fn formats_known_instants() {
        assert_eq!(rfc3339_micros(at(0, 0)), "1970-01-01T00:00:00.000000Z");
        // 2000-02-29 (leap day of a century leap year) 12:34:56.789012
        assert_eq!(
            rfc3339_micros(at(951_827_696, 789_012)),
            "2000-02-29T12:34:56.789012Z"
        );
        assert_eq!(
            rfc3339_micros(at(1_795_132_800, 1)),
            "2026-11-20T00:00:00.000001Z"
        );
        assert_eq!(
            rfc3339_micros(at(4_102_444_799, 999_999)),
            "2099-12-31T23:59:59.999999Z"
        );
    }

    #[test]
    fn eve_timestamps_carry_an_offset() {
        assert_eq!(
            eve_timestamp(at(1_795_132_800, 120_650)),
            "2026-11-20T00:00:00.120650+0000"
        );
    }

    #[test]
    fn monotonic_instants_map_near_now() {
        let now = monotonic_now();
        let clock = WallClock::now();
        let wall = clock.at(now);
        let skew = SystemTime::now()
            .duration_since(wall)
            .unwrap_or_else(|e| e.duration());
        assert!(skew < Duration::from_secs(1), "skew {skew:?}");
        let earlier = clock.at(now.saturating_sub(Duration::from_secs(10)));
        assert_eq!(
            wall.duration_since(earlier).unwrap(),
            Duration::from_secs(10)
        );
    }
}
