//! `probe-detector correlate`: the fleet's correlator. It owns shards of the evidence
//! ([`super::shards`]: leases, readers), runs the same engine over the whole fleet's
//! evidence, and writes the same records (each alert naming its sensors); with `--block`
//! it publishes fleet blocks.
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
    collections::BTreeMap,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::Context as _;
use redis::Value;
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
        shards::{Batch, LEASE, LEASE_TICK, Mode, Shards, Stage},
        wire::{self, Evidence},
    },
    output::{OutputError, Pipeline, sink::Sinks},
};

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
                    // The second stage forwards nothing.
                    Stage::Targets => match &mut targets {
                        Some(engine) => (observe_targets(engine, &mut pipeline, &batch, &mut stats), Vec::new()),
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
) -> Vec<String> {
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
    acked
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
        // Both keys share the {blocks} tag: in a cluster too, one node, one pipeline.
        let sent: redis::RedisResult<()> = pipe.query_async(conn).await;
        match sent {
            Ok(()) => {
                stats.blocks += 1;
                log::info!("fleet block of {addr} published for {} s", ttl.as_secs());
            }
            Err(err) => log::error!("cannot publish the fleet block of {addr}: {err}"),
        }
    }
}
