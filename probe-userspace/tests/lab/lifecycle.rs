//! The daemon's life: bad input and busy ports refused in one line, the service unit's
//! settings, foreign XDP programs, crashes and detach leaving nothing behind, allow-list
//! reloads, and a loop that keeps answering under an event flood.

use super::*;

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
    let unit = include_str!("../../../packaging/probe-detector.service");
    let caps: Vec<String> = unit
        .lines()
        .find_map(|l| l.strip_prefix("AmbientCapabilities="))
        .expect("the unit grants ambient capabilities")
        .split_whitespace()
        .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase()))
        .collect();
    assert_eq!(caps.len(), 4, "{caps:?}");
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
        setting("UMask="),
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
    // The event loop (the main thread: sh and setpriv exec, so the pid is
    // probe-detector's) has its CPU reserve with the unit's capabilities.
    // SAFETY: sched_getscheduler has no memory arguments; the pid is our own child's.
    let policy = unsafe { libc::sched_getscheduler(child.id() as libc::pid_t) };
    assert_eq!(
        policy & !libc::SCHED_RESET_ON_FORK,
        6,
        "the event loop's policy is SCHED_DEADLINE"
    );
    nmap(&lab.scanner, &["-sS", "-p", "1-30", VICTIM_IP]);
    thread::sleep(Duration::from_millis(500));
    // The control socket answers, and the scanner is on the block list.
    let listed = run_ok(
        Command::new(env!("CARGO_BIN_EXE_probe-detector"))
            .args(["block", "list", "--control-socket"])
            .arg(&socket),
    );
    let listed = String::from_utf8_lossy(&listed.stdout).into_owned();
    // sh execs setpriv, then probe-detector: the child's pid is probe-detector's.
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
        !stderr.contains("beyond its reserve"),
        "an idle loop kept its reserve: {stderr}"
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
