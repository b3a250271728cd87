//! The frames the bench's paths run on (198.18.0.0/15 and 2001:db8::/32 only): each
//! path's packets, by round and index, and the unmeasured packets that put the programs'
//! tables in the state a path needs.

use std::net::IpAddr;

use super::{
    DISTINCT, Prog,
    common::{Frame, SYN, v4, v6},
};

/// A SYN of a flow no earlier packet used.
pub(crate) fn new_syn(round: usize, i: usize, ipv6: bool) -> Vec<u8> {
    let n = round * DISTINCT + i;
    let (src, dst): (IpAddr, IpAddr) = if ipv6 {
        (
            v6(&format!("2001:db8:1::{:x}:{:x}", n >> 16, n & 0xffff)),
            v6("2001:db8::2"),
        )
    } else {
        (v4([198, 19, (n >> 8) as u8, n as u8]), v4([198, 18, 0, 2]))
    };
    Frame::tcp(src, 10_000 + (n / 65_536) as u16, dst, 443, SYN, n as u32).bytes()
}

/// A scan's SYN: one source per round (198.19.200.0/24), a new port per packet.
pub(crate) fn scan_syn(round: usize, i: usize) -> Frame {
    Frame::tcp(
        v4([198, 19, 200, round as u8]),
        50_000,
        v4([198, 18, 0, 2]),
        1 + i as u16,
        SYN,
        i as u32,
    )
}

/// Runs `probe` (a SYN) through XDP, unmeasured; returns our RST refusing it.
pub(crate) fn refused(ingress: Prog<'_>, probe: Frame) -> anyhow::Result<Vec<Vec<u8>>> {
    ingress.run(&probe.bytes(), 1)?;
    Ok(vec![probe.refusal().bytes()])
}

/// The frames of a verdict: a new source per packet (198.19.128.0/17), its first three
/// SYNs refused unmeasured; with `answer`, its fourth SYN run too and the RST of the fourth
/// returned, without it the fourth SYN itself (the early verdict's frame).
pub(crate) fn verdict_frames(
    ingress: Prog<'_>,
    egress: Prog<'_>,
    round: usize,
    i: usize,
    answer: bool,
) -> anyhow::Result<Vec<Vec<u8>>> {
    let src = v4([198, 19, (128 + 16 * round + i / 256) as u8, i as u8]);
    let syn = |port: u16| Frame::tcp(src, 51_000, v4([198, 18, 0, 2]), port, SYN, u32::from(port));
    for port in 1..=3 {
        ingress.run(&syn(port).bytes(), 1)?;
        egress.run(&syn(port).refusal().bytes(), 1)?;
    }
    if !answer {
        // The fourth SYN itself is what is measured.
        return Ok(vec![syn(4).bytes()]);
    }
    ingress.run(&syn(4).bytes(), 1)?;
    Ok(vec![syn(4).refusal().bytes()])
}

/// A SYN to port `1 + i` from a source of its own per packet (198.19.16.0/20 and up, a
/// block per round).
pub(crate) fn new_source_probe(round: usize, i: usize) -> Frame {
    new_source_probe_in(19, round, i)
}

/// [`new_source_probe`]'s SYN from 198.`net`.x.y instead.
pub(crate) fn new_source_probe_in(net: u8, round: usize, i: usize) -> Frame {
    Frame::tcp(
        v4([198, net, (16 * (round + 1) + i / 256) as u8, i as u8]),
        50_000,
        v4([198, 18, 0, 2]),
        1 + i as u16,
        SYN,
        i as u32,
    )
}

/// A SYN to port `1 + i` from a source of its own per round; `attempt` > 0 makes a new
/// attempt (another sequence number) of an earlier one.
pub(crate) fn settle_probe(round: usize, i: usize, attempt: u32) -> Frame {
    Frame::tcp(
        v4([198, 19, 200 + round as u8, 1]),
        50_000,
        v4([198, 18, 0, 2]),
        1 + i as u16,
        SYN,
        i as u32 + attempt * 1_000_000,
    )
}
