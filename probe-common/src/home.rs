//! The home nets: which destination addresses are ours.

use core::mem::size_of;

use crate::MAX_HOME_NETS;

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
