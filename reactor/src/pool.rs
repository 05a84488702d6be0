//! The worker pool: std threads that run jobs off the loop thread.
//!
//! Jobs go out through an MPMC channel; results come back through one mutex-guarded vector
//! and the loop's `mio::Waker`. A worker wakes the loop only when it finds the vector empty,
//! so a burst of completions costs one wake-up and is drained in one pass. A panicking job is
//! caught and reported as [`JobPanic`]; the worker lives on.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

use crossbeam_channel::{Receiver, Sender};
use mio::Waker;

use crate::conn::ConnId;

/// A job panicked; `message` is the panic payload when it was a string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobPanic {
    pub message: String,
}

pub(crate) type Done<C> = (ConnId, Result<C, JobPanic>);

struct Job<C> {
    conn: ConnId,
    run: Box<dyn FnOnce() -> C + Send>,
}

/// What workers and the loop share.
pub(crate) struct Shared<C> {
    done: Mutex<Vec<Done<C>>>,
    waker: Arc<Waker>,
    /// Jobs queued or running.
    pub(crate) in_flight: AtomicUsize,
}

impl<C> Shared<C> {
    /// Takes every completion that arrived, in completion order.
    pub(crate) fn drain(&self, into: &mut Vec<Done<C>>) {
        let mut done = self.done.lock().unwrap_or_else(|p| p.into_inner());
        std::mem::swap(&mut *done, into);
    }
}

/// A fixed set of worker threads.
pub(crate) struct Pool<C> {
    tx: Sender<Job<C>>,
    pub(crate) shared: Arc<Shared<C>>,
}

impl<C: Send + 'static> Pool<C> {
    pub(crate) fn new(threads: usize, waker: Arc<Waker>) -> std::io::Result<Pool<C>> {
        debug_assert!(threads > 0);
        let (tx, rx) = crossbeam_channel::unbounded::<Job<C>>();
        let shared = Arc::new(Shared {
            done: Mutex::new(Vec::new()),
            waker,
            in_flight: AtomicUsize::new(0),
        });
        for i in 0..threads {
            let rx = rx.clone();
            let shared = Arc::clone(&shared);
            thread::Builder::new()
                .name(format!("actionwire-worker-{i}"))
                .spawn(move || worker(rx, shared))?;
        }
        Ok(Pool { tx, shared })
    }

    pub(crate) fn spawn(&self, conn: ConnId, run: Box<dyn FnOnce() -> C + Send>) {
        self.shared.in_flight.fetch_add(1, Ordering::Relaxed);
        if self.tx.send(Job { conn, run }).is_err() {
            // Only possible if every worker died, which catch_unwind prevents.
            self.shared.in_flight.fetch_sub(1, Ordering::Relaxed);
            log::error!("worker pool is gone; job for {conn:?} dropped");
        }
    }
}

fn worker<C>(rx: Receiver<Job<C>>, shared: Arc<Shared<C>>) {
    // Ends when the pool (the loop) drops its sender.
    while let Ok(job) = rx.recv() {
        let result = catch_unwind(AssertUnwindSafe(job.run)).map_err(|payload| JobPanic {
            message: payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "non-string panic payload".into()),
        });
        shared.in_flight.fetch_sub(1, Ordering::Relaxed);
        let was_empty = {
            let mut done = shared.done.lock().unwrap_or_else(|p| p.into_inner());
            done.push((job.conn, result));
            done.len() == 1
        };
        if was_empty && let Err(e) = shared.waker.wake() {
            log::error!("cannot wake the event loop: {e}");
        }
    }
}
