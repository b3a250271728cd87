//! The expiry sweep: unanswered attempts after the timeout, and the table's occupancy.

use aya::maps::Array;
use probe_common::{PENDING_MAP, Pending};

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
    let mut h = Harness::new();
    // Epoch 1: a quiet table costs nothing but its flags.
    h.expire();
    assert_eq!(kernel::pending_walked(&h.ebpf).unwrap(), 0);
    // One attempt: its region, while it is pending and for two sweeps after.
    h.inbound_frame(&syn(40_001, 25, 42));
    h.expire();
    assert_eq!(kernel::pending_walked(&h.ebpf).unwrap(), region);
    assert_eq!(kernel::pending_occupancy(&h.ebpf).unwrap().0, 1);
    h.outbound_frame(&syn(40_001, 25, 42).refusal());
    for sweep in 1..=2 {
        h.expire();
        assert_eq!(
            kernel::pending_walked(&h.ebpf).unwrap(),
            region,
            "sweep {sweep} after the answer"
        );
    }
    h.expire();
    assert_eq!(
        kernel::pending_walked(&h.ebpf).unwrap(),
        0,
        "an emptied region is left"
    );
    // A few hundred attempts: their regions, not the table. The first 256 slots (16
    // regions) take about 180 of them, the rest go to their second slots, about 120
    // regions.
    for port in 0..300 {
        h.inbound_frame(&syn(41_000 + port, 1000 + port, 7));
    }
    h.expire();
    let walked = kernel::pending_walked(&h.ebpf).unwrap();
    assert!(
        walked >= region * 80 && walked <= region * 300,
        "300 attempts: {walked} slots read"
    );
    // Unanswered, they expire; two sweeps later the walks end, and no sweep reads the
    // whole table after (there is no periodic full sweep).
    let walks: Vec<u64> = (0..40)
        .map(|_| {
            h.expire();
            kernel::pending_walked(&h.ebpf).unwrap()
        })
        .collect();
    assert!(walks.iter().all(|&w| w <= walked), "walks {walks:?}");
    assert!(walks[10..].iter().all(|&w| w == 0), "walks {walks:?}");
    assert_eq!(kernel::pending_occupancy(&h.ebpf).unwrap().0, 0);
}

#[test]
fn an_attempt_that_a_sweep_missed_is_walked_by_the_next() {
    if !require_root("an_attempt_that_a_sweep_missed_is_walked_by_the_next") {
        return;
    }
    let region = 1u64 << probe_common::PENDING_REGION_SHIFT;
    let mut h = Harness::new();
    for _ in 0..3 {
        h.expire();
    }
    // An attempt that read the epoch (E - 1) just before sweep E began and wrote its slot
    // and flag only after that sweep had walked past its region: after sweep E, its slot
    // and flag carry the epoch before. Sweep E + 1 must walk the region.
    h.inbound_frame(&syn(40_001, 25, 42));
    let epoch = kernel::pending_stat(&h.ebpf, probe_common::PENDING_STATS_EPOCH).unwrap();
    let mut table: Array<_, Pending> =
        Array::try_from(h.ebpf.map_mut(PENDING_MAP).unwrap()).unwrap();
    let (index, mut slot) = (0..probe_common::PENDING_ENTRIES)
        .filter_map(|i| Some((i, table.get(&i, 0).ok()?)))
        .find(|(_, slot)| slot.tag != 0)
        .expect("the attempt's slot");
    slot.seen_epoch = epoch - 1;
    table.set(index, &slot, 0).unwrap();
    let mut flags: Array<_, [u32; probe_common::REGION_FLAGS as usize]> =
        Array::try_from(h.ebpf.map_mut(probe_common::PENDING_REGIONS_MAP).unwrap()).unwrap();
    let region_index = index >> probe_common::PENDING_REGION_SHIFT;
    let entry = region_index / probe_common::REGION_FLAGS;
    let mut line = flags.get(&entry, 0).unwrap();
    let flag = &mut line[(region_index % probe_common::REGION_FLAGS) as usize];
    assert_eq!(
        u64::from(*flag),
        epoch + 1,
        "the attempt stamps its epoch plus one"
    );
    *flag = u32::try_from(epoch).unwrap();
    flags.set(entry, &line, 0).unwrap();
    h.expire();
    assert_eq!(kernel::pending_walked(&h.ebpf).unwrap(), region);
    assert_eq!(kernel::pending_occupancy(&h.ebpf).unwrap().0, 1);
    // And it expires in time, unanswered.
    for _ in 0..probe_common::EXPIRE_AFTER {
        h.expire();
    }
    assert_eq!(h.counter(probe_common::Counter::Unanswered), 1);
    assert_eq!(kernel::pending_occupancy(&h.ebpf).unwrap().0, 0);
}

const FIRST_REGIONS: u64 =
    (probe_common::PENDING_FIRST_SLOTS >> probe_common::PENDING_REGION_SHIFT) as u64;

/// How many of the attempts from source ports `from..from + count` the pending table's
/// first region holds.
fn in_first_region(h: &Harness, from: u16, count: u16) -> usize {
    let table: Array<_, Pending> = Array::try_from(h.ebpf.map(PENDING_MAP).unwrap()).unwrap();
    (0..probe_common::PENDING_FIRST_SLOTS)
        .filter_map(|i| table.get(&i, 0).ok())
        .filter(|slot| slot.tag != 0 && (from..from + count).contains(&slot.remote_port))
        .count()
}

/// `count` SYNs from source ports `from..`, nobody answering them yet.
fn send(h: &mut Harness, from: u16, count: u16) -> Vec<Frame> {
    let probes: Vec<_> = (0..count)
        .map(|i| syn(from + i, 1 + i, u32::from(i)))
        .collect();
    for probe in &probes {
        h.inbound_frame(probe);
    }
    probes
}

#[test]
fn answered_attempts_keep_to_the_first_region() {
    if !require_root("answered_attempts_keep_to_the_first_region") {
        return;
    }
    // A scan of closed ports: each attempt is refused at once and frees its slot, so the
    // next goes to the table's first 256 slots too (16 regions of 16), which stay in the
    // CPU's caches; spread over the whole table, 2 000 attempts would flag about 1 600 of
    // its 4 096 regions.
    let region = 1u64 << probe_common::PENDING_REGION_SHIFT;
    let mut h = Harness::new();
    for i in 0..2_000u32 {
        let probe = syn(20_000 + i as u16, 1 + (i % 1_000) as u16, i);
        h.inbound_frame(&probe);
        h.outbound_frame(&probe.refusal());
    }
    h.expire();
    let walked = kernel::pending_walked(&h.ebpf).unwrap();
    assert!(
        walked > 0 && walked <= region * FIRST_REGIONS,
        "2 000 answered attempts flagged {} regions",
        walked / region
    );
    assert_eq!(
        h.counter(Counter::Unseen),
        0,
        "every refusal found its attempt"
    );
}

#[test]
fn accepted_attempts_wait_for_their_confirmation_outside_the_first_region() {
    if !require_root("accepted_attempts_wait_for_their_confirmation_outside_the_first_region") {
        return;
    }
    // Connections to an open port: each accepted attempt waits seconds for the sweep's
    // confirmation, in its second slot, so a busy server's first region stays free for
    // the attempts still waiting for an answer.
    let mut h = Harness::new();
    let probes = send(&mut h, 30_000, 200);
    assert!(in_first_region(&h, 30_000, 200) >= 100);
    for probe in &probes {
        h.outbound_frame(&probe.acceptance());
    }
    let left = in_first_region(&h, 30_000, 200);
    assert!(
        left <= 5,
        "{left} of 200 accepted attempts wait in the first region"
    );
    h.expire();
    assert!(kernel::pending_occupancy(&h.ebpf).unwrap().0 >= 190);
    // Still found where they wait: the client's resets before a byte take them back.
    let before = h.counter(Counter::HalfOpen);
    for i in 0..200 {
        // `send`'s SYN i: its sequence number i, our SYN-ACK acknowledging i + 1.
        h.inbound_frame(&Frame::tcp(
            scanner(),
            30_000 + i,
            victim(),
            1 + i,
            RST,
            u32::from(i) + 1,
        ));
    }
    assert!(h.counter(Counter::HalfOpen) - before >= 190);
}

#[test]
fn attempts_whose_first_slot_is_taken_are_found_in_their_second() {
    if !require_root("attempts_whose_first_slot_is_taken_are_found_in_their_second") {
        return;
    }
    // 2 000 attempts nobody has answered yet fill the first 256 slots: nearly all go to
    // their second slot, anywhere in the table. Answered then, each is found where it
    // went; only those a later attempt overwrote (a collision, about 1 % of them) are
    // answers to no attempt. Were the second slot not looked at, nearly all would be.
    let mut h = Harness::new();
    let probes = send(&mut h, 10_000, 2_000);
    for probe in &probes {
        h.outbound_frame(&probe.refusal());
    }
    let unseen = h.counter(Counter::Unseen);
    assert_eq!(h.counter(Counter::RstsOut), 2_000);
    assert!(unseen <= 150, "{unseen} of 2 000 answers found no attempt");
}

#[test]
fn many_waiting_attempts_close_the_first_region_until_they_are_gone() {
    if !require_root("many_waiting_attempts_close_the_first_region_until_they_are_gone") {
        return;
    }
    let mut h = Harness::new();
    // Open: 400 attempts fill about 200 of the first region's 256 slots (the others
    // find theirs taken).
    let first = send(&mut h, 10_000, 400);
    let open = in_first_region(&h, 10_000, 400);
    assert!(open >= 150, "open: {open} of 400 in the first region");
    // More than half its slots waiting for an answer at the sweep's end (a flood, a scan
    // of filtered ports): the first region closes, and the next 400 go to their second
    // slot, anywhere in the table (one in 256 lands in the first region).
    h.expire();
    let second = send(&mut h, 20_000, 400);
    let closed = in_first_region(&h, 20_000, 400);
    assert!(closed <= 20, "closed: {closed} of 400 in the first region");
    // Once they are answered, the next sweep's end opens it again.
    for probe in first.iter().chain(&second) {
        h.outbound_frame(&probe.refusal());
    }
    h.expire();
    assert_eq!(kernel::pending_occupancy(&h.ebpf).unwrap().0, 0);
    send(&mut h, 40_000, 400);
    let reopened = in_first_region(&h, 40_000, 400);
    assert!(
        reopened >= 150,
        "reopened: {reopened} of 400 in the first region"
    );
}
