//! The store: a set of self-describing members (directories or object-store prefixes, see
//! `crate::member`) holding content-addressed chunk files and one manifest per model (kept on
//! every member). This module opens a store from its member specs (in any order), checks they
//! belong together, and finds manifests; `writer` packs, `reader` reads chunks back with replica
//! failover and exports, `verify` scrubs, `health` tells which models the opened members can
//! serve whole. Nothing here knows about FUSE, and nothing here knows which kind a member is.

pub mod base;
pub mod catalog;
mod copies;
mod error;
pub use error::StoreError;
pub(crate) use error::{io_err, member_err, next_counter};
mod lock;
pub use lock::{Run, StoreLock};
pub mod health;
pub mod lease;
pub mod liveness;
pub mod manifest;
pub mod member;
pub mod member_list;
pub mod reader;
mod signed;
mod sources;
pub mod verify;
pub mod writer;

use crate::member::{self as io, Expect, MemberError, Setup};
pub use copies::{FullView, ManifestCopy, Unreadable, current_copy, stale_copies};

use member::{Member, MemberInfo, STORE_FORMAT};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

/// An opened store: the members that could be read, sorted by index, and those that could not.
#[derive(Debug)]
pub struct Store {
    pub store_id: String,
    pub members: Vec<Member>,
    /// Members given but not read (unreadable, refused or retired), by location, with why.
    pub unavailable: Vec<(String, LeftOut)>,
    by_id: HashMap<String, usize>,
    /// How each member has been answering reads.
    pub liveness: liveness::Liveness,
    /// The member deadline: a read of one chunk gives up after this much per replica.
    pub timeout: std::time::Duration,
    /// The slowest member transfer allowed (bytes per second), which scales that deadline with
    /// a chunk's size.
    pub min_rate: u64,
    /// Members a live mount found in the member list after it opened (added, or taking a lost
    /// member's place): append-only, so a reference to one stays valid.
    joined: Vec<std::sync::OnceLock<Member>>,
    joining: parking_lot::Mutex<()>,
    /// Which key the store's manifests and member lists must be signed by (see `signed`).
    pub trust: crate::trust::Trust,
    /// How long `lock` waits for a lock another command holds.
    pub lock_wait: std::time::Duration,
    /// Frame tables of replicas lately read by frames (see `reader::Tables`).
    pub(crate) frame_tables: std::sync::Arc<reader::Tables>,
}

/// How many members a live mount can pick up after it opened.
const JOINED_SLOTS: usize = 64;

/// What a member spec holds.
enum Probe {
    Member(MemberInfo),
    /// The place holds no `shardfs-store.json`, or is not there at all.
    Empty {
        reason: String,
    },
    /// The member did not answer, or refused.
    Unavailable(String),
}

fn probe(member: &dyn io::MemberIo) -> Result<Probe, StoreError> {
    let location = member.location();
    let bytes = match member.read_info() {
        Ok(Some(b)) => b,
        Ok(None) => {
            return Ok(Probe::Empty {
                reason: "not a store member".into(),
            });
        }
        Err(MemberError::Absent(reason)) => return Ok(Probe::Empty { reason }),
        Err(e @ MemberError::Invalid(_)) => return Err(member_err(location)(e)),
        Err(e) => return Ok(Probe::Unavailable(e.to_string())),
    };
    let info: MemberInfo =
        serde_json::from_slice(&bytes).map_err(|e| StoreError::CorruptMember {
            location: location.to_string(),
            reason: e.to_string(),
        })?;
    if info.format_version != STORE_FORMAT {
        return Err(StoreError::UnsupportedFormat {
            location: location.to_string(),
            found: info.format_version,
        });
    }
    if info.store_id.is_empty()
        || info.member_id.is_empty()
        || !(info.weight > 0.0 && info.weight.is_finite())
    {
        return Err(StoreError::CorruptMember {
            location: location.to_string(),
            reason: "empty id or bad weight".into(),
        });
    }
    Ok(Probe::Member(info))
}

/// A member's I/O and what it holds.
type Probed = (Arc<dyn io::MemberIo>, Probe);

/// Opens every spec's member I/O, in parallel (remote members answer in milliseconds each).
fn open_all(specs: &[io::MemberSpec], opts: &io::Options) -> Result<Vec<Probed>, StoreError> {
    use rayon::prelude::*;
    specs
        .par_iter()
        .map(|spec| {
            let member = spec.open(opts).map_err(member_err(&spec.to_string()))?;
            let probed = probe(member.as_ref())?;
            Ok((member, probed))
        })
        .collect()
}

/// Why a member given is not read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeftOut {
    /// The directory or bucket is gone, not initialised, or refused (the reason says which).
    Unavailable(String),
    /// `member remove` retired it: it is no longer part of the store.
    Retired,
}

impl LeftOut {
    /// Whether a command that needs every member should still wait for this one.
    pub fn is_missed(&self) -> bool {
        !matches!(self, LeftOut::Retired)
    }
}

impl std::fmt::Display for LeftOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LeftOut::Unavailable(why) => f.write_str(why),
            LeftOut::Retired => f.write_str("retired"),
        }
    }
}

impl serde::Serialize for LeftOut {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl Store {
    /// `open_with` default member options.
    pub fn open(specs: &[io::MemberSpec]) -> Result<Store, StoreError> {
        Store::open_with(specs, &io::Options::default())
    }

    /// Opens a store for reading. Members that are gone, hold no member file or do not answer
    /// are listed in `unavailable` (a lost disk must not stop reads); anything else wrong is an
    /// error.
    pub fn open_with(specs: &[io::MemberSpec], opts: &io::Options) -> Result<Store, StoreError> {
        if specs.is_empty() {
            return Err(StoreError::NoMembers);
        }
        let mut members = Vec::new();
        let mut unavailable = Vec::new();
        for (member, probed) in open_all(specs, opts)? {
            match probed {
                Probe::Member(info) => members.push(Member { io: member, info }),
                Probe::Empty { reason } | Probe::Unavailable(reason) => {
                    unavailable.push((member.location().to_string(), LeftOut::Unavailable(reason)));
                }
            }
        }
        if members.is_empty() {
            let why = unavailable
                .iter()
                .map(|(p, r)| format!("{p}: {r}"))
                .collect::<Vec<_>>()
                .join("; ");
            return Err(StoreError::NoneAvailable(why));
        }
        for (location, reason) in &unavailable {
            log::warn!("store member {location} is unavailable ({reason})");
        }
        // Which key copies must be signed by; a member naming another key is left out.
        let store = Store::assemble(members, unavailable)?.with_trust()?;
        // A member `member remove` retired is no longer part of the store.
        let (list, _) = store.member_list();
        let retired = |m: &Member| list.get(m.id()).is_some_and(|l| l.retired);
        let mut store = if store.members.iter().any(retired) {
            let Store {
                members,
                mut unavailable,
                trust: store_trust,
                ..
            } = store;
            let (gone, kept): (Vec<Member>, Vec<Member>) = members.into_iter().partition(retired);
            for m in gone {
                log::warn!(
                    "{} was retired from the store (member remove); it is not read",
                    m.location()
                );
                unavailable.push((m.location().to_string(), LeftOut::Retired));
            }
            if kept.is_empty() {
                return Err(StoreError::NoneAvailable(
                    "every member given was retired".into(),
                ));
            }
            let trust = store_trust;
            let mut kept = Store::assemble(kept, unavailable)?;
            kept.trust = trust;
            kept
        } else {
            store
        };
        store.timeout = opts.timeout;
        store.min_rate = opts.min_rate;
        store.lock_wait = opts.lock_wait;
        Ok(store)
    }

    fn assemble(
        mut members: Vec<Member>,
        unavailable: Vec<(String, LeftOut)>,
    ) -> Result<Store, StoreError> {
        let first = &members[0];
        for m in &members[1..] {
            if m.info.store_id != first.info.store_id {
                return Err(StoreError::MixedStores {
                    a: first.location().to_string(),
                    a_store: first.info.store_id.clone(),
                    b: m.location().to_string(),
                    b_store: m.info.store_id.clone(),
                });
            }
        }
        members.sort_by(|a, b| {
            a.info
                .index
                .cmp(&b.info.index)
                .then(a.info.member_id.cmp(&b.info.member_id))
        });
        let mut by_id = HashMap::new();
        for (i, m) in members.iter().enumerate() {
            if let Some(prev) = by_id.insert(m.info.member_id.clone(), i) {
                return Err(StoreError::DuplicateMember {
                    a: members[prev].location().to_string(),
                    b: m.location().to_string(),
                });
            }
        }
        Ok(Store {
            store_id: members[0].info.store_id.clone(),
            trust: crate::trust::Trust::unsigned(&members[0].info.store_id),
            liveness: liveness::Liveness::new(members.iter().map(|m| (m.id(), m.location()))),
            members,
            unavailable,
            by_id,
            timeout: io::DEFAULT_TIMEOUT,
            min_rate: io::DEFAULT_MIN_RATE,
            lock_wait: std::time::Duration::ZERO,
            joined: (0..JOINED_SLOTS)
                .map(|_| std::sync::OnceLock::new())
                .collect(),
            joining: parking_lot::Mutex::new(()),
            frame_tables: Default::default(),
        })
    }

    /// Opens (creating where needed) a store for packing: every spec must end up a member.
    /// Missing directories are created; a missing bucket only with `init`. A place without a
    /// member file joins the store only with `init`, or while the store holds no model yet (a
    /// first pack that was interrupted).
    pub fn open_for_pack(
        specs: &[io::MemberSpec],
        init: bool,
        opts: &io::Options,
    ) -> Result<Store, StoreError> {
        if specs.is_empty() {
            return Err(StoreError::NoMembers);
        }
        let mut members = Vec::new();
        let mut empty = Vec::new();
        for (member, probed) in open_all(specs, opts)? {
            match probed {
                Probe::Member(info) => members.push(Member { io: member, info }),
                Probe::Empty { .. } => empty.push(member),
                Probe::Unavailable(reason) => {
                    return Err(StoreError::Member {
                        location: member.location().to_string(),
                        source: MemberError::Unavailable(reason),
                    });
                }
            }
        }
        let store_id = match members.first() {
            Some(m) => m.info.store_id.clone(),
            None => member::new_id().map_err(io_err(Path::new("/dev/urandom")))?,
        };
        if let (Some(m), false, false) = (empty.first(), members.is_empty(), init) {
            let partial = Store::assemble(members.clone(), vec![])?;
            if !partial.model_names()?.is_empty() {
                return Err(StoreError::NotAMember {
                    location: m.location().to_string(),
                    store: store_id,
                });
            }
        }
        // A new store gets its key here; an existing one is opened as readers open it, and
        // a member naming another key stops the pack.
        let trust = if members.is_empty() {
            crate::trust::for_new_store(&store_id).map_err(StoreError::Invalid)?
        } else {
            let partial = Store::assemble(members.clone(), vec![])?.with_trust()?;
            if let Some((location, reason)) = partial.unavailable.first() {
                return Err(StoreError::Invalid(format!(
                    "{location}: {reason}; nothing was packed (repair or remove that member)"
                )));
            }
            partial.trust
        };
        let first_index = members.iter().map(|m| m.info.index + 1).max().unwrap_or(0);
        for (index, member) in (first_index..).zip(empty) {
            let info = MemberInfo {
                format_version: STORE_FORMAT,
                store_id: store_id.clone(),
                member_id: member::new_id().map_err(io_err(Path::new("/dev/urandom")))?,
                index,
                weight: 1.0,
                keys: trust.records(),
            };
            let bytes =
                serde_json::to_vec_pretty(&info).map_err(|e| StoreError::Invalid(e.to_string()))?;
            member
                .init(&bytes, if init { Setup::Create } else { Setup::Existing })
                .map_err(member_err(member.location()))?;
            members.push(Member { io: member, info });
        }
        let mut store = Store::assemble(members, vec![])?;
        store.trust = trust;
        store.trust.warn_if_unsigned();
        store.timeout = opts.timeout;
        store.min_rate = opts.min_rate;
        store.lock_wait = opts.lock_wait;
        Ok(store)
    }

    /// The member with `id`: the one opened last (a new place taking a lost member's id is
    /// picked up by a live mount after it opened, and replaces the lost one for reads).
    pub fn member(&self, id: &str) -> Option<&Member> {
        let joined = self.joined_members().filter(|m| m.id() == id).last();
        joined.or_else(|| self.by_id.get(id).map(|&i| &self.members[i]))
    }

    /// The member options this store was opened with (deadline and slowest rate), for members
    /// it opens later and for the deadlines of its reads.
    pub fn member_options(&self) -> io::Options {
        io::Options {
            timeout: self.timeout,
            min_rate: self.min_rate,
            lock_wait: self.lock_wait,
            ..io::Options::default()
        }
    }

    /// Members picked up after the store opened (see `follow_member_list`).
    pub fn joined_members(&self) -> impl Iterator<Item = &Member> {
        self.joined.iter().map_while(|slot| slot.get())
    }

    /// For a live mount: opens the members the member list names that this store does not hold
    /// yet (added, or a new place taking a lost member's id) when they answer and belong to this
    /// store. Returns the locations newly opened.
    pub fn follow_member_list(&self, opts: &io::Options) -> Vec<String> {
        self.open_listed(opts, false)
    }

    /// `follow_member_list` for members this store has open only: those replaced since (listed
    /// at a new place) are opened there. A read calls it before it gives up on a chunk, as the
    /// mount's own look at the list may be a refresh away.
    pub fn follow_replaced_members(&self, opts: &io::Options) -> Vec<String> {
        self.open_listed(opts, true)
    }

    fn open_listed(&self, opts: &io::Options, replaced_only: bool) -> Vec<String> {
        let _one_at_a_time = self.joining.lock();
        let (list, _) = self.member_list();
        let mut opened = Vec::new();
        for l in list.members.iter().filter(|l| !l.retired) {
            // Opened already, where the list says it is. (A member replaced since this store
            // opened is listed at its new place: that one is opened and read from now on.)
            let open = self.member(&l.id);
            let opened_there =
                open.is_some_and(|m| io::recorded_location(m.location()) == l.location);
            if opened_there || l.location.is_empty() || (replaced_only && open.is_none()) {
                continue;
            }
            let Ok(member) = io::MemberSpec::parse(&l.location).and_then(|s| s.open(opts)) else {
                continue;
            };
            let Ok(Probe::Member(info)) = probe(member.as_ref()) else {
                continue;
            };
            if info.store_id != self.store_id || info.member_id != l.id {
                continue;
            }
            if !self.trusts_member_keys(member.location(), &info.keys) {
                continue;
            }
            let Some(slot) = self.joined.iter().find(|s| s.get().is_none()) else {
                log::warn!(
                    "member {} is not opened: this mount has picked up {JOINED_SLOTS} members already",
                    l.id
                );
                break;
            };
            log::info!(
                "member {} found at {} in the member list; reading it too",
                l.id,
                l.location
            );
            if slot.set(Member { io: member, info }).is_ok() {
                opened.push(l.location.clone());
            }
        }
        opened
    }

    /// The opened members as placement sees them (but `exclude`), weighed for `replicas`.
    pub fn placement_slots(
        &self,
        replicas: usize,
        exclude: Option<&str>,
    ) -> Vec<crate::placement::Slot<'_>> {
        let mut slots: Vec<crate::placement::Slot<'_>> = self
            .members
            .iter()
            .filter(|m| exclude != Some(m.id()))
            .map(|m| crate::placement::Slot {
                id: m.id(),
                weight: m.info.weight,
            })
            .collect();
        crate::placement::weigh(&mut slots, replicas);
        slots
    }

    /// The specs of the members that opened, as each says where it is.
    pub fn member_specs(&self) -> Vec<io::MemberSpec> {
        self.members
            .iter()
            .map(|m| {
                io::MemberSpec::parse(m.location())
                    .unwrap_or_else(|_| io::MemberSpec::Dir(m.location().into()))
            })
            .collect()
    }

    /// How long the member that a read of `chunk` asks first has lately taken to answer.
    pub fn median_latency(&self, chunk: &manifest::ChunkRef) -> Option<std::time::Duration> {
        self.liveness.median(&chunk.members)
    }

    /// Whether some member is across a network (its answers take milliseconds, not
    /// microseconds): read-ahead then keeps more chunks in flight.
    pub fn has_remote_members(&self) -> bool {
        self.members.iter().any(|m| m.io.remote())
    }

    /// Makes every chunk put on every member so far durable (all members at once), before a
    /// manifest that names them is written.
    pub fn flush_all(&self) -> Result<(), StoreError> {
        use rayon::prelude::*;
        self.members
            .par_iter()
            .try_for_each(|m| m.io.flush().map_err(member_err(m.location())))
    }
}

impl Store {
    /// Replaces a model's manifest on one member, only if that member's copy is still the one
    /// read as `copy_tag` (`None`: it had none).
    pub fn put_manifest(
        &self,
        member: &Member,
        name: &str,
        bytes: &[u8],
        copy_tag: Option<&str>,
    ) -> Result<(), StoreError> {
        let expect = match copy_tag {
            Some(t) => Expect::Tag(t.to_string()),
            None => Expect::Absent,
        };
        match member.io.put_manifest(name, bytes, &expect) {
            Err(MemberError::Conflict) => Err(StoreError::Conflict {
                name: name.to_string(),
                location: member.location().to_string(),
            }),
            other => other.map_err(member_err(member.location())),
        }
    }
}
