//! `probe-detector detach --iface IF...`: removes what a crashed instance left attached
//! (our netlink TC filter and XDP program), says what it found, leaves the rest alone.

use std::io::{self, Write as _};

use anyhow::bail;

use crate::{cli::exit::UsageError, kernel, net::iface};

/// Cleans up `ifaces`, one line per finding on stdout.
pub fn run(ifaces: &[String]) -> anyhow::Result<()> {
    if ifaces.is_empty() {
        bail!(UsageError(
            "detach needs --iface IF (the interface to clean up; repeat for several)".into()
        ));
    }
    for name in ifaces {
        iface::index_of(name)?;
    }
    kernel::check_privileges()?;
    let mut out = io::stdout().lock();
    for name in ifaces {
        for line in kernel::detach_leftovers(name)? {
            writeln!(out, "{line}")?;
        }
    }
    Ok(())
}
