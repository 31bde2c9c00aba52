//! The signals that end a command or a daemon (SIGTERM, SIGINT, SIGHUP), blocked in every
//! thread so that one thread of the caller's waits for them with `sigwait` and cleans up first
//! (the daemon unmounts; an export removes its temporary output).

/// Blocks SIGTERM, SIGINT and SIGHUP in this thread and every thread started after; returns
/// the set, for `sigwait`. Call it before any other thread starts.
pub fn block_exit_signals() -> libc::sigset_t {
    // SAFETY: plain libc signal-set manipulation on a local set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            libc::sigaddset(&mut set, s);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}
