//! Who is never blocked, and why: the reasons a source is spared ([`Spared`]), who asks
//! for a block ([`Asker`]: a scan, whose frames came from some link-layer address, or the
//! operator), and the never-block list of the policy ([`BlockPolicy`]), in userspace and in
//! the form of the kernel's `PROTECTED` trie. Pure logic; the block lists themselves are
//! [`crate::policy::block`]'s. See docs/blocking.md.

use std::{collections::BTreeMap, fmt, net::IpAddr, time::Duration};

use probe_common::{Protection, protect};

use crate::{detect::ScanAlert, net::cidr::Cidr};

/// Why an address is not blocked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Spared {
    /// In an allow-listed source network.
    AllowListed,
    /// One of the watched interfaces' own addresses.
    Ours,
    /// In a home net.
    HomeNet,
    /// A gateway of this host's routes.
    Gateway,
    /// A DNS resolver of this host.
    Resolver,
    /// An on-link neighbour with link-layer address `mac`, and the scan's frames came from
    /// another one: forged, through a router or by another host of the link. (A
    /// neighbour's own frames are its own scan: it is blocked like any scanner.)
    Neighbour { mac: [u8; 6] },
    /// A host that answered a connection this host started, within [`PEER_MEMORY`].
    Peer,
    /// Loopback, unspecified, multicast or broadcast: not a host that sends probes.
    NotAHost,
    /// The scan's sources may be forged (decoys, martians) and `--block-spoofed` is off:
    /// blocking them would block innocent addresses.
    LikelySpoofed,
    /// One of many sources of a spread scan, each with one or two probes: anyone can
    /// forge those, and blocking them stops nothing (they send no more). Never blocked,
    /// even with `--block-spoofed`.
    Spread,
    /// The kernel's verdict came on a probe the traceroute filter holds back (a UDP
    /// failure at a low TTL): a traceroute's probes reaching this host fail on ever new
    /// ports too. The source is blocked only if its probes turn out a scan.
    Traceroute,
    /// `--block-rate` new automatic blocks a second were made already.
    BlockRate,
    /// Its /24 or /48 holds `--block-prefix-cap` automatic blocks already.
    PrefixCap,
    /// A correlator's verdict backed by fewer than `--fleet-min-sensors` sensors: one
    /// sensor (which may be compromised, or fed forged packets) cannot drive fleet blocks.
    FewSensors,
}

impl fmt::Display for Spared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Spared::AllowListed => "allow-listed",
            Spared::Ours => "one of our own addresses",
            Spared::HomeNet => "in a home net",
            Spared::Gateway => "a gateway of this host",
            Spared::Resolver => "a DNS resolver of this host",
            Spared::Neighbour { .. } => {
                "an on-link neighbour, and the scan's frames did not come from its link-layer address (forged)"
            }
            Spared::Peer => "a peer: it answered a connection this host started",
            Spared::NotAHost => "loopback, unspecified, multicast or broadcast",
            Spared::LikelySpoofed => "likely spoofed (--block-spoofed is off)",
            Spared::Spread => {
                "one of many sources of one or two probes each (a spread scan, forgeable)"
            }
            Spared::Traceroute => {
                "its probes look like a traceroute's (UDP, low TTL) until they show a scan"
            }
            Spared::BlockRate => "over the budget of new automatic blocks (--block-rate)",
            Spared::PrefixCap => "its network holds --block-prefix-cap automatic blocks already",
            Spared::FewSensors => {
                "seen by fewer sensors than --fleet-min-sensors: one sensor alone cannot drive fleet blocks"
            }
        })
    }
}

/// Who asks for a block: it decides which reasons apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Asker {
    /// A scan whose frames came from this link-layer address (`None`: not known).
    Scan { mac: Option<[u8; 6]> },
    /// The operator (`block add`, or a block by hand restored at start).
    Operator,
    /// A review of a block in force after the never-block list changed: a neighbour lifts
    /// none (the block was made on its own frames).
    Review,
}

impl Spared {
    /// The reason bit of a protected prefix, for the kernel's trie (`None`: not a prefix
    /// reason).
    pub(crate) fn bit(self) -> Option<u32> {
        Some(match self {
            Spared::AllowListed => protect::ALLOWED,
            Spared::Ours => protect::OURS,
            Spared::HomeNet => protect::HOME,
            Spared::Gateway => protect::GATEWAY,
            Spared::Resolver => protect::RESOLVER,
            Spared::Neighbour { .. } => protect::NEIGHBOUR,
            _ => return None,
        })
    }

    /// Whether this reason also refuses a block made by hand: the operator may block a
    /// neighbour, a home host or a peer, never our own addresses, gateways, resolvers or
    /// allow-listed sources.
    fn binds_operator(self) -> bool {
        matches!(
            self,
            Spared::AllowListed
                | Spared::Ours
                | Spared::Gateway
                | Spared::Resolver
                | Spared::NotAHost
        )
    }
}

/// Who gets blocked, and for how long.
#[derive(Clone, Debug)]
pub struct BlockPolicy {
    /// How long a block lasts.
    pub ttl: Duration,
    /// Block the sources of scans whose sources may be forged.
    pub block_spoofed: bool,
    /// Never blocked, with why.
    pub never: Vec<(Cidr, Spared)>,
}

impl BlockPolicy {
    /// Why `addr` must not be blocked at `asker`'s request, if it must not, by the
    /// policy's own list.
    pub fn spared(&self, addr: IpAddr, asker: Asker) -> Option<Spared> {
        let addr = canonical(addr);
        if not_a_host(addr) {
            return Some(Spared::NotAHost);
        }
        self.never
            .iter()
            .filter(|(net, _)| net.contains(addr))
            .map(|(_, why)| *why)
            .find(|why| applies(*why, asker))
    }

    /// Each source of a newly recognised scan, with why it is spared (`None`: block it),
    /// by the policy's list and the scan's spoofing hints; `mac_of` says the link-layer
    /// address a source's frames came from. The budget is the caller's.
    pub fn judge(
        &self,
        scan: &ScanAlert,
        mac_of: impl Fn(IpAddr) -> Option<[u8; 6]>,
    ) -> Vec<(IpAddr, Option<Spared>)> {
        let unsure = unverified(scan, self.block_spoofed);
        scan.sources
            .iter()
            .map(|&src| {
                let why = mapped_source(src)
                    .or_else(|| self.spared(src, Asker::Scan { mac: mac_of(src) }))
                    .or(unsure);
                (src, why)
            })
            .collect()
    }

    /// The never-block list in the kernel's form: one entry per prefix, each carrying the
    /// reasons of every listed prefix that covers it too (the trie answers with the longest
    /// match only).
    pub fn protections(&self) -> BTreeMap<Cidr, Protection> {
        let mut out: BTreeMap<Cidr, Protection> = BTreeMap::new();
        for (net, why) in &self.never {
            let Some(bit) = why.bit() else { continue };
            let entry = out.entry(*net).or_default();
            entry.reasons |= bit;
            if let Spared::Neighbour { mac } = why {
                entry.mac = *mac;
            }
        }
        let nets: Vec<(Cidr, Protection)> = out.iter().map(|(c, p)| (*c, *p)).collect();
        for (net, protection) in out.iter_mut() {
            for (outer, theirs) in &nets {
                if outer != net && outer.len < net.len && outer.contains(net.addr) {
                    protection.reasons |= theirs.reasons & !protect::NEIGHBOUR;
                }
            }
        }
        out
    }
}

/// Whether a reason spares a source at `asker`'s request.
pub(crate) fn applies(why: Spared, asker: Asker) -> bool {
    match asker {
        Asker::Operator => why.binds_operator(),
        Asker::Review => !matches!(why, Spared::Neighbour { .. }),
        Asker::Scan { mac } => match why {
            Spared::Neighbour { mac: theirs } => mac != Some(theirs),
            _ => true,
        },
    }
}

/// Why a scan's sources are spared whoever they are: a spread scan's never blocked; the
/// sources of a scan that may be forged unless `block_spoofed`.
pub(crate) fn unverified(scan: &ScanAlert, block_spoofed: bool) -> Option<Spared> {
    if scan.spoof.spread() {
        Some(Spared::Spread)
    } else if scan.spoof.suspected() && !block_spoofed {
        Some(Spared::LikelySpoofed)
    } else {
        None
    }
}

/// An IPv6 scan's IPv4-mapped source (`::ffff:a.b.c.d`) is no host: blocking it would
/// block the IPv4 host a.b.c.d, whom anyone can name this way.
pub(crate) fn mapped_source(src: IpAddr) -> Option<Spared> {
    match src {
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some() => Some(Spared::NotAHost),
        _ => None,
    }
}

/// Loopback, unspecified, multicast or broadcast.
pub(crate) fn not_a_host(addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(a) => {
            a.is_loopback() || a.is_unspecified() || a.is_multicast() || a.is_broadcast()
        }
        IpAddr::V6(a) => a.is_loopback() || a.is_unspecified() || a.is_multicast(),
    }
}

/// An address as the kernel keys it: an IPv4-mapped IPv6 address becomes IPv4.
pub(crate) fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(a) => a.to_canonical(),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(block_spoofed: bool) -> BlockPolicy {
        BlockPolicy {
            ttl: Duration::from_secs(3600),
            block_spoofed,
            never: vec![
                ("198.18.50.0/24".parse().unwrap(), Spared::AllowListed),
                ("198.18.7.2/32".parse().unwrap(), Spared::Ours),
                ("198.18.7.254/32".parse().unwrap(), Spared::Gateway),
                ("198.18.7.53/32".parse().unwrap(), Spared::Resolver),
                (
                    "198.18.8.9/32".parse().unwrap(),
                    Spared::Neighbour {
                        mac: [2, 0, 0, 0, 0, 9],
                    },
                ),
                ("198.18.7.0/24".parse().unwrap(), Spared::HomeNet),
            ],
        }
    }

    #[test]
    fn an_ipv6_scans_mapped_source_is_no_host_even_with_block_spoofed() {
        let mapped: IpAddr = "::ffff:198.18.8.1".parse().unwrap();
        assert_eq!(mapped_source(mapped), Some(Spared::NotAHost));
        assert_eq!(mapped_source("198.18.8.1".parse().unwrap()), None);
        assert_eq!(mapped_source("2001:db8::1".parse().unwrap()), None);
    }

    #[test]
    fn never_block_rules_hold() {
        let p = policy(false);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let scan = Asker::Scan { mac: None };
        assert_eq!(p.spared(ip("198.18.50.9"), scan), Some(Spared::AllowListed));
        assert_eq!(p.spared(ip("198.18.7.2"), scan), Some(Spared::Ours));
        assert_eq!(p.spared(ip("::ffff:198.18.7.2"), scan), Some(Spared::Ours));
        assert_eq!(p.spared(ip("198.18.7.254"), scan), Some(Spared::Gateway));
        assert_eq!(p.spared(ip("198.18.7.53"), scan), Some(Spared::Resolver));
        assert_eq!(
            p.spared(ip("198.18.7.53"), Asker::Operator),
            Some(Spared::Resolver)
        );
        // A neighbour is spared unless the scan's frames came from its own link-layer
        // address; by hand, a neighbour or a home host may be blocked.
        let its_own = Asker::Scan {
            mac: Some([2, 0, 0, 0, 0, 9]),
        };
        let router = Asker::Scan {
            mac: Some([2, 0, 0, 0, 0, 1]),
        };
        let neighbour = Spared::Neighbour {
            mac: [2, 0, 0, 0, 0, 9],
        };
        assert_eq!(p.spared(ip("198.18.8.9"), router), Some(neighbour));
        assert_eq!(p.spared(ip("198.18.8.9"), scan), Some(neighbour));
        assert_eq!(p.spared(ip("198.18.8.9"), its_own), None, "its own scan");
        assert_eq!(p.spared(ip("198.18.7.10"), scan), Some(Spared::HomeNet));
        assert_eq!(p.spared(ip("198.18.8.9"), Asker::Operator), None);
        assert_eq!(p.spared(ip("198.18.7.10"), Asker::Operator), None);
        assert_eq!(p.spared(ip("198.18.8.9"), Asker::Review), None);
        for not_a_host in [
            "127.0.0.1",
            "::1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "ff02::1",
        ] {
            assert_eq!(
                p.spared(ip(not_a_host), scan),
                Some(Spared::NotAHost),
                "{not_a_host}"
            );
        }
        assert_eq!(p.spared(ip("198.18.8.1"), scan), None);
        assert_eq!(p.spared(ip("2001:db8::1"), scan), None);
    }

    #[test]
    fn the_kernels_trie_gets_each_prefix_with_the_reasons_of_those_covering_it() {
        let p = policy(false);
        let trie = p.protections();
        let get = |s: &str| trie[&s.parse::<Cidr>().unwrap()];
        assert_eq!(get("198.18.50.0/24").reasons, protect::ALLOWED);
        // 198.18.7.2 is ours and inside the home net 198.18.7.0/24.
        assert_eq!(get("198.18.7.2/32").reasons, protect::OURS | protect::HOME);
        // A neighbour: its link-layer address goes with it.
        let n = get("198.18.8.9/32");
        assert_eq!(n.reasons, protect::NEIGHBOUR);
        assert_eq!(n.mac, [2, 0, 0, 0, 0, 9]);
        assert_eq!(get("198.18.7.0/24").reasons, protect::HOME);
    }

    /// The `start` of the scan these probes make, as the engine reports it.
    fn scan_of(probes: &[(IpAddr, u16)]) -> ScanAlert {
        use crate::{
            detect::{Engine, EngineConfig, Phase},
            event::{Outcome, Probe},
        };
        let mut engine = Engine::new(EngineConfig::default());
        let victim: IpAddr = "198.18.7.2".parse().unwrap();
        probes
            .iter()
            .flat_map(|&(src, port)| {
                engine.observe(
                    &Probe::syn(src, victim, port, Outcome::Refused),
                    Duration::from_millis(u64::from(port)),
                )
            })
            .find(|a| a.phase == Phase::Start)
            .expect("a scan")
    }

    #[test]
    fn a_spread_scans_sources_are_never_blocked_a_decoy_scans_with_block_spoofed() {
        let host = |i: u8| IpAddr::from([198, 18, 60, i]);
        let spread = scan_of(
            &(0..12)
                .map(|i| (host(i), 100 + u16::from(i)))
                .collect::<Vec<_>>(),
        );
        let decoys = scan_of(
            &(1..=5u16)
                .flat_map(|port| (1..=3).map(move |i| (host(i), port)))
                .collect::<Vec<_>>(),
        );
        assert!(spread.spoof.spread() && !decoys.spoof.spread());
        for block_spoofed in [false, true] {
            let judged = policy(block_spoofed).judge(&spread, |_| None);
            assert!(judged.iter().all(|(_, why)| *why == Some(Spared::Spread)));
            assert_eq!(judged.len(), 10);
        }
        let judged = policy(false).judge(&decoys, |_| None);
        assert!(
            judged
                .iter()
                .all(|(_, why)| *why == Some(Spared::LikelySpoofed))
        );
        let judged = policy(true).judge(&decoys, |_| None);
        assert!(judged.iter().all(|(_, why)| why.is_none()), "{judged:?}");
    }
}
