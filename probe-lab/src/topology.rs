//! The two lab networks. Host: a scanner and a victim with real listeners on one veth pair.
//! Gateway: a scanner, a router watching its outside interface, and a LAN bridge with two
//! hosts (one with a filtering firewall) in a /24 where every other address is silent.
//! Both carry iptables LOG rules for psad that log and never drop.

use std::net::IpAddr;

use anyhow::Context as _;

use probe_netlab::{Listeners, Netns, veth};

/// The host topology's addresses.
pub const SCANNER: &str = "198.18.7.1";
pub const VICTIM: &str = "198.18.7.2";
pub const SCANNER6: &str = "2001:db8:7::1";
pub const VICTIM6: &str = "2001:db8:7::2";
/// Addresses nmap's decoys use: they exist only on the scanner's veth, so the victim's
/// answers to them are delivered like a real host's.
pub const DECOYS: [&str; 2] = ["198.18.7.101", "198.18.7.102"];
/// Last bytes of the scanner's extra addresses in 198.18.7.0/24 (as /32s, so the kernel
/// never picks one as a source): many-source scans and crowds of clients send from them.
pub const CROWD: std::ops::RangeInclusive<u8> = 150..=189;
/// A /64 of the scanner's, apart from the victim's (which it would otherwise share), and
/// how many of its addresses are configured (`ROTATING64::1` and up).
pub const ROTATING64: &str = "2001:db8:7:1";
pub const ROTATING_ADDRS: u16 = 30;
/// The victim's interface, where the detectors watch.
pub const VICTIM_IF: &str = "vic0";
/// The scanner's interface.
pub const SCANNER_IF: &str = "scan0";
/// TCP services of the victim (and UDP 53).
pub const VICTIM_TCP: [u16; 3] = [22, 80, 443];
/// Ports where the victim, as an active-FTP client, takes data connections.
pub const FTP_DATA_PORTS: std::ops::RangeInclusive<u16> = 50_000..=50_004;

/// The gateway topology's addresses.
pub const GW_SCANNER: &str = "198.18.8.1";
pub const GW_WAN: &str = "198.18.8.254";
pub const LAN: &str = "198.18.9.0/24";
pub const LAN_SWEPT: &str = "198.18.9.0/27";
pub const LAN_HOST1: &str = "198.18.9.1";
pub const LAN_HOST2: &str = "198.18.9.2";
/// The router's outside interface, where the detectors watch.
pub const WAN_IF: &str = "wan0";

/// Which network a scenario runs in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Topology {
    /// Scanner and victim.
    Host,
    /// Scanner, router, LAN.
    Gateway,
}

/// The host topology, up.
pub struct HostLab {
    /// Where scans come from.
    pub scanner: Netns,
    /// Where the detectors run.
    pub victim: Netns,
    _listeners: Vec<Listeners>,
}

impl HostLab {
    /// Builds it: addresses, decoys, listeners (victim: TCP 22, 80, 443, UDP 53, FTP data
    /// ports; scanner: TCP 21 as an FTP server's control port), psad's LOG rules.
    pub fn new() -> anyhow::Result<Self> {
        let scanner = Netns::new("scan")?;
        let victim = Netns::new("vict")?;
        veth(&scanner, SCANNER_IF, &victim, VICTIM_IF)?;
        scanner.addr(SCANNER_IF, &format!("{SCANNER}/24"))?;
        scanner.addr(SCANNER_IF, &format!("{SCANNER6}/64"))?;
        for decoy in DECOYS {
            scanner.addr(SCANNER_IF, &format!("{decoy}/24"))?;
        }
        for last in CROWD {
            scanner.addr(SCANNER_IF, &format!("198.18.7.{last}/32"))?;
        }
        for i in 1..=ROTATING_ADDRS {
            scanner.addr(SCANNER_IF, &format!("{ROTATING64}::{i:x}/64"))?;
        }
        victim.addr(VICTIM_IF, &format!("{VICTIM}/24"))?;
        victim.addr(VICTIM_IF, &format!("{VICTIM6}/64"))?;
        // The scanner's other /64 is on the link too.
        victim.ip(&[
            "-6",
            "route",
            "add",
            &format!("{ROTATING64}::/64"),
            "dev",
            VICTIM_IF,
        ])?;
        // Closed UDP ports answer at once, not one ICMP error a second.
        victim.sysctl("net.ipv4.icmp_ratelimit=0")?;
        victim.sysctl("net.ipv6.icmp.ratelimit=0")?;
        let addr = |ip: &str, port: u16| -> anyhow::Result<std::net::SocketAddr> {
            Ok(std::net::SocketAddr::new(ip.parse::<IpAddr>()?, port))
        };
        let mut tcp = Vec::new();
        for ip in [VICTIM, VICTIM6] {
            for port in VICTIM_TCP {
                tcp.push(addr(ip, port)?);
            }
        }
        for port in FTP_DATA_PORTS {
            tcp.push(addr(VICTIM, port)?);
        }
        let udp = vec![addr(VICTIM, 53)?, addr(VICTIM6, 53)?];
        let listeners = vec![
            Listeners::start(&victim, &tcp, &udp)?,
            Listeners::start(&scanner, &[addr(SCANNER, 21)?], &[])?,
        ];
        let services = format!(
            "{},{}:{}",
            VICTIM_TCP.map(|p| p.to_string()).join(","),
            FTP_DATA_PORTS.start(),
            FTP_DATA_PORTS.end()
        );
        log_rules(&victim, "INPUT", &services, "53")?;
        Ok(Self {
            scanner,
            victim,
            _listeners: listeners,
        })
    }
}

/// The gateway topology, up.
pub struct GatewayLab {
    /// Where sweeps come from.
    pub scanner: Netns,
    /// Forwards between the scanner's side and the LAN; the detectors run here.
    pub router: Netns,
    _hosts: Vec<Netns>,
    _listeners: Vec<Listeners>,
}

impl GatewayLab {
    /// Builds it: host 1 serves TCP 22 and 80; host 2 serves 80 and drops the rest
    /// (filtered); 198.18.9.3-.253 answer nothing (the router's ARP fails).
    pub fn new() -> anyhow::Result<Self> {
        let scanner = Netns::new("gwscan")?;
        let router = Netns::new("router")?;
        let host1 = Netns::new("lan1")?;
        let host2 = Netns::new("lan2")?;
        veth(&scanner, SCANNER_IF, &router, WAN_IF)?;
        router.ip(&["link", "add", "br0", "type", "bridge"])?;
        router.ip(&["link", "set", "br0", "up"])?;
        for (i, host) in [&host1, &host2].into_iter().enumerate() {
            let port = format!("lan{i}");
            veth(&router, &port, host, "eth0")?;
            router.ip(&["link", "set", &port, "master", "br0"])?;
            host.addr("eth0", &format!("198.18.9.{}/24", i + 1))?;
            host.ip(&["route", "add", "default", "via", "198.18.9.254"])?;
        }
        scanner.addr(SCANNER_IF, &format!("{GW_SCANNER}/24"))?;
        scanner.ip(&["route", "add", LAN, "via", GW_WAN])?;
        router.addr(WAN_IF, &format!("{GW_WAN}/24"))?;
        router.addr("br0", "198.18.9.254/24")?;
        router.sysctl("net.ipv4.ip_forward=1")?;
        router.sysctl("net.ipv4.icmp_ratelimit=0")?;
        let sock = |ip: &str, port: u16| -> anyhow::Result<std::net::SocketAddr> {
            Ok(std::net::SocketAddr::new(ip.parse::<IpAddr>()?, port))
        };
        let listeners = vec![
            Listeners::start(&host1, &[sock(LAN_HOST1, 22)?, sock(LAN_HOST1, 80)?], &[])?,
            Listeners::start(&host2, &[sock(LAN_HOST2, 80)?], &[])?,
        ];
        // Host 2 filters: only its web server and its own connections get through.
        firewall(&host2, "iptables", "INPUT", "80", None, &["-j", "DROP"])
            .context("host 2's firewall")?;
        log_rules(&router, "FORWARD", "22,80", "53")?;
        log_rules(&router, "INPUT", "22,80", "53")?;
        Ok(Self {
            scanner,
            router,
            _hosts: vec![host1, host2],
            _listeners: listeners,
        })
    }
}

/// psad's input: in `chain`, accept loopback, established traffic and the real services,
/// then LOG everything else with the prefix psad looks for. Nothing is dropped: closed
/// ports answer as they would without the rules.
fn log_rules(
    ns: &Netns,
    chain: &str,
    tcp_services: &str,
    udp_services: &str,
) -> anyhow::Result<()> {
    // Neighbour and router discovery is how IPv6 works, not a probe: a firewall accepts it.
    for kind in [
        "router-solicitation",
        "router-advertisement",
        "neighbour-solicitation",
        "neighbour-advertisement",
    ] {
        let rule = [
            "-A",
            chain,
            "-p",
            "ipv6-icmp",
            "--icmpv6-type",
            kind,
            "-j",
            "ACCEPT",
        ];
        ns.run("ip6tables", &rule)?;
    }
    let log = [
        "-j",
        "LOG",
        "--log-prefix",
        "DROP ",
        "--log-ip-options",
        "--log-tcp-options",
    ];
    for tool in ["iptables", "ip6tables"] {
        firewall(ns, tool, chain, tcp_services, Some(udp_services), &log)
            .with_context(|| format!("{tool} rules for psad in {}", ns.name))?;
    }
    Ok(())
}

/// A host firewall in `chain`: accept loopback, established traffic and the TCP (and UDP)
/// services, then `last` (`-j TARGET ...`) for everything else.
fn firewall(
    ns: &Netns,
    tool: &str,
    chain: &str,
    tcp_services: &str,
    udp_services: Option<&str>,
    last: &[&str],
) -> anyhow::Result<()> {
    let established = ["-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED"];
    let mut rules: Vec<Vec<&str>> = vec![
        vec!["-i", "lo", "-j", "ACCEPT"],
        [&established[..], &["-j", "ACCEPT"]].concat(),
        vec![
            "-p",
            "tcp",
            "-m",
            "multiport",
            "--dports",
            tcp_services,
            "-j",
            "ACCEPT",
        ],
    ];
    if let Some(udp) = udp_services {
        rules.push(vec![
            "-p",
            "udp",
            "-m",
            "multiport",
            "--dports",
            udp,
            "-j",
            "ACCEPT",
        ]);
    }
    rules.push(last.to_vec());
    for rule in rules {
        ns.run(tool, &[&["-A", chain][..], &rule].concat())?;
    }
    Ok(())
}

/// Whether `ip` is one of the host topology's victim addresses.
pub fn is_victim(ip: IpAddr) -> bool {
    [VICTIM, VICTIM6]
        .iter()
        .any(|v| v.parse::<IpAddr>().is_ok_and(|v| v == ip))
}

/// Whether `ip` is in the gateway topology's LAN (198.18.9.0/24).
pub fn is_lan(ip: IpAddr) -> bool {
    matches!(ip, IpAddr::V4(v4) if v4.octets()[..3] == [198, 18, 9])
}
