//! The fleet's test network: a hub namespace that routes and runs Debian's redis-server
//! (one node, or a three-node Redis Cluster; plain or TLS with certificates made here by
//! openssl), host namespaces behind it, each with a web server, and a scanner namespace
//! with a source address in each of many /24s. Used by the fleet's lab test and by
//! `cargo xtask lab --fleet`.
//!
//! Addresses: Redis at 198.18.30.1 (the hub's loopback); host n at 198.18.(50 + n).2
//! (n from 1, at most 12); scanner sources 198.18.(64 + k).2 for k < 64, on one /18 link.

use std::{
    path::{Path, PathBuf},
    process::{Child, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::{Listeners, Netns, netns, veth};

/// Where Redis listens.
pub const REDIS_IP: &str = "198.18.30.1";
/// The correlators' Redis user and password.
pub const CORRELATOR_USER: &str = "correlator";
pub const CORRELATOR_PASSWORD: &str = "lab-correlator-secret";
/// The lab's own administrator (cluster set-up, inspection); never given to a detector.
const ADMIN_PASSWORD: &str = "lab-admin-secret";
/// Scanner sources available.
pub const SOURCES: u8 = 64;

/// How the lab runs Redis.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RedisMode {
    /// One server, plain TCP on 6379.
    Single,
    /// One server, TLS only on 6380.
    Tls,
    /// A Redis Cluster of three primaries on 7001-7003.
    Cluster,
}

/// Host n's address.
pub fn host_ip(n: usize) -> String {
    format!("198.18.{}.2", 50 + n)
}

/// Scanner source k (each in its own /24, so in its own shard's choosing).
pub fn source(k: u8) -> String {
    assert!(k < SOURCES, "source {k} of {SOURCES}");
    format!("198.18.{}.2", 64 + u16::from(k))
}

/// The ACL rules each role gets (the library's, passed in: this crate does not depend on
/// probe-userspace).
pub struct Acl {
    /// A sensor's rules, given its name.
    pub sensor: fn(&str) -> String,
    /// A correlator's rules.
    pub correlator: String,
}

/// See the module documentation.
pub struct FleetNet {
    pub hub: Netns,
    pub scanner: Netns,
    pub hosts: Vec<Netns>,
    /// Configurations, certificates, append-only files.
    pub dir: PathBuf,
    pub mode: RedisMode,
    redis: Vec<Child>,
    acl: Acl,
    _listeners: Vec<Listeners>,
}

impl FleetNet {
    /// `hosts` hosts behind the hub, Redis started in `mode`.
    pub fn new(hosts: usize, mode: RedisMode, acl: Acl, dir: &Path) -> anyhow::Result<Self> {
        if hosts == 0 || hosts > 12 {
            bail!("1 to 12 hosts, not {hosts}");
        }
        let hub = Netns::new("fhub")?;
        let scanner = Netns::new("fscan")?;
        hub.sysctl("net.ipv4.ip_forward=1")?;
        hub.ip(&["addr", "add", &format!("{REDIS_IP}/32"), "dev", "lo"])?;
        veth(&scanner, "scan0", &hub, "hs0")?;
        hub.addr("hs0", "198.18.64.1/18")?;
        for k in 0..SOURCES {
            scanner.addr("scan0", &format!("{}/18", source(k)))?;
        }
        scanner.ip(&["route", "add", "default", "via", "198.18.64.1"])?;
        let mut members = Vec::new();
        let mut listeners = Vec::new();
        for n in 1..=hosts {
            let host = Netns::new(&format!("fh{n}"))?;
            veth(&host, "eth0", &hub, &format!("hh{n}"))?;
            host.addr("eth0", &format!("{}/24", host_ip(n)))?;
            let gateway = format!("198.18.{}.1", 50 + n);
            host.ip(&["route", "add", "default", "via", &gateway])?;
            hub.addr(&format!("hh{n}"), &format!("{gateway}/24"))?;
            let web: std::net::SocketAddr = format!("{}:80", host_ip(n)).parse()?;
            listeners.push(Listeners::start(&host, &[web], &[])?);
            members.push(host);
        }
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).with_context(|| format!("cannot make {}", dir.display()))?;
        let mut net = Self {
            hub,
            scanner,
            hosts: members,
            dir: dir.to_path_buf(),
            mode,
            redis: Vec::new(),
            acl,
            _listeners: listeners,
        };
        if mode == RedisMode::Tls {
            net.make_certificates()?;
        }
        net.start_redis()?;
        Ok(net)
    }

    /// The ports Redis listens on.
    fn ports(&self) -> Vec<u16> {
        match self.mode {
            RedisMode::Single => vec![6379],
            RedisMode::Tls => vec![6380],
            RedisMode::Cluster => vec![7001, 7002, 7003],
        }
    }

    /// A CA, and a server certificate for 198.18.30.1 signed by it.
    fn make_certificates(&self) -> anyhow::Result<()> {
        let d = |name: &str| self.dir.join(name).to_string_lossy().into_owned();
        let openssl = |args: &[&str]| -> anyhow::Result<()> {
            netns::run(std::process::Command::new("openssl").args(args)).map(drop)
        };
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=probe-detector lab CA",
            "-keyout",
            &d("ca.key"),
            "-out",
            &d("ca.pem"),
        ])?;
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=lab redis",
            "-keyout",
            &d("redis.key"),
            "-out",
            &d("redis.csr"),
        ])?;
        std::fs::write(
            self.dir.join("san.ext"),
            format!("subjectAltName=IP:{REDIS_IP}\n"),
        )?;
        openssl(&[
            "x509",
            "-req",
            "-in",
            &d("redis.csr"),
            "-CA",
            &d("ca.pem"),
            "-CAkey",
            &d("ca.key"),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &d("san.ext"),
            "-out",
            &d("redis.pem"),
        ])
    }

    /// The CA a client needs for TLS.
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    fn config(&self, port: u16) -> String {
        let mut config = format!(
            "bind {REDIS_IP}\ndir {dir}\nsave \"\"\nappendonly yes\nappendfsync everysec\nappendfilename node-{port}.aof\nappenddirname aof-{port}\ndbfilename node-{port}.rdb\nuser default off\nuser admin on >{ADMIN_PASSWORD} ~* &* +@all\nuser {CORRELATOR_USER} on >{CORRELATOR_PASSWORD} {}\n",
            self.acl.correlator,
            dir = self.dir.display()
        );
        for n in 1..=self.hosts.len() {
            config.push_str(&format!(
                "user h{n} on >sensor-{n}-secret {}\n",
                (self.acl.sensor)(&format!("h{n}"))
            ));
        }
        match self.mode {
            RedisMode::Single => config.push_str(&format!("port {port}\n")),
            RedisMode::Tls => config.push_str(&format!(
                "port 0\ntls-port {port}\ntls-cert-file {dir}/redis.pem\ntls-key-file {dir}/redis.key\ntls-ca-cert-file {dir}/ca.pem\ntls-auth-clients no\n",
                dir = self.dir.display()
            )),
            RedisMode::Cluster => config.push_str(&format!(
                "port {port}\ncluster-enabled yes\ncluster-config-file nodes-{port}.conf\ncluster-node-timeout 2000\nmasteruser admin\nmasterauth {ADMIN_PASSWORD}\n"
            )),
        }
        config
    }

    /// Starts Redis (every node; a cluster is created) and waits until it answers.
    pub fn start_redis(&mut self) -> anyhow::Result<()> {
        for port in self.ports() {
            let path = self.dir.join(format!("redis-{port}.conf"));
            std::fs::write(&path, self.config(port))?;
            let child = self
                .hub
                .exec("redis-server", &[&path.to_string_lossy()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("cannot start redis-server")?;
            self.redis.push(child);
        }
        let started = Instant::now();
        for port in self.ports() {
            while self.cli_at(port, &["PING"]).trim() != "PONG" {
                if started.elapsed() > Duration::from_secs(10) {
                    bail!("redis-server on port {port} does not answer");
                }
                thread::sleep(Duration::from_millis(50));
            }
        }
        if self.mode == RedisMode::Cluster {
            self.create_cluster()?;
        }
        Ok(())
    }

    fn create_cluster(&self) -> anyhow::Result<()> {
        let state = self.cli_at(7001, &["CLUSTER", "INFO"]);
        if state.contains("cluster_state:ok") {
            return Ok(());
        }
        let nodes: Vec<String> = self
            .ports()
            .iter()
            .map(|p| format!("{REDIS_IP}:{p}"))
            .collect();
        let mut args = vec![
            "--user",
            "admin",
            "--pass",
            ADMIN_PASSWORD,
            "--no-auth-warning",
            "--cluster",
            "create",
        ];
        args.extend(nodes.iter().map(String::as_str));
        args.extend(["--cluster-replicas", "0", "--cluster-yes"]);
        netns::run(&mut self.hub.exec("redis-cli", &args))?;
        let started = Instant::now();
        while !self
            .cli_at(7001, &["CLUSTER", "INFO"])
            .contains("cluster_state:ok")
        {
            if started.elapsed() > Duration::from_secs(15) {
                bail!("the Redis Cluster did not come up");
            }
            thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    /// Stops Redis as its service would (SIGTERM: the append-only files are written).
    pub fn stop_redis(&mut self) {
        for mut child in self.redis.drain(..) {
            // SAFETY: kill with a pid we own and a valid signal number.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
            let _ = child.wait();
        }
    }

    /// redis-cli as the lab's administrator, at the first node; its stdout.
    pub fn cli(&self, args: &[&str]) -> String {
        self.cli_at(self.ports()[0], args)
    }

    fn cli_at(&self, port: u16, args: &[&str]) -> String {
        let port = port.to_string();
        let mut all = vec![
            "-h",
            REDIS_IP,
            "-p",
            &port,
            "--user",
            "admin",
            "--pass",
            ADMIN_PASSWORD,
            "--no-auth-warning",
        ];
        let ca = self.ca().to_string_lossy().into_owned();
        if self.mode == RedisMode::Tls {
            all.extend(["--tls", "--cacert", &ca]);
        }
        if self.mode == RedisMode::Cluster {
            all.push("-c");
        }
        all.extend_from_slice(args);
        match self.hub.exec("redis-cli", &all).output() {
            Ok(out) => String::from_utf8_lossy(&out.stdout).into_owned(),
            Err(_) => String::new(),
        }
    }

    fn url(&self, user: &str, password: &str) -> String {
        let scheme = if self.mode == RedisMode::Tls {
            "rediss"
        } else {
            "redis"
        };
        format!(
            "{scheme}://{user}:{password}@{REDIS_IP}:{}",
            self.ports()[0]
        )
    }

    /// The lab administrator's URL (for inspection and benchmarks, never a detector's).
    pub fn admin_url(&self) -> String {
        self.url("admin", ADMIN_PASSWORD)
    }

    /// The whole command line of host n's sensor: it watches `eth0` as `hN`, with
    /// `--block` (its control socket in the lab's directory) and its `--fleet` arguments.
    pub fn sensor_command(&self, n: usize) -> Vec<String> {
        let socket = self.dir.join(format!("h{n}.sock"));
        let mut args: Vec<String> = ["--iface", "eth0", "--sensor-name", &format!("h{n}")]
            .map(str::to_owned)
            .to_vec();
        args.extend([
            "--block".to_owned(),
            "--control-socket".to_owned(),
            socket.to_string_lossy().into_owned(),
        ]);
        args.extend(self.sensor_args(n));
        args
    }

    /// The `--fleet` arguments of host n's sensor (its name is `hN`).
    pub fn sensor_args(&self, n: usize) -> Vec<String> {
        self.fleet_args(&format!("h{n}"), &format!("sensor-{n}-secret"))
    }

    /// The `--fleet` arguments of a correlator.
    pub fn correlator_args(&self) -> Vec<String> {
        self.fleet_args(CORRELATOR_USER, CORRELATOR_PASSWORD)
    }

    fn fleet_args(&self, user: &str, password: &str) -> Vec<String> {
        let mut args = vec!["--fleet".to_owned(), self.url(user, password)];
        if self.mode == RedisMode::Tls {
            args.push("--fleet-ca".to_owned());
            args.push(self.ca().to_string_lossy().into_owned());
        }
        args
    }

    /// Every host's address.
    pub fn host_ips(&self) -> Vec<String> {
        (1..=self.hosts.len()).map(host_ip).collect()
    }

    /// An HTTP client at `src` fetches every host's page; an error names a host that did
    /// not answer.
    pub fn curl_hosts(&self, src: &str) -> anyhow::Result<()> {
        for host in self.host_ips() {
            let url = format!("http://{host}/");
            let args = [
                "-s",
                "-o",
                "/dev/null",
                "--interface",
                src,
                "--max-time",
                "5",
                &url,
            ];
            netns::run(&mut self.scanner.exec("curl", &args))
                .with_context(|| format!("curl of {host} from {src}"))?;
        }
        Ok(())
    }

    /// nmap from `src` through the scanner's link (no retries, bounded); its grepable
    /// output.
    pub fn nmap(&self, src: &str, args: &[&str]) -> anyhow::Result<String> {
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
        let out = netns::run(&mut self.scanner.exec("nmap", &all))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Drop for FleetNet {
    fn drop(&mut self) {
        for mut child in self.redis.drain(..) {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
