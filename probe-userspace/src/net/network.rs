//! This host on the network: the interfaces watched, the home nets, our own addresses, the
//! gateways, the resolvers and the neighbours. Found at start from the settings and the
//! system, and looked at again while running (addresses, routes and neighbours come and
//! go), so it lives apart from the settings and is passed to whoever needs it.

use std::{collections::BTreeMap, net::IpAddr};

use anyhow::Context as _;

use crate::{
    net::{
        cidr::Cidr,
        iface, netlink, resolvers,
        routes::{self, Forwarding, Routed},
    },
    policy::protect::Spared,
};

/// Home nets derived from the routes at most (the kernel's trie of home nets holds
/// [`probe_common::HOME_TRIE_ENTRIES`]).
const MAX_DERIVED: usize = probe_common::HOME_TRIE_ENTRIES as usize;

/// See the module documentation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Network {
    /// The interfaces watched.
    pub ifaces: Vec<String>,
    /// The prefixes that are ours: `--home-net`; when none was given, on a host that
    /// forwards the networks routed through its other interfaces and every address of
    /// its own, else the addresses of the watched interfaces.
    pub home_nets: Vec<Cidr>,
    /// Which families this namespace forwards.
    pub forwarding: Forwarding,
    /// The routes the home nets were derived from (none when given or not forwarding).
    pub routed: Vec<Routed>,
    /// True when the home nets came from `--home-net`.
    pub home_nets_given: bool,
    /// True when no interface was given and the default route's was taken.
    pub default_iface: bool,
    /// The addresses of the watched interfaces.
    pub own: Vec<IpAddr>,
    /// The gateways of the main routing table.
    pub gateways: Vec<IpAddr>,
    /// This host's DNS resolvers.
    pub resolvers: Vec<IpAddr>,
    /// On-link neighbours (ARP, NDP), each with its link-layer address.
    pub neighbours: BTreeMap<IpAddr, [u8; 6]>,
}

impl Network {
    /// Finds the network: the interfaces (`given`, or the one of the default route), each
    /// checked to exist, their addresses, the home nets, the gateways, the resolvers and
    /// the neighbours.
    pub fn discover(given_ifaces: &[String], given_home_nets: &[Cidr]) -> anyhow::Result<Self> {
        let ifaces = if given_ifaces.is_empty() {
            vec![iface::default_route_interface()?]
        } else {
            given_ifaces.to_vec()
        };
        let mut network = Self {
            default_iface: given_ifaces.is_empty(),
            ifaces,
            home_nets_given: !given_home_nets.is_empty(),
            home_nets: given_home_nets.to_vec(),
            ..Self::default()
        };
        network.look_again()?;
        Ok(network)
    }

    /// Reads the system again (addresses, routes or neighbours changed): the same
    /// interfaces and given home nets.
    pub fn look_again(&mut self) -> anyhow::Result<()> {
        for name in &self.ifaces {
            iface::index_of(name)?;
        }
        let mut own = Vec::new();
        for name in &self.ifaces {
            own.extend(
                iface::addresses(name)
                    .with_context(|| format!("cannot list the addresses of {name}"))?,
            );
        }
        own.sort();
        own.dedup();
        self.forwarding = Forwarding::read();
        self.routed.clear();
        if !self.home_nets_given {
            self.home_nets = if self.forwarding.any() {
                self.routed = routes::routed_elsewhere(&self.ifaces, self.forwarding);
                let every = iface::every_address()
                    .context("cannot list this host's addresses")?
                    .into_iter()
                    .map(|(_, addr)| addr);
                derived(&self.routed, every)
            } else {
                own.iter().copied().map(Cidr::host).collect()
            };
        }
        self.own = own;
        self.gateways = iface::gateways();
        self.resolvers = resolvers::resolvers();
        // An unreadable table leaves the neighbours as they were.
        if let Ok(found) = netlink::neighbours() {
            self.neighbours = found.into_iter().map(|n| (n.addr, n.mac)).collect();
        }
        Ok(())
    }

    /// The home nets, as the start-up log says them.
    pub fn describe_home_nets(&self) -> String {
        if self.home_nets.is_empty() {
            return "every address".to_owned();
        }
        let nets: Vec<String> = self.home_nets.iter().map(Cidr::to_string).collect();
        nets.join(", ")
    }

    /// Why the home nets are what they are, when they were derived from the routes: for
    /// the start-up log.
    pub fn home_nets_reason(&self) -> Option<String> {
        if self.home_nets_given || !self.forwarding.any() {
            return None;
        }
        let via: Vec<String> = self
            .routed
            .iter()
            .map(|r| format!("{} via {}", r.net, r.iface))
            .collect();
        let via = if via.is_empty() {
            "none".to_owned()
        } else {
            via.join(", ")
        };
        Some(format!(
            "this host forwards ({}): its home nets are the networks routed through its \
             other interfaces ({via}) and its own addresses, followed as routes change; \
             --home-net replaces them",
            self.forwarding.describe()
        ))
    }

    /// Who is never blocked besides loopback and what the policy spares by itself: the
    /// allow-listed sources, our own addresses, the home nets, the gateways, the resolvers
    /// and the neighbours.
    pub fn never_block(&self, allowed: &[Cidr]) -> Vec<(Cidr, Spared)> {
        let allowed = allowed.iter().map(|c| (*c, Spared::AllowListed));
        let own = self.own.iter().map(|a| (Cidr::host(*a), Spared::Ours));
        let home = self.home_nets.iter().map(|c| (*c, Spared::HomeNet));
        let gateways = self
            .gateways
            .iter()
            .map(|g| (Cidr::host(*g), Spared::Gateway));
        let resolvers = self
            .resolvers
            .iter()
            .map(|r| (Cidr::host(*r), Spared::Resolver));
        let neighbours = self
            .neighbours
            .iter()
            .map(|(a, mac)| (Cidr::host(*a), Spared::Neighbour { mac: *mac }));
        allowed
            .chain(own)
            .chain(home)
            .chain(gateways)
            .chain(resolvers)
            .chain(neighbours)
            .collect()
    }

    /// What changed from `old`, for the log; `None` when nothing that matters did.
    pub fn changes_from(&self, old: &Network) -> Option<String> {
        let mut said = Vec::new();
        let mut diff = |what: &str, new: Vec<String>, old: Vec<String>| {
            let added: Vec<&String> = new.iter().filter(|n| !old.contains(n)).collect();
            let gone: Vec<&String> = old.iter().filter(|o| !new.contains(o)).collect();
            if !added.is_empty() || !gone.is_empty() {
                let list =
                    |v: &[&String]| v.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ");
                let mut s = format!("{what}:");
                if !added.is_empty() {
                    s.push_str(&format!(" +{}", list(&added)));
                }
                if !gone.is_empty() {
                    s.push_str(&format!(" -{}", list(&gone)));
                }
                said.push(s);
            }
        };
        let strings = |v: &[IpAddr]| v.iter().map(IpAddr::to_string).collect::<Vec<_>>();
        let nets = |v: &[Cidr]| v.iter().map(Cidr::to_string).collect::<Vec<_>>();
        diff("home nets", nets(&self.home_nets), nets(&old.home_nets));
        diff("our addresses", strings(&self.own), strings(&old.own));
        diff("gateways", strings(&self.gateways), strings(&old.gateways));
        diff(
            "resolvers",
            strings(&self.resolvers),
            strings(&old.resolvers),
        );
        (!said.is_empty()).then(|| said.join("; "))
    }
}

/// The home nets of a host that forwards: the networks it routes to through interfaces
/// other than the watched ones, and its own addresses (loopback aside), at most
/// [`MAX_DERIVED`].
fn derived(routed: &[Routed], addresses: impl Iterator<Item = IpAddr>) -> Vec<Cidr> {
    let mut nets: Vec<Cidr> = routed.iter().map(|r| r.net).collect();
    nets.extend(addresses.filter(|a| !a.is_loopback()).map(Cidr::host));
    nets.sort();
    nets.dedup();
    nets.truncate(MAX_DERIVED);
    nets
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_never_block_set_names_why() {
        let network = Network {
            own: vec!["198.18.0.2".parse().unwrap()],
            gateways: vec!["198.18.0.1".parse().unwrap()],
            ..Network::default()
        };
        let never = network.never_block(&["198.18.9.0/24".parse().unwrap()]);
        assert_eq!(
            never,
            vec![
                ("198.18.9.0/24".parse().unwrap(), Spared::AllowListed),
                ("198.18.0.2/32".parse().unwrap(), Spared::Ours),
                ("198.18.0.1/32".parse().unwrap(), Spared::Gateway),
            ]
        );
        let mut more = network.clone();
        more.home_nets = vec!["198.18.0.0/24".parse().unwrap()];
        more.resolvers = vec!["198.18.0.53".parse().unwrap()];
        more.neighbours = [("198.18.0.7".parse().unwrap(), [2, 0, 0, 0, 0, 7])].into();
        let never = more.never_block(&[]);
        assert_eq!(
            never[1..],
            [
                ("198.18.0.0/24".parse().unwrap(), Spared::HomeNet),
                ("198.18.0.1/32".parse().unwrap(), Spared::Gateway),
                ("198.18.0.53/32".parse().unwrap(), Spared::Resolver),
                (
                    "198.18.0.7/32".parse().unwrap(),
                    Spared::Neighbour {
                        mac: [2, 0, 0, 0, 0, 7]
                    }
                ),
            ]
        );
        assert_eq!(
            more.changes_from(&network).as_deref(),
            Some("home nets: +198.18.0.0/24; resolvers: +198.18.0.53")
        );
        assert_eq!(network.changes_from(&network), None);
    }

    #[test]
    fn a_router_s_home_nets_are_the_networks_behind_it_and_its_addresses() {
        let routed = vec![
            Routed {
                net: "198.19.0.0/24".parse().unwrap(),
                iface: "lan0".into(),
            },
            Routed {
                net: "2001:db8:1::/64".parse().unwrap(),
                iface: "lan0".into(),
            },
        ];
        let addresses = ["198.18.0.2", "198.19.0.1", "127.0.0.1", "::1", "198.18.0.2"]
            .map(|a| a.parse::<IpAddr>().unwrap());
        let nets: Vec<String> = derived(&routed, addresses.into_iter())
            .iter()
            .map(Cidr::to_string)
            .collect();
        assert_eq!(
            nets,
            [
                "198.18.0.2/32",
                "198.19.0.0/24",
                "198.19.0.1/32",
                "2001:db8:1::/64"
            ]
        );
        let network = Network {
            forwarding: Forwarding {
                v4: true,
                v6: false,
            },
            routed,
            ..Network::default()
        };
        let why = network.home_nets_reason().unwrap();
        assert!(
            why.contains("net.ipv4.ip_forward=1")
                && why.contains("198.19.0.0/24 via lan0")
                && why.contains("--home-net"),
            "{why}"
        );
        // Given, or not forwarding: nothing to explain.
        let given = Network {
            home_nets_given: true,
            ..network.clone()
        };
        assert_eq!(given.home_nets_reason(), None);
        assert_eq!(Network::default().home_nets_reason(), None);
    }

    #[test]
    fn home_nets_are_described_for_the_log() {
        let mut network = Network::default();
        assert_eq!(network.describe_home_nets(), "every address");
        network.home_nets = vec![
            "198.18.0.2/32".parse().unwrap(),
            "2001:db8::/64".parse().unwrap(),
        ];
        assert_eq!(network.describe_home_nets(), "198.18.0.2/32, 2001:db8::/64");
    }

    #[test]
    fn a_missing_interface_is_an_interface_error() {
        let err = Network::discover(&["pd-no-such-if0".to_owned()], &[]).unwrap_err();
        assert!(err.is::<iface::IfaceError>(), "{err:#}");
    }
}
