//! Host tests of the parser on byte buffers: `start` and `end` are the buffer's
//! addresses, as the programs' `data` and `data_end` are the packet's.
extern crate std;
use std::{vec, vec::Vec};

use super::*;

/// Ethernet with `tpids` VLAN tags (outermost first) and `ether_type`.
fn ethernet(tpids: &[u16], ether_type: u16) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];
    for tpid in tpids {
        f.extend(tpid.to_be_bytes());
        f.extend([0x00, 0x07]);
    }
    f.extend(ether_type.to_be_bytes());
    f
}

/// A TCP header with `options` (a multiple of 4 bytes).
fn tcp_header(dst_port: u16, flags: u8, options: &[u8]) -> Vec<u8> {
    let doff = (20 + options.len()) / 4;
    let mut t = Vec::new();
    t.extend(40_000u16.to_be_bytes());
    t.extend(dst_port.to_be_bytes());
    t.extend(1000u32.to_be_bytes());
    t.extend(0u32.to_be_bytes());
    t.push((doff as u8) << 4);
    t.push(flags);
    t.extend([0xff, 0xff, 0, 0, 0, 0]);
    t.extend(options);
    t
}

/// An IPv4 packet with `options` (a multiple of 4 bytes) around `payload`.
fn ipv4(proto: u8, options: &[u8], payload: &[u8]) -> Vec<u8> {
    let ihl = (20 + options.len()) / 4;
    let total = (ihl * 4 + payload.len()) as u16;
    let mut ip = vec![0x40 | ihl as u8, 0];
    ip.extend(total.to_be_bytes());
    ip.extend([0, 1, 0, 0, 57, proto, 0, 0, 198, 18, 0, 1, 198, 18, 0, 2]);
    ip.extend(options);
    ip.extend(payload);
    ip
}

/// An IPv6 packet whose payload is `exts` (each (type, whole header bytes)) then
/// `payload` with protocol `proto`.
fn ipv6(exts: &[(u8, Vec<u8>)], proto: u8, payload: &[u8]) -> Vec<u8> {
    let chain_len: usize = exts.iter().map(|(_, h)| h.len()).sum();
    let mut ip = vec![0x60, 0, 0, 0];
    ip.extend(((chain_len + payload.len()) as u16).to_be_bytes());
    ip.push(exts.first().map_or(proto, |(t, _)| *t));
    ip.push(64);
    ip.extend([0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    ip.extend([0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
    for (i, (_, header)) in exts.iter().enumerate() {
        let mut h = header.clone();
        h[0] = exts.get(i + 1).map_or(proto, |(t, _)| *t);
        ip.extend(h);
    }
    ip.extend(payload);
    ip
}

/// An 8-byte hop-by-hop or destination-options header (length field 0).
fn opts8() -> Vec<u8> {
    vec![0, 0, 1, 4, 0, 0, 0, 0]
}

fn frame(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

fn span(f: &[u8]) -> (usize, usize) {
    let start = f.as_ptr() as usize;
    (start, start + f.len())
}

fn located(f: &[u8]) -> Option<Headers> {
    let (start, end) = span(f);
    match locate(start, end) {
        Ok(h) => h,
        Err(Malformed) => panic!("malformed: {f:?}"),
    }
}

fn malformed(f: &[u8]) -> bool {
    let (start, end) = span(f);
    match locate(start, end) {
        Err(Malformed) => true,
        Ok(None) => false,
        Ok(Some(h)) => h.transport && h.proto == PROTO_TCP && tcp(start, end, &h).is_err(),
    }
}

fn syn_v4() -> Vec<u8> {
    frame(&[
        &ethernet(&[], ETH_P_IPV4),
        &ipv4(PROTO_TCP, &[], &tcp_header(22, TCP_SYN, &[])),
    ])
}

#[test]
fn an_ipv4_syn_is_located_and_read() {
    let f = syn_v4();
    let h = located(&f).expect("IP");
    assert_eq!((h.l3, h.l4, h.l4_len, h.proto), (14, 34, 20, PROTO_TCP));
    assert!(!h.v6 && h.transport);
    let (start, end) = span(&f);
    let Ok(t) = tcp(start, end, &h) else {
        panic!("tcp")
    };
    assert_eq!((t.src_port, t.dst_port, t.flags), (40_000, 22, TCP_SYN));
    assert_eq!((t.seq, t.payload_len), (1000, 0));
    assert_eq!(t.answer_id(), 1001, "a SYN's answer acknowledges seq + 1");
    let Ok(e) = endpoints(start, end, &h) else {
        panic!("endpoints")
    };
    assert_eq!(e.ttl, 57);
    let mut mapped = [0u8; 16];
    mapped[10..12].copy_from_slice(&[0xff, 0xff]);
    mapped[12..].copy_from_slice(&[198, 18, 0, 1]);
    assert_eq!(e.src.bytes(), mapped, "IPv4 mapped into IPv6");
}

#[test]
fn every_cut_inside_a_header_is_malformed() {
    for f in [
        syn_v4(),
        frame(&[
            &ethernet(&[ETH_P_8021AD, ETH_P_8021Q], ETH_P_IPV6),
            &ipv6(
                &[(EXT_HOP_BY_HOP, opts8())],
                PROTO_TCP,
                &tcp_header(80, TCP_SYN, &[]),
            ),
        ]),
    ] {
        for cut in 0..f.len() {
            assert!(malformed(&f[..cut]), "cut at {cut} of {}", f.len());
        }
        assert!(!malformed(&f));
    }
}

#[test]
fn ipv4_header_length_comes_from_ihl() {
    for words in 0..=10usize {
        let options = vec![1u8; words * 4];
        let f = frame(&[
            &ethernet(&[], ETH_P_IPV4),
            &ipv4(PROTO_TCP, &options, &tcp_header(22, TCP_SYN, &[])),
        ]);
        let h = located(&f).expect("IP");
        assert_eq!(h.l4, 34 + words * 4, "IHL {}", 5 + words);
        assert_eq!(h.l4_len, 20);
    }
    // IHL below 5 is impossible.
    let mut f = syn_v4();
    f[14] = 0x44;
    assert!(malformed(&f));
    // Options announced but cut off.
    let mut f = syn_v4();
    f[14] = 0x4f;
    f.truncate(14 + 40);
    assert!(malformed(&f));
}

#[test]
fn tcp_options_must_be_there_and_the_data_offset_sane() {
    let mss = [2, 4, 0x05, 0xb4];
    let f = frame(&[
        &ethernet(&[], ETH_P_IPV4),
        &ipv4(PROTO_TCP, &[], &tcp_header(22, TCP_SYN, &mss)),
    ]);
    let h = located(&f).expect("IP");
    let (start, end) = span(&f);
    assert!(tcp(start, end, &h).is_ok_and(|t| t.payload_len == 0));
    // Data offset 4 (16 bytes) is below the header.
    let mut bad = f.clone();
    bad[34 + 12] = 4 << 4;
    assert!(malformed(&bad));
    // Data offset 15 (60 bytes) with only 4 bytes of options present.
    let mut cut = f.clone();
    cut[34 + 12] = 15 << 4;
    assert!(malformed(&cut));
}

#[test]
fn vlan_tags_are_stepped_over() {
    for (tpids, l3) in [
        (&[][..], 14),
        (&[ETH_P_8021Q][..], 18),
        (&[ETH_P_8021AD][..], 18),
        (&[ETH_P_8021AD, ETH_P_8021Q][..], 22),
    ] {
        let f = frame(&[
            &ethernet(tpids, ETH_P_IPV4),
            &ipv4(PROTO_UDP, &[], &[0x9c, 0x40, 0, 53, 0, 8, 0, 0]),
        ]);
        let h = located(&f).expect("IP");
        assert_eq!((h.l3, h.proto), (l3, PROTO_UDP), "{tpids:?}");
        let (start, end) = span(&f);
        assert!(udp(start, end, &h).is_ok_and(|ports| ports == (40_000, 53)));
    }
    // A third tag is not walked: its type is not IP.
    let f = frame(&[
        &ethernet(&[ETH_P_8021AD, ETH_P_8021Q, ETH_P_8021Q], ETH_P_IPV4),
        &ipv4(PROTO_UDP, &[], &[0; 8]),
    ]);
    assert!(located(&f).is_none());
}

#[test]
fn ipv6_extension_headers_are_walked_to_the_transport() {
    let syn = tcp_header(443, TCP_SYN, &[]);
    let chain = [
        (EXT_HOP_BY_HOP, opts8()),
        (EXT_ROUTING, opts8()),
        (EXT_DEST_OPTS, {
            let mut h = vec![0, 1];
            h.resize(16, 0);
            h
        }),
    ];
    let f = frame(&[&ethernet(&[], ETH_P_IPV6), &ipv6(&chain, PROTO_TCP, &syn)]);
    let h = located(&f).expect("IP");
    assert_eq!((h.l4, h.proto, h.l4_len), (14 + 40 + 32, PROTO_TCP, 20));
    assert!(h.v6 && h.transport);
    // Six headers are walked; a longer chain ends the walk: not malformed (Linux
    // accepts it), no transport, marked, and its source still readable for the block.
    for n in [6, 7, 12] {
        let chain: Vec<(u8, Vec<u8>)> = (0..n).map(|_| (EXT_DEST_OPTS, opts8())).collect();
        let f = frame(&[&ethernet(&[], ETH_P_IPV6), &ipv6(&chain, PROTO_TCP, &syn)]);
        assert!(!malformed(&f), "{n} extension headers");
        let h = located(&f).expect("IP");
        assert_eq!(
            (h.shape == Shape::LongChain, h.transport),
            (n > 6, n <= 6),
            "{n}"
        );
        let (start, end) = span(&f);
        let net = network(start, end).ok();
        assert!(net.and_then(|net| source(start, end, net)).is_some());
    }
}

#[test]
fn fragments_say_whether_they_carry_the_transport_header() {
    let syn = tcp_header(22, TCP_SYN, &[]);
    let first = vec![0, 0, 0x00, 0x01, 0, 0, 0, 7];
    let later = vec![0, 0, 0x00, 0xb9, 0, 0, 0, 7];
    for (header, transport) in [(first, true), (later, false)] {
        let f = frame(&[
            &ethernet(&[], ETH_P_IPV6),
            &ipv6(&[(EXT_FRAGMENT, header)], PROTO_TCP, &syn),
        ]);
        let h = located(&f).expect("IP");
        assert_eq!(h.transport, transport);
    }
    // An IPv4 later fragment (offset 185 x 8 bytes).
    let mut f = syn_v4();
    f[14 + 6..14 + 8].copy_from_slice(&185u16.to_be_bytes());
    assert!(!located(&f).expect("IP").transport);
}

#[test]
fn other_ether_types_are_not_ip() {
    let arp = frame(&[&ethernet(&[], 0x0806), &[0; 28]]);
    assert!(located(&arp).is_none());
    let mut wrong_version = syn_v4();
    wrong_version[14] = 0x65;
    assert!(malformed(&wrong_version));
}
