//! `cargo xtask bench`: nanoseconds per packet of each path through the real XDP and TC
//! programs, measured with BPF_PROG_TEST_RUN, next to trivial XDP_PASS / TC_ACT_OK programs
//! measured in the same run. Prints a Markdown report (xtask writes it to BENCHMARKS.md).
//!
//! Paths that replay one packet use the kernel's `repeat` (it reports the mean per run).
//! Paths that need a new flow per packet (a new SYN, an RST settling a pending SYN) run one
//! distinct packet per call; the trivial programs are measured that way too, and each path
//! is compared with the baseline measured the same way. Needs root.

#[path = "../tests/common/mod.rs"]
mod common;

use std::{fs, net::IpAddr, process::Command, time::Duration};

use anyhow::{Context as _, bail};
use aya::{
    Ebpf,
    maps::{MapData, RingBuf},
    programs::{SchedClassifier, TestRun as _, TestRunOptions, Xdp},
};
use common::{ACK, Frame, PSH, SYN, v4, v6};
use probe_common::{Counter, EVENTS_MAP};
use probe_userspace::loader::{self, KernelConfig};

/// Runs of each replayed packet.
const REPEAT: u32 = 200_000;
/// Rounds of `REPEAT` runs; the median is reported.
const ROUNDS: usize = 5;
/// Distinct packets for the paths that need a new flow each time.
const DISTINCT: usize = 20_000;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Hook {
    Xdp,
    Tc,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Method {
    Repeat,
    Distinct,
}

struct Row {
    path: &'static str,
    hook: Hook,
    method: Method,
    ns: f64,
}

fn main() -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the benchmark loads BPF programs and needs root: run `sudo -E cargo xtask bench`");
    }
    let mut ebpf = loader::load(&KernelConfig::default()).context("loading the eBPF object")?;
    for name in ["bench_xdp_pass", "bench_tc_ok"] {
        let program = ebpf
            .program_mut(name)
            .with_context(|| format!("no {name} in the object"))?;
        match program {
            aya::programs::Program::Xdp(p) => p.load()?,
            aya::programs::Program::SchedClassifier(p) => p.load()?,
            _ => bail!("{name} has an unexpected program type"),
        }
    }
    let mut ring = RingBuf::try_from(ebpf.take_map(EVENTS_MAP).context("EVENTS map")?)?;

    let scanner = v4([198, 18, 0, 1]);
    let victim = v4([198, 18, 0, 2]);
    let established = Frame::tcp(scanner, 40_000, victim, 22, ACK | PSH, 1_000)
        .with_ack(2_000)
        .with_payload(&[0x55; 100]);
    let gre = {
        let mut b = Frame::tcp(scanner, 1, victim, 2, ACK, 3).bytes();
        b[14 + 9] = 47; // IPv4, protocol GRE
        b
    };
    let pending_syn = Frame::tcp(scanner, 40_001, victim, 80, SYN, 77).bytes();
    let malformed = Frame::tcp(scanner, 40_002, victim, 80, SYN, 77).bytes()[..14 + 12].to_vec();
    let egress_ack = Frame::tcp(victim, 22, scanner, 40_000, ACK | PSH, 2_000)
        .with_ack(1_100)
        .with_payload(&[0x55; 100]);

    let mut rows = Vec::new();
    let mut add = |path, hook, method, ns| {
        rows.push(Row {
            path,
            hook,
            method,
            ns,
        })
    };

    // Baselines, both ways.
    add(
        "trivial XDP_PASS",
        Hook::Xdp,
        Method::Repeat,
        repeated(xdp(&ebpf, "bench_xdp_pass")?, &established.bytes())?,
    );
    add(
        "trivial TC_ACT_OK",
        Hook::Tc,
        Method::Repeat,
        repeated_tc(tc(&ebpf, "bench_tc_ok")?, &egress_ack.bytes())?,
    );
    let distinct_syns: Vec<Vec<u8>> = (0..DISTINCT).map(|i| new_syn(i, false)).collect();
    add(
        "trivial XDP_PASS",
        Hook::Xdp,
        Method::Distinct,
        distinct(xdp(&ebpf, "bench_xdp_pass")?, &distinct_syns, |_| Ok(()))?,
    );
    add(
        "trivial TC_ACT_OK",
        Hook::Tc,
        Method::Distinct,
        distinct_tc(tc(&ebpf, "bench_tc_ok")?, &distinct_syns)?,
    );

    let ingress = xdp(&ebpf, probe_common::XDP_PROGRAM)?;
    add(
        "non-TCP (IPv4 GRE)",
        Hook::Xdp,
        Method::Repeat,
        repeated(ingress, &gre)?,
    );
    add(
        "established-flow ACK, 100 B payload",
        Hook::Xdp,
        Method::Repeat,
        repeated(ingress, &established.bytes())?,
    );
    add(
        "malformed (IPv4 header cut short)",
        Hook::Xdp,
        Method::Repeat,
        repeated(ingress, &malformed)?,
    );
    add(
        "SYN to an already-pending flow",
        Hook::Xdp,
        Method::Repeat,
        repeated(ingress, &pending_syn)?,
    );
    add(
        "new SYN, IPv4",
        Hook::Xdp,
        Method::Distinct,
        distinct(ingress, &distinct_syns, |_| Ok(()))?,
    );
    let distinct_v6: Vec<Vec<u8>> = (0..DISTINCT).map(|i| new_syn(i, true)).collect();
    add(
        "new SYN, IPv6",
        Hook::Xdp,
        Method::Distinct,
        distinct(ingress, &distinct_v6, |_| Ok(()))?,
    );

    let egress = tc(&ebpf, probe_common::TC_PROGRAM)?;
    add(
        "egress established-flow ACK",
        Hook::Tc,
        Method::Repeat,
        repeated_tc(egress, &egress_ack.bytes())?,
    );
    let stray_rst = Frame::tcp(scanner, 40_009, victim, 9, SYN, 5)
        .refusal()
        .bytes();
    add(
        "egress RST matching no attempt",
        Hook::Tc,
        Method::Repeat,
        repeated_tc(egress, &stray_rst)?,
    );
    // Each RST settles a pending SYN to a new port: an OUTCOMES insert and a ring-buffer
    // record, the most expensive path (once per probed port, never per packet).
    let probes: Vec<Frame> = (0..DISTINCT)
        .map(|i| {
            Frame::tcp(
                v4([198, 19, (i >> 8) as u8, i as u8]),
                50_000,
                victim,
                1 + (i % 60_000) as u16,
                SYN,
                i as u32,
            )
        })
        .collect();
    let answers: Vec<Vec<u8>> = probes.iter().map(|p| p.refusal().bytes()).collect();
    let ns = {
        let mut total = Duration::ZERO;
        for (probe, answer) in probes.iter().zip(&answers) {
            run_xdp(ingress, &probe.bytes(), 1)?;
            total += run_tc(egress, answer, 1)?;
            while ring.next().is_some() {}
        }
        total.as_nanos() as f64 / DISTINCT as f64
    };
    add(
        "egress RST settling a pending SYN (new port: event)",
        Hook::Tc,
        Method::Distinct,
        ns,
    );
    // The same sources and ports again: already reported, so an OUTCOMES lookup and an
    // atomic add instead of an insert and a record.
    let ns = {
        let mut total = Duration::ZERO;
        for (i, probe) in probes.iter().enumerate() {
            let again = probe.clone().with_seq(1_000_000 + i as u32);
            run_xdp(ingress, &again.bytes(), 1)?;
            total += run_tc(egress, &again.refusal().bytes(), 1)?;
        }
        total.as_nanos() as f64 / DISTINCT as f64
    };
    add(
        "egress RST settling a pending SYN (port seen before: counter)",
        Hook::Tc,
        Method::Distinct,
        ns,
    );
    drain(&mut ring);

    let counters = loader::counters(&ebpf)?;
    let drops = counters
        .iter()
        .find(|(c, _)| *c == Counter::RingbufDrops)
        .map_or(0, |(_, v)| *v);
    print_report(&rows, drops);
    Ok(())
}

/// A SYN of a flow no earlier packet used.
fn new_syn(i: usize, ipv6: bool) -> Vec<u8> {
    let (hi, lo) = ((i >> 8) as u8, i as u8);
    let (src, dst): (IpAddr, IpAddr) = if ipv6 {
        (v6(&format!("2001:db8:1::{hi:x}:{lo:x}")), v6("2001:db8::2"))
    } else {
        (v4([198, 19, hi, lo]), v4([198, 18, 0, 2]))
    };
    Frame::tcp(src, 30_000 + (i % 30_000) as u16, dst, 443, SYN, i as u32).bytes()
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

fn run_xdp(program: &Xdp, frame: &[u8], repeat: u32) -> anyhow::Result<Duration> {
    let result = program.test_run(TestRunOptions {
        data_in: Some(frame),
        repeat,
        ..Default::default()
    })?;
    Ok(result.duration)
}

fn run_tc(program: &SchedClassifier, frame: &[u8], repeat: u32) -> anyhow::Result<Duration> {
    let result = program.test_run(TestRunOptions {
        data_in: Some(frame),
        repeat,
        ..Default::default()
    })?;
    Ok(result.duration)
}

/// Median over rounds of the kernel's mean per run of one replayed packet.
fn repeated(program: &Xdp, frame: &[u8]) -> anyhow::Result<f64> {
    median((0..ROUNDS).map(|_| run_xdp(program, frame, REPEAT).map(|d| d.as_nanos() as f64)))
}

fn repeated_tc(program: &SchedClassifier, frame: &[u8]) -> anyhow::Result<f64> {
    median((0..ROUNDS).map(|_| run_tc(program, frame, REPEAT).map(|d| d.as_nanos() as f64)))
}

fn median(samples: impl Iterator<Item = anyhow::Result<f64>>) -> anyhow::Result<f64> {
    let mut v = samples.collect::<anyhow::Result<Vec<f64>>>()?;
    v.sort_by(f64::total_cmp);
    Ok(v[v.len() / 2])
}

/// Mean per packet of one run of each distinct packet.
fn distinct(
    program: &Xdp,
    frames: &[Vec<u8>],
    mut between: impl FnMut(usize) -> anyhow::Result<()>,
) -> anyhow::Result<f64> {
    let mut total = Duration::ZERO;
    for (i, frame) in frames.iter().enumerate() {
        total += run_xdp(program, frame, 1)?;
        between(i)?;
    }
    Ok(total.as_nanos() as f64 / frames.len() as f64)
}

fn distinct_tc(program: &SchedClassifier, frames: &[Vec<u8>]) -> anyhow::Result<f64> {
    let mut total = Duration::ZERO;
    for frame in frames {
        total += run_tc(program, frame, 1)?;
    }
    Ok(total.as_nanos() as f64 / frames.len() as f64)
}

fn drain(ring: &mut RingBuf<MapData>) {
    while ring.next().is_some() {}
}

fn baseline(rows: &[Row], hook: Hook, method: Method) -> f64 {
    rows.iter()
        .find(|r| r.hook == hook && r.method == method && r.path.starts_with("trivial"))
        .map_or(f64::NAN, |r| r.ns)
}

fn print_report(rows: &[Row], ringbuf_drops: u64) {
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let date = Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();

    println!("# Benchmarks\n");
    println!(
        "Generated by `cargo xtask bench` on {date}: {cpu}, {cores} cores, kernel {}.",
        kernel.trim()
    );
    println!(
        "Each path runs the real programs with BPF_PROG_TEST_RUN. \"repeat\" rows replay one packet \
         {REPEAT} times (median of {ROUNDS} rounds of the kernel's mean per run); \"distinct\" rows run \
         {DISTINCT} different packets once each (mean), for paths that need a new flow per packet. \
         Net = ns minus the trivial program of the same hook measured the same way; the ratio is to \
         that trivial program. The trivial programs measure the test harness itself.\n"
    );
    println!("| path | hook | method | ns/packet | net ns | × trivial |");
    println!("|---|---|---|---:|---:|---:|");
    for row in rows {
        let base = baseline(rows, row.hook, row.method);
        let hook = if row.hook == Hook::Xdp { "XDP" } else { "TC" };
        let method = if row.method == Method::Repeat {
            "repeat"
        } else {
            "distinct"
        };
        println!(
            "| {} | {hook} | {method} | {:.1} | {:.1} | {:.2} |",
            row.path,
            row.ns,
            row.ns - base,
            row.ns / base
        );
    }
    let find = |path: &str| rows.iter().find(|r| r.path == path);
    println!("\nTargets:\n");
    if let Some(r) = find("new SYN, IPv4") {
        let net = r.ns - baseline(rows, Hook::Xdp, Method::Distinct);
        let verdict = if net <= 67.0 {
            "met".to_owned()
        } else {
            format!("missed by {:.1} ns", net - 67.0)
        };
        println!(
            "- new SYN (IPv4) at most 67 ns net per packet (10 GbE line rate of minimum-size SYNs on one core): {net:.1} ns, {verdict}."
        );
    }
    if let Some(r) = find("established-flow ACK, 100 B payload") {
        let ratio = r.ns / baseline(rows, Hook::Xdp, Method::Repeat);
        let verdict = if ratio <= 1.3 {
            "met".to_owned()
        } else {
            format!("missed by {:.2}x", ratio - 1.3)
        };
        println!(
            "- common non-SYN path (established ACK) at most 1.3x the trivial program: {ratio:.2}x, {verdict}."
        );
    }
    println!("\nRing-buffer reservations that failed during the run: {ringbuf_drops}.");
}
