//! `probe-detector correlate`: the fleet's correlator. It owns shards of the evidence (a
//! lease per shard, renewed every second, shared out evenly among the live correlators),
//! reads each owned shard's streams in the consumer group, runs the same engine over the
//! whole fleet's evidence, and writes the same records (each alert naming its sensors).
//!
//! Taking a shard over (at start, or when its owner stopped renewing): the shard's
//! evidence within the rebuild window that its group delivered already is observed again
//! with its alerts muted (the old owner wrote them), so the sources' state is whole; then
//! the entries delivered and never acknowledged (the old owner died holding them) are
//! claimed and observed for real; then new entries. An entry is acknowledged after it was
//! observed and its records written, so none is lost when a correlator dies.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::Context as _;
use redis::{Value, streams::StreamReadReply};
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::mpsc,
};

use crate::{
    fleet::{
        channel::{Backoff, Conn, FleetTarget},
        keys,
        sensor::unix_ms,
        wire::{self, Evidence},
    },
    output::{OutputError, Pipeline, sink::Sinks},
};

/// A lease lasts this long unless renewed: a dead correlator's shards are taken over
/// within it (and a second).
pub const LEASE: Duration = Duration::from_secs(5);
/// How often leases are renewed, shares recomputed and the heartbeat written.
const LEASE_TICK: Duration = Duration::from_secs(1);
/// Entries read from a shard per command.
const READ_COUNT: usize = 256;
/// How long a shard's read waits for new entries (then it looks for new sensors).
const READ_BLOCK_MS: u64 = 1000;

/// The correlator's settings beyond the pipeline's.
#[derive(Clone, Debug)]
pub struct CorrelateConfig {
    /// Where the fleet's Redis is.
    pub target: FleetTarget,
    /// This correlator's name (the consumer in the group, the lease's holder).
    pub name: String,
    /// How far back a shard taken over is rebuilt from.
    pub rebuild_window: Duration,
    /// `--block`: publish fleet blocks, each for this long.
    pub block_ttl: Option<Duration>,
}

/// What the correlator has done, for its log and tests.
#[derive(Debug, Default)]
pub struct CorrelateStats {
    /// Records observed live, and in rebuilds.
    pub records: u64,
    pub rebuilt: u64,
    /// Entries claimed from a correlator that stopped.
    pub claimed: u64,
    /// Entries skipped: another format version, or undecodable.
    pub skipped: u64,
    /// Fleet blocks published.
    pub blocks: u64,
}

/// Why a shard's entries are handed over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Observed already by a previous owner: state only, alerts muted, not acknowledged.
    Rebuild,
    /// New: observed, written, acknowledged.
    Live,
    /// Delivered to a previous owner that never acknowledged it: as new.
    Claimed,
}

/// Entries of one stream.
struct Batch {
    key: String,
    sensor: String,
    mode: Mode,
    entries: Vec<(String, Vec<u8>)>,
}

/// Runs until SIGINT or SIGTERM.
pub async fn run(mut pipeline: Pipeline<Sinks>, config: CorrelateConfig) -> anyhow::Result<()> {
    let mut sigint = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut sigterm = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let (tx, mut rx) = mpsc::channel::<Batch>(64);
    let mut shards = Shards {
        config: config.clone(),
        owned: BTreeMap::new(),
        tx,
    };
    let mut conn: Option<Conn> = None;
    let mut backoff = Backoff::default();
    let mut stats = CorrelateStats::default();
    let mut lease_tick = tokio::time::interval(LEASE_TICK);
    let mut lifecycle = tokio::time::interval(Duration::from_secs(1));
    log::info!(
        "correlator {} for the fleet at {}: {} shards, leases of {} s",
        config.name,
        config.target.shown(),
        keys::SHARDS,
        LEASE.as_secs()
    );
    loop {
        tokio::select! {
            biased;
            _ = sigint.recv() => { log::info!("SIGINT: stopping"); break; }
            _ = sigterm.recv() => { log::info!("SIGTERM: stopping"); break; }
            _ = lease_tick.tick() => {
                if conn.is_none() {
                    match config.target.connect().await {
                        Ok(c) => {
                            log::info!("connected to {}", config.target.shown());
                            backoff.reset();
                            conn = Some(c);
                        }
                        Err(err) => {
                            if backoff.failures() == 0 {
                                log::warn!("cannot reach {}: {err}; trying again", config.target.shown());
                            }
                            backoff.next_wait();
                        }
                    }
                }
                if let Some(c) = &mut conn
                    && let Err(err) = shards.manage(c).await
                {
                    log::warn!("lost {} ({err}); its shards' leases run out unless renewed", config.target.shown());
                    conn = None;
                }
            }
            Some(batch) = rx.recv() => {
                let acked = observe(&mut pipeline, &batch, &mut stats);
                if batch.mode != Mode::Rebuild {
                    write(&mut pipeline)?;
                    publish_blocks(&mut pipeline, conn.as_mut(), &config, &mut stats).await;
                    if let Some(c) = &mut conn
                        && !acked.is_empty()
                    {
                        let result: redis::RedisResult<u64> = redis::cmd("XACK")
                            .arg(&batch.key)
                            .arg(keys::GROUP)
                            .arg(&acked)
                            .query_async(c)
                            .await;
                        if let Err(err) = result {
                            // Left pending: claimed again by whoever owns the shard next.
                            log::debug!("cannot acknowledge {} entries of {}: {err}", acked.len(), batch.key);
                        }
                    }
                }
            }
            _ = lifecycle.tick() => {
                pipeline.tick(unix_now().max(pipeline.latest()));
                write(&mut pipeline)?;
            }
        }
    }
    shards.release_all(conn.as_mut()).await;
    pipeline.finish(unix_now().max(pipeline.latest()));
    write(&mut pipeline)?;
    pipeline.out_mut().finish(Duration::from_secs(5));
    log::info!(
        "correlator {}: {} records observed, {} rebuilt, {} entries claimed, {} skipped, {} fleet blocks",
        config.name,
        stats.records,
        stats.rebuilt,
        stats.claimed,
        stats.skipped,
        stats.blocks
    );
    Ok(())
}

fn unix_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

fn write(pipeline: &mut Pipeline<Sinks>) -> anyhow::Result<()> {
    match pipeline.flush(|_| None) {
        Ok(()) | Err(OutputError::ReaderGone) => Ok(()),
        Err(err) => Err(err.into()),
    }
}

/// Observes a batch; returns the ids to acknowledge.
fn observe(
    pipeline: &mut Pipeline<Sinks>,
    batch: &Batch,
    stats: &mut CorrelateStats,
) -> Vec<String> {
    if batch.mode == Mode::Rebuild {
        // What is rendered from here on is the old owner's, written already.
        let _ = write(pipeline);
    }
    let mut acked = Vec::with_capacity(batch.entries.len());
    for (id, blob) in &batch.entries {
        acked.push(id.clone());
        let records = match Evidence::decode_all(blob) {
            Ok(records) => records,
            Err(err) => {
                if stats.skipped == 0 {
                    log::warn!("skipping evidence entry {id} of {}: {err}", batch.key);
                }
                stats.skipped += 1;
                continue;
            }
        };
        for record in records {
            if let Some(fleet) = pipeline.fleet_mut() {
                fleet.note(record.src, &batch.sensor);
            }
            let now = record.time.max(pipeline.latest());
            pipeline.observe(&record.to_probe(0), now);
            match batch.mode {
                Mode::Live | Mode::Claimed => stats.records += 1,
                Mode::Rebuild => stats.rebuilt += 1,
            }
        }
    }
    if batch.mode == Mode::Claimed {
        stats.claimed += batch.entries.len() as u64;
    }
    if batch.mode == Mode::Rebuild {
        drop(pipeline.take_unwritten());
        drop(pipeline.take_decided());
    }
    acked
}

/// Publishes the blocks the pipeline decided (backed by enough sensors, within the
/// budget): on the block stream, and among the blocks in force for sensors that join later.
async fn publish_blocks(
    pipeline: &mut Pipeline<Sinks>,
    conn: Option<&mut Conn>,
    config: &CorrelateConfig,
    stats: &mut CorrelateStats,
) {
    let decided = pipeline.take_decided();
    let (Some(ttl), Some(conn)) = (config.block_ttl, conn) else {
        return;
    };
    for addr in decided {
        let until = unix_ms().saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX));
        let mut pipe = redis::pipe();
        pipe.cmd("XADD")
            .arg(keys::BLOCKS)
            .arg("MAXLEN")
            .arg("~")
            .arg(10_000)
            .arg("*")
            .arg("addr")
            .arg(addr.to_string())
            .arg("until")
            .arg(until)
            .arg("by")
            .arg(&config.name)
            .ignore()
            .cmd("HSET")
            .arg(keys::BLOCKS_ACTIVE)
            .arg(addr.to_string())
            .arg(until)
            .ignore();
        let sent: redis::RedisResult<()> = if conn.is_cluster() {
            // Both keys share the {blocks} tag: one node, one pipeline.
            pipe.query_async(conn).await
        } else {
            pipe.query_async(conn).await
        };
        match sent {
            Ok(()) => {
                stats.blocks += 1;
                log::info!("fleet block of {addr} published for {} s", ttl.as_secs());
            }
            Err(err) => log::error!("cannot publish the fleet block of {addr}: {err}"),
        }
    }
}

/// The shards this correlator owns, each with its reader.
struct Shards {
    config: CorrelateConfig,
    owned: BTreeMap<u16, tokio::task::JoinHandle<()>>,
    tx: mpsc::Sender<Batch>,
}

/// Renews a lease if it is still ours (1), else 0.
const RENEW: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) else return 0 end";
/// Deletes a lease if it is still ours.
const RELEASE: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end";

impl Shards {
    /// Heartbeat, renew, and take or give shards so that each live correlator holds its
    /// share.
    async fn manage(&mut self, conn: &mut Conn) -> redis::RedisResult<()> {
        let before: Vec<u16> = self.owned.keys().copied().collect();
        let live = self.share_out(conn).await?;
        let after: Vec<u16> = self.owned.keys().copied().collect();
        if before != after {
            log::info!(
                "owns {} of {} shards {after:?} ({live} correlators)",
                after.len(),
                keys::SHARDS
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
                .key(keys::lease(shard))
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
                .key(keys::lease(shard))
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
                .arg(keys::lease(shard))
                .arg(&self.config.name)
                .arg("NX")
                .arg("PX")
                .arg(lease_ms)
                .query_async(conn)
                .await?;
            if taken.is_some() {
                let reader = tokio::spawn(read_shard(self.config.clone(), shard, self.tx.clone()));
                self.owned.insert(shard, reader);
            }
        }
        Ok(live)
    }

    /// Stops the readers and gives every lease back, and leaves the live set.
    async fn release_all(&mut self, conn: Option<&mut Conn>) {
        for reader in self.owned.values() {
            reader.abort();
        }
        let Some(conn) = conn else {
            return;
        };
        for &shard in self.owned.keys() {
            let _: redis::RedisResult<i64> = redis::Script::new(RELEASE)
                .key(keys::lease(shard))
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
async fn read_shard(config: CorrelateConfig, shard: u16, tx: mpsc::Sender<Batch>) {
    let mut backoff = Backoff::default();
    let mut taken_over = false;
    loop {
        match read_shard_once(&config, shard, &tx, &mut taken_over).await {
            Ok(()) => return,
            Err(err) => {
                log::warn!("shard {shard}: {err}; reading it again");
                tokio::time::sleep(backoff.next_wait()).await;
            }
        }
    }
}

async fn read_shard_once(
    config: &CorrelateConfig,
    shard: u16,
    tx: &mpsc::Sender<Batch>,
    taken_over: &mut bool,
) -> anyhow::Result<()> {
    let mut conn = config.target.connect().await?;
    let start_ms = unix_ms()
        .saturating_sub(u64::try_from(config.rebuild_window.as_millis()).unwrap_or(u64::MAX));
    let mut streams: BTreeMap<String, String> = BTreeMap::new();
    let mut looked = std::time::Instant::now() - LEASE_TICK;
    loop {
        if looked.elapsed() >= LEASE_TICK {
            looked = std::time::Instant::now();
            let sensors: Vec<String> = redis::cmd("SMEMBERS")
                .arg(keys::SENSORS)
                .query_async(&mut conn)
                .await?;
            for sensor in sensors {
                if keys::check_name(&sensor).is_err() {
                    continue;
                }
                let key = keys::evidence_stream(shard, &sensor);
                if streams.contains_key(&key) {
                    continue;
                }
                create_group(&mut conn, &key, start_ms).await?;
                if !*taken_over {
                    // Only streams present at the takeover have a past to rebuild.
                    rebuild(&mut conn, config, &key, &sensor, start_ms, tx).await?;
                }
                claim(&mut conn, config, &key, &sensor, tx).await?;
                streams.insert(key, sensor);
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
        for stream in reply.map(|r| r.keys).unwrap_or_default() {
            let Some(sensor) = streams.get(&stream.key) else {
                continue;
            };
            let entries = stream
                .ids
                .into_iter()
                .map(|e| (e.id, blob(&e.map)))
                .collect();
            let batch = Batch {
                key: stream.key,
                sensor: sensor.clone(),
                mode: Mode::Live,
                entries,
            };
            if tx.send(batch).await.is_err() {
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
    key: &str,
    sensor: &str,
    start_ms: u64,
    tx: &mpsc::Sender<Batch>,
) -> anyhow::Result<()> {
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
        let entries: Vec<(String, Vec<u8>)> = range
            .ids
            .into_iter()
            .filter(|e| !pending.contains(&e.id))
            .map(|e| (e.id, blob(&e.map)))
            .collect();
        if !entries.is_empty() {
            log::debug!(
                "{}: rebuilding from {} entries of {key}",
                config.name,
                entries.len()
            );
            let batch = Batch {
                key: key.to_owned(),
                sensor: sensor.to_owned(),
                mode: Mode::Rebuild,
                entries,
            };
            if tx.send(batch).await.is_err() {
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
    key: &str,
    sensor: &str,
    tx: &mpsc::Sender<Batch>,
) -> anyhow::Result<()> {
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
            let batch = Batch {
                key: key.to_owned(),
                sensor: sensor.to_owned(),
                mode: Mode::Claimed,
                entries: reply
                    .claimed
                    .into_iter()
                    .map(|e| (e.id, blob(&e.map)))
                    .collect(),
            };
            if tx.send(batch).await.is_err() {
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
