//! The network as probe-detector sees it: CIDR prefixes, interfaces and routes, the
//! resolvers and neighbours, route-netlink changes, this host's place on the network, and
//! pcap captures.

pub mod cidr;
pub mod iface;
pub mod netlink;
pub mod network;
pub mod pcap;
pub mod resolvers;
pub mod routes;
