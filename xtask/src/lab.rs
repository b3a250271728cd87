//! `cargo xtask lab [--quick]`: installs the scanners and peers, builds probe-detector and
//! probe-lab in release mode and runs the lab.

use std::{path::Path, process::Command};

use anyhow::bail;

use crate::{cmd, packages, pinned_cargo, setup, target_dir, toolchain::Pin};

pub fn run(workspace: &Path, pin: &Pin, quick: bool, only: Option<&str>) -> anyhow::Result<()> {
    if !cmd::is_root() {
        bail!(
            "the lab makes network namespaces and loads BPF programs: run `sudo -E cargo xtask lab`"
        );
    }
    setup(pin, true)?;
    let missing = packages::missing(packages::LAB_PACKAGES);
    if !missing.is_empty() {
        eprintln!(
            "xtask: installing the lab's Debian packages: {}",
            missing.join(" ")
        );
        packages::install(&missing)?;
    }
    cmd::run(pinned_cargo(workspace, pin).args([
        "build",
        "--release",
        "--package",
        "probe-userspace",
        "--package",
        "probe-lab",
        "--bins",
    ]))?;
    let target = target_dir(workspace);
    let (out, work, command) = if quick {
        (
            target.join("lab-quick"),
            target.join("lab-quick/work"),
            "cargo xtask lab --quick",
        )
    } else {
        (
            workspace.join("docs"),
            target.join("lab"),
            "cargo xtask lab",
        )
    };
    let mut run = Command::new(target.join("release/probe-lab"));
    run.arg("--detector")
        .arg(target.join("release/probe-detector"))
        .arg("--out")
        .arg(&out)
        .arg("--work")
        .arg(&work)
        .args(["--command", command]);
    if let Some(text) = only {
        run.args(["--only", text]);
    }
    if quick {
        run.arg("--quick");
    }
    cmd::run(&mut run)
}
