//! The signals that end a command or a daemon (SIGTERM, SIGINT, SIGHUP), blocked in every
//! thread so that one thread waits for them with `sigwait` and cleans up first (the daemon
//! unmounts; an export removes its temporary output).

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

/// Starts the thread that waits for a signal of `set` (as `block_exit_signals` returned it)
/// and then runs `then` with it. Where that thread cannot start, the set is unblocked again,
/// so the signals keep their default action, and `false` is returned.
pub fn on_exit_signal(set: libc::sigset_t, then: impl FnOnce(i32) + Send + 'static) -> bool {
    let spawned = std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut sig = 0;
            // SAFETY: waits on a set blocked in every thread.
            unsafe { libc::sigwait(&set, &mut sig) };
            then(sig);
        });
    if spawned.is_err() {
        // SAFETY: unblocks the set blocked before.
        unsafe { libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut()) };
    }
    spawned.is_ok()
}
