//! probe-detector's kernel side. The XDP program notes inbound attempts to home addresses
//! (TCP SYN, stealth segments without ACK, UDP datagrams, echo requests) in a tagged
//! pending table (one of two slots per flow); the TC egress program sees how this host
//! (or, on a gateway, the hosts behind it) answered: RST or ICMP port-unreachable =
//! refused, ICMP unreachable or prohibited, SYN-ACK / UDP reply / echo reply = accepted.
//! The expiry program, run by userspace, reports attempts left unanswered. The first
//! outcome of each kind per (source, destination, port) goes to the ring buffer; repeats
//! only bump a counter.
//!
//! Cost model (docs/design.md, "The kernel/userspace split and its cost model"): an
//! inbound attempt writes one slot of an array (its first choice, in a small cached
//! region, when free) and reads the coarse clock; the LRU hash and the ring buffer are
//! touched only when an outcome is seen. Established traffic (ACK segments) costs a parse
//! and two counters.
//!
//! This file holds the entry points; the rest: `maps` (maps, load-time globals, counters),
//! `parse` (headers), `ingress` and `egress` (the two programs' paths), `pending` (the
//! attempt table and the flow hash), `ours` (our own attempts, contacted hosts, home
//! nets), `report` (outcomes to events), `suspects` (the sequential test), `early` (the
//! verdict on the probe itself), `autoblock`
//! (blocks on its verdict), `summary` (decided sources' outcomes counted, not sent), `hold`
//! (first failures held until a second),
//! `expire` (the sweep), `bench` (baselines).
#![no_std]
#![no_main]
// BPF has atomic add but no compare-and-swap, so core offers no `AtomicU64::fetch_add` on
// this target; the intrinsic lowers to the BPF atomic add instruction directly.
#![feature(core_intrinsics)]
#![expect(
    internal_features,
    reason = "atomic_xadd: the only atomic add core offers on BPF"
)]

/// Per-packet developer tracing through aya-log, compiled in only with the `trace` feature
/// (`PROBE_EBPF_TRACE=1 cargo xtask run -- --log-level debug ...`); otherwise it expands to
/// nothing, so release objects carry no per-packet logging.
macro_rules! trace {
    ($ctx:expr, $($arg:tt)+) => {
        #[cfg(feature = "trace")]
        aya_log_ebpf::debug!($ctx, $($arg)+);
    };
}

mod autoblock;
mod bench;
mod early;
mod egress;
mod expire;
mod hold;
mod ingress;
mod maps;
mod ours;
mod parse;
mod pending;
mod report;
mod summary;
mod suspects;

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT, xdp_action::XDP_PASS},
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};

/// Entry point of the XDP program on each attached interface (ingress).
#[xdp]
fn probe_ingress(ctx: XdpContext) -> u32 {
    // Fail open: this program observes, and drops only the frames of a source blocked on
    // purpose (`--block`). A frame it cannot parse goes on.
    ingress::try_ingress(&ctx).unwrap_or(XDP_PASS)
}

/// Entry point of the TC program on each attached interface (egress).
#[classifier]
fn probe_egress(ctx: TcContext) -> i32 {
    // Fail open: this program observes, and drops only our answers to a source blocked on
    // purpose (`--block`). Whatever else happens, the packet goes on.
    match egress::try_egress(&ctx) {
        // `as _`: the bindings type TC_ACT_* as u32 or i32 depending on the target.
        Ok(true) => TC_ACT_SHOT as _,
        _ => TC_ACT_OK as _,
    }
}

/// The expiry program: never attached; userspace runs it through `BPF_PROG_TEST_RUN`, one
/// chunk of the sweep per run (see `expire`).
#[xdp]
fn probe_expire(_ctx: XdpContext) -> u32 {
    expire::sweep_chunk();
    XDP_PASS
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // No code path panics (the verifier would reject an unreachable loop if one did).
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
