//! A sensor's side of the fleet: its outcomes (and the kernel's held first failures, which
//! local detection never reads) published as evidence, rationed and deduplicated; the
//! publisher task that keeps a bounded backlog while Redis is away and reconnects with
//! backoff; and the follower of the fleet's blocks. Local detection never waits for any
//! of it: the daemon only ever `try_send`s.

use std::{
    collections::{BTreeMap, HashSet, VecDeque},
    net::IpAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

use redis::streams::StreamReadReply;
use tokio::sync::mpsc;

use crate::{
    clock::WallClock,
    event::Probe,
    fleet::{
        channel::{Backoff, Conn, FleetTarget},
        keys,
        wire::{self, Evidence},
    },
};

/// Entries each of a sensor's shard streams keeps, about: the window a correlator that
/// takes a shard over rebuilds from.
pub const STREAM_ENTRIES: usize = 10_000;
/// Records in one stream entry at most.
const ENTRY_RECORDS: usize = 2048;
/// Records taken from the backlog for one round of appends.
const ROUND_RECORDS: usize = 16_384;
/// Held first failures remembered, so that one sent again by the kernel (the source's
/// second failure releases it) is not published twice: as many as the kernel holds.
const RECENT_HELD: usize = probe_common::HELD_SLOTS as usize;

/// What the fleet's side of a sensor has done, for metrics and the log.
#[derive(Debug, Default)]
pub struct FleetStats {
    /// Records published.
    pub published: AtomicU64,
    /// Records over `--fleet-rate`, not published.
    pub dropped_rate: AtomicU64,
    /// Records lost because the backlog was full (Redis away too long, or too slow).
    pub dropped_backlog: AtomicU64,
    /// Connections made (the first and every reconnection).
    pub connects: AtomicU64,
    /// 1 while connected.
    pub connected: AtomicU64,
    /// Records waiting to be published.
    pub backlog: AtomicU64,
    /// Fleet blocks received.
    pub blocks_received: AtomicU64,
    /// This sensor's own alert records published (`pd:alerts:SENSOR`).
    pub alerts_published: AtomicU64,
}

/// What the tap queues for the publisher.
#[derive(Clone, Debug, PartialEq)]
pub enum Item {
    /// An outcome, as evidence.
    Evidence(Evidence),
    /// One of this sensor's alert records (its JSON line).
    Alert(String),
}

/// A rate limit of records a second, with a second's burst.
#[derive(Debug)]
struct Bucket {
    rate: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn new(rate: u32) -> Self {
        Self {
            rate: f64::from(rate),
            tokens: f64::from(rate),
            at: Instant::now(),
        }
    }

    fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The identity of a held failure: the kernel sends it again, with the same time, when
/// its source fails a second time.
type HeldKey = (IpAddr, IpAddr, u16, u8, u64);

fn held_key(probe: &Probe) -> HeldKey {
    (
        probe.src,
        probe.dst,
        probe.dst_port,
        probe.proto,
        u64::try_from(probe.timestamp.as_nanos()).unwrap_or(u64::MAX),
    )
}

/// Where the daemon hands outcomes to the fleet: converts, rations (`--fleet-rate`),
/// skips what was published already, and queues for the publisher without waiting.
pub struct Tap {
    tx: mpsc::Sender<Item>,
    stats: Arc<FleetStats>,
    bucket: Bucket,
    recent: HashSet<HeldKey>,
    order: VecDeque<HeldKey>,
}

impl Tap {
    /// A tap that queues into `tx`, at most `rate` records a second.
    pub fn new(tx: mpsc::Sender<Item>, rate: u32, stats: Arc<FleetStats>) -> Self {
        Self {
            tx,
            stats,
            bucket: Bucket::new(rate),
            recent: HashSet::new(),
            order: VecDeque::new(),
        }
    }

    /// An outcome local detection saw (a ring event or a summary's port).
    pub fn note(&mut self, probe: &Probe) {
        if !self.recent.is_empty() && self.recent.remove(&held_key(probe)) {
            return;
        }
        self.send(probe);
    }

    /// A first failure the kernel holds (from its fleet ring): published now, remembered so
    /// that its release is not published again.
    pub fn note_held(&mut self, probe: &Probe) {
        let key = held_key(probe);
        if self.recent.insert(key) {
            self.order.push_back(key);
            if self.order.len() > RECENT_HELD
                && let Some(old) = self.order.pop_front()
            {
                self.recent.remove(&old);
            }
        }
        self.send(probe);
    }

    fn send(&mut self, probe: &Probe) {
        if !self.bucket.take(Instant::now()) {
            self.stats.dropped_rate.fetch_add(1, Relaxed);
            return;
        }
        let evidence = Evidence::of(probe, WallClock::now());
        if self.tx.try_send(Item::Evidence(evidence)).is_err() {
            self.stats.dropped_backlog.fetch_add(1, Relaxed);
        }
    }

    /// One of this sensor's alert records (a JSON line), published besides the evidence
    /// (alerts are few: not rationed, but lost with the evidence when the queue is full).
    pub fn alert(&mut self, line: &str) {
        if self.tx.try_send(Item::Alert(line.to_owned())).is_err() {
            self.stats.dropped_backlog.fetch_add(1, Relaxed);
        }
    }
}

/// Publishes what the tap queues, until the tap is dropped and the queue is empty (or
/// `deadline` after that, whichever comes first: see [`Publisher::finish`]).
pub struct Publisher {
    handle: tokio::task::JoinHandle<()>,
}

impl Publisher {
    /// Starts the publisher of sensor `sensor` and returns it with its tap.
    pub fn start(
        target: FleetTarget,
        sensor: String,
        rate: u32,
        backlog: usize,
        stats: Arc<FleetStats>,
    ) -> (Self, Tap) {
        // The channel holds a few rounds; the rest of the backlog waits in the task.
        let (tx, rx) = mpsc::channel(ROUND_RECORDS * 4);
        let tap = Tap::new(tx, rate, Arc::clone(&stats));
        let handle = tokio::spawn(publish(target, sensor, rx, backlog.max(1), stats));
        (Self { handle }, tap)
    }

    /// Waits at most `time` for the backlog to be published (the tap must be dropped).
    pub async fn finish(self, time: Duration) {
        let mut handle = self.handle;
        if tokio::time::timeout(time, &mut handle).await.is_err() {
            handle.abort();
        }
    }
}

async fn publish(
    target: FleetTarget,
    sensor: String,
    mut rx: mpsc::Receiver<Item>,
    cap: usize,
    stats: Arc<FleetStats>,
) {
    let mut backlog: VecDeque<Item> = VecDeque::new();
    let mut backoff = Backoff::default();
    let mut closed = false;
    let keep = |backlog: &mut VecDeque<Item>, stats: &FleetStats| {
        let over = backlog.len().saturating_sub(cap);
        if over > 0 {
            backlog.drain(..over);
            stats.dropped_backlog.fetch_add(over as u64, Relaxed);
        }
        stats.backlog.store(backlog.len() as u64, Relaxed);
    };
    loop {
        let mut conn = match target.connect().await {
            Ok(conn) => conn,
            Err(err) => {
                let wait = backoff.next_wait();
                if backoff.failures() == 1 {
                    log::warn!(
                        "fleet: cannot reach {}: {err}; local detection goes on, evidence waits (at most {cap} records) and the connection is tried again",
                        target.shown()
                    );
                } else {
                    log::debug!("fleet: cannot reach {}: {err}", target.shown());
                }
                if closed {
                    return;
                }
                // Meanwhile the queue is taken into the backlog, so the tap never waits.
                let absorb = async {
                    while let Some(evidence) = rx.recv().await {
                        backlog.push_back(evidence);
                        keep(&mut backlog, &stats);
                    }
                };
                if tokio::time::timeout(wait, absorb).await.is_ok() {
                    closed = true;
                }
                continue;
            }
        };
        backoff.reset();
        stats.connects.fetch_add(1, Relaxed);
        stats.connected.store(1, Relaxed);
        log::info!(
            "fleet: publishing evidence to {}{} as sensor {sensor}",
            target.shown(),
            if conn.is_cluster() {
                " (a Redis Cluster)"
            } else {
                ""
            }
        );
        let registered: redis::RedisResult<()> = redis::cmd("SADD")
            .arg(keys::SENSORS)
            .arg(&sensor)
            .query_async(&mut conn)
            .await;
        if let Err(err) = registered {
            log::warn!("fleet: cannot register sensor {sensor}: {err}");
        }
        loop {
            if backlog.is_empty() {
                if closed {
                    stats.connected.store(0, Relaxed);
                    return;
                }
                let mut got = Vec::new();
                if rx.recv_many(&mut got, ROUND_RECORDS).await == 0 {
                    closed = true;
                    continue;
                }
                backlog.extend(got);
            }
            while let Ok(evidence) = rx.try_recv() {
                backlog.push_back(evidence);
                if backlog.len() >= cap {
                    break;
                }
            }
            keep(&mut backlog, &stats);
            let round: Vec<Item> = backlog.drain(..backlog.len().min(ROUND_RECORDS)).collect();
            match append_items(&mut conn, &sensor, &round).await {
                Ok((records, alerts)) => {
                    stats.published.fetch_add(records, Relaxed);
                    stats.alerts_published.fetch_add(alerts, Relaxed);
                    stats.backlog.store(backlog.len() as u64, Relaxed);
                }
                Err(err) => {
                    log::warn!(
                        "fleet: lost the connection to {} ({err}); {} records wait",
                        target.shown(),
                        round.len() + backlog.len()
                    );
                    for evidence in round.into_iter().rev() {
                        backlog.push_front(evidence);
                    }
                    keep(&mut backlog, &stats);
                    stats.connected.store(0, Relaxed);
                    break;
                }
            }
        }
    }
}

/// Appends a round: its evidence to the shard streams, its alerts to the sensor's alert
/// stream (trimmed to about [`STREAM_ENTRIES`]); returns how many of each.
async fn append_items(
    conn: &mut Conn,
    sensor: &str,
    round: &[Item],
) -> redis::RedisResult<(u64, u64)> {
    let mut records = Vec::with_capacity(round.len());
    let mut alerts = Vec::new();
    for item in round {
        match item {
            Item::Evidence(evidence) => records.push(evidence.clone()),
            Item::Alert(line) => alerts.push(line.as_str()),
        }
    }
    append(conn, sensor, &records).await?;
    if !alerts.is_empty() {
        let key = keys::alert_stream(sensor);
        let mut pipe = redis::pipe();
        for line in &alerts {
            pipe.cmd("XADD")
                .arg(&key)
                .arg("MAXLEN")
                .arg("~")
                .arg(STREAM_ENTRIES)
                .arg("*")
                .arg("eve")
                .arg(*line)
                .ignore();
        }
        let () = pipe.query_async(conn).await?;
    }
    Ok((records.len() as u64, alerts.len() as u64))
}

/// Appends `records` to the sensor's shard streams: one entry per shard and up to
/// [`ENTRY_RECORDS`] records, each stream trimmed to about [`STREAM_ENTRIES`].
pub async fn append(conn: &mut Conn, sensor: &str, records: &[Evidence]) -> redis::RedisResult<()> {
    let mut shards: BTreeMap<u16, Vec<&Evidence>> = BTreeMap::new();
    for record in records {
        shards
            .entry(keys::shard_of(record.src))
            .or_default()
            .push(record);
    }
    let mut pipe = redis::pipe();
    let mut commands = 0;
    for (shard, records) in shards {
        let key = keys::evidence_stream(shard, sensor);
        for chunk in records.chunks(ENTRY_RECORDS) {
            let mut blob = Vec::with_capacity(chunk.len() * wire::RECORD_BYTES);
            for record in chunk {
                record.encode(&mut blob);
            }
            let mut cmd = redis::cmd("XADD");
            cmd.arg(&key)
                .arg("MAXLEN")
                .arg("~")
                .arg(STREAM_ENTRIES)
                .arg("*")
                .arg("v")
                .arg(wire::VERSION)
                .arg("r")
                .arg(blob);
            if conn.is_cluster() {
                // Each to the node of its shard.
                let _: redis::Value = cmd.query_async(conn).await?;
            } else {
                pipe.add_command(cmd).ignore();
                commands += 1;
            }
        }
    }
    if commands > 0 {
        let () = pipe.query_async(conn).await?;
    }
    Ok(())
}

/// A block the fleet's correlators decided, as a sensor reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FleetBlock {
    /// The source to block.
    pub addr: IpAddr,
    /// Until when, in Unix milliseconds.
    pub until_ms: u64,
    /// The correlator that decided it.
    pub by: String,
}

impl FleetBlock {
    /// Reads one entry of the block stream (or of the active blocks: address and end);
    /// `None` when it is malformed (it is then ignored: a sensor acts on nothing else).
    pub fn parse(addr: &str, until_ms: &str, by: &str) -> Option<Self> {
        Some(Self {
            addr: addr.parse().ok()?,
            until_ms: until_ms.parse().ok()?,
            by: by.chars().take(64).collect(),
        })
    }
}

/// Follows the fleet's blocks: those in force when it connects, then each new one, handed
/// to the daemon (which applies each under this sensor's own never-block policy).
pub fn follow_blocks(
    target: FleetTarget,
    tx: mpsc::Sender<FleetBlock>,
    stats: Arc<FleetStats>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut backoff = Backoff::default();
        loop {
            let err = match follow(&target, &tx, &stats).await {
                Ok(()) => return,
                Err(err) => err,
            };
            log::debug!("fleet: block stream: {err}");
            tokio::time::sleep(backoff.next_wait()).await;
            if backoff.failures() > 3 {
                backoff.reset();
            }
        }
    })
}

async fn follow(
    target: &FleetTarget,
    tx: &mpsc::Sender<FleetBlock>,
    stats: &FleetStats,
) -> anyhow::Result<()> {
    let mut conn = target.connect().await?;
    // The stream's end first, then the blocks in force: one made in between is in both,
    // and applying it twice is harmless.
    let last: redis::streams::StreamRangeReply = redis::cmd("XREVRANGE")
        .arg(keys::BLOCKS)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .query_async(&mut conn)
        .await?;
    let mut from = last
        .ids
        .first()
        .map_or_else(|| "0-0".to_owned(), |entry| entry.id.clone());
    let active: BTreeMap<String, String> = redis::cmd("HGETALL")
        .arg(keys::BLOCKS_ACTIVE)
        .query_async(&mut conn)
        .await?;
    let now_ms = unix_ms();
    for (addr, until) in &active {
        if let Some(block) = FleetBlock::parse(addr, until, "fleet")
            && block.until_ms > now_ms
        {
            stats.blocks_received.fetch_add(1, Relaxed);
            if tx.send(block).await.is_err() {
                return Ok(());
            }
        }
    }
    loop {
        let reply: Option<StreamReadReply> = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(256)
            .arg("BLOCK")
            .arg(1000)
            .arg("STREAMS")
            .arg(keys::BLOCKS)
            .arg(&from)
            .query_async(&mut conn)
            .await?;
        for entry in reply.into_iter().flat_map(|r| r.keys).flat_map(|k| k.ids) {
            from = entry.id.clone();
            let field = |name: &str| match entry.map.get(name) {
                Some(redis::Value::BulkString(bytes)) => {
                    String::from_utf8_lossy(bytes).into_owned()
                }
                Some(redis::Value::SimpleString(s)) => s.clone(),
                _ => String::new(),
            };
            match FleetBlock::parse(&field("addr"), &field("until"), &field("by")) {
                Some(block) => {
                    stats.blocks_received.fetch_add(1, Relaxed);
                    if tx.send(block).await.is_err() {
                        return Ok(());
                    }
                }
                None => log::debug!("fleet: skipping a malformed block entry {}", entry.id),
            }
        }
    }
}

/// Milliseconds since the Unix epoch now.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(src: &str, port: u16, at_ns: u64) -> Probe {
        let mut probe = Probe::syn(
            src.parse().unwrap(),
            "198.18.20.2".parse().unwrap(),
            port,
            probe_common::Outcome::Refused,
        );
        probe.timestamp = Duration::from_nanos(at_ns);
        probe
    }

    #[test]
    fn a_held_failure_released_later_is_published_once() {
        let (tx, mut rx) = mpsc::channel(16);
        let stats = Arc::new(FleetStats::default());
        let mut tap = Tap::new(tx, 1000, Arc::clone(&stats));
        let held = failure("198.18.19.2", 22, 5);
        tap.note_held(&held);
        // The source's second failure releases the held one through the ring: skipped.
        tap.note(&held);
        tap.note(&failure("198.18.19.2", 23, 9));
        let ports: Vec<u16> = std::iter::from_fn(|| rx.try_recv().ok())
            .filter_map(|item| match item {
                Item::Evidence(e) => Some(e.dst_port),
                Item::Alert(_) => None,
            })
            .collect();
        assert_eq!(ports, [22, 23]);
    }

    #[test]
    fn the_rate_and_the_queue_bound_what_is_sent_and_count_the_rest() {
        let (tx, mut rx) = mpsc::channel(4);
        let stats = Arc::new(FleetStats::default());
        let mut tap = Tap::new(tx, 10, Arc::clone(&stats));
        for n in 0..30u16 {
            tap.note(&failure("198.18.19.2", n, u64::from(n)));
        }
        let sent = std::iter::from_fn(|| rx.try_recv().ok()).count();
        assert_eq!(sent, 4);
        assert_eq!(stats.dropped_backlog.load(Relaxed), 6);
        assert_eq!(stats.dropped_rate.load(Relaxed), 20);
    }

    #[test]
    fn malformed_blocks_are_ignored() {
        assert_eq!(
            FleetBlock::parse("198.18.19.2", "1764400000000", "c1"),
            Some(FleetBlock {
                addr: "198.18.19.2".parse().unwrap(),
                until_ms: 1_764_400_000_000,
                by: "c1".into()
            })
        );
        assert_eq!(FleetBlock::parse("rm -rf /", "1", "c1"), None);
        assert_eq!(FleetBlock::parse("198.18.19.2", "soon", "c1"), None);
    }
}
