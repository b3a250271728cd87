//! Attaching the programs to an interface (XDP at ingress, TC at egress) and detaching
//! them, including what a crashed instance left behind (`probe-detector detach`).

use std::{ffi::CString, io};

use aya::{
    Ebpf,
    programs::{
        ProgramError, TcAttachType, XdpMode,
        tc::{self, SchedClassifierLinkId, TcError},
        xdp::XdpLinkId,
    },
};
use probe_common::{TC_PROGRAM, XDP_PROGRAM};

use super::{
    load::{LoadError, os_error},
    run::{tc_program, xdp_program},
};

/// How to attach the XDP program.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum XdpModeArg {
    /// Native (driver) mode, falling back to generic (skb) mode where the driver lacks XDP.
    Auto,
    /// Native (driver) mode only: fastest, needs driver support.
    Native,
    /// Generic (skb) mode: works on every interface, after the kernel allocated the skb.
    Skb,
}

/// The programs attached to one interface.
#[derive(Debug)]
pub struct Attachment {
    /// Interface name.
    pub iface: String,
    /// The XDP mode that took.
    pub xdp_mode: &'static str,
    xdp: XdpLinkId,
    tc: SchedClassifierLinkId,
}

/// Attaches both programs to `iface`: XDP at ingress in the requested mode (`Auto` tries
/// native, then generic, and logs which took), TC at egress (TCX on kernels >= 6.6).
/// On failure nothing stays attached to `iface`.
pub fn attach(ebpf: &mut Ebpf, iface: &str, mode: XdpModeArg) -> Result<Attachment, LoadError> {
    let c_iface = CString::new(iface).map_err(|_| LoadError::Attach {
        what: "XDP",
        iface: iface.to_owned(),
        reason: "the name contains a NUL byte".into(),
    })?;
    let attach_error = |what: &'static str, err: ProgramError| {
        if matches!(os_error(&err), Some(libc::EBUSY | libc::EEXIST)) {
            return LoadError::Occupied {
                iface: iface.to_owned(),
                reason: err.to_string(),
            };
        }
        LoadError::Attach {
            what,
            iface: iface.to_owned(),
            reason: explain_attach_error(&err),
        }
    };
    let xdp = xdp_program(ebpf)?;
    let (xdp_link, xdp_mode) = match mode {
        XdpModeArg::Native => (
            xdp.attach(&c_iface, XdpMode::Driver)
                .map_err(|e| attach_error("XDP (native)", e))?,
            "native",
        ),
        XdpModeArg::Skb => (
            xdp.attach(&c_iface, XdpMode::Skb)
                .map_err(|e| attach_error("XDP (skb)", e))?,
            "skb",
        ),
        XdpModeArg::Auto => match xdp.attach(&c_iface, XdpMode::Driver) {
            Ok(link) => (link, "native"),
            // Somebody else's program is there: another mode would not change that.
            Err(err) if matches!(os_error(&err), Some(libc::EBUSY | libc::EEXIST)) => {
                return Err(attach_error("XDP", err));
            }
            Err(native_err) => {
                log::info!(
                    "{iface}: native XDP not available ({}); falling back to generic (skb) mode",
                    explain_attach_error(&native_err)
                );
                let link = xdp
                    .attach(&c_iface, XdpMode::Skb)
                    .map_err(|e| attach_error("XDP (skb)", e))?;
                (link, "skb")
            }
        },
    };
    let tc_link = match tc_program(ebpf)?.attach(&c_iface, TcAttachType::Egress) {
        Ok(link) => link,
        Err(err) => {
            let err = attach_error("TC egress", err);
            // Leave nothing behind on this interface.
            if let Ok(xdp) = xdp_program(ebpf) {
                let _ = xdp.detach(xdp_link);
            }
            return Err(err);
        }
    };
    Ok(Attachment {
        iface: iface.to_owned(),
        xdp_mode,
        xdp: xdp_link,
        tc: tc_link,
    })
}

/// Detaches both programs of one attachment. Both are tried even if one fails.
pub fn detach(ebpf: &mut Ebpf, attachment: Attachment) -> Result<(), LoadError> {
    let Attachment { iface, xdp, tc, .. } = attachment;
    let xdp_result = xdp_program(ebpf)?.detach(xdp);
    let tc_result = tc_program(ebpf)?.detach(tc);
    for (what, result) in [("XDP", xdp_result), ("TC egress", tc_result)] {
        result.map_err(|err| LoadError::Attach {
            what,
            iface: iface.clone(),
            reason: format!("detach failed: {err}"),
        })?;
    }
    Ok(())
}

/// `probe-detector detach`: removes what a crashed probe-detector may have left on
/// `iface`, and nothing else. Leftovers exist only where the kernel has no bpf_links for
/// them (XDP before 5.9, TC egress before TCX in 6.6): there aya attaches through netlink,
/// and a netlink attachment outlives its process. Returns one line per finding.
pub fn detach_leftovers(iface: &str) -> Result<Vec<String>, LoadError> {
    let c_iface = CString::new(iface).map_err(|_| LoadError::Attach {
        what: "detach",
        iface: iface.to_owned(),
        reason: "the interface name contains a NUL byte".into(),
    })?;
    let mut found = Vec::new();
    match tc::qdisc_detach_program(&c_iface, TcAttachType::Egress.into(), TC_PROGRAM) {
        Ok(()) => found.push(format!(
            "{iface}: removed a TC egress filter of ours ({TC_PROGRAM})"
        )),
        Err(TcError::IoError(err)) if err.kind() == io::ErrorKind::NotFound => {
            found.push(format!("{iface}: no TC egress filter of ours"));
        }
        // No clsact qdisc (or no such parent): nothing can be attached there.
        Err(err) if os_error(&err).is_some_and(|e| e == libc::EINVAL || e == libc::ENOENT) => {
            found.push(format!("{iface}: no TC egress filter of ours"));
        }
        Err(err) => {
            return Err(LoadError::Attach {
                what: "TC egress (detach)",
                iface: iface.to_owned(),
                reason: err.to_string(),
            });
        }
    }
    found.push(detach_xdp(iface)?);
    Ok(found)
}

/// Runs `ip ARGS` (iproute2) for work on `iface`.
fn ip(iface: &str, what: &'static str, args: &[&str]) -> Result<std::process::Output, LoadError> {
    std::process::Command::new("ip")
        .args(args)
        .output()
        .map_err(|err| LoadError::Attach {
            what,
            iface: iface.to_owned(),
            reason: format!("cannot run ip (iproute2): {err}"),
        })
}

/// `--force`: removes whatever XDP program is attached to `iface` through netlink; true
/// when the interface is free afterwards (a program held by another process's bpf_link
/// cannot be removed from here).
pub fn remove_xdp(iface: &str) -> Result<bool, LoadError> {
    for mode in ["xdpgeneric", "xdpdrv"] {
        ip(
            iface,
            "XDP (remove)",
            &["link", "set", "dev", iface, mode, "off"],
        )?;
    }
    let shown = ip(iface, "XDP (remove)", &["-d", "link", "show", "dev", iface])?;
    Ok(!String::from_utf8_lossy(&shown.stdout).contains("prog/xdp"))
}

/// The XDP half of [`detach_leftovers`]: the program attached to `iface` (from `ip -d link`),
/// removed through netlink if it is ours; one that is not ours is left alone, and a bpf_link
/// (a running probe-detector) cannot be removed this way.
fn detach_xdp(iface: &str) -> Result<String, LoadError> {
    let shown = ip(iface, "XDP (detach)", &["-d", "link", "show", "dev", iface])?;
    let text = String::from_utf8_lossy(&shown.stdout);
    let Some(id) = text
        .split_whitespace()
        .skip_while(|w| !w.starts_with("prog/xdp"))
        .nth(2)
        .and_then(|id| id.parse::<u32>().ok())
    else {
        return Ok(format!("{iface}: no XDP program attached"));
    };
    let name = aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .find(|p| p.id() == id)
        .and_then(|p| p.name_as_str().map(str::to_owned))
        .unwrap_or_default();
    if name != XDP_PROGRAM {
        return Ok(format!(
            "{iface}: an XDP program that is not ours ({name:?}, id {id}) is attached: left alone"
        ));
    }
    if !remove_xdp(iface)? {
        return Ok(format!(
            "{iface}: our XDP program (id {id}) is held by a bpf_link: a probe-detector still runs there; stop it instead"
        ));
    }
    Ok(format!("{iface}: removed our XDP program (id {id})"))
}

/// The reason an attach failed, with the hint an operator needs for the usual causes.
fn explain_attach_error(err: &ProgramError) -> String {
    let hint = match os_error(err) {
        Some(libc::EOPNOTSUPP) => " (the driver does not support this mode; try --xdp-mode skb)",
        Some(libc::EPERM) => " (run as root, or with CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON)",
        _ => "",
    };
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(e) = source {
        let s = e.to_string();
        if !text.contains(&s) {
            text.push_str(": ");
            text.push_str(&s);
        }
        source = e.source();
    }
    format!("{text}{hint}")
}
