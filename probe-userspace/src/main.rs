//! `probe-detector`: attaches the probe-detector eBPF programs to interfaces, reads their
//! events, detects port scans and writes one JSON alert per line on stdout. Human-readable
//! logs go to stderr.

use std::{
    collections::{BTreeMap, HashMap},
    fs,
    io::{self, Write as _},
    net::SocketAddr,
    process::ExitCode,
    time::Duration,
};

use anyhow::{Context as _, bail};
use aya::maps::RingBuf;
use clap::{CommandFactory as _, FromArgMatches as _, Parser};
use probe_common::{Counter, EVENTS_MAP};
use probe_userspace::{
    alert::{AlertRecord, ProbeRecord, Thresholds, json_line},
    allow::{self, AllowError, AllowLists, Service},
    attack_list::{AttackList, Row},
    block::{BlockPolicy, Blocker, Request as BlockRequest, Response as BlockResponse, Spared},
    cidr::Cidr,
    clock,
    clock::WallClock,
    config,
    crowd::CrowdConfig,
    engine::{Engine, EngineConfig, Phase, ScanAlert},
    event::Probe,
    event::{outcome_name, proto_name},
    evidence::Evidence,
    flood::FloodLimit,
    iface::{self, IfaceError},
    loader::{self, KernelConfig, LoadError, XdpModeArg},
    metrics::{self, Snapshot},
    replay, services,
    slow::SlowConfig,
    trw::{TrwConfig, TrwUnit},
};
use tokio::{
    io::{Interest, unix::AsyncFd},
    signal::unix::{SignalKind, signal},
};

/// How often the ring buffer is read when the kernel has not woken us.
const DRAIN_INTERVAL: Duration = Duration::from_millis(20);
/// How often the kernel counters are logged at debug level.
const STATS_INTERVAL: Duration = Duration::from_secs(30);

/// Exit status when the program ran and stopped cleanly (SIGINT/SIGTERM).
const EXIT_OK: u8 = 0;
/// Exit status for a failure while loading, attaching or running.
const EXIT_FAILURE: u8 = 1;
/// Exit status for bad command-line arguments (as clap uses).
const EXIT_USAGE: u8 = 2;
/// Exit status when privileges are missing.
const EXIT_PRIVILEGES: u8 = 3;
/// Exit status when an interface does not exist or none can be chosen.
const EXIT_INTERFACE: u8 = 4;
/// Exit status when the metrics endpoint cannot listen (address in use, not ours).
const EXIT_METRICS: u8 = 5;

/// Detects port probes and port scans with XDP and TC eBPF programs, and writes one JSON
/// alert per line on stdout.
#[derive(Debug, Parser)]
#[command(
    name = "probe-detector",
    version,
    about,
    // A flag given twice takes its last value: the command line after the config file.
    args_override_self = true,
    long_about = "Detects port probes and port scans with XDP and TC eBPF programs.\n\n\
        probe-detector attaches an XDP program (ingress) and a TC program (egress) to each \
        interface. A connection attempt that this host (or, on a gateway, a host behind it) \
        refuses counts as a failed probe; a source that fails on many ports of one target \
        within a short window is a port scan, reported as one JSON object per line on stdout, \
        shaped like a Suricata EVE alert. Logs go to stderr.\n\n\
        Needs root (CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON) and Linux >= 5.8 with BTF; \
        SIGINT and SIGTERM detach everything and exit 0.",
    after_help = "Examples:\n  \
        probe-detector --iface eth0\n  \
        probe-detector --print-config > /etc/probe-detector.toml   # a documented starting point\n  \
        probe-detector --config /etc/probe-detector.toml --probes\n  \
        probe-detector --iface eth0 --scan-ports 20 --scan-window 300 | jq -c 'select(.event_type == \"alert\")'\n\n\
        SIGHUP re-reads --allow-file.\n\n\
        Exit status: 0 stopped by SIGINT/SIGTERM, 1 load/attach/runtime failure, 2 bad arguments \
        (or allow-list rules), 3 missing privileges, 4 unknown interface or no default route."
)]
struct Cli {
    /// Read settings from this TOML file: each key is a flag's long name, each value its
    /// argument (`scan-ports = 20`, `home-net = ["198.18.0.0/15"]`, `probes = true`). Flags
    /// on the command line override it.
    #[arg(global = true, long, value_name = "FILE")]
    config: Option<std::path::PathBuf>,

    /// Print the effective configuration (defaults, --config file, flags) as a documented
    /// TOML file, and exit.
    #[arg(long, global = true)]
    print_config: bool,

    /// Interface to watch (repeat for several). Default: the interface of the default route.
    #[arg(global = true, short, long = "iface", value_name = "IFACE")]
    ifaces: Vec<String>,

    /// XDP attach mode: `auto` tries native (driver) mode and falls back to generic (skb).
    #[arg(global = true, long, value_enum, default_value_t = XdpModeArg::Auto, value_name = "MODE")]
    xdp_mode: XdpModeArg,

    /// Replace an XDP program that is not ours on the interface (one attached through
    /// netlink; one held by another process's bpf_link cannot be replaced). Without it such a
    /// program stops the start and is left alone.
    #[arg(global = true, long)]
    force: bool,

    /// Distinct refused ports of one target from one source that make a port scan.
    #[arg(global = true, long, default_value_t = 10, value_name = "N", value_parser = clap::value_parser!(u16).range(2..))]
    scan_ports: u16,

    /// Window, in seconds, in which those ports must be refused (fractions allowed).
    #[arg(global = true, long, default_value = "60", value_name = "SECONDS", value_parser = parse_seconds)]
    scan_window: Duration,

    /// Distinct hosts probed by one source (failed attempts, or pings) that make a sweep.
    #[arg(global = true, long, default_value_t = 16, value_name = "N", value_parser = clap::value_parser!(u16).range(2..))]
    sweep_hosts: u16,

    /// The sequential hypothesis test (TRW) on first contacts: `auto` tests each source's
    /// first contacts with our services (host:port) when the home nets are single
    /// addresses, with our hosts otherwise (gateways); `off` leaves the thresholds alone.
    #[arg(global = true, long, value_enum, default_value_t = TrwMode::Auto, value_name = "MODE")]
    trw: TrwMode,

    /// Distinct failed contacts (host:port) within --slow-horizon, beyond the source's
    /// successes, that make a slow scan (nmap -T1, -T0). 0 turns the slow-scan detector off.
    #[arg(global = true, long, default_value_t = 8, value_name = "N", value_parser = parse_slow_failed)]
    slow_failed: u32,

    /// Seconds over which the slow-scan detector counts a source's contacts (a compact
    /// summary per source; contacts older than this are forgotten).
    #[arg(global = true, long, default_value = "3600", value_name = "SECONDS", value_parser = parse_seconds)]
    slow_horizon: Duration,

    /// Sources failing on the same ports of one host within --scan-window that make one
    /// distributed scan (nmap -D decoys, cooperating scanners), reported as one incident
    /// listing them. 0 turns the detector off.
    #[arg(global = true, long, default_value_t = 3, value_name = "N", value_parser = parse_crowd_sources)]
    crowd_sources: u16,

    /// Failed ports each of those sources must share with the others.
    #[arg(global = true, long, default_value_t = 3, value_name = "N", value_parser = clap::value_parser!(u16).range(2..=8))]
    crowd_ports: u16,

    /// Count the IPv4 sources of one prefix of this length as one source (24: a /24 is one
    /// scanner); its incident lists every address. 32: every address on its own.
    #[arg(global = true, long, default_value_t = 32, value_name = "LEN", value_parser = clap::value_parser!(u8).range(8..=32))]
    group_v4: u8,

    /// Count the IPv6 sources of one prefix of this length as one source (64 is common).
    /// 128: every address on its own.
    #[arg(global = true, long, default_value_t = 128, value_name = "LEN", value_parser = clap::value_parser!(u8).range(16..=128))]
    group_v6: u8,

    /// Seconds between `update` alerts of a scan that goes on.
    #[arg(global = true, long, default_value = "60", value_name = "SECONDS", value_parser = parse_seconds)]
    update_interval: Duration,

    /// Seconds without probes after which a scan ends (its `end` alert sums it up).
    #[arg(global = true, long, default_value = "60", value_name = "SECONDS", value_parser = parse_seconds)]
    idle_timeout: Duration,

    /// Entries each detector tracks at once (source/target pairs, sources); the least
    /// recently active are forgotten first. Bounds memory under floods of spoofed sources.
    #[arg(global = true, long, default_value_t = 65_536, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    max_tracked: u32,

    /// At most this many alerts a second; beyond, alerts are counted and one record a
    /// second (event_type "alert_flood") says how many were suppressed. 0: no limit.
    #[arg(global = true, long, default_value_t = 100, value_name = "N")]
    alert_rate_limit: u32,

    /// Also write each outcome the kernel reports (refused, accepted, unanswered, ...) as
    /// a JSON line with event_type "probe": the raw evidence behind the alerts.
    #[arg(long, global = true)]
    probes: bool,

    /// A network that is "ours" (repeatable, CIDR or address). Only attempts to these
    /// addresses are tracked. Default: the addresses of the attached interfaces; on a
    /// gateway, name the networks behind it.
    #[arg(global = true, long = "home-net", value_name = "CIDR")]
    home_nets: Vec<Cidr>,

    /// Seconds an attempt may wait for an answer before it counts as unanswered
    /// (filtered, or open for FIN/NULL/Xmas and UDP probes).
    #[arg(global = true, long, default_value = "3", value_name = "SECONDS", value_parser = parse_seconds)]
    pending_timeout: Duration,

    /// Seconds during which a host our hosts contacted may connect back to our high ports
    /// (>= 1024) unreported (active FTP data, chat, media callbacks), as the seeds and TRW
    /// both advise. Its probes of our service ports (< 1024) are still reported.
    #[arg(global = true, long, default_value = "60", value_name = "SECONDS", value_parser = parse_seconds)]
    callback_window: Duration,

    /// Slots of the kernel's pending-attempt table (a power of two; 56 B each). More slots,
    /// fewer attempts lost to hash collisions under floods.
    #[arg(global = true, long, default_value_t = probe_common::PENDING_ENTRIES, value_name = "N", value_parser = parse_power_of_two)]
    pending_slots: u32,

    /// Entries of the kernel's reported-outcome table (LRU; about 112 B each).
    #[arg(global = true, long, default_value_t = probe_common::OUTCOMES_ENTRIES, value_name = "N", value_parser = clap::value_parser!(u32).range(1024..))]
    outcome_entries: u32,

    /// Least milliseconds between two wakeups of probe-detector by new kernel events. 1 (the
    /// default): the first event after a quiet spell is read at once and a fast scan is
    /// alerted within a few probes, for at most 1000 wakeups a second. Larger: fewer
    /// wakeups, later alerts. 0: only a backlog wakes it; events otherwise wait for the
    /// 20 ms drain timer (least CPU at a few thousand events a second; see
    /// docs/detection-matrix.md for both, measured).
    #[arg(global = true, long, default_value_t = 1, value_name = "MS", value_parser = clap::value_parser!(u64).range(0..=1000))]
    wakeup_ms: u64,

    /// Bytes of the kernel-to-userspace event ring buffer (a power of two, >= 4096).
    #[arg(global = true, long, default_value_t = probe_common::EVENTS_BYTES, value_name = "BYTES", value_parser = parse_power_of_two)]
    ringbuf_bytes: u32,

    /// Append each probed port of a confirmed scanner to this CSV file (time, source,
    /// destination, port, protocol, outcome, service, count). Off when not given.
    #[arg(global = true, long, value_name = "PATH")]
    attack_list: Option<std::path::PathBuf>,

    /// Size at which the attack list is rotated (PATH.1, PATH.2, ...), in MiB.
    #[arg(global = true, long, default_value_t = 10, value_name = "MIB", value_parser = clap::value_parser!(u64).range(1..))]
    attack_list_mib: u64,

    /// Rotated attack lists kept.
    #[arg(global = true, long, default_value_t = 5, value_name = "N")]
    attack_list_keep: usize,

    /// Drop the packets of confirmed scanners in XDP for --block-ttl seconds. Never blocked:
    /// allow-listed sources, the watched interfaces' own addresses, this host's gateways,
    /// loopback, and sources likely spoofed (unless --block-spoofed). Off by default.
    #[arg(global = true, long)]
    block: bool,

    /// How long a block lasts, in seconds.
    #[arg(global = true, long, default_value = "3600", value_name = "SECONDS", value_parser = parse_seconds)]
    block_ttl: Duration,

    /// Also block the sources of scans that may be forged (decoy scans, martian sources):
    /// an attacker can then get innocent addresses blocked.
    #[arg(global = true, long)]
    block_spoofed: bool,

    /// The control socket of `probe-detector block` (root only), made when --block is on.
    #[arg(
        global = true,
        long,
        default_value = "/run/probe-detector/control.sock",
        value_name = "PATH"
    )]
    control_socket: std::path::PathBuf,

    /// Serve Prometheus metrics at http://ADDR/metrics: PORT (on 127.0.0.1), IP:PORT or
    /// [IPv6]:PORT. Off when not given. docs/metrics.md lists every metric.
    #[arg(global = true, long, value_name = "ADDR", value_parser = metrics::parse_addr)]
    metrics_addr: Option<SocketAddr>,

    /// Every this many seconds, one status line on stderr with live counts (packets,
    /// failed attempts, scans, sources tracked, events lost). Off when not given.
    #[arg(global = true, long, value_name = "SECONDS", value_parser = parse_seconds)]
    status_interval: Option<Duration>,

    /// A source never to report (repeatable, CIDR): your own scanners, monitoring.
    #[arg(global = true, long = "allow-source", value_name = "CIDR")]
    allow_sources: Vec<Cidr>,

    /// A local service never to report (repeatable): CIDR, CIDR:PORT or [IPV6-CIDR]:PORT.
    #[arg(global = true, long = "allow-service", value_name = "SERVICE")]
    allow_services: Vec<Service>,

    /// A file of allow-list rules (`source CIDR`, `service CIDR[:PORT]`, `#` comments),
    /// re-read on SIGHUP; the kernel's lists are updated in place.
    #[arg(global = true, long, value_name = "PATH")]
    allow_file: Option<std::path::PathBuf>,

    /// Log level for stderr: error, warn, info, debug (each refused probe; eBPF trace
    /// records when built with PROBE_EBPF_TRACE=1) or trace. RUST_LOG overrides.
    #[arg(global = true, long, default_value = "info", value_name = "LEVEL")]
    log_level: log::LevelFilter,

    /// What to do: watch interfaces (no subcommand), or replay a capture.
    #[command(subcommand)]
    mode: Option<Mode>,
}

/// What probe-detector does besides watching interfaces.
#[derive(Debug, clap::Subcommand)]
enum Mode {
    /// Replay a capture: each packet goes through the same XDP (inbound) and TC (outbound)
    /// programs with BPF_PROG_TEST_RUN, nothing attached, and the events through the same
    /// engine on the capture's clock; alerts are written as a live run would write them.
    /// Needs --home-net (the capture's own addresses: they tell outbound from inbound).
    /// Example: probe-detector replay scan.pcap --home-net 198.18.7.2
    Replay {
        /// A pcap file (as tcpdump -w writes); convert pcapng first (editcap -F pcap).
        #[arg(value_name = "FILE.pcap")]
        file: std::path::PathBuf,
    },
    /// Remove what a crashed probe-detector left attached to --iface (repeatable): our TC
    /// egress filter and our XDP program, where the kernel attached them through netlink
    /// (kernels without bpf_links for them); anything not ours is left alone.
    /// Example: probe-detector detach --iface eth0
    Detach,
    /// Inspect or edit the block list of the probe-detector running with --block, through
    /// its control socket (--control-socket; root only).
    /// Example: probe-detector block list
    Block {
        #[command(subcommand)]
        action: BlockAction,
    },
}

/// `probe-detector block ...`
#[derive(Debug, clap::Subcommand)]
enum BlockAction {
    /// The sources blocked now, with the seconds left and the frames dropped.
    List,
    /// Block a source by hand (the never-block rules still hold).
    Add {
        /// The source address.
        addr: std::net::IpAddr,
        /// Seconds (default: the running instance's --block-ttl).
        #[arg(long, value_name = "SECONDS")]
        ttl: Option<u64>,
    },
    /// Lift a block.
    Remove {
        /// The source address.
        addr: std::net::IpAddr,
    },
}

/// A command line that cannot work, found after parsing (exit status 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct UsageError(String);

/// Parses a positive number of seconds, fractions allowed.
fn parse_seconds(text: &str) -> Result<Duration, String> {
    let secs: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number of seconds"))?;
    if !(secs.is_finite() && secs > 0.0 && secs <= 86_400.0 * 7.0) {
        return Err(format!("{text} s is out of range (0 < seconds <= 604800)"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Parses `--slow-failed`: 0 (off) or 2..=24 (the contacts a summary holds).
fn parse_slow_failed(text: &str) -> Result<u32, String> {
    let n: u32 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a whole number"))?;
    if n == 1 || n as usize > probe_userspace::slow::CONTACTS {
        return Err(format!(
            "{n} is out of range: 0 (off) or 2..={}",
            probe_userspace::slow::CONTACTS
        ));
    }
    Ok(n)
}

/// Parses `--crowd-sources`: 0 (off) or 2..=64 (the sources a target holds).
fn parse_crowd_sources(text: &str) -> Result<u16, String> {
    let n: u16 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a whole number"))?;
    if n == 1 || usize::from(n) > probe_userspace::crowd::MAX_MEMBERS {
        return Err(format!(
            "{n} is out of range: 0 (off) or 2..={}",
            probe_userspace::crowd::MAX_MEMBERS
        ));
    }
    Ok(n)
}

/// How the sequential hypothesis test counts first contacts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum TrwMode {
    /// `service` when every home net is one address, `host` otherwise.
    Auto,
    /// First contacts with each of our hosts (the paper's unit; for gateways).
    Host,
    /// First contacts with each of our host:port services (for a single host).
    Service,
    /// No sequential test.
    Off,
}

/// Parses a power of two (table sizes that are indexed by a hash mask).
fn parse_power_of_two(text: &str) -> Result<u32, String> {
    let n: u32 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a whole number"))?;
    if !n.is_power_of_two() || n < 1024 {
        return Err(format!("{n} is not a power of two >= 1024"));
    }
    Ok(n)
}

/// No instance answers on the control socket, or it cannot be made.
#[derive(Debug, thiserror::Error)]
enum ControlError {
    #[error(
        "no probe-detector with --block is running (nothing listens on {0}; give --control-socket if it uses another)"
    )]
    NotRunning(std::path::PathBuf),
    #[error("cannot reach {0}: permission denied (root only)")]
    Denied(std::path::PathBuf),
    #[error(
        "another probe-detector already listens on {0}: give this one another --control-socket"
    )]
    InUse(std::path::PathBuf),
    #[error("control socket {path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: io::Error,
    },
    #[error("{0}")]
    Refused(String),
}

/// The metrics endpoint cannot listen.
#[derive(Debug, thiserror::Error)]
#[error("cannot serve metrics on {addr} (--metrics-addr): {source}")]
struct MetricsError {
    addr: SocketAddr,
    source: io::Error,
}

/// Missing privileges, found before the kernel is asked.
#[derive(Debug, thiserror::Error)]
#[error(
    "probe-detector needs root, or CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON, to load and attach eBPF programs; missing {missing}. Run it with sudo"
)]
struct PrivilegeError {
    missing: String,
}

/// The command line, with the settings of its --config file beneath it.
fn parse_args() -> Result<Cli, ExitCode> {
    let clap_exit = |err: clap::Error| {
        let _ = err.print();
        ExitCode::from(if err.use_stderr() {
            EXIT_USAGE
        } else {
            EXIT_OK
        })
    };
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let cmd = Cli::command();
    let given = cmd.clone().try_get_matches_from(&argv).map_err(clap_exit)?;
    let (matches, file) = match given.get_one::<std::path::PathBuf>("config") {
        None => (given.clone(), None),
        Some(path) => {
            let from_file = config::file_args(path, &cmd, &given).map_err(|err| {
                eprintln!("probe-detector: error: {err}");
                ExitCode::from(EXIT_USAGE)
            })?;
            let all = argv
                .iter()
                .take(1)
                .chain(&from_file)
                .chain(argv.iter().skip(1));
            let matches = cmd.clone().try_get_matches_from(all).map_err(clap_exit)?;
            (matches, Some(path.clone()))
        }
    };
    let cli = Cli::from_arg_matches(&matches).map_err(clap_exit)?;
    if cli.print_config {
        print!("{}", config::render(&cmd, &matches, file.as_deref()));
        return Err(ExitCode::from(EXIT_OK));
    }
    Ok(cli)
}

fn main() -> ExitCode {
    let cli = match parse_args() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    init_logging(cli.log_level);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("probe-detector: error: cannot start the async runtime: {err}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::from(EXIT_OK),
        Err(err) => {
            eprintln!("probe-detector: error: {err:#}");
            ExitCode::from(exit_code(&err))
        }
    }
}

/// The documented exit status for a failure.
fn exit_code(err: &anyhow::Error) -> u8 {
    if err.chain().any(|e| e.is::<PrivilegeError>())
        || err.chain().any(|e| {
            matches!(
                e.downcast_ref::<LoadError>(),
                Some(LoadError::Permission { .. })
            )
        })
    {
        EXIT_PRIVILEGES
    } else if err
        .chain()
        .any(|e| e.is::<AllowError>() || e.is::<UsageError>())
    {
        EXIT_USAGE
    } else if err.chain().any(|e| e.is::<IfaceError>()) {
        EXIT_INTERFACE
    } else if err.chain().any(|e| e.is::<MetricsError>()) {
        EXIT_METRICS
    } else if err.chain().any(|e| {
        matches!(
            e.downcast_ref::<ControlError>(),
            Some(ControlError::Denied(_))
        )
    }) {
        EXIT_PRIVILEGES
    } else if err
        .chain()
        .any(|e| matches!(e.downcast_ref::<LoadError>(), Some(LoadError::Config(_))))
    {
        EXIT_USAGE
    } else {
        EXIT_FAILURE
    }
}

/// Logs to stderr: `level` for probe-detector itself and for eBPF trace records
/// (module `probe_ebpf`), warnings only for libraries; RUST_LOG, when set, overrides.
fn init_logging(level: log::LevelFilter) {
    env_logger::Builder::new()
        .filter_level(log::LevelFilter::Warn.min(level))
        .filter_module("probe_detector", level)
        .filter_module("probe_userspace", level)
        .filter_module("probe_ebpf", level)
        .parse_env("RUST_LOG")
        .target(env_logger::Target::Stderr)
        .format_target(false)
        .init();
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match &cli.mode {
        Some(Mode::Replay { file }) => return replay(&cli, file),
        Some(Mode::Block { action }) => return block_command(&cli.control_socket, action),
        Some(Mode::Detach) => return detach_command(&cli.ifaces),
        None => {}
    }
    let ifaces = if cli.ifaces.is_empty() {
        let name = iface::default_route_interface()?;
        log::info!("no --iface given: watching {name}, the interface of the default route");
        vec![name]
    } else {
        cli.ifaces.clone()
    };
    for name in &ifaces {
        iface::index_of(name)?;
    }
    // A bad rule is an error of the command line (exit status 2).
    let allow_lists = allow_lists_of(&cli)?;
    // Open the attack list before anything is loaded: an unwritable path fails at once.
    let attack_list = cli
        .attack_list
        .as_deref()
        .map(|path| AttackList::open(path, cli.attack_list_mib << 20, cli.attack_list_keep))
        .transpose()?;
    check_privileges()?;
    // Listen before anything is loaded: a port in use fails at once, nothing attached.
    let metrics_listener = cli
        .metrics_addr
        .map(|addr| {
            std::net::TcpListener::bind(addr)
                .and_then(|l| l.set_nonblocking(true).map(|()| l))
                .map_err(|source| MetricsError { addr, source })
        })
        .transpose()?;
    // Likewise the control socket of --block.
    let control = cli
        .block
        .then(|| ControlSocket::bind(&cli.control_socket))
        .transpose()?;

    let home_nets = if cli.home_nets.is_empty() {
        let mut nets = Vec::new();
        for name in &ifaces {
            let addrs = iface::addresses(name)
                .with_context(|| format!("cannot list the addresses of {name}"))?;
            nets.extend(addrs.into_iter().map(Cidr::host));
        }
        if nets.is_empty() {
            log::warn!(
                "the attached interfaces have no addresses: every destination counts as ours (set --home-net)"
            );
        }
        nets
    } else {
        cli.home_nets.clone()
    };
    log::info!(
        "home nets: {}",
        if home_nets.is_empty() {
            "every address".to_owned()
        } else {
            home_nets
                .iter()
                .map(Cidr::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        }
    );
    let config = kernel_config(&cli, &home_nets);
    log::debug!("kernel maps: about {} KiB", config.map_bytes() / 1024);

    let mut ebpf = loader::load(&config)?;
    allow::apply(&mut ebpf, &AllowLists::default(), &allow_lists)
        .context("cannot load the allow-lists")?;
    if !allow_lists.is_empty() {
        log::info!(
            "allow-lists: {} sources, {} services",
            allow_lists.sources.len(),
            allow_lists.services.len()
        );
    }
    if let Err(err) = init_ebpf_log(&mut ebpf) {
        log::debug!("no eBPF log records: {err}");
    }
    let blocker = if cli.block {
        let mut never: Vec<(Cidr, Spared)> = allow_lists
            .sources
            .iter()
            .map(|c| (*c, Spared::AllowListed))
            .collect();
        for name in &ifaces {
            let addrs = iface::addresses(name)
                .with_context(|| format!("cannot list the addresses of {name}"))?;
            never.extend(addrs.into_iter().map(|a| (Cidr::host(a), Spared::Ours)));
        }
        never.extend(
            iface::gateways()
                .into_iter()
                .map(|g| (Cidr::host(g), Spared::Gateway)),
        );
        let policy = BlockPolicy {
            ttl: cli.block_ttl,
            block_spoofed: cli.block_spoofed,
            never,
        };
        log::info!(
            "blocking: confirmed scanners dropped for {} s; never blocked: {} allow-listed networks, our addresses, gateways, loopback{}",
            policy.ttl.as_secs(),
            allow_lists.sources.len(),
            if policy.block_spoofed {
                ""
            } else {
                ", likely spoofed sources"
            }
        );
        Some(Blocker::new(&mut ebpf, policy).context("cannot set up blocking")?)
    } else {
        None
    };
    if let Some(control) = &control {
        log::info!(
            "block list: `probe-detector block list` (control socket {})",
            control.path.display()
        );
    }
    let mut attachments = Vec::new();
    for name in &ifaces {
        let mut attached = loader::attach(&mut ebpf, name, cli.xdp_mode);
        if cli.force && matches!(attached, Err(LoadError::Occupied { .. })) {
            log::warn!("--force: removing the XDP program attached to {name}");
            if loader::remove_xdp(name)? {
                attached = loader::attach(&mut ebpf, name, cli.xdp_mode);
            } else {
                detach_all(&mut ebpf, attachments);
                bail!(
                    "cannot attach XDP to {name}: the XDP program there is held by another process's bpf_link, which --force cannot replace; stop that process"
                );
            }
        }
        match attached {
            Ok(attachment) => {
                log::info!(
                    "attached to {name}: XDP ingress ({} mode), TC egress",
                    attachment.xdp_mode
                );
                attachments.push(attachment);
            }
            Err(err) => {
                detach_all(&mut ebpf, attachments);
                return Err(err.into());
            }
        }
    }

    let trw_unit = trw_unit(&cli, &home_nets);
    let outlets = Outlets {
        attack_list,
        metrics: metrics_listener,
        blocker,
        control,
    };
    let result = watch(&mut ebpf, &cli, &config, allow_lists, trw_unit, outlets).await;
    detach_all(&mut ebpf, attachments);
    log_counters(&ebpf, &config, log::Level::Info);
    result
}

/// The kernel side's configuration from the command line.
fn kernel_config(cli: &Cli, home_nets: &[Cidr]) -> KernelConfig {
    KernelConfig {
        pending_slots: cli.pending_slots,
        outcomes_entries: cli.outcome_entries,
        ringbuf_bytes: cli.ringbuf_bytes,
        timeout: cli.pending_timeout,
        callback_window: cli.callback_window,
        home_nets: home_nets.iter().map(|c| c.to_home_net()).collect(),
        wakeup_gap: (cli.wakeup_ms > 0).then(|| Duration::from_millis(cli.wakeup_ms)),
        block: cli.block,
        ..KernelConfig::default()
    }
}

/// The unit of TRW's first contacts (`--trw`), and a log line saying it.
fn trw_unit(cli: &Cli, home_nets: &[Cidr]) -> Option<TrwUnit> {
    let trw_unit = match cli.trw {
        TrwMode::Off => None,
        TrwMode::Host => Some(TrwUnit::Host),
        TrwMode::Service => Some(TrwUnit::Service),
        TrwMode::Auto
            if home_nets
                .iter()
                .all(|c| c.len == if c.addr.is_ipv4() { 32 } else { 128 }) =>
        {
            Some(TrwUnit::Service)
        }
        TrwMode::Auto => Some(TrwUnit::Host),
    };
    log::info!(
        "sequential hypothesis test: {}",
        match trw_unit {
            None => "off",
            Some(TrwUnit::Service) => "on, first contacts with each host:port",
            Some(TrwUnit::Host) => "on, first contacts with each host",
        }
    );
    trw_unit
}

/// The engine's configuration from the command line.
fn engine_config(cli: &Cli, trw_unit: Option<TrwUnit>) -> EngineConfig {
    EngineConfig {
        min_ports: usize::from(cli.scan_ports),
        min_hosts: usize::from(cli.sweep_hosts),
        window: cli.scan_window,
        max_tracked: cli.max_tracked as usize,
        trw: trw_unit.map(|unit| TrwConfig {
            unit,
            ..TrwConfig::default()
        }),
        update_interval: cli.update_interval,
        idle_timeout: cli.idle_timeout,
        slow: (cli.slow_failed > 0).then_some(SlowConfig {
            min_failed: cli.slow_failed,
            horizon: cli.slow_horizon,
            max_sources: cli.max_tracked as usize,
        }),
        crowd: (cli.crowd_sources > 0).then_some(CrowdConfig {
            min_sources: usize::from(cli.crowd_sources),
            min_common: usize::from(cli.crowd_ports),
            window: cli.scan_window,
            max_targets: (cli.max_tracked as usize).min(4096),
        }),
        group_v4: cli.group_v4,
        group_v6: cli.group_v6,
    }
}

/// `probe-detector replay FILE.pcap`: the capture through the programs and the engine.
fn replay(cli: &Cli, file: &std::path::Path) -> anyhow::Result<()> {
    if cli.home_nets.is_empty() {
        return Err(UsageError(
            "replay needs --home-net: the capture's own addresses (its host, or the networks behind its gateway) tell outbound packets from inbound ones".to_owned(),
        )
        .into());
    }
    let allow_lists = allow_lists_of(cli)?;
    let bytes = fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let capture = probe_userspace::pcap::Capture::parse(&bytes)
        .with_context(|| format!("cannot replay {}", file.display()))?;
    check_privileges()?;
    let config = kernel_config(cli, &cli.home_nets);
    let mut ebpf = loader::load(&config)?;
    allow::apply(&mut ebpf, &AllowLists::default(), &allow_lists)
        .context("cannot load the allow-lists")?;
    let engine_config = engine_config(cli, trw_unit(cli, &cli.home_nets));
    let thresholds = Thresholds::of(&engine_config);
    let mut engine = Engine::new(engine_config);
    let mut stdout = io::stdout().lock();
    let mut written = 0u64;
    let mut failure = None;
    let stats = replay::replay(
        &mut ebpf,
        &config,
        &cli.home_nets,
        &capture,
        &mut engine,
        |alerts| {
            for scan in alerts {
                let record = AlertRecord::from_scan_at(
                    scan,
                    "replay".to_owned(),
                    thresholds,
                    WallClock::unix(),
                );
                if failure.is_none()
                    && let Err(err) = writeln!(stdout, "{}", json_line(&record))
                {
                    failure = Some(err);
                }
                written += 1;
            }
        },
    )
    .with_context(|| format!("cannot replay {}", file.display()))?;
    if let Some(err) = failure {
        return Err(err).context("cannot write to stdout");
    }
    stdout.flush().context("cannot write to stdout")?;
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
    Ok(())
}

/// Logs the kernel counters, and how full the kernel's tables are.
fn log_counters(ebpf: &aya::Ebpf, config: &KernelConfig, level: log::Level) {
    if let Ok((live, slots)) = loader::pending_occupancy(ebpf) {
        log::log!(
            level,
            "pending table: {live} of {slots} slots in use at the last sweep"
        );
    }
    let counters = match loader::counters(ebpf) {
        Ok(counters) => counters,
        Err(err) => {
            log::warn!("cannot read the kernel counters: {err}");
            return;
        }
    };
    // Every outcome recorded in the LRU table was either sent or dropped at the ring.
    let recorded: u64 = counters
        .iter()
        .filter(|(c, _)| matches!(c, Counter::EventsSent | Counter::RingbufDrops))
        .map(|(_, v)| v)
        .sum();
    let full = recorded > u64::from(config.outcomes_entries);
    log::log!(
        level,
        "outcome table: {recorded} outcomes recorded, {} entries{}",
        config.outcomes_entries,
        if full {
            " (full: the least recently used are evicted; an evicted outcome that recurs is reported again)"
        } else {
            ""
        }
    );
    let listed: Vec<String> = counters
        .iter()
        .map(|(c, v)| format!("{}={v}", c.name()))
        .collect();
    log::log!(level, "kernel counters: {}", listed.join(" "));
}

/// Reads events until SIGINT or SIGTERM, writing alerts to stdout.
/// What the watch loop serves besides alerts, each opened before anything was attached.
struct Outlets {
    /// `--attack-list`.
    attack_list: Option<AttackList>,
    /// `--metrics-addr`, listening.
    metrics: Option<std::net::TcpListener>,
    /// `--block`.
    blocker: Option<Blocker>,
    /// `--block`'s control socket, listening.
    control: Option<ControlSocket>,
}

async fn watch(
    ebpf: &mut aya::Ebpf,
    cli: &Cli,
    config: &KernelConfig,
    mut allow_lists: AllowLists,
    trw_unit: Option<TrwUnit>,
    outlets: Outlets,
) -> anyhow::Result<()> {
    let Outlets {
        attack_list,
        metrics: metrics_listener,
        blocker,
        control,
    } = outlets;
    let control_listener = control
        .as_ref()
        .map(|c| tokio::net::UnixListener::from_std(c.listener.try_clone()?))
        .transpose()
        .context("cannot serve the control socket")?;
    let (requests_tx, mut requests) = tokio::sync::mpsc::channel::<(
        BlockRequest,
        tokio::sync::oneshot::Sender<BlockResponse>,
    )>(8);
    let started = std::time::SystemTime::now();
    let metrics_listener = metrics_listener
        .map(tokio::net::TcpListener::from_std)
        .transpose()
        .context("cannot serve metrics")?;
    if let Some(listener) = &metrics_listener {
        log::info!(
            "metrics at http://{}/metrics",
            listener.local_addr().context("cannot serve metrics")?
        );
    }
    let mut status = cli.status_interval.map(tokio::time::interval);
    if let Some(status) = &mut status {
        status.tick().await;
    }
    let map = ebpf
        .take_map(EVENTS_MAP)
        .context("the eBPF object has no EVENTS ring buffer")?;
    let ring = RingBuf::try_from(map).context("EVENTS is not a ring buffer")?;
    // SAFETY: the RingBuf owns its map fd and neither closes nor replaces it while the
    // AsyncFd owns the RingBuf, so the registered fd stays the same open file.
    let mut ring = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
        .map_err(|err| err.into_parts().1)
        .context("cannot poll the EVENTS ring buffer")?;
    let mut sigint = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut sigterm = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut sighup = signal(SignalKind::hangup()).context("cannot handle SIGHUP")?;

    let engine = engine_config(cli, trw_unit);
    log::info!(
        "engine state: at most about {} MiB (--max-tracked {})",
        Engine::memory_bound(&engine) >> 20,
        engine.max_tracked
    );
    let evidence = Evidence::new(engine.max_tracked, engine.window);
    let mut output = Output::new(
        engine.clone(),
        cli.probes,
        attack_list.map(|list| (list, evidence)),
        blocker,
        cli.alert_rate_limit,
    );
    log::info!(
        "watching for port scans ({} failed ports of one host) and sweeps ({} hosts) within {:.1} s; alerts go to stdout",
        engine.min_ports,
        engine.min_hosts,
        engine.window.as_secs_f64()
    );
    // Unanswered attempts are found by the expiry program, run often enough that none
    // waits much longer than the timeout.
    let mut expiry = tokio::time::interval(config.sweep_interval());
    // The kernel wakes us only when a backlog builds (see WAKEUP_BYTES); otherwise events
    // are picked up here, at most DRAIN_INTERVAL after they happen.
    let mut drain = tokio::time::interval(DRAIN_INTERVAL);
    drain.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Updates held back by the interval, and the summaries of scans gone quiet.
    let mut lifecycle = tokio::time::interval(Duration::from_secs(1));
    let mut stats = tokio::time::interval(STATS_INTERVAL);
    stats.tick().await;
    loop {
        tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = guard.context("cannot poll the EVENTS ring buffer")?;
                output.drain(guard.get_inner_mut(), ebpf)?;
                guard.clear_ready();
            }
            _ = drain.tick() => output.drain(ring.get_mut(), ebpf)?,
            _ = lifecycle.tick() => {
                let alerts = output.engine.tick(clock::monotonic_now());
                output.emit(&alerts)?;
            }
            _ = expiry.tick() => {
                // Drain between chunks: a sweep may report more than the ring holds.
                let mut drained = Ok(());
                loader::expire_with(ebpf, |ebpf| {
                    if drained.is_ok() {
                        drained = output.drain(ring.get_mut(), ebpf);
                    }
                })
                .context("the expiry program failed")?;
                drained?;
            }
            _ = stats.tick() => log_counters(ebpf, config, log::Level::Debug),
            accepted = when(metrics_listener.as_ref().map(|l| l.accept())) => match accepted {
                Ok((stream, _)) => {
                    let body = metrics::render(&output.snapshot(ebpf, started));
                    tokio::spawn(serve_metrics(stream, body));
                }
                Err(err) => log::warn!("metrics endpoint: {err}"),
            },
            accepted = when(control_listener.as_ref().map(|l| l.accept())) => match accepted {
                Ok((stream, _)) => {
                    tokio::spawn(serve_control(stream, requests_tx.clone()));
                }
                Err(err) => log::warn!("control socket: {err}"),
            },
            Some((request, reply)) = requests.recv() => {
                let response = match output.blocker.as_mut() {
                    Some(blocker) => blocker.handle(&request, clock::monotonic_now()),
                    None => BlockResponse {
                        error: Some("blocking is off".into()),
                        ..BlockResponse::default()
                    },
                };
                let _ = reply.send(response);
            }
            _ = when(status.as_mut().map(|s| s.tick())) => log::info!("{}", status_line(&output.snapshot(ebpf, started))),
            _ = sighup.recv() => {
                // A bad file leaves the lists as they were: nothing is lost on a typo.
                match allow_lists_of(cli) {
                    Ok(new) => match allow::apply(ebpf, &allow_lists, &new) {
                        Ok(()) => {
                            if let Some(blocker) = &mut output.blocker {
                                blocker.set_allowed(&new.sources);
                            }
                            log::info!(
                                "SIGHUP: allow-lists reloaded: {} sources, {} services",
                                new.sources.len(),
                                new.services.len()
                            );
                            allow_lists = new;
                        }
                        Err(err) => log::error!("SIGHUP: cannot update the allow-lists: {err:#}"),
                    },
                    Err(err) => log::error!("SIGHUP: allow-lists kept as they were: {err}"),
                }
            }
            _ = sigint.recv() => { log::info!("SIGINT: stopping"); break; }
            _ = sigterm.recv() => { log::info!("SIGTERM: stopping"); break; }
        }
    }
    // Whatever arrived before the signal still gets its say, and every open scan its
    // summary.
    output.drain(ring.get_mut(), ebpf)?;
    let alerts = output.engine.finish();
    output.emit(&alerts)?;
    if output.decode_errors > 0 {
        log::warn!(
            "{} ring-buffer records could not be decoded",
            output.decode_errors
        );
    }
    Ok(())
}

/// Answers one control-socket client: root (or our own user) only; one JSON request line
/// (2 s and 4 KiB at most), one JSON response line, carried out by the watch loop.
async fn serve_control(
    mut stream: tokio::net::UnixStream,
    loop_tx: tokio::sync::mpsc::Sender<(BlockRequest, tokio::sync::oneshot::Sender<BlockResponse>)>,
) {
    use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _};
    // SAFETY: geteuid has no preconditions.
    let ours = unsafe { libc::geteuid() };
    let response = match stream.peer_cred() {
        Ok(cred) if cred.uid() == 0 || cred.uid() == ours => {
            let mut line = String::new();
            let mut reader = tokio::io::BufReader::new(&mut stream).take(4096);
            let read =
                tokio::time::timeout(Duration::from_secs(2), reader.read_line(&mut line)).await;
            match (read, serde_json::from_str::<BlockRequest>(&line)) {
                (Ok(Ok(_)), Ok(request)) => {
                    let (reply, answer) = tokio::sync::oneshot::channel();
                    if loop_tx.send((request, reply)).await.is_err() {
                        return;
                    }
                    match answer.await {
                        Ok(response) => response,
                        Err(_) => return,
                    }
                }
                (_, Err(err)) => BlockResponse {
                    error: Some(format!("bad request: {err}")),
                    ..BlockResponse::default()
                },
                (_, _) => return,
            }
        }
        Ok(cred) => {
            log::warn!("control socket: refused uid {} (root only)", cred.uid());
            BlockResponse {
                error: Some("root only".into()),
                ..BlockResponse::default()
            }
        }
        Err(_) => return,
    };
    let mut line = serde_json::to_string(&response).unwrap_or_else(|_| "{}".into());
    line.push('\n');
    let _ = tokio::time::timeout(Duration::from_secs(2), stream.write_all(line.as_bytes())).await;
}

/// The control socket of a running instance: made at start, removed at exit.
struct ControlSocket {
    path: std::path::PathBuf,
    listener: std::os::unix::net::UnixListener,
}

impl ControlSocket {
    /// Listens on `path` (0600, in a directory made 0700 if missing). A socket file nobody
    /// listens on (left by a crash) is replaced; one somebody listens on is an error.
    fn bind(path: &std::path::Path) -> Result<Self, ControlError> {
        use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
        let io_err = |source| ControlError::Io {
            path: path.to_owned(),
            source,
        };
        if let Some(dir) = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty() && !d.exists())
        {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(io_err)?;
        }
        if path.exists() {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(ControlError::InUse(path.to_owned()));
            }
            fs::remove_file(path).map_err(io_err)?;
        }
        let listener = std::os::unix::net::UnixListener::bind(path).map_err(io_err)?;
        fs::set_permissions(path, fs::Permissions::from_mode(0o600)).map_err(io_err)?;
        listener.set_nonblocking(true).map_err(io_err)?;
        Ok(Self {
            path: path.to_owned(),
            listener,
        })
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// `probe-detector detach --iface IF...`: removes our leftovers, says what it found.
fn detach_command(ifaces: &[String]) -> anyhow::Result<()> {
    if ifaces.is_empty() {
        bail!(UsageError(
            "detach needs --iface IF (the interface to clean up; repeat for several)".into()
        ));
    }
    for name in ifaces {
        iface::index_of(name)?;
    }
    check_privileges()?;
    let mut out = io::stdout().lock();
    for name in ifaces {
        for line in loader::detach_leftovers(name)? {
            writeln!(out, "{line}")?;
        }
    }
    Ok(())
}

/// `probe-detector block ...`: one request to the running instance, its answer printed.
fn block_command(socket: &std::path::Path, action: &BlockAction) -> anyhow::Result<()> {
    use std::io::{BufRead as _, BufReader};
    let request = match action {
        BlockAction::List => BlockRequest::List,
        BlockAction::Add { addr, ttl } => BlockRequest::Add {
            addr: *addr,
            ttl_s: *ttl,
        },
        BlockAction::Remove { addr } => BlockRequest::Remove { addr: *addr },
    };
    let mut stream =
        std::os::unix::net::UnixStream::connect(socket).map_err(|err| match err.kind() {
            io::ErrorKind::PermissionDenied => ControlError::Denied(socket.to_owned()),
            io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => {
                ControlError::NotRunning(socket.to_owned())
            }
            _ => ControlError::Io {
                path: socket.to_owned(),
                source: err,
            },
        })?;
    let io_err = |source| ControlError::Io {
        path: socket.to_owned(),
        source,
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(io_err)?;
    let mut line = serde_json::to_string(&request).context("cannot encode the request")?;
    line.push('\n');
    stream.write_all(line.as_bytes()).map_err(io_err)?;
    let mut answer = String::new();
    BufReader::new(&stream)
        .read_line(&mut answer)
        .map_err(io_err)?;
    let response: BlockResponse = serde_json::from_str(&answer)
        .with_context(|| format!("the running probe-detector answered {answer:?}"))?;
    if let Some(error) = response.error {
        return Err(ControlError::Refused(error).into());
    }
    let mut out = io::stdout().lock();
    if let Some(done) = response.done {
        writeln!(out, "{done}")?;
    } else if response.blocked.is_empty() {
        writeln!(out, "no source is blocked")?;
    } else {
        for b in &response.blocked {
            writeln!(
                out,
                "{:<39} {:>7} s left {:>12} frames dropped",
                b.addr, b.expires_in_s, b.packets
            )?;
        }
    }
    Ok(())
}

/// What `future` gives; never, when there is none: a `select!` branch that is off.
async fn when<F: std::future::Future>(future: Option<F>) -> F::Output {
    match future {
        Some(future) => future.await,
        None => std::future::pending().await,
    }
}

/// Answers one scrape: reads the request line (2 s at most), writes the response.
async fn serve_metrics(mut stream: tokio::net::TcpStream, body: String) {
    use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _};
    let mut request = String::new();
    let mut reader = tokio::io::BufReader::new(&mut stream).take(8192);
    let read = tokio::time::timeout(Duration::from_secs(2), reader.read_line(&mut request)).await;
    if !matches!(read, Ok(Ok(n)) if n > 0) {
        return;
    }
    let response = metrics::respond(&request, &body);
    let _ = tokio::time::timeout(
        Duration::from_secs(2),
        stream.write_all(response.as_bytes()),
    )
    .await;
}

/// The `--status-interval` line.
fn status_line(s: &Snapshot) -> String {
    let kernel = |c: Counter| {
        s.kernel
            .iter()
            .find(|(k, _)| *k == c)
            .map_or(0, |(_, v)| *v)
    };
    let by_kind = |kind: &str| {
        s.alerts
            .iter()
            .filter(|((k, phase), _)| *k == kind && *phase == "start")
            .map(|(_, n)| n)
            .sum::<u64>()
    };
    format!(
        "status: {} packets in, {} out; {} attempts failed, {} unanswered; scans {} vertical, {} horizontal, {} distributed; {} sources tracked; {} events lost",
        kernel(Counter::IngressPackets),
        kernel(Counter::EgressPackets),
        kernel(Counter::Failed),
        kernel(Counter::Unanswered),
        by_kind("vertical"),
        by_kind("horizontal"),
        by_kind("distributed"),
        s.tables
            .iter()
            .find(|(t, _)| *t == "sources")
            .map_or(0, |(_, n)| *n),
        kernel(Counter::RingbufDrops),
    )
}

/// From events to JSON lines: the engine, interface names, stdout.
struct Output {
    engine: Engine,
    /// Alert records written, by (kind, phase), and those the flood limit held back.
    alerts_written: BTreeMap<(&'static str, &'static str), u64>,
    alerts_suppressed: u64,
    flood: FloodLimit,
    flood_limit: u32,
    thresholds: Thresholds,
    probes: bool,
    attack: Option<(AttackList, Evidence)>,
    /// `--block`: the kernel's block list and who may be put on it.
    blocker: Option<Blocker>,
    iface_names: HashMap<u32, String>,
    decode_errors: u64,
    stdout: io::Stdout,
}

impl Output {
    fn new(
        config: EngineConfig,
        probes: bool,
        attack: Option<(AttackList, Evidence)>,
        blocker: Option<Blocker>,
        alert_rate_limit: u32,
    ) -> Self {
        Self {
            thresholds: Thresholds::of(&config),
            engine: Engine::new(config),
            alerts_written: BTreeMap::new(),
            alerts_suppressed: 0,
            flood: FloodLimit::new(alert_rate_limit),
            flood_limit: alert_rate_limit,
            probes,
            attack,
            blocker,
            iface_names: HashMap::new(),
            decode_errors: 0,
            stdout: io::stdout(),
        }
    }

    /// Handles every record waiting in the ring buffer.
    fn drain(
        &mut self,
        ring: &mut RingBuf<aya::maps::MapData>,
        ebpf: &aya::Ebpf,
    ) -> anyhow::Result<()> {
        let mut lines = String::new();
        let mut evidence: Vec<Probe> = Vec::new();
        while let Some(record) = ring.next() {
            let probe = match Probe::decode(&record) {
                Ok(probe) => probe,
                Err(err) => {
                    if self.decode_errors == 0 {
                        log::warn!("skipping a ring-buffer record: {err}");
                    }
                    self.decode_errors += 1;
                    continue;
                }
            };
            log::debug!(
                "{:?} {:?}: {}:{} -> {}:{} (proto {}, flags {:#04x}, ttl {})",
                probe.probe,
                probe.outcome,
                probe.src,
                probe.src_port,
                probe.dst,
                probe.dst_port,
                probe.proto,
                probe.tcp_flags,
                probe.ttl
            );
            if self.probes {
                let iface = self.iface_name(probe.ifindex);
                lines.push_str(&json_line(&ProbeRecord::from_probe(&probe, iface)));
                lines.push('\n');
            }
            if let Some((_, e)) = self.attack.as_mut() {
                evidence.extend(e.note(&probe, probe.timestamp));
            }
            for scan in self.engine.observe(&probe, probe.timestamp) {
                if let Some((_, e)) = self.attack.as_mut() {
                    // Every source of a distributed or grouped scan is confirmed.
                    for &src in &scan.sources {
                        evidence.extend(e.confirm(src, probe.timestamp));
                    }
                }
                self.push_alert(&scan, &mut lines);
            }
        }
        if let Some((list, _)) = self.attack.as_mut()
            && !evidence.is_empty()
        {
            let clock = WallClock::now();
            let rows: Vec<Row> = evidence
                .iter()
                .map(|p| Row {
                    time: clock.at(p.timestamp),
                    source: p.src,
                    destination: p.dst,
                    port: p.dst_port,
                    protocol: proto_name(p.proto),
                    outcome: outcome_name(p.outcome),
                    service: services::lookup(p.proto, p.dst_port).map_or("", |s| s.name),
                    count: loader::outcome_count(ebpf, p).unwrap_or(1),
                })
                .collect();
            list.append(&rows)?;
        }
        self.write(&lines)
    }

    /// Renders one alert into `lines`, unless the flood limit holds it back.
    fn push_alert(&mut self, scan: &ScanAlert, lines: &mut String) {
        // Blocking does not wait for the flood limit: a held-back alert still blocks.
        let blocked = self.block(scan);
        if self.flood.admit(clock::monotonic_now()) {
            *self
                .alerts_written
                .entry((scan.kind.name(), scan.phase.name()))
                .or_default() += 1;
            let iface = self.iface_name(scan.ifindex);
            let mut record = AlertRecord::from_scan(scan, iface, self.thresholds);
            if blocked {
                record.alert.action = "blocked";
            }
            lines.push_str(&json_line(&record));
            lines.push('\n');
        }
    }

    /// With `--block`, blocks the sources of a newly recognised scan that may be blocked;
    /// true when one was.
    fn block(&mut self, scan: &ScanAlert) -> bool {
        let Some(blocker) = self.blocker.as_mut().filter(|_| scan.phase == Phase::Start) else {
            return false;
        };
        let ttl = blocker.policy().ttl.as_secs();
        match blocker.on_scan(scan, clock::monotonic_now()) {
            Ok(verdicts) => {
                let mut blocked = false;
                for (addr, why) in verdicts {
                    match why {
                        None => {
                            log::info!("blocked {addr} for {ttl} s ({} scan)", scan.kind.name());
                            blocked = true;
                        }
                        Some(why) => log::info!("not blocking {addr}: {why}"),
                    }
                }
                blocked
            }
            Err(err) => {
                log::error!("cannot block the sources of a scan: {err}");
                false
            }
        }
    }

    /// What a scrape or a status line reports now.
    fn snapshot(&mut self, ebpf: &aya::Ebpf, started: std::time::SystemTime) -> Snapshot {
        let blocks = self
            .blocker
            .as_mut()
            .map(|b| (b.made(), b.list(clock::monotonic_now()).len()));
        Snapshot {
            kernel: loader::counters(ebpf).unwrap_or_default(),
            tables: self.engine.tables(),
            evictions: self.engine.evictions(),
            memory_bound_bytes: Engine::memory_bound(self.engine.config()) as u64,
            alerts: self.alerts_written.clone(),
            alerts_suppressed: self.alerts_suppressed,
            decode_errors: self.decode_errors,
            start_time_s: started
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
            blocks,
        }
    }

    /// Writes alerts made outside a drain (timer, shutdown).
    fn emit(&mut self, alerts: &[ScanAlert]) -> anyhow::Result<()> {
        let mut lines = String::new();
        for scan in alerts {
            self.push_alert(scan, &mut lines);
        }
        let suppressed = self.flood.take_suppressed();
        self.alerts_suppressed += suppressed;
        if suppressed > 0 {
            log::warn!("alert flood: {suppressed} alerts suppressed (--alert-rate-limit)");
            lines.push_str(&json_line(&serde_json::json!({
                "timestamp": clock::rfc3339_micros(std::time::SystemTime::now()),
                "event_type": "alert_flood",
                "suppressed": suppressed,
                "limit_per_s": self.flood_limit,
            })));
            lines.push('\n');
        }
        self.write(&lines)
    }

    fn write(&mut self, lines: &str) -> anyhow::Result<()> {
        if lines.is_empty() {
            return Ok(());
        }
        let mut out = self.stdout.lock();
        out.write_all(lines.as_bytes())
            .and_then(|()| out.flush())
            .context("cannot write to stdout")
    }

    /// The name of an interface, remembered; its index when it has none any more.
    fn iface_name(&mut self, ifindex: u32) -> String {
        self.iface_names
            .entry(ifindex)
            .or_insert_with(|| iface::name_of(ifindex).unwrap_or_else(|| ifindex.to_string()))
            .clone()
    }
}

/// The allow-lists of the command line and the allow file.
fn allow_lists_of(cli: &Cli) -> Result<AllowLists, AllowError> {
    let mut lists = AllowLists {
        sources: cli.allow_sources.iter().copied().collect(),
        services: cli.allow_services.iter().copied().collect(),
    };
    if let Some(path) = &cli.allow_file {
        lists.add_file(path)?;
    }
    Ok(lists)
}

fn detach_all(ebpf: &mut aya::Ebpf, attachments: Vec<loader::Attachment>) {
    for attachment in attachments {
        let iface = attachment.iface.clone();
        match loader::detach(ebpf, attachment) {
            Ok(()) => log::info!("detached from {iface}"),
            Err(err) => log::error!("{err}"),
        }
    }
}

fn init_ebpf_log(ebpf: &mut aya::Ebpf) -> anyhow::Result<()> {
    let logger = aya_log::EbpfLogger::init(ebpf)?;
    // SAFETY: the logger owns its map fd; flushing neither closes nor replaces it.
    let mut logger = unsafe { AsyncFd::register_with_interest(logger, Interest::READABLE) }
        .map_err(|err| err.into_parts().1)?;
    tokio::spawn(async move {
        while let Ok(mut guard) = logger.readable_mut().await {
            guard.get_inner_mut().flush();
            guard.clear_ready();
        }
    });
    Ok(())
}

/// Fails early, with one clear line, when the effective capabilities cannot be enough.
fn check_privileges() -> anyhow::Result<()> {
    const CAP_NET_ADMIN: u32 = 12;
    const CAP_SYS_ADMIN: u32 = 21;
    const CAP_PERFMON: u32 = 38;
    const CAP_BPF: u32 = 39;
    let status =
        fs::read_to_string("/proc/self/status").context("cannot read /proc/self/status")?;
    let Some(cap_eff) = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
    else {
        // Unknown format: let the kernel decide.
        return Ok(());
    };
    let has = |cap: u32| cap_eff & (1 << cap) != 0;
    let mut missing = Vec::new();
    if !has(CAP_BPF) && !has(CAP_SYS_ADMIN) {
        missing.push("CAP_BPF");
    }
    if !has(CAP_NET_ADMIN) {
        missing.push("CAP_NET_ADMIN");
    }
    if !has(CAP_PERFMON) && !has(CAP_SYS_ADMIN) {
        missing.push("CAP_PERFMON");
    }
    if missing.is_empty() {
        return Ok(());
    }
    bail!(PrivilegeError {
        missing: missing.join(", ")
    })
}
