//! CPU time per packet of probe-detector (its BPF programs, from the kernel's own run-time
//! statistics, plus its userspace process) against scanlogd's process, on the same SYN
//! traffic at several rates, with what each lost.

use std::{
    fs,
    path::Path,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use probe_common::{EXPIRE_PROGRAM, TC_PROGRAM, XDP_PROGRAM};

use probe_netlab::{
    netns::{Netns, run, start_daemon},
    syslog::Syslog,
};

use crate::{
    detectors::{Detector, Ours, PeerFiles, peer_alerts},
    scenarios::Lab,
    topology::{SCANNER, SCANNER_IF, VICTIM, VICTIM_IF},
};

const BPF_STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// One traffic generator at one rate.
pub struct Load {
    /// Its row label.
    pub name: &'static str,
    /// Part of `--quick`.
    pub quick: bool,
    /// The command, in the scanner's namespace; bounded in packets and time.
    args: fn(&Path) -> Vec<String>,
    /// Exit codes that are not failures (hping3: 1, some probes unanswered; timeout: 124).
    ok_codes: &'static [i32],
    /// Packets the victim receives at the least in a run that went as meant; a run with
    /// fewer is measured again, once (trafgen can stop early, see its entry).
    least: u64,
}

/// The loads, slowest first. Each sends SYNs from one source to closed ports of the victim.
pub const LOADS: &[Load] = &[
    Load {
        name: "hping3, 1 000/s",
        quick: true,
        args: |_| {
            strings(&[
                "hping3", "-q", "-S", "-p", "++1", "-i", "u1000", "-c", "3000", VICTIM,
            ])
        },
        ok_codes: &[1],
        least: 0,
    },
    Load {
        name: "nmap, 5 000/s",
        quick: false,
        args: |_| {
            strings(&[
                "nmap",
                "-n",
                "-Pn",
                "-sS",
                "-p",
                "1-20000",
                "--min-rate",
                "5000",
                "--max-rate",
                "5000",
                "--max-retries",
                "0",
                "-oN",
                "/dev/null",
                VICTIM,
            ])
        },
        ok_codes: &[],
        least: 0,
    },
    Load {
        name: "hping3, 10 000/s",
        quick: false,
        args: |_| {
            strings(&[
                "hping3", "-q", "-S", "-p", "++1", "-i", "u100", "-c", "30000", VICTIM,
            ])
        },
        ok_codes: &[1],
        least: 0,
    },
    Load {
        name: "nmap, as fast as it goes",
        quick: false,
        args: |_| {
            strings(&[
                "nmap",
                "-n",
                "-Pn",
                "-sS",
                "-p",
                "1-65535",
                "-T5",
                "--min-rate",
                "100000",
                "--max-retries",
                "0",
                "-oN",
                "/dev/null",
                VICTIM,
            ])
        },
        ok_codes: &[],
        least: 0,
    },
    Load {
        name: "hping3 --flood, 3 s",
        quick: false,
        args: |_| {
            strings(&[
                "timeout", "-s", "INT", "3", "hping3", "-q", "-S", "-p", "++1", "--flood", VICTIM,
            ])
        },
        ok_codes: &[1, 124],
        least: 0,
    },
    Load {
        name: "trafgen, 300 000 SYNs",
        quick: false,
        args: |config| {
            let config = config.display().to_string();
            strings(&[
                "trafgen", "-q", "-o", SCANNER_IF, "-c", &config, "-n", "300000",
            ])
        },
        // trafgen exits 1 when its last TX-ring flush meets the veth's full queue (EAGAIN);
        // the figures count the packets the victim received, whatever trafgen managed. Now
        // and then that comes within its first 10 000 packets: a run that short mostly
        // measures the 1 s drain's timers, and is made again.
        ok_codes: &[1],
        least: 50_000,
    },
];

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|&s| s.to_owned()).collect()
}

/// probe-detector's settings the cost is measured with: the defaults. (`--wakeup-ms 0`,
/// which wakes it least, was measured beside them until the kernel's verdicts and
/// summaries left it nothing to save: the last run that had both, at b59ad54, found them
/// within the noise of each other on every load.)
pub const SETTINGS: [&[&str]; 1] = [&[]];

/// One load's figures.
pub struct CostRow {
    /// The load.
    pub load: &'static Load,
    /// probe-detector's extra flags.
    pub flags: &'static [&'static str],
    /// Packets the victim's interface received.
    pub packets: u64,
    /// Seconds the generator ran.
    pub seconds: f64,
    /// probe-detector's XDP and TC programs, ns per received packet.
    pub kernel_ns: f64,
    /// probe-detector's expiry sweeps (which run on a timer, however many packets come),
    /// ns per received packet: part of `user_ns` (the process runs them, the kernel's run
    /// time is its system time).
    pub expiry_ns: f64,
    /// The same, in ms of CPU per second of the run.
    pub expiry_ms_per_s: f64,
    /// probe-detector's process, ns per received packet: user and system time, the expiry
    /// sweeps it runs included.
    pub user_ns: f64,
    /// scanlogd's process, ns per received packet.
    pub scanlogd_ns: f64,
    /// Events the BPF programs could not put in the ring buffer.
    pub ring_drops: Option<u64>,
    /// Packets the kernel dropped at scanlogd's raw socket.
    pub scanlogd_drops: u64,
    /// Whether each raised its alert.
    pub detected: (bool, bool),
}

/// Measures every load (only the quick ones with `quick`); turns the kernel's BPF
/// statistics on for the duration and restores them.
pub fn measure(
    lab: &Lab,
    binary: &Path,
    syslog: &Syslog,
    work: &Path,
    quick: bool,
    mut progress: impl FnMut(&str),
) -> anyhow::Result<Vec<CostRow>> {
    let old = fs::read_to_string(BPF_STATS).unwrap_or_else(|_| "0".to_owned());
    fs::write(BPF_STATS, b"1").context("cannot turn on kernel.bpf_stats_enabled")?;
    let config = work.join("trafgen.cfg");
    let result = (|| {
        fs::write(&config, trafgen_config(lab)?)?;
        let mut rows = Vec::new();
        for load in LOADS.iter().filter(|l| l.quick || !quick) {
            for flags in SETTINGS {
                let mut row = measure_one(lab, binary, syslog, &config, load, flags)
                    .with_context(|| format!("cost of {}", load.name))?;
                if row.packets < load.least {
                    progress(&format!(
                        "cost: {}: only {} packets reached the victim (at least {} meant): again",
                        load.name, row.packets, load.least
                    ));
                    row = measure_one(lab, binary, syslog, &config, load, flags)
                        .with_context(|| format!("cost of {}", load.name))?;
                }
                progress(&format!(
                    "cost: {} {}: {} packets in {:.1} s, probe-detector {:.0} ns/packet, scanlogd {:.0} ns/packet",
                    load.name,
                    flags.join(" "),
                    row.packets,
                    row.seconds,
                    row.total_ns(),
                    row.scanlogd_ns
                ));
                rows.push(row);
            }
        }
        Ok(rows)
    })();
    let _ = fs::write(BPF_STATS, old.trim().as_bytes());
    result
}

/// The trafgen packet of the top-rate load: SYNs from the scanner to random ports.
pub(crate) fn trafgen_config(lab: &Lab) -> anyhow::Result<String> {
    let victim = lab.host.victim.mac(VICTIM_IF)?;
    let scanner = lab.host.scanner.mac(SCANNER_IF)?;
    Ok(format!(
        "{{\n  eth(da={victim}, sa={scanner}),\n  ipv4(saddr={SCANNER}, daddr={VICTIM}, ttl=64),\n  tcp(sp=drnd(), dp=drnd(), syn, seq=drnd()),\n}}\n"
    ))
}

fn measure_one(
    lab: &Lab,
    binary: &Path,
    syslog: &Syslog,
    trafgen: &Path,
    load: &'static Load,
    flags: &'static [&'static str],
) -> anyhow::Result<CostRow> {
    let victim = &lab.host.victim;
    let mut args = vec!["--iface", VICTIM_IF];
    args.extend_from_slice(flags);
    let mut ours = Ours::start(victim, binary, &args)?;
    start_daemon(&mut syslog.exec(victim, "scanlogd", &[]))?;
    let scanlogd = wait_for_pid(victim, "scanlogd")?;
    let ours_pid = ours.pid().context("probe-detector has no pid")?;
    let offset = syslog.offset();
    let before = (
        victim.rx_packets(VICTIM_IF)?,
        bpf_run_ns()?,
        cpu_ns(ours_pid)?,
        cpu_ns(scanlogd)?,
    );
    let args = (load.args)(trafgen);
    let started = Instant::now();
    let out = lab
        .host
        .scanner
        .exec(
            &args[0],
            &args[1..].iter().map(String::as_str).collect::<Vec<_>>(),
        )
        .output()
        .with_context(|| format!("cannot run {}", args[0]))?;
    let seconds = started.elapsed().as_secs_f64();
    let code = out.status.code().unwrap_or(-1);
    if code != 0 && !load.ok_codes.contains(&code) {
        bail!(
            "{} exited with {}: {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    // Let both drain what is queued.
    thread::sleep(Duration::from_secs(1));
    let after = (
        victim.rx_packets(VICTIM_IF)?,
        bpf_run_ns()?,
        cpu_ns(ours_pid)?,
        cpu_ns(scanlogd)?,
    );
    let scanlogd_drops = raw_socket_drops(victim);
    let detected_ours = !ours.alerts().is_empty();
    ours.stop()?;
    PeerFiles::stop(victim);
    let ring_drops = ours.log().iter().rev().find_map(|l| {
        let counters = l.split("kernel counters:").nth(1)?;
        counters
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix("ringbuf_drops=")?.parse().ok())
    });
    let lines = syslog.lines_since(offset)?;
    let packets = after.0.saturating_sub(before.0);
    let per = |a: u64, b: u64| a.saturating_sub(b) as f64 / packets.max(1) as f64;
    Ok(CostRow {
        load,
        flags,
        packets,
        seconds,
        kernel_ns: per(after.1.0, before.1.0),
        expiry_ns: per(after.1.1, before.1.1),
        expiry_ms_per_s: after.1.1.saturating_sub(before.1.1) as f64 / 1e6 / (seconds + 1.0),
        user_ns: per(after.2, before.2),
        scanlogd_ns: per(after.3, before.3),
        ring_drops,
        scanlogd_drops,
        detected: (
            detected_ours,
            !peer_alerts(Detector::Scanlogd, &lines).is_empty(),
        ),
    })
}

impl CostRow {
    /// probe-detector's whole cost per packet: the per-packet BPF programs and the process
    /// (whose system time includes the expiry program it runs).
    pub fn total_ns(&self) -> f64 {
        self.kernel_ns + self.user_ns
    }
}

fn wait_for_pid(ns: &Netns, comm: &str) -> anyhow::Result<libc::pid_t> {
    let started = Instant::now();
    loop {
        if let Some(pid) = ns.pids_named(comm).first() {
            return Ok(*pid);
        }
        if started.elapsed() > Duration::from_secs(10) {
            bail!("{comm} did not start within 10 s");
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Run time so far of probe-detector's per-packet BPF programs (XDP and TC) and of its
/// expiry program (bpftool's run_time_ns, kept while kernel.bpf_stats_enabled is on).
/// Their names are under the kernel's 15 characters.
fn bpf_run_ns() -> anyhow::Result<(u64, u64)> {
    let out = run(Command::new("bpftool").args(["-j", "prog", "show"]))?;
    let progs: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let sum = |names: &[&str]| -> u64 {
        progs.as_array().map_or(0, |all| {
            all.iter()
                .filter(|p| p["name"].as_str().is_some_and(|n| names.contains(&n)))
                .filter_map(|p| p["run_time_ns"].as_u64())
                .sum()
        })
    };
    Ok((sum(&[XDP_PROGRAM, TC_PROGRAM]), sum(&[EXPIRE_PROGRAM])))
}

/// CPU time of every thread of `pid` so far, in ns (/proc/PID/task/*/schedstat).
fn cpu_ns(pid: libc::pid_t) -> anyhow::Result<u64> {
    let mut total = 0;
    for task in fs::read_dir(format!("/proc/{pid}/task"))
        .with_context(|| format!("process {pid} is gone"))?
    {
        let path = task?.path().join("schedstat");
        if let Ok(text) = fs::read_to_string(&path) {
            total += text
                .split_whitespace()
                .next()
                .and_then(|ns| ns.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    Ok(total)
}

/// Packets dropped at raw sockets in `ns` (the last column of /proc/net/raw).
fn raw_socket_drops(ns: &Netns) -> u64 {
    ns.exec("cat", &["/proc/net/raw"])
        .output()
        .map(|out| {
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .skip(1)
                .filter_map(|l| l.split_whitespace().last()?.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0)
}
