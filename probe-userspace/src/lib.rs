//! probe-detector's userspace: the loader of the eBPF programs, the decoding of their
//! events, the detection engine and the alert records. The binary (`src/main.rs`) wires
//! them to the command line, the ring buffer and stdout; the kernel and lab tests use the
//! same pieces.

pub mod alert;
pub mod allow;
pub mod attack_list;
pub mod block;
pub mod cidr;
pub mod clock;
pub mod config;
pub mod crowd;
pub mod engine;
pub mod event;
pub mod evidence;
pub mod flood;
pub mod iface;
pub mod loader;
pub mod metrics;
pub mod pcap;
pub mod replay;
pub mod services;
pub mod slow;
pub mod table;
pub mod trw;
