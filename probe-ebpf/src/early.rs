//! The verdict on the probe itself. For a source one first failure from the verdict
//! (armed, see [`crate::suspects`]), an attempt XDP knows will fail is reported when it
//! arrives, before the stack answers it: a stealth segment (no SYN, ACK or RST: a closed
//! port answers RST, an open one nothing), or a SYN or datagram to a local port no socket
//! listens on (`bpf_sk_lookup_tcp`/`_udp` in this namespace: the stack will refuse it).
//! A stealth segment is reported so from any source, armed or not: it belongs to no
//! connection, so it fails whatever the port, and an open port's silence would otherwise
//! count only at the expiry, seconds later: in the lab, an nmap -sN whose 3rd to 5th
//! probes hit open ports was decided at its 7th probe, not its 4th. It costs a socket
//! lookup for each such segment; no client sends one.
//! When that failure is the verdict, the kernel decides in this XDP run; with `--block`
//! it blocks the source and XDP drops the probe, so the scanner gets no answer to the
//! probe that decided. The answer the stack sends otherwise, or the attempt's expiry,
//! only clears its slot ([`probe_common::PENDING_REPORTED`]).
//!
//! Local means an address of the watched interfaces (`LOCAL`, kept by userspace): on a
//! gateway, the hosts behind it answer for themselves and their probes wait for the
//! answer. A local port forwarded elsewhere by netfilter (DNAT) with nothing listening
//! here is taken for closed: a source must already be one failure from the verdict for
//! that to count (docs/design.md).

use aya_ebpf::{
    bindings::{
        bpf_sock_tuple, bpf_sock_tuple__bindgen_ty_1__bindgen_ty_1,
        bpf_sock_tuple__bindgen_ty_1__bindgen_ty_2,
    },
    helpers::generated::{bpf_sk_lookup_tcp, bpf_sk_lookup_udp, bpf_sk_release},
    programs::XdpContext,
};
use core::{ffi::c_void, mem::size_of};
use probe_common::{
    Counter, IPPROTO_TCP as PROTO_TCP, IPPROTO_UDP as PROTO_UDP, Outcome, PENDING_REPORTED,
    Pending, ProbeType,
};

use crate::{
    autoblock::take_blocked_now,
    maps::{LOCAL, PENDING, count},
    parse::Addr,
    report::report,
};

/// Looks at the attempt XDP just wrote into pending slot `index` (an armed source's, or a
/// stealth segment): when it is known to fail, reports its failure now and marks the
/// slot; true when that failure was the verdict and blocked the source (`--block`): the
/// probe is to be dropped, and its slot is cleared (no answer will come). Not inlined: the
/// socket tuple stays out of the main frame, and it runs only for armed sources and
/// stealth segments.
#[inline(never)]
pub(crate) fn failure(ctx: &XdpContext, index: u32) -> bool {
    let Some(slot) = PENDING.get_ptr_mut(index) else {
        return false;
    };
    // SAFETY: a pointer from a successful array lookup, valid for the program's run. The
    // slot is read and reported in place, as `settle` does; another CPU writing a
    // colliding attempt into it meanwhile is a race of nanoseconds, and the tag written
    // back marks the slot either way.
    let pending = unsafe { &mut *slot };
    let probe = pending.probe;
    let kind_known = probe == ProbeType::TcpSyn as u8
        || probe == ProbeType::TcpStealth as u8
        || probe == ProbeType::Udp as u8;
    if !kind_known || pending.tag == 0 || LOCAL.get_ptr(&Addr::from_bytes(pending.local)).is_none()
    {
        return false;
    }
    let listening = socket_at(ctx, pending);
    let outcome = if probe == ProbeType::TcpStealth as u8 {
        // An open port drops a stealth segment unanswered: a failure too.
        if listening {
            Outcome::Unanswered
        } else {
            Outcome::Refused
        }
    } else if listening {
        return false;
    } else {
        Outcome::Refused
    };
    // The ICMP error a closed UDP port answers with: port unreachable.
    let (icmp_type, icmp_code) = match (probe == ProbeType::Udp as u8, pending.ip_version) {
        (true, 6) => (1, 4),
        (true, _) => (3, 3),
        _ => (0, 0),
    };
    count(Counter::EarlyFailures);
    pending.flags |= PENDING_REPORTED;
    report(pending, outcome, icmp_type, icmp_code);
    if take_blocked_now(&Addr::from_bytes(pending.remote)) {
        // The probe that decided gets no answer: no attempt to wait for.
        pending.tag = 0;
        count(Counter::Blocked);
        return true;
    }
    false
}

/// True when a socket of this namespace would take the attempt: a listener (or, for TCP,
/// a connection of the same four-tuple), or a UDP socket bound to its port.
#[inline(always)]
fn socket_at(ctx: &XdpContext, pending: &Pending) -> bool {
    let (src, dst) = (
        Addr::from_bytes(pending.remote).0,
        Addr::from_bytes(pending.local).0,
    );
    let (sport, dport) = (pending.remote_port.to_be(), pending.local_port.to_be());
    // Zeroed whole first: the IPv4 form leaves most of the union unwritten, and the
    // verifier wants every byte the helper reads initialised.
    // SAFETY: a plain C struct of integers: all zeroes is a valid value.
    let mut tuple: bpf_sock_tuple = unsafe { core::mem::zeroed() };
    let size = if pending.ip_version == 6 {
        // SAFETY: writing plain integers into the union's IPv6 form; its address words are
        // the 16 network-order bytes as they are.
        unsafe {
            let ipv6 = &raw mut tuple.__bindgen_anon_1.ipv6;
            (&raw mut (*ipv6).saddr)
                .cast::<[u64; 2]>()
                .write_unaligned(src);
            (&raw mut (*ipv6).daddr)
                .cast::<[u64; 2]>()
                .write_unaligned(dst);
            (&raw mut (*ipv6).sport).write(sport);
            (&raw mut (*ipv6).dport).write(dport);
        }
        size_of::<bpf_sock_tuple__bindgen_ty_1__bindgen_ty_2>()
    } else {
        // The IPv4 address is the last four bytes of the mapped form: the high half of
        // the second word on this little-endian target (bpfel), kept in network order.
        let v4 = |word: u64| (word >> 32) as u32;
        // SAFETY: as above, the union's IPv4 form.
        unsafe {
            let ipv4 = &raw mut tuple.__bindgen_anon_1.ipv4;
            (&raw mut (*ipv4).saddr).write(v4(src[1]));
            (&raw mut (*ipv4).daddr).write(v4(dst[1]));
            (&raw mut (*ipv4).sport).write(sport);
            (&raw mut (*ipv4).dport).write(dport);
        }
        size_of::<bpf_sock_tuple__bindgen_ty_1__bindgen_ty_1>()
    };
    // BPF_F_CURRENT_NETNS (-1): the namespace of the device the frame came in on.
    let netns = u64::MAX;
    // SAFETY: the context is the program's own; the tuple is `size` readable bytes of this
    // frame; a socket returned is released below, on every path.
    unsafe {
        let sk = if pending.proto == PROTO_UDP {
            bpf_sk_lookup_udp(
                ctx.ctx.cast::<c_void>(),
                &raw mut tuple,
                size as u32,
                netns,
                0,
            )
        } else if pending.proto == PROTO_TCP {
            bpf_sk_lookup_tcp(
                ctx.ctx.cast::<c_void>(),
                &raw mut tuple,
                size as u32,
                netns,
                0,
            )
        } else {
            return true;
        };
        if sk.is_null() {
            return false;
        }
        bpf_sk_release(sk.cast::<c_void>());
    }
    true
}
