//! Exit statuses: the documented number for each kind of failure, found by walking an
//! error's chain for the typed errors of the layers below.

use crate::{
    daemon::{control::ControlError, metrics::MetricsError},
    kernel::{LoadError, PrivilegeError},
    net::iface::IfaceError,
    policy::allow::AllowError,
};

/// Exit status when the program ran and stopped cleanly (SIGINT/SIGTERM).
pub const EXIT_OK: u8 = 0;
/// Exit status for a failure while loading, attaching or running.
pub const EXIT_FAILURE: u8 = 1;
/// Exit status for bad command-line arguments (as clap uses).
pub const EXIT_USAGE: u8 = 2;
/// Exit status when privileges are missing.
pub const EXIT_PRIVILEGES: u8 = 3;
/// Exit status when an interface does not exist or none can be chosen.
pub const EXIT_INTERFACE: u8 = 4;
/// Exit status when the metrics endpoint cannot listen (address in use, not ours).
pub const EXIT_METRICS: u8 = 5;

/// A command line that cannot work, found after parsing (exit status 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// The chain link as a [`LoadError`], if it is one.
fn load<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a LoadError> {
    e.downcast_ref::<LoadError>()
}

/// The documented exit status for a failure.
pub fn exit_code(err: &anyhow::Error) -> u8 {
    let any = |test: &dyn Fn(&(dyn std::error::Error + 'static)) -> bool| err.chain().any(test);
    if any(&|e| e.is::<PrivilegeError>())
        || any(&|e| matches!(load(e), Some(LoadError::Permission { .. })))
    {
        EXIT_PRIVILEGES
    } else if any(&|e| e.is::<AllowError>() || e.is::<UsageError>()) {
        EXIT_USAGE
    } else if any(&|e| e.is::<IfaceError>()) {
        EXIT_INTERFACE
    } else if any(&|e| e.is::<MetricsError>()) {
        EXIT_METRICS
    } else if any(&|e| {
        matches!(
            e.downcast_ref::<ControlError>(),
            Some(ControlError::Denied(_))
        )
    }) {
        EXIT_PRIVILEGES
    } else if any(&|e| matches!(load(e), Some(LoadError::Config(_)))) {
        EXIT_USAGE
    } else {
        EXIT_FAILURE
    }
}

#[cfg(test)]
mod tests {
    use anyhow::Context as _;

    use super::*;

    #[test]
    fn each_failure_has_its_documented_status() {
        let usage: anyhow::Error = UsageError("replay needs --home-net".into()).into();
        assert_eq!(exit_code(&usage), EXIT_USAGE);
        let privileges = anyhow::Error::from(PrivilegeError {
            missing: "CAP_BPF".into(),
        });
        assert_eq!(exit_code(&privileges), EXIT_PRIVILEGES);
        let config = anyhow::Error::from(LoadError::Config("too many home nets".into()));
        assert_eq!(exit_code(&config), EXIT_USAGE);
        let denied = anyhow::Error::from(ControlError::Denied("/run/x.sock".into()));
        assert_eq!(exit_code(&denied), EXIT_PRIVILEGES);
        let other = anyhow::anyhow!("the expiry program failed");
        assert_eq!(exit_code(&other), EXIT_FAILURE);
    }

    #[test]
    fn the_status_is_found_under_added_context() {
        let err = Err::<(), _>(LoadError::Missing("XDP program"))
            .context("cannot start")
            .unwrap_err();
        assert_eq!(exit_code(&err), EXIT_FAILURE);
        let err = Err::<(), _>(UsageError("bad".into()))
            .context("while reading the command line")
            .unwrap_err();
        assert_eq!(exit_code(&err), EXIT_USAGE);
    }
}
