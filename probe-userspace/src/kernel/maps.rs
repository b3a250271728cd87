//! Reading the kernel's maps: the per-CPU counters, the pending table's occupancy and the
//! outcome table's repeat counts.

use aya::{Ebpf, maps::PerCpuArray};
use probe_common::{
    COUNTERS_MAP, Counter, OUTCOMES_MAP, PENDING_MAP, PENDING_STATS_LIVE, PENDING_STATS_MAP,
};

use super::load::LoadError;

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
        _pad: [0; 11],
    };
    table.get(&key, 0).ok()
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
    let map = ebpf
        .map(COUNTERS_MAP)
        .ok_or(LoadError::Missing("COUNTERS map"))?;
    let array = PerCpuArray::<_, u64>::try_from(map)
        .map_err(|_| LoadError::Missing("per-CPU COUNTERS map"))?;
    Ok(Counter::ALL
        .iter()
        .map(|&counter| {
            let total = array
                .get(&(counter as u32), 0)
                .map(|values| values.iter().sum())
                .unwrap_or(0);
            (counter, total)
        })
        .collect())
}
