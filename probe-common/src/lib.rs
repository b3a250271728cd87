//! Types shared by the eBPF programs and the userspace loader: map keys and values, the
//! ring-buffer record, counter indices, map and global names and their default sizes.
//!
//! Every type is `#[repr(C)]`, fields widest first, padding explicit, and its size pinned by
//! a `const` assertion so the two sides cannot drift apart silently. Addresses are 16 bytes
//! everywhere: IPv4 is stored IPv4-mapped (`::ffff:a.b.c.d`).
#![no_std]

use core::mem::size_of;

/// Name of the XDP program (ingress) in the object file.
pub const XDP_PROGRAM: &str = "probe_ingress";
/// Name of the TC program (egress) in the object file.
pub const TC_PROGRAM: &str = "probe_egress";
/// Name of the expiry program: never attached, run by userspace through
/// `BPF_PROG_TEST_RUN` to report attempts left unanswered.
pub const EXPIRE_PROGRAM: &str = "probe_expire";

/// Ring buffer of [`ProbeEvent`]s.
pub const EVENTS_MAP: &str = "EVENTS";
/// Ring buffer of held first failures copied for the fleet ([`ProbeEvent`] records;
/// written only when `FLEET_ON` is set at load, `--fleet`).
pub const FLEET_MAP: &str = "FLEET";
/// Size of the `FLEET` ring in bytes: about 3 600 records, read at most every 10 ms.
pub const FLEET_BYTES: u32 = 256 * 1024;
/// Per-CPU array of [`Counter`]s.
pub const COUNTERS_MAP: &str = "COUNTERS";
/// LRU hash of reported outcomes, [`OutcomeKey`] to a `u64` count.
pub const OUTCOMES_MAP: &str = "OUTCOMES";
/// Direct-mapped array of inbound attempts awaiting an answer, [`Pending`] slots.
pub const PENDING_MAP: &str = "PENDING";
/// Direct-mapped array of our own outbound attempts (`u32` tags), so that answers to them
/// are not taken for probes and unsolicited answers are seen as backscatter.
pub const OURS_MAP: &str = "OURS";
/// Direct-mapped array of remote hosts our hosts contacted (outbound SYN or UDP), `u64`
/// each: a host tag (high 32 bits) and the sweep epoch of the contact (low 32 bits). An
/// attempt from such a host within `CALLBACK_EPOCHS` is a callback (active FTP data,
/// chat, media), not a probe.
pub const CONTACTED_MAP: &str = "CONTACTED";
/// Global (`u64`): sweeps during which a host we contacted may call back unreported.
pub const CALLBACK_EPOCHS_GLOBAL: &str = "CALLBACK_EPOCHS";
/// Array of [`PENDING_STATS_ENTRIES`] `u64`s kept by the expiry program:
/// [`PENDING_STATS_LIVE`], [`PENDING_STATS_EPOCH`], [`PENDING_STATS_CURSOR`],
/// [`PENDING_STATS_COUNTING`], [`PENDING_STATS_WALKED`] and [`PENDING_STATS_WALKING`].
pub const PENDING_STATS_MAP: &str = "PENDING_STATS";
/// Index in `PENDING_STATS`: pending slots holding an attempt after the last sweep (the
/// table's occupancy: the closer to full, the more attempts collide and overwrite).
pub const PENDING_STATS_LIVE: u32 = 0;
/// Index in `PENDING_STATS`: the number of complete sweeps so far (the epoch attempts are
/// stamped with).
pub const PENDING_STATS_EPOCH: u32 = 1;
/// Index in `PENDING_STATS`: the first slot the next chunk of the sweep looks at (0: the
/// next run starts a new sweep).
pub const PENDING_STATS_CURSOR: u32 = 2;
/// Index in `PENDING_STATS`: live slots counted so far by the sweep under way.
pub const PENDING_STATS_COUNTING: u32 = 3;
/// Index in `PENDING_STATS`: slots the last complete sweep read (those of the regions an
/// attempt was written into; every slot each [`FULL_SWEEP_EVERY`]th sweep).
pub const PENDING_STATS_WALKED: u32 = 4;
/// Index in `PENDING_STATS`: slots read so far by the sweep under way.
pub const PENDING_STATS_WALKING: u32 = 5;
/// Entries of `PENDING_STATS`.
pub const PENDING_STATS_ENTRIES: u32 = 6;
/// Global (`u32`): slots one run of the expiry program looks at. A sweep is several runs,
/// so that userspace can drain the ring buffer between them: one chunk reports at most
/// this many records, which must fit the ring.
pub const SWEEP_CHUNK_GLOBAL: &str = "SWEEP_CHUNK";

/// LPM trie of sources never to report: key = prefix length + 16-byte address, value `u8`.
pub const ALLOW_SOURCES_MAP: &str = "ALLOW_SOURCES";
/// LPM trie of local services never to report, any port: key as for `ALLOW_SOURCES`.
pub const ALLOW_SERVICES_MAP: &str = "ALLOW_SERVICES";
/// LPM trie of local services never to report, one port: key = prefix length + 2-byte port
/// (network order) + 16-byte address, the prefix counting the port's 16 bits.
pub const ALLOW_SERVICE_PORTS_MAP: &str = "ALLOW_SERVICE_PORTS";
/// Entries each allow-list trie holds at most (allocated as used: no preallocation).
pub const ALLOW_ENTRIES: u32 = 4096;

/// Global (`u32`): number of `PENDING` slots minus one; the slot count is a power of two.
pub const PENDING_MASK_GLOBAL: &str = "PENDING_MASK";
/// Global (`u32`): number of `OURS` slots minus one; the slot count is a power of two.
pub const OURS_MASK_GLOBAL: &str = "OURS_MASK";
/// Global (`u64`): key of the flow hash that places attempts in the direct-mapped tables,
/// random per load so that colliding flows cannot be computed in advance.
pub const HASH_SEED_GLOBAL: &str = "HASH_SEED";
/// Global (`u64`): sweeps of the expiry program after which a pending attempt counts as
/// unanswered (the timeout divided by the sweep interval, rounded up).
pub const EXPIRE_AFTER_GLOBAL: &str = "EXPIRE_AFTER";
/// Global (`u64`): unread ring-buffer bytes from which a submitted event wakes the reader;
/// below it the reader finds events on its drain timer.
pub const WAKEUP_BYTES_GLOBAL: &str = "WAKEUP_BYTES";
/// Global (`u64`): least nanoseconds between two wakeups of the reader that no backlog
/// asked for (`u64::MAX`: wake only on a backlog).
pub const WAKEUP_GAP_GLOBAL: &str = "WAKEUP_GAP_NS";
/// Array of one [`HomeNets`]: the prefixes that are "ours", rewritten by userspace while
/// running as addresses and routes change.
pub const HOME_NETS_MAP: &str = "HOME_NETS";
/// LPM trie of the home nets (key as for `ALLOW_SOURCES`, value `u8`), read instead of
/// the list in `HOME_NETS` when there are more than [`MAX_HOME_NETS`] of them.
pub const HOME_TRIE_MAP: &str = "HOME_TRIE";
/// Hash of this host's own addresses on the watched interfaces (16 bytes, IPv4-mapped, to
/// `u8` 1), kept current by userspace: the destinations whose sockets XDP may look up to
/// know that a probe will fail (the early verdict). Empty: no early verdict.
pub const LOCAL_MAP: &str = "LOCAL";
/// Addresses in [`LOCAL_MAP`] at most.
pub const LOCAL_ENTRIES: u32 = 256;
/// Home-net prefixes the trie holds at most.
pub const HOME_TRIE_ENTRIES: u32 = 4096;

/// Default `PENDING` slots: 65 536 × 64 B = 4 MiB.
pub const PENDING_ENTRIES: u32 = 65_536;
/// `PENDING` slots per region of the expiry sweep (log2): the sweep walks only the
/// regions an attempt was written into since it last found them empty.
pub const PENDING_REGION_SHIFT: u32 = 4;
/// Every this many sweeps, the sweep walks every region, flagged or not: a flag lost to
/// a race between CPUs delays an expiry by at most this many sweeps.
pub const FULL_SWEEP_EVERY: u64 = 16;
/// Name of the map of region flags (a byte per region of `PENDING`, [`REGION_FLAGS`] to
/// an entry; entries set at load: [`pending_region_entries`]).
pub const PENDING_REGIONS_MAP: &str = "PENDING_REGIONS";
/// Region flags per entry of `PENDING_REGIONS`: one cache line of bytes. (An array of one
/// byte per entry spaces its values 8 bytes apart: 8 times the lines for an attempt's
/// look at its flag.)
pub const REGION_FLAGS: u32 = 64;

/// The number of regions of a pending table of `slots` slots (a power of two).
pub const fn pending_regions(slots: u32) -> u32 {
    let regions = slots >> PENDING_REGION_SHIFT;
    if regions == 0 { 1 } else { regions }
}

/// Entries of `PENDING_REGIONS` for a pending table of `slots` slots.
pub const fn pending_region_entries(slots: u32) -> u32 {
    pending_regions(slots).div_ceil(REGION_FLAGS)
}

/// Default `OURS` slots: 16 384 × 4 B = 64 KiB.
pub const OURS_ENTRIES: u32 = 16_384;
/// Default `OUTCOMES` entries: 65 536 × (48 B key + 8 B value + ~56 B kernel overhead)
/// ≈ 7 MiB.
pub const OUTCOMES_ENTRIES: u32 = 65_536;
/// Default size of the `EVENTS` ring buffer in bytes (a power-of-two multiple of the page
/// size): 256 KiB holds about 3 600 records (72 B with the ring's header) between two
/// reads.
pub const EVENTS_BYTES: u32 = 256 * 1024;
/// Default pending timeout: an attempt unanswered after 3 s is reported as unanswered.
pub const TIMEOUT_NS: u64 = 3_000_000_000;
/// Default sweeps before an attempt counts as unanswered (3 s at one sweep a second).
pub const EXPIRE_AFTER: u64 = 3;
/// Home-net prefixes checked by a linear scan (cheaper than an LPM trie for a handful of
/// prefixes on the per-packet path); beyond them, `HOME_TRIE` is read.
pub const MAX_HOME_NETS: usize = 16;

const _: () = assert!(PENDING_ENTRIES.is_power_of_two() && OURS_ENTRIES.is_power_of_two());

/// IP protocol numbers as carried in events and keys.
pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_ICMPV6: u8 = 58;
pub const IPPROTO_SCTP: u8 = 132;
/// The protocol field of a protocol-scan event (nmap `-sO`), whose `dst_port` carries the
/// IP protocol number probed.
pub const IPPROTO_IP: u8 = 0;

/// Kernel-side counters, one slot each in the per-CPU `COUNTERS` array.
///
/// Userspace sums the per-CPU values; the order is the array index and is part of the ABI
/// between the two sides, so only append.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// Frames the XDP program looked at (every inbound frame).
    IngressPackets = 0,
    /// Frames the TC egress program looked at (every outbound frame).
    EgressPackets = 1,
    /// Inbound TCP connection attempts (SYN without ACK) to a home address.
    Syns = 2,
    /// Outbound TCP segments with RST set.
    RstsOut = 3,
    /// Attempts that failed: refused, unreachable or prohibited (not unanswered).
    Failed = 4,
    /// Records submitted to the ring buffer.
    EventsSent = 5,
    /// Ring-buffer reservations that failed (ring full): events lost.
    RingbufDrops = 6,
    /// Frames cut short inside a header we parse, or with impossible header lengths.
    Malformed = 7,
    /// Attempts that succeeded (SYN-ACK, UDP reply, echo reply).
    Answered = 8,
    /// Inbound stealth segments without ACK (FIN, NULL, Xmas and the like) to a home address.
    StealthIn = 9,
    /// Inbound UDP datagrams to a home address that answer nothing we sent.
    UdpIn = 10,
    /// Inbound ICMP/ICMPv6 echo requests to a home address.
    EchoIn = 11,
    /// Inbound SYN-ACKs, and RST|ACKs with sequence 0, that answer nothing we sent: someone
    /// is probing with our addresses as the spoofed source.
    Backscatter = 12,
    /// Attempts reported as unanswered by the expiry program.
    Unanswered = 13,
    /// Inbound attempts to addresses outside the home nets (not tracked).
    NotHome = 14,
    /// Outbound RSTs without ACK that answer an inbound ACK-bearing segment matching no
    /// connection (ACK or Maimon probes, or stale connections).
    AckProbes = 15,
    /// Repeats of an outcome already reported (counted in `OUTCOMES`, not sent).
    Repeats = 16,
    /// Outcomes not reported because their source or service is allow-listed.
    Allowed = 17,
    /// Outcomes not reported because our hosts contacted their source shortly before
    /// (callbacks: active FTP data, chat, media).
    Callbacks = 18,
    /// Inbound frames dropped because their source is blocked (`--block`).
    Blocked = 19,
    /// Automatic blocks lifted because the blocked host answered a connection this host
    /// started (it became a peer).
    BlocksLifted = 20,
    /// Inbound IPv6 packets whose extension-header chain is longer than the programs walk
    /// (not parsed further; dropped like any other frame from a blocked source).
    LongChains = 21,
    /// Inbound first fragments of TCP attempts to a home address whose flags were cut off
    /// (nmap `-f`), recorded by their ports and sequence number.
    Fragments = 22,
    /// Our answers (an RST|ACK, an ICMP error) to attempts the ingress program never
    /// recorded: each is reported as the refused attempt it proves.
    Unseen = 23,
    /// Sources the kernel's sequential test decided were scanning (`SUSPECTS`).
    Verdicts = 24,
    /// With `--block`: sources the kernel blocked on its verdict.
    KernelBlocks = 25,
    /// With `--block`: verdicts on sources the never-block policy spares (a protected
    /// prefix, a neighbour's address in another host's frames, a recent peer).
    BlocksSpared = 26,
    /// With `--block`: verdicts not turned into blocks because the budget of new blocks
    /// was spent.
    BlocksOverBudget = 27,
    /// With `--block`: our answers (RST, SYN-ACK, ICMP) to blocked sources, dropped.
    AnswersDropped = 28,
    /// Outcomes of sources the kernel's test had decided on, counted into `SUMMARIES`
    /// instead of sent one by one.
    Summarized = 29,
    /// Outcomes of decided sources that found `SUMMARIES` full: sent one by one instead.
    SummariesFull = 30,
    /// First failures of sources with no other outcome, held in `HELD` rather than sent.
    Held = 31,
    /// Held first failures sent with their source's second first failure.
    HeldReleased = 32,
    /// Held first failures overwritten by another source's before a second came (never
    /// sent: a forged flood's, mostly).
    HeldOverwritten = 33,
    /// First failures sent at once because many one-probe sources fail on their target
    /// (a crowd: a spread scan or a forged flood), within the budget per target.
    CrowdSent = 34,
    /// Answers (RST, SYN-ACK) leaving from addresses outside the home nets that settled no
    /// attempt: hosts behind this one answer probes it does not count (a gateway without
    /// the right home nets).
    ForeignAnswers = 35,
    /// First failures held and copied to the fleet's ring (`--fleet`).
    FleetExported = 36,
    /// Held first failures the fleet's ring had no room for (`--fleet`; the reader is
    /// behind: the fleet loses that evidence, local detection nothing).
    FleetDrops = 37,
    /// Attempts known to fail when they arrived (a stealth probe, or a SYN or datagram to a
    /// local port nothing listens on) from a source one failure from the verdict, reported
    /// by XDP before any answer (first failures and repeats alike): the early verdict.
    EarlyFailures = 38,
    /// First successes taken back: the client reset our SYN-ACK (a half-open SYN scan's
    /// open port) or the connection before sending a byte (a connect scan's): no use of
    /// the service.
    HalfOpen = 39,
}

impl Counter {
    /// Every counter, in index order.
    pub const ALL: [Counter; 40] = [
        Counter::IngressPackets,
        Counter::EgressPackets,
        Counter::Syns,
        Counter::RstsOut,
        Counter::Failed,
        Counter::EventsSent,
        Counter::RingbufDrops,
        Counter::Malformed,
        Counter::Answered,
        Counter::StealthIn,
        Counter::UdpIn,
        Counter::EchoIn,
        Counter::Backscatter,
        Counter::Unanswered,
        Counter::NotHome,
        Counter::AckProbes,
        Counter::Repeats,
        Counter::Allowed,
        Counter::Callbacks,
        Counter::Blocked,
        Counter::BlocksLifted,
        Counter::LongChains,
        Counter::Fragments,
        Counter::Unseen,
        Counter::Verdicts,
        Counter::KernelBlocks,
        Counter::BlocksSpared,
        Counter::BlocksOverBudget,
        Counter::AnswersDropped,
        Counter::Summarized,
        Counter::SummariesFull,
        Counter::Held,
        Counter::HeldReleased,
        Counter::HeldOverwritten,
        Counter::CrowdSent,
        Counter::ForeignAnswers,
        Counter::FleetExported,
        Counter::FleetDrops,
        Counter::EarlyFailures,
        Counter::HalfOpen,
    ];
    /// Number of slots in the `COUNTERS` array.
    pub const COUNT: u32 = Self::ALL.len() as u32;

    /// Stable snake_case name, used in logs and metrics.
    pub const fn name(self) -> &'static str {
        match self {
            Counter::IngressPackets => "ingress_packets",
            Counter::EgressPackets => "egress_packets",
            Counter::Syns => "syns",
            Counter::RstsOut => "rsts_out",
            Counter::Failed => "failed",
            Counter::EventsSent => "events_sent",
            Counter::RingbufDrops => "ringbuf_drops",
            Counter::Malformed => "malformed",
            Counter::Answered => "answered",
            Counter::StealthIn => "stealth_in",
            Counter::UdpIn => "udp_in",
            Counter::EchoIn => "echo_in",
            Counter::Backscatter => "backscatter",
            Counter::Unanswered => "unanswered",
            Counter::NotHome => "not_home",
            Counter::AckProbes => "ack_probes",
            Counter::Repeats => "repeats",
            Counter::Allowed => "allowed",
            Counter::Callbacks => "callbacks",
            Counter::Blocked => "blocked",
            Counter::BlocksLifted => "blocks_lifted",
            Counter::LongChains => "long_chains",
            Counter::Fragments => "fragments",
            Counter::Unseen => "unseen",
            Counter::Verdicts => "verdicts",
            Counter::KernelBlocks => "blocks_made",
            Counter::BlocksSpared => "blocks_spared",
            Counter::BlocksOverBudget => "blocks_over_budget",
            Counter::AnswersDropped => "answers_dropped",
            Counter::Summarized => "summarized",
            Counter::SummariesFull => "summaries_full",
            Counter::Held => "held",
            Counter::HeldReleased => "held_released",
            Counter::HeldOverwritten => "held_overwritten",
            Counter::CrowdSent => "crowd_sent",
            Counter::ForeignAnswers => "foreign_answers",
            Counter::FleetExported => "fleet_exported",
            Counter::FleetDrops => "fleet_drops",
            Counter::EarlyFailures => "early_failures",
            Counter::HalfOpen => "half_open",
        }
    }

    /// One line saying what it counts (the metrics' HELP text).
    pub const fn help(self) -> &'static str {
        match self {
            Counter::IngressPackets => "Frames the XDP program looked at (every inbound frame).",
            Counter::EgressPackets => {
                "Frames the TC egress program looked at (every outbound frame)."
            }
            Counter::Syns => "Inbound TCP connection attempts (SYN without ACK) to a home address.",
            Counter::RstsOut => "Outbound TCP segments with RST set.",
            Counter::Failed => "Attempts that failed: refused, unreachable or prohibited.",
            Counter::EventsSent => "Records submitted to the ring buffer.",
            Counter::RingbufDrops => "Events lost because the ring buffer was full.",
            Counter::Malformed => "Frames cut short inside a header, or with impossible lengths.",
            Counter::Answered => "Attempts that succeeded (SYN-ACK, UDP reply, echo reply).",
            Counter::StealthIn => "Inbound FIN, NULL, Xmas and similar segments to a home address.",
            Counter::UdpIn => "Inbound UDP datagrams to a home address answering nothing we sent.",
            Counter::EchoIn => "Inbound ICMP and ICMPv6 echo requests to a home address.",
            Counter::Backscatter => {
                "Inbound SYN-ACKs and RSTs answering nothing we sent (our addresses spoofed)."
            }
            Counter::Unanswered => "Attempts reported as unanswered by the expiry program.",
            Counter::NotHome => "Inbound attempts to addresses outside the home nets.",
            Counter::AckProbes => "Outbound bare RSTs answering ACK or Maimon probes.",
            Counter::Repeats => "Repeats of an outcome already reported (counted, not sent).",
            Counter::Allowed => "Outcomes not reported because the source or service is allowed.",
            Counter::Callbacks => "Outcomes not reported: callbacks from hosts we contacted.",
            Counter::Blocked => "Inbound frames dropped because their source is blocked (--block).",
            Counter::BlocksLifted => {
                "Automatic blocks lifted: the blocked host answered a connection we started."
            }
            Counter::LongChains => {
                "Inbound IPv6 packets with an extension-header chain longer than the walk."
            }
            Counter::Fragments => "Inbound first fragments of TCP attempts, flags cut off.",
            Counter::Unseen => "Our answers to attempts never recorded, reported as such.",
            Counter::Verdicts => {
                "Sources the kernel's sequential test decided were scanning (four first failures more than first successes)."
            }
            Counter::KernelBlocks => "With --block: sources the kernel blocked on its verdict.",
            Counter::BlocksSpared => {
                "With --block: verdicts on sources the never-block policy spares (protected prefix, forged neighbour, peer)."
            }
            Counter::BlocksOverBudget => {
                "With --block: verdicts not turned into blocks because the budget of new blocks was spent."
            }
            Counter::AnswersDropped => {
                "With --block: our answers (RST, SYN-ACK, ICMP) to blocked sources, dropped."
            }
            Counter::Summarized => {
                "Outcomes of sources the kernel decided on, counted in summaries, not sent one by one."
            }
            Counter::SummariesFull => {
                "Outcomes of decided sources sent one by one because the summaries map was full."
            }
            Counter::Held => "First failures of sources with no other outcome, held, not sent.",
            Counter::HeldReleased => {
                "Held first failures sent with their source's second first failure."
            }
            Counter::HeldOverwritten => {
                "Held first failures overwritten by another source's, never sent."
            }
            Counter::CrowdSent => {
                "First failures sent at once: many one-probe sources fail on their target."
            }
            Counter::ForeignAnswers => {
                "Answers (RST, SYN-ACK) from addresses outside the home nets that settled no attempt."
            }
            Counter::FleetExported => {
                "First failures held and copied to the fleet's ring (--fleet)."
            }
            Counter::FleetDrops => {
                "Held first failures the fleet's ring had no room for (--fleet): evidence the fleet lost."
            }
            Counter::EarlyFailures => {
                "Attempts known to fail when they arrived, from sources one failure from the verdict, reported before any answer (the early verdict)."
            }
            Counter::HalfOpen => {
                "First successes taken back: the client reset our SYN-ACK, or the connection before sending a byte (a SYN or connect scan's open port)."
            }
        }
    }
}

/// What kind of attempt a probe was.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeType {
    /// A TCP SYN (connect or half-open scan).
    TcpSyn = 1,
    /// A TCP segment without SYN, ACK or RST (FIN, NULL, Xmas and the like).
    TcpStealth = 2,
    /// A TCP segment with ACK that matched no connection (ACK or Maimon FIN/ACK probe),
    /// known only from our RST answering it.
    TcpAck = 3,
    /// A UDP datagram.
    Udp = 4,
    /// An ICMP or ICMPv6 echo request (ping).
    IcmpEcho = 5,
    /// A TCP attempt cut in fragments (nmap `-f`, `--mtu`): its first fragment carried the
    /// ports and sequence number, not the flags.
    TcpFragment = 6,
    /// A TCP segment without ACK (a SYN or a stealth probe) that the ingress program never
    /// recorded (its flags beyond a fragment it could not read, or its slot taken), known
    /// only from our RST|ACK answering it.
    TcpUnseen = 7,
    /// A packet of an IP protocol nothing here speaks (nmap `-sO`), known from our ICMP
    /// protocol unreachable (ICMPv6: parameter problem, unrecognised next header); the
    /// protocol number is the event's `dst_port`.
    IpProtocol = 8,
    /// An SCTP packet (INIT, COOKIE ECHO: nmap `-sY`, `-sZ`) to a port nothing listens on,
    /// known from our ABORT or ICMP answer.
    Sctp = 9,
}

impl ProbeType {
    /// Decodes the byte; `None` for a value this build does not know.
    pub const fn from_u8(raw: u8) -> Option<Self> {
        match raw {
            1 => Some(Self::TcpSyn),
            2 => Some(Self::TcpStealth),
            3 => Some(Self::TcpAck),
            4 => Some(Self::Udp),
            5 => Some(Self::IcmpEcho),
            6 => Some(Self::TcpFragment),
            7 => Some(Self::TcpUnseen),
            8 => Some(Self::IpProtocol),
            9 => Some(Self::Sctp),
            _ => None,
        }
    }
}

/// How an attempt ended.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Closed: our RST, or ICMP port unreachable.
    Refused = 1,
    /// Open / alive: SYN-ACK, a UDP reply, an echo reply.
    Accepted = 2,
    /// ICMP destination unreachable other than port-unreachable and prohibited (no such
    /// host or network behind a gateway).
    Unreachable = 3,
    /// Filtered: ICMP administratively prohibited.
    Prohibited = 4,
    /// No answer within the pending timeout (filtered, or open for FIN/NULL/Xmas and UDP).
    Unanswered = 5,
}

impl Outcome {
    /// Decodes the byte; `None` for a value this build does not know.
    pub const fn from_u8(raw: u8) -> Option<Self> {
        match raw {
            1 => Some(Self::Refused),
            2 => Some(Self::Accepted),
            3 => Some(Self::Unreachable),
            4 => Some(Self::Prohibited),
            5 => Some(Self::Unanswered),
            _ => None,
        }
    }
}

/// One ring-buffer record: the first time an attempt from `src` to `dst:dst_port` of this
/// type ended this way (successes: the first per `src` and `dst`). Never one per packet.
///
/// Addresses are in network byte order, IPv4-mapped for IPv4; ports in host byte order. For
/// ICMP echo, `src_port` is the echo identifier and `dst_port` is 0.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbeEvent {
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) when the outcome was seen.
    pub timestamp_ns: u64,
    /// The remote peer that made the attempt.
    pub src_addr: [u8; 16],
    /// Our address that it tried to reach.
    pub dst_addr: [u8; 16],
    /// Interface index the attempt arrived on (the answer's for ACK probes).
    pub ifindex: u32,
    /// The remote peer's source port.
    pub src_port: u16,
    /// The port that was probed.
    pub dst_port: u16,
    /// IP protocol.
    pub proto: u8,
    /// [`ProbeType`] as a byte.
    pub probe: u8,
    /// [`Outcome`] as a byte.
    pub outcome: u8,
    /// TCP flags of the inbound probe (0 when not TCP or unknown).
    pub tcp_flags: u8,
    /// TTL or hop limit of the inbound probe as it arrived (0 when unknown).
    pub ttl: u8,
    /// ICMP type of the answer when it was an ICMP error, else 0.
    pub icmp_type: u8,
    /// ICMP code of the answer when it was an ICMP error, else 0.
    pub icmp_code: u8,
    /// 4 or 6: the IP version of the probe (an IPv6 probe from an IPv4-mapped source is not
    /// the IPv4 host's); 0 when unknown.
    pub ip_version: u8,
    /// The link-layer address the attempt came from: the Ethernet source of the probe (the
    /// destination of our answer for ACK probes). A neighbour's own address, or the
    /// router's when the probe crossed one: what tells a neighbour's real probes from
    /// forged ones (`--block`).
    pub src_mac: [u8; 6],
    /// 1 when this outcome took its source's walk in `SUSPECTS` to [`WALK_SCAN`]: the
    /// kernel's verdict that the source scans (the record is submitted with a forced
    /// wakeup); 2 when, on it, the kernel also blocked the source (`--block`). 0
    /// otherwise.
    pub verdict: u8,
    /// Explicit padding; always zero.
    pub _pad2: u8,
}

const _: () = assert!(size_of::<ProbeEvent>() == 64);

/// Array of sets of [`SUSPECT_WAYS`] cells (`[u64; SUSPECT_WAYS]`), each cell one source's
/// sequential hypothesis test in the kernel (see [`suspect`]): set by a keyed hash of the
/// source's unit (an IPv4 address, an IPv6 /64), a 32-bit tag in the cell.
pub const SUSPECTS_MAP: &str = "SUSPECTS";
/// Cells per set; a new source takes the cell with the lowest walk (an empty or idle one
/// first, then the oldest of the lowest), so sources of one probe each, however many,
/// never take the place of a source whose walk went higher.
pub const SUSPECT_WAYS: usize = 4;
/// Default sets: 262 144 × 4 cells × 8 B = 8 MiB for 1 048 576 sources.
pub const SUSPECT_SETS: u32 = 262_144;
/// Global (`u32`): sets − 1 (sets are a power of two, set at load).
pub const SUSPECT_MASK_GLOBAL: &str = "SUSPECT_MASK";
/// Global (`u16`): sweeps after which an idle source's walk starts over.
pub const WALK_IDLE_GLOBAL: &str = "WALK_IDLE";
/// The walk at which the kernel decides that a source scans: four first failures more
/// than first successes. With θ0 = 0.8, θ1 = 0.2, each first failure multiplies the
/// likelihood ratio by 4 and each first success divides it by 4; η1 = PD / PF = 99 lies
/// between 4^3 and 4^4.
pub const WALK_SCAN: i8 = 4;
/// The walk at which a source is taken for benign and starts over (η0 = (1 − PD) /
/// (1 − PF) ≈ 1/99, between 4^-4 and 4^-3).
pub const WALK_BENIGN: i8 = -4;
/// Expiry sweeps (seconds, at the default pace) after which an idle source's walk starts
/// over: the userspace test's 10 idle minutes.
pub const WALK_IDLE_EPOCHS: u16 = 600;

const _: () = assert!(SUSPECT_SETS.is_power_of_two());

/// One `SUSPECTS` cell, packed in a `u64` (0: empty): the sweep epoch of its last change
/// (bits 0-15), its distinct first failures (bits 16-22, saturating at 127), whether the
/// verdict was given (bit 23), its walk (bits 24-31, an `i8`), its tag (bits 32-63,
/// never 0).
pub mod suspect {
    /// The cell's tag (0: empty).
    pub const fn tag(cell: u64) -> u32 {
        (cell >> 32) as u32
    }

    /// The walk: first failures minus first successes since it (re)started.
    pub const fn walk(cell: u64) -> i8 {
        (cell >> 24) as u8 as i8
    }

    /// Distinct first failures since it (re)started, saturating at 127.
    pub const fn failures(cell: u64) -> u8 {
        ((cell >> 16) & 0x7f) as u8
    }

    /// Whether the walk reached the verdict (it stays there until the source idles).
    pub const fn decided(cell: u64) -> bool {
        cell & (1 << 23) != 0
    }

    /// The sweep epoch (low 16 bits) of its last change.
    pub const fn epoch(cell: u64) -> u16 {
        cell as u16
    }

    /// A cell of these parts.
    pub const fn pack(tag: u32, walk: i8, failures: u8, decided: bool, epoch: u16) -> u64 {
        ((tag as u64) << 32)
            | ((walk as u8 as u64) << 24)
            | ((decided as u64) << 23)
            | (((failures & 0x7f) as u64) << 16)
            | epoch as u64
    }
}

/// Key of the `OUTCOMES` LRU hash: what has been reported already.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct OutcomeKey {
    /// Remote peer, network byte order, IPv4-mapped for IPv4.
    pub src_addr: [u8; 16],
    /// Our address, network byte order, IPv4-mapped for IPv4.
    pub dst_addr: [u8; 16],
    /// Probed port (0 for successes, which are reported once per host pair).
    pub dst_port: u16,
    /// IP protocol (0 for successes).
    pub proto: u8,
    /// [`ProbeType`] (0 for successes).
    pub probe: u8,
    /// [`Outcome`].
    pub outcome: u8,
    /// 4 or 6: an IPv6 probe from an IPv4-mapped source is not the IPv4 host's (its
    /// outcomes must not make the host's own count as repeats).
    pub ip_version: u8,
    /// Explicit padding; always zero (it is part of the hashed key).
    pub _pad: [u8; 10],
}

const _: () = assert!(size_of::<OutcomeKey>() == 48);

/// Hash of per-source summaries (see [`SummaryKey`], [`Summary`]): once the kernel's
/// sequential test has decided on a source, its further first outcomes are counted here,
/// 512 ports an entry, instead of sent one by one through the ring buffer. This one holds
/// the even generations (see [`SUMMARY_GENERATION_MAP`]); userspace takes the map of the
/// generation before the current one whole, then advances the generation.
pub const SUMMARIES_MAP: &str = "SUMMARIES";
/// The same, for the odd generations (`SUMMARIES` holds the even ones).
pub const SUMMARIES_ODD_MAP: &str = "SUMMARIES_ODD";
/// Array of one `u32`: the generation (0 to 3) summaries are written in now, advanced by
/// userspace each time it reads them.
pub const SUMMARY_GENERATION_MAP: &str = "SUMMARY_GENERATION";
/// Entries of `SUMMARIES` and of `SUMMARIES_ODD` (preallocated, about 200 B each: 1.6 MiB
/// a map; 4 M ports a generation). When the one written is full, the outcomes of decided
/// sources go through the ring buffer one by one as before.
pub const SUMMARIES_ENTRIES: u32 = 8_192;
/// Global (`u32`): 1 when decided sources are summarised (0 with `--probes`, which writes
/// every outcome, and in tests that want every event).
pub const SUMMARIZE_GLOBAL: &str = "SUMMARIZE";
/// Global (`u32`): 1 when a source's first failure is held until its second (0 in
/// tests that want every event).
pub const HOLD_ON_GLOBAL: &str = "HOLD_ON";
/// Global (`u32`): 1 when held first failures are copied to the `FLEET` ring (`--fleet`).
pub const FLEET_ON_GLOBAL: &str = "FLEET_ON";
/// Slots of `HELD`, the held first failures (72 B each: 4.5 MiB), direct-mapped by source.
pub const HELD_SLOTS: u32 = 65_536;
/// Slots of `CROWDS`, the per-target counts of one-probe failures (16 B each: 1 MiB).
pub const CROWD_SLOTS: u32 = 65_536;
/// Globals of the crowd rule: distinct ports (`u32`), window in sweeps (`u16`), failures
/// sent per target and window (`u16`).
pub const CROWD_PORTS_GLOBAL: &str = "CROWD_PORTS";
pub const CROWD_EPOCHS_GLOBAL: &str = "CROWD_EPOCHS";
pub const CROWD_EVENTS_GLOBAL: &str = "CROWD_EVENTS";
const _: () = assert!(HELD_SLOTS.is_power_of_two() && CROWD_SLOTS.is_power_of_two());
/// Ports one summary entry covers: its `ports` bitmap. 512: a scan in random port order
/// (nmap's) touches every block of its range within one generation, so the entries read
/// a generation are the range / 512 (128 for all 65 536 ports), not the ports scanned.
pub const SUMMARY_PORTS: u16 = 512;
/// The 64-bit words of a [`Summary`]'s `ports` bitmap.
pub const SUMMARY_WORDS: usize = SUMMARY_PORTS as usize / 64;

/// Key of `SUMMARIES`: one source's outcomes of one kind, at one TTL, on one host and
/// block of [`SUMMARY_PORTS`] ports, in one generation.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SummaryKey {
    /// Remote peer, as in [`OutcomeKey`].
    pub src_addr: [u8; 16],
    /// Our address, as in [`OutcomeKey`].
    pub dst_addr: [u8; 16],
    /// The block of ports: port / [`SUMMARY_PORTS`].
    pub block: u16,
    /// IP protocol.
    pub proto: u8,
    /// [`ProbeType`].
    pub probe: u8,
    /// [`Outcome`].
    pub outcome: u8,
    /// 4 or 6, as in [`OutcomeKey`].
    pub ip_version: u8,
    /// The generation it was written in (0 to 3): userspace reads a generation once no
    /// program can still be writing it.
    pub generation: u8,
    /// TTL or hop limit of the attempts as they arrived, when at most
    /// [`SUMMARY_EXACT_TTL`]: part of the key, so that each such outcome keeps its own (a
    /// traceroute's TTL steps with the port). 0 for higher ones, whose range the value
    /// keeps (nmap sends each SYN with a random TTL: keyed by it, a scan's entries would
    /// be its blocks times the TTLs it drew).
    pub ttl: u8,
    /// Explicit padding; always zero (it is part of the hashed key).
    pub _pad: [u8; 8],
}

const _: () = assert!(size_of::<SummaryKey>() == 48);

/// Arrival TTLs a summary keys on one by one (see [`SummaryKey::ttl`]): those a
/// traceroute's probes arrive with (it sends up to 30), which userspace's traceroute filter
/// tells from a scan's by how they step with the port.
pub const SUMMARY_EXACT_TTL: u8 = 30;

/// Value of `SUMMARIES`: what the source's outcomes of the key's kind on that block were.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Summary {
    /// Bit i of word w set: port `block * SUMMARY_PORTS + w * 64 + i` had this outcome.
    pub ports: [u64; SUMMARY_WORDS],
    /// `bpf_ktime_get_ns()` of the first and the latest outcome counted.
    pub first_ns: u64,
    pub last_ns: u64,
    /// Interface the first attempt arrived on.
    pub ifindex: u32,
    /// The link-layer address the first attempt came from.
    pub src_mac: [u8; 6],
    /// TCP flags of the first attempt.
    pub tcp_flags: u8,
    /// ICMP type and code of the first answer when it was an ICMP error.
    pub icmp_type: u8,
    pub icmp_code: u8,
    /// The lowest and highest arrival TTL of the outcomes counted, when the key's `ttl` is
    /// 0 (0, 0: unknown). Widened without atomics: two CPUs racing may lose one of their
    /// TTLs from the range.
    pub ttl_min: u8,
    pub ttl_max: u8,
    /// Explicit padding; always zero.
    pub _pad: [u8; 9],
}

const _: () = assert!(size_of::<Summary>() == 104);

/// One slot of the `PENDING` direct-mapped array: an inbound attempt waiting for our answer.
///
/// The slot index comes from a hash of the flow; `tag` is a second hash of the flow and of
/// the number the answer must carry, so an answer matches only the exact attempt it replies
/// to. A zero tag marks an empty slot.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Pending {
    /// The expiry sweep epoch in which the attempt arrived (no clock read per attempt).
    pub seen_epoch: u64,
    /// The remote peer.
    pub remote: [u8; 16],
    /// Our address.
    pub local: [u8; 16],
    /// Interface it arrived on.
    pub ifindex: u32,
    /// Flow and answer tag; 0 = empty.
    pub tag: u32,
    /// The remote peer's port (echo identifier for ICMP).
    pub remote_port: u16,
    /// Our port (0 for ICMP).
    pub local_port: u16,
    /// IP protocol.
    pub proto: u8,
    /// [`ProbeType`].
    pub probe: u8,
    /// TCP flags of the attempt.
    pub tcp_flags: u8,
    /// TTL or hop limit as it arrived.
    pub ttl: u8,
    /// Ethernet source of the attempt.
    pub mac: [u8; 6],
    /// 4 or 6: the attempt's IP version.
    pub ip_version: u8,
    /// [`PENDING_REPORTED`], or 0.
    pub flags: u8,
}

const _: () = assert!(size_of::<Pending>() == 64);

/// [`Pending::flags`]: the attempt's failure was reported when it arrived (XDP knew it
/// would fail: the early verdict); its answer or its expiry only clears the slot.
pub const PENDING_REPORTED: u8 = 1;
/// [`Pending::flags`]: our SYN-ACK answered the attempt and its first success moved the
/// source's walk; the slot waits (until its expiry) for a reset from the client before it
/// sent a byte (a SYN or connect scan's), which takes the success back.
pub const PENDING_ACCEPTED: u8 = 2;

/// LRU hash of blocked sources (`--block`): address (16 bytes, IPv4-mapped) to [`Block`].
pub const BLOCKED_MAP: &str = "BLOCKED";
/// Sources blocked at once, at most (about 100 B each: 1.6 MiB). When full, the source
/// least recently seen leaves first.
pub const BLOCKED_ENTRIES: u32 = 16_384;
/// Global (`u32`): 1 when blocking is on (`--block`); 0 leaves `BLOCKED` unread.
pub const BLOCK_ON_GLOBAL: &str = "BLOCK_ON";
/// Hash (not LRU) of blocks made by hand (`probe-detector block add`): address to
/// [`Block`]. Automatic blocks never evict these; when full, `block add` says so.
pub const BLOCKED_MANUAL_MAP: &str = "BLOCKED_MANUAL";
/// Manual blocks at once, at most.
pub const BLOCKED_MANUAL_ENTRIES: u32 = 4096;
/// Array of `u32` settings userspace changes while running; indices below.
pub const RUNTIME_MAP: &str = "RUNTIME";
/// Slots of `RUNTIME`.
pub const RUNTIME_ENTRIES: u32 = 4;
/// Index in `RUNTIME`: manual blocks in force (0 leaves `BLOCKED_MANUAL` unread).
pub const RUNTIME_MANUAL_BLOCKS: u32 = 0;
/// Index in `RUNTIME`: which half of `BLOCK_FILTER` is in force (0 or 1).
pub const RUNTIME_BLOCK_FILTER_HALF: u32 = 1;

/// Array of `u64` words, mmapable: a bit per hash of a source, set for every source
/// `BLOCKED` or `BLOCKED_MANUAL` holds, in two halves of [`BLOCK_FILTER_WORDS`] words.
/// XDP and TC look a source up in the block lists only when its bit is set in the half in
/// force: a clear bit proves the source unblocked, so the frames of unblocked sources
/// (nearly all of them) cost a word's load instead of two hash lookups. A bit set for a
/// source that is not blocked (a collision, a block since lifted) costs the lookups, never
/// a wrong drop. Bits are only ever added by atomic OR, by the kernel when it blocks on a
/// verdict and by userspace when it blocks; userspace clears stale bits by building the
/// other half from the block lists and switching `RUNTIME[RUNTIME_BLOCK_FILTER_HALF]`
/// over to it.
pub const BLOCK_FILTER_MAP: &str = "BLOCK_FILTER";
/// Words of one half of `BLOCK_FILTER`: 4 096 (32 KiB, 262 144 bits; with every one of
/// the 20 480 blocks the lists hold at most in force, about 8% of unblocked sources still
/// take the lookups).
pub const BLOCK_FILTER_WORDS: u32 = 4096;
/// Entries of `BLOCK_FILTER`: both halves.
pub const BLOCK_FILTER_ENTRIES: u32 = 2 * BLOCK_FILTER_WORDS;
const _: () = assert!(BLOCK_FILTER_WORDS.is_power_of_two());

/// Where the bit of a source (its 16-byte key, IPv4-mapped as `BLOCKED`'s, read as two
/// native-endian words) lies in one half of `BLOCK_FILTER`: the word's index and the
/// bit's mask. Not keyed: a forger who picks sources that share a blocked source's bit
/// only makes its own frames take the lookups every frame took before the filter.
#[inline(always)]
pub const fn block_filter_slot(words: [u64; 2]) -> (u32, u64) {
    let x = (words[0] ^ words[1].rotate_left(29)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    // The top bits of the product: log2(words) for the word, 6 for the bit.
    let bits = BLOCK_FILTER_WORDS.trailing_zeros() + 6;
    let h = (x >> (64 - bits)) as u32;
    (h >> 6, 1 << (h & 63))
}

/// Array of one `u32`: allow-list rules in force (0 leaves the three allow-list tries
/// unread: three LPM lookups off every first outcome with the default of none). Its own
/// map, not a slot of `RUNTIME`, which the blocker owns.
pub const ALLOW_RULES_MAP: &str = "ALLOW_RULES";

/// LPM trie of sources never blocked (key as for `ALLOW_SOURCES`, value [`Protection`]):
/// our addresses, the home nets, gateways, resolvers, on-link neighbours, allow-listed
/// sources. Kept current by userspace.
pub const PROTECTED_MAP: &str = "PROTECTED";
/// Protected prefixes at most (allocated as used).
pub const PROTECTED_ENTRIES: u32 = 16_384;
/// LRU hash of peers: remote hosts that answered a connection this host started (a SYN-ACK
/// acknowledging our SYN's sequence number, or a UDP reply to our datagram's ports),
/// address to the `bpf_ktime_get_ns` time of the latest such answer. Never blocked while
/// recent: forged probes "from" a server we talk to cannot cut us off from it.
pub const PEERS_MAP: &str = "PEERS";
/// Peers remembered at most (about 100 B each: 1.6 MiB).
pub const PEERS_ENTRIES: u32 = 16_384;
/// How long a peer stays one (never blocked): 6 hours, as userspace's `PEER_MEMORY`.
pub const PEER_MEMORY_NS: u64 = 6 * 3600 * 1_000_000_000;
/// Globals (`u64`) of the kernel's blocks on its verdict: how long one lasts (ns), and the
/// budget's rate and burst (thousandths of a block a second, and of a block).
pub const BLOCK_TTL_GLOBAL: &str = "BLOCK_TTL_NS";
pub const BLOCK_RATE_GLOBAL: &str = "BLOCK_RATE_MILLI";
pub const BLOCK_BURST_GLOBAL: &str = "BLOCK_BURST_MILLI";
/// A peer's time is rewritten at most this often (a lookup per answer, a write per
/// minute).
pub const PEER_REFRESH_NS: u64 = 60_000_000_000;

/// Why a prefix of `PROTECTED` is never blocked: bits of [`Protection::reasons`].
pub mod protect {
    /// In an allow-listed source network.
    pub const ALLOWED: u32 = 1;
    /// One of our own addresses.
    pub const OURS: u32 = 1 << 1;
    /// In a home net.
    pub const HOME: u32 = 1 << 2;
    /// A gateway of this host's routes.
    pub const GATEWAY: u32 = 1 << 3;
    /// A DNS resolver of this host.
    pub const RESOLVER: u32 = 1 << 4;
    /// An on-link neighbour (see [`super::Protection::mac`]).
    pub const NEIGHBOUR: u32 = 1 << 5;
}

/// A protected prefix.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Protection {
    /// [`protect`] bits.
    pub reasons: u32,
    /// For a neighbour, its link-layer address: it is spared only when a scan's frames
    /// came from another link-layer address (forged: through a router, or from another
    /// host of the link); its own frames are its own scan.
    pub mac: [u8; 6],
    pub _pad: [u8; 6],
}

const _: () = assert!(size_of::<Protection>() == 16);

/// One blocked source.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Block {
    /// Until when, in `bpf_ktime_get_ns` time (CLOCK_MONOTONIC). From then on its frames
    /// pass again and the entry is removed by the first of them.
    pub until_ns: u64,
    /// Frames dropped so far.
    pub packets: u64,
}

const _: () = assert!(size_of::<Block>() == 16);

/// One home-net prefix: an address is ours when `address & mask == network`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct HomeNet {
    /// Network address (already masked), 16 bytes, IPv4-mapped for IPv4.
    pub network: [u8; 16],
    /// Mask, 16 bytes (for IPv4 the first 96 bits are set: the mapping prefix).
    pub mask: [u8; 16],
}

const _: () = assert!(size_of::<HomeNet>() == 32);

/// The value of `HOME_NETS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HomeNets {
    /// The prefixes, when there are at most [`MAX_HOME_NETS`].
    pub nets: [HomeNet; MAX_HOME_NETS],
    /// Entries of `nets` in use; 0 (and `many` 0): every address is ours.
    pub count: u32,
    /// 1: more prefixes than `nets` holds, all of them in `HOME_TRIE`.
    pub many: u32,
}

const _: () = assert!(size_of::<HomeNets>() == 520);

impl Default for HomeNets {
    fn default() -> Self {
        Self {
            nets: [HomeNet::default(); MAX_HOME_NETS],
            count: 0,
            many: 0,
        }
    }
}

/// Builds the 16-byte IPv4-mapped form (`::ffff:a.b.c.d`) of an IPv4 address given in
/// network byte order.
#[inline(always)]
pub const fn ipv4_mapped(octets: [u8; 4]) -> [u8; 16] {
    [
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, octets[0], octets[1], octets[2], octets[3],
    ]
}

#[cfg(feature = "user")]
mod user {
    use super::{
        Block, HomeNet, HomeNets, OutcomeKey, Pending, ProbeEvent, Protection, Summary, SummaryKey,
    };

    // SAFETY: `#[repr(C)]`, integers and byte arrays with explicit padding fields (no
    // implicit padding, as the size assertion proves): every bit pattern is a valid value
    // and no byte is uninitialised. The same holds for the types below.
    unsafe impl aya::Pod for ProbeEvent {}
    // SAFETY: see above.
    unsafe impl aya::Pod for OutcomeKey {}
    // SAFETY: see above.
    unsafe impl aya::Pod for SummaryKey {}
    // SAFETY: see above.
    unsafe impl aya::Pod for Summary {}
    // SAFETY: see above.
    unsafe impl aya::Pod for Pending {}
    // SAFETY: see above.
    unsafe impl aya::Pod for HomeNet {}
    // SAFETY: see above.
    unsafe impl aya::Pod for Block {}
    // SAFETY: see above.
    unsafe impl aya::Pod for HomeNets {}
    // SAFETY: see above.
    unsafe impl aya::Pod for Protection {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_indexed_in_order() {
        for (i, c) in Counter::ALL.iter().enumerate() {
            assert_eq!(*c as u32, i as u32, "{} out of order", c.name());
        }
    }

    #[test]
    fn enums_round_trip() {
        for p in [
            ProbeType::TcpSyn,
            ProbeType::TcpStealth,
            ProbeType::TcpAck,
            ProbeType::Udp,
            ProbeType::IcmpEcho,
            ProbeType::TcpFragment,
            ProbeType::TcpUnseen,
            ProbeType::IpProtocol,
            ProbeType::Sctp,
        ] {
            assert_eq!(ProbeType::from_u8(p as u8), Some(p));
        }
        for o in [
            Outcome::Refused,
            Outcome::Accepted,
            Outcome::Unreachable,
            Outcome::Prohibited,
            Outcome::Unanswered,
        ] {
            assert_eq!(Outcome::from_u8(o as u8), Some(o));
        }
        assert_eq!(ProbeType::from_u8(0), None);
        assert_eq!(Outcome::from_u8(200), None);
    }

    #[test]
    fn ipv4_mapped_layout() {
        let m = ipv4_mapped([198, 18, 0, 1]);
        assert_eq!(&m[..10], &[0; 10]);
        assert_eq!(&m[10..12], &[0xff, 0xff]);
        assert_eq!(&m[12..], &[198, 18, 0, 1]);
    }
}
