//! `probe-detector`: parses the command line (with its configuration file), sets up
//! logging, runs the command and maps a failure to its documented exit status. Everything
//! else lives in the library; `lib.rs` has the map.

use std::process::ExitCode;

use probe_userspace::{
    cli::{
        self,
        exit::{EXIT_FAILURE, EXIT_OK, exit_code},
        settings::Settings,
    },
    cmd,
};

fn main() -> ExitCode {
    let cli = match cli::parse_args(std::env::args_os().collect()) {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    init_logging(cli.log_level);
    let settings = Settings::from_cli(&cli);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("probe-detector: error: cannot start the async runtime: {err}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    match runtime.block_on(cmd::run(settings)) {
        Ok(()) => ExitCode::from(EXIT_OK),
        Err(err) => {
            eprintln!("probe-detector: error: {err:#}");
            ExitCode::from(exit_code(&err))
        }
    }
}

/// Logs to stderr: `level` for probe-detector itself and for eBPF trace records
/// (module `probe_ebpf`), warnings only for libraries; RUST_LOG, when set, overrides.
fn init_logging(level: log::LevelFilter) {
    env_logger::Builder::new()
        .filter_level(log::LevelFilter::Warn.min(level))
        .filter_module("probe_detector", level)
        .filter_module("probe_userspace", level)
        .filter_module("probe_ebpf", level)
        .parse_env("RUST_LOG")
        .target(env_logger::Target::Stderr)
        .format_target(false)
        .init();
}
