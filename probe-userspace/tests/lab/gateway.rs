//! A gateway watching the LAN behind it: sweeps through the router, home nets derived
//! from its routes and followed as they change, addresses added while running.

use super::*;

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
