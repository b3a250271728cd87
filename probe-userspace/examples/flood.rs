//! `cargo xtask flood [--packets N]`: a spoofed-source SYN flood (default 10 million SYNs,
//! each refused by the victim) with a real scanner's probes hidden in it (one every 100 000
//! SYNs), through the real XDP and TC programs with BPF_PROG_TEST_RUN (no packet on any
//! wire) and the engine with probe-detector's defaults. Prints, as it goes, the process's
//! resident memory, the engine's entries and evictions, events and ring-buffer drops, then
//! the kernel maps' memory, the engine's bound, and when the scanner was found. Needs root.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/common/flood.rs"]
mod flood;

use anyhow::Context as _;
use flood::{FloodConfig, flood, rss_bytes};
use probe_userspace::{
    detect::{Engine, EngineConfig},
    kernel::{self, KernelConfig},
};

fn mib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1 << 20)
}

fn main() -> anyhow::Result<()> {
    let packets: u64 = std::env::args()
        .nth(1)
        .map(|n| n.parse().context("the argument is the number of SYNs"))
        .transpose()?
        .unwrap_or(10_000_000);
    let before = rss_bytes();
    let mut ebpf = kernel::load(&KernelConfig::default()).context("loading the programs")?;
    let config = EngineConfig::default();
    let bound = Engine::memory_bound(&config) as u64;
    let mut engine = Engine::new(config);
    println!("# Spoofed SYN flood: {packets} SYNs, one scanner probe every 100 000\n");
    println!("| SYNs | seconds | RSS MiB | engine entries | evictions | events | ring drops |");
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    let report = flood(
        &mut ebpf,
        &mut engine,
        &FloodConfig {
            packets,
            scanner_every: 100_000,
            sample_every: (packets / 10).max(1),
        },
        |s| {
            println!(
                "| {} | {:.1} | {:.1} | {} | {} | {} | {} |",
                s.packets,
                s.elapsed.as_secs_f64(),
                mib(s.rss_bytes),
                s.tracked,
                s.evictions,
                s.events,
                s.ring_drops
            );
        },
    )?;
    let peak = report
        .samples
        .iter()
        .map(|s| s.rss_bytes)
        .max()
        .unwrap_or(0);
    println!();
    println!(
        "- Kernel maps: {:.1} MiB charged (fixed at load; unchanged by the flood).",
        mib(report.map_bytes)
    );
    println!(
        "- Process: {:.1} MiB resident before loading, {:.1} MiB at the peak; the engine's bound with these settings is {:.1} MiB.",
        mib(before),
        mib(peak),
        mib(bound)
    );
    match report.scanner_alerted_after {
        Some(n) => println!(
            "- The scanner was found after {n} of its {} probes ({:?}).",
            report.scanner_probes,
            report.scanner_alert.unwrap_or_default()
        ),
        None => println!(
            "- The scanner was NOT found ({} probes).",
            report.scanner_probes
        ),
    }
    println!(
        "- Scans recognised among the spoofed sources: {} {:?}.",
        report.other_alerts.len(),
        report.other_alerts
    );
    println!("- Engine tables at the end: {:?}", report.tables);
    Ok(())
}
