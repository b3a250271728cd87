//! A sensor's link to the fleet (`--fleet`): the publisher and the fleet's blocks the
//! event loop holds, the kernel's fleet ring read at most every [`FLEET_READ_GAP`], and
//! the fleet's blocks applied under this host's own policy.

use std::{sync::Arc, time::Duration};

use aya::maps::{MapData, RingBuf};
use tokio::io::unix::AsyncFd;

use crate::{clock, daemon::Daemon};

/// A sensor's link to the fleet (`--fleet`).
pub struct FleetLink {
    /// Publishes what the pipeline's tap and the kernel's fleet ring give it.
    pub publisher: crate::fleet::sensor::Publisher,
    /// The fleet's blocks (with `--block`).
    pub blocks: Option<tokio::sync::mpsc::Receiver<crate::fleet::sensor::FleetBlock>>,
    /// What it has done.
    pub stats: Arc<crate::fleet::sensor::FleetStats>,
}

/// The fleet's ring is read at most this often: a forged flood of held first failures
/// costs the reader at most a hundred wakeups a second.
pub(super) const FLEET_READ_GAP: Duration = Duration::from_millis(10);

impl Daemon<'_> {
    /// Hands the kernel's held first failures to the fleet's publisher.
    pub(super) fn drain_fleet(&mut self, ring: &mut RingBuf<MapData>) {
        let Some(tap) = self.pipeline.tap_mut().as_mut() else {
            return;
        };
        while let Some(record) = ring.next() {
            match crate::event::Probe::decode(&record) {
                Ok(probe) => tap.note_held(&probe),
                Err(err) => log::debug!("skipping a fleet ring record: {err}"),
            }
        }
    }

    /// Applies a block the fleet published, under this host's own policy.
    pub(super) fn apply_fleet_block(&mut self, block: &crate::fleet::sensor::FleetBlock) {
        let now_ms = crate::fleet::sensor::unix_ms();
        let left = Duration::from_millis(block.until_ms.saturating_sub(now_ms));
        if left.is_zero() {
            return;
        }
        let Some(blocker) = self.pipeline.blocker() else {
            return;
        };
        match blocker.fleet_block(block.addr, left, clock::monotonic_now()) {
            Ok(None) => log::info!(
                "fleet block of {} (by {}) applied for {} s",
                block.addr,
                block.by,
                left.min(blocker.policy().ttl).as_secs()
            ),
            Ok(Some(why)) => log::info!(
                "fleet block of {} (by {}) not applied: {why}",
                block.addr,
                block.by
            ),
            Err(err) => log::error!("cannot apply the fleet block of {}: {err}", block.addr),
        }
    }
}

/// The fleet's ring once it is readable, not before `at`; never without a ring.
pub(super) async fn fleet_ready(
    ring: Option<&mut AsyncFd<RingBuf<MapData>>>,
    at: tokio::time::Instant,
) -> std::io::Result<tokio::io::unix::AsyncFdReadyMutGuard<'_, RingBuf<MapData>>> {
    let Some(ring) = ring else {
        return std::future::pending().await;
    };
    tokio::time::sleep_until(at).await;
    ring.readable_mut().await
}
