//! Blocking confirmed scanners in XDP (`--block`, off by default): the kernel's block lists
//! and protected sources, which this module owns once probe-detector runs. The control
//! socket's protocol is [`crate::policy::block_control`]'s, the state file
//! [`crate::policy::block_state`]'s. Who may never be blocked is
//! [`crate::policy::protect`]'s; how many automatic blocks may be made,
//! [`crate::policy::budget`]'s.
//!
//! The threat is forged sources: whoever can forge a packet can make a "scan" from any
//! address. So the never-block set (our addresses, home nets, gateways, resolvers,
//! neighbours whose address came in frames not their own, allow-listed sources, and peers
//! that answered connections this host started) is kept in the kernel's `PROTECTED` trie
//! and `PEERS` map and kept current; automatic blocks are rationed ([`crate::policy::budget`]), kept
//! apart from the blocks made by hand (`BLOCKED` and `BLOCKED_MANUAL`), evicted by us (the
//! soonest to end first, counted) before the kernel's LRU would, and lifted when their
//! source becomes protected or its scan is later found to be forged. See docs/blocking.md.

use std::{
    collections::{BTreeMap, HashMap as StdHashMap},
    net::{IpAddr, Ipv6Addr},
    time::Duration,
};

use aya::{
    Ebpf,
    maps::{Array, HashMap, LpmTrie, MapData, MapError, lpm_trie::Key},
};
use probe_common::{
    BLOCK_FILTER_MAP, BLOCKED_ENTRIES, BLOCKED_MANUAL_ENTRIES, BLOCKED_MANUAL_MAP, BLOCKED_MAP,
    Block, PEERS_MAP, PROTECTED_ENTRIES, PROTECTED_MAP, Protection, RUNTIME_MANUAL_BLOCKS,
    RUNTIME_MAP, protect,
};
use serde::{Deserialize, Serialize};

use crate::{
    detect::ScanAlert,
    net::cidr::Cidr,
    policy::{
        block_control::{Request, Response},
        block_filter::{BlockFilter, FilterError},
        block_state::SavedBlock,
        budget::{Budget, BudgetConfig, Refusal},
        protect::{
            Asker, BlockPolicy, Spared, applies, canonical, mapped_source, not_a_host, unverified,
        },
    },
};

/// How long a peer (a host that answered a connection this host started) stays protected
/// after its latest answer.
pub const PEER_MEMORY: Duration = Duration::from_nanos(probe_common::PEER_MEMORY_NS);

fn duration_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Why a block cannot be made, removed or listed.
#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    /// The object has no BLOCKED map (a build without blocking).
    #[error("the eBPF object has no {BLOCKED_MAP} map")]
    NoMap,
    /// The address is one that is never blocked.
    #[error("{addr} is never blocked: {why}")]
    Spared { addr: IpAddr, why: Spared },
    /// The list of blocks made by hand is full.
    #[error(
        "the list of blocks made by hand is full ({BLOCKED_MANUAL_ENTRIES}): remove some first"
    )]
    Full,
    /// The kernel refused.
    #[error("the kernel's block list: {0}")]
    Map(#[from] MapError),
    /// The kernel's block filter could not be shared or switched.
    #[error(transparent)]
    Filter(#[from] FilterError),
}

/// One block, as listed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Blocked {
    /// The blocked source.
    pub addr: IpAddr,
    /// Seconds left.
    pub expires_in_s: u64,
    /// Frames dropped so far.
    pub packets: u64,
    /// Made by hand (`block add`), not by a scan.
    #[serde(default)]
    pub manual: bool,
}

/// What the blocker did, for the metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockStats {
    /// Blocks made (by scans and by hand).
    pub made: u64,
    /// Automatic blocks in force and blocks made by hand in force.
    pub automatic: u64,
    pub manual: u64,
    /// Automatic blocks ended early to make room for newer ones (the table was full).
    pub evicted: u64,
    /// Blocks lifted because their source became protected, was found likely spoofed, or
    /// answered a connection this host started.
    pub lifted: u64,
    /// Automatic blocks not made: over `--block-rate`, over `--block-prefix-cap`.
    pub refused_rate: u64,
    pub refused_prefix: u64,
}

/// The kernel's block lists and protected sources, and the policy that fills them.
pub struct Blocker {
    automatic_map: HashMap<MapData, [u8; 16], Block>,
    manual_map: HashMap<MapData, [u8; 16], Block>,
    runtime: Array<MapData, u32>,
    /// The bit per source XDP and TC test before they look the lists up.
    filter: BlockFilter,
    /// A block was lifted or expired since the filter was last rebuilt: its bit is stale.
    filter_stale: bool,
    protected: LpmTrie<MapData, [u8; 16], Protection>,
    peers: HashMap<MapData, [u8; 16], u64>,
    policy: BlockPolicy,
    budget: Budget,
    /// What `PROTECTED` holds.
    in_trie: BTreeMap<Cidr, Protection>,
    /// Automatic blocks in force, and until when (monotonic).
    automatic: StdHashMap<IpAddr, Duration>,
    /// Blocks made by hand in force, and until when.
    manual: StdHashMap<IpAddr, Duration>,
    /// Automatic blocks in force at most: below the kernel's LRU size, so that we evict
    /// (and count) before the kernel would.
    capacity: usize,
    stats: BlockStats,
}

impl Blocker {
    /// Takes the block lists, the protected trie and the peers out of `ebpf` (loaded with
    /// blocking on) and writes the policy's never-block list to the trie.
    pub fn new(
        ebpf: &mut Ebpf,
        policy: BlockPolicy,
        budget: BudgetConfig,
    ) -> Result<Self, BlockError> {
        let mut take = |name| ebpf.take_map(name).ok_or(BlockError::NoMap);
        let automatic_map = HashMap::try_from(take(BLOCKED_MAP)?)?;
        let manual_map = HashMap::try_from(take(BLOCKED_MANUAL_MAP)?)?;
        let runtime = Array::try_from(take(RUNTIME_MAP)?)?;
        let filter = BlockFilter::new(take(BLOCK_FILTER_MAP)?)?;
        let protected = LpmTrie::try_from(take(PROTECTED_MAP)?)?;
        let peers = HashMap::try_from(take(PEERS_MAP)?)?;
        let mut blocker = Self {
            automatic_map,
            manual_map,
            runtime,
            filter,
            filter_stale: false,
            protected,
            peers,
            policy: BlockPolicy {
                never: Vec::new(),
                ..policy.clone()
            },
            budget: Budget::new(budget),
            in_trie: BTreeMap::new(),
            automatic: StdHashMap::new(),
            manual: StdHashMap::new(),
            capacity: BLOCKED_ENTRIES as usize - 1,
            stats: BlockStats::default(),
        };
        blocker.set_never(policy.never)?;
        Ok(blocker)
    }

    /// What the blocker did so far.
    pub fn stats(&self) -> BlockStats {
        BlockStats {
            automatic: self.automatic.len() as u64,
            manual: self.manual.len() as u64,
            ..self.stats
        }
    }

    /// The policy in force.
    pub fn policy(&self) -> &BlockPolicy {
        &self.policy
    }

    /// The budget's settings.
    pub fn budget(&self) -> BudgetConfig {
        self.budget.config()
    }

    /// Replaces the never-block list (the network or the allow-lists changed): rewrites
    /// the kernel's trie and lifts the blocks of sources it now protects (by hand too, when
    /// the reason binds the operator); returns each lifted source with why.
    pub fn set_never(
        &mut self,
        never: Vec<(Cidr, Spared)>,
    ) -> Result<Vec<(IpAddr, Spared)>, BlockError> {
        self.policy.never = never;
        let new = self.policy.protections();
        if new.len() > PROTECTED_ENTRIES as usize {
            log::warn!(
                "{} protected prefixes, the kernel holds {PROTECTED_ENTRIES}: the rest are checked here only",
                new.len()
            );
        }
        for net in self.in_trie.keys().filter(|n| !new.contains_key(n)) {
            let _ = self.protected.remove(&trie_key(*net));
        }
        for (net, protection) in new.iter().take(PROTECTED_ENTRIES as usize) {
            if self.in_trie.get(net) != Some(protection) {
                self.protected.insert(&trie_key(*net), protection, 0)?;
            }
        }
        self.in_trie = new;
        let mut lifted = Vec::new();
        let blocked: Vec<(IpAddr, bool)> = self
            .automatic
            .keys()
            .map(|a| (*a, false))
            .chain(self.manual.keys().map(|a| (*a, true)))
            .collect();
        for (addr, manual) in blocked {
            let asker = if manual {
                Asker::Operator
            } else {
                Asker::Review
            };
            if let Some(why) = self.policy.spared(addr, asker) {
                self.remove(addr)?;
                self.stats.lifted += 1;
                lifted.push((addr, why));
            }
        }
        Ok(lifted)
    }

    /// Replaces the allow-listed networks of the never-block list (after the allow-lists
    /// changed); returns the sources whose blocks were lifted.
    pub fn set_allowed<'a>(
        &mut self,
        sources: impl IntoIterator<Item = &'a Cidr>,
    ) -> Result<Vec<(IpAddr, Spared)>, BlockError> {
        let mut never: Vec<(Cidr, Spared)> = self
            .policy
            .never
            .iter()
            .filter(|(_, why)| *why != Spared::AllowListed)
            .copied()
            .collect();
        never.extend(sources.into_iter().map(|c| (*c, Spared::AllowListed)));
        self.set_never(never)
    }

    /// Why `addr` must not be blocked at `asker`'s request, read from the kernel's
    /// protected trie and peers as the kernel holds them.
    pub fn protection(&self, addr: IpAddr, asker: Asker, now: Duration) -> Option<Spared> {
        let addr = canonical(addr);
        if not_a_host(addr) {
            return Some(Spared::NotAHost);
        }
        let key = key(addr);
        if let Ok(found) = self.protected.get(&Key::new(128, key), 0) {
            let reasons = [
                (protect::ALLOWED, Spared::AllowListed),
                (protect::OURS, Spared::Ours),
                (protect::GATEWAY, Spared::Gateway),
                (protect::RESOLVER, Spared::Resolver),
                (protect::HOME, Spared::HomeNet),
                (protect::NEIGHBOUR, Spared::Neighbour { mac: found.mac }),
            ];
            if let Some(why) = reasons
                .into_iter()
                .filter(|(bit, _)| found.reasons & bit != 0)
                .map(|(_, why)| why)
                .find(|why| applies(*why, asker))
            {
                return Some(why);
            }
        }
        // Beyond the trie's size, the rest of the list is checked here.
        if self.in_trie.len() > PROTECTED_ENTRIES as usize
            && let Some(why) = self.policy.spared(addr, asker)
        {
            return Some(why);
        }
        if matches!(asker, Asker::Scan { .. })
            && let Ok(seen_ns) = self.peers.get(&key, 0)
            && now.saturating_sub(Duration::from_nanos(seen_ns)) < PEER_MEMORY
        {
            return Some(Spared::Peer);
        }
        None
    }

    /// Blocks the sources of a newly recognised scan that may be blocked, for the policy's
    /// time from `now` (CLOCK_MONOTONIC), within the budget; returns each source with why
    /// it was spared.
    pub fn on_scan(
        &mut self,
        scan: &ScanAlert,
        now: Duration,
        mac_of: impl Fn(IpAddr) -> Option<[u8; 6]>,
    ) -> Result<Vec<(IpAddr, Option<Spared>)>, BlockError> {
        let unsure = unverified(scan, self.policy.block_spoofed);
        let mut verdicts = Vec::with_capacity(scan.sources.len());
        for &src in &scan.sources {
            if let Some(why) = mapped_source(src) {
                verdicts.push((src, Some(why)));
                continue;
            }
            let src = canonical(src);
            let mut why = self
                .protection(src, Asker::Scan { mac: mac_of(src) }, now)
                .or(unsure);
            if why.is_none()
                && !self.automatic.contains_key(&src)
                && !self.manual.contains_key(&src)
            {
                match self.budget.take(src, now) {
                    Ok(()) => self.insert_automatic(src, now.saturating_add(self.policy.ttl))?,
                    Err(Refusal::Rate) => {
                        self.stats.refused_rate += 1;
                        why = Some(Spared::BlockRate);
                    }
                    Err(Refusal::PrefixCap) => {
                        self.stats.refused_prefix += 1;
                        why = Some(Spared::PrefixCap);
                    }
                }
            }
            // A block the kernel made on its verdict, which the policy would not make:
            // lifted.
            if why.is_some()
                && !self.automatic.contains_key(&src)
                && !self.manual.contains_key(&src)
                && remove_key(&mut self.automatic_map, &key(src))?
            {
                self.stats.lifted += 1;
            }
            verdicts.push((src, why));
        }
        Ok(verdicts)
    }

    /// The kernel blocked `addr` on its verdict at `now` (`mac`: the link-layer address its
    /// frames came from; `crowd`: it is a member of a spread scan, `Some(true)`, or of a
    /// decoy scan, `Some(false)`, of the target). Known already (a scan's start took it
    /// over): nothing to do. Otherwise it is judged as a scan's source would be: kept and
    /// counted against the prefix cap, or lifted; returns why it was lifted. (Decoys seen
    /// only later lift it with their scan's alert.)
    pub fn review_kernel_block(
        &mut self,
        addr: IpAddr,
        now: Duration,
        mac: Option<[u8; 6]>,
        crowd: Option<bool>,
        traceroute: bool,
    ) -> Result<Option<Spared>, BlockError> {
        let addr = canonical(addr);
        if self.automatic.contains_key(&addr) || self.manual.contains_key(&addr) {
            return Ok(None);
        }
        let spoofed = match crowd {
            Some(true) => Some(Spared::Spread),
            Some(false) if !self.policy.block_spoofed => Some(Spared::LikelySpoofed),
            _ => None,
        };
        let why = mapped_source(addr)
            .or_else(|| self.protection(addr, Asker::Scan { mac }, now))
            .or(spoofed)
            .or(traceroute.then_some(Spared::Traceroute))
            .or_else(|| match self.budget.take(addr, now) {
                Ok(()) => None,
                Err(Refusal::Rate) => Some(Spared::BlockRate),
                Err(Refusal::PrefixCap) => Some(Spared::PrefixCap),
            });
        if let Some(why) = why {
            remove_key(&mut self.automatic_map, &key(addr))?;
            self.filter_stale = true;
            self.stats.lifted += 1;
            return Ok(Some(why));
        }
        self.insert_automatic(addr, now.saturating_add(self.policy.ttl))?;
        Ok(None)
    }

    /// A block the fleet's correlators published (`--fleet` with `--block`): made here as
    /// an automatic block, for `left` but never longer than this host's own `--block-ttl`,
    /// unless this host's never-block rules spare the source (as for a scan whose frames'
    /// link-layer address is unknown: on-link neighbours are spared) or its budget is
    /// spent. Returns why it was spared. An IPv4-mapped IPv6 source is never taken for the
    /// IPv4 host.
    pub fn fleet_block(
        &mut self,
        addr: IpAddr,
        left: Duration,
        now: Duration,
    ) -> Result<Option<Spared>, BlockError> {
        if let Some(why) = mapped_source(addr) {
            return Ok(Some(why));
        }
        let addr = canonical(addr);
        if let Some(why) = self.protection(addr, Asker::Scan { mac: None }, now) {
            return Ok(Some(why));
        }
        if self.automatic.contains_key(&addr) || self.manual.contains_key(&addr) {
            return Ok(None);
        }
        match self.budget.take(addr, now) {
            Ok(()) => {}
            Err(Refusal::Rate) => {
                self.stats.refused_rate += 1;
                return Ok(Some(Spared::BlockRate));
            }
            Err(Refusal::PrefixCap) => {
                self.stats.refused_prefix += 1;
                return Ok(Some(Spared::PrefixCap));
            }
        }
        self.insert_automatic(addr, now.saturating_add(left.min(self.policy.ttl)))?;
        Ok(None)
    }

    /// A scan found likely spoofed (its decoys showed after its start, or its sources, each
    /// blocked for a scan of its own first, turn out to be one decoy scan): lifts the
    /// automatic blocks of its sources, unless `--block-spoofed`; returns them.
    pub fn on_spoofed(&mut self, scan: &ScanAlert) -> Vec<IpAddr> {
        // A spread scan says nothing of its sources' other scans: a forger would name a
        // blocked scanner among its flood's sources to free it.
        if self.policy.block_spoofed || !scan.spoof.suspected() || scan.spoof.spread() {
            return Vec::new();
        }
        let mut lifted = Vec::new();
        for src in &scan.sources {
            let src = canonical(*src);
            if self.automatic.contains_key(&src) && self.remove(src).unwrap_or(false) {
                self.stats.lifted += 1;
                lifted.push(src);
            }
        }
        lifted
    }

    /// Blocks `addr` by hand for `ttl` (the policy's when `None`), unless a reason that
    /// binds the operator spares it. Not counted against the budget; never evicted by
    /// automatic blocks.
    pub fn add(
        &mut self,
        addr: IpAddr,
        ttl: Option<Duration>,
        now: Duration,
    ) -> Result<(), BlockError> {
        let addr = canonical(addr);
        if let Some(why) = self.protection(addr, Asker::Operator, now) {
            return Err(BlockError::Spared { addr, why });
        }
        if !self.manual.contains_key(&addr) && self.manual.len() >= BLOCKED_MANUAL_ENTRIES as usize
        {
            return Err(BlockError::Full);
        }
        // Any TTL a client sends saturates (u64::MAX seconds is "until the map is cleared"),
        // never overflows.
        let until = now.saturating_add(ttl.unwrap_or(self.policy.ttl));
        let key = key(addr);
        let packets = self.manual_map.get(&key, 0).map_or(0, |b| b.packets)
            + self.automatic_map.get(&key, 0).map_or(0, |b| b.packets);
        let block = Block {
            until_ns: duration_ns(until),
            packets,
        };
        self.manual_map.insert(&key, &block, 0)?;
        self.filter.add(&key);
        self.manual.insert(addr, until);
        if self.automatic.remove(&addr).is_some() {
            let _ = self.automatic_map.remove(&key);
            self.budget.release(addr);
        }
        self.write_manual_count()?;
        self.stats.made += 1;
        Ok(())
    }

    /// Puts back a block of the state file with `left` to run: one made by hand as by
    /// hand; an automatic one unless its source is protected now (neighbours aside), not
    /// rationed again by the rate but counted in its prefix.
    pub fn restore(
        &mut self,
        saved: &SavedBlock,
        left: Duration,
        now: Duration,
    ) -> Result<(), BlockError> {
        if saved.manual {
            return self.add(saved.addr, Some(left), now);
        }
        let addr = canonical(saved.addr);
        if let Some(why) = self.protection(addr, Asker::Review, now) {
            return Err(BlockError::Spared { addr, why });
        }
        if self.automatic.contains_key(&addr) || self.manual.contains_key(&addr) {
            return Ok(());
        }
        self.budget.note(addr);
        self.insert_automatic(addr, now.saturating_add(left))
    }

    fn insert_automatic(&mut self, addr: IpAddr, until: Duration) -> Result<(), BlockError> {
        if self.automatic.len() >= self.capacity
            && let Some((&soonest, _)) = self.automatic.iter().min_by_key(|(_, until)| **until)
        {
            self.automatic.remove(&soonest);
            let _ = self.automatic_map.remove(&key(soonest));
            self.filter_stale = true;
            self.budget.release(soonest);
            self.stats.evicted += 1;
        }
        let key = key(addr);
        // A block made again keeps its count of dropped frames.
        let packets = self.automatic_map.get(&key, 0).map_or(0, |b| b.packets);
        let block = Block {
            until_ns: duration_ns(until),
            packets,
        };
        self.automatic_map.insert(&key, &block, 0)?;
        self.filter.add(&key);
        self.automatic.insert(addr, until);
        self.stats.made += 1;
        Ok(())
    }

    fn write_manual_count(&mut self) -> Result<(), BlockError> {
        let count = u32::try_from(self.manual.len()).unwrap_or(u32::MAX);
        self.runtime.set(RUNTIME_MANUAL_BLOCKS, &count, 0)?;
        Ok(())
    }

    /// Lifts the block of `addr` (by hand or automatic); false when it had none.
    pub fn remove(&mut self, addr: IpAddr) -> Result<bool, BlockError> {
        let addr = canonical(addr);
        let key = key(addr);
        let mut lifted = false;
        if self.automatic.remove(&addr).is_some() {
            self.budget.release(addr);
            lifted = true;
        }
        lifted |= remove_key(&mut self.automatic_map, &key)?;
        if self.manual.remove(&addr).is_some() {
            lifted = true;
            self.write_manual_count()?;
        }
        lifted |= remove_key(&mut self.manual_map, &key)?;
        self.filter_stale |= lifted;
        Ok(lifted)
    }

    /// [`Blocker::expire`], and forgets the automatic blocks the kernel lifted because
    /// their source answered a connection this host started (a kernel lookup per automatic
    /// block: done when listing, and once a minute).
    pub fn sweep(&mut self, now: Duration) {
        let lifted: Vec<IpAddr> = self
            .automatic
            .keys()
            .filter(|addr| self.automatic_map.get(&key(**addr), 0).is_err())
            .copied()
            .collect();
        for addr in lifted {
            self.automatic.remove(&addr);
            self.budget.release(addr);
            self.filter_stale = true;
        }
        self.expire(now);
        if self.filter_stale
            && let Err(err) = self.rebuild_filter()
        {
            log::warn!("{err}: lifted blocks keep costing their sources a lookup");
        }
    }

    /// Clears the block filter's stale bits (see [`BlockFilter::rebuild`]): every key of
    /// both lists, the kernel's read again after the switch.
    fn rebuild_filter(&mut self) -> Result<(), BlockError> {
        let keys: Vec<[u8; 16]> = self
            .automatic_map
            .keys()
            .chain(self.manual_map.keys())
            .filter_map(Result::ok)
            .collect();
        let count = keys.len();
        let automatic_map = &self.automatic_map;
        self.filter.rebuild(keys, &mut self.runtime, || {
            automatic_map.keys().filter_map(Result::ok).collect()
        })?;
        self.filter_stale = false;
        log::debug!(
            "block filter rebuilt from {count} blocks: {} bits set",
            self.filter.bits_set()
        );
        Ok(())
    }

    /// True when the block filter lets XDP and TC look `addr` up (its bit is set).
    pub fn filter_contains(&self, addr: IpAddr) -> bool {
        self.filter.contains(&key(addr))
    }

    /// Forgets the blocks whose time is up, removing the kernel's entries (the kernel
    /// removes an expired automatic block only when its source sends again). No kernel
    /// lookup: cheap enough for every second.
    pub fn expire(&mut self, now: Duration) {
        let ended: Vec<IpAddr> = self
            .automatic
            .iter()
            .filter(|(_, until)| **until <= now)
            .map(|(a, _)| *a)
            .collect();
        for addr in ended {
            self.automatic.remove(&addr);
            self.budget.release(addr);
            let _ = self.automatic_map.remove(&key(addr));
            self.filter_stale = true;
        }
        let ended: Vec<IpAddr> = self
            .manual
            .iter()
            .filter(|(_, until)| **until <= now)
            .map(|(a, _)| *a)
            .collect();
        if !ended.is_empty() {
            for addr in ended {
                self.manual.remove(&addr);
                let _ = self.manual_map.remove(&key(addr));
            }
            self.filter_stale = true;
            let _ = self.write_manual_count();
        }
    }

    /// Carries out a control-socket request at `now`.
    pub fn handle(&mut self, request: &Request, now: Duration) -> Response {
        let result = match *request {
            Request::List => {
                return Response {
                    blocked: self.list(now),
                    ..Response::default()
                };
            }
            Request::Add { addr, ttl_s } => {
                let ttl = ttl_s.map(Duration::from_secs);
                self.add(addr, ttl, now).map(|()| {
                    let ttl = ttl.unwrap_or(self.policy.ttl).as_secs();
                    log::info!("blocked {addr} for {ttl} s (by hand)");
                    format!("blocked {addr} for {ttl} s")
                })
            }
            Request::Remove { addr } => self.remove(addr).map(|lifted| {
                if lifted {
                    log::info!("unblocked {addr} (by hand)");
                    format!("unblocked {addr}")
                } else {
                    format!("{addr} was not blocked")
                }
            }),
        };
        match result {
            Ok(done) => Response {
                done: Some(done),
                ..Response::default()
            },
            Err(err) => Response {
                error: Some(err.to_string()),
                ..Response::default()
            },
        }
    }

    /// The blocks in force at `now`, soonest to expire first.
    pub fn list(&mut self, now: Duration) -> Vec<Blocked> {
        self.sweep(now);
        let now_ns = duration_ns(now);
        let listed = |map: &HashMap<MapData, [u8; 16], Block>, manual: bool| -> Vec<Blocked> {
            map.iter()
                .filter_map(Result::ok)
                .filter(|(_, block)| block.until_ns > now_ns)
                .map(|(k, block)| Blocked {
                    addr: canonical(IpAddr::V6(Ipv6Addr::from(k))),
                    expires_in_s: (block.until_ns - now_ns).div_ceil(1_000_000_000),
                    packets: block.packets,
                    manual,
                })
                .collect()
        };
        let mut list = listed(&self.automatic_map, false);
        list.extend(listed(&self.manual_map, true));
        list.sort_by_key(|b| (b.expires_in_s, b.addr));
        list
    }
}

/// Removes `key` from a map; false when it was not there.
fn remove_key(
    map: &mut HashMap<MapData, [u8; 16], Block>,
    key: &[u8; 16],
) -> Result<bool, BlockError> {
    match map.remove(key) {
        Ok(()) => Ok(true),
        Err(MapError::KeyNotFound) => Ok(false),
        Err(MapError::SyscallError(err)) if err.io_error.kind() == std::io::ErrorKind::NotFound => {
            Ok(false)
        }
        Err(err) => Err(err.into()),
    }
}

/// The trie key of a prefix.
fn trie_key(net: Cidr) -> Key<[u8; 16]> {
    let (addr, len) = net.mapped();
    Key::new(len, addr)
}

/// The map key of an address: IPv4 as `::ffff:a.b.c.d`, as the kernel stores it.
pub fn key(addr: IpAddr) -> [u8; 16] {
    match canonical(addr) {
        IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
        IpAddr::V6(a) => a.octets(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_ipv4_mapped_like_the_kernels() {
        let k = key("198.18.7.1".parse().unwrap());
        assert_eq!(&k[..12], &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]);
        assert_eq!(&k[12..], &[198, 18, 7, 1]);
        assert_eq!(key("::ffff:198.18.7.1".parse().unwrap()), k);
        let v6: IpAddr = "2001:db8::7".parse().unwrap();
        assert_eq!(canonical(IpAddr::V6(Ipv6Addr::from(key(v6)))), v6);
    }
}
