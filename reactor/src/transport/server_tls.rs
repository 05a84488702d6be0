//! TLS for accepted endpoints through rustls's unbuffered API, so that an idle connection
//! holds no buffers: rustls's buffered connection keeps a 4 KiB read buffer (and its
//! plaintext and record queues) for the connection's whole life, which for a million idle
//! clients is gigabytes.
//!
//! Ciphertext passes through one scratch buffer per loop thread ([`SCRATCH`]): a read step
//! reads the socket into it and rustls decrypts the records in place; a flush encrypts the
//! output queue into it and writes it out. Only what cannot be finished now stays with the
//! connection, in buffers that exist only while it does: a partial record received
//! (`incoming`), ciphertext the socket would not take (`outgoing`), and decrypted bytes the
//! caller's buffer could not take (`plaintext`).

use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::sync::Arc;

use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{
    AppDataRecord, ConnectionState, EncodeError, EncryptError, InsufficientSizeError,
    ReadEarlyData, ReadTraffic, UnbufferedStatus, WriteTraffic,
};

use super::{ReadError, ReadStep, WRITE_BUDGET};
use crate::output::{Flushed, OutQueue};

/// Bytes read from the socket per step at most (the loop's plaintext buffer is as large, so
/// what a step decrypts fits it unless a partial record was carried over).
const READ_CHUNK: usize = 64 * 1024;
/// Plaintext encrypted per round before it is written out.
const ENCRYPT_CHUNK: usize = 64 * 1024;
/// The scratch room a round needs: its plaintext plus the overhead of the records one
/// write makes (a write of up to ENCRYPT_CHUNK is at most five records).
const ENCRYPT_ROOM: usize = ENCRYPT_CHUNK + 8 * RECORD_OVERHEAD;
/// Room added for one record's header, padding and tag when encrypting.
const RECORD_OVERHEAD: usize = 64;
/// Queued records up to this size wait to leave with the next reply's ciphertext, in one
/// write (two TLS 1.3 session tickets take about 400 bytes).
const COALESCE_MAX: usize = 4096;
/// Room offered to rustls for an encoded record before it asks for more.
const FIRST_ENCODE_ROOM: usize = 2048;

thread_local! {
    /// The loop thread's ciphertext buffer, shared by all its TLS connections (a read step
    /// or a flush uses it and leaves nothing in it). Its length only grows (zero-filled
    /// once): the bytes in use are tracked by its users, so no step pays for clearing it.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// The scratch buffer, at least `len` long.
fn scratch_at_least(scratch: &mut Vec<u8>, len: usize) {
    if scratch.len() < len {
        scratch.resize(len, 0);
    }
}

/// An accepted endpoint's TLS session.
pub(crate) struct ServerTls {
    conn: UnbufferedServerConnection,
    /// Received ciphertext not processed yet: the start of a record whose end has not
    /// arrived. Empty (no allocation) otherwise.
    incoming: Vec<u8>,
    /// Ciphertext the socket has not taken yet (the handshake's flights are put here too,
    /// for the next flush). Empty (no allocation) otherwise.
    outgoing: Vec<u8>,
    /// Decrypted bytes the caller's buffer could not take in the step that decrypted them.
    plaintext: Vec<u8>,
    /// The socket reported EOF.
    eof: bool,
    /// The peer's close_notify arrived.
    close_notify: bool,
    /// We are closing: `close_notify` goes out once the output queue is drained.
    closing: bool,
    close_sent: bool,
}

impl ServerTls {
    pub(crate) fn new(cfg: Arc<rustls::ServerConfig>) -> Result<ServerTls, rustls::Error> {
        Ok(ServerTls {
            conn: UnbufferedServerConnection::new(cfg)?,
            incoming: Vec::new(),
            outgoing: Vec::new(),
            plaintext: Vec::new(),
            eof: false,
            close_notify: false,
            closing: false,
            close_sent: false,
        })
    }

    pub(crate) fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// The handshake resumed an earlier session (a ticket or session id): no certificate
    /// was signed for it.
    pub(crate) fn resumed(&self) -> bool {
        self.conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed)
    }

    pub(crate) fn wants_write(&self) -> bool {
        !self.outgoing.is_empty()
    }

    pub(crate) fn has_plaintext(&self) -> bool {
        !self.plaintext.is_empty()
    }

    pub(crate) fn close(&mut self) {
        self.closing = true;
    }

    /// Bytes of buffer this connection holds (zero while idle).
    #[cfg(test)]
    pub(crate) fn held(&self) -> usize {
        self.incoming.capacity() + self.outgoing.capacity() + self.plaintext.capacity()
    }

    /// One step: plaintext held back from an earlier step if any, else at most one socket
    /// read, every complete record processed, application bytes into the front of `buf`.
    pub(crate) fn read<S: Read + Write>(
        &mut self,
        stream: &mut S,
        buf: &mut [u8],
    ) -> Result<ReadStep, ReadError> {
        let mut step = ReadStep::default();
        if !self.plaintext.is_empty() {
            step.plain = take_front(&mut self.plaintext, buf);
            step.peer_closed = self.plaintext.is_empty() && (self.eof || self.close_notify);
            return Ok(step);
        }
        if self.eof {
            step.peer_closed = true;
            return Ok(step);
        }
        SCRATCH.with(|cell| {
            let mut scratch = cell.borrow_mut();
            let start = self.incoming.len();
            scratch_at_least(&mut scratch, start + READ_CHUNK);
            scratch[..start].copy_from_slice(&self.incoming);
            let result = stream.read(&mut scratch[start..start + READ_CHUNK]);
            let n = match result {
                Ok(n) => n,
                // Nothing new: what was carried over stays for the next step.
                Err(e) => return Err(ReadError::Io(e)),
            };
            self.incoming = Vec::new();
            step.wire = n;
            // A short read drained the socket: the next edge tells about more (no read
            // that only sees WouldBlock).
            step.drained = n < READ_CHUNK;
            if n == 0 {
                self.eof = true;
                step.eof = true;
            }
            let was_handshaking = self.conn.is_handshaking();
            let processed = self.process(&mut scratch[..start + n], buf, &mut step.plain);
            if let Err(e) = processed {
                // Best effort: the alert rustls queued goes out before the caller drops us.
                let _ = self.write_outgoing(stream, usize::MAX);
                return Err(ReadError::Tls(e));
            }
            step.handshake_done = was_handshaking && !self.conn.is_handshaking();
            step.peer_closed = self.plaintext.is_empty() && (self.eof || self.close_notify);
            Ok(step)
        })
    }

    /// For a handshake step run elsewhere ([`ServerTls::step_away`]): one socket read,
    /// appended to what is carried over. Nothing is processed here.
    pub(crate) fn read_raw<S: Read>(&mut self, stream: &mut S) -> io::Result<ReadStep> {
        debug_assert!(self.conn.is_handshaking() && self.plaintext.is_empty());
        let mut step = ReadStep::default();
        if self.eof {
            step.peer_closed = true;
            return Ok(step);
        }
        SCRATCH.with(|cell| {
            let mut scratch = cell.borrow_mut();
            scratch_at_least(&mut scratch, READ_CHUNK);
            let n = stream.read(&mut scratch[..READ_CHUNK])?;
            self.incoming.extend_from_slice(&scratch[..n]);
            step.wire = n;
            // A short read drained the socket: the next edge tells about more.
            step.drained = n < READ_CHUNK;
            if n == 0 {
                self.eof = true;
                step.eof = true;
                step.peer_closed = true;
            }
            Ok(step)
        })
    }

    /// Runs rustls over the bytes [`ServerTls::read_raw`] gathered, off the loop thread:
    /// the handshake's flights go to `outgoing`, any application data that came along into
    /// the held plaintext. On error the alert is in `outgoing` (see
    /// [`ServerTls::write_pending`]).
    pub(crate) fn step_away(&mut self) -> Result<ReadStep, rustls::Error> {
        let mut incoming = std::mem::take(&mut self.incoming);
        let mut plain = 0;
        let was_handshaking = self.conn.is_handshaking();
        self.process(&mut incoming, &mut [], &mut plain)?;
        debug_assert_eq!(plain, 0, "an empty buffer took plaintext");
        Ok(ReadStep {
            handshake_done: was_handshaking && !self.conn.is_handshaking(),
            peer_closed: self.plaintext.is_empty() && self.close_notify,
            ..ReadStep::default()
        })
    }

    /// Best effort: what is queued (an alert after an error) goes out before the caller
    /// drops the connection.
    pub(crate) fn write_pending<S: Write>(&mut self, stream: &mut S) {
        let _ = self.write_outgoing(stream, usize::MAX);
    }

    /// Processes every complete record in `incoming`: application data into `buf` (its
    /// first `*plain` bytes) and `self.plaintext` beyond, handshake flights and alerts into
    /// `outgoing`. What is left of `incoming` (a partial record) is kept.
    fn process(
        &mut self,
        incoming: &mut [u8],
        buf: &mut [u8],
        plain: &mut usize,
    ) -> Result<(), rustls::Error> {
        let mut offset = 0;
        loop {
            let UnbufferedStatus { mut discard, state } =
                self.conn.process_tls_records(&mut incoming[offset..]);
            let state = match state {
                Ok(state) => state,
                Err(e) => {
                    // The alert (if any) is queued inside rustls: encode it for the caller.
                    offset += discard;
                    self.encode_queued(&mut incoming[offset..]);
                    return Err(e);
                }
            };
            // A record that fails to decrypt: its alert is encoded once the records are
            // let go of.
            let mut failed = None;
            let done = match state {
                ConnectionState::ReadTraffic(mut records) => {
                    failed =
                        deliver_all(&mut records, buf, plain, &mut self.plaintext, &mut discard);
                    false
                }
                // Early data is refused in the configuration; should a client send it
                // anyway, it is the stream's first bytes.
                ConnectionState::ReadEarlyData(mut records) => {
                    failed =
                        deliver_all(&mut records, buf, plain, &mut self.plaintext, &mut discard);
                    false
                }
                ConnectionState::EncodeTlsData(mut data) => {
                    encode_into(&mut self.outgoing, |out| data.encode(out))?;
                    false
                }
                // What was encoded goes out with the next flush, in order.
                ConnectionState::TransmitTlsData(transmit) => {
                    transmit.done();
                    false
                }
                ConnectionState::PeerClosed => {
                    self.close_notify = true;
                    false
                }
                // Waiting for more bytes, or for us to write: this step is done.
                _ => true,
            };
            offset += discard;
            if let Some(e) = failed {
                self.encode_queued(&mut incoming[offset..]);
                return Err(e);
            }
            if done {
                break;
            }
        }
        if offset < incoming.len() {
            self.incoming = incoming[offset..].to_vec();
        }
        Ok(())
    }

    /// Encodes the alert rustls queued after an error, if it did. One call only: asked
    /// again, rustls would process the offending records again. `incoming` is the
    /// unprocessed rest of the records (rustls may still point into it).
    fn encode_queued(&mut self, incoming: &mut [u8]) {
        let UnbufferedStatus { state, .. } = self.conn.process_tls_records(incoming);
        if let Ok(ConnectionState::EncodeTlsData(mut data)) = state {
            let _ = encode_into(&mut self.outgoing, |out| data.encode(out));
        }
    }

    /// Writes `outgoing` until the socket would block or `budget` bytes went out.
    fn write_outgoing<S: Write>(
        &mut self,
        stream: &mut S,
        budget: usize,
    ) -> io::Result<(Flushed, usize)> {
        let mut written = 0;
        while !self.outgoing.is_empty() {
            if written >= budget {
                return Ok((Flushed::Budget, written));
            }
            match stream.write(&self.outgoing) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    written += n;
                    self.outgoing.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Ok((Flushed::Blocked, written));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.outgoing = Vec::new(); // an idle connection holds no buffer
        Ok((Flushed::Drained, written))
    }

    /// Writes what is pending, then encrypts `out` (none while the handshake runs) and
    /// writes it, until the socket would block, the budget is spent or all is out. After
    /// [`ServerTls::close`], `close_notify` goes last once `out` is empty.
    pub(crate) fn flush<S: Write>(
        &mut self,
        stream: &mut S,
        out: &mut OutQueue,
    ) -> io::Result<(Flushed, usize)> {
        let mut written = 0;
        loop {
            // A little ciphertext already waiting (the session tickets rustls queued as the
            // handshake ended, or the short rest of a write that blocked) leaves in the same
            // write as the next reply's: one segment and one system call fewer per new client
            // (tickets and welcome). More than that goes out first, as before, so what waits
            // here stays bounded.
            let coalesce = self.outgoing.len() <= COALESCE_MAX
                && !self.outgoing.is_empty()
                && !self.conn.is_handshaking()
                && !out.is_empty();
            if !coalesce {
                let (state, n) =
                    self.write_outgoing(stream, WRITE_BUDGET.saturating_sub(written))?;
                written += n;
                if state != Flushed::Drained {
                    return Ok((state, written));
                }
            }
            if written >= WRITE_BUDGET {
                return Ok((Flushed::Budget, written));
            }
            if self.conn.is_handshaking() || (out.is_empty() && (!self.closing || self.close_sent))
            {
                return Ok((Flushed::Drained, written));
            }
            let round = SCRATCH.with(|cell| {
                let mut scratch = cell.borrow_mut();
                scratch_at_least(&mut scratch, ENCRYPT_ROOM);
                let (produced, used) = self.encrypt(out, &mut scratch)?;
                let next = match produced {
                    Encrypted::Some => None, // more may follow: go round again
                    Encrypted::Stalled => Some(Flushed::Stalled),
                    Encrypted::Nothing => Some(Flushed::Drained),
                };
                if !self.outgoing.is_empty() {
                    // Coalescing, or a record encrypt() queued on its own: in order, behind it.
                    self.outgoing.extend_from_slice(&scratch[..used]);
                    let (state, n) =
                        self.write_outgoing(stream, WRITE_BUDGET.saturating_sub(written))?;
                    written += n;
                    return Ok(if state == Flushed::Drained {
                        next
                    } else {
                        Some(state)
                    });
                }
                let mut sent = 0;
                while sent < used {
                    match stream.write(&scratch[sent..used]) {
                        Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                        Ok(k) => sent += k,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            // The rest waits with the connection for the next flush.
                            self.outgoing.extend_from_slice(&scratch[sent..used]);
                            written += sent;
                            return Ok(Some(Flushed::Blocked));
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
                written += sent;
                Ok(next)
            })?;
            if let Some(state) = round {
                return Ok((state, written));
            }
        }
    }

    /// Encrypts up to [`ENCRYPT_CHUNK`] of `out` (or the close_notify once it is empty)
    /// into `scratch`; returns what happened and the ciphertext's length there. Records
    /// rustls wants sent on its own (a key update) go to `outgoing`.
    fn encrypt(
        &mut self,
        out: &mut OutQueue,
        scratch: &mut [u8],
    ) -> io::Result<(Encrypted, usize)> {
        // `incoming` is what rustls last saw unprocessed (a partial record at most): it is
        // handed back so that its view of the stream stays whole.
        let UnbufferedStatus { discard, state } =
            self.conn.process_tls_records(&mut self.incoming[..]);
        debug_assert_eq!(discard, 0, "a partial record was processed by a flush");
        let mut used = 0;
        let produced = match state.map_err(io::Error::other)? {
            ConnectionState::WriteTraffic(mut traffic) => {
                if out.is_empty() {
                    used = traffic
                        .queue_close_notify(scratch)
                        .map_err(io::Error::other)?;
                    self.close_sent = true;
                    Encrypted::Some
                } else {
                    let mut sink = Encryptor {
                        traffic: &mut traffic,
                        buf: scratch,
                        used: &mut used,
                    };
                    let (state, _) = out.flush(&mut sink, usize::MAX)?;
                    match state {
                        _ if used > 0 => Encrypted::Some,
                        Flushed::Stalled => Encrypted::Stalled,
                        _ => Encrypted::Nothing,
                    }
                }
            }
            ConnectionState::EncodeTlsData(mut data) => {
                encode_into(&mut self.outgoing, |buf| data.encode(buf))?;
                Encrypted::Some
            }
            ConnectionState::TransmitTlsData(transmit) => {
                transmit.done();
                Encrypted::Some
            }
            // Closed, or a state with records to read first: nothing can be written now.
            _ => Encrypted::Nothing,
        };
        if discard > 0 {
            self.incoming.drain(..discard.min(self.incoming.len()));
        }
        Ok((produced, used))
    }
}

/// What [`ServerTls::encrypt`] did.
enum Encrypted {
    /// Ciphertext was produced.
    Some,
    /// The queue waits for a file block.
    Stalled,
    Nothing,
}

/// The output queue's view of rustls's plaintext side: each write becomes records in
/// `buf` (its first `used` bytes are taken), and a full round is `WouldBlock`, so the
/// queue keeps the rest.
struct Encryptor<'a, 'c> {
    traffic: &'a mut WriteTraffic<'c, ServerConnectionData>,
    buf: &'a mut [u8],
    used: &'a mut usize,
}

impl Write for Encryptor<'_, '_> {
    fn write(&mut self, plain: &[u8]) -> io::Result<usize> {
        let take = plain.len().min(ENCRYPT_CHUNK.saturating_sub(*self.used));
        if take == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        // `buf` holds ENCRYPT_CHUNK plus one write's record overheads: this always fits.
        match self
            .traffic
            .encrypt(&plain[..take], &mut self.buf[*self.used..])
        {
            Ok(n) => {
                *self.used += n;
                Ok(take)
            }
            Err(EncryptError::InsufficientSize(_)) if *self.used > 0 => {
                Err(io::ErrorKind::WouldBlock.into())
            }
            Err(e) => Err(io::Error::other(e)),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// An error of rustls's encoders that asks for more room.
trait NeedsRoom: Sized + std::error::Error + Send + Sync + 'static {
    fn needs(&self) -> Option<InsufficientSizeError>;
}

impl NeedsRoom for EncodeError {
    fn needs(&self) -> Option<InsufficientSizeError> {
        match self {
            EncodeError::InsufficientSize(is) => Some(*is),
            _ => None,
        }
    }
}

impl NeedsRoom for EncryptError {
    fn needs(&self) -> Option<InsufficientSizeError> {
        match self {
            EncryptError::InsufficientSize(is) => Some(*is),
            _ => None,
        }
    }
}

/// Appends what `encode` writes to `out`, growing it when rustls asks for more room.
fn encode_into<E: NeedsRoom>(
    out: &mut Vec<u8>,
    mut encode: impl FnMut(&mut [u8]) -> Result<usize, E>,
) -> Result<(), EncodeFailed> {
    let start = out.len();
    // Most records rustls encodes here (handshake messages, alerts) are small; a larger
    // one says how much room it needs and is encoded again.
    out.resize(start + FIRST_ENCODE_ROOM, 0);
    let n = match encode(&mut out[start..]) {
        Ok(n) => n,
        Err(e) => match e.needs() {
            Some(InsufficientSizeError { required_size }) => {
                out.resize(start + required_size, 0);
                match encode(&mut out[start..]) {
                    Ok(n) => n,
                    Err(e) => {
                        out.truncate(start);
                        return Err(EncodeFailed(Box::new(e)));
                    }
                }
            }
            None => {
                out.truncate(start);
                return Err(EncodeFailed(Box::new(e)));
            }
        },
    };
    out.truncate(start + n);
    Ok(())
}

/// rustls could not encode a record (not for want of room).
#[derive(Debug)]
struct EncodeFailed(Box<dyn std::error::Error + Send + Sync>);

impl From<EncodeFailed> for io::Error {
    fn from(e: EncodeFailed) -> io::Error {
        io::Error::other(e.0)
    }
}

impl From<EncodeFailed> for rustls::Error {
    fn from(e: EncodeFailed) -> rustls::Error {
        rustls::Error::General(e.0.to_string())
    }
}

/// Hands out one decrypted record: into `buf` after its first `*plain` bytes, the rest
/// into `held`. Returns the bytes of the incoming buffer it lets go of.
/// Decrypted application-data records, whether they came as traffic or as early data.
trait Records {
    fn next(&mut self) -> Option<Result<AppDataRecord<'_>, rustls::Error>>;
}

impl Records for ReadTraffic<'_, '_, ServerConnectionData> {
    fn next(&mut self) -> Option<Result<AppDataRecord<'_>, rustls::Error>> {
        self.next_record()
    }
}

impl Records for ReadEarlyData<'_, '_, ServerConnectionData> {
    fn next(&mut self) -> Option<Result<AppDataRecord<'_>, rustls::Error>> {
        self.next_record()
    }
}

/// Delivers every record (see [`deliver`]), adding what each lets go of to `discard`; the
/// first record that fails to decrypt stops it and is returned.
fn deliver_all(
    records: &mut impl Records,
    buf: &mut [u8],
    plain: &mut usize,
    held: &mut Vec<u8>,
    discard: &mut usize,
) -> Option<rustls::Error> {
    while let Some(record) = records.next() {
        match record {
            Ok(r) => *discard += deliver(r, buf, plain, held),
            Err(e) => return Some(e),
        }
    }
    None
}

fn deliver(
    record: AppDataRecord<'_>,
    buf: &mut [u8],
    plain: &mut usize,
    held: &mut Vec<u8>,
) -> usize {
    let room = buf.len() - *plain;
    let now = record.payload.len().min(room);
    buf[*plain..*plain + now].copy_from_slice(&record.payload[..now]);
    *plain += now;
    held.extend_from_slice(&record.payload[now..]);
    record.discard
}

/// Moves the front of `from` into `to`; returns how many bytes moved.
fn take_front(from: &mut Vec<u8>, to: &mut [u8]) -> usize {
    let n = from.len().min(to.len());
    to[..n].copy_from_slice(&from[..n]);
    from.drain(..n);
    if from.is_empty() {
        *from = Vec::new();
    }
    n
}
