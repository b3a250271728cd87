//! bpf-linker: rustc links BPF objects with it. Version 0.13.0 has no prebuilt download
//! here, so it is built from crates.io against the libLLVM that ships inside the pinned
//! rustup toolchain (docs/design.md, "Build route"). Its LLVM must
//! be at least as new as the LLVM of the rustc that compiles probe-ebpf.

use std::{
    env,
    ffi::OsString,
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};

use crate::{
    cmd,
    toolchain::{Pin, RustcVersion},
};

/// The bpf-linker release we build and expect.
pub const VERSION: &str = "0.13.0";

/// What is installed, compared with what the pinned rustc needs.
#[derive(Debug, PartialEq, Eq)]
pub enum State {
    /// Present, the right version, LLVM new enough.
    Ok { llvm_major: u32 },
    /// Not installed.
    Missing,
    /// Installed but another version.
    WrongVersion(String),
    /// Installed but it does not run (e.g. its libLLVM is gone).
    Broken(String),
    /// Built against an LLVM older than the pinned rustc's.
    OldLlvm { linker: u32, rustc: u32 },
}

/// `$CARGO_HOME`, defaulting to `~/.cargo`.
pub fn cargo_home() -> PathBuf {
    env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")))
        .unwrap_or_else(|| PathBuf::from("/root/.cargo"))
}

/// Where `cargo install` puts bpf-linker.
pub fn binary() -> PathBuf {
    cargo_home().join("bin/bpf-linker")
}

/// PATH with `$CARGO_HOME/bin` first, so rustc finds the bpf-linker we installed.
pub fn path_with_cargo_bin() -> OsString {
    let mut paths = vec![cargo_home().join("bin")];
    if let Some(path) = env::var_os("PATH") {
        paths.extend(env::split_paths(&path));
    }
    env::join_paths(paths).unwrap_or_default()
}

/// Inspects the installed bpf-linker against the pinned rustc.
pub fn check(rustc: &RustcVersion) -> State {
    let bin = binary();
    if !bin.exists() {
        return State::Missing;
    }
    let bin_str = bin.to_string_lossy().into_owned();
    let Some(version) = cmd::output(&mut cmd::command(&bin_str, ["--version"])) else {
        let why = cmd::output(&mut cmd::command("ldd", [&bin_str]))
            .and_then(|ldd| {
                ldd.lines()
                    .find(|l| l.contains("not found"))
                    .map(|l| l.trim().to_owned())
            })
            .unwrap_or_else(|| "it does not run".to_owned());
        return State::Broken(why);
    };
    let version = version
        .trim()
        .trim_start_matches("bpf-linker")
        .trim()
        .to_owned();
    if version != VERSION {
        return State::WrongVersion(version);
    }
    let Some(llvm_major) = linked_llvm_major(&bin_str).or_else(installed_llvm_feature) else {
        return State::Broken("cannot tell which LLVM it was built against".to_owned());
    };
    if llvm_major < rustc.llvm_major {
        return State::OldLlvm {
            linker: llvm_major,
            rustc: rustc.llvm_major,
        };
    }
    State::Ok { llvm_major }
}

/// The LLVM major version of the libLLVM the binary links (from `ldd`).
fn linked_llvm_major(bin: &str) -> Option<u32> {
    let ldd = cmd::output(&mut cmd::command("ldd", [bin]))?;
    ldd.lines()
        .find_map(|line| llvm_major_of_soname(line.trim()))
}

/// `libLLVM.so.23.1-rust-...` or `libLLVM-23.so` -> 23.
fn llvm_major_of_soname(name: &str) -> Option<u32> {
    let rest = name
        .strip_prefix("libLLVM.so.")
        .or_else(|| name.strip_prefix("libLLVM-"))?;
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// The `llvm-NN` feature cargo recorded when it installed bpf-linker.
fn installed_llvm_feature() -> Option<u32> {
    let record = fs::read_to_string(cargo_home().join(".crates2.json")).ok()?;
    let entry = &record[record.find("\"bpf-linker ")?..];
    let entry = &entry[..entry.find('}').unwrap_or(entry.len())];
    let feature = &entry[entry.find("\"llvm-")? + 6..];
    feature.split('"').next()?.parse().ok()
}

/// Builds and installs bpf-linker against the pinned toolchain's libLLVM (about 40 s).
pub fn install(pin: &Pin, rustc: &RustcVersion) -> anyhow::Result<()> {
    let prefix = llvm_prefix(pin)?;
    let mut install = pin.cargo();
    install
        .args([
            "install",
            "bpf-linker",
            "--version",
            VERSION,
            "--locked",
            "--force",
        ])
        .args(["--no-default-features", "--features"])
        .arg(format!("llvm-{}", rustc.llvm_major))
        .env("LLVM_PREFIX", &prefix)
        .env("PATH", path_with_cargo_bin());
    cmd::run(&mut install).context("building bpf-linker failed")
}

/// A directory whose `lib/` links the toolchain's libLLVM under the names the build and the
/// dynamic loader look for. bpf-linker's RUNPATH points here, so it must stay.
fn llvm_prefix(pin: &Pin) -> anyhow::Result<PathBuf> {
    let sysroot = cmd::output(&mut cmd::command(
        "rustup",
        ["run", &pin.channel, "rustc", "--print", "sysroot"],
    ))
    .context("cannot ask the pinned rustc for its sysroot")?;
    let sysroot_lib = Path::new(sysroot.trim()).join("lib");
    let prefix = cargo_home()
        .join("probe-detector/llvm-prefix")
        .join(&pin.channel);
    let lib = prefix.join("lib");
    fs::create_dir_all(&lib).with_context(|| format!("cannot create {}", lib.display()))?;
    let mut real = None;
    for entry in fs::read_dir(&sysroot_lib)
        .with_context(|| format!("cannot list {}", sysroot_lib.display()))?
    {
        let name = entry?.file_name();
        let name_str = name.to_string_lossy();
        if name_str.starts_with("libLLVM") {
            if name_str.starts_with("libLLVM.so.") {
                real = Some(name.clone());
            }
            relink(&sysroot_lib.join(&name), &lib.join(&name))?;
        }
    }
    let Some(real) = real else {
        bail!(
            "no libLLVM.so.* in {}: is the toolchain complete?",
            sysroot_lib.display()
        );
    };
    relink(&sysroot_lib.join(real), &lib.join("libLLVM.so"))?;
    Ok(prefix)
}

fn relink(target: &Path, link: &Path) -> anyhow::Result<()> {
    if fs::symlink_metadata(link).is_ok() {
        fs::remove_file(link).with_context(|| format!("cannot replace {}", link.display()))?;
    }
    std::os::unix::fs::symlink(target, link)
        .with_context(|| format!("cannot link {} to {}", link.display(), target.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_llvm_major_from_sonames() {
        assert_eq!(
            llvm_major_of_soname(
                "libLLVM.so.23.1-rust-1.101.0-nightly => /x/lib/libLLVM.so.23.1 (0x7f)"
            ),
            Some(23)
        );
        assert_eq!(llvm_major_of_soname("libLLVM-21.so => not found"), Some(21));
        assert_eq!(
            llvm_major_of_soname("libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6"),
            None
        );
    }
}
