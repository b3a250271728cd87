//! UDP and ICMP: refused and answered datagrams, replies to ours, ICMP unreachable codes, echo.

use crate::harness::*;

#[test]
fn udp_outcomes() {
    if !require_root("udp_outcomes") {
        return;
    }
    let mut h = Harness::new();
    // Closed: ICMP port unreachable quoting the datagram.
    let probe = Frame::udp(scanner(), 53_000, victim(), 161);
    h.inbound_frame(&probe);
    h.outbound_frame(&probe.unreachable(3));
    let e = h.one_event();
    assert_eq!(
        (e.probe, e.outcome, e.proto, e.dst_port),
        (ProbeType::Udp, Outcome::Refused, IPPROTO_UDP, 161)
    );
    assert_eq!(e.icmp, Some((3, 3)));
    // Open: any UDP reply.
    let probe = Frame::udp(scanner(), 53_001, victim(), 53);
    h.inbound_frame(&probe);
    h.outbound_frame(&probe.udp_reply());
    let e = h.one_event();
    assert_eq!(
        (e.probe, e.outcome, e.dst_port),
        (ProbeType::Udp, Outcome::Accepted, 53)
    );
    assert_eq!(h.counter(Counter::UdpIn), 2);
}

#[test]
fn replies_to_our_udp_are_not_attempts() {
    if !require_root("replies_to_our_udp_are_not_attempts") {
        return;
    }
    let mut h = Harness::new();
    // Our DNS query and its answer.
    let query = Frame::udp(victim(), 40_053, scanner(), 53);
    h.outbound_frame(&query);
    h.inbound_frame(&query.udp_reply());
    assert_eq!(h.counter(Counter::UdpIn), 0);
    // An unrelated inbound datagram still is one.
    h.inbound_frame(&Frame::udp(scanner(), 40_053, victim(), 54));
    assert_eq!(h.counter(Counter::UdpIn), 1);
}

#[test]
fn icmp_unreachable_codes_map_to_outcomes() {
    if !require_root("icmp_unreachable_codes_map_to_outcomes") {
        return;
    }
    let mut h = Harness::new();
    let cases = [
        (scanner(), victim(), 13, Outcome::Prohibited), // communication administratively prohibited
        (scanner(), victim(), 10, Outcome::Prohibited), // host administratively prohibited
        (scanner(), victim(), 1, Outcome::Unreachable), // host unreachable (gateway: no such host)
        (scanner(), victim(), 3, Outcome::Refused),     // port unreachable
        (scanner6(), victim6(), 1, Outcome::Prohibited), // ICMPv6 administratively prohibited
        (scanner6(), victim6(), 4, Outcome::Refused),   // ICMPv6 port unreachable
        (scanner6(), victim6(), 3, Outcome::Unreachable), // ICMPv6 address unreachable
    ];
    for (i, (src, dst, code, outcome)) in cases.into_iter().enumerate() {
        let port = 4000 + i as u16;
        let probe = Frame::tcp(src, 48_000, dst, port, SYN, 9);
        h.inbound_frame(&probe);
        h.outbound_frame(&probe.unreachable(code));
        let e = h.one_event();
        assert_eq!(
            (e.outcome, e.dst_port, e.probe),
            (outcome, port, ProbeType::TcpSyn),
            "code {code}"
        );
        assert_eq!(e.icmp.map(|(_, c)| c), Some(code));
    }
    // An unreachable quoting an attempt we never saw settles nothing: it is reported as the
    // unseen attempt it proves, with the outcome its code says.
    h.outbound_frame(&syn(48_999, 9, 1).unreachable(3));
    let e = h.one_event();
    assert_eq!(
        (e.probe, e.outcome, e.dst_port),
        (ProbeType::TcpUnseen, Outcome::Refused, 9)
    );
}

#[test]
fn echo_requests_answered_and_not() {
    if !require_root("echo_requests_answered_and_not") {
        return;
    }
    let mut h = Harness::with(&KernelConfig {
        timeout: Duration::from_millis(100), // one sweep
        ..every_event()
    });
    for (src, dst, proto) in [
        (scanner(), victim(), IPPROTO_ICMP),
        (scanner6(), victim6(), IPPROTO_ICMPV6),
    ] {
        let ping = Frame::echo_request(src, dst, 0x1234, 1);
        h.inbound_frame(&ping);
        h.outbound_frame(&ping.echo_reply());
        let e = h.one_event();
        assert_eq!(
            (e.probe, e.outcome, e.proto, e.src_port),
            (ProbeType::IcmpEcho, Outcome::Accepted, proto, 0x1234)
        );
    }
    // A ping sweep of a silent address: the request expires unanswered.
    let silent = v4([198, 18, 0, 99]);
    h.inbound_frame(&Frame::echo_request(scanner(), silent, 7, 1));
    h.expire();
    assert!(h.events().is_empty());
    h.expire();
    let e = h.one_event();
    assert_eq!(
        (e.probe, e.outcome, e.dst),
        (ProbeType::IcmpEcho, Outcome::Unanswered, silent)
    );
    assert_eq!(h.counter(Counter::EchoIn), 3);
}

#[test]
fn protocol_and_sctp_scans_are_known_from_our_answers() {
    if !require_root("protocol_and_sctp_scans_are_known_from_our_answers") {
        return;
    }
    let mut h = Harness::new();
    // nmap -sO: a packet of a protocol nothing speaks here; ICMP protocol unreachable.
    let gre = Frame::raw(scanner(), victim(), 47, &[0; 8]);
    h.inbound_frame(&gre);
    h.outbound_frame(&gre.unreachable(2));
    let e = h.one_event();
    assert_eq!(
        (e.probe, e.outcome, e.proto, e.dst_port),
        (ProbeType::IpProtocol, Outcome::Refused, 0, 47)
    );
    // Over IPv6: ICMPv6 parameter problem, unrecognised next header (type 4, code 1).
    let esp6 = Frame::raw(scanner6(), victim6(), 50, &[0; 8]);
    let mut problem = Frame::raw(victim6(), scanner6(), 58, &[]);
    problem.transport = Transport::Icmp {
        kind: 4,
        code: 1,
        rest: [0, 0, 0, 6],
    };
    problem.payload = esp6.ip_packet();
    h.outbound_frame(&problem);
    let e = h.one_event();
    assert_eq!(
        (e.probe, e.outcome, e.src, e.dst_port),
        (ProbeType::IpProtocol, Outcome::Refused, scanner6(), 50)
    );
    // nmap -sY on a host without SCTP: protocol unreachable quoting the INIT, whose ports
    // it carries.
    let mut init = 40_000u16.to_be_bytes().to_vec();
    init.extend(80u16.to_be_bytes());
    init.extend([0; 8]);
    init.extend([1, 0, 0, 20]);
    let sctp = Frame::raw(scanner(), victim(), 132, &init);
    h.outbound_frame(&sctp.unreachable(2));
    let e = h.one_event();
    assert_eq!(
        (e.probe, e.proto, e.src_port, e.dst_port),
        (ProbeType::Sctp, 132, 40_000, 80)
    );
    // A host with SCTP answers an INIT to a closed port with an ABORT.
    let mut abort = 81u16.to_be_bytes().to_vec();
    abort.extend(40_000u16.to_be_bytes());
    abort.extend([0; 8]);
    abort.extend([6, 0, 0, 4]);
    h.outbound_frame(&Frame::raw(victim(), scanner(), 132, &abort));
    let e = h.one_event();
    assert_eq!(
        (e.probe, e.outcome, e.dst_port, e.src),
        (ProbeType::Sctp, Outcome::Refused, 81, scanner())
    );
    // Other SCTP chunks leaving (our own traffic) are not answers.
    let mut data = 81u16.to_be_bytes().to_vec();
    data.extend(40_001u16.to_be_bytes());
    data.extend([0; 8]);
    data.extend([0, 0, 0, 4]);
    h.outbound_frame(&Frame::raw(victim(), scanner(), 132, &data));
    assert!(h.events().is_empty());
    assert_eq!(h.counter(Counter::Unseen), 4);
}
