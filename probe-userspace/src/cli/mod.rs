//! The command line: every flag with its help, grouped under headings (Detection, Kernel,
//! Output, Blocking, Allow-lists, Service), the subcommands, and the configuration file
//! beneath them. [`settings`] turns the parsed command line into what the commands use;
//! nothing below that layer reads [`Cli`].

pub mod config;
pub mod exit;
pub mod settings;
pub mod values;

use std::{ffi::OsString, net::SocketAddr, path::PathBuf, process::ExitCode, time::Duration};

use clap::{CommandFactory as _, FromArgMatches as _, Parser};

use crate::{
    cli::exit::{EXIT_FAILURE, EXIT_OK, EXIT_USAGE},
    cli::values::{
        TrwMode, parse_crowd_sources, parse_power_of_two, parse_seconds, parse_slow_failed,
        parse_spread_ports,
    },
    daemon::metrics,
    kernel::XdpModeArg,
    net::cidr::Cidr,
    output::sink::{OutputSpec, parse_facility},
    policy::allow::Service,
};

/// Parses `argv` with the settings of its `--config` file beneath it. `Err` carries the
/// exit status when there is nothing more to do: `--help`, `--version` and
/// `--print-config` printed (0), or a usage error printed (2).
pub fn parse_args(argv: Vec<OsString>) -> Result<Cli, ExitCode> {
    let clap_exit = |err: clap::Error| {
        let _ = err.print();
        ExitCode::from(if err.use_stderr() {
            EXIT_USAGE
        } else {
            EXIT_OK
        })
    };
    let cmd = Cli::command();
    let given = cmd.clone().try_get_matches_from(&argv).map_err(clap_exit)?;
    let (matches, file) = match given.get_one::<PathBuf>("config") {
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
    if let Some(kind) = cli.generate {
        let mut out = std::io::stdout().lock();
        let written = generate(kind, cmd, &mut out);
        return Err(ExitCode::from(if written.is_ok() {
            EXIT_OK
        } else {
            EXIT_FAILURE
        }));
    }
    if cli.print_config {
        print!("{}", config::render(&cmd, &matches, file.as_deref()));
        return Err(ExitCode::from(EXIT_OK));
    }
    Ok(cli)
}

/// Detects port probes and port scans with XDP and TC eBPF programs, and writes one JSON
/// alert per line on stdout.
#[derive(Debug, Parser)]
#[command(
    name = "probe-detector",
    version = crate::VERSION,
    about,
    // A flag given twice takes its last value: the command line after the config file.
    args_override_self = true,
    long_about = "Detects port probes and port scans with XDP and TC eBPF programs.\n\n\
        probe-detector attaches an XDP program (ingress) and a TC program (egress) to each \
        interface. A connection attempt that this host (or, on a gateway, a host behind it) \
        refuses counts as a failed probe; a source that fails on many ports of one target \
        within a short window is a port scan, reported as one JSON object per line (stdout, or --output), \
        a Suricata EVE alert record. Logs go to stderr.\n\n\
        Needs root (CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON) and Linux >= 5.8 with BTF; \
        SIGINT and SIGTERM detach everything and exit 0.",
    after_help = "Examples:\n  \
        probe-detector --iface eth0\n  \
        probe-detector --print-config > /etc/probe-detector.toml   # a documented starting point\n  \
        probe-detector --config /etc/probe-detector.toml --probes\n  \
        probe-detector --iface eth0 --scan-ports 20 --scan-window 300 | jq -c 'select(.event_type == \"alert\")'\n\n\
        SIGHUP re-reads --allow-file.\n\n\
        Exit status: 0 stopped by SIGINT/SIGTERM (or stdout's reader went away), 1 load/attach/runtime failure, 2 bad arguments \
        (or allow-list rules), 3 missing privileges, 4 unknown interface or no default route."
)]
pub struct Cli {
    /// A network that is "ours" (repeatable, CIDR or address). Only attempts to these
    /// addresses are tracked. Default: the addresses of the attached interfaces; on a host
    /// that forwards (a gateway), the networks routed through its other interfaces and its
    /// own addresses, followed as routes change (the start-up log names them). Given, it
    /// replaces either.
    #[arg(
        help_heading = "Detection",
        global = true,
        long = "home-net",
        value_name = "CIDR"
    )]
    pub home_nets: Vec<Cidr>,

    /// Distinct refused ports of one target from one source that make a port scan.
    #[arg(help_heading = "Detection", global = true, long, default_value_t = 10, value_name = "N", value_parser = clap::value_parser!(u16).range(2..))]
    pub scan_ports: u16,

    /// Window, in seconds, in which those ports must be refused (fractions allowed).
    #[arg(help_heading = "Detection", global = true, long, default_value = "60", value_name = "SECONDS", value_parser = parse_seconds)]
    pub scan_window: Duration,

    /// Distinct hosts probed by one source (failed attempts, or pings) that make a sweep.
    #[arg(help_heading = "Detection", global = true, long, default_value_t = 16, value_name = "N", value_parser = clap::value_parser!(u16).range(2..))]
    pub sweep_hosts: u16,

    /// The sequential hypothesis test (TRW) on first contacts: `auto` counts each source's
    /// first contacts with each service (host:port) at this host's own addresses and with
    /// each host behind it (a gateway's LAN); `service` and `host` use one unit everywhere;
    /// `off` leaves the thresholds alone.
    #[arg(help_heading = "Detection", global = true, long, value_enum, default_value_t = TrwMode::Auto, value_name = "MODE")]
    pub trw: TrwMode,

    /// Give the kernel's verdict on a source only once its first TCP successes are settled:
    /// by the client's reset before a byte (a SYN or connect scanner's open port: never
    /// counted) or by the connection standing a sweep (a client's use of the service:
    /// counted). Without it (the default) the fourth failure decides at once, and a
    /// client that tries several services of a host at once, some closed (a mail client's
    /// set-up trying every port it knows), can be decided on its failures before its
    /// successes count. With it no such client is, but a scan whose open ports come among
    /// its first four probes (nmap puts the common ports first) is decided one round trip
    /// to the scanner later, after more probes (with --block: more answers).
    #[arg(help_heading = "Detection", global = true, long)]
    pub settle_successes: bool,

    /// Distinct failed contacts (host:port) within --slow-horizon, beyond the source's
    /// successes, that make a slow scan (nmap -T1, -T0). 0 turns the slow-scan detector off.
    #[arg(help_heading = "Detection", global = true, long, default_value_t = 8, value_name = "N", value_parser = parse_slow_failed)]
    pub slow_failed: u32,

    /// Seconds over which the slow-scan detector counts a source's contacts (a compact
    /// summary per source; contacts older than this are forgotten).
    #[arg(help_heading = "Detection", global = true, long, default_value = "3600", value_name = "SECONDS", value_parser = parse_seconds)]
    pub slow_horizon: Duration,

    /// Sources failing on the same ports of one host within --scan-window that make one
    /// distributed scan (nmap -D decoys, cooperating scanners), reported as one incident
    /// listing them. 0 turns the detector off.
    #[arg(help_heading = "Detection", global = true, long, default_value_t = 3, value_name = "N", value_parser = parse_crowd_sources)]
    pub crowd_sources: u16,

    /// Failed ports each of those sources must share with the others.
    #[arg(help_heading = "Detection", global = true, long, default_value_t = 3, value_name = "N", value_parser = clap::value_parser!(u16).range(2..=8))]
    pub crowd_ports: u16,

    /// Distinct ports of one host, each failed by a source that failed on no more than
    /// two of its ports, within --spread-window, that make a spread scan: a scan split
    /// over many sources (or a forged-source flood), reported as one distributed incident
    /// whose sources are never blocked. Clients retrying one or two closed ports never
    /// count. 0 turns it off.
    #[arg(help_heading = "Detection", global = true, long, default_value_t = 10, value_name = "N", value_parser = parse_spread_ports)]
    pub spread_ports: u16,

    /// Seconds over which a spread scan's ports count (short: the background scanning of
    /// an Internet-facing address, a few probes a minute from unrelated sources, must
    /// not add up).
    #[arg(help_heading = "Detection", global = true, long, default_value = "10", value_name = "SECONDS", value_parser = parse_seconds)]
    pub spread_window: Duration,

    /// Count the IPv4 sources of one prefix of this length as one source (24: a /24 is one
    /// scanner); its incident lists every address. 32: every address on its own.
    #[arg(help_heading = "Detection", global = true, long, default_value_t = 32, value_name = "LEN", value_parser = clap::value_parser!(u8).range(8..=32))]
    pub group_v4: u8,

    /// Count the IPv6 sources of one prefix of this length as one source. 64 (an end
    /// site's smallest network, within which SLAAC and privacy addresses rotate): a
    /// scanner taking a new address of its /64 per probe is one source. 128: every
    /// address on its own.
    #[arg(help_heading = "Detection", global = true, long, default_value_t = 64, value_name = "LEN", value_parser = clap::value_parser!(u8).range(16..=128))]
    pub group_v6: u8,

    /// Seconds an attempt may wait for an answer before it counts as unanswered
    /// (filtered, or open for FIN/NULL/Xmas and UDP probes).
    #[arg(help_heading = "Detection", global = true, long, default_value = "3", value_name = "SECONDS", value_parser = parse_seconds)]
    pub pending_timeout: Duration,

    /// Seconds during which a host our hosts contacted may connect back to our high ports
    /// (>= 1024) unreported (active FTP data, chat, media callbacks), as the seeds and TRW
    /// both advise. Its probes of our service ports (< 1024) are still reported.
    #[arg(help_heading = "Detection", global = true, long, default_value = "60", value_name = "SECONDS", value_parser = parse_seconds)]
    pub callback_window: Duration,

    /// Seconds between `update` alerts of a scan that goes on.
    #[arg(help_heading = "Detection", global = true, long, default_value = "60", value_name = "SECONDS", value_parser = parse_seconds)]
    pub update_interval: Duration,

    /// Seconds without probes after which a scan ends (its `end` alert sums it up).
    #[arg(help_heading = "Detection", global = true, long, default_value = "60", value_name = "SECONDS", value_parser = parse_seconds)]
    pub idle_timeout: Duration,

    /// Entries each detector tracks at once (source/target pairs, sources); the least
    /// recently active are forgotten first. Bounds memory under floods of spoofed sources.
    #[arg(help_heading = "Detection", global = true, long, default_value_t = 65_536, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_tracked: u32,

    /// Interface to watch (repeat for several). Default: the interface of the default route.
    #[arg(
        help_heading = "Kernel",
        global = true,
        short,
        long = "iface",
        value_name = "IFACE"
    )]
    pub ifaces: Vec<String>,

    /// XDP attach mode: `auto` tries native (driver) mode and falls back to generic (skb).
    #[arg(help_heading = "Kernel", global = true, long, value_enum, default_value_t = XdpModeArg::Auto, value_name = "MODE")]
    pub xdp_mode: XdpModeArg,

    /// Replace an XDP program that is not ours on the interface (one attached through
    /// netlink; one held by another process's bpf_link cannot be replaced). Without it such a
    /// program stops the start and is left alone.
    #[arg(help_heading = "Kernel", global = true, long)]
    pub force: bool,

    /// Slots of the kernel's pending-attempt table (a power of two; 64 B each). More slots,
    /// fewer attempts lost to hash collisions under floods and fast scans nobody answers
    /// (an attempt waits --pending-timeout for its answer). Attempts answered at once (a
    /// scan of closed ports) keep to the table's first 256 slots, which stay in the CPU's
    /// caches whatever the size.
    #[arg(help_heading = "Kernel", global = true, long, default_value_t = probe_common::PENDING_ENTRIES, value_name = "N", value_parser = parse_power_of_two)]
    pub pending_slots: u32,

    /// Sets of the kernel's sequential test per source (a power of two; four sources of
    /// 8 B each a set): the default holds 1 048 576 sources in 8 MiB.
    #[arg(help_heading = "Kernel", global = true, long, default_value_t = probe_common::SUSPECT_SETS, value_name = "N", value_parser = parse_power_of_two)]
    pub suspect_sets: u32,

    /// Entries of the kernel's reported-outcome table (LRU; about 112 B each).
    #[arg(help_heading = "Kernel", global = true, long, default_value_t = probe_common::OUTCOMES_ENTRIES, value_name = "N", value_parser = clap::value_parser!(u32).range(1024..))]
    pub outcome_entries: u32,

    /// Least milliseconds between two wakeups of probe-detector by new kernel events. 1 (the
    /// default): the first event after a quiet spell is read at once and a fast scan is
    /// alerted within a few probes, for at most 1000 wakeups a second. Larger: fewer
    /// wakeups, later alerts. 0: only a backlog wakes it; events otherwise wait for the
    /// 100 ms drain timer (least CPU at a few thousand events a second; see
    /// docs/detection-matrix.md for both, measured).
    #[arg(help_heading = "Kernel", global = true, long, default_value_t = 1, value_name = "MS", value_parser = clap::value_parser!(u64).range(0..=1000))]
    pub wakeup_ms: u64,

    /// Bytes of the kernel-to-userspace event ring buffer (a power of two, >= 4096).
    #[arg(help_heading = "Kernel", global = true, long, default_value_t = probe_common::EVENTS_BYTES, value_name = "BYTES", value_parser = parse_power_of_two)]
    pub ringbuf_bytes: u32,

    /// Also write each outcome the kernel reports (refused, accepted, unanswered, ...) as
    /// a JSON line with event_type "probe": the raw evidence behind the alerts. The kernel
    /// then sends every first outcome with its own time and source port: it holds no
    /// source's first failure and summarises no decided scanner's probes (more CPU under
    /// a scan or a flood).
    #[arg(help_heading = "Output", long, global = true)]
    pub probes: bool,

    /// At most this many alerts a second in all, updates and ends at most three quarters
    /// of them (a scan's start always finds room); beyond, alerts are counted (they still
    /// block with --block) and one EVE engine record a second says how many were
    /// suppressed and whose. 0: no limit.
    #[arg(
        help_heading = "Output",
        global = true,
        long,
        default_value_t = 100,
        value_name = "N"
    )]
    pub alert_rate_limit: u32,

    /// At most this many alerts a second for one source (an address, an IPv6 /64), four
    /// times as many for the sources of one network (a /24, a /48): scanners of a few
    /// networks, forged or not, cannot crowd out another's start. 0: no limit.
    #[arg(
        help_heading = "Output",
        global = true,
        long,
        default_value_t = 5,
        value_name = "N"
    )]
    pub alert_rate_per_source: u32,

    /// Where records go (repeatable): `stdout` (the default), `file:PATH` (appended, mode
    /// 0640, reopened on SIGHUP for logrotate), `syslog` (RFC 3164 to /dev/log),
    /// `syslog:/PATH/TO/SOCKET` or `syslog:HOST:PORT` (RFC 5424, Unix datagram or UDP); one
    /// JSON record per line or message.
    #[arg(
        help_heading = "Output",
        global = true,
        long = "output",
        value_name = "OUTPUT"
    )]
    pub outputs: Vec<OutputSpec>,

    /// The syslog facility of `--output syslog...` messages.
    #[arg(help_heading = "Output", global = true, long, default_value = "local5", value_name = "FACILITY", value_parser = parse_facility)]
    pub syslog_facility: u8,

    /// The tag (RFC 3164) or APP-NAME (RFC 5424) of `--output syslog...` messages.
    #[arg(
        help_heading = "Output",
        global = true,
        long,
        default_value = "probe-detector",
        value_name = "TAG"
    )]
    pub syslog_tag: String,

    /// The sensor's name every record carries in `host` (EVE's sensor name), so records
    /// from several sensors can be told apart. Default: this host's name.
    #[arg(help_heading = "Output", global = true, long, value_name = "NAME")]
    pub sensor_name: Option<String>,

    /// Append each probed port of a confirmed scanner to this CSV file (time, source,
    /// destination, port, protocol, outcome, service, count). Off when not given.
    #[arg(help_heading = "Output", global = true, long, value_name = "PATH")]
    pub attack_list: Option<PathBuf>,

    /// Size at which the attack list is rotated (PATH.1, PATH.2, ...), in MiB.
    #[arg(help_heading = "Output", global = true, long, default_value_t = 10, value_name = "MIB", value_parser = clap::value_parser!(u64).range(1..))]
    pub attack_list_mib: u64,

    /// Rotated attack lists kept.
    #[arg(
        help_heading = "Output",
        global = true,
        long,
        default_value_t = 5,
        value_name = "N"
    )]
    pub attack_list_keep: usize,

    /// When stdout is a pipe, records its reader has not taken wait in a queue of this many
    /// MiB; beyond it they are dropped, counted, and said in one engine record once the
    /// reader catches up. Detection never waits for the reader.
    #[arg(
        help_heading = "Output",
        global = true,
        long,
        default_value_t = 16,
        value_name = "MIB",
        value_parser = clap::value_parser!(u16).range(1..)
    )]
    pub stdout_queue_mib: u16,

    /// Drop the packets of confirmed scanners in XDP for --block-ttl seconds. Never blocked
    /// (kept current while running): allow-listed sources, our addresses, the home nets,
    /// gateways, DNS resolvers, on-link neighbours whose address came in frames not their
    /// own, peers that answered connections this host started (6 h), loopback, and sources
    /// likely spoofed
    /// (unless --block-spoofed). Answers to our own connections lift a block. Off by
    /// default; see docs/blocking.md for what forged packets can still make it do.
    #[arg(help_heading = "Blocking", global = true, long)]
    pub block: bool,

    /// New automatic blocks a second, at most (bursts of ten times as many after a quiet
    /// spell): a flood of forged scans blocks no more. Blocks by hand are not counted.
    #[arg(help_heading = "Blocking", global = true, long, default_value_t = 5, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub block_rate: u32,

    /// Automatic blocks in force within one /24 (IPv4) or /48 (IPv6), at most: forging a
    /// network's addresses cannot cut it off whole.
    #[arg(help_heading = "Blocking", global = true, long, default_value_t = 16, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub block_prefix_cap: u32,

    /// How long a block lasts, in seconds.
    #[arg(help_heading = "Blocking", global = true, long, default_value = "3600", value_name = "SECONDS", value_parser = parse_seconds)]
    pub block_ttl: Duration,

    /// Also block the sources of scans that may be forged (decoy scans, martian sources):
    /// an attacker can then get innocent addresses blocked.
    #[arg(help_heading = "Blocking", global = true, long)]
    pub block_spoofed: bool,

    /// With --block: keep the blocks in this file across restarts (written at exit and
    /// every minute, read at start; blocks the never-block rules now spare are dropped).
    #[arg(help_heading = "Blocking", global = true, long, value_name = "PATH")]
    pub block_state: Option<PathBuf>,

    /// The control socket of `probe-detector block` (root only), made when --block is on.
    #[arg(
        help_heading = "Blocking",
        global = true,
        long,
        default_value = "/run/probe-detector/control.sock",
        value_name = "PATH"
    )]
    pub control_socket: PathBuf,

    /// Join a fleet: publish evidence (each outcome, and first failures local detection
    /// holds) and alerts to the Redis at URL, and, with --block, apply the fleet's blocks
    /// under this host's own never-block rules. redis://[USER:PASSWORD@]HOST:PORT, or
    /// rediss:// for TLS; a node of a Redis Cluster is found to be one. Local detection
    /// never waits for it. With `correlate`: the Redis to correlate. See docs/fleet.md.
    #[arg(help_heading = "Fleet", global = true, long, value_name = "URL")]
    pub fleet: Option<String>,

    /// The CA certificate (PEM) that signed the fleet's Redis server certificate, for
    /// rediss:// with a private CA (default: the system's trust store).
    #[arg(help_heading = "Fleet", global = true, long, value_name = "FILE")]
    pub fleet_ca: Option<PathBuf>,

    /// Evidence records a second a sensor publishes at most; beyond it they are dropped
    /// and counted (a forged flood costs the fleet a bounded rate, never local detection).
    #[arg(help_heading = "Fleet", global = true, long, default_value_t = 20_000, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub fleet_rate: u32,

    /// Evidence records kept while the fleet's Redis is away (about 64 B each); the
    /// oldest beyond it are dropped and counted.
    #[arg(help_heading = "Fleet", global = true, long, default_value_t = 100_000, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub fleet_backlog: u32,

    /// `correlate --block`: sensors whose evidence must back a source before a fleet block
    /// is published (one compromised or misled sensor alone cannot block anyone).
    #[arg(help_heading = "Fleet", global = true, long, default_value_t = 2, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub fleet_min_sensors: u16,

    /// `correlate`: how far back a correlator rebuilds the state of a shard it takes over,
    /// in seconds.
    #[arg(help_heading = "Fleet", global = true, long, default_value = "600", value_name = "SECONDS", value_parser = parse_seconds)]
    pub fleet_window: Duration,

    /// A source never to report (repeatable, CIDR): your own scanners, monitoring.
    #[arg(
        help_heading = "Allow-lists",
        global = true,
        long = "allow-source",
        value_name = "CIDR"
    )]
    pub allow_sources: Vec<Cidr>,

    /// A local service never to report (repeatable): CIDR, CIDR:PORT or [IPV6-CIDR]:PORT.
    #[arg(
        help_heading = "Allow-lists",
        global = true,
        long = "allow-service",
        value_name = "SERVICE"
    )]
    pub allow_services: Vec<Service>,

    /// A file of allow-list rules (`source CIDR`, `service CIDR[:PORT]`, `#` comments),
    /// re-read on SIGHUP; the kernel's lists are updated in place.
    #[arg(help_heading = "Allow-lists", global = true, long, value_name = "PATH")]
    pub allow_file: Option<PathBuf>,

    /// Read settings from this TOML file: each key is a flag's long name, each value its
    /// argument (`scan-ports = 20`, `home-net = ["198.18.0.0/15"]`, `probes = true`). Flags
    /// on the command line override it.
    #[arg(help_heading = "Service", global = true, long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Print the effective configuration (defaults, --config file, flags) as a documented
    /// TOML file, and exit.
    #[arg(help_heading = "Service", long, global = true)]
    pub print_config: bool,

    /// Write the man page or a shell's completions to stdout, and exit (for packagers).
    #[arg(long, hide = true, value_enum, value_name = "KIND")]
    pub generate: Option<Generate>,

    /// Serve Prometheus metrics at http://ADDR/metrics: PORT (on 127.0.0.1), IP:PORT or
    /// [IPv6]:PORT. Off when not given. docs/metrics.md lists every metric.
    #[arg(help_heading = "Service", global = true, long, value_name = "ADDR", value_parser = metrics::parse_addr)]
    pub metrics_addr: Option<SocketAddr>,

    /// Every this many seconds, one status line on stderr with live counts (packets,
    /// failed attempts, scans, sources tracked, events lost). Off when not given.
    #[arg(help_heading = "Service", global = true, long, value_name = "SECONDS", value_parser = parse_seconds)]
    pub status_interval: Option<Duration>,

    /// Log level for stderr: error, warn, info, debug (each refused probe; eBPF trace
    /// records when built with PROBE_EBPF_TRACE=1) or trace. RUST_LOG overrides.
    #[arg(
        help_heading = "Service",
        global = true,
        long,
        default_value = "info",
        value_name = "LEVEL"
    )]
    pub log_level: log::LevelFilter,

    /// What to do: watch interfaces (no subcommand), or replay a capture.
    #[command(subcommand)]
    pub mode: Option<Mode>,
}

/// What probe-detector does besides watching interfaces.
#[derive(Debug, clap::Subcommand)]
pub enum Mode {
    /// Replay a capture: each packet goes through the same XDP (inbound) and TC (outbound)
    /// programs with BPF_PROG_TEST_RUN, nothing attached, and the events through the same
    /// engine on the capture's clock; alerts are written as a live run would write them.
    /// Needs --home-net (the capture's own addresses: they tell outbound from inbound).
    /// Example: probe-detector replay scan.pcap --home-net 198.18.7.2
    Replay {
        /// A pcap file (as tcpdump -w writes); convert pcapng first (editcap -F pcap).
        #[arg(value_name = "FILE.pcap")]
        file: PathBuf,
    },
    /// Remove what a crashed probe-detector left attached to --iface (repeatable): our TC
    /// egress filter and our XDP program, where the kernel attached them through netlink
    /// (kernels without bpf_links for them); anything not ours is left alone.
    /// Example: probe-detector detach --iface eth0
    Detach,
    /// Correlate a fleet: read the evidence every sensor publishes (--fleet URL), run the
    /// same detectors over all of it, and write the same alerts, each naming the sensors
    /// that saw the scanner; with --block, publish fleet blocks (backed by
    /// --fleet-min-sensors sensors, within --block-rate) that every sensor applies under
    /// its own policy. Run two for takeover: each owns a share of the shards.
    /// Example: probe-detector correlate --fleet redis://198.18.30.1:6379 --block
    Correlate,
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
pub enum BlockAction {
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

/// What `--generate` writes: generated from these very flags, so never out of step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Generate {
    /// The man page (roff), section 8.
    Man,
    /// bash completions.
    CompleteBash,
    /// zsh completions.
    CompleteZsh,
    /// fish completions.
    CompleteFish,
}

/// Writes the man page or completions of `cmd`.
pub fn generate(
    kind: Generate,
    cmd: clap::Command,
    out: &mut impl std::io::Write,
) -> std::io::Result<()> {
    use clap_complete::{Shell, generate as complete};
    let mut cmd = cmd;
    let name = "probe-detector";
    match kind {
        Generate::Man => clap_mangen::Man::new(cmd).section("8").render(out),
        Generate::CompleteBash => {
            complete(Shell::Bash, &mut cmd, name, out);
            Ok(())
        }
        Generate::CompleteZsh => {
            complete(Shell::Zsh, &mut cmd, name, out);
            Ok(())
        }
        Generate::CompleteFish => {
            complete(Shell::Fish, &mut cmd, name, out);
            Ok(())
        }
    }
}
