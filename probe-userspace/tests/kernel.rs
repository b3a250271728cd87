//! Kernel tests: the real eBPF object is loaded (verifier included) and crafted frames are
//! run through its XDP (ingress) and TC (egress) programs with BPF_PROG_TEST_RUN. No packet
//! goes on any wire. Needs root.

mod common;

use std::net::{IpAddr, Ipv4Addr};

use aya::{
    Ebpf,
    maps::{HashMap as BpfHashMap, MapData, RingBuf},
    programs::{TestRun as _, TestRunOptions},
};
use common::{ACK, FIN, PSH, SYN, TcpFrame, require_root};
use probe_common::{Counter, EVENTS_MAP, FAILURES_MAP, FailKey, IPPROTO_TCP, ipv4_mapped};
use probe_userspace::{
    event::{Probe, ProbeKind},
    loader,
};

const XDP_PASS: u32 = 2;
const TC_ACT_OK: u32 = 0;

const SCANNER: [u8; 4] = [198, 18, 0, 1];
const VICTIM: [u8; 4] = [198, 18, 0, 2];

/// The loaded object with its ring buffer taken out, so both can be used at once.
struct Harness {
    ebpf: Ebpf,
    events: RingBuf<MapData>,
}

impl Harness {
    fn new() -> Self {
        let mut ebpf = loader::load().expect("the eBPF object loads and passes the verifier");
        let events = RingBuf::try_from(ebpf.take_map(EVENTS_MAP).expect("EVENTS map")).unwrap();
        Self { ebpf, events }
    }

    /// Runs a frame through the XDP program (inbound), asserting it passes.
    fn inbound(&mut self, frame: &[u8]) {
        let xdp = loader::xdp_program(&mut self.ebpf).unwrap();
        let result = xdp
            .test_run(TestRunOptions {
                data_in: Some(frame),
                ..Default::default()
            })
            .expect("XDP test run");
        assert_eq!(
            result.return_value, XDP_PASS,
            "XDP must pass every frame: {frame:02x?}"
        );
    }

    /// Runs a frame through the TC program (outbound), asserting it passes.
    fn outbound(&mut self, frame: &[u8]) {
        let tc = loader::tc_program(&mut self.ebpf).unwrap();
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

    /// Every event waiting in the ring buffer.
    fn events(&mut self) -> Vec<Probe> {
        let mut out = Vec::new();
        while let Some(record) = self.events.next() {
            out.push(Probe::decode(&record).expect("well-formed record"));
        }
        out
    }

    fn counter(&self, counter: Counter) -> u64 {
        loader::counters(&self.ebpf)
            .unwrap()
            .into_iter()
            .find(|(c, _)| *c == counter)
            .map(|(_, v)| v)
            .unwrap()
    }

    /// The kernel's failure count for (src, dst, port).
    fn failures(&self, src: [u8; 4], dst: [u8; 4], port: u16) -> Option<u64> {
        let map: BpfHashMap<_, FailKey, u64> =
            BpfHashMap::try_from(self.ebpf.map(FAILURES_MAP).unwrap()).unwrap();
        let key = FailKey {
            src_addr: ipv4_mapped(src),
            dst_addr: ipv4_mapped(dst),
            dst_port: port,
            proto: IPPROTO_TCP,
            _pad: [0; 5],
        };
        map.get(&key, 0).ok()
    }
}

fn syn(src_port: u16, dst_port: u16, seq: u32) -> TcpFrame {
    TcpFrame::new(SCANNER, src_port, VICTIM, dst_port, SYN).seq(seq)
}

#[test]
fn syn_refused_by_our_rst_is_one_event() {
    if !require_root("syn_refused_by_our_rst_is_one_event") {
        return;
    }
    let mut h = Harness::new();
    let probe = syn(40_000, 23, 1_000);
    h.inbound(&probe.bytes());
    assert!(h.events().is_empty(), "a SYN alone is no failure");
    h.outbound(&probe.refusal().bytes());

    let events = h.events();
    assert_eq!(events.len(), 1, "{events:?}");
    let e = &events[0];
    assert_eq!(e.src, IpAddr::V4(Ipv4Addr::from(SCANNER)));
    assert_eq!(e.dst, IpAddr::V4(Ipv4Addr::from(VICTIM)));
    assert_eq!((e.src_port, e.dst_port, e.proto), (40_000, 23, IPPROTO_TCP));
    assert_eq!(e.kind, ProbeKind::SynRefused);
    assert_eq!(e.tcp_flags, SYN);
    assert!(e.timestamp.as_nanos() > 0);
    assert_eq!(h.failures(SCANNER, VICTIM, 23), Some(1));
    assert_eq!(h.counter(Counter::Syns), 1);
    assert_eq!(h.counter(Counter::RstsOut), 1);
    assert_eq!(h.counter(Counter::FailedAttempts), 1);
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
        h.inbound(&probe.bytes());
        h.outbound(&probe.refusal().bytes());
    }
    assert_eq!(
        h.events().len(),
        1,
        "only the first failure of a (source, target, port)"
    );
    assert_eq!(h.failures(SCANNER, VICTIM, 445), Some(5));
    assert_eq!(h.counter(Counter::FailedAttempts), 5);
    assert_eq!(h.counter(Counter::EventsSent), 1);

    // Another port is a new triple: one more event.
    let probe = syn(50_100, 139, 1);
    h.inbound(&probe.bytes());
    h.outbound(&probe.refusal().bytes());
    let events = h.events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].dst_port, 139);
}

#[test]
fn syn_answered_by_syn_ack_is_no_event() {
    if !require_root("syn_answered_by_syn_ack_is_no_event") {
        return;
    }
    let mut h = Harness::new();
    let probe = syn(41_000, 80, 99);
    h.inbound(&probe.bytes());
    h.outbound(&probe.acceptance().bytes());
    assert!(h.events().is_empty());
    assert_eq!(h.counter(Counter::Answered), 1);
    // A reset of that accepted connection later is not a refused probe either.
    h.outbound(&probe.refusal().bytes());
    assert!(
        h.events().is_empty(),
        "an accepted attempt cannot be refused afterwards"
    );
    assert_eq!(h.counter(Counter::FailedAttempts), 0);
    assert_eq!(h.failures(SCANNER, VICTIM, 80), None);
}

#[test]
fn rst_that_answers_no_recorded_syn_is_no_event() {
    if !require_root("rst_that_answers_no_recorded_syn_is_no_event") {
        return;
    }
    let mut h = Harness::new();
    // No SYN seen at all.
    h.outbound(&syn(42_000, 25, 5).refusal().bytes());
    // A SYN seen, but the RST acknowledges another sequence number.
    let probe = syn(42_001, 25, 5);
    h.inbound(&probe.bytes());
    h.outbound(&probe.refusal().ack(12_345).bytes());
    // The RST of another flow (other source port).
    h.outbound(&syn(42_002, 25, 5).refusal().bytes());
    assert!(h.events().is_empty());
    assert_eq!(h.counter(Counter::RstsOut), 3);
    assert_eq!(h.counter(Counter::FailedAttempts), 0);
    // The right answer still matches afterwards.
    h.outbound(&probe.refusal().bytes());
    assert_eq!(h.events().len(), 1);
}

#[test]
fn our_own_failed_connection_is_no_probe() {
    if !require_root("our_own_failed_connection_is_no_probe") {
        return;
    }
    let mut h = Harness::new();
    // We connect out (SYN at egress) and the remote refuses (RST|ACK at ingress).
    let ours = TcpFrame::new(VICTIM, 43_000, SCANNER, 8080, SYN).seq(777);
    h.outbound(&ours.bytes());
    h.inbound(&ours.refusal().bytes());
    assert!(h.events().is_empty());
    assert_eq!(
        h.counter(Counter::Syns),
        0,
        "an outbound SYN is not an inbound attempt"
    );
    assert_eq!(h.counter(Counter::FailedAttempts), 0);
}

#[test]
fn syn_with_payload_is_matched_by_the_acknowledged_length() {
    if !require_root("syn_with_payload_is_matched_by_the_acknowledged_length") {
        return;
    }
    let mut h = Harness::new();
    let mut probe = syn(44_000, 443, 4_000_000_000);
    probe.payload = b"GET / HTTP/1.0\r\n\r\n".to_vec();
    h.inbound(&probe.bytes());
    h.outbound(&probe.refusal().bytes()); // ack = seq + 1 + 18, wrapping
    assert_eq!(h.events().len(), 1);
}

#[test]
fn vlan_tags_and_ip_options_are_parsed() {
    if !require_root("vlan_tags_and_ip_options_are_parsed") {
        return;
    }
    let mut h = Harness::new();
    let variants: [(&[u16], Vec<u8>, u16); 4] = [
        (&[0x8100], vec![], 1001),
        (&[0x88a8, 0x8100], vec![], 1002),
        // Record-route option (IHL 8): the TCP header is at 14 + 32, not 14 + 20.
        (&[], vec![7, 11, 4, 0, 0, 0, 0, 0, 0, 0, 0], 1003),
        // IHL 15, the maximum: 40 bytes of NOP options.
        (&[0x8100], vec![1; 40], 1004),
    ];
    for (tpids, ip_options, port) in variants {
        let mut probe = syn(45_000, port, u32::from(port));
        probe.vlan_tpids = tpids.to_vec();
        probe.ip_options = ip_options.clone();
        probe.tcp_options = vec![2, 4, 0x05, 0xb4, 4, 2, 1, 1]; // MSS 1460, SACK-permitted
        h.inbound(&probe.bytes());
        let mut answer = probe.refusal();
        answer.vlan_tpids = tpids.to_vec();
        h.outbound(&answer.bytes());
        let events = h.events();
        assert_eq!(
            events.len(),
            1,
            "tags {tpids:x?}, {} option bytes",
            ip_options.len()
        );
        assert_eq!(events[0].dst_port, port);
        assert_eq!(events[0].src_port, 45_000);
    }
    assert_eq!(h.counter(Counter::Malformed), 0);
}

#[test]
fn stealth_flags_and_later_fragments_are_not_syn_attempts() {
    if !require_root("stealth_flags_and_later_fragments_are_not_syn_attempts") {
        return;
    }
    let mut h = Harness::new();
    for (i, flags) in [FIN, 0, FIN | PSH | 0x20, FIN | ACK, ACK, SYN | ACK]
        .into_iter()
        .enumerate()
    {
        let probe = TcpFrame::new(SCANNER, 46_000 + i as u16, VICTIM, 22, flags).seq(1);
        h.inbound(&probe.bytes());
        h.outbound(&syn(46_000 + i as u16, 22, 1).refusal().bytes());
    }
    // A later fragment whose bytes happen to look like a SYN's TCP header.
    let mut fragment = syn(47_000, 22, 1);
    fragment.frag_offset = 185;
    h.inbound(&fragment.bytes());
    h.outbound(&fragment.refusal().bytes());
    assert!(h.events().is_empty());
    assert_eq!(h.counter(Counter::Syns), 0);
    assert_eq!(h.counter(Counter::Malformed), 0);
}

#[test]
fn truncated_frames_pass_and_count_nothing_but_malformed() {
    if !require_root("truncated_frames_pass_and_count_nothing_but_malformed") {
        return;
    }
    let mut h = Harness::new();
    let mut probe = syn(48_000, 21, 31_337);
    probe.vlan_tpids = vec![0x8100];
    probe.ip_options = vec![1; 4];
    probe.tcp_options = vec![2, 4, 0x05, 0xb4];
    let full = probe.bytes();
    let headers = full.len(); // no payload: every byte belongs to a header
    // BPF_PROG_TEST_RUN needs at least an Ethernet header, so cuts start at 14 bytes:
    // inside the tag, the IPv4 header, its options, the TCP header and its options.
    let cuts: Vec<usize> = (14..headers).collect();
    for &len in &cuts {
        h.inbound(&full[..len]);
    }
    // No truncated SYN was recorded: the full answer matches nothing.
    let mut answer = probe.refusal();
    answer.vlan_tpids = vec![0x8100];
    let answer_bytes = answer.bytes();
    h.outbound(&answer_bytes);
    assert!(
        h.events().is_empty(),
        "a truncated SYN must not be recorded"
    );
    assert_eq!(h.counter(Counter::Syns), 0);

    // Now record the full SYN and cut its answer at every boundary: no event either.
    h.inbound(&full);
    for len in 14..answer_bytes.len() {
        h.outbound(&answer_bytes[..len]);
    }
    assert!(h.events().is_empty(), "a truncated RST must not match");
    let expected_malformed = cuts.len() + (14..answer_bytes.len()).count();
    assert_eq!(h.counter(Counter::Malformed), expected_malformed as u64);
    // The intact answer still matches: the recorded SYN was not disturbed.
    h.outbound(&answer_bytes);
    assert_eq!(h.events().len(), 1);
}

#[test]
fn impossible_header_lengths_are_malformed() {
    if !require_root("impossible_header_lengths_are_malformed") {
        return;
    }
    let mut h = Harness::new();
    let good = syn(49_000, 53, 1).bytes();
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
    for case in &cases {
        h.inbound(case);
    }
    h.outbound(&syn(49_000, 53, 1).refusal().bytes());
    assert!(h.events().is_empty());
    assert_eq!(h.counter(Counter::Malformed), cases.len() as u64);
    assert_eq!(h.counter(Counter::Syns), 0);
}

#[test]
fn non_tcp_and_non_ip_frames_pass_untouched() {
    if !require_root("non_tcp_and_non_ip_frames_pass_untouched") {
        return;
    }
    let mut h = Harness::new();
    let mut arp = vec![0xffu8; 12];
    arp.extend_from_slice(&[0x08, 0x06]);
    arp.extend_from_slice(&[0; 28]);
    let mut udp = syn(1, 2, 3).bytes();
    udp[14 + 9] = 17;
    let mut ipv6 = vec![0u8; 12];
    ipv6.extend_from_slice(&[0x86, 0xdd]);
    ipv6.extend_from_slice(&[0x60; 40]);
    for frame in [&arp, &udp, &ipv6] {
        h.inbound(frame);
        h.outbound(frame);
    }
    assert_eq!(h.counter(Counter::IngressPackets), 3);
    assert_eq!(h.counter(Counter::EgressPackets), 3);
    assert_eq!(h.counter(Counter::Malformed), 0);
    assert!(h.events().is_empty());
}
