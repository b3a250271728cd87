//! `cargo xtask lab [--quick | --fleet | --cost]`: installs the scanners and peers, builds
//! probe-detector and probe-lab in release mode and runs the lab (or the fleet lab).

use std::{path::Path, process::Command};

use anyhow::bail;

use crate::{cmd, packages, pinned_cargo, setup, target_dir, toolchain::Pin};

pub fn run(workspace: &Path, pin: &Pin, quick: bool, only: Option<&str>) -> anyhow::Result<()> {
    prepare(workspace, pin)?;
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
    let mut run = probe_lab(&target, &out, &work, command);
    if let Some(text) = only {
        run.args(["--only", text]);
    }
    if quick {
        run.arg("--quick");
    }
    cmd::run(&mut run)
}

/// `cargo xtask lab --cost`: the cost table alone, printed.
pub fn cost(workspace: &Path, pin: &Pin) -> anyhow::Result<()> {
    prepare(workspace, pin)?;
    let target = target_dir(workspace);
    let out = target.join("lab-cost");
    cmd::run(probe_lab(&target, &out, &out.join("work"), "cargo xtask lab --cost").arg("--cost"))
}

/// probe-lab with the release probe-detector, its report directory, work directory and
/// the command line its report names.
fn probe_lab(target: &Path, out: &Path, work: &Path, command: &str) -> Command {
    let mut lab = Command::new(target.join("release/probe-lab"));
    lab.arg("--detector")
        .arg(target.join("release/probe-detector"))
        .arg("--out")
        .arg(out)
        .arg("--work")
        .arg(work)
        .args(["--command", command]);
    lab
}

/// `cargo xtask lab --fleet`: the fleet lab; its throughput goes into BENCHMARKS.md.
pub fn fleet(workspace: &Path, pin: &Pin) -> anyhow::Result<()> {
    prepare(workspace, pin)?;
    let target = target_dir(workspace);
    let work = target.join("lab-fleet");
    cmd::run(
        probe_lab(
            &target,
            &workspace.join("docs"),
            &work,
            "cargo xtask lab --fleet",
        )
        .arg("--fleet"),
    )?;
    let section = std::fs::read_to_string(work.join("fleet-bench.md"))?;
    let path = workspace.join("BENCHMARKS.md");
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    std::fs::write(
        &path,
        crate::bench::with_section(&text, FLEET_HEADING, &section),
    )?;
    eprintln!(
        "xtask: wrote docs/fleet-lab.md and the Fleet section of {}",
        path.display()
    );
    Ok(())
}

/// The heading of the fleet's section in BENCHMARKS.md (kept by `cargo xtask bench`).
pub const FLEET_HEADING: &str = "## Fleet";

/// Root, packages, the release build of probe-detector and probe-lab.
fn prepare(workspace: &Path, pin: &Pin) -> anyhow::Result<()> {
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
    Ok(())
}
