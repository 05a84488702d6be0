//! The worker pool: std threads that run jobs off the loop thread.
//!
//! Hand-offs are batched both ways, because a thread wake-up costs more than a small action:
//! - out: jobs created during a loop turn are collected without locking and handed over once
//!   per turn (`Pool::dispatch`) under one lock, waking at most one sleeping worker per job;
//!   a worker takes its share of the queue at once;
//! - back: results go into one mutex-guarded vector, and a worker wakes the loop (the
//!   `mio::Waker`) only when it finds that vector empty, so a burst costs one wake-up.
//!
//! A panicking job is caught and reported as `JobPanic`; the worker lives on.
//!
//! A pool's threads run at the process's priority, or as `Priority::Background`: the
//! lowest nice value under the normal policy, so that the loop thread preempts them the
//! moment it has work (the TLS handshake pool: a storm of new clients' key exchanges must
//! not delay established clients' replies) while they still progress on a busy core.

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;

use mio::Waker;

use crate::endpoint::ConnId;

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

struct Queue<C> {
    jobs: VecDeque<Job<C>>,
    /// Workers waiting on the condition variable.
    sleeping: usize,
    closed: bool,
}

/// What workers and the loop share.
pub(crate) struct Shared<C> {
    queue: Mutex<Queue<C>>,
    work: Condvar,
    done: Mutex<Vec<Done<C>>>,
    waker: Arc<Waker>,
    workers: usize,
    /// A background pool's worker takes each job alone and delivers its result when it
    /// finishes (a job is long next to a wake-up, and the loop can act on each at once).
    priority: Priority,
    /// Jobs queued or running.
    pub(crate) in_flight: AtomicUsize,
}

/// A poisoned lock only means another thread panicked while holding it; every update here is
/// a single push or pop, so the data is still consistent.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl<C> Shared<C> {
    /// Takes every completion that arrived, in completion order.
    pub(crate) fn drain(&self, into: &mut Vec<Done<C>>) {
        std::mem::swap(&mut *lock(&self.done), into);
    }

    /// Adds completions; wakes the loop when it finds none waiting (a burst costs one
    /// wake-up).
    fn deliver(&self, results: &mut Vec<Done<C>>) {
        let was_empty = {
            let mut done = lock(&self.done);
            let was_empty = done.is_empty();
            done.append(results);
            was_empty
        };
        if was_empty && let Err(e) = self.waker.wake() {
            log::error!("cannot wake the event loop: {e}");
        }
    }
}

/// Hands a completion to an endpoint from any thread, as a finished job does: the loop
/// passes it to [`Handler::on_completion`](crate::Handler::on_completion) if the endpoint
/// is still open (matched by generation), and drops it otherwise. For work that finishes
/// outside the worker pool (another thread, a callback); cheap to clone. Completions are
/// not bounded here: each answers one piece of work the application started, so the
/// application bounds them.
pub struct Completer<C> {
    shared: Arc<Shared<C>>,
}

impl<C> Clone for Completer<C> {
    fn clone(&self) -> Self {
        Completer {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<C> std::fmt::Debug for Completer<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Completer").finish_non_exhaustive()
    }
}

impl<C> Completer<C> {
    pub(crate) fn new(shared: Arc<Shared<C>>) -> Completer<C> {
        Completer { shared }
    }

    /// Delivers `payload` to `id`'s `on_completion`.
    pub fn complete(&self, id: ConnId, payload: C) {
        self.shared.deliver(&mut vec![(id, Ok(payload))]);
    }
}

/// How a pool's threads are scheduled against the loop thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Priority {
    /// As the process (the loop thread waits for their results).
    Normal,
    /// Nice 19 under the normal policy, even when the process runs under a real-time one
    /// (`chrt`): the loop thread preempts them on wake-up. Each job's result is delivered
    /// as soon as it finishes.
    Background,
}

/// Lowers the calling thread to [`Priority::Background`].
fn lower_priority() -> std::io::Result<()> {
    let normal = libc::sched_param { sched_priority: 0 };
    // SAFETY: plain system calls on the calling thread (0 names it, for both on Linux: the
    // policy and the nice value are per thread), with a valid parameter block.
    unsafe {
        if libc::sched_setscheduler(0, libc::SCHED_OTHER, &normal) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if libc::setpriority(libc::PRIO_PROCESS, 0, 19) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// A fixed set of worker threads.
pub(crate) struct Pool<C> {
    pub(crate) shared: Arc<Shared<C>>,
    /// Jobs created this loop turn, not handed over yet.
    pending: Vec<Job<C>>,
}

impl<C: Send + 'static> Pool<C> {
    /// `threads` threads named `<name>-<i>`.
    pub(crate) fn new(threads: usize, name: &str, waker: Arc<Waker>) -> std::io::Result<Pool<C>> {
        Pool::with_priority(threads, name, waker, Priority::Normal)
    }

    /// As [`Pool::new`], its threads scheduled as `priority` says.
    pub(crate) fn with_priority(
        threads: usize,
        name: &str,
        waker: Arc<Waker>,
        priority: Priority,
    ) -> std::io::Result<Pool<C>> {
        debug_assert!(threads > 0);
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                jobs: VecDeque::new(),
                sleeping: 0,
                closed: false,
            }),
            work: Condvar::new(),
            done: Mutex::new(Vec::new()),
            waker,
            workers: threads,
            priority,
            in_flight: AtomicUsize::new(0),
        });
        for i in 0..threads {
            let shared = Arc::clone(&shared);
            thread::Builder::new()
                .name(format!("{name}-{i}"))
                .spawn(move || {
                    if priority == Priority::Background
                        && let Err(e) = lower_priority()
                    {
                        log::warn!("a background thread keeps the process's priority: {e}");
                    }
                    worker(&shared)
                })?;
        }
        Ok(Pool {
            shared,
            pending: Vec::new(),
        })
    }

    /// Queues a job; it starts at the next [`Pool::dispatch`] (the end of this loop turn).
    pub(crate) fn spawn(&mut self, conn: ConnId, run: Box<dyn FnOnce() -> C + Send>) {
        self.shared.in_flight.fetch_add(1, Ordering::Relaxed);
        self.pending.push(Job { conn, run });
    }

    /// Hands this turn's jobs to the workers: one lock, at most one wake-up per job.
    pub(crate) fn dispatch(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let n = self.pending.len();
        let wake = {
            let mut q = lock(&self.shared.queue);
            q.jobs.extend(self.pending.drain(..));
            q.sleeping.min(n)
        };
        if wake >= self.shared.workers {
            self.shared.work.notify_all();
        } else {
            for _ in 0..wake {
                self.shared.work.notify_one();
            }
        }
    }
}

impl<C> Drop for Pool<C> {
    fn drop(&mut self) {
        // Workers finish what they hold and exit; a job that never returns keeps its thread,
        // which the process exit ends.
        lock(&self.shared.queue).closed = true;
        self.shared.work.notify_all();
    }
}

fn worker<C>(shared: &Shared<C>) {
    let mut batch: Vec<Job<C>> = Vec::new();
    let mut results: Vec<Done<C>> = Vec::new();
    loop {
        {
            let mut q = lock(&shared.queue);
            while q.jobs.is_empty() {
                if q.closed {
                    return;
                }
                q.sleeping += 1;
                q = shared.work.wait(q).unwrap_or_else(|p| p.into_inner());
                q.sleeping -= 1;
            }
            // An even share of what is queued, so the other workers get some too.
            let take = match shared.priority {
                Priority::Background => 1,
                Priority::Normal => q.jobs.len().div_ceil(shared.workers).max(1),
            };
            batch.extend(q.jobs.drain(..take));
        }
        for job in batch.drain(..) {
            let result = catch_unwind(AssertUnwindSafe(job.run)).map_err(|payload| JobPanic {
                message: payload
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "non-string panic payload".into()),
            });
            results.push((job.conn, result));
        }
        let n = results.len();
        shared.deliver(&mut results);
        // Counted until the result is where the loop will find it.
        shared.in_flight.fetch_sub(n, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    /// Runs `f` on a one-thread pool of `priority` and returns what it saw.
    fn on_pool<T: Send + 'static>(priority: Priority, f: fn() -> T) -> T {
        let mut poll = mio::Poll::new().expect("poll");
        let waker = Arc::new(Waker::new(poll.registry(), mio::Token(0)).expect("waker"));
        let mut pool: Pool<T> = Pool::with_priority(1, "test-prio", waker, priority).expect("pool");
        pool.spawn(ConnId::new(1, 1), Box::new(f));
        pool.dispatch();
        let mut events = mio::Events::with_capacity(4);
        let mut done = Vec::new();
        while done.is_empty() {
            poll.poll(&mut events, Some(Duration::from_secs(20)))
                .expect("poll");
            pool.shared.drain(&mut done);
        }
        done.pop().expect("one result").1.expect("no panic")
    }

    /// The calling thread's scheduling policy and nice value.
    fn scheduling() -> (i32, i32) {
        // SAFETY: queries about the calling thread.
        unsafe {
            (
                libc::sched_getscheduler(0),
                libc::getpriority(libc::PRIO_PROCESS, 0),
            )
        }
    }

    #[test]
    fn background_threads_run_at_the_lowest_normal_priority() {
        let normal = on_pool(Priority::Normal, scheduling);
        let here = scheduling();
        assert_eq!(normal, here, "a normal pool keeps the process's scheduling");
        assert_eq!(
            on_pool(Priority::Background, scheduling),
            (libc::SCHED_OTHER, 19)
        );
    }

    #[test]
    fn dropping_the_pool_ends_its_idle_workers() {
        let poll = mio::Poll::new().expect("poll");
        let waker = Arc::new(Waker::new(poll.registry(), mio::Token(0)).expect("waker"));
        let mut pool: Pool<u64> = Pool::new(2, "test-worker", waker).expect("pool");
        pool.spawn(ConnId::new(1, 1), Box::new(|| 7));
        pool.dispatch();
        let shared = Arc::downgrade(&pool.shared);
        drop(pool);
        // Each worker holds the shared state until it returns.
        let deadline = Instant::now() + Duration::from_secs(20);
        while shared.strong_count() > 0 {
            assert!(Instant::now() < deadline, "workers still running");
            thread::yield_now();
        }
    }
}
