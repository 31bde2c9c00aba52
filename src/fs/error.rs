//! What a request of the mount can fail with, one variant per reason, and the one place each
//! becomes an errno. The core returns these; the kernel adapter (`fuse.rs`) passes `errno()` on.

/// Why a request of the mount failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsError {
    /// No such inode, or no such name in the directory.
    NotFound,
    /// A directory was asked for, the node is a file.
    NotDir,
    /// A file was asked for, the node is a directory.
    IsDir,
    /// A write, a truncation or a write access: the mount is read-only.
    ReadOnly,
    /// The node has no attribute of that name.
    NoAttribute,
    /// The caller's buffer is smaller than the answer.
    TooSmall,
    /// The control attributes answer root and the user who mounted only.
    Denied,
    /// A pinned mount does not look for new versions.
    NotSupported,
    /// Too many refresh requests are waiting already.
    Busy,
    /// No memory for a chunk the read needs.
    NoMemory,
    /// The bytes could not be had: no good replica, a deadline passed, a local copy failed.
    Io,
}

impl FsError {
    /// The errno the kernel passes to the caller.
    pub fn errno(self) -> fuser::Errno {
        use fuser::Errno;
        match self {
            FsError::NotFound => Errno::ENOENT,
            FsError::NotDir => Errno::ENOTDIR,
            FsError::IsDir => Errno::EISDIR,
            FsError::ReadOnly => Errno::EROFS,
            FsError::NoAttribute => Errno::ENODATA,
            FsError::TooSmall => Errno::ERANGE,
            FsError::Denied => Errno::EACCES,
            FsError::NotSupported => Errno::ENOTSUP,
            FsError::Busy => Errno::EBUSY,
            FsError::NoMemory => Errno::ENOMEM,
            FsError::Io => Errno::EIO,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::FsError::*;

    #[test]
    fn every_error_has_its_own_errno() {
        let all = [
            NotFound,
            NotDir,
            IsDir,
            ReadOnly,
            NoAttribute,
            TooSmall,
            Denied,
            NotSupported,
            Busy,
            NoMemory,
            Io,
        ];
        let mut codes: Vec<i32> = all.iter().map(|e| e.errno().code()).collect();
        assert_eq!(NotFound.errno().code(), libc::ENOENT);
        assert_eq!(Io.errno().code(), libc::EIO);
        assert_eq!(NoMemory.errno().code(), libc::ENOMEM);
        codes.sort();
        codes.dedup();
        assert_eq!(codes.len(), all.len());
    }
}
