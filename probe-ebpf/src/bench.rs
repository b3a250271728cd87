//! Baselines for `cargo xtask bench`: programs that do nothing, so the cost of the
//! `BPF_PROG_TEST_RUN` harness itself is measured in the same run, and one that only reads
//! a cold line of a per-source table, the floor of a new source's first outcome. Never
//! attached.

use core::ptr::{read_volatile, write_volatile};

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT, xdp_action::XDP_PASS},
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};

use crate::suspects::{SUSPECT_MASK, SUSPECTS};

/// An XDP program that does nothing.
#[xdp]
fn bench_xdp_pass(_ctx: XdpContext) -> u32 {
    XDP_PASS
}

/// A TC program that does nothing.
#[classifier]
fn bench_tc_ok(_ctx: TcContext) -> i32 {
    TC_ACT_OK as _
}

/// The next set [`bench_tc_cold_line`] reads, as a count (spread over the table below).
static mut COLD_NEXT: u32 = 0;

/// A TC program that reads one line of `SUSPECTS` that no earlier run read, and does
/// nothing else: what a cache miss on a new source's set costs the held and verdict
/// paths, measured alone (the floor of any first outcome of a new source, which has to
/// read that set). Each run takes the next of a sequence that visits every set once per
/// pass, by a multiplicative step, so consecutive runs read unrelated lines.
#[classifier]
fn bench_tc_cold_line(_ctx: TcContext) -> i32 {
    // SAFETY: plain globals, this program's counter and the load-time mask; two runs racing
    // on two CPUs may read one set, which a measurement can bear.
    let (next, mask) = unsafe {
        let next = read_volatile(&raw const COLD_NEXT);
        write_volatile(&raw mut COLD_NEXT, next.wrapping_add(1));
        (next, read_volatile(&SUSPECT_MASK))
    };
    let index = next.wrapping_mul(0x9e37_79b1) & mask;
    let Some(set) = SUSPECTS.get_ptr(index) else {
        return TC_ACT_OK as _;
    };
    // SAFETY: array slot from a successful lookup, valid for the program's run; read once.
    let cell = unsafe { read_volatile(set.cast::<u64>()) };
    // The result depends on the line, so the run waits for it as a real look-up does.
    if cell == u64::MAX {
        TC_ACT_SHOT as _
    } else {
        TC_ACT_OK as _
    }
}
