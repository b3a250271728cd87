//! Reading the kernel's maps (the per-CPU counters, the pending table's occupancy and the
//! outcome table's repeat counts) and writing the home nets and this host's own addresses,
//! which change while running.

use std::collections::BTreeSet;

use aya::{
    Ebpf,
    maps::{Array, LpmTrie, PerCpuArray, lpm_trie::Key},
};
use probe_common::{
    COUNTERS_MAP, Counter, HOME_NETS_MAP, HOME_TRIE_ENTRIES, HOME_TRIE_MAP, HomeNets,
    LOCAL_ENTRIES, LOCAL_MAP, MAX_HOME_NETS, OUTCOMES_MAP, PENDING_MAP, PENDING_STATS_LIVE,
    PENDING_STATS_MAP,
};

use super::load::LoadError;
use crate::net::cidr::Cidr;

/// Writes the home nets (empty: every address is ours). Up to [`MAX_HOME_NETS`] go in the
/// list the kernel scans; more go in its trie, filled before the list says to read it and
/// emptied after it says not to, so that a frame never sees a half-written set.
pub fn set_home_nets(ebpf: &mut Ebpf, nets: &[Cidr]) -> Result<(), LoadError> {
    let nets: BTreeSet<Cidr> = nets.iter().copied().collect();
    if nets.len() > HOME_TRIE_ENTRIES as usize {
        return Err(LoadError::Config(format!(
            "{} home nets, at most {HOME_TRIE_ENTRIES} are supported",
            nets.len()
        )));
    }
    let many = nets.len() > MAX_HOME_NETS;
    let mut trie: LpmTrie<_, [u8; 16], u8> = LpmTrie::try_from(
        ebpf.map_mut(HOME_TRIE_MAP)
            .ok_or(LoadError::Missing("HOME_TRIE map"))?,
    )
    .map_err(|_| LoadError::Missing("HOME_TRIE trie"))?;
    let key = |c: &Cidr| {
        let (addr, len) = c.mapped();
        Key::new(len, addr)
    };
    let map_error = |err: aya::maps::MapError| LoadError::Config(format!("home nets: {err}"));
    if many {
        for net in &nets {
            trie.insert(&key(net), &1, 0).map_err(map_error)?;
        }
    }
    let stale: Vec<Key<[u8; 16]>> = trie
        .keys()
        .filter_map(Result::ok)
        .filter(|k| {
            !many
                || !nets
                    .iter()
                    .any(|n| key(n).data() == k.data() && key(n).prefix_len() == k.prefix_len())
        })
        .collect();
    let mut value = HomeNets {
        many: u32::from(many),
        ..HomeNets::default()
    };
    if !many {
        for (slot, net) in value.nets.iter_mut().zip(&nets) {
            *slot = net.to_home_net();
        }
        value.count = nets.len() as u32;
    }
    let mut home: Array<_, HomeNets> = Array::try_from(
        ebpf.map_mut(HOME_NETS_MAP)
            .ok_or(LoadError::Missing("HOME_NETS map"))?,
    )
    .map_err(|_| LoadError::Missing("HOME_NETS array"))?;
    home.set(0, &value, 0).map_err(map_error)?;
    let mut trie: LpmTrie<_, [u8; 16], u8> = LpmTrie::try_from(
        ebpf.map_mut(HOME_TRIE_MAP)
            .ok_or(LoadError::Missing("HOME_TRIE map"))?,
    )
    .map_err(|_| LoadError::Missing("HOME_TRIE trie"))?;
    for k in stale {
        let _ = trie.remove(&k);
    }
    Ok(())
}

/// Writes this host's own addresses on the watched interfaces (`LOCAL`): the destinations
/// whose sockets XDP looks up for the early verdict (none: no early verdict, as in a
/// replay, whose capture's sockets are not this machine's). The first [`LOCAL_ENTRIES`]
/// are kept; the number written is returned.
pub fn set_local(ebpf: &mut Ebpf, addrs: &[std::net::IpAddr]) -> Result<usize, LoadError> {
    let mut local = aya::maps::HashMap::<_, [u8; 16], u8>::try_from(
        ebpf.map_mut(LOCAL_MAP)
            .ok_or(LoadError::Missing("LOCAL map"))?,
    )
    .map_err(|_| LoadError::Missing("LOCAL hash"))?;
    let wanted: BTreeSet<[u8; 16]> = addrs
        .iter()
        .map(|ip| match ip {
            std::net::IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
            std::net::IpAddr::V6(a) => a.octets(),
        })
        .take(LOCAL_ENTRIES as usize)
        .collect();
    let stale: Vec<[u8; 16]> = local
        .keys()
        .filter_map(Result::ok)
        .filter(|k| !wanted.contains(k))
        .collect();
    for key in stale {
        let _ = local.remove(&key);
    }
    for key in &wanted {
        local
            .insert(key, &1, 0)
            .map_err(|err| LoadError::Config(format!("own addresses: {err}")))?;
    }
    Ok(wanted.len())
}

/// One value of the `PENDING_STATS` array (an index from probe_common).
pub fn pending_stat(ebpf: &Ebpf, index: u32) -> Result<u64, LoadError> {
    let map = ebpf
        .map(PENDING_STATS_MAP)
        .ok_or(LoadError::Missing("PENDING_STATS map"))?;
    let stats = aya::maps::Array::<_, u64>::try_from(map)
        .map_err(|_| LoadError::Missing("PENDING_STATS array"))?;
    Ok(stats.get(&index, 0).unwrap_or(0))
}

/// How often the kernel has seen `probe`'s outcome (1 + its repeats), from the outcome
/// table; `None` when the entry is gone (evicted) or the outcome is a success.
pub fn outcome_count(ebpf: &Ebpf, probe: &crate::event::Probe) -> Option<u64> {
    let map = ebpf.map(OUTCOMES_MAP)?;
    let table = aya::maps::HashMap::<_, probe_common::OutcomeKey, u64>::try_from(map).ok()?;
    let mapped = |ip: std::net::IpAddr| match ip {
        std::net::IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
        std::net::IpAddr::V6(a) => a.octets(),
    };
    let key = probe_common::OutcomeKey {
        src_addr: mapped(probe.src),
        dst_addr: mapped(probe.dst),
        dst_port: probe.dst_port,
        proto: probe.proto,
        probe: probe.probe as u8,
        outcome: probe.outcome as u8,
        ip_version: if probe.src.is_ipv6() { 6 } else { 4 },
        _pad: [0; 10],
    };
    table.get(&key, 0).ok()
}

/// Slots of the pending table the last complete expiry sweep read: those of the regions
/// attempts were written into in its epoch or the two before, or found staying in by one
/// of those two sweeps.
pub fn pending_walked(ebpf: &Ebpf) -> Result<u64, LoadError> {
    pending_stat(ebpf, probe_common::PENDING_STATS_WALKED)
}

/// (live slots, total slots) of the pending table as of the last expiry sweep.
pub fn pending_occupancy(ebpf: &Ebpf) -> Result<(u64, u64), LoadError> {
    let live = pending_stat(ebpf, PENDING_STATS_LIVE)?;
    let slots = ebpf
        .map(PENDING_MAP)
        .map(|m| {
            aya::maps::Array::<_, probe_common::Pending>::try_from(m)
                .map_or(0, |a| u64::from(a.len()))
        })
        .unwrap_or(0);
    Ok((live, slots))
}

/// The kernel counters, summed over CPUs, in [`Counter`] order.
pub fn counters(ebpf: &Ebpf) -> Result<Vec<(Counter, u64)>, LoadError> {
    Counter::ALL
        .iter()
        .map(|&counter| Ok((counter, counter_value(ebpf, counter)?)))
        .collect()
}

/// One kernel counter, summed over CPUs (one system call).
pub fn counter_value(ebpf: &Ebpf, counter: Counter) -> Result<u64, LoadError> {
    let map = ebpf
        .map(COUNTERS_MAP)
        .ok_or(LoadError::Missing("COUNTERS map"))?;
    let array = PerCpuArray::<_, u64>::try_from(map)
        .map_err(|_| LoadError::Missing("per-CPU COUNTERS map"))?;
    Ok(array
        .get(&(counter as u32), 0)
        .map(|values| values.iter().sum())
        .unwrap_or(0))
}
