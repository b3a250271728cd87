//! The pinned toolchain that builds probe-ebpf and probe-userspace: read from
//! probe-ebpf/rust-toolchain.toml, installed through rustup when missing (this machine sets
//! RUSTUP_AUTO_INSTALL=0, so nothing installs it implicitly).

use std::{fs, path::Path, process::Command};

use anyhow::{Context as _, bail};

use crate::cmd;

/// The pinned toolchain and the components it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pin {
    /// e.g. `nightly-2026-10-15`.
    pub channel: String,
    /// e.g. `rust-src` (build-std for the BPF target), `clippy`, `rustfmt`.
    pub components: Vec<String>,
}

impl Pin {
    /// Reads the pin from the workspace's probe-ebpf/rust-toolchain.toml.
    pub fn read(workspace: &Path) -> anyhow::Result<Self> {
        let path = workspace.join("probe-ebpf/rust-toolchain.toml");
        let text =
            fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("{} has no `channel = \"...\"`", path.display()))
    }

    fn parse(text: &str) -> Option<Self> {
        let value = |key: &str| {
            text.lines().find_map(|line| {
                let rest = line
                    .trim()
                    .strip_prefix(key)?
                    .trim_start()
                    .strip_prefix('=')?;
                Some(rest.trim().to_owned())
            })
        };
        let channel = value("channel")?.trim_matches('"').to_owned();
        let components = value("components")
            .map(|list| {
                list.trim_matches(|c| c == '[' || c == ']')
                    .split(',')
                    .map(|c| c.trim().trim_matches('"').to_owned())
                    .filter(|c| !c.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        (!channel.is_empty()).then_some(Self {
            channel,
            components,
        })
    }

    /// `cargo +channel ...` as a command.
    pub fn cargo(&self) -> Command {
        let mut cmd = Command::new("cargo");
        cmd.arg(format!("+{}", self.channel));
        cmd
    }

    /// What rustup says of this toolchain: `None` if it is not installed, else the
    /// installed components missing from the pin.
    pub fn missing_components(&self) -> Option<Vec<String>> {
        let installed = cmd::output(&mut cmd::command(
            "rustup",
            [
                "component",
                "list",
                "--installed",
                "--toolchain",
                &self.channel,
            ],
        ))?;
        Some(
            self.components
                .iter()
                .filter(|c| {
                    !installed
                        .lines()
                        .any(|l| l.trim().starts_with(&format!("{c}-")) || l.trim() == c.as_str())
                })
                .cloned()
                .collect(),
        )
    }

    /// `rustc -vV` of the pinned toolchain.
    pub fn rustc_version(&self) -> Option<RustcVersion> {
        let text = cmd::output(&mut cmd::command(
            "rustup",
            ["run", &self.channel, "rustc", "-vV"],
        ))?;
        RustcVersion::parse(&text)
    }

    /// Installs the toolchain with its components (idempotent; rustup skips what exists).
    pub fn install(&self) -> anyhow::Result<()> {
        if cmd::output(&mut cmd::command("rustup", ["--version"])).is_none() {
            bail!(
                "rustup is not on PATH; install rustup first (https://rustup.rs), then run this again"
            );
        }
        let mut install = cmd::command(
            "rustup",
            [
                "toolchain",
                "install",
                &self.channel,
                "--profile",
                "minimal",
                "--no-self-update",
            ],
        );
        for component in &self.components {
            install.args(["--component", component]);
        }
        cmd::run(&mut install)
    }
}

/// The parts of `rustc -vV` that matter here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RustcVersion {
    /// e.g. `1.101.0-nightly`.
    pub release: String,
    /// LLVM major version, e.g. 23.
    pub llvm_major: u32,
    /// Full LLVM version, e.g. `23.1.3`.
    pub llvm: String,
    /// The host triple, e.g. `x86_64-unknown-linux-gnu`.
    pub host: String,
}

impl RustcVersion {
    fn parse(text: &str) -> Option<Self> {
        let field = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(key))
                .map(|v| v.trim().to_owned())
        };
        let llvm = field("LLVM version:")?;
        Some(Self {
            release: field("release:")?,
            llvm_major: llvm.split('.').next()?.parse().ok()?,
            llvm,
            host: field("host:")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_toolchain_file() {
        let pin = Pin::parse(
            "# comment\n[toolchain]\nchannel = \"nightly-2026-10-15\"\ncomponents = [\"rust-src\", \"clippy\"]\nprofile = \"minimal\"\n",
        )
        .unwrap();
        assert_eq!(pin.channel, "nightly-2026-10-15");
        assert_eq!(pin.components, ["rust-src", "clippy"]);
        assert_eq!(Pin::parse("[toolchain]\n"), None);
    }

    #[test]
    fn the_committed_pin_is_readable() {
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let pin = Pin::read(workspace).unwrap();
        assert!(pin.channel.starts_with("nightly-"), "{pin:?}");
        assert!(pin.components.iter().any(|c| c == "rust-src"));
    }

    #[test]
    fn parses_rustc_vv() {
        let v = RustcVersion::parse(
            "rustc 1.101.0-nightly (7df81381d 2026-10-14)\nbinary: rustc\nhost: x86_64-unknown-linux-gnu\nrelease: 1.101.0-nightly\nLLVM version: 23.1.3\n",
        )
        .unwrap();
        assert_eq!(v.release, "1.101.0-nightly");
        assert_eq!((v.llvm_major, v.llvm.as_str()), (23, "23.1.3"));
    }
}
