//! The pending table: an inbound attempt is written into one of two slots of a tagged
//! array, no hash insert (a forged flood costs a fixed price per packet); an answer takes
//! its slot and reports the outcome. [`Flow::hash`] is the keyed hash that places flows.
//!
//! A flow's first choice is a slot of the table's first [`PENDING_FIRST_SLOTS`] (256
//! slots, 16 KiB), taken when it is free or holds the same attempt; its second, where it goes blindly otherwise, is
//! anywhere in the table. Most attempts are answered within microseconds (a closed port's
//! RST, an open port's SYN-ACK) and free their slot at once, so a scan's attempts keep
//! landing in the small first region, which stays in the CPU's caches and TLB, rather
//! than on a random line of a 4 MiB table each. An accepted attempt, which waits seconds
//! for the sweep's confirmation, moves to its second slot, so a busy server's connections
//! do not fill the region. Attempts nobody answers (filtered ports, a forged flood) fill
//! it and spill to the whole table; when the sweep finds at least half the region's slots
//! waiting for an answer, it closes the region ([`crate::maps::FIRST_CLOSED`]) and
//! attempts go straight to their second slot, a blind write, while answers look there
//! first. Answers look in both slots either way.

use core::{mem::size_of, ptr::read_volatile};

use probe_common::{
    Counter, IPPROTO_IP, IPPROTO_SCTP as PROTO_SCTP, IPPROTO_TCP as PROTO_TCP,
    IPPROTO_UDP as PROTO_UDP, Outcome, PENDING_ACCEPTED, PENDING_FIRST_SLOTS, PENDING_REPORTED,
    Pending, ProbeType,
};

use crate::{
    egress::unreachable_outcome,
    maps::{EPOCH, FIRST_CLOSED, HASH_SEED, PENDING, SCRATCH, count, flag_region, pending_mask},
    ours::is_home,
    parse::{self, Addr, Endpoints, Icmp, IcmpKind, Quoted, TCP_ACK, ether_addr, parse_quoted},
    report::report,
    suspects::{armed, unwait},
};

/// An inbound attempt's particulars beyond its packet.
#[derive(Clone, Copy)]
pub(crate) struct Attempt {
    pub(crate) probe: ProbeType,
    /// IP protocol.
    pub(crate) proto: u8,
    /// The remote peer's port (echo identifier for ICMP).
    pub(crate) remote_port: u16,
    /// Our port (0 for ICMP).
    pub(crate) local_port: u16,
    /// The number its answer will carry ([`parse::Tcp::answer_id`], the echo sequence, 0
    /// for UDP).
    pub(crate) id: u32,
    pub(crate) tcp_flags: u8,
    pub(crate) ifindex: u32,
    /// The Ethernet source of the attempt.
    pub(crate) mac: [u8; 6],
}

impl Attempt {
    #[inline(always)]
    pub(crate) fn tcp(probe: ProbeType, tcp: &parse::Tcp, ifindex: u32, mac: [u8; 6]) -> Self {
        Self {
            probe,
            proto: PROTO_TCP,
            remote_port: tcp.src_port,
            local_port: tcp.dst_port,
            id: tcp.answer_id(),
            tcp_flags: tcp.flags,
            ifindex,
            mac,
        }
    }
}

/// [`attempt`]'s answer when the attempt is not for [`crate::early`]: its source is not
/// armed and it is no stealth segment (or it was not recorded).
pub(crate) const NOT_EARLY: u32 = u32::MAX;

/// Records an inbound attempt to a home address in the pending table. Returns the slot it
/// took when its source is armed (one first failure from the verdict, see
/// [`crate::suspects`]) or the attempt is a stealth segment (a failure from any source),
/// for [`crate::early`] to look at; [`NOT_EARLY`] otherwise. A subprogram for the rarer
/// kinds (UDP, ICMP, fragments): one copy keeps their frames small.
#[inline(never)]
pub(crate) fn attempt(ends: &Endpoints, a: &Attempt) -> u32 {
    record(ends, a)
}

/// [`attempt`], inlined into the TCP parser: every new SYN runs it, and a subprogram's
/// call costs about 7 ns here (see [`crate::ours::is_home`]).
#[inline(always)]
pub(crate) fn record(ends: &Endpoints, a: &Attempt) -> u32 {
    let Attempt {
        probe,
        proto,
        remote_port,
        local_port,
        id,
        tcp_flags,
        ifindex,
        mac,
    } = *a;
    if !is_home(&ends.dst) {
        count(Counter::NotHome);
        return NOT_EARLY;
    }
    count(match probe {
        ProbeType::TcpSyn => Counter::Syns,
        ProbeType::TcpStealth | ProbeType::TcpAck => Counter::StealthIn,
        ProbeType::TcpFragment => Counter::Fragments,
        ProbeType::TcpUnseen | ProbeType::IpProtocol | ProbeType::Sctp => Counter::Unseen,
        ProbeType::Udp => Counter::UdpIn,
        ProbeType::IcmpEcho => Counter::EchoIn,
    });
    let place = Place::of(
        &Flow::to_us(ends, proto, remote_port, local_port),
        id,
        pending_mask(),
    );
    // The first choice when it is free or holds this very attempt (a retransmission),
    // read from the small first region, which stays cached; else a blind write of the
    // second: reading that slot first (to skip retransmissions, or to count overwrites)
    // would stall on a cache miss for every flooded flow. A colliding flow there overwrites
    // the slot (the sweep reports the table's occupancy).
    let open = first_open();
    let first_tag = PENDING.get_ptr(place.first).filter(|_| open).map(|slot| {
        // SAFETY: a pointer from a successful array lookup, read once; another CPU may be
        // writing the slot, and a torn tag is either value or one that matches nothing.
        unsafe { read_volatile(&raw const (*slot).tag) }
    });
    let index = if first_tag.is_some_and(|t| t == 0 || t == place.tag) {
        place.first
    } else {
        place.second
    };
    let tag = place.tag;
    let Some(slot) = PENDING.get_ptr_mut(index) else {
        return NOT_EARLY;
    };
    // A retransmission rewrites the same attempt with a newer epoch.
    // SAFETY: a plain global, read (never written) here.
    let epoch = unsafe { read_volatile(&raw const EPOCH) };
    // SAFETY: the pointer comes from a successful array lookup and stays valid for the
    // duration of the program; a concurrent writer on another CPU can at worst leave a torn
    // slot, whose tag then matches nothing.
    unsafe {
        *slot = Pending {
            seen_epoch: epoch,
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
            mac,
            ip_version: ends.version,
            flags: 0,
        };
    }
    // The region is walked by the sweeps of this epoch and the next two
    // (`crate::maps::RECENT_SWEEPS`), whatever order the two writes become visible in.
    flag_region(index, epoch);
    // A stealth segment belongs to no connection: it fails whatever the port (a closed one
    // answers RST, an open one nothing) and whoever sends it, so `early` reports it now
    // rather than at the RST or, for an open port, at the expiry seconds later.
    if matches!(probe, ProbeType::TcpStealth) || armed(&ends.src, ends.version) {
        index
    } else {
        NOT_EARLY
    }
}

/// Takes the pending attempt that `answer` answers, if there is one, and reports its
/// outcome. Returns whether there was one. Inlined: every answer runs it, and a
/// subprogram's call costs about 7 ns here (see [`crate::ours::is_home`]); its frame is
/// small, and the verifier's work went down, not up.
#[inline(always)]
pub(crate) fn settle(
    answer: &Flow,
    id: u32,
    outcome: Outcome,
    icmp_type: u8,
    icmp_code: u8,
) -> bool {
    let place = Place::of(answer, id, pending_mask());
    let tag = place.tag;
    let Some((index, slot)) = place.holding() else {
        return false;
    };
    // SAFETY: the pointer comes from a successful array lookup and stays valid for the
    // duration of the program. The slot is reported in place, not copied (the copy would
    // not fit the 512-byte stack on the ICMP path); an attempt written into the same slot
    // by another CPU in between would be reported in its stead, a race of nanoseconds
    // between two colliding flows. Racing answers can both take the slot: the OUTCOMES
    // insert turns the second into a repeat.
    unsafe {
        let flags = (*slot).flags;
        if flags & PENDING_ACCEPTED != 0 {
            if outcome == Outcome::Accepted {
                // Our SYN-ACK again (a retransmission): the slot goes on waiting for the
                // client's answer to it.
                return true;
            }
            // Anything else answers a new attempt of the flow (the accepted one's socket
            // is gone): the slot settles nothing, as it would have once answered.
            (*slot).tag = 0;
            return false;
        }
        (*slot).tag = 0;
        // Reported when it arrived (the early verdict): its answer only clears it.
        if flags & PENDING_REPORTED != 0 {
            return true;
        }
        // A SYN-ACK that is a first success: the slot waits, and the walk with it, until
        // the expiry sweep finds it still standing (`crate::suspects::confirm`), or the
        // client's reset before a byte ([`half_open`]) shows it was no use of the service.
        // As it may wait seconds, an accepted attempt moves to its second slot first: the
        // first region is for attempts waiting for an answer, which most get within
        // microseconds.
        let slot = if outcome == Outcome::Accepted && index != place.second {
            moved(slot, place.second)
        } else {
            slot
        };
        if report(&*slot, outcome, icmp_type, icmp_code) {
            (*slot).flags = PENDING_ACCEPTED;
            (*slot).tag = tag;
        }
    }
    true
}

/// Copies the attempt in `slot` to slot `to` and flags its region; the copy, or `slot`
/// when `to` is out of the table. Slot to slot, a word at a time through a register: a
/// copy through a stack temporary would take the egress chain past its 512 bytes.
///
/// # Safety
///
/// `slot` points to a slot of `PENDING`.
#[inline(always)]
unsafe fn moved(slot: *mut Pending, to: u32) -> *mut Pending {
    let Some(copy) = PENDING.get_ptr_mut(to) else {
        return slot;
    };
    for word in 0..size_of::<Pending>() / 8 {
        // SAFETY: both slots are whole `Pending`s of the array, 8-byte aligned.
        unsafe {
            copy.cast::<u64>()
                .add(word)
                .write(slot.cast::<u64>().add(word).read());
        }
    }
    // SAFETY: a plain global, read (never written) here.
    flag_region(to, unsafe { read_volatile(&raw const EPOCH) });
    copy
}

/// A client's reset (sequence number `seq`) on `flow`: when it resets our SYN-ACK to its
/// attempt, or the connection before sending a byte (its sequence number is still the
/// one our SYN-ACK acknowledged, and the slot waits, [`PENDING_ACCEPTED`]), the attempt
/// was no use of the service, and its first success is never counted: the open ports a
/// SYN scan or a connect scan finds do not hold its verdict back. A subprogram: it runs
/// only for resets.
#[inline(never)]
pub(crate) fn half_open(flow: &Flow, seq: u32) {
    let Some((_, slot)) = Place::of(flow, seq, pending_mask()).holding() else {
        return;
    };
    // SAFETY: the pointer comes from a successful array lookup and stays valid for the
    // duration of the program; the slot is read in place, as `settle` does.
    unsafe {
        if (*slot).flags & PENDING_ACCEPTED == 0 {
            return;
        }
        (*slot).tag = 0;
        count(Counter::HalfOpen);
        // The verdict it held back (see `crate::suspects::wait`) is free to come.
        unwait(&*slot);
    }
}

/// Settles the attempt an outbound ICMP destination-unreachable quotes. Inlined into
/// `egress_icmp`: one frame fewer on the deepest call chain (egress, ICMP, settle, report,
/// allow-list), which must stay within 512 bytes of stack.
#[inline(always)]
pub(crate) fn settle_unreachable(start: usize, end: usize, icmp: &Icmp, v6: bool, ifindex: u32) {
    // Read back through a pointer, the offset has lost the bounds the verifier knew; this
    // check gives them back (no frame has 8 KiB of headers before a quote).
    let offset = icmp.quote_offset;
    if offset > 8192 {
        return;
    }
    let Ok(quoted) = parse_quoted(start, end, offset, v6) else {
        return;
    };
    // A protocol nothing speaks here answers like a closed port.
    let protocol_closed = icmp.kind == IcmpKind::UnknownNextHeader || (!v6 && icmp.code == 2);
    let outcome = if protocol_closed {
        Outcome::Refused
    } else {
        unreachable_outcome(v6, icmp.code)
    };
    let mut flow = Flow::quoted(&quoted);
    if settle(&flow, quoted.answer_id, outcome, icmp.raw_type, icmp.code) || !is_home(&flow.local) {
        return;
    }
    // An attempt the ingress side never recorded (fragments it could not read, a slot
    // taken by another flow, a protocol it does not record): our error message proves it.
    let probe = match quoted.proto {
        PROTO_TCP => ProbeType::TcpUnseen,
        PROTO_UDP => ProbeType::Udp,
        PROTO_SCTP => ProbeType::Sctp,
        // A protocol scan (nmap -sO): the protocol probed is the "port".
        proto if protocol_closed => {
            flow.local_port = u16::from(proto);
            flow.remote_port = 0;
            flow.proto = IPPROTO_IP;
            ProbeType::IpProtocol
        }
        _ => return,
    };
    count(Counter::Unseen);
    let what = Unrecorded {
        probe,
        outcome,
        icmp_type: icmp.raw_type,
        icmp_code: icmp.code,
        ifindex,
        mac: ether_addr(start, end, true),
        ip_version: if v6 { 6 } else { 4 },
    };
    report_answered(&flow, &what);
}

/// An attempt known only from our answer to it: what the answer proves.
pub(crate) struct Unrecorded {
    /// An ACK-bearing probe (our bare RST), an attempt without ACK (our RST|ACK), or the
    /// quoted protocol's attempt (an ICMP error).
    pub(crate) probe: ProbeType,
    pub(crate) outcome: Outcome,
    pub(crate) icmp_type: u8,
    pub(crate) icmp_code: u8,
    pub(crate) ifindex: u32,
    /// Where our answer went: the link-layer address the attempt came from.
    pub(crate) mac: [u8; 6],
    pub(crate) ip_version: u8,
}

impl Unrecorded {
    /// An attempt refused by a TCP or SCTP answer of ours (no ICMP type or code).
    #[inline(always)]
    pub(crate) fn refused(probe: ProbeType, ifindex: u32, mac: [u8; 6], ip_version: u8) -> Self {
        Self {
            probe,
            outcome: Outcome::Refused,
            icmp_type: 0,
            icmp_code: 0,
            ifindex,
            mac,
            ip_version,
        }
    }
}

/// Reports an attempt known only from our answer to it. Inlined, with the record built
/// in a per-CPU scratch slot field by field: the callers are on the deepest call chains
/// (egress, TCP or ICMP, report, allow-list), which must stay within 512 bytes of stack.
#[inline(always)]
pub(crate) fn report_answered(answer: &Flow, what: &Unrecorded) {
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return;
    };
    let flags = if what.probe == ProbeType::TcpAck {
        TCP_ACK
    } else {
        0
    };
    // SAFETY: a per-CPU slot from a successful lookup; only this program on this CPU uses
    // it, and it is not preempted by itself. Every field is written before it is read.
    unsafe {
        (&raw mut (*scratch).seen_epoch).write(0);
        (&raw mut (*scratch).remote).write(answer.remote.bytes());
        (&raw mut (*scratch).local).write(answer.local.bytes());
        (&raw mut (*scratch).ifindex).write(what.ifindex);
        (&raw mut (*scratch).tag).write(0);
        (&raw mut (*scratch).remote_port).write(answer.remote_port);
        (&raw mut (*scratch).local_port).write(answer.local_port);
        (&raw mut (*scratch).proto).write(answer.proto);
        (&raw mut (*scratch).probe).write(what.probe as u8);
        (&raw mut (*scratch).tcp_flags).write(flags);
        (&raw mut (*scratch).ttl).write(0);
        (&raw mut (*scratch).mac).write(what.mac);
        (&raw mut (*scratch).ip_version).write(what.ip_version);
        (&raw mut (*scratch).flags).write(0);
        report(&*scratch, what.outcome, what.icmp_type, what.icmp_code);
    }
}

/// A flow seen from the home side: `remote` made the attempt, `local` is ours.
pub(crate) struct Flow {
    pub(crate) remote: Addr,
    pub(crate) local: Addr,
    pub(crate) remote_port: u16,
    pub(crate) local_port: u16,
    pub(crate) proto: u8,
}

impl Flow {
    /// The flow of a packet we send: `local` is its source.
    #[inline(always)]
    pub(crate) fn from_us(ends: &Endpoints, proto: u8, src_port: u16, dst_port: u16) -> Self {
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
    pub(crate) fn to_us(ends: &Endpoints, proto: u8, src_port: u16, dst_port: u16) -> Self {
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
    pub(crate) fn quoted(q: &Quoted) -> Self {
        Self {
            remote: q.src,
            local: q.dst,
            remote_port: q.src_port,
            local_port: q.dst_port,
            proto: q.proto,
        }
    }

    /// The slot index of this flow (masked by `mask`) and the tag that binds the slot to
    /// this flow and to the id its answer carries. The tag is never 0 (0 marks an empty
    /// slot).
    ///
    /// One multiply per word, keyed by a random per-load seed so that colliding flows cannot
    /// be computed in advance, then one finaliser: 6 dependent multiplies on the per-SYN path.
    #[inline(always)]
    pub(crate) fn slot(&self, id: u32, mask: u32) -> (u32, u32) {
        split(self.hash(), id, mask)
    }

    /// This flow's keyed hash, which [`split`] makes into a slot and a tag: computed once
    /// where several tables are looked up for one flow (a source's `SUSPECTS` set and
    /// `HELD` slot).
    #[inline(always)]
    pub(crate) fn hash(&self) -> u64 {
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
        h ^ (h >> 32)
    }
}

/// Where an attempt goes in the pending table, and the tag that binds a slot to it.
pub(crate) struct Place {
    /// Its slot in the first [`PENDING_FIRST_SLOTS`] (within the table when the table is
    /// smaller).
    pub(crate) first: u32,
    /// Its slot anywhere in the table, where it goes when the first is taken.
    pub(crate) second: u32,
    pub(crate) tag: u32,
}

impl Place {
    /// The place of `flow`'s attempt whose answer carries `id`, in a table of `mask + 1`
    /// slots. The two slots come from different bits of the flow's hash (they coincide
    /// for one flow in 65 536 at the default size).
    #[inline(always)]
    pub(crate) fn of(flow: &Flow, id: u32, mask: u32) -> Self {
        let h = flow.hash();
        let (second, tag) = split(h, id, mask);
        let first = (h as u32).rotate_right(16) & mask & (PENDING_FIRST_SLOTS - 1);
        Self { first, second, tag }
    }

    /// The slot that holds this attempt, and its index: its first choice, else its second;
    /// while the first region is closed, where new attempts go, its second first (under a
    /// flood, the first region's lines are no longer cached, and a first look there would
    /// be a miss for every answer).
    #[inline(always)]
    pub(crate) fn holding(&self) -> Option<(u32, *mut Pending)> {
        let order = if first_open() {
            [self.first, self.second]
        } else {
            [self.second, self.first]
        };
        for index in order {
            if let Some(slot) = PENDING.get_ptr_mut(index)
                // SAFETY: a pointer from a successful array lookup, read once.
                && unsafe { (*slot).tag } == self.tag
            {
                return Some((index, slot));
            }
        }
        None
    }
}

/// True unless the sweep closed the pending table's first region ([`FIRST_CLOSED`]).
#[inline(always)]
fn first_open() -> bool {
    // SAFETY: reading a plain global, written only by the sweep; volatile so that its
    // latest value is used.
    unsafe { read_volatile(&raw const FIRST_CLOSED) == 0 }
}

/// The slot index (masked by `mask`) and the tag of a flow of hash `h` ([`Flow::hash`]),
/// for the table that mixes `id` into its tags. The low half of the hash indexes, so the
/// tables of one source agree on its slot's low bits; the high half, with `id`, tags.
#[inline(always)]
pub(crate) fn split(h: u64, id: u32, mask: u32) -> (u32, u32) {
    let index = (h as u32) & mask;
    // Multiplying by an odd constant is a bijection: two ids of one flow never share a
    // tag (but for the low bit, which marks the slot as used).
    let tag = ((h >> 32) as u32 ^ id.wrapping_mul(0x9e37_79b1)) | 1;
    (index, tag)
}
