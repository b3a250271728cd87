//! Reading the kernel's summaries of decided sources (see the kernel's `summary` module):
//! the map of the generation before the current one (`SUMMARIES` for even generations,
//! `SUMMARIES_ODD` for odd ones) is read and emptied in one pass, then the generation is
//! advanced, and the entries are turned back into one outcome per port.

use std::{
    io,
    os::fd::{AsFd as _, AsRawFd as _, BorrowedFd},
};

use aya::{
    Ebpf,
    maps::{Array, Map},
};
use probe_common::{
    Counter, SUMMARIES_ENTRIES, SUMMARIES_MAP, SUMMARIES_ODD_MAP, SUMMARY_GENERATION_MAP,
    SUMMARY_WORDS, Summary, SummaryKey,
};

use super::load::LoadError;
use crate::event::Summarized;

/// Generations the kernel cycles through (it keeps the low two bits in its keys).
const GENERATIONS: u32 = 4;

/// Reads the summaries a generation at a time.
#[derive(Debug, Default)]
pub struct SummaryReader {
    /// The generation programs write in now.
    generation: u32,
    /// Entries that could not be decoded.
    pub undecodable: u64,
    /// The kernel's count of summarised outcomes at the last read, and reads in a row that
    /// found it unchanged: from three on, neither map can hold anything (the one to read
    /// was written two reads ago), and none is walked (a walk visits every bucket).
    summarized: u64,
    quiet: u8,
    /// Entries the last read took from the kernel's map (at most [`SUMMARIES_ENTRIES`]).
    pub taken: usize,
    /// The batch reads' buffers, kept between reads: made and zeroed once, not every read
    /// (about 40 KB, every 100 ms while a scan goes on).
    batch: Batch,
}

impl SummaryReader {
    /// True when the last reads found the kernel's count of summarised outcomes unchanged
    /// long enough that neither map can hold anything.
    pub fn quiet(&self) -> bool {
        self.quiet > 2
    }

    /// Takes the map of the generation before the current one whole (written until the
    /// previous call advanced the generation, so no program run can still be adding to
    /// it), then advances the generation, so that the emptied map is the one written next.
    /// With `all`, takes the current generation's map too (the programs are detached, or
    /// run only by us, as in `replay`). Returns the entries decoded, oldest first.
    pub fn collect(&mut self, ebpf: &mut Ebpf, all: bool) -> Result<Vec<Summarized>, LoadError> {
        let summarized = super::maps::counter_value(ebpf, Counter::Summarized)?;
        if summarized == self.summarized {
            self.quiet = self.quiet.saturating_add(1);
        } else {
            self.quiet = 0;
        }
        self.summarized = summarized;
        self.taken = 0;
        if self.quiet() && !all {
            return Ok(Vec::new());
        }
        let stable = map_of(self.generation + 1);
        let mut entries = take_all(ebpf, stable, &mut self.batch)?;
        let current = (self.generation + 1) % GENERATIONS;
        let mut generation: Array<_, u32> = Array::try_from(
            ebpf.map_mut(SUMMARY_GENERATION_MAP)
                .ok_or(LoadError::Missing("SUMMARY_GENERATION map"))?,
        )
        .map_err(|_| LoadError::Missing("SUMMARY_GENERATION array"))?;
        generation
            .set(0, &current, 0)
            .map_err(|err| LoadError::Config(format!("summary generation: {err}")))?;
        self.generation = current;
        self.taken = entries.len();
        if all {
            entries.extend(take_all(ebpf, map_of(current + 1), &mut self.batch)?);
        }
        // By first time, and within one (the kernel stamps summaries with the coarse clock,
        // so many share a tick) by source, target and lowest port, then by the rest of the
        // key: an order that does not hang on the map's hash.
        entries.sort_by_key(|(k, s)| {
            (
                s.first_ns,
                k.src_addr,
                k.dst_addr,
                lowest_port(k, s),
                (k.proto, k.probe, k.outcome, k.ttl),
            )
        });
        let mut summaries = Vec::with_capacity(entries.len());
        for (key, summary) in &entries {
            match Summarized::decode(key, summary) {
                Ok(summary) => summaries.extend(summary),
                Err(err) => {
                    if self.undecodable == 0 {
                        log::warn!("skipping a summary of the kernel: {err}");
                    }
                    self.undecodable += 1;
                }
            }
        }
        Ok(summaries)
    }
}

/// The lowest port a summary counts (its block's first set bit).
fn lowest_port(key: &SummaryKey, summary: &Summary) -> u32 {
    let base = u32::from(key.block) * u32::from(probe_common::SUMMARY_PORTS);
    summary
        .ports
        .iter()
        .enumerate()
        .find(|(_, word)| **word != 0)
        .map_or(base, |(i, word)| {
            base + i as u32 * 64 + word.trailing_zeros()
        })
}

/// The name of the map generation `generation` is written in.
fn map_of(generation: u32) -> &'static str {
    if generation.is_multiple_of(2) {
        SUMMARIES_MAP
    } else {
        SUMMARIES_ODD_MAP
    }
}

/// Reads and empties the summaries map `name`, through `buffers`.
fn take_all(
    ebpf: &Ebpf,
    name: &'static str,
    buffers: &mut Batch,
) -> Result<Vec<(SummaryKey, Summary)>, LoadError> {
    let map = match ebpf.map(name) {
        Some(Map::HashMap(data)) => data,
        _ => return Err(LoadError::Missing("a summaries hash")),
    };
    // In batches, a few system calls for the whole map: read one by one, a scan with its
    // ports in random order (nmap's) cost a system call per port or two.
    lookup_and_delete_all(map.fd().as_fd(), SUMMARIES_ENTRIES as usize, buffers)
        .map_err(|err| LoadError::Config(format!("reading the summaries: {err}")))
}

/// `BPF_MAP_LOOKUP_AND_DELETE_BATCH` (enum bpf_cmd, include/uapi/linux/bpf.h).
const BPF_MAP_LOOKUP_AND_DELETE_BATCH: libc::c_long = 25;

/// The `batch` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Runs one batch command; the number of elements it handled, and whether the map has no
/// more (ENOENT).
fn batch(cmd: libc::c_long, attr: &mut BatchAttr) -> io::Result<(u32, bool)> {
    // SAFETY: `attr` is a valid `bpf_attr` prefix for the batch commands, of the size
    // given, and its pointers point to buffers of `count` keys and values that live for
    // the call (the caller's).
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            std::ptr::from_mut(attr),
            size_of::<BatchAttr>(),
        )
    };
    if rc == 0 {
        return Ok((attr.count, false));
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::ENOENT) {
        return Ok((attr.count, true));
    }
    Err(err)
}

/// Entries one batch reads: the kernel allocates (and clears) buffers of this many for each
/// call, so a batch as large as the map would cost more than the few entries a quiet
/// interval leaves.
const BATCH: usize = 256;

/// The key and value buffers of the batch reads; empty until the first read.
#[derive(Debug, Default)]
struct Batch {
    keys: Vec<SummaryKey>,
    values: Vec<Summary>,
}

impl Batch {
    /// Makes room for `count` entries; what is there already is kept, not zeroed again (a
    /// read returns only entries the kernel wrote in it).
    fn room(&mut self, count: usize) {
        if self.keys.len() >= count {
            return;
        }
        let key = SummaryKey {
            src_addr: [0; 16],
            dst_addr: [0; 16],
            block: 0,
            proto: 0,
            probe: 0,
            outcome: 0,
            ip_version: 0,
            generation: 0,
            ttl: 0,
            _pad: [0; 8],
        };
        let value = Summary {
            ports: [0; SUMMARY_WORDS],
            first_ns: 0,
            last_ns: 0,
            ifindex: 0,
            src_mac: [0; 6],
            tcp_flags: 0,
            icmp_type: 0,
            icmp_code: 0,
            ttl_min: 0,
            ttl_max: 0,
            _pad: [0; 9],
        };
        self.keys.resize(count, key);
        self.values.resize(count, value);
    }
}

/// Every (key, value) of a summaries hash, each deleted as it is read, in batches of at
/// least [`BATCH`] (more when a bucket holds more), through `buffers`.
fn lookup_and_delete_all(
    fd: BorrowedFd<'_>,
    capacity: usize,
    buffers: &mut Batch,
) -> io::Result<Vec<(SummaryKey, Summary)>> {
    let mut batch_size = BATCH;
    buffers.room(batch_size);
    let mut out = Vec::new();
    let (mut token, mut started) = (0u32, false);
    while out.len() < capacity {
        let mut attr = BatchAttr {
            in_batch: if started {
                std::ptr::from_ref(&token) as u64
            } else {
                0
            },
            out_batch: std::ptr::from_mut(&mut token) as u64,
            keys: buffers.keys.as_mut_ptr() as u64,
            values: buffers.values.as_mut_ptr() as u64,
            count: batch_size as u32,
            map_fd: fd.as_raw_fd() as u32,
            ..BatchAttr::default()
        };
        let (read, done) = match batch(BPF_MAP_LOOKUP_AND_DELETE_BATCH, &mut attr) {
            Ok(result) => result,
            // A bucket holds more entries than the batch: a larger batch, same place.
            Err(err) if err.raw_os_error() == Some(libc::ENOSPC) && batch_size < capacity => {
                batch_size *= 2;
                buffers.room(batch_size);
                continue;
            }
            Err(err) => return Err(err),
        };
        started = true;
        let read = read as usize;
        out.extend(
            buffers.keys[..read]
                .iter()
                .copied()
                .zip(buffers.values[..read].iter().copied()),
        );
        if done {
            break;
        }
    }
    Ok(out)
}
