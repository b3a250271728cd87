//! Watching interfaces (the default command): start-up in the order that fails early and
//! leaves nothing behind (interfaces, allow-lists, attack list, privileges, listening
//! sockets, then load and attach), the daemon's event loop, and the detach at exit.

use anyhow::{Context as _, bail};

use crate::{
    cli::settings::{Settings, describe_trw},
    daemon::{self, Daemon, Outlets, control::ControlSocket, metrics},
    detect::Engine,
    kernel::{self, Attachment, LoadError},
    net::network::Network,
    output::{Blocking, Clock, Pipeline},
    policy::{
        allow::{self, AllowLists},
        block::Blocker,
        protect::BlockPolicy,
    },
};

/// Runs the detector until SIGINT or SIGTERM.
pub async fn run(settings: &Settings) -> anyhow::Result<()> {
    let network = Network::discover(&settings.ifaces, &settings.home_nets)?;
    // A bad rule is an error of the command line (exit status 2).
    let allow_lists = settings.allow.load()?;
    // Open the attack list before anything is loaded: an unwritable path fails at once.
    let attack_list = settings.open_attack_list()?;
    let outputs = settings.open_outputs()?;
    // A bad --fleet URL or sensor name is an error of the command line (exit status 2).
    let fleet_target = match &settings.fleet {
        Some(fleet) => {
            crate::fleet::keys::check_name(&settings.sensor_name)
                .map_err(|err| crate::cli::exit::UsageError(err.to_string()))?;
            Some(fleet.target()?)
        }
        None => None,
    };
    kernel::check_privileges()?;
    // Listen before anything is loaded: a port in use fails at once, nothing attached.
    let metrics_listener = settings.metrics_addr.map(metrics::bind).transpose()?;
    // Likewise the control socket of --block.
    let control = settings
        .block
        .map(|_| ControlSocket::bind(&settings.control_socket))
        .transpose()?;

    // Everything that can be wrong with the command line has been checked: from here on
    // the log speaks, the version first.
    log::info!("probe-detector {}", crate::VERSION);
    if network.default_iface {
        log::info!(
            "no --iface given: watching {}, the interface of the default route",
            network.ifaces.join(", ")
        );
    }
    if network.home_nets.is_empty() {
        log::warn!(
            "the attached interfaces have no addresses: every destination counts as ours (set --home-net)"
        );
    }
    log::info!("home nets: {}", network.describe_home_nets());
    if let Some(why) = network.home_nets_reason() {
        log::info!("{why}");
    }
    let config = settings.kernel_config(&network.home_nets);
    log::debug!("kernel maps: about {} KiB", config.map_bytes() / 1024);

    let mut ebpf = kernel::load(&config)?;
    // The early verdict looks up sockets at these addresses (see `kernel::set_local`).
    kernel::set_local(&mut ebpf, &network.own).context("cannot write our own addresses")?;
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
    let blocking = match settings.block {
        None => Blocking::Off,
        Some(block) => {
            let allowed: Vec<_> = allow_lists.sources.iter().copied().collect();
            let policy = BlockPolicy {
                ttl: block.ttl,
                block_spoofed: block.block_spoofed,
                never: network.never_block(&allowed),
            };
            log::info!(
                "blocking: confirmed scanners dropped for {} s, at most {} new a second and {} per /24 or /48; never blocked: {} allow-listed networks, our addresses, home nets, {} gateways, {} resolvers, {} neighbours (against forged frames), peers we connected to, loopback{}",
                policy.ttl.as_secs(),
                block.rate,
                block.prefix_cap,
                allowed.len(),
                network.gateways.len(),
                network.resolvers.len(),
                network.neighbours.len(),
                if policy.block_spoofed {
                    ""
                } else {
                    ", likely spoofed sources"
                }
            );
            let mut blocker = Blocker::new(&mut ebpf, policy, block.budget())
                .context("cannot set up blocking")?;
            if let Some(path) = &settings.block_state {
                restore_blocks(&mut blocker, path);
            }
            Blocking::Live(Box::new(blocker))
        }
    };
    if let Some(control) = &control {
        log::info!(
            "block list: `probe-detector block list` (control socket {})",
            control.path.display()
        );
    }
    let attachments = attach_all(&mut ebpf, settings, &network.ifaces)?;

    let trw_unit = settings.trw_unit();
    log::info!("sequential hypothesis test: {}", describe_trw(trw_unit));
    let engine = Engine::new(settings.engine_config(&network.home_nets));
    log::info!(
        "engine state: at most about {} MiB (--max-tracked {})",
        engine.bound() >> 20,
        engine.config().max_tracked
    );
    let mut pipeline = Pipeline::new(
        engine,
        settings.pipeline_config(Clock::Monotonic),
        attack_list,
        blocking,
        outputs,
    );
    // The first alert must not wait for first-time work: see `Pipeline::warm_up`.
    let ifindexes: Vec<u32> = network
        .ifaces
        .iter()
        .filter_map(|name| crate::net::iface::index_of(name).ok())
        .collect();
    pipeline.warm_up(&ifindexes);
    let fleet = match (&settings.fleet, fleet_target) {
        (Some(fleet), Some(target)) => {
            let stats = std::sync::Arc::new(crate::fleet::sensor::FleetStats::default());
            let (publisher, tap) = crate::fleet::sensor::Publisher::start(
                target.clone(),
                settings.sensor_name.clone(),
                fleet.rate,
                fleet.backlog,
                std::sync::Arc::clone(&stats),
            );
            pipeline.set_tap(tap);
            let blocks = settings.block.map(|_| {
                let (tx, rx) = tokio::sync::mpsc::channel(1024);
                crate::fleet::sensor::follow_blocks(
                    target.clone(),
                    tx,
                    std::sync::Arc::clone(&stats),
                );
                rx
            });
            log::info!(
                "fleet: sensor {} publishes evidence to {} (at most {} records a second){}",
                settings.sensor_name,
                target.shown(),
                fleet.rate,
                if blocks.is_some() {
                    "; the fleet's blocks are applied under this host's policy"
                } else {
                    ""
                }
            );
            Some(daemon::FleetLink {
                publisher,
                blocks,
                stats,
            })
        }
        _ => None,
    };
    let daemon = Daemon {
        ebpf: &mut ebpf,
        kernel: &config,
        pipeline,
        allow: &settings.allow,
        allow_lists,
        reader_gone: false,
        block_state: settings.block_state.clone(),
        network,
        fleet,
    };
    let outlets = Outlets {
        metrics: metrics_listener,
        control,
        status_interval: settings.status_interval,
    };
    let result = daemon.run(outlets).await;
    detach_all(&mut ebpf, attachments);
    daemon::log_counters(&ebpf, &config, log::Level::Info);
    result
}

/// Puts back the blocks of the state file that have time left and that the never-block
/// rules still allow; says what it did.
fn restore_blocks(blocker: &mut Blocker, path: &std::path::Path) {
    let saved = match crate::policy::block_state::load_state(path) {
        Ok(saved) => saved,
        Err(err) => {
            log::warn!(
                "block state {}: {err}: starting with no blocks",
                path.display()
            );
            return;
        }
    };
    let now_unix = crate::clock::unix_now_s();
    let now = crate::clock::monotonic_now();
    let mut restored = 0;
    for block in saved {
        let left = block.until_unix_s.saturating_sub(now_unix);
        if left == 0 {
            continue;
        }
        match blocker.restore(&block, std::time::Duration::from_secs(left), now) {
            Ok(()) => restored += 1,
            Err(err) => log::info!("block state: not restoring {}: {err}", block.addr),
        }
    }
    log::info!("block state {}: {restored} blocks restored", path.display());
}

/// Attaches both programs to every interface; on a failure, detaches what was attached.
fn attach_all(
    ebpf: &mut aya::Ebpf,
    settings: &Settings,
    ifaces: &[String],
) -> anyhow::Result<Vec<Attachment>> {
    let mut attachments = Vec::new();
    for name in ifaces {
        let mut attached = kernel::attach(ebpf, name, settings.xdp_mode);
        if settings.force && matches!(attached, Err(LoadError::Occupied { .. })) {
            log::warn!("--force: removing the XDP program attached to {name}");
            if kernel::remove_xdp(name)? {
                attached = kernel::attach(ebpf, name, settings.xdp_mode);
            } else {
                detach_all(ebpf, attachments);
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
                detach_all(ebpf, attachments);
                return Err(err.into());
            }
        }
    }
    Ok(attachments)
}

fn detach_all(ebpf: &mut aya::Ebpf, attachments: Vec<Attachment>) {
    for attachment in attachments {
        let iface = attachment.iface.clone();
        match kernel::detach(ebpf, attachment) {
            Ok(()) => log::info!("detached from {iface}"),
            Err(err) => log::error!("{err}"),
        }
    }
}

/// Forwards the eBPF programs' log records (built with PROBE_EBPF_TRACE=1) to our log.
fn init_ebpf_log(ebpf: &mut aya::Ebpf) -> anyhow::Result<()> {
    use tokio::io::{Interest, unix::AsyncFd};
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
