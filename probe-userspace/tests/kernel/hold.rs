//! A source's first failure held until its second (`HELD`), with the defaults: a source of
//! one probe costs userspace nothing; its second sends both, the first first, with its own
//! port and time; many one-probe sources failing on one host (a crowd) are sent up to the
//! budget, so the spread-scan detector sees them.

use crate::harness::*;

/// A SYN from `src` to our `port`, refused by our RST; the events waiting after it.
fn refused(h: &mut Harness, src: IpAddr, port: u16) -> Vec<Probe> {
    let probe = Frame::tcp(src, 40_000, victim(), port, SYN, u32::from(port));
    h.inbound_frame(&probe);
    h.outbound_frame(&probe.refusal());
    h.events()
}

#[test]
fn a_first_failure_waits_for_the_second_and_goes_out_first() {
    if !require_root("a_first_failure_waits_for_the_second_and_goes_out_first") {
        return;
    }
    let mut h = Harness::with(&KernelConfig::default());
    assert_eq!(refused(&mut h, scanner(), 22), vec![], "held");
    assert_eq!(h.counter(Counter::Held), 1);
    assert_eq!(h.counter(Counter::EventsSent), 0);
    // Its repeat (a retransmission) is a repeat: no step, nothing sent.
    assert_eq!(refused(&mut h, scanner(), 22), vec![]);
    assert_eq!(h.counter(Counter::Repeats), 1);
    assert_eq!(h.counter(Counter::HeldReleased), 0);
    let both = refused(&mut h, scanner(), 23);
    let ports: Vec<u16> = both.iter().map(|e| e.dst_port).collect();
    assert_eq!(ports, [22, 23], "the held one first, then the second");
    assert!(
        both[0].timestamp <= both[1].timestamp,
        "each with its own time"
    );
    assert_eq!(both[0].src_port, 40_000);
    assert_eq!(h.counter(Counter::HeldReleased), 1);
    // From then on, every first failure at once.
    let third = refused(&mut h, scanner(), 24);
    assert_eq!(third.iter().map(|e| e.dst_port).collect::<Vec<_>>(), [24]);
    // Sent, it is in the outcome table: a repeat stays a repeat. A success is never held.
    assert_eq!(refused(&mut h, scanner(), 22), vec![]);
    assert_eq!(h.counter(Counter::Repeats), 2);
    let client = v4([198, 18, 0, 77]);
    let probe = Frame::tcp(client, 41_000, victim(), 80, SYN, 5);
    h.inbound_frame(&probe);
    h.outbound_frame(&probe.acceptance());
    assert_eq!(h.events().len(), 1, "a first success is sent");
    assert_eq!(h.counter(Counter::Held), 1);
}

#[test]
fn a_crowd_of_one_probe_sources_is_sent_up_to_its_budget() {
    if !require_root("a_crowd_of_one_probe_sources_is_sent_up_to_its_budget") {
        return;
    }
    let mut h = Harness::with(&KernelConfig::default());
    let mut sent = 0;
    let mut first_sent = None;
    for i in 0..400u16 {
        let src = v4([198, 19, (i >> 8) as u8, i as u8]);
        let events = refused(&mut h, src, 1000 + i);
        if !events.is_empty() && first_sent.is_none() {
            first_sent = Some(i);
        }
        sent += events.len();
    }
    // The crowd is one from its fifth distinct port (by a 64-bit hash of the port: a
    // collision may take one more); then each member is sent, 256 in the window.
    let first = first_sent.expect("the crowd's members are sent");
    assert!(
        (4..=8).contains(&first),
        "sent from the {}th source",
        first + 1
    );
    assert_eq!(sent, 256);
    assert_eq!(h.counter(Counter::CrowdSent), 256);
    assert_eq!(h.counter(Counter::Held), 400 - 256);
    // Another host's first failure is no member of this crowd: held.
    let probe = Frame::tcp(v4([198, 19, 9, 9]), 40_000, v4([198, 18, 0, 3]), 7, SYN, 1);
    h.inbound_frame(&probe);
    h.outbound_frame(&probe.refusal());
    assert_eq!(h.events(), vec![]);
}

/// The records waiting in the fleet's ring.
fn fleet_records(h: &mut Harness) -> Vec<Probe> {
    let map = h.ebpf.map_mut(probe_common::FLEET_MAP).expect("FLEET map");
    let mut ring = RingBuf::try_from(map).unwrap();
    let mut out = Vec::new();
    while let Some(record) = ring.next() {
        out.push(Probe::decode(&record).expect("a whole ProbeEvent"));
    }
    out
}

#[test]
fn with_fleet_a_held_failure_is_copied_to_the_fleet_ring_once() {
    if !require_root("with_fleet_a_held_failure_is_copied_to_the_fleet_ring_once") {
        return;
    }
    // Without --fleet the ring stays empty.
    let mut h = Harness::with(&KernelConfig::default());
    assert_eq!(refused(&mut h, scanner(), 22), vec![]);
    assert_eq!(fleet_records(&mut h), vec![]);
    assert_eq!(h.counter(Counter::FleetExported), 0);

    let mut h = Harness::with(&KernelConfig {
        fleet: true,
        ..KernelConfig::default()
    });
    assert_eq!(refused(&mut h, scanner(), 22), vec![], "held, locally");
    let copied = fleet_records(&mut h);
    assert_eq!(copied.len(), 1, "{copied:?}");
    assert_eq!(
        (
            copied[0].src,
            copied[0].dst,
            copied[0].dst_port,
            copied[0].outcome
        ),
        (scanner(), victim(), 22, Outcome::Refused)
    );
    assert_eq!(h.counter(Counter::FleetExported), 1);
    // Its repeat is no new evidence; its second failure releases it locally (both sent),
    // and neither is copied again: the publisher has the first, and takes the second from
    // the local events.
    assert_eq!(refused(&mut h, scanner(), 22), vec![]);
    let both = refused(&mut h, scanner(), 23);
    assert_eq!(both.len(), 2);
    assert_eq!(
        both[0].timestamp, copied[0].timestamp,
        "the same record, by its time"
    );
    assert_eq!(fleet_records(&mut h), vec![]);
    assert_eq!(h.counter(Counter::FleetExported), 1);
    // Many one-probe sources: one copy each, until the ring is full (then counted).
    for i in 0..5000u16 {
        let src = v4([198, 19, (i >> 8) as u8, i as u8]);
        let dst_port = 1000 + (i % 3);
        let probe = Frame::tcp(
            src,
            40_000,
            v4([198, 18, 0, 3 + (i % 50) as u8]),
            dst_port,
            SYN,
            1,
        );
        h.inbound_frame(&probe);
        h.outbound_frame(&probe.refusal());
    }
    let exported = h.counter(Counter::FleetExported);
    let drops = h.counter(Counter::FleetDrops);
    assert!(drops > 0, "a full ring counts its drops");
    assert_eq!(
        exported + drops,
        h.counter(Counter::Held),
        "every hold copied or counted"
    );
    assert_eq!(fleet_records(&mut h).len() as u64, exported - 1);
}
