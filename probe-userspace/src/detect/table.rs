//! Bounded state for the detectors: a hash table with a fixed capacity that forgets the
//! least recently active entries first, and a list of distinct items seen within a time
//! window. Memory stays flat whatever the input (floods of spoofed sources included).

use std::{collections::HashMap, hash::Hash, time::Duration};

/// What a table entry must tell about itself.
pub trait Activity {
    /// When the entry last saw activity (monotonic time since boot).
    fn last_seen(&self) -> Duration;

    /// What forgetting the entry would lose: entries worth less go first when room must be
    /// made (a verdict is worth more than any evidence, more evidence more than less), the
    /// least recently active first among equals. Default 0: recency alone decides.
    fn worth(&self) -> u32 {
        0
    }
}

/// Bytes of hash-table bookkeeping per entry, beside its key and value (an approximation
/// for memory bounds).
pub const ENTRY_OVERHEAD: usize = 8;

/// A hash table of at most `capacity` entries. std's HashMap seeds SipHash randomly per
/// process, so crafted keys cannot be chosen to collide.
#[derive(Debug)]
pub struct BoundedTable<K, V> {
    entries: HashMap<K, V>,
    capacity: usize,
    evictions: u64,
}

impl<K: Hash + Eq + Copy, V: Activity> BoundedTable<K, V> {
    /// An empty table that holds at most `capacity` entries.
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: HashMap::with_capacity(capacity.min(4096)),
            capacity: capacity.max(1),
            evictions: 0,
        }
    }

    /// Entries it holds at most.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no entry is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Entries forgotten to make room so far.
    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    /// The entry for `key`, made with `new` if absent. When the table is full, room is made
    /// first: every entry idle for longer than `idle` goes, else the eighth worth least
    /// ([`Activity::worth`]), least recently active first among equals (one partial sort
    /// per many inserts). A flood of one-packet sources thus displaces other one-packet
    /// sources, not a slow scanner that has gathered evidence, nor a verdict.
    pub fn entry(
        &mut self,
        key: K,
        now: Duration,
        idle: Duration,
        new: impl FnOnce() -> V,
    ) -> &mut V {
        if !self.entries.contains_key(&key) && self.entries.len() >= self.capacity {
            drop(self.make_room(now, idle));
        }
        self.entries.entry(key).or_insert_with(new)
    }

    /// [`BoundedTable::entry`], handing the entries it removed to make room to `evicted`
    /// (so that an incident forgotten for room still gets its summary).
    pub fn entry_evicting(
        &mut self,
        key: K,
        now: Duration,
        idle: Duration,
        new: impl FnOnce() -> V,
        evicted: &mut Vec<V>,
    ) -> &mut V {
        if !self.entries.contains_key(&key) && self.entries.len() >= self.capacity {
            evicted.extend(self.make_room(now, idle));
        }
        self.entries.entry(key).or_insert_with(new)
    }

    /// The entries, in no order.
    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.entries.values()
    }

    /// The entries, mutable, in no order.
    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut V> {
        self.entries.values_mut()
    }

    /// The entry for `key`, if held.
    pub fn get(&self, key: &K) -> Option<&V> {
        self.entries.get(key)
    }

    /// The entry for `key`, mutable, if held.
    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        self.entries.get_mut(key)
    }

    /// True when `key` is held.
    pub fn contains(&self, key: &K) -> bool {
        self.entries.contains_key(key)
    }

    /// Removes and returns the entry for `key`, if held.
    pub fn remove(&mut self, key: &K) -> Option<V> {
        self.entries.remove(key)
    }

    /// Removes and returns every entry for which `done` is true.
    pub fn take_where(&mut self, mut done: impl FnMut(&V) -> bool) -> Vec<V> {
        let keys: Vec<K> = self
            .entries
            .iter()
            .filter(|(_, v)| done(v))
            .map(|(k, _)| *k)
            .collect();
        keys.iter().filter_map(|k| self.entries.remove(k)).collect()
    }

    /// Removes the idle entries, or else the eighth worth least; returns them.
    fn make_room(&mut self, now: Duration, idle: Duration) -> Vec<V> {
        let mut removed: Vec<V> = self
            .entries
            .extract_if(|_, v| now.saturating_sub(v.last_seen()) > idle)
            .map(|(_, v)| v)
            .collect();
        if removed.is_empty() {
            let mut ranks: Vec<((u32, Duration), K)> = self
                .entries
                .iter()
                .map(|(k, v)| ((v.worth(), v.last_seen()), *k))
                .collect();
            let victims = (ranks.len() / 8).max(1);
            ranks.select_nth_unstable_by_key(victims - 1, |(rank, _)| *rank);
            removed.extend(
                ranks[..victims]
                    .iter()
                    .filter_map(|(_, key)| self.entries.remove(key)),
            );
        }
        self.evictions += removed.len() as u64;
        removed
    }
}

/// Distinct items, each with the time it was last seen, at most `cap` of them.
#[derive(Debug, Clone)]
pub struct RecentSet<T> {
    items: Vec<(T, Duration)>,
}

impl<T: PartialEq + Copy + Ord> RecentSet<T> {
    /// An empty set.
    pub fn new() -> Self {
        Self { items: Vec::new() }
    }

    /// Forgets items not seen within `window` of `now`, then notes `item` at `now` (if
    /// there is room for a new one under `cap`).
    pub fn note(&mut self, item: T, now: Duration, window: Duration, cap: usize) {
        self.items
            .retain(|&(_, seen)| now.saturating_sub(seen) <= window);
        if let Some((_, seen)) = self.items.iter_mut().find(|(i, _)| *i == item) {
            *seen = (*seen).max(now);
        } else if self.items.len() < cap {
            self.items.push((item, now));
        }
    }

    /// Distinct items held.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// True when no item is held.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The items, sorted.
    pub fn sorted(&self) -> Vec<T> {
        let mut items: Vec<T> = self.items.iter().map(|&(i, _)| i).collect();
        items.sort_unstable();
        items
    }
}

impl<T: PartialEq + Copy + Ord> Default for RecentSet<T> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Seen(Duration);

    impl Activity for Seen {
        fn last_seen(&self) -> Duration {
            self.0
        }
    }

    fn s(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    #[test]
    fn the_table_forgets_idle_then_least_recent_entries() {
        let mut t = BoundedTable::new(4);
        for k in 0..4u32 {
            t.entry(k, s(u64::from(k)), s(100), || Seen(s(u64::from(k))));
        }
        // Full, nothing idle for 100 s: the least recently active (key 0) goes.
        t.entry(9, s(10), s(100), || Seen(s(10)));
        assert_eq!(t.len(), 4);
        assert_eq!(t.evictions(), 1);
        assert!(!t.values().any(|v| v.0 == s(0)));
        // Much later, everything is idle: all of it goes at once.
        t.entry(10, s(1000), s(100), || Seen(s(1000)));
        assert_eq!(t.len(), 1);
        assert_eq!(t.evictions(), 5);
    }

    #[derive(Debug)]
    struct Worth(Duration, u32);

    impl Activity for Worth {
        fn last_seen(&self) -> Duration {
            self.0
        }
        fn worth(&self) -> u32 {
            self.1
        }
    }

    #[test]
    fn the_table_forgets_cheap_entries_before_valuable_ones() {
        let mut t = BoundedTable::new(8);
        // The oldest entry has evidence (worth 3); seven newer ones have none.
        t.entry(0u32, s(0), s(100), || Worth(s(0), 3));
        for k in 1..8u32 {
            t.entry(k, s(u64::from(k)), s(100), || Worth(s(u64::from(k)), 0));
        }
        // A flood of newcomers: each insert evicts a worthless entry, never key 0.
        for k in 100..200u32 {
            t.entry(k, s(50), s(100), || Worth(s(50), 0));
            assert!(t.contains(&0), "the entry with evidence was evicted at {k}");
        }
        assert_eq!(t.len(), 8);
    }

    #[test]
    fn the_recent_set_keeps_distinct_items_within_the_window() {
        let mut r = RecentSet::new();
        for (item, at) in [(5u16, 0), (3, 1), (5, 2), (9, 3)] {
            r.note(item, s(at), s(10), 8);
        }
        assert_eq!(r.sorted(), vec![3, 5, 9]);
        // At 12 s, 3 (last seen at 1 s) is more than 10 s old; 5 (2 s) and 9 (3 s) are not.
        r.note(1, s(12), s(10), 8);
        assert_eq!(r.sorted(), vec![1, 5, 9]);
        // The cap bounds the set.
        for item in 100..200 {
            r.note(item, s(12), s(10), 8);
        }
        assert_eq!(r.len(), 8);
    }
}
