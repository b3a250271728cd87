//! probe-detector's userspace: everything but the binary's `main`, which parses, sets up
//! logging, runs a command and maps errors to exit statuses. The kernel and lab tests, the
//! lab and the benchmarks use the same pieces.
//!
//! Where things are, from a packet to a JSON line:
//!
//! - `kernel/`: the eBPF object: load (sizes, globals), attach/detach, test runs and the
//!   expiry sweep, map readers, privilege checks.
//! - `event`: one ring-buffer record decoded into a [`event::Probe`], the engine's input.
//! - `detect/`: the detection engine (pure, time passed in): the incident lifecycle, one
//!   file per detector (vertical, horizontal, TRW, slow, crowd), bounded tables.
//! - `output/`: the pipeline from probes to records (alert and probe records, rate limit,
//!   attack list and its evidence, service names), shared by watch and replay.
//! - `policy/`: allow-lists (loaded into the kernel) and blocking (who may be blocked, the
//!   kernel's block list).
//! - `daemon/`: the live event loop, the control socket, the metrics endpoint, the status
//!   line.
//! - `fleet/`: the fleet over Redis Streams: evidence records, keys and shards, the
//!   sensor's publisher, the correlator.
//! - `cmd/`: the commands: watch, replay, detach, block, correlate.
//! - `cli/`: flags and their values, the configuration file, resolved settings, exit
//!   statuses.
//! - `net/`: CIDRs, interfaces and routes, this host's network, pcap files.
//! - `clock`: kernel time to wall-clock time, RFC 3339.

/// The commit this binary was built from (`-dirty` with uncommitted changes, `unknown`
/// outside a git checkout).
pub const GIT_COMMIT: &str = env!("PROBE_GIT_COMMIT");

/// A hash (FNV-1a, 64 bits) of the eBPF object built into this binary; `none` without one.
pub const EBPF_HASH: &str = env!("PROBE_EBPF_HASH");

/// The version, the commit it was built from and the eBPF object's hash:
/// `0.1.0 (commit 1a2b3c4d5e6f, eBPF object 0123456789abcdef)`.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("PROBE_GIT_COMMIT"),
    ", eBPF object ",
    env!("PROBE_EBPF_HASH"),
    ")"
);

pub mod cli;
pub mod clock;
pub mod cmd;
pub mod daemon;
pub mod detect;
pub mod event;
pub mod fleet;
pub mod kernel;
pub mod net;
pub mod output;
pub mod policy;
