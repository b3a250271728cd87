//! The `--status-interval` line: live counts on stderr for an operator watching a
//! terminal.

use probe_common::Counter;

use crate::daemon::metrics::Snapshot;

/// The `--status-interval` line.
pub fn status_line(s: &Snapshot) -> String {
    let kernel = |c: Counter| {
        s.kernel
            .iter()
            .find(|(k, _)| *k == c)
            .map_or(0, |(_, v)| *v)
    };
    let by_kind = |kind: &str| {
        s.alerts
            .iter()
            .filter(|((k, phase), _)| *k == kind && *phase == "start")
            .map(|(_, n)| n)
            .sum::<u64>()
    };
    format!(
        "status: {} packets in, {} out; {} attempts failed, {} unanswered; scans {} vertical, {} horizontal, {} distributed; {} sources tracked; {} events lost",
        kernel(Counter::IngressPackets),
        kernel(Counter::EgressPackets),
        kernel(Counter::Failed),
        kernel(Counter::Unanswered),
        by_kind("vertical"),
        by_kind("horizontal"),
        by_kind("distributed"),
        s.tables
            .iter()
            .find(|(t, _)| *t == "sources")
            .map_or(0, |(_, n)| *n),
        kernel(Counter::RingbufDrops),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_counts_start_records_by_kind_and_names_losses() {
        let mut s = Snapshot {
            kernel: vec![(Counter::IngressPackets, 1200), (Counter::RingbufDrops, 3)],
            tables: vec![("sources", 7)],
            ..Snapshot::default()
        };
        s.alerts.insert(("vertical", "start"), 2);
        s.alerts.insert(("vertical", "end"), 2);
        s.alerts.insert(("horizontal", "start"), 1);
        let line = status_line(&s);
        assert!(
            line.starts_with("status: 1200 packets in, 0 out;"),
            "{line}"
        );
        assert!(
            line.contains("scans 2 vertical, 1 horizontal, 0 distributed"),
            "{line}"
        );
        assert!(line.contains("7 sources tracked; 3 events lost"), "{line}");
    }
}
