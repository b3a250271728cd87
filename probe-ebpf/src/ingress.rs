//! Ingress (XDP): blocked sources dropped (`--block`; answers to our own attempts lift an
//! automatic block), inbound attempts to home addresses
//! noted in the pending table, answers to our own attempts told from backscatter.
//! Established traffic is done after one TCP flags byte.

use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_PASS},
    helpers::bpf_ktime_get_ns,
    programs::XdpContext,
};
use core::intrinsics::{AtomicOrdering, atomic_xadd};
use probe_common::{
    Block, Counter, IPPROTO_ICMP as PROTO_ICMP, IPPROTO_ICMPV6 as PROTO_ICMPV6,
    IPPROTO_TCP as PROTO_TCP, IPPROTO_UDP as PROTO_UDP, ProbeType, RUNTIME_MANUAL_BLOCKS,
};

use crate::{
    early,
    maps::{BLOCKED, BLOCKED_MANUAL, RUNTIME, blocking, checked, count, may_be_blocked},
    ours::{is_ours, note_peer, take_ours},
    parse::{
        Addr, Headers, IcmpKind, Malformed, Shape, TCP_ACK, TCP_RST, TCP_SYN, endpoints,
        ether_addr, icmp, locate, locate_in, network, source, tcp, tcp_flags, tcp_head, udp,
    },
    pending::{Attempt, Flow, NOT_EARLY, attempt, half_open, record},
};

#[inline(always)]
pub(crate) fn try_ingress(ctx: &XdpContext) -> Result<u32, Malformed> {
    count(Counter::IngressPackets);
    let (start, end) = (ctx.data(), ctx.data_end());
    // The block decision first, on the fixed IP header's source alone: no option,
    // extension header or transport header from a blocked source is ever parsed. The
    // link-layer header is read once, for both.
    let net = network(start, end);
    if blocking()
        && let Ok(net) = net
        && let Some(src) = source(start, end, net)
        && may_be_blocked(&src)
        && blocked(start, end, &src)
    {
        count(Counter::Blocked);
        return Ok(XDP_DROP);
    }
    let Some(h) = checked(net.and_then(|net| locate_in(start, end, net)))? else {
        return Ok(XDP_PASS);
    };
    if h.shape == Shape::LongChain {
        count(Counter::LongChains);
    }
    if !h.transport {
        return Ok(XDP_PASS);
    }
    let ifindex = ctx.ingress_ifindex() as u32;
    let for_early = match h.proto {
        PROTO_TCP => {
            let flags = match tcp_flags(start, end, &h) {
                Ok(flags) => flags,
                // A first fragment cut before the flags (nmap -f): the kernel reassembles
                // and answers it, so it is recorded from what it holds.
                Err(_) if h.shape == Shape::FirstFragment => {
                    ingress_fragment(start, end, &h, ifindex);
                    return Ok(XDP_PASS);
                }
                Err(err) => {
                    count(Counter::Malformed);
                    return Err(err);
                }
            };
            trace!(ctx, "in: tcp flags {:x}", flags);
            // Established traffic (ACK without SYN or RST) is the common case: done here,
            // after one flags byte.
            if flags & (TCP_SYN | TCP_RST) != 0 || flags & TCP_ACK == 0 {
                ingress_tcp(start, end, &h, flags, ifindex)
            } else {
                NOT_EARLY
            }
        }
        PROTO_UDP => ingress_udp(start, end, &h, ifindex),
        PROTO_ICMP | PROTO_ICMPV6 => {
            ingress_icmp(start, end, &h, ifindex);
            NOT_EARLY
        }
        _ => NOT_EARLY,
    };
    // An attempt of a source one failure from the verdict, or a stealth segment: known to
    // fail, it is reported now, and when its verdict blocked the source (`--block`) the
    // probe is dropped. Here, at the top of the program, so that the report's call chain
    // has the stack it has on the egress side.
    if for_early != NOT_EARLY && early::failure(ctx, for_early) {
        return Ok(XDP_DROP);
    }
    Ok(XDP_PASS)
}

/// True when the frame's source is blocked and its block has not expired; counts the
/// frame on the block. An expired automatic block is removed here, by its source's first
/// frame (manual blocks are userspace's to remove).
///
/// An automatically blocked source that answers a connection this host started (a
/// SYN-ACK acknowledging our SYN, a UDP reply to our datagram's ports) is one we talk to:
/// its block is lifted and it becomes a peer. A manual block stays: the operator said so.
#[inline(never)]
pub(crate) fn blocked(start: usize, end: usize, src: &Addr) -> bool {
    let (block, manual) = match BLOCKED.get_ptr_mut(src) {
        Some(block) => (block, false),
        None => match manual_block(src) {
            Some(block) => (block, true),
            None => return false,
        },
    };
    // SAFETY: bpf_ktime_get_ns has no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    // SAFETY: a pointer from a successful lookup; the entry stays valid during this run.
    if now >= unsafe { (*block).until_ns } {
        if !manual {
            let _ = BLOCKED.remove(src);
        }
        return false;
    }
    if !manual && answers_ours(start, end) {
        let _ = BLOCKED.remove(src);
        note_peer(src);
        count(Counter::BlocksLifted);
        return false;
    }
    // SAFETY: as above; the counter is 8-byte aligned (map values are), and other CPUs
    // only add to it atomically.
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(&raw mut (*block).packets, 1) };
    true
}

/// The manual block of `src`, when manual blocks are in force (one array read otherwise).
#[inline(always)]
pub(crate) fn manual_block(src: &Addr) -> Option<*mut Block> {
    // SAFETY: a pointer from a successful lookup of an array slot, read once.
    let manual = RUNTIME
        .get_ptr(RUNTIME_MANUAL_BLOCKS)
        .is_some_and(|n| unsafe { *n } != 0);
    if !manual {
        return None;
    }
    BLOCKED_MANUAL.get_ptr_mut(src)
}

/// True when the frame answers one of our own recent attempts: a SYN-ACK acknowledging
/// our SYN, or a UDP datagram from the port we sent to, to the port we sent from. Read
/// only for blocked sources.
#[inline(always)]
fn answers_ours(start: usize, end: usize) -> bool {
    let Ok(Some(h)) = locate(start, end) else {
        return false;
    };
    let Ok(ends) = endpoints(start, end, &h) else {
        return false;
    };
    if !h.transport {
        return false;
    }
    match h.proto {
        PROTO_TCP => {
            let Ok(tcp) = tcp(start, end, &h) else {
                return false;
            };
            tcp.flags & (TCP_SYN | TCP_ACK | TCP_RST) == TCP_SYN | TCP_ACK
                && is_ours(
                    &Flow::to_us(&ends, h.proto, tcp.src_port, tcp.dst_port),
                    tcp.ack,
                )
        }
        PROTO_UDP => udp(start, end, &h).is_ok_and(|(src_port, dst_port)| {
            is_ours(&Flow::to_us(&ends, h.proto, src_port, dst_port), 0)
        }),
        _ => false,
    }
}

/// An inbound TCP segment that is not established traffic: an attempt (SYN, or a stealth
/// segment without SYN, ACK or RST), or an answer to an attempt (ours, or backscatter).
/// Returns what [`attempt`] does, [`NOT_EARLY`] for an answer. The attempt is recorded
/// inline ([`record`]).
#[inline(never)]
pub(crate) fn ingress_tcp(start: usize, end: usize, h: &Headers, flags: u8, ifindex: u32) -> u32 {
    let Ok(tcp) = checked(tcp(start, end, h)) else {
        return NOT_EARLY;
    };
    // Classify before reading the addresses: inbound aborts (RST, or RST|ACK with a
    // sequence number) answer no SYN and need nothing more.
    let probe = match flags & (TCP_SYN | TCP_ACK | TCP_RST) {
        TCP_SYN => Some(ProbeType::TcpSyn),
        // No SYN, ACK or RST: only probes look like this (FIN, NULL, Xmas, ...).
        0 => Some(ProbeType::TcpStealth),
        // An answer to a connection attempt: ours, or backscatter.
        f if f == TCP_SYN | TCP_ACK || (f == TCP_RST | TCP_ACK && tcp.seq == 0) => None,
        // A reset before any data: perhaps a half-open scanner's to our SYN-ACK (RST), or
        // a connect scanner's abort of the connection it just made (RST|ACK, its sequence
        // number still the one our SYN-ACK acknowledged).
        f if f == TCP_RST || f == TCP_RST | TCP_ACK => {
            if let Ok(ends) = checked(endpoints(start, end, h)) {
                half_open(
                    &Flow::to_us(&ends, h.proto, tcp.src_port, tcp.dst_port),
                    tcp.seq,
                );
            }
            return NOT_EARLY;
        }
        _ => return NOT_EARLY,
    };
    let Ok(ends) = checked(endpoints(start, end, h)) else {
        return NOT_EARLY;
    };
    match probe {
        Some(probe) => record(
            &ends,
            &Attempt::tcp(probe, &tcp, ifindex, ether_addr(start, end, false)),
        ),
        None => {
            let flow = Flow::to_us(&ends, h.proto, tcp.src_port, tcp.dst_port);
            if !take_ours(&flow, tcp.ack) {
                count(Counter::Backscatter);
            } else if flags & TCP_RST == 0 {
                // A SYN-ACK to our SYN: a host we talk to.
                note_peer(&ends.src);
            }
            NOT_EARLY
        }
    }
}

/// The first fragment of a TCP segment, cut before its flags: an attempt by its ports,
/// whose answer (our RST|ACK to the reassembled segment, were it a SYN or a FIN)
/// acknowledges its sequence number plus one.
#[inline(never)]
pub(crate) fn ingress_fragment(start: usize, end: usize, h: &Headers, ifindex: u32) {
    let (Ok(head), Ok(ends)) = (
        checked(tcp_head(start, end, h)),
        checked(endpoints(start, end, h)),
    ) else {
        return;
    };
    let fragment = Attempt {
        probe: ProbeType::TcpFragment,
        proto: PROTO_TCP,
        remote_port: head.src_port,
        local_port: head.dst_port,
        id: head.seq.wrapping_add(1),
        tcp_flags: 0,
        ifindex,
        mac: ether_addr(start, end, false),
    };
    // Never reported early (not a kind `early` knows).
    attempt(&ends, &fragment);
}

/// An inbound UDP datagram: an attempt, unless it replies to one of ours. Returns what
/// [`attempt`] does, [`NOT_EARLY`] for a reply.
#[inline(never)]
pub(crate) fn ingress_udp(start: usize, end: usize, h: &Headers, ifindex: u32) -> u32 {
    let (Ok((src_port, dst_port)), Ok(ends)) = (
        checked(udp(start, end, h)),
        checked(endpoints(start, end, h)),
    ) else {
        return NOT_EARLY;
    };
    if is_ours(&Flow::to_us(&ends, h.proto, src_port, dst_port), 0) {
        note_peer(&ends.src);
        return NOT_EARLY;
    }
    let udp = Attempt {
        probe: ProbeType::Udp,
        proto: h.proto,
        remote_port: src_port,
        local_port: dst_port,
        id: 0,
        tcp_flags: 0,
        ifindex,
        mac: ether_addr(start, end, false),
    };
    attempt(&ends, &udp)
}

/// An inbound ICMP/ICMPv6 message: echo requests are attempts.
#[inline(never)]
pub(crate) fn ingress_icmp(start: usize, end: usize, h: &Headers, ifindex: u32) {
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
        mac: ether_addr(start, end, false),
    };
    // Never reported early (not a kind `early` knows).
    attempt(&ends, &echo);
}
