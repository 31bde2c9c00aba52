//! Where a file is cut into chunks. `fixed` cuts every `chunk_size` bytes; the last chunk holds
//! the rest, and an empty file has no chunks.

use thiserror::Error;

/// The largest chunk size a store accepts.
pub const MAX_CHUNK_SIZE: u64 = 1 << 30;
/// The default chunk size.
pub const DEFAULT_CHUNK_SIZE: u64 = 4 << 20;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ChunkingError {
    #[error("chunk size must be at least 1 byte")]
    Zero,
    #[error("chunk size {0} is over the 1 GiB limit")]
    TooLarge(u64),
}

/// One chunk of a file: `len` bytes at `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cut {
    pub offset: u64,
    pub len: u64,
}

pub fn check_chunk_size(chunk_size: u64) -> Result<(), ChunkingError> {
    match chunk_size {
        0 => Err(ChunkingError::Zero),
        n if n > MAX_CHUNK_SIZE => Err(ChunkingError::TooLarge(n)),
        _ => Ok(()),
    }
}

/// Cuts a file of `size` bytes every `chunk_size` bytes.
pub fn fixed(size: u64, chunk_size: u64) -> Result<Vec<Cut>, ChunkingError> {
    check_chunk_size(chunk_size)?;
    let mut cuts = Vec::with_capacity(size.div_ceil(chunk_size) as usize);
    let mut offset = 0;
    while offset < size {
        let len = chunk_size.min(size - offset);
        cuts.push(Cut { offset, len });
        offset += len;
    }
    Ok(cuts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_cover_the_file() {
        assert!(fixed(0, 4).unwrap().is_empty());
        assert_eq!(fixed(1, 4).unwrap(), vec![Cut { offset: 0, len: 1 }]);
        assert_eq!(fixed(4, 4).unwrap(), vec![Cut { offset: 0, len: 4 }]);
        assert_eq!(
            fixed(9, 4).unwrap(),
            vec![
                Cut { offset: 0, len: 4 },
                Cut { offset: 4, len: 4 },
                Cut { offset: 8, len: 1 }
            ]
        );
        assert_eq!(fixed(9, 0), Err(ChunkingError::Zero));
        assert_eq!(
            fixed(9, MAX_CHUNK_SIZE + 1),
            Err(ChunkingError::TooLarge(MAX_CHUNK_SIZE + 1))
        );
    }
}
