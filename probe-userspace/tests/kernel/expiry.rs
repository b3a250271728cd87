//! The expiry sweep: unanswered attempts after the timeout, and the table's occupancy.

use crate::harness::*;

#[test]
fn the_sweep_reports_how_full_the_pending_table_is() {
    if !require_root("the_sweep_reports_how_full_the_pending_table_is") {
        return;
    }
    let mut h = Harness::new();
    // Three copies of one SYN (retransmissions) and two other attempts: three slots.
    for _ in 0..3 {
        h.inbound_frame(&syn(40_001, 25, 42));
    }
    h.inbound_frame(&syn(40_002, 25, 42));
    h.inbound_frame(&Frame::udp(scanner(), 40_003, victim(), 53));
    h.expire();
    let (live, slots) = kernel::pending_occupancy(&h.ebpf).unwrap();
    assert_eq!((live, slots), (3, u64::from(probe_common::PENDING_ENTRIES)));
    // Answered attempts leave the table.
    h.outbound_frame(&syn(40_001, 25, 42).refusal());
    h.expire();
    assert_eq!(kernel::pending_occupancy(&h.ebpf).unwrap().0, 2);
}

#[test]
fn the_sweep_reads_only_the_regions_attempts_were_written_into() {
    if !require_root("the_sweep_reads_only_the_regions_attempts_were_written_into") {
        return;
    }
    let region = 1u64 << probe_common::PENDING_REGION_SHIFT;
    let slots = u64::from(probe_common::PENDING_ENTRIES);
    let mut h = Harness::new();
    // Epoch 1: a quiet table costs nothing but its flags.
    h.expire();
    assert_eq!(kernel::pending_walked(&h.ebpf).unwrap(), 0);
    // One attempt: its region, and only while it is pending.
    h.inbound_frame(&syn(40_001, 25, 42));
    h.expire();
    assert_eq!(kernel::pending_walked(&h.ebpf).unwrap(), region);
    assert_eq!(kernel::pending_occupancy(&h.ebpf).unwrap().0, 1);
    h.outbound_frame(&syn(40_001, 25, 42).refusal());
    h.expire();
    assert_eq!(
        kernel::pending_walked(&h.ebpf).unwrap(),
        region,
        "flag seen once more"
    );
    h.expire();
    assert_eq!(
        kernel::pending_walked(&h.ebpf).unwrap(),
        0,
        "an emptied region is left"
    );
    // A few hundred attempts: their regions, not the table.
    for port in 0..300 {
        h.inbound_frame(&syn(41_000 + port, 1000 + port, 7));
    }
    h.expire();
    let walked = kernel::pending_walked(&h.ebpf).unwrap();
    assert!(
        walked >= region * 200 && walked <= region * 300,
        "300 attempts: {walked} slots read"
    );
    // Every FULL_SWEEP_EVERY-th sweep reads every slot, flagged or not.
    let epoch = kernel::pending_stat(&h.ebpf, probe_common::PENDING_STATS_EPOCH).unwrap();
    let full = epoch.next_multiple_of(probe_common::FULL_SWEEP_EVERY);
    for _ in epoch..full {
        h.expire();
    }
    assert_eq!(kernel::pending_walked(&h.ebpf).unwrap(), slots);
}

#[test]
fn unanswered_attempts_expire_after_the_timeout() {
    if !require_root("unanswered_attempts_expire_after_the_timeout") {
        return;
    }
    // A 100 ms timeout with 100 ms sweeps: an attempt expires at the second sweep after it.
    let config = KernelConfig {
        timeout: Duration::from_millis(100),
        ..every_event()
    };
    assert_eq!(
        (config.sweep_interval(), config.expire_after_sweeps()),
        (Duration::from_millis(100), 1)
    );
    let mut h = Harness::with(&config);
    let filtered = syn(49_000, 8080, 1);
    let fin = Frame::tcp(scanner(), 49_001, victim(), 8081, FIN, 1);
    let udp = Frame::udp(scanner(), 49_002, victim(), 5353);
    for probe in [&filtered, &fin, &udp] {
        h.inbound_frame(probe);
    }
    h.expire();
    assert!(h.events().is_empty(), "nothing expires before the timeout");
    h.expire();
    let mut events = h.events();
    events.sort_by_key(|e| e.dst_port);
    let got: Vec<_> = events
        .iter()
        .map(|e| (e.dst_port, e.probe, e.outcome))
        .collect();
    assert_eq!(
        got,
        [
            (5353, ProbeType::Udp, Outcome::Unanswered),
            (8080, ProbeType::TcpSyn, Outcome::Unanswered),
            (8081, ProbeType::TcpStealth, Outcome::Unanswered),
        ]
    );
    assert_eq!(h.counter(Counter::Unanswered), 3);
    // Expired slots are free: a late answer settles nothing (it is reported once, as the
    // unseen attempt it proves), and a second sweep finds nothing.
    h.outbound_frame(&filtered.refusal());
    h.expire();
    let events = h.events();
    assert!(
        events.len() == 1 && events[0].probe == ProbeType::TcpUnseen,
        "{events:?}"
    );
}
