//! What is not reported: addresses outside the home nets, allow-listed sources and services, callbacks from hosts we contacted.

use crate::harness::*;

#[test]
fn only_home_addresses_are_tracked() {
    if !require_root("only_home_addresses_are_tracked") {
        return;
    }
    let home: Cidr = "198.18.0.2/32".parse().unwrap();
    let home6: Cidr = "2001:db8::/64".parse().unwrap();
    let mut h = Harness::with(&KernelConfig {
        home_nets: vec![home, home6],
        ..every_event()
    });
    let elsewhere = Frame::tcp(scanner(), 50_000, v4([198, 18, 0, 3]), 22, SYN, 1);
    h.inbound_frame(&elsewhere);
    h.outbound_frame(&elsewhere.refusal());
    assert!(h.events().is_empty());
    assert_eq!(h.counter(Counter::NotHome), 1);
    // Answers leaving from outside the home nets (hosts behind a gateway whose home nets
    // leave them out) are counted, for the log's hint.
    assert_eq!(h.counter(Counter::ForeignAnswers), 1);
    let open = Frame::tcp(scanner(), 50_002, v4([198, 18, 0, 3]), 80, SYN, 1);
    h.inbound_frame(&open);
    h.outbound_frame(&open.acceptance());
    assert_eq!(h.counter(Counter::ForeignAnswers), 2);
    for dst in [victim(), victim6()] {
        let src = if dst.is_ipv4() { scanner() } else { scanner6() };
        let probe = Frame::tcp(src, 50_001, dst, 22, SYN, 1);
        h.inbound_frame(&probe);
        h.outbound_frame(&probe.refusal());
        assert_eq!(h.one_event().dst, dst);
    }
    assert_eq!(h.counter(Counter::Syns), 2);
    assert_eq!(
        h.counter(Counter::ForeignAnswers),
        2,
        "our own answers are not foreign"
    );
}

#[test]
fn home_nets_change_while_running_beyond_the_fast_list() {
    if !require_root("home_nets_change_while_running_beyond_the_fast_list") {
        return;
    }
    let home: Cidr = "198.18.0.2/32".parse().unwrap();
    let mut h = Harness::with(&KernelConfig {
        home_nets: vec![home],
        ..every_event()
    });
    let new_addr = v4([198, 18, 0, 99]);
    let seen = |h: &mut Harness, port: u16| {
        let before = h.counter(Counter::Syns);
        h.inbound_frame(&Frame::tcp(scanner(), 50_000, new_addr, port, SYN, 1));
        h.counter(Counter::Syns) > before
    };
    assert!(!seen(&mut h, 1), "not ours yet");
    // An address added while running.
    kernel::set_home_nets(&mut h.ebpf, &[home, Cidr::host(new_addr)]).unwrap();
    assert!(seen(&mut h, 2));
    // More prefixes than the fast list holds: the trie answers.
    let mut many: Vec<Cidr> = (0..40u8).map(|i| Cidr::host(v4([198, 19, 0, i]))).collect();
    many.push(Cidr::host(new_addr));
    kernel::set_home_nets(&mut h.ebpf, &many).unwrap();
    assert!(seen(&mut h, 3));
    let before = h.counter(Counter::NotHome);
    h.inbound_frame(&syn(50_001, 22, 1));
    assert_eq!(
        h.counter(Counter::NotHome),
        before + 1,
        "198.18.0.2 is not in the set"
    );
    // And back to a short list: the trie is emptied.
    kernel::set_home_nets(&mut h.ebpf, &[home]).unwrap();
    assert!(!seen(&mut h, 4));
    h.inbound_frame(&syn(50_002, 22, 1));
    assert_eq!(h.counter(Counter::NotHome), before + 2);
}

#[test]
fn allow_listed_sources_and_services_are_not_reported_and_lists_change_in_place() {
    if !require_root("allow_listed_sources_and_services_are_not_reported_and_lists_change_in_place")
    {
        return;
    }
    let mut h = Harness::new();
    let mut lists = AllowLists::default();
    lists
        .add_text(
            "source 198.18.0.1/32\nservice 198.18.0.2:443\nservice [2001:db8::/64]:22\n",
            "test",
        )
        .unwrap();
    allow::apply(&mut h.ebpf, &AllowLists::default(), &lists).unwrap();
    let other = v4([198, 18, 0, 77]);
    let refused = |h: &mut Harness, src: IpAddr, dst: IpAddr, port: u16| {
        let probe = Frame::tcp(src, 51_500, dst, port, SYN, u32::from(port));
        h.inbound_frame(&probe);
        h.outbound_frame(&probe.refusal());
        h.events()
    };
    // The allow-listed source, on any port: nothing.
    assert!(refused(&mut h, scanner(), victim(), 23).is_empty());
    // Another source on the allow-listed service: nothing; on another port: reported.
    assert!(refused(&mut h, other, victim(), 443).is_empty());
    assert_eq!(refused(&mut h, other, victim(), 444).len(), 1);
    // IPv6 service rule with a port.
    assert!(refused(&mut h, scanner6(), victim6(), 22).is_empty());
    assert_eq!(refused(&mut h, scanner6(), victim6(), 23).len(), 1);
    assert_eq!(h.counter(Counter::Allowed), 3);
    // Drop the source rule at run time: the source is reported again.
    let mut fewer = lists.clone();
    fewer.sources.clear();
    allow::apply(&mut h.ebpf, &lists, &fewer).unwrap();
    assert_eq!(refused(&mut h, scanner(), victim(), 24).len(), 1);
    assert!(
        refused(&mut h, other, victim(), 443).is_empty(),
        "the service rule stays"
    );
    // No rule left: the tries are not read, and nothing is spared.
    allow::apply(&mut h.ebpf, &fewer, &AllowLists::default()).unwrap();
    assert_eq!(
        refused(&mut h, v4([198, 18, 0, 78]), victim(), 443).len(),
        1
    );
    assert_eq!(h.counter(Counter::Allowed), 4);
}

#[test]
fn hosts_we_contacted_may_call_back_unreported() {
    if !require_root("hosts_we_contacted_may_call_back_unreported") {
        return;
    }
    let mut h = Harness::new();
    // We contact the scanner (an FTP control connection, say)...
    h.outbound_frame(&Frame::tcp(victim(), 43_210, scanner(), 21, SYN, 5));
    // ...and it connects back to one of our closed ports: a callback, not a probe.
    let callback = Frame::tcp(scanner(), 20, victim(), 40_001, SYN, 6);
    h.inbound_frame(&callback);
    h.outbound_frame(&callback.refusal());
    assert!(h.events().is_empty());
    assert_eq!(h.counter(Counter::Callbacks), 1);
    // The same host probing a service port (below 1024) is reported: callbacks land on
    // high ports.
    let probe = Frame::tcp(scanner(), 20, victim(), 22, SYN, 9);
    h.inbound_frame(&probe);
    h.outbound_frame(&probe.refusal());
    assert_eq!(h.one_event().dst_port, 22);
    // Another host we never contacted is reported as usual.
    let stranger = Frame::tcp(v4([198, 18, 0, 66]), 20, victim(), 40_001, SYN, 7);
    h.inbound_frame(&stranger);
    h.outbound_frame(&stranger.refusal());
    assert_eq!(h.one_event().src, v4([198, 18, 0, 66]));
    // Our UDP counts as a contact too.
    h.outbound_frame(&Frame::udp(victim6(), 5_353, scanner6(), 53));
    let back = Frame::tcp(scanner6(), 443, victim6(), 8_443, SYN, 8);
    h.inbound_frame(&back);
    h.outbound_frame(&back.refusal());
    assert!(h.events().is_empty());
    assert_eq!(h.counter(Counter::Callbacks), 2);
}

#[test]
fn a_host_we_only_answered_gets_no_callback_exemption() {
    if !require_root("a_host_we_only_answered_gets_no_callback_exemption") {
        return;
    }
    let mut h = Harness::new();
    // It asks our DNS server; we answer.
    let query = Frame::udp(scanner(), 40_000, victim(), 53);
    h.inbound_frame(&query);
    h.outbound_frame(&query.udp_reply());
    let _ = h.events();
    // Then it probes our high ports: probes, not callbacks.
    let probe = Frame::tcp(scanner(), 40_001, victim(), 2000, SYN, 7);
    h.inbound_frame(&probe);
    h.outbound_frame(&probe.refusal());
    assert_eq!(h.one_event().dst_port, 2000);
    assert_eq!(h.counter(Counter::Callbacks), 0);
    // A datagram we start does contact its host: its call back is a callback.
    h.outbound_frame(&Frame::udp(victim(), 41_000, scanner(), 5060));
    let call = Frame::tcp(scanner(), 40_002, victim(), 2001, SYN, 8);
    h.inbound_frame(&call);
    h.outbound_frame(&call.refusal());
    assert!(h.events().is_empty());
    assert_eq!(h.counter(Counter::Callbacks), 1);
}

#[test]
fn callbacks_expire_after_the_window() {
    if !require_root("callbacks_expire_after_the_window") {
        return;
    }
    // A 200 ms window with 100 ms sweeps: two sweeps.
    let mut h = Harness::with(&KernelConfig {
        timeout: Duration::from_millis(100),
        callback_window: Duration::from_millis(200),
        ..every_event()
    });
    h.outbound_frame(&Frame::tcp(victim(), 43_210, scanner(), 21, SYN, 5));
    for _ in 0..3 {
        h.expire();
    }
    let late = Frame::tcp(scanner(), 20, victim(), 40_002, SYN, 6);
    h.inbound_frame(&late);
    h.outbound_frame(&late.refusal());
    assert_eq!(
        h.one_event().dst_port,
        40_002,
        "three sweeps later it is a probe again"
    );
    assert_eq!(h.counter(Counter::Callbacks), 0);
}
