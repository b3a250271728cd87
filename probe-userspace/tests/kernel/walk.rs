//! The sequential hypothesis test in the kernel (`SUSPECTS`): the walk's arithmetic, the
//! verdict on the event that crosses the line (and only that one), aging on the sweep's
//! clock, IPv6 sources by their /64, and a suspect kept through floods of forged sources.

use probe_userspace::detect::trw::{Trw, TrwConfig};

use crate::{common::Rng, harness::*};

/// A SYN from `src` to `dst:port`, refused by our RST (or accepted by our SYN-ACK, and the
/// connection left standing until the sweeps have counted its success); the event it
/// makes, if any.
fn contact(h: &mut Harness, src: IpAddr, dst: IpAddr, port: u16, ok: bool) -> Option<Probe> {
    let probe = Frame::tcp(src, 40_000 + port % 1000, dst, port, SYN, u32::from(port));
    h.inbound_frame(&probe);
    h.outbound_frame(&if ok {
        probe.acceptance()
    } else {
        probe.refusal()
    });
    if ok {
        h.stand();
    }
    let mut events = h.events();
    assert!(events.len() <= 1, "{events:?}");
    events.pop()
}

/// SYNs from `src` to the victim's `ports`, each answered by our SYN-ACK and neither
/// reset nor yet standing a sweep; the one event they make.
fn accepted(h: &mut Harness, src: IpAddr, ports: &[u16]) -> Probe {
    for &port in ports {
        let syn = Frame::tcp(src, 41_000 + port, victim(), port, SYN, u32::from(port));
        h.inbound_frame(&syn);
        h.outbound_frame(&syn.acceptance());
    }
    h.one_event()
}

/// The verdict flags of the events `contacts` make, in order.
fn verdicts(h: &mut Harness, src: IpAddr, contacts: &[(u16, bool)]) -> Vec<bool> {
    contacts
        .iter()
        .map(|&(port, ok)| {
            contact(h, src, victim(), port, ok)
                .expect("a first outcome is an event")
                .kernel_verdict
        })
        .collect()
}

#[test]
fn four_first_failures_are_the_verdict_carried_by_the_fourth_event_once() {
    if !require_root("four_first_failures_are_the_verdict_carried_by_the_fourth_event_once") {
        return;
    }
    let mut h = Harness::new();
    let seen = verdicts(&mut h, scanner(), &[(1, false), (2, false), (3, false)]);
    assert_eq!(seen, [false; 3]);
    // A repeat of a failure is no first failure (no event, no step).
    assert_eq!(contact(&mut h, scanner(), victim(), 1, false), None);
    assert_eq!(verdicts(&mut h, scanner(), &[(4, false)]), [true]);
    assert_eq!(h.counter(Counter::Verdicts), 1);
    // Decided: later failures are counted, no second verdict.
    assert_eq!(
        verdicts(&mut h, scanner(), &[(5, false), (6, false)]),
        [false, false]
    );
    // After the verdict, a repeat of a port failed on before it is summarised unchecked
    // against the outcome table (the scan's port list tells it): still no verdict.
    let repeat = contact(&mut h, scanner(), victim(), 1, false);
    assert!(
        repeat.as_ref().is_none_or(|p| !p.kernel_verdict),
        "{repeat:?}"
    );
    assert_eq!(h.counter(Counter::Verdicts), 1);
}

#[test]
fn each_first_success_cancels_a_failure_and_the_benign_bound_starts_over() {
    if !require_root("each_first_success_cancels_a_failure_and_the_benign_bound_starts_over") {
        return;
    }
    let mut h = Harness::new();
    // Failure, failure, success (one host: one first success), failure, failure: +3.
    let seen = verdicts(
        &mut h,
        scanner(),
        &[(1, false), (2, false), (22, true), (3, false), (4, false)],
    );
    assert_eq!(seen, [false; 5]);
    assert_eq!(verdicts(&mut h, scanner(), &[(5, false)]), [true]);
    // A client: four successes (four hosts) reach the benign bound and start over at 0,
    // so three failures are no verdict, the fourth is.
    let client = v4([198, 18, 0, 50]);
    for host in 10..14u8 {
        let event = contact(&mut h, client, v4([198, 18, 0, host]), 443, true).unwrap();
        assert!(!event.kernel_verdict);
    }
    assert_eq!(
        verdicts(
            &mut h,
            client,
            &[(1, false), (2, false), (3, false), (4, false)]
        ),
        [false, false, false, true]
    );
}

#[test]
fn an_ipv6_source_is_its_64_and_an_idle_source_starts_over() {
    if !require_root("an_ipv6_source_is_its_64_and_an_idle_source_starts_over") {
        return;
    }
    // Sweeps of 100 ms (timeout 300 ms): 10 idle minutes are 6 000 sweeps.
    let config = KernelConfig {
        timeout: std::time::Duration::from_millis(300),
        ..every_event()
    };
    assert_eq!(config.walk_idle_sweeps(), 6000);
    let mut h = Harness::with(&config);
    // Four addresses of one /64, one failure each: one source, decided at the fourth.
    let seen: Vec<bool> = (1..=4u16)
        .map(|i| {
            let src = v6(&format!("2001:db8:0:7::{i:x}"));
            contact(&mut h, src, victim6(), 100 + i, false)
                .unwrap()
                .kernel_verdict
        })
        .collect();
    assert_eq!(seen, [false, false, false, true]);
    // Another source: three failures, then 6 001 sweeps of quiet (its verdict idles too),
    // then three more: no verdict (it started over); a fourth: the verdict.
    let other = v4([198, 18, 0, 77]);
    assert_eq!(
        verdicts(&mut h, other, &[(1, false), (2, false), (3, false)]),
        [false; 3]
    );
    // A port again is a repeat: no event, and no step (a known source's repeat is looked
    // up in OUTCOMES): the next new port is the fourth first failure, the verdict.
    assert!(contact(&mut h, other, victim(), 2, false).is_none());
    assert_eq!(verdicts(&mut h, other, &[(8, false)]), [true]);
    for _ in 0..6001 {
        h.expire();
    }
    assert_eq!(
        verdicts(&mut h, other, &[(4, false), (5, false), (6, false)]),
        [false; 3]
    );
    assert_eq!(verdicts(&mut h, other, &[(7, false)]), [true]);
}

#[test]
fn forged_sources_of_one_probe_never_take_a_suspects_place() {
    if !require_root("forged_sources_of_one_probe_never_take_a_suspects_place") {
        return;
    }
    // A small cache (16 sets of 4: 64 sources) against 20 000 forged sources.
    let mut h = Harness::with(&KernelConfig {
        suspect_sets: 16,
        ..every_event()
    });
    let suspect = v4([198, 19, 255, 1]);
    assert_eq!(
        verdicts(&mut h, suspect, &[(1, false), (2, false), (3, false)]),
        [false; 3]
    );
    for i in 0..20_000u32 {
        let forged = IpAddr::V4(std::net::Ipv4Addr::from(0xc612_0000 + i));
        let _ = contact(&mut h, forged, victim(), 80, false);
    }
    // Its walk is still at 3: the next failure decides.
    assert_eq!(verdicts(&mut h, suspect, &[(4, false)]), [true]);
    // Forged sources that each fail twice do not take it either (they reach 2).
    let second = v4([198, 19, 255, 2]);
    assert_eq!(
        verdicts(&mut h, second, &[(1, false), (2, false), (3, false)]),
        [false; 3]
    );
    for i in 0..5_000u32 {
        let forged = IpAddr::V4(std::net::Ipv4Addr::from(0xc612_8000 + i));
        let _ = contact(&mut h, forged, victim(), 80, false);
        let _ = contact(&mut h, forged, victim(), 81, false);
    }
    assert_eq!(verdicts(&mut h, second, &[(4, false)]), [true]);
}

#[test]
fn the_kernel_walk_and_the_userspace_test_agree_on_random_sequences() {
    if !require_root("the_kernel_walk_and_the_userspace_test_agree_on_random_sequences") {
        return;
    }
    let mut h = Harness::new();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut decided = 0;
    for source in 0..300u32 {
        let src = IpAddr::V4(std::net::Ipv4Addr::from(0xc612_4000 + source));
        let mut trw = Trw::new(TrwConfig::default(), 16);
        // Up to 12 first contacts, each with a host (and so a service) of its own: both
        // count a success once per service. Failing with probability 1/2 to 7/8.
        let bias = 1 + rng.next() % 4;
        let mut kernel_at = None;
        let mut user_at = None;
        for i in 0..12u16 {
            let ok = rng.next().is_multiple_of(2 * bias);
            let dst = IpAddr::V4(std::net::Ipv4Addr::new(198, 18, 1, i as u8));
            let event = contact(&mut h, src, dst, 1000 + i, ok).expect("a first outcome");
            if event.kernel_verdict && kernel_at.is_none() {
                kernel_at = Some(i);
            }
            if trw
                .judge(&event, std::time::Duration::from_millis(u64::from(i)))
                .is_some()
                && user_at.is_none()
            {
                user_at = Some(i);
            }
        }
        assert_eq!(
            kernel_at, user_at,
            "source {source}: kernel and userspace disagree"
        );
        decided += usize::from(kernel_at.is_some());
    }
    // Both outcomes occur among the sequences.
    assert!((50..250).contains(&decided), "{decided} of 300 decided");
}

#[test]
fn a_half_open_scanners_open_ports_do_not_hold_its_verdict_back() {
    if !require_root("a_half_open_scanners_open_ports_do_not_hold_its_verdict_back") {
        return;
    }
    let mut h = Harness::new();
    // An open port the scanner resets without completing the handshake (nmap -sS,
    // masscan): its success is reported, and never counted.
    let syn = Frame::tcp(scanner(), 40_080, victim(), 80, SYN, 80);
    h.inbound_frame(&syn);
    h.outbound_frame(&syn.acceptance());
    assert_eq!(h.one_event().outcome, Outcome::Accepted);
    // A reset with another sequence number (an off-path forger's guess) changes nothing.
    h.inbound_frame(&Frame::tcp(scanner(), 40_080, victim(), 80, RST, 12_345));
    assert_eq!(h.counter(Counter::HalfOpen), 0);
    h.inbound_frame(&Frame::tcp(scanner(), 40_080, victim(), 80, RST, 81));
    assert_eq!(h.counter(Counter::HalfOpen), 1);
    h.stand();
    assert_eq!(h.counter(Counter::Confirmed), 0);
    // Four first failures: the fourth is the verdict, as if the open port had not been.
    let contacts = [(1, false), (2, false), (3, false), (4, false)];
    assert_eq!(
        verdicts(&mut h, scanner(), &contacts),
        [false, false, false, true]
    );
    // A client that completes the handshake (no reset: its ACK is established traffic):
    // its success counts once the connection stood, without a word.
    let client = v4([198, 18, 0, 9]);
    let syn = Frame::tcp(client, 40_080, victim(), 80, SYN, 80);
    h.inbound_frame(&syn);
    h.outbound_frame(&syn.acceptance());
    assert_eq!(h.one_event().outcome, Outcome::Accepted);
    h.expire();
    assert_eq!(h.counter(Counter::Confirmed), 0, "not before a whole sweep");
    h.expire();
    assert_eq!(h.counter(Counter::Confirmed), 1);
    assert_eq!(h.events(), []);
    assert_eq!(h.counter(Counter::Unanswered), 0);
    // Its later reset finds nothing waiting: four failures are not yet a verdict.
    h.inbound_frame(&Frame::tcp(client, 40_080, victim(), 80, RST, 81));
    assert_eq!(h.counter(Counter::HalfOpen), 1);
    assert_eq!(verdicts(&mut h, client, &contacts), [false; 4]);
    // A connect scan (nmap -sT) completes the handshake and aborts before sending a byte
    // (RST|ACK, its sequence number still the acknowledged one): never counted either.
    let connect = v4([198, 18, 0, 10]);
    let syn = Frame::tcp(connect, 40_080, victim(), 80, SYN, 80);
    h.inbound_frame(&syn);
    h.outbound_frame(&syn.acceptance());
    assert_eq!(h.one_event().outcome, Outcome::Accepted);
    h.inbound_frame(&Frame::tcp(connect, 40_080, victim(), 80, RST | ACK, 81));
    assert_eq!(h.counter(Counter::HalfOpen), 2);
    h.stand();
    assert_eq!(
        verdicts(&mut h, connect, &contacts),
        [false, false, false, true]
    );
    assert_eq!(h.counter(Counter::Confirmed), 1);
}

#[test]
fn by_default_a_waiting_success_does_not_hold_the_verdict_back() {
    if !require_root("by_default_a_waiting_success_does_not_hold_the_verdict_back") {
        return;
    }
    let mut h = Harness::new();
    // Open ports found among a scan's first probes, their resets not yet come (a connect
    // scan resets about a millisecond later): its fourth failure is still the verdict.
    let src = v4([198, 18, 0, 11]);
    // One first success per service: one event each.
    assert_eq!(accepted(&mut h, src, &[22]).outcome, Outcome::Accepted);
    assert_eq!(accepted(&mut h, src, &[80]).outcome, Outcome::Accepted);
    let contacts = [(1, false), (2, false), (3, false), (4, false)];
    assert_eq!(
        verdicts(&mut h, src, &contacts),
        [false, false, false, true]
    );
    // Its successes still count when they stood, on a decided walk.
    h.stand();
    assert_eq!(h.counter(Counter::Confirmed), 2);
    // Successes that stood first hold the next source's verdict back one failure each;
    // its second connection to a service before the sweep is a repeat, counted once.
    let other = v4([198, 18, 0, 12]);
    assert_eq!(accepted(&mut h, other, &[22]).outcome, Outcome::Accepted);
    let again = Frame::tcp(other, 42_022, victim(), 22, SYN, 7);
    h.inbound_frame(&again);
    h.outbound_frame(&again.acceptance());
    assert_eq!(h.events(), []);
    assert_eq!(accepted(&mut h, other, &[80]).outcome, Outcome::Accepted);
    let before = h.counter(Counter::Confirmed);
    h.stand();
    assert_eq!(h.counter(Counter::Confirmed), before + 2);
    let six = [
        (1, false),
        (2, false),
        (3, false),
        (4, false),
        (5, false),
        (6, false),
    ];
    assert_eq!(
        verdicts(&mut h, other, &six),
        [false, false, false, false, false, true]
    );
}

#[test]
fn with_settle_successes_a_waiting_success_holds_the_verdict_back_until_settled() {
    if !require_root("with_settle_successes_a_waiting_success_holds_the_verdict_back_until_settled")
    {
        return;
    }
    let mut h = Harness::with(&KernelConfig {
        settle_successes: true,
        ..every_event()
    });
    let five = [(1, false), (2, false), (3, false), (4, false), (5, false)];
    // A client that finds two services of the host open and five closed at once (a mail
    // client trying every port it knows): while its connections have not stood a sweep,
    // no verdict, however many failures come.
    let client = v4([198, 18, 0, 11]);
    assert_eq!(accepted(&mut h, client, &[22]).outcome, Outcome::Accepted);
    assert_eq!(accepted(&mut h, client, &[80]).outcome, Outcome::Accepted);
    assert_eq!(verdicts(&mut h, client, &five), [false; 5]);
    // They stood: both count, as the userspace test counts them (+5 - 2 = +3), and the
    // next new failure is the verdict.
    h.stand();
    assert_eq!(h.counter(Counter::Confirmed), 2);
    assert_eq!(verdicts(&mut h, client, &[(6, false)]), [true]);

    // A connect scanner whose abort of an open port (RST|ACK before a byte) comes after
    // its fourth failure: the verdict comes with its first failure after the abort, and
    // the success never counts.
    let scanner = v4([198, 18, 0, 12]);
    let open = Frame::tcp(scanner, 41_080, victim(), 80, SYN, 80);
    h.inbound_frame(&open);
    h.outbound_frame(&open.acceptance());
    assert_eq!(h.one_event().outcome, Outcome::Accepted);
    assert_eq!(verdicts(&mut h, scanner, &five[..4]), [false; 4]);
    h.inbound_frame(&Frame::tcp(scanner, 41_080, victim(), 80, RST | ACK, 81));
    assert_eq!(h.counter(Counter::HalfOpen), 1);
    assert_eq!(verdicts(&mut h, scanner, &[(5, false)]), [true]);
    h.stand();
    assert_eq!(
        h.counter(Counter::Confirmed),
        2,
        "the aborted success never counts"
    );

    // A waiting success that nothing will settle (a new attempt of its flow took its slot:
    // our reset answers it, reported as an unseen attempt, the first failure) holds the
    // verdict back for WAIT_EPOCHS sweeps at most.
    let lost = v4([198, 18, 0, 13]);
    let open = Frame::tcp(lost, 41_080, victim(), 80, SYN, 80);
    h.inbound_frame(&open);
    h.outbound_frame(&open.acceptance());
    assert_eq!(h.one_event().outcome, Outcome::Accepted);
    h.outbound_frame(&open.refusal());
    assert_eq!(h.one_event().probe, ProbeType::TcpUnseen);
    assert_eq!(verdicts(&mut h, lost, &five[..3]), [false; 3]);
    for _ in 0..=probe_common::WAIT_EPOCHS {
        h.expire();
    }
    assert_eq!(verdicts(&mut h, lost, &[(4, false)]), [true]);
}
