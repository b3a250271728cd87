//! `cargo xtask test`: formatting, clippy (host and BPF), every test of the workspace, and
//! the eBPF crate's parser tests on the host.

use std::{env, path::Path, time::Instant};

use anyhow::{Context as _, bail};

use crate::{cmd, pinned_cargo, setup, toolchain::Pin};

pub fn run(workspace: &Path, pin: &Pin, no_lint: bool, args: &[String]) -> anyhow::Result<()> {
    let started = Instant::now();
    let rustc = setup(pin, true)?;
    let skip_root = env::var("PROBE_SKIP_ROOT_TESTS").is_ok_and(|v| v == "1");
    if !cmd::is_root() && !skip_root {
        bail!(
            "the kernel and lab tests need root (BPF_PROG_TEST_RUN, network namespaces): \
             run `sudo -E cargo xtask test`, or set PROBE_SKIP_ROOT_TESTS=1 to skip them explicitly"
        );
    }
    if !no_lint {
        cmd::run(pinned_cargo(workspace, pin).args(["fmt", "--all", "--", "--check"]))
            .context("formatting differs: run `cargo +nightly-... fmt --all`")?;
        cmd::run(pinned_cargo(workspace, pin).args([
            "clippy",
            "--workspace",
            "--exclude",
            "probe-ebpf",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]))?;
        cmd::run(pinned_cargo(workspace, pin).args([
            "clippy",
            "--package",
            "probe-ebpf",
            "--release",
            "--target",
            "bpfel-unknown-none",
            "-Z",
            "build-std=core",
            "--",
            "-D",
            "warnings",
        ]))?;
    }
    let mut cargo = pinned_cargo(workspace, pin);
    cargo.args(["test", "--workspace", "--exclude", "probe-ebpf"]);
    if !args.is_empty() {
        cargo.arg("--").args(args);
    }
    cmd::run(&mut cargo)?;
    // The eBPF crate's parser, as a library on the host (the programs build for BPF only).
    cmd::run(pinned_cargo(workspace, pin).args([
        "test",
        "--package",
        "probe-ebpf",
        "--lib",
        "--target",
        &rustc.host,
    ]))?;
    eprintln!(
        "xtask: all tests passed in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
