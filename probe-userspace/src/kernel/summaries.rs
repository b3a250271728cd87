//! Reading the kernel's summaries of decided sources (`SUMMARIES`, see the kernel's
//! `summary` module): the generation is advanced, then the entries no program can still be
//! writing are read, deleted and turned back into one outcome per port.

use aya::{
    Ebpf,
    maps::{Array, HashMap},
};
use probe_common::{SUMMARIES_MAP, SUMMARY_GENERATION_MAP, Summary, SummaryKey};

use super::load::LoadError;
use crate::event::Summarized;

/// Generations the kernel cycles through.
const GENERATIONS: u32 = 4;

/// Reads `SUMMARIES` a generation at a time.
#[derive(Debug, Default)]
pub struct SummaryReader {
    /// The generation programs write in now.
    generation: u32,
    /// Entries read, and those that could not be decoded.
    pub read: u64,
    pub undecodable: u64,
}

impl SummaryReader {
    /// Advances the generation and takes the entries of the generations older than the
    /// one before it: those were last written before the previous call, so no program run
    /// can still be adding to them. With `all`, takes every entry (the programs are
    /// detached, or run only by us, as in `replay`). Returns them decoded, oldest first.
    pub fn collect(&mut self, ebpf: &mut Ebpf, all: bool) -> Result<Vec<Summarized>, LoadError> {
        let current = (self.generation + 1) % GENERATIONS;
        let previous = self.generation;
        let mut generation: Array<_, u32> = Array::try_from(
            ebpf.map_mut(SUMMARY_GENERATION_MAP)
                .ok_or(LoadError::Missing("SUMMARY_GENERATION map"))?,
        )
        .map_err(|_| LoadError::Missing("SUMMARY_GENERATION array"))?;
        generation
            .set(0, &current, 0)
            .map_err(|err| LoadError::Config(format!("summary generation: {err}")))?;
        self.generation = current;
        let mut table: HashMap<_, SummaryKey, Summary> = HashMap::try_from(
            ebpf.map_mut(SUMMARIES_MAP)
                .ok_or(LoadError::Missing("SUMMARIES map"))?,
        )
        .map_err(|_| LoadError::Missing("SUMMARIES hash"))?;
        // Keys first: deleting while walking would restart the walk at each deletion.
        let ready: Vec<SummaryKey> = table
            .keys()
            .filter_map(Result::ok)
            .filter(|k| {
                all || (u32::from(k.generation) != current && u32::from(k.generation) != previous)
            })
            .collect();
        let mut entries = Vec::with_capacity(ready.len());
        for key in ready {
            // Gone meanwhile: nothing to read (no program deletes, so this is not expected).
            if let Ok(summary) = table.get(&key, 0) {
                entries.push((key, summary));
            }
            let _ = table.remove(&key);
        }
        entries.sort_by_key(|(_, s)| s.first_ns);
        self.read += entries.len() as u64;
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
