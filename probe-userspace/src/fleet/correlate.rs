//! `probe-detector correlate`: the fleet's correlator. It owns shards of the evidence (a
//! lease per shard, renewed every second, shared out evenly among the live correlators),
//! reads each owned shard's streams in the consumer group, runs the same engine over the
//! whole fleet's evidence, and writes the same records (each alert naming its sensors).
//!
//! Two stages. Evidence is sharded by source (a source's state is never split), and a
//! distributed scan's sources fall in many source shards: so the owner of a source shard
//! forwards each failure, before acknowledging it, to the target shard of its target
//! (`pd:tg:{N}`), whose owner runs the distributed-scan detector over every source of the
//! target. The first stage runs every other detector.
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
    detect::Engine,
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

/// Which shards: by source (every detector but the distributed one) or by target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
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

    fn name(self) -> &'static str {
        match self {
            Stage::Sources => "source",
            Stage::Targets => "target",
        }
    }
}

/// One stream entry: its id, the sensor that saw its records, the records.
struct Entry {
    id: String,
    sensor: String,
    blob: Vec<u8>,
}

/// Entries of one stream.
struct Batch {
    stage: Stage,
    key: String,
    mode: Mode,
    entries: Vec<Entry>,
}

/// Runs until SIGINT or SIGTERM. `pipeline`'s engine runs the first stage (its
/// distributed-scan detector off); `targets`, the distributed-scan detector alone, the
/// second (`None`: off).
pub async fn run(
    mut pipeline: Pipeline<Sinks>,
    mut targets: Option<Engine>,
    config: CorrelateConfig,
) -> anyhow::Result<()> {
    let mut sigint = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut sigterm = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let (tx, mut rx) = mpsc::channel::<Batch>(64);
    let mut shards = Shards {
        stage: Stage::Sources,
        config: config.clone(),
        owned: BTreeMap::new(),
        tx: tx.clone(),
    };
    let mut target_shards = targets.is_some().then(|| Shards {
        stage: Stage::Targets,
        config: config.clone(),
        owned: BTreeMap::new(),
        tx,
    });
    let mut conn: Option<Conn> = None;
    let mut backoff = Backoff::default();
    let mut stats = CorrelateStats::default();
    let mut lease_tick = tokio::time::interval(LEASE_TICK);
    let mut swept = std::time::Instant::now();
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
                if let Some(c) = &mut conn {
                    let mut managed = shards.manage(c).await;
                    if managed.is_ok()
                        && let Some(target_shards) = &mut target_shards
                    {
                        managed = target_shards.manage(c).await;
                    }
                    if let Err(err) = managed {
                        log::warn!("lost {} ({err}); its shards' leases run out unless renewed", config.target.shown());
                        conn = None;
                    } else if config.block_ttl.is_some() && swept.elapsed() >= BLOCK_SWEEP {
                        swept = std::time::Instant::now();
                        if let Some(c) = &mut conn
                            && let Err(err) = sweep_blocks(c).await
                        {
                            log::debug!("cannot sweep the ended fleet blocks: {err}");
                        }
                    }
                }
            }
            Some(batch) = rx.recv() => {
                let (acked, failures) = match batch.stage {
                    Stage::Sources => observe(&mut pipeline, &batch, &mut stats),
                    Stage::Targets => match &mut targets {
                        Some(engine) => observe_targets(engine, &mut pipeline, &batch, &mut stats),
                        None => (Vec::new(), Vec::new()),
                    },
                };
                if batch.mode != Mode::Rebuild {
                    // The blocks first: every sensor drops the scanner a little sooner.
                    publish_blocks(&mut pipeline, conn.as_mut(), &config, &mut stats).await;
                    write(&mut pipeline)?;
                    // The failures go on to the second stage before their entries are
                    // acknowledged: a correlator that dies in between forwards them again
                    // from its successor (the distributed detector counts a source once).
                    let forwarded = match (&mut conn, targets.is_some()) {
                        (Some(c), true) => forward(c, &failures).await,
                        (_, false) => Ok(()),
                        (None, true) => Err(redis::RedisError::from((
                            redis::ErrorKind::Io,
                            "not connected",
                        ))),
                    };
                    if let Err(err) = forwarded {
                        log::debug!("cannot forward to the second stage ({err}); {} left unacknowledged", batch.key);
                    } else if let Some(c) = &mut conn
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
                let now = unix_now().max(pipeline.latest());
                pipeline.tick(now);
                if let Some(engine) = &mut targets {
                    let scans = engine.tick(now);
                    pipeline.external_alerts(&scans, now);
                }
                write(&mut pipeline)?;
            }
        }
    }
    shards.release_all(conn.as_mut()).await;
    if let Some(target_shards) = &mut target_shards {
        target_shards.release_all(conn.as_mut()).await;
    }
    let now = unix_now().max(pipeline.latest());
    if let Some(engine) = &mut targets {
        let scans = engine.finish();
        pipeline.external_alerts(&scans, now);
    }
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

/// The records of each entry of a batch, undecodable ones counted and skipped; with the
/// ids of every entry (to acknowledge).
fn decode<'a>(
    batch: &'a Batch,
    stats: &mut CorrelateStats,
) -> (Vec<String>, Vec<(&'a str, Vec<Evidence>)>) {
    let mut acked = Vec::with_capacity(batch.entries.len());
    let mut decoded = Vec::with_capacity(batch.entries.len());
    for entry in &batch.entries {
        acked.push(entry.id.clone());
        match Evidence::decode_all(&entry.blob) {
            Ok(records) => decoded.push((entry.sensor.as_str(), records)),
            Err(err) => {
                if stats.skipped == 0 {
                    log::warn!(
                        "skipping evidence entry {} of {}: {err}",
                        entry.id,
                        batch.key
                    );
                }
                stats.skipped += 1;
            }
        }
    }
    match batch.mode {
        Mode::Claimed => stats.claimed += batch.entries.len() as u64,
        Mode::Live | Mode::Rebuild => {}
    }
    (acked, decoded)
}

/// Failures to forward to the second stage: (sensor, record).
type Failures = Vec<(String, Evidence)>;

/// Observes a batch of the first stage; returns the ids to acknowledge and the failures to
/// forward.
fn observe(
    pipeline: &mut Pipeline<Sinks>,
    batch: &Batch,
    stats: &mut CorrelateStats,
) -> (Vec<String>, Failures) {
    if batch.mode == Mode::Rebuild {
        // What is rendered from here on is the old owner's, written already.
        let _ = write(pipeline);
    }
    let (acked, decoded) = decode(batch, stats);
    let mut failures = Vec::new();
    for (sensor, records) in decoded {
        for record in records {
            if let Some(fleet) = pipeline.fleet_mut() {
                fleet.note(record.src, sensor);
            }
            let now = record.time.max(pipeline.latest());
            pipeline.observe(&record.to_probe(0), now);
            match batch.mode {
                Mode::Live | Mode::Claimed => stats.records += 1,
                Mode::Rebuild => stats.rebuilt += 1,
            }
            if batch.mode != Mode::Rebuild && record.outcome != probe_common::Outcome::Accepted {
                failures.push((sensor.to_owned(), record));
            }
        }
    }
    if batch.mode == Mode::Rebuild {
        drop(pipeline.take_unwritten());
        drop(pipeline.take_decided());
    }
    (acked, failures)
}

/// Observes a batch of the second stage in the distributed-scan engine, its alerts
/// rendered by `pipeline` (muted in a rebuild).
fn observe_targets(
    engine: &mut Engine,
    pipeline: &mut Pipeline<Sinks>,
    batch: &Batch,
    stats: &mut CorrelateStats,
) -> (Vec<String>, Failures) {
    let (acked, decoded) = decode(batch, stats);
    for (sensor, records) in decoded {
        for record in records {
            if let Some(fleet) = pipeline.fleet_mut() {
                fleet.note(record.src, sensor);
            }
            let now = record.time.max(pipeline.latest());
            let scans = engine.observe(&record.to_probe(0), now);
            if batch.mode != Mode::Rebuild {
                pipeline.external_alerts(&scans, now);
            }
        }
    }
    (acked, Vec::new())
}

/// Appends failures to the second stage's streams, one entry per target shard and sensor.
async fn forward(conn: &mut Conn, failures: &[(String, Evidence)]) -> redis::RedisResult<()> {
    let mut entries: BTreeMap<(u16, &str), Vec<u8>> = BTreeMap::new();
    for (sensor, record) in failures {
        record.encode(
            entries
                .entry((keys::shard_of(record.dst), sensor.as_str()))
                .or_default(),
        );
    }
    for ((shard, sensor), blob) in entries {
        let _: Value = redis::cmd("XADD")
            .arg(keys::target_stream(shard))
            .arg("MAXLEN")
            .arg("~")
            .arg(TARGET_STREAM_ENTRIES)
            .arg("*")
            .arg("v")
            .arg(wire::VERSION)
            .arg("s")
            .arg(sensor)
            .arg("r")
            .arg(blob)
            .query_async(conn)
            .await?;
    }
    Ok(())
}

/// Entries each target stream keeps, about.
const TARGET_STREAM_ENTRIES: usize = 100_000;

/// How often ended blocks are taken out of the blocks in force.
const BLOCK_SWEEP: Duration = Duration::from_secs(60);

/// Takes the blocks that ended out of `pd:{blocks}:active` (any correlator may: the same
/// result whoever does it).
async fn sweep_blocks(conn: &mut Conn) -> redis::RedisResult<()> {
    let active: BTreeMap<String, String> = redis::cmd("HGETALL")
        .arg(keys::BLOCKS_ACTIVE)
        .query_async(conn)
        .await?;
    let now = unix_ms();
    let ended: Vec<&String> = active
        .iter()
        .filter(|(_, until)| until.parse::<u64>().map_or(true, |until| until <= now))
        .map(|(addr, _)| addr)
        .collect();
    if !ended.is_empty() {
        let _: u64 = redis::cmd("HDEL")
            .arg(keys::BLOCKS_ACTIVE)
            .arg(&ended)
            .query_async(conn)
            .await?;
    }
    Ok(())
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

/// The shards of one stage this correlator owns, each with its reader.
struct Shards {
    stage: Stage,
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
    async fn release_all(&mut self, conn: Option<&mut Conn>) {
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
