//! TCP: SYNs refused, accepted and repeated; our own connections; backscatter; stealth, ACK and Maimon probes.

use crate::harness::*;

#[test]
fn syn_refused_by_our_rst_is_one_event() {
    if !require_root("syn_refused_by_our_rst_is_one_event") {
        return;
    }
    let mut h = Harness::new();
    let probe = syn(40_000, 23, 1_000);
    h.inbound_frame(&probe);
    assert!(h.events().is_empty(), "a SYN alone is no outcome");
    h.outbound_frame(&probe.refusal());

    let e = h.one_event();
    assert_eq!((e.src, e.dst), (scanner(), victim()));
    assert_eq!((e.src_port, e.dst_port, e.proto), (40_000, 23, IPPROTO_TCP));
    assert_eq!((e.probe, e.outcome), (ProbeType::TcpSyn, Outcome::Refused));
    assert_eq!((e.tcp_flags, e.ttl, e.icmp), (SYN, 64, None));
    assert!(e.timestamp.as_nanos() > 0);
    assert_eq!(
        h.failures(scanner(), victim(), 23, ProbeType::TcpSyn, Outcome::Refused),
        Some(1)
    );
    assert_eq!(h.counter(Counter::Syns), 1);
    assert_eq!(h.counter(Counter::RstsOut), 1);
    assert_eq!(h.counter(Counter::Failed), 1);
    assert_eq!(h.counter(Counter::EventsSent), 1);
    assert_eq!(h.counter(Counter::RingbufDrops), 0);
    assert_eq!(h.counter(Counter::Malformed), 0);
}

#[test]
fn repeated_failures_bump_the_counter_without_events() {
    if !require_root("repeated_failures_bump_the_counter_without_events") {
        return;
    }
    let mut h = Harness::new();
    for (i, src_port) in (50_000..50_005).enumerate() {
        let probe = syn(src_port, 445, 7_000 + i as u32);
        h.inbound_frame(&probe);
        h.outbound_frame(&probe.refusal());
    }
    assert_eq!(
        h.events().len(),
        1,
        "only the first failure of a (source, target, port)"
    );
    assert_eq!(
        h.failures(
            scanner(),
            victim(),
            445,
            ProbeType::TcpSyn,
            Outcome::Refused
        ),
        Some(5)
    );
    assert_eq!(h.counter(Counter::Repeats), 4);
    assert_eq!(h.counter(Counter::EventsSent), 1);

    // Another port is a new triple: one more event.
    let probe = syn(50_100, 139, 1);
    h.inbound_frame(&probe);
    h.outbound_frame(&probe.refusal());
    assert_eq!(h.one_event().dst_port, 139);
}

#[test]
fn successes_are_reported_once_per_service() {
    if !require_root("successes_are_reported_once_per_service") {
        return;
    }
    let mut h = Harness::new();
    let probe = syn(41_000, 80, 99);
    h.inbound_frame(&probe);
    h.outbound_frame(&probe.acceptance());
    let e = h.one_event();
    assert_eq!(
        (e.probe, e.outcome, e.dst_port),
        (ProbeType::TcpSyn, Outcome::Accepted, 80)
    );
    assert_eq!(h.counter(Counter::Answered), 1);
    // A second open port of the same host: a first contact of its own, sent.
    let other = syn(41_001, 443, 7);
    h.inbound_frame(&other);
    h.outbound_frame(&other.acceptance());
    let e = h.one_event();
    assert_eq!((e.outcome, e.dst_port), (Outcome::Accepted, 443));
    // The first port again, from another port of the client: counted, not sent again.
    let again = syn(41_002, 80, 5);
    h.inbound_frame(&again);
    h.outbound_frame(&again.acceptance());
    assert!(h.events().is_empty());
    assert_eq!(h.counter(Counter::Answered), 3);
    // A reset of the accepted flow later settles nothing: it proves a new attempt of the
    // flow (its socket gone), reported once as the unseen attempt it answers, never as a
    // refusal of the accepted one.
    h.outbound_frame(&probe.refusal());
    let events = h.events();
    assert!(
        events.len() == 1 && events[0].probe == ProbeType::TcpUnseen,
        "an accepted attempt cannot be refused afterwards: {events:?}"
    );
    assert_eq!(h.counter(Counter::Failed), 1, "the unseen attempt only");
}

#[test]
fn rst_that_answers_no_recorded_attempt_settles_nothing_and_is_reported_once_as_unseen() {
    if !require_root(
        "rst_that_answers_no_recorded_attempt_settles_nothing_and_is_reported_once_as_unseen",
    ) {
        return;
    }
    let mut h = Harness::new();
    // No SYN seen at all: our RST|ACK proves one (a fragment, a slot taken): one event.
    h.outbound_frame(&syn(42_000, 25, 5).refusal());
    let e = h.one_event();
    assert_eq!(
        (e.probe, e.outcome, e.dst_port),
        (ProbeType::TcpUnseen, Outcome::Refused, 25)
    );
    // A SYN seen, but the RST acknowledges another sequence number: the SYN stays pending.
    let probe = syn(42_001, 25, 5);
    h.inbound_frame(&probe);
    h.outbound_frame(&probe.refusal().with_ack(12_345));
    // The RST of another flow (other source port) to the same port: a repeat of the first.
    h.outbound_frame(&syn(42_002, 25, 5).refusal());
    assert!(
        h.events().is_empty(),
        "repeats of the unseen outcome are counted"
    );
    assert_eq!(h.counter(Counter::RstsOut), 3);
    assert_eq!(h.counter(Counter::Unseen), 3);
    // A bare RST without ACK answers an ACK-bearing segment: an ACK probe, not unseen.
    // The right answer still matches the recorded SYN afterwards.
    h.outbound_frame(&probe.refusal());
    let e = h.one_event();
    assert_eq!((e.probe, e.dst_port), (ProbeType::TcpSyn, 25));
}

#[test]
fn our_own_failed_connection_is_no_probe_nor_backscatter() {
    if !require_root("our_own_failed_connection_is_no_probe_nor_backscatter") {
        return;
    }
    let mut h = Harness::new();
    // We connect out (SYN at egress) and the remote refuses (RST|ACK at ingress).
    let ours = Frame::tcp(victim(), 43_000, scanner(), 8080, SYN, 777);
    h.outbound_frame(&ours);
    h.inbound_frame(&ours.refusal());
    // We connect out again and the remote accepts (SYN-ACK at ingress).
    let ours = Frame::tcp(victim(), 43_001, scanner(), 443, SYN, 888);
    h.outbound_frame(&ours);
    h.inbound_frame(&ours.acceptance());
    assert!(h.events().is_empty());
    assert_eq!(
        h.counter(Counter::Syns),
        0,
        "an outbound SYN is not an inbound attempt"
    );
    assert_eq!(h.counter(Counter::Backscatter), 0);
    assert_eq!(h.counter(Counter::Failed), 0);
}

#[test]
fn unsolicited_syn_acks_and_resets_are_backscatter() {
    if !require_root("unsolicited_syn_acks_and_resets_are_backscatter") {
        return;
    }
    let mut h = Harness::new();
    // Someone probed the scanner with our address as source: its answers reach us.
    let spoofed = Frame::tcp(victim(), 44_000, scanner(), 22, SYN, 31);
    h.inbound_frame(&spoofed.acceptance());
    h.inbound_frame(&Frame::tcp(victim(), 44_001, scanner(), 23, SYN, 32).refusal());
    // An RST|ACK with a non-zero sequence (an abort of a connection) is not counted.
    h.inbound_frame(&Frame::tcp(scanner(), 23, victim(), 44_002, RST | ACK, 999).with_ack(5));
    assert_eq!(h.counter(Counter::Backscatter), 2);
    assert!(h.events().is_empty());
    // Answers to an attempt of ours are consumed once: a duplicate SYN-ACK is backscatter.
    let ours = Frame::tcp(victim(), 44_003, scanner(), 80, SYN, 1);
    h.outbound_frame(&ours);
    h.inbound_frame(&ours.acceptance());
    assert_eq!(h.counter(Counter::Backscatter), 2);
    h.inbound_frame(&ours.acceptance());
    assert_eq!(h.counter(Counter::Backscatter), 3);
}

#[test]
fn syn_with_payload_is_matched_by_the_acknowledged_length() {
    if !require_root("syn_with_payload_is_matched_by_the_acknowledged_length") {
        return;
    }
    let mut h = Harness::new();
    let mut probe = syn(44_000, 443, 4_000_000_000);
    probe.payload = b"GET / HTTP/1.0\r\n\r\n".to_vec();
    h.inbound_frame(&probe);
    h.outbound_frame(&probe.refusal()); // ack = seq + 1 + 18, wrapping
    assert_eq!(h.one_event().dst_port, 443);
}

#[test]
fn stealth_probes_answered_by_rst_are_their_own_kind() {
    if !require_root("stealth_probes_answered_by_rst_are_their_own_kind") {
        return;
    }
    let mut h = Harness::new();
    // FIN, NULL, Xmas (FIN|PSH|URG), and an odd one (URG only): no SYN, ACK or RST.
    for (i, flags) in [FIN, 0, FIN | PSH | URG, URG].into_iter().enumerate() {
        let port = 2000 + i as u16;
        let probe = Frame::tcp(scanner(), 46_000, victim(), port, flags, 77);
        h.inbound_frame(&probe);
        h.outbound_frame(&probe.refusal());
        let e = h.one_event();
        assert_eq!(
            (e.probe, e.outcome, e.dst_port),
            (ProbeType::TcpStealth, Outcome::Refused, port)
        );
        assert_eq!(e.tcp_flags, flags);
    }
    assert_eq!(h.counter(Counter::StealthIn), 4);
    assert_eq!(h.counter(Counter::Syns), 0);
}

#[test]
fn ack_and_maimon_probes_are_known_from_our_bare_rst() {
    if !require_root("ack_and_maimon_probes_are_known_from_our_bare_rst") {
        return;
    }
    let mut h = Harness::new();
    for (port, flags) in [(3000, ACK), (3001, FIN | ACK)] {
        let probe = Frame::tcp(scanner(), 47_000, victim(), port, flags, 5).with_ack(0xdead_beef);
        // Inbound ACK-bearing segments are not recorded (established traffic looks alike)...
        h.inbound_frame(&probe);
        assert!(h.events().is_empty());
        // ...our bare RST (seq = their ack, no ACK flag) says no connection matched.
        h.outbound_frame(&probe.refusal());
        let e = h.one_event();
        assert_eq!(
            (e.probe, e.outcome, e.dst_port),
            (ProbeType::TcpAck, Outcome::Refused, port)
        );
        assert_eq!((e.src, e.dst, e.src_port), (scanner(), victim(), 47_000));
    }
    assert_eq!(h.counter(Counter::AckProbes), 2);
    assert_eq!(h.counter(Counter::StealthIn), 0);
}
