//! Blocking (`--block`): a blocked source is dropped until its block expires or is lifted.

use crate::harness::*;
use probe_userspace::{
    detect::{DetectorName, Phase, ScanAlert, ScanKind, Spoof, Technique},
    policy::{budget::BudgetConfig, protect::Asker},
};

/// XDP's verdict on a frame it drops.
const XDP_DROP: u32 = 1;

/// The object loaded with blocking on, and a blocker with an hour's TTL, nothing never
/// blocked, and `budget`.
fn blocking(budget: BudgetConfig) -> (Harness, Blocker) {
    let mut h = Harness::with(&KernelConfig {
        block: true,
        ..every_event()
    });
    let policy = BlockPolicy {
        ttl: Duration::from_secs(3600),
        block_spoofed: false,
        never: Vec::new(),
    };
    let blocker = Blocker::new(&mut h.ebpf, policy, budget).unwrap();
    (h, blocker)
}

/// A vertical SYN scan of the victim from `sources`, begun 2 s before `now`.
fn scan_from(sources: &[IpAddr], now: Duration) -> ScanAlert {
    ScanAlert {
        phase: Phase::Start,
        detector: DetectorName::Threshold,
        kind: ScanKind::Vertical,
        src: sources[0],
        sources: sources.to_vec(),
        src_net: None,
        targets: vec![victim()],
        proto: 6,
        technique: Technique::Syn,
        ifindex: 1,
        ports: (1..=10).collect(),
        probes: 10,
        failed: 10,
        succeeded: 0,
        tcp_flags: SYN,
        score: 1.0,
        first_seen: now.saturating_sub(Duration::from_secs(2)),
        last_seen: now,
        spoof: Spoof {
            ttl_min: 64,
            ttl_max: 64,
            reasons: Vec::new(),
        },
    }
}

#[test]
fn a_blocked_source_is_dropped_until_its_block_expires_or_is_lifted() {
    if !require_root("a_blocked_source_is_dropped_until_its_block_expires_or_is_lifted") {
        return;
    }
    let policy = BlockPolicy {
        ttl: Duration::from_secs(3600),
        block_spoofed: false,
        never: vec![(Cidr::host(victim()), Spared::Ours)],
    };
    let mut h = Harness::with(&KernelConfig {
        block: true,
        ..every_event()
    });
    let mut blocker = Blocker::new(&mut h.ebpf, policy.clone(), BudgetConfig::default()).unwrap();
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
    let mut blocker = Blocker::new(&mut off.ebpf, policy, BudgetConfig::default()).unwrap();
    blocker.add(scanner(), None, now()).unwrap();
    off.inbound_frame(&probe);
    assert_eq!(off.counter(Counter::Blocked), 0);
}

#[test]
fn a_ttl_beyond_any_clock_saturates_instead_of_killing_the_daemon() {
    if !require_root("a_ttl_beyond_any_clock_saturates_instead_of_killing_the_daemon") {
        return;
    }
    let (mut h, mut blocker) = blocking(BudgetConfig::default());
    let now = clock::monotonic_now();
    // What `probe-detector block add ADDR --ttl 18446744073709551615` sends.
    let response = blocker.handle(
        &probe_userspace::policy::block_control::Request::Add {
            addr: scanner(),
            ttl_s: Some(u64::MAX),
        },
        now,
    );
    assert!(response.error.is_none(), "{response:?}");
    let listed = blocker.list(now);
    assert_eq!(listed.len(), 1);
    assert!(listed[0].expires_in_s > 100 * 365 * 86_400, "{listed:?}");
    assert_eq!(h.xdp_verdict(&syn(40_000, 23, 1).bytes()), 1, "dropped");
}

#[test]
fn forged_sources_cannot_aim_blocks_at_whom_we_need_and_our_own_connections_lift_them() {
    if !require_root(
        "forged_sources_cannot_aim_blocks_at_whom_we_need_and_our_own_connections_lift_them",
    ) {
        return;
    }
    let resolver = v4([198, 18, 0, 53]);
    let neighbour = v4([198, 18, 0, 60]);
    let now = clock::monotonic_now();
    let policy = BlockPolicy {
        ttl: Duration::from_secs(3600),
        block_spoofed: false,
        never: vec![
            (Cidr::host(victim()), Spared::Ours),
            (Cidr::host(resolver), Spared::Resolver),
            (
                Cidr::host(neighbour),
                Spared::Neighbour {
                    mac: [2, 0, 0, 0, 0, 0x60],
                },
            ),
        ],
    };
    let mut h = Harness::with(&KernelConfig {
        block: true,
        ..every_event()
    });
    let budget = BudgetConfig {
        rate: 1.0,
        burst: 3.0,
        prefix_cap: 2,
    };
    let mut blocker = Blocker::new(&mut h.ebpf, policy, budget).unwrap();
    // Every scan's frames came through the router's link-layer address.
    let router = [2, 0, 0, 0, 0, 1];
    let verdict = |blocker: &mut Blocker, src: IpAddr| {
        blocker
            .on_scan(&scan_from(&[src], now), now, |_| Some(router))
            .unwrap()[0]
            .1
    };
    // The resolver, and a neighbour whose address came in frames not its own: never, read
    // from the kernel's protected trie.
    assert_eq!(verdict(&mut blocker, resolver), Some(Spared::Resolver));
    assert!(matches!(
        verdict(&mut blocker, neighbour),
        Some(Spared::Neighbour { .. })
    ));
    // A peer: a host that answered a connection we started (SYN, then its SYN-ACK).
    let peer = v4([198, 18, 1, 80]);
    let ours = Frame::tcp(victim(), 41_000, peer, 443, SYN, 7_000);
    h.outbound_frame(&ours);
    assert_eq!(h.xdp_verdict(&ours.acceptance().bytes()), XDP_PASS);
    assert_eq!(verdict(&mut blocker, peer), Some(Spared::Peer));
    // A forged SYN-ACK (wrong acknowledgement) makes no peer.
    let stranger = v4([198, 18, 1, 81]);
    let theirs = Frame::tcp(victim(), 41_001, stranger, 443, SYN, 9_000);
    h.outbound_frame(&theirs);
    h.inbound_frame(&theirs.acceptance().with_ack(1));
    // The real scanner is blocked, the budget rations the rest.
    assert_eq!(verdict(&mut blocker, scanner()), None);
    assert_eq!(h.xdp_verdict(&syn(40_000, 23, 1).bytes()), XDP_DROP);
    assert_eq!(verdict(&mut blocker, stranger), None, "the burst's second");
    assert_eq!(
        verdict(&mut blocker, v4([198, 18, 1, 82])),
        None,
        "the third"
    );
    assert_eq!(
        verdict(&mut blocker, v4([198, 18, 1, 83])),
        Some(Spared::PrefixCap),
        "two in 198.18.1.0/24 already"
    );
    assert_eq!(
        verdict(&mut blocker, v4([198, 18, 3, 1])),
        Some(Spared::BlockRate)
    );
    let stats = blocker.stats();
    assert_eq!(
        (stats.automatic, stats.refused_rate, stats.refused_prefix),
        (3, 1, 1)
    );

    // A blocked host that answers a connection we start is one we talk to: its block is
    // lifted in the kernel, and it is a peer from then on.
    let call = Frame::tcp(victim(), 41_002, stranger, 22, SYN, 12_000);
    h.outbound_frame(&call);
    assert_eq!(
        h.xdp_verdict(&call.acceptance().with_ack(5).bytes()),
        XDP_DROP,
        "forged answer"
    );
    assert_eq!(h.xdp_verdict(&call.acceptance().bytes()), XDP_PASS);
    assert_eq!(h.counter(Counter::BlocksLifted), 1);
    blocker.sweep(clock::monotonic_now());
    assert_eq!(blocker.stats().automatic, 2);
    assert_eq!(
        blocker.protection(stranger, Asker::Scan { mac: None }, clock::monotonic_now()),
        Some(Spared::Peer)
    );

    // A block by hand stays even then: the operator said so. It lives in its own map,
    // which automatic blocks never evict.
    let manual = v4([198, 18, 4, 4]);
    blocker.add(manual, None, now).unwrap();
    let call = Frame::tcp(victim(), 41_003, manual, 22, SYN, 13_000);
    h.outbound_frame(&call);
    assert_eq!(h.xdp_verdict(&call.acceptance().bytes()), XDP_DROP);
    let listed = blocker.list(clock::monotonic_now());
    assert_eq!(listed.iter().filter(|b| b.manual).count(), 1);
    assert_eq!(listed.iter().filter(|b| !b.manual).count(), 2);

    // The neighbour's own frames are its own scan: not spared as a neighbour (the budget,
    // spent at this fixed `now`, is what refuses it here).
    let own = blocker
        .on_scan(&scan_from(&[neighbour], now), now, |_| {
            Some([2, 0, 0, 0, 0, 0x60])
        })
        .unwrap();
    assert_eq!(own[0].1, Some(Spared::BlockRate));

    // The never-block list changes (a new resolver): its block is lifted at once.
    let mut never = blocker.policy().never.clone();
    never.push((Cidr::host(scanner()), Spared::Resolver));
    let lifted = blocker.set_never(never).unwrap();
    assert_eq!(lifted, vec![(scanner(), Spared::Resolver)]);
    assert_eq!(h.xdp_verdict(&syn(40_001, 24, 2).bytes()), XDP_PASS);
    // A scan found spoofed later (decoys) lifts its automatic blocks.
    let mut later = scan_from(&[v4([198, 18, 1, 82])], now);
    later.phase = Phase::Update;
    later.spoof.reasons.push("decoys");
    assert_eq!(blocker.on_spoofed(&later), vec![v4([198, 18, 1, 82])]);
    assert_eq!(blocker.stats().automatic, 0);
}

#[test]
fn a_full_automatic_table_evicts_the_soonest_to_end_counted_and_never_a_manual_block() {
    if !require_root(
        "a_full_automatic_table_evicts_the_soonest_to_end_counted_and_never_a_manual_block",
    ) {
        return;
    }
    // No budget to speak of: the table's own bound is what is tested.
    let (mut h, mut blocker) = blocking(BudgetConfig {
        rate: 1e9,
        burst: 1e9,
        prefix_cap: usize::MAX,
    });
    let now = clock::monotonic_now();
    blocker
        .add(scanner(), Some(Duration::from_secs(60)), now)
        .unwrap();
    let capacity = probe_common::BLOCKED_ENTRIES - 1;
    // The first source's scan ends soonest: blocked a second before the others.
    let base = u32::from(std::net::Ipv4Addr::new(198, 19, 0, 0));
    for i in 0..capacity + 10 {
        let src = IpAddr::V4((base + i).into());
        let at = if i == 0 {
            now
        } else {
            now + Duration::from_secs(1)
        };
        let verdicts = blocker
            .on_scan(&scan_from(&[src], at), at, |_| None)
            .unwrap();
        assert_eq!(verdicts[0].1, None, "{src}");
    }
    let stats = blocker.stats();
    assert_eq!(stats.automatic, u64::from(capacity));
    assert_eq!(stats.evicted, 10);
    // The soonest to end went first.
    let first = v4([198, 19, 0, 0]);
    let list = blocker.list(now + Duration::from_secs(1));
    assert!(list.iter().all(|b| b.addr != first));
    // The manual block was never a candidate.
    assert_eq!(list.iter().filter(|b| b.manual).count(), 1);
    assert_eq!(h.xdp_verdict(&syn(40_000, 23, 1).bytes()), XDP_DROP);
}

#[test]
fn a_blocked_ipv6_source_behind_a_long_extension_header_chain_is_dropped() {
    if !require_root("a_blocked_ipv6_source_behind_a_long_extension_header_chain_is_dropped") {
        return;
    }
    let (mut h, mut blocker) = blocking(BudgetConfig::default());
    let now = clock::monotonic_now();
    blocker.add(scanner6(), None, now).unwrap();
    // Twelve destination-options headers: more than the programs walk, which Linux accepts.
    let mut probe = Frame::tcp(scanner6(), 40_000, victim6(), 22, SYN, 1);
    probe.ext_headers = (0..12).map(|_| (60, vec![0; 6])).collect();
    assert_eq!(h.xdp_verdict(&probe.bytes()), XDP_DROP);
    assert_eq!(h.counter(Counter::Blocked), 1);
    // From a source not blocked: passed, and counted as a long chain.
    let mut other = Frame::tcp(v6("2001:db8::77"), 40_000, victim6(), 22, SYN, 1);
    other.ext_headers = (0..12).map(|_| (60, vec![0; 6])).collect();
    assert_eq!(h.xdp_verdict(&other.bytes()), XDP_PASS);
    assert_eq!(h.counter(Counter::LongChains), 1);
    assert_eq!(h.counter(Counter::Malformed), 0);
}

/// TC's verdict on a packet it drops.
const TC_ACT_SHOT: u32 = 2;

/// Four refused SYNs from `src`; the last one's event.
/// Four refused SYNs from `src`; the fourth's event. The answer that made a verdict which
/// blocked the source is dropped with the rest (the scanner learns three ports, not four);
/// every other answer leaves.
fn four_refused(h: &mut Harness, src: IpAddr) -> Probe {
    let mut last = None;
    let mut verdicts = Vec::new();
    for port in 1..=4u16 {
        let probe = Frame::tcp(src, 41_000 + port, victim(), port, SYN, u32::from(port));
        h.inbound_frame(&probe);
        verdicts.push(h.tc_verdict(&probe.refusal().bytes()));
        last = h.events().pop();
    }
    let last = last.expect("the fourth failure is an event");
    let dropped = if last.kernel_blocked {
        TC_ACT_SHOT
    } else {
        TC_ACT_OK
    };
    assert_eq!(
        verdicts,
        [TC_ACT_OK, TC_ACT_OK, TC_ACT_OK, dropped],
        "{src}"
    );
    last
}

#[test]
fn the_kernel_blocks_on_its_verdict_within_policy_and_budget_and_drops_our_answers() {
    if !require_root(
        "the_kernel_blocks_on_its_verdict_within_policy_and_budget_and_drops_our_answers",
    ) {
        return;
    }
    let resolver = v4([198, 18, 0, 53]);
    let policy = BlockPolicy {
        ttl: Duration::from_secs(3600),
        block_spoofed: false,
        never: vec![
            (Cidr::host(victim()), Spared::Ours),
            (Cidr::host(resolver), Spared::Resolver),
        ],
    };
    // One new block a second, bursts of ten.
    let mut h = Harness::with(&KernelConfig {
        block: true,
        block_rate: 1,
        ..every_event()
    });
    let budget = BudgetConfig {
        rate: 100.0,
        burst: 100.0,
        prefix_cap: 100,
    };
    let mut blocker = Blocker::new(&mut h.ebpf, policy, budget).unwrap();
    // The scanner's fourth failure is the verdict, and its block: its next SYN is dropped
    // in XDP, and our answer to a SYN already inside the host is dropped in TC.
    let scanner = v4([198, 18, 7, 1]);
    let decided = four_refused(&mut h, scanner);
    assert!(decided.kernel_verdict && decided.kernel_blocked);
    let next = Frame::tcp(scanner, 41_100, victim(), 5, SYN, 5);
    assert_eq!(h.xdp_verdict(&next.bytes()), XDP_DROP);
    assert_eq!(h.tc_verdict(&next.refusal().bytes()), TC_ACT_SHOT);
    assert_eq!(h.counter(Counter::KernelBlocks), 1);
    // The verdict's own answer, and the next.
    assert_eq!(h.counter(Counter::AnswersDropped), 2);
    // Userspace takes the block over (it lists it, with its expiry).
    let now = clock::monotonic_now();
    assert_eq!(
        blocker
            .review_kernel_block(scanner, now, None, None, false)
            .unwrap(),
        None
    );
    assert!(blocker.list(now).iter().any(|b| b.addr == scanner));
    // The resolver's forged scan is a verdict, never a block.
    let spared = four_refused(&mut h, resolver);
    assert!(spared.kernel_verdict && !spared.kernel_blocked);
    assert_eq!(h.counter(Counter::BlocksSpared), 1);
    let next = Frame::tcp(resolver, 41_200, victim(), 5, SYN, 5);
    assert_eq!(h.xdp_verdict(&next.bytes()), XDP_PASS);
    // The budget: the scanner took one of ten; twelve more scanners, nine blocked.
    let blocked = (0..12u8)
        .filter(|&i| four_refused(&mut h, v4([198, 18, 8, i])).kernel_blocked)
        .count();
    assert_eq!(blocked, 9);
    assert_eq!(h.counter(Counter::BlocksOverBudget), 3);
}

#[test]
fn userspace_lifts_a_kernel_block_its_policy_would_not_make() {
    if !require_root("userspace_lifts_a_kernel_block_its_policy_would_not_make") {
        return;
    }
    let (mut h, mut blocker) = blocking(BudgetConfig {
        rate: 100.0,
        burst: 100.0,
        prefix_cap: 1,
    });
    let now = clock::monotonic_now();
    // Two scanners of one /24, both blocked by the kernel; the cap allows one.
    let (first, second) = (v4([198, 18, 9, 1]), v4([198, 18, 9, 2]));
    assert!(four_refused(&mut h, first).kernel_blocked);
    assert!(four_refused(&mut h, second).kernel_blocked);
    assert_eq!(
        blocker
            .review_kernel_block(first, now, None, None, false)
            .unwrap(),
        None
    );
    assert_eq!(
        blocker
            .review_kernel_block(second, now, None, None, false)
            .unwrap(),
        Some(Spared::PrefixCap)
    );
    // A decoy scan's member is lifted as likely spoofed.
    let decoy = v4([198, 18, 10, 1]);
    assert!(four_refused(&mut h, decoy).kernel_blocked);
    assert_eq!(
        blocker
            .review_kernel_block(decoy, now, None, Some(false), false)
            .unwrap(),
        Some(Spared::LikelySpoofed)
    );
    // A verdict on a probe the traceroute filter holds back (a traceroute's UDP probes
    // reaching this host fail on ever new ports too) is lifted until a scan shows.
    let tracer = v4([198, 18, 11, 1]);
    assert!(four_refused(&mut h, tracer).kernel_blocked);
    assert_eq!(
        blocker
            .review_kernel_block(tracer, now, None, None, true)
            .unwrap(),
        Some(Spared::Traceroute)
    );
    let frame = |src| Frame::tcp(src, 41_300, victim(), 9, SYN, 9).bytes();
    assert_eq!(h.xdp_verdict(&frame(first)), XDP_DROP);
    assert_eq!(h.xdp_verdict(&frame(second)), XDP_PASS);
    assert_eq!(h.xdp_verdict(&frame(decoy)), XDP_PASS);
    assert_eq!(h.xdp_verdict(&frame(tracer)), XDP_PASS);
}

#[test]
fn the_block_filter_holds_every_block_and_forgets_lifted_ones() {
    if !require_root("the_block_filter_holds_every_block_and_forgets_lifted_ones") {
        return;
    }
    let (mut h, mut blocker) = blocking(BudgetConfig {
        rate: 100.0,
        burst: 100.0,
        prefix_cap: 100,
    });
    let now = clock::monotonic_now();
    let frame = |src| Frame::tcp(src, 41_400, victim(), 9, SYN, 9).bytes();
    // A block the kernel made on its verdict set its bit, seen through the shared map.
    let (kernel_made, by_hand, never) = (
        v4([198, 18, 12, 1]),
        v4([198, 18, 12, 2]),
        v4([198, 18, 12, 3]),
    );
    assert!(four_refused(&mut h, kernel_made).kernel_blocked);
    assert!(blocker.filter_contains(kernel_made));
    blocker.add(by_hand, None, now).unwrap();
    assert!(blocker.filter_contains(by_hand));
    assert!(!blocker.filter_contains(never));
    assert_eq!(h.xdp_verdict(&frame(by_hand)), XDP_DROP);
    // Lifted: its bit goes at the next sweep, which builds the other half from the lists
    // (the kernel's block, never reviewed here, included) and puts it in force.
    assert!(blocker.remove(by_hand).unwrap());
    blocker.sweep(now);
    assert!(!blocker.filter_contains(by_hand));
    assert!(blocker.filter_contains(kernel_made));
    assert_eq!(h.xdp_verdict(&frame(by_hand)), XDP_PASS);
    assert_eq!(h.xdp_verdict(&frame(kernel_made)), XDP_DROP);
    // The kernel reads and writes the half now in force.
    let later = v4([198, 18, 12, 4]);
    assert!(four_refused(&mut h, later).kernel_blocked);
    assert!(blocker.filter_contains(later));
    assert_eq!(h.xdp_verdict(&frame(later)), XDP_DROP);
    blocker.add(by_hand, None, now).unwrap();
    assert_eq!(h.xdp_verdict(&frame(by_hand)), XDP_DROP);
    assert_eq!(h.xdp_verdict(&frame(never)), XDP_PASS);
}
