//! Blocking: the block lists, the block filter, the protected sources and peers.

use core::mem::size_of;

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
