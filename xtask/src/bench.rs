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
        // The fleet lab's section stays, whoever wrote last.
        let old = std::fs::read_to_string(&path).unwrap_or_default();
        let kept = section(&old, crate::lab::FLEET_HEADING).unwrap_or_default();
        let report = with_section(&report, crate::lab::FLEET_HEADING, kept);
        std::fs::write(&path, report.as_bytes())
            .with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!("xtask: wrote {}", path.display());
    }
    Ok(())
}

/// The section of `text` that begins with the line `heading`, up to the next heading of
/// the same level or the end.
fn section<'a>(text: &'a str, heading: &str) -> Option<&'a str> {
    let start = text.find(&format!("\n{heading}\n")).map(|i| i + 1)?;
    let rest = &text[start + heading.len()..];
    let end = rest
        .find("\n## ")
        .map_or(text.len(), |i| start + heading.len() + i + 1);
    Some(&text[start..end])
}

/// `text` with its section `heading` replaced by `new` (appended when it has none; removed
/// when `new` is empty).
pub fn with_section(text: &str, heading: &str, new: &str) -> String {
    let mut out = match section(text, heading) {
        Some(old) => text.replacen(old, "", 1),
        None => text.to_owned(),
    };
    if new.is_empty() {
        return out;
    }
    if !out.ends_with("\n\n") {
        out.push_str(if out.ends_with('\n') { "\n" } else { "\n\n" });
    }
    out.push_str(new.trim_end());
    out.push('\n');
    out
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fleet_section_is_replaced_and_kept() {
        let bench = "# Benchmarks\n\ntable\n";
        let fleet = "## Fleet\n\nfigures 1\n";
        let once = with_section(bench, "## Fleet", fleet);
        assert_eq!(once, "# Benchmarks\n\ntable\n\n## Fleet\n\nfigures 1\n");
        let twice = with_section(&once, "## Fleet", "## Fleet\n\nfigures 2\n");
        assert_eq!(twice, "# Benchmarks\n\ntable\n\n## Fleet\n\nfigures 2\n");
        assert_eq!(section(&twice, "## Fleet"), Some("## Fleet\n\nfigures 2\n"));
        assert_eq!(section(bench, "## Fleet"), None);
    }
}
