//! The per-connection output queue.
//!
//! Replies are appended as owned bytes (small ones coalesce into one buffer, so a burst of
//! replies becomes one write), broadcasts as shared `Arc<[u8]>` chunks encoded once for every
//! member, and files as lazily read chunks so a large file is streamed, never held whole.
//! An empty queue holds no allocation.
//!
//! A file's blocks are never read here: when the front is a file chunk whose block has gone
//! out, [`OutQueue::flush`] stops with [`Flushed::Stalled`], the loop takes a [`BlockRead`]
//! (the file and a buffer) to a reader thread, and gives the result back with
//! [`OutQueue::block_read`]. A slow disk delays that connection's file, never the loop.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, IoSlice, Read, Write};
use std::sync::Arc;

/// Owned chunks smaller than this take further small replies (one write for a burst).
const COALESCE_BYTES: usize = 16 * 1024;
/// A file is read this much at a time.
const FILE_BLOCK: usize = 64 * 1024;
/// Chunks gathered into one vectored write.
const MAX_IOVECS: usize = 64;

enum Chunk {
    Owned(Vec<u8>),
    Shared(Arc<[u8]>),
    File(FileChunk),
}

struct FileChunk {
    /// `None` while a reader thread holds it for the next block.
    file: Option<File>,
    /// Bytes of the file not read yet.
    remaining: u64,
    /// The block being written (empty until this chunk reaches the front).
    block: Vec<u8>,
    /// The next block, read while `block` is written (so the socket need not wait for the
    /// reader after each block).
    ahead: Option<Vec<u8>>,
}

impl FileChunk {
    /// Bytes of this file still to come after the current block.
    fn more(&self) -> bool {
        self.remaining > 0 || self.ahead.is_some()
    }
}

/// The next block of the file at the front of a queue, to be read off the loop
/// ([`BlockRead::run`] on a reader thread).
#[derive(Debug)]
pub struct BlockRead {
    file: File,
    want: usize,
    buf: Vec<u8>,
}

/// A block read by [`BlockRead::run`], for [`OutQueue::block_read`].
#[derive(Debug)]
pub struct BlockDone {
    file: File,
    block: io::Result<Vec<u8>>,
}

impl BlockRead {
    /// Reads up to one block (blocking: run it on a reader thread, never on the loop).
    pub fn run(self) -> BlockDone {
        let BlockRead {
            mut file,
            want,
            mut buf,
        } = self;
        buf.resize(want, 0);
        let block = loop {
            match file.read(&mut buf) {
                Ok(n) => {
                    buf.truncate(n);
                    break Ok(buf);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        BlockDone { file, block }
    }
}

impl Chunk {
    /// The in-memory bytes of this chunk.
    fn bytes(&self) -> &[u8] {
        match self {
            Chunk::Owned(v) => v,
            Chunk::Shared(a) => a,
            Chunk::File(f) => &f.block,
        }
    }
}

/// Result of a flush attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flushed {
    /// Everything was written.
    Drained,
    /// The socket would block: wait for WRITABLE.
    Blocked,
    /// The per-turn byte budget ran out: continue next turn.
    Budget,
    /// The front is a file whose next block must be read first ([`OutQueue::take_block_read`]).
    Stalled,
}

/// What the front of the queue holds.
enum Front {
    Empty,
    Ready,
    /// A file chunk whose next block has not been read.
    NeedsBlock,
}

/// Outcome of queueing output, for the loop to enforce its limits.
#[derive(Debug, Default)]
pub struct OutQueue {
    chunks: VecDeque<Chunk>,
    /// Bytes of the front chunk already written.
    head: usize,
    /// In-memory bytes queued and not yet written (unread file bytes are not counted).
    queued: usize,
    /// File chunks queued (each holds an open file descriptor).
    files: usize,
}

impl std::fmt::Debug for Chunk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Chunk::Owned(v) => write!(f, "Owned({})", v.len()),
            Chunk::Shared(a) => write!(f, "Shared({})", a.len()),
            Chunk::File(c) => write!(f, "File({} left)", c.remaining),
        }
    }
}

impl OutQueue {
    /// In-memory bytes waiting to be written.
    pub fn queued(&self) -> usize {
        self.queued
    }

    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// Files queued and not yet completely written.
    pub fn files(&self) -> usize {
        self.files
    }

    /// Appends a copy of `bytes`.
    pub fn push_bytes(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        self.queued += bytes.len();
        if let Some(Chunk::Owned(last)) = self.chunks.back_mut()
            && last.len() < COALESCE_BYTES
        {
            last.extend_from_slice(bytes);
            return;
        }
        self.chunks.push_back(Chunk::Owned(bytes.to_vec()));
    }

    /// Appends an owned buffer without copying it, unless it is small enough to join the
    /// small chunk already at the back (a reply to a lone request becomes the queue's chunk
    /// as it is: no second allocation, no copy).
    pub fn push_owned(&mut self, bytes: Vec<u8>) {
        if bytes.is_empty() {
            return;
        }
        if bytes.len() < COALESCE_BYTES
            && let Some(Chunk::Owned(last)) = self.chunks.back_mut()
            && last.len() < COALESCE_BYTES
        {
            self.queued += bytes.len();
            last.extend_from_slice(&bytes);
            return;
        }
        self.queued += bytes.len();
        self.chunks.push_back(Chunk::Owned(bytes));
    }

    /// Appends a shared chunk (a broadcast encoded once).
    pub fn push_shared(&mut self, bytes: Arc<[u8]>) {
        if bytes.is_empty() {
            return;
        }
        self.queued += bytes.len();
        self.chunks.push_back(Chunk::Shared(bytes));
    }

    /// Appends `len` bytes of `file`, read block by block as the socket drains.
    pub fn push_file(&mut self, file: File, len: u64) {
        if len == 0 {
            return;
        }
        self.files += 1;
        self.chunks.push_back(Chunk::File(FileChunk {
            file: Some(file),
            remaining: len,
            block: Vec::new(),
            ahead: None,
        }));
    }

    /// The read of the front file chunk's next block, if one is due and nobody is doing it:
    /// its first block, or the one after the block being written (read ahead). The file
    /// travels with it and comes back in [`OutQueue::block_read`]. At most one block waits
    /// in memory ahead of the one being written.
    pub fn take_block_read(&mut self) -> Option<BlockRead> {
        match self.chunks.front_mut() {
            Some(Chunk::File(f)) if f.remaining > 0 && f.ahead.is_none() => {
                let file = f.file.take()?;
                let want = FILE_BLOCK.min(usize::try_from(f.remaining).unwrap_or(FILE_BLOCK));
                Some(BlockRead {
                    file,
                    want,
                    buf: Vec::new(),
                })
            }
            _ => None,
        }
    }

    /// Takes a read block: it becomes the block being written if that one has gone out,
    /// else the block ahead. An error, or a file that ended early (it shrank while being
    /// served), cannot be completed: the caller closes the connection.
    pub fn block_read(&mut self, done: BlockDone) -> io::Result<()> {
        let head = self.head;
        let Some(Chunk::File(f)) = self.chunks.front_mut() else {
            debug_assert!(
                false,
                "a block came back for a queue without a file in front"
            );
            return Err(io::Error::other("file block for an unexpected queue"));
        };
        debug_assert!(
            f.file.is_none(),
            "a block came back for a file not being read"
        );
        debug_assert!(f.ahead.is_none(), "a block read while one waits ahead");
        f.file = Some(done.file);
        let block = done.block?;
        if block.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "file shrank while being sent",
            ));
        }
        let n = block.len();
        f.remaining = f.remaining.saturating_sub(n as u64);
        if head == f.block.len() {
            f.block = block;
            self.head = 0;
            self.queued += n;
        } else {
            f.ahead = Some(block);
        }
        Ok(())
    }

    /// Drops everything queued.
    pub fn clear(&mut self) {
        *self = OutQueue::default();
    }

    /// Writes as much as the socket takes, up to `budget` bytes.
    pub fn flush<W: Write>(&mut self, w: &mut W, budget: usize) -> io::Result<(Flushed, usize)> {
        let mut written = 0;
        loop {
            if written >= budget {
                return Ok((Flushed::Budget, written));
            }
            match self.load_front() {
                Front::Empty => {
                    self.release();
                    return Ok((Flushed::Drained, written));
                }
                Front::NeedsBlock => return Ok((Flushed::Stalled, written)),
                Front::Ready => {}
            }
            let mut slices: [IoSlice<'_>; MAX_IOVECS] = [IoSlice::new(&[]); MAX_IOVECS];
            let mut n_slices = 0;
            for (i, chunk) in self.chunks.iter().enumerate() {
                // A file block is loaded only at the front, and nothing may follow a block
                // before the rest of its file: a file chunk ends the gathering.
                if (i > 0 && matches!(chunk, Chunk::File(_))) || n_slices == MAX_IOVECS {
                    break;
                }
                let bytes = if i == 0 {
                    &chunk.bytes()[self.head..]
                } else {
                    chunk.bytes()
                };
                slices[n_slices] = IoSlice::new(bytes);
                n_slices += 1;
                if matches!(chunk, Chunk::File(f) if f.more()) {
                    break;
                }
            }
            let res = if n_slices == 1 {
                w.write(&slices[0])
            } else {
                w.write_vectored(&slices[..n_slices])
            };
            match res {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    written += n;
                    self.advance(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Ok((Flushed::Blocked, written));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Drops finished chunks and says whether the front has bytes to write.
    fn load_front(&mut self) -> Front {
        loop {
            let Some(front) = self.chunks.front_mut() else {
                return Front::Empty;
            };
            match front {
                Chunk::File(f) if self.head == f.block.len() => {
                    if let Some(next) = f.ahead.take() {
                        self.queued += next.len();
                        f.block = next;
                        self.head = 0;
                        return Front::Ready;
                    }
                    if f.remaining == 0 {
                        self.pop_front();
                        continue;
                    }
                    return Front::NeedsBlock;
                }
                _ if self.head == front.bytes().len() => self.pop_front(),
                _ => return Front::Ready,
            }
        }
    }

    fn pop_front(&mut self) {
        if let Some(Chunk::File(_)) = self.chunks.pop_front() {
            self.files -= 1;
        }
        self.head = 0;
    }

    /// Consumes `n` written bytes from the front.
    fn advance(&mut self, mut n: usize) {
        debug_assert!(n <= self.queued);
        self.queued -= n;
        while n > 0 {
            let Some(front) = self.chunks.front() else {
                debug_assert!(false, "advanced past the end of the queue");
                return;
            };
            let left = front.bytes().len() - self.head;
            if n < left {
                self.head += n;
                return;
            }
            n -= left;
            match front {
                // A file chunk stays until all of it was read and written.
                Chunk::File(f) if f.more() => self.head = f.block.len(),
                _ => self.pop_front(),
            }
        }
    }

    /// Releases the queue's allocation once it is empty (idle connections hold no buffers).
    fn release(&mut self) {
        debug_assert!(self.chunks.is_empty() && self.queued == 0 && self.files == 0);
        if self.chunks.capacity() > 0 {
            self.chunks = VecDeque::new();
        }
        self.head = 0;
    }
}

#[cfg(test)]
mod tests;
