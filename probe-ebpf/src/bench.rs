//! Baselines for `cargo xtask bench`: programs that do nothing, so the cost of the
//! `BPF_PROG_TEST_RUN` harness itself is measured in the same run. Never attached.

use aya_ebpf::{
    bindings::{TC_ACT_OK, xdp_action::XDP_PASS},
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};

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
