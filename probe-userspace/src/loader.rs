//! The eBPF object: loading it into the kernel, attaching its XDP (ingress) and TC (egress)
//! programs to interfaces, detaching them, and reading its counters.

use std::{ffi::CString, io, time::Duration};

use aya::{
    Ebpf, EbpfError, EbpfLoader,
    maps::PerCpuArray,
    programs::{
        ProgramError, SchedClassifier, TcAttachType, TestRun as _, TestRunOptions, Xdp, XdpMode,
        tc::{self, SchedClassifierLinkId, TcError},
        xdp::XdpLinkId,
    },
};
use probe_common::{
    BLOCK_ON_GLOBAL, CALLBACK_EPOCHS_GLOBAL, CONTACTED_MAP, COUNTERS_MAP, Counter, EVENTS_BYTES,
    EVENTS_MAP, EXPIRE_AFTER_GLOBAL, EXPIRE_PROGRAM, HASH_SEED_GLOBAL, HOME_NET_COUNT_GLOBAL,
    HOME_NETS_GLOBAL, HomeNet, MAX_HOME_NETS, OURS_ENTRIES, OURS_MAP, OURS_MASK_GLOBAL,
    OUTCOMES_ENTRIES, OUTCOMES_MAP, PENDING_ENTRIES, PENDING_MAP, PENDING_MASK_GLOBAL,
    PENDING_STATS_CURSOR, PENDING_STATS_LIVE, PENDING_STATS_MAP, SWEEP_CHUNK_GLOBAL, TC_PROGRAM,
    TIMEOUT_NS, WAKEUP_BYTES_GLOBAL, WAKEUP_GAP_GLOBAL, XDP_PROGRAM,
};

/// Sizes and settings fixed when the object is loaded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelConfig {
    /// Slots of the pending-attempt table (a power of two), 56 B each.
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
    /// The prefixes that are "ours" (at most [`MAX_HOME_NETS`]); empty = every address.
    pub home_nets: Vec<HomeNet>,
    /// Least time between two wakeups of the reader by a new event; `None`: events wake it
    /// only when a quarter of the ring is unread (the drain timer finds the others).
    pub wakeup_gap: Option<Duration>,
    /// Drop the frames of sources in the `BLOCKED` map (`--block`); off, the map is never
    /// read.
    pub block: bool,
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
        (self.ringbuf_bytes / 64 / 2).clamp(64, self.pending_slots)
    }

    /// Kernel memory the maps of this configuration take, roughly, in bytes (the per-CPU
    /// counters aside).
    pub fn map_bytes(&self) -> u64 {
        u64::from(self.pending_slots) * 56
            // OURS (4 B a slot) and CONTACTED (8 B a slot) have the same slot count.
            + u64::from(self.ours_slots) * (4 + 8)
            + u64::from(self.outcomes_entries) * 112
            + u64::from(self.ringbuf_bytes)
    }
}

/// The eBPF object built from probe-ebpf by build.rs (empty when built with
/// `AYA_BUILD_SKIP=1`, e.g. for a quick `cargo clippy`).
pub static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/probe-ebpf"));

/// How to attach the XDP program.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum XdpModeArg {
    /// Native (driver) mode, falling back to generic (skb) mode where the driver lacks XDP.
    Auto,
    /// Native (driver) mode only: fastest, needs driver support.
    Native,
    /// Generic (skb) mode: works on every interface, after the kernel allocated the skb.
    Skb,
}

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

/// The programs attached to one interface.
#[derive(Debug)]
pub struct Attachment {
    /// Interface name.
    pub iface: String,
    /// The XDP mode that took.
    pub xdp_mode: &'static str,
    xdp: XdpLinkId,
    tc: SchedClassifierLinkId,
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
    if config.home_nets.len() > MAX_HOME_NETS {
        return Err(LoadError::Config(format!(
            "{} home nets given, at most {MAX_HOME_NETS} are supported",
            config.home_nets.len()
        )));
    }
    for (what, slots) in [
        ("pending", config.pending_slots),
        ("ours", config.ours_slots),
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
    let mut home_nets = [HomeNet::default(); MAX_HOME_NETS];
    home_nets[..config.home_nets.len()].copy_from_slice(&config.home_nets);
    let pending_mask = config.pending_slots - 1;
    let ours_mask = config.ours_slots - 1;
    let expire_after = config.expire_after_sweeps();
    let hash_seed = random_seed()?;
    let sweep_chunk = config.sweep_chunk();
    let callback_epochs =
        (config.callback_window.as_nanos() / config.sweep_interval().as_nanos().max(1)) as u64;
    let home_net_count = config.home_nets.len() as u32;
    let wakeup_bytes = u64::from(config.ringbuf_bytes / 4);
    let block_on = u32::from(config.block);
    let wakeup_gap = config.wakeup_gap.map_or(u64::MAX, |gap| {
        u64::try_from(gap.as_nanos()).unwrap_or(u64::MAX)
    });
    let mut ebpf = EbpfLoader::new()
        .map_max_entries(PENDING_MAP, config.pending_slots)
        .map_max_entries(OURS_MAP, config.ours_slots)
        .map_max_entries(CONTACTED_MAP, config.ours_slots)
        .map_max_entries(OUTCOMES_MAP, config.outcomes_entries)
        .map_max_entries(EVENTS_MAP, config.ringbuf_bytes)
        .override_global(PENDING_MASK_GLOBAL, &pending_mask, true)
        .override_global(OURS_MASK_GLOBAL, &ours_mask, true)
        .override_global(EXPIRE_AFTER_GLOBAL, &expire_after, true)
        .override_global(HASH_SEED_GLOBAL, &hash_seed, true)
        .override_global(SWEEP_CHUNK_GLOBAL, &sweep_chunk, true)
        .override_global(CALLBACK_EPOCHS_GLOBAL, &callback_epochs, true)
        .override_global(HOME_NET_COUNT_GLOBAL, &home_net_count, true)
        .override_global(HOME_NETS_GLOBAL, &home_nets[..], true)
        .override_global(WAKEUP_BYTES_GLOBAL, &wakeup_bytes, true)
        .override_global(WAKEUP_GAP_GLOBAL, &wakeup_gap, true)
        .override_global(BLOCK_ON_GLOBAL, &block_on, true)
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

/// The expiry program of a loaded object.
pub fn expire_program(ebpf: &mut Ebpf) -> Result<&mut Xdp, LoadError> {
    ebpf.program_mut(EXPIRE_PROGRAM)
        .and_then(|p| p.try_into().ok())
        .ok_or(LoadError::Missing("XDP program probe_expire"))
}

/// Runs one whole expiry sweep: every pending attempt older than the timeout is reported
/// as unanswered (through the ring buffer) and its slot freed. The sweep runs in chunks;
/// `between` is called after each, to drain the ring buffer, so that even a table full of
/// expiring attempts loses no record. The walk happens in the kernel: one syscall per chunk
/// and a few tens of nanoseconds per slot.
pub fn expire_with(ebpf: &mut Ebpf, mut between: impl FnMut(&mut Ebpf)) -> Result<(), LoadError> {
    // BPF_PROG_TEST_RUN wants at least an Ethernet header of input; the program ignores it.
    let frame = [0u8; 14];
    loop {
        expire_program(ebpf)?
            .test_run(TestRunOptions {
                data_in: Some(&frame),
                ..Default::default()
            })
            .map_err(|source| LoadError::Program {
                name: EXPIRE_PROGRAM,
                source,
            })?;
        between(ebpf);
        if pending_stat(ebpf, PENDING_STATS_CURSOR)? == 0 {
            return Ok(());
        }
    }
}

/// One whole expiry sweep, with nothing done between its chunks.
pub fn expire(ebpf: &mut Ebpf) -> Result<(), LoadError> {
    expire_with(ebpf, |_| {})
}

/// One value of the `PENDING_STATS` array (an index from probe_common).
pub fn pending_stat(ebpf: &Ebpf, index: u32) -> Result<u64, LoadError> {
    let map = ebpf
        .map(PENDING_STATS_MAP)
        .ok_or(LoadError::Missing("PENDING_STATS map"))?;
    let stats = aya::maps::Array::<_, u64>::try_from(map)
        .map_err(|_| LoadError::Missing("PENDING_STATS array"))?;
    Ok(stats.get(&index, 0).unwrap_or(0))
}

/// The XDP program of a loaded object.
pub fn xdp_program(ebpf: &mut Ebpf) -> Result<&mut Xdp, LoadError> {
    ebpf.program_mut(XDP_PROGRAM)
        .and_then(|p| p.try_into().ok())
        .ok_or(LoadError::Missing("XDP program probe_ingress"))
}

/// The TC program of a loaded object.
pub fn tc_program(ebpf: &mut Ebpf) -> Result<&mut SchedClassifier, LoadError> {
    ebpf.program_mut(TC_PROGRAM)
        .and_then(|p| p.try_into().ok())
        .ok_or(LoadError::Missing("TC program probe_egress"))
}

/// Runs `frame` once through the XDP program (`inbound`) or the TC program (outbound)
/// with BPF_PROG_TEST_RUN, nothing attached; returns the program's verdict.
pub fn test_run(ebpf: &mut Ebpf, frame: &[u8], inbound: bool) -> Result<u32, LoadError> {
    let options = TestRunOptions {
        data_in: Some(frame),
        ..Default::default()
    };
    let (name, result) = if inbound {
        (XDP_PROGRAM, xdp_program(ebpf)?.test_run(options))
    } else {
        (TC_PROGRAM, tc_program(ebpf)?.test_run(options))
    };
    result
        .map(|r| r.return_value)
        .map_err(|source| LoadError::Program { name, source })
}

/// Attaches both programs to `iface`: XDP at ingress in the requested mode (`Auto` tries
/// native, then generic, and logs which took), TC at egress (TCX on kernels >= 6.6).
/// On failure nothing stays attached to `iface`.
pub fn attach(ebpf: &mut Ebpf, iface: &str, mode: XdpModeArg) -> Result<Attachment, LoadError> {
    let c_iface = CString::new(iface).map_err(|_| LoadError::Attach {
        what: "XDP",
        iface: iface.to_owned(),
        reason: "the name contains a NUL byte".into(),
    })?;
    let attach_error = |what: &'static str, err: ProgramError| {
        if matches!(os_error(&err), Some(libc::EBUSY | libc::EEXIST)) {
            return LoadError::Occupied {
                iface: iface.to_owned(),
                reason: err.to_string(),
            };
        }
        LoadError::Attach {
            what,
            iface: iface.to_owned(),
            reason: explain_attach_error(&err),
        }
    };
    let xdp = xdp_program(ebpf)?;
    let (xdp_link, xdp_mode) = match mode {
        XdpModeArg::Native => (
            xdp.attach(&c_iface, XdpMode::Driver)
                .map_err(|e| attach_error("XDP (native)", e))?,
            "native",
        ),
        XdpModeArg::Skb => (
            xdp.attach(&c_iface, XdpMode::Skb)
                .map_err(|e| attach_error("XDP (skb)", e))?,
            "skb",
        ),
        XdpModeArg::Auto => match xdp.attach(&c_iface, XdpMode::Driver) {
            Ok(link) => (link, "native"),
            // Somebody else's program is there: another mode would not change that.
            Err(err) if matches!(os_error(&err), Some(libc::EBUSY | libc::EEXIST)) => {
                return Err(attach_error("XDP", err));
            }
            Err(native_err) => {
                log::info!(
                    "{iface}: native XDP not available ({}); falling back to generic (skb) mode",
                    explain_attach_error(&native_err)
                );
                let link = xdp
                    .attach(&c_iface, XdpMode::Skb)
                    .map_err(|e| attach_error("XDP (skb)", e))?;
                (link, "skb")
            }
        },
    };
    let tc_link = match tc_program(ebpf)?.attach(&c_iface, TcAttachType::Egress) {
        Ok(link) => link,
        Err(err) => {
            let err = attach_error("TC egress", err);
            // Leave nothing behind on this interface.
            if let Ok(xdp) = xdp_program(ebpf) {
                let _ = xdp.detach(xdp_link);
            }
            return Err(err);
        }
    };
    Ok(Attachment {
        iface: iface.to_owned(),
        xdp_mode,
        xdp: xdp_link,
        tc: tc_link,
    })
}

/// Detaches both programs of one attachment. Both are tried even if one fails.
pub fn detach(ebpf: &mut Ebpf, attachment: Attachment) -> Result<(), LoadError> {
    let Attachment { iface, xdp, tc, .. } = attachment;
    let xdp_result = xdp_program(ebpf)?.detach(xdp);
    let tc_result = tc_program(ebpf)?.detach(tc);
    for (what, result) in [("XDP", xdp_result), ("TC egress", tc_result)] {
        result.map_err(|err| LoadError::Attach {
            what,
            iface: iface.clone(),
            reason: format!("detach failed: {err}"),
        })?;
    }
    Ok(())
}

/// How often the kernel has seen `probe`'s outcome (1 + its repeats), from the outcome
/// table; `None` when the entry is gone (evicted) or the outcome is a success.
pub fn outcome_count(ebpf: &Ebpf, probe: &crate::event::Probe) -> Option<u64> {
    let map = ebpf.map(OUTCOMES_MAP)?;
    let table = aya::maps::HashMap::<_, probe_common::OutcomeKey, u64>::try_from(map).ok()?;
    let mapped = |ip: std::net::IpAddr| match ip {
        std::net::IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
        std::net::IpAddr::V6(a) => a.octets(),
    };
    let key = probe_common::OutcomeKey {
        src_addr: mapped(probe.src),
        dst_addr: mapped(probe.dst),
        dst_port: probe.dst_port,
        proto: probe.proto,
        probe: probe.probe as u8,
        outcome: probe.outcome as u8,
        _pad: [0; 11],
    };
    table.get(&key, 0).ok()
}

/// (live slots, total slots) of the pending table as of the last expiry sweep.
pub fn pending_occupancy(ebpf: &Ebpf) -> Result<(u64, u64), LoadError> {
    let live = pending_stat(ebpf, PENDING_STATS_LIVE)?;
    let slots = ebpf
        .map(PENDING_MAP)
        .map(|m| {
            aya::maps::Array::<_, probe_common::Pending>::try_from(m)
                .map_or(0, |a| u64::from(a.len()))
        })
        .unwrap_or(0);
    Ok((live, slots))
}

/// The kernel counters, summed over CPUs, in [`Counter`] order.
pub fn counters(ebpf: &Ebpf) -> Result<Vec<(Counter, u64)>, LoadError> {
    let map = ebpf
        .map(COUNTERS_MAP)
        .ok_or(LoadError::Missing("COUNTERS map"))?;
    let array = PerCpuArray::<_, u64>::try_from(map)
        .map_err(|_| LoadError::Missing("per-CPU COUNTERS map"))?;
    Ok(Counter::ALL
        .iter()
        .map(|&counter| {
            let total = array
                .get(&(counter as u32), 0)
                .map(|values| values.iter().sum())
                .unwrap_or(0);
            (counter, total)
        })
        .collect())
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

/// `probe-detector detach`: removes what a crashed probe-detector may have left on
/// `iface`, and nothing else. Leftovers exist only where the kernel has no bpf_links for
/// them (XDP before 5.9, TC egress before TCX in 6.6): there aya attaches through netlink,
/// and a netlink attachment outlives its process. Returns one line per finding.
pub fn detach_leftovers(iface: &str) -> Result<Vec<String>, LoadError> {
    let c_iface = CString::new(iface).map_err(|_| LoadError::Attach {
        what: "detach",
        iface: iface.to_owned(),
        reason: "the interface name contains a NUL byte".into(),
    })?;
    let mut found = Vec::new();
    match tc::qdisc_detach_program(&c_iface, TcAttachType::Egress.into(), TC_PROGRAM) {
        Ok(()) => found.push(format!(
            "{iface}: removed a TC egress filter of ours ({TC_PROGRAM})"
        )),
        Err(TcError::IoError(err)) if err.kind() == io::ErrorKind::NotFound => {
            found.push(format!("{iface}: no TC egress filter of ours"));
        }
        // No clsact qdisc (or no such parent): nothing can be attached there.
        Err(err) if os_error(&err).is_some_and(|e| e == libc::EINVAL || e == libc::ENOENT) => {
            found.push(format!("{iface}: no TC egress filter of ours"));
        }
        Err(err) => {
            return Err(LoadError::Attach {
                what: "TC egress (detach)",
                iface: iface.to_owned(),
                reason: err.to_string(),
            });
        }
    }
    found.push(detach_xdp(iface)?);
    Ok(found)
}

/// Runs `ip ARGS` (iproute2) for work on `iface`.
fn ip(iface: &str, what: &'static str, args: &[&str]) -> Result<std::process::Output, LoadError> {
    std::process::Command::new("ip")
        .args(args)
        .output()
        .map_err(|err| LoadError::Attach {
            what,
            iface: iface.to_owned(),
            reason: format!("cannot run ip (iproute2): {err}"),
        })
}

/// `--force`: removes whatever XDP program is attached to `iface` through netlink; true
/// when the interface is free afterwards (a program held by another process's bpf_link
/// cannot be removed from here).
pub fn remove_xdp(iface: &str) -> Result<bool, LoadError> {
    for mode in ["xdpgeneric", "xdpdrv"] {
        ip(
            iface,
            "XDP (remove)",
            &["link", "set", "dev", iface, mode, "off"],
        )?;
    }
    let shown = ip(iface, "XDP (remove)", &["-d", "link", "show", "dev", iface])?;
    Ok(!String::from_utf8_lossy(&shown.stdout).contains("prog/xdp"))
}

/// The XDP half of [`detach_leftovers`]: the program attached to `iface` (from `ip -d link`),
/// removed through netlink if it is ours; one that is not ours is left alone, and a bpf_link
/// (a running probe-detector) cannot be removed this way.
fn detach_xdp(iface: &str) -> Result<String, LoadError> {
    let shown = ip(iface, "XDP (detach)", &["-d", "link", "show", "dev", iface])?;
    let text = String::from_utf8_lossy(&shown.stdout);
    let Some(id) = text
        .split_whitespace()
        .skip_while(|w| !w.starts_with("prog/xdp"))
        .nth(2)
        .and_then(|id| id.parse::<u32>().ok())
    else {
        return Ok(format!("{iface}: no XDP program attached"));
    };
    let name = aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .find(|p| p.id() == id)
        .and_then(|p| p.name_as_str().map(str::to_owned))
        .unwrap_or_default();
    if name != XDP_PROGRAM {
        return Ok(format!(
            "{iface}: an XDP program that is not ours ({name:?}, id {id}) is attached: left alone"
        ));
    }
    if !remove_xdp(iface)? {
        return Ok(format!(
            "{iface}: our XDP program (id {id}) is held by a bpf_link: a probe-detector still runs there; stop it instead"
        ));
    }
    Ok(format!("{iface}: removed our XDP program (id {id})"))
}

/// The innermost OS error code in an error's chain of sources.
fn os_error(err: &(dyn std::error::Error + 'static)) -> Option<i32> {
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

/// The reason an attach failed, with the hint an operator needs for the usual causes.
fn explain_attach_error(err: &ProgramError) -> String {
    let hint = match os_error(err) {
        Some(libc::EOPNOTSUPP) => " (the driver does not support this mode; try --xdp-mode skb)",
        Some(libc::EPERM) => " (run as root, or with CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON)",
        _ => "",
    };
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(e) = source {
        let s = e.to_string();
        if !text.contains(&s) {
            text.push_str(": ");
            text.push_str(&s);
        }
        source = e.source();
    }
    format!("{text}{hint}")
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
