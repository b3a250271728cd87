//! The fleet: sensors publish evidence to Redis Streams (`--fleet`), correlators merge it
//! (`probe-detector correlate`) and publish fleet blocks that every sensor applies under
//! its own policy. docs/fleet.md has the design, the keys and the Redis ACLs.

pub mod channel;
pub mod correlate;
pub mod keys;
pub mod sensor;
pub mod shards;
pub mod sources;
pub mod wire;
