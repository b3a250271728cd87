//! probe-detector's kernel side. The XDP program notes inbound attempts to home addresses
//! (TCP SYN, stealth segments without ACK, UDP datagrams, echo requests) in a direct-mapped
//! pending table; the TC egress program sees how this host (or, on a gateway, the hosts
//! behind it) answered: RST or ICMP port-unreachable = refused, ICMP unreachable or
//! prohibited, SYN-ACK / UDP reply / echo reply = accepted. The expiry program, run by
//! userspace, reports attempts left unanswered. The first outcome of each kind per
//! (source, destination, port) goes to the ring buffer; repeats only bump a counter.
//!
//! Cost model (docs/design.md, "The kernel/userspace split and its cost model"): an
//! inbound attempt writes one slot of a direct-mapped array and reads the coarse clock; the
//! LRU hash and the ring buffer are touched only when an outcome is seen. Established traffic (ACK segments) costs a parse
//! and two counters.
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

use core::{
    ffi::c_void,
    intrinsics::{AtomicOrdering, atomic_xadd},
    ptr::read_volatile,
};

use aya_ebpf::{
    EbpfContext as _,
    bindings::{
        __sk_buff, BPF_NOEXIST, BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP,
        TC_ACT_OK,
        xdp_action::{XDP_DROP, XDP_PASS},
    },
    helpers::{bpf_ktime_get_ns, generated::bpf_loop},
    macros::{classifier, map, xdp},
    maps::{Array, LpmTrie, LruHashMap, PerCpuArray, RingBuf, lpm_trie::Key},
    programs::{TcContext, XdpContext},
};
use probe_common::{
    ALLOW_ENTRIES, BLOCKED_ENTRIES, Block, Counter, EVENTS_BYTES,
    EXPIRE_AFTER as DEFAULT_EXPIRE_AFTER, HomeNet, IPPROTO_ICMP as PROTO_ICMP,
    IPPROTO_ICMPV6 as PROTO_ICMPV6, IPPROTO_TCP as PROTO_TCP, IPPROTO_UDP as PROTO_UDP,
    MAX_HOME_NETS, OURS_ENTRIES, OUTCOMES_ENTRIES, Outcome, OutcomeKey, PENDING_ENTRIES,
    PENDING_STATS_COUNTING, PENDING_STATS_CURSOR, PENDING_STATS_EPOCH, PENDING_STATS_LIVE, Pending,
    ProbeEvent, ProbeType,
};

use crate::parse::{
    Addr, Endpoints, Headers, Icmp, IcmpKind, Malformed, Quoted, TCP_ACK, TCP_RST, TCP_SYN,
    endpoints, icmp, locate, parse_quoted, tcp, tcp_flags, udp,
};

/// State changes for userspace; size set at load time (default [`EVENTS_BYTES`]).
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_BYTES, 0);

/// Blocked sources (`--block`), read only when `BLOCK_ON` is set; see [`BLOCKED_ENTRIES`].
#[map]
static BLOCKED: LruHashMap<Addr, Block> = LruHashMap::with_max_entries(BLOCKED_ENTRIES, 0);

/// One `u64` per [`Counter`] per CPU.
#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Counter::COUNT, 0);

/// Reported outcomes and their repeat counts; size set at load time (default
/// [`OUTCOMES_ENTRIES`]).
#[map]
static OUTCOMES: LruHashMap<OutcomeKey, u64> = LruHashMap::with_max_entries(OUTCOMES_ENTRIES, 0);

/// Inbound attempts awaiting an answer, direct-mapped by flow hash; size set at load time
/// (default [`PENDING_ENTRIES`], a power of two, mask in [`PENDING_MASK`]).
#[map]
static PENDING: Array<Pending> = Array::with_max_entries(PENDING_ENTRIES, 0);

/// Sources never to report (allow-listed scanners), by prefix; see [`ALLOW_ENTRIES`].
#[map]
static ALLOW_SOURCES: LpmTrie<[u8; 16], u8> = LpmTrie::with_max_entries(ALLOW_ENTRIES, 0);

/// Local services never to report, any port, by prefix.
#[map]
static ALLOW_SERVICES: LpmTrie<[u8; 16], u8> = LpmTrie::with_max_entries(ALLOW_ENTRIES, 0);

/// Local services never to report, one port: the key is the port (network order) then the
/// address, so that a prefix covers the port and the leading address bits.
#[map]
static ALLOW_SERVICE_PORTS: LpmTrie<ServiceKey, u8> = LpmTrie::with_max_entries(ALLOW_ENTRIES, 0);

/// The data of an `ALLOW_SERVICE_PORTS` key: port first, so that a prefix can cover the
/// port and then leading address bits. Copied whole, never built byte by byte (that would
/// spill every byte to the stack).
#[repr(C)]
#[derive(Clone, Copy)]
struct ServiceKey {
    /// Port, network byte order.
    port: [u8; 2],
    addr: [u8; 16],
}

/// Remote hosts our hosts contacted: tag << 32 | sweep epoch, direct-mapped by host hash
/// (same size as `OURS`).
#[map]
static CONTACTED: Array<u64> = Array::with_max_entries(OURS_ENTRIES, 0);

/// Written by each expiry sweep: live slots, epoch (indices in probe_common).
#[map]
static PENDING_STATS: Array<u64> = Array::with_max_entries(4, 0);

/// Tags of our own outbound attempts (SYNs, UDP datagrams), direct-mapped by flow hash;
/// size set at load time (default [`OURS_ENTRIES`], mask in [`OURS_MASK`]).
#[map]
static OURS: Array<u32> = Array::with_max_entries(OURS_ENTRIES, 0);

// Load-time configuration (set by userspace with `EbpfLoader::set_global`). Read through
// `read_volatile` so the compiler cannot fold in these defaults.
#[unsafe(no_mangle)]
static PENDING_MASK: u32 = PENDING_ENTRIES - 1;
#[unsafe(no_mangle)]
static OURS_MASK: u32 = OURS_ENTRIES - 1;
#[unsafe(no_mangle)]
static EXPIRE_AFTER: u64 = DEFAULT_EXPIRE_AFTER;
#[unsafe(no_mangle)]
static SWEEP_CHUNK: u32 = 2048;
/// Sweeps during which a host we contacted may call back unreported (about 60 s).
#[unsafe(no_mangle)]
static CALLBACK_EPOCHS: u64 = 60;
/// Key of the flow hash, random per load (set by userspace).
#[unsafe(no_mangle)]
static HASH_SEED: u64 = 0x243f_6a88_85a3_08d3;
/// The expiry sweep epoch: advanced by each run of `probe_expire`, stamped on each pending
/// attempt. Cheaper than a clock read per attempt, and exact in sweeps.
#[unsafe(no_mangle)]
static mut EPOCH: u64 = 0;
#[unsafe(no_mangle)]
static HOME_NET_COUNT: u32 = 0;
/// Bytes one record takes in the ring: the event and the ring's 8-byte header.
const RECORD_BYTES: u64 = core::mem::size_of::<ProbeEvent>() as u64 + 8;
/// Unread bytes in `EVENTS` from which a submit wakes the reader (a quarter of the ring).
#[unsafe(no_mangle)]
static WAKEUP_BYTES: u64 = EVENTS_BYTES as u64 / 4;
/// 1 when blocking is on (set at load from `--block`).
#[unsafe(no_mangle)]
static BLOCK_ON: u32 = 0;
/// When a submit last woke the reader (bpf_ktime_get_ns).
static mut LAST_WAKEUP_NS: u64 = 0;
/// Least time between two wakeups that no backlog asked for (set at load from
/// `--wakeup-ms`; `u64::MAX`: only a backlog wakes the reader).
#[unsafe(no_mangle)]
static WAKEUP_GAP_NS: u64 = 1_000_000;
/// The home-net prefixes, each a [`probe_common::HomeNet`] (network then mask, 16 bytes
/// each) seen as four native words, so that they are read into registers a word at a time
/// rather than copied to the stack.
#[unsafe(no_mangle)]
static HOME_NETS: [[u64; 4]; MAX_HOME_NETS] = [[0; 4]; MAX_HOME_NETS];
const _: () = assert!(core::mem::size_of::<[u64; 4]>() == core::mem::size_of::<HomeNet>());

/// Entry point of the XDP program on each attached interface (ingress).
#[xdp]
fn probe_ingress(ctx: XdpContext) -> u32 {
    // Fail open: this program observes, and drops only the frames of a source blocked on
    // purpose (`--block`). A frame it cannot parse goes on.
    try_ingress(&ctx).unwrap_or(XDP_PASS)
}

/// Entry point of the TC program on each attached interface (egress).
#[classifier]
fn probe_egress(ctx: TcContext) -> i32 {
    // Fail open: this program only observes. Whatever happens, the packet goes on.
    let _ = try_egress(&ctx);
    // `as _`: the bindings type TC_ACT_OK as u32 or i32 depending on the target.
    TC_ACT_OK as _
}

/// The expiry program: never attached; userspace runs it about once a second through
/// `BPF_PROG_TEST_RUN`. It walks the pending table in the kernel (no syscall per slot) and
/// reports every attempt older than the timeout as unanswered.
#[xdp]
fn probe_expire(_ctx: XdpContext) -> u32 {
    let stat = |index: u32| {
        // SAFETY: array slot from a successful lookup, read once.
        PENDING_STATS.get_ptr(index).map_or(0, |p| unsafe { *p })
    };
    let set = |index: u32, value: u64| {
        if let Some(p) = PENDING_STATS.get_ptr_mut(index) {
            // SAFETY: array slot from a successful lookup; userspace runs one sweep at a time.
            unsafe { *p = value };
        }
    };
    // SAFETY: reading plain globals; volatile so the load-time values are used.
    let (slots, chunk) = unsafe {
        (
            u64::from(read_volatile(&PENDING_MASK)) + 1,
            u64::from(read_volatile(&SWEEP_CHUNK)).max(1),
        )
    };
    let cursor = stat(PENDING_STATS_CURSOR) % slots;
    let mut counting = stat(PENDING_STATS_COUNTING);
    if cursor == 0 {
        // A new sweep: a new epoch, which attempts from now on are stamped with.
        // SAFETY: EPOCH is written only here; userspace runs one sweep at a time.
        let epoch = unsafe { read_volatile(&raw const EPOCH) }.wrapping_add(1);
        // SAFETY: as above.
        unsafe { core::ptr::write_volatile(&raw mut EPOCH, epoch) };
        set(PENDING_STATS_EPOCH, epoch);
        counting = 0;
    }
    let mut sweep = Sweep {
        // SAFETY: as above.
        epoch: unsafe { read_volatile(&raw const EPOCH) },
        // SAFETY: reading a plain global; volatile so the load-time value is used.
        after: unsafe { read_volatile(&EXPIRE_AFTER) },
        first: cursor as u32,
        live: 0,
    };
    let count = chunk.min(slots - cursor);
    // SAFETY: `expire_slot` has the callback signature bpf_loop expects, and `sweep` lives
    // on this stack for the whole call.
    unsafe {
        bpf_loop(
            count as u32,
            expire_slot as *mut c_void,
            (&raw mut sweep).cast::<c_void>(),
            0,
        );
    }
    counting += sweep.live;
    let next = (cursor + count) % slots;
    if next == 0 {
        set(PENDING_STATS_LIVE, counting);
    }
    set(PENDING_STATS_COUNTING, counting);
    set(PENDING_STATS_CURSOR, next);
    XDP_PASS
}

/// Baseline for `cargo xtask bench`: an XDP program that does nothing, so the cost of the
/// BPF_PROG_TEST_RUN harness itself can be measured in the same run. Never attached.
#[xdp]
fn bench_xdp_pass(_ctx: XdpContext) -> u32 {
    XDP_PASS
}

/// Baseline for `cargo xtask bench`: a TC program that does nothing. Never attached.
#[classifier]
fn bench_tc_ok(_ctx: TcContext) -> i32 {
    TC_ACT_OK as _
}

struct Sweep {
    epoch: u64,
    after: u64,
    /// The slot the chunk starts at.
    first: u32,
    live: u64,
}

/// bpf_loop callback: reports and clears slot `index` if it expired, counts it if it stays.
/// Returns 0: go on.
#[inline(never)]
extern "C" fn expire_slot(index: u32, ctx: *mut c_void) -> i64 {
    // SAFETY: bpf_loop passes back the pointer probe_expire gave it, to a live `Sweep`.
    let sweep = unsafe { &mut *ctx.cast::<Sweep>() };
    let Some(slot) = PENDING.get_ptr_mut(sweep.first.wrapping_add(index)) else {
        return 0;
    };
    // SAFETY: the pointer comes from a successful array lookup and is valid for the call.
    let pending = unsafe { *slot };
    if pending.tag == 0 {
        return 0;
    }
    if sweep.epoch.wrapping_sub(pending.seen_epoch) <= sweep.after {
        sweep.live += 1;
        return 0;
    }
    // SAFETY: as above.
    unsafe { (*slot).tag = 0 };
    count(Counter::Unanswered);
    report(&pending, Outcome::Unanswered, 0, 0);
    0
}

#[inline(always)]
fn try_ingress(ctx: &XdpContext) -> Result<u32, Malformed> {
    count(Counter::IngressPackets);
    let (start, end) = (ctx.data(), ctx.data_end());
    let Some(h) = checked(locate(start, end))? else {
        return Ok(XDP_PASS);
    };
    // SAFETY: reading a plain global; volatile so the load-time value is used.
    if unsafe { read_volatile(&BLOCK_ON) } != 0 && blocked(start, end, &h) {
        count(Counter::Blocked);
        return Ok(XDP_DROP);
    }
    if !h.transport {
        return Ok(XDP_PASS);
    }
    let ifindex = ctx.ingress_ifindex() as u32;
    match h.proto {
        PROTO_TCP => {
            let flags = checked(tcp_flags(start, end, &h))?;
            trace!(ctx, "in: tcp flags {:x}", flags);
            // Established traffic (ACK without SYN or RST) is the common case: done here,
            // after one flags byte.
            if flags & (TCP_SYN | TCP_RST) != 0 || flags & TCP_ACK == 0 {
                ingress_tcp(start, end, &h, flags, ifindex);
            }
        }
        PROTO_UDP => ingress_udp(start, end, &h, ifindex),
        PROTO_ICMP | PROTO_ICMPV6 => ingress_icmp(start, end, &h, ifindex),
        _ => {}
    }
    Ok(XDP_PASS)
}

/// True when the frame's source is blocked and its block has not expired; counts the
/// frame on the block. An expired block is removed here, by its source's first frame.
#[inline(never)]
fn blocked(start: usize, end: usize, h: &Headers) -> bool {
    let Ok(ends) = checked(endpoints(start, end, h)) else {
        return false;
    };
    let Some(block) = BLOCKED.get_ptr_mut(&ends.src) else {
        return false;
    };
    // SAFETY: bpf_ktime_get_ns has no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    // SAFETY: a pointer from a successful lookup; the entry stays valid during this run.
    if now >= unsafe { (*block).until_ns } {
        let _ = BLOCKED.remove(&ends.src);
        return false;
    }
    // SAFETY: as above; the counter is 8-byte aligned (map values are), and other CPUs
    // only add to it atomically.
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(&raw mut (*block).packets, 1) };
    true
}

/// An inbound TCP segment that is not established traffic: an attempt (SYN, or a stealth
/// segment without SYN, ACK or RST), or an answer to an attempt (ours, or backscatter).
#[inline(never)]
fn ingress_tcp(start: usize, end: usize, h: &Headers, flags: u8, ifindex: u32) {
    let Ok(tcp) = checked(tcp(start, end, h)) else {
        return;
    };
    // Classify before reading the addresses: inbound aborts (RST, or RST|ACK with a
    // sequence number) answer no SYN and need nothing more.
    let probe = match flags & (TCP_SYN | TCP_ACK | TCP_RST) {
        TCP_SYN => Some(ProbeType::TcpSyn),
        // No SYN, ACK or RST: only probes look like this (FIN, NULL, Xmas, ...).
        0 => Some(ProbeType::TcpStealth),
        // An answer to a connection attempt: ours, or backscatter.
        f if f == TCP_SYN | TCP_ACK || (f == TCP_RST | TCP_ACK && tcp.seq == 0) => None,
        _ => return,
    };
    let Ok(ends) = checked(endpoints(start, end, h)) else {
        return;
    };
    match probe {
        Some(probe) => attempt(&ends, &Attempt::tcp(probe, &tcp, ifindex)),
        None => {
            let flow = Flow::to_us(&ends, h.proto, tcp.src_port, tcp.dst_port);
            if !take_ours(&flow, tcp.ack) {
                count(Counter::Backscatter);
            }
        }
    }
}

/// An inbound UDP datagram: an attempt, unless it replies to one of ours.
#[inline(never)]
fn ingress_udp(start: usize, end: usize, h: &Headers, ifindex: u32) {
    let (Ok((src_port, dst_port)), Ok(ends)) = (
        checked(udp(start, end, h)),
        checked(endpoints(start, end, h)),
    ) else {
        return;
    };
    if is_ours(&Flow::to_us(&ends, h.proto, src_port, dst_port), 0) {
        return;
    }
    let udp = Attempt {
        probe: ProbeType::Udp,
        proto: h.proto,
        remote_port: src_port,
        local_port: dst_port,
        id: 0,
        tcp_flags: 0,
        ifindex,
    };
    attempt(&ends, &udp);
}

/// An inbound ICMP/ICMPv6 message: echo requests are attempts.
#[inline(never)]
fn ingress_icmp(start: usize, end: usize, h: &Headers, ifindex: u32) {
    let Ok(Some(icmp)) = checked(icmp(start, end, h)) else {
        return;
    };
    if icmp.kind != IcmpKind::EchoRequest {
        return;
    }
    let Ok(ends) = checked(endpoints(start, end, h)) else {
        return;
    };
    let echo = Attempt {
        probe: ProbeType::IcmpEcho,
        proto: h.proto,
        remote_port: icmp.id,
        local_port: 0,
        id: u32::from(icmp.seq),
        tcp_flags: 0,
        ifindex,
    };
    attempt(&ends, &echo);
}

#[inline(always)]
fn try_egress(ctx: &TcContext) -> Result<(), Malformed> {
    count(Counter::EgressPackets);
    let (start, end) = (ctx.data(), ctx.data_end());
    let Some(h) = checked(locate(start, end))? else {
        return Ok(());
    };
    if !h.transport {
        return Ok(());
    }
    match h.proto {
        PROTO_TCP => {
            let flags = checked(tcp_flags(start, end, &h))? & (TCP_SYN | TCP_ACK | TCP_RST);
            trace!(ctx, "out: tcp flags {:x}", flags);
            if flags & TCP_RST != 0 {
                count(Counter::RstsOut);
            } else if flags != TCP_SYN && flags != TCP_SYN | TCP_ACK {
                // Established traffic: the common case, done after one flags byte.
                return Ok(());
            }
            egress_tcp(start, end, &h, flags, ifindex(ctx));
        }
        PROTO_UDP => egress_udp(start, end, &h),
        PROTO_ICMP | PROTO_ICMPV6 => egress_icmp(start, end, &h),
        _ => {}
    }
    Ok(())
}

/// An outbound SYN (ours), SYN-ACK or RST (an answer to an inbound attempt).
#[inline(never)]
fn egress_tcp(start: usize, end: usize, h: &Headers, flags: u8, ifindex: u32) {
    let (Ok(tcp), Ok(ends)) = (
        checked(tcp(start, end, h)),
        checked(endpoints(start, end, h)),
    ) else {
        return;
    };
    let answer = Flow::from_us(&ends, h.proto, tcp.src_port, tcp.dst_port);
    if flags == TCP_SYN {
        // Our own attempt: remember it, so its answers are not taken for backscatter, and
        // its host, so that a callback from it is not taken for a probe.
        put_ours(&answer, tcp.answer_id());
        note_contacted(&answer.remote);
    } else if flags == TCP_SYN | TCP_ACK {
        settle(&answer, tcp.ack, Outcome::Accepted, 0, 0);
    } else {
        // An RST with ACK acknowledges the attempt; one without answers a segment that had
        // ACK set and carries that segment's ack number as its seq.
        let id = if flags & TCP_ACK != 0 {
            tcp.ack
        } else {
            tcp.seq
        };
        if !settle(&answer, id, Outcome::Refused, 0, 0)
            && flags & TCP_ACK == 0
            && is_home(&ends.src)
        {
            // No pending attempt: an ACK-bearing segment matched no connection here.
            // Recording every inbound ACK would tax established traffic, so these probes are
            // known from our answer alone.
            count(Counter::AckProbes);
            report_ack_probe(&answer, ifindex);
        }
    }
}

/// An outbound UDP datagram: an answer to an inbound attempt, and one of ours.
#[inline(never)]
fn egress_udp(start: usize, end: usize, h: &Headers) {
    let (Ok((src_port, dst_port)), Ok(ends)) = (
        checked(udp(start, end, h)),
        checked(endpoints(start, end, h)),
    ) else {
        return;
    };
    let flow = Flow::from_us(&ends, h.proto, src_port, dst_port);
    settle(&flow, 0, Outcome::Accepted, 0, 0);
    put_ours(&flow, 0);
    note_contacted(&flow.remote);
}

/// An outbound ICMP/ICMPv6 message: echo replies and destination-unreachable errors
/// answer inbound attempts.
#[inline(never)]
fn egress_icmp(start: usize, end: usize, h: &Headers) {
    let Ok(Some(icmp)) = checked(icmp(start, end, h)) else {
        return;
    };
    match icmp.kind {
        IcmpKind::EchoReply => {
            let Ok(ends) = checked(endpoints(start, end, h)) else {
                return;
            };
            // The request was keyed with the echo identifier as the remote's "port".
            let flow = Flow::from_us(&ends, h.proto, 0, icmp.id);
            settle(&flow, u32::from(icmp.seq), Outcome::Accepted, 0, 0);
        }
        IcmpKind::Unreachable => settle_unreachable(start, end, &icmp, h.v6),
        _ => {}
    }
}

/// What an ICMP destination-unreachable code says about the attempt it quotes.
#[inline(always)]
fn unreachable_outcome(v6: bool, code: u8) -> Outcome {
    match (v6, code) {
        // Port unreachable: nothing listens, the port is closed.
        (false, 3) | (true, 4) => Outcome::Refused,
        // Communication administratively prohibited (host, net, filter), source policy,
        // reject route: a firewall said no.
        (false, 9 | 10 | 13) | (true, 1 | 5 | 6) => Outcome::Prohibited,
        _ => Outcome::Unreachable,
    }
}

/// Passes a parse result on, counting frames we could not read.
#[inline(always)]
fn checked<T>(parsed: Result<T, Malformed>) -> Result<T, Malformed> {
    if parsed.is_err() {
        count(Counter::Malformed);
    }
    parsed
}

/// An inbound attempt's particulars beyond its packet.
#[derive(Clone, Copy)]
struct Attempt {
    probe: ProbeType,
    /// IP protocol.
    proto: u8,
    /// The remote peer's port (echo identifier for ICMP).
    remote_port: u16,
    /// Our port (0 for ICMP).
    local_port: u16,
    /// The number its answer will carry ([`parse::Tcp::answer_id`], the echo sequence, 0
    /// for UDP).
    id: u32,
    tcp_flags: u8,
    ifindex: u32,
}

impl Attempt {
    #[inline(always)]
    fn tcp(probe: ProbeType, tcp: &parse::Tcp, ifindex: u32) -> Self {
        Self {
            probe,
            proto: PROTO_TCP,
            remote_port: tcp.src_port,
            local_port: tcp.dst_port,
            id: tcp.answer_id(),
            tcp_flags: tcp.flags,
            ifindex,
        }
    }
}

/// Records an inbound attempt to a home address in the pending table. A subprogram: one
/// copy for every kind of attempt keeps the XDP frame small.
#[inline(never)]
fn attempt(ends: &Endpoints, a: &Attempt) {
    let Attempt {
        probe,
        proto,
        remote_port,
        local_port,
        id,
        tcp_flags,
        ifindex,
    } = *a;
    if !is_home(&ends.dst) {
        count(Counter::NotHome);
        return;
    }
    count(match probe {
        ProbeType::TcpSyn => Counter::Syns,
        ProbeType::TcpStealth | ProbeType::TcpAck => Counter::StealthIn,
        ProbeType::Udp => Counter::UdpIn,
        ProbeType::IcmpEcho => Counter::EchoIn,
    });
    let (index, tag) = Flow::to_us(ends, proto, remote_port, local_port).slot(id, pending_mask());
    let Some(slot) = PENDING.get_ptr_mut(index) else {
        return;
    };
    // A blind write: reading the slot first (to skip retransmissions, or to count
    // overwrites) would stall on a cache miss for every new flow, the cost that matters
    // under a flood. A retransmission rewrites the same attempt with a newer epoch; a
    // colliding flow overwrites the slot (the sweep reports the table's occupancy).
    // SAFETY: the pointer comes from a successful array lookup and stays valid for the
    // duration of the program; a concurrent writer on another CPU can at worst leave a torn
    // slot, whose tag then matches nothing. EPOCH is read, never written, here.
    unsafe {
        *slot = Pending {
            seen_epoch: read_volatile(&raw const EPOCH),
            remote: ends.src.bytes(),
            local: ends.dst.bytes(),
            ifindex,
            tag,
            remote_port,
            local_port,
            proto,
            probe: probe as u8,
            tcp_flags,
            ttl: ends.ttl,
        };
    }
}

/// Takes the pending attempt that `answer` answers, if there is one, and reports its
/// outcome. Returns whether there was one. A subprogram: it runs only for answers.
#[inline(never)]
fn settle(answer: &Flow, id: u32, outcome: Outcome, icmp_type: u8, icmp_code: u8) -> bool {
    let (index, tag) = answer.slot(id, pending_mask());
    let Some(slot) = PENDING.get_ptr_mut(index) else {
        return false;
    };
    // SAFETY: the pointer comes from a successful array lookup and stays valid for the
    // duration of the program. The slot is reported in place, not copied (the copy would
    // not fit the 512-byte stack on the ICMP path); an attempt written into the same slot
    // by another CPU in between would be reported in its stead, a race of nanoseconds
    // between two colliding flows. Racing answers can both take the slot: the OUTCOMES
    // insert turns the second into a repeat.
    unsafe {
        if (*slot).tag != tag {
            return false;
        }
        (*slot).tag = 0;
        report(&*slot, outcome, icmp_type, icmp_code);
    }
    true
}

/// Settles the attempt an outbound ICMP destination-unreachable quotes. Inlined into
/// `egress_icmp`: one frame fewer on the deepest call chain (egress, ICMP, settle, report,
/// allow-list), which must stay within 512 bytes of stack.
#[inline(always)]
fn settle_unreachable(start: usize, end: usize, icmp: &Icmp, v6: bool) {
    // Read back through a pointer, the offset has lost the bounds the verifier knew; this
    // check gives them back (no frame has 8 KiB of headers before a quote).
    let offset = icmp.quote_offset;
    if offset > 8192 {
        return;
    }
    let Ok(quoted) = parse_quoted(start, end, offset, v6) else {
        return;
    };
    let outcome = unreachable_outcome(v6, icmp.code);
    settle(
        &Flow::quoted(&quoted),
        quoted.answer_id,
        outcome,
        icmp.raw_type,
        icmp.code,
    );
}

/// Reports an ACK-bearing probe known only from our bare RST answering it.
#[inline(never)]
fn report_ack_probe(answer: &Flow, ifindex: u32) {
    let pending = answer.as_pending(ProbeType::TcpAck, TCP_ACK, ifindex);
    report(&pending, Outcome::Refused, 0, 0);
}

/// Reports an outcome: the first of its kind becomes an event, repeats bump its count.
/// Not inlined: a BPF subprogram with its own stack frame keeps the callers within the
/// 512-byte stack, and it runs only when an outcome is seen, not per packet.
#[inline(never)]
fn report(pending: &Pending, outcome: Outcome, icmp_type: u8, icmp_code: u8) {
    // The allow-lists are checked here, once per outcome, rather than per attempt: an LPM
    // lookup would cost the per-SYN path more than its whole budget.
    match exemption(pending) {
        Exemption::Allowed => {
            count(Counter::Allowed);
            return;
        }
        Exemption::Callback => {
            count(Counter::Callbacks);
            return;
        }
        Exemption::None => {}
    }
    let accepted = outcome == Outcome::Accepted;
    count(if accepted {
        Counter::Answered
    } else {
        Counter::Failed
    });
    // Successes are reported once per (source, destination host): enough for the
    // sequential hypothesis test, which looks at first contacts.
    let key = OutcomeKey {
        src_addr: pending.remote,
        dst_addr: pending.local,
        dst_port: if accepted { 0 } else { pending.local_port },
        proto: if accepted { 0 } else { pending.proto },
        probe: if accepted { 0 } else { pending.probe },
        outcome: outcome as u8,
        _pad: [0; 11],
    };
    // Look up before inserting: a repeat costs a lookup and an atomic add, not an insert.
    if let Some(repeats) = OUTCOMES.get_ptr_mut(&key) {
        // SAFETY: the value pointer comes from a successful lookup, is 8-byte aligned (map
        // values are) and valid for the program's duration; other CPUs only add atomically.
        unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(repeats, 1) };
        count(Counter::Repeats);
        return;
    }
    // BPF_NOEXIST: if another CPU inserted the key meanwhile, it also sent the event.
    if OUTCOMES.insert(&key, &1, u64::from(BPF_NOEXIST)).is_err() {
        return;
    }
    let Some(mut entry) = EVENTS.reserve::<ProbeEvent>(0) else {
        count(Counter::RingbufDrops);
        return;
    };
    entry.write(ProbeEvent {
        // SAFETY: bpf_ktime_get_ns has no preconditions.
        timestamp_ns: unsafe { bpf_ktime_get_ns() },
        src_addr: pending.remote,
        dst_addr: pending.local,
        ifindex: pending.ifindex,
        src_port: pending.remote_port,
        dst_port: pending.local_port,
        proto: pending.proto,
        probe: pending.probe,
        outcome: outcome as u8,
        tcp_flags: pending.tcp_flags,
        ttl: pending.ttl,
        icmp_type,
        icmp_code,
        _pad: 0,
    });
    entry.submit(wakeup_flags());
    count(Counter::EventsSent);
}

/// The flags of a ring-buffer submit made now. No wakeup per record: the default
/// (adaptive) notification raises an irq_work, a self-IPI, whenever the reader has caught
/// up, which is most of the time, and costs microseconds (a VM exit on a virtual machine).
/// The reader is woken when a backlog builds (by the record that takes the unread data
/// across the threshold, not by every record after it), and otherwise at most once per
/// WAKEUP_GAP_NS (1 ms by default), so the first record after a quiet spell is read at once and a scan's
/// records within about a millisecond, for at most a thousand wakeups a second. The
/// reader's drain timer catches the rest. Not inlined: the egress call chain is close to
/// the 512-byte stack limit, and this needs no stack of its own.
#[inline(never)]
fn wakeup_flags() -> u64 {
    // SAFETY: bpf_ktime_get_ns has no preconditions. Read again rather than passed in: a
    // value kept alive across the record's write costs the caller stack it does not have.
    let now = unsafe { bpf_ktime_get_ns() };
    // SAFETY: reading plain globals; volatile so the load-time value and other CPUs'
    // stores are seen. A race between CPUs costs at most one extra wakeup.
    let threshold = unsafe { read_volatile(&WAKEUP_BYTES) };
    // SAFETY: as above.
    let last_wakeup = unsafe { read_volatile(&raw const LAST_WAKEUP_NS) };
    let unread = EVENTS.query(u64::from(BPF_RB_AVAIL_DATA));
    let crossing = unread >= threshold && unread < threshold + RECORD_BYTES;
    // SAFETY: as above.
    let gap = unsafe { read_volatile(&WAKEUP_GAP_NS) };
    let due = now.wrapping_sub(last_wakeup) >= gap;
    if due {
        // SAFETY: as above.
        unsafe { core::ptr::write_volatile(&raw mut LAST_WAKEUP_NS, now) };
    }
    u64::from(if crossing || due {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    })
}

/// Why an outcome is not reported.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Exemption {
    None,
    /// Its source or local service is allow-listed.
    Allowed,
    /// Our hosts contacted its source shortly before: a callback.
    Callback,
}

/// Whether an outcome is exempt from reporting. A subprogram: its keys stay out of
/// `report`'s frame.
#[inline(never)]
fn exemption(pending: &Pending) -> Exemption {
    if allowed(pending) {
        return Exemption::Allowed;
    }
    let (index, tag) = host_slot(&Addr::from_bytes(pending.remote));
    // SAFETY: array slot from a successful lookup, read once; EPOCH and the global are
    // plain reads.
    let recent = CONTACTED.get_ptr(index).is_some_and(|slot| unsafe {
        let value = *slot;
        (value >> 32) as u32 == tag
            && (read_volatile(&raw const EPOCH) as u32).wrapping_sub(value as u32) as u64
                <= read_volatile(&CALLBACK_EPOCHS)
    });
    // Callbacks (active FTP data, media, chat) land on our high, ephemeral ports; a host we
    // contacted that probes our service ports is still a prober.
    if recent && pending.local_port >= 1024 {
        Exemption::Callback
    } else {
        Exemption::None
    }
}

/// True when the attempt's source, or its local service, is allow-listed.
#[inline(always)]
fn allowed(pending: &Pending) -> bool {
    if ALLOW_SOURCES.get(&Key::new(128, pending.remote)).is_some()
        || ALLOW_SERVICES.get(&Key::new(128, pending.local)).is_some()
    {
        return true;
    }
    let data = ServiceKey {
        port: pending.local_port.to_be_bytes(),
        addr: pending.local,
    };
    ALLOW_SERVICE_PORTS.get(&Key::new(144, data)).is_some()
}

/// The `CONTACTED` slot and tag of a remote host (tag never 0).
#[inline(always)]
fn host_slot(host: &Addr) -> (u32, u32) {
    let flow = Flow {
        remote: *host,
        local: Addr([0, 0]),
        remote_port: 0,
        local_port: 0,
        proto: 0,
    };
    flow.slot(0, ours_mask())
}

/// Notes that our hosts contacted `remote` now (a write only when the slot changes).
#[inline(always)]
fn note_contacted(remote: &Addr) {
    let (index, tag) = host_slot(remote);
    // SAFETY: reading a plain global.
    let epoch = unsafe { read_volatile(&raw const EPOCH) } as u32;
    let value = (u64::from(tag) << 32) | u64::from(epoch);
    if let Some(slot) = CONTACTED.get_ptr_mut(index) {
        // SAFETY: array slot from a successful lookup; a racing write leaves one of two.
        unsafe {
            if *slot != value {
                *slot = value;
            }
        }
    }
}

/// Remembers one of our own outbound attempts.
#[inline(always)]
fn put_ours(flow: &Flow, id: u32) {
    let (index, tag) = flow.slot(id, ours_mask());
    if let Some(slot) = OURS.get_ptr_mut(index) {
        // SAFETY: array slot from a successful lookup; a racing write leaves one of two tags.
        unsafe {
            if *slot != tag {
                *slot = tag;
            }
        }
    }
}

/// True when `flow` is one of our recent outbound attempts with answer id `id`.
#[inline(always)]
fn is_ours(flow: &Flow, id: u32) -> bool {
    let (index, tag) = flow.slot(id, ours_mask());
    // SAFETY: array slot from a successful lookup, read once.
    OURS.get_ptr(index)
        .is_some_and(|slot| unsafe { *slot } == tag)
}

/// Like [`is_ours`], and forgets the attempt (a TCP attempt is answered once).
#[inline(always)]
fn take_ours(flow: &Flow, id: u32) -> bool {
    let (index, tag) = flow.slot(id, ours_mask());
    let Some(slot) = OURS.get_ptr_mut(index) else {
        return false;
    };
    // SAFETY: array slot from a successful lookup.
    unsafe {
        if *slot != tag {
            return false;
        }
        *slot = 0;
    }
    true
}

/// True when `addr` is in a home net (every address is, when none are configured). A
/// subprogram: its copies of the prefixes stay out of the callers' frames.
#[inline(never)]
fn is_home(addr: &Addr) -> bool {
    // SAFETY: reading plain globals; volatile so the load-time values are used.
    let count = unsafe { read_volatile(&HOME_NET_COUNT) } as usize;
    if count == 0 {
        return true;
    }
    let [a0, a1] = addr.0;
    for net in HOME_NETS.iter().take(count) {
        // SAFETY: as above; each element is an aligned u64.
        let [n0, n1, m0, m1] = unsafe {
            [
                read_volatile(&net[0]),
                read_volatile(&net[1]),
                read_volatile(&net[2]),
                read_volatile(&net[3]),
            ]
        };
        if a0 & m0 == n0 && a1 & m1 == n1 {
            return true;
        }
    }
    false
}

#[inline(always)]
fn pending_mask() -> u32 {
    // SAFETY: reading a plain global; volatile so the load-time value is used.
    unsafe { read_volatile(&PENDING_MASK) }
}

#[inline(always)]
fn ours_mask() -> u32 {
    // SAFETY: reading a plain global; volatile so the load-time value is used.
    unsafe { read_volatile(&OURS_MASK) }
}

/// The interface a TC program runs on.
#[inline(always)]
fn ifindex(ctx: &TcContext) -> u32 {
    let skb = ctx.as_ptr().cast::<__sk_buff>();
    // SAFETY: a TC program's context is the kernel's `__sk_buff`, valid for the program's
    // duration; `ifindex` is a readable field of it.
    unsafe { (*skb).ifindex }
}

/// A flow seen from the home side: `remote` made the attempt, `local` is ours.
struct Flow {
    remote: Addr,
    local: Addr,
    remote_port: u16,
    local_port: u16,
    proto: u8,
}

impl Flow {
    /// The flow of a packet we send: `local` is its source.
    #[inline(always)]
    fn from_us(ends: &Endpoints, proto: u8, src_port: u16, dst_port: u16) -> Self {
        Self {
            remote: ends.dst,
            local: ends.src,
            remote_port: dst_port,
            local_port: src_port,
            proto,
        }
    }

    /// The flow of a packet we receive: `remote` is its source.
    #[inline(always)]
    fn to_us(ends: &Endpoints, proto: u8, src_port: u16, dst_port: u16) -> Self {
        Self {
            remote: ends.src,
            local: ends.dst,
            remote_port: src_port,
            local_port: dst_port,
            proto,
        }
    }

    /// The inbound attempt an ICMP error quotes (its source is the remote peer).
    #[inline(always)]
    fn quoted(q: &Quoted) -> Self {
        Self {
            remote: q.src,
            local: q.dst,
            remote_port: q.src_port,
            local_port: q.dst_port,
            proto: q.proto,
        }
    }

    /// A pending record for an attempt known only from our answer to it.
    #[inline(always)]
    fn as_pending(&self, probe: ProbeType, tcp_flags: u8, ifindex: u32) -> Pending {
        Pending {
            seen_epoch: 0,
            remote: self.remote.bytes(),
            local: self.local.bytes(),
            ifindex,
            tag: 0,
            remote_port: self.remote_port,
            local_port: self.local_port,
            proto: self.proto,
            probe: probe as u8,
            tcp_flags,
            ttl: 0,
        }
    }

    /// The slot index of this flow (masked by `mask`) and the tag that binds the slot to
    /// this flow and to the id its answer carries. The tag is never 0 (0 marks an empty
    /// slot).
    ///
    /// One multiply per word, keyed by a random per-load seed so that colliding flows cannot
    /// be computed in advance, then one finaliser: 6 dependent multiplies on the per-SYN path.
    #[inline(always)]
    fn slot(&self, id: u32, mask: u32) -> (u32, u32) {
        let [r0, r1] = self.remote.0;
        let [l0, l1] = self.local.0;
        let ports = (u64::from(self.proto) << 32)
            | (u64::from(self.remote_port) << 16)
            | u64::from(self.local_port);
        // SAFETY: reading a plain global; volatile so the load-time value is used.
        let mut h = unsafe { read_volatile(&HASH_SEED) };
        for word in [r0, r1, l0, l1, ports] {
            h = (h ^ word)
                .wrapping_mul(0x9e37_79b9_7f4a_7c15)
                .rotate_left(29);
        }
        h = (h ^ (h >> 32)).wrapping_mul(0xd6e8_feb8_6659_fd93);
        h ^= h >> 32;
        let index = (h as u32) & mask;
        // Multiplying by an odd constant is a bijection: two ids of one flow never share a
        // tag (but for the low bit, which marks the slot as used).
        let tag = ((h >> 32) as u32 ^ id.wrapping_mul(0x9e37_79b1)) | 1;
        (index, tag)
    }
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
