//! What is ours: our own recent outbound attempts (`OURS`), the hosts we contacted
//! (`CONTACTED`, for callbacks), and the home nets.

use core::ptr::read_volatile;

use crate::{
    maps::{CONTACTED, EPOCH, HOME_NET_COUNT, HOME_NETS, OURS, ours_mask},
    parse::Addr,
    pending::Flow,
};

/// The `CONTACTED` slot and tag of a remote host (tag never 0).
#[inline(always)]
pub(crate) fn host_slot(host: &Addr) -> (u32, u32) {
    let flow = Flow {
        remote: *host,
        local: Addr([0, 0]),
        remote_port: 0,
        local_port: 0,
        proto: 0,
    };
    flow.slot(0, ours_mask())
}

/// Notes that our hosts contacted `remote` now (a write only when the slot changes).
#[inline(always)]
pub(crate) fn note_contacted(remote: &Addr) {
    let (index, tag) = host_slot(remote);
    // SAFETY: reading a plain global.
    let epoch = unsafe { read_volatile(&raw const EPOCH) } as u32;
    let value = (u64::from(tag) << 32) | u64::from(epoch);
    if let Some(slot) = CONTACTED.get_ptr_mut(index) {
        // SAFETY: array slot from a successful lookup; a racing write leaves one of two.
        unsafe {
            if *slot != value {
                *slot = value;
            }
        }
    }
}

/// Remembers one of our own outbound attempts.
#[inline(always)]
pub(crate) fn put_ours(flow: &Flow, id: u32) {
    let (index, tag) = flow.slot(id, ours_mask());
    if let Some(slot) = OURS.get_ptr_mut(index) {
        // SAFETY: array slot from a successful lookup; a racing write leaves one of two tags.
        unsafe {
            if *slot != tag {
                *slot = tag;
            }
        }
    }
}

/// True when `flow` is one of our recent outbound attempts with answer id `id`.
#[inline(always)]
pub(crate) fn is_ours(flow: &Flow, id: u32) -> bool {
    let (index, tag) = flow.slot(id, ours_mask());
    // SAFETY: array slot from a successful lookup, read once.
    OURS.get_ptr(index)
        .is_some_and(|slot| unsafe { *slot } == tag)
}

/// Like [`is_ours`], and forgets the attempt (a TCP attempt is answered once).
#[inline(always)]
pub(crate) fn take_ours(flow: &Flow, id: u32) -> bool {
    let (index, tag) = flow.slot(id, ours_mask());
    let Some(slot) = OURS.get_ptr_mut(index) else {
        return false;
    };
    // SAFETY: array slot from a successful lookup.
    unsafe {
        if *slot != tag {
            return false;
        }
        *slot = 0;
    }
    true
}

/// True when `addr` is in a home net (every address is, when none are configured). A
/// subprogram: its copies of the prefixes stay out of the callers' frames.
#[inline(never)]
pub(crate) fn is_home(addr: &Addr) -> bool {
    // SAFETY: reading plain globals; volatile so the load-time values are used.
    let count = unsafe { read_volatile(&HOME_NET_COUNT) } as usize;
    if count == 0 {
        return true;
    }
    let [a0, a1] = addr.0;
    for net in HOME_NETS.iter().take(count) {
        // SAFETY: as above; each element is an aligned u64.
        let [n0, n1, m0, m1] = unsafe {
            [
                read_volatile(&net[0]),
                read_volatile(&net[1]),
                read_volatile(&net[2]),
                read_volatile(&net[3]),
            ]
        };
        if a0 & m0 == n0 && a1 & m1 == n1 {
            return true;
        }
    }
    false
}
