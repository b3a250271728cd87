//! How the scenarios drive their tools: each scanner bounded in time (`timeout`) and
//! probes, path tracers, clients from chosen addresses, and frames crafted where no tool
//! sends what a scenario needs.

use std::{
    fmt,
    net::{Ipv4Addr, Ipv6Addr, SocketAddrV4},
    os::unix::process::ExitStatusExt as _,
    time::Duration,
};

use anyhow::{Context as _, bail};
use probe_netlab::{Netns, inject, listeners::connect_from};

use crate::{
    scenarios::Lab,
    topology::{CROWD, SCANNER_IF, VICTIM, VICTIM6},
};

/// Longest any one scanner may run; every one is also bounded in probes.
const LIMIT_S: &str = "90";

/// A tool that died of a signal of its own (zmap 2.1.1 sometimes fails an assertion in
/// its target generation, SIGABRT): not the scenario's fault, and the lab runs it again.
#[derive(Debug)]
pub(crate) struct Crashed {
    /// The command line and what it said.
    pub(crate) what: String,
}

impl fmt::Display for Crashed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.what)
    }
}

impl std::error::Error for Crashed {}

/// `timeout LIMIT PROGRAM ARGS` in `ns`; `ok_codes` are exit codes that are not failures.
/// A tool killed by a signal (not `timeout`'s: that is exit code 124) is [`Crashed`].
pub(crate) fn bounded(
    ns: &Netns,
    ok_codes: &[i32],
    program: &str,
    args: &[&str],
) -> anyhow::Result<()> {
    let mut all = vec!["-k", "5", LIMIT_S, program];
    all.extend_from_slice(args);
    let out = ns
        .exec("timeout", &all)
        .output()
        .with_context(|| format!("cannot run {program}"))?;
    let code = out.status.code().unwrap_or(-1);
    let failure = || {
        format!(
            "{program} {} exited with {}: {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )
    };
    if out.status.signal().is_some() {
        return Err(Crashed { what: failure() }.into());
    }
    if code != 0 && !ok_codes.contains(&code) {
        bail!("{}", failure());
    }
    Ok(())
}

/// nmap with bounded retries and time, no DNS, no host discovery unless `args` ask.
pub(crate) fn nmap(ns: &Netns, args: &[&str]) -> anyhow::Result<()> {
    let mut all = vec![
        "-n",
        "--max-retries",
        "1",
        "--host-timeout",
        "60s",
        "-oN",
        "/dev/null",
    ];
    all.extend_from_slice(args);
    bounded(ns, &[], "nmap", &all)
}

/// nmap against the victim, without host discovery.
pub(crate) fn nmap_victim(lab: &Lab, args: &[&str]) -> anyhow::Result<()> {
    let mut all = vec!["-Pn"];
    all.extend_from_slice(args);
    nmap(&lab.host.scanner, &all)
}

/// hping3: a fixed count of packets at a fixed interval (it exits 1 when some got no
/// answer, which is what a scan of closed or silent ports expects).
pub(crate) fn hping3(ns: &Netns, args: &[&str]) -> anyhow::Result<()> {
    bounded(ns, &[1], "hping3", args)
}

/// A path tracer from `ns` (traceroute and mtr exit 1 when the last hop did not answer
/// every probe: not a failure here).
pub(crate) fn trace(ns: &Netns, program: &str, args: &[&str]) -> anyhow::Result<()> {
    bounded(ns, &[1], program, args)
}

/// curl from `ns`; `ok_codes` for the refusals a scenario expects (7: could not connect).
pub(crate) fn curl(ns: &Netns, ok_codes: &[i32], args: &[&str]) -> anyhow::Result<()> {
    let mut all = vec![
        "-s",
        "-o",
        "/dev/null",
        "--connect-timeout",
        "3",
        "--max-time",
        "10",
    ];
    all.extend_from_slice(args);
    bounded(ns, ok_codes, "curl", &all)
}

/// A link-layer address in `ip link`'s form as bytes.
pub(crate) fn mac(text: &str) -> anyhow::Result<[u8; 6]> {
    let bytes: Vec<u8> = text
        .split(':')
        .map(|b| u8::from_str_radix(b, 16))
        .collect::<Result<_, _>>()
        .with_context(|| format!("{text:?} is no link-layer address"))?;
    bytes
        .try_into()
        .map_err(|_| anyhow::anyhow!("{text:?} is no link-layer address"))
}

/// Crafted frames from the scanner to the victim, one every `gap` (what no scanner tool
/// sends: many sources, new addresses per probe, long header chains).
pub(crate) fn craft(lab: &Lab, frames: Vec<Vec<u8>>, gap: Duration) -> anyhow::Result<()> {
    for frame in frames {
        inject::inject(&lab.host.scanner, SCANNER_IF, vec![frame])?;
        std::thread::sleep(gap);
    }
    Ok(())
}

/// The scanner's and the victim's link-layer addresses, for crafted frames.
pub(crate) fn macs(lab: &Lab) -> anyhow::Result<([u8; 6], [u8; 6])> {
    Ok((mac(&lab.scanner_mac)?, mac(&lab.victim_mac)?))
}

/// The victim's IPv6 address as bytes.
pub(crate) fn victim6() -> anyhow::Result<[u8; 16]> {
    Ok(VICTIM6.parse::<Ipv6Addr>()?.octets())
}

/// The scanner's extra addresses, each a client or a scanner of its own.
pub(crate) fn crowd() -> impl Iterator<Item = Ipv4Addr> {
    CROWD.map(|last| Ipv4Addr::new(198, 18, 7, last))
}

/// Connects from `src` to the victim's `port` (any local port); a refusal is what the
/// scenario expects when `refused`.
pub(crate) fn client(lab: &Lab, src: Ipv4Addr, port: u16, refused: bool) -> anyhow::Result<()> {
    let local = SocketAddrV4::new(src, 0);
    let remote = SocketAddrV4::new(VICTIM.parse()?, port);
    match connect_from(&lab.host.scanner, local, remote) {
        Ok(()) if !refused => Ok(()),
        Err(err) if refused && format!("{err:#}").contains("refused") => Ok(()),
        Ok(()) => bail!("{local} -> {remote} was accepted; the scenario needs it closed"),
        Err(err) => Err(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tool_killed_by_a_signal_is_a_crash_and_a_failing_one_is_not() {
        if !probe_netlab::require_root(
            "a_tool_killed_by_a_signal_is_a_crash_and_a_failing_one_is_not",
        ) {
            return;
        }
        let ns = Netns::new("tools").unwrap();
        let crashed = bounded(&ns, &[], "sh", &["-c", "kill -KILL $$"]).unwrap_err();
        assert!(crashed.is::<Crashed>(), "{crashed:#}");
        let failed = bounded(&ns, &[], "sh", &["-c", "exit 3"]).unwrap_err();
        assert!(!failed.is::<Crashed>(), "{failed:#}");
        bounded(&ns, &[3], "sh", &["-c", "exit 3"]).unwrap();
    }
}
