//! Kernel tests: the real eBPF object is loaded (verifier included) and crafted frames are
//! run through its XDP (ingress) and TC (egress) programs with BPF_PROG_TEST_RUN; the
//! expiry program is run the same way. No packet goes on any wire. Needs root.

mod common;

use std::{net::IpAddr, time::Duration};

use aya::{
    Ebpf,
    maps::{HashMap as BpfHashMap, MapData, RingBuf},
    programs::{TestRun as _, TestRunOptions},
};
use common::{ACK, FIN, Frame, PSH, RST, SYN, URG, require_root, v4, v6};
use probe_common::{
    Counter, EVENTS_MAP, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, OUTCOMES_MAP,
    OutcomeKey,
};
use probe_userspace::{
    clock,
    event::{Outcome, Probe, ProbeType},
    kernel::{self, KernelConfig},
    net::cidr::Cidr,
    policy::allow::{self, AllowLists},
    policy::block::{BlockError, BlockPolicy, Blocker, Spared},
};

const XDP_PASS: u32 = 2;
const TC_ACT_OK: u32 = 0;

fn scanner() -> IpAddr {
    v4([198, 18, 0, 1])
}
fn victim() -> IpAddr {
    v4([198, 18, 0, 2])
}
fn scanner6() -> IpAddr {
    v6("2001:db8::1")
}
fn victim6() -> IpAddr {
    v6("2001:db8::2")
}

/// The loaded object with its ring buffer taken out, so both can be used at once.
struct Harness {
    ebpf: Ebpf,
    events: RingBuf<MapData>,
}

impl Harness {
    fn new() -> Self {
        Self::with(&KernelConfig::default())
    }

    fn with(config: &KernelConfig) -> Self {
        let mut ebpf = kernel::load(config).expect("the eBPF object loads and passes the verifier");
        let events = RingBuf::try_from(ebpf.take_map(EVENTS_MAP).expect("EVENTS map")).unwrap();
        Self { ebpf, events }
    }

    /// Runs a frame through the XDP program (inbound); its verdict.
    fn xdp_verdict(&mut self, frame: &[u8]) -> u32 {
        let xdp = kernel::xdp_program(&mut self.ebpf).unwrap();
        xdp.test_run(TestRunOptions {
            data_in: Some(frame),
            ..Default::default()
        })
        .expect("XDP test run")
        .return_value
    }

    /// Runs a frame through the XDP program (inbound), asserting it passes.
    fn inbound(&mut self, frame: &[u8]) {
        assert_eq!(
            self.xdp_verdict(frame),
            XDP_PASS,
            "XDP must pass every frame: {frame:02x?}"
        );
    }

    /// Runs a frame through the TC program (outbound), asserting it passes.
    fn outbound(&mut self, frame: &[u8]) {
        let tc = kernel::tc_program(&mut self.ebpf).unwrap();
        let result = tc
            .test_run(TestRunOptions {
                data_in: Some(frame),
                ..Default::default()
            })
            .expect("TC test run");
        assert_eq!(
            result.return_value, TC_ACT_OK,
            "TC must let every frame go: {frame:02x?}"
        );
    }

    fn inbound_frame(&mut self, frame: &Frame) {
        self.inbound(&frame.bytes());
    }

    fn outbound_frame(&mut self, frame: &Frame) {
        self.outbound(&frame.bytes());
    }

    /// The ring buffer, for polling.
    fn events_fd(&self) -> &RingBuf<MapData> {
        &self.events
    }

    /// Every event waiting in the ring buffer.
    fn events(&mut self) -> Vec<Probe> {
        let mut out = Vec::new();
        while let Some(record) = self.events.next() {
            out.push(Probe::decode(&record).expect("well-formed record"));
        }
        out
    }

    /// The single event waiting; panics when there is not exactly one.
    fn one_event(&mut self) -> Probe {
        let mut events = self.events();
        assert_eq!(events.len(), 1, "expected exactly one event: {events:#?}");
        events.remove(0)
    }

    fn counter(&self, counter: Counter) -> u64 {
        kernel::counters(&self.ebpf)
            .unwrap()
            .into_iter()
            .find(|(c, _)| *c == counter)
            .map(|(_, v)| v)
            .unwrap()
    }

    /// How often the kernel saw this failure of (src, dst, port).
    fn failures(
        &self,
        src: IpAddr,
        dst: IpAddr,
        port: u16,
        probe: ProbeType,
        outcome: Outcome,
    ) -> Option<u64> {
        let map: BpfHashMap<_, OutcomeKey, u64> =
            BpfHashMap::try_from(self.ebpf.map(OUTCOMES_MAP).unwrap()).unwrap();
        let key = OutcomeKey {
            src_addr: mapped(src),
            dst_addr: mapped(dst),
            dst_port: port,
            proto: IPPROTO_TCP,
            probe: probe as u8,
            outcome: outcome as u8,
            _pad: [0; 11],
        };
        map.get(&key, 0).ok()
    }

    fn expire(&mut self) {
        kernel::expire(&mut self.ebpf).expect("expiry program runs");
    }
}

fn mapped(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
        IpAddr::V6(a) => a.octets(),
    }
}

fn syn(src_port: u16, dst_port: u16, seq: u32) -> Frame {
    Frame::tcp(scanner(), src_port, victim(), dst_port, SYN, seq)
}

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
fn successes_are_reported_once_per_host_pair() {
    if !require_root("successes_are_reported_once_per_host_pair") {
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
    // A second open port of the same host: counted, not sent again.
    let other = syn(41_001, 443, 7);
    h.inbound_frame(&other);
    h.outbound_frame(&other.acceptance());
    assert!(h.events().is_empty());
    assert_eq!(h.counter(Counter::Answered), 2);
    // A reset of the accepted connection later is not a refused probe.
    h.outbound_frame(&probe.refusal());
    assert!(
        h.events().is_empty(),
        "an accepted attempt cannot be refused afterwards"
    );
    assert_eq!(h.counter(Counter::Failed), 0);
}

#[test]
fn rst_that_answers_no_recorded_attempt_is_no_event() {
    if !require_root("rst_that_answers_no_recorded_attempt_is_no_event") {
        return;
    }
    let mut h = Harness::new();
    // No SYN seen at all.
    h.outbound_frame(&syn(42_000, 25, 5).refusal());
    // A SYN seen, but the RST acknowledges another sequence number.
    let probe = syn(42_001, 25, 5);
    h.inbound_frame(&probe);
    h.outbound_frame(&probe.refusal().with_ack(12_345));
    // The RST of another flow (other source port).
    h.outbound_frame(&syn(42_002, 25, 5).refusal());
    assert!(h.events().is_empty());
    assert_eq!(h.counter(Counter::RstsOut), 3);
    assert_eq!(h.counter(Counter::Failed), 0);
    // The right answer still matches afterwards.
    h.outbound_frame(&probe.refusal());
    assert_eq!(h.one_event().dst_port, 25);
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
    // An unreachable quoting an attempt we never saw matches nothing.
    h.outbound_frame(&syn(48_999, 9, 1).unreachable(3));
    assert!(h.events().is_empty());
}

#[test]
fn echo_requests_answered_and_not() {
    if !require_root("echo_requests_answered_and_not") {
        return;
    }
    let mut h = Harness::with(&KernelConfig {
        timeout: Duration::from_millis(100), // one sweep
        ..KernelConfig::default()
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
fn unanswered_attempts_expire_after_the_timeout() {
    if !require_root("unanswered_attempts_expire_after_the_timeout") {
        return;
    }
    // A 100 ms timeout with 100 ms sweeps: an attempt expires at the second sweep after it.
    let config = KernelConfig {
        timeout: Duration::from_millis(100),
        ..KernelConfig::default()
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
    // Expired slots are free: a late answer matches nothing, a second sweep finds nothing.
    h.outbound_frame(&filtered.refusal());
    h.expire();
    assert!(h.events().is_empty());
}

#[test]
fn only_home_addresses_are_tracked() {
    if !require_root("only_home_addresses_are_tracked") {
        return;
    }
    let home: Cidr = "198.18.0.2/32".parse().unwrap();
    let home6: Cidr = "2001:db8::/64".parse().unwrap();
    let mut h = Harness::with(&KernelConfig {
        home_nets: vec![home.to_home_net(), home6.to_home_net()],
        ..KernelConfig::default()
    });
    let elsewhere = Frame::tcp(scanner(), 50_000, v4([198, 18, 0, 3]), 22, SYN, 1);
    h.inbound_frame(&elsewhere);
    h.outbound_frame(&elsewhere.refusal());
    assert!(h.events().is_empty());
    assert_eq!(h.counter(Counter::NotHome), 1);
    for dst in [victim(), victim6()] {
        let src = if dst.is_ipv4() { scanner() } else { scanner6() };
        let probe = Frame::tcp(src, 50_001, dst, 22, SYN, 1);
        h.inbound_frame(&probe);
        h.outbound_frame(&probe.refusal());
        assert_eq!(h.one_event().dst, dst);
    }
    assert_eq!(h.counter(Counter::Syns), 2);
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
fn callbacks_expire_after_the_window() {
    if !require_root("callbacks_expire_after_the_window") {
        return;
    }
    // A 200 ms window with 100 ms sweeps: two sweeps.
    let mut h = Harness::with(&KernelConfig {
        timeout: Duration::from_millis(100),
        callback_window: Duration::from_millis(200),
        ..KernelConfig::default()
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

#[test]
fn ipv6_syn_refused_is_one_event() {
    if !require_root("ipv6_syn_refused_is_one_event") {
        return;
    }
    let mut h = Harness::new();
    let probe = Frame::tcp(scanner6(), 51_000, victim6(), 23, SYN, 10);
    h.inbound_frame(&probe);
    h.outbound_frame(&probe.refusal());
    let e = h.one_event();
    assert_eq!((e.src, e.dst, e.dst_port), (scanner6(), victim6(), 23));
    assert_eq!(
        (e.probe, e.outcome, e.ttl),
        (ProbeType::TcpSyn, Outcome::Refused, 64)
    );
}

#[test]
fn encapsulations_are_parsed() {
    if !require_root("encapsulations_are_parsed") {
        return;
    }
    let mut h = Harness::new();
    let mut variants: Vec<(&str, Frame)> = Vec::new();
    let tcp_options = [2, 4, 0x05, 0xb4, 4, 2, 1, 1]; // MSS 1460, SACK permitted
    for (name, tpids) in [
        ("802.1Q", vec![0x8100]),
        ("802.1ad+802.1Q", vec![0x88a8, 0x8100]),
    ] {
        let mut f = syn(52_000, 0, 1).with_tcp_options(&tcp_options);
        f.vlan_tpids = tpids;
        variants.push((name, f));
    }
    // Record route (IHL 8): the TCP header is at 14 + 32, not 14 + 20.
    let mut f = syn(52_000, 0, 1);
    f.ip_options = vec![7, 11, 4, 0, 0, 0, 0, 0, 0, 0, 0];
    variants.push(("IPv4 record route", f));
    // IHL 15, the maximum: 40 bytes of options, and a VLAN tag.
    let mut f = syn(52_000, 0, 1);
    f.ip_options = vec![1; 40];
    f.vlan_tpids = vec![0x8100];
    variants.push(("IPv4 IHL 15", f));
    let ext_cases: [(&str, common::ExtHeaders); 5] = [
        ("IPv6 hop-by-hop", vec![(0, vec![1, 4, 0, 0, 0, 0])]),
        (
            "IPv6 destination options",
            vec![(60, vec![1, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])],
        ),
        ("IPv6 routing", vec![(43, vec![0, 0, 0, 0, 0, 0])]),
        ("IPv6 first fragment", vec![(44, vec![0, 1, 0, 0, 0, 7])]),
        (
            "IPv6 hop-by-hop, routing, AH, destination options",
            vec![
                (0, vec![1, 4, 0, 0, 0, 0]),
                (43, vec![0, 0, 0, 0, 0, 0]),
                (51, vec![0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 1, 2, 3, 4]),
                (60, vec![1, 4, 0, 0, 0, 0]),
            ],
        ),
    ];
    for (name, exts) in ext_cases {
        let mut f = Frame::tcp(scanner6(), 52_000, victim6(), 0, SYN, 1);
        f.ext_headers = exts;
        variants.push((name, f));
    }
    for (i, (name, mut probe)) in variants.into_iter().enumerate() {
        let port = 5000 + i as u16;
        if let common::Transport::Tcp { dst_port, .. } = &mut probe.transport {
            *dst_port = port;
        }
        h.inbound_frame(&probe);
        h.outbound_frame(&probe.refusal());
        let events = h.events();
        assert_eq!(events.len(), 1, "{name}: {events:?}");
        assert_eq!(
            (events[0].dst_port, events[0].src_port),
            (port, 52_000),
            "{name}"
        );
    }
    assert_eq!(h.counter(Counter::Malformed), 0);
}

#[test]
fn later_fragments_are_ignored() {
    if !require_root("later_fragments_are_ignored") {
        return;
    }
    let mut h = Harness::new();
    // Later fragments whose bytes happen to look like a SYN's TCP header.
    let mut v4_fragment = syn(53_000, 22, 1);
    v4_fragment.frag_offset = 185;
    let mut v6_fragment = Frame::tcp(scanner6(), 53_000, victim6(), 22, SYN, 1);
    v6_fragment.ext_headers = vec![(44, vec![0x05, 0xc8, 0, 0, 0, 7])]; // offset 185
    for f in [&v4_fragment, &v6_fragment] {
        h.inbound_frame(f);
        h.outbound_frame(&f.refusal());
    }
    assert!(h.events().is_empty());
    assert_eq!(h.counter(Counter::Syns), 0);
    assert_eq!(h.counter(Counter::Malformed), 0);
}

/// Cuts `frame` at every length from 14 (BPF_PROG_TEST_RUN needs an Ethernet header) to
/// the end of its headers, runs each through XDP, and checks that nothing was recorded:
/// the full answer then matches nothing. Returns how many cuts were made.
fn assert_truncations_record_nothing(h: &mut Harness, probe: &Frame) -> usize {
    let full = probe.bytes();
    let cuts = 14..full.len();
    let count = cuts.len();
    for len in cuts {
        h.inbound(&full[..len]);
    }
    h.outbound_frame(&probe.refusal());
    assert!(
        h.events().is_empty(),
        "a truncated attempt must not be recorded: {probe:?}"
    );
    count
}

#[test]
fn truncated_frames_pass_and_count_nothing_but_malformed() {
    if !require_root("truncated_frames_pass_and_count_nothing_but_malformed") {
        return;
    }
    let mut h = Harness::new();
    let mut v4_probe = syn(54_000, 21, 31_337).with_tcp_options(&[2, 4, 0x05, 0xb4]);
    v4_probe.vlan_tpids = vec![0x8100];
    v4_probe.ip_options = vec![1; 4];
    let mut v6_probe =
        Frame::tcp(scanner6(), 54_000, victim6(), 21, SYN, 1).with_tcp_options(&[2, 4, 0x05, 0xa0]);
    v6_probe.vlan_tpids = vec![0x88a8, 0x8100];
    v6_probe.ext_headers = vec![(0, vec![1, 4, 0, 0, 0, 0]), (60, vec![1, 4, 0, 0, 0, 0])];
    let mut cuts = 0;
    for probe in [&v4_probe, &v6_probe] {
        cuts += assert_truncations_record_nothing(&mut h, probe);
    }
    // Every cut ends inside a header: every one is malformed, none is a SYN.
    assert_eq!(h.counter(Counter::Malformed), cuts as u64);
    assert_eq!(h.counter(Counter::Syns), 0);

    // Record the full SYN and cut its answer at every boundary: no event either.
    h.inbound_frame(&v4_probe);
    let answer = v4_probe.refusal().bytes();
    for len in 14..answer.len() {
        h.outbound(&answer[..len]);
    }
    assert!(h.events().is_empty(), "a truncated RST must not match");
    assert_eq!(
        h.counter(Counter::Malformed),
        (cuts + answer.len() - 14) as u64
    );
    // The intact answer still matches: the recorded SYN was not disturbed.
    h.outbound(&answer);
    assert_eq!(h.one_event().dst_port, 21);
}

#[test]
fn truncated_udp_and_icmp_headers_are_malformed_and_record_nothing() {
    if !require_root("truncated_udp_and_icmp_headers_are_malformed_and_record_nothing") {
        return;
    }
    let mut h = Harness::new();
    let mut cuts = 0;
    for (probe, answer) in [
        {
            let p = Frame::udp(scanner(), 56_100, victim(), 161);
            let a = p.unreachable(3);
            (p, a)
        },
        {
            let p = Frame::udp(scanner6(), 56_101, victim6(), 161);
            let a = p.unreachable(4);
            (p, a)
        },
        {
            let p = Frame::echo_request(scanner(), victim(), 9, 1);
            let a = p.echo_reply();
            (p, a)
        },
        {
            let mut p = Frame::echo_request(scanner6(), victim6(), 9, 2);
            p.vlan_tpids = vec![0x8100];
            p.ext_headers = vec![(60, vec![1, 4, 0, 0, 0, 0])];
            let a = p.echo_reply();
            (p, a)
        },
    ] {
        let full = probe.bytes();
        for len in 14..full.len() {
            h.inbound(&full[..len]);
            cuts += 1;
        }
        h.outbound_frame(&answer);
        assert!(
            h.events().is_empty(),
            "a truncated attempt must not be recorded: {probe:?}"
        );
    }
    assert_eq!(h.counter(Counter::Malformed), cuts);
    assert_eq!(h.counter(Counter::UdpIn) + h.counter(Counter::EchoIn), 0);
}

#[test]
fn truncated_icmp_quotes_match_nothing() {
    if !require_root("truncated_icmp_quotes_match_nothing") {
        return;
    }
    let mut h = Harness::new();
    let probe = Frame::udp(scanner(), 55_000, victim(), 69);
    h.inbound_frame(&probe);
    let error = probe.unreachable(3).bytes();
    // Cut inside the quoted IP and UDP headers: the outer packet is fine, the quote is not.
    let quote_start = 14 + 20 + 8;
    for len in quote_start..error.len() {
        let mut cut = error[..len].to_vec();
        // Keep the outer IP length consistent with the cut, as a sender truncating would.
        let ip_len = (len - 14) as u16;
        cut[16..18].copy_from_slice(&ip_len.to_be_bytes());
        h.outbound(&cut);
    }
    assert!(h.events().is_empty());
    h.outbound(&error);
    assert_eq!(h.one_event().outcome, Outcome::Refused);
}

#[test]
fn impossible_header_lengths_are_malformed() {
    if !require_root("impossible_header_lengths_are_malformed") {
        return;
    }
    let mut h = Harness::new();
    let good = syn(56_000, 53, 1).bytes();
    let mut cases = Vec::new();
    let mut ihl_too_small = good.clone();
    ihl_too_small[14] = 0x44; // IHL 4 (16 bytes) < 20
    cases.push(ihl_too_small);
    let mut not_v4 = good.clone();
    not_v4[14] = 0x65; // version 6 under an IPv4 ethertype
    cases.push(not_v4);
    let mut doff_too_small = good.clone();
    doff_too_small[14 + 20 + 12] = 0x40; // data offset 4 (16 bytes) < 20
    cases.push(doff_too_small);
    let mut total_len_short = good.clone();
    total_len_short[16..18].copy_from_slice(&30u16.to_be_bytes()); // < IHL + data offset
    cases.push(total_len_short);
    let mut ihl_past_end = good.clone();
    ihl_past_end[14] = 0x4f; // 60-byte header announced, 40 bytes of IP + TCP present
    cases.push(ihl_past_end);
    // Seven IPv6 extension headers: more than the bounded walk takes.
    let mut long_chain = Frame::tcp(scanner6(), 56_000, victim6(), 53, SYN, 1);
    long_chain.ext_headers = (0..7).map(|_| (60, vec![1, 4, 0, 0, 0, 0])).collect();
    cases.push(long_chain.bytes());
    // An extension header longer than the IPv6 payload length says.
    let mut overlong = Frame::tcp(scanner6(), 56_000, victim6(), 53, SYN, 1);
    overlong.ext_headers = vec![(60, vec![1, 4, 0, 0, 0, 0])];
    let mut overlong = overlong.bytes();
    overlong[14 + 4..14 + 6].copy_from_slice(&4u16.to_be_bytes());
    cases.push(overlong);
    for case in &cases {
        h.inbound(case);
    }
    h.outbound_frame(&syn(56_000, 53, 1).refusal());
    assert!(h.events().is_empty());
    assert_eq!(h.counter(Counter::Malformed), cases.len() as u64);
    assert_eq!(h.counter(Counter::Syns), 0);
}

#[test]
fn non_ip_and_established_traffic_pass_untouched() {
    if !require_root("non_ip_and_established_traffic_pass_untouched") {
        return;
    }
    let mut h = Harness::new();
    let mut arp = vec![0xffu8; 12];
    arp.extend_from_slice(&[0x08, 0x06]);
    arp.extend_from_slice(&[0; 28]);
    let established = Frame::tcp(scanner(), 57_000, victim(), 22, ACK | PSH, 100).with_ack(200);
    let gre = {
        let mut b = syn(1, 2, 3).bytes();
        b[14 + 9] = 47;
        b
    };
    for frame in [arp, established.bytes(), gre] {
        h.inbound(&frame);
        h.outbound(&frame);
    }
    assert_eq!(h.counter(Counter::IngressPackets), 3);
    assert_eq!(h.counter(Counter::EgressPackets), 3);
    assert_eq!(h.counter(Counter::Malformed), 0);
    assert_eq!(h.counter(Counter::StealthIn) + h.counter(Counter::Syns), 0);
    assert!(h.events().is_empty());
}

/// Whether the ring buffer's wait queue was woken since the last call: an edge-triggered
/// epoll registration reports an event only when the kernel notifies waiters (a wakeup),
/// not merely because data is there.
struct WakeupProbe {
    epoll: std::os::fd::OwnedFd,
}

impl WakeupProbe {
    fn new(ring: &impl std::os::fd::AsRawFd) -> Self {
        use std::os::fd::FromRawFd as _;
        // SAFETY: epoll_create1 and epoll_ctl on descriptors we own; the event struct is
        // initialised and outlives the call.
        unsafe {
            let fd = libc::epoll_create1(libc::EPOLL_CLOEXEC);
            assert!(fd >= 0, "epoll_create1");
            let mut event = libc::epoll_event {
                events: (libc::EPOLLIN | libc::EPOLLET) as u32,
                u64: 0,
            };
            assert_eq!(
                libc::epoll_ctl(fd, libc::EPOLL_CTL_ADD, ring.as_raw_fd(), &raw mut event),
                0
            );
            Self {
                epoll: std::os::fd::OwnedFd::from_raw_fd(fd),
            }
        }
    }

    fn woken(&self) -> bool {
        use std::os::fd::AsRawFd as _;
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; 1];
        // SAFETY: the buffer holds one event, as the call is told.
        let n = unsafe { libc::epoll_wait(self.epoll.as_raw_fd(), events.as_mut_ptr(), 1, 0) };
        n == 1
    }
}

#[test]
fn an_event_after_a_quiet_spell_wakes_the_reader_unless_wakeups_are_off() {
    if !require_root("an_event_after_a_quiet_spell_wakes_the_reader_unless_wakeups_are_off") {
        return;
    }
    for (gap, expect) in [(Some(Duration::from_millis(1)), true), (None, false)] {
        let mut h = Harness::with(&KernelConfig {
            wakeup_gap: gap,
            ..KernelConfig::default()
        });
        let wakeups = WakeupProbe::new(h.events_fd());
        // The registration itself may report the (empty) ring once.
        let _ = wakeups.woken();
        // Wait out a 1 ms gap since load, so the first event counts as after a quiet spell.
        std::thread::sleep(Duration::from_millis(5));
        let probe = syn(40_001, 23, 7);
        h.inbound_frame(&probe);
        h.outbound_frame(&probe.refusal());
        assert_eq!(wakeups.woken(), expect, "wakeup gap {gap:?}");
        // A second event right after: within the gap, so no wakeup however it is set (the
        // ring is far from a quarter full).
        let probe = syn(40_002, 24, 8);
        h.inbound_frame(&probe);
        h.outbound_frame(&probe.refusal());
        assert!(!wakeups.woken(), "a second wakeup within the gap ({gap:?})");
        // Once the gap has passed, the next event wakes it again.
        std::thread::sleep(Duration::from_millis(5));
        let probe = syn(40_003, 25, 9);
        h.inbound_frame(&probe);
        h.outbound_frame(&probe.refusal());
        assert_eq!(wakeups.woken(), expect, "wakeup gap {gap:?}, after it");
        assert_eq!(h.events().len(), 3);
    }
}

#[test]
fn a_blocked_source_is_dropped_until_its_block_expires_or_is_lifted() {
    if !require_root("a_blocked_source_is_dropped_until_its_block_expires_or_is_lifted") {
        return;
    }
    const XDP_DROP: u32 = 1;
    let policy = BlockPolicy {
        ttl: Duration::from_secs(3600),
        block_spoofed: false,
        never: vec![(Cidr::host(victim()), Spared::Ours)],
    };
    let mut h = Harness::with(&KernelConfig {
        block: true,
        ..KernelConfig::default()
    });
    let mut blocker = Blocker::new(&mut h.ebpf, policy.clone()).unwrap();
    let probe = syn(40_000, 23, 1);
    let now = clock::monotonic_now;
    blocker
        .add(scanner(), Some(Duration::from_secs(10)), now())
        .unwrap();
    assert_eq!(h.xdp_verdict(&probe.bytes()), XDP_DROP);
    assert_eq!(h.xdp_verdict(&probe.bytes()), XDP_DROP);
    assert_eq!(h.counter(Counter::Blocked), 2);
    // Dropped before anything else looks at it: no attempt recorded, no event.
    assert_eq!(h.counter(Counter::Syns), 0);
    // Other sources, and the other family, pass.
    h.inbound_frame(&Frame::tcp(scanner6(), 40_000, victim6(), 23, SYN, 1));
    let listed = blocker.list(now());
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0].addr, listed[0].packets), (scanner(), 2));
    assert!((9..=10).contains(&listed[0].expires_in_s), "{listed:?}");
    // Never-block rules hold for blocks by hand too.
    assert!(matches!(
        blocker.add(victim(), None, now()),
        Err(BlockError::Spared {
            why: Spared::Ours,
            ..
        })
    ));
    // Lifted by hand: passes again.
    assert!(blocker.remove(scanner()).unwrap());
    assert!(!blocker.remove(scanner()).unwrap());
    h.inbound_frame(&probe);
    // Expired: the next frame passes, and the block is gone.
    blocker.add(scanner(), Some(Duration::ZERO), now()).unwrap();
    h.inbound_frame(&syn(40_001, 24, 2));
    assert!(blocker.list(now()).is_empty());
    assert_eq!(h.counter(Counter::Blocked), 2);

    // With blocking off the map is never read, whatever it holds.
    let mut off = Harness::new();
    let mut blocker = Blocker::new(&mut off.ebpf, policy).unwrap();
    blocker.add(scanner(), None, now()).unwrap();
    off.inbound_frame(&probe);
    assert_eq!(off.counter(Counter::Blocked), 0);
}

#[test]
fn a_full_ring_counts_its_drops_and_events_flow_again_once_it_is_read() {
    if !require_root("a_full_ring_counts_its_drops_and_events_flow_again_once_it_is_read") {
        return;
    }
    // One page of ring (about 64 records) and a reader that does not read: a slow consumer.
    let mut h = Harness::with(&KernelConfig {
        ringbuf_bytes: 4096,
        ..KernelConfig::default()
    });
    let refuse = |h: &mut Harness, port: u16| {
        let probe = syn(41_000, port, u32::from(port));
        h.inbound_frame(&probe);
        h.outbound_frame(&probe.refusal());
    };
    for port in 1..=200 {
        refuse(&mut h, port);
    }
    let kept = h.events().len() as u64;
    let dropped = h.counter(Counter::RingbufDrops);
    assert!(kept < 200 && kept > 0, "{kept} events kept");
    assert_eq!(
        kept + dropped,
        200,
        "every event is either kept or counted as dropped"
    );
    assert_eq!(h.counter(Counter::EventsSent), kept);
    // Read: room again, and the next refusals arrive, each one.
    for port in 201..=210 {
        refuse(&mut h, port);
    }
    let after: Vec<u16> = h.events().iter().map(|e| e.dst_port).collect();
    assert_eq!(after, (201..=210).collect::<Vec<_>>());
    assert_eq!(
        h.counter(Counter::RingbufDrops),
        dropped,
        "no drop once read"
    );
}
