//! The test network shared by probe-userspace's lab tests and `cargo xtask lab`: network
//! namespaces and veth pairs made and deleted by the caller ([`netns`]), real listeners in
//! them ([`listeners`]), crafted frames sent into them ([`inject`]), a private rsyslogd
//! ([`syslog`]), the fleet's hub, hosts and Redis ([`fleet`]), and the one rule for tests that need root ([`require_root`]).
//!
//! Network safety (docs/design.md): only namespaces and veth pairs made here, only
//! addresses from 198.18.0.0/15 and 2001:db8::/32, every namespace deleted on drop.

pub mod fleet;
pub mod inject;
pub mod listeners;
pub mod netns;
pub mod syslog;

use std::process::{Command, Stdio};

pub use listeners::Listeners;
pub use netns::{Netns, veth};

/// Whether a test that needs root can run: true as root; false (and says so) when
/// `PROBE_SKIP_ROOT_TESTS=1` asks to skip it; otherwise panics with the reason, so a test
/// that cannot run never passes silently.
pub fn require_root(what: &str) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if std::env::var("PROBE_SKIP_ROOT_TESTS").is_ok_and(|v| v == "1") {
        eprintln!("SKIPPED {what}: needs root, and PROBE_SKIP_ROOT_TESTS=1 asks to skip it");
        return false;
    }
    panic!(
        "{what} needs root (BPF_PROG_TEST_RUN, network namespaces): run `cargo xtask test` as root, \
         or set PROBE_SKIP_ROOT_TESTS=1 to skip these tests explicitly"
    );
}

/// Panics with the fix when `tool` is not installed.
pub fn require_tool(tool: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "{tool} is not installed: run `cargo xtask setup --test-deps` (Debian package {tool})"
    );
}
