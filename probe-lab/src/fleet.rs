//! `cargo xtask lab --fleet`: the fleet against itself, on one Redis server, one over TLS
//! and a three-node Redis Cluster. Eight hosts each run a sensor, one correlator runs on
//! the hub; per Redis: ordinary clients of every host (no alert allowed), then sweeps of
//! one port over the eight hosts from distinct sources (latency from the deciding probe to
//! the fleet alert at the program reading the correlator's stdout), then the throughput:
//! what a sensor spends per published record, and the evidence records a second one
//! correlator pinned to one core gets through. Writes docs/fleet-lab.md and the Fleet
//! section of BENCHMARKS.md.

use std::{
    fmt::Write as _,
    path::Path,
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context as _, bail};
use probe_netlab::fleet::{self, Acl, FleetNet, RedisMode};
use probe_userspace::fleet::{channel::FleetTarget, keys, sensor::append, wire::Evidence};

use crate::detectors::Ours;

/// Hosts, each with a sensor.
const HOSTS: usize = 8;
/// Sweeps timed per Redis.
const SWEEPS: u8 = 20;
/// Evidence records of the throughput runs.
const RECORDS: usize = 400_000;

/// What one Redis setting gave.
pub struct FleetRow {
    pub mode: RedisMode,
    /// Sweeps found, of those made.
    pub found: usize,
    pub made: usize,
    /// Milliseconds from the deciding probe to the alert at the reader, sorted.
    pub latency_ms: Vec<f64>,
    /// Alerts on ordinary clients.
    pub benign_alerts: usize,
    /// Per sweep: hosts that still answered the sweeper's probe of their open web port,
    /// sent as soon as the fleet alert was read (sensors and correlator run `--block`).
    pub answered_after: Vec<usize>,
    /// Sensor: CPU microseconds per record handed to the publisher (conversion, rationing,
    /// queueing: the daemon's share), per record published, and records a second.
    pub tap_us: f64,
    pub publish_us: f64,
    pub publish_rate: f64,
    /// Correlator: records a second (wall), and per CPU-second, on one core.
    pub correlate_rate: f64,
    pub correlate_cpu_rate: f64,
}

fn mode_name(mode: RedisMode) -> &'static str {
    match mode {
        RedisMode::Single => "one server",
        RedisMode::Tls => "one server, TLS",
        RedisMode::Cluster => "Redis Cluster, 3 nodes",
    }
}

/// Runs the fleet lab; true when every sweep was found and no client raised an alert.
pub fn run(binary: &Path, out: &Path, work: &Path, say: impl Fn(&str)) -> anyhow::Result<bool> {
    let mut rows = Vec::new();
    for mode in [RedisMode::Single, RedisMode::Tls, RedisMode::Cluster] {
        say(&format!("fleet: {}", mode_name(mode)));
        let row = run_mode(binary, work, mode, &say)?;
        say(&format!(
            "        {}/{} sweeps found, latency median {:.1} ms, worst {:.1} ms; benign alerts {}; sensor {:.2} µs/record; correlator {:.0} records/s ({:.0} per CPU-second)",
            row.found,
            row.made,
            percentile(&row.latency_ms, 0.5),
            row.latency_ms.last().copied().unwrap_or(f64::NAN),
            row.benign_alerts,
            row.publish_us,
            row.correlate_rate,
            row.correlate_cpu_rate
        ));
        rows.push(row);
    }
    let cpu = cpu_model();
    let date = probe_userspace::clock::rfc3339_micros(SystemTime::now())
        .get(..16)
        .map_or_else(String::new, |d| d.replace('T', " ") + " UTC");
    let report = markdown(&rows, &cpu, &date);
    let path = out.join("fleet-lab.md");
    std::fs::write(&path, &report).with_context(|| format!("cannot write {}", path.display()))?;
    let bench = bench_section(&rows, &cpu, &date);
    std::fs::write(work.join("fleet-bench.md"), bench)?;
    say(&format!("wrote {}", path.display()));
    Ok(rows
        .iter()
        .all(|r| r.found == r.made && r.benign_alerts == 0))
}

fn run_mode(
    binary: &Path,
    work: &Path,
    mode: RedisMode,
    say: &impl Fn(&str),
) -> anyhow::Result<FleetRow> {
    let acl = Acl {
        sensor: keys::sensor_acl,
        correlator: keys::correlator_acl(),
    };
    let dir = work.join(format!("fleet-{mode:?}").to_lowercase());
    let net = FleetNet::new(HOSTS, mode, acl, &dir)?;
    let mut sensors = Vec::new();
    for n in 1..=HOSTS {
        let args = net.sensor_command(n);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        sensors.push(Ours::start(&net.hosts[n - 1], binary, &args)?);
    }
    let mut args: Vec<String> = [
        "correlate",
        "--sensor-name",
        "c1",
        "--idle-timeout",
        "5",
        "--block",
        "--block-rate",
        "50",
    ]
    .map(str::to_owned)
    .to_vec();
    args.extend(net.correlator_args());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut correlator = Ours::start_until(&net.hub, binary, &args, "owns 16 of 16 target shards")?;
    // Sensors connect in the background: give them their first round.
    std::thread::sleep(Duration::from_secs(1));

    // Ordinary clients: a browser-like client of every host, and a port check of the web
    // port of every host (connections that succeed).
    let client = fleet::source(SOURCES_CLIENT);
    net.curl_hosts(&client)?;
    let checker = fleet::source(SOURCES_CLIENT + 1);
    let hosts = net.host_ips();
    let mut check = vec!["-sT", "-p", "80"];
    check.extend(hosts.iter().map(String::as_str));
    net.nmap(&checker, &check)?;
    std::thread::sleep(Duration::from_secs(2));
    let benign_alerts = correlator
        .alerts()
        .iter()
        .filter(|a| a.text.contains(&client) || a.text.contains(&checker))
        .count();

    let mut latency_ms = Vec::new();
    let mut answered_after = Vec::new();
    let mut found = 0;
    for k in 0..SWEEPS {
        let src = fleet::source(k);
        let port = (2000 + u16::from(k)).to_string();
        let mut sweep = vec!["-sS", "-p", &port];
        sweep.extend(hosts.iter().map(String::as_str));
        net.nmap(&src, &sweep)?;
        let started = Instant::now();
        let needle = format!("probed by {src} ");
        loop {
            if let Some(alert) = correlator
                .alerts()
                .into_iter()
                .find(|a| a.text.contains(&needle))
            {
                found += 1;
                if let Some(decided) = alert.decided {
                    let lag = alert
                        .time
                        .duration_since(decided)
                        .map_or(0.0, |d| d.as_secs_f64() * 1000.0);
                    latency_ms.push(lag);
                }
                let mut web = vec!["-sS", "-p", "80"];
                web.extend(hosts.iter().map(String::as_str));
                let answers = net.nmap(&src, &web)?;
                answered_after.push(
                    answers
                        .lines()
                        .filter(|l| l.contains("Ports:"))
                        .map(|l| l.matches("/open/").count())
                        .sum(),
                );
                break;
            }
            if started.elapsed() > Duration::from_secs(5) {
                say(&format!(
                    "        sweep from {src}: no fleet alert within 5 s"
                ));
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    latency_ms.sort_by(f64::total_cmp);
    correlator.stop()?;
    for sensor in &mut sensors {
        sensor.stop()?;
    }
    drop(sensors);

    let tap_us = tap_cost();
    let sensor = target_of(&net.sensor_args(1))?;
    let (publish_us, publish_rate) =
        in_hub(&net, move |runtime| runtime.block_on(publish_cost(sensor)))?;
    let (correlate_rate, correlate_cpu_rate) = correlate_cost(binary, &net)?;
    Ok(FleetRow {
        mode,
        found,
        made: usize::from(SWEEPS),
        latency_ms,
        benign_alerts,
        answered_after,
        tap_us,
        publish_us,
        publish_rate,
        correlate_rate,
        correlate_cpu_rate,
    })
}

/// Runs `work` with a tokio runtime on a thread inside the hub's namespace: the lab's own
/// Redis clients must reach Redis there, never anything outside the lab.
fn in_hub<T: Send + 'static>(
    net: &FleetNet,
    work: impl FnOnce(&tokio::runtime::Runtime) -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    let thread = net.hub.within(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        work(&runtime)
    })?;
    thread
        .join()
        .map_err(|_| anyhow::anyhow!("the lab's Redis client thread panicked"))?
}

/// The client sources (after the sweeps' own).
const SOURCES_CLIENT: u8 = 60;

/// A flood-like mix: nine records in ten from sources of one failure each, the rest from
/// a thousand scanners; spread over the host addresses, each record as sensor n would
/// publish it.
fn evidence(count: usize, seed: u64) -> Vec<Evidence> {
    let mut state = seed | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    (0..count)
        .map(|i| {
            let r = next();
            let src = if r % 10 == 0 {
                // A scanner of 198.18.128.0/22.
                std::net::Ipv4Addr::new(198, 18, 128 + ((r >> 8) % 4) as u8, (r >> 16) as u8)
            } else {
                // Anyone in 198.18.0.0/15.
                let low = (r >> 8) as u32 & 0x1ffff;
                std::net::Ipv4Addr::from(0xc612_0000u32 | low)
            };
            Evidence {
                time: now + Duration::from_nanos(i as u64 * 1000),
                src: src.into(),
                dst: fleet::host_ip(1 + (r >> 40) as usize % HOSTS)
                    .parse()
                    .unwrap(),
                dst_port: (r >> 24) as u16,
                proto: 6,
                probe: probe_common::ProbeType::TcpSyn,
                outcome: probe_common::Outcome::Refused,
                ttl: 64,
                tcp_flags: 0x02,
                verdict: false,
            }
        })
        .collect()
}

fn target_of(args: &[String]) -> anyhow::Result<FleetTarget> {
    let url = args.get(1).context("no --fleet URL")?;
    let ca = args.get(3).map(Into::into);
    Ok(FleetTarget::parse(url, ca)?)
}

/// Thread CPU time.
fn thread_cpu() -> Duration {
    // SAFETY: an all-zero rusage is valid; getrusage writes it whole.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a writable rusage.
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) };
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// What the daemon spends per outcome it hands to the fleet: the tap's conversion to a
/// record, its rationing and its queueing (the queue drained by a task meanwhile, as the
/// publisher does), CPU time of this thread per record.
fn tap_cost() -> f64 {
    use probe_userspace::fleet::sensor::{FleetStats, Tap};
    let probes: Vec<_> = evidence(RECORDS, 3).iter().map(|e| e.to_probe(1)).collect();
    let (tx, mut rx) = tokio::sync::mpsc::channel(RECORDS + 1);
    let stats = std::sync::Arc::new(FleetStats::default());
    let mut tap = Tap::new(tx, u32::MAX, stats);
    let cpu = thread_cpu();
    for probe in &probes {
        tap.note(probe);
    }
    let used = (thread_cpu() - cpu).as_secs_f64();
    let mut taken = 0;
    while rx.try_recv().is_ok() {
        taken += 1;
    }
    used * 1e6 / f64::from(taken.max(1))
}

/// What sensor h1's publisher spends per record: the rounds it sends (16 384 records, an
/// entry per shard of up to 2 048), CPU time of this thread over the records.
async fn publish_cost(target: FleetTarget) -> anyhow::Result<(f64, f64)> {
    let mut conn = target.connect().await?;
    let records = evidence(RECORDS, 7);
    let cpu = thread_cpu();
    let started = Instant::now();
    for round in records.chunks(16_384) {
        append(&mut conn, "h1", round).await?;
    }
    let wall = started.elapsed().as_secs_f64();
    let used = (thread_cpu() - cpu).as_secs_f64();
    Ok((used * 1e6 / RECORDS as f64, RECORDS as f64 / wall.max(1e-9)))
}

/// One correlator, pinned to CPU 1, over [`RECORDS`] records of eight sensors appended
/// before it starts: records a second from its start to the last acknowledged, and per
/// CPU-second of it.
fn correlate_cost(binary: &Path, net: &FleetNet) -> anyhow::Result<(f64, f64)> {
    let admin = FleetTarget::parse(&net.admin_url(), ca_of(net))?;
    // The sweeps' evidence is acknowledged already; the bench's is new.
    let filler = admin.clone();
    in_hub(net, move |runtime| {
        runtime.block_on(async {
            let mut conn = filler.connect().await?;
            for n in 1..=HOSTS {
                let sensor = format!("h{n}");
                let records = evidence(RECORDS / HOSTS, 11 + n as u64);
                for round in records.chunks(16_384) {
                    append(&mut conn, &sensor, round).await?;
                }
            }
            anyhow::Ok(())
        })
    })?;
    let mut args: Vec<String> = ["-c", "1"].map(str::to_owned).to_vec();
    args.push(binary.display().to_string());
    args.extend(
        [
            "correlate",
            "--sensor-name",
            "bench",
            "--output",
            "file:/dev/null",
        ]
        .map(str::to_owned),
    );
    args.extend(net.correlator_args());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut child = net
        .hub
        .exec("taskset", &args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .context("cannot start the bench correlator")?;
    let started = Instant::now();
    let pid = child.id();
    let result = in_hub(net, move |runtime| {
        runtime.block_on(async {
            let mut conn = admin.connect().await?;
            loop {
                if started.elapsed() > Duration::from_secs(120) {
                    bail!("the correlator did not get through {RECORDS} records in 120 s");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                if left(&mut conn).await? == 0 {
                    return anyhow::Ok(());
                }
            }
        })
    });
    let wall = started.elapsed().as_secs_f64();
    let cpu = process_cpu(pid);
    let _ = child.kill();
    let _ = child.wait();
    result?;
    // Everything the streams held: the sweeps' records (a few hundred) are counted too.
    Ok((
        RECORDS as f64 / wall,
        RECORDS as f64 / cpu.as_secs_f64().max(1e-9),
    ))
}

fn ca_of(net: &FleetNet) -> Option<std::path::PathBuf> {
    (net.mode == RedisMode::Tls).then(|| net.ca())
}

/// Entries not yet acknowledged or not yet read, over every evidence stream.
async fn left(conn: &mut probe_userspace::fleet::channel::Conn) -> anyhow::Result<u64> {
    let mut total = 0;
    for shard in 0..keys::SHARDS {
        for n in 1..=HOSTS {
            let key = keys::evidence_stream(shard, &format!("h{n}"));
            let groups: redis::RedisResult<Vec<std::collections::HashMap<String, redis::Value>>> =
                redis::cmd("XINFO")
                    .arg("GROUPS")
                    .arg(&key)
                    .query_async(conn)
                    .await;
            let Ok(groups) = groups else {
                // No group yet: all of it is left.
                total += 1;
                continue;
            };
            let Some(group) = groups.first() else {
                total += 1;
                continue;
            };
            for field in ["pending", "lag"] {
                total += match group.get(field) {
                    Some(redis::Value::Int(n)) => u64::try_from(*n).unwrap_or(0),
                    // lag is nil when Redis cannot tell: count it as left.
                    _ => 1,
                };
            }
        }
    }
    Ok(total)
}

/// CPU time (user + system) a process has used, from /proc.
fn process_cpu(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i).and_then(|f| f.parse::<u64>().ok()))
        .sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_millis(ticks * 1000 / hz)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn cpu_model() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = info
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown CPU", |(_, m)| m.trim())
        .to_owned();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{model}, {cpus} vCPU")
}

fn markdown(rows: &[FleetRow], cpu: &str, date: &str) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# The fleet lab\n");
    let _ = writeln!(
        md,
        "Generated by `cargo xtask lab --fleet` on {date}: {cpu}. Eight host namespaces each run a sensor (`--fleet`), one correlator runs on the hub, Redis is Debian's redis-server (ACL users per role, append-only file). See [fleet.md](fleet.md).\n"
    );
    let _ = writeln!(
        md,
        "Each sweep is `nmap -sS` of one closed port on the eight hosts from a source of its own (each host sees one probe). Latency: from the deciding probe (the alert's `last_seen`, the sensor kernel's time of the fourth host's answer) to the moment the lab read the correlator's `start` record on its stdout; {SWEEPS} sweeps per row. Sensors run `--fleet --block`, the correlator `--block`: as soon as the lab read the alert, the sweeper probes the open web port of every host, and the hosts that answer are counted (on the scanner's side; 0 means the fleet block was in every host's XDP before the probe). Benign: a curl of every host and an `nmap -sT` of the open web port of every host, from two other sources.\n"
    );
    let _ = writeln!(
        md,
        "| Redis | sweeps found | latency median (ms) | p90 (ms) | worst (ms) | hosts answering after the verdict (of {HOSTS}), worst sweep | alerts on clients |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|---:|");
    for row in rows {
        let _ = writeln!(
            md,
            "| {} | {}/{} | {:.1} | {:.1} | {:.1} | {} | {} |",
            mode_name(row.mode),
            row.found,
            row.made,
            percentile(&row.latency_ms, 0.5),
            percentile(&row.latency_ms, 0.9),
            row.latency_ms.last().copied().unwrap_or(f64::NAN),
            row.answered_after.iter().max().copied().unwrap_or(0),
            row.benign_alerts
        );
    }
    let _ = writeln!(md, "\nTarget: median under 50 ms.");
    for row in rows {
        let median = percentile(&row.latency_ms, 0.5);
        let _ = writeln!(
            md,
            "- {}: {}",
            mode_name(row.mode),
            if median < 50.0 {
                format!("met ({median:.1} ms)")
            } else {
                format!("missed ({median:.1} ms)")
            }
        );
    }
    md.push('\n');
    md.push_str(&throughput_table(rows));
    md
}

fn throughput_table(rows: &[FleetRow]) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "Throughput, {RECORDS} evidence records (nine in ten from sources of one failure each, as a forged flood makes them). Sensor: what the daemon spends handing a record to the publisher (the tap: conversion, rationing, queueing), and what the publisher spends per record (rounds of 16 384, an entry per shard of up to 2 048 records), CPU time of the thread. Correlator: one `probe-detector correlate` pinned to one core (`taskset -c 1`) over the records of eight sensors appended before it starts, from its start to the last entry acknowledged.\n"
    );
    let _ = writeln!(
        md,
        "| Redis | sensor: tap µs per record | sensor: publisher µs CPU per record | sensor records/s | correlator records/s | correlator records per CPU-second |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|");
    for row in rows {
        let _ = writeln!(
            md,
            "| {} | {:.2} | {:.2} | {:.0} | {:.0} | {:.0} |",
            mode_name(row.mode),
            row.tap_us,
            row.publish_us,
            row.publish_rate,
            row.correlate_rate,
            row.correlate_cpu_rate
        );
    }
    md
}

/// The Fleet section of BENCHMARKS.md.
fn bench_section(rows: &[FleetRow], cpu: &str, date: &str) -> String {
    format!(
        "## Fleet\n\nWritten by `cargo xtask lab --fleet` on {date}: {cpu}. The fleet's latency is in [docs/fleet-lab.md](docs/fleet-lab.md).\n\n{}",
        throughput_table(rows)
    )
}
