//! Network namespaces and veth pairs made by the lab, and the commands it runs in them.
//! Only 198.18.0.0/15 and 2001:db8::/32 addresses are ever assigned (docs/design.md, "Network
//! safety"); a namespace is deleted, with every process still in it, when dropped.

use std::{
    fs::File,
    os::fd::AsRawFd as _,
    process::{Command, Output, Stdio},
    sync::atomic::{AtomicUsize, Ordering},
    thread,
};

use anyhow::{Context as _, bail};

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A network namespace made by the lab.
pub struct Netns {
    /// Its name under /run/netns.
    pub name: String,
}

impl Netns {
    /// Makes `pdlab-ROLE-PID-N` with its loopback up.
    pub fn new(role: &str) -> anyhow::Result<Self> {
        let name = format!(
            "pdlab-{role}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        ip(&["netns", "add", &name])?;
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// `ip -n NS ARGS`.
    pub fn ip(&self, args: &[&str]) -> anyhow::Result<()> {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        ip(&all)
    }

    /// `ip netns exec NS PROGRAM ARGS`, not yet started.
    pub fn exec(&self, program: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]).args(args);
        cmd
    }

    /// Runs PROGRAM ARGS in the namespace; an error (with its stderr) unless it succeeds.
    pub fn run(&self, program: &str, args: &[&str]) -> anyhow::Result<Output> {
        run(&mut self.exec(program, args))
    }

    /// Sets a sysctl inside the namespace.
    pub fn sysctl(&self, setting: &str) -> anyhow::Result<()> {
        self.run("sysctl", &["-q", "-w", setting]).map(drop)
    }

    /// Adds an address; IPv6 without duplicate address detection, so it works at once.
    pub fn addr(&self, dev: &str, cidr: &str) -> anyhow::Result<()> {
        if cidr.contains(':') {
            self.ip(&["addr", "add", cidr, "dev", dev, "nodad"])
        } else {
            self.ip(&["addr", "add", cidr, "dev", dev])
        }
    }

    /// True when an XDP program is attached to `dev` (ours or not).
    pub fn xdp_attached(&self, dev: &str) -> anyhow::Result<bool> {
        let link = run(Command::new("ip").args(["-n", &self.name, "link", "show", dev]))?;
        Ok(String::from_utf8_lossy(&link.stdout).contains("xdp"))
    }

    /// The MAC address of `dev`.
    pub fn mac(&self, dev: &str) -> anyhow::Result<String> {
        let out = run(Command::new("ip").args(["-n", &self.name, "-j", "link", "show", dev]))?;
        let links: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        links[0]["address"]
            .as_str()
            .map(str::to_owned)
            .with_context(|| format!("no MAC address for {dev} in {}", self.name))
    }

    /// Packets received by `dev` so far.
    pub fn rx_packets(&self, dev: &str) -> anyhow::Result<u64> {
        let out =
            run(Command::new("ip").args(["-n", &self.name, "-s", "-j", "link", "show", dev]))?;
        let links: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        links[0]["stats64"]["rx"]["packets"]
            .as_u64()
            .with_context(|| format!("no packet counter for {dev} in {}", self.name))
    }

    /// Processes running in the namespace.
    pub fn pids(&self) -> Vec<libc::pid_t> {
        Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
            .map(|out| {
                String::from_utf8_lossy(&out.stdout)
                    .split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Processes in the namespace whose command name is `comm`.
    pub fn pids_named(&self, comm: &str) -> Vec<libc::pid_t> {
        self.pids()
            .into_iter()
            .filter(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/comm"))
                    .is_ok_and(|c| c.trim_end() == comm)
            })
            .collect()
    }

    /// Runs `work` on a thread that has joined the namespace (sockets it opens live there).
    pub fn within<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
    ) -> anyhow::Result<thread::JoinHandle<anyhow::Result<T>>> {
        let file = File::open(format!("/run/netns/{}", self.name))
            .with_context(|| format!("namespace {} is gone", self.name))?;
        Ok(thread::spawn(move || {
            // SAFETY: setns moves only this thread; the fd is an open namespace file that
            // lives until the call returns.
            if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                bail!("setns: {}", std::io::Error::last_os_error());
            }
            work()
        }))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for pid in self.pids() {
            // SAFETY: kill with a pid read from the namespace and a valid signal number.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        // Deleting the namespace deletes the veth ends in it, and with them the pairs. The
        // delete fails (the name stays) while another process's mount namespace still
        // holds a copy of the name's bind mount (an `ip netns exec` of another namespace
        // exiting just then): try again until the name is gone, and say so if it is not.
        let path = format!("/run/netns/{}", self.name);
        for _ in 0..50 {
            let _ = Command::new("ip")
                .args(["netns", "delete", &self.name])
                .stderr(Stdio::null())
                .status();
            if !std::path::Path::new(&path).exists() {
                return;
            }
            thread::sleep(std::time::Duration::from_millis(100));
        }
        eprintln!(
            "probe-netlab: cannot delete network namespace {}: `ip netns delete {}` by hand",
            self.name, self.name
        );
    }
}

/// A veth pair made directly inside two namespaces (no name ever exists in the machine's
/// own namespace), both ends up.
pub fn veth(a: &Netns, a_dev: &str, b: &Netns, b_dev: &str) -> anyhow::Result<()> {
    ip(&[
        "link", "add", a_dev, "netns", &a.name, "type", "veth", "peer", "name", b_dev, "netns",
        &b.name,
    ])?;
    a.ip(&["link", "set", a_dev, "up"])?;
    b.ip(&["link", "set", b_dev, "up"])
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    run(Command::new("ip").args(args)).map(drop)
}

/// Runs a command that daemonizes (returns once its child runs), with no pipes a daemon
/// could hold open; an error unless it succeeds.
pub fn start_daemon(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed ({status})");
    }
    Ok(())
}

/// Runs a command to completion; an error naming it, with its stderr, unless it succeeds.
pub fn run(cmd: &mut Command) -> anyhow::Result<Output> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out)
}
