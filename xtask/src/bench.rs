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
        let old = std::fs::read_to_string(&path).unwrap_or_default();
        let report = composed(&old, &report);
        std::fs::write(&path, report.as_bytes())
            .with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!("xtask: wrote {}", path.display());
    }
    Ok(())
}

/// BENCHMARKS.md's opening, above its sections.
const PREAMBLE: &str = "# Benchmarks\n\n\
One section per CPU `cargo xtask bench` ran on, each written by its latest run there (a run \
replaces its own CPU's section and keeps the others: these VMs come with AMD EPYC or Intel \
Xeon CPUs, and one path's figures differ up to twofold between them), then the fleet lab's \
throughput (`cargo xtask lab --fleet`).\n";

/// BENCHMARKS.md after a run whose report (its CPU's section, headed `## CPU`) is
/// `report`: the other CPUs' sections and the fleet's kept from `old`, the fleet's last.
fn composed(old: &str, report: &str) -> String {
    let heading = report.lines().next().unwrap_or_default();
    let fleet = section(old, crate::lab::FLEET_HEADING)
        .unwrap_or_default()
        .to_owned();
    let sections = old.find("\n## ").map_or("", |i| &old[i + 1..]);
    let out = with_section(&format!("{PREAMBLE}\n{sections}"), heading, report);
    let out = with_section(&out, crate::lab::FLEET_HEADING, "");
    with_section(&out, crate::lab::FLEET_HEADING, &fleet)
}

/// Where the section of `text` that begins with the line `heading` lies, up to the next
/// heading of the same level or the end.
fn section_range(text: &str, heading: &str) -> Option<std::ops::Range<usize>> {
    let start = text.find(&format!("\n{heading}\n")).map(|i| i + 1)?;
    let rest = &text[start + heading.len()..];
    let end = rest
        .find("\n## ")
        .map_or(text.len(), |i| start + heading.len() + i + 1);
    Some(start..end)
}

/// The section of `text` that begins with the line `heading` (see [`section_range`]).
fn section<'a>(text: &'a str, heading: &str) -> Option<&'a str> {
    section_range(text, heading).map(|range| &text[range])
}

/// `text` with its section `heading` replaced by `new` where it stands (appended when it
/// has none; removed when `new` is empty).
pub fn with_section(text: &str, heading: &str, new: &str) -> String {
    let new = new.trim_end();
    if let Some(range) = section_range(text, heading) {
        let (before, after) = (&text[..range.start], &text[range.end..]);
        return match (new.is_empty(), after.is_empty()) {
            (true, _) => format!("{before}{after}"),
            (false, true) => format!("{before}{new}\n"),
            (false, false) => format!("{before}{new}\n\n{after}"),
        };
    }
    let mut out = text.to_owned();
    if new.is_empty() {
        return out;
    }
    if !out.ends_with("\n\n") {
        out.push_str(if out.ends_with('\n') { "\n" } else { "\n\n" });
    }
    out.push_str(new);
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

    #[test]
    fn each_cpu_keeps_its_section_and_the_fleet_stays_last() {
        let amd = "## AMD EPYC\n\nGenerated on AMD, run 1\n";
        let intel = "## Intel Xeon\n\nGenerated on Intel\n";
        let fleet = "## Fleet\n\nfleet figures\n";
        let first = composed(&with_section("# Old\n\nold text\n", "## Fleet", fleet), amd);
        assert!(first.starts_with(PREAMBLE), "{first}");
        assert_eq!(first, format!("{PREAMBLE}\n{amd}\n{fleet}"));
        let both = composed(&first, intel);
        assert_eq!(both, format!("{PREAMBLE}\n{amd}\n{intel}\n{fleet}"));
        let again = composed(&both, "## AMD EPYC\n\nGenerated on AMD, run 2\n");
        assert_eq!(
            again,
            format!("{PREAMBLE}\n## AMD EPYC\n\nGenerated on AMD, run 2\n\n{intel}\n{fleet}")
        );
        // Without a fleet section, none appears.
        assert_eq!(composed("", amd), format!("{PREAMBLE}\n{amd}"));
    }
}
