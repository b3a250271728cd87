//! The cut-off table: the fast host scans again, with probe-detector alone and `--block`:
//! how many of its probes the scanner got an answer to before the drop. Counted in the
//! recording of the victim's interface: our answers (RST, SYN-ACK, ICMP errors) that left
//! it; answers TC dropped never reach tcpdump's tap, and frames XDP dropped never reach
//! the stack, so what the recording holds is what the scanner learned.

use std::{
    path::Path,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use probe_netlab::inject::lab_address;
use probe_userspace::net::pcap::{Capture, Flow};

use crate::{
    capture::Recorder,
    cost::trafgen_config,
    detectors::Ours,
    matrix::{Context, slug, watch_point},
    scenarios::{Lab, SCENARIOS, Scenario},
    topology::{SCANNER_IF, Topology, VICTIM_IF, is_victim},
};

/// The scans measured: the fast host scans.
pub const MEASURED: &[&str] = &[
    "nmap -sS",
    "nmap -sT",
    "nmap -sF",
    "nmap -sN",
    "nmap -sX",
    "nmap -sA",
    "nmap -sU",
    "nmap -6 -sS",
    "masscan",
    "hping3 SYN ports",
    "hping3 Xmas ports",
];

/// The lab's top rate, measured here too: the cost table's trafgen load (not a matrix
/// scenario: the peers have their own row for it there).
static TRAFGEN: Scenario = Scenario {
    name: "trafgen, 300 000 SYNs",
    what: "trafgen: 300 000 SYNs from the scanner to random ports, as fast as the veth takes them",
    topology: Topology::Host,
    benign: false,
    quick: false,
    flags: &[],
    run: trafgen_burst,
};

/// How long a scan may run with `--block` before it is stopped.
const CUT_AFTER: Duration = Duration::from_secs(5);

/// The scanners' command names, to stop them.
const SCANNERS: [&str; 4] = ["nmap", "masscan", "hping3", "trafgen"];

/// One scan with `--block`.
pub struct CutRow {
    /// The scan.
    pub scenario: &'static Scenario,
    /// Our answers to it that left the host (each one a probe the scanner learned from).
    pub answers: usize,
    /// Whether probe-detector blocked its source.
    pub blocked: bool,
}

/// The scenarios measured, in report order.
pub fn chosen(only: Option<&str>) -> Vec<&'static Scenario> {
    SCENARIOS
        .iter()
        .filter(|s| MEASURED.contains(&s.name))
        .chain(std::iter::once(&TRAFGEN))
        .filter(|s| only.is_none_or(|text| s.name.to_lowercase().contains(text)))
        .collect()
}

/// Sends the cost table's trafgen load: 300 000 SYNs to random ports of the victim.
fn trafgen_burst(lab: &Lab) -> anyhow::Result<()> {
    let config = std::env::temp_dir().join(format!("probe-lab-cut-{}.cfg", std::process::id()));
    std::fs::write(&config, trafgen_config(lab)?)
        .with_context(|| format!("cannot write {}", config.display()))?;
    let out = lab
        .host
        .scanner
        .exec(
            "trafgen",
            &[
                "-q",
                "-o",
                SCANNER_IF,
                "-c",
                &config.display().to_string(),
                "-n",
                "300000",
            ],
        )
        .output();
    let _ = std::fs::remove_file(&config);
    let out = out.context("cannot run trafgen")?;
    // Exit status 1: its last TX-ring flush met the veth's full queue, as in the cost table.
    match out.status.code() {
        Some(0 | 1) => Ok(()),
        _ => bail!(
            "trafgen exited with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ),
    }
}

/// Runs `scenario` with probe-detector alone, with `--block`.
pub fn run(ctx: &Context<'_>, lab: &Lab, scenario: &'static Scenario) -> anyhow::Result<CutRow> {
    let (ns, dev, _) = watch_point(lab, scenario.topology);
    let pcap = ctx
        .pcaps
        .join(format!("{}-block.pcap", slug(scenario.name)));
    let recorder = Recorder::start(ns, dev, &pcap)?;
    let mut ours = Ours::start(ns, ctx.binary, &["--iface", VICTIM_IF, "--block"])?;
    // A blocked scanner waits for answers that never come (nmap up to its host timeout):
    // it is stopped after CUT_AFTER, which a fast scan needs a tenth of.
    let (sent, cut) = thread::scope(|scope| {
        let scan = scope.spawn(|| (scenario.run)(lab));
        let started = Instant::now();
        while !scan.is_finished() && started.elapsed() < CUT_AFTER {
            thread::sleep(Duration::from_millis(50));
        }
        let cut = !scan.is_finished();
        if cut {
            for tool in SCANNERS {
                for pid in lab.host.scanner.pids_named(tool) {
                    // SAFETY: kill with a pid just listed and a valid signal number.
                    unsafe { libc::kill(pid, libc::SIGTERM) };
                }
            }
        }
        (scan.join(), cut)
    });
    let sent = sent.map_err(|_| anyhow::anyhow!("the scan's thread panicked"))?;
    // Answers already queued go out within a moment.
    thread::sleep(Duration::from_millis(500));
    let log = ours.log();
    let stopped = ours.stop();
    recorder.stop()?;
    // A scan stopped here fails its own way (killed): only a scan that ended must succeed.
    if !cut {
        sent.with_context(|| format!("scenario {:?} with --block", scenario.name))?;
    }
    stopped.with_context(|| format!("probe-detector --block in scenario {:?}", scenario.name))?;
    Ok(CutRow {
        scenario,
        answers: answers(&pcap)?,
        blocked: log.iter().any(|l| l.contains("] blocked ")),
    })
}

/// Our answers in a recording: TCP RST or SYN-ACK, and ICMP errors, from the victim to
/// another address.
fn answers(path: &Path) -> anyhow::Result<usize> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let capture =
        Capture::parse(&bytes).with_context(|| format!("{} is damaged", path.display()))?;
    let mut n = 0;
    for packet in capture.packets() {
        let Some(flow) = Flow::of(packet?.data) else {
            continue;
        };
        if !is_victim(flow.src) || is_victim(flow.dst) || !lab_address(flow.dst) {
            continue;
        }
        let answer = match flow.proto {
            6 => flow
                .tcp_flags
                .is_some_and(|f| f & 0x04 != 0 || f & 0x12 == 0x12),
            1 => flow.port == Some(3),
            58 => flow.port == Some(1),
            _ => false,
        };
        n += usize::from(answer);
    }
    Ok(n)
}
