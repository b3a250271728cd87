//! `cargo xtask bench`: nanoseconds per packet of each path through the real XDP and TC
//! programs, measured with BPF_PROG_TEST_RUN, next to trivial XDP_PASS / TC_ACT_OK programs
//! from the same object, measured in the same run. Prints a Markdown report (xtask writes
//! it to BENCHMARKS.md).
//!
//! "repeat" paths replay one packet (the kernel reports its mean per run). "distinct" paths
//! need a new flow per packet (a new SYN, an RST settling a pending SYN): each packet runs
//! once through the trivial program and once through the real one, side by side, so both
//! see the same machine; every round uses flows no earlier round used. Each figure is the
//! median over rounds. Every path is measured in [`LOADS`] loads of the object, each with
//! maps of its own: where the kernel places a map's memory moves the figures between loads
//! by more than rounds within one load differ, so the report gives the median load and the
//! range. Needs root.

#[path = "../../tests/common/mod.rs"]
mod common;
mod frames;
mod report;

use anyhow::{Context as _, bail};
use aya::{
    Ebpf,
    maps::{MapData, RingBuf},
    programs::{SchedClassifier, TestRun as _, TestRunOptions, Xdp},
};
use common::{ACK, Frame, PSH, SYN, v4};
use frames::{
    new_source_probe, new_source_probe_in, new_syn, refused, scan_syn, settle_probe, verdict_frames,
};
use probe_common::{Counter, EVENTS_MAP};
use probe_userspace::{
    kernel::{self, KernelConfig},
    net::cidr::Cidr,
    policy::{block::Blocker, budget::BudgetConfig, protect::BlockPolicy},
};

/// Runs of each replayed packet per round.
const REPEAT: u32 = 200_000;
/// Blocks in force for the `--block` rows.
const BLOCKED_BLOCKS: u16 = 1_000;
/// Rounds per path; the median is reported.
const ROUNDS: usize = 7;
/// Loads of the object, each measuring every path; the median load is reported, with the
/// range of the net figures.
const LOADS: usize = 3;
/// Distinct packets per round for the paths that need a new flow each time.
const DISTINCT: usize = 10_000;
/// Distinct ports per round for the settle paths: rounds × ports stays below the OUTCOMES
/// table's 65 536 entries, so the second settle path finds every key the first one made.
const SETTLE_PORTS: usize = 4_000;

/// One program of the object, XDP or TC.
#[derive(Clone, Copy)]
enum Prog<'a> {
    Xdp(&'a Xdp),
    Tc(&'a SchedClassifier),
}

impl Prog<'_> {
    fn run(self, frame: &[u8], repeat: u32) -> anyhow::Result<f64> {
        let opts = TestRunOptions {
            data_in: Some(frame),
            repeat,
            ..Default::default()
        };
        let result = match self {
            Prog::Xdp(p) => p.test_run(opts)?,
            Prog::Tc(p) => p.test_run(opts)?,
        };
        Ok(result.duration.as_nanos() as f64)
    }

    fn hook(self) -> &'static str {
        match self {
            Prog::Xdp(_) => "XDP",
            Prog::Tc(_) => "TC",
        }
    }
}

/// A measured path: ns per packet and, measured alongside, the trivial program's.
struct Row {
    path: &'static str,
    hook: &'static str,
    method: &'static str,
    ns: f64,
    trivial: f64,
    /// The lowest and highest net figure over the loads (see [`combine`]).
    range: Option<(f64, f64)>,
}

impl Row {
    fn net(&self) -> f64 {
        self.ns - self.trivial
    }

    fn ratio(&self) -> f64 {
        self.ns / self.trivial
    }
}

fn main() -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the benchmark loads BPF programs and needs root: run `sudo -E cargo xtask bench`");
    }
    let mut loads = Vec::new();
    for load in 1..=LOADS {
        eprintln!("bench: load {load} of {LOADS}");
        loads.push(measure()?);
    }
    let (rows, drops, sweeps) = combine(loads)?;
    report::print(&rows, drops, &sweeps);
    Ok(())
}

/// The loads' figures together: per path, the load whose net figure is the median (its
/// figures whole, so that net and ratio agree), and the range of the net figures; the
/// sweeps' medians (and the most records a load's last sweep reported); every failed
/// reservation.
fn combine(loads: Vec<Load>) -> anyhow::Result<(Vec<Row>, u64, Sweeps)> {
    let drops = loads.iter().map(|(_, d, _)| d).sum();
    let sweeps = Sweeps {
        empty_ns: median(loads.iter().map(|(_, _, s)| s.empty_ns).collect()),
        quiet_ns: median(loads.iter().map(|(_, _, s)| s.quiet_ns).collect()),
        busy_ns: median(loads.iter().map(|(_, _, s)| s.busy_ns).collect()),
        reported: loads.iter().map(|(_, _, s)| s.reported).max().unwrap_or(0),
    };
    let mut per_load: Vec<std::vec::IntoIter<Row>> = loads
        .into_iter()
        .map(|(rows, _, _)| rows.into_iter())
        .collect();
    let mut rows = Vec::new();
    loop {
        let mut same: Vec<Row> = per_load.iter_mut().filter_map(Iterator::next).collect();
        if same.is_empty() {
            return Ok((rows, drops, sweeps));
        }
        if same.iter().any(|r| r.path != same[0].path) || same.len() != per_load.len() {
            bail!("the loads measured different paths");
        }
        same.sort_by(|a, b| a.net().total_cmp(&b.net()));
        let range = (same[0].net(), same[same.len() - 1].net());
        let middle = same.swap_remove(same.len() / 2);
        rows.push(Row {
            range: Some(range),
            ..middle
        });
    }
}

/// What one load of the object measured: its rows, failed ring reservations, sweeps.
type Load = (Vec<Row>, u64, Sweeps);

/// Every path, measured in a load of the object of its own.
fn measure() -> anyhow::Result<Load> {
    // Home nets as a deployment has them (the attached interface's addresses).
    let home_nets = ["198.18.0.2", "2001:db8::2"]
        .iter()
        .map(|a| a.parse::<Cidr>())
        .collect::<Result<Vec<_>, _>>()?;
    let config = KernelConfig {
        home_nets,
        ..KernelConfig::default()
    };
    let (ebpf, mut ring) = open(&config)?;
    let ingress = Prog::Xdp(xdp(&ebpf, probe_common::XDP_PROGRAM)?);
    let egress = Prog::Tc(tc(&ebpf, probe_common::TC_PROGRAM)?);
    let trivial_xdp = Prog::Xdp(xdp(&ebpf, "bench_xdp_pass")?);
    let trivial_tc = Prog::Tc(tc(&ebpf, "bench_tc_ok")?);

    let scanner = v4([198, 18, 0, 1]);
    let victim = v4([198, 18, 0, 2]);
    let established = Frame::tcp(scanner, 40_000, victim, 22, ACK | PSH, 1_000)
        .with_ack(2_000)
        .with_payload(&[0x55; 100])
        .bytes();
    let gre = {
        let mut b = Frame::tcp(scanner, 1, victim, 2, ACK, 3).bytes();
        b[14 + 9] = 47; // IPv4, protocol GRE
        b
    };
    let pending_syn = Frame::tcp(scanner, 40_001, victim, 80, SYN, 77).bytes();
    let malformed = Frame::tcp(scanner, 40_002, victim, 80, SYN, 77).bytes()[..14 + 12].to_vec();
    let egress_ack = Frame::tcp(victim, 22, scanner, 40_000, ACK | PSH, 2_000)
        .with_ack(1_100)
        .with_payload(&[0x55; 100])
        .bytes();
    let stray_rst = Frame::tcp(scanner, 40_009, victim, 9, SYN, 5)
        .refusal()
        .bytes();

    let mut rows = Vec::new();
    for (path, prog, trivial, frame) in [
        ("non-TCP (IPv4 GRE)", ingress, trivial_xdp, &gre),
        (
            "established-flow ACK, 100 B payload",
            ingress,
            trivial_xdp,
            &established,
        ),
        (
            "malformed (IPv4 header cut short)",
            ingress,
            trivial_xdp,
            &malformed,
        ),
        (
            "SYN to an already-pending flow",
            ingress,
            trivial_xdp,
            &pending_syn,
        ),
        (
            "egress established-flow ACK",
            egress,
            trivial_tc,
            &egress_ack,
        ),
        (
            "egress RST answering no attempt",
            egress,
            trivial_tc,
            &stray_rst,
        ),
    ] {
        rows.push(repeated(path, prog, trivial, frame)?);
    }

    // A scan of closed ports: a new port per packet, each SYN refused (our RST,
    // unmeasured) before the next is measured; its attempts keep to the pending table's
    // first region. The source is decided at its fourth failure, as a scanner is.
    rows.push(distinct(
        "new SYN, IPv4, answered at once (a scan of closed ports)",
        ingress,
        trivial_xdp,
        |round, i| {
            if i > 0 {
                egress.run(&scan_syn(round, i - 1).refusal().bytes(), 1)?;
            }
            Ok(vec![scan_syn(round, i).bytes()])
        },
    )?);
    // A new SYN per packet: a new flow each time, as in a flood of spoofed sources, in
    // the table such a flood leaves (the first region closed).
    let expire = Prog::Xdp(loader_expire(&ebpf)?);
    flood_table(ingress, expire, &ebpf, &mut ring)?;
    rows.push(distinct(
        "new SYN, IPv4",
        ingress,
        trivial_xdp,
        |round, i| Ok(vec![new_syn(round, i, false)]),
    )?);
    rows.push(distinct(
        "new SYN, IPv6",
        ingress,
        trivial_xdp,
        |round, i| Ok(vec![new_syn(round, i, true)]),
    )?);
    // An RST settling a pending SYN from a new source: its first failure, held in the
    // kernel (an OUTCOMES insert, a step of its walk, a HELD slot written; a crowd's
    // first 256 are sent). The SYN runs first, unmeasured; the ring is drained as
    // probe-detector would.
    rows.push(distinct_with(
        "egress RST settling a pending SYN (a new source's first failure: held)",
        egress,
        trivial_tc,
        |round, i| refused(ingress, new_source_probe(round, i)),
        &mut ring,
    )?);
    // The floor of that row: one line of SUSPECTS that no run read before, read by a
    // program that does nothing else, in the same sequence of runs (the SYN through the
    // trivial program: no state), so that the held row's figure can be split into the
    // memory it waits for and its own work.
    let cold_line = Prog::Tc(tc(&ebpf, "bench_tc_cold_line")?);
    rows.push(distinct_with(
        COLD_LINE,
        cold_line,
        trivial_tc,
        |round, i| {
            let probe = new_source_probe(round, i);
            trivial_xdp.run(&probe.bytes(), 1)?;
            Ok(vec![probe.refusal().bytes()])
        },
        &mut ring,
    )?);
    // An RST settling a pending SYN to a new port of one source per round, which the
    // kernel decides on at its fourth: then a summary's bit (no OUTCOMES insert).
    rows.push(distinct_with(
        "egress RST settling a pending SYN (a decided source's new port: summary)",
        egress,
        trivial_tc,
        |round, i| refused(ingress, settle_probe(round, i, 0)),
        &mut ring,
    )?);
    // The same sources and ports again: repeats, told by the summaries' bits (the first
    // four by OUTCOMES).
    rows.push(distinct_with(
        "egress RST settling a pending SYN (port seen before: repeat)",
        egress,
        trivial_tc,
        |round, i| refused(ingress, settle_probe(round, i, 1)),
        &mut ring,
    )?);
    // New sources' first failures again, now that sources were decided (the summary rows):
    // with a verdict in force, each first outcome also looks its source up in SUSPECTS
    // (is it decided?), which the first held row, run before any verdict, skips.
    rows.push(distinct_with(
        "egress RST settling a pending SYN (a new source's first failure: held, a verdict in force)",
        egress,
        trivial_tc,
        |round, i| refused(ingress, new_source_probe_in(18, round, i)),
        &mut ring,
    )?);
    // The verdict: a new source per packet, its first three failures unmeasured, the RST
    // of its fourth measured (an event submitted with a forced wakeup).
    rows.push(distinct_with(
        "egress RST settling a pending SYN (the verdict: event, forced wakeup)",
        egress,
        trivial_tc,
        |round, i| verdict_frames(ingress, egress, round, i, true),
        &mut ring,
    )?);
    // With `--block`, BLOCKED_BLOCKS blocks in force (made by hand, as the daemon makes
    // them): XDP and TC test each source's bit in the block filter, and look the lists up
    // only for the sources whose bit is set; the verdict blocks.
    {
        let (mut blocking, mut blocking_ring) = open(&KernelConfig {
            block: true,
            block_rate: 1_000_000,
            ..config.clone()
        })?;
        let mut blocker = Blocker::new(
            &mut blocking,
            BlockPolicy {
                ttl: std::time::Duration::from_secs(3600),
                block_spoofed: false,
                never: Vec::new(),
            },
            BudgetConfig::default(),
        )?;
        let now = probe_userspace::clock::monotonic_now();
        for n in 0..BLOCKED_BLOCKS {
            blocker.add(v4([198, 20, (n >> 8) as u8, n as u8]), None, now)?;
        }
        let ingress = Prog::Xdp(xdp(&blocking, probe_common::XDP_PROGRAM)?);
        let egress = Prog::Tc(tc(&blocking, probe_common::TC_PROGRAM)?);
        let trivial_xdp = Prog::Xdp(xdp(&blocking, "bench_xdp_pass")?);
        let trivial_tc = Prog::Tc(tc(&blocking, "bench_tc_ok")?);
        rows.push(repeated(
            "established-flow ACK, 100 B payload, --block",
            ingress,
            trivial_xdp,
            &established,
        )?);
        let expire = Prog::Xdp(loader_expire(&blocking)?);
        flood_table(ingress, expire, &blocking, &mut blocking_ring)?;
        rows.push(distinct(
            "new SYN, IPv4, --block",
            ingress,
            trivial_xdp,
            |round, i| Ok(vec![new_syn(round, i, false)]),
        )?);
        rows.push(distinct(
            "new SYN, IPv6, --block",
            ingress,
            trivial_xdp,
            |round, i| Ok(vec![new_syn(round, i, true)]),
        )?);
        rows.push(distinct_with(
            "egress RST settling a pending SYN (a new source's first failure: held), --block",
            egress,
            trivial_tc,
            |round, i| refused(ingress, new_source_probe(round, i)),
            &mut blocking_ring,
        )?);
        rows.push(distinct_with(
            "egress RST to a blocked source (the answer dropped), --block",
            egress,
            trivial_tc,
            // One source per round, blocked at its fourth failure: its later SYNs are
            // dropped in XDP, and our answers to it (these RSTs) in TC.
            |round, i| refused(ingress, settle_probe(round + 8, i, 0)),
            &mut blocking_ring,
        )?);
        rows.push(distinct_with(
            "egress RST settling a pending SYN (the verdict: event, the source blocked), --block",
            egress,
            trivial_tc,
            |round, i| verdict_frames(ingress, egress, round, i, true),
            &mut blocking_ring,
        )?);
    }
    // The early verdict: the fourth SYN of a source one first failure from the verdict, to
    // a local port nothing listens on, decided in XDP when it arrives (the socket lookup,
    // the report, an event with a forced wakeup). Its first three failures unmeasured.
    {
        let (mut early, mut early_ring) = open(&config)?;
        kernel::set_local(&mut early, &[v4([198, 18, 0, 2])])?;
        let ingress = Prog::Xdp(xdp(&early, probe_common::XDP_PROGRAM)?);
        let egress = Prog::Tc(tc(&early, probe_common::TC_PROGRAM)?);
        let trivial_xdp = Prog::Xdp(xdp(&early, "bench_xdp_pass")?);
        rows.push(distinct_with(
            "new SYN of a source one failure from the verdict, to a closed local port (the early verdict: event, forced wakeup)",
            ingress,
            trivial_xdp,
            |round, i| verdict_frames(ingress, egress, round, i, false),
            &mut early_ring,
        )?);
    }
    // Every first outcome a ring-buffer event (`--probes`: nothing held or summarised),
    // in an object of its own: the most expensive path.
    {
        let (every, mut every_ring) = open(&KernelConfig {
            summarize: false,
            hold: false,
            ..config.clone()
        })?;
        let ingress = Prog::Xdp(xdp(&every, probe_common::XDP_PROGRAM)?);
        let egress = Prog::Tc(tc(&every, probe_common::TC_PROGRAM)?);
        let trivial_tc = Prog::Tc(tc(&every, "bench_tc_ok")?);
        rows.push(distinct_with(
            "egress RST settling a pending SYN (new port: event, as with --probes)",
            egress,
            trivial_tc,
            |round, i| refused(ingress, settle_probe(round, i, 0)),
            &mut every_ring,
        )?);
    }

    // The expiry sweep, in two cases: a table filled by 65 536 new attempts (about 63 % of
    // the slots; the rest collide) none of which is due, and the sweep in which all of them
    // are due and reported (the unanswered-flood case: an OUTCOMES insert and a record
    // each). One sweep is several chunks; the ring is drained between them, as
    // probe-detector does.
    let (mut quiet, mut busy, mut reported) = (Vec::new(), Vec::new(), 0usize);
    let mut empty = Vec::new();
    for round in 0..ROUNDS {
        for i in 0..probe_common::PENDING_ENTRIES as usize {
            ingress.run(&new_syn(100 + round, i, false), 1)?;
        }
        quiet.push(sweep(expire, &ebpf, &mut ring)?.0);
        // Sweeps until the attempts are due (EXPIRE_AFTER sweeps later); the last one
        // reports them all.
        let mut last = (0.0, 0);
        for _ in 0..probe_common::EXPIRE_AFTER {
            last = sweep(expire, &ebpf, &mut ring)?;
        }
        busy.push(last.0);
        reported = last.1;
        // The table empty again. The sweep after the one that reported them walks their
        // regions once more (the sweep before found them there, and so keeps them walked
        // for two sweeps); the next reads the region flags only.
        sweep(expire, &ebpf, &mut ring)?;
        empty.push(sweep(expire, &ebpf, &mut ring)?.0);
    }
    let sweeps = Sweeps {
        empty_ns: median(empty),
        quiet_ns: median(quiet),
        busy_ns: median(busy),
        reported,
    };

    let counters = kernel::counters(&ebpf)?;
    let drops = counters
        .iter()
        .find(|(c, _)| *c == Counter::RingbufDrops)
        .map_or(0, |(_, v)| *v);
    Ok((rows, drops, sweeps))
}

/// Loads the object with `config`, and its trivial programs; takes its ring out.
fn open(config: &KernelConfig) -> anyhow::Result<(Ebpf, RingBuf<MapData>)> {
    let mut ebpf = kernel::load(config).context("loading the eBPF object")?;
    for name in ["bench_xdp_pass", "bench_tc_ok", "bench_tc_cold_line"] {
        match ebpf
            .program_mut(name)
            .with_context(|| format!("no {name} in the object"))?
        {
            aya::programs::Program::Xdp(p) => p.load()?,
            aya::programs::Program::SchedClassifier(p) => p.load()?,
            _ => bail!("{name} has an unexpected program type"),
        }
    }
    let ring = RingBuf::try_from(ebpf.take_map(EVENTS_MAP).context("EVENTS map")?)?;
    Ok((ebpf, ring))
}

/// The table a flood leaves: four times as many new attempts (unmeasured) as the pending
/// table's first region has slots, and a sweep, at whose end the first region closes, as
/// the daemon's first sweep closes it within a second of a flood's start (and the next of
/// a flood's new SYNs go straight to their second slot).
fn flood_table(
    ingress: Prog<'_>,
    expire: Prog<'_>,
    ebpf: &Ebpf,
    ring: &mut RingBuf<MapData>,
) -> anyhow::Result<()> {
    for i in 0..4 * probe_common::PENDING_FIRST_SLOTS as usize {
        ingress.run(&new_syn(900, i, false), 1)?;
    }
    sweep(expire, ebpf, ring)?;
    Ok(())
}

/// The floor row's path: a cold line of the walks' table read alone.
const COLD_LINE: &str = "one line of the walks' table (SUSPECTS) read cold, nothing else (the floor of a new source's first outcome)";

/// Expiry sweep figures.
struct Sweeps {
    empty_ns: f64,
    quiet_ns: f64,
    busy_ns: f64,
    reported: usize,
}

/// One whole sweep: (ns, records it reported).
fn sweep(
    expire: Prog<'_>,
    ebpf: &Ebpf,
    ring: &mut RingBuf<MapData>,
) -> anyhow::Result<(f64, usize)> {
    let frame = [0u8; 14];
    let (mut ns, mut records) = (0.0, 0);
    loop {
        ns += expire.run(&frame, 1)?;
        while ring.next().is_some() {
            records += 1;
        }
        if kernel::pending_stat(ebpf, probe_common::PENDING_STATS_CURSOR)? == 0 {
            return Ok((ns, records));
        }
    }
}

fn loader_expire(ebpf: &Ebpf) -> anyhow::Result<&Xdp> {
    xdp(ebpf, probe_common::EXPIRE_PROGRAM)
}

fn xdp<'a>(ebpf: &'a Ebpf, name: &str) -> anyhow::Result<&'a Xdp> {
    ebpf.program(name)
        .and_then(|p| p.try_into().ok())
        .with_context(|| format!("no XDP program {name}"))
}

fn tc<'a>(ebpf: &'a Ebpf, name: &str) -> anyhow::Result<&'a SchedClassifier> {
    ebpf.program(name)
        .and_then(|p| p.try_into().ok())
        .with_context(|| format!("no TC program {name}"))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Replays one packet: per round, the trivial program and the real one, `REPEAT` runs each.
fn repeated(
    path: &'static str,
    prog: Prog<'_>,
    trivial: Prog<'_>,
    frame: &[u8],
) -> anyhow::Result<Row> {
    let (mut real, mut base) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        base.push(trivial.run(frame, REPEAT)?);
        real.push(prog.run(frame, REPEAT)?);
    }
    Ok(Row {
        path,
        hook: prog.hook(),
        method: "repeat",
        ns: median(real),
        trivial: median(base),
        range: None,
    })
}

fn distinct(
    path: &'static str,
    prog: Prog<'_>,
    trivial: Prog<'_>,
    frames: impl FnMut(usize, usize) -> anyhow::Result<Vec<Vec<u8>>>,
) -> anyhow::Result<Row> {
    distinct_inner(path, prog, trivial, frames, DISTINCT, None)
}

fn distinct_with(
    path: &'static str,
    prog: Prog<'_>,
    trivial: Prog<'_>,
    frames: impl FnMut(usize, usize) -> anyhow::Result<Vec<Vec<u8>>>,
    ring: &mut RingBuf<MapData>,
) -> anyhow::Result<Row> {
    distinct_inner(path, prog, trivial, frames, SETTLE_PORTS, Some(ring))
}

/// Runs each of `DISTINCT` packets per round once through the trivial program and once
/// through the real one; per round the means, over rounds the medians.
fn distinct_inner(
    path: &'static str,
    prog: Prog<'_>,
    trivial: Prog<'_>,
    mut frames: impl FnMut(usize, usize) -> anyhow::Result<Vec<Vec<u8>>>,
    count: usize,
    mut ring: Option<&mut RingBuf<MapData>>,
) -> anyhow::Result<Row> {
    let (mut real, mut base) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let (mut r, mut b) = (0.0, 0.0);
        for i in 0..count {
            for frame in frames(round, i)? {
                b += trivial.run(&frame, 1)?;
                r += prog.run(&frame, 1)?;
            }
            if let Some(ring) = ring.as_deref_mut() {
                while ring.next().is_some() {}
            }
        }
        real.push(r / count as f64);
        base.push(b / count as f64);
    }
    Ok(Row {
        path,
        hook: prog.hook(),
        method: "distinct",
        ns: median(real),
        trivial: median(base),
        range: None,
    })
}
