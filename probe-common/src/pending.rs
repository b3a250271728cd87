//! The pending table's slot: an inbound attempt waiting for its answer.

use core::mem::size_of;

/// One slot of the `PENDING` array: an inbound attempt waiting for our answer.
///
/// The slot index comes from a hash of the flow (one of two slots:
/// [`crate::PENDING_FIRST_SLOTS`]); `tag` is a second hash of the flow and of the number
/// the answer must carry, so an answer matches only the exact attempt it replies to. A
/// zero tag marks an empty slot.
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
    /// [`ProbeType`](crate::ProbeType).
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
/// [`Pending::flags`]: our SYN-ACK answered the attempt, a first success; the slot waits
/// for a reset from the client before it sent a byte (a SYN or connect scan's), which
/// means the success is never counted, or for [`CONFIRM_AFTER_EPOCHS`] sweeps, after which
/// the sweep counts it (the source's walk steps down).
pub const PENDING_ACCEPTED: u8 = 2;

/// Sweep epochs after its attempt's (the SYN's) that a first TCP success is counted, if
/// the client did not reset it before a byte: two, so that it stood at least one whole
/// sweep interval (a third of the pending timeout, between 100 ms and 1 s; 1 to 2 s by
/// default). A connect scan resets within a millisecond or so.
pub const CONFIRM_AFTER_EPOCHS: u64 = 2;
