//! Egress (TC): this host's answers (and, on a gateway, those of the hosts behind it) settle
//! the pending attempts they answer; our own outbound attempts are remembered, so their
//! answers are not probes and their hosts may call back (only those we started: never a
//! host we merely answered).

use aya_ebpf::{EbpfContext as _, bindings::__sk_buff, programs::TcContext};
use probe_common::{
    Counter, IPPROTO_ICMP as PROTO_ICMP, IPPROTO_ICMPV6 as PROTO_ICMPV6,
    IPPROTO_SCTP as PROTO_SCTP, IPPROTO_TCP as PROTO_TCP, IPPROTO_UDP as PROTO_UDP, Outcome,
    ProbeType,
};

use crate::{
    autoblock::{answers_blocked, answers_just_blocked},
    maps::{blocking, checked, count},
    ours::{is_home, note_contacted, put_ours},
    parse::{
        Headers, IcmpKind, Malformed, TCP_ACK, TCP_RST, TCP_SYN, endpoints, ether_addr, icmp,
        locate, sctp, tcp, tcp_flags, udp,
    },
    pending::{Flow, Unrecorded, report_answered, settle, settle_unreachable},
};

/// Looks at one outbound packet; true when it must be dropped: one of our answers to a
/// blocked source (`--block`).
#[inline(always)]
pub(crate) fn try_egress(ctx: &TcContext) -> Result<bool, Malformed> {
    count(Counter::EgressPackets);
    let (start, end) = (ctx.data(), ctx.data_end());
    let Some(h) = checked(locate(start, end))? else {
        return Ok(false);
    };
    if !h.transport {
        return Ok(false);
    }
    match h.proto {
        PROTO_TCP => {
            let flags = checked(tcp_flags(start, end, &h))? & (TCP_SYN | TCP_ACK | TCP_RST);
            trace!(ctx, "out: tcp flags {:x}", flags);
            if flags & TCP_RST != 0 {
                count(Counter::RstsOut);
            } else if flags != TCP_SYN && flags != TCP_SYN | TCP_ACK {
                // Established traffic: the common case, done after one flags byte.
                return Ok(false);
            }
            // An answer (RST, SYN-ACK) to a blocked source tells it nothing. (`blocking()`
            // here, not only inside: with `--block` off no call is made.)
            if flags != TCP_SYN && blocking() && answers_blocked(start, end, &h) {
                count(Counter::AnswersDropped);
                return Ok(true);
            }
            // Counted here, so the subprogram's value is used (an unused one is optimised
            // away, and R0 may then hold a stack pointer at its exit, which the verifier
            // refuses).
            if egress_tcp(start, end, &h, flags, ifindex(ctx)) {
                count(Counter::Unseen);
            }
            // The answer that made the verdict which blocked its destination.
            if flags != TCP_SYN && blocking() && answers_just_blocked(start, end, &h) {
                count(Counter::AnswersDropped);
                return Ok(true);
            }
        }
        PROTO_UDP => egress_udp(start, end, &h),
        PROTO_ICMP | PROTO_ICMPV6 => {
            if blocking() && answers_blocked(start, end, &h) {
                count(Counter::AnswersDropped);
                return Ok(true);
            }
            egress_icmp(start, end, &h, ifindex(ctx));
            if blocking() && answers_just_blocked(start, end, &h) {
                count(Counter::AnswersDropped);
                return Ok(true);
            }
        }
        PROTO_SCTP if egress_sctp(start, end, &h, ifindex(ctx)) => count(Counter::Unseen),
        _ => {}
    }
    Ok(false)
}

/// An outbound SYN (ours), SYN-ACK or RST (an answer to an inbound attempt); true when
/// an RST|ACK proved an attempt nobody recorded (reported here, counted by the caller).
#[inline(never)]
pub(crate) fn egress_tcp(start: usize, end: usize, h: &Headers, flags: u8, ifindex: u32) -> bool {
    let (Ok(tcp), Ok(ends)) = (
        checked(tcp(start, end, h)),
        checked(endpoints(start, end, h)),
    ) else {
        return false;
    };
    let answer = Flow::from_us(&ends, h.proto, tcp.src_port, tcp.dst_port);
    if flags == TCP_SYN {
        // Our own attempt: remember it, so its answers are not taken for backscatter, and
        // its host, so that a callback from it is not taken for a probe.
        put_ours(&answer, tcp.answer_id());
        note_contacted(&answer.remote);
        false
    } else if flags == TCP_SYN | TCP_ACK {
        if !settle(&answer, tcp.ack, Outcome::Accepted, 0, 0) && !is_home(&ends.src) {
            count(Counter::ForeignAnswers);
        }
        false
    } else {
        // An RST with ACK acknowledges the attempt; one without answers a segment that had
        // ACK set and carries that segment's ack number as its seq.
        let id = if flags & TCP_ACK != 0 {
            tcp.ack
        } else {
            tcp.seq
        };
        if settle(&answer, id, Outcome::Refused, 0, 0) {
            return false;
        }
        if !is_home(&ends.src) {
            count(Counter::ForeignAnswers);
            return false;
        }
        let probe = if flags & TCP_ACK == 0 {
            // No pending attempt: an ACK-bearing segment matched no connection here.
            // Recording every inbound ACK would tax established traffic, so these probes
            // are known from our answer alone.
            count(Counter::AckProbes);
            ProbeType::TcpAck
        } else if tcp.seq == 0 {
            // An RST|ACK with sequence 0 answers a segment without ACK (a SYN, a stealth
            // probe) that the ingress side never recorded: fragments it could not read, or
            // a slot another flow took. One answer, one attempt: never counted twice.
            ProbeType::TcpUnseen
        } else {
            return false;
        };
        // Our answer goes to the link-layer address the probe came from.
        let mac = ether_addr(start, end, true);
        let what = Unrecorded::refused(probe, ifindex, mac, ends.version);
        report_answered(&answer, &what);
        true
    }
}

/// An outbound SCTP packet: an ABORT as its first chunk answers an INIT or COOKIE ECHO to
/// a port nothing listens on (nmap -sY, -sZ), an attempt the ingress side does not record;
/// true when it was reported (counted by the caller, so the value is used).
#[inline(never)]
pub(crate) fn egress_sctp(start: usize, end: usize, h: &Headers, ifindex: u32) -> bool {
    const ABORT: u8 = 6;
    let (Ok((src_port, dst_port, chunk)), Ok(ends)) = (
        checked(sctp(start, end, h)),
        checked(endpoints(start, end, h)),
    ) else {
        return false;
    };
    if chunk != ABORT || !is_home(&ends.src) {
        return false;
    }
    let mac = ether_addr(start, end, true);
    let what = Unrecorded::refused(ProbeType::Sctp, ifindex, mac, ends.version);
    report_answered(&Flow::from_us(&ends, h.proto, src_port, dst_port), &what);
    true
}

/// An outbound UDP datagram: an answer to an inbound attempt, and one of ours.
#[inline(never)]
pub(crate) fn egress_udp(start: usize, end: usize, h: &Headers) {
    let (Ok((src_port, dst_port)), Ok(ends)) = (
        checked(udp(start, end, h)),
        checked(endpoints(start, end, h)),
    ) else {
        return;
    };
    let flow = Flow::from_us(&ends, h.proto, src_port, dst_port);
    let reply = settle(&flow, 0, Outcome::Accepted, 0, 0);
    put_ours(&flow, 0);
    // Only a datagram this host started contacts its host: a reply to one of theirs (a
    // DNS or NTP answer) must not let its host probe our high ports unreported.
    if !reply {
        note_contacted(&flow.remote);
    }
}

/// An outbound ICMP/ICMPv6 message: echo replies and destination-unreachable errors
/// answer inbound attempts.
#[inline(never)]
pub(crate) fn egress_icmp(start: usize, end: usize, h: &Headers, ifindex: u32) {
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
        IcmpKind::Unreachable | IcmpKind::UnknownNextHeader => {
            settle_unreachable(start, end, &icmp, h.v6, ifindex);
        }
        _ => {}
    }
}

/// What an ICMP destination-unreachable code says about the attempt it quotes.
#[inline(always)]
pub(crate) fn unreachable_outcome(v6: bool, code: u8) -> Outcome {
    match (v6, code) {
        // Port unreachable: nothing listens, the port is closed.
        (false, 3) | (true, 4) => Outcome::Refused,
        // Communication administratively prohibited (host, net, filter), source policy,
        // reject route: a firewall said no.
        (false, 9 | 10 | 13) | (true, 1 | 5 | 6) => Outcome::Prohibited,
        _ => Outcome::Unreachable,
    }
}

/// The interface a TC program runs on.
#[inline(always)]
pub(crate) fn ifindex(ctx: &TcContext) -> u32 {
    let skb = ctx.as_ptr().cast::<__sk_buff>();
    // SAFETY: a TC program's context is the kernel's `__sk_buff`, valid for the program's
    // duration; `ifindex` is a readable field of it.
    unsafe { (*skb).ifindex }
}
