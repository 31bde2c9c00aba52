//! How far read-ahead may reach in a file of tensors: to the end of the tensor the reader is in,
//! and past it only as far as the reader has shown it goes on from one tensor to the next. A
//! loader that reads a subset of the tensors (a pipeline stage's layers) then stops, or jumps to
//! another tensor, at a tensor's end; whatever was loaded past that end is fetched for nothing.
//!
//! The reader's own reads are not what the mount sees: the kernel reads ahead of it, in windows
//! of the mount's `--read-ahead` (8 MiB by default), and an mmap fault reads around the page it
//! lands on. On kernel 6.18, a reader that stops after a tensor leaves the kernel reading 12 MiB
//! past its end (plain reads or mmap touching pages), 32 MiB for `safe_open` + `get_tensor`. So
//! reads a little past a tensor's end say nothing yet; the reader has gone on into the next
//! tensor only once the reads are more than `KERNEL_WINDOWS` read-ahead windows past that end.
//! The first tensor it goes on into that way lets read-ahead reach one chunk past the end of the
//! tensor it is in, and each next one twice as far (up to the whole window): a stage that reads a
//! few tensors and stops costs a chunk or two, a loader that reads the whole file soon has its
//! full window, and a long partial stream wastes at most a window against all it read. A jump
//! starts over at the end of the tensor it lands in. Untagged files (no tensor layout known) are
//! not limited.

use crate::store::manifest::FileEntry;

/// Read-ahead windows the kernel's reads may run past the reader's (four were seen, above).
pub(super) const KERNEL_WINDOWS: u64 = 5;

#[derive(Debug, Default)]
pub struct InTensor {
    /// The last chunk of the tensor the reader is in; `None` before its first read, or in an
    /// untagged file.
    end: Option<usize>,
    /// Chunks read-ahead may reach past the end of that tensor: doubled for each tensor the
    /// reader went on into since it last jumped.
    crossed: usize,
}

impl InTensor {
    /// Records a read ending at `read_end`, in chunk `last` of `file`; `continues` tells whether
    /// it continues the stream. Returns the last chunk read-ahead may load (`None`: no limit).
    /// `kernel_ahead` is the kernel's read-ahead window; at most `scan` chunks past `last` are
    /// looked at to find a tensor's end.
    pub fn on_read(
        &mut self,
        file: &FileEntry,
        (continues, read_end): (bool, u64),
        last: usize,
        (kernel_ahead, scan, max_cross): (u64, usize, usize),
    ) -> Option<usize> {
        let settle = KERNEL_WINDOWS * kernel_ahead;
        let Some(here) = tensor_end(file, last, scan) else {
            *self = InTensor::default();
            return None;
        };
        match self.end {
            Some(end) if continues && last <= end => {}
            Some(end) if continues => {
                let c = &file.chunks[end];
                if read_end > c.offset + c.len + settle {
                    self.end = Some(here);
                    self.crossed = (self.crossed * 2).clamp(1, max_cross.max(1));
                }
            }
            _ => {
                self.end = Some(here);
                self.crossed = 0;
            }
        }
        self.end.map(|end| end + self.crossed)
    }
}

/// The last chunk of the tensor that chunk `i` of `file` ends in (looking at most `scan` chunks
/// ahead). An untagged chunk ends where it ends when a tagged chunk follows it (a header before
/// the tensors), and is `None` otherwise (a file whose layout is not known).
fn tensor_end(file: &FileEntry, i: usize, scan: usize) -> Option<usize> {
    let rest = file.chunks.get(i + 1..)?;
    let Some(open) = file.chunks[i].tensors.last() else {
        return rest
            .first()
            .is_some_and(|next| !next.tensors.is_empty())
            .then_some(i);
    };
    let more = rest
        .iter()
        .take(scan)
        .take_while(|c| c.tensors.first().is_some_and(|t| t.name == open.name))
        .count();
    Some(i + more)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::readahead::tests::{C, file};

    const KERNEL: u64 = 3 * C / 5; // five windows: 3 MiB

    fn read(t: &mut InTensor, f: &FileEntry, (continues, at): (bool, u64)) -> Option<usize> {
        let last = (at / C) as usize;
        t.on_read(f, (continues, at + 4096), last, (KERNEL, 100, 3))
    }

    #[test]
    fn the_reach_is_the_tensors_end_then_doubles_with_each_tensor_gone_on_into() {
        // A header chunk, then tensors of 4 chunks: t0 in 1-4, t1 in 5-8, ...
        let names: Vec<String> = std::iter::once(String::new())
            .chain((0..8).flat_map(|t| std::iter::repeat_n(format!("t{t}"), 4)))
            .collect();
        let f = file(&names.iter().map(|s| &**s).collect::<Vec<_>>());
        let mut t = InTensor::default();
        assert_eq!(
            read(&mut t, &f, (true, 0)),
            Some(0),
            "the header ends at itself"
        );
        assert_eq!(
            read(&mut t, &f, (true, C)),
            Some(0),
            "not yet past the kernel's reach"
        );
        assert_eq!(read(&mut t, &f, (true, 3 * C)), Some(0));
        assert_eq!(
            read(&mut t, &f, (true, 4 * C)),
            Some(5),
            "gone on into t0: and one more"
        );
        assert_eq!(
            read(&mut t, &f, (true, 5 * C)),
            Some(5),
            "a little into t1: t0 still"
        );
        assert_eq!(read(&mut t, &f, (true, 7 * C)), Some(5));
        assert_eq!(
            read(&mut t, &f, (true, 8 * C)),
            Some(10),
            "gone on: t1's end and two"
        );
        assert_eq!(
            read(&mut t, &f, (true, 12 * C)),
            Some(15),
            "four, cut to max_cross"
        );
        assert_eq!(
            read(&mut t, &f, (true, 16 * C)),
            Some(19),
            "at most max_cross"
        );
        // A jump starts over, to the end of the tensor it lands in.
        assert_eq!(read(&mut t, &f, (false, 2 * C)), Some(4));
        assert_eq!(read(&mut t, &f, (true, 3 * C)), Some(4));
    }

    #[test]
    fn an_untagged_file_is_not_limited_and_a_long_tensors_end_is_looked_for_only_so_far() {
        let f = file(&[""; 10]);
        let mut t = InTensor::default();
        assert_eq!(read(&mut t, &f, (true, 0)), None);
        assert_eq!(read(&mut t, &f, (true, 5 * C)), None);
        let f = file(&["big"; 200]);
        let mut t = InTensor::default();
        assert_eq!(
            read(&mut t, &f, (true, 0)),
            Some(100),
            "scan 100 chunks ahead"
        );
        assert_eq!(read(&mut t, &f, (true, 50 * C)), Some(100), "still in it");
    }
}
