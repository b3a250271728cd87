//! Policy: which sources and services are never reported (allow-lists, kept in the
//! kernel), which sources may be blocked (`protect`), how many automatic blocks may be made
//! (`budget`), the link-layer addresses sources came from (`macs`), and the kernel's block
//! lists (`block`) with the filter in front of them (`block_filter`), the control socket's
//! protocol (`block_control`) and the state file (`block_state`).

pub mod allow;
pub mod block;
pub mod block_control;
pub mod block_filter;
pub mod block_state;
pub mod budget;
pub mod macs;
pub mod protect;
