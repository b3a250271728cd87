//! `cargo xtask doctor`: what the build and the tests need, what is missing or mismatched,
//! and the command that fixes each.

use std::{fs, path::Path};

use crate::{cmd, linker, packages, toolchain::Pin};

/// One line of the report.
pub struct Finding {
    /// True when nothing needs doing.
    pub ok: bool,
    /// What was checked.
    pub what: String,
    /// What was found.
    pub detail: String,
    /// How to fix it, when not ok.
    pub fix: Option<String>,
}

impl Finding {
    fn ok(what: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            ok: true,
            what: what.into(),
            detail: detail.into(),
            fix: None,
        }
    }

    fn bad(what: impl Into<String>, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            ok: false,
            what: what.into(),
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }
}

/// Checks everything; `with_tests` adds what only `cargo xtask test` needs.
pub fn findings(pin: &Pin, with_tests: bool) -> Vec<Finding> {
    let mut out = Vec::new();
    match cmd::output(&mut cmd::command("rustup", ["--version"])) {
        Some(v) => out.push(Finding::ok("rustup", v.lines().next().unwrap_or("").trim())),
        None => out.push(Finding::bad(
            "rustup",
            "not on PATH",
            "install rustup (https://rustup.rs)",
        )),
    }

    let rustc = pin.rustc_version();
    match (pin.missing_components(), &rustc) {
        (Some(missing), Some(v)) if missing.is_empty() => out.push(Finding::ok(
            format!("toolchain {}", pin.channel),
            format!(
                "rustc {}, LLVM {}, with {}",
                v.release,
                v.llvm,
                pin.components.join(", ")
            ),
        )),
        (Some(missing), Some(_)) => out.push(Finding::bad(
            format!("toolchain {}", pin.channel),
            format!("installed, but without {}", missing.join(", ")),
            "cargo xtask setup",
        )),
        _ => out.push(Finding::bad(
            format!("toolchain {}", pin.channel),
            "not installed (RUSTUP_AUTO_INSTALL=0 here: nothing installs it implicitly)",
            "cargo xtask setup",
        )),
    }

    let linker_what = format!("bpf-linker {}", linker::VERSION);
    match &rustc {
        None => out.push(Finding::bad(
            linker_what,
            "not checked: the pinned toolchain is missing",
            "cargo xtask setup",
        )),
        Some(rustc) => out.push(match linker::check(rustc) {
            linker::State::Ok { llvm_major } => Finding::ok(
                linker_what,
                format!(
                    "{}, LLVM {llvm_major} (rustc's is {})",
                    linker::binary().display(),
                    rustc.llvm_major
                ),
            ),
            linker::State::Missing => Finding::bad(
                linker_what,
                format!("not installed at {}", linker::binary().display()),
                "cargo xtask setup",
            ),
            linker::State::WrongVersion(v) => Finding::bad(
                linker_what,
                format!("version {v} installed"),
                "cargo xtask setup",
            ),
            linker::State::Broken(why) => Finding::bad(
                linker_what,
                format!("installed but broken: {why}"),
                "cargo xtask setup (rebuilds it)",
            ),
            linker::State::OldLlvm { linker, rustc } => Finding::bad(
                linker_what,
                format!("built against LLVM {linker}, older than the pinned rustc's LLVM {rustc}"),
                "cargo xtask setup (rebuilds it against the toolchain's LLVM)",
            ),
        }),
    }

    let release = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let release = release.trim();
    let (major, minor) = kernel_version(release);
    let btf = Path::new("/sys/kernel/btf/vmlinux").exists();
    if (major, minor) >= (5, 8) && btf {
        out.push(Finding::ok(
            "kernel",
            format!("{release} (>= 5.8) with BTF"),
        ));
    } else {
        out.push(Finding::bad(
            "kernel",
            format!(
                "{release}{}",
                if btf {
                    ""
                } else {
                    " without /sys/kernel/btf/vmlinux"
                }
            ),
            "probe-detector needs Linux >= 5.8 built with CONFIG_DEBUG_INFO_BTF=y",
        ));
    }

    if cmd::is_root() {
        out.push(Finding::ok("privileges", "root"));
    } else {
        out.push(Finding::bad(
            "privileges",
            "not root: loading BPF programs and the kernel/lab tests need root",
            "run as root (sudo -E cargo xtask ...)",
        ));
    }

    if with_tests {
        for package in packages::TEST_PACKAGES {
            let what = format!("Debian package {}", package.name);
            if packages::installed(package.name) {
                out.push(Finding::ok(what, package.why));
            } else {
                out.push(Finding::bad(
                    what,
                    format!("missing ({})", package.why),
                    "cargo xtask setup --test-deps",
                ));
            }
        }
    }
    out
}

/// Prints the report; returns true when everything is in order.
pub fn report(findings: &[Finding]) -> bool {
    for f in findings {
        let mark = if f.ok { "ok     " } else { "MISSING" };
        eprintln!("  {mark} {:<28} {}", f.what, f.detail);
        if let Some(fix) = &f.fix {
            eprintln!("          {:<28} fix: {fix}", "");
        }
    }
    findings.iter().all(|f| f.ok)
}

/// (major, minor) of a kernel release string such as `6.18.44-foo`.
fn kernel_version(release: &str) -> (u32, u32) {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let minor = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    (major, minor)
}

#[cfg(test)]
mod tests {
    use super::kernel_version;

    #[test]
    fn parses_kernel_releases() {
        assert_eq!(kernel_version("6.18.44-fc-v669"), (6, 18));
        assert_eq!(kernel_version("5.8.0"), (5, 8));
        assert_eq!(kernel_version("garbage"), (0, 0));
    }
}
