//! After the verdict: a decided source's further first outcomes go into `SUMMARIES` (one
//! entry per host, kind, traceroute-range TTL and 512 ports), not the ring; each is read back exactly once,
//! repeats stay repeats, undecided sources still make events, and the generations let
//! userspace read only what no program is still writing.

use crate::harness::*;

/// A SYN from `src` to our `port` with this TTL, refused by our RST.
fn refused(h: &mut Harness, src: IpAddr, port: u16, ttl: u8) {
    let mut probe = Frame::tcp(src, 40_000, victim(), port, SYN, u32::from(port));
    probe.ttl = ttl;
    h.inbound_frame(&probe);
    h.outbound_frame(&probe.refusal());
}

#[test]
fn a_decided_scanners_outcomes_are_summarised_each_once_and_nothing_is_lost() {
    if !require_root("a_decided_scanners_outcomes_are_summarised_each_once_and_nothing_is_lost") {
        return;
    }
    let mut h = Harness::new();
    for port in 1..=4 {
        refused(&mut h, scanner(), port, 64);
    }
    let before: Vec<(u16, bool)> = h
        .ring_events()
        .iter()
        .map(|e| (e.dst_port, e.kernel_verdict))
        .collect();
    assert_eq!(before, [(1, false), (2, false), (3, false), (4, true)]);
    // Decided: 1 000 more ports (some twice), and undecided sources in between.
    let other = |port: u16| v4([198, 18, 0, 100 + (port / 100) as u8]);
    for port in 5..=1004 {
        refused(&mut h, scanner(), port, 64);
        if port % 100 == 0 {
            refused(&mut h, scanner(), port, 64);
            refused(&mut h, other(port), port, 64);
        }
    }
    let ring = h.ring_events();
    assert!(
        ring.iter().all(|e| e.src != scanner()),
        "only the undecided sources' outcomes go through the ring: {:?}",
        ring.iter().find(|e| e.src == scanner())
    );
    assert_eq!(ring.len(), 10);
    assert_eq!(h.counter(Counter::Summarized), 1000);
    assert_eq!(h.counter(Counter::Repeats), 10, "a repeat stays a repeat");
    assert_eq!(h.counter(Counter::EventsSent), 4 + 10);
    let read = h.summaries.collect(&mut h.ebpf, true).unwrap();
    // 1 000 ports, 512 to an entry: 2 entries (ports 5-511 share the first block), each
    // port in the word and bit of its own.
    assert_eq!(read.len(), 2);
    let mut ports: Vec<u16> = read.iter().flat_map(|s| s.ports.clone()).collect();
    ports.sort_unstable();
    assert_eq!(ports, (5..=1004).collect::<Vec<u16>>(), "each port once");
    let first = &read[0].probe;
    assert_eq!(
        (first.src, first.dst, first.outcome, first.probe, first.ttl),
        (scanner(), victim(), Outcome::Refused, ProbeType::TcpSyn, 64)
    );
    // Read and deleted: nothing twice.
    assert!(h.summaries.collect(&mut h.ebpf, true).unwrap().is_empty());
}

#[test]
fn each_low_ttl_keeps_its_own_entry_and_generations_wait_until_no_program_writes_them() {
    if !require_root(
        "each_low_ttl_keeps_its_own_entry_and_generations_wait_until_no_program_writes_them",
    ) {
        return;
    }
    let mut h = Harness::new();
    for port in 1..=4 {
        refused(&mut h, scanner(), port, 64);
    }
    assert_eq!(h.ring_events().len(), 4);
    // A TTL that steps with the port (a traceroute's shape): each outcome keeps its own.
    for (port, ttl) in [(10, 3), (11, 4), (12, 5)] {
        refused(&mut h, scanner(), port, ttl);
    }
    // TTLs above the traceroute range (nmap draws one per SYN): one entry, their range.
    for (port, ttl) in [(20, 45), (21, 37), (22, 59), (23, 50)] {
        refused(&mut h, scanner(), port, ttl);
    }
    // Written in generation 0: the first read (generation now 1) leaves it, the program
    // may still be adding to it; the second (generation 2) takes it.
    assert!(h.summaries.collect(&mut h.ebpf, false).unwrap().is_empty());
    refused(&mut h, scanner(), 13, 6);
    let read = h.summaries.collect(&mut h.ebpf, false).unwrap();
    let seen: Vec<(Vec<u16>, u8, u8)> = read
        .iter()
        .map(|s| (s.ports.clone(), s.probe.ttl, s.ttl_max))
        .collect();
    assert_eq!(
        seen,
        [
            (vec![10], 3, 3),
            (vec![11], 4, 4),
            (vec![12], 5, 5),
            (vec![20, 21, 22, 23], 37, 59)
        ]
    );
    // Port 13 went into generation 1: the next read takes it.
    let read = h.summaries.collect(&mut h.ebpf, false).unwrap();
    assert_eq!(read.len(), 1);
    assert_eq!((read[0].ports.clone(), read[0].probe.ttl), (vec![13], 6));
}

#[test]
fn with_summaries_off_every_outcome_is_an_event() {
    if !require_root("with_summaries_off_every_outcome_is_an_event") {
        return;
    }
    let mut h = Harness::with(&KernelConfig {
        summarize: false,
        ..every_event()
    });
    for port in 1..=100 {
        refused(&mut h, scanner(), port, 64);
    }
    assert_eq!(h.ring_events().len(), 100);
    assert_eq!(h.counter(Counter::Summarized), 0);
    assert!(h.summaries.collect(&mut h.ebpf, true).unwrap().is_empty());
}
