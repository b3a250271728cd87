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

#[path = "common/detector.rs"]
mod detector;
#[path = "common/eve.rs"]
mod eve;

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

#[test]
fn nmap_syn_scan_raises_one_alert_and_benign_traffic_none() {
    let Some((_lock, lab)) = host_lab("nmap_syn_scan_raises_one_alert_and_benign_traffic_none")
    else {
        return;
    };
    let open = [22, 53, 80];
    let _listeners = tcp_listeners(
        &lab.victim,
        &open
            .map(|p| format!("{VICTIM_IP}:{p}"))
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    let _scanner_listener = tcp_listeners(&lab.scanner, &[&format!("{SCANNER_IP}:8080")]);
    let attack_list = std::env::temp_dir().join(format!("pd-attack-{}.csv", std::process::id()));
    let _ = std::fs::remove_file(&attack_list);
    let mut detector = Detector::start(
        &lab.victim,
        &[
            "--iface",
            VICTIM_IF,
            "--scan-ports",
            "10",
            "--scan-window",
            "60",
            "--attack-list",
            attack_list.to_str().unwrap(),
            "--metrics-addr",
            "9464",
            "--status-interval",
            "1",
        ],
    );
    assert!(
        detector
            .stderr
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains(&format!("attached to {VICTIM_IF}"))),
        "no attach log line"
    );

    // Benign: a real HTTP fetch of an open port, and one mistyped port.
    let fetched = run_ok(&mut lab.scanner.exec(
        "curl",
        &["-sS", "--max-time", "5", &format!("http://{VICTIM_IP}:80/")],
    ));
    assert_eq!(String::from_utf8_lossy(&fetched.stdout), "hello\n");
    let refused = lab
        .scanner
        .exec(
            "curl",
            &["-sS", "--max-time", "5", &format!("http://{VICTIM_IP}:81/")],
        )
        .output()
        .unwrap();
    assert!(!refused.status.success(), "port 81 must be closed");
    // Benign: 200 HTTP requests to the open port, from one client (one curl, 200 URLs).
    let url = format!("http://{VICTIM_IP}:80/");
    let mut many = vec!["-sS", "--max-time", "20", "-o", "/dev/null"];
    for _ in 0..199 {
        many.extend_from_slice(&[url.as_str(), "-o", "/dev/null"]);
    }
    many.push(url.as_str());
    run_ok(&mut lab.scanner.exec("curl", &many));
    // Benign: the victim's own connections out, to an open port and to 20 closed ones (the
    // seed's false positive: our failed outbound connections are not probes of us).
    run_ok(&mut lab.victim.exec(
        "curl",
        &[
            "-sS",
            "--max-time",
            "5",
            &format!("http://{SCANNER_IP}:8080/"),
        ],
    ));
    for port in 9000..9020 {
        let failed = lab
            .victim
            .exec(
                "curl",
                &[
                    "-sS",
                    "--max-time",
                    "5",
                    &format!("http://{SCANNER_IP}:{port}/"),
                ],
            )
            .output()
            .unwrap();
        assert!(
            !failed.status.success(),
            "port {port} of the scanner must be closed"
        );
    }
    thread::sleep(Duration::from_millis(500));
    assert!(
        detector.alerts().is_empty(),
        "benign traffic raised alerts: {:#?}",
        detector.alerts()
    );

    // The scan: 100 ports, 3 of them open.
    let report = nmap(&lab.scanner, &["-sS", "-p", "1-100", VICTIM_IP]);
    for port in open {
        assert!(
            report.contains(&format!("{port}/open/tcp")),
            "nmap should see {port} open: {report}"
        );
    }
    detector.wait_for_alert(Duration::from_secs(10), |a| a["src_ip"] == SCANNER_IP);
    // The metrics endpoint (inside the victim's namespace, on 127.0.0.1) tells the same.
    let scrape = |path: &str| {
        let out = lab
            .victim
            .exec(
                "curl",
                &[
                    "-sS",
                    "--max-time",
                    "5",
                    "-w",
                    "%{http_code}",
                    &format!("http://127.0.0.1:9464{path}"),
                ],
            )
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let metrics = scrape("/metrics");
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {metrics}"))
    };
    assert_eq!(
        value("probe_detector_alerts_total{kind=\"vertical\",phase=\"start\"}"),
        1.0
    );
    assert!(
        value("probe_detector_kernel_syns_total") >= 100.0,
        "{metrics}"
    );
    assert!(
        value("probe_detector_kernel_failed_total") >= 97.0,
        "{metrics}"
    );
    assert_eq!(value("probe_detector_kernel_ringbuf_drops_total"), 0.0);
    assert!(value("probe_detector_engine_entries{table=\"sources\"}") >= 1.0);
    assert!(metrics.ends_with("200"), "{metrics}");
    assert!(scrape("/").ends_with("404"));
    let status = detector.stop();
    assert!(
        status.success(),
        "SIGTERM must stop probe-detector with status 0, got {status}"
    );
    let stderr = detector.stderr.lock().unwrap().clone();
    assert!(
        stderr
            .iter()
            .any(|l| l.contains(&format!("detached from {VICTIM_IF}"))),
        "no detach on SIGTERM: {stderr:#?}"
    );
    assert!(
        stderr
            .iter()
            .any(|l| l.contains("status: ") && l.contains("packets in")),
        "no --status-interval line: {stderr:#?}"
    );
    assert!(
        !lab.victim.xdp_attached(VICTIM_IF).unwrap(),
        "XDP still attached after exit"
    );

    let alerts = detector.alerts();
    let starts: Vec<&Value> = alerts
        .iter()
        .filter(|a| a["alert"]["context"]["scan"]["phase"] == "start")
        .collect();
    assert_eq!(starts.len(), 1, "one scan, one start: {alerts:#?}");
    let alert = starts[0];
    // At SIGTERM the open scan is summed up: every closed port probed.
    let end = alerts
        .iter()
        .find(|a| a["alert"]["context"]["scan"]["phase"] == "end")
        .unwrap_or_else(|| panic!("no end summary: {alerts:#?}"));
    assert_eq!(
        end["alert"]["context"]["scan"]["ports"]
            .as_array()
            .map(Vec::len),
        Some(97),
        "{end}"
    );
    assert_eq!(alert["src_ip"], SCANNER_IP);
    assert_eq!(alert["dest_ip"], VICTIM_IP);
    assert_eq!(alert["proto"], "TCP");
    assert_eq!(alert["in_iface"], VICTIM_IF);
    assert_eq!(
        (
            alert["alert"]["severity"].as_u64(),
            alert["alert"]["context"]["scan"]["technique"].as_str()
        ),
        (Some(2), Some("SYN"))
    );
    let ports: Vec<u16> = alert["alert"]["context"]["scan"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_u64().unwrap() as u16)
        .collect();
    let closed: BTreeSet<u16> = (1..=100).filter(|p| !open.contains(p)).collect();
    assert!(ports.len() >= 4, "at least TRW's four failures: {ports:?}");
    assert_eq!(
        alert["alert"]["context"]["scan"]["detector"], "trw",
        "the sequential test is first"
    );
    assert!(
        ports.iter().all(|p| closed.contains(p)),
        "only closed, probed ports: {ports:?}"
    );
    assert!(
        ports.windows(2).all(|w| w[0] < w[1]),
        "sorted and distinct: {ports:?}"
    );

    // The attack list: every closed port the scanner probed, one row each (port 81 too,
    // refused earlier and written when the scan confirmed its source), named services.
    let csv = std::fs::read_to_string(&attack_list).expect("attack list written");
    let _ = std::fs::remove_file(&attack_list);
    let mut lines = csv.lines();
    assert_eq!(
        lines.next(),
        Some("time,source,destination,port,protocol,outcome,service,count")
    );
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert!(
        rows.iter()
            .all(|r| r[1] == SCANNER_IP && r[2] == VICTIM_IP && r[4] == "TCP" && r[5] == "refused"),
        "{csv}"
    );
    assert!(
        rows.iter()
            .all(|r| r[7].parse::<u64>().is_ok_and(|c| c >= 1)),
        "{csv}"
    );
    let listed: BTreeSet<u16> = rows.iter().map(|r| r[3].parse().unwrap()).collect();
    assert_eq!(
        listed, closed,
        "the attack list holds exactly the closed probed ports"
    );
    assert_eq!(rows.len(), closed.len(), "one row per port");
    assert!(rows.iter().any(|r| r[3] == "21" && r[6] == "FTP"), "{csv}");
}

#[test]
fn every_nmap_technique_is_seen_and_alerted() {
    let Some((_lock, lab)) = host_lab("every_nmap_technique_is_seen_and_alerted") else {
        return;
    };
    let _listeners = tcp_listeners(
        &lab.victim,
        &[&format!("{VICTIM_IP}:22"), &format!("[{VICTIM_IP6}]:22")],
    );
    // (nmap arguments, target, probe type and outcome the kernel must report, technique).
    let cases: [(&[&str], &str, &str, &str, &str); 12] = [
        (&["-sS"], VICTIM_IP, "tcp_syn", "refused", "SYN"),
        // Tiny fragments: the first carries the ports, not the flags; the kernel
        // reassembles and refuses the SYN. (nmap fragments IPv4 only; the IPv6 first
        // fragment is a kernel test.)
        (
            &["-sS", "-f"],
            VICTIM_IP,
            "tcp_fragment",
            "refused",
            "fragmented",
        ),
        (&["-sT"], VICTIM_IP, "tcp_syn", "refused", "SYN"),
        (&["-sF"], VICTIM_IP, "tcp_stealth", "refused", "FIN"),
        (&["-sN"], VICTIM_IP, "tcp_stealth", "refused", "NULL"),
        (&["-sX"], VICTIM_IP, "tcp_stealth", "refused", "Xmas"),
        (&["-sA"], VICTIM_IP, "tcp_ack", "refused", "ACK"),
        (&["-sU"], VICTIM_IP, "udp", "refused", "UDP"),
        (&["-6", "-sS"], VICTIM_IP6, "tcp_syn", "refused", "SYN"),
        // IP protocols 1-30 (the "ports" are protocol numbers): ICMP protocol unreachable.
        (&["-sO"], VICTIM_IP, "ip_protocol", "refused", "protocol"),
        (
            &["-6", "-sO"],
            VICTIM_IP6,
            "ip_protocol",
            "refused",
            "protocol",
        ),
        // SCTP INIT: this kernel has no SCTP and answers protocol unreachable.
        (&["-sY"], VICTIM_IP, "sctp", "refused", "SCTP"),
    ];
    for (args, target, probe_type, outcome, technique) in cases {
        let mut detector = Detector::start(
            &lab.victim,
            &[
                "--iface",
                VICTIM_IF,
                "--scan-ports",
                "8",
                "--probes",
                "--pending-timeout",
                "1",
            ],
        );
        let mut nmap_args = args.to_vec();
        nmap_args.extend_from_slice(&["-T4", "-p", "1-30", target]);
        nmap(&lab.scanner, &nmap_args);
        let alerts = detector.wait_for_alert(Duration::from_secs(10), |a| {
            a["alert"]["context"]["scan"]["technique"] == technique
        });
        let status = detector.stop();
        assert!(
            status.success(),
            "nmap {args:?}: probe-detector exit {status}"
        );
        let records = detector.records();
        let probes: Vec<&Value> = records
            .iter()
            .filter(|r| r["event_type"] == "probe")
            .collect();
        assert!(
            probes.iter().any(|p| p["probe"]["type"] == probe_type
                && p["probe"]["outcome"] == outcome
                && p["dest_ip"] == target),
            "nmap {args:?}: no {probe_type} {outcome} probe of {target} among {} probe records: {:#?}",
            probes.len(),
            probes.iter().take(5).collect::<Vec<_>>()
        );
        let scanner = if target.contains(':') {
            SCANNER_IP6
        } else {
            SCANNER_IP
        };
        let alert = alerts
            .iter()
            .find(|a| a["alert"]["context"]["scan"]["technique"] == technique)
            .unwrap_or_else(|| panic!("nmap {args:?}: no {technique} alert: {alerts:#?}"));
        assert_eq!(
            (alert["src_ip"].as_str(), alert["dest_ip"].as_str()),
            (Some(scanner), Some(target)),
            "nmap {args:?}"
        );
        // The first alert comes after at most five failed probes; a protocol scan's at
        // most at the threshold (8 here): its ICMP and TCP probes are answered (a ping
        // echoed), and a success met early delays the sequential test, as it should.
        let most = if technique == "protocol" { 8 } else { 5 };
        assert_eq!(
            alert["alert"]["context"]["scan"]["phase"], "start",
            "nmap {args:?}"
        );
        let failed = alert["alert"]["context"]["scan"]["failed"]
            .as_u64()
            .unwrap();
        eprintln!(
            "nmap {args:?}: first alert ({}) after {failed} failed of {} probes",
            alert["alert"]["context"]["scan"]["detector"],
            alert["alert"]["context"]["scan"]["probes"]
        );
        assert!(
            failed <= most,
            "nmap {args:?}: first alert after {failed} failed probes: {alert}"
        );
        let stealth = matches!(technique, "FIN" | "NULL" | "Xmas" | "ACK" | "fragmented");
        assert_eq!(
            alert["alert"]["severity"],
            if stealth { 1 } else { 2 },
            "nmap {args:?}"
        );
    }
}

/// scanner (198.18.8.1) --- wan0 [router] lan0 (198.18.9.254) --- host (198.18.9.1), the
/// router forwarding, the scanner routing `lans` through it: (scanner, router, host).
fn router_lab(lans: &[&str]) -> (Netns, Netns, Netns) {
    let scanner = Netns::new("scan").unwrap();
    let router = Netns::new("rtr").unwrap();
    let host = Netns::new("host").unwrap();
    veth(&scanner, "scan0", &router, "wan0").unwrap();
    veth(&router, "lan0", &host, "eth0").unwrap();
    scanner.addr("scan0", "198.18.8.1/24").unwrap();
    router.addr("wan0", "198.18.8.254/24").unwrap();
    router.addr("lan0", "198.18.9.254/24").unwrap();
    host.addr("eth0", "198.18.9.1/24").unwrap();
    for net in lans {
        scanner
            .ip(&["route", "add", net, "via", "198.18.8.254"])
            .unwrap();
    }
    host.ip(&["route", "add", "default", "via", "198.18.9.254"])
        .unwrap();
    router.sysctl("net.ipv4.ip_forward=1").unwrap();
    (scanner, router, host)
}

#[test]
fn a_gateway_sees_sweeps_of_the_lan_behind_it() {
    if !lab_ready("a_gateway_sees_sweeps_of_the_lan_behind_it") {
        return;
    }
    let _lab = lab_lock();
    // 198.18.9.2..14 exist in nobody: the router's ARP fails and it answers with ICMP host
    // unreachable, or nothing.
    let (scanner, router, host) = router_lab(&["198.18.9.0/24"]);
    router.sysctl("net.ipv4.icmp_ratelimit=0").unwrap();
    let _listeners = tcp_listeners(&host, &["198.18.9.1:80"]);

    let mut detector = Detector::start(
        &router,
        &[
            "--iface",
            "wan0",
            "--home-net",
            "198.18.9.0/24",
            "--sweep-hosts",
            "6",
            "--probes",
            "--pending-timeout",
            "1",
        ],
    );
    // A ping sweep (echo, SYN to 443, ACK to 80, timestamp), then a SYN sweep of port 80.
    for args in [&["-sn"][..], &["-sn", "-PS80"][..]] {
        let mut all = vec!["-n", "--max-retries", "0", "--host-timeout", "30s"];
        all.extend_from_slice(args);
        all.push("198.18.9.0/28");
        run_ok(&mut scanner.exec("nmap", &all));
    }
    let alerts = detector.wait_for_alert(Duration::from_secs(10), |a| {
        a["alert"]["context"]["scan"]["kind"] == "horizontal"
    });
    let status = detector.stop();
    assert!(status.success(), "probe-detector exit {status}");
    let sweep = alerts
        .iter()
        .find(|a| a["alert"]["context"]["scan"]["kind"] == "horizontal")
        .unwrap_or_else(|| {
            panic!(
                "no sweep alert: {alerts:#?}\nrecords: {:#?}",
                detector.records()
            )
        });
    eprintln!("sweep alert: {sweep}");
    assert_eq!(sweep["src_ip"], "198.18.8.1");
    assert_eq!(sweep["in_iface"], "wan0");
    let hosts: Vec<&str> = sweep["alert"]["context"]["dest_ips"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h.as_str().unwrap())
        .collect();
    assert!(
        hosts.len() >= 4 && hosts.iter().all(|h| h.starts_with("198.18.9.")),
        "{hosts:?}"
    );
    // The facts behind it: the live host's answers left through the router's WAN side.
    let records = detector.records();
    let seen = |probe_type: &str, outcome: &str, dst: &str| {
        records.iter().any(|r| {
            r["event_type"] == "probe"
                && r["probe"]["type"] == probe_type
                && r["probe"]["outcome"] == outcome
                && r["dest_ip"] == dst
        })
    };
    assert!(
        seen("icmp_echo", "accepted", "198.18.9.1"),
        "the live host's echo reply was not seen"
    );
    assert!(
        records.iter().any(|r| r["event_type"] == "probe"
            && r["dest_ip"] != "198.18.9.1"
            && r["probe"]["outcome"] != "accepted"),
        "no failed probe of an absent host"
    );
}

#[test]
fn a_gateway_with_no_flags_derives_its_home_nets_and_follows_new_routes() {
    if !lab_ready("a_gateway_with_no_flags_derives_its_home_nets_and_follows_new_routes") {
        return;
    }
    let _lab = lab_lock();
    let (scanner, router, host) =
        router_lab(&["198.18.9.0/24", "198.18.10.0/24", "198.18.11.0/24"]);

    // The one flag a new user gives: the outside interface.
    let mut detector = Detector::start(&router, &["--iface", "wan0"]);
    detector.wait_for_log("home nets: ", Duration::from_secs(10));
    let log = detector.stderr.lock().unwrap().join("\n");
    let home = log
        .lines()
        .find(|l| l.contains("home nets: "))
        .unwrap()
        .to_owned();
    assert!(
        home.contains("198.18.9.0/24") && home.contains("198.18.8.254/32"),
        "the LAN behind the router and its own addresses: {home}"
    );
    assert!(
        !home.contains("198.18.8.0/24"),
        "never the watched side: {home}"
    );
    assert!(
        log.contains("this host forwards (net.ipv4.ip_forward=1)")
            && log.contains("198.18.9.0/24 via lan0"),
        "the log says why: {log}"
    );
    let scan = |target: &str| {
        run_ok(&mut scanner.exec(
            "nmap",
            &[
                "-n",
                "-Pn",
                "-sS",
                "-T4",
                "--max-retries",
                "0",
                "-p",
                "1-100",
                target,
            ],
        ));
    };
    let vertical_of = |target: &'static str| {
        move |a: &Value| {
            a["alert"]["context"]["scan"]["kind"] == "vertical" && a["dest_ip"] == target
        }
    };
    scan("198.18.9.1");
    let alerts = detector.wait_for_alert(Duration::from_secs(10), vertical_of("198.18.9.1"));
    assert!(
        alerts.iter().any(vertical_of("198.18.9.1")),
        "no alert on the LAN host: {alerts:#?}"
    );

    // A prefix routed by a policy table (not the main one, which the home nets come from):
    // not counted, but the log says what is going on and what fixes it, once.
    host.addr("eth0", "198.18.11.1/24").unwrap();
    router
        .ip(&[
            "route",
            "add",
            "198.18.11.0/24",
            "via",
            "198.18.9.1",
            "table",
            "100",
        ])
        .unwrap();
    router
        .ip(&["rule", "add", "to", "198.18.11.0/24", "table", "100"])
        .unwrap();
    scan("198.18.11.1");
    detector.wait_for_log("outside the home nets", Duration::from_secs(10));
    let log = detector.stderr.lock().unwrap().join("\n");
    assert!(log.contains("--home-net PREFIX"), "{log}");

    // A new LAN prefix, routed while running: its probes count as soon as the route is in.
    host.addr("eth0", "198.18.10.1/24").unwrap();
    router
        .ip(&[
            "route",
            "add",
            "198.18.10.0/24",
            "via",
            "198.18.9.1",
            "dev",
            "lan0",
        ])
        .unwrap();
    detector.wait_for_log("198.18.10.0/24", Duration::from_secs(10));
    scan("198.18.10.1");
    let alerts = detector.wait_for_alert(Duration::from_secs(10), vertical_of("198.18.10.1"));
    let status = detector.stop();
    assert!(status.success(), "probe-detector exit {status}");
    assert!(
        !alerts.iter().any(|a| a["dest_ip"] == "198.18.11.1"),
        "outside the home nets: {alerts:#?}"
    );
    let log = detector.stderr.lock().unwrap().join("\n");
    assert_eq!(
        log.matches("outside the home nets").count(),
        1,
        "once: {log}"
    );
    assert!(
        alerts.iter().any(vertical_of("198.18.10.1")),
        "no alert on the newly routed prefix: {alerts:#?}\n{}",
        detector.stderr.lock().unwrap().join("\n")
    );
}

#[test]
fn allow_file_rules_apply_and_reload_on_sighup() {
    let Some((_lock, lab)) = host_lab("allow_file_rules_apply_and_reload_on_sighup") else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("pd-allow-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("allow.conf");
    let file_arg = file.to_str().unwrap();

    // A typo is one clear line and exit status 2, before anything is loaded.
    std::fs::write(&file, "source 198.18.7.0/24\nservice 198.18.7.2:http\n").unwrap();
    let bad = lab
        .victim
        .exec(
            env!("CARGO_BIN_EXE_probe-detector"),
            &["--iface", VICTIM_IF, "--allow-file", file_arg],
        )
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(bad.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains(&format!("{file_arg}:2:")), "{stderr}");

    // The scanner is allow-listed: its scan raises nothing.
    std::fs::write(&file, "# our own scanner\nsource 198.18.7.1/32\n").unwrap();
    let mut detector = Detector::start(
        &lab.victim,
        &[
            "--iface",
            VICTIM_IF,
            "--scan-ports",
            "8",
            "--allow-file",
            file_arg,
        ],
    );
    nmap(&lab.scanner, &["-sS", "-p", "1-30", VICTIM_IP]);
    thread::sleep(Duration::from_millis(300));
    assert!(
        detector.alerts().is_empty(),
        "allow-listed scanner alerted: {:#?}",
        detector.alerts()
    );

    // The rule goes; SIGHUP; the next scan (another technique: a new episode) alerts.
    std::fs::write(&file, "# nothing allowed\n").unwrap();
    let pid = detector.child.as_ref().unwrap().id() as libc::pid_t;
    // SAFETY: kill with a pid we own and a valid signal number.
    unsafe { libc::kill(pid, libc::SIGHUP) };
    detector.wait_for_log("allow-lists reloaded", Duration::from_secs(5));
    nmap(&lab.scanner, &["-sF", "-p", "1-30", VICTIM_IP]);
    let alerts = detector.wait_for_alert(Duration::from_secs(10), |a| a["src_ip"] == SCANNER_IP);
    assert!(
        alerts.iter().any(|a| a["src_ip"] == SCANNER_IP),
        "no alert after the reload: {alerts:#?}"
    );
    assert!(detector.stop().success());
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs a paced nmap SYN scan of 30 ports (`timing`: -T2, -T1) in the background, bounded
/// by `limit`, until probe-detector alerts; returns the first alert and the seconds it
/// took.
fn slow_scan(test: &str, timing: &str, limit: Duration) -> Option<(Value, f64)> {
    if !lab_ready(test) {
        return None;
    }
    let _lab = lab_lock();
    let lab = HostLab::new();
    let detector = Detector::start(&lab.victim, &["--iface", VICTIM_IF]);
    let started = Instant::now();
    let limit_s = limit.as_secs().to_string();
    let mut nmap = lab
        .scanner
        .exec(
            "timeout",
            &[
                &limit_s,
                "nmap",
                "-sS",
                timing,
                "-n",
                "-Pn",
                "--max-retries",
                "0",
                "-p",
                "1-30",
                VICTIM_IP,
            ],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start nmap");
    let alerts = detector.wait_for_alert(limit, |a| a["src_ip"] == SCANNER_IP);
    let _ = nmap.kill();
    let _ = nmap.wait();
    let alert = alerts
        .iter()
        .find(|a| a["src_ip"] == SCANNER_IP)
        .unwrap_or_else(|| panic!("the {timing} scan was not detected in {limit:?}"))
        .clone();
    let elapsed = started.elapsed().as_secs_f64();
    eprintln!(
        "nmap {timing}: first alert ({}) after {} failed probes, {elapsed:.1} s into the scan",
        alert["alert"]["context"]["scan"]["detector"], alert["alert"]["context"]["scan"]["failed"]
    );
    Some((alert, elapsed))
}

#[test]
fn a_slow_scan_is_detected() {
    // nmap -T2 waits 0.4 s between probes: 30 ports take 12 s or more.
    if let Some((alert, _)) = slow_scan("a_slow_scan_is_detected", "-T2", Duration::from_secs(30)) {
        let failed = alert["alert"]["context"]["scan"]["failed"]
            .as_u64()
            .unwrap();
        assert!(failed <= 5, "{alert}");
    }
}

/// nmap -T1 waits 15 s between probes: about a minute to the first alert, so this runs in
/// `cargo xtask lab`, not in `cargo xtask test`.
#[test]
#[ignore = "takes a minute or more: run by cargo xtask lab"]
fn a_sneaky_t1_scan_is_detected() {
    if let Some((alert, elapsed)) = slow_scan(
        "a_sneaky_t1_scan_is_detected",
        "-T1",
        Duration::from_secs(180),
    ) {
        let failed = alert["alert"]["context"]["scan"]["failed"]
            .as_u64()
            .unwrap();
        assert!(failed <= 5, "{alert}");
        assert!(elapsed < 120.0, "{elapsed} s");
    }
}

#[test]
fn an_nmap_decoy_scan_is_one_distributed_incident() {
    let Some((_lock, lab)) = host_lab("an_nmap_decoy_scan_is_one_distributed_incident") else {
        return;
    };
    // The decoys exist only in the scanner's namespace (extra addresses on its veth), so
    // the victim's answers to them are delivered and answered like a real host's would be.
    let decoys = ["198.18.7.101", "198.18.7.102"];
    for decoy in decoys {
        lab.scanner.addr("scan0", &format!("{decoy}/24")).unwrap();
    }
    let _listeners = tcp_listeners(&lab.victim, &[&format!("{VICTIM_IP}:22")]);
    let mut detector = Detector::start(&lab.victim, &["--iface", VICTIM_IF]);
    let decoy_arg = format!("{},{},ME", decoys[0], decoys[1]);
    let report = nmap(
        &lab.scanner,
        &["-sS", "-T4", "-D", &decoy_arg, "-p", "1-30", VICTIM_IP],
    );
    assert!(report.contains("22/open/tcp"), "{report}");
    detector.wait_for_alert(Duration::from_secs(10), |a| {
        a["alert"]["context"]["scan"]["kind"] == "distributed"
    });
    assert!(detector.stop().success());
    let alerts = detector.alerts();
    let starts: Vec<&Value> = alerts
        .iter()
        .filter(|a| a["alert"]["context"]["scan"]["phase"] == "start")
        .collect();
    assert_eq!(starts.len(), 1, "one scan, one incident: {alerts:#?}");
    let start = starts[0];
    assert_eq!(
        start["alert"]["context"]["scan"]["kind"], "distributed",
        "{start}"
    );
    assert_eq!(start["alert"]["context"]["scan"]["detector"], "crowd");
    assert_eq!(start["dest_ip"], VICTIM_IP);
    assert_eq!(start["alert"]["signature_id"], 1_900_003);
    let mut expected = vec![decoys[0], decoys[1], SCANNER_IP];
    expected.sort();
    assert_eq!(
        start["alert"]["context"]["src_ips"],
        serde_json::json!(expected),
        "{start}"
    );
    assert_eq!(start["alert"]["context"]["scan"]["sources"], 3);
    assert_eq!(start["alert"]["context"]["spoof"]["suspected"], true);
    assert_eq!(
        start["alert"]["context"]["spoof"]["reasons"],
        serde_json::json!(["decoys"])
    );
    // Its summary at exit covers every closed port, from every source.
    let end = alerts
        .iter()
        .find(|a| a["alert"]["context"]["scan"]["phase"] == "end")
        .unwrap_or_else(|| panic!("no end summary: {alerts:#?}"));
    assert_eq!(end["alert"]["context"]["scan"]["kind"], "distributed");
    assert_eq!(
        end["alert"]["context"]["scan"]["ports"]
            .as_array()
            .map(Vec::len),
        Some(29),
        "{end}"
    );
    assert_eq!(
        end["alert"]["context"]["src_ips"],
        serde_json::json!(expected)
    );
    eprintln!(
        "nmap -D (2 decoys): one distributed incident after {} failed probes from {} sources",
        start["alert"]["context"]["scan"]["failed"], start["alert"]["context"]["scan"]["sources"]
    );
}

#[test]
fn a_metrics_port_in_use_is_one_line_exit_5_and_nothing_attached() {
    let Some((_lock, lab)) =
        host_lab("a_metrics_port_in_use_is_one_line_exit_5_and_nothing_attached")
    else {
        return;
    };
    let _taken = tcp_listeners(&lab.victim, &["127.0.0.1:9464"]);
    let out = lab
        .victim
        .exec(
            env!("CARGO_BIN_EXE_probe-detector"),
            &["--iface", VICTIM_IF, "--metrics-addr", "9464"],
        )
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with(
            "probe-detector: error: cannot serve metrics on 127.0.0.1:9464 (--metrics-addr): Address in use"
        ) || stderr.starts_with(
            "probe-detector: error: cannot serve metrics on 127.0.0.1:9464 (--metrics-addr): Address already in use"
        ),
        "{stderr}"
    );
    assert!(
        !lab.victim.xdp_attached(VICTIM_IF).unwrap(),
        "nothing may be attached"
    );
}

#[test]
fn the_service_units_settings_suffice_without_root_with_block() {
    if !lab_ready("the_service_units_settings_suffice_without_root_with_block") {
        return;
    }
    let _lab = lab_lock();
    // The capabilities packaging/probe-detector.service grants, read from the unit itself.
    let unit = include_str!("../../packaging/probe-detector.service");
    let caps: Vec<String> = unit
        .lines()
        .find_map(|l| l.strip_prefix("AmbientCapabilities="))
        .expect("the unit grants ambient capabilities")
        .split_whitespace()
        .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase()))
        .collect();
    assert_eq!(caps.len(), 3, "{caps:?}");
    let caps = format!("-all,{}", caps.join(","));
    let setting = |key: &str| {
        unit.lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap_or_else(|| panic!("the unit sets {key}"))
            .trim()
            .to_owned()
    };
    let lab = HostLab::new();
    // The unit's RuntimeDirectory, as systemd makes it: owned by the service's user, with
    // the unit's mode; the control socket of --block goes there.
    let runtime = std::env::temp_dir()
        .join(format!("pd-unit-{}", std::process::id()))
        .join(setting("RuntimeDirectory="));
    std::fs::create_dir_all(&runtime).unwrap();
    run_ok(Command::new("chown").arg("nobody:nogroup").arg(&runtime));
    run_ok(
        Command::new("chmod")
            .arg(setting("RuntimeDirectoryMode="))
            .arg(&runtime),
    );
    let socket = runtime.join("control.sock");
    // As nobody, with exactly those capabilities (inherited, ambient and bounding), the
    // unit's umask, and --block.
    let script = format!(
        "umask {} && exec setpriv --reuid nobody --regid nogroup --clear-groups --inh-caps={caps} --ambient-caps={caps} --bounding-set={caps} \"$0\" \"$@\"",
        setting("UMask=")
    );
    let child = lab
        .victim
        .exec(
            "sh",
            &[
                "-c",
                &script,
                env!("CARGO_BIN_EXE_probe-detector"),
                "--iface",
                VICTIM_IF,
                "--block",
                "--control-socket",
                socket.to_str().unwrap(),
            ],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    thread::sleep(Duration::from_secs(2));
    nmap(&lab.scanner, &["-sS", "-p", "1-30", VICTIM_IP]);
    thread::sleep(Duration::from_millis(500));
    // The control socket answers, and the scanner is on the block list.
    let listed = run_ok(
        Command::new(env!("CARGO_BIN_EXE_probe-detector"))
            .args(["block", "list", "--control-socket"])
            .arg(&socket),
    );
    let listed = String::from_utf8_lossy(&listed.stdout).into_owned();
    // sh execs setpriv, which execs probe-detector: the child's pid is probe-detector's.
    // SAFETY: kill with the pid of our own child and a valid signal number.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let _ = std::fs::remove_dir_all(runtime.parent().unwrap());
    assert!(out.status.success(), "exit {}: {stderr}", out.status);
    assert!(
        stderr.contains(&format!("detached from {VICTIM_IF}")),
        "{stderr}"
    );
    assert!(
        listed.contains(SCANNER_IP),
        "block list: {listed}\n{stderr}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout
            .lines()
            .any(|l| l.contains("\"phase\":\"start\"") && l.contains(SCANNER_IP)),
        "no alert as nobody with {caps}: {stdout}\n{stderr}"
    );
}

#[test]
fn block_drops_a_confirmed_scanner_until_its_ttl_and_never_a_spoofed_or_allowed_one() {
    if !lab_ready(
        "block_drops_a_confirmed_scanner_until_its_ttl_and_never_a_spoofed_or_allowed_one",
    ) {
        return;
    }
    let _lab = lab_lock();
    let lab = HostLab::new();
    let _listeners = tcp_listeners(&lab.victim, &[&format!("{VICTIM_IP}:22")]);
    let scan = |extra: &[&str]| {
        let mut args = vec!["-sS", "-T4", "-p", "1-30"];
        args.extend_from_slice(extra);
        args.push(VICTIM_IP);
        nmap(&lab.scanner, &args)
    };

    // A plain scanner: blocked at its alert; its next scan finds every port filtered, and
    // once the block's 4 s are up, closed ports again.
    let mut detector = Detector::start(
        &lab.victim,
        &[
            "--iface",
            VICTIM_IF,
            "--block",
            "--block-ttl",
            "4",
            "--metrics-addr",
            "9465",
        ],
    );
    let first = scan(&[]);
    assert!(first.contains("22/open/tcp"), "{first}");
    let alerts = detector.wait_for_alert(Duration::from_secs(10), |a| {
        a["alert"]["context"]["scan"]["phase"] == "start"
    });
    let blocked_at = Instant::now();
    let start = alerts
        .iter()
        .find(|a| a["alert"]["context"]["scan"]["phase"] == "start")
        .expect("an alert");
    assert_eq!(start["alert"]["action"], "blocked", "{start}");
    let during = scan(&[]);
    assert!(
        !during.contains("closed") && !during.contains("/open/") && during.contains("filtered"),
        "a blocked scanner must see only filtered ports: {during}"
    );
    // Counted: one block in force, every dropped frame.
    let metrics = run_ok(&mut lab.victim.exec(
        "curl",
        &["-sS", "--max-time", "5", "http://127.0.0.1:9465/metrics"],
    ));
    let metrics = String::from_utf8_lossy(&metrics.stdout).into_owned();
    assert!(
        metrics.contains("probe_detector_blocks_active{kind=\"automatic\"} 1\n"),
        "{metrics}"
    );
    let dropped: u64 = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix("probe_detector_kernel_blocked_total ")?
                .parse()
                .ok()
        })
        .unwrap_or(0);
    assert!(dropped >= 30, "{dropped} frames dropped: {metrics}");
    while blocked_at.elapsed() < Duration::from_secs(5) {
        thread::sleep(Duration::from_millis(100));
    }
    let after = scan(&[]);
    assert!(
        after.contains("22/open/tcp"),
        "the block must expire: {after}"
    );
    assert!(detector.stop().success());
    let log = detector.stderr.lock().unwrap().join("\n");
    assert!(
        log.contains(&format!("blocked {SCANNER_IP} for 4 s")),
        "{log}"
    );
    assert!(log.contains("blocked="), "{log}");

    // A decoy scan: its sources may be forged, so nobody is blocked.
    for decoy in ["198.18.7.101", "198.18.7.102"] {
        lab.scanner.addr("scan0", &format!("{decoy}/24")).unwrap();
    }
    let mut detector = Detector::start(&lab.victim, &["--iface", VICTIM_IF, "--block"]);
    scan(&["-D", "198.18.7.101,198.18.7.102,ME"]);
    let alerts = detector.wait_for_alert(Duration::from_secs(10), |a| {
        a["alert"]["context"]["scan"]["kind"] == "distributed"
    });
    let start = alerts
        .iter()
        .find(|a| a["alert"]["context"]["scan"]["phase"] == "start")
        .expect("an alert");
    assert_eq!(start["alert"]["action"], "allowed", "{start}");
    let again = scan(&[]);
    assert!(
        again.contains("22/open/tcp"),
        "decoy scans block nobody: {again}"
    );
    assert!(detector.stop().success());
    let log = detector.stderr.lock().unwrap().join("\n");
    assert!(
        log.contains(&format!("not blocking {SCANNER_IP}: likely spoofed")),
        "{log}"
    );

    // An allow-listed scanner is never blocked.
    let mut detector = Detector::start(
        &lab.victim,
        &[
            "--iface",
            VICTIM_IF,
            "--block",
            "--allow-source",
            SCANNER_IP,
        ],
    );
    scan(&[]);
    let again = scan(&[]);
    assert!(
        again.contains("22/open/tcp") && !again.contains("filtered"),
        "an allow-listed scanner is never blocked: {again}"
    );
    assert!(detector.stop().success());
    assert!(detector.alerts().iter().all(|a| a["src_ip"] != SCANNER_IP));
}

#[test]
fn the_block_command_lists_adds_and_removes_blocks_of_the_running_instance() {
    if !lab_ready("the_block_command_lists_adds_and_removes_blocks_of_the_running_instance") {
        return;
    }
    let _lab = lab_lock();
    let socket = std::env::temp_dir().join(format!("pd-control-{}.sock", std::process::id()));
    let socket = socket.to_str().unwrap().to_owned();
    let block = |args: &[&str]| {
        let mut all = vec!["block"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--control-socket", &socket]);
        let out = Command::new(env!("CARGO_BIN_EXE_probe-detector"))
            .args(&all)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // Nobody running: one clear line.
    let (code, _, err) = block(&["list"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.starts_with("probe-detector: error: no probe-detector with --block is running"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");

    let lab = HostLab::new();
    let _listeners = tcp_listeners(&lab.victim, &[&format!("{VICTIM_IP}:22")]);
    let mut detector = Detector::start(
        &lab.victim,
        &["--iface", VICTIM_IF, "--block", "--control-socket", &socket],
    );
    // Its socket is root's alone.
    let mode = std::fs::metadata(&socket).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o600
    );
    assert_eq!(block(&["list"]).1, "no source is blocked\n");
    nmap(&lab.scanner, &["-sS", "-T4", "-p", "1-30", VICTIM_IP]);
    detector.wait_for_alert(Duration::from_secs(10), |a| {
        a["alert"]["action"] == "blocked"
    });
    let (code, listed, err) = block(&["list"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(listed.starts_with(SCANNER_IP), "{listed}");
    assert!(listed.contains("s left"), "{listed}");
    // Lifted by hand: the scanner gets through again.
    assert_eq!(
        block(&["remove", SCANNER_IP]).1,
        format!("unblocked {SCANNER_IP}\n")
    );
    let again = nmap(&lab.scanner, &["-sS", "-T4", "-p", "22", VICTIM_IP]);
    assert!(again.contains("22/open/tcp"), "{again}");
    // Added by hand, with its own time; the never-block rules hold for hands too.
    assert_eq!(
        block(&["add", "198.18.7.77", "--ttl", "60"]).1,
        "blocked 198.18.7.77 for 60 s\n"
    );
    let (_, listed, _) = block(&["list"]);
    assert!(listed.starts_with("198.18.7.77"), "{listed}");
    let (code, _, err) = block(&["add", VICTIM_IP]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains(&format!(
            "{VICTIM_IP} is never blocked: one of our own addresses"
        )),
        "{err}"
    );
    assert!(detector.stop().success());
    // Gone with it.
    assert!(!std::path::Path::new(&socket).exists());
    assert_eq!(block(&["list"]).0, Some(1));
}

#[test]
fn an_xdp_program_not_ours_is_reported_and_left_alone() {
    let Some((_lock, lab)) = host_lab("an_xdp_program_not_ours_is_reported_and_left_alone") else {
        return;
    };
    // Somebody else's XDP program on the victim's interface: a do-nothing program, loaded
    // and attached by this test (inside the victim's namespace) and held until `done`.
    let ns_file = File::open(format!("/run/netns/{}", lab.victim.name)).unwrap();
    let (attached_tx, attached) = mpsc::channel();
    let (done, done_rx) = mpsc::channel::<()>();
    let holder = thread::spawn(move || {
        // SAFETY: setns moves only this thread; the fd is an open namespace file.
        let joined = unsafe { libc::setns(ns_file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(joined, 0);
        let mut ebpf = probe_userspace::kernel::load(&Default::default()).unwrap();
        let program: &mut aya::programs::Xdp = ebpf
            .program_mut("bench_xdp_pass")
            .unwrap()
            .try_into()
            .unwrap();
        program.load().unwrap();
        program
            .attach(c"vic0", aya::programs::xdp::XdpMode::Skb)
            .unwrap();
        attached_tx.send(()).unwrap();
        let _ = done_rx.recv();
    });
    attached.recv_timeout(Duration::from_secs(10)).unwrap();
    let out = lab
        .victim
        .exec(
            env!("CARGO_BIN_EXE_probe-detector"),
            &["--iface", VICTIM_IF],
        )
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let error: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("probe-detector: error:"))
        .collect();
    assert_eq!(error.len(), 1, "{stderr}");
    assert!(
        error[0].contains("another XDP program is already attached")
            && error[0].contains("left alone"),
        "{stderr}"
    );
    // --force cannot take it either: it hangs on the other process's bpf_link.
    let forced = lab
        .victim
        .exec(
            env!("CARGO_BIN_EXE_probe-detector"),
            &["--iface", VICTIM_IF, "--force"],
        )
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&forced.stderr);
    assert_eq!(forced.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("--force cannot replace"), "{stderr}");
    // Still there, untouched.
    assert!(
        lab.victim.xdp_attached(VICTIM_IF).unwrap(),
        "the foreign program was removed"
    );
    done.send(()).unwrap();
    holder.join().unwrap();
}

#[test]
fn a_crash_leaves_nothing_attached() {
    let Some((_lock, lab)) = host_lab("a_crash_leaves_nothing_attached") else {
        return;
    };
    let mut detector = Detector::start(&lab.victim, &["--iface", VICTIM_IF]);
    let xdp_attached = || lab.victim.xdp_attached(VICTIM_IF).unwrap();
    assert!(xdp_attached());
    // SIGKILL: no handler runs. The programs hang on bpf_links (XDP, and TCX for TC egress)
    // that the kernel drops with the process's last file descriptor.
    let mut child = detector.child.take().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let gone = Instant::now();
    while xdp_attached() && gone.elapsed() < Duration::from_secs(5) {
        thread::sleep(Duration::from_millis(50));
    }
    assert!(!xdp_attached(), "XDP left attached after a crash");
    let tc = run_ok(
        &mut lab
            .victim
            .exec("tc", &["filter", "show", "dev", VICTIM_IF, "egress"]),
    );
    assert!(
        tc.stdout.is_empty(),
        "TC filter left: {}",
        String::from_utf8_lossy(&tc.stdout)
    );
    // And the next start attaches as if nothing had happened.
    let mut again = Detector::start(&lab.victim, &["--iface", VICTIM_IF]);
    assert!(again.stop().success());
}

#[test]
fn bad_input_is_one_line_with_its_exit_status_and_nothing_attached() {
    let Some((_lock, lab)) =
        host_lab("bad_input_is_one_line_with_its_exit_status_and_nothing_attached")
    else {
        return;
    };
    let detector = env!("CARGO_BIN_EXE_probe-detector");
    let cases: [(&str, Vec<&str>, i32, &str); 4] = [
        (
            "unknown interface",
            vec![detector, "--iface", "nosuch0"],
            4,
            "nosuch0",
        ),
        (
            "no privileges",
            vec![
                "setpriv",
                "--reuid",
                "nobody",
                "--regid",
                "nogroup",
                "--clear-groups",
                "--inh-caps=-all",
                "--bounding-set=-all",
                detector,
                "--iface",
                VICTIM_IF,
            ],
            3,
            "CAP_BPF",
        ),
        (
            "unwritable attack list",
            vec![
                detector,
                "--iface",
                VICTIM_IF,
                "--attack-list",
                "/proc/no/such/list.csv",
            ],
            1,
            "/proc/no/such/list.csv",
        ),
        (
            "control socket in an impossible place",
            vec![
                detector,
                "--iface",
                VICTIM_IF,
                "--block",
                "--control-socket",
                "/proc/no/ctl.sock",
            ],
            1,
            "/proc/no/ctl.sock",
        ),
    ];
    for (what, argv, code, names) in cases {
        let out = lab.victim.exec(argv[0], &argv[1..]).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{what}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{what}: one line: {stderr}");
        assert!(
            stderr.starts_with("probe-detector: error: "),
            "{what}: {stderr}"
        );
        assert!(
            stderr.contains(names),
            "{what}: the line names the cause: {stderr}"
        );
        assert!(
            !lab.victim.xdp_attached(VICTIM_IF).unwrap(),
            "{what}: attached"
        );
    }
}

#[test]
fn detach_removes_our_leftovers_and_nothing_else() {
    let Some((_lock, lab)) = host_lab("detach_removes_our_leftovers_and_nothing_else") else {
        return;
    };
    let detach = || {
        let out = lab
            .victim
            .exec(
                env!("CARGO_BIN_EXE_probe-detector"),
                &["detach", "--iface", VICTIM_IF],
            )
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let tc_filters = || {
        let out = run_ok(
            &mut lab
                .victim
                .exec("tc", &["filter", "show", "dev", VICTIM_IF, "egress"]),
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // A leftover, as an older kernel would keep it after a crash: our TC egress program
    // attached through netlink (a cls_bpf filter that outlives the process that made it).
    let ns_file = File::open(format!("/run/netns/{}", lab.victim.name)).unwrap();
    thread::spawn(move || {
        // SAFETY: setns moves only this thread; the fd is an open namespace file.
        let joined = unsafe { libc::setns(ns_file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(joined, 0);
        let mut ebpf = probe_userspace::kernel::load(&Default::default()).unwrap();
        let tc = probe_userspace::kernel::tc_program(&mut ebpf).unwrap();
        aya::programs::tc::qdisc_add_clsact(c"vic0").unwrap();
        let id = tc
            .attach(
                c"vic0",
                aya::programs::TcAttach::Netlink {
                    parent: aya::programs::TcAttachType::Egress.into(),
                    options: aya::programs::tc::NlOptions::default(),
                },
            )
            .unwrap();
        // Taken and forgotten: nothing detaches it when this "process" ends.
        std::mem::forget(tc.take_link(id).unwrap());
    })
    .join()
    .unwrap();
    assert!(tc_filters().contains("probe_egress"), "{}", tc_filters());
    let said = detach();
    assert!(
        said.contains("vic0: removed a TC egress filter of ours (probe_egress)"),
        "{said}"
    );
    assert!(said.contains("vic0: no XDP program attached"), "{said}");
    assert!(!tc_filters().contains("probe_egress"), "{}", tc_filters());
    // Nothing left: it says so.
    assert!(detach().contains("vic0: no TC egress filter of ours"));
    // A running probe-detector is not a leftover: its bpf_links stay, and it goes on.
    let mut running = Detector::start(&lab.victim, &["--iface", VICTIM_IF]);
    let said = detach();
    assert!(said.contains("a probe-detector still runs there"), "{said}");
    assert!(lab.victim.xdp_attached(VICTIM_IF).unwrap());
    assert!(running.stop().success());
}

/// The PromQL queries of docs/metrics.md (the lines of its `promql` blocks but comments).
fn documented_queries() -> Vec<String> {
    let docs = include_str!("../../docs/metrics.md");
    let mut queries = Vec::new();
    let mut inside = false;
    for line in docs.lines() {
        match line.trim() {
            "```promql" => inside = true,
            "```" => inside = false,
            query if inside && !query.is_empty() && !query.starts_with('#') => {
                queries.push(query.to_owned());
            }
            _ => {}
        }
    }
    queries
}

/// Asks the Prometheus server at 127.0.0.1:9090 in `ns` for `query`; the parsed answer.
fn prom_query(ns: &Netns, query: &str) -> Value {
    let out = run_ok(&mut ns.exec(
        "curl",
        &[
            "-sS",
            "--max-time",
            "5",
            "--get",
            "--data-urlencode",
            &format!("query={query}"),
            "http://127.0.0.1:9090/api/v1/query",
        ],
    ));
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("Prometheus answered no JSON ({e}) to {query}"))
}

/// The value of the first sample of an instant-query answer.
fn first_value(answer: &Value) -> Option<f64> {
    answer["data"]["result"][0]["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
}

#[test]
fn a_prometheus_server_scrapes_the_counters_and_answers_the_documented_queries() {
    let test = "a_prometheus_server_scrapes_the_counters_and_answers_the_documented_queries";
    if !lab_ready(test) {
        return;
    }
    require_tool("prometheus");
    require_tool("promtool");
    let _lab = lab_lock();
    let lab = HostLab::new();
    let _listeners = tcp_listeners(&lab.victim, &[&format!("{VICTIM_IP}:22")]);
    // With --block, so that the blocking metrics the documented queries use exist.
    let dir = std::env::temp_dir().join(format!("pd-prometheus-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("data")).unwrap();
    let socket = dir.join("control.sock");
    let mut detector = Detector::start(
        &lab.victim,
        &[
            "--iface",
            VICTIM_IF,
            "--metrics-addr",
            "9466",
            "--block",
            "--control-socket",
            socket.to_str().unwrap(),
        ],
    );
    // Prometheus's own linter accepts the exposition.
    let check = lab.victim.exec(
        "sh",
        &[
            "-c",
            "curl -sS --max-time 5 http://127.0.0.1:9466/metrics | promtool check metrics",
        ],
    );
    let checked = run_ok(&mut { check });
    let said = String::from_utf8_lossy(&checked.stderr);
    assert!(!said.contains("error"), "promtool: {said}");

    // A real Prometheus server, in the victim's namespace, scraping every second.
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: probe-detector\n    static_configs:\n      - targets: ['127.0.0.1:9466']\n",
    )
    .unwrap();
    let mut server = lab
        .victim
        .exec(
            "prometheus",
            &[
                &format!("--config.file={}", config.display()),
                &format!("--storage.tsdb.path={}", dir.join("data").display()),
                "--web.listen-address=127.0.0.1:9090",
            ],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start prometheus");
    let ready = Instant::now();
    while !lab
        .victim
        .exec(
            "curl",
            &["-sf", "--max-time", "1", "http://127.0.0.1:9090/-/ready"],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
    {
        assert!(
            ready.elapsed() < Duration::from_secs(30),
            "prometheus not ready in 30 s"
        );
        thread::sleep(Duration::from_millis(200));
    }

    // A scan for the counters to count.
    nmap(&lab.scanner, &["-sS", "-T4", "-p", "1-100", VICTIM_IP]);
    detector.wait_for_alert(Duration::from_secs(10), |a| {
        a["alert"]["context"]["scan"]["phase"] == "start"
    });
    // Two scrapes after the scan: the server holds what the endpoint counted.
    let scraped = Instant::now();
    let alerts = loop {
        let answer = prom_query(
            &lab.victim,
            "max_over_time(probe_detector_alerts_total{kind=\"vertical\",phase=\"start\"}[1m])",
        );
        let scrapes = first_value(&prom_query(
            &lab.victim,
            "count_over_time(up{job=\"probe-detector\"}[1m])",
        ));
        if first_value(&answer).is_some_and(|v| v >= 1.0) && scrapes.is_some_and(|n| n >= 2.0) {
            break answer;
        }
        assert!(
            scraped.elapsed() < Duration::from_secs(20),
            "no scan counted by Prometheus in 20 s: {answer}"
        );
        thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(first_value(&alerts), Some(1.0), "{alerts}");
    let failed = first_value(&prom_query(
        &lab.victim,
        "probe_detector_kernel_failed_total",
    ));
    // The scanner is blocked at its alert: its later probes are dropped, not failed.
    assert!(failed.is_some_and(|n| n >= 4.0), "{failed:?}");
    let top = prom_query(&lab.victim, "probe_detector_top_source_probes{rank=\"1\"}");
    assert_eq!(
        top["data"]["result"][0]["metric"]["src"], SCANNER_IP,
        "{top}"
    );
    // Every documented query is valid PromQL over metrics that exist.
    let queries = documented_queries();
    assert!(queries.len() >= 7, "{queries:?}");
    for query in &queries {
        let answer = prom_query(&lab.victim, query);
        assert_eq!(answer["status"], "success", "{query}: {answer}");
        let metric = query
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .find(|w| w.starts_with("probe_detector_"))
            .unwrap_or_else(|| panic!("{query} names no probe_detector metric"));
        let present = prom_query(&lab.victim, &format!("count({metric})"));
        assert!(
            first_value(&present).is_some_and(|n| n >= 1.0),
            "{metric} (from {query}) is not in Prometheus: {present}"
        );
    }
    let _ = server.kill();
    let _ = server.wait();
    assert!(detector.stop().success());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn records_reach_syslog_in_both_formats_and_a_rotated_file_loses_none() {
    let test = "records_reach_syslog_in_both_formats_and_a_rotated_file_loses_none";
    if !lab_ready(test) {
        return;
    }
    require_tool("rsyslogd");
    require_tool("logrotate");
    let _lab = lab_lock();
    let dir = std::env::temp_dir().join(format!("pd-outputs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let syslog = Syslog::start(&dir.join("syslog")).unwrap();
    let lab = HostLab::new();
    let _listeners = tcp_listeners(&lab.victim, &[&format!("{VICTIM_IP}:22")]);
    let file = dir.join("eve.json");
    // stdout, a file, /dev/log (RFC 3164: the private rsyslogd is bound over /dev/log in
    // probe-detector's mount namespace only) and a socket given (RFC 5424).
    let outputs = [
        "--output".to_owned(),
        "stdout".to_owned(),
        "--output".to_owned(),
        format!("file:{}", file.display()),
        "--output".to_owned(),
        "syslog".to_owned(),
        "--output".to_owned(),
        format!("syslog:{}", syslog.socket_5424().display()),
    ];
    let mut args = vec!["--iface", VICTIM_IF, "--probes"];
    args.extend(outputs.iter().map(String::as_str));
    let mut detector =
        Detector::spawn(syslog.exec(&lab.victim, env!("CARGO_BIN_EXE_probe-detector"), &args));
    let pid = detector.child.as_ref().unwrap().id();
    let starts = |d: &Detector| {
        d.alerts()
            .iter()
            .filter(|a| a["alert"]["context"]["scan"]["phase"] == "start")
            .count()
    };
    nmap(&lab.scanner, &["-sS", "-T4", "-p", "1-60", VICTIM_IP]);
    detector.wait_for_alert(Duration::from_secs(10), |_| starts(&detector) >= 1);
    // logrotate, with its own configuration: move the file, signal, write on in a new one.
    let config = dir.join("logrotate.conf");
    std::fs::write(
        &config,
        format!(
            "{} {{\n  rotate 3\n  missingok\n  postrotate\n    kill -HUP {pid}\n  endscript\n}}\n",
            file.display()
        ),
    )
    .unwrap();
    run_ok(
        Command::new("logrotate")
            .arg("-f")
            .arg("-s")
            .arg(dir.join("logrotate.state"))
            .arg(&config),
    );
    assert!(dir.join("eve.json.1").exists(), "logrotate moved the file");
    detector.wait_for_log("SIGHUP: outputs reopened", Duration::from_secs(10));
    // Another incident after the rotation: the IPv6 address is another target.
    nmap(
        &lab.scanner,
        &["-6", "-sS", "-T4", "-p", "1-60", VICTIM_IP6],
    );
    detector.wait_for_alert(Duration::from_secs(10), |_| starts(&detector) >= 2);
    assert!(detector.stop().success());

    let written: Vec<String> = detector.stdout.lock().unwrap().clone();
    assert!(
        starts(&detector) >= 2 && written.len() > 100,
        "{} records",
        written.len()
    );
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    // The file output: every record, once, across the rotation.
    let mut in_files: Vec<String> = Vec::new();
    for name in ["eve.json.1", "eve.json"] {
        let text = std::fs::read_to_string(dir.join(name)).unwrap();
        in_files.extend(text.lines().map(str::to_owned));
    }
    assert!(
        !std::fs::read_to_string(&file).unwrap().is_empty(),
        "records after the rotation went to the new file"
    );
    assert_eq!(
        sorted(in_files),
        sorted(written.clone()),
        "file output vs stdout"
    );
    // Syslog: every record twice (RFC 3164 and RFC 5424), as JSON messages.
    let settle = Instant::now();
    let messages = loop {
        let messages: Vec<String> = syslog
            .lines_since(0)
            .unwrap()
            .into_iter()
            .filter(|l| l.program == "probe-detector")
            .map(|l| l.message)
            .collect();
        if messages.len() >= 2 * written.len() || settle.elapsed() > Duration::from_secs(5) {
            break messages;
        }
        thread::sleep(Duration::from_millis(100));
    };
    let parsed = |lines: &[String]| -> Vec<Value> {
        let mut v: Vec<Value> = lines
            .iter()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect();
        v.sort_by_key(|r| r.to_string());
        v
    };
    let doubled: Vec<String> = written.iter().chain(&written).cloned().collect();
    assert_eq!(
        parsed(&messages),
        parsed(&doubled),
        "syslog messages vs stdout"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_reader_that_goes_away_ends_the_run_cleanly() {
    let test = "a_reader_that_goes_away_ends_the_run_cleanly";
    if !lab_ready(test) {
        return;
    }
    require_tool("bash");
    let _lab = lab_lock();
    let lab = HostLab::new();
    // `probe-detector | head -n 1`, as an operator tries it first; the shell reports
    // probe-detector's own exit status. The one line head reads is the scan's `start`
    // record, so an incident is open when the reader leaves (with `--probes` the first
    // line may come before any incident, and then there is no summary to keep).
    let mut pipeline = lab
        .victim
        .exec(
            "bash",
            &[
                "-c",
                r#""$0" "$@" | head -n 1; echo "probe-detector exited ${PIPESTATUS[0]}" >&2"#,
                env!("CARGO_BIN_EXE_probe-detector"),
                "--iface",
                VICTIM_IF,
            ],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the pipeline");
    let log = collect_lines(pipeline.stderr.take().unwrap(), false);
    let said = |needle: &str| log.lock().unwrap().iter().any(|l| l.contains(needle));
    let started = Instant::now();
    while !said("watching for port scans") {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{:#?}",
            log.lock().unwrap()
        );
        thread::sleep(Duration::from_millis(50));
    }
    nmap(&lab.scanner, &["-sS", "-T4", "-p", "1-50", VICTIM_IP]);
    let ended = Instant::now();
    let status = loop {
        if let Some(status) = pipeline.try_wait().unwrap() {
            break status;
        }
        assert!(
            ended.elapsed() < Duration::from_secs(20),
            "probe-detector did not stop after head left: {:#?}",
            log.lock().unwrap()
        );
        thread::sleep(Duration::from_millis(50));
    };
    thread::sleep(Duration::from_millis(100));
    let mut first = String::new();
    pipeline
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut first)
        .unwrap();
    assert!(status.success());
    let log = log.lock().unwrap().clone();
    assert!(
        log.iter().any(|l| l == "probe-detector exited 0"),
        "exit status 0 when the reader goes away: {log:#?}"
    );
    assert!(
        log.iter()
            .any(|l| l.contains("stdout's reader went away: stopping"))
    );
    assert!(
        !log.iter().any(|l| l.contains("error")),
        "quiet: no error line: {log:#?}"
    );
    // The open scan's summary went to the log.
    assert!(
        log.iter()
            .any(|l| l.contains("not written (no reader left)") && l.contains("\"end\"")),
        "{log:#?}"
    );
    assert_eq!(first.lines().count(), 1, "head printed one record: {first}");
    assert!(
        first.contains("\"event_type\":\"alert\"") && first.contains("\"start\""),
        "the record head printed is the scan's start: {first}"
    );
    assert!(
        !lab.victim.xdp_attached(VICTIM_IF).unwrap(),
        "everything detached"
    );
}

#[test]
fn idle_metrics_connections_are_capped_and_a_scrape_still_answers() {
    let test = "idle_metrics_connections_are_capped_and_a_scrape_still_answers";
    let Some((_lock, lab)) = host_lab(test) else {
        return;
    };
    let mut detector = Detector::start(
        &lab.victim,
        &["--iface", VICTIM_IF, "--metrics-addr", "9467"],
    );
    let pid = detector.child.as_ref().unwrap().id();
    let fds = || {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .count()
    };
    // Counted once the loop runs (its first scrape answered): by then it holds every
    // descriptor of its own (the netlink socket is opened as the loop starts).
    run_ok(&mut lab.victim.exec(
        "curl",
        &["-sS", "--max-time", "5", "http://127.0.0.1:9467/metrics"],
    ));
    thread::sleep(Duration::from_millis(200));
    let before = fds();
    // 40 connections that never send a request, held open from inside the namespace.
    let held = lab
        .victim
        .within(|| {
            let conns: Vec<std::net::TcpStream> = (0..40)
                .filter_map(|_| std::net::TcpStream::connect("127.0.0.1:9467").ok())
                .collect();
            thread::sleep(Duration::from_millis(500));
            Ok(conns.len())
        })
        .unwrap();
    thread::sleep(Duration::from_millis(300));
    let during = fds();
    assert_eq!(held.join().unwrap().unwrap(), 40, "connections accepted");
    // At most MAX_CONNECTIONS (8) are kept; the rest were closed at once.
    assert!(
        during <= before + 8,
        "{before} descriptors before, {during} while held"
    );
    // Once they are gone (or timed out), a scrape is answered.
    thread::sleep(Duration::from_millis(2500));
    let scrape = run_ok(&mut lab.victim.exec(
        "curl",
        &["-sS", "--max-time", "5", "http://127.0.0.1:9467/metrics"],
    ));
    assert!(String::from_utf8_lossy(&scrape.stdout).contains("probe_detector_build_info"));
    assert!(detector.stop().success());
}

/// `BPF_PROG_TEST_RUN` on a program loaded by another process (by its fd): its verdict.
fn test_run_fd(prog_fd: std::os::fd::BorrowedFd<'_>, frame: &[u8]) -> i64 {
    use std::os::fd::AsRawFd as _;
    /// The `test` member of `union bpf_attr`.
    #[repr(C)]
    #[derive(Default)]
    struct TestRunAttr {
        prog_fd: u32,
        retval: u32,
        data_size_in: u32,
        data_size_out: u32,
        data_in: u64,
        data_out: u64,
        repeat: u32,
        duration: u32,
        ctx_size_in: u32,
        ctx_size_out: u32,
        ctx_in: u64,
        ctx_out: u64,
        flags: u32,
        cpu: u32,
        batch_size: u32,
        pad: u32,
    }
    const BPF_PROG_TEST_RUN: libc::c_long = 10;
    let attr = TestRunAttr {
        prog_fd: prog_fd.as_raw_fd() as u32,
        data_size_in: frame.len() as u32,
        data_in: frame.as_ptr() as u64,
        repeat: 1,
        ..TestRunAttr::default()
    };
    // SAFETY: `attr` is a valid bpf_attr prefix for BPF_PROG_TEST_RUN, alive for the call;
    // `data_in` points at `frame`, readable for `data_size_in` bytes; no output buffer.
    unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_TEST_RUN,
            &raw const attr,
            std::mem::size_of::<TestRunAttr>(),
        )
    }
}

/// A bare RST from `src:port` (a home address) to `dst`, as Ethernet: the egress program
/// takes it for our answer to an ACK probe of `port`, and reports one event per new
/// (dst, port).
fn bare_rst(src: [u8; 4], dst: [u8; 4], port: u16) -> Vec<u8> {
    probe_netlab::inject::tcp_frame(([0; 6], [0; 6]), (src, port), (dst, 40_000), 0x04)
}

#[test]
fn an_event_flood_leaves_the_loop_answering_signals_and_scrapes() {
    let test = "an_event_flood_leaves_the_loop_answering_signals_and_scrapes";
    let Some((_lock, lab)) = host_lab(test) else {
        return;
    };
    let mut detector = Detector::start(
        &lab.victim,
        &[
            "--iface",
            VICTIM_IF,
            "--metrics-addr",
            "9468",
            "--status-interval",
            "1",
        ],
    );
    // The running daemon's own egress program: the newest `probe_egress` loaded.
    let info = aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter(|p| p.name_as_str() == Some("probe_egress"))
        .max_by_key(|p| p.id())
        .expect("the daemon's egress program");
    let prog = info.fd().expect("its fd");
    let victim: std::net::Ipv4Addr = VICTIM_IP.parse().unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sent = Arc::new(std::sync::atomic::AtomicU64::new(0));
    // Two threads of bare RSTs to ever new (address, port): one event each.
    let workers: Vec<_> = (0..2u8)
        .map(|t| {
            let (stop, sent) = (Arc::clone(&stop), Arc::clone(&sent));
            let fd = std::os::fd::AsFd::as_fd(&prog)
                .try_clone_to_owned()
                .unwrap();
            thread::spawn(move || {
                use std::os::fd::AsFd as _;
                let mut n: u32 = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let dst = [198, 19, t, (n >> 16) as u8];
                    let frame = bare_rst(victim.octets(), dst, (n % 65_535 + 1) as u16);
                    assert_eq!(test_run_fd(fd.as_fd(), &frame), 0, "test run");
                    n = n.wrapping_add(1);
                    sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            })
        })
        .collect();
    let flood_started = Instant::now();
    // Scrapes during the flood: each answered within 5 s.
    let mut scrapes = 0;
    let mut last = String::new();
    while flood_started.elapsed() < Duration::from_secs(10) {
        let scrape = run_ok(&mut lab.victim.exec(
            "curl",
            &["-sS", "--max-time", "5", "http://127.0.0.1:9468/metrics"],
        ));
        last = String::from_utf8_lossy(&scrape.stdout).into_owned();
        assert!(last.contains("probe_detector_build_info"));
        scrapes += 1;
        thread::sleep(Duration::from_millis(500));
    }
    let counter = |name: &str| -> u64 {
        last.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} "))?.parse().ok())
            .unwrap_or(0)
    };
    // Outcomes the kernel handed on: as events (read, or refused by the full ring), and,
    // once it decided on their sources, counted into the summaries the loop reads.
    let events = counter("probe_detector_kernel_events_sent_total")
        + counter("probe_detector_kernel_ringbuf_drops_total")
        + counter("probe_detector_kernel_summarized_total");
    // SIGTERM during the flood: answered (stopped and detached) within a second.
    let pid = detector.child.as_ref().unwrap().id();
    let rate = sent.load(std::sync::atomic::Ordering::Relaxed) as f64
        / flood_started.elapsed().as_secs_f64();
    // SAFETY: kill with the pid of our own child and a valid signal number.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
    let signalled = Instant::now();
    let child = detector.child.as_mut().unwrap();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            signalled.elapsed() < Duration::from_secs(1),
            "SIGTERM not answered within 1 s under a flood of {rate:.0} events/s"
        );
        thread::sleep(Duration::from_millis(10));
    };
    let answered = signalled.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for worker in workers {
        worker.join().unwrap();
    }
    eprintln!(
        "{test}: {rate:.0} test runs/s, {:.0} outcomes/s (events sent or refused by the full ring, or summarised) for 10 s; {scrapes} scrapes answered; SIGTERM answered in {answered:?}",
        events as f64 / 10.0
    );
    assert!(events > 100_000, "a flood: {events} outcomes");
    assert!(status.success());
    assert!(scrapes >= 10, "{scrapes} scrapes");
    detector.child = None;
}

#[test]
fn blocks_survive_a_restart_through_the_state_file() {
    let test = "blocks_survive_a_restart_through_the_state_file";
    let Some((_lock, lab)) = host_lab(test) else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("pd-block-state-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (state, socket) = (dir.join("blocks.json"), dir.join("control.sock"));
    let args = [
        "--iface",
        VICTIM_IF,
        "--block",
        "--block-state",
        state.to_str().unwrap(),
        "--control-socket",
        socket.to_str().unwrap(),
    ];
    let block = |action: &[&str]| {
        let out = run_ok(
            Command::new(env!("CARGO_BIN_EXE_probe-detector"))
                .arg("block")
                .args(action)
                .arg("--control-socket")
                .arg(&socket),
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let mut first = Detector::start(&lab.victim, &args);
    block(&["add", SCANNER_IP, "--ttl", "600"]);
    assert!(first.stop().success());
    assert!(state.exists(), "the blocks were saved at exit");
    let mut second = Detector::start(&lab.victim, &args);
    let listed = block(&["list"]);
    assert!(second.stop().success());
    let _ = std::fs::remove_dir_all(&dir);
    let line = listed
        .lines()
        .find(|l| l.starts_with(SCANNER_IP))
        .unwrap_or_else(|| panic!("the block is back after the restart: {listed}"));
    let left: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!((590..=600).contains(&left), "{line}");
}

/// Removes a directory when dropped.
struct RemoveDir(String);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `probe-detector block ARGS --control-socket SOCKET`: its stdout.
fn block_command(socket: &str, args: &[&str]) -> String {
    let mut all = vec!["block"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--control-socket", socket]);
    let out = run_ok(Command::new(env!("CARGO_BIN_EXE_probe-detector")).args(&all));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A completed TCP handshake from `ns` to `addr` (bash's /dev/tcp), then closed.
fn connect(ns: &Netns, host: &str, port: u16) {
    run_ok(&mut ns.exec(
        "bash",
        &["-c", &format!("exec 3<>/dev/tcp/{host}/{port}; exec 3>&-")],
    ));
}

#[test]
fn forged_probes_never_block_a_resolver_a_neighbour_or_a_peer_and_the_scanner_is_blocked() {
    let test =
        "forged_probes_never_block_a_resolver_a_neighbour_or_a_peer_and_the_scanner_is_blocked";
    let Some((_lock, lab)) = host_lab(test) else {
        return;
    };
    require_tool("bash");
    const RESOLVER: &str = "198.18.7.53";
    const NEIGHBOUR: &str = "198.18.7.60";
    const PEER: &str = "198.18.7.80";
    // The victim's resolver, in the resolv.conf `ip netns exec` shows it.
    let etc = format!("/etc/netns/{}", lab.victim.name);
    std::fs::create_dir_all(&etc).unwrap();
    let _etc = RemoveDir(etc.clone());
    std::fs::write(
        format!("{etc}/resolv.conf"),
        format!("nameserver {RESOLVER}\n"),
    )
    .unwrap();
    // A neighbour the victim knows, with its own link-layer address.
    lab.victim
        .ip(&[
            "neigh",
            "replace",
            NEIGHBOUR,
            "lladdr",
            "02:00:00:00:00:60",
            "dev",
            VICTIM_IF,
            "nud",
            "permanent",
        ])
        .unwrap();
    // A server on the scanner's side that the victim talks to.
    lab.scanner.addr("scan0", &format!("{PEER}/24")).unwrap();
    let _server = tcp_listeners(&lab.scanner, &[&format!("{PEER}:8080")]);
    let _listeners = tcp_listeners(&lab.victim, &[&format!("{VICTIM_IP}:22")]);
    let socket = std::env::temp_dir().join(format!("pd-forged-{}.sock", std::process::id()));
    let socket = socket.to_str().unwrap().to_owned();
    let mut detector = Detector::start(
        &lab.victim,
        &["--iface", VICTIM_IF, "--block", "--control-socket", &socket],
    );
    connect(&lab.victim, PEER, 8080);

    // Forged scans "from" each of them: the scanner's frames with their addresses (given
    // to its interface, which nmap -S needs to find a route; the victim's static entry for
    // the neighbour keeps the neighbour's own link-layer address).
    for forged in [RESOLVER, NEIGHBOUR] {
        lab.scanner.addr("scan0", &format!("{forged}/32")).unwrap();
    }
    for forged in [RESOLVER, NEIGHBOUR, PEER] {
        nmap(
            &lab.scanner,
            &[
                "-sS", "-T4", "-p", "1-30", "-S", forged, "-e", "scan0", VICTIM_IP,
            ],
        );
    }
    // The real scanner completes a connection to the open port first, then scans (other
    // ports: the same ports from several sources within a minute make a decoy scan).
    connect(&lab.scanner, VICTIM_IP, 22);
    nmap(&lab.scanner, &["-sS", "-T4", "-p", "100-130", VICTIM_IP]);
    let start_of = |alerts: &[Value], src: &str| {
        alerts
            .iter()
            .find(|a| a["src_ip"] == src && a["alert"]["context"]["scan"]["phase"] == "start")
            .cloned()
    };
    // The resolver's attempts go unanswered (nobody there to take our RSTs): they count
    // when they time out.
    let alerts = detector.wait_for_alert(Duration::from_secs(20), |a| {
        a["src_ip"] == RESOLVER && a["alert"]["context"]["scan"]["phase"] == "start"
    });
    for (src, why) in [
        (RESOLVER, "a DNS resolver of this host"),
        (NEIGHBOUR, "an on-link neighbour"),
        (PEER, "a peer"),
    ] {
        let start = start_of(&alerts, src)
            .unwrap_or_else(|| panic!("no alert for {src}: {:#?}", detector.records()));
        assert_eq!(start["alert"]["action"], "allowed", "{src}: {start}");
        let log = detector.stderr.lock().unwrap().join("\n");
        assert!(
            log.contains(&format!("not blocking {src}: {why}")),
            "{src}: {log}"
        );
    }
    let scanner = start_of(&alerts, SCANNER_IP).expect("the scanner's alert");
    assert_eq!(scanner["alert"]["action"], "blocked", "{scanner}");
    let during = nmap(&lab.scanner, &["-sS", "-T4", "-p", "22", VICTIM_IP]);
    assert!(
        during.contains("filtered"),
        "the scanner is cut off: {during}"
    );
    let listed = block_command(&socket, &["list"]);
    assert!(listed.starts_with(SCANNER_IP), "{listed}");
    assert_eq!(listed.lines().count(), 1, "nobody else: {listed}");
    // The victim still reaches its peer, whose address was forged above.
    connect(&lab.victim, PEER, 8080);
    assert!(detector.stop().success());
}

#[test]
fn a_flood_of_forged_scanners_is_rationed_and_evicts_no_manual_block() {
    let test = "a_flood_of_forged_scanners_is_rationed_and_evicts_no_manual_block";
    let Some((_lock, lab)) = host_lab(test) else {
        return;
    };
    const MANUAL: &str = "198.18.7.99";
    // The victim answers the forged sources (198.18.64.0 and up) through a router on the
    // scanner's side, so its RSTs leave (and are seen) at once.
    lab.scanner.addr("scan0", "198.18.7.254/24").unwrap();
    lab.victim
        .ip(&["route", "add", "198.18.0.0/15", "via", "198.18.7.254"])
        .unwrap();
    let socket = std::env::temp_dir().join(format!("pd-flood-{}.sock", std::process::id()));
    let socket = socket.to_str().unwrap().to_owned();
    let mut detector = Detector::start(
        &lab.victim,
        &[
            "--iface",
            VICTIM_IF,
            "--block",
            "--control-socket",
            &socket,
            "--metrics-addr",
            "9469",
        ],
    );
    assert_eq!(
        block_command(&socket, &["add", MANUAL]),
        format!("blocked {MANUAL} for 3600 s\n")
    );
    let mac = |ns: &Netns, dev: &str| -> [u8; 6] {
        let text = ns.mac(dev).unwrap();
        let bytes: Vec<u8> = text
            .split(':')
            .map(|h| u8::from_str_radix(h, 16).unwrap())
            .collect();
        bytes.try_into().unwrap()
    };
    let macs = (mac(&lab.scanner, "scan0"), mac(&lab.victim, VICTIM_IF));
    // 100 000 forged sources, each failing on four closed ports: 400 000 frames.
    let base = u32::from(std::net::Ipv4Addr::new(198, 18, 64, 0));
    let mut frames = Vec::with_capacity(400_000);
    for i in 0..100_000u32 {
        let src = (base + i).to_be_bytes();
        for port in 1001..=1004 {
            frames.push(probe_netlab::inject::tcp_syn(
                macs,
                src,
                [198, 18, 7, 2],
                40_000,
                port,
            ));
        }
    }
    let started = Instant::now();
    let sent = probe_netlab::inject::inject(&lab.scanner, "scan0", frames).unwrap();
    let flood_s = started.elapsed().as_secs_f64();
    eprintln!("sent {sent} forged frames in {flood_s:.1} s");
    assert!(sent >= 390_000, "{sent} sent");
    // Let the detector catch up, then look.
    thread::sleep(Duration::from_secs(5));
    let elapsed = started.elapsed().as_secs_f64();
    let listed = block_command(&socket, &["list"]);
    let manual: Vec<&str> = listed.lines().filter(|l| l.ends_with("by hand")).collect();
    assert_eq!(manual.len(), 1, "{listed}");
    assert!(manual[0].starts_with(MANUAL), "{listed}");
    let automatic = listed.lines().filter(|l| l.ends_with("automatic")).count();
    // The budget: bursts of 50, then 5 a second.
    assert!(
        automatic as f64 <= 50.0 + 5.0 * elapsed + 1.0,
        "{automatic} automatic blocks in {elapsed:.1} s"
    );
    let metrics = run_ok(&mut lab.victim.exec(
        "curl",
        &["-sS", "--max-time", "5", "http://127.0.0.1:9469/metrics"],
    ));
    let metrics = String::from_utf8_lossy(&metrics.stdout).into_owned();
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name}: {metrics}"))
    };
    let refused = value("probe_detector_blocks_refused_total{reason=\"rate\"}")
        + value("probe_detector_blocks_refused_total{reason=\"prefix_cap\"}");
    assert!(refused > 100.0, "{refused} refused: {metrics}");
    assert_eq!(value("probe_detector_blocks_evicted_total"), 0.0);
    // The manual block still drops its source's frames.
    let dropped = value("probe_detector_kernel_blocked_total");
    let from_manual = (0..5)
        .map(|i| {
            probe_netlab::inject::tcp_syn(macs, [198, 18, 7, 99], [198, 18, 7, 2], 40_100 + i, 22)
        })
        .collect();
    probe_netlab::inject::inject(&lab.scanner, "scan0", from_manual).unwrap();
    thread::sleep(Duration::from_millis(300));
    let metrics = run_ok(&mut lab.victim.exec(
        "curl",
        &["-sS", "--max-time", "5", "http://127.0.0.1:9469/metrics"],
    ));
    let metrics = String::from_utf8_lossy(&metrics.stdout).into_owned();
    let now_dropped: f64 = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix("probe_detector_kernel_blocked_total ")?
                .parse()
                .ok()
        })
        .unwrap();
    assert!(
        now_dropped >= dropped + 5.0,
        "{dropped} then {now_dropped} frames dropped"
    );
    assert!(detector.stop().success());
}

#[test]
fn an_address_added_while_running_is_watched() {
    let Some((_lock, lab)) = host_lab("an_address_added_while_running_is_watched") else {
        return;
    };
    const ADDED: &str = "198.18.7.3";
    let mut detector = Detector::start(&lab.victim, &["--iface", VICTIM_IF]);
    lab.victim.addr(VICTIM_IF, &format!("{ADDED}/24")).unwrap();
    detector.wait_for_log(
        &format!("home nets: {VICTIM_IP}/32, {ADDED}/32"),
        Duration::from_secs(5),
    );
    nmap(&lab.scanner, &["-sS", "-T4", "-p", "1-30", ADDED]);
    let alerts = detector.wait_for_alert(Duration::from_secs(10), |a| a["dest_ip"] == ADDED);
    assert!(alerts.iter().any(|a| a["dest_ip"] == ADDED));
    assert!(detector.stop().success());
    let log = detector.stderr.lock().unwrap().join("\n");
    assert!(
        log.contains(&format!("network changed: home nets: +{ADDED}/32")),
        "{log}"
    );
    // A host that does not forward: its own addresses only, nothing derived from routes.
    assert!(!log.contains("this host forwards"), "{log}");
}

#[test]
fn a_stopped_reader_of_stdout_holds_up_nothing_and_is_told_what_it_missed() {
    let test = "a_stopped_reader_of_stdout_holds_up_nothing_and_is_told_what_it_missed";
    let Some((_lock, lab)) = host_lab(test) else {
        return;
    };
    // `probe-detector --probes | jq` with jq stopped (Ctrl-Z): stdout is a pipe nobody reads.
    let mut child = lab
        .victim
        .exec(
            env!("CARGO_BIN_EXE_probe-detector"),
            &[
                "--iface",
                VICTIM_IF,
                "--probes",
                "--stdout-queue-mib",
                "1",
                "--metrics-addr",
                "9470",
            ],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = collect_lines(child.stderr.take().unwrap(), false);
    let started = Instant::now();
    while !log
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.contains("watching for port scans"))
    {
        assert!(started.elapsed() < Duration::from_secs(30));
        thread::sleep(Duration::from_millis(50));
    }
    // About 8 000 probe records (some 2 MB) against a pipe of 64 KiB and a queue of 1 MiB.
    nmap(&lab.scanner, &["-sS", "-T4", "-p", "1-8000", VICTIM_IP]);
    thread::sleep(Duration::from_secs(1));
    let scrape = || {
        let out = run_ok(&mut lab.victim.exec(
            "curl",
            &["-sS", "--max-time", "5", "http://127.0.0.1:9470/metrics"],
        ));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let value = |metrics: &str, name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name}: {metrics}"))
    };
    // Detection went on, and the scrape was answered, while nobody read stdout.
    let metrics = scrape();
    assert!(
        value(
            &metrics,
            "probe_detector_alerts_total{kind=\"vertical\",phase=\"start\"}"
        ) >= 1.0,
        "{metrics}"
    );
    let dropped = value(&metrics, "probe_detector_stdout_dropped_total");
    assert!(dropped > 0.0, "{metrics}");
    // The reader comes back: what was queued arrives whole, then the record that says what
    // was dropped.
    let mut out = child.stdout.take().unwrap();
    let reader = thread::spawn(move || {
        let mut text = String::new();
        out.read_to_string(&mut text).unwrap();
        text
    });
    thread::sleep(Duration::from_secs(1));
    // SAFETY: kill with our child's pid and a valid signal number.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
    let text = reader.join().unwrap();
    let records: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let report = records
        .iter()
        .find(|r| r["event_type"] == "engine")
        .unwrap_or_else(|| panic!("no engine record among {} records", records.len()));
    let message = report["engine"]["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("{dropped} records dropped")),
        "{message} ({dropped} counted)"
    );
    if let Some(eve) = eve::Eve::load(test) {
        eve.assert_valid(report);
    }
    assert!(records.iter().any(|r| r["event_type"] == "alert"));
}

#[test]
fn traceroute_mtr_and_tracepath_raise_no_alert_and_a_low_ttl_scan_still_does() {
    let test = "traceroute_mtr_and_tracepath_raise_no_alert_and_a_low_ttl_scan_still_does";
    let Some((_lock, lab)) = host_lab(test) else {
        return;
    };
    for tool in ["traceroute", "mtr", "tracepath"] {
        require_tool(tool);
    }
    let mut detector = Detector::start(&lab.victim, &["--iface", VICTIM_IF]);
    // What every operator runs, each in its UDP form (the one that fails on closed ports),
    // IPv4 and IPv6; each bounded in probes and time.
    let runs: [(&str, Vec<&str>); 6] = [
        ("traceroute", vec!["-n", "-w", "1", VICTIM_IP]),
        ("traceroute", vec!["-6", "-n", "-w", "1", VICTIM_IP6]),
        (
            "traceroute",
            vec!["-n", "-w", "1", "-q", "1", "-m", "10", VICTIM_IP],
        ),
        (
            "mtr",
            vec!["-u", "-n", "-r", "-c", "5", "-i", "0.2", VICTIM_IP],
        ),
        ("tracepath", vec!["-n", "-m", "10", VICTIM_IP]),
        ("tracepath", vec!["-n", "-m", "10", VICTIM_IP6]),
    ];
    for (tool, args) in &runs {
        // Their exit status says whether the path was complete: not ours to judge.
        let _ = lab.scanner.exec(tool, args).output().unwrap();
    }
    thread::sleep(Duration::from_secs(5));
    assert!(
        detector.alerts().is_empty(),
        "the traceroute family is not a port scan: {:#?}",
        detector.alerts()
    );
    // A UDP scan with a constant low TTL (an evasion, not a traceroute) is still alerted.
    nmap(
        &lab.scanner,
        &["-sU", "-T4", "--ttl", "3", "-p", "1000-1030", VICTIM_IP],
    );
    detector.wait_for_alert(Duration::from_secs(15), |a| {
        a["src_ip"] == SCANNER_IP && a["alert"]["context"]["scan"]["phase"] == "start"
    });
    assert!(detector.stop().success());
    let log = detector.stderr.lock().unwrap().join("\n");
    assert!(log.contains("traceroute from"), "{log}");
}
