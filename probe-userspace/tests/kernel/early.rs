//! The early verdict: a source one first failure from the verdict is judged on the probe
//! that decides, when XDP sees it, for the attempts XDP knows will fail (a stealth segment,
//! a SYN or datagram to a local port no socket listens on); with `--block` that probe is
//! dropped. The sockets looked up are this test's network namespace's: a port is made
//! closed or open by binding a listener here.

use std::net::{TcpListener, UdpSocket};

use crate::harness::*;

/// XDP's verdict on a frame it drops.
const XDP_DROP: u32 = 1;

/// The object loaded with `config`, the victim's addresses local.
fn local(config: &KernelConfig) -> Harness {
    let mut h = Harness::with(config);
    kernel::set_local(&mut h.ebpf, &[victim(), victim6()]).unwrap();
    h
}

/// A TCP port nothing listens on here (bound once by the system, then let go).
fn closed_port() -> u16 {
    TcpListener::bind("0.0.0.0:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Three first failures of `src` on `dst`, each SYN refused by our RST: the source is one
/// failure from the verdict. Ports `base`, `base + 1`, `base + 2`.
fn three_refused(h: &mut Harness, src: IpAddr, dst: IpAddr, base: u16) {
    for port in base..base + 3 {
        let syn = Frame::tcp(src, 40_000, dst, port, SYN, u32::from(port));
        h.inbound_frame(&syn);
        h.outbound_frame(&syn.refusal());
        let events = h.events();
        assert!(events.len() == 1 && !events[0].kernel_verdict, "{events:?}");
    }
}

#[test]
fn an_armed_sources_syn_to_a_closed_port_is_its_verdict_when_it_arrives() {
    if !require_root("an_armed_sources_syn_to_a_closed_port_is_its_verdict_when_it_arrives") {
        return;
    }
    let mut h = local(&every_event());
    let port = closed_port();
    three_refused(&mut h, scanner(), victim(), 20_001);
    assert_eq!(h.counter(Counter::EarlyFailures), 0);
    // The fourth SYN: the verdict before any answer.
    let syn = Frame::tcp(scanner(), 40_000, victim(), port, SYN, 7);
    h.inbound_frame(&syn);
    let decided = h.one_event();
    assert!(decided.kernel_verdict, "{decided:?}");
    assert_eq!(
        (decided.dst_port, decided.outcome, decided.probe),
        (port, Outcome::Refused, ProbeType::TcpSyn)
    );
    assert_eq!(h.counter(Counter::EarlyFailures), 1);
    assert_eq!(h.counter(Counter::Verdicts), 1);
    // Our RST, when it comes, only clears the attempt: nothing counted twice.
    let failed = h.counter(Counter::Failed);
    h.outbound_frame(&syn.refusal());
    assert_eq!(h.events(), []);
    assert_eq!(h.counter(Counter::Failed), failed);
    // IPv6 alike, by the source's /64.
    let mut h = local(&every_event());
    three_refused(&mut h, scanner6(), victim6(), 20_001);
    h.inbound_frame(&Frame::tcp(scanner6(), 40_000, victim6(), port, SYN, 7));
    assert!(h.one_event().kernel_verdict);
}

#[test]
fn a_listening_port_or_a_repeat_waits_for_its_answer_and_a_success_disarms() {
    if !require_root("a_listening_port_or_a_repeat_waits_for_its_answer_and_a_success_disarms") {
        return;
    }
    let listener = TcpListener::bind("0.0.0.0:0").unwrap();
    let open = listener.local_addr().unwrap().port();
    let mut h = local(&every_event());
    three_refused(&mut h, scanner(), victim(), 20_001);
    // A repeat of a port it failed on: known to fail, but no first failure, no verdict.
    h.inbound_frame(&Frame::tcp(scanner(), 40_001, victim(), 20_001, SYN, 1));
    assert_eq!(h.events(), []);
    assert_eq!(h.counter(Counter::EarlyFailures), 1);
    assert_eq!(h.counter(Counter::Verdicts), 0);
    // The listening port: nothing before the answer, which is a success.
    let syn = Frame::tcp(scanner(), 40_000, victim(), open, SYN, 9);
    h.inbound_frame(&syn);
    assert_eq!(h.events(), []);
    assert_eq!(h.counter(Counter::EarlyFailures), 1);
    h.outbound_frame(&syn.acceptance());
    let success = h.one_event();
    assert_eq!(success.outcome, Outcome::Accepted);
    // Until its connection stood, the success moves nothing: the source stays armed.
    assert_eq!(h.counter(Counter::Confirmed), 0);
    h.stand();
    assert_eq!(h.counter(Counter::Confirmed), 1);
    // Then the success took the walk back below the line: the next closed port waits for
    // its answer, and its RST is the walk's step, no verdict yet.
    let port = closed_port();
    let next = Frame::tcp(scanner(), 40_000, victim(), port, SYN, 11);
    h.inbound_frame(&next);
    assert_eq!(h.events(), []);
    h.outbound_frame(&next.refusal());
    assert!(!h.one_event().kernel_verdict);
    assert_eq!(h.counter(Counter::EarlyFailures), 1);
}

#[test]
fn stealth_probes_and_closed_udp_ports_fail_early_and_addresses_not_ours_wait() {
    if !require_root("stealth_probes_and_closed_udp_ports_fail_early_and_addresses_not_ours_wait") {
        return;
    }
    // A FIN to a listening port: dropped unanswered by the stack, a failure all the same.
    let listener = TcpListener::bind("0.0.0.0:0").unwrap();
    let open = listener.local_addr().unwrap().port();
    let mut h = local(&every_event());
    three_refused(&mut h, scanner(), victim(), 20_001);
    h.inbound_frame(&Frame::tcp(scanner(), 40_000, victim(), open, FIN, 3));
    let decided = h.one_event();
    assert!(decided.kernel_verdict);
    assert_eq!(
        (decided.probe, decided.outcome),
        (ProbeType::TcpStealth, Outcome::Unanswered)
    );
    // A datagram to a closed UDP port: refused, as ICMP port unreachable will say.
    let port = UdpSocket::bind("0.0.0.0:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut h = local(&every_event());
    three_refused(&mut h, scanner(), victim(), 20_001);
    h.inbound_frame(&Frame::udp(scanner(), 40_000, victim(), port));
    let decided = h.one_event();
    assert!(decided.kernel_verdict);
    assert_eq!(
        (decided.probe, decided.outcome, decided.icmp),
        (ProbeType::Udp, Outcome::Refused, Some((3, 3)))
    );
    // A host behind us (a gateway's LAN): not local, its own answer decides.
    let lan = v4([198, 18, 0, 77]);
    let mut h = local(&every_event());
    three_refused(&mut h, scanner(), lan, 20_001);
    let syn = Frame::tcp(scanner(), 40_000, lan, closed_port(), SYN, 5);
    h.inbound_frame(&syn);
    assert_eq!(h.events(), []);
    h.outbound_frame(&syn.refusal());
    assert!(h.one_event().kernel_verdict);
    assert_eq!(h.counter(Counter::EarlyFailures), 0);
}

#[test]
fn a_stealth_segment_fails_when_it_arrives_from_any_source_open_port_or_not() {
    if !require_root("a_stealth_segment_fails_when_it_arrives_from_any_source_open_port_or_not") {
        return;
    }
    // A NULL scan whose 2nd to 4th probes hit open ports (nmap puts the common ports
    // first): each fails when it arrives, not at an expiry seconds later, and the fourth
    // failure is the verdict, on the scan's fourth probe.
    let listeners: Vec<TcpListener> = (0..3)
        .map(|_| TcpListener::bind("0.0.0.0:0").unwrap())
        .collect();
    let mut ports = vec![closed_port()];
    ports.extend(listeners.iter().map(|l| l.local_addr().unwrap().port()));
    let mut h = local(&every_event());
    for (i, &port) in ports.iter().enumerate() {
        let null = Frame::tcp(scanner(), 40_000, victim(), port, 0, 100 + i as u32);
        h.inbound_frame(&null);
        let e = h.one_event();
        let outcome = if i == 0 {
            Outcome::Refused
        } else {
            Outcome::Unanswered
        };
        assert_eq!(
            (e.probe, e.outcome, e.dst_port),
            (ProbeType::TcpStealth, outcome, port)
        );
        assert_eq!(
            e.kernel_verdict,
            i == 3,
            "the fourth failure decides: {e:?}"
        );
        if i == 0 {
            // The closed port's RST, when the stack sends it, only clears the slot.
            h.outbound_frame(&null.refusal());
            assert_eq!(h.events(), []);
        }
    }
    assert_eq!(h.counter(Counter::EarlyFailures), 4);
    // Nothing is left to expire.
    for _ in 0..8 {
        h.expire();
    }
    assert_eq!(h.events(), []);
}

#[test]
fn with_block_the_probe_that_decides_is_dropped() {
    if !require_root("with_block_the_probe_that_decides_is_dropped") {
        return;
    }
    let mut h = local(&KernelConfig {
        block: true,
        ..every_event()
    });
    three_refused(&mut h, scanner(), victim(), 20_001);
    let syn = Frame::tcp(scanner(), 40_000, victim(), closed_port(), SYN, 5);
    assert_eq!(h.xdp_verdict(&syn.bytes()), XDP_DROP);
    let decided = h.one_event();
    assert!(
        decided.kernel_verdict && decided.kernel_blocked,
        "{decided:?}"
    );
    assert_eq!(h.counter(Counter::KernelBlocks), 1);
    // The dropped probe left no attempt behind: nothing expires for it later.
    for _ in 0..8 {
        h.expire();
    }
    assert_eq!(h.events(), []);
    assert_eq!(h.counter(Counter::Unanswered), 0);
    // Its next probe is dropped by the block itself.
    let next = Frame::tcp(scanner(), 40_000, victim(), closed_port(), SYN, 6);
    assert_eq!(h.xdp_verdict(&next.bytes()), XDP_DROP);
}
