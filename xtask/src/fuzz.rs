//! `cargo xtask fuzz`: the fuzzers for longer than `cargo xtask test` runs them: random and
//! damaged frames through both programs, and the engine's and the configuration file's
//! property tests, with CASES cases each.

use std::path::Path;

use anyhow::bail;

use crate::{cmd, pinned_cargo, toolchain::Pin};

/// Runs every fuzz target with `cases` cases.
pub fn run(workspace: &Path, pin: &Pin, cases: u32) -> anyhow::Result<()> {
    if !cmd::is_root() {
        bail!("the fuzzer runs BPF programs: run `sudo -E cargo xtask fuzz`");
    }
    let cases = cases.to_string();
    for target in [
        &["--test", "fuzz"][..],
        &["--test", "properties"],
        &["--lib", "config::"],
    ] {
        let mut cargo = pinned_cargo(workspace, pin);
        cargo
            .args(["test", "--release", "--package", "probe-userspace"])
            .args(target)
            .args(["--", "--nocapture"])
            .env("PROBE_FUZZ_CASES", &cases)
            .env("PROPTEST_CASES", &cases);
        cmd::run(&mut cargo)?;
    }
    Ok(())
}
