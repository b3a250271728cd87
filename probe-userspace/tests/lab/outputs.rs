//! Where records go: Prometheus scrapes and the documented queries, syslog and rotated
//! files, and readers of stdout that go away or stop reading.

use super::*;

/// The PromQL queries of docs/metrics.md (the lines of its `promql` blocks but comments).
fn documented_queries() -> Vec<String> {
    let docs = include_str!("../../../docs/metrics.md");
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
    // Its start was timed, from the deciding outcome to the write, within a second.
    let timed = prom_query(
        &lab.victim,
        "probe_detector_start_latency_seconds_bucket{le=\"1\"}",
    );
    assert_eq!(first_value(&timed), Some(1.0), "{timed}");
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
