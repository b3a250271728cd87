//! A spoofed-source SYN flood with a real scanner hidden in it, through the real programs
//! (BPF_PROG_TEST_RUN, no packet on any wire) and the engine, in short: the forged sources
//! of one probe each cost userspace a bounded number of events (their first failures are
//! held in the kernel; a crowd's are sent up to a budget), no event is lost, and the
//! scanner is still found. `cargo xtask flood` runs the long version and prints the memory
//! figures. Needs root.

mod common;
#[path = "common/flood.rs"]
mod flood;

use flood::{FloodConfig, flood};
use probe_netlab::require_root;
use probe_userspace::{
    detect::slow::SlowConfig,
    detect::{Engine, EngineConfig},
    kernel::{self, KernelConfig},
};

#[test]
fn a_scanner_hidden_in_a_spoofed_flood_is_found_and_memory_stays_at_its_caps() {
    if !require_root("a_scanner_hidden_in_a_spoofed_flood_is_found_and_memory_stays_at_its_caps") {
        return;
    }
    let mut ebpf = kernel::load(&KernelConfig::default()).expect("the object loads");
    let config = EngineConfig {
        max_tracked: 1024,
        slow: Some(SlowConfig {
            max_sources: 1024,
            ..SlowConfig::default()
        }),
        ..EngineConfig::default()
    };
    let mut engine = Engine::new(config);
    let report = flood(
        &mut ebpf,
        &mut engine,
        &FloodConfig {
            packets: 100_000,
            scanner_every: 5_000,
            sample_every: 25_000,
        },
        |_| {},
    )
    .expect("the flood runs");
    let last = report.samples.last().expect("samples");
    eprintln!("{report:#?}");
    // 100 000 spoofed sources of one probe each: held in the kernel, never read, but
    // for the crowd's budget (256 per flooded host and window: the spread scan's
    // evidence) and the scanner's 20.
    let peak = report.samples.iter().map(|s| s.tracked).max().unwrap();
    assert!(peak <= 7 * 1024, "entries {peak} above the caps");
    assert_eq!(last.ring_drops, 0, "no event lost");
    // (A forged IPv6 source drawn twice, by /64, fails twice and is read: a few.)
    let windows = 1 + report.samples.last().unwrap().elapsed.as_secs() / 10;
    assert!(
        last.events <= 2 * 256 * windows + 20 + 16,
        "{} events for 100 000 forged sources",
        last.events
    );
    assert!(
        last.events >= 2 * 10,
        "the crowds' evidence reaches userspace"
    );
    // The scanner's 20 probes among 100 000 SYNs, 5 000 apart: the engine's own test
    // forgets it between probes (it looks like every other one-packet source until then),
    // but the kernel's keeps its walk (a forged source of one probe never takes a higher
    // walk's cell), and decides at its 4th failure.
    let found = report
        .scanner_alerted_after
        .expect("the scanner must be found");
    assert!(found <= 5, "found after {found} of its probes");
    assert_eq!(report.scanner_alert, Some(("vertical", "trw")));
    // One SYN per forged source to random ports of one host: one spread scan per host
    // flooded (the IPv4 and the IPv6 one), its sources suspected (never blocked), and no
    // other scan.
    let mut others = report.other_alerts.clone();
    others.sort();
    assert_eq!(
        others,
        vec![
            ("distributed", vec!["spread"], flood::victim_v4()),
            ("distributed", vec!["spread"], flood::victim_v6()),
        ],
        "{:?}",
        report.other_alerts
    );
}
