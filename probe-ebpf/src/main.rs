//! probe-detector's kernel side: an XDP program that notes inbound connection attempts and
//! a TC egress program that sees how this host (or, on a gateway, the hosts behind it)
//! answered them. A SYN answered by our RST is a failed attempt: counted per (source,
//! destination, port) in an LRU hash, and reported once through the ring buffer.
//!
//! Cost model (DESIGN.md, "Measured per-packet costs"): the per-SYN path writes one slot of
//! a direct-mapped array and reads the coarse clock; the LRU hash and the ring buffer are
//! touched only when a failure is seen, which the host's own RST pays for.
#![no_std]
#![no_main]
// BPF has atomic add but no compare-and-swap, so core offers no `AtomicU64::fetch_add` on
// this target; the intrinsic lowers to the BPF atomic add instruction directly.
#![feature(core_intrinsics)]
#![expect(
    internal_features,
    reason = "atomic_xadd: the only atomic add core offers on BPF"
)]

mod parse;

/// Per-packet developer tracing through aya-log, compiled in only with the `trace` feature
/// (`PROBE_EBPF_TRACE=1 cargo xtask run -- --log-level debug ...`); otherwise it expands to
/// nothing, so release objects carry no per-packet logging.
macro_rules! trace {
    ($ctx:expr, $($arg:tt)+) => {
        #[cfg(feature = "trace")]
        aya_log_ebpf::debug!($ctx, $($arg)+);
    };
}

use core::intrinsics::{AtomicOrdering, atomic_xadd};

use aya_ebpf::{
    EbpfContext as _,
    bindings::{__sk_buff, BPF_NOEXIST, TC_ACT_OK, xdp_action::XDP_PASS},
    helpers::{bpf_ktime_get_coarse_ns, bpf_ktime_get_ns},
    macros::{classifier, map, xdp},
    maps::{Array, LruHashMap, PerCpuArray, RingBuf},
    programs::{TcContext, XdpContext},
};
use probe_common::{
    Counter, EVENTS_BYTES, EventKind, FAILURES_ENTRIES, FailKey, IPPROTO_TCP, ProbeEvent,
    SYN_SLOTS_ENTRIES, SynSlot, ipv4_mapped,
};

use crate::parse::{Malformed, TCP_ACK, TCP_RST, TCP_SYN, TcpPacket, parse_tcp};

/// State changes for userspace; see [`EVENTS_BYTES`] for its size.
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_BYTES, 0);

/// One `u64` per [`Counter`] per CPU: 9 × 8 B × CPUs.
#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Counter::COUNT, 0);

/// Failed attempts per (source, destination, port, protocol); see [`FAILURES_ENTRIES`].
#[map]
static FAILURES: LruHashMap<FailKey, u64> = LruHashMap::with_max_entries(FAILURES_ENTRIES, 0);

/// Inbound SYNs waiting for our answer, direct-mapped by flow hash; see
/// [`SYN_SLOTS_ENTRIES`].
#[map]
static SYN_SLOTS: Array<SynSlot> = Array::with_max_entries(SYN_SLOTS_ENTRIES, 0);

/// Entry point of the XDP program on each attached interface (ingress).
#[xdp]
fn probe_ingress(ctx: XdpContext) -> u32 {
    // Fail open: this program only observes. Whatever happens, the packet goes on.
    let _ = try_probe_ingress(&ctx);
    XDP_PASS
}

/// Entry point of the TC program on each attached interface (egress).
#[classifier]
fn probe_egress(ctx: TcContext) -> i32 {
    // Fail open: this program only observes. Whatever happens, the packet goes on.
    let _ = try_probe_egress(&ctx);
    // `as _`: the bindings type TC_ACT_OK as u32 or i32 depending on the target.
    TC_ACT_OK as _
}

#[inline(always)]
fn try_probe_ingress(ctx: &XdpContext) -> Result<(), Malformed> {
    count(Counter::IngressPackets);
    let Some(pkt) = parsed(ctx.data(), ctx.data_end())? else {
        return Ok(());
    };
    trace!(
        ctx,
        "in: port {} -> {} flags {:x}", pkt.src_port, pkt.dst_port, pkt.flags
    );
    // A connection attempt: SYN without ACK. Everything else inbound is not ours yet.
    if pkt.flags & (TCP_SYN | TCP_ACK) != TCP_SYN {
        return Ok(());
    }
    count(Counter::Syns);
    // Our answer acknowledges the SYN (1) and any payload it carried.
    let expected_ack = pkt.seq.wrapping_add(1).wrapping_add(pkt.payload_len);
    let flow = Flow {
        remote: pkt.src_addr,
        local: pkt.dst_addr,
        remote_port: pkt.src_port,
        local_port: pkt.dst_port,
    };
    let (index, tag) = flow.slot(expected_ack);
    if let Some(slot) = SYN_SLOTS.get_ptr_mut(index) {
        // SAFETY: the pointer comes from a successful array lookup and stays valid for the
        // duration of the program; a concurrent writer on another CPU can at worst leave a
        // torn slot, whose tag then matches nothing.
        unsafe {
            *slot = SynSlot {
                seen_ns: bpf_ktime_get_coarse_ns(),
                tag,
                tcp_flags: pkt.flags,
                _pad: [0; 3],
            };
        }
    }
    Ok(())
}

#[inline(always)]
fn try_probe_egress(ctx: &TcContext) -> Result<(), Malformed> {
    count(Counter::EgressPackets);
    let Some(pkt) = parsed(ctx.data(), ctx.data_end())? else {
        return Ok(());
    };
    trace!(
        ctx,
        "out: port {} -> {} flags {:x}", pkt.src_port, pkt.dst_port, pkt.flags
    );
    let refused = pkt.flags & (TCP_RST | TCP_ACK) == (TCP_RST | TCP_ACK);
    let accepted = pkt.flags & (TCP_SYN | TCP_ACK | TCP_RST) == (TCP_SYN | TCP_ACK);
    if pkt.flags & TCP_RST != 0 {
        count(Counter::RstsOut);
    }
    if !refused && !accepted {
        return Ok(());
    }
    // Outbound, so the remote side is the destination.
    let flow = Flow {
        remote: pkt.dst_addr,
        local: pkt.src_addr,
        remote_port: pkt.dst_port,
        local_port: pkt.src_port,
    };
    let (index, tag) = flow.slot(pkt.ack);
    let Some(slot) = SYN_SLOTS.get_ptr_mut(index) else {
        return Ok(());
    };
    // SAFETY: the pointer comes from a successful array lookup and stays valid for the
    // duration of the program. Racing CPUs can at worst both see the tag: one counts a
    // duplicate, which the LRU insert below turns into a counter bump.
    let syn_flags = unsafe {
        if (*slot).tag != tag {
            return Ok(());
        }
        (*slot).tag = 0;
        (*slot).tcp_flags
    };
    trace!(
        ctx,
        "answer to the SYN to port {} (accepted: {})", flow.local_port, accepted as u8
    );
    if accepted {
        count(Counter::Answered);
        return Ok(());
    }
    count(Counter::FailedAttempts);
    record_failure(&flow, syn_flags, ifindex(ctx));
    Ok(())
}

/// Parses, counting frames we could not read.
#[inline(always)]
fn parsed(start: usize, end: usize) -> Result<Option<TcpPacket>, Malformed> {
    let parsed = parse_tcp(start, end);
    if parsed.is_err() {
        count(Counter::Malformed);
    }
    parsed
}

/// Counts a failure of (remote, local, port); the first one of each triple becomes an event.
#[inline(always)]
fn record_failure(flow: &Flow, syn_flags: u8, ifindex: u32) {
    let key = FailKey {
        src_addr: ipv4_mapped(flow.remote),
        dst_addr: ipv4_mapped(flow.local),
        dst_port: flow.local_port,
        proto: IPPROTO_TCP,
        _pad: [0; 5],
    };
    // Look up before inserting: a repeat costs a lookup and an atomic add, not an insert.
    if let Some(failures) = FAILURES.get_ptr_mut(&key) {
        // SAFETY: the value pointer comes from a successful lookup, is 8-byte aligned (map
        // values are) and valid for the program's duration; other CPUs only add atomically.
        unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(failures, 1) };
        return;
    }
    // BPF_NOEXIST: if another CPU inserted the key meanwhile, it also sent the event.
    if FAILURES.insert(&key, &1, u64::from(BPF_NOEXIST)).is_err() {
        return;
    }
    let Some(mut entry) = EVENTS.reserve::<ProbeEvent>(0) else {
        count(Counter::RingbufDrops);
        return;
    };
    // SAFETY: bpf_ktime_get_ns has no preconditions.
    let timestamp_ns = unsafe { bpf_ktime_get_ns() };
    entry.write(ProbeEvent {
        timestamp_ns,
        src_addr: key.src_addr,
        dst_addr: key.dst_addr,
        ifindex,
        src_port: flow.remote_port,
        dst_port: flow.local_port,
        proto: IPPROTO_TCP,
        kind: EventKind::SynRefused as u8,
        tcp_flags: syn_flags,
        _pad: [0; 5],
    });
    entry.submit(0);
    count(Counter::EventsSent);
}

/// The interface a TC program runs on.
#[inline(always)]
fn ifindex(ctx: &TcContext) -> u32 {
    let skb = ctx.as_ptr().cast::<__sk_buff>();
    // SAFETY: a TC program's context is the kernel's `__sk_buff`, valid for the program's
    // duration; `ifindex` is a readable field of it.
    unsafe { (*skb).ifindex }
}

/// A TCP flow seen from our side: `remote` made the attempt, `local` is ours.
struct Flow {
    remote: [u8; 4],
    local: [u8; 4],
    remote_port: u16,
    local_port: u16,
}

impl Flow {
    /// The slot index of this flow in `SYN_SLOTS` and the tag that binds the slot to this
    /// flow and to the acknowledgement number its answer carries. The tag is never 0 (0 marks
    /// an empty slot).
    #[inline(always)]
    fn slot(&self, ack: u32) -> (u32, u32) {
        let addrs = (u64::from(u32::from_ne_bytes(self.remote)) << 32)
            | u64::from(u32::from_ne_bytes(self.local));
        let ports = (u64::from(self.remote_port) << 16) | u64::from(self.local_port);
        let h = mix(mix(addrs, ports), 0);
        let index = (h as u32) & (SYN_SLOTS_ENTRIES - 1);
        let tag = (mix(h, u64::from(ack)) >> 32) as u32 | 1;
        (index, tag)
    }
}

/// A multiply-xorshift mixing step (the finaliser of splitmix64): cheap, and spreads every
/// input bit over the output, which is what a direct-mapped index needs.
#[inline(always)]
fn mix(h: u64, v: u64) -> u64 {
    let mut x = h ^ v.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Adds one to a per-CPU counter.
#[inline(always)]
fn count(counter: Counter) {
    if let Some(value) = COUNTERS.get_ptr_mut(counter as u32) {
        // SAFETY: per-CPU array slot from a successful lookup; only this CPU writes it and
        // the program is not preempted by itself on this CPU.
        unsafe { *value += 1 };
    }
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
