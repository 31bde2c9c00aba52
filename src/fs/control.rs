//! The mount root's control attributes: `user.shardfs.status` (live counters as JSON) and
//! `user.shardfs.refresh` (look for new versions now, then answer the counters). Only root and
//! the user who mounted may read them; refresh requests share one refresh, and a bounded number
//! may wait for it.

use super::{Counters, reply_counters};
use crossbeam_channel::{Sender, TrySendError};
use fuser::{Errno, ReplyXattr};
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
    refresh: Option<&Sender<(ReplyXattr, u32)>>,
    counters: impl FnOnce() -> Counters,
    reply: ReplyXattr,
) {
    let (name, size) = (asked.name, asked.size);
    // The control attributes (what is open, store paths; refresh now) answer only root and the
    // user who mounted.
    if (name == REFRESH_XATTR || name == STATUS_XATTR) && !controller(asked.uid) {
        return reply.error(Errno::EACCES);
    }
    if name == REFRESH_XATTR {
        // A size probe gets the most an answer takes; a read waits for the refresh, which every
        // request waiting meanwhile shares; too many waiting is EBUSY.
        return match refresh {
            _ if size == 0 => reply.size(XATTR_MAX as u32),
            Some(to) => match to.try_send((reply, size)) {
                Ok(()) => {}
                Err(TrySendError::Full((reply, _))) => reply.error(Errno::EBUSY),
                Err(TrySendError::Disconnected((reply, _))) => reply.error(Errno::EIO),
            },
            None => reply.error(Errno::ENOTSUP),
        };
    }
    if name != STATUS_XATTR {
        return reply.error(Errno::ENODATA);
    }
    reply_counters(&counters(), size, reply);
}
