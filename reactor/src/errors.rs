//! Classification of socket errors: the only place that looks at `io::ErrorKind` and errno.

use std::io;

/// What an I/O error means for the loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoClass {
    /// Not ready: wait for the next readiness edge.
    WouldBlock,
    /// Interrupted by a signal: retry at once.
    Retry,
    /// Out of file descriptors, buffers or memory: back off and retry later.
    Exhausted,
    /// The peer went away (reset, broken pipe, aborted): close quietly.
    PeerGone,
    /// Anything else: close and log.
    Fatal,
}

impl IoClass {
    /// How loud a log line about an error of this class is: routine ends quietly, running
    /// out of resources as a warning, the unexpected as an error.
    pub fn log_level(self) -> log::Level {
        match self {
            IoClass::WouldBlock | IoClass::Retry => log::Level::Trace,
            IoClass::PeerGone => log::Level::Debug,
            IoClass::Exhausted => log::Level::Warn,
            IoClass::Fatal => log::Level::Error,
        }
    }
}

/// Classifies an error returned by accept, read or write.
pub fn classify(e: &io::Error) -> IoClass {
    use io::ErrorKind::*;
    match e.kind() {
        WouldBlock => return IoClass::WouldBlock,
        Interrupted => return IoClass::Retry,
        ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof | NotConnected => {
            return IoClass::PeerGone;
        }
        OutOfMemory => return IoClass::Exhausted,
        _ => {}
    }
    match e.raw_os_error() {
        // EMFILE, ENFILE, ENOBUFS, ENOMEM
        Some(24) | Some(23) | Some(105) | Some(12) => IoClass::Exhausted,
        // ETIMEDOUT, EHOSTUNREACH, ENETUNREACH, EPROTO (accept of an aborted connection)
        Some(110) | Some(113) | Some(101) | Some(71) => IoClass::PeerGone,
        _ => IoClass::Fatal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_class_logs_at_its_level() {
        assert_eq!(IoClass::WouldBlock.log_level(), log::Level::Trace);
        assert_eq!(IoClass::Retry.log_level(), log::Level::Trace);
        assert_eq!(IoClass::PeerGone.log_level(), log::Level::Debug);
        assert_eq!(IoClass::Exhausted.log_level(), log::Level::Warn);
        assert_eq!(IoClass::Fatal.log_level(), log::Level::Error);
    }

    #[test]
    fn classes() {
        assert_eq!(
            classify(&io::Error::from(io::ErrorKind::WouldBlock)),
            IoClass::WouldBlock
        );
        assert_eq!(
            classify(&io::Error::from(io::ErrorKind::Interrupted)),
            IoClass::Retry
        );
        assert_eq!(
            classify(&io::Error::from_raw_os_error(24)),
            IoClass::Exhausted
        );
        assert_eq!(
            classify(&io::Error::from_raw_os_error(104)),
            IoClass::PeerGone
        );
        assert_eq!(
            classify(&io::Error::from(io::ErrorKind::PermissionDenied)),
            IoClass::Fatal
        );
        assert_eq!(
            classify(&io::Error::from(io::ErrorKind::OutOfMemory)),
            IoClass::Exhausted
        );
        // EMFILE, ENFILE, ENOBUFS, ENOMEM: back off.
        for errno in [24, 23, 105, 12] {
            assert_eq!(
                classify(&io::Error::from_raw_os_error(errno)),
                IoClass::Exhausted
            );
        }
        // ETIMEDOUT, EHOSTUNREACH, ENETUNREACH, EPROTO: the peer is gone.
        for errno in [110, 113, 101, 71] {
            assert_eq!(
                classify(&io::Error::from_raw_os_error(errno)),
                IoClass::PeerGone,
                "errno {errno}"
            );
        }
    }
}
