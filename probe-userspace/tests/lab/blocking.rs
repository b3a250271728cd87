//! `--block` in a running daemon: confirmed scanners dropped and never a spoofed, allowed,
//! resolver, neighbour or peer source; the block command; blocks across a restart; a flood
//! of forged scanners rationed.

use super::*;

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
