//! The ring buffer: wakeups after a quiet spell, and a full ring's drops.

use crate::harness::*;

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
            ..every_event()
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
fn a_full_ring_counts_its_drops_and_events_flow_again_once_it_is_read() {
    if !require_root("a_full_ring_counts_its_drops_and_events_flow_again_once_it_is_read") {
        return;
    }
    // One page of ring (about 64 records) and a reader that does not read: a slow consumer.
    // Every outcome through the ring: no summaries once the source is decided.
    let mut h = Harness::with(&KernelConfig {
        ringbuf_bytes: 4096,
        summarize: false,
        ..every_event()
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
