//! What is ours: our own recent outbound attempts (`OURS`), the hosts we contacted
//! (`CONTACTED`, for callbacks), the peers that answered us (`PEERS`), and the home nets.

use core::ptr::read_volatile;

use aya_ebpf::{helpers::bpf_ktime_get_coarse_ns, maps::lpm_trie::Key};
use probe_common::{MAX_HOME_NETS, PEER_REFRESH_NS};

use crate::{
    maps::{CONTACTED, EPOCH, HOME_NETS, HOME_TRIE, OURS, PEERS, ours_mask},
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

/// True when `addr` is in a home net (every address is, when none are configured).
/// Inlined: the prefixes are read into registers, not copied to the stack, and a BPF
/// subprogram's call and return measured about 7 ns on the AMD EPYC VMs we bench on (their
/// kernel returns through the SRSO "Safe RET" thunk), a tenth of the per-SYN budget.
///
/// Userspace rewrites the prefixes while running; a frame that races a rewrite may see a
/// mix of the old and the new list (one attempt counted under either), never a fault.
#[inline(always)]
pub(crate) fn is_home(addr: &Addr) -> bool {
    let Some(home) = HOME_NETS.get_ptr(0) else {
        return true;
    };
    // SAFETY: a pointer from a successful lookup of an array slot, valid for this run.
    let (count, many) = unsafe { ((*home).count as usize, (*home).many) };
    if many != 0 {
        return HOME_TRIE.get(&Key::new(128, addr.bytes())).is_some();
    }
    if count == 0 {
        return true;
    }
    let [a0, a1] = addr.0;
    for i in 0..MAX_HOME_NETS {
        if i >= count {
            break;
        }
        // SAFETY: as above; `i` is within `nets`, and each prefix (32 bytes at an 8-byte
        // aligned offset of the value) is read as four aligned words, into registers.
        let [n0, n1, m0, m1] = unsafe {
            let words = (&raw const (*home).nets[i]).cast::<u64>();
            [
                read_volatile(words),
                read_volatile(words.add(1)),
                read_volatile(words.add(2)),
                read_volatile(words.add(3)),
            ]
        };
        if a0 & m0 == n0 && a1 & m1 == n1 {
            return true;
        }
    }
    false
}

/// Notes that `remote` answered a connection we started: a peer, never blocked while
/// recent. A lookup per answer; the time is rewritten at most once per
/// [`PEER_REFRESH_NS`].
#[inline(always)]
pub(crate) fn note_peer(remote: &Addr) {
    // SAFETY: bpf_ktime_get_coarse_ns has no preconditions.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    if let Some(seen) = PEERS.get_ptr_mut(remote) {
        // SAFETY: a pointer from a successful lookup; a racing write leaves one of two
        // times, both recent.
        unsafe {
            if now.saturating_sub(*seen) >= PEER_REFRESH_NS {
                *seen = now;
            }
        }
        return;
    }
    let _ = PEERS.insert(remote, &now, 0);
}
