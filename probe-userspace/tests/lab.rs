//! Lab test: two network namespaces made here and joined by a veth pair (198.18.0.0/15
//! only, see DESIGN.md "Network safety"), real listeners in the victim, probe-detector
//! attached for real to the victim's veth, a real nmap scan from the scanner namespace.
//! Everything is deleted when the test ends, also when it fails. Needs root, nmap, curl.

mod common;

use std::{
    collections::BTreeSet,
    fs::File,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{SocketAddr, TcpListener},
    os::fd::AsRawFd as _,
    process::{Child, Command, Output, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use common::require_root;
use serde_json::Value;

const SCANNER_IP: &str = "198.18.7.1";
const VICTIM_IP: &str = "198.18.7.2";
/// Listening ports in the victim, inside the scanned range 1-100.
const OPEN_PORTS: [u16; 3] = [22, 53, 80];

/// The two namespaces and the veth pair; deleted on drop.
struct Lab {
    scanner_ns: String,
    victim_ns: String,
    victim_if: String,
}

impl Lab {
    fn new() -> Self {
        let pid = std::process::id();
        let lab = Self {
            scanner_ns: format!("pd-scan-{pid}"),
            victim_ns: format!("pd-vict-{pid}"),
            victim_if: format!("pdv{pid}"),
        };
        let scanner_if = format!("pds{pid}");
        // Created before anything can fail, so Drop always has something to clean.
        ip(&["netns", "add", &lab.scanner_ns]);
        ip(&["netns", "add", &lab.victim_ns]);
        ip(&[
            "link",
            "add",
            &scanner_if,
            "netns",
            &lab.scanner_ns,
            "type",
            "veth",
            "peer",
            "name",
            &lab.victim_if,
            "netns",
            &lab.victim_ns,
        ]);
        for (ns, dev, addr) in [
            (&lab.scanner_ns, &scanner_if, SCANNER_IP),
            (&lab.victim_ns, &lab.victim_if, VICTIM_IP),
        ] {
            ip(&["-n", ns, "addr", "add", &format!("{addr}/24"), "dev", dev]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
            ip(&["-n", ns, "link", "set", dev, "up"]);
        }
        lab
    }

    /// `ip netns exec NS program args...`
    fn exec(ns: &str, program: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns, program]).args(args);
        cmd
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Deleting a namespace deletes the veth end inside it, and with it the pair.
        for ns in [&self.scanner_ns, &self.victim_ns] {
            let _ = Command::new("ip").args(["netns", "delete", ns]).status();
        }
    }
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn require_tool(tool: &str) {
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

/// TCP listeners inside a namespace that answer every connection with a small HTTP response.
struct Listeners {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Listeners {
    fn start(ns: &str, addr: &str, ports: &[u16]) -> Self {
        let ns_file = File::open(format!("/run/netns/{ns}")).expect("namespace file");
        let addrs: Vec<SocketAddr> = ports
            .iter()
            .map(|p| format!("{addr}:{p}").parse().unwrap())
            .collect();
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = mpsc::channel();
        let stop_flag = Arc::clone(&stop);
        let thread = thread::spawn(move || {
            // SAFETY: setns on this thread only moves this thread into the namespace; the fd
            // is a valid open namespace file for the duration of the call.
            let rc = unsafe { libc::setns(ns_file.as_raw_fd(), libc::CLONE_NEWNET) };
            if rc != 0 {
                ready_tx.send(Err(std::io::Error::last_os_error())).unwrap();
                return;
            }
            let listeners: Vec<TcpListener> = match addrs.iter().map(TcpListener::bind).collect() {
                Ok(listeners) => listeners,
                Err(err) => {
                    ready_tx.send(Err(err)).unwrap();
                    return;
                }
            };
            for l in &listeners {
                l.set_nonblocking(true).unwrap();
            }
            ready_tx.send(Ok(())).unwrap();
            while !stop_flag.load(Ordering::Relaxed) {
                for l in &listeners {
                    if let Ok((mut conn, _)) = l.accept() {
                        let _ = conn.set_nonblocking(false);
                        let _ = conn.set_read_timeout(Some(Duration::from_millis(200)));
                        let mut buf = [0u8; 512];
                        let _ = conn.read(&mut buf);
                        let _ = conn.write_all(
                            b"HTTP/1.0 200 OK\r\nContent-Length: 6\r\nConnection: close\r\n\r\nhello\n",
                        );
                    }
                }
                thread::sleep(Duration::from_millis(5));
            }
        });
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("listener thread answers")
            .expect("listeners bound in the victim namespace");
        Self {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Listeners {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// probe-detector running in a namespace, with its stdout and stderr collected.
struct Detector {
    child: Option<Child>,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Detector {
    fn start(ns: &str, args: &[&str]) -> Self {
        let mut child = Lab::exec(ns, env!("CARGO_BIN_EXE_probe-detector"), args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start probe-detector");
        let collect = |pipe: Box<dyn std::io::Read + Send>, echo: bool| {
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
        };
        let stdout = collect(Box::new(child.stdout.take().unwrap()), false);
        let stderr = collect(Box::new(child.stderr.take().unwrap()), true);
        Self {
            child: Some(child),
            stdout,
            stderr,
        }
    }

    /// Waits until a stderr line contains `needle`; panics with the log on timeout.
    fn wait_for_log(&mut self, needle: &str, timeout: Duration) {
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

    /// Waits until stdout has at least `n` lines (or the timeout passes); returns them.
    fn wait_for_lines(&self, n: usize, timeout: Duration) -> Vec<String> {
        let started = Instant::now();
        loop {
            let lines = self.stdout.lock().unwrap().clone();
            if lines.len() >= n || started.elapsed() >= timeout {
                return lines;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGTERM and waits for the exit status.
    fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().unwrap();
        // `ip netns exec` execs the program, so the child's pid is probe-detector's.
        // SAFETY: kill with a pid we own and a valid signal number.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        let started = Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                // Let the reader threads take the last lines.
                thread::sleep(Duration::from_millis(100));
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

fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("run command");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn nmap_syn_scan_raises_one_alert_and_http_raises_none() {
    if !require_root("lab test") {
        return;
    }
    require_tool("nmap");
    require_tool("curl");
    let lab = Lab::new();
    let _listeners = Listeners::start(&lab.victim_ns, VICTIM_IP, &OPEN_PORTS);
    let mut detector = Detector::start(
        &lab.victim_ns,
        &[
            "--iface",
            &lab.victim_if,
            "--scan-ports",
            "10",
            "--scan-window",
            "60",
        ],
    );
    detector.wait_for_log("watching for port scans", Duration::from_secs(30));
    assert!(
        detector
            .stderr
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains(&format!("attached to {}", lab.victim_if))),
        "no attach log line"
    );

    // Benign: a real HTTP fetch of an open port, and one mistyped port.
    let fetched = run_ok(&mut Lab::exec(
        &lab.scanner_ns,
        "curl",
        &["-sS", "--max-time", "5", &format!("http://{VICTIM_IP}:80/")],
    ));
    assert_eq!(String::from_utf8_lossy(&fetched.stdout), "hello\n");
    let refused = Lab::exec(
        &lab.scanner_ns,
        "curl",
        &["-sS", "--max-time", "5", &format!("http://{VICTIM_IP}:81/")],
    )
    .output()
    .unwrap();
    assert!(!refused.status.success(), "port 81 must be closed");
    let benign = detector.wait_for_lines(1, Duration::from_secs(2));
    assert!(
        benign.is_empty(),
        "benign traffic raised alerts: {benign:#?}"
    );

    // The scan: 100 ports, 3 of them open. Bounded by the port range, retries and a timeout.
    let scan = run_ok(&mut Lab::exec(
        &lab.scanner_ns,
        "nmap",
        &[
            "-sS",
            "-n",
            "-Pn",
            "-p",
            "1-100",
            "--max-retries",
            "1",
            "--host-timeout",
            "60s",
            "-oG",
            "-",
            VICTIM_IP,
        ],
    ));
    let report = String::from_utf8_lossy(&scan.stdout);
    for port in OPEN_PORTS {
        assert!(
            report.contains(&format!("{port}/open/tcp")),
            "nmap should see {port} open: {report}"
        );
    }

    let lines = detector.wait_for_lines(1, Duration::from_secs(10));
    let status = detector.terminate();
    assert!(
        status.success(),
        "SIGTERM must stop probe-detector with status 0, got {status}"
    );
    let stderr = detector.stderr.lock().unwrap().clone();
    assert!(
        stderr
            .iter()
            .any(|l| l.contains(&format!("detached from {}", lab.victim_if))),
        "no detach on SIGTERM: {stderr:#?}"
    );
    let link =
        run_ok(Command::new("ip").args(["-n", &lab.victim_ns, "link", "show", &lab.victim_if]));
    assert!(
        !String::from_utf8_lossy(&link.stdout).contains("xdp"),
        "XDP still attached after exit: {}",
        String::from_utf8_lossy(&link.stdout)
    );

    let lines = if lines.is_empty() {
        detector.stdout.lock().unwrap().clone()
    } else {
        lines
    };
    let alerts: Vec<Value> = lines
        .iter()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {l}"))
        })
        .collect();
    assert_eq!(alerts.len(), 1, "one scan, one alert: {lines:#?}");
    let alert = &alerts[0];
    assert_eq!(alert["event_type"], "alert");
    assert_eq!(alert["src_ip"], SCANNER_IP);
    assert_eq!(alert["dest_ip"], VICTIM_IP);
    assert_eq!(alert["proto"], "TCP");
    assert_eq!(alert["in_iface"], lab.victim_if.as_str());
    assert_eq!(alert["alert"]["severity"], 2);
    let ports: Vec<u16> = alert["scan"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_u64().unwrap() as u16)
        .collect();
    let closed: BTreeSet<u16> = (1..=100).filter(|p| !OPEN_PORTS.contains(p)).collect();
    assert!(ports.len() >= 10, "at least the threshold: {ports:?}");
    assert!(
        ports.iter().all(|p| closed.contains(p)),
        "only closed, probed ports: {ports:?}"
    );
    assert!(
        ports.windows(2).all(|w| w[0] < w[1]),
        "sorted and distinct: {ports:?}"
    );
    assert!(alert["scan"]["probes"].as_u64().unwrap() >= 10);
}
