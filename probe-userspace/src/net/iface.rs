//! Network interfaces: names to indices and back, and the interface of the default route.

use std::{
    ffi::{CStr, CString},
    fs, io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

/// An interface problem, worded for the operator.
#[derive(Debug, thiserror::Error)]
pub enum IfaceError {
    /// No interface of that name in this network namespace.
    #[error("no network interface named {0:?} (see `ip link`)")]
    Unknown(String),
    /// The name cannot be an interface name.
    #[error("{0:?} is not a valid interface name")]
    InvalidName(String),
    /// No default route to pick an interface from.
    #[error("no default route to pick an interface from; name one with --iface")]
    NoDefaultRoute,
    /// The routing table could not be read.
    #[error("cannot read the routing table {path}: {source}")]
    RouteTable {
        /// The file that failed.
        path: &'static str,
        /// Why.
        source: io::Error,
    },
}

/// The index of the interface `name`.
pub fn index_of(name: &str) -> Result<u32, IfaceError> {
    if name.is_empty() || name.len() >= libc::IF_NAMESIZE || name.contains('/') {
        return Err(IfaceError::InvalidName(name.to_owned()));
    }
    let c_name = CString::new(name).map_err(|_| IfaceError::InvalidName(name.to_owned()))?;
    // SAFETY: `c_name` is a valid NUL-terminated string for the duration of the call.
    let index = unsafe { libc::if_nametoindex(c_name.as_ptr()) };
    if index == 0 {
        return Err(IfaceError::Unknown(name.to_owned()));
    }
    Ok(index)
}

/// The name of the interface with `index`, if it still exists.
pub fn name_of(index: u32) -> Option<String> {
    let mut buf = [0u8; libc::IF_NAMESIZE];
    // SAFETY: `buf` has the IF_NAMESIZE bytes if_indextoname may write, including the NUL.
    let ptr = unsafe { libc::if_indextoname(index, buf.as_mut_ptr().cast()) };
    if ptr.is_null() {
        return None;
    }
    let len = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    Some(String::from_utf8_lossy(&buf[..len]).into_owned())
}

/// The IP addresses assigned to interface `name`.
pub fn addresses(name: &str) -> io::Result<Vec<IpAddr>> {
    Ok(every_address()?
        .into_iter()
        .filter(|(iface, _)| iface == name)
        .map(|(_, addr)| addr)
        .collect())
}

/// Every IP address of every interface of this namespace, with its interface's name.
pub fn every_address() -> io::Result<Vec<(String, IpAddr)>> {
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs writes a list head to `list`, which we free below.
    if unsafe { libc::getifaddrs(&mut list) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut out = Vec::new();
    let mut cursor = list;
    while !cursor.is_null() {
        // SAFETY: `cursor` is a node of the list getifaddrs returned, not yet freed.
        let entry = unsafe { &*cursor };
        cursor = entry.ifa_next;
        if entry.ifa_addr.is_null() || entry.ifa_name.is_null() {
            continue;
        }
        // SAFETY: ifa_name is a NUL-terminated string owned by the list.
        let name = unsafe { CStr::from_ptr(entry.ifa_name) }
            .to_string_lossy()
            .into_owned();
        // SAFETY: ifa_addr is non-null and points to a sockaddr whose family says its type.
        match i32::from(unsafe { (*entry.ifa_addr).sa_family }) {
            libc::AF_INET => {
                // SAFETY: family AF_INET: the sockaddr is a sockaddr_in.
                let sin = unsafe { &*entry.ifa_addr.cast::<libc::sockaddr_in>() };
                let addr = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
                out.push((name, IpAddr::V4(addr)));
            }
            libc::AF_INET6 => {
                // SAFETY: family AF_INET6: the sockaddr is a sockaddr_in6.
                let sin6 = unsafe { &*entry.ifa_addr.cast::<libc::sockaddr_in6>() };
                out.push((name, IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr))));
            }
            _ => {}
        }
    }
    // SAFETY: `list` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(list) };
    Ok(out)
}

/// The interface of the IPv4 default route, else of the IPv6 one.
pub fn default_route_interface() -> Result<String, IfaceError> {
    const V4: &str = "/proc/net/route";
    const V6: &str = "/proc/net/ipv6_route";
    let v4 =
        fs::read_to_string(V4).map_err(|source| IfaceError::RouteTable { path: V4, source })?;
    if let Some(name) = default_v4(&v4) {
        return Ok(name);
    }
    // Some hosts have no IPv6 at all; only a readable table counts.
    if let Ok(v6) = fs::read_to_string(V6)
        && let Some(name) = default_v6(&v6)
    {
        return Ok(name);
    }
    Err(IfaceError::NoDefaultRoute)
}

/// The gateways of this host's routes, IPv4 and IPv6 (never to be blocked). An unreadable
/// table gives none.
pub fn gateways() -> Vec<IpAddr> {
    let mut out = fs::read_to_string("/proc/net/route")
        .map(|t| gateways_v4(&t))
        .unwrap_or_default();
    out.extend(
        fs::read_to_string("/proc/net/ipv6_route")
            .map(|t| gateways_v6(&t))
            .unwrap_or_default(),
    );
    out.sort();
    out.dedup();
    out
}

/// Gateways in /proc/net/route's text (flag RTF_GATEWAY; the address is little-endian hex).
fn gateways_v4(table: &str) -> Vec<IpAddr> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let (gateway, flags) = (cols.get(2)?, cols.get(3)?);
            let gateway = u32::from_str_radix(gateway, 16).ok()?;
            (u32::from_str_radix(flags, 16).ok()? & 0x2 != 0 && gateway != 0)
                .then(|| IpAddr::from(gateway.to_le_bytes()))
        })
        .collect()
}

/// Next hops in /proc/net/ipv6_route's text (32 hex digits, all zero when none).
fn gateways_v6(table: &str) -> Vec<IpAddr> {
    table
        .lines()
        .filter_map(|line| {
            let hop = u128::from_str_radix(line.split_whitespace().nth(4)?, 16).ok()?;
            (hop != 0).then(|| IpAddr::from(hop.to_be_bytes()))
        })
        .collect()
}

/// The interface of the lowest-metric IPv4 default route in /proc/net/route's text.
fn default_v4(table: &str) -> Option<String> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            // Iface Destination Gateway Flags RefCnt Use Metric Mask ...
            let (iface, dest, flags, metric, mask) = (
                cols.first()?,
                cols.get(1)?,
                cols.get(3)?,
                cols.get(6)?,
                cols.get(7)?,
            );
            let up = u32::from_str_radix(flags, 16).ok()? & 0x1 != 0;
            (up && *dest == "00000000" && *mask == "00000000").then(|| {
                (
                    metric.parse::<u32>().unwrap_or(u32::MAX),
                    (*iface).to_owned(),
                )
            })
        })
        .min()
        .map(|(_, iface)| iface)
}

/// The interface of the lowest-metric IPv6 default route in /proc/net/ipv6_route's text.
fn default_v6(table: &str) -> Option<String> {
    table
        .lines()
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            // dest dest_len src src_len next_hop metric refcnt use flags iface
            let (dest, dest_len, metric, iface) =
                (cols.first()?, cols.get(1)?, cols.get(5)?, cols.get(9)?);
            (dest.bytes().all(|b| b == b'0') && *dest_len == "00" && *iface != "lo").then(|| {
                (
                    u32::from_str_radix(metric, 16).unwrap_or(u32::MAX),
                    (*iface).to_owned(),
                )
            })
        })
        .min()
        .map(|(_, iface)| iface)
}

/// This host's name (`gethostname`); `localhost` when it has none.
pub fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid and writable for its length; gethostname writes at most
    // that many bytes.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let len = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    match std::str::from_utf8(&buf[..len]) {
        Ok(name) if rc == 0 && !name.is_empty() => name.to_owned(),
        _ => "localhost".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateways_are_read_from_both_route_tables() {
        let v4 = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\n\
                  eth0\t00000000\t0100A8C0\t0003\t0\t0\t100\t00000000\n\
                  eth0\t0000A8C0\t00000000\t0001\t0\t0\t100\t00FFFFFF\n";
        assert_eq!(
            gateways_v4(v4),
            vec!["192.168.0.1".parse::<IpAddr>().unwrap()]
        );
        let v6 = "00000000000000000000000000000000 00 00000000000000000000000000000000 00 fe800000000000000000000000000001 00000400 00000001 00000000 00000003 eth0\n\
                  20010db8000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001 eth0\n";
        assert_eq!(gateways_v6(v6), vec!["fe80::1".parse::<IpAddr>().unwrap()]);
    }

    #[test]
    fn picks_the_lowest_metric_ipv4_default() {
        let table = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                     eth1\t00000000\t0101A8C0\t0003\t0\t0\t600\t00000000\t0\t0\t0\n\
                     eth0\t00000000\t0100A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n\
                     eth0\t0000A8C0\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0\n";
        assert_eq!(default_v4(table).as_deref(), Some("eth0"));
        let none = "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\n\
                    eth0\t0000A8C0\t00000000\t0001\t0\t0\t100\t00FFFFFF\n";
        assert_eq!(default_v4(none), None);
    }

    #[test]
    fn picks_the_ipv6_default() {
        let table = "00000000000000000000000000000000 00 00000000000000000000000000000000 00 fe800000000000000000000000000001 00000400 00000001 00000000 00000003 wan0\n\
                     20010db8000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001 wan0\n\
                     00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200 lo\n";
        assert_eq!(default_v6(table).as_deref(), Some("wan0"));
    }

    #[test]
    fn loopback_resolves_both_ways() {
        let index = index_of("lo").unwrap();
        assert_eq!(name_of(index).as_deref(), Some("lo"));
    }

    #[test]
    fn loopback_has_its_addresses() {
        let addrs = addresses("lo").unwrap();
        assert!(
            addrs.contains(&IpAddr::V4(Ipv4Addr::LOCALHOST)),
            "{addrs:?}"
        );
        assert!(addresses("no-such-if0").unwrap().is_empty());
    }

    #[test]
    fn bad_names_are_clear_errors() {
        assert!(matches!(
            index_of("no-such-if0"),
            Err(IfaceError::Unknown(_))
        ));
        assert!(matches!(index_of(""), Err(IfaceError::InvalidName(_))));
        assert!(matches!(index_of("a/b"), Err(IfaceError::InvalidName(_))));
        assert!(matches!(
            index_of("x".repeat(40).as_str()),
            Err(IfaceError::InvalidName(_))
        ));
        assert_eq!(
            IfaceError::Unknown("eth9".into()).to_string(),
            "no network interface named \"eth9\" (see `ip link`)"
        );
    }
}
