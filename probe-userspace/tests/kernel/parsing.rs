//! Parsing in the kernel: IPv6, encapsulations, fragments, truncation at every header boundary, impossible lengths, non-IP traffic.

use crate::{common, harness::*};

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
fn an_ipv6_probe_from_an_ipv4_mapped_source_does_not_pass_for_the_ipv4_host() {
    if !require_root("an_ipv6_probe_from_an_ipv4_mapped_source_does_not_pass_for_the_ipv4_host") {
        return;
    }
    let mut h = Harness::new();
    let mapped = v6("::ffff:198.18.0.1");
    // To the victim's IPv4 address, mapped too: the same 16 bytes as the IPv4 probe below.
    let probe = Frame::tcp(mapped, 51_000, v6("::ffff:198.18.0.2"), 23, SYN, 10);
    h.inbound_frame(&probe);
    h.outbound_frame(&probe.refusal());
    let e = h.one_event();
    assert_eq!(e.src, mapped, "not {}", scanner());
    assert!(probe_userspace::detect::is_martian(e.src));
    // The IPv4 host's own probe of the same port is the IPv4 host's, not a repeat.
    let own = Frame::tcp(scanner(), 51_000, victim(), 23, SYN, 10);
    h.inbound_frame(&own);
    h.outbound_frame(&own.refusal());
    assert_eq!(h.one_event().src, scanner());
}

#[test]
fn encapsulations_are_parsed() {
    if !require_root("encapsulations_are_parsed") {
        return;
    }
    // Each outcome's own event, source port included: no summaries once the scanner of
    // these many variants is decided.
    let mut h = Harness::with(&KernelConfig {
        summarize: false,
        ..every_event()
    });
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

/// `probe` as nmap -f sends it: its first fragment, eight bytes of TCP header (ports and
/// sequence number, no flags), more fragments to come.
fn first_fragment(probe: &Frame) -> Vec<u8> {
    let full = probe.bytes();
    if probe.src.is_ipv4() {
        let mut f = full[..14 + 20 + 8].to_vec();
        f[16..18].copy_from_slice(&28u16.to_be_bytes());
        f[20..22].copy_from_slice(&0x2000u16.to_be_bytes());
        f
    } else {
        // A fragment header (offset 0, M set) before the first eight bytes of TCP.
        let mut fragmented = probe.clone();
        fragmented.ext_headers = vec![(44, vec![0x00, 0x01, 0, 0, 0, 9])];
        let full = fragmented.bytes();
        let mut f = full[..14 + 40 + 8 + 8].to_vec();
        f[18..20].copy_from_slice(&16u16.to_be_bytes());
        f
    }
}

#[test]
fn a_fragmented_syn_scan_is_seen_by_its_first_fragment_and_our_answer() {
    if !require_root("a_fragmented_syn_scan_is_seen_by_its_first_fragment_and_our_answer") {
        return;
    }
    let mut h = Harness::new();
    for probe in [
        syn(53_100, 22, 1000),
        Frame::tcp(scanner6(), 53_101, victim6(), 22, SYN, 2000),
    ] {
        h.inbound(&first_fragment(&probe));
        // The kernel reassembles the SYN and refuses it.
        h.outbound_frame(&probe.refusal());
        let e = h.one_event();
        assert_eq!(
            (e.probe, e.outcome, e.dst_port, e.src),
            (ProbeType::TcpFragment, Outcome::Refused, 22, probe.src)
        );
    }
    assert_eq!(h.counter(Counter::Fragments), 2);
    assert_eq!(h.counter(Counter::Malformed), 0);
    // An answer to an attempt nobody recorded (an unseen SYN) is one refused attempt, once.
    let unseen = syn(53_102, 23, 3000);
    h.outbound_frame(&unseen.refusal());
    h.outbound_frame(&unseen.refusal());
    let e = h.one_event();
    assert_eq!((e.probe, e.dst_port), (ProbeType::TcpUnseen, 23));
    assert!(h.events().is_empty(), "the repeat is counted, not reported");
    // A port unreachable for a datagram nobody recorded: the UDP attempt it proves.
    let datagram = Frame::udp(scanner(), 53_103, victim(), 161);
    h.outbound_frame(&datagram.unreachable(3));
    let e = h.one_event();
    assert_eq!(
        (e.probe, e.outcome, e.dst_port),
        (ProbeType::Udp, Outcome::Refused, 161)
    );
    assert_eq!(h.counter(Counter::Unseen), 3);
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
    // Nothing recorded at ingress; each answer is reported once, as the unseen attempt it
    // proves (the reassembled packet it answers).
    let events = h.events();
    assert_eq!(events.len(), 2);
    assert!(events.iter().all(|e| e.probe == ProbeType::TcpUnseen));
    assert_eq!(h.counter(Counter::Syns), 0);
    assert_eq!(h.counter(Counter::Fragments), 0);
    assert_eq!(h.counter(Counter::Malformed), 0);
}

/// Cuts `frame` at every length from 14 (BPF_PROG_TEST_RUN needs an Ethernet header) to
/// the end of its headers, runs each through XDP, and checks that nothing was recorded:
/// the full answer then matches no recorded attempt, and is reported only as the one
/// unseen attempt it proves. Returns how many cuts were made.
fn assert_truncations_record_nothing(h: &mut Harness, probe: &Frame) -> usize {
    let full = probe.bytes();
    let cuts = 14..full.len();
    let count = cuts.len();
    for len in cuts {
        h.inbound(&full[..len]);
    }
    h.outbound_frame(&probe.refusal());
    let events = h.events();
    assert!(
        events.len() == 1 && events[0].probe == ProbeType::TcpUnseen,
        "a truncated attempt must not be recorded: {probe:?} {events:?}"
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
        // Not recorded: an echo reply settles nothing; a port unreachable is reported
        // only as the unseen attempt it proves.
        let events = h.events();
        assert!(
            events.iter().all(|e| e.probe == ProbeType::Udp) && events.len() <= 1,
            "a truncated attempt must not be recorded: {probe:?} {events:?}"
        );
    }
    assert_eq!(h.counter(Counter::Malformed), cuts);
    assert_eq!(h.counter(Counter::UdpIn) + h.counter(Counter::EchoIn), 0);
    assert_eq!(h.counter(Counter::Unseen), 2, "the two UDP answers");
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
    // An extension header longer than the IPv6 payload length says.
    let mut overlong = Frame::tcp(scanner6(), 56_000, victim6(), 53, SYN, 1);
    overlong.ext_headers = vec![(60, vec![1, 4, 0, 0, 0, 0])];
    let mut overlong = overlong.bytes();
    overlong[14 + 4..14 + 6].copy_from_slice(&4u16.to_be_bytes());
    cases.push(overlong);
    for case in &cases {
        h.inbound(case);
    }
    // None was recorded: our answer is reported only as the one unseen attempt it proves.
    h.outbound_frame(&syn(56_000, 53, 1).refusal());
    let events = h.events();
    assert!(
        events.len() == 1 && events[0].probe == ProbeType::TcpUnseen,
        "{events:?}"
    );
    assert_eq!(h.counter(Counter::Malformed), cases.len() as u64);
    assert_eq!(h.counter(Counter::Syns), 0);
    // Seven IPv6 extension headers, more than the bounded walk takes, are not malformed
    // (Linux accepts them): counted as a long chain, nothing parsed past it.
    let mut long_chain = Frame::tcp(scanner6(), 56_000, victim6(), 53, SYN, 1);
    long_chain.ext_headers = (0..7).map(|_| (60, vec![1, 4, 0, 0, 0, 0])).collect();
    h.inbound(&long_chain.bytes());
    assert_eq!(h.counter(Counter::LongChains), 1);
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
