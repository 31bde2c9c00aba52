//! A member that is a prefix of an object store, over `object_store`'s `dyn ObjectStore`: every
//! member call as object gets, ranged gets, puts, lists and deletes. A kind of object store
//! (`s3.rs`, `http.rs`) only builds the client and says what its container is and how one is
//! created; everything else is here, once.
//!
//! The client is async: the member owns a small tokio runtime and the store's std threads call
//! into it with a deadline, so a stalled endpoint is a timed-out call, never a hung thread.
//! Chunk objects are immutable and named by their hash: they are put only where absent
//! (`PutMode::Create`), and large ones go up as multipart uploads, which are invisible until
//! completed. A manifest is replaced by one PUT conditional on the ETag that was read, so two
//! packers of one model cannot silently undo one another. A write whose answer timed out may
//! have landed: it is read back before it is tried again. Packs take no lock here: content
//! addressing makes concurrent chunk puts safe, and the conditional manifest put catches the
//! one race that matters. A read-only kind (a static web server) refuses every write.

use super::layout::{self, CHUNKS, DAMAGED, MANIFESTS, MEMBER_FILE};
use super::s3_errors::{member_err, too_large};
use super::{
    ChunkEntry, Expect, IfPresent, Image, Listed, MemberError, MemberIo, ObjectInfo, Options,
    Setup, Stale, Stored, Sweep,
};
use crate::codec::Hash32;
use futures::TryStreamExt;
use futures::future::BoxFuture;
use object_store::path::Path as Key;
use object_store::{
    GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload,
    UpdateVersion, WriteMultipart,
};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// Chunk images from this size go up as multipart uploads, in parts of this size.
const MULTIPART_FROM: usize = 16 << 20;
const PART_SIZE: usize = 8 << 20;
/// Parts of one upload in flight at once.
const PARTS_IN_FLIGHT: usize = 4;

/// What holds a kind's members (an S3 bucket, a web site): how messages name it, how
/// `pack --init` creates it.
pub trait Container: Send + Sync + std::fmt::Debug {
    /// `bucket 'models'`.
    fn describe(&self) -> String;
    /// Creates the container.
    fn create(&self) -> BoxFuture<'_, Result<(), MemberError>>;
    /// A kind that is only read (a static web server): every write is refused.
    fn read_only(&self) -> bool {
        false
    }
}

/// An object-store member.
#[derive(Debug)]
pub struct ObjectMember {
    location: String,
    /// Without leading or trailing `/`; empty for the container's root.
    prefix: String,
    store: Arc<dyn ObjectStore>,
    container: Box<dyn Container>,
    rt: tokio::runtime::Runtime,
    timeout: Duration,
    opts: Options,
}

impl ObjectMember {
    /// A member at `prefix` of `store`, recorded in member lists as `location`.
    pub fn new(
        location: String,
        prefix: String,
        store: Arc<dyn ObjectStore>,
        container: Box<dyn Container>,
        opts: &Options,
    ) -> Result<ObjectMember, MemberError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("shardfs-objects")
            .enable_all()
            .build()
            .map_err(|e| MemberError::Unavailable(format!("runtime: {e}")))?;
        Ok(ObjectMember {
            location,
            prefix,
            store,
            container,
            rt,
            timeout: opts.timeout,
            opts: *opts,
        })
    }

    /// Refuses a write to a kind that cannot take one.
    fn writable(&self) -> Result<(), MemberError> {
        if self.container.read_only() {
            return Err(MemberError::Unavailable(format!(
                "{} is read-only",
                self.location
            )));
        }
        Ok(())
    }

    fn key(&self, key: &str) -> Key {
        if self.prefix.is_empty() {
            Key::from(key)
        } else {
            Key::from(format!("{}/{key}", self.prefix))
        }
    }

    /// Runs one call on the runtime, giving up after `limit`.
    fn run<T>(
        &self,
        limit: Duration,
        fut: impl Future<Output = Result<T, MemberError>>,
    ) -> Result<T, MemberError> {
        self.rt
            .block_on(async { tokio::time::timeout(limit, fut).await })
            .unwrap_or(Err(MemberError::TimedOut(limit)))
    }

    /// The deadline of a write of `bytes`.
    fn write_limit(&self, bytes: usize) -> Duration {
        self.opts.deadline(bytes as u64) + self.timeout
    }

    /// The size and age of the object at (full) `key`, or `None`.
    fn head(&self, key: &Key) -> Result<Option<ObjectInfo>, MemberError> {
        match self.run(self.timeout, async {
            self.store.head(key).await.map_err(member_err)
        }) {
            Ok(meta) => Ok(Some(ObjectInfo {
                size: meta.size,
                modified: meta.last_modified.into(),
            })),
            Err(MemberError::Missing) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Whether the container exists (a listing of the member's prefix answers).
    fn container_exists(&self) -> Result<bool, MemberError> {
        match self.file_names(MANIFESTS) {
            Ok(_) => Ok(true),
            Err(MemberError::Missing | MemberError::Absent(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Puts `bytes` under `key` with `mode`; a put whose answer was lost is read back first.
    fn put_small(&self, key: &Key, bytes: &[u8], mode: PutMode) -> Result<(), MemberError> {
        let limit = self.write_limit(bytes.len());
        let payload = PutPayload::from(bytes::Bytes::copy_from_slice(bytes));
        let attempt = |mode: PutMode| {
            let payload = payload.clone();
            self.run(limit, async move {
                let opts = PutOptions {
                    mode,
                    ..PutOptions::default()
                };
                self.store
                    .put_opts(key, payload, opts)
                    .await
                    .map(|_| ())
                    .map_err(member_err)
            })
        };
        match attempt(mode.clone()) {
            Err(MemberError::TimedOut(_) | MemberError::Io(_)) => {
                if self.holds(key, bytes)? {
                    return Ok(());
                }
                attempt(mode)
            }
            other => other,
        }
    }

    /// Whether `key` holds exactly `bytes`.
    fn holds(&self, key: &Key, bytes: &[u8]) -> Result<bool, MemberError> {
        match self.run(self.timeout, async {
            let got = self.store.get(key).await.map_err(member_err)?;
            got.bytes().await.map_err(member_err)
        }) {
            Ok(found) => Ok(found.as_ref() == bytes),
            Err(MemberError::Missing) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The names of the objects directly under folder `dir` of the member.
    fn file_names(&self, dir: &str) -> Result<Vec<String>, MemberError> {
        Ok(self.files(dir)?.into_iter().map(|l| l.name).collect())
    }

    /// The objects directly under `dir`: each name with a stamp (its ETag, else its size and
    /// time) that changes when it is rewritten.
    fn files(&self, dir: &str) -> Result<Vec<Listed>, MemberError> {
        let prefix = self.key(dir);
        self.run(self.timeout, async {
            let listed = self
                .store
                .list_with_delimiter(Some(&prefix))
                .await
                .map_err(member_err)?;
            Ok(listed
                .objects
                .iter()
                .filter_map(|m| {
                    let stamp = m.e_tag.clone().unwrap_or_else(|| {
                        format!("{}-{}", m.size, m.last_modified.timestamp_micros())
                    });
                    Some(Listed {
                        name: m.location.filename()?.to_string(),
                        stamp,
                        size: m.size,
                        modified: m.last_modified.into(),
                    })
                })
                .collect())
        })
    }

    /// A small object and its ETag, or `None`; `Corrupt` (and not read) when it is larger than
    /// `cap`.
    fn get_stored(&self, key: &str, cap: u64) -> Result<Option<Stored>, MemberError> {
        let key = self.key(key);
        match self.run(self.timeout, async {
            let got = self.store.get(&key).await.map_err(member_err)?;
            too_large(got.meta.size, cap)?;
            let tag = got.meta.e_tag.clone().unwrap_or_default();
            let bytes = got.bytes().await.map_err(member_err)?;
            Ok((bytes, tag))
        }) {
            Ok((bytes, tag)) => Ok(Some(Stored {
                bytes: bytes.to_vec(),
                tag,
            })),
            Err(MemberError::Missing) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Replaces a small object in one PUT, conditional on what `expect` says is there. Where
    /// `Absent` was expected but a damaged object (larger than `cap`, so never read) is there,
    /// that very object is replaced (conditional on its ETag), as a directory member sets a
    /// damaged entry aside: otherwise repair could never heal it.
    fn put_conditional(
        &self,
        key: &str,
        bytes: &[u8],
        expect: &Expect,
        cap: u64,
    ) -> Result<(), MemberError> {
        let key = self.key(key);
        let mode = match expect {
            Expect::Absent => PutMode::Create,
            Expect::Tag(t) if t.is_empty() => PutMode::Overwrite,
            Expect::Tag(t) => PutMode::Update(UpdateVersion {
                e_tag: Some(t.clone()),
                version: None,
            }),
        };
        match self.put_small(&key, bytes, mode) {
            Err(MemberError::AlreadyExists) => {
                let head = self.run(self.timeout, async {
                    self.store.head(&key).await.map_err(member_err)
                });
                match head {
                    Ok(meta) if meta.size > cap => {
                        let mode = PutMode::Update(UpdateVersion {
                            e_tag: meta.e_tag,
                            version: None,
                        });
                        match self.put_small(&key, bytes, mode) {
                            Err(MemberError::AlreadyExists) => Err(MemberError::Conflict),
                            other => other,
                        }
                    }
                    _ => Err(MemberError::Conflict),
                }
            }
            other => other,
        }
    }

    /// Every object under `dir` (all pages of the listing; the deadline is for the whole of a
    /// large member's).
    fn list_all(&self, dir: &str) -> Result<Vec<object_store::ObjectMeta>, MemberError> {
        let prefix = self.key(dir);
        self.run(self.timeout * 20, async {
            self.store
                .list(Some(&prefix))
                .try_collect()
                .await
                .map_err(member_err)
        })
    }

    /// Copies a damaged chunk object under `damaged/` before a good one replaces it (a missing
    /// one needs nothing; a copy that fails is logged, the repair goes on).
    fn set_aside(&self, hash: &Hash32, key: &Key) {
        let aside = self.key(&layout::damaged_key(hash));
        let copied = self.run(self.timeout, async {
            self.store.copy(key, &aside).await.map_err(member_err)
        });
        match copied {
            Ok(()) | Err(MemberError::Missing) => {}
            Err(e) => log::warn!("{}: cannot set the damaged {key} aside: {e}", self.location),
        }
    }

    fn put_multipart(&self, key: &Key, bytes: &[u8]) -> Result<(), MemberError> {
        let limit = self.write_limit(bytes.len());
        let body = bytes::Bytes::copy_from_slice(bytes);
        self.run(limit, async {
            let upload = self.store.put_multipart(key).await.map_err(member_err)?;
            let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
            let mut at = 0;
            while at < body.len() {
                if let Err(e) = writer.wait_for_capacity(PARTS_IN_FLIGHT).await {
                    let _ = writer.abort().await;
                    return Err(member_err(e));
                }
                let end = (at + PART_SIZE).min(body.len());
                writer.put(body.slice(at..end));
                at = end;
            }
            writer.finish().await.map(|_| ()).map_err(member_err)
        })
    }
}

impl MemberIo for ObjectMember {
    fn location(&self) -> &str {
        &self.location
    }

    fn remote(&self) -> bool {
        true
    }

    fn read_info(&self) -> Result<Option<Vec<u8>>, MemberError> {
        let key = self.key(MEMBER_FILE);
        match self.run(self.timeout, async {
            let got = self.store.get(&key).await.map_err(member_err)?;
            too_large(got.meta.size, layout::META_MAX)?;
            got.bytes().await.map_err(member_err)
        }) {
            Ok(b) => Ok(Some(b.to_vec())),
            Err(MemberError::Missing | MemberError::Absent(_)) => {
                if self.container_exists()? {
                    Ok(None)
                } else {
                    Err(MemberError::Absent(format!(
                        "{} does not exist",
                        self.container.describe()
                    )))
                }
            }
            Err(e) => Err(e),
        }
    }

    fn init(&self, info: &[u8], setup: Setup) -> Result<(), MemberError> {
        self.writable()?;
        if !self.container_exists()? {
            if setup == Setup::Existing {
                return Err(MemberError::Unavailable(format!(
                    "{} does not exist (pack --init creates it)",
                    self.container.describe()
                )));
            }
            self.run(self.timeout, self.container.create())?;
        }
        self.put_small(&self.key(MEMBER_FILE), info, PutMode::Overwrite)
    }

    fn get_chunk(&self, hash: &Hash32, max_len: u64) -> Result<Image, MemberError> {
        let key = self.key(&layout::chunk_key(hash));
        // A large chunk on a slow link needs the time its bytes take.
        let bytes = self.run(self.opts.deadline(max_len), async {
            let got = self.store.get(&key).await.map_err(member_err)?;
            if got.meta.size > max_len {
                return Err(MemberError::Corrupt(format!(
                    "{}-byte object, larger than any image of its chunk",
                    got.meta.size
                )));
            }
            got.bytes().await.map_err(member_err)
        })?;
        Ok(Image::Bytes(bytes))
    }

    fn read_at(&self, key: &str, offset: u64, len: usize) -> Result<Vec<u8>, MemberError> {
        let key = self.key(key);
        let end = offset.saturating_add(len as u64);
        let bytes = self.run(self.opts.deadline(len as u64), async {
            let opts = GetOptions {
                range: Some(GetRange::Bounded(offset..end)),
                ..GetOptions::default()
            };
            let got = self.store.get_opts(&key, opts).await.map_err(member_err)?;
            got.bytes().await.map_err(member_err)
        })?;
        if bytes.len() != len {
            return Err(MemberError::Corrupt(format!(
                "object gave {} bytes of the {len} asked at {offset}",
                bytes.len()
            )));
        }
        Ok(bytes.to_vec())
    }

    fn stat(&self, key: &str) -> Result<Option<ObjectInfo>, MemberError> {
        self.head(&self.key(key))
    }

    fn put_chunk(
        &self,
        hash: &Hash32,
        image: &[u8],
        present: IfPresent,
    ) -> Result<(), MemberError> {
        self.writable()?;
        let key = layout::chunk_key(hash);
        if present == IfPresent::Replace {
            self.set_aside(hash, &self.key(&key));
        }
        self.write(&key, image, present)
    }

    fn write(&self, key: &str, bytes: &[u8], present: IfPresent) -> Result<(), MemberError> {
        self.writable()?;
        let key = self.key(key);
        if bytes.len() >= MULTIPART_FROM {
            if present == IfPresent::Refuse && self.head(&key)?.is_some() {
                return Err(MemberError::AlreadyExists);
            }
            return self.put_multipart(&key, bytes);
        }
        let mode = match present {
            IfPresent::Replace => PutMode::Overwrite,
            IfPresent::Refuse => PutMode::Create,
        };
        self.put_small(&key, bytes, mode)
    }

    fn sweep_damaged(&self, older_than: Duration, sweep: Sweep) -> Result<Stale, MemberError> {
        if sweep == Sweep::Delete {
            self.writable()?;
        }
        let metas = self.list_all(DAMAGED)?;
        let now = std::time::SystemTime::now();
        self.run(self.timeout * 20, async {
            let mut stale = Stale::default();
            for m in metas {
                let modified: std::time::SystemTime = m.last_modified.into();
                let age = now.duration_since(modified).unwrap_or_default();
                if age < older_than {
                    stale.kept_young += 1;
                    continue;
                }
                if sweep == Sweep::Delete {
                    match self.store.delete(&m.location).await {
                        Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                        Err(e) => return Err(member_err(e)),
                    }
                }
                stale.deleted += 1;
                stale.bytes += m.size;
            }
            Ok(stale)
        })
    }

    fn list_chunks(&self) -> Result<Vec<ChunkEntry>, MemberError> {
        Ok(self
            .list_all(CHUNKS)?
            .iter()
            .filter_map(|m| {
                let hash = m.location.filename().and_then(layout::chunk_name)?;
                Some(ChunkEntry {
                    hash,
                    size: m.size,
                    modified: m.last_modified.into(),
                })
            })
            .collect())
    }

    fn delete_chunk(&self, hash: &Hash32) -> Result<(), MemberError> {
        self.writable()?;
        let key = self.key(&layout::chunk_key(hash));
        self.run(self.timeout, async {
            self.store.delete(&key).await.map_err(member_err)
        })
    }

    fn get(&self, key: &str, cap: u64) -> Result<Option<Stored>, MemberError> {
        self.get_stored(key, cap)
    }

    fn put(&self, key: &str, bytes: &[u8], cap: u64, expect: &Expect) -> Result<(), MemberError> {
        self.writable()?;
        self.put_conditional(key, bytes, expect, cap)
    }

    fn list(&self, dir: &str) -> Result<Vec<Listed>, MemberError> {
        self.files(dir)
    }

    fn delete(&self, key: &str) -> Result<(), MemberError> {
        self.writable()?;
        let key = self.key(key);
        match self.run(self.timeout, async {
            self.store.delete(&key).await.map_err(member_err)
        }) {
            Err(MemberError::Missing) => Ok(()),
            other => other,
        }
    }
}
