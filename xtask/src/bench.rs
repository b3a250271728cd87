//! `cargo xtask bench` (ns per packet of each kernel path, BENCHMARKS.md) and `cargo xtask
//! flood` (a forged-source flood through the real programs and engine): release examples
//! of probe-userspace, run as root.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::{cmd, pinned_cargo, target_dir, toolchain::Pin};

pub fn bench(workspace: &Path, pin: &Pin, write: bool) -> anyhow::Result<()> {
    if !cmd::is_root() {
        bail!("the benchmark loads BPF programs: run `sudo -E cargo xtask bench`");
    }
    let binary = build_example(workspace, pin, "bench")?;
    eprintln!("xtask: $ {}", binary.display());
    let out = Command::new(&binary)
        .output()
        .with_context(|| format!("cannot run {}", binary.display()))?;
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    if !out.status.success() {
        bail!("the benchmark failed ({})", out.status);
    }
    let report = String::from_utf8_lossy(&out.stdout);
    print!("{report}");
    if write {
        let path = workspace.join("BENCHMARKS.md");
        std::fs::write(&path, report.as_bytes())
            .with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!("xtask: wrote {}", path.display());
    }
    Ok(())
}

pub fn flood(workspace: &Path, pin: &Pin, packets: u64) -> anyhow::Result<()> {
    if !cmd::is_root() {
        bail!("the flood loads BPF programs: run `sudo -E cargo xtask flood`");
    }
    let binary = build_example(workspace, pin, "flood")?;
    cmd::run(Command::new(binary).arg(packets.to_string()))
}

/// Builds probe-userspace's example `name` in release mode; returns its path.
fn build_example(workspace: &Path, pin: &Pin, name: &str) -> anyhow::Result<PathBuf> {
    cmd::run(pinned_cargo(workspace, pin).args([
        "build",
        "--release",
        "--package",
        "probe-userspace",
        "--example",
        name,
    ]))?;
    Ok(target_dir(workspace).join("release/examples").join(name))
}
