//! Blocking (`--block`): a blocked source is dropped until its block expires or is lifted.

use crate::harness::*;

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
fn a_ttl_beyond_any_clock_saturates_instead_of_killing_the_daemon() {
    if !require_root("a_ttl_beyond_any_clock_saturates_instead_of_killing_the_daemon") {
        return;
    }
    let policy = BlockPolicy {
        ttl: Duration::from_secs(3600),
        block_spoofed: false,
        never: Vec::new(),
    };
    let mut h = Harness::with(&KernelConfig {
        block: true,
        ..KernelConfig::default()
    });
    let mut blocker = Blocker::new(&mut h.ebpf, policy).unwrap();
    let now = clock::monotonic_now();
    // What `probe-detector block add ADDR --ttl 18446744073709551615` sends.
    let response = blocker.handle(
        &probe_userspace::policy::block::Request::Add {
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
