//! Lab tests: network namespaces made here and joined by veth pairs (198.18.0.0/15 and
//! 2001:db8::/32 only, see docs/design.md "Network safety"), real listeners, probe-detector
//! attached for real, real nmap scans bounded in ports, retries and time. Everything is
//! deleted when a test ends, also when it fails. Tests run one at a time (they share two
//! cores with nmap's timing). Needs root, nmap, curl.

use std::{
    collections::BTreeSet,
    fs::File,
    io::Read as _,
    os::fd::AsRawFd as _,
    process::{Command, Output, Stdio},
    sync::{Arc, Mutex, MutexGuard, mpsc},
    thread,
    time::{Duration, Instant},
};

#[path = "../common/detector.rs"]
mod detector;
#[path = "../common/eve.rs"]
mod eve;

mod blocking;
mod detection;
mod gateway;
mod lifecycle;
mod outputs;

use detector::{Detector, collect_lines};

use probe_netlab::{Listeners, Netns, netns, require_root, require_tool, syslog::Syslog, veth};
use serde_json::Value;

/// One lab test at a time.
static LAB: Mutex<()> = Mutex::new(());

fn lab_lock() -> MutexGuard<'static, ()> {
    LAB.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Runs a command, asserting success; its output.
fn run_ok(cmd: &mut Command) -> Output {
    netns::run(cmd).unwrap_or_else(|err| panic!("{err:#}"))
}

/// TCP listeners answering with a small HTTP response at `addrs` inside `ns`.
fn tcp_listeners(ns: &Netns, addrs: &[&str]) -> Listeners {
    let addrs: Vec<std::net::SocketAddr> = addrs.iter().map(|a| a.parse().unwrap()).collect();
    Listeners::start(ns, &addrs, &[]).unwrap_or_else(|err| panic!("{err:#}"))
}

/// The prelude of a test on the host topology: the checks, the lock (one lab test at a
/// time), the lab; `None` when root tests are skipped on request.
fn host_lab(test: &str) -> Option<(MutexGuard<'static, ()>, HostLab)> {
    if !lab_ready(test) {
        return None;
    }
    let lock = lab_lock();
    Some((lock, HostLab::new()))
}

/// Checks what every lab test needs; false when root tests are skipped on request.
fn lab_ready(test: &str) -> bool {
    if !require_root(test) {
        return false;
    }
    require_tool("nmap");
    require_tool("curl");
    true
}

/// A bounded nmap run in `ns` (a port range, one retry, a host timeout); returns its
/// grepable output.
fn nmap(ns: &Netns, args: &[&str]) -> String {
    let mut all = vec![
        "-n",
        "-Pn",
        "--max-retries",
        "1",
        "--host-timeout",
        "60s",
        "-oG",
        "-",
    ];
    all.extend_from_slice(args);
    let out = run_ok(&mut ns.exec("nmap", &all));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The host topology: a scanner and a victim joined by one veth pair, IPv4 and IPv6.
struct HostLab {
    scanner: Netns,
    victim: Netns,
}

const SCANNER_IP: &str = "198.18.7.1";
const VICTIM_IP: &str = "198.18.7.2";
const SCANNER_IP6: &str = "2001:db8:7::1";
const VICTIM_IP6: &str = "2001:db8:7::2";
const VICTIM_IF: &str = "vic0";

impl HostLab {
    fn new() -> Self {
        let lab = Self {
            scanner: Netns::new("scan").unwrap(),
            victim: Netns::new("vict").unwrap(),
        };
        veth(&lab.scanner, "scan0", &lab.victim, VICTIM_IF).unwrap();
        lab.scanner
            .addr("scan0", &format!("{SCANNER_IP}/24"))
            .unwrap();
        lab.scanner
            .addr("scan0", &format!("{SCANNER_IP6}/64"))
            .unwrap();
        lab.victim
            .addr(VICTIM_IF, &format!("{VICTIM_IP}/24"))
            .unwrap();
        lab.victim
            .addr(VICTIM_IF, &format!("{VICTIM_IP6}/64"))
            .unwrap();
        // Closed UDP ports answer with ICMP port unreachable at once, not 1/s.
        lab.victim.sysctl("net.ipv4.icmp_ratelimit=0").unwrap();
        lab.victim.sysctl("net.ipv6.icmp.ratelimit=0").unwrap();
        lab
    }
}
