//! Builds the eBPF object (probe-ebpf) with the pinned toolchain through aya-build and
//! leaves it in OUT_DIR for `include_bytes_aligned!`. With `AYA_BUILD_SKIP=1` aya-build
//! builds nothing; an empty stub then stands in, and the binary says so when run.

use std::{env, fs, path::PathBuf};

use anyhow::{Context as _, anyhow};

fn main() -> anyhow::Result<()> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let workspace = manifest_dir
        .parent()
        .context("no workspace above probe-userspace")?;
    let ebpf_dir = workspace.join("probe-ebpf");
    let toolchain_file = ebpf_dir.join("rust-toolchain.toml");
    println!("cargo::rerun-if-changed={}", toolchain_file.display());
    println!(
        "cargo::rerun-if-changed={}",
        workspace.join("probe-common").display()
    );
    println!("cargo::rerun-if-env-changed=PROBE_EBPF_TRACE");

    let toolchain = pinned_channel(
        &fs::read_to_string(&toolchain_file)
            .with_context(|| format!("cannot read {}", toolchain_file.display()))?,
    )
    .with_context(|| format!("no channel in {}", toolchain_file.display()))?;
    let trace = env::var("PROBE_EBPF_TRACE").is_ok_and(|v| v == "1");
    let features: &[&str] = if trace { &["trace"] } else { &[] };
    let root_dir = ebpf_dir
        .to_str()
        .ok_or_else(|| anyhow!("non-UTF-8 path {}", ebpf_dir.display()))?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "probe-ebpf",
            root_dir,
            features,
            ..Default::default()
        }],
        aya_build::Toolchain::Custom(&toolchain),
    )?;

    let object = PathBuf::from(env::var("OUT_DIR")?).join("probe-ebpf");
    if !object.exists() {
        fs::write(&object, [])
            .with_context(|| format!("cannot write stub {}", object.display()))?;
    }
    Ok(())
}

/// The `channel = "..."` of a rust-toolchain.toml.
fn pinned_channel(toml: &str) -> Option<String> {
    toml.lines().find_map(|line| {
        let value = line
            .trim()
            .strip_prefix("channel")?
            .trim_start()
            .strip_prefix('=')?;
        Some(value.trim().trim_matches('"').to_owned())
    })
}
