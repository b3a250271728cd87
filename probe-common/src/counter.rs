//! Kernel-side counters: one slot each in the per-CPU `COUNTERS` array, with their
//! names and help texts.

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
    /// First TCP successes never counted: the client reset our SYN-ACK (a half-open SYN
    /// scan's open port) or the connection before sending a byte (a connect scan's): no
    /// use of the service.
    HalfOpen = 39,
    /// First TCP successes counted by the expiry sweep: connections that stood a sweep
    /// interval without such a reset (each moved its source's walk down a step).
    Confirmed = 40,
}

impl Counter {
    /// Every counter, in index order.
    pub const ALL: [Counter; 41] = [
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
        Counter::Confirmed,
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
            Counter::Confirmed => "successes_confirmed",
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
                "First TCP successes never counted: the client reset our SYN-ACK, or the connection before sending a byte (a SYN or connect scan's open port)."
            }
            Counter::Confirmed => {
                "First TCP successes counted once their connection stood a sweep interval without such a reset."
            }
        }
    }
}
