//! `probe-detector block list|add|remove`: one request to the running instance through
//! its control socket, its answer printed.

use std::{
    io::{self, Write as _},
    path::Path,
};

use crate::{daemon::control, policy::block_control::Request};

/// Sends `request` to the instance listening on `socket` and prints the answer.
pub fn run(socket: &Path, request: &Request) -> anyhow::Result<()> {
    let response = control::request(socket, request)?;
    let mut out = io::stdout().lock();
    if let Some(done) = response.done {
        writeln!(out, "{done}")?;
    } else if response.blocked.is_empty() {
        writeln!(out, "no source is blocked")?;
    } else {
        for b in &response.blocked {
            writeln!(
                out,
                "{:<39} {:>7} s left {:>12} frames dropped  {}",
                b.addr,
                b.expires_in_s,
                b.packets,
                if b.manual { "by hand" } else { "automatic" }
            )?;
        }
    }
    Ok(())
}
