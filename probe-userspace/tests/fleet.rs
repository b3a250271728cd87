//! The fleet's lab test: eight host namespaces, each a sensor (`--fleet --block`) with a
//! web server, behind a hub namespace that routes, runs Debian's redis-server (ACL users
//! per role, append-only file) and two correlators; scanners in a namespace of their own.
//! 198.18.0.0/15 only, everything deleted when the test ends. Needs root, nmap, curl and
//! redis-server (`cargo xtask test` installs them).

use std::{
    collections::BTreeSet,
    net::IpAddr,
    path::PathBuf,
    process::{Child, Stdio},
    thread,
    time::{Duration, Instant},
};

#[path = "common/detector.rs"]
mod detector;
#[path = "common/eve.rs"]
mod eve;

use detector::Detector;
use probe_netlab::{Listeners, Netns, netns, require_root, require_tool, veth};
use probe_userspace::fleet::keys;
use serde_json::Value;

const HOSTS: usize = 8;
/// The hub's address every sensor and correlator reaches Redis at.
const REDIS_IP: &str = "198.18.30.1";
const CORRELATOR_PASSWORD: &str = "lab-correlator-secret";

/// A host's address: 198.18.(50 + n).2, n from 1.
fn host_ip(n: usize) -> String {
    format!("198.18.{}.2", 50 + n)
}

/// A scanner-side source of its own /24 (so of its own shard's choosing): 198.18.N.2 on
/// the scanners' /20 link.
fn source(third: u8) -> String {
    assert!((33..48).contains(&third));
    format!("198.18.{third}.2")
}

struct FleetLab {
    hub: Netns,
    scanner: Netns,
    hosts: Vec<Netns>,
    dir: PathBuf,
    redis: Option<Child>,
    _listeners: Vec<Listeners>,
}

impl FleetLab {
    fn new() -> Self {
        let hub = Netns::new("fhub").unwrap();
        let scanner = Netns::new("fscan").unwrap();
        hub.sysctl("net.ipv4.ip_forward=1").unwrap();
        hub.ip(&["addr", "add", &format!("{REDIS_IP}/32"), "dev", "lo"])
            .unwrap();
        veth(&scanner, "scan0", &hub, "hs0").unwrap();
        hub.addr("hs0", "198.18.32.1/20").unwrap();
        for third in 33..48u8 {
            scanner
                .addr("scan0", &format!("{}/20", source(third)))
                .unwrap();
        }
        scanner
            .ip(&["route", "add", "default", "via", "198.18.32.1"])
            .unwrap();
        let mut hosts = Vec::new();
        let mut listeners = Vec::new();
        for n in 1..=HOSTS {
            let host = Netns::new(&format!("fh{n}")).unwrap();
            veth(&host, "eth0", &hub, &format!("hh{n}")).unwrap();
            host.addr("eth0", &format!("{}/24", host_ip(n))).unwrap();
            host.ip(&[
                "route",
                "add",
                "default",
                "via",
                &format!("198.18.{}.1", 50 + n),
            ])
            .unwrap();
            hub.addr(&format!("hh{n}"), &format!("198.18.{}.1/24", 50 + n))
                .unwrap();
            let web: std::net::SocketAddr = format!("{}:80", host_ip(n)).parse().unwrap();
            listeners.push(Listeners::start(&host, &[web], &[]).unwrap());
            hosts.push(host);
        }
        let dir = std::env::temp_dir().join(format!("pdlab-fleet-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut lab = Self {
            hub,
            scanner,
            hosts,
            dir,
            redis: None,
            _listeners: listeners,
        };
        lab.write_redis_config();
        lab.start_redis();
        lab
    }

    /// Debian's redis-server with one user per role (the rules the library documents),
    /// no default user, and an append-only file so that a restart keeps the streams.
    fn write_redis_config(&self) {
        let mut config = format!(
            "bind {REDIS_IP}\nport 6379\ndir {}\nsave \"\"\nappendonly yes\nappendfsync everysec\nuser default off\nuser correlator on >{CORRELATOR_PASSWORD} {}\n",
            self.dir.display(),
            keys::correlator_acl()
        );
        for n in 1..=HOSTS {
            config.push_str(&format!(
                "user h{n} on >sensor-{n}-secret {}\n",
                keys::sensor_acl(&format!("h{n}"))
            ));
        }
        std::fs::write(self.dir.join("redis.conf"), config).unwrap();
    }

    fn start_redis(&mut self) {
        let conf = self.dir.join("redis.conf");
        let child = self
            .hub
            .exec("redis-server", &[conf.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.redis = Some(child);
        let started = Instant::now();
        while self.redis_cli(&["PING"]).trim() != "PONG" {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "redis-server did not answer"
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops redis-server as its service would (SIGTERM: the append-only file is written).
    fn stop_redis(&mut self) {
        let mut child = self.redis.take().unwrap();
        // SAFETY: kill with a pid we own and a valid signal number.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        let _ = child.wait();
    }

    /// redis-cli as the correlator's user; its stdout.
    fn redis_cli(&self, args: &[&str]) -> String {
        let mut all = vec![
            "-h",
            REDIS_IP,
            "--user",
            "correlator",
            "--pass",
            CORRELATOR_PASSWORD,
            "--no-auth-warning",
        ];
        all.extend_from_slice(args);
        let out = self.hub.exec("redis-cli", &all).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn sensor(&self, n: usize) -> Detector {
        let url = format!("redis://h{n}:sensor-{n}-secret@{REDIS_IP}:6379");
        let name = format!("h{n}");
        let socket = self.dir.join(format!("h{n}.sock"));
        let mut detector = Detector::start(
            &self.hosts[n - 1],
            &[
                "--iface",
                "eth0",
                "--fleet",
                &url,
                "--sensor-name",
                &name,
                "--block",
                "--control-socket",
                socket.to_str().unwrap(),
            ],
        );
        detector.wait_for_log("fleet: publishing evidence", Duration::from_secs(10));
        detector
    }

    fn correlator(&self, name: &str) -> Detector {
        let url = format!("redis://correlator:{CORRELATOR_PASSWORD}@{REDIS_IP}:6379");
        Detector::spawn_until(
            self.hub.exec(
                env!("CARGO_BIN_EXE_probe-detector"),
                &[
                    "correlate",
                    "--fleet",
                    &url,
                    "--sensor-name",
                    name,
                    "--block",
                    "--idle-timeout",
                    "3",
                ],
            ),
            "owns ",
        )
    }

    /// nmap from `src`, bounded; its grepable output.
    fn nmap(&self, src: &str, args: &[&str]) -> String {
        let mut all = vec![
            "-n",
            "-Pn",
            "-S",
            src,
            "-e",
            "scan0",
            "--max-retries",
            "0",
            "--host-timeout",
            "20s",
            "-oG",
            "-",
        ];
        all.extend_from_slice(args);
        let out = netns::run(&mut self.scanner.exec("nmap", &all)).unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for FleetLab {
    fn drop(&mut self) {
        if let Some(mut redis) = self.redis.take() {
            let _ = redis.kill();
            let _ = redis.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn all_hosts() -> Vec<String> {
    (1..=HOSTS).map(host_ip).collect()
}

/// The fleet alerts (of both correlators) about `src`.
fn fleet_alerts(correlators: &[&Detector], src: &str) -> Vec<Value> {
    correlators
        .iter()
        .flat_map(|c| c.alerts())
        .filter(|a| a["src_ip"] == src)
        .collect()
}

/// Waits until a correlator alert about `src` satisfies `matches`.
fn wait_fleet(
    correlators: &[&Detector],
    src: &str,
    timeout: Duration,
    matches: impl Fn(&Value) -> bool,
) -> Vec<Value> {
    let started = Instant::now();
    loop {
        let alerts = fleet_alerts(correlators, src);
        if alerts.iter().any(&matches) || started.elapsed() >= timeout {
            return alerts;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

fn sensors_named(alert: &Value) -> BTreeSet<String> {
    alert["alert"]["context"]["fleet"]["sensors"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The shards a correlator says it owns, from its latest `owns` line.
fn owned_shards(correlator: &Detector) -> Vec<u16> {
    let log = correlator.stderr.lock().unwrap();
    let line = log.iter().rev().find(|l| l.contains("owns ")).unwrap();
    let list = &line[line.rfind('[').unwrap() + 1..line.rfind(']').unwrap()];
    list.split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect()
}

fn ports_answered(grepable: &str) -> usize {
    grepable
        .lines()
        .filter(|l| l.contains("Ports:"))
        .map(|l| l.matches("/open/").count() + l.matches("/closed/").count())
        .sum()
}

#[test]
fn a_fleet_sees_what_no_host_sees_blocks_everywhere_and_survives_redis_and_a_correlator() {
    if !require_root("fleet lab") {
        return;
    }
    for tool in ["nmap", "curl", "redis-server", "redis-cli"] {
        require_tool(tool);
    }
    let mut lab = FleetLab::new();
    let mut sensors: Vec<Detector> = (1..=HOSTS).map(|n| lab.sensor(n)).collect();
    let c1 = lab.correlator("c1");
    let mut c2 = lab.correlator("c2");
    // Both live: each owns half of the shards.
    let started = Instant::now();
    while owned_shards(&c1).len() != 8 || owned_shards(&c2).len() != 8 {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the shards were not shared out: c1 {:?}, c2 {:?}",
            owned_shards(&c1),
            owned_shards(&c2)
        );
        thread::sleep(Duration::from_millis(100));
    }

    // Ordinary clients of every host raise nothing.
    let client = source(34);
    for host in all_hosts() {
        let out = lab
            .scanner
            .exec(
                "curl",
                &[
                    "-s",
                    "-o",
                    "/dev/null",
                    "--interface",
                    &client,
                    "--max-time",
                    "5",
                    &format!("http://{host}/"),
                ],
            )
            .output()
            .unwrap();
        assert!(out.status.success(), "curl {host}");
    }

    // A sweep of one closed port, one probe per host: no host sees more than one probe.
    let sweeper = source(33);
    let mut ports = vec!["-sS", "-p", "22"];
    let hosts = all_hosts();
    ports.extend(hosts.iter().map(String::as_str));
    let probed = Instant::now();
    lab.nmap(&sweeper, &ports);
    let alerts = wait_fleet(&[&c1, &c2], &sweeper, Duration::from_secs(10), |a| {
        a["alert"]["context"]["scan"]["phase"] == "start"
    });
    let start = alerts
        .iter()
        .find(|a| a["alert"]["context"]["scan"]["phase"] == "start")
        .unwrap_or_else(|| panic!("no fleet alert for the sweep: {alerts:#?}"));
    eprintln!(
        "fleet alert for the sweep {:?} after nmap began: {start}",
        probed.elapsed()
    );
    assert_eq!(start["alert"]["context"]["scan"]["kind"], "horizontal");
    assert!(sensors_named(start).len() >= 4, "{start}");
    // Its end (--idle-timeout 3) names every host's sensor.
    let alerts = wait_fleet(&[&c1, &c2], &sweeper, Duration::from_secs(15), |a| {
        a["alert"]["context"]["scan"]["phase"] == "end"
    });
    let end = alerts
        .iter()
        .find(|a| a["alert"]["context"]["scan"]["phase"] == "end")
        .unwrap_or_else(|| panic!("no end for the sweep: {alerts:#?}"));
    let every: BTreeSet<String> = (1..=HOSTS).map(|n| format!("h{n}")).collect();
    assert_eq!(sensors_named(end), every, "{end}");
    assert_eq!(end["alert"]["context"]["scan"]["hosts"], HOSTS);
    // One incident, and no host alone saw a scan.
    assert_eq!(
        alerts
            .iter()
            .filter(|a| a["alert"]["context"]["scan"]["phase"] == "start")
            .count(),
        1,
        "{alerts:#?}"
    );
    for sensor in &sensors {
        assert!(
            sensor
                .alerts()
                .iter()
                .all(|a| a["src_ip"] != sweeper.as_str()),
            "a sensor alerted alone on the sweep"
        );
    }
    // The fleet's block, backed by eight sensors, reaches every host: the sweeper's next
    // probes of the open web port get no answer anywhere.
    for (n, sensor) in sensors.iter_mut().enumerate() {
        sensor.wait_for_log(&format!("fleet block of {sweeper}"), Duration::from_secs(5));
        let _ = n;
    }
    let mut web = vec!["-sS", "-p", "80"];
    web.extend(hosts.iter().map(String::as_str));
    let answered = ports_answered(&lab.nmap(&sweeper, &web));
    assert_eq!(
        answered, 0,
        "the sweeper still got answers after the fleet block"
    );
    // The client was never blocked.
    let answered = ports_answered(&lab.nmap(&client, &web));
    assert_eq!(answered, HOSTS, "a client of the fleet was blocked");
    assert!(fleet_alerts(&[&c1, &c2], &client).is_empty());

    // A strobe: three ports on every host.
    let strober = source(35);
    let mut strobe = vec!["-sS", "-p", "21,23,25"];
    strobe.extend(hosts.iter().map(String::as_str));
    lab.nmap(&strober, &strobe);
    let alerts = wait_fleet(&[&c1, &c2], &strober, Duration::from_secs(10), |_| true);
    assert!(!alerts.is_empty(), "the strobe scan was not found");

    // Redis away for 10 s: a host alerts on its own scan meanwhile; the sweep made during
    // the outage reaches the fleet once Redis is back.
    lab.stop_redis();
    let local = source(36);
    lab.nmap(&local, &["-sS", "-p", "1-100", &host_ip(1)]);
    let seen = sensors[0].wait_for_alert(Duration::from_secs(5), |a| a["src_ip"] == local.as_str());
    assert!(
        seen.iter().any(|a| a["src_ip"] == local.as_str()),
        "no local alert while Redis was away"
    );
    let late = source(37);
    let mut sweep = vec!["-sS", "-p", "23"];
    sweep.extend(hosts.iter().map(String::as_str));
    lab.nmap(&late, &sweep);
    thread::sleep(Duration::from_secs(8));
    lab.start_redis();
    let alerts = wait_fleet(&[&c1, &c2], &late, Duration::from_secs(30), |a| {
        a["alert"]["context"]["scan"]["phase"] == "start"
    });
    assert!(
        !alerts.is_empty(),
        "the sweep made while Redis was away never reached the fleet"
    );
    // The local scan reached the fleet too, but one sensor's word blocks nobody.
    wait_fleet(&[&c1, &c2], &local, Duration::from_secs(10), |_| true);
    let active = lab.redis_cli(&["HGETALL", keys::BLOCKS_ACTIVE]);
    assert!(active.contains(&sweeper), "{active}");
    assert!(
        !active.lines().any(|l| l.trim() == local),
        "a scan one sensor saw became a fleet block: {active}"
    );

    // A correlator dies right after reading entries it never acknowledged: the other
    // takes its shards over, claims them, and alerts.
    let started = Instant::now();
    while owned_shards(&c1).len() != 8 || owned_shards(&c2).len() != 8 {
        assert!(started.elapsed() < Duration::from_secs(20));
        thread::sleep(Duration::from_millis(100));
    }
    let c1_shards = owned_shards(&c1);
    let victim = (38..48u8)
        .map(source)
        .find(|s| c1_shards.contains(&keys::shard_of(s.parse::<IpAddr>().unwrap())))
        .expect("a source of one of c1's shards");
    let shard = keys::shard_of(victim.parse::<IpAddr>().unwrap());
    let pid = c1.child.as_ref().unwrap().id() as libc::pid_t;
    // SAFETY: kill with a pid we own and a valid signal number.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let mut sweep = vec!["-sS", "-p", "24"];
    sweep.extend(hosts.iter().map(String::as_str));
    lab.nmap(&victim, &sweep);
    thread::sleep(Duration::from_millis(500));
    // What c1 would have read had it lived a moment longer: delivered to it, pending.
    let mut read = vec![
        "XREADGROUP",
        "GROUP",
        keys::GROUP,
        "c1",
        "COUNT",
        "100",
        "STREAMS",
    ];
    let streams: Vec<String> = (1..=HOSTS)
        .map(|n| keys::evidence_stream(shard, &format!("h{n}")))
        .collect();
    read.extend(streams.iter().map(String::as_str));
    read.extend(std::iter::repeat_n(">", HOSTS));
    let delivered = lab.redis_cli(&read);
    assert!(
        !delivered.trim().is_empty(),
        "nothing of the sweep was in shard {shard}"
    );
    let alerts = wait_fleet(&[&c2], &victim, Duration::from_secs(20), |a| {
        a["alert"]["context"]["scan"]["phase"] == "start"
    });
    assert!(
        !alerts.is_empty(),
        "c2 did not take over c1's unacknowledged evidence"
    );
    c2.wait_for_log("claimed ", Duration::from_secs(5));
    // Nothing left unread or unacknowledged in any stream.
    for shard in 0..keys::SHARDS {
        for n in 1..=HOSTS {
            let key = keys::evidence_stream(shard, &format!("h{n}"));
            let info = lab.redis_cli(&["XINFO", "GROUPS", &key]);
            let lines: Vec<&str> = info.lines().map(str::trim).collect();
            let value = |name: &str| {
                lines
                    .iter()
                    .position(|l| *l == name)
                    .and_then(|i| lines.get(i + 1))
                    .copied()
                    .unwrap_or("?")
            };
            assert_eq!(
                (value("pending"), value("lag")),
                ("0", "0"),
                "{key}: {info}"
            );
        }
    }

    assert!(c2.stop().success());
    for mut sensor in sensors.drain(..) {
        assert!(sensor.stop().success());
    }
    drop(c1);
}
