//! Resolved settings: the one place where the parsed command line (with its configuration
//! file beneath it) becomes what the commands use: the kernel's and the engine's
//! configurations, the output pipeline's, the allow-lists' sources, the block policy's
//! parameters and the service endpoints. Nothing below this layer reads [`Cli`].
//!
//! What depends on the host's network (the interfaces watched, the home nets, our own
//! addresses, the gateways) is not here: it is [`crate::net::network::Network`], found at
//! start and meant to change while running. The functions that need it take it as input.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use crate::{
    cli::{BlockAction, Cli, Mode, exit::UsageError, values::TrwMode},
    detect::{
        EngineConfig,
        crowd::CrowdConfig,
        slow::SlowConfig,
        trw::{TrwConfig, TrwUnit},
    },
    fleet::channel::FleetTarget,
    kernel::{KernelConfig, XdpModeArg},
    net::cidr::Cidr,
    output::{
        Clock, PipelineConfig,
        attack_list::{AttackList, AttackListError},
        sink::{OutputSpec, SinkError, Sinks, SyslogOptions},
    },
    policy::{
        allow::{AllowError, AllowLists, Service},
        block_control::Request as BlockRequest,
        budget::BudgetConfig,
    },
};

/// What to do.
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    /// Watch interfaces (no subcommand).
    Watch,
    /// Replay a capture.
    Replay {
        /// The pcap file.
        file: PathBuf,
    },
    /// Remove our leftovers from the interfaces.
    Detach,
    /// Send one request to the running instance's control socket.
    Block(BlockRequest),
    /// Correlate the fleet's evidence.
    Correlate,
}

/// `--fleet` and its parameters.
#[derive(Clone, Debug)]
pub struct FleetSettings {
    /// `--fleet`, as given (checked when used).
    pub url: String,
    /// `--fleet-ca`.
    pub ca: Option<PathBuf>,
    /// `--fleet-rate`.
    pub rate: u32,
    /// `--fleet-backlog`.
    pub backlog: usize,
    /// `--fleet-min-sensors`.
    pub min_sensors: usize,
    /// `--fleet-window`.
    pub window: Duration,
}

impl FleetSettings {
    /// The Redis to connect to, checked; a bad URL or CA is a usage error.
    pub fn target(&self) -> Result<FleetTarget, UsageError> {
        FleetTarget::parse(&self.url, self.ca.clone()).map_err(|err| UsageError(err.to_string()))
    }
}

/// Everything the commands need from the command line; see the module documentation.
#[derive(Clone, Debug)]
pub struct Settings {
    /// What to do.
    pub command: Command,
    /// `--iface`, as given (empty: the interface of the default route).
    pub ifaces: Vec<String>,
    /// `--home-net`, as given (empty: derived from the interfaces).
    pub home_nets: Vec<Cidr>,
    /// `--xdp-mode`.
    pub xdp_mode: XdpModeArg,
    /// `--force`.
    pub force: bool,
    /// The kernel's configuration, home nets aside (see [`Settings::kernel_config`]).
    kernel: KernelConfig,
    /// `--trw`.
    trw: TrwMode,
    /// The engine's configuration, the sequential test's unit aside (see
    /// [`Settings::engine_config`]).
    engine: EngineConfig,
    /// `--sensor-name`, or this host's name.
    pub sensor_name: String,
    /// `--output`, stdout when none is given.
    pub outputs: Vec<OutputSpec>,
    /// `--syslog-facility`, `--syslog-tag`.
    pub syslog: SyslogOptions,
    /// `--stdout-queue-mib`.
    pub stdout_queue_mib: usize,
    /// `--probes`, `--alert-rate-limit`, `--alert-rate-per-source`.
    pub probes: bool,
    pub alert_rate_limit: u32,
    pub alert_rate_per_source: u32,
    /// `--attack-list` and its rotation.
    pub attack_list: Option<AttackListSettings>,
    /// `--allow-source`, `--allow-service`, `--allow-file`.
    pub allow: AllowSettings,
    /// `--block` and its policy's parameters; `None` when off.
    pub block: Option<BlockSettings>,
    /// `--control-socket`.
    pub control_socket: PathBuf,
    /// `--block-state`.
    pub block_state: Option<PathBuf>,
    /// `--metrics-addr`.
    pub metrics_addr: Option<SocketAddr>,
    /// `--status-interval`.
    pub status_interval: Option<Duration>,
    /// `--fleet`; `None` when not given.
    pub fleet: Option<FleetSettings>,
}

/// Where the attack list goes and how it rotates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttackListSettings {
    /// The CSV file.
    pub path: PathBuf,
    /// Bytes at which it rotates.
    pub max_bytes: u64,
    /// Rotated files kept.
    pub keep: usize,
}

impl AttackListSettings {
    /// Opens (creates) the file: an unwritable path fails here, before anything is loaded.
    pub fn open(&self) -> Result<AttackList, AttackListError> {
        AttackList::open(&self.path, self.max_bytes, self.keep)
    }
}

/// Where the allow-lists come from: the command line and a file re-read on SIGHUP.
#[derive(Clone, Debug, Default)]
pub struct AllowSettings {
    /// `--allow-source`.
    pub sources: Vec<Cidr>,
    /// `--allow-service`.
    pub services: Vec<Service>,
    /// `--allow-file`.
    pub file: Option<PathBuf>,
}

impl AllowSettings {
    /// The allow-lists now: the command line's rules and the file's (read now).
    pub fn load(&self) -> Result<AllowLists, AllowError> {
        let mut lists = AllowLists {
            sources: self.sources.iter().copied().collect(),
            services: self.services.iter().copied().collect(),
        };
        if let Some(path) = &self.file {
            lists.add_file(path)?;
        }
        Ok(lists)
    }
}

/// `--block`'s parameters; the never-block set comes from the network and allow-lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockSettings {
    /// `--block-ttl`.
    pub ttl: Duration,
    /// `--block-spoofed`.
    pub block_spoofed: bool,
    /// `--block-rate`.
    pub rate: u32,
    /// `--block-prefix-cap`.
    pub prefix_cap: u32,
}

impl BlockSettings {
    /// The automatic-block budget: `rate` a second, bursts of ten times that.
    pub fn budget(&self) -> BudgetConfig {
        BudgetConfig {
            rate: f64::from(self.rate),
            burst: f64::from(self.rate) * 10.0,
            prefix_cap: self.prefix_cap as usize,
        }
    }
}

impl Settings {
    /// Resolves the parsed command line.
    pub fn from_cli(cli: &Cli) -> Self {
        let command = match &cli.mode {
            None => Command::Watch,
            Some(Mode::Replay { file }) => Command::Replay { file: file.clone() },
            Some(Mode::Detach) => Command::Detach,
            Some(Mode::Correlate) => Command::Correlate,
            Some(Mode::Block { action }) => Command::Block(match *action {
                BlockAction::List => BlockRequest::List,
                BlockAction::Add { addr, ttl } => BlockRequest::Add { addr, ttl_s: ttl },
                BlockAction::Remove { addr } => BlockRequest::Remove { addr },
            }),
        };
        let kernel = KernelConfig {
            pending_slots: cli.pending_slots,
            outcomes_entries: cli.outcome_entries,
            suspect_sets: cli.suspect_sets,
            ringbuf_bytes: cli.ringbuf_bytes,
            timeout: cli.pending_timeout,
            callback_window: cli.callback_window,
            home_nets: Vec::new(),
            wakeup_gap: (cli.wakeup_ms > 0).then(|| Duration::from_millis(cli.wakeup_ms)),
            block: cli.block,
            block_ttl: cli.block_ttl,
            block_rate: cli.block_rate,
            // `--probes` writes every outcome, each with its own time: no summaries, no
            // first failure held.
            summarize: !cli.probes,
            hold: !cli.probes,
            settle_successes: cli.settle_successes,
            fleet: cli.fleet.is_some(),
            // Half the spread detector's ports: its evidence arrives by the time it needs it.
            crowd_ports: (cli.spread_ports > 0).then(|| u32::from(cli.spread_ports).div_ceil(2)),
            crowd_window: cli.spread_window,
            ..KernelConfig::default()
        };
        let max_tracked = cli.max_tracked as usize;
        let engine = EngineConfig {
            min_ports: usize::from(cli.scan_ports),
            min_hosts: usize::from(cli.sweep_hosts),
            window: cli.scan_window,
            max_tracked,
            trw: None,
            update_interval: cli.update_interval,
            idle_timeout: cli.idle_timeout,
            slow: (cli.slow_failed > 0).then_some(SlowConfig {
                min_failed: cli.slow_failed,
                horizon: cli.slow_horizon,
                max_sources: max_tracked,
            }),
            crowd: (cli.crowd_sources > 0 || cli.spread_ports > 0).then_some(CrowdConfig {
                min_sources: usize::from(cli.crowd_sources),
                min_common: usize::from(cli.crowd_ports),
                window: cli.scan_window,
                max_targets: max_tracked.min(4096),
                spread_ports: usize::from(cli.spread_ports),
                spread_window: cli.spread_window,
            }),
            group_v4: cli.group_v4,
            group_v6: cli.group_v6,
            own: Vec::new(),
        };
        Self {
            command,
            ifaces: cli.ifaces.clone(),
            home_nets: cli.home_nets.clone(),
            xdp_mode: cli.xdp_mode,
            force: cli.force,
            kernel,
            trw: cli.trw,
            engine,
            sensor_name: cli
                .sensor_name
                .clone()
                .unwrap_or_else(crate::net::iface::host_name),
            outputs: if cli.outputs.is_empty() {
                vec![OutputSpec::Stdout]
            } else {
                cli.outputs.clone()
            },
            syslog: SyslogOptions {
                facility: cli.syslog_facility,
                tag: cli.syslog_tag.clone(),
            },
            stdout_queue_mib: usize::from(cli.stdout_queue_mib),
            probes: cli.probes,
            alert_rate_limit: cli.alert_rate_limit,
            alert_rate_per_source: cli.alert_rate_per_source,
            attack_list: cli.attack_list.as_ref().map(|path| AttackListSettings {
                path: path.clone(),
                max_bytes: cli.attack_list_mib << 20,
                keep: cli.attack_list_keep,
            }),
            allow: AllowSettings {
                sources: cli.allow_sources.clone(),
                services: cli.allow_services.clone(),
                file: cli.allow_file.clone(),
            },
            block: cli.block.then_some(BlockSettings {
                ttl: cli.block_ttl,
                block_spoofed: cli.block_spoofed,
                rate: cli.block_rate,
                prefix_cap: cli.block_prefix_cap,
            }),
            control_socket: cli.control_socket.clone(),
            block_state: cli.block_state.clone(),
            metrics_addr: cli.metrics_addr,
            status_interval: cli.status_interval,
            fleet: cli.fleet.as_ref().map(|url| FleetSettings {
                url: url.clone(),
                ca: cli.fleet_ca.clone(),
                rate: cli.fleet_rate,
                backlog: cli.fleet_backlog as usize,
                min_sensors: usize::from(cli.fleet_min_sensors),
                window: cli.fleet_window,
            }),
        }
    }

    /// The kernel's configuration with these home nets.
    pub fn kernel_config(&self, home_nets: &[Cidr]) -> KernelConfig {
        KernelConfig {
            home_nets: home_nets.to_vec(),
            ..self.kernel.clone()
        }
    }

    /// The unit of the sequential test's first contacts (`--trw`): `auto` counts services
    /// at this host's own addresses (the home nets of one address) and hosts elsewhere.
    pub fn trw_unit(&self) -> Option<TrwUnit> {
        match self.trw {
            TrwMode::Off => None,
            TrwMode::Host => Some(TrwUnit::Host),
            TrwMode::Service => Some(TrwUnit::Service),
            TrwMode::Auto => Some(TrwUnit::Auto),
        }
    }

    /// Opens every `--output`: a file that cannot be written or a syslog socket nobody
    /// listens on fails here, before anything is loaded.
    pub fn open_outputs(&self) -> Result<Sinks, SinkError> {
        Sinks::open(
            &self.outputs,
            self.syslog.clone(),
            &self.sensor_name,
            self.stdout_queue_mib << 20,
        )
    }

    /// Opens the attack list when `--attack-list` is given: an unwritable path fails here,
    /// before anything is loaded.
    pub fn open_attack_list(&self) -> Result<Option<AttackList>, AttackListError> {
        self.attack_list.as_ref().map(|a| a.open()).transpose()
    }

    /// The engine's configuration with these home nets.
    pub fn engine_config(&self, home_nets: &[Cidr]) -> EngineConfig {
        EngineConfig {
            trw: self.trw_unit().map(|unit| TrwConfig {
                unit,
                ..TrwConfig::default()
            }),
            own: own_addresses(home_nets),
            ..self.engine.clone()
        }
    }

    /// The output pipeline's settings for records on `clock`.
    pub fn pipeline_config(&self, clock: Clock) -> PipelineConfig {
        PipelineConfig {
            probes: self.probes,
            alert_rate_limit: self.alert_rate_limit,
            alert_rate_per_source: self.alert_rate_per_source,
            fixed_iface: (clock == Clock::Unix).then(|| "replay".to_owned()),
            host: self.sensor_name.clone(),
            clock,
        }
    }
}

/// The log line that says how the sequential test counts.
pub fn describe_trw(unit: Option<TrwUnit>) -> &'static str {
    match unit {
        None => "off",
        Some(TrwUnit::Service) => "on, first contacts with each host:port",
        Some(TrwUnit::Host) => "on, first contacts with each host",
        Some(TrwUnit::Auto) => {
            "on, first contacts with each host:port of this host's own addresses and with \
             each host elsewhere"
        }
    }
}

/// This host's own addresses among the home nets: those of one address.
pub fn own_addresses(home_nets: &[Cidr]) -> Vec<std::net::IpAddr> {
    home_nets
        .iter()
        .filter(|c| c.len == c.max_len())
        .map(|c| c.addr)
        .collect()
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    fn settings(args: &[&str]) -> Settings {
        let argv = std::iter::once("probe-detector").chain(args.iter().copied());
        Settings::from_cli(&Cli::try_parse_from(argv).expect("valid arguments"))
    }

    fn cidrs(list: &[&str]) -> Vec<Cidr> {
        list.iter().map(|c| c.parse().unwrap()).collect()
    }

    #[test]
    fn defaults_give_the_documented_engine_and_kernel() {
        let s = settings(&[]);
        assert_eq!(s.command, Command::Watch);
        let engine = s.engine_config(&cidrs(&["198.18.0.2"]));
        assert_eq!((engine.min_ports, engine.min_hosts), (10, 16));
        assert_eq!(engine.window, Duration::from_secs(60));
        assert_eq!(engine.trw.map(|t| t.unit), Some(TrwUnit::Auto));
        assert_eq!(engine.slow.map(|s| s.min_failed), Some(8));
        assert_eq!(engine.crowd.map(|c| c.min_sources), Some(3));
        let kernel = s.kernel_config(&cidrs(&["198.18.0.2"]));
        assert_eq!(kernel.home_nets.len(), 1);
        assert!(!kernel.block);
        assert_eq!(kernel.wakeup_gap, Some(Duration::from_millis(1)));
        assert!(s.block.is_none() && s.attack_list.is_none() && s.metrics_addr.is_none());
        assert_eq!(s.sensor_name, crate::net::iface::host_name());
        assert_eq!(settings(&["--sensor-name", "edge-1"]).sensor_name, "edge-1");
        assert_eq!(s.outputs, vec![OutputSpec::Stdout]);
        assert_eq!(
            s.syslog,
            SyslogOptions {
                facility: 21,
                tag: "probe-detector".into()
            }
        );
        let many = settings(&["--output", "file:/tmp/eve.json", "--output", "syslog"]);
        assert_eq!(
            many.outputs.len(),
            2,
            "stdout only when no --output is given"
        );
    }

    #[test]
    fn trw_auto_counts_services_at_our_own_addresses_and_hosts_elsewhere() {
        let s = settings(&[]);
        assert_eq!(s.trw_unit(), Some(TrwUnit::Auto));
        let config = s.engine_config(&cidrs(&["198.18.0.2", "198.19.0.0/24", "2001:db8::2"]));
        assert_eq!(
            config.own,
            ["198.18.0.2", "2001:db8::2"].map(|a| a.parse::<std::net::IpAddr>().unwrap())
        );
        assert_eq!(settings(&["--trw", "off"]).trw_unit(), None);
        assert_eq!(settings(&["--trw", "host"]).trw_unit(), Some(TrwUnit::Host));
    }

    #[test]
    fn zero_turns_detectors_off_and_flags_reach_their_layer() {
        let s = settings(&[
            "--slow-failed",
            "0",
            "--crowd-sources",
            "0",
            "--spread-ports",
            "0",
            "--wakeup-ms",
            "0",
            "--block",
            "--block-ttl",
            "90",
            "--attack-list",
            "/tmp/a.csv",
            "--attack-list-mib",
            "2",
        ]);
        let engine = s.engine_config(&[]);
        assert!(engine.slow.is_none() && engine.crowd.is_none());
        // Decoy crowds off, spread scans still looked for.
        let decoys_off = settings(&["--crowd-sources", "0"]);
        let crowd = decoys_off
            .engine_config(&[])
            .crowd
            .expect("spread scans on");
        assert_eq!((crowd.min_sources, crowd.spread_ports), (0, 10));
        let kernel = s.kernel_config(&[]);
        assert!(kernel.block);
        assert_eq!(kernel.wakeup_gap, None);
        assert_eq!(
            s.block,
            Some(BlockSettings {
                ttl: Duration::from_secs(90),
                block_spoofed: false,
                rate: 5,
                prefix_cap: 16,
            })
        );
        assert_eq!(s.attack_list.map(|a| a.max_bytes), Some(2 << 20));
    }

    #[test]
    fn subcommands_become_commands() {
        assert_eq!(
            settings(&["replay", "x.pcap"]).command,
            Command::Replay {
                file: "x.pcap".into()
            }
        );
        assert_eq!(
            settings(&["block", "add", "198.18.0.9", "--ttl", "5"]).command,
            Command::Block(BlockRequest::Add {
                addr: "198.18.0.9".parse().unwrap(),
                ttl_s: Some(5)
            })
        );
        assert_eq!(
            settings(&["detach", "--iface", "x"]).command,
            Command::Detach
        );
    }

    #[test]
    fn allow_rules_of_the_command_line_load_without_a_file() {
        let s = settings(&[
            "--allow-source",
            "198.18.0.0/24",
            "--allow-service",
            "198.18.0.2:80",
        ]);
        let lists = s.allow.load().unwrap();
        assert_eq!((lists.sources.len(), lists.services.len()), (1, 1));
    }
}
