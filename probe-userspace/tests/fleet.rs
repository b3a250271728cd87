//! The fleet's lab tests: eight host namespaces, each a sensor (`--fleet --block`) with a
//! web server, behind a hub namespace that routes, runs Debian's redis-server (ACL users
//! per role, append-only file) and the correlators; scanners in a namespace of their own
//! (`probe_netlab::fleet`).
//! 198.18.0.0/15 only, everything deleted when the test ends. Needs root, nmap, curl and
//! redis-server (`cargo xtask test` installs them).

use std::{
    collections::BTreeSet,
    net::IpAddr,
    thread,
    time::{Duration, Instant},
};

#[path = "common/detector.rs"]
mod detector;
#[path = "common/eve.rs"]
mod eve;

use detector::Detector;
use probe_netlab::{
    fleet::{self, Acl, FleetNet, RedisMode},
    require_root, require_tool,
};
use probe_userspace::fleet::keys;
use serde_json::Value;

const HOSTS: usize = 8;

/// One fleet lab at a time: they share the hub's address and two cores.
static LAB: std::sync::Mutex<()> = std::sync::Mutex::new(());

struct FleetLab {
    net: FleetNet,
    _lock: std::sync::MutexGuard<'static, ()>,
}

impl FleetLab {
    fn new(mode: RedisMode, hosts: usize) -> Self {
        let lock = LAB.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let dir = std::env::temp_dir().join(format!("pdlab-fleet-{}-{mode:?}", std::process::id()));
        let acl = Acl {
            sensor: keys::sensor_acl,
            correlator: keys::correlator_acl(),
        };
        Self {
            net: FleetNet::new(hosts, mode, acl, &dir).unwrap_or_else(|err| panic!("{err:#}")),
            _lock: lock,
        }
    }

    fn sensor(&self, n: usize) -> Detector {
        let args = self.net.sensor_command(n);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut detector = Detector::start(&self.net.hosts[n - 1], &args);
        detector.wait_for_log("fleet: publishing evidence", Duration::from_secs(10));
        detector
    }

    fn correlator(&self, name: &str) -> Detector {
        let mut args: Vec<String> = [
            "correlate",
            "--sensor-name",
            name,
            "--block",
            "--idle-timeout",
            "3",
        ]
        .map(str::to_owned)
        .to_vec();
        args.extend(self.net.correlator_args());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Detector::spawn_until(
            self.net
                .hub
                .exec(env!("CARGO_BIN_EXE_probe-detector"), &args),
            " target shards ",
        )
    }

    fn nmap(&self, src: &str, args: &[&str]) -> String {
        self.net
            .nmap(src, args)
            .unwrap_or_else(|err| panic!("{err:#}"))
    }

    fn redis_cli(&self, args: &[&str]) -> String {
        self.net.cli(args)
    }
}

fn all_hosts() -> Vec<String> {
    (1..=HOSTS).map(fleet::host_ip).collect()
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

/// The source shards a correlator says it owns, from its latest `owns` line.
fn owned_shards(correlator: &Detector) -> Vec<u16> {
    let log = correlator.stderr.lock().unwrap();
    let Some(line) = log.iter().rev().find(|l| l.contains(" source shards ")) else {
        return Vec::new();
    };
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
    let mut lab = FleetLab::new(RedisMode::Single, HOSTS);
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
    let client = fleet::source(1);
    lab.net
        .curl_hosts(&client)
        .unwrap_or_else(|err| panic!("{err:#}"));

    // A sweep of one closed port, one probe per host: no host sees more than one probe.
    let sweeper = fleet::source(0);
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
    // A sensor that joins later gets the blocks in force.
    assert!(sensors[HOSTS - 1].stop().success());
    sensors[HOSTS - 1] = lab.sensor(HOSTS);
    sensors[HOSTS - 1].wait_for_log(&format!("fleet block of {sweeper}"), Duration::from_secs(5));
    // The client was never blocked.
    let answered = ports_answered(&lab.nmap(&client, &web));
    assert_eq!(answered, HOSTS, "a client of the fleet was blocked");
    assert!(fleet_alerts(&[&c1, &c2], &client).is_empty());

    // A strobe: three ports on every host.
    let strober = fleet::source(2);
    let mut strobe = vec!["-sS", "-p", "21,23,25"];
    strobe.extend(hosts.iter().map(String::as_str));
    lab.nmap(&strober, &strobe);
    let alerts = wait_fleet(&[&c1, &c2], &strober, Duration::from_secs(10), |_| true);
    assert!(!alerts.is_empty(), "the strobe scan was not found");

    // A distributed scan (nmap's decoys) of one host, on ports nothing else probed: its
    // sources fall in source shards of
    // both correlators; the second stage, by target, sees them all in one incident.
    let of = |c: &Detector| owned_shards(c);
    let (c1_now, c2_now) = (of(&c1), of(&c2));
    let in_shards = |shards: &[u16]| {
        (10..40u8)
            .map(fleet::source)
            .filter(|s| shards.contains(&keys::shard_of(s.parse::<IpAddr>().unwrap())))
            .collect::<Vec<_>>()
    };
    let (ones, twos) = (in_shards(&c1_now), in_shards(&c2_now));
    assert!(
        ones.len() >= 2 && !twos.is_empty(),
        "c1 {c1_now:?}, c2 {c2_now:?}"
    );
    let decoys = format!("{},{},ME", ones[1], twos[0]);
    let decoyed = ones[0].clone();
    lab.nmap(
        &decoyed,
        &["-sS", "-D", &decoys, "-p", "100-130", &fleet::host_ip(2)],
    );
    let started = Instant::now();
    let distributed = loop {
        let found: Vec<Value> = [&c1, &c2]
            .iter()
            .flat_map(|c| c.alerts())
            .filter(|a| a["alert"]["context"]["scan"]["kind"] == "distributed")
            .collect();
        if !found.is_empty() || started.elapsed() > Duration::from_secs(10) {
            break found;
        }
        thread::sleep(Duration::from_millis(50));
    };
    let start = distributed
        .iter()
        .find(|a| a["alert"]["context"]["scan"]["phase"] == "start")
        .unwrap_or_else(|| panic!("no distributed fleet alert: {distributed:#?}"));
    assert_eq!(start["dest_ip"], fleet::host_ip(2).as_str(), "{start}");
    let mut expected = vec![ones[0].clone(), ones[1].clone(), twos[0].clone()];
    expected.sort();
    assert_eq!(
        start["alert"]["context"]["src_ips"],
        serde_json::json!(expected),
        "{start}"
    );

    // Redis away for 10 s: a host alerts on its own scan meanwhile; the sweep made during
    // the outage reaches the fleet once Redis is back.
    lab.net.stop_redis();
    let outage = Instant::now();
    let local = fleet::source(3);
    lab.nmap(&local, &["-sS", "-p", "1-100", &fleet::host_ip(1)]);
    let seen = sensors[0].wait_for_alert(Duration::from_secs(5), |a| a["src_ip"] == local.as_str());
    assert!(
        seen.iter().any(|a| a["src_ip"] == local.as_str()),
        "no local alert while Redis was away"
    );
    let late = fleet::source(4);
    let mut sweep = vec!["-sS", "-p", "23"];
    sweep.extend(hosts.iter().map(String::as_str));
    lab.nmap(&late, &sweep);
    thread::sleep(Duration::from_secs(10).saturating_sub(outage.elapsed()));
    eprintln!("Redis away for {:?}", outage.elapsed());
    lab.net.start_redis().unwrap();
    let alerts = wait_fleet(&[&c1, &c2], &late, Duration::from_secs(30), |a| {
        a["alert"]["context"]["scan"]["phase"] == "start"
    });
    assert!(
        !alerts.is_empty(),
        "the sweep made while Redis was away never reached the fleet"
    );
    // And the alert h1 wrote meanwhile is in its alert stream.
    let published = lab.redis_cli(&["XRANGE", &keys::alert_stream("h1"), "-", "+"]);
    assert!(published.contains(&local), "{published}");
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
    let victim = (40..fleet::SOURCES)
        .map(fleet::source)
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

#[test]
fn a_fleet_over_tls_with_a_private_ca_alerts() {
    if !require_root("fleet lab, TLS") {
        return;
    }
    for tool in ["nmap", "redis-server", "redis-cli", "openssl"] {
        require_tool(tool);
    }
    let hosts = 4;
    let lab = FleetLab::new(RedisMode::Tls, hosts);
    let sensors: Vec<Detector> = (1..=hosts).map(|n| lab.sensor(n)).collect();
    // The password stays out of the log.
    let log = sensors[0].stderr.lock().unwrap().join("\n");
    assert!(log.contains("rediss://h1:***@"), "{log}");
    assert!(!log.contains("sensor-1-secret"), "{log}");
    drop(log);
    let c1 = lab.correlator("c1");
    let sweeper = fleet::source(9);
    let targets = lab.net.host_ips();
    let mut args = vec!["-sS", "-p", "22"];
    args.extend(targets.iter().map(String::as_str));
    lab.nmap(&sweeper, &args);
    let alerts = wait_fleet(&[&c1], &sweeper, Duration::from_secs(10), |a| {
        a["alert"]["context"]["scan"]["phase"] == "start"
    });
    assert!(!alerts.is_empty(), "no fleet alert over TLS");
    assert_eq!(sensors_named(&alerts[0]).len(), hosts, "{:#}", alerts[0]);
}
