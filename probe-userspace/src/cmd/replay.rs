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
//!
//! The events go through the same output pipeline as a live run's, on the capture's
//! clock: the same rate limit and attack list; with `--block`, the blocks a live run would
//! have made are recorded in `alert.action`, never applied.

use std::{fs, io::Write, path::Path, time::Duration};

use anyhow::Context as _;
use aya::{
    Ebpf,
    maps::{MapData, RingBuf},
};
use probe_common::EVENTS_MAP;

use crate::{
    cli::{
        exit::UsageError,
        settings::{Settings, describe_trw},
    },
    detect::Engine,
    event::Probe,
    kernel::{self, KernelConfig, LoadError, SummaryReader},
    net::{
        cidr::Cidr,
        pcap::{Capture, Flow, PcapError},
    },
    output::{Blocking, Clock, OutputError, Pipeline},
    policy::{
        allow,
        budget::Budget,
        protect::{BlockPolicy, Spared},
    },
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
    /// A record could not be written.
    #[error(transparent)]
    Output(#[from] OutputError),
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
    /// Frames longer than [`MAX_TEST_RUN_FRAME`], run through the programs cut to it.
    pub cut: u64,
    /// Gaps in the capture's time long enough that the clock was moved on at once.
    pub time_jumps: u64,
}

/// The longest frame run through the programs as it is: BPF_PROG_TEST_RUN takes at most
/// about a page less the XDP head and tail room.
pub const MAX_TEST_RUN_FRAME: usize = 3000;

/// `probe-detector replay FILE.pcap`: the capture through the programs and the pipeline,
/// records on stdout.
pub fn run(settings: &Settings, file: &Path) -> anyhow::Result<()> {
    if settings.home_nets.is_empty() {
        return Err(UsageError(
            "replay needs --home-net: the capture's own addresses (its host, or the networks behind its gateway) tell outbound packets from inbound ones".to_owned(),
        )
        .into());
    }
    let home_nets = &settings.home_nets;
    let allow_lists = settings.allow.load()?;
    let attack_list = settings.open_attack_list()?;
    let outputs = settings.open_outputs()?;
    let bytes = fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let capture =
        Capture::parse(&bytes).with_context(|| format!("cannot replay {}", file.display()))?;
    kernel::check_privileges()?;
    log::info!("probe-detector {}", crate::VERSION);
    // Blocks are recorded, never applied: the kernel must not block on its verdicts and
    // drop the rest of the capture's frames from a scanner.
    let config = KernelConfig {
        block: false,
        ..settings.kernel_config(home_nets)
    };
    let mut ebpf = kernel::load(&config)?;
    allow::apply(&mut ebpf, &Default::default(), &allow_lists)
        .context("cannot load the allow-lists")?;
    let blocking = match settings.block {
        None => Blocking::Off,
        // What a live run on the capture's host would spare: its allow-listed sources and
        // its home nets (given); its gateways, resolvers, neighbours and peers are not
        // known here. The budget runs on the capture's clock.
        Some(block) => Blocking::Recorded(
            BlockPolicy {
                ttl: block.ttl,
                block_spoofed: block.block_spoofed,
                never: allow_lists
                    .sources
                    .iter()
                    .map(|c| (*c, Spared::AllowListed))
                    .chain(home_nets.iter().map(|c| (*c, Spared::HomeNet)))
                    .collect(),
            },
            Budget::new(block.budget()),
        ),
    };
    log::info!(
        "sequential hypothesis test: {}",
        describe_trw(settings.trw_unit())
    );
    let engine = Engine::new(settings.engine_config(home_nets));
    let mut pipeline = Pipeline::new(
        engine,
        settings.pipeline_config(Clock::Unix),
        attack_list,
        blocking,
        outputs,
    );
    let stats = match replay(&mut ebpf, &config, home_nets, &capture, &mut pipeline) {
        // `replay ... | head`: what was wanted has been read; stop quietly, as command-line
        // tools do.
        Err(ReplayError::Output(OutputError::ReaderGone)) => {
            log::info!("stdout's reader went away: replay stopped");
            return Ok(());
        }
        other => other.with_context(|| format!("cannot replay {}", file.display()))?,
    };
    let written: u64 = pipeline.stats().alerts_written.values().sum();
    log::info!(
        "replayed {}: {} packets ({} inbound through XDP, {} outbound through TC), {} events, {written} alerts",
        file.display(),
        stats.inbound + stats.outbound,
        stats.inbound,
        stats.outbound,
        stats.events
    );
    if stats.undecodable > 0 {
        log::warn!("{} events could not be decoded", stats.undecodable);
    }
    if stats.cut > 0 {
        log::info!(
            "{} frames longer than {MAX_TEST_RUN_FRAME} bytes (merged by segmentation offload) went through the programs cut to their first {MAX_TEST_RUN_FRAME} bytes: the headers they read",
            stats.cut
        );
    }
    if stats.time_jumps > 0 {
        log::warn!(
            "the capture's time jumped forward {} times by more than the pending timeout: pending attempts expired and the clock moved on at once",
            stats.time_jumps
        );
    }
    Ok(())
}

/// Replays `capture` through the programs of `ebpf` (loaded with `config`, not attached)
/// and `pipeline`, on the capture's clock; writes as it goes.
pub fn replay<W: Write>(
    ebpf: &mut Ebpf,
    config: &KernelConfig,
    home_nets: &[Cidr],
    capture: &Capture<'_>,
    pipeline: &mut Pipeline<W>,
) -> Result<ReplayStats, ReplayError> {
    let map = ebpf.take_map(EVENTS_MAP).ok_or(ReplayError::NoRing)?;
    let mut ring = RingBuf::try_from(map).map_err(|_| ReplayError::NoRing)?;
    let mut stats = ReplayStats::default();
    let mut summaries = SummaryReader::default();
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
        // Time passes first: sweeps and ticks due before this packet. After a long silence
        // (or a hostile time stamp 2^32 s ahead) enough sweeps to expire every pending
        // attempt and one tick do what billions of them would.
        let sweeps_to_expire = config.expire_after_sweeps() + 1;
        if let Some(due) = next_sweep
            && now.saturating_sub(due) > interval * sweeps_to_expire as u32
        {
            for step in 0..sweeps_to_expire {
                let at = due + interval * step as u32;
                sweep(ebpf, &mut ring, |ebpf, ring| {
                    feed(ebpf, ring, &mut summaries, pipeline, &mut stats, at);
                })?;
            }
            flush(pipeline, ebpf)?;
            next_sweep = Some(now + interval);
            stats.time_jumps += 1;
        }
        while let Some(due) = next_sweep.filter(|&t| t <= now) {
            sweep(ebpf, &mut ring, |ebpf, ring| {
                feed(ebpf, ring, &mut summaries, pipeline, &mut stats, due);
            })?;
            flush(pipeline, ebpf)?;
            next_sweep = Some(due + interval);
        }
        if next_tick.is_some_and(|t| now.saturating_sub(t) > second * 10) {
            pipeline.tick(now);
            next_tick = Some(now + second);
        }
        while let Some(due) = next_tick.filter(|&t| t <= now) {
            pipeline.tick(due);
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
        // Frames merged by segmentation offload can exceed what BPF_PROG_TEST_RUN takes;
        // the programs read headers only (lengths come from the IP header), so the first
        // bytes are the same packet to them.
        let frame = if packet.data.len() > MAX_TEST_RUN_FRAME {
            stats.cut += 1;
            &packet.data[..MAX_TEST_RUN_FRAME]
        } else {
            packet.data
        };
        kernel::test_run(ebpf, frame, !outbound)?;
        feed(ebpf, &mut ring, &mut summaries, pipeline, &mut stats, now);
        flush(pipeline, ebpf)?;
    }
    // The end of the capture: what is still pending expires, on the capture's clock.
    for _ in 0..=config.expire_after_sweeps() {
        now += interval;
        sweep(ebpf, &mut ring, |ebpf, ring| {
            feed(ebpf, ring, &mut summaries, pipeline, &mut stats, now);
        })?;
    }
    pipeline.tick(now);
    pipeline.finish(now);
    flush(pipeline, ebpf)?;
    Ok(stats)
}

/// Feeds every event waiting in the ring to the pipeline, then every summary of a decided
/// source (all of them: only this process runs the programs), stamped `at`.
fn feed<W: Write>(
    ebpf: &mut Ebpf,
    ring: &mut RingBuf<MapData>,
    summaries: &mut SummaryReader,
    pipeline: &mut Pipeline<W>,
    stats: &mut ReplayStats,
    at: Duration,
) {
    while let Some(record) = ring.next() {
        match Probe::decode(&record) {
            Ok(mut probe) => {
                stats.events += 1;
                probe.timestamp = at;
                pipeline.observe(&probe, at);
            }
            Err(_) => stats.undecodable += 1,
        }
    }
    let undecodable = summaries.undecodable;
    match summaries.collect(ebpf, true) {
        Ok(read) => {
            for mut summary in read {
                stats.events += summary.ports.len() as u64;
                summary.probe.timestamp = at;
                pipeline.observe_summary(&summary, at);
            }
        }
        Err(err) => {
            log::warn!("cannot read the kernel's summaries: {err}");
            stats.undecodable += 1;
        }
    }
    stats.undecodable += summaries.undecodable - undecodable;
}

/// Writes what the pipeline holds, with the kernel's repeat counts.
fn flush<W: Write>(pipeline: &mut Pipeline<W>, ebpf: &Ebpf) -> Result<(), ReplayError> {
    Ok(pipeline.flush(|p| kernel::outcome_count(ebpf, p))?)
}

/// One expiry sweep, `drain` called after each chunk.
fn sweep(
    ebpf: &mut Ebpf,
    ring: &mut RingBuf<MapData>,
    mut drain: impl FnMut(&mut Ebpf, &mut RingBuf<MapData>),
) -> Result<(), LoadError> {
    kernel::expire_with(ebpf, |ebpf| drain(ebpf, ring))
}
