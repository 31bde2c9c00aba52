//! The mount root's control attributes: `user.shardfs.status` (live counters as JSON) and
//! `user.shardfs.refresh` (look for new versions now, then answer the counters). Only root and
//! the user who mounted may read them; refresh requests share one refresh, and a bounded number
//! may wait for it.

use super::{Counters, FsError};
use crossbeam_channel::{Sender, TrySendError};
use std::ffi::OsStr;

/// The extended attribute of the mount root that returns live counters as JSON.
pub const STATUS_XATTR: &str = "user.shardfs.status";
/// Reading this attribute of the root makes the mount look for new versions now; the answer
/// (the counters, as JSON) comes once it has.
pub const REFRESH_XATTR: &str = "user.shardfs.refresh";
/// Whether user `uid` may read the control attributes: root, or the user the daemon runs as.
fn controller(uid: u32) -> bool {
    // SAFETY: getuid cannot fail.
    uid == 0 || uid == unsafe { libc::getuid() }
}

/// How many refresh requests may wait for the next refresh.
pub const REFRESH_WAITING: usize = 64;

/// The most a counters answer takes.
pub const XATTR_MAX: usize = 256 * 1024;

/// The answer to a read of an attribute.
#[derive(Debug, PartialEq, Eq)]
pub enum Xattr {
    /// A size probe (a read of 0 bytes): how many bytes the value takes.
    Size(u32),
    Value(Vec<u8>),
}

/// Where an attribute's answer goes once it is known (a refresh answers later, from the thread
/// that follows the store).
pub type XattrReply = Box<dyn FnOnce(Result<Xattr, FsError>) + Send>;

/// A refresh request waiting for the next refresh: where to answer, and the caller's size.
pub type RefreshRequest = (XattrReply, u32);

/// A read of an attribute of the mount root.
pub struct Asked<'a> {
    pub name: &'a OsStr,
    pub uid: u32,
    pub size: u32,
}

/// Answers a read of an attribute of the root: the counters, a refresh handed to `refresh`
/// (`None`: a pinned mount), or an error.
pub fn answer(
    asked: &Asked<'_>,
    refresh: Option<&Sender<RefreshRequest>>,
    counters: impl FnOnce() -> Counters,
    reply: XattrReply,
) {
    let (name, size) = (asked.name, asked.size);
    // The control attributes (what is open, store paths; refresh now) answer only root and the
    // user who mounted.
    if (name == REFRESH_XATTR || name == STATUS_XATTR) && !controller(asked.uid) {
        return reply(Err(FsError::Denied));
    }
    if name == REFRESH_XATTR {
        // A size probe gets the most an answer takes; a read waits for the refresh, which every
        // request waiting meanwhile shares; too many waiting is EBUSY.
        return match refresh {
            _ if size == 0 => reply(Ok(Xattr::Size(XATTR_MAX as u32))),
            Some(to) => match to.try_send((reply, size)) {
                Ok(()) => {}
                Err(TrySendError::Full((reply, _))) => reply(Err(FsError::Busy)),
                Err(TrySendError::Disconnected((reply, _))) => reply(Err(FsError::Io)),
            },
            None => reply(Err(FsError::NotSupported)),
        };
    }
    if name != STATUS_XATTR {
        return reply(Err(FsError::NoAttribute));
    }
    reply(counters_answer(&counters(), size));
}

/// The answer to a read of a counters attribute of `size` bytes (0: how many it takes).
pub fn counters_answer(counters: &Counters, size: u32) -> Result<Xattr, FsError> {
    let value = serde_json::to_vec(counters).unwrap_or_default();
    if size == 0 {
        Ok(Xattr::Size(value.len() as u32))
    } else if (size as usize) < value.len() {
        Err(FsError::TooSmall)
    } else {
        Ok(Xattr::Value(value))
    }
}
