//! The user's home directory: `$HOME`, else the password database's entry (a mount at boot or a
//! unit may run without `HOME`). Used for the host's own files: trusted keys and the AWS
//! configuration.

use std::path::PathBuf;

/// `$HOME` when set and not empty, else this user's home from the password database.
pub fn home_dir() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|v| !v.is_empty())
        .or_else(passwd_home)
        .map(PathBuf::from)
}

/// This user's home directory from the password database.
fn passwd_home() -> Option<std::ffi::OsString> {
    use std::os::unix::ffi::OsStrExt;
    let mut buf = vec![0u8; 16 << 10];
    // SAFETY: getpwuid_r writes the entry into `pwd` and its strings into `buf` (of the given
    // length), and sets `found` to `pwd` or null; nothing is kept past this function.
    unsafe {
        let mut pwd: libc::passwd = std::mem::zeroed();
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        let rc = libc::getpwuid_r(
            libc::geteuid(),
            &mut pwd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut found,
        );
        if rc != 0 || found.is_null() || pwd.pw_dir.is_null() {
            return None;
        }
        let dir = std::ffi::CStr::from_ptr(pwd.pw_dir);
        Some(std::ffi::OsStr::from_bytes(dir.to_bytes()).to_os_string())
    }
}
