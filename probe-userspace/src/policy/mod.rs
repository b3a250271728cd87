//! Policy: which sources and services are never reported (allow-lists, kept in the
//! kernel), and which sources may be blocked and the kernel's block list.

pub mod allow;
pub mod block;
