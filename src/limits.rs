//! Process limits that shape defaults: the open-file limit bounds how many connections fit.

/// File descriptors kept back for listeners, served files, logs and the like.
const RESERVED_FDS: u64 = 64;

/// The soft open-file limit, raised to the hard limit first when allowed (as Redis does).
pub fn open_file_limit() -> Option<u64> {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes into the struct we pass, which lives on our stack.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) } != 0 {
        return None;
    }
    if rl.rlim_cur < rl.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: rl.rlim_max,
            rlim_max: rl.rlim_max,
        };
        // SAFETY: setrlimit reads the struct we pass; failure leaves the limit unchanged.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return Some(raised.rlim_cur);
        }
    }
    Some(rl.rlim_cur)
}

/// `maxConnections` when configured as 0: what the open-file limit leaves room for.
pub fn default_max_connections() -> usize {
    let fds = open_file_limit().unwrap_or(1024);
    let n = if fds > 2 * RESERVED_FDS {
        fds - RESERVED_FDS
    } else {
        fds / 2
    };
    usize::try_from(n)
        .unwrap_or(usize::MAX)
        .clamp(1, u32::MAX as usize - 1)
}
