//! Whole-file export: one file's exact bytes streamed out, its chunks loaded a window at a time
//! in parallel, each checked against its hash as it loads.

use super::ReplicaError;
use crate::buffer::{ChunkBuf, SparePool};
use crate::store::manifest::FileEntry;
use crate::store::{Store, StoreError, io_err};
use rayon::prelude::*;
use std::io::Write;

/// Mappings of chunks a batch has written out, kept for the next batch's (up to this much; the
/// rest goes back to the system): a fresh mapping is zeroed by the kernel as it is first written.
/// In size classes: tensor-cut chunks differ in length, and a longer one still reuses a mapping.
static EXPORTED: SparePool = SparePool::in_classes(64 << 20);

impl Store {
    /// Streams one file's exact bytes to `out`, reading chunks a window at a time in parallel.
    /// Stops at the first chunk with no good replica; checks the whole-file hash at the end.
    pub fn export_file(
        &self,
        file: &FileEntry,
        out: &mut dyn Write,
        on_failure: &(dyn Fn(&str, &ReplicaError) + Sync),
    ) -> Result<(), StoreError> {
        // Every chunk is checked against its hash as it loads, and the manifest's chunks tile
        // the file (`Manifest::validate`): a second pass hashing the whole file would check the
        // same bytes again. `verify` still recomputes the whole-file hash.
        // Two chunks per thread keep threads busy while chunks differ in cost; one thread gains
        // nothing from a second, which only costs a fresh buffer (a twelfth of a one-shot
        // export's CPU, measured on a 45 MB fine-tune).
        let window = match rayon::current_num_threads() {
            0 | 1 => 1,
            n => n * 2,
        };
        for batch in file.chunks.chunks(window) {
            let loaded: Vec<Result<ChunkBuf, String>> = batch
                .par_iter()
                .map(|c| {
                    let mut buf = ChunkBuf::for_overwrite_in(&EXPORTED, c.len as usize)
                        .map_err(|e| format!("no memory for the chunk: {e}"))?;
                    self.load_chunk_buf(c, &mut buf, on_failure)
                        .map_err(|e| e.to_string())?;
                    Ok(buf)
                })
                .collect();
            for (chunk, result) in batch.iter().zip(loaded) {
                let data = result.map_err(|e| {
                    StoreError::Source(format!(
                        "file '{}' bytes {}..{}: {e}",
                        file.path,
                        chunk.offset,
                        chunk.offset + chunk.len
                    ))
                })?;
                out.write_all(&data)
                    .map_err(io_err(std::path::Path::new("output")))?;
            }
        }
        Ok(())
    }
}
