//! A correlator's shards: the leases that give each shard one owner at a time (renewed
//! every second, shared out evenly among the live correlators), and each owned shard's
//! reader: it finds the shard's streams, rebuilds what a previous owner observed (muted),
//! claims what it left unacknowledged, then reads new entries in the consumer group and
//! hands them to the correlator as [`Batch`]es.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    time::Duration,
};

use redis::{Value, streams::StreamReadReply};
use tokio::sync::mpsc;

use crate::fleet::{
    channel::{Backoff, Conn},
    correlate::CorrelateConfig,
    keys,
    sensor::unix_ms,
    wire,
};

/// A lease lasts this long unless renewed: a dead correlator's shards are taken over
/// within it (and a second).
pub const LEASE: Duration = Duration::from_secs(5);
/// How often leases are renewed, shares recomputed and the heartbeat written.
pub(crate) const LEASE_TICK: Duration = Duration::from_secs(1);
/// Entries read from a shard per command.
const READ_COUNT: usize = 256;
/// How long a shard's read waits for new entries (then it looks for new sensors).
const READ_BLOCK_MS: u64 = 1000;

/// Why a shard's entries are handed over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Observed already by a previous owner: state only, alerts muted, not acknowledged.
    Rebuild,
    /// New: observed, written, acknowledged.
    Live,
    /// Delivered to a previous owner that never acknowledged it: as new.
    Claimed,
}

/// Which shards: by source (every detector but the distributed one) or by target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stage {
    Sources,
    Targets,
}

impl Stage {
    fn lease(self, shard: u16) -> String {
        match self {
            Stage::Sources => keys::lease(shard),
            Stage::Targets => keys::target_lease(shard),
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Stage::Sources => "source",
            Stage::Targets => "target",
        }
    }
}

/// One stream entry: its id, the sensor that saw its records, the records.
pub(crate) struct Entry {
    pub(crate) id: String,
    pub(crate) sensor: String,
    pub(crate) blob: Vec<u8>,
}

/// Entries of one stream.
pub(crate) struct Batch {
    pub(crate) stage: Stage,
    pub(crate) key: String,
    pub(crate) mode: Mode,
    pub(crate) entries: Vec<Entry>,
}

/// The shards of one stage this correlator owns, each with its reader.
pub(crate) struct Shards {
    pub(crate) stage: Stage,
    pub(crate) config: CorrelateConfig,
    pub(crate) owned: BTreeMap<u16, tokio::task::JoinHandle<()>>,
    pub(crate) tx: mpsc::Sender<Batch>,
}

/// Renews a lease if it is still ours (1), else 0.
const RENEW: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) else return 0 end";
/// Deletes a lease if it is still ours.
const RELEASE: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end";

impl Shards {
    /// Heartbeat, renew, and take or give shards so that each live correlator holds its
    /// share.
    pub(crate) async fn manage(&mut self, conn: &mut Conn) -> redis::RedisResult<()> {
        let before: Vec<u16> = self.owned.keys().copied().collect();
        let live = self.share_out(conn).await?;
        let after: Vec<u16> = self.owned.keys().copied().collect();
        if before != after {
            log::info!(
                "owns {} of {} {} shards {after:?} ({live} correlators)",
                after.len(),
                keys::SHARDS,
                self.stage.name()
            );
        }
        Ok(())
    }

    /// See [`Shards::manage`]; returns how many correlators are live.
    async fn share_out(&mut self, conn: &mut Conn) -> redis::RedisResult<u64> {
        let now = unix_ms();
        let lease_ms = u64::try_from(LEASE.as_millis()).unwrap_or(5000);
        let () = redis::pipe()
            .cmd("ZADD")
            .arg(keys::CORRELATORS)
            .arg(now)
            .arg(&self.config.name)
            .ignore()
            .cmd("ZREMRANGEBYSCORE")
            .arg(keys::CORRELATORS)
            .arg("-inf")
            .arg(now.saturating_sub(lease_ms))
            .ignore()
            .query_async(conn)
            .await?;
        let live: u64 = redis::cmd("ZCARD")
            .arg(keys::CORRELATORS)
            .query_async(conn)
            .await?;
        let share = usize::from(keys::SHARDS).div_ceil(usize::try_from(live.max(1)).unwrap_or(1));
        // Renew; a lease lost (expired, taken) stops its reader.
        let mut lost = Vec::new();
        for (&shard, reader) in &self.owned {
            let renewed: i64 = redis::Script::new(RENEW)
                .key(self.stage.lease(shard))
                .arg(&self.config.name)
                .arg(lease_ms)
                .invoke_async(conn)
                .await?;
            if renewed == 0 || reader.is_finished() {
                lost.push(shard);
            }
        }
        for shard in lost {
            if let Some(reader) = self.owned.remove(&shard) {
                reader.abort();
                log::warn!("lost the lease of shard {shard}");
            }
        }
        // Give back what is over the share, so a correlator that joined gets its part.
        while self.owned.len() > share {
            let Some((shard, reader)) = self.owned.pop_last() else {
                break;
            };
            reader.abort();
            let _: i64 = redis::Script::new(RELEASE)
                .key(self.stage.lease(shard))
                .arg(&self.config.name)
                .invoke_async(conn)
                .await?;
            log::info!(
                "gave shard {shard} back ({live} correlators share {})",
                keys::SHARDS
            );
        }
        for shard in 0..keys::SHARDS {
            if self.owned.len() >= share {
                break;
            }
            if self.owned.contains_key(&shard) {
                continue;
            }
            let taken: Option<String> = redis::cmd("SET")
                .arg(self.stage.lease(shard))
                .arg(&self.config.name)
                .arg("NX")
                .arg("PX")
                .arg(lease_ms)
                .query_async(conn)
                .await?;
            if taken.is_some() {
                let reader = tokio::spawn(read_shard(
                    self.config.clone(),
                    self.stage,
                    shard,
                    self.tx.clone(),
                ));
                self.owned.insert(shard, reader);
            }
        }
        Ok(live)
    }

    /// Stops the readers and gives every lease back, and leaves the live set.
    pub(crate) async fn release_all(&mut self, conn: Option<&mut Conn>) {
        for reader in self.owned.values() {
            reader.abort();
        }
        let Some(conn) = conn else {
            return;
        };
        for &shard in self.owned.keys() {
            let _: redis::RedisResult<i64> = redis::Script::new(RELEASE)
                .key(self.stage.lease(shard))
                .arg(&self.config.name)
                .invoke_async(conn)
                .await;
        }
        let _: redis::RedisResult<i64> = redis::cmd("ZREM")
            .arg(keys::CORRELATORS)
            .arg(&self.config.name)
            .query_async(conn)
            .await;
        self.owned.clear();
    }
}

/// Reads one shard for as long as it is owned: rebuild, claim, then new entries.
async fn read_shard(config: CorrelateConfig, stage: Stage, shard: u16, tx: mpsc::Sender<Batch>) {
    let mut backoff = Backoff::default();
    let mut taken_over = false;
    loop {
        match read_shard_once(&config, stage, shard, &tx, &mut taken_over).await {
            Ok(()) => return,
            Err(err) => {
                log::warn!("{} shard {shard}: {err}; reading it again", stage.name());
                tokio::time::sleep(backoff.next_wait()).await;
            }
        }
    }
}

/// A shard's stream: its key, and the sensor whose evidence it holds (`None`: a target
/// stream, whose entries say).
struct Stream {
    stage: Stage,
    key: String,
    sensor: Option<String>,
}

impl Stream {
    /// A batch of entries read from it.
    fn batch(&self, mode: Mode, ids: Vec<redis::streams::StreamId>) -> Batch {
        let entries = ids
            .into_iter()
            .map(|e| Entry {
                sensor: match &self.sensor {
                    Some(sensor) => sensor.clone(),
                    None => field_str(e.map.get("s"))
                        .filter(|s| keys::check_name(s).is_ok())
                        .unwrap_or_else(|| "?".to_owned()),
                },
                blob: blob(&e.map),
                id: e.id,
            })
            .collect();
        Batch {
            stage: self.stage,
            key: self.key.clone(),
            mode,
            entries,
        }
    }
}

async fn read_shard_once(
    config: &CorrelateConfig,
    stage: Stage,
    shard: u16,
    tx: &mpsc::Sender<Batch>,
    taken_over: &mut bool,
) -> anyhow::Result<()> {
    let mut conn = config.target.connect().await?;
    let start_ms = unix_ms()
        .saturating_sub(u64::try_from(config.rebuild_window.as_millis()).unwrap_or(u64::MAX));
    let mut streams: BTreeMap<String, Stream> = BTreeMap::new();
    let mut looked = std::time::Instant::now() - LEASE_TICK;
    loop {
        if looked.elapsed() >= LEASE_TICK {
            looked = std::time::Instant::now();
            let found: Vec<Stream> = match stage {
                Stage::Sources => {
                    let sensors: Vec<String> = redis::cmd("SMEMBERS")
                        .arg(keys::SENSORS)
                        .query_async(&mut conn)
                        .await?;
                    sensors
                        .into_iter()
                        .filter(|s| keys::check_name(s).is_ok())
                        .map(|sensor| Stream {
                            stage,
                            key: keys::evidence_stream(shard, &sensor),
                            sensor: Some(sensor),
                        })
                        .collect()
                }
                Stage::Targets => vec![Stream {
                    stage,
                    key: keys::target_stream(shard),
                    sensor: None,
                }],
            };
            for stream in found {
                if streams.contains_key(&stream.key) {
                    continue;
                }
                create_group(&mut conn, &stream.key, start_ms).await?;
                if !*taken_over {
                    // Only streams present at the takeover have a past to rebuild.
                    rebuild(&mut conn, config, &stream, start_ms, tx).await?;
                }
                claim(&mut conn, config, &stream, tx).await?;
                streams.insert(stream.key.clone(), stream);
            }
            *taken_over = true;
        }
        if streams.is_empty() {
            tokio::time::sleep(LEASE_TICK).await;
            continue;
        }
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(keys::GROUP)
            .arg(&config.name)
            .arg("COUNT")
            .arg(READ_COUNT)
            .arg("BLOCK")
            .arg(READ_BLOCK_MS)
            .arg("STREAMS");
        for key in streams.keys() {
            cmd.arg(key);
        }
        for _ in streams.keys() {
            cmd.arg(">");
        }
        let reply: Option<StreamReadReply> = cmd.query_async(&mut conn).await?;
        for read in reply.map(|r| r.keys).unwrap_or_default() {
            let Some(stream) = streams.get(&read.key) else {
                continue;
            };
            if tx.send(stream.batch(Mode::Live, read.ids)).await.is_err() {
                return Ok(());
            }
        }
    }
}

/// The records of an entry (none when it is of another version).
fn blob(fields: &HashMap<String, Value>) -> Vec<u8> {
    let version = match fields.get("v") {
        Some(Value::BulkString(v)) => v.as_slice() == wire::VERSION.as_bytes(),
        Some(Value::SimpleString(v)) => v == wire::VERSION,
        _ => false,
    };
    match fields.get("r") {
        Some(Value::BulkString(bytes)) if version => bytes.clone(),
        // Not whole records: counted as skipped where it is decoded.
        _ => vec![0],
    }
}

async fn create_group(conn: &mut Conn, key: &str, start_ms: u64) -> redis::RedisResult<()> {
    let created: redis::RedisResult<()> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(key)
        .arg(keys::GROUP)
        .arg(format!("{start_ms}-0"))
        .arg("MKSTREAM")
        .query_async(conn)
        .await;
    match created {
        Err(err) if err.code() == Some("BUSYGROUP") => Ok(()),
        other => other,
    }
}

/// Observes again, muted, what the group delivered already within the window (but for
/// the entries still pending, which [`claim`] takes).
async fn rebuild(
    conn: &mut Conn,
    config: &CorrelateConfig,
    stream: &Stream,
    start_ms: u64,
    tx: &mpsc::Sender<Batch>,
) -> anyhow::Result<()> {
    let key = stream.key.as_str();
    let groups: Vec<HashMap<String, Value>> = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(key)
        .query_async(conn)
        .await?;
    let delivered = groups
        .iter()
        .find(|g| field_str(g.get("name")).as_deref() == Some(keys::GROUP))
        .and_then(|g| field_str(g.get("last-delivered-id")));
    let Some(delivered) = delivered else {
        return Ok(());
    };
    let pending: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
        .arg(key)
        .arg(keys::GROUP)
        .arg("-")
        .arg("+")
        .arg(100_000)
        .query_async(conn)
        .await?;
    let pending: HashSet<String> = pending.into_iter().map(|(id, ..)| id).collect();
    let mut from = format!("{start_ms}-0");
    loop {
        let range: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
            .arg(key)
            .arg(&from)
            .arg(&delivered)
            .arg("COUNT")
            .arg(1024)
            .query_async(conn)
            .await?;
        let Some(last) = range.ids.last().map(|e| e.id.clone()) else {
            break;
        };
        let ids: Vec<redis::streams::StreamId> = range
            .ids
            .into_iter()
            .filter(|e| !pending.contains(&e.id))
            .collect();
        if !ids.is_empty() {
            log::debug!(
                "{}: rebuilding from {} entries of {key}",
                config.name,
                ids.len()
            );
            if tx.send(stream.batch(Mode::Rebuild, ids)).await.is_err() {
                return Ok(());
            }
        }
        from = format!("({last}");
    }
    Ok(())
}

/// Claims the entries delivered and never acknowledged (a correlator died holding them,
/// or this one did before a restart) and hands them over to be observed for real.
async fn claim(
    conn: &mut Conn,
    config: &CorrelateConfig,
    stream: &Stream,
    tx: &mpsc::Sender<Batch>,
) -> anyhow::Result<()> {
    let key = stream.key.as_str();
    let mut from = "0-0".to_owned();
    loop {
        let reply: redis::streams::StreamAutoClaimReply = redis::cmd("XAUTOCLAIM")
            .arg(key)
            .arg(keys::GROUP)
            .arg(&config.name)
            .arg(0)
            .arg(&from)
            .arg("COUNT")
            .arg(1024)
            .query_async(conn)
            .await?;
        if !reply.claimed.is_empty() {
            log::info!(
                "claimed {} unacknowledged entries of {key}",
                reply.claimed.len()
            );
            if tx
                .send(stream.batch(Mode::Claimed, reply.claimed))
                .await
                .is_err()
            {
                return Ok(());
            }
        }
        if reply.next_stream_id == "0-0" {
            return Ok(());
        }
        from = reply.next_stream_id;
    }
}

fn field_str(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::BulkString(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}
