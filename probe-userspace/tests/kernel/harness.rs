//! The harness every kernel test uses: the loaded object with its ring buffer, frames run
//! through XDP and TC, events and counters read back; and the addresses of the tests.

#![allow(
    unused_imports,
    reason = "re-exported for the test modules, each using a part"
)]

pub(crate) use std::{net::IpAddr, time::Duration};

pub(crate) use crate::common::{ACK, FIN, Frame, PSH, RST, SYN, Transport, URG, v4, v6};
pub(crate) use aya::{
    Ebpf,
    maps::{HashMap as BpfHashMap, MapData, RingBuf},
    programs::{TestRun as _, TestRunOptions},
};
pub(crate) use probe_common::{
    Counter, EVENTS_MAP, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, OUTCOMES_MAP,
    OutcomeKey,
};
pub(crate) use probe_netlab::require_root;
pub(crate) use probe_userspace::{
    clock,
    event::{Outcome, Probe, ProbeType},
    kernel::{self, KernelConfig},
    net::cidr::Cidr,
    policy::allow::{self, AllowLists},
    policy::block::{BlockError, Blocker},
    policy::protect::{BlockPolicy, Spared},
};

pub(crate) const XDP_PASS: u32 = 2;
pub(crate) const TC_ACT_OK: u32 = 0;

pub(crate) fn scanner() -> IpAddr {
    v4([198, 18, 0, 1])
}
pub(crate) fn victim() -> IpAddr {
    v4([198, 18, 0, 2])
}
pub(crate) fn scanner6() -> IpAddr {
    v6("2001:db8::1")
}
pub(crate) fn victim6() -> IpAddr {
    v6("2001:db8::2")
}

/// The defaults, but for a source's first failure, sent at once rather than held until
/// its second: the tests of one outcome each want its event (the held first failure has
/// tests of its own, `hold`).
pub(crate) fn every_event() -> KernelConfig {
    KernelConfig {
        hold: false,
        ..KernelConfig::default()
    }
}

/// The loaded object with its ring buffer taken out, so both can be used at once.
pub(crate) struct Harness {
    pub(crate) ebpf: Ebpf,
    pub(crate) events: RingBuf<MapData>,
    pub(crate) summaries: kernel::SummaryReader,
}

impl Harness {
    /// The object with [`every_event`]'s configuration.
    pub(crate) fn new() -> Self {
        Self::with(&every_event())
    }

    pub(crate) fn with(config: &KernelConfig) -> Self {
        let mut ebpf = kernel::load(config).expect("the eBPF object loads and passes the verifier");
        let events = RingBuf::try_from(ebpf.take_map(EVENTS_MAP).expect("EVENTS map")).unwrap();
        Self {
            ebpf,
            events,
            summaries: kernel::SummaryReader::default(),
        }
    }

    /// Runs a frame through the XDP program (inbound); its verdict.
    pub(crate) fn xdp_verdict(&mut self, frame: &[u8]) -> u32 {
        let xdp = kernel::xdp_program(&mut self.ebpf).unwrap();
        xdp.test_run(TestRunOptions {
            data_in: Some(frame),
            ..Default::default()
        })
        .expect("XDP test run")
        .return_value
    }

    /// Runs a frame through the XDP program (inbound), asserting it passes.
    pub(crate) fn inbound(&mut self, frame: &[u8]) {
        assert_eq!(
            self.xdp_verdict(frame),
            XDP_PASS,
            "XDP must pass every frame: {frame:02x?}"
        );
    }

    /// Runs a frame through the TC program (outbound); its verdict.
    pub(crate) fn tc_verdict(&mut self, frame: &[u8]) -> u32 {
        let tc = kernel::tc_program(&mut self.ebpf).unwrap();
        tc.test_run(TestRunOptions {
            data_in: Some(frame),
            ..Default::default()
        })
        .expect("TC test run")
        .return_value
    }

    /// Runs a frame through the TC program (outbound), asserting it passes.
    pub(crate) fn outbound(&mut self, frame: &[u8]) {
        assert_eq!(
            self.tc_verdict(frame),
            TC_ACT_OK,
            "TC must let every frame go: {frame:02x?}"
        );
    }

    pub(crate) fn inbound_frame(&mut self, frame: &Frame) {
        self.inbound(&frame.bytes());
    }

    pub(crate) fn outbound_frame(&mut self, frame: &Frame) {
        self.outbound(&frame.bytes());
    }

    /// The ring buffer, for polling.
    pub(crate) fn events_fd(&self) -> &RingBuf<MapData> {
        &self.events
    }

    /// Every event waiting in the ring buffer, then the outcomes of every summary of a
    /// decided source (as the daemon reads them, in port order).
    pub(crate) fn events(&mut self) -> Vec<Probe> {
        let mut out = self.ring_events();
        for summary in self
            .summaries
            .collect(&mut self.ebpf, true)
            .expect("summaries")
        {
            out.extend(summary.outcomes());
        }
        out
    }

    /// Every event waiting in the ring buffer, and nothing else.
    pub(crate) fn ring_events(&mut self) -> Vec<Probe> {
        let mut out = Vec::new();
        while let Some(record) = self.events.next() {
            out.push(Probe::decode(&record).expect("well-formed record"));
        }
        out
    }

    /// The single event waiting; panics when there is not exactly one.
    pub(crate) fn one_event(&mut self) -> Probe {
        let mut events = self.events();
        assert_eq!(events.len(), 1, "expected exactly one event: {events:#?}");
        events.remove(0)
    }

    pub(crate) fn counter(&self, counter: Counter) -> u64 {
        kernel::counters(&self.ebpf)
            .unwrap()
            .into_iter()
            .find(|(c, _)| *c == counter)
            .map(|(_, v)| v)
            .unwrap()
    }

    /// How often the kernel saw this failure of (src, dst, port).
    pub(crate) fn failures(
        &self,
        src: IpAddr,
        dst: IpAddr,
        port: u16,
        probe: ProbeType,
        outcome: Outcome,
    ) -> Option<u64> {
        let map: BpfHashMap<_, OutcomeKey, u64> =
            BpfHashMap::try_from(self.ebpf.map(OUTCOMES_MAP).unwrap()).unwrap();
        let key = OutcomeKey {
            src_addr: mapped(src),
            dst_addr: mapped(dst),
            dst_port: port,
            proto: IPPROTO_TCP,
            probe: probe as u8,
            outcome: outcome as u8,
            ip_version: if src.is_ipv6() { 6 } else { 4 },
            _pad: [0; 10],
        };
        map.get(&key, 0).ok()
    }

    pub(crate) fn expire(&mut self) {
        kernel::expire(&mut self.ebpf).expect("expiry program runs");
    }

    /// Runs the sweeps after which a first TCP success that no reset took back counts
    /// (`CONFIRM_AFTER_EPOCHS`): the connections accepted so far stood.
    pub(crate) fn stand(&mut self) {
        for _ in 0..probe_common::CONFIRM_AFTER_EPOCHS {
            self.expire();
        }
    }
}

pub(crate) fn mapped(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
        IpAddr::V6(a) => a.octets(),
    }
}

pub(crate) fn syn(src_port: u16, dst_port: u16, seq: u32) -> Frame {
    Frame::tcp(scanner(), src_port, victim(), dst_port, SYN, seq)
}
