//! The four detectors the lab compares: probe-detector (its JSON alerts on stdout, stamped
//! when read) and the peers scanlogd, psad and portsentry (their syslog lines), each started
//! fresh for a scenario inside the namespace that watches it, and stopped after it.

use std::{
    fs,
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Child, Stdio},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context as _, bail};
use serde_json::Value;

use probe_netlab::{
    Netns,
    syslog::{Line, Syslog, parse_rfc3339},
};

/// The detectors, in report order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Detector {
    /// This project.
    Ours,
    /// scanlogd: raw socket, IPv4 TCP to the host itself.
    Scanlogd,
    /// psad: iptables LOG lines from syslog.
    Psad,
    /// portsentry in its advanced stealth modes (`-atcp`, `-audp`).
    Portsentry,
}

impl Detector {
    /// Every detector, in report order.
    pub const ALL: [Self; 4] = [Self::Ours, Self::Scanlogd, Self::Psad, Self::Portsentry];

    /// Its name in the report.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ours => "probe-detector",
            Self::Scanlogd => "scanlogd",
            Self::Psad => "psad",
            Self::Portsentry => "portsentry",
        }
    }

    /// Whether a syslog line is one of this peer's scan alerts.
    fn is_alert(self, line: &Line) -> bool {
        match self {
            Self::Ours => false,
            // "198.18.7.1:53982 to 198.18.7.2 ports 25, 22, ..., fSrpauxy, TOS 00"
            Self::Scanlogd => line.program == "scanlogd" && line.message.contains(" ports "),
            // "scan detected (Nmap -sT or -sS scan): 198.18.7.1 -> 198.18.7.2 tcp: [1-50] ..."
            Self::Psad => line.program == "psad" && line.message.starts_with("scan detected"),
            // "attackalert: TCP SYN/Normal scan from host: ..." (not its ERROR or
            // "already blocked" lines)
            Self::Portsentry => {
                line.program == "portsentry"
                    && line.message.starts_with("attackalert:")
                    && line.message.contains(" scan from host")
            }
        }
    }
}

/// One alert: when it appeared and what it said.
#[derive(Clone, Debug)]
pub struct Alert {
    /// When the lab saw it (read from stdout, or received by the lab's syslog).
    pub time: SystemTime,
    /// The alert's text (probe-detector: its signature).
    pub text: String,
    /// probe-detector: when the outcome that decided the scan was seen (its `start`'s
    /// `last_seen`, the kernel's clock on the wall's); `None` for the peers.
    pub decided: Option<SystemTime>,
}

/// The peers' alerts among `lines`.
pub fn peer_alerts(detector: Detector, lines: &[Line]) -> Vec<Alert> {
    lines
        .iter()
        .filter(|l| detector.is_alert(l))
        .map(|l| Alert {
            time: l.time,
            text: l.message.clone(),
            decided: None,
        })
        .collect()
}

/// probe-detector running inside a namespace.
pub struct Ours {
    child: Option<Child>,
    stdout: Arc<Mutex<Vec<(SystemTime, String)>>>,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Ours {
    /// Starts `binary ARGS` in `ns` and waits until it watches.
    pub fn start(ns: &Netns, binary: &Path, args: &[&str]) -> anyhow::Result<Self> {
        Self::start_until(ns, binary, args, "watching for port scans")
    }

    /// Starts `binary ARGS` in `ns` and waits until it logs `ready`.
    pub fn start_until(
        ns: &Netns,
        binary: &Path,
        args: &[&str],
        ready: &str,
    ) -> anyhow::Result<Self> {
        let mut child = ns
            .exec(&binary.display().to_string(), args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot start probe-detector")?;
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().context("no stdout")?;
        let sink = Arc::clone(&stdout);
        thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                lock(&sink).push((SystemTime::now(), line));
            }
        });
        let err = child.stderr.take().context("no stderr")?;
        let sink = Arc::clone(&stderr);
        thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                lock(&sink).push(line);
            }
        });
        let mut ours = Self {
            child: Some(child),
            stdout,
            stderr,
        };
        let started = Instant::now();
        while !lock(&ours.stderr).iter().any(|l| l.contains(ready)) {
            if let Some(status) = ours
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!(
                    "probe-detector exited ({status}) before it watched: {}",
                    lock(&ours.stderr).join("\n")
                );
            }
            if started.elapsed() > Duration::from_secs(30) {
                ours.kill();
                bail!("probe-detector did not log {ready:?} within 30 s");
            }
            thread::sleep(Duration::from_millis(20));
        }
        Ok(ours)
    }

    /// Its process id (`ip netns exec` execs it, so the child is probe-detector itself).
    pub fn pid(&self) -> Option<libc::pid_t> {
        self.child
            .as_ref()
            .and_then(|c| libc::pid_t::try_from(c.id()).ok())
    }

    /// The scans it has recognised so far (`alert.context.scan.phase == "start"` records).
    pub fn alerts(&self) -> Vec<Alert> {
        lock(&self.stdout)
            .iter()
            .filter_map(|(time, line)| {
                let record: Value = serde_json::from_str(line).ok()?;
                (record["event_type"] == "alert"
                    && record["alert"]["context"]["scan"]["phase"] == "start")
                    .then(|| Alert {
                        time: *time,
                        text: record["alert"]["signature"]
                            .as_str()
                            .unwrap_or_default()
                            .to_owned(),
                        decided: record["alert"]["context"]["scan"]["last_seen"]
                            .as_str()
                            .and_then(parse_rfc3339),
                    })
            })
            .collect()
    }

    /// Its stderr so far.
    pub fn log(&self) -> Vec<String> {
        lock(&self.stderr).clone()
    }

    /// SIGTERM, then waits (up to 10 s) for it to detach and exit.
    pub fn stop(&mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        if let Ok(pid) = libc::pid_t::try_from(child.id()) {
            // SAFETY: kill with the pid of our own child and a valid signal number.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let started = Instant::now();
        loop {
            if let Some(status) = child.try_wait()? {
                // Let the reader threads take the last lines.
                thread::sleep(Duration::from_millis(100));
                if !status.success() {
                    bail!("probe-detector exited with {status}");
                }
                return Ok(());
            }
            if started.elapsed() > Duration::from_secs(10) {
                let _ = child.kill();
                bail!("probe-detector did not stop within 10 s of SIGTERM");
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Ours {
    fn drop(&mut self) {
        self.kill();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The peers' process names, as /proc/PID/comm shows them.
const PEER_COMMS: [&str; 3] = ["scanlogd", "psad", "portsentry"];

/// Files the peers need: psad's configuration and directories, scanlogd's chroot.
pub struct PeerFiles {
    psad_conf: PathBuf,
    psad_run: PathBuf,
}

impl PeerFiles {
    /// Writes psad's configuration under `dir`: the stock /etc/psad/psad.conf with only
    /// what a lab needs changed (reading the lab's kernel log, a 1 s check interval instead
    /// of 5 so its time to alert is not dominated by polling, its own directories, and no
    /// e-mail, whois or DNS lookups).
    pub fn prepare(dir: &Path, kern_log: &Path) -> anyhow::Result<Self> {
        let psad_dir = dir.join("psad");
        for sub in ["log", "run", "fifo"] {
            fs::create_dir_all(psad_dir.join(sub))?;
        }
        // scanlogd chroots here after it starts.
        fs::create_dir_all("/run/scanlogd/empty").context("cannot create scanlogd's chroot")?;
        let stock = fs::read_to_string("/etc/psad/psad.conf")
            .context("cannot read /etc/psad/psad.conf (is psad installed?)")?;
        let path = |sub: &str| psad_dir.join(sub).display().to_string();
        let overrides = [
            ("HOSTNAME", "lab".to_owned()),
            ("CHECK_INTERVAL", "1".to_owned()),
            ("IPT_SYSLOG_FILE", kern_log.display().to_string()),
            ("ALERTING_METHODS", "noemail".to_owned()),
            ("ENABLE_WHOIS_LOOKUPS", "N".to_owned()),
            ("ENABLE_DNS_LOOKUPS", "N".to_owned()),
            ("ENABLE_FW_LOGGING_CHECK", "N".to_owned()),
            ("AUTO_DETECT_JOURNALCTL", "N".to_owned()),
            ("ENABLE_AUTO_IDS", "N".to_owned()),
            ("PSAD_DIR", path("log")),
            ("PSAD_RUN_DIR", path("run")),
            ("PSAD_FIFO_DIR", path("fifo")),
        ];
        let mut conf = String::new();
        for line in stock.lines() {
            let key = line.split_whitespace().next().unwrap_or_default();
            match overrides.iter().find(|(k, _)| *k == key) {
                Some((k, v)) => conf.push_str(&format!("{k:<27} {v};\n")),
                None => {
                    conf.push_str(line);
                    conf.push('\n');
                }
            }
        }
        let psad_conf = dir.join("psad.conf");
        fs::write(&psad_conf, conf)?;
        Ok(Self {
            psad_conf,
            psad_run: psad_dir.join("run"),
        })
    }

    /// Starts scanlogd, psad and portsentry (`-atcp` and `-audp`) inside `ns`, logging to
    /// `syslog`; returns once each has said it runs.
    pub fn start(&self, ns: &Netns, syslog: &Syslog) -> anyhow::Result<()> {
        let offset = syslog.offset();
        let conf = self.psad_conf.display().to_string();
        // A stopped psad's pid may linger as an unreaped zombie (its parent is whatever
        // adopts orphans here), which psad would take for a running instance.
        for entry in fs::read_dir(&self.psad_run)? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "pid") {
                fs::remove_file(&path)?;
            }
        }
        // Each daemonizes: the command returns once its child runs.
        for (program, args) in [
            ("scanlogd", vec![]),
            ("portsentry", vec!["-atcp"]),
            ("portsentry", vec!["-audp"]),
            ("psad", vec!["-c", conf.as_str()]),
        ] {
            probe_netlab::netns::start_daemon(&mut syslog.exec(ns, program, &args))
                .with_context(|| format!("cannot start {program}"))?;
        }
        let started = Instant::now();
        loop {
            let lines = syslog.lines_since(offset)?;
            let said = |program: &str, text: &str| {
                lines
                    .iter()
                    .filter(|l| l.program == program && l.message.contains(text))
                    .count()
            };
            let ready = said("psad", "starting up psad") >= 1
                && said("portsentry", "is now active and listening") >= 2
                && !ns.pids_named("scanlogd").is_empty();
            if ready {
                return Ok(());
            }
            if started.elapsed() > Duration::from_secs(30) {
                bail!("the peers did not all start within 30 s (see the lab's syslog.log)");
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops every peer process in `ns` and waits until they are gone.
    pub fn stop(ns: &Netns) {
        let pids = || -> Vec<libc::pid_t> {
            PEER_COMMS
                .iter()
                .flat_map(|comm| ns.pids_named(comm))
                .collect()
        };
        for pid in pids() {
            // SAFETY: kill with a pid found in the lab's own namespace.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let started = Instant::now();
        while !pids().is_empty() && started.elapsed() < Duration::from_secs(5) {
            thread::sleep(Duration::from_millis(50));
        }
        for pid in pids() {
            // SAFETY: as above; they ignored SIGTERM for 5 s.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}
