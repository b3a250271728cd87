//! The commands: watch interfaces (the default), replay a capture, detach leftovers, talk
//! to a running instance's block list, and correlate a fleet. Each takes the resolved settings.

pub mod block;
pub mod correlate;
pub mod detach;
pub mod replay;
pub mod watch;

use crate::cli::settings::{Command, Settings};

/// Runs the command the settings name.
pub async fn run(settings: Settings) -> anyhow::Result<()> {
    match &settings.command {
        Command::Watch => watch::run(&settings).await,
        Command::Replay { file } => replay::run(&settings, file),
        Command::Detach => detach::run(&settings.ifaces),
        Command::Block(request) => block::run(&settings.control_socket, request),
        Command::Correlate => correlate::run(&settings).await,
    }
}
