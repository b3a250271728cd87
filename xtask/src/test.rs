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
    let before = lab_namespaces();
    let mut cargo = pinned_cargo(workspace, pin);
    cargo.args(["test", "--workspace", "--exclude", "probe-ebpf"]);
    if !args.is_empty() {
        cargo.arg("--").args(args);
    }
    cmd::run(&mut cargo)?;
    // Tests delete what they make, also when they fail: a namespace of this run left
    // behind is a failure of its own.
    let left: Vec<String> = lab_namespaces()
        .into_iter()
        .filter(|n| !before.contains(n))
        .collect();
    if !left.is_empty() {
        bail!(
            "the tests left network namespaces behind: {} (delete with `ip netns delete NAME`)",
            left.join(" ")
        );
    }
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

/// The lab's network namespaces (`pdlab-...`) that exist now.
fn lab_namespaces() -> Vec<String> {
    std::fs::read_dir("/run/netns")
        .map(|dir| {
            dir.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("pdlab-"))
                .collect()
        })
        .unwrap_or_default()
}
