//! probe-detector run in a lab namespace, its stdout (records) and stderr (log) collected
//! as they come; shared by the lab tests.

use std::{
    io::{BufRead as _, BufReader},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use probe_netlab::Netns;
use serde_json::Value;

use crate::eve;

/// The lines of `pipe`, collected on a thread as they come (echoed to our stderr when
/// `echo`).
pub fn collect_lines(
    pipe: impl std::io::Read + Send + 'static,
    echo: bool,
) -> Arc<Mutex<Vec<String>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&lines);
    thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            if echo {
                eprintln!("[probe-detector] {line}");
            }
            sink.lock().unwrap().push(line);
        }
    });
    lines
}

/// probe-detector running in a namespace, with its stdout and stderr collected.
pub struct Detector {
    pub child: Option<Child>,
    pub stdout: Arc<Mutex<Vec<String>>>,
    pub stderr: Arc<Mutex<Vec<String>>>,
}

impl Detector {
    /// Starts probe-detector and waits until it watches.
    pub fn start(ns: &Netns, args: &[&str]) -> Self {
        Self::spawn(ns.exec(env!("CARGO_BIN_EXE_probe-detector"), args))
    }

    /// Starts probe-detector through `command` (which must exec it, so that its pid is
    /// probe-detector's) and waits until it watches.
    pub fn spawn(command: Command) -> Self {
        Self::spawn_until(command, "watching for port scans")
    }

    /// Starts probe-detector through `command` and waits until it logs `ready`.
    pub fn spawn_until(mut command: Command, ready: &str) -> Self {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start probe-detector");
        let stdout = collect_lines(child.stdout.take().unwrap(), false);
        let stderr = collect_lines(child.stderr.take().unwrap(), true);
        let mut detector = Self {
            child: Some(child),
            stdout,
            stderr,
        };
        detector.wait_for_log(ready, Duration::from_secs(30));
        detector
    }

    /// Waits until a stderr line contains `needle`; panics with the log on timeout.
    pub fn wait_for_log(&mut self, needle: &str, timeout: Duration) {
        let started = Instant::now();
        while started.elapsed() < timeout {
            if self
                .stderr
                .lock()
                .unwrap()
                .iter()
                .any(|l| l.contains(needle))
            {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "probe-detector exited ({status}) before logging {needle:?}: {:#?}",
                    self.stderr.lock().unwrap()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "no {needle:?} from probe-detector in {timeout:?}: {:#?}",
            self.stderr.lock().unwrap()
        );
    }

    /// Every stdout line so far, parsed; panics on a line that is not JSON.
    pub fn records(&self) -> Vec<Value> {
        self.stdout
            .lock()
            .unwrap()
            .iter()
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {l}"))
            })
            .collect()
    }

    pub fn alerts(&self) -> Vec<Value> {
        self.records()
            .into_iter()
            .filter(|r| r["event_type"] == "alert")
            .collect()
    }

    /// Waits until an alert satisfies `matches` (or the timeout passes); returns all alerts.
    pub fn wait_for_alert(
        &self,
        timeout: Duration,
        matches: impl Fn(&Value) -> bool,
    ) -> Vec<Value> {
        let started = Instant::now();
        loop {
            let alerts = self.alerts();
            if alerts.iter().any(&matches) || started.elapsed() >= timeout {
                return alerts;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Checks every record written so far against Suricata's EVE schema, but the
    /// `--probes` records (probe-detector's own type).
    pub fn assert_eve(&self) {
        let Some(eve) = eve::Eve::load("lab") else {
            return;
        };
        let records: Vec<Value> = self
            .records()
            .into_iter()
            .filter(|r| r["event_type"] != "probe")
            .collect();
        for record in &records {
            eve.assert_valid(record);
        }
    }

    /// Sends SIGTERM, waits for the exit status, and checks that everything was detached
    /// and that every record written validates as EVE.
    pub fn stop(&mut self) -> ExitStatus {
        let mut child = self.child.take().unwrap();
        // `ip netns exec` execs the program, so the child's pid is probe-detector's.
        // SAFETY: kill with a pid we own and a valid signal number.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        let started = Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                // Let the reader threads take the last lines.
                thread::sleep(Duration::from_millis(100));
                self.assert_eve();
                return status;
            }
            if started.elapsed() > Duration::from_secs(10) {
                let _ = child.kill();
                panic!("probe-detector did not stop within 10 s of SIGTERM");
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Detector {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
