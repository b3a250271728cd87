//! Blocking confirmed scanners in XDP (`--block`, off by default): who may never be blocked
//! (allow-listed sources, our own addresses, the gateways, loopback, sources likely spoofed),
//! and the kernel's `BLOCKED` map, which this module owns once probe-detector runs: blocks
//! added when a scan is recognised or by `probe-detector block add`, removed by hand or
//! when their time is up (the XDP program removes an expired block at its source's next
//! frame; listing skips and removes the others).

use std::{
    fmt,
    net::{IpAddr, Ipv6Addr},
    path::Path,
    time::Duration,
};

use aya::{
    Ebpf,
    maps::{HashMap, MapData, MapError},
};
use probe_common::{BLOCKED_MAP, Block};
use serde::{Deserialize, Serialize};

use crate::{detect::ScanAlert, net::cidr::Cidr};

/// Why an address is never blocked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Spared {
    /// In an allow-listed source network.
    AllowListed,
    /// One of the watched interfaces' own addresses or networks.
    Ours,
    /// A gateway of this host's routes.
    Gateway,
    /// Loopback, unspecified, multicast or broadcast: not a host that sends probes.
    NotAHost,
    /// The scan's sources may be forged (decoys, martians) and `--block-spoofed` is off:
    /// blocking them would block innocent addresses.
    LikelySpoofed,
}

impl fmt::Display for Spared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Spared::AllowListed => "allow-listed",
            Spared::Ours => "one of our own addresses or networks",
            Spared::Gateway => "a gateway of this host",
            Spared::NotAHost => "loopback, unspecified, multicast or broadcast",
            Spared::LikelySpoofed => "likely spoofed (--block-spoofed is off)",
        })
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
    /// Why `addr` must not be blocked, if it must not.
    pub fn spared(&self, addr: IpAddr) -> Option<Spared> {
        let addr = canonical(addr);
        let not_a_host = match addr {
            IpAddr::V4(a) => {
                a.is_loopback() || a.is_unspecified() || a.is_multicast() || a.is_broadcast()
            }
            IpAddr::V6(a) => a.is_loopback() || a.is_unspecified() || a.is_multicast(),
        };
        if not_a_host {
            return Some(Spared::NotAHost);
        }
        self.never
            .iter()
            .find(|(net, _)| net.contains(addr))
            .map(|(_, why)| *why)
    }

    /// Each source of a newly recognised scan, with why it is spared (`None`: block it).
    pub fn judge(&self, scan: &ScanAlert) -> Vec<(IpAddr, Option<Spared>)> {
        let spoofed = scan.spoof.suspected() && !self.block_spoofed;
        scan.sources
            .iter()
            .map(|&src| {
                let why = self
                    .spared(src)
                    .or(spoofed.then_some(Spared::LikelySpoofed));
                (src, why)
            })
            .collect()
    }
}

/// Why a block cannot be made, removed or listed.
#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    /// The object has no BLOCKED map (a build without blocking).
    #[error("the eBPF object has no {BLOCKED_MAP} map")]
    NoMap,
    /// The address is one that is never blocked.
    #[error("{addr} is never blocked: {why}")]
    Spared { addr: IpAddr, why: Spared },
    /// The kernel refused.
    #[error("the kernel's block list: {0}")]
    Map(#[from] MapError),
}

/// One block, as listed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Blocked {
    /// The blocked source.
    pub addr: IpAddr,
    /// Seconds left.
    pub expires_in_s: u64,
    /// Frames dropped so far.
    pub packets: u64,
}

/// A block as the state file keeps it across a restart (`--block-state`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedBlock {
    /// The blocked source.
    pub addr: IpAddr,
    /// When the block ends, in seconds since the Unix epoch (wall-clock time survives a
    /// reboot; the kernel's monotonic clock does not).
    pub until_unix_s: u64,
}

/// Writes the blocks in force (`list`, at wall-clock time `now_unix_s`) to `path`: a
/// temporary file made 0600 and renamed over it, so a crash leaves the old file or the new.
pub fn save_state(path: &Path, list: &[Blocked], now_unix_s: u64) -> std::io::Result<()> {
    use std::{io::Write as _, os::unix::fs::OpenOptionsExt as _};
    let saved: Vec<SavedBlock> = list
        .iter()
        .map(|b| SavedBlock {
            addr: b.addr,
            until_unix_s: now_unix_s.saturating_add(b.expires_in_s),
        })
        .collect();
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(serde_json::to_string(&saved).unwrap_or_default().as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Reads the blocks of a state file; none when there is no file yet.
pub fn load_state(path: &Path) -> std::io::Result<Vec<SavedBlock>> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text).map_err(std::io::Error::other),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(err) => Err(err),
    }
}

/// A request on the control socket (`probe-detector block ...`), one JSON line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Request {
    /// The blocks in force.
    List,
    /// Block an address by hand (`ttl_s`: the policy's when absent).
    Add { addr: IpAddr, ttl_s: Option<u64> },
    /// Lift a block.
    Remove { addr: IpAddr },
}

/// The answer to a [`Request`], one JSON line.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    /// What went wrong, if something did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What was done (add, remove).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub done: Option<String>,
    /// The blocks in force (list).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub blocked: Vec<Blocked>,
}

/// The kernel's block list, and the policy that fills it.
pub struct Blocker {
    map: HashMap<MapData, [u8; 16], Block>,
    policy: BlockPolicy,
    made: u64,
}

impl Blocker {
    /// Takes the `BLOCKED` map out of `ebpf` (loaded with blocking on).
    pub fn new(ebpf: &mut Ebpf, policy: BlockPolicy) -> Result<Self, BlockError> {
        let map = ebpf.take_map(BLOCKED_MAP).ok_or(BlockError::NoMap)?;
        Ok(Self {
            map: HashMap::try_from(map)?,
            policy,
            made: 0,
        })
    }

    /// Blocks made so far (by scans and by hand).
    pub fn made(&self) -> u64 {
        self.made
    }

    /// The policy in force.
    pub fn policy(&self) -> &BlockPolicy {
        &self.policy
    }

    /// Replaces the allow-listed networks of the policy (after the allow-lists changed).
    pub fn set_allowed<'a>(&mut self, sources: impl IntoIterator<Item = &'a Cidr>) {
        self.policy
            .never
            .retain(|(_, why)| *why != Spared::AllowListed);
        self.policy
            .never
            .extend(sources.into_iter().map(|c| (*c, Spared::AllowListed)));
    }

    /// Blocks the sources of a newly recognised scan that may be blocked, for the policy's
    /// time from `now` (CLOCK_MONOTONIC); returns each source with why it was spared.
    pub fn on_scan(
        &mut self,
        scan: &ScanAlert,
        now: Duration,
    ) -> Result<Vec<(IpAddr, Option<Spared>)>, BlockError> {
        let verdicts = self.policy.judge(scan);
        for (addr, why) in &verdicts {
            if why.is_none() {
                self.insert(*addr, now.saturating_add(self.policy.ttl))?;
            }
        }
        Ok(verdicts)
    }

    /// Blocks `addr` by hand for `ttl` (the policy's when `None`), unless it is spared.
    pub fn add(
        &mut self,
        addr: IpAddr,
        ttl: Option<Duration>,
        now: Duration,
    ) -> Result<(), BlockError> {
        if let Some(why) = self.policy.spared(addr) {
            return Err(BlockError::Spared { addr, why });
        }
        // Any TTL a client sends saturates (u64::MAX seconds is "until the map is cleared"),
        // never overflows.
        self.insert(addr, now.saturating_add(ttl.unwrap_or(self.policy.ttl)))
    }

    fn insert(&mut self, addr: IpAddr, until: Duration) -> Result<(), BlockError> {
        let key = key(addr);
        // A block made again keeps its count of dropped frames.
        let packets = self.map.get(&key, 0).map_or(0, |b| b.packets);
        let block = Block {
            until_ns: u64::try_from(until.as_nanos()).unwrap_or(u64::MAX),
            packets,
        };
        self.map.insert(&key, &block, 0)?;
        self.made += 1;
        Ok(())
    }

    /// Lifts the block of `addr`; false when it had none.
    pub fn remove(&mut self, addr: IpAddr) -> Result<bool, BlockError> {
        match self.map.remove(&key(addr)) {
            Ok(()) => Ok(true),
            Err(MapError::KeyNotFound) => Ok(false),
            Err(MapError::SyscallError(err))
                if err.io_error.kind() == std::io::ErrorKind::NotFound =>
            {
                Ok(false)
            }
            Err(err) => Err(err.into()),
        }
    }

    /// Carries out a control-socket request at `now`.
    pub fn handle(&mut self, request: &Request, now: Duration) -> Response {
        let result = match *request {
            Request::List => {
                return Response {
                    blocked: self.list(now),
                    ..Response::default()
                };
            }
            Request::Add { addr, ttl_s } => {
                let ttl = ttl_s.map(Duration::from_secs);
                self.add(addr, ttl, now).map(|()| {
                    let ttl = ttl.unwrap_or(self.policy.ttl).as_secs();
                    log::info!("blocked {addr} for {ttl} s (by hand)");
                    format!("blocked {addr} for {ttl} s")
                })
            }
            Request::Remove { addr } => self.remove(addr).map(|lifted| {
                if lifted {
                    log::info!("unblocked {addr} (by hand)");
                    format!("unblocked {addr}")
                } else {
                    format!("{addr} was not blocked")
                }
            }),
        };
        match result {
            Ok(done) => Response {
                done: Some(done),
                ..Response::default()
            },
            Err(err) => Response {
                error: Some(err.to_string()),
                ..Response::default()
            },
        }
    }

    /// The blocks in force at `now`, soonest to expire first; expired ones are removed.
    pub fn list(&mut self, now: Duration) -> Vec<Blocked> {
        let now_ns = u64::try_from(now.as_nanos()).unwrap_or(u64::MAX);
        let mut expired = Vec::new();
        let mut list: Vec<Blocked> = self
            .map
            .iter()
            .filter_map(Result::ok)
            .filter_map(|(k, block)| {
                if block.until_ns <= now_ns {
                    expired.push(k);
                    return None;
                }
                Some(Blocked {
                    addr: canonical(IpAddr::V6(Ipv6Addr::from(k))),
                    expires_in_s: (block.until_ns - now_ns).div_ceil(1_000_000_000),
                    packets: block.packets,
                })
            })
            .collect();
        for k in expired {
            let _ = self.map.remove(&k);
        }
        list.sort_by_key(|b| (b.expires_in_s, b.addr));
        list
    }
}

/// The map key of an address: IPv4 as `::ffff:a.b.c.d`, as the kernel stores it.
pub fn key(addr: IpAddr) -> [u8; 16] {
    match canonical(addr) {
        IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
        IpAddr::V6(a) => a.octets(),
    }
}

fn canonical(addr: IpAddr) -> IpAddr {
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
            ],
        }
    }

    #[test]
    fn the_state_file_keeps_wall_clock_expiries() {
        let dir = std::env::temp_dir().join(format!("pd-block-state-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("blocks.json");
        assert_eq!(
            load_state(&path).unwrap(),
            Vec::new(),
            "no file yet: no blocks"
        );
        let list = vec![Blocked {
            addr: "198.18.0.1".parse().unwrap(),
            expires_in_s: 600,
            packets: 12,
        }];
        save_state(&path, &list, 1_000).unwrap();
        save_state(&path, &list, 2_000).unwrap();
        assert_eq!(
            load_state(&path).unwrap(),
            vec![SavedBlock {
                addr: "198.18.0.1".parse().unwrap(),
                until_unix_s: 2_600
            }]
        );
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        std::fs::write(&path, "not json").unwrap();
        assert!(load_state(&path).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn never_block_rules_hold() {
        let p = policy(false);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(p.spared(ip("198.18.50.9")), Some(Spared::AllowListed));
        assert_eq!(p.spared(ip("198.18.7.2")), Some(Spared::Ours));
        assert_eq!(p.spared(ip("::ffff:198.18.7.2")), Some(Spared::Ours));
        assert_eq!(p.spared(ip("198.18.7.254")), Some(Spared::Gateway));
        for not_a_host in [
            "127.0.0.1",
            "::1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "ff02::1",
        ] {
            assert_eq!(
                p.spared(ip(not_a_host)),
                Some(Spared::NotAHost),
                "{not_a_host}"
            );
        }
        assert_eq!(p.spared(ip("198.18.7.1")), None);
        assert_eq!(p.spared(ip("2001:db8::1")), None);
    }

    #[test]
    fn requests_and_responses_are_one_json_line_each() {
        let add = Request::Add {
            addr: "198.18.7.1".parse().unwrap(),
            ttl_s: Some(60),
        };
        let line = serde_json::to_string(&add).unwrap();
        assert_eq!(line, r#"{"op":"add","addr":"198.18.7.1","ttl_s":60}"#);
        assert_eq!(serde_json::from_str::<Request>(&line).unwrap(), add);
        assert_eq!(
            serde_json::from_str::<Request>(r#"{"op":"list"}"#).unwrap(),
            Request::List
        );
        assert!(serde_json::from_str::<Request>(r#"{"op":"flush"}"#).is_err());
        let empty = serde_json::to_string(&Response::default()).unwrap();
        assert_eq!(empty, "{}");
    }

    #[test]
    fn keys_are_ipv4_mapped_like_the_kernels() {
        let k = key("198.18.7.1".parse().unwrap());
        assert_eq!(&k[..12], &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]);
        assert_eq!(&k[12..], &[198, 18, 7, 1]);
        assert_eq!(key("::ffff:198.18.7.1".parse().unwrap()), k);
        let v6: IpAddr = "2001:db8::7".parse().unwrap();
        assert_eq!(canonical(IpAddr::V6(Ipv6Addr::from(key(v6)))), v6);
    }
}
