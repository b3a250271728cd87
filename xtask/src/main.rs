//! `cargo xtask`: probe-detector's developer commands. Built by the machine's stable
//! toolchain; it installs what is missing (the pinned toolchain, bpf-linker, the Debian
//! packages the tests use) and drives everything else with the pinned toolchain.

mod bench;
mod cmd;
mod doctor;
mod fuzz;
mod lab;
mod linker;
mod package;
mod packages;
mod test;
mod toolchain;

use std::{
    env,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Command, ExitCode},
    time::Instant,
};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

use crate::toolchain::{Pin, RustcVersion};

/// probe-detector's developer commands. Each installs what it needs first.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask", about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Install what is missing: the pinned toolchain and bpf-linker (and, with
    /// --test-deps, the Debian packages the tests use). Fast when all is present.
    Setup {
        /// Also install the Debian packages the tests need (nmap, curl, iproute2, rsyslog, logrotate, prometheus).
        #[arg(long)]
        test_deps: bool,
    },
    /// Report what is installed, what is missing or mismatched, and how to fix it.
    Doctor,
    /// Build probe-detector (with its eBPF object).
    Build {
        /// Build with the release profile.
        #[arg(long)]
        release: bool,
    },
    /// Build probe-detector in release mode and run it (as root) with ARGS.
    Run {
        /// Arguments for probe-detector, after `--` (e.g. `-- --iface eth0`).
        #[arg(
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "ARGS"
        )]
        args: Vec<String>,
    },
    /// Measure ns/packet of each program path with BPF_PROG_TEST_RUN against trivial
    /// programs in the same run; print the table and write it to BENCHMARKS.md. Needs root.
    Bench {
        /// Print only; leave BENCHMARKS.md alone.
        #[arg(long)]
        no_write: bool,
    },
    /// A spoofed-source SYN flood (10 million SYNs by default) with a scanner hidden in it,
    /// through the real programs (BPF_PROG_TEST_RUN) and engine: prints memory (process and
    /// kernel maps), engine occupancy, events lost, and when the scanner was found. Needs
    /// root; a few minutes.
    Flood {
        /// SYNs to send.
        #[arg(long, default_value_t = 10_000_000)]
        packets: u64,
    },
    /// Fuzz for longer than `cargo xtask test` does: random and damaged frames through both
    /// programs (CASES x 64 frames), and the engine's and the configuration file's property
    /// tests with CASES cases each. Needs root.
    Fuzz {
        /// Cases per property.
        #[arg(long, default_value_t = 100_000)]
        cases: u32,
    },
    /// Run the lab: real scanners (nmap, masscan, hping3, zmap) and benign traffic against
    /// probe-detector, scanlogd, psad and portsentry side by side in network namespaces, and
    /// CPU cost against scanlogd; writes docs/detection-matrix.md and .svg. About 10
    /// minutes. Installs the scanners and peers from Debian. Needs root.
    Lab {
        /// A few scenarios and one cost load, under 3 minutes; the report goes to
        /// target/lab-quick/ instead of docs/.
        #[arg(long)]
        quick: bool,
        /// Only the scenarios whose name contains TEXT, without the cost table or the
        /// report (to look at one scenario again).
        #[arg(long, value_name = "TEXT", conflicts_with = "quick")]
        only: Option<String>,
        /// The fleet lab instead: eight sensors and a correlator over Redis (one server,
        /// TLS, a three-node cluster): sweeps' latency, clients' alerts, throughput; writes
        /// docs/fleet-lab.md and the Fleet section of BENCHMARKS.md (about 5 minutes).
        #[arg(long, conflicts_with_all = ["quick", "only"])]
        fleet: bool,
        /// Only the cost table (CPU per packet against scanlogd at every load), printed,
        /// nothing written (about 2 minutes): to measure a change's cost again.
        #[arg(long, conflicts_with_all = ["quick", "only", "fleet"])]
        cost: bool,
    },
    /// Build a Debian package (binary, systemd unit, default configuration, man page,
    /// completions, docs) in target/package/, check it with lintian (no errors) and by
    /// running the binary unpacked into a scratch root. Installs dpkg-dev and lintian.
    Package,
    /// Run every test: formatting, clippy, unit, kernel (BPF_PROG_TEST_RUN) and lab
    /// (network namespaces, nmap) tests. Needs root.
    Test {
        /// Skip `cargo fmt --check` and clippy.
        #[arg(long)]
        no_lint: bool,
        /// Extra arguments for `cargo test`, after `--` (e.g. `-- engine::`).
        #[arg(
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "ARGS"
        )]
        args: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match dispatch(cli.command) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(command: Cmd) -> anyhow::Result<ExitCode> {
    let workspace = workspace_root();
    let pin = Pin::read(&workspace)?;
    match command {
        Cmd::Setup { test_deps } => {
            setup(&pin, test_deps)?;
        }
        Cmd::Doctor => {
            eprintln!("xtask doctor: what probe-detector's build and tests need");
            let ok = doctor::report(&doctor::findings(&pin, true));
            return Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            });
        }
        Cmd::Build { release } => {
            setup(&pin, false)?;
            build(&workspace, &pin, release)?;
        }
        Cmd::Run { args } => {
            setup(&pin, false)?;
            build(&workspace, &pin, true)?;
            let binary = target_dir(&workspace).join("release/probe-detector");
            let mut run = if cmd::is_root() {
                Command::new(&binary)
            } else {
                eprintln!("xtask: not root: running probe-detector through sudo");
                let mut sudo = Command::new("sudo");
                sudo.arg("-E").arg(&binary);
                sudo
            };
            run.args(&args);
            eprintln!("xtask: $ {}", cmd::describe(&run));
            // Replace this process, so SIGINT/SIGTERM reach probe-detector directly and its
            // exit status is ours.
            let err = run.exec();
            bail!("cannot run {}: {err}", binary.display());
        }
        Cmd::Bench { no_write } => {
            setup(&pin, false)?;
            bench::bench(&workspace, &pin, !no_write)?;
        }
        Cmd::Flood { packets } => {
            setup(&pin, false)?;
            bench::flood(&workspace, &pin, packets)?;
        }
        Cmd::Fuzz { cases } => {
            setup(&pin, false)?;
            fuzz::run(&workspace, &pin, cases)?;
        }
        Cmd::Package => {
            package::run(&workspace, &pin)?;
        }
        Cmd::Lab {
            quick,
            only,
            fleet,
            cost,
        } => {
            if fleet {
                lab::fleet(&workspace, &pin)?;
            } else if cost {
                lab::cost(&workspace, &pin)?;
            } else {
                lab::run(&workspace, &pin, quick, only.as_deref())?;
            }
        }
        Cmd::Test { no_lint, args } => {
            test::run(&workspace, &pin, no_lint, &args)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Installs what is missing; returns the pinned rustc's version.
pub(crate) fn setup(pin: &Pin, test_deps: bool) -> anyhow::Result<RustcVersion> {
    let started = Instant::now();
    let mut did = Vec::new();
    if pin
        .missing_components()
        .is_none_or(|missing| !missing.is_empty())
    {
        eprintln!(
            "xtask: installing toolchain {} with {}",
            pin.channel,
            pin.components.join(", ")
        );
        pin.install()?;
        did.push("toolchain");
    }
    let rustc = pin
        .rustc_version()
        .with_context(|| format!("toolchain {} does not run after installing it", pin.channel))?;
    match linker::check(&rustc) {
        linker::State::Ok { .. } => {}
        state => {
            eprintln!(
                "xtask: bpf-linker {} needed ({state:?}); building it against LLVM {} (about a minute)",
                linker::VERSION,
                rustc.llvm_major
            );
            linker::install(pin, &rustc)?;
            match linker::check(&rustc) {
                linker::State::Ok { .. } => did.push("bpf-linker"),
                state => bail!("bpf-linker still unusable after installing it: {state:?}"),
            }
        }
    }
    if test_deps {
        let missing = packages::missing(packages::TEST_PACKAGES);
        if !missing.is_empty() {
            eprintln!("xtask: installing Debian packages: {}", missing.join(" "));
            packages::install(&missing)?;
            did.push("Debian packages");
        }
    }
    if !did.is_empty() {
        eprintln!(
            "xtask: set-up done ({}) in {:.0} s",
            did.join(", "),
            started.elapsed().as_secs_f64()
        );
    }
    Ok(rustc)
}

/// `cargo +PIN` with the environment the pinned build needs.
pub(crate) fn pinned_cargo(workspace: &Path, pin: &Pin) -> Command {
    let mut cargo = pin.cargo();
    cargo
        .current_dir(workspace)
        .env("PATH", linker::path_with_cargo_bin());
    // `cargo run` set these for xtask, for the stable toolchain; they must not leak into
    // the pinned one.
    for var in [
        "RUSTC",
        "RUSTDOC",
        "RUSTC_WRAPPER",
        "RUSTUP_TOOLCHAIN",
        "CARGO",
    ] {
        cargo.env_remove(var);
    }
    cargo
}

pub(crate) fn build(workspace: &Path, pin: &Pin, release: bool) -> anyhow::Result<()> {
    let mut cargo = pinned_cargo(workspace, pin);
    cargo.args(["build", "--package", "probe-userspace", "--bins"]);
    if release {
        cargo.arg("--release");
    }
    cmd::run(&mut cargo)
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

pub(crate) fn target_dir(workspace: &Path) -> PathBuf {
    env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target"))
}
