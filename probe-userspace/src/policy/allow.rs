//! Allow-lists: sources never to report (your own vulnerability scanner, monitoring) and
//! local services never to report (CIDR, optionally one port: a service that gets
//! connection attempts from all over by design). Parsed from flags and from a file that
//! is re-read on SIGHUP, and kept in the kernel's LPM tries, which are updated in place.
//!
//! File format: one rule a line, `#` starts a comment.
//!
//! ```text
//! source 198.18.0.0/24          # our scanner farm
//! service 198.18.7.2:443        # the public web server
//! service [2001:db8::/64]:53
//! service 198.18.9.0/24         # every port of the lab net
//! ```

use std::{collections::BTreeSet, fmt, fs, io, net::IpAddr, path::Path};

use aya::{
    Ebpf, Pod,
    maps::{
        MapData,
        lpm_trie::{Key, LpmTrie},
    },
};
use probe_common::{
    ALLOW_RULES_MAP, ALLOW_SERVICE_PORTS_MAP, ALLOW_SERVICES_MAP, ALLOW_SOURCES_MAP,
};

use crate::net::cidr::{Cidr, CidrError};

/// A local service: a prefix, and a port or every port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Service {
    pub net: Cidr,
    pub port: Option<u16>,
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.port, self.net.addr.is_ipv6()) {
            (None, _) => write!(f, "{}", self.net),
            (Some(port), false) => write!(f, "{}:{port}", self.net),
            (Some(port), true) => write!(f, "[{}]:{port}", self.net),
        }
    }
}

impl std::str::FromStr for Service {
    type Err = AllowError;

    /// `198.18.7.2`, `198.18.0.0/24:443`, `2001:db8::/64`, `[2001:db8::1]:443`.
    fn from_str(text: &str) -> Result<Self, AllowError> {
        let bad_port = || AllowError::Port(text.to_owned());
        let (net, port) = if let Some(rest) = text.strip_prefix('[') {
            let (net, after) = rest
                .split_once(']')
                .ok_or_else(|| AllowError::Syntax(text.to_owned()))?;
            let port = match after {
                "" => None,
                p => Some(
                    p.strip_prefix(':')
                        .and_then(|p| p.parse().ok())
                        .ok_or_else(bad_port)?,
                ),
            };
            (net, port)
        } else if text.matches(':').count() == 1 {
            let (net, port) = text
                .split_once(':')
                .ok_or_else(|| AllowError::Syntax(text.to_owned()))?;
            (net, Some(port.parse().map_err(|_| bad_port())?))
        } else {
            (text, None)
        };
        Ok(Self {
            net: net.parse()?,
            port,
        })
    }
}

/// The allow-lists, as sets (so that two versions can be diffed).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AllowLists {
    pub sources: BTreeSet<Cidr>,
    pub services: BTreeSet<Service>,
}

/// A rule that cannot be used, worded for the operator.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AllowError {
    #[error(transparent)]
    Cidr(#[from] CidrError),
    #[error("{0:?}: the port must be a number 0..=65535")]
    Port(String),
    #[error("{0:?}: expected CIDR, CIDR:PORT or [IPV6-CIDR]:PORT")]
    Syntax(String),
    #[error("{path}:{line}: {reason}")]
    Line {
        path: String,
        line: usize,
        reason: String,
    },
    #[error("cannot read {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("more than {max} {what} rules")]
    TooMany { what: &'static str, max: u32 },
}

impl AllowLists {
    /// Whether an outcome of `src` at `dst` port `port` is allow-listed, as the kernel
    /// tells it (its source, or its local service with any port or this one).
    pub fn allows(&self, src: IpAddr, dst: IpAddr, port: u16) -> bool {
        self.sources.iter().any(|net| net.contains(src))
            || self
                .services
                .iter()
                .any(|s| s.net.contains(dst) && s.port.is_none_or(|p| p == port))
    }

    /// Adds the rules of an allow-list file's text; `path` names it in errors.
    pub fn add_text(&mut self, text: &str, path: &str) -> Result<(), AllowError> {
        for (i, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let at = |reason: String| AllowError::Line {
                path: path.to_owned(),
                line: i + 1,
                reason,
            };
            let mut words = line.split_whitespace();
            let (kind, value, extra) = (words.next(), words.next(), words.next());
            match (kind, value, extra) {
                (Some("source"), Some(v), None) => {
                    self.sources
                        .insert(v.parse().map_err(|e: CidrError| at(e.to_string()))?);
                }
                (Some("service"), Some(v), None) => {
                    self.services
                        .insert(v.parse().map_err(|e: AllowError| at(e.to_string()))?);
                }
                _ => {
                    return Err(at(format!(
                        "expected `source CIDR` or `service CIDR[:PORT]`, got {line:?}"
                    )));
                }
            }
        }
        Ok(())
    }

    /// Adds the rules of an allow-list file.
    pub fn add_file(&mut self, path: &Path) -> Result<(), AllowError> {
        let shown = path.display().to_string();
        let text = fs::read_to_string(path).map_err(|e: io::Error| AllowError::Read {
            path: shown.clone(),
            reason: e.to_string(),
        })?;
        self.add_text(&text, &shown)
    }

    /// Rules in all.
    pub fn len(&self) -> usize {
        self.sources.len() + self.services.len()
    }

    /// True when there is no rule.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Makes the kernel's tries hold `new`, given that they hold `old`: inserts what is new,
/// removes what is gone, leaves the rest (no moment without the rules that stay).
pub fn apply(ebpf: &mut Ebpf, old: &AllowLists, new: &AllowLists) -> anyhow::Result<()> {
    let max = probe_common::ALLOW_ENTRIES;
    if new.sources.len() > max as usize {
        return Err(AllowError::TooMany {
            what: "source",
            max,
        }
        .into());
    }
    let services_any = new.services.iter().filter(|s| s.port.is_none()).count();
    if services_any > max as usize || new.services.len() - services_any > max as usize {
        return Err(AllowError::TooMany {
            what: "service",
            max,
        }
        .into());
    }
    let addr_key = |net: &Cidr| {
        let (addr, len) = net.mapped();
        Key::new(len, addr)
    };
    sync(
        ebpf,
        ALLOW_SOURCES_MAP,
        old.sources.difference(&new.sources).map(addr_key),
        new.sources
            .difference(&old.sources)
            .map(|c| (addr_key(c), c.to_string())),
    )?;
    let any_port = |s: &&Service| s.port.is_none();
    let one_port = |s: &&Service| s.port.is_some();
    sync(
        ebpf,
        ALLOW_SERVICES_MAP,
        old.services
            .difference(&new.services)
            .filter(any_port)
            .map(|s| addr_key(&s.net)),
        new.services
            .difference(&old.services)
            .filter(any_port)
            .map(|s| (addr_key(&s.net), s.to_string())),
    )?;
    sync(
        ebpf,
        ALLOW_SERVICE_PORTS_MAP,
        old.services
            .difference(&new.services)
            .filter(one_port)
            .map(port_key),
        new.services
            .difference(&old.services)
            .filter(one_port)
            .map(|s| (port_key(s), s.to_string())),
    )?;
    // After the tries: the kernel reads them only while this count is not zero.
    let rules = u32::try_from(new.sources.len() + new.services.len()).unwrap_or(u32::MAX);
    let mut count: aya::maps::Array<&mut MapData, u32> = aya::maps::Array::try_from(
        ebpf.map_mut(ALLOW_RULES_MAP)
            .ok_or_else(|| anyhow::anyhow!("no {ALLOW_RULES_MAP} map"))?,
    )?;
    count.set(0, &rules, 0)?;
    Ok(())
}

/// Removes the `gone` keys from the trie `map` and inserts the `added` ones (with the
/// rule's text, for errors).
fn sync<K: Pod>(
    ebpf: &mut Ebpf,
    map: &str,
    gone: impl Iterator<Item = Key<K>>,
    added: impl Iterator<Item = (Key<K>, String)>,
) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let mut trie: LpmTrie<&mut MapData, K, u8> =
        LpmTrie::try_from(ebpf.map_mut(map).with_context(|| format!("no {map} map"))?)?;
    for key in gone {
        // Already absent is fine: the goal is that it is not there.
        let _ = trie.remove(&key);
    }
    for (key, rule) in added {
        trie.insert(&key, &1, 0)
            .with_context(|| format!("cannot allow-list {rule}"))?;
    }
    Ok(())
}

/// The `ALLOW_SERVICE_PORTS` key of a one-port service: port (network order), address.
fn port_key(service: &Service) -> Key<[u8; 18]> {
    let (addr, len) = service.net.mapped();
    let mut data = [0u8; 18];
    data[..2].copy_from_slice(&service.port.unwrap_or(0).to_be_bytes());
    data[2..].copy_from_slice(&addr);
    Key::new(16 + len, data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_tells_outcomes_as_the_kernel_does() {
        let mut lists = AllowLists::default();
        lists
            .add_text(
                "source 198.18.5.0/24\nservice 198.18.7.2:443\nservice 2001:db8::/64\n",
                "t",
            )
            .unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        // The source, any target.
        assert!(lists.allows(ip("198.18.5.9"), ip("198.18.9.9"), 22));
        // The service: its port only; a whole host, every port.
        assert!(lists.allows(ip("198.18.1.1"), ip("198.18.7.2"), 443));
        assert!(!lists.allows(ip("198.18.1.1"), ip("198.18.7.2"), 444));
        assert!(lists.allows(ip("2001:db8:1::1"), ip("2001:db8::7"), 9));
        assert!(!lists.allows(ip("2001:db8:1::1"), ip("2001:db8:1::7"), 9));
    }

    #[test]
    fn services_parse_in_every_form() {
        let s: Service = "198.18.7.2:443".parse().unwrap();
        assert_eq!(
            (s.net.to_string(), s.port),
            ("198.18.7.2/32".to_owned(), Some(443))
        );
        let s: Service = "198.18.0.0/24".parse().unwrap();
        assert_eq!((s.net.len, s.port), (24, None));
        let s: Service = "198.18.0.0/24:22".parse().unwrap();
        assert_eq!((s.net.len, s.port), (24, Some(22)));
        let s: Service = "2001:db8::/64".parse().unwrap();
        assert_eq!((s.net.len, s.port), (64, None));
        let s: Service = "[2001:db8::1]:53".parse().unwrap();
        assert_eq!((s.net.len, s.port), (128, Some(53)));
        assert_eq!(s.to_string(), "[2001:db8::1/128]:53");
        assert!(matches!(
            "198.18.7.2:http".parse::<Service>(),
            Err(AllowError::Port(_))
        ));
        assert!(matches!(
            "[2001:db8::1:53".parse::<Service>(),
            Err(AllowError::Syntax(_))
        ));
        assert!(matches!(
            "198.18.7.1/24:80".parse::<Service>(),
            Err(AllowError::Cidr(_))
        ));
    }

    #[test]
    fn files_parse_with_comments_and_say_where_they_are_wrong() {
        let mut lists = AllowLists::default();
        lists
            .add_text(
                "# allow-list\nsource 198.18.0.0/24  # scanners\n\nservice 198.18.7.2:443\nservice [2001:db8::/64]:53\n",
                "allow.conf",
            )
            .unwrap();
        assert_eq!((lists.sources.len(), lists.services.len()), (1, 2));
        let err = lists
            .add_text("source 198.18.0.0/24\nsevice 1.2.3.4\n", "allow.conf")
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "allow.conf:2: expected `source CIDR` or `service CIDR[:PORT]`, got \"sevice 1.2.3.4\""
        );
        let err = lists
            .add_text("source 198.18.0.1/24\n", "allow.conf")
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("allow.conf:1: \"198.18.0.1/24\" has host bits set"),
            "{err}"
        );
        let err = AllowLists::default()
            .add_file(Path::new("/nonexistent/allow.conf"))
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("cannot read /nonexistent/allow.conf:"),
            "{err}"
        );
    }

    #[test]
    fn port_keys_put_the_port_first() {
        let key = port_key(&"198.18.0.0/24:443".parse().unwrap());
        assert_eq!(key.prefix_len(), 16 + 96 + 24);
        let data = key.data();
        assert_eq!(&data[..2], &443u16.to_be_bytes());
        assert_eq!(&data[12..18], &[0xff, 0xff, 198, 18, 0, 0]);
    }
}
