//! CIDR prefixes (`198.18.0.0/15`, `2001:db8::/32`, or a bare address): parsing with clear
//! errors, and their kernel form ([`HomeNet`]: IPv4 mapped into IPv6).

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    str::FromStr,
};

use probe_common::HomeNet;

/// An IP prefix with no host bits set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cidr {
    /// The network address.
    pub addr: IpAddr,
    /// Prefix length: at most 32 for IPv4, 128 for IPv6.
    pub len: u8,
}

/// Why a prefix does not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CidrError {
    /// Not an address.
    #[error("{0:?} is not an IP address or prefix (e.g. 198.18.0.0/15, 2001:db8::/32)")]
    Address(String),
    /// Bad prefix length.
    #[error("{text:?}: the prefix length must be 0..={max}")]
    Length { text: String, max: u8 },
    /// Host bits set.
    #[error("{text:?} has host bits set: did you mean {suggestion}?")]
    HostBits { text: String, suggestion: Cidr },
}

impl Cidr {
    /// A single address as a /32 or /128.
    pub fn host(addr: IpAddr) -> Self {
        let len = if addr.is_ipv4() { 32 } else { 128 };
        Self { addr, len }
    }

    /// The prefix of length `len` (at most the family's width) that holds `addr`.
    pub fn covering(addr: IpAddr, len: u8) -> Self {
        let len = len.min(if addr.is_ipv4() { 32 } else { 128 });
        Self {
            addr: network(addr, len),
            len,
        }
    }

    /// The longest prefix of its family: 32 or 128 (a single address).
    pub fn max_len(&self) -> u8 {
        if self.addr.is_ipv4() { 32 } else { 128 }
    }

    /// The prefix in its 16-byte kernel form.
    pub fn to_home_net(self) -> HomeNet {
        let (network, bits) = match self.addr {
            IpAddr::V4(v4) => (v4.to_ipv6_mapped().octets(), 96 + u32::from(self.len)),
            IpAddr::V6(v6) => (v6.octets(), u32::from(self.len)),
        };
        let mask = mask128(bits).to_be_bytes();
        HomeNet { network, mask }
    }

    /// The prefix in the 16-byte form the kernel's tries use (IPv4 mapped into IPv6) and
    /// its length in that form.
    pub fn mapped(self) -> ([u8; 16], u32) {
        match self.addr {
            IpAddr::V4(v4) => (v4.to_ipv6_mapped().octets(), 96 + u32::from(self.len)),
            IpAddr::V6(v6) => (v6.octets(), u32::from(self.len)),
        }
    }

    /// True when `addr` lies inside this prefix.
    pub fn contains(&self, addr: IpAddr) -> bool {
        let net = self.to_home_net();
        let bytes = match addr {
            IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
            IpAddr::V6(v6) => v6.octets(),
        };
        bytes
            .iter()
            .zip(net.mask)
            .zip(net.network)
            .all(|((b, m), n)| b & m == n)
    }
}

/// The network address of the prefix of length `len` that holds `addr` (host bits
/// cleared; `len` beyond the family's width keeps them all).
pub fn network(addr: IpAddr, len: u8) -> IpAddr {
    match addr {
        IpAddr::V4(v4) => {
            let mask = (mask128(96 + u32::from(len.min(32))) & u128::from(u32::MAX)) as u32;
            IpAddr::V4(Ipv4Addr::from(u32::from(v4) & mask))
        }
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask128(u32::from(len)))),
    }
}

fn mask128(bits: u32) -> u128 {
    if bits == 0 {
        0
    } else {
        u128::MAX << (128 - bits.min(128))
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (addr_text, len_text) = match text.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (text, None),
        };
        let addr: IpAddr = addr_text
            .trim()
            .parse()
            .map_err(|_| CidrError::Address(text.to_owned()))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = match len_text {
            None => max,
            Some(l) => {
                l.trim()
                    .parse::<u8>()
                    .ok()
                    .filter(|&l| l <= max)
                    .ok_or(CidrError::Length {
                        text: text.to_owned(),
                        max,
                    })?
            }
        };
        let network = match addr {
            IpAddr::V4(v4) => {
                let bits = u32::from(v4) & (mask128(96 + u32::from(len)) as u32);
                IpAddr::V4(Ipv4Addr::from(bits))
            }
            IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask128(u32::from(len)))),
        };
        let cidr = Cidr { addr: network, len };
        if network != addr {
            return Err(CidrError::HostBits {
                text: text.to_owned(),
                suggestion: cidr,
            });
        }
        Ok(cidr)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_prefixes_and_bare_addresses() {
        let c: Cidr = "198.18.0.0/15".parse().unwrap();
        assert_eq!(
            (c.addr, c.len),
            (IpAddr::V4(Ipv4Addr::new(198, 18, 0, 0)), 15)
        );
        let c: Cidr = "2001:db8::/32".parse().unwrap();
        assert_eq!(c.len, 32);
        let c: Cidr = "198.18.0.7".parse().unwrap();
        assert_eq!(c.len, 32);
        let c: Cidr = "2001:db8::1".parse().unwrap();
        assert_eq!(c.len, 128);
        assert_eq!("0.0.0.0/0".parse::<Cidr>().unwrap().len, 0);
        assert_eq!(c.to_string(), "2001:db8::1/128");
    }

    #[test]
    fn rejects_bad_input_with_a_reason() {
        assert_eq!(
            "198.18.0.1/15".parse::<Cidr>().unwrap_err().to_string(),
            "\"198.18.0.1/15\" has host bits set: did you mean 198.18.0.0/15?"
        );
        assert!(matches!(
            "198.18.0.0/33".parse::<Cidr>(),
            Err(CidrError::Length { max: 32, .. })
        ));
        assert!(matches!(
            "2001:db8::/129".parse::<Cidr>(),
            Err(CidrError::Length { max: 128, .. })
        ));
        assert!(matches!("eth0".parse::<Cidr>(), Err(CidrError::Address(_))));
        assert!(matches!(
            "198.18.0.0/x".parse::<Cidr>(),
            Err(CidrError::Length { .. })
        ));
    }

    #[test]
    fn membership_in_both_families() {
        let v4: Cidr = "198.18.0.0/15".parse().unwrap();
        assert!(v4.contains("198.19.255.255".parse().unwrap()));
        assert!(!v4.contains("198.20.0.0".parse().unwrap()));
        assert!(!v4.contains("2001:db8::1".parse().unwrap()));
        let v6: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains("2001:db8:ffff::1".parse().unwrap()));
        assert!(!v6.contains("2001:db9::1".parse().unwrap()));
        assert!(!v6.contains("198.18.0.1".parse().unwrap()));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("203.0.113.9".parse().unwrap()));
        assert!(
            !all.contains("2001:db8::1".parse().unwrap()),
            "an IPv4 prefix holds no IPv6"
        );
    }

    #[test]
    fn kernel_form_maps_ipv4() {
        let net = "198.18.0.0/15".parse::<Cidr>().unwrap().to_home_net();
        assert_eq!(&net.network[10..], &[0xff, 0xff, 198, 18, 0, 0]);
        assert_eq!(&net.mask[..12], &[0xff; 12]);
        assert_eq!(&net.mask[12..], &[0xff, 0xfe, 0, 0]);
        let net = "2001:db8::/32".parse::<Cidr>().unwrap().to_home_net();
        assert_eq!(&net.mask[..4], &[0xff; 4]);
        assert_eq!(&net.mask[4..], &[0; 12]);
    }
}
