//! Builds the eBPF object (probe-ebpf) with the pinned toolchain through aya-build and
//! leaves it in OUT_DIR for `include_bytes_aligned!`. With `AYA_BUILD_SKIP=1` aya-build
//! builds nothing; an empty stub then stands in, and the binary says so when run.
//!
//! aya-build echoes the inner cargo's progress ("Compiling ...", "Finished ...") as cargo
//! warnings, about forty per build: a build that warns every time teaches people to ignore
//! warnings. Its output is captured; progress is shown only when the inner build fails,
//! and anything else it says (a compiler warning) always.

use std::{
    env,
    fs::{self, File},
    io::{self, Write as _},
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
};

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
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    quietly(&out_dir.join("aya-build.log"), || {
        aya_build::build_ebpf(
            [aya_build::Package {
                name: "probe-ebpf",
                root_dir,
                features,
                ..Default::default()
            }],
            aya_build::Toolchain::Custom(&toolchain),
        )
    })?;

    let object = out_dir.join("probe-ebpf");
    if !object.exists() {
        fs::write(&object, [])
            .with_context(|| format!("cannot write stub {}", object.display()))?;
    }
    // What `--version`, the first log line and probe_detector_build_info name.
    let bytes = fs::read(&object).with_context(|| format!("cannot read {}", object.display()))?;
    let ebpf = if bytes.is_empty() {
        "none".to_owned()
    } else {
        format!("{:016x}", fnv1a(&bytes))
    };
    println!("cargo::rustc-env=PROBE_EBPF_HASH={ebpf}");
    println!(
        "cargo::rustc-env=PROBE_GIT_COMMIT={}",
        git_commit(workspace)
    );
    Ok(())
}

/// FNV-1a, 64 bits: names an eBPF object (an identity, not a guard against tampering).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The checkout's commit (12 hex digits, `-dirty` when tracked files differ from it), or
/// `unknown` outside a git checkout (a source tarball).
fn git_commit(workspace: &Path) -> String {
    let git = workspace.join(".git");
    for watched in ["HEAD", "index", "packed-refs", "refs/heads"] {
        if git.join(watched).exists() {
            println!("cargo::rerun-if-changed={}", git.join(watched).display());
        }
    }
    let run = |args: &[&str]| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(workspace)
            .args(args)
            .output()
            .ok()
            .filter(|out| out.status.success())
            .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    let Some(commit) = run(&["rev-parse", "--short=12", "HEAD"]) else {
        return "unknown".to_owned();
    };
    let dirty = run(&["status", "--porcelain", "--untracked-files=no"])
        .is_some_and(|changes| !changes.is_empty());
    if dirty {
        format!("{commit}-dirty")
    } else {
        commit
    }
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

/// Runs `build` with this process's stdout (where cargo reads build-script directives)
/// going to `log`, then passes the directives on: every `cargo::` line but the inner
/// build's progress, which is passed on only when `build` failed.
fn quietly(log: &Path, build: impl FnOnce() -> anyhow::Result<()>) -> anyhow::Result<()> {
    let file = File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
    io::stdout().flush()?;
    // SAFETY: dup of fd 1, which is open (cargo reads it).
    let saved = unsafe { libc::dup(1) };
    if saved < 0 {
        return build();
    }
    // SAFETY: both descriptors are open; fd 1 is restored below before anything else
    // writes to it.
    if unsafe { libc::dup2(file.as_raw_fd(), 1) } < 0 {
        // SAFETY: `saved` is the descriptor dup'ed above, no longer needed.
        unsafe { libc::close(saved) };
        return build();
    }
    let result = build();
    let _ = io::stdout().flush();
    // SAFETY: `saved` is the descriptor dup'ed above.
    unsafe {
        libc::dup2(saved, 1);
        libc::close(saved);
    }
    let captured = fs::read_to_string(log).unwrap_or_default();
    for line in captured.lines() {
        let progress = line.strip_prefix("cargo::warning=").is_some_and(|text| {
            let text = text.trim_start();
            text.is_empty()
                || [
                    "Compiling ",
                    "Finished ",
                    "Fresh ",
                    "Updating ",
                    "Downloading ",
                    "Downloaded ",
                    "Locking ",
                    "Blocking ",
                    "Adding ",
                    "Checking ",
                ]
                .iter()
                .any(|p| text.starts_with(p))
        });
        if !progress || result.is_err() {
            println!("{line}");
        }
    }
    result
}
