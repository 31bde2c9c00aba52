//! The order a `safe_open` loop asks for a safetensors file's tensors: by name (`keys()` sorts
//! them, byte-wise), which is the file's own order only when safetensors' serializer wrote it.
//! For a file laid out otherwise (`layers.2` after `layers.1`, while name order puts `layers.10`
//! there), this knows, for each tensor whose successor by name lies elsewhere in the file, where
//! that successor is, so read-ahead can start on it before the reader jumps there.

use crate::store::manifest::FileEntry;
use std::collections::{HashMap, VecDeque};
use std::ops::Range;

/// Chunks of the tensor next by name loaded ahead of the reader's jump there (the rest follows
/// once it reads it, as for any tensor).
const NAME_AHEAD: usize = 2;
/// Streams remembered: a tensor the reader had may have come in any of the last few.
const SPANS: usize = 4;
/// Tensors followed by name past ones the reader already had (the kernel keeps their pages).
const CHAIN: usize = 4;
/// Chunks looked at around a read for tensor ends and starts.
const LOOK: usize = 64;

/// A reader's jumps, against the file's name order: whether it follows it, and so where it
/// will jump next.
#[derive(Debug, Default)]
pub struct ByName {
    /// The file's name order, once looked at (`None` inside: nothing to add).
    order: Option<Option<KeyOrder>>,
    /// The chunks each of the last streams read (the current one last).
    spans: VecDeque<Range<usize>>,
    /// Whether the reader's last jump went to the tensor after, by name, one it had read.
    following: bool,
}

impl ByName {
    /// Records a read of `range` (chunks `first..=last`) of `file`, `continues` telling whether
    /// it continues the stream. Returns chunks to load ahead elsewhere in the file: the first
    /// ones of the tensor a `safe_open` loop asks for after one ending between where the reader
    /// may be (up to `behind` bytes before the read, the kernel reading ahead of it) and
    /// `reach`, while its jumps follow name order.
    pub fn on_read(
        &mut self,
        file: &FileEntry,
        (continues, range): (bool, &Range<u64>),
        (first, last): (usize, usize),
        (reach, behind): (usize, u64),
    ) -> Range<usize> {
        let ByName {
            order,
            spans,
            following,
        } = self;
        let Some(order) = order.get_or_insert_with(|| KeyOrder::of(file)) else {
            return 0..0;
        };
        let had = |spans: &VecDeque<Range<usize>>, t: &Range<usize>| {
            spans.iter().any(|s| s.contains(&(t.end - 1)))
        };
        match spans.back_mut() {
            Some(s) if continues => s.end = s.end.max(last + 1),
            _ => {
                // A fault reads around its page: the jump's first read lands up to half a
                // kernel window before the tensor it went to.
                let near = range.start + behind;
                *following = (first..file.chunks.len())
                    .take(LOOK)
                    .take_while(|&j| file.chunks[j].offset <= near)
                    .any(|j| order.prev(j).is_some_and(|v| had(spans, v)));
                spans.push_back(first..last + 1);
                if spans.len() > SPANS {
                    spans.pop_front();
                }
            }
        }
        if !*following {
            return 0..0;
        }
        let from = range.start.saturating_sub(behind);
        let lo = (0..=first)
            .rev()
            .take(LOOK)
            .take_while(|&j| file.chunks[j].offset + file.chunks[j].len > from)
            .last()
            .unwrap_or(first);
        let hi = reach.min(last + LOOK).min(file.chunks.len() - 1);
        let Some(mut next) = (lo..=hi).find_map(|j| order.next(j)) else {
            return 0..0;
        };
        for _ in 0..CHAIN {
            match order.next(next.end - 1) {
                Some(after) if had(spans, next) => next = after,
                _ => break,
            }
        }
        next.start..(next.start + NAME_AHEAD).min(next.end)
    }
}

#[derive(Debug, Default)]
pub struct KeyOrder {
    /// The last chunk of a tensor -> the chunks of its successor by name, where that successor
    /// does not follow it in the file.
    next: HashMap<usize, Range<usize>>,
    /// The first chunk of such a successor -> the chunks of its predecessor by name.
    prev: HashMap<usize, Range<usize>>,
}

impl KeyOrder {
    /// The name order of `file`'s tensors, for a safetensors file whose name order is not its
    /// file order; `None` otherwise (nothing to add to plain read-ahead).
    pub fn of(file: &FileEntry) -> Option<KeyOrder> {
        if !file.path.ends_with(".safetensors") {
            return None;
        }
        let mut chunks_of: HashMap<&str, Range<usize>> = HashMap::new();
        for (i, c) in file.chunks.iter().enumerate() {
            for t in &c.tensors {
                chunks_of
                    .entry(&t.name)
                    .and_modify(|r| r.end = i + 1)
                    .or_insert(i..i + 1);
            }
        }
        let mut by_name: Vec<(&str, Range<usize>)> = chunks_of.into_iter().collect();
        by_name.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let mut order = KeyOrder::default();
        for pair in by_name.windows(2) {
            let (v, w) = (&pair[0].1, &pair[1].1);
            // Next in the file, or sharing a chunk with it: plain read-ahead reaches it.
            if w.start == v.end || w.start + 1 == v.end {
                continue;
            }
            order.next.entry(v.end - 1).or_insert_with(|| w.clone());
            order.prev.entry(w.start).or_insert_with(|| v.clone());
        }
        (!order.next.is_empty()).then_some(order)
    }

    /// The chunks of the successor by name of the tensor ending in chunk `last`, where it lies
    /// elsewhere in the file.
    pub fn next(&self, last: usize) -> Option<&Range<usize>> {
        self.next.get(&last)
    }

    /// The chunks of the predecessor by name of the tensor starting in chunk `first`, where the
    /// two are apart in the file.
    pub fn prev(&self, first: usize) -> Option<&Range<usize>> {
        self.prev.get(&first)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::readahead::tests::file;

    #[test]
    fn a_file_in_number_order_knows_where_each_next_name_is() {
        // l0, l1, l2, l10, l11 in the file, a chunk each: by name l0 l1 l10 l11 l2.
        let mut f = file(&["l0", "l1", "l2", "l10", "l11"]);
        f.path = "m.safetensors".into();
        let k = KeyOrder::of(&f).unwrap();
        assert_eq!(k.next(1), Some(&(3..4)), "after l1 comes l10");
        assert_eq!(k.next(4), Some(&(2..3)), "after l11 comes l2");
        assert_eq!(k.next(0), None, "l1 follows l0 in the file");
        assert_eq!(k.next(3), None);
        assert_eq!(k.prev(3), Some(&(1..2)));
        assert_eq!(k.prev(2), Some(&(4..5)));
        // In name order already, or not safetensors: nothing to know.
        let mut sorted = file(&["a", "a", "b", "c,d", "e"]);
        sorted.path = "m.safetensors".into();
        assert!(KeyOrder::of(&sorted).is_none());
        assert!(KeyOrder::of(&file(&["l0", "l1", "l2", "l10"])).is_none());
    }

    /// `names` as a safetensors file.
    fn st(names: &[&str]) -> FileEntry {
        let mut f = file(names);
        f.path = "m.safetensors".into();
        f
    }

    /// A read of chunks `first..=last`, continuing or not, with read-ahead reaching `reach`.
    fn read(
        b: &mut ByName,
        f: &FileEntry,
        continues: bool,
        (first, last): (usize, usize),
    ) -> Range<usize> {
        let range = first as u64 * C..(last as u64 + 1) * C;
        b.on_read(f, (continues, &range), (first, last), (last + 4, 0))
    }

    use crate::readahead::tests::C;

    #[test]
    fn a_reader_that_jumps_by_name_has_the_next_name_loaded_ahead() {
        // A header, then l0 l1 l2 l10 l11 of two chunks each: by name l0 l1 l10 l11 l2.
        let f = st(&[
            "", "l0", "l0", "l1", "l1", "l2", "l2", "l10", "l10", "l11", "l11",
        ]);
        let mut b = ByName::default();
        assert_eq!(read(&mut b, &f, true, (0, 0)), 0..0);
        assert_eq!(read(&mut b, &f, true, (1, 4)), 0..0, "no jump seen yet");
        // l1 read, the reader jumps to l10: it follows names. Within reach ends l11, whose
        // successor by name, l2, lies back in the file: its first two chunks.
        assert_eq!(read(&mut b, &f, false, (7, 7)), 5..7);
        assert_eq!(read(&mut b, &f, true, (8, 9)), 5..7);
        // A jump to a tensor whose predecessor by name it did not read: no longer followed.
        assert_eq!(read(&mut b, &f, false, (1, 1)), 0..0);
        assert_eq!(read(&mut b, &f, true, (2, 3)), 0..0);
    }

    #[test]
    fn names_the_reader_already_had_are_passed_over() {
        // a0 b0 a1 b1 in the file, by name a0 a1 b0 b1.
        let f = st(&["", "a0", "b0", "a1", "b1"]);
        let mut b = ByName::default();
        // The header, a0 and b0 (the kernel read on past a0): then a jump to a1, a0's successor.
        read(&mut b, &f, true, (0, 2));
        // After a1 comes b0, which the reader has: b1 is loaded ahead.
        assert_eq!(read(&mut b, &f, false, (3, 3)), 4..5);
        // Not a safetensors file: nothing.
        let mut b = ByName::default();
        let plain = file(&["", "a0", "b0", "a1", "b1"]);
        read(&mut b, &plain, true, (0, 2));
        assert_eq!(read(&mut b, &plain, false, (3, 3)), 0..0);
    }
}
