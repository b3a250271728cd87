//! The kernel's block filter (`BLOCK_FILTER`): a bit per source the block lists may hold,
//! so that XDP and TC look the lists up only for those. Userspace shares the map's memory
//! (it is mmapable) and sets bits with atomic OR, as the kernel does when it blocks on a
//! verdict; stale bits (blocks lifted or expired) are cleared by building the half not in
//! force from the lists and switching over.

use std::{
    os::fd::{AsFd as _, AsRawFd as _},
    ptr::NonNull,
    sync::atomic::{AtomicU64, Ordering},
};

use aya::maps::{Array, Map, MapData, MapError};
use probe_common::{
    BLOCK_FILTER_ENTRIES, BLOCK_FILTER_WORDS, RUNTIME_BLOCK_FILTER_HALF, block_filter_slot,
};

/// Why the filter could not be shared.
#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    /// The object's `BLOCK_FILTER` is not an array.
    #[error("the eBPF object's block filter is not an array")]
    NotArray,
    /// mmap of the map failed (an object built without `BPF_F_MMAPABLE`).
    #[error("cannot map the kernel's block filter: {0}")]
    Map(#[source] std::io::Error),
    /// The half in force could not be switched.
    #[error("cannot switch the kernel's block filter: {0}")]
    Switch(#[from] MapError),
}

/// See the module documentation.
pub struct BlockFilter {
    /// Both halves, `BLOCK_FILTER_ENTRIES` words, shared with the kernel.
    words: NonNull<AtomicU64>,
    /// The map, kept open for as long as its memory is mapped.
    _map: MapData,
    /// The half XDP and TC read (`RUNTIME[RUNTIME_BLOCK_FILTER_HALF]`).
    half: u32,
}

// SAFETY: the mapping is owned by the filter alone (unmapped on drop) and only ever
// accessed through atomics, which any thread may use.
unsafe impl Send for BlockFilter {}

const BYTES: usize = BLOCK_FILTER_ENTRIES as usize * size_of::<u64>();

impl BlockFilter {
    /// Shares `map`'s memory; half 0 in force, as the kernel starts.
    pub fn new(map: Map) -> Result<Self, FilterError> {
        let Map::Array(map) = map else {
            return Err(FilterError::NotArray);
        };
        // SAFETY: a shared read-write mapping of the map's fd, of the array's size (a
        // whole number of pages: 64 KiB); the fd stays open while the mapping lives.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                BYTES,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                map.fd().as_fd().as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(FilterError::Map(std::io::Error::last_os_error()));
        }
        let words = NonNull::new(ptr.cast::<AtomicU64>()).ok_or_else(|| {
            FilterError::Map(std::io::Error::other("mmap returned a null mapping"))
        })?;
        Ok(Self {
            words,
            _map: map,
            half: 0,
        })
    }

    /// Word `i` of half `half`.
    fn at(&self, half: u32, i: u32) -> &AtomicU64 {
        let index = (half & 1) * BLOCK_FILTER_WORDS + (i & (BLOCK_FILTER_WORDS - 1));
        // SAFETY: masked, `index` is below BLOCK_FILTER_ENTRIES, the mapping's length in
        // words; the mapping lives as long as `self`.
        unsafe { self.words.add(index as usize).as_ref() }
    }

    /// The word of `key`'s bit in half `half`, and the bit.
    fn word(&self, half: u32, key: &[u8; 16]) -> (&AtomicU64, u64) {
        let (word, bit) = block_filter_slot(words_of(key));
        (self.at(half, word), bit)
    }

    /// Sets the bit of `key` (a block list's key) in the half in force. Call after the
    /// block was written, so that a frame that finds the bit finds the block.
    pub fn add(&self, key: &[u8; 16]) {
        let (word, bit) = self.word(self.half, key);
        word.fetch_or(bit, Ordering::SeqCst);
    }

    /// True when the bit of `key` is set in the half in force.
    pub fn contains(&self, key: &[u8; 16]) -> bool {
        let (word, bit) = self.word(self.half, key);
        word.load(Ordering::SeqCst) & bit != 0
    }

    /// Bits set in the half in force.
    pub fn bits_set(&self) -> u32 {
        (0..BLOCK_FILTER_WORDS)
            .map(|i| self.at(self.half, i).load(Ordering::Relaxed).count_ones())
            .sum()
    }

    /// Clears the stale bits: builds the half not in force from `keys` (every key of both
    /// block lists), puts it in force, waits for the programs that read the old half to
    /// finish, and adds `later()`'s keys (the kernel's list read again: a block the kernel
    /// made on a verdict while the new half was built set its bit in the old one).
    pub fn rebuild(
        &mut self,
        keys: impl IntoIterator<Item = [u8; 16]>,
        runtime: &mut Array<MapData, u32>,
        later: impl FnOnce() -> Vec<[u8; 16]>,
    ) -> Result<(), FilterError> {
        let next = self.half ^ 1;
        // No program writes the half not in force: the last one that read it as in force
        // ended long before (see below).
        for i in 0..BLOCK_FILTER_WORDS {
            self.at(next, i).store(0, Ordering::SeqCst);
        }
        for key in keys {
            let (word, bit) = self.word(next, &key);
            word.fetch_or(bit, Ordering::SeqCst);
        }
        runtime.set(RUNTIME_BLOCK_FILTER_HALF, &next, 0)?;
        self.half = next;
        // XDP and TC runs are short (microseconds) and never sleep: a program that read
        // the old half is done after this.
        std::thread::sleep(std::time::Duration::from_millis(2));
        for key in later() {
            self.add(&key);
        }
        Ok(())
    }
}

impl Drop for BlockFilter {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, of that length, unmapped once.
        unsafe { libc::munmap(self.words.as_ptr().cast(), BYTES) };
    }
}

/// A block list's key as the kernel's `Addr` holds it: two native-endian words.
fn words_of(key: &[u8; 16]) -> [u64; 2] {
    let (a, b) = key.split_at(8);
    [
        u64::from_ne_bytes(a.try_into().unwrap_or_default()),
        u64::from_ne_bytes(b.try_into().unwrap_or_default()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_spread_over_the_filter() {
        // 20 480 sources (every block the lists hold at most) of one /16 and of one /48
        // take nearly as many distinct bits, and the sources of another /16, unblocked,
        // rarely find their bit set (each that does takes the look-ups).
        let v4 = |net: u32, i: u32| std::net::Ipv4Addr::from(net | i).to_ipv6_mapped().octets();
        let mut bits = std::collections::HashSet::new();
        for i in 0..10_240u32 {
            let mut v6 = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
            v6[12..].copy_from_slice(&i.to_be_bytes());
            for key in [v4(0xc612_0000, i), v6] {
                bits.insert(block_filter_slot(words_of(&key)));
            }
        }
        assert!(
            bits.len() > 19_000,
            "{} distinct bits of 20 480 keys",
            bits.len()
        );
        let false_hits = (0..10_000u32)
            .filter(|&i| bits.contains(&block_filter_slot(words_of(&v4(0xc613_0000, i)))))
            .count();
        assert!(
            false_hits < 1_000,
            "{false_hits} of 10 000 unblocked sources hit a bit"
        );
    }
}
