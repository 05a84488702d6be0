//! An outbound endpoint's TLS: rustls's buffered API, driven by hand, never through
//! rustls's blocking helpers: `read_tls` (at most one socket read per step) then
//! `process_new_packets`; alerts are flushed before a failed connection is dropped;
//! plaintext already buffered inside rustls is handed out before the socket is read again
//! (after the handshake a server's first bytes often arrive in the same flight); and rustls's
//! plaintext buffer limit is honoured as backpressure (a full buffer is `WouldBlock` to the
//! output queue, which keeps the rest). Outbound endpoints are few, so the buffers rustls
//! keeps per connection do not matter here.

use std::io::{self, Read, Write};

use super::{ReadError, ReadStep, WRITE_BUDGET};
use crate::output::{Flushed, OutQueue};

/// A rustls connection (either side) and what the loop needs to know about it.
pub(crate) struct Tls {
    pub(super) conn: rustls::Connection,
    /// Decrypted bytes waiting inside rustls.
    pub(super) plaintext: usize,
    /// The socket reported EOF.
    pub(super) eof: bool,
    /// The peer's close_notify arrived.
    pub(super) close_notify: bool,
    /// We are closing: `close_notify` goes out once the output queue is drained.
    pub(super) closing: bool,
}

impl Tls {
    pub(super) fn read<S: Read + Write>(
        &mut self,
        stream: &mut S,
        buf: &mut [u8],
    ) -> Result<ReadStep, ReadError> {
        let mut step = ReadStep::default();
        if self.plaintext == 0 && !self.eof {
            match self.conn.read_tls(stream) {
                Ok(0) => {
                    self.eof = true;
                    step.eof = true;
                }
                Ok(n) => step.wire = n,
                // (rustls's "plaintext buffer full" cannot happen: the socket is read only
                // once every decrypted byte has been handed out.)
                Err(e) => return Err(ReadError::Io(e)),
            }
            let was_handshaking = self.conn.is_handshaking();
            let io = match self.conn.process_new_packets() {
                Ok(io) => io,
                Err(err) => {
                    // Best effort: send the alert rustls queued, then the caller drops it.
                    let _ = self.conn.write_tls(stream);
                    return Err(ReadError::Tls(err));
                }
            };
            self.plaintext = io.plaintext_bytes_to_read();
            self.close_notify = io.peer_has_closed();
            step.handshake_done = was_handshaking && !self.conn.is_handshaking();
        }
        // Hand out what rustls holds. With nothing decrypted it answers at once (WouldBlock,
        // or EOF), no syscall, so there is no need to ask only when something is counted.
        match self.conn.reader().read(buf) {
            Ok(n) => {
                step.plain = n;
                self.plaintext = self.plaintext.saturating_sub(n);
                if n == 0 {
                    self.plaintext = 0; // close_notify: nothing more will come
                }
            }
            // Nothing (yet), or EOF without close_notify: treated as closed below.
            Err(_) => self.plaintext = 0,
        }
        step.peer_closed = self.plaintext == 0 && (self.eof || self.close_notify);
        Ok(step)
    }

    /// Writes records rustls has ready, feeds `out` into rustls as far as its buffer limit
    /// allows, and repeats until the socket would block or everything is out.
    pub(super) fn flush<S: Write>(
        &mut self,
        stream: &mut S,
        mut out: Option<&mut OutQueue>,
    ) -> io::Result<(Flushed, usize)> {
        let closing = self.closing;
        let tls = &mut self.conn;
        let mut written = 0;
        loop {
            while tls.wants_write() {
                if written >= WRITE_BUDGET {
                    return Ok((Flushed::Budget, written));
                }
                match tls.write_tls(stream) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(n) => written += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        return Ok((Flushed::Blocked, written));
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            let Some(queue) = out.as_deref_mut() else {
                return Ok((Flushed::Drained, written));
            };
            if queue.is_empty() {
                if closing {
                    tls.send_close_notify(); // the end of the stream; nothing once sent
                    if tls.wants_write() {
                        continue;
                    }
                }
                return Ok((Flushed::Drained, written));
            }
            let (state, _) = queue.flush(&mut PlaintextSink(tls), usize::MAX)?;
            if !tls.wants_write() {
                if state == Flushed::Stalled {
                    return Ok((Flushed::Stalled, written)); // a file block is being read
                }
                // rustls took nothing and has nothing to send: only possible if its limit is
                // zero. Never spin on it.
                debug_assert!(
                    queue.is_empty(),
                    "rustls refused plaintext with nothing to send"
                );
                return Ok((Flushed::Blocked, written));
            }
        }
    }
}

/// rustls's plaintext side as a `Write` whose full buffer is `WouldBlock` (backpressure),
/// so the output queue keeps what rustls cannot take yet.
pub(super) struct PlaintextSink<'a>(pub(super) &'a mut rustls::Connection);

impl io::Write for PlaintextSink<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.0.writer().write(buf)? {
            0 if !buf.is_empty() => Err(io::ErrorKind::WouldBlock.into()),
            n => Ok(n),
        }
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        match self.0.writer().write_vectored(bufs)? {
            0 if bufs.iter().any(|b| !b.is_empty()) => Err(io::ErrorKind::WouldBlock.into()),
            n => Ok(n),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
