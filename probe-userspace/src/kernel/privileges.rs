//! Privileges: fails early, with one clear line, when the process cannot load or attach
//! eBPF programs, before the kernel is asked.

use std::fs;

/// Missing privileges, found before the kernel is asked.
#[derive(Debug, thiserror::Error)]
#[error(
    "probe-detector needs root, or CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON, to load and attach eBPF programs; missing {missing}. Run it with sudo"
)]
pub struct PrivilegeError {
    /// The capabilities missing, comma-separated.
    pub missing: String,
}

/// Fails early, with one clear line, when the effective capabilities cannot be enough.
pub fn check_privileges() -> Result<(), PrivilegeError> {
    const CAP_NET_ADMIN: u32 = 12;
    const CAP_SYS_ADMIN: u32 = 21;
    const CAP_PERFMON: u32 = 38;
    const CAP_BPF: u32 = 39;
    let Ok(status) = fs::read_to_string("/proc/self/status") else {
        // No /proc: let the kernel decide.
        return Ok(());
    };
    let Some(cap_eff) = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
    else {
        // Unknown format: let the kernel decide.
        return Ok(());
    };
    let has = |cap: u32| cap_eff & (1 << cap) != 0;
    let mut missing = Vec::new();
    if !has(CAP_BPF) && !has(CAP_SYS_ADMIN) {
        missing.push("CAP_BPF");
    }
    if !has(CAP_NET_ADMIN) {
        missing.push("CAP_NET_ADMIN");
    }
    if !has(CAP_PERFMON) && !has(CAP_SYS_ADMIN) {
        missing.push("CAP_PERFMON");
    }
    if missing.is_empty() {
        return Ok(());
    }
    Err(PrivilegeError {
        missing: missing.join(", "),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_error_names_what_is_missing_and_the_fix() {
        let err = PrivilegeError {
            missing: "CAP_BPF, CAP_PERFMON".into(),
        };
        let text = err.to_string();
        assert!(text.contains("missing CAP_BPF, CAP_PERFMON"), "{text}");
        assert!(text.ends_with("Run it with sudo"), "{text}");
    }
}
