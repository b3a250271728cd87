//! Shared by the kernel tests: crafted frames, and the rule that a test which cannot run
//! fails with a reason unless skipping was asked for explicitly.

#![allow(
    dead_code,
    reason = "each test binary uses a different part of this module"
)]

/// TCP flag bits.
pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const PSH: u8 = 0x08;
pub const ACK: u8 = 0x10;

/// Returns false (and says so) when the test must be skipped because `PROBE_SKIP_ROOT_TESTS=1`
/// asks for it; panics with the reason when it cannot run and no skip was asked for.
pub fn require_root(what: &str) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if std::env::var("PROBE_SKIP_ROOT_TESTS").is_ok_and(|v| v == "1") {
        eprintln!("SKIPPED {what}: needs root, and PROBE_SKIP_ROOT_TESTS=1 asks to skip it");
        return false;
    }
    panic!(
        "{what} needs root (BPF_PROG_TEST_RUN, network namespaces): run `cargo xtask test` as root, \
         or set PROBE_SKIP_ROOT_TESTS=1 to skip these tests explicitly"
    );
}

/// A TCP/IPv4 segment in an Ethernet frame, with optional VLAN tags and IP/TCP options.
#[derive(Clone, Debug)]
pub struct TcpFrame {
    pub src: [u8; 4],
    pub dst: [u8; 4],
    pub src_port: u16,
    pub dst_port: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    /// TPIDs of VLAN tags, outermost first (0x88a8, 0x8100).
    pub vlan_tpids: Vec<u16>,
    /// IPv4 options, padded to a multiple of 4 bytes by the builder.
    pub ip_options: Vec<u8>,
    /// TCP options, padded to a multiple of 4 bytes by the builder.
    pub tcp_options: Vec<u8>,
    pub payload: Vec<u8>,
    /// IPv4 fragment offset in 8-byte units.
    pub frag_offset: u16,
}

impl TcpFrame {
    /// A segment from `src:src_port` to `dst:dst_port` with `flags`, nothing else set.
    pub fn new(src: [u8; 4], src_port: u16, dst: [u8; 4], dst_port: u16, flags: u8) -> Self {
        Self {
            src,
            dst,
            src_port,
            dst_port,
            seq: 0,
            ack: 0,
            flags,
            vlan_tpids: Vec::new(),
            ip_options: Vec::new(),
            tcp_options: Vec::new(),
            payload: Vec::new(),
            frag_offset: 0,
        }
    }

    pub fn seq(mut self, seq: u32) -> Self {
        self.seq = seq;
        self
    }

    pub fn ack(mut self, ack: u32) -> Self {
        self.ack = ack;
        self
    }

    /// The answer our stack gives to this segment's SYN on a closed port: RST|ACK, seq 0,
    /// acknowledging the SYN and its payload.
    pub fn refusal(&self) -> TcpFrame {
        TcpFrame::new(self.dst, self.dst_port, self.src, self.src_port, RST | ACK).ack(
            self.seq
                .wrapping_add(1)
                .wrapping_add(self.payload.len() as u32),
        )
    }

    /// The SYN-ACK our stack gives to this segment's SYN on an open port.
    pub fn acceptance(&self) -> TcpFrame {
        TcpFrame::new(self.dst, self.dst_port, self.src, self.src_port, SYN | ACK)
            .seq(0x5eed_0000)
            .ack(
                self.seq
                    .wrapping_add(1)
                    .wrapping_add(self.payload.len() as u32),
            )
    }

    /// The frame's bytes.
    pub fn bytes(&self) -> Vec<u8> {
        let pad4 = |mut v: Vec<u8>| {
            while !v.len().is_multiple_of(4) {
                v.push(0);
            }
            v
        };
        let ip_options = pad4(self.ip_options.clone());
        let tcp_options = pad4(self.tcp_options.clone());
        let ihl = 20 + ip_options.len();
        let doff = 20 + tcp_options.len();
        let total_len = (ihl + doff + self.payload.len()) as u16;

        let mut f = Vec::new();
        f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x02]); // dst MAC
        f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x01]); // src MAC
        for (i, tpid) in self.vlan_tpids.iter().enumerate() {
            f.extend_from_slice(&tpid.to_be_bytes());
            f.extend_from_slice(&(100 + i as u16).to_be_bytes()); // TCI: VLAN 100, 101
        }
        f.extend_from_slice(&0x0800u16.to_be_bytes());

        let ip_start = f.len();
        f.push(0x40 | (ihl / 4) as u8);
        f.push(0);
        f.extend_from_slice(&total_len.to_be_bytes());
        f.extend_from_slice(&0x1234u16.to_be_bytes());
        f.extend_from_slice(&(0x4000 | self.frag_offset).to_be_bytes()); // DF + offset
        f.push(64);
        f.push(6);
        f.extend_from_slice(&[0, 0]);
        f.extend_from_slice(&self.src);
        f.extend_from_slice(&self.dst);
        f.extend_from_slice(&ip_options);
        let csum = checksum(&f[ip_start..ip_start + ihl]);
        f[ip_start + 10..ip_start + 12].copy_from_slice(&csum.to_be_bytes());

        f.extend_from_slice(&self.src_port.to_be_bytes());
        f.extend_from_slice(&self.dst_port.to_be_bytes());
        f.extend_from_slice(&self.seq.to_be_bytes());
        f.extend_from_slice(&self.ack.to_be_bytes());
        f.push(((doff / 4) as u8) << 4);
        f.push(self.flags);
        f.extend_from_slice(&64240u16.to_be_bytes());
        f.extend_from_slice(&[0, 0, 0, 0]); // checksum (not verified), urgent pointer
        f.extend_from_slice(&tcp_options);
        f.extend_from_slice(&self.payload);
        f
    }
}

/// The Internet checksum of `data`.
fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}
