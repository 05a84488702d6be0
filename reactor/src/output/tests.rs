//! The output queue's unit tests: order across short and vectored writes, coalescing of
//! small replies, errors, and file blocks read off the loop and handed out once.

use super::*;

/// Flushes, doing each file block read inline (as the loop's reader threads would).
fn flush_reading<W: Write>(
    q: &mut OutQueue,
    w: &mut W,
    budget: usize,
) -> io::Result<(Flushed, usize)> {
    loop {
        let (state, n) = q.flush(w, budget)?;
        if state != Flushed::Stalled {
            return Ok((state, n));
        }
        let read = q
            .take_block_read()
            .expect("a stalled queue has a read to do");
        // While the block is out being read, the queue waits (and holds together).
        assert_eq!(q.flush(w, budget)?.0, Flushed::Stalled);
        assert!(q.take_block_read().is_none(), "one read at a time");
        q.block_read(read.run())?;
    }
}

/// A writer that accepts at most `cap` bytes per call and `limit` bytes in all.
struct Trickle {
    got: Vec<u8>,
    cap: usize,
    limit: usize,
}

impl Write for Trickle {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = self.limit - self.got.len();
        if room == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = buf.len().min(self.cap).min(room);
        self.got.extend_from_slice(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn mixed_chunks_arrive_in_order_across_short_writes() {
    let dir = std::env::temp_dir().join(format!("aw-out-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp dir");
    let path = dir.join("f.bin");
    let content: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&path, &content).expect("write file");

    let mut q = OutQueue::default();
    q.push_bytes(b"one ");
    q.push_shared(Arc::from(&b"two "[..]));
    q.push_file(File::open(&path).expect("open"), content.len() as u64);
    q.push_bytes(b" three");
    let mut expected = b"one two ".to_vec();
    expected.extend_from_slice(&content);
    expected.extend_from_slice(b" three");

    let mut w = Trickle {
        got: Vec::new(),
        cap: 7777,
        limit: 50_000,
    };
    let (state, _) = flush_reading(&mut q, &mut w, usize::MAX).expect("flush");
    assert_eq!(state, Flushed::Blocked);
    assert!(q.queued() <= FILE_BLOCK, "file is streamed, not buffered");
    w.limit = usize::MAX;
    let (state, _) = flush_reading(&mut q, &mut w, 1000).expect("flush");
    assert_eq!(state, Flushed::Budget);
    let (state, _) = flush_reading(&mut q, &mut w, usize::MAX).expect("flush");
    assert_eq!(state, Flushed::Drained);
    assert_eq!(w.got, expected);
    assert_eq!(q.queued(), 0);
    assert_eq!(q.files(), 0);
    assert_eq!(q.chunks.capacity(), 0, "empty queue holds no allocation");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn replies_coalesce_up_to_sixteen_kib_and_the_queue_describes_itself() {
    let mut q = OutQueue::default();
    q.push_bytes(&[b'a'; 8 * 1024]);
    q.push_bytes(&[b'b'; 8 * 1024 - 1]);
    assert_eq!(q.chunks.len(), 1, "under 16 KiB: one buffer");
    q.push_bytes(b"c");
    q.push_bytes(b"d");
    assert_eq!(q.chunks.len(), 2, "a full buffer takes no more");
    q.push_shared(Arc::from(&b"xyz"[..]));
    assert_eq!(
        format!("{:?}", q.chunks),
        "[Owned(16384), Owned(1), Shared(3)]"
    );
}

/// A writer that fails once with `first`, then takes everything.
struct FailOnce {
    first: Option<io::ErrorKind>,
    got: Vec<u8>,
}

impl Write for FailOnce {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(kind) = self.first.take() {
            return Err(kind.into());
        }
        self.got.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn flush_retries_interrupts_and_reports_other_errors() {
    let mut q = OutQueue::default();
    q.push_bytes(b"hello");
    let mut w = FailOnce {
        first: Some(io::ErrorKind::Interrupted),
        got: Vec::new(),
    };
    assert_eq!(
        q.flush(&mut w, usize::MAX).expect("flush").0,
        Flushed::Drained
    );
    assert_eq!(w.got, b"hello");
    q.push_bytes(b"again");
    let mut w = FailOnce {
        first: Some(io::ErrorKind::BrokenPipe),
        got: Vec::new(),
    };
    let err = q
        .flush(&mut w, usize::MAX)
        .expect_err("a broken pipe is an error");
    assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
    assert_eq!(q.queued(), 5, "nothing was lost");
}

#[test]
fn more_chunks_than_one_vectored_write_holds_arrive_in_order() {
    let mut q = OutQueue::default();
    let mut expected = Vec::new();
    for i in 0..200u8 {
        let chunk = vec![i; 3];
        expected.extend_from_slice(&chunk);
        q.push_shared(Arc::from(chunk));
    }
    let mut w = FailOnce {
        first: None,
        got: Vec::new(),
    };
    assert_eq!(
        q.flush(&mut w, usize::MAX).expect("flush").0,
        Flushed::Drained
    );
    assert_eq!(w.got, expected);
}

#[test]
fn owned_buffers_count_files_and_clear() {
    let mut q = OutQueue::default();
    let first = vec![b'a'; 100];
    let at = first.as_ptr();
    q.push_owned(first);
    assert!(
        matches!(q.chunks.back(), Some(Chunk::Owned(v)) if v.as_ptr() == at),
        "a lone small buffer is queued as it is, not copied"
    );
    q.push_owned(Vec::new());
    assert_eq!(q.chunks.len(), 1, "an empty buffer queues nothing");
    q.push_owned(vec![b'b'; 100]);
    assert_eq!(q.chunks.len(), 1, "small owned buffers coalesce");
    q.push_owned(vec![b'c'; 20 * 1024]);
    assert_eq!(q.chunks.len(), 2, "a large one is queued as it is");
    q.push_owned(vec![b'd'; 10]);
    assert_eq!(q.chunks.len(), 3, "nothing is appended to a large buffer");
    q.push_owned(vec![b'e'; COALESCE_BYTES]);
    assert_eq!(q.chunks.len(), 4, "16 KiB and more is never copied");
    let file = std::fs::File::open("/proc/self/status").expect("a readable file");
    q.push_file(file, 10);
    assert_eq!(q.files(), 1);
    assert_eq!(q.queued(), 200 + 20 * 1024 + 10 + COALESCE_BYTES);
    q.clear();
    assert!(q.is_empty());
    assert_eq!((q.queued(), q.files()), (0, 0));
}

#[test]
fn a_file_is_read_in_blocks_of_sixty_four_kib() {
    let dir = std::env::temp_dir().join(format!("aw-block-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp dir");
    let path = dir.join("f.bin");
    std::fs::write(&path, vec![7u8; 200_000]).expect("write file");
    let mut q = OutQueue::default();
    q.push_file(File::open(&path).expect("open"), 200_000);
    let mut w = Trickle {
        got: Vec::new(),
        cap: 10,
        limit: 10,
    };
    assert_eq!(
        flush_reading(&mut q, &mut w, usize::MAX).expect("flush").0,
        Flushed::Blocked
    );
    assert_eq!(
        q.queued(),
        64 * 1024 - 10,
        "one block in memory, minus what went out"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_file_block_is_never_read_by_flush_but_handed_out_once() {
    let dir = std::env::temp_dir().join(format!("aw-stall-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp dir");
    let path = dir.join("f.bin");
    std::fs::write(&path, b"file body").expect("write file");
    let mut q = OutQueue::default();
    q.push_bytes(b"before ");
    q.push_file(File::open(&path).expect("open"), 9);
    q.push_bytes(b" after");
    let mut w = FailOnce {
        first: None,
        got: Vec::new(),
    };
    assert_eq!(
        q.flush(&mut w, usize::MAX).expect("flush").0,
        Flushed::Stalled
    );
    assert_eq!(w.got, b"before ", "what precedes the file goes out");
    let read = q.take_block_read().expect("the block to read");
    assert!(q.take_block_read().is_none(), "one read at a time");
    assert_eq!(
        q.flush(&mut w, usize::MAX).expect("flush").0,
        Flushed::Stalled,
        "still waiting: nothing after the file jumps ahead"
    );
    q.block_read(read.run()).expect("block");
    assert_eq!(
        q.flush(&mut w, usize::MAX).expect("flush").0,
        Flushed::Drained
    );
    assert_eq!(w.got, b"before file body after");
    // A file that turns out shorter than announced cannot be completed.
    q.push_file(File::open(&path).expect("open"), 20);
    assert_eq!(
        q.flush(&mut w, usize::MAX).expect("flush").0,
        Flushed::Stalled
    );
    let read = q.take_block_read().expect("read");
    q.block_read(read.run()).expect("the 9 bytes there are");
    assert_eq!(
        q.flush(&mut w, usize::MAX).expect("flush").0,
        Flushed::Stalled
    );
    let read = q.take_block_read().expect("read");
    let err = q.block_read(read.run()).expect_err("the file ended early");
    assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn the_next_block_is_read_while_one_is_written() {
    let dir = std::env::temp_dir().join(format!("aw-ahead-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp dir");
    let path = dir.join("f.bin");
    let content: Vec<u8> = (0..(2 * FILE_BLOCK + 100) as u32)
        .map(|i| (i % 241) as u8)
        .collect();
    std::fs::write(&path, &content).expect("write file");
    let mut q = OutQueue::default();
    q.push_file(File::open(&path).expect("open"), content.len() as u64);
    let mut w = Trickle {
        got: Vec::new(),
        cap: usize::MAX,
        limit: 1000,
    };
    assert_eq!(
        q.flush(&mut w, usize::MAX).expect("flush").0,
        Flushed::Stalled
    );
    let first = q.take_block_read().expect("the first block");
    q.block_read(first.run()).expect("first");
    assert_eq!(
        q.flush(&mut w, usize::MAX).expect("flush").0,
        Flushed::Blocked
    );
    // Block one is being written: block two is read meanwhile, and no third yet.
    let second = q.take_block_read().expect("read ahead");
    q.block_read(second.run()).expect("second");
    assert!(q.take_block_read().is_none(), "one block ahead at most");
    assert_eq!(
        q.queued(),
        FILE_BLOCK - 1000,
        "the block ahead is not counted yet"
    );
    w.limit = usize::MAX;
    // Block one goes out, block two follows without waiting; then the third is due.
    assert_eq!(
        q.flush(&mut w, usize::MAX).expect("flush").0,
        Flushed::Stalled
    );
    assert_eq!(w.got.len(), 2 * FILE_BLOCK);
    let third = q.take_block_read().expect("the last block");
    q.block_read(third.run()).expect("third");
    assert_eq!(
        q.flush(&mut w, usize::MAX).expect("flush").0,
        Flushed::Drained
    );
    assert!(w.got == content, "every byte, in order");
    assert_eq!((q.queued(), q.files()), (0, 0));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn small_replies_coalesce() {
    let mut q = OutQueue::default();
    for _ in 0..100 {
        q.push_bytes(b"{\"status\":\"OK\"}\r\n");
    }
    assert_eq!(q.chunks.len(), 1);
    assert_eq!(q.queued(), 1700);
}
