//! The mount's read path: maps a byte range to chunks, takes them from the chunk cache (loading
//! through the store's replica failover on a miss) and answers with a slice of the cached chunk
//! (or bytes assembled across chunks, or read from a local copy). Reads whose chunks are cached
//! are answered on the caller's thread; the others on the reader pool. Sequential readers get
//! the next chunks loaded ahead on a second pool; a chunk whose every byte has gone to the
//! kernel's page cache leaves the chunk cache. How a chunk is got is in `load.rs`.

use super::FsError;
use super::core::{Core, Shared};
use super::handles::{self, OpenFile};
use super::load::{For, LoadFailed};
use super::pieces::{Piece, pieces, windowed};
use super::sent::SentBytes;
use super::tree::NodeKind;
use crate::cache::Chunk;
use crate::store::manifest::FileEntry;
use crate::store::reader::Frames;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

/// Replies that span chunks are assembled in buffers from this pool.
static REPLIES: crate::buffer::ScratchPool = crate::buffer::ScratchPool::new(8);

/// What a read's answer records besides its bytes.
struct Asked {
    started: Instant,
    handle: Option<Arc<OpenFile>>,
    /// The file's sent bytes, unless the reader bypasses the page cache.
    sent: Option<Arc<SentBytes>>,
}

impl Core {
    /// Reads `size` bytes of file `ino` at `offset` through handle `fh` (`flags` as open(2)
    /// took them: an `O_DIRECT` reader's bytes do not stay in the page cache) and hands them to
    /// `reply`, on this thread or a reader's.
    pub fn read(
        &self,
        ino: u64,
        fh: u64,
        (offset, size): (u64, u32),
        flags: i32,
        reply: impl FnOnce(Result<&[u8], FsError>) + Send + 'static,
    ) {
        let started = Instant::now();
        let (file, sent) = match self.tree.read().node(ino).map(|n| &n.kind) {
            Some(NodeKind::File { entry, sent, .. }) => (entry.clone(), sent.clone()),
            Some(NodeKind::Dir { .. }) => return reply(Err(FsError::IsDir)),
            None => return reply(Err(FsError::NotFound)),
        };
        let sent = (flags & libc::O_DIRECT == 0).then_some(sent);
        let shared = &self.shared;
        shared.counts.reads.fetch_add(1, Ordering::Relaxed);
        if offset >= file.size || size == 0 {
            return reply(Ok(&[]));
        }
        let end = file.size.min(offset + u64::from(size));
        let handle = shared.handles.handle(fh);
        if let Some(h) = handle.clone()
            && matches!(h.source, handles::Source::Copy(_))
        {
            // The copy is on disk: read on a worker, never on the session's thread.
            let shared = shared.clone();
            self.readers.spawn(move || {
                if let handles::Source::Copy(copy) = &h.source {
                    let asked = Asked {
                        started,
                        handle: Some(h.clone()),
                        sent: None,
                    };
                    shared.read_copy(copy, offset..end, asked, reply);
                }
            });
            return;
        }
        let first = chunk_at(&file, offset);
        let last = chunk_at(&file, end - 1);
        let streaming = handle
            .as_ref()
            .is_some_and(|h| self.read_ahead(h, &file, offset..end, (first, last), sent.as_ref()));

        let pieces = pieces(
            &file,
            &(offset..end),
            (first, last),
            shared.cache.capacity(),
        );
        // The kernel is taking part of these chunks: from now on, one the cache lets go goes
        // to the page cache whole (noted before the chunks are got, so that one evicted while
        // this read is answered is not lost to the handover).
        if let Some(sent) = &sent
            && pieces.iter().all(|p| p.window.is_none())
        {
            shared.handover.noted(ino, &file, (first, last), sent);
        }
        // Chunks already in memory are answered here: no hand-off, nothing to wait for.
        let cached: Option<Vec<Chunk>> = pieces
            .iter()
            .map(|p| shared.cache.get_cached(&p.key))
            .collect();
        let asked = Asked {
            started,
            handle,
            sent,
        };
        if let Some(chunks) = cached {
            if let Some(tier) = &shared.tier {
                for (p, c) in pieces.iter().zip(&chunks) {
                    if p.window.is_none() {
                        tier.offer(&file, p.index, c);
                    }
                }
            }
            return shared.answer(&file, offset..end, &pieces, &chunks, asked, reply);
        }
        let by_frames = !streaming && shared.by_frames(&file, &(offset..end), &pieces);
        self.load_and_answer(file, offset..end, (pieces, by_frames), asked, reply);
    }

    /// A worker loads (or waits for) `pieces` of `file` and answers the read of `range` with
    /// them; or, `by_frames`, with the frames that hold it (see `Shared::by_frames`).
    fn load_and_answer(
        &self,
        file: Arc<FileEntry>,
        range: Range<u64>,
        (pieces, by_frames): (Vec<Piece>, bool),
        asked: Asked,
        reply: impl FnOnce(Result<&[u8], FsError>) + Send + 'static,
    ) {
        let shared = self.shared.clone();
        shared.handles.waiting.fetch_add(1, Ordering::Relaxed);
        self.readers.spawn(move || {
            shared.load_pieces_and_answer(&file, range, (&pieces, by_frames), asked, reply);
        });
    }

    /// Asks for the chunks after a read of `range` (chunks `first..=last`) through handle `h`
    /// while it is being served, and lets go of the ones the reader has left behind.
    fn read_ahead(
        &self,
        h: &Arc<OpenFile>,
        file: &Arc<FileEntry>,
        range: Range<u64>,
        (first, last): (usize, usize),
        sent: Option<&Arc<SentBytes>>,
    ) -> bool {
        let shared = &self.shared;
        let plan = self.readahead.plan(
            &mut h.stream.lock(),
            file,
            range.clone(),
            (first, last),
            || shared.store.median_latency(&file.chunks[last]),
        );
        if let Some(sent) = sent {
            sent.on_read(file, &range, (first, last), last + 1 + plan.window);
        }
        log::debug!(
            "read '{}' {range:?} (chunks {first}..={last}): {plan:?}",
            file.path
        );
        for index in plan.release {
            shared.cache.demote(&file.chunks[index].hash);
        }
        let in_order = plan.fetch.clone();
        for index in plan.fetch.chain(plan.elsewhere) {
            if !shared.wanted_ahead(file, index, sent.map(|s| &**s)) {
                continue;
            }
            // A chunk elsewhere in the file may lie behind the stream: it is not passed.
            let ahead_of_stream = in_order.contains(&index);
            let (shared, file, sent, h) = (shared.clone(), file.clone(), sent.cloned(), h.clone());
            shared.handles.ahead.fetch_add(1, Ordering::Relaxed);
            self.prefetchers.spawn(move || {
                // Asked again when the job runs: meanwhile a reader may have loaded the chunk,
                // sent all or part of it and let it go. Loading it again would decompress it
                // twice and leave it in the cache, where nothing would ever release it.
                let c = &file.chunks[index];
                if !(ahead_of_stream && h.stream.lock().passed(c.offset + c.len))
                    && shared.wanted_ahead(&file, index, sent.as_deref())
                {
                    let _ = shared.load(&file, index, For::Ahead);
                }
                shared.handles.ahead.fetch_sub(1, Ordering::Relaxed);
            });
        }
        plan.streaming
    }
}

/// What a read's loads gave it.
enum Loaded {
    Frames(crate::store::reader::Frames),
    Chunks(Vec<Chunk>),
    Failed(String, FsError),
}

impl Shared {
    /// Loads (or waits for) `pieces` of `file` and answers the read of `range` with them, or,
    /// `by_frames`, with the frames that hold it where its chunk is stored in frames (see
    /// `by_frames`); on a reader thread, counted among those waiting until the bytes are there.
    fn load_pieces_and_answer(
        &self,
        file: &Arc<FileEntry>,
        range: Range<u64>,
        (pieces, by_frames): (&[Piece], bool),
        asked: Asked,
        reply: impl FnOnce(Result<&[u8], FsError>),
    ) {
        let loaded = self.load_pieces(file, &range, (pieces, by_frames));
        self.handles.waiting.fetch_sub(1, Ordering::Relaxed);
        match loaded {
            Loaded::Frames(frames) => {
                self.answer_frames(file, range, pieces[0].index, &frames, asked, reply)
            }
            Loaded::Chunks(chunks) => self.answer(file, range, pieces, &chunks, asked, reply),
            Loaded::Failed(why, error) => self.failed(file, &range, &why, asked, reply, error),
        }
    }

    /// The bytes a read of `range` needs: the frames that hold it (`by_frames`, where its chunk
    /// is stored in frames), else its pieces loaded (or waited for) through the cache.
    fn load_pieces(
        &self,
        file: &Arc<FileEntry>,
        range: &Range<u64>,
        (pieces, by_frames): (&[Piece], bool),
    ) -> Loaded {
        if by_frames {
            let c = &file.chunks[pieces[0].index];
            let within = range.start - c.offset..range.end - c.offset;
            let got = self
                .store
                .load_frames(c, within, &|member, e| self.replica_failed(c, member, e));
            match got {
                Ok(Some(frames)) => return Loaded::Frames(frames),
                // Stored in one piece: loaded whole below.
                Ok(None) => {}
                Err(e) => return Loaded::Failed(e.to_string(), FsError::Io),
            }
        }
        let loaded: Result<Vec<Chunk>, LoadFailed> = pieces
            .iter()
            .map(|p| match &p.window {
                None => self.load(file, p.index, For::Read),
                Some(window) => self.load_window(file, p, window.clone()),
            })
            .collect();
        match loaded {
            Ok(chunks) => Loaded::Chunks(chunks),
            Err(e) => Loaded::Failed(e.why, e.error),
        }
    }

    /// Answers the read of `range`, in chunk `index` of `file`, with `frames` that hold it.
    fn answer_frames(
        &self,
        file: &FileEntry,
        range: Range<u64>,
        index: usize,
        frames: &Frames,
        asked: Asked,
        reply: impl FnOnce(Result<&[u8], FsError>),
    ) {
        self.trouble.served(&frames.member);
        self.counts.frame_reads.fetch_add(1, Ordering::Relaxed);
        let at = (range.start - file.chunks[index].offset - frames.at) as usize;
        let bytes = &frames.bytes[at..at + (range.end - range.start) as usize];
        self.answered(&asked, Some(bytes.len() as u64));
        reply(Ok(bytes));
        if let Some(sent) = &asked.sent {
            sent.record(&self.cache, file, range.start, range.end, index);
        }
    }

    /// Answers a read that could not be had with `error`, and logs `why`.
    fn failed(
        &self,
        file: &FileEntry,
        range: &Range<u64>,
        why: &str,
        asked: Asked,
        reply: impl FnOnce(Result<&[u8], FsError>),
        error: FsError,
    ) {
        log::error!(
            "read of '{}' bytes {}..{}: {why}",
            file.path,
            range.start,
            range.end
        );
        self.answered(&asked, None);
        reply(Err(error));
    }

    /// Whether a read of `range` (`pieces`), which is not part of a stream and whose chunk is
    /// neither cached nor being loaded, is answered from the frames that hold it alone: a read
    /// of at most a quarter of one chunk stored in frames. Its bytes go to the page cache; the
    /// chunk is not loaded, so a few random reads decode a few frames, not whole chunks.
    fn by_frames(&self, file: &FileEntry, range: &Range<u64>, pieces: &[Piece]) -> bool {
        let [p] = pieces else {
            return false;
        };
        let c = &file.chunks[p.index];
        p.window.is_none()
            && (range.end - range.start) * 4 <= c.len
            && crate::store::reader::readable_by_frames(c)
            && !self.cache.contains_or_loading(&c.hash)
    }

    /// Whether read-ahead should load chunk `index` of `file`: the kernel does not hold all of it
    /// (as far as `sent` knows), it is neither cached nor being loaded, and it is not read in
    /// windows (a chunk larger than the cache is decoded for each window a reader asks for).
    fn wanted_ahead(&self, file: &FileEntry, index: usize, sent: Option<&SentBytes>) -> bool {
        let c = &file.chunks[index];
        !sent.is_some_and(|s| s.complete(file, index))
            && !windowed(c.len, self.cache.capacity())
            && !self.cache.contains_or_loading(&c.hash)
    }

    /// Answers with bytes `range` of `file`, held by `chunks` (one per piece of `pieces`): a
    /// slice of the chunk itself when one chunk holds them all. Then records them in `sent`, for
    /// a reader whose bytes stay in the page cache.
    fn answer(
        &self,
        file: &FileEntry,
        range: Range<u64>,
        pieces: &[Piece],
        chunks: &[Chunk],
        asked: Asked,
        reply: impl FnOnce(Result<&[u8], FsError>),
    ) {
        let (offset, end) = (range.start, range.end);
        self.answered(&asked, Some(end - offset));
        let start_in = (offset - pieces[0].start) as usize;
        if let [only] = chunks {
            reply(Ok(&only[start_in..start_in + (end - offset) as usize]));
        } else {
            REPLIES.with_len((end - offset) as usize, |buf| {
                let mut at = 0;
                for (p, c) in pieces.iter().zip(chunks) {
                    let a = offset.saturating_sub(p.start) as usize;
                    let b = ((end - p.start) as usize).min(c.len());
                    buf[at..at + b - a].copy_from_slice(&c[a..b]);
                    at += b - a;
                }
                reply(Ok(buf));
            });
        }
        // The handover noted these chunks before they were got (`read`); one this read
        // completes is let go by `record`, and the handover passes over it as sent whole.
        if let Some(sent) = &asked.sent {
            sent.record(&self.cache, file, offset, end, pieces[0].index);
        }
    }

    /// Counts a read answered with `n` bytes, or (`None`) with an error, and how long it took.
    fn answered(&self, asked: &Asked, n: Option<u64>) {
        match n {
            Some(n) => {
                self.counts.bytes_served.fetch_add(n, Ordering::Relaxed);
                self.handles.served(n);
                if let Some(h) = &asked.handle {
                    h.served(n);
                }
            }
            None => {
                self.counts.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.counts.read_latency.observe(asked.started.elapsed());
    }

    /// Answers with bytes `range` of a file's local copy.
    fn read_copy(
        &self,
        copy: &std::fs::File,
        range: Range<u64>,
        asked: Asked,
        reply: impl FnOnce(Result<&[u8], FsError>),
    ) {
        use std::os::unix::fs::FileExt;
        let n = (range.end - range.start) as usize;
        REPLIES.with_len(n, |buf| match copy.read_exact_at(buf, range.start) {
            Ok(()) => {
                self.answered(&asked, Some(n as u64));
                reply(Ok(buf));
            }
            Err(e) => {
                log::error!("read of a local copy, bytes {range:?}: {e}");
                self.answered(&asked, None);
                reply(Err(FsError::Io));
            }
        });
    }
}

/// Index of the chunk holding byte `offset` (which is inside the file).
fn chunk_at(file: &FileEntry, offset: u64) -> usize {
    file.chunks.partition_point(|c| c.offset + c.len <= offset)
}
