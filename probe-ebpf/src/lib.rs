//! probe-detector's kernel side as a library: the packet parser, so that it is unit-tested
//! on the host (`cargo xtask test` runs `cargo test -p probe-ebpf --lib`). The programs
//! themselves are the binary (`main.rs`), which compiles the same `parse.rs`.
#![cfg_attr(not(test), no_std)]

pub mod parse;
