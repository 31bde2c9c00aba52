//! How the store's operations fail (`StoreError`), and the helpers that name what failed: the
//! path (`io_err`), the member (`member_err`), a counter at its end (`next_counter`).

use super::member::{MEMBER_FILE, STORE_FORMAT};
use super::reader;
use crate::member::MemberError;
use crate::placement::PlacementError;
use std::io as stdio;
use std::path::{Path, PathBuf};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: stdio::Error },
    #[error("{location}: {source}")]
    Member {
        location: String,
        source: MemberError,
    },
    #[error("no store members given")]
    NoMembers,
    #[error("{location}: corrupt {MEMBER_FILE}: {reason}")]
    CorruptMember { location: String, reason: String },
    #[error(
        "{location}: store format {found} is not supported (this build reads format {STORE_FORMAT})"
    )]
    UnsupportedFormat { location: String, found: u32 },
    #[error(
        "the member list mixes two stores: {a} belongs to store {a_store}, {b} to store {b_store}"
    )]
    MixedStores {
        a: String,
        a_store: String,
        b: String,
        b_store: String,
    },
    #[error("{a} and {b} are the same member")]
    DuplicateMember { a: String, b: String },
    #[error("{location} is not a member of store {store}; pass --init to add it as a new member")]
    NotAMember { location: String, store: String },
    #[error("no member of the store could be opened: {0}")]
    NoneAvailable(String),
    #[error("store member {location} is busy: another command holds its pack lock ({hint})")]
    Busy { location: String, hint: String },
    #[error(
        "{what} deleted nothing: {location}: {reason}; repair the member (or move the entry away) and run it again"
    )]
    Incomplete {
        what: String,
        location: String,
        reason: String,
    },
    #[error("no model named '{0}' in the store")]
    UnknownModel(String),
    #[error("the manifest of model '{name}' is unreadable on every member ({reason})")]
    CorruptManifest { name: String, reason: String },
    #[error(
        "model '{name}' changed on {location} while this pack ran (another pack of it?); nothing of this pack was published there: pack again"
    )]
    Conflict { name: String, location: String },
    #[error("model '{model}' has no file '{path}'")]
    UnknownFile { model: String, path: String },
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Source(String),
    #[error(transparent)]
    Placement(#[from] PlacementError),
    #[error(transparent)]
    Chunking(#[from] crate::chunking::ChunkingError),
    #[error(transparent)]
    Unreadable(#[from] reader::ChunkUnreadable),
}

impl StoreError {
    /// A delete (`what`) refused because `location` could not be seen whole.
    pub fn incomplete(what: &str, location: &str, reason: String) -> StoreError {
        StoreError::Incomplete {
            what: what.to_string(),
            location: location.to_string(),
            reason,
        }
    }
}

/// The counter after `current` (a manifest version, a member-list generation). One at its
/// maximum is refused, never wrapped to 0 (a wrapped counter would rank below every old copy).
pub(crate) fn next_counter(current: u64, what: &str) -> Result<u64, StoreError> {
    current.checked_add(1).ok_or_else(|| {
        StoreError::Invalid(format!(
            "{what} is already {current}, the largest there is; nothing was changed (a member holding it may be damaged or forged: run verify)"
        ))
    })
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(stdio::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A member error, naming the member.
pub(crate) fn member_err(location: &str) -> impl FnOnce(MemberError) -> StoreError + '_ {
    move |source| StoreError::Member {
        location: location.to_string(),
        source,
    }
}
