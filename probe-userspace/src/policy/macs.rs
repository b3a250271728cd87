//! The link-layer address each recent source's frames came from, read when a block is
//! decided: a neighbour's own frames are its scan, frames "from" a neighbour that came
//! through another link-layer address are forged. A direct-mapped cache with a keyed hash,
//! overwritten on collision: bounded whatever a flood sends, and a source whose entry was
//! overwritten is "not known", which spares a neighbour (the safe side).

use std::{
    hash::{BuildHasher as _, RandomState},
    net::IpAddr,
};

/// Slots of the cache: 16 384 × 24 B = 384 KiB.
pub const SLOTS: usize = 16_384;

/// See the module documentation.
pub struct Macs {
    slots: Vec<Option<(IpAddr, [u8; 6])>>,
    hasher: RandomState,
}

impl Default for Macs {
    fn default() -> Self {
        Self {
            slots: vec![None; SLOTS],
            hasher: RandomState::new(),
        }
    }
}

impl Macs {
    /// Notes that `src`'s latest frame came from `mac`.
    pub fn note(&mut self, src: IpAddr, mac: [u8; 6]) {
        let slot = self.slot(src);
        self.slots[slot] = Some((src, mac));
    }

    /// The link-layer address `src`'s latest frame came from, if still known.
    pub fn get(&self, src: IpAddr) -> Option<[u8; 6]> {
        match self.slots[self.slot(src)] {
            Some((addr, mac)) if addr == src => Some(mac),
            _ => None,
        }
    }

    fn slot(&self, src: IpAddr) -> usize {
        (self.hasher.hash_one(src) as usize) % SLOTS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_latest_address_is_kept_and_a_collision_forgets() {
        let mut macs = Macs::default();
        let a: IpAddr = "198.18.0.1".parse().unwrap();
        assert_eq!(macs.get(a), None);
        macs.note(a, [2, 0, 0, 0, 0, 1]);
        macs.note(a, [2, 0, 0, 0, 0, 2]);
        assert_eq!(macs.get(a), Some([2, 0, 0, 0, 0, 2]));
        // A flood of other sources: bounded, and `a` is forgotten or still right.
        for i in 0..100_000u32 {
            macs.note(IpAddr::from((0xc612_0000 + i).to_be_bytes()), [9; 6]);
        }
        assert_eq!(macs.slots.len(), SLOTS);
        assert!(matches!(macs.get(a), None | Some([2, 0, 0, 0, 0, 2])));
    }
}
