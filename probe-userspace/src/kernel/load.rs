//! Loading the eBPF object: its sizes and load-time globals ([`KernelConfig`]), the
//! kernel's refusals worded for the operator ([`LoadError`]), and the verified, unattached
//! programs.

use std::{io, time::Duration};

use aya::{Ebpf, EbpfError, EbpfLoader, programs::ProgramError};
use probe_common::{
    BLOCK_BURST_GLOBAL, BLOCK_ON_GLOBAL, BLOCK_RATE_GLOBAL, BLOCK_TTL_GLOBAL,
    CALLBACK_EPOCHS_GLOBAL, CONTACTED_MAP, CROWD_EPOCHS_GLOBAL, CROWD_EVENTS_GLOBAL,
    CROWD_PORTS_GLOBAL, CROWD_SLOTS, EVENTS_BYTES, EVENTS_MAP, EXPIRE_AFTER_GLOBAL, EXPIRE_PROGRAM,
    FLEET_ON_GLOBAL, HASH_SEED_GLOBAL, HELD_SLOTS, HOLD_ON_GLOBAL, OURS_ENTRIES, OURS_MAP,
    OURS_MASK_GLOBAL, OUTCOMES_ENTRIES, OUTCOMES_MAP, PENDING_ENTRIES, PENDING_MAP,
    PENDING_MASK_GLOBAL, PENDING_REGIONS_MAP, SETTLE_SUCCESSES_GLOBAL, SUMMARIES_ENTRIES,
    SUMMARIZE_GLOBAL, SUSPECT_MASK_GLOBAL, SUSPECT_SETS, SUSPECT_WAYS, SUSPECTS_MAP,
    SWEEP_CHUNK_GLOBAL, TC_PROGRAM, TIMEOUT_NS, WAKEUP_BYTES_GLOBAL, WAKEUP_GAP_GLOBAL,
    WALK_IDLE_GLOBAL, XDP_PROGRAM,
};

use super::run::{expire_program, tc_program, xdp_program};
use crate::net::cidr::Cidr;

/// Bytes one event takes in the ring: the record and the ring's 8-byte header.
pub const RING_RECORD_BYTES: u32 = size_of::<probe_common::ProbeEvent>() as u32 + 8;

/// Sizes and settings fixed when the object is loaded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelConfig {
    /// Slots of the pending-attempt table (a power of two), 64 B each.
    pub pending_slots: u32,
    /// Slots of the table of our own outbound attempts (a power of two), 4 B each.
    pub ours_slots: u32,
    /// Entries of the reported-outcome LRU hash, about 112 B each.
    pub outcomes_entries: u32,
    /// Bytes of the event ring buffer (a power of two, at least a page).
    pub ringbuf_bytes: u32,
    /// How long an attempt may wait for an answer before it counts as unanswered (measured
    /// in expiry sweeps, see [`KernelConfig::sweep_interval`]).
    pub timeout: Duration,
    /// How long a host our hosts contacted may call back without being reported (active
    /// FTP data, chat, media); measured in sweeps too.
    pub callback_window: Duration,
    /// The prefixes that are "ours" at start (rewritten while running, see
    /// [`super::set_home_nets`]); empty = every address.
    pub home_nets: Vec<Cidr>,
    /// Least time between two wakeups of the reader by a new event; `None`: events wake it
    /// only when a quarter of the ring is unread (the drain timer finds the others).
    pub wakeup_gap: Option<Duration>,
    /// Drop the frames of sources in the `BLOCKED` map (`--block`), and block a source on
    /// the kernel's verdict; off, the map is never read.
    pub block: bool,
    /// How long a block made on the kernel's verdict lasts (`--block-ttl`).
    pub block_ttl: Duration,
    /// New blocks a second the kernel may make on its verdicts, bursts of ten times that
    /// (`--block-rate`).
    pub block_rate: u32,
    /// Sets of the kernel's per-source sequential test (`SUSPECTS`, a power of two), four
    /// sources of 8 B each.
    pub suspect_sets: u32,
    /// Count the further outcomes of sources the kernel has decided on into `SUMMARIES`
    /// rather than sending each through the ring buffer (off with `--probes`, which
    /// writes every outcome with its own time and source port).
    pub summarize: bool,
    /// Hold a source's first failure until its second (`HELD`), so that sources of one
    /// probe (a forged flood's) cost userspace nothing; off in tests that want each event.
    pub hold: bool,
    /// Give no verdict while a first TCP success of the source waits to be settled by the
    /// client's reset or the sweep (`--settle-successes`).
    pub settle_successes: bool,
    /// Copy each held first failure to the `FLEET` ring (`--fleet`): the fleet's evidence
    /// of sources that fail once on this host.
    pub fleet: bool,
    /// Distinct ports of one-probe failures on one target, within `crowd_window`, from
    /// which its one-probe failures are sent at once (the crowd detector's evidence);
    /// `None`: never (the spread-scan detector is off).
    pub crowd_ports: Option<u32>,
    /// The crowd rule's window (`--spread-window`).
    pub crowd_window: Duration,
}

impl Default for KernelConfig {
    fn default() -> Self {
        Self {
            pending_slots: PENDING_ENTRIES,
            ours_slots: OURS_ENTRIES,
            outcomes_entries: OUTCOMES_ENTRIES,
            ringbuf_bytes: EVENTS_BYTES,
            timeout: Duration::from_nanos(TIMEOUT_NS),
            callback_window: Duration::from_secs(60),
            home_nets: Vec::new(),
            wakeup_gap: Some(Duration::from_millis(1)),
            block: false,
            block_ttl: Duration::from_secs(3600),
            block_rate: 5,
            suspect_sets: SUSPECT_SETS,
            summarize: true,
            hold: true,
            settle_successes: false,
            fleet: false,
            crowd_ports: Some(5),
            crowd_window: Duration::from_secs(10),
        }
    }
}

impl KernelConfig {
    /// How often userspace runs the expiry program: a third of the timeout, between 100 ms
    /// and 1 s.
    pub fn sweep_interval(&self) -> Duration {
        (self.timeout / 3).clamp(Duration::from_millis(100), Duration::from_secs(1))
    }

    /// Sweeps after which an attempt is unanswered: the timeout in sweep intervals, rounded
    /// up (an attempt is reported between that many and one more intervals after it came).
    pub fn expire_after_sweeps(&self) -> u64 {
        let interval = self.sweep_interval().as_nanos().max(1);
        (self.timeout.as_nanos().div_ceil(interval) as u64).max(1)
    }

    /// Slots one run of the expiry program covers: at most half the records the ring
    /// buffer holds (64 bytes each with its header), so a chunk whose every slot expires
    /// still fits.
    pub fn sweep_chunk(&self) -> u32 {
        (self.ringbuf_bytes / RING_RECORD_BYTES / 2).clamp(64, self.pending_slots)
    }

    /// Kernel memory the maps of this configuration take, roughly, in bytes (the per-CPU
    /// counters aside).
    pub fn map_bytes(&self) -> u64 {
        u64::from(self.pending_slots) * 64
            // OURS (4 B a slot) and CONTACTED (8 B a slot) have the same slot count.
            + u64::from(self.ours_slots) * (4 + 8)
            + u64::from(self.outcomes_entries) * 112
            + u64::from(self.ringbuf_bytes)
            + u64::from(self.suspect_sets) * 8 * SUSPECT_WAYS as u64
            // SUMMARIES and SUMMARIES_ODD: key, value and the hash's element header,
            // preallocated.
            + 2 * u64::from(SUMMARIES_ENTRIES) * 140
            + u64::from(HELD_SLOTS) * 72
            + u64::from(CROWD_SLOTS) * 16
    }

    /// Sweeps after which an idle source's walk in the kernel starts over: the userspace
    /// test's 10 minutes.
    pub fn walk_idle_sweeps(&self) -> u16 {
        let interval = self.sweep_interval().as_nanos().max(1);
        (Duration::from_secs(600).as_nanos() / interval).min(u128::from(u16::MAX)) as u16
    }
}

/// The eBPF object built from probe-ebpf by build.rs (empty when built with
/// `AYA_BUILD_SKIP=1`, e.g. for a quick `cargo clippy`).
pub static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/probe-ebpf"));

/// A failure to load or attach, worded for the operator.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The binary carries no eBPF object.
    #[error(
        "this binary carries no eBPF object (it was built with AYA_BUILD_SKIP=1); rebuild it with `cargo xtask build`"
    )]
    NoObject,
    /// The kernel refused: missing privileges.
    #[error(
        "the kernel refused to {what}: {source} (run as root, or with CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON)"
    )]
    Permission {
        /// What we tried.
        what: String,
        /// The kernel's answer.
        source: io::Error,
    },
    /// The object could not be parsed or its maps created.
    #[error("cannot load the eBPF object: {0}")]
    Object(#[source] EbpfError),
    /// The kernel configuration is unusable.
    #[error("invalid kernel configuration: {0}")]
    Config(String),
    /// The object lacks a program or map this binary expects.
    #[error("the eBPF object has no {0}")]
    Missing(&'static str),
    /// The verifier or the kernel rejected a program.
    #[error("cannot load program {name}: {source}")]
    Program {
        /// Program name.
        name: &'static str,
        /// The error, with the verifier log when there is one.
        source: ProgramError,
    },
    /// Attaching to an interface failed.
    #[error("cannot attach {what} to {iface}: {reason}")]
    Attach {
        /// Which hook.
        what: &'static str,
        /// Which interface.
        iface: String,
        /// Why, including a hint when one applies.
        reason: String,
    },
    /// Another XDP program is attached to the interface.
    #[error(
        "cannot attach XDP to {iface}: another XDP program is already attached ({reason}); it is left alone (see `ip link show`; --force replaces it)"
    )]
    Occupied {
        /// Which interface.
        iface: String,
        /// What the kernel said.
        reason: String,
    },
}

/// Loads the embedded object into the kernel with its programs verified, not attached.
pub fn load(config: &KernelConfig) -> Result<Ebpf, LoadError> {
    load_object(EBPF_OBJECT, config)
}

/// Loads an object into the kernel with its programs verified, not attached.
pub fn load_object(object: &[u8], config: &KernelConfig) -> Result<Ebpf, LoadError> {
    if object.is_empty() {
        return Err(LoadError::NoObject);
    }
    for (what, slots) in [
        ("pending", config.pending_slots),
        ("ours", config.ours_slots),
        ("suspect", config.suspect_sets),
    ] {
        if !slots.is_power_of_two() {
            return Err(LoadError::Config(format!(
                "{what} slots must be a power of two, not {slots}"
            )));
        }
    }
    let page = 4096;
    if config.ringbuf_bytes < page || !config.ringbuf_bytes.is_power_of_two() {
        return Err(LoadError::Config(format!(
            "the ring buffer must be a power of two of at least {page} bytes, not {}",
            config.ringbuf_bytes
        )));
    }
    let pending_mask = config.pending_slots - 1;
    let suspect_mask = config.suspect_sets - 1;
    let walk_idle = config.walk_idle_sweeps();
    let ours_mask = config.ours_slots - 1;
    let expire_after = config.expire_after_sweeps();
    let hash_seed = random_seed()?;
    let sweep_chunk = config.sweep_chunk();
    let callback_epochs =
        (config.callback_window.as_nanos() / config.sweep_interval().as_nanos().max(1)) as u64;
    let wakeup_bytes = u64::from(config.ringbuf_bytes / 4);
    let block_on = u32::from(config.block);
    let summarize = u32::from(config.summarize);
    let hold = u32::from(config.hold);
    let settle_successes = u32::from(config.settle_successes);
    let fleet = u32::from(config.fleet);
    let crowd_ports = config.crowd_ports.unwrap_or(u32::MAX);
    let crowd_epochs =
        u16::try_from(config.crowd_window.as_nanos() / config.sweep_interval().as_nanos().max(1))
            .unwrap_or(u16::MAX)
            .max(1);
    let crowd_events: u16 = 256;
    let block_ttl = u64::try_from(config.block_ttl.as_nanos()).unwrap_or(u64::MAX);
    let block_rate = u64::from(config.block_rate) * 1000;
    let block_burst = block_rate * 10;
    let wakeup_gap = config.wakeup_gap.map_or(u64::MAX, |gap| {
        u64::try_from(gap.as_nanos()).unwrap_or(u64::MAX)
    });
    let mut ebpf = EbpfLoader::new()
        .map_max_entries(PENDING_MAP, config.pending_slots)
        .map_max_entries(
            PENDING_REGIONS_MAP,
            probe_common::pending_region_entries(config.pending_slots),
        )
        .map_max_entries(OURS_MAP, config.ours_slots)
        .map_max_entries(CONTACTED_MAP, config.ours_slots)
        .map_max_entries(OUTCOMES_MAP, config.outcomes_entries)
        .map_max_entries(EVENTS_MAP, config.ringbuf_bytes)
        .map_max_entries(SUSPECTS_MAP, config.suspect_sets)
        .override_global(SUSPECT_MASK_GLOBAL, &suspect_mask, true)
        .override_global(WALK_IDLE_GLOBAL, &walk_idle, true)
        .override_global(PENDING_MASK_GLOBAL, &pending_mask, true)
        .override_global(OURS_MASK_GLOBAL, &ours_mask, true)
        .override_global(EXPIRE_AFTER_GLOBAL, &expire_after, true)
        .override_global(HASH_SEED_GLOBAL, &hash_seed, true)
        .override_global(SWEEP_CHUNK_GLOBAL, &sweep_chunk, true)
        .override_global(CALLBACK_EPOCHS_GLOBAL, &callback_epochs, true)
        .override_global(WAKEUP_BYTES_GLOBAL, &wakeup_bytes, true)
        .override_global(WAKEUP_GAP_GLOBAL, &wakeup_gap, true)
        .override_global(BLOCK_ON_GLOBAL, &block_on, true)
        .override_global(SUMMARIZE_GLOBAL, &summarize, true)
        .override_global(HOLD_ON_GLOBAL, &hold, true)
        .override_global(SETTLE_SUCCESSES_GLOBAL, &settle_successes, true)
        .override_global(FLEET_ON_GLOBAL, &fleet, true)
        .override_global(CROWD_PORTS_GLOBAL, &crowd_ports, true)
        .override_global(CROWD_EPOCHS_GLOBAL, &crowd_epochs, true)
        .override_global(CROWD_EVENTS_GLOBAL, &crowd_events, true)
        .override_global(BLOCK_TTL_GLOBAL, &block_ttl, true)
        .override_global(BLOCK_RATE_GLOBAL, &block_rate, true)
        .override_global(BLOCK_BURST_GLOBAL, &block_burst, true)
        .load(object)
        .map_err(|err| match permission_error(&err) {
            Some(source) => LoadError::Permission {
                what: "create the eBPF maps".into(),
                source,
            },
            None => LoadError::Object(err),
        })?;
    xdp_program(&mut ebpf)?
        .load()
        .map_err(|source| program_error(XDP_PROGRAM, source))?;
    tc_program(&mut ebpf)?
        .load()
        .map_err(|source| program_error(TC_PROGRAM, source))?;
    expire_program(&mut ebpf)?
        .load()
        .map_err(|source| program_error(EXPIRE_PROGRAM, source))?;
    super::set_home_nets(&mut ebpf, &config.home_nets)?;
    Ok(ebpf)
}

/// A random key for the kernel's flow hash, from the kernel's CSPRNG.
fn random_seed() -> Result<u64, LoadError> {
    let mut seed = [0u8; 8];
    // SAFETY: the buffer is valid and writable for its length.
    let got = unsafe { libc::getrandom(seed.as_mut_ptr().cast(), seed.len(), 0) };
    if got != seed.len() as isize {
        return Err(LoadError::Config(format!(
            "cannot get a random hash seed: {}",
            io::Error::last_os_error()
        )));
    }
    Ok(u64::from_ne_bytes(seed))
}

fn program_error(name: &'static str, source: ProgramError) -> LoadError {
    if let ProgramError::LoadError { io_error, .. } = &source
        && io_error.raw_os_error() == Some(libc::EPERM)
    {
        return LoadError::Permission {
            what: format!("load program {name}"),
            source: io::Error::from_raw_os_error(libc::EPERM),
        };
    }
    LoadError::Program { name, source }
}

/// The EPERM inside a load error, if that is what it is.
fn permission_error(err: &EbpfError) -> Option<io::Error> {
    (os_error(err) == Some(libc::EPERM)).then(|| io::Error::from_raw_os_error(libc::EPERM))
}

impl LoadError {
    /// The operating system's error number behind this error, if there is one.
    pub fn os_error(&self) -> Option<i32> {
        os_error(self)
    }
}

/// The innermost OS error code in an error's chain of sources.
pub(super) fn os_error(err: &(dyn std::error::Error + 'static)) -> Option<i32> {
    let mut code = None;
    let mut source = Some(err);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            code = io.raw_os_error().or(code);
        }
        source = e.source();
    }
    code
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweeps_follow_the_timeout() {
        let at = |ms| KernelConfig {
            timeout: Duration::from_millis(ms),
            ..KernelConfig::default()
        };
        // Default: 3 s, swept every second, unanswered after 3 sweeps (3 to 4 s).
        assert_eq!(
            (at(3000).sweep_interval(), at(3000).expire_after_sweeps()),
            (Duration::from_secs(1), 3)
        );
        // Short timeouts sweep at most every 100 ms.
        assert_eq!(
            (at(50).sweep_interval(), at(50).expire_after_sweeps()),
            (Duration::from_millis(100), 1)
        );
        assert_eq!(at(450).expire_after_sweeps(), 3);
        // Long ones at least every second.
        assert_eq!(
            (
                at(60_000).sweep_interval(),
                at(60_000).expire_after_sweeps()
            ),
            (Duration::from_secs(1), 60)
        );
    }
}
