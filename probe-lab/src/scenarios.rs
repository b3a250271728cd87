//! What the lab does to the detectors: real scanners, each bounded in probes and time
//! (docs/design.md, "Network safety"), and benign traffic that must not alarm anyone.

use anyhow::{Context as _, bail};

use std::{
    net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, UdpSocket},
    time::Duration,
};

use probe_netlab::{Listeners, inject, listeners::connect_from};

use crate::{
    tools::{bounded, client, craft, crowd, curl, hping3, macs, nmap, nmap_victim, trace, victim6},
    topology::{
        DECOYS, FTP_DATA_PORTS, GW_SCANNER, GatewayLab, HostLab, LAN_HOST1, LAN_SWEPT,
        ROTATING_ADDRS, ROTATING64, SCANNER, SCANNER_IF, SCANNER6, Topology, VICTIM, VICTIM_IF,
        VICTIM6, WAN_IF,
    },
};

/// Both topologies, built once for the whole run.
pub struct Lab {
    /// Scanner and victim.
    pub host: HostLab,
    /// Scanner, router and LAN.
    pub gateway: GatewayLab,
    pub(crate) victim_mac: String,
    pub(crate) scanner_mac: String,
    wan_mac: String,
}

impl Lab {
    /// Builds both topologies.
    pub fn new() -> anyhow::Result<Self> {
        let host = HostLab::new().context("building the host topology")?;
        let gateway = GatewayLab::new().context("building the gateway topology")?;
        let victim_mac = host.victim.mac(VICTIM_IF)?;
        let scanner_mac = host.scanner.mac(SCANNER_IF)?;
        let wan_mac = gateway.router.mac(WAN_IF)?;
        Ok(Self {
            host,
            gateway,
            victim_mac,
            scanner_mac,
            wan_mac,
        })
    }
}

/// One scenario of the matrix.
pub struct Scenario {
    /// Its row label.
    pub name: &'static str,
    /// What it sends, for the report.
    pub what: &'static str,
    /// Where it runs.
    pub topology: Topology,
    /// Benign traffic: any alert is a false alarm.
    pub benign: bool,
    /// Part of `--quick`.
    pub quick: bool,
    /// probe-detector's flags beyond the watch point's (most scenarios: none, the
    /// defaults); the scenario's `what` names them.
    pub flags: &'static [&'static str],
    /// Sends the traffic; returns when it is done.
    pub run: fn(&Lab) -> anyhow::Result<()>,
}

/// Every scenario, in report order.
pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "nmap -sS",
        what: "nmap -sS -T4 -p 1-1000 (SYN scan)",
        topology: Topology::Host,
        benign: false,
        quick: true,
        flags: &[],
        run: |lab| nmap_victim(lab, &["-sS", "-T4", "-p", "1-1000", VICTIM]),
    },
    Scenario {
        name: "nmap -sT",
        what: "nmap -sT -T4 -p 1-1000 (connect scan)",
        topology: Topology::Host,
        benign: false,
        quick: false,
        flags: &[],
        run: |lab| nmap_victim(lab, &["-sT", "-T4", "-p", "1-1000", VICTIM]),
    },
    Scenario {
        name: "nmap -sF",
        what: "nmap -sF -T4 -p 1-1000 (FIN scan)",
        topology: Topology::Host,
        benign: false,
        quick: false,
        flags: &[],
        run: |lab| nmap_victim(lab, &["-sF", "-T4", "-p", "1-1000", VICTIM]),
    },
    Scenario {
        name: "nmap -sN",
        what: "nmap -sN -T4 -p 1-1000 (NULL scan)",
        topology: Topology::Host,
        benign: false,
        quick: false,
        flags: &[],
        run: |lab| nmap_victim(lab, &["-sN", "-T4", "-p", "1-1000", VICTIM]),
    },
    Scenario {
        name: "nmap -sX",
        what: "nmap -sX -T4 -p 1-1000 (Xmas scan)",
        topology: Topology::Host,
        benign: false,
        quick: false,
        flags: &[],
        run: |lab| nmap_victim(lab, &["-sX", "-T4", "-p", "1-1000", VICTIM]),
    },
    Scenario {
        name: "nmap -sA",
        what: "nmap -sA -T4 -p 1-1000 (ACK scan)",
        topology: Topology::Host,
        benign: false,
        quick: false,
        flags: &[],
        run: |lab| nmap_victim(lab, &["-sA", "-T4", "-p", "1-1000", VICTIM]),
    },
    Scenario {
        name: "nmap -sU",
        what: "nmap -sU -T4 -p 1-200 (UDP scan)",
        topology: Topology::Host,
        benign: false,
        quick: true,
        flags: &[],
        run: |lab| nmap_victim(lab, &["-sU", "-T4", "-p", "1-200", VICTIM]),
    },
    Scenario {
        name: "nmap -6 -sS",
        what: "nmap -6 -sS -T4 -p 1-1000 (IPv6 SYN scan)",
        topology: Topology::Host,
        benign: false,
        quick: true,
        flags: &[],
        run: |lab| nmap_victim(lab, &["-6", "-sS", "-T4", "-p", "1-1000", VICTIM6]),
    },
    Scenario {
        name: "nmap -f (fragments)",
        what: "nmap -sS -f -T4 -p 1-1000 (SYN scan in 8-byte fragments)",
        topology: Topology::Host,
        benign: false,
        quick: false,
        flags: &[],
        run: |lab| nmap_victim(lab, &["-sS", "-f", "-T4", "-p", "1-1000", VICTIM]),
    },
    Scenario {
        name: "IPv6 fragmented SYNs",
        what: "100 SYNs to closed ports over IPv6, each in two fragments (8 bytes of TCP, then the rest), 5 ms apart (crafted: nmap -f has no IPv6)",
        topology: Topology::Host,
        benign: false,
        quick: false,
        flags: &[],
        run: |lab| {
            let macs = macs(lab)?;
            let (src, victim) = (SCANNER6.parse::<Ipv6Addr>()?.octets(), victim6()?);
            for port in 5000u16..5100 {
                let id = u32::from(port);
                let fragments =
                    inject::tcp6_fragments(macs, (src, 40_000), (victim, port), 0x02, id);
                inject::inject(&lab.host.scanner, SCANNER_IF, fragments.to_vec())?;
                std::thread::sleep(Duration::from_millis(5));
            }
            Ok(())
        },
    },
    Scenario {
        name: "nmap -sO",
        what: "nmap -sO -T4 -p 1-100 (IP protocol scan)",
        topology: Topology::Host,
        benign: false,
        quick: false,
        flags: &[],
        run: |lab| nmap_victim(lab, &["-sO", "-T4", "-p", "1-100", VICTIM]),
    },
    Scenario {
        name: "nmap -sY",
        what: "nmap -sY -T4 -p 1-1000 (SCTP INIT scan)",
        topology: Topology::Host,
        benign: false,
        quick: false,
        flags: &[],
        run: |lab| nmap_victim(lab, &["-sY", "-T4", "-p", "1-1000", VICTIM]),
    },
    Scenario {
        name: "20 sources, 1 port each",
        what: "20 addresses of the scanner's /24 send one SYN each to its own closed port, 100 ms apart (crafted)",
        topology: Topology::Host,
        benign: false,
        quick: false,
        flags: &[],
        run: |lab| {
            let macs = macs(lab)?;
            let victim = VICTIM.parse::<Ipv4Addr>()?.octets();
            let frames = crowd()
                .take(20)
                .zip(2000u16..)
                .map(|(src, port)| inject::tcp_syn(macs, src.octets(), victim, 40_000, port))
                .collect();
            craft(lab, frames, Duration::from_millis(100))
        },
    },
    Scenario {
        name: "/64 rotation",
        what: "30 SYNs to closed ports, each from a new address of one /64, 20 ms apart (crafted)",
        topology: Topology::Host,
        benign: false,
        quick: false,
        flags: &[],
        run: |lab| {
            let macs = macs(lab)?;
            let victim = victim6()?;
            let mut frames = Vec::new();
            for i in 1..=ROTATING_ADDRS {
                let src = format!("{ROTATING64}::{i:x}").parse::<Ipv6Addr>()?.octets();
                let port = 3000 + i;
                frames.push(inject::tcp6_frame(
                    macs,
                    (src, 40_000),
                    (victim, port),
                    0x02,
                    0,
                ));
            }
            craft(lab, frames, Duration::from_millis(20))
        },
    },
    Scenario {
        name: "IPv6 12-header chain",
        what: "30 SYNs to closed ports behind 12 destination options headers each, 20 ms apart (crafted)",
        topology: Topology::Host,
        benign: false,
        quick: false,
        flags: &[],
        run: |lab| {
            let macs = macs(lab)?;
            let (src, victim) = (SCANNER6.parse::<Ipv6Addr>()?.octets(), victim6()?);
            let frames = (4000u16..4030)
                .map(|port| inject::tcp6_frame(macs, (src, 40_000), (victim, port), 0x02, 12))
                .collect();
            craft(lab, frames, Duration::from_millis(20))
        },
    },
    Scenario {
        name: "nmap -T2",
        what: "nmap -sS -T2 -p 1-25 (polite: 0.4 s between probes)",
        topology: Topology::Host,
        benign: false,
        quick: false,
        flags: &[],
        run: |lab| nmap_victim(lab, &["-sS", "-T2", "-p", "1-25", VICTIM]),
    },
    Scenario {
        name: "nmap -D (decoys)",
        what: "nmap -sS -T4 -D 198.18.7.101,198.18.7.102,ME -p 1-100",
        topology: Topology::Host,
        benign: false,
        quick: true,
        flags: &[],
        run: |lab| {
            let decoys = format!("{},{},ME", DECOYS[0], DECOYS[1]);
            nmap_victim(lab, &["-sS", "-T4", "-D", &decoys, "-p", "1-100", VICTIM])
        },
    },
    Scenario {
        name: "nmap -sV",
        what: "nmap -sV --top-ports 20 --version-light -T4 (service scan)",
        topology: Topology::Host,
        benign: false,
        quick: false,
        flags: &[],
        run: |lab| {
            nmap_victim(
                lab,
                &["-sV", "--top-ports", "20", "--version-light", "-T4", VICTIM],
            )
        },
    },
    Scenario {
        name: "masscan",
        what: "masscan -p 1-1000 --rate 1000 (its own TCP stack)",
        topology: Topology::Host,
        benign: false,
        quick: false,
        flags: &[],
        run: |lab| {
            // masscan may spin after its scan (it answers every RST with its own): its
            // --wait bounds it, and `timeout` (exit 124) in case it does not stop.
            let ns = &lab.host.scanner;
            let args = [
                VICTIM,
                "-p",
                "1-1000",
                "--rate",
                "1000",
                "--wait",
                "2",
                "--interface",
                SCANNER_IF,
                "--adapter-ip",
                SCANNER,
                "--router-mac",
                &lab.victim_mac,
            ];
            let mut all = vec!["-k", "2", "8", "masscan"];
            all.extend_from_slice(&args);
            let status = ns.exec("timeout", &all).output()?.status;
            match status.code() {
                Some(0 | 124) => Ok(()),
                _ => bail!("masscan exited with {status}"),
            }
        },
    },
    Scenario {
        name: "hping3 SYN ports",
        what: "hping3 -S -p ++1 -c 200 -i u2000 (SYN to ports 1-200, 500/s)",
        topology: Topology::Host,
        benign: false,
        quick: true,
        flags: &[],
        run: |lab| {
            hping3(
                &lab.host.scanner,
                &["-q", "-S", "-p", "++1", "-c", "200", "-i", "u2000", VICTIM],
            )
        },
    },
    Scenario {
        name: "hping3 Xmas ports",
        what: "hping3 -F -P -U -p ++1 -c 200 -i u2000 (stealth Xmas to ports 1-200)",
        topology: Topology::Host,
        benign: false,
        quick: false,
        flags: &[],
        run: |lab| {
            hping3(
                &lab.host.scanner,
                &[
                    "-q", "-F", "-P", "-U", "-p", "++1", "-c", "200", "-i", "u2000", VICTIM,
                ],
            )
        },
    },
    Scenario {
        name: "nmap -sS via router",
        what: "nmap -sS -T4 -p 1-1000 198.18.9.1 through the router (a LAN host's ports)",
        topology: Topology::Gateway,
        benign: false,
        quick: true,
        flags: &[],
        run: |lab| {
            nmap(
                &lab.gateway.scanner,
                &["-sS", "-T4", "-Pn", "-p", "1-1000", LAN_HOST1],
            )
        },
    },
    Scenario {
        name: "nmap -sn sweep",
        what: "nmap -sn 198.18.9.0/27 through the router (echo, SYN 443, ACK 80, timestamp)",
        topology: Topology::Gateway,
        benign: false,
        quick: true,
        flags: &[],
        run: |lab| {
            nmap(
                &lab.gateway.scanner,
                &["-sn", "--max-retries", "0", LAN_SWEPT],
            )
        },
    },
    Scenario {
        name: "nmap -PS sweep",
        what: "nmap -sn -PS22,80,443 198.18.9.0/27 through the router",
        topology: Topology::Gateway,
        benign: false,
        quick: false,
        flags: &[],
        run: |lab| {
            nmap(
                &lab.gateway.scanner,
                &["-sn", "-PS22,80,443", "--max-retries", "0", LAN_SWEPT],
            )
        },
    },
    Scenario {
        name: "hping3 SYN sweep",
        what: "hping3 -S -p 22 --rand-dest 198.18.9.x -c 100 -i u5000 (random LAN hosts)",
        topology: Topology::Gateway,
        benign: false,
        quick: false,
        flags: &[],
        run: |lab| {
            hping3(
                &lab.gateway.scanner,
                &[
                    "-q",
                    "-S",
                    "-p",
                    "22",
                    "--rand-dest",
                    "-I",
                    SCANNER_IF,
                    "-c",
                    "100",
                    "-i",
                    "u5000",
                    "198.18.9.x",
                ],
            )
        },
    },
    Scenario {
        name: "zmap port 80",
        what: "zmap -p 80 198.18.9.0/27 -r 200 -n 32 (one port, the LAN)",
        topology: Topology::Gateway,
        benign: false,
        quick: false,
        flags: &[],
        run: |lab| {
            // zmap's default blocklist excludes 198.18.0.0/15; the lab's target is its own
            // namespace, named explicitly, so an empty blocklist is given instead.
            bounded(
                &lab.gateway.scanner,
                &[],
                "zmap",
                &[
                    "-q",
                    "-p",
                    "80",
                    "-i",
                    SCANNER_IF,
                    "-S",
                    GW_SCANNER,
                    "-G",
                    &lab.wan_mac,
                    "-r",
                    "200",
                    "-n",
                    "32",
                    "-c",
                    "2",
                    "-b",
                    "/dev/null",
                    "-o",
                    "/dev/null",
                    LAN_SWEPT,
                ],
            )
        },
    },
    Scenario {
        name: "HTTP clients",
        what: "100 HTTP requests to ports 80, 443 and 22, one connection each",
        topology: Topology::Host,
        benign: true,
        quick: true,
        flags: &[],
        run: |lab| {
            for port in [80, 443, 22] {
                let url = format!("http://{VICTIM}:{port}/[1-34]");
                curl(&lab.host.scanner, &[], &[&url])?;
            }
            Ok(())
        },
    },
    Scenario {
        name: "own failed connects",
        what: "the victim connects out to 10 closed ports of another host (refused)",
        topology: Topology::Host,
        benign: true,
        quick: true,
        flags: &[],
        run: |lab| {
            let url = format!("http://{SCANNER}:[8000-8009]/");
            curl(&lab.host.victim, &[7], &[&url])
        },
    },
    Scenario {
        name: "service discovery",
        what: "a client tries 8 services of the host at once (curl --parallel), as a mail client's set-up does: 3 answer (22, 80, 443), 5 refuse; probe-detector with --settle-successes (by default it alerts on this, as the peers do)",
        topology: Topology::Host,
        benign: true,
        quick: false,
        flags: &["--settle-successes"],
        run: |lab| {
            let urls: Vec<String> = [22, 25, 80, 110, 143, 443, 587, 993]
                .iter()
                .map(|p| format!("http://{VICTIM}:{p}/"))
                .collect();
            let mut args = vec!["--parallel", "--parallel-max", "8"];
            args.extend(urls.iter().map(String::as_str));
            // 7: could not connect (the refusals); 1 and 8: the listeners on 22 and 443
            // answer what curl does not take for HTTP.
            curl(&lab.host.scanner, &[1, 7, 8], &args)
        },
    },
    Scenario {
        name: "NAT burst",
        what: "300 HTTP requests, 64 at a time, from one address (clients behind a NAT), 2 refused",
        topology: Topology::Host,
        benign: true,
        quick: true,
        flags: &[],
        run: |lab| {
            let ok = format!("http://{VICTIM}/[1-300]");
            let refused = format!("http://{VICTIM}:8080/[1-2]");
            curl(
                &lab.host.scanner,
                &[7],
                &["--parallel", "--parallel-max", "64", &ok, &refused],
            )
        },
    },
    Scenario {
        name: "traceroute",
        what: "traceroute -n -w 1 (UDP probes, TTL 1 and up, ports 33434 and up)",
        topology: Topology::Host,
        benign: true,
        quick: false,
        flags: &[],
        run: |lab| trace(&lab.host.scanner, "traceroute", &["-n", "-w", "1", VICTIM]),
    },
    Scenario {
        name: "mtr -u",
        what: "mtr -u -n -r -c 3 (UDP mode, three rounds)",
        topology: Topology::Host,
        benign: true,
        quick: false,
        flags: &[],
        run: |lab| {
            trace(
                &lab.host.scanner,
                "mtr",
                &["-u", "-n", "-r", "-c", "3", "-i", "0.2", VICTIM],
            )
        },
    },
    Scenario {
        name: "tracepath",
        what: "tracepath -n -m 10 (UDP, path MTU discovery)",
        topology: Topology::Host,
        benign: true,
        quick: false,
        flags: &[],
        run: |lab| trace(&lab.host.scanner, "tracepath", &["-n", "-m", "10", VICTIM]),
    },
    Scenario {
        name: "traceroute -I",
        what: "traceroute -n -I -w 1 (ICMP echo probes, TTL 1 and up)",
        topology: Topology::Host,
        benign: true,
        quick: false,
        flags: &[],
        run: |lab| {
            trace(
                &lab.host.scanner,
                "traceroute",
                &["-n", "-I", "-w", "1", VICTIM],
            )
        },
    },
    Scenario {
        name: "traceroute -T",
        what: "traceroute -n -T -p 8080 -w 1 (TCP SYN probes to a closed port, TTL 1 and up)",
        topology: Topology::Host,
        benign: true,
        quick: false,
        flags: &[],
        run: |lab| {
            trace(
                &lab.host.scanner,
                "traceroute",
                &["-n", "-T", "-p", "8080", "-w", "1", VICTIM],
            )
        },
    },
    Scenario {
        name: "traceroute via router",
        what: "traceroute -n -w 1 to a LAN host through the router (UDP, 16 probes at once)",
        topology: Topology::Gateway,
        benign: true,
        quick: false,
        flags: &[],
        run: |lab| {
            trace(
                &lab.gateway.scanner,
                "traceroute",
                &["-n", "-w", "1", LAN_HOST1],
            )
        },
    },
    Scenario {
        name: "mtr -u via router",
        what: "mtr -u -n -r -c 3 to a LAN host through the router",
        topology: Topology::Gateway,
        benign: true,
        quick: false,
        flags: &[],
        run: |lab| {
            trace(
                &lab.gateway.scanner,
                "mtr",
                &["-u", "-n", "-r", "-c", "3", "-i", "0.2", LAN_HOST1],
            )
        },
    },
    Scenario {
        name: "scamper Paris",
        what: "scamper trace -P udp-paris -q 3 to a LAN host through the router (Paris traceroute: one flow)",
        topology: Topology::Gateway,
        benign: true,
        quick: false,
        flags: &[],
        run: |lab| {
            bounded(
                &lab.gateway.scanner,
                &[],
                "scamper",
                &["-c", "trace -P udp-paris -q 3 -m 10", "-i", LAN_HOST1],
            )
        },
    },
    Scenario {
        name: "service restart",
        what: "40 clients find a service down (port 8443 refused, twice each, within a second), then it is back and each connects",
        topology: Topology::Host,
        benign: true,
        quick: false,
        flags: &[],
        run: |lab| {
            for _ in 0..2 {
                for src in crowd() {
                    client(lab, src, 8443, true)?;
                }
            }
            let addr = SocketAddr::new(VICTIM.parse()?, 8443);
            let _service = Listeners::start(&lab.host.victim, &[addr], &[])?;
            for src in crowd() {
                client(lab, src, 8443, false)?;
            }
            Ok(())
        },
    },
    Scenario {
        name: "p2p churn",
        what: "40 peers send 3 UDP datagrams each to a peer-to-peer port that closed (51413)",
        topology: Topology::Host,
        benign: true,
        quick: false,
        flags: &[],
        run: |lab| {
            let victim: Ipv4Addr = VICTIM.parse()?;
            lab.host
                .scanner
                .within(move || {
                    for src in crowd() {
                        let socket = UdpSocket::bind(SocketAddrV4::new(src, 0))?;
                        for _ in 0..3 {
                            socket.send_to(b"d1:ad2:id20:", SocketAddrV4::new(victim, 51413))?;
                        }
                    }
                    anyhow::Ok(())
                })?
                .join()
                .map_err(|_| anyhow::anyhow!("the sending thread panicked"))?
        },
    },
    Scenario {
        name: "health checks",
        what: "2 load-balancer checkers try a closed port (8080) and an open one (80) every 100 ms for 3 s",
        topology: Topology::Host,
        benign: true,
        quick: false,
        flags: &[],
        run: |lab| {
            for _ in 0..30 {
                for src in crowd().take(2) {
                    client(lab, src, 8080, true)?;
                    client(lab, src, 80, false)?;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            Ok(())
        },
    },
    Scenario {
        name: "active-FTP callback",
        what: "the victim opens an FTP control connection, the server connects back from port 20 to 5 data ports",
        topology: Topology::Host,
        benign: true,
        quick: false,
        flags: &[],
        run: |lab| {
            curl(&lab.host.victim, &[], &[&format!("http://{SCANNER}:21/")])?;
            let server = SocketAddrV4::new(SCANNER.parse()?, 20);
            for port in FTP_DATA_PORTS {
                connect_from(
                    &lab.host.scanner,
                    server,
                    SocketAddrV4::new(VICTIM.parse()?, port),
                )?;
            }
            Ok(())
        },
    },
];
