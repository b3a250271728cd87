//! Kernel tests: the real eBPF object is loaded (verifier included) and crafted frames are
//! run through its XDP (ingress) and TC (egress) programs with BPF_PROG_TEST_RUN; the
//! expiry program is run the same way. No packet goes on any wire. Needs root.
//!
//! One file per feature; `harness` loads the object and runs frames through it, and
//! `../common` builds the frames.

#[path = "../common/mod.rs"]
mod common;

mod harness;

// TCP SYNs, stealth, ACK and Maimon probes, our own connections, backscatter.
mod tcp;
// UDP datagrams and ICMP: unreachable codes, echo.
mod udp_icmp;
// The expiry sweep: unanswered attempts and the table's occupancy.
mod expiry;
// Home nets, allow-lists and callbacks: what is not reported.
mod policy;
// Parsing: IPv6, encapsulations, fragments, truncations, impossible lengths.
mod parsing;
// The ring buffer: wakeups and a full ring.
mod ring;
// Blocking in XDP.
mod blocking;
// The sequential hypothesis test in the kernel.
mod walk;
// After the verdict: a decided source's outcomes summarised, not sent one by one.
mod summary;
// A source's first failure held until its second; crowds of one-probe sources.
mod hold;
// The early verdict: on the probe that decides, when XDP sees it.
mod early;
