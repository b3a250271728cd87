//! Fuzzing the kernel programs: structured random frames (Ethernet with up to three VLAN
//! tags; IPv4 with options, fragments and wrong lengths; IPv6 with chains of extension
//! headers; TCP with any flags, data offsets and options; UDP; ICMP and ICMPv6 errors
//! quoting inner packets), then cut short and bit-flipped at random, through XDP and TC
//! with BPF_PROG_TEST_RUN. Every frame must pass (XDP_PASS, TC_ACT_OK), and every event the
//! programs emit must decode. `cargo xtask test` runs a bounded number of cases;
//! `cargo xtask fuzz` many more (PROBE_FUZZ_CASES). Needs root.

mod common;

use aya::{
    Ebpf,
    maps::{MapData, RingBuf},
};
use probe_common::EVENTS_MAP;
use probe_netlab::require_root;
use probe_userspace::{
    event::Probe,
    kernel::{self, KernelConfig},
};
use proptest::{prelude::*, test_runner::Config};

const XDP_PASS: u32 = 2;
const TC_ACT_OK: u32 = 0;

/// A small deterministic generator: proptest chooses the seed (and shrinks it).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn some_bytes(&mut self, below: u64) -> Vec<u8> {
        let n = self.below(below) as usize;
        self.bytes(n)
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
    fn addr(&mut self, v6: bool) -> Vec<u8> {
        // Mostly the documentation ranges (so some frames count as "ours"), some anything.
        match (v6, self.chance(70)) {
            (false, true) => vec![
                198,
                18 + self.below(2) as u8,
                self.below(4) as u8,
                self.next() as u8,
            ],
            (true, true) => {
                let mut a = vec![0x20, 0x01, 0x0d, 0xb8];
                a.extend(self.bytes(12));
                a
            }
            (false, false) => self.bytes(4),
            (true, false) => self.bytes(16),
        }
    }
}

const TCP: u8 = 6;
const UDP: u8 = 17;
const ICMP: u8 = 1;
const ICMPV6: u8 = 58;

/// A transport header and payload for protocol `proto`; `depth` bounds quoting.
fn transport(rng: &mut Rng, proto: u8, depth: u32) -> Vec<u8> {
    let mut t = Vec::new();
    match proto {
        TCP => {
            t.extend(rng.bytes(12)); // ports, seq, ack
            let offset = if rng.chance(85) {
                5 + rng.below(11)
            } else {
                rng.below(16)
            };
            t.push((offset as u8) << 4);
            t.push(rng.next() as u8); // flags: any combination
            t.extend(rng.bytes(6)); // window, checksum, urgent
            let options = (offset.saturating_sub(5) * 4) as usize;
            t.extend(rng.bytes(options));
            t.extend(rng.some_bytes(24));
        }
        UDP => {
            t.extend(rng.bytes(4));
            let payload = rng.some_bytes(32);
            let len = if rng.chance(80) {
                8 + payload.len() as u16
            } else {
                rng.next() as u16
            };
            t.extend(len.to_be_bytes());
            t.extend(rng.bytes(2));
            t.extend(payload);
        }
        ICMP | ICMPV6 => {
            // Errors quote an inner packet; the rest is anything.
            let error = rng.chance(60);
            let ty = match (proto, error) {
                (ICMP, true) => [3, 11, 12][rng.below(3) as usize],
                (ICMPV6, true) => [1, 2, 3, 4][rng.below(4) as usize],
                (ICMP, false) => [0, 8, rng.next() as u8][rng.below(3) as usize],
                _ => [128, 129, rng.next() as u8][rng.below(3) as usize],
            };
            t.push(ty);
            t.push(rng.below(16) as u8);
            t.extend(rng.bytes(6));
            if error && depth > 0 {
                t.extend(ip_packet(rng, proto == ICMPV6, depth - 1));
            } else {
                t.extend(rng.some_bytes(16));
            }
        }
        _ => t.extend(rng.some_bytes(40)),
    }
    t
}

fn pick_proto(rng: &mut Rng, v6: bool) -> u8 {
    match rng.below(10) {
        0..=3 => TCP,
        4..=5 => UDP,
        6..=7 => {
            if v6 {
                ICMPV6
            } else {
                ICMP
            }
        }
        _ => rng.next() as u8,
    }
}

/// An IPv4 or IPv6 packet with a random transport.
fn ip_packet(rng: &mut Rng, v6: bool, depth: u32) -> Vec<u8> {
    let proto = pick_proto(rng, v6);
    let body = transport(rng, proto, depth);
    if !v6 {
        let ihl = if rng.chance(85) {
            5 + rng.below(11)
        } else {
            rng.below(16)
        } as usize;
        let mut h = vec![0x40 | ihl as u8, rng.next() as u8];
        let total = 20usize.max(ihl * 4) + body.len();
        let len = if rng.chance(80) {
            total as u16
        } else {
            rng.next() as u16
        };
        h.extend(len.to_be_bytes());
        h.extend(rng.bytes(2)); // id
        let frag: u16 = match rng.below(10) {
            0 => 0x2000 | rng.below(0x2000) as u16, // more fragments, any offset
            1 => rng.below(0x2000) as u16,          // a later fragment
            _ => 0x4000,                            // don't fragment
        };
        h.extend(frag.to_be_bytes());
        h.push(rng.next() as u8); // ttl
        h.push(proto);
        h.extend(rng.bytes(2)); // checksum
        h.extend(rng.addr(false));
        h.extend(rng.addr(false));
        h.extend(rng.bytes(ihl.saturating_sub(5) * 4)); // options
        h.extend(body);
        h
    } else {
        // A chain of up to 8 extension headers (hop-by-hop, routing, fragment, destination
        // options, AH, or an unknown one), each with a random length.
        let chain: Vec<u8> = (0..rng.below(9))
            .map(|_| [0, 43, 44, 60, 51, rng.next() as u8][rng.below(6) as usize])
            .collect();
        let mut ext = Vec::new();
        for (i, &kind) in chain.iter().enumerate() {
            let next = chain.get(i + 1).copied().unwrap_or(proto);
            let len = rng.below(4) as u8;
            ext.push(next);
            ext.push(len);
            let size = match kind {
                44 => 6,
                51 => (usize::from(len) + 2) * 4 - 2,
                _ => (usize::from(len) + 1) * 8 - 2,
            };
            ext.extend(rng.bytes(size));
        }
        let first = chain.first().copied().unwrap_or(proto);
        let mut h = vec![0x60, 0, 0, 0];
        let payload = ext.len() + body.len();
        let len = if rng.chance(80) {
            payload as u16
        } else {
            rng.next() as u16
        };
        h.extend(len.to_be_bytes());
        h.push(first);
        h.push(rng.next() as u8); // hop limit
        h.extend(rng.addr(true));
        h.extend(rng.addr(true));
        h.extend(ext);
        h.extend(body);
        h
    }
}

/// A whole frame: Ethernet, VLAN tags, IP (or something else), then damage.
fn frame(seed: u64) -> Vec<u8> {
    let mut rng = Rng(seed | 1);
    let mut f = rng.bytes(12);
    for _ in 0..rng.below(4) {
        f.extend(if rng.chance(50) {
            [0x81, 0x00]
        } else {
            [0x88, 0xa8]
        });
        f.extend(rng.bytes(2));
    }
    match rng.below(10) {
        0..=4 => {
            f.extend([0x08, 0x00]);
            f.extend(ip_packet(&mut rng, false, 1));
        }
        5..=8 => {
            f.extend([0x86, 0xdd]);
            f.extend(ip_packet(&mut rng, true, 1));
        }
        _ => {
            f.extend(rng.bytes(2));
            f.extend(rng.some_bytes(60));
        }
    }
    if rng.chance(30) {
        f.truncate(14 + rng.below(f.len() as u64) as usize);
    }
    if rng.chance(30) {
        for _ in 0..1 + rng.below(4) {
            let at = rng.below(f.len() as u64) as usize;
            f[at] ^= 1 << rng.below(8);
        }
    }
    f
}

/// The verdict of one test run; `None` when the kernel's TC test harness refuses the frame
/// (it wants a whole IP header after an IP ethertype: frames no host stack sends).
fn run(ebpf: &mut Ebpf, frame: &[u8], inbound: bool) -> Option<u32> {
    match kernel::test_run(ebpf, frame, inbound) {
        Ok(verdict) => Some(verdict),
        Err(err) if !inbound && err.os_error() == Some(libc::EINVAL) => None,
        Err(err) => panic!(
            "test run ({}) of {frame:02x?}: {err:?}",
            if inbound { "XDP" } else { "TC" }
        ),
    }
}

fn drain(ring: &mut RingBuf<MapData>) -> Result<usize, String> {
    let mut n = 0;
    while let Some(record) = ring.next() {
        Probe::decode(&record).map_err(|e| format!("an event that does not decode: {e}"))?;
        n += 1;
    }
    Ok(n)
}

fn cases() -> u32 {
    std::env::var("PROBE_FUZZ_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1000)
}

#[test]
fn random_and_damaged_frames_always_pass_and_events_always_decode() {
    if !require_root("random_and_damaged_frames_always_pass_and_events_always_decode") {
        return;
    }
    let mut ebpf = kernel::load(&KernelConfig {
        timeout: std::time::Duration::from_millis(100),
        ..KernelConfig::default()
    })
    .expect("the object loads");
    let mut ring = RingBuf::try_from(ebpf.take_map(EVENTS_MAP).unwrap()).unwrap();
    let mut runner = proptest::test_runner::TestRunner::new(Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    });
    let ebpf = std::cell::RefCell::new(ebpf);
    let ring = std::cell::RefCell::new(&mut ring);
    let events = std::cell::Cell::new(0);
    // Each case: 64 frames, each once inbound and once outbound (answers to one another's
    // attempts included by chance), then an expiry sweep; every event must decode.
    runner
        .run(&proptest::collection::vec(any::<u64>(), 64), |seeds| {
            let mut ebpf = ebpf.borrow_mut();
            for &seed in &seeds {
                let f = frame(seed);
                prop_assert_eq!(
                    run(&mut ebpf, &f, true),
                    Some(XDP_PASS),
                    "XDP on {:02x?}",
                    f
                );
                if let Some(verdict) = run(&mut ebpf, &f, false) {
                    prop_assert_eq!(verdict, TC_ACT_OK, "TC on {:02x?}", f);
                }
            }
            kernel::expire_with(&mut ebpf, |_| {}).unwrap();
            let n = drain(&mut ring.borrow_mut()).map_err(TestCaseError::fail)?;
            events.set(events.get() + n);
            Ok(())
        })
        .unwrap();
    // Random attempts do reach the ring (answered by chance, or expired unanswered): the
    // decoding check above is not vacuous.
    assert!(events.get() > 0, "no event in {} cases", cases());
    eprintln!(
        "{} cases of 64 frames: {} events, all decoded",
        cases(),
        events.get()
    );
}
