//! Policy: which sources and services are never reported (allow-lists, kept in the
//! kernel), which sources may be blocked, how many automatic blocks may be made, the
//! link-layer addresses sources came from, and the kernel's block lists.

pub mod allow;
pub mod block;
pub mod budget;
pub mod macs;
