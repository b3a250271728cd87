//! probe-lab (run it through `cargo xtask lab`): builds the lab's networks, runs real
//! scanners and benign traffic against probe-detector, scanlogd, psad and portsentry side
//! by side, measures CPU cost against scanlogd, and writes the detection matrix. Needs
//! root, and the tools `cargo xtask lab` installs.

mod capture;
mod cost;
mod cutoff;
mod detectors;
mod fleet;
mod homenets;
mod matrix;
mod report;
mod scenarios;
mod tools;
mod topology;

use std::{
    fs,
    path::PathBuf,
    process::{Command, ExitCode},
    sync::atomic::{AtomicBool, Ordering},
    time::{Instant, SystemTime},
};

use anyhow::{Context as _, bail};
use clap::Parser;

use probe_netlab::syslog::Syslog;

use crate::{
    detectors::{Detector, PeerFiles},
    matrix::Context,
    scenarios::{Lab, SCENARIOS},
};

/// Real scanners against probe-detector and its peers, in network namespaces made and
/// deleted here (198.18.0.0/15 and 2001:db8::/32 only). Writes detection-matrix.md and
/// detection-matrix.svg to --out. Exits 1 if probe-detector misses a scan or alarms on
/// benign traffic.
#[derive(Debug, Parser)]
#[command(name = "probe-lab", version)]
struct Cli {
    /// The probe-detector binary to test.
    #[arg(long, value_name = "PATH")]
    detector: PathBuf,
    /// Where the report goes.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Where the lab's syslog, configurations and recordings go.
    #[arg(long, value_name = "DIR")]
    work: PathBuf,
    /// A few scenarios and one cost load (for CI, under 3 minutes).
    #[arg(long)]
    quick: bool,
    /// Only the scenarios whose name contains this text (any case), and no cost table or
    /// report: to look at one scenario again.
    #[arg(long, value_name = "TEXT")]
    only: Option<String>,
    /// Only the cost table (CPU per packet against scanlogd at every load), printed, not
    /// written: to measure a change's cost again.
    #[arg(long, conflicts_with_all = ["quick", "only"])]
    cost: bool,
    /// The fleet lab instead (sensors and correlators over Redis: one server, TLS, a
    /// three-node cluster): writes fleet-lab.md to --out and fleet-bench.md to --work.
    #[arg(long)]
    fleet: bool,
    /// The command line to print in the report.
    #[arg(long, value_name = "TEXT", default_value = "cargo xtask lab")]
    command: String,
}

/// Set by SIGINT or SIGTERM: the lab stops between steps and cleans up.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

/// Tools the lab runs (Debian packages installed by `cargo xtask lab`).
const TOOLS: &[&str] = &[
    "ip",
    "nmap",
    "masscan",
    "hping3",
    "zmap",
    "trafgen",
    "tcpdump",
    "curl",
    "traceroute",
    "mtr",
    "tracepath",
    "scamper",
    "iptables",
    "ip6tables",
    "rsyslogd",
    "scanlogd",
    "psad",
    "portsentry",
    "bpftool",
    "timeout",
];

fn main() -> ExitCode {
    let cli = Cli::parse();
    match lab(&cli) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("probe-lab: error: {err:#}");
            ExitCode::from(2)
        }
    }
}

/// Elapsed-time progress lines on stderr.
struct Progress(Instant);

impl Progress {
    fn say(&self, what: &str) {
        eprintln!("[{:>6.1} s] {what}", self.0.elapsed().as_secs_f64());
    }
}

fn lab(cli: &Cli) -> anyhow::Result<bool> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the lab makes network namespaces and loads BPF programs: run it as root");
    }
    let missing: Vec<&str> = TOOLS.iter().copied().filter(|t| !on_path(t)).collect();
    if !missing.is_empty() {
        bail!(
            "missing tools: {} (`cargo xtask lab` installs them)",
            missing.join(", ")
        );
    }
    if !cli.detector.is_file() {
        bail!("no probe-detector binary at {}", cli.detector.display());
    }
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { libc::signal(signal, on_signal as *const () as libc::sighandler_t) };
    }
    let progress = Progress(Instant::now());
    if cli.fleet {
        fs::create_dir_all(&cli.out)?;
        fs::create_dir_all(&cli.work)?;
        return fleet::run(&cli.detector, &cli.out, &cli.work, |line| {
            progress.say(line)
        });
    }
    let pcaps = cli.work.join("pcaps");
    fs::create_dir_all(&pcaps)?;
    fs::create_dir_all(&cli.out)?;
    let syslog = Syslog::start(&cli.work.join("syslog")).context("starting the lab's syslog")?;
    let peers = PeerFiles::prepare(&cli.work, syslog.kern_log())?;
    progress.say("building the host and gateway networks");
    let lab = Lab::new()?;
    let ctx = Context {
        binary: &cli.detector,
        syslog: &syslog,
        peers: &peers,
        pcaps: &pcaps,
    };
    if cli.cost {
        progress.say("measuring CPU cost against scanlogd");
        let costs = cost::measure(&lab, &cli.detector, &syslog, &cli.work, false, |line| {
            progress.say(line)
        })?;
        println!("{}", report::cost_table(&costs));
        return Ok(true);
    }
    let only = cli.only.as_ref().map(|text| text.to_lowercase());
    let chosen: Vec<_> = SCENARIOS
        .iter()
        .filter(|s| s.quick || !cli.quick)
        .filter(|s| {
            only.as_ref()
                .is_none_or(|text| s.name.to_lowercase().contains(text))
        })
        .collect();
    if chosen.is_empty() {
        bail!(
            "no scenario's name contains {:?}",
            cli.only.clone().unwrap_or_default()
        );
    }
    let mut rows = Vec::new();
    for (i, scenario) in chosen.iter().enumerate() {
        if STOP.load(Ordering::Relaxed) {
            bail!("interrupted; the lab's namespaces and processes were removed");
        }
        progress.say(&format!(
            "[{}/{}] {}: {}",
            i + 1,
            chosen.len(),
            scenario.name,
            scenario.what
        ));
        let row = match matrix::run(&ctx, &lab, scenario) {
            // A scanner's own crash: the scenario once more, with fresh detectors.
            Err(err) if err.chain().any(|e| e.is::<tools::Crashed>()) => {
                progress.say(&format!("        {err:#}: once more"));
                matrix::run(&ctx, &lab, scenario)?
            }
            row => row?,
        };
        let cells: Vec<String> = Detector::ALL
            .iter()
            .zip(&row.cells)
            .map(|(d, c)| match (scenario.benign, c.probes) {
                (true, _) => format!("{} {} alerts", d.name(), c.alerts.len()),
                (false, Some(p)) => match c.decided {
                    Some(decided) => format!(
                        "{} after {p} (decided at {decided},{} {:.1} ms to stdout)",
                        d.name(),
                        c.written
                            .map_or(String::new(), |w| format!(" written at {w},")),
                        c.lag_ms.unwrap_or(f64::NAN)
                    ),
                    None => format!("{} after {p}", d.name()),
                },
                (false, None) => format!("{} missed", d.name()),
            })
            .collect();
        progress.say(&format!(
            "        {} probes in {:.1} s: {}",
            row.probes,
            row.seconds,
            cells.join(", ")
        ));
        rows.push(row);
    }
    if STOP.load(Ordering::Relaxed) {
        bail!("interrupted; the lab's namespaces and processes were removed");
    }
    progress.say("the fast scans again, probe-detector alone with --block");
    let mut cuts = Vec::new();
    for scenario in cutoff::chosen(only.as_deref())
        .into_iter()
        .filter(|s| s.quick || !cli.quick)
    {
        if STOP.load(Ordering::Relaxed) {
            bail!("interrupted; the lab's namespaces and processes were removed");
        }
        let cut = cutoff::run(&ctx, &lab, scenario)?;
        progress.say(&format!(
            "        {} --block: {} answers before the drop ({})",
            scenario.name,
            cut.answers,
            if cut.blocked {
                "blocked"
            } else {
                "NOT blocked"
            }
        ));
        cuts.push(cut);
    }
    progress.say("the gateway scans again, probe-detector alone with --home-net");
    let mut explicit = Vec::new();
    for scenario in homenets::chosen(only.as_deref())
        .into_iter()
        .filter(|s| s.quick || !cli.quick)
    {
        if STOP.load(Ordering::Relaxed) {
            bail!("interrupted; the lab's namespaces and processes were removed");
        }
        let row = homenets::run(&ctx, &lab, scenario)?;
        progress.say(&format!(
            "        {} --home-net: {}",
            scenario.name,
            match (scenario.benign, row.probes) {
                (true, _) => format!("{} alerts", row.alerts),
                (false, Some(p)) => format!("after {p}"),
                (false, None) => "missed".to_owned(),
            }
        ));
        explicit.push(row);
    }
    if only.is_some() {
        for row in &rows {
            for (detector, cell) in Detector::ALL.iter().zip(&row.cells) {
                for alert in &cell.alerts {
                    progress.say(&format!("{}: {}", detector.name(), alert.text));
                }
            }
        }
        return Ok(check(&rows, &explicit));
    }
    progress.say("measuring CPU cost against scanlogd");
    let costs = cost::measure(&lab, &cli.detector, &syslog, &cli.work, cli.quick, |line| {
        progress.say(line)
    })?;
    drop(lab);
    let info = report::RunInfo {
        command: cli.command.clone(),
        date: probe_userspace::clock::rfc3339_micros(SystemTime::now())
            .get(..16)
            .map_or_else(String::new, |d| d.replace('T', " ") + " UTC"),
        duration: {
            let s = progress.0.elapsed().as_secs();
            format!("{} min {} s", s / 60, s % 60)
        },
        machine: machine(),
        versions: versions(),
    };
    let md = report::markdown(&info, &rows, &cuts, &explicit, &costs);
    let md_path = cli.out.join("detection-matrix.md");
    fs::write(&md_path, md).with_context(|| format!("cannot write {}", md_path.display()))?;
    let svg_path = cli.out.join("detection-matrix.svg");
    fs::write(&svg_path, report::svg(&rows))
        .with_context(|| format!("cannot write {}", svg_path.display()))?;
    progress.say(&format!(
        "wrote {} and {}; recordings in {}",
        md_path.display(),
        svg_path.display(),
        pcaps.display()
    ));
    Ok(check(&rows, &explicit))
}

/// The lab is also a check of our own claims: true when probe-detector found every scan
/// and raised nothing on benign traffic (what it missed or raised is said on stderr).
fn check(rows: &[matrix::Row], explicit: &[homenets::ExplicitRow]) -> bool {
    let mut failures = Vec::new();
    for row in explicit {
        match (row.scenario.benign, row.probes.is_some(), row.alerts) {
            (false, false, _) => {
                failures.push(format!("with --home-net missed {:?}", row.scenario.name));
            }
            (true, _, n) if n > 0 => failures.push(format!(
                "with --home-net raised {n} alerts on benign {:?}",
                row.scenario.name
            )),
            _ => {}
        }
    }
    for row in rows {
        let ours = &row.cells[0];
        match (row.scenario.benign, ours.detected()) {
            (false, false) => failures.push(format!("missed {:?}", row.scenario.name)),
            (true, true) => failures.push(format!(
                "{} alerts on benign {:?}: {}",
                ours.alerts.len(),
                row.scenario.name,
                ours.alerts[0].text
            )),
            _ => {}
        }
    }
    for failure in &failures {
        eprintln!("probe-lab: probe-detector {failure}");
    }
    failures.is_empty()
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(tool).is_file()))
}

fn machine() -> String {
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("Linux {} ({cpus} CPUs)", kernel.trim())
}

fn versions() -> Vec<(String, String)> {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let commit = Command::new("git")
        .args(["-C", root, "describe", "--always", "--dirty"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map_or_else(
            || "unknown".to_owned(),
            |o| String::from_utf8_lossy(&o.stdout).trim().to_owned(),
        );
    let mut out = vec![(
        "probe-detector".to_owned(),
        format!("{} (commit {commit})", env!("CARGO_PKG_VERSION")),
    )];
    let packages = [
        "nmap",
        "masscan",
        "hping3",
        "zmap",
        "netsniff-ng",
        "scanlogd",
        "psad",
        "portsentry",
        "rsyslog",
        "iptables",
        "tcpdump",
        "curl",
        "traceroute",
        "mtr-tiny",
        "iputils-tracepath",
    ];
    for package in packages {
        let version = Command::new("dpkg-query")
            .args(["-W", "-f=${Version}", package])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map_or_else(
                || "?".to_owned(),
                |o| String::from_utf8_lossy(&o.stdout).into_owned(),
            );
        out.push((format!("{package} (Debian)"), version));
    }
    out
}
