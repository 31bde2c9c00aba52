//! Whole-file export: one file's exact bytes streamed out, its chunks loaded a window at a time
//! in parallel, each checked against its hash as it loads.

use super::{ChunkUnreadable, ReplicaError};
use crate::store::manifest::FileEntry;
use crate::store::{Store, StoreError, io_err};
use rayon::prelude::*;
use std::io::Write;

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
        let window = rayon::current_num_threads().max(1) * 2;
        // Buffers reused from batch to batch: a fresh one per chunk would be zeroed first.
        let mut buffers: Vec<Vec<u8>> = Vec::new();
        for batch in file.chunks.chunks(window) {
            buffers.resize_with(batch.len().max(buffers.len()), Vec::new);
            let loaded: Vec<Result<String, ChunkUnreadable>> = batch
                .par_iter()
                .zip(buffers.par_iter_mut())
                .map(|(c, buf)| {
                    if buf.len() != c.len as usize {
                        buf.resize(c.len as usize, 0);
                    }
                    self.load_chunk_into(c, buf, on_failure)
                })
                .collect();
            for ((chunk, result), data) in batch.iter().zip(loaded).zip(&buffers) {
                result.map_err(|e| {
                    StoreError::Source(format!(
                        "file '{}' bytes {}..{}: {e}",
                        file.path,
                        chunk.offset,
                        chunk.offset + chunk.len
                    ))
                })?;
                out.write_all(data)
                    .map_err(io_err(std::path::Path::new("output")))?;
            }
        }
        Ok(())
    }
}
