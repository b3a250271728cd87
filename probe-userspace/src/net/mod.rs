//! The network as probe-detector sees it: CIDR prefixes, interfaces and routes, this
//! host's place on the network, and pcap captures.

pub mod cidr;
pub mod iface;
pub mod network;
pub mod pcap;
