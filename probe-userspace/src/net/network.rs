//! This host on the network: the interfaces watched, the home nets, our own addresses and
//! the gateways. Found at start from the settings and the system; the part of the
//! configuration that is meant to change while running (addresses and routes come and go),
//! so it lives apart from the settings and is passed to whoever needs it.

use std::net::IpAddr;

use anyhow::Context as _;

use crate::{
    net::{cidr::Cidr, iface},
    policy::block::Spared,
};

/// See the module documentation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Network {
    /// The interfaces watched.
    pub ifaces: Vec<String>,
    /// The prefixes that are ours: `--home-net`, or our addresses when none was given.
    pub home_nets: Vec<Cidr>,
    /// True when the home nets came from `--home-net`.
    pub home_nets_given: bool,
    /// True when no interface was given and the default route's was taken.
    pub default_iface: bool,
    /// The addresses of the watched interfaces.
    pub own: Vec<IpAddr>,
    /// The gateways of the main routing table.
    pub gateways: Vec<IpAddr>,
}

impl Network {
    /// Finds the network: the interfaces (`given`, or the one of the default route), each
    /// checked to exist, their addresses, the home nets and the gateways.
    pub fn discover(given_ifaces: &[String], given_home_nets: &[Cidr]) -> anyhow::Result<Self> {
        let ifaces = if given_ifaces.is_empty() {
            vec![iface::default_route_interface()?]
        } else {
            given_ifaces.to_vec()
        };
        for name in &ifaces {
            iface::index_of(name)?;
        }
        let mut own = Vec::new();
        for name in &ifaces {
            own.extend(
                iface::addresses(name)
                    .with_context(|| format!("cannot list the addresses of {name}"))?,
            );
        }
        let home_nets_given = !given_home_nets.is_empty();
        let home_nets = if home_nets_given {
            given_home_nets.to_vec()
        } else {
            own.iter().copied().map(Cidr::host).collect()
        };
        Ok(Self {
            default_iface: given_ifaces.is_empty(),
            ifaces,
            home_nets,
            home_nets_given,
            own,
            gateways: iface::gateways(),
        })
    }

    /// The home nets, as the start-up log says them.
    pub fn describe_home_nets(&self) -> String {
        if self.home_nets.is_empty() {
            return "every address".to_owned();
        }
        let nets: Vec<String> = self.home_nets.iter().map(Cidr::to_string).collect();
        nets.join(", ")
    }

    /// Who is never blocked besides loopback and what the policy spares by itself: the
    /// allow-listed sources, our own addresses and the gateways.
    pub fn never_block(&self, allowed: &[Cidr]) -> Vec<(Cidr, Spared)> {
        let allowed = allowed.iter().map(|c| (*c, Spared::AllowListed));
        let own = self.own.iter().map(|a| (Cidr::host(*a), Spared::Ours));
        let gateways = self
            .gateways
            .iter()
            .map(|g| (Cidr::host(*g), Spared::Gateway));
        allowed.chain(own).chain(gateways).collect()
    }
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
