//! Offline replay: each packet of a capture goes through the same XDP and TC programs as on
//! a live interface (`BPF_PROG_TEST_RUN`; nothing is attached, nothing is sent), inbound
//! packets through XDP and outbound ones through TC, the direction told by the home nets;
//! the events they report go through the same engine, on the capture's clock.
//!
//! The capture's clock drives everything time-dependent: each event carries the time of the
//! packet that caused it; the expiry program runs once per sweep interval of capture time
//! (so attempts left unanswered for the timeout are reported as they would be live), and
//! the engine's lifecycle (`update`, `end`) ticks once per second of it. At the end, the
//! remaining attempts expire and every open incident ends.

use std::time::Duration;

use aya::{
    Ebpf,
    maps::{MapData, RingBuf},
};
use probe_common::EVENTS_MAP;

use crate::{
    cidr::Cidr,
    engine::{Engine, ScanAlert},
    event::Probe,
    loader::{self, KernelConfig, LoadError},
    pcap::{Capture, Flow, PcapError},
};

/// Why a replay stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The capture cannot be read.
    #[error(transparent)]
    Pcap(#[from] PcapError),
    /// The kernel side failed.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The loaded object has no event ring buffer.
    #[error("the eBPF object has no EVENTS ring buffer")]
    NoRing,
}

/// What a replay saw.
#[derive(Debug, Default)]
pub struct ReplayStats {
    /// Packets through XDP (inbound) and TC (outbound).
    pub inbound: u64,
    pub outbound: u64,
    /// Events the programs reported, and those that could not be decoded.
    pub events: u64,
    pub undecodable: u64,
}

/// Replays `capture` through the programs of `ebpf` (loaded with `config`, not attached)
/// and `engine`; hands every alert to `emit` as it is made.
pub fn replay(
    ebpf: &mut Ebpf,
    config: &KernelConfig,
    home_nets: &[Cidr],
    capture: &Capture<'_>,
    engine: &mut Engine,
    mut emit: impl FnMut(&[ScanAlert]),
) -> Result<ReplayStats, ReplayError> {
    let map = ebpf.take_map(EVENTS_MAP).ok_or(ReplayError::NoRing)?;
    let mut ring = RingBuf::try_from(map).map_err(|_| ReplayError::NoRing)?;
    let mut stats = ReplayStats::default();
    let interval = config.sweep_interval();
    let second = Duration::from_secs(1);
    let (mut next_sweep, mut next_tick) = (None::<Duration>, None::<Duration>);
    let mut now = Duration::ZERO;
    for packet in capture.packets() {
        let packet = packet?;
        now = now.max(packet.time);
        if next_sweep.is_none() {
            // The capture's clock starts with its first packet.
            next_sweep = Some(now + interval);
            next_tick = Some(now + second);
        }
        // Time passes first: sweeps and ticks due before this packet.
        while let Some(due) = next_sweep.filter(|&t| t <= now) {
            sweep(ebpf, &mut ring, |ring| {
                emit(&feed(ring, engine, &mut stats, due));
            })?;
            next_sweep = Some(due + interval);
        }
        while let Some(due) = next_tick.filter(|&t| t <= now) {
            emit(&engine.tick(due));
            next_tick = Some(due + second);
        }
        let outbound = Flow::of(packet.data)
            .map(|f| f.src)
            .is_some_and(|src| home_nets.iter().any(|net| net.contains(src)));
        if outbound {
            stats.outbound += 1;
        } else {
            stats.inbound += 1;
        }
        loader::test_run(ebpf, packet.data, !outbound)?;
        emit(&feed(&mut ring, engine, &mut stats, now));
    }
    // The end of the capture: what is still pending expires, on the capture's clock.
    for _ in 0..=config.expire_after_sweeps() {
        now += interval;
        sweep(ebpf, &mut ring, |ring| {
            emit(&feed(ring, engine, &mut stats, now));
        })?;
    }
    emit(&engine.tick(now));
    emit(&engine.finish());
    Ok(stats)
}

/// Feeds every event waiting in the ring to the engine, stamped `at`; returns the alerts.
fn feed(
    ring: &mut RingBuf<MapData>,
    engine: &mut Engine,
    stats: &mut ReplayStats,
    at: Duration,
) -> Vec<ScanAlert> {
    let mut alerts = Vec::new();
    while let Some(record) = ring.next() {
        match Probe::decode(&record) {
            Ok(mut probe) => {
                stats.events += 1;
                probe.timestamp = at;
                alerts.extend(engine.observe(&probe, at));
            }
            Err(_) => stats.undecodable += 1,
        }
    }
    alerts
}

/// One expiry sweep, `drain` called after each chunk.
fn sweep(
    ebpf: &mut Ebpf,
    ring: &mut RingBuf<MapData>,
    mut drain: impl FnMut(&mut RingBuf<MapData>),
) -> Result<(), LoadError> {
    loader::expire_with(ebpf, |_| drain(ring))
}
