//! The fleet's names in Redis: evidence streams sharded by the scanner's prefix, shard
//! leases, the sensor register, the block stream; and the names sensors may take.
//!
//! Every key of one shard carries the shard's hash tag (`{N}`), so a Redis Cluster keeps a
//! shard's streams on one node (a correlator reads them in one command) and spreads the
//! shards over its nodes.

use std::net::IpAddr;

/// Shards of the evidence: a source's evidence always goes to the same one, so one
/// correlator at a time holds all of a source's state.
pub const SHARDS: u16 = 16;
/// The consumer group correlators read evidence in.
pub const GROUP: &str = "correlators";
/// The set of sensor names (each sensor adds its own).
pub const SENSORS: &str = "pd:sensors";
/// The sorted set of live correlators, scored by their last heartbeat (Unix ms).
pub const CORRELATORS: &str = "pd:correlators";
/// The stream of fleet blocks (written by correlators only).
pub const BLOCKS: &str = "pd:{blocks}:stream";
/// The blocks in force: source address to the Unix millisecond it ends.
pub const BLOCKS_ACTIVE: &str = "pd:{blocks}:active";

/// The commands a sensor's Redis user needs: register, append its evidence, read blocks.
pub const SENSOR_COMMANDS: &str =
    "+ping +info +cluster|slots +cluster|shards +sadd +xadd +xrevrange +xread +hgetall";
/// The commands a correlator's Redis user needs: the consumer group, leases, blocks.
pub const CORRELATOR_COMMANDS: &str = "+ping +info +cluster|slots +cluster|shards +smembers +xgroup|create +xreadgroup +xack +xautoclaim +xpending +xinfo|groups +xrange +xadd +hset +hgetall +hdel +set +get +pexpire +del +zadd +zremrangebyscore +zcard +zrem +evalsha +eval +script|load";

/// The ACL rules of sensor `name`'s Redis user (after `ACL SETUSER name on >PASSWORD`):
/// it may append to its own evidence and alert streams, add its name to the register and read the
/// blocks; nothing else (not another sensor's streams, not the block stream's writes).
pub fn sensor_acl(name: &str) -> String {
    format!(
        "resetkeys ~pd:ev:*:{name} ~pd:alerts:{name} ~{SENSORS} %R~pd:{{blocks}}:* resetchannels -@all {SENSOR_COMMANDS}"
    )
}

/// The ACL rules of a correlator's Redis user: every fleet key, the commands it needs.
pub fn correlator_acl() -> String {
    format!("resetkeys ~pd:* resetchannels -@all {CORRELATOR_COMMANDS}")
}

/// The shard of a source: a hash of its /24 (IPv4) or /48 (IPv6), so that a scanner's
/// neighbouring addresses (a grouped scan) share it.
pub fn shard_of(src: IpAddr) -> u16 {
    let prefix: &[u8] = match &src {
        IpAddr::V4(v4) => &v4.octets()[..3],
        IpAddr::V6(v6) => &v6.octets()[..6],
    };
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in prefix.iter().chain(&[u8::from(src.is_ipv6())]) {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (hash % u64::from(SHARDS)) as u16
}

/// The stream a sensor appends a shard's evidence to: one per sensor and shard, so that a
/// Redis ACL can let each sensor write its own streams only.
pub fn evidence_stream(shard: u16, sensor: &str) -> String {
    format!("pd:ev:{{{shard}}}:{sensor}")
}

/// The stream a sensor publishes its own alert records to (field `eve`: the JSON line).
pub fn alert_stream(sensor: &str) -> String {
    format!("pd:alerts:{sensor}")
}

/// The second stage's stream of target shard N: the failures the owners of source shards
/// forward, keyed by the target's /24 or /48, so that one correlator sees every source of
/// a distributed scan (entries: `v`, `s` the sensor, `r` the records).
pub fn target_stream(shard: u16) -> String {
    format!("pd:tg:{{{shard}}}")
}

/// The lease of a target shard.
pub fn target_lease(shard: u16) -> String {
    format!("pd:lease:tg:{{{shard}}}")
}

/// The lease of a shard: the name of the correlator that owns it, with an expiry.
pub fn lease(shard: u16) -> String {
    format!("pd:lease:{{{shard}}}")
}

/// Why a name cannot be a sensor's or correlator's name in the fleet.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "{0:?} cannot name a sensor in the fleet: use 1 to 64 letters, digits, '.', '_' or '-' (--sensor-name)"
)]
pub struct BadName(pub String);

/// Checks a sensor's (or correlator's) name: it goes into key names and ACL key patterns,
/// where ':', '*', '{' and the like would let one sensor's pattern match another's keys.
pub fn check_name(name: &str) -> Result<(), BadName> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(BadName(name.to_owned()))
    }
}

/// The sensor of an evidence stream's key, if it is one.
pub fn sensor_of(key: &str) -> Option<&str> {
    let rest = key.strip_prefix("pd:ev:{")?;
    let (_, sensor) = rest.split_once("}:")?;
    check_name(sensor).ok().map(|()| sensor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_keeps_its_shard() {
        let a = shard_of("198.18.19.2".parse().unwrap());
        assert_eq!(a, shard_of("198.18.19.250".parse().unwrap()));
        assert!(a < SHARDS);
        assert_eq!(
            shard_of("2001:db8:1::1".parse().unwrap()),
            shard_of("2001:db8:1:ffff::9".parse().unwrap())
        );
        // Sources spread over the shards.
        let used: std::collections::BTreeSet<u16> = (0..=255u8)
            .map(|n| shard_of(IpAddr::from([198, 18, n, 1])))
            .collect();
        assert_eq!(used.len(), usize::from(SHARDS));
    }

    #[test]
    fn the_documented_acl_rules_are_these() {
        let docs = include_str!("../../../docs/fleet.md");
        assert!(
            docs.contains(&format!("user h1 on >SENSOR1-SECRET {}", sensor_acl("h1"))),
            "docs/fleet.md shows other sensor rules than {}",
            sensor_acl("h1")
        );
        assert!(
            docs.contains(&format!(
                "user correlator on >CORRELATOR-SECRET {}",
                correlator_acl()
            )),
            "docs/fleet.md shows other correlator rules than {}",
            correlator_acl()
        );
    }

    #[test]
    fn names_that_would_reach_other_keys_are_refused() {
        assert!(check_name("web-01.example").is_ok());
        for bad in ["", "a:b", "a*", "{1}", "a b", &"x".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        let key = evidence_stream(3, "web-01");
        assert_eq!(key, "pd:ev:{3}:web-01");
        assert_eq!(sensor_of(&key), Some("web-01"));
        assert_eq!(sensor_of("pd:lease:{3}"), None);
    }
}
