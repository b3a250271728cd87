//! Whether this host routes for others, and the networks it routes to: on a gateway, the
//! networks behind it are the home nets unless `--home-net` names them.

use std::{
    fs,
    net::{IpAddr, Ipv6Addr},
};

use crate::net::cidr::Cidr;

/// `RTF_UP`: the route is usable.
const RTF_UP: u32 = 0x0001;
/// `RTF_REJECT`: an unreachable, prohibit or blackhole route.
const RTF_REJECT: u32 = 0x0200;
/// `RTF_CACHE`: a cached clone, not a configured route.
const RTF_CACHE: u32 = 0x0100_0000;
/// `RTF_LOCAL`: one of this host's own addresses (the local table).
const RTF_LOCAL: u32 = 0x8000_0000;

/// Which address families this network namespace forwards (`net.ipv4.ip_forward`,
/// `net.ipv6.conf.all.forwarding`); an unreadable setting counts as off.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Forwarding {
    pub v4: bool,
    pub v6: bool,
}

impl Forwarding {
    /// Reads the settings of this namespace.
    pub fn read() -> Self {
        let on = |path: &str| fs::read_to_string(path).is_ok_and(|t| t.trim() == "1");
        Self {
            v4: on("/proc/sys/net/ipv4/ip_forward"),
            v6: on("/proc/sys/net/ipv6/conf/all/forwarding"),
        }
    }

    /// True when either family is forwarded.
    pub fn any(self) -> bool {
        self.v4 || self.v6
    }

    /// The sysctls that are on, as the log names them.
    pub fn describe(self) -> String {
        let mut on = Vec::new();
        if self.v4 {
            on.push("net.ipv4.ip_forward=1");
        }
        if self.v6 {
            on.push("net.ipv6.conf.all.forwarding=1");
        }
        on.join(", ")
    }
}

/// A network this host routes to, and the interface it leaves through.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Routed {
    pub net: Cidr,
    pub iface: String,
}

/// The networks of this host's usable routes (connected and static, IPv4 and IPv6) that
/// leave through an interface other than `watched` and loopback: never a default route, a
/// reject route, a link-local or multicast prefix, or one of the host's own addresses.
/// Unreadable tables give none. Only the families in `families` are read.
pub fn routed_elsewhere(watched: &[String], families: Forwarding) -> Vec<Routed> {
    let mut out = Vec::new();
    if families.v4
        && let Ok(table) = fs::read_to_string("/proc/net/route")
    {
        out.extend(routes_v4(&table));
    }
    if families.v6
        && let Ok(table) = fs::read_to_string("/proc/net/ipv6_route")
    {
        out.extend(routes_v6(&table));
    }
    out.retain(|r| r.iface != "lo" && !watched.contains(&r.iface));
    out.sort_by(|a, b| (a.net, &a.iface).cmp(&(b.net, &b.iface)));
    out.dedup_by(|a, b| a.net == b.net);
    out
}

/// The routes in /proc/net/route's text (the main table; addresses little-endian hex).
fn routes_v4(table: &str) -> Vec<Routed> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            // Iface Destination Gateway Flags RefCnt Use Metric Mask ...
            let (iface, dest, flags, mask) =
                (cols.first()?, cols.get(1)?, cols.get(3)?, cols.get(7)?);
            let flags = u32::from_str_radix(flags, 16).ok()?;
            let dest = u32::from_str_radix(dest, 16).ok()?;
            let len = u32::from_str_radix(mask, 16).ok()?.count_ones() as u8;
            let addr = IpAddr::from(dest.to_le_bytes());
            usable(flags, len, addr).then(|| Routed {
                net: Cidr::covering(addr, len),
                iface: (*iface).to_owned(),
            })
        })
        .collect()
}

/// The routes in /proc/net/ipv6_route's text (every table).
fn routes_v6(table: &str) -> Vec<Routed> {
    table
        .lines()
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            // dest dest_len src src_len next_hop metric refcnt use flags iface
            let (dest, len, flags, iface) =
                (cols.first()?, cols.get(1)?, cols.get(8)?, cols.get(9)?);
            let addr = IpAddr::V6(Ipv6Addr::from(u128::from_str_radix(dest, 16).ok()?));
            let len = u8::from_str_radix(len, 16).ok()?;
            let flags = u32::from_str_radix(flags, 16).ok()?;
            usable(flags, len, addr).then(|| Routed {
                net: Cidr::covering(addr, len),
                iface: (*iface).to_owned(),
            })
        })
        .collect()
}

/// A route to a network behind this host: up, not a default, reject, cached or local
/// route, not link-local or multicast.
fn usable(flags: u32, len: u8, addr: IpAddr) -> bool {
    let scoped = match addr {
        IpAddr::V4(a) => a.is_multicast() || a.is_link_local() || a.is_loopback(),
        IpAddr::V6(a) => a.is_multicast() || a.is_unicast_link_local() || a.is_loopback(),
    };
    flags & RTF_UP != 0 && flags & (RTF_REJECT | RTF_CACHE | RTF_LOCAL) == 0 && len > 0 && !scoped
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(routes: &[Routed]) -> Vec<(String, &str)> {
        routes
            .iter()
            .map(|r| (r.net.to_string(), r.iface.as_str()))
            .collect()
    }

    #[test]
    fn ipv4_routes_are_networks_never_defaults_or_rejects() {
        let table = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                     wan0\t00000000\t010012C6\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
                     wan0\t000012C6\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
                     lan0\t000013C6\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
                     lan0\t000513C6\tFE0013C6\t0003\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
                     lan0\t000613C6\t00000000\t0201\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
                     lan0\t000713C6\t00000000\t0000\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
                     lan0\t0000FEA9\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n";
        assert_eq!(
            nets(&routes_v4(table)),
            vec![
                ("198.18.0.0/24".to_owned(), "wan0"),
                ("198.19.0.0/24".to_owned(), "lan0"),
                ("198.19.5.0/24".to_owned(), "lan0"),
            ]
        );
    }

    #[test]
    fn ipv6_routes_skip_local_link_local_multicast_and_defaults() {
        let table = "20010db8000100000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001     lan0\n\
                     fe800000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000002 00000000 00000001     lan0\n\
                     00000000000000000000000000000000 00 00000000000000000000000000000000 00 20010db8000000000000000000000001 00000400 00000003 00000000 00000003     wan0\n\
                     20010db8000100000000000000000001 80 00000000000000000000000000000000 00 00000000000000000000000000000000 00000000 00000004 00000000 80200001     lan0\n\
                     ff000000000000000000000000000000 08 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000003 00000000 00000001     lan0\n\
                     00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo\n";
        assert_eq!(
            nets(&routes_v6(table)),
            vec![("2001:db8:1::/64".to_owned(), "lan0")]
        );
    }

    #[test]
    fn forwarding_is_described_by_its_sysctls() {
        let both = Forwarding { v4: true, v6: true };
        assert!(both.any() && !Forwarding::default().any());
        assert_eq!(
            both.describe(),
            "net.ipv4.ip_forward=1, net.ipv6.conf.all.forwarding=1"
        );
    }
}
