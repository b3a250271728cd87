//! The values of flags that need more than a type: seconds with fractions, table sizes,
//! ranges with an "off", and the `--trw` mode. Each parser's error is the one line clap
//! prints after the flag's name.

use std::time::Duration;

use crate::detect::{crowd, slow, spread};

/// Parses a positive number of seconds, fractions allowed.
pub fn parse_seconds(text: &str) -> Result<Duration, String> {
    let secs: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number of seconds"))?;
    if !(secs.is_finite() && secs > 0.0 && secs <= 86_400.0 * 7.0) {
        return Err(format!("{text} s is out of range (0 < seconds <= 604800)"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Parses `--slow-failed`: 0 (off) or 2..=24 (the contacts a summary holds).
pub fn parse_slow_failed(text: &str) -> Result<u32, String> {
    let n: u32 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a whole number"))?;
    if n == 1 || n as usize > slow::CONTACTS {
        return Err(format!(
            "{n} is out of range: 0 (off) or 2..={}",
            slow::CONTACTS
        ));
    }
    Ok(n)
}

/// Parses `--crowd-sources`: 0 (off) or 2..=64 (the sources a target holds).
pub fn parse_crowd_sources(text: &str) -> Result<u16, String> {
    let n: u16 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a whole number"))?;
    if n == 1 || usize::from(n) > crowd::MAX_MEMBERS {
        return Err(format!(
            "{n} is out of range: 0 (off) or 2..={}",
            crowd::MAX_MEMBERS
        ));
    }
    Ok(n)
}

/// Parses `--spread-ports`: 0 (off) or 4..=64 (the ports a target's spread state holds).
pub fn parse_spread_ports(text: &str) -> Result<u16, String> {
    let n: u16 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a whole number"))?;
    if (1..4).contains(&n) || usize::from(n) > spread::PORT_SLOTS {
        return Err(format!(
            "{n} is out of range: 0 (off) or 4..={}",
            spread::PORT_SLOTS
        ));
    }
    Ok(n)
}

/// How the sequential hypothesis test counts first contacts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum TrwMode {
    /// `service` at this host's own addresses, `host` at the hosts behind it.
    Auto,
    /// First contacts with each of our hosts (the paper's unit; for gateways).
    Host,
    /// First contacts with each of our host:port services (for a single host).
    Service,
    /// No sequential test.
    Off,
}

/// Parses a power of two (table sizes that are indexed by a hash mask).
pub fn parse_power_of_two(text: &str) -> Result<u32, String> {
    let n: u32 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a whole number"))?;
    if !n.is_power_of_two() || n < 1024 {
        return Err(format!("{n} is not a power of two >= 1024"));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_take_fractions_and_refuse_the_unusable() {
        assert_eq!(parse_seconds("0.5"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_seconds("60"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_seconds("604800"), Ok(Duration::from_secs(604_800)));
        for bad in ["0", "-1", "604801", "inf", "NaN"] {
            assert!(
                parse_seconds(bad).unwrap_err().contains("out of range"),
                "{bad}"
            );
        }
        assert_eq!(
            parse_seconds("1m").unwrap_err(),
            "\"1m\" is not a number of seconds"
        );
    }

    #[test]
    fn slow_failed_is_off_or_within_a_summary() {
        assert_eq!(parse_slow_failed("0"), Ok(0));
        assert_eq!(parse_slow_failed("2"), Ok(2));
        assert_eq!(
            parse_slow_failed(&slow::CONTACTS.to_string()),
            Ok(slow::CONTACTS as u32)
        );
        assert!(parse_slow_failed("1").is_err());
        assert!(parse_slow_failed(&(slow::CONTACTS + 1).to_string()).is_err());
        assert!(parse_slow_failed("x").unwrap_err().contains("whole number"));
    }

    #[test]
    fn crowd_sources_is_off_or_within_a_target() {
        assert_eq!(parse_crowd_sources("0"), Ok(0));
        assert_eq!(parse_crowd_sources("3"), Ok(3));
        assert!(parse_crowd_sources("1").is_err());
        assert!(parse_crowd_sources(&(crowd::MAX_MEMBERS + 1).to_string()).is_err());
    }

    #[test]
    fn table_sizes_are_powers_of_two_from_1024() {
        assert_eq!(parse_power_of_two("1024"), Ok(1024));
        assert_eq!(parse_power_of_two("65536"), Ok(65_536));
        for bad in ["512", "1000", "0", "-4"] {
            assert!(parse_power_of_two(bad).is_err(), "{bad}");
        }
    }
}
