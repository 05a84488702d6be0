//! Server-level events: a way into the loop that is not tied to an endpoint.
//!
//! Any thread (a cluster bridge, an upstream client, application code, a worker) sends a
//! [`Handler::Event`](crate::Handler::Event) through an [`EventSender`]; the loop hands it to
//! [`Handler::on_event`](crate::Handler::on_event) on its thread. The queue is bounded: when
//! it is full, [`EventSender::try_send`] gives the event back at once and
//! [`EventSender::send`] waits for room, so a producer faster than the loop is slowed down or
//! told, never buffered without limit. The loop is woken through its one `mio::Waker`, only
//! when the queue goes from empty to not empty, so a burst costs one wake-up.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError, TrySendError};

use mio::Waker;

/// Events handed to the handler per loop turn before the rest wait for the next turn
/// (fairness with the endpoints).
pub(crate) const EVENTS_PER_TURN: usize = 1024;

/// Why an event could not be sent; the event is handed back.
#[derive(Debug, PartialEq, Eq)]
pub enum SendError<E> {
    /// The queue is full (the loop is behind): try later, or drop and count it.
    Full(E),
    /// The loop has stopped.
    Stopped(E),
}

impl<E> SendError<E> {
    pub fn into_inner(self) -> E {
        match self {
            SendError::Full(e) | SendError::Stopped(e) => e,
        }
    }
}

impl<E> std::fmt::Display for SendError<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Full(_) => f.write_str("the event loop's event queue is full"),
            SendError::Stopped(_) => f.write_str("the event loop has stopped"),
        }
    }
}

impl<E: std::fmt::Debug> std::error::Error for SendError<E> {}

/// Sends server-level events into a loop, from any thread. Cheap to clone.
pub struct EventSender<E> {
    tx: SyncSender<E>,
    shared: Arc<Shared>,
}

impl<E> Clone for EventSender<E> {
    fn clone(&self) -> Self {
        EventSender {
            tx: self.tx.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<E> std::fmt::Debug for EventSender<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventSender")
            .field("queued", &self.shared.queued.load(Ordering::Relaxed))
            .finish()
    }
}

struct Shared {
    /// Events sent and not yet taken by the loop (may briefly count one being sent).
    queued: AtomicUsize,
    waker: Arc<Waker>,
}

impl<E> EventSender<E> {
    /// Queues `event` without waiting; a full queue hands it back.
    pub fn try_send(&self, event: E) -> Result<(), SendError<E>> {
        // Counted before it is queued, so the loop never counts below zero.
        let before = self.shared.queued.fetch_add(1, Ordering::AcqRel);
        match self.tx.try_send(event) {
            Ok(()) => {
                self.wake_if_first(before);
                Ok(())
            }
            Err(e) => {
                self.shared.queued.fetch_sub(1, Ordering::AcqRel);
                Err(match e {
                    TrySendError::Full(e) => SendError::Full(e),
                    TrySendError::Disconnected(e) => SendError::Stopped(e),
                })
            }
        }
    }

    /// Queues `event`, waiting while the queue is full. Never call this on the loop thread
    /// (it would wait for itself); use [`EventSender::try_send`] there.
    pub fn send(&self, event: E) -> Result<(), SendError<E>> {
        let before = self.shared.queued.fetch_add(1, Ordering::AcqRel);
        match self.tx.send(event) {
            Ok(()) => {
                self.wake_if_first(before);
                Ok(())
            }
            Err(e) => {
                self.shared.queued.fetch_sub(1, Ordering::AcqRel);
                Err(SendError::Stopped(e.0))
            }
        }
    }

    fn wake_if_first(&self, before: usize) {
        // Only the first event of a burst wakes the loop; the loop looks at the count after
        // every batch, so it cannot miss the later ones.
        if before == 0
            && let Err(e) = self.shared.waker.wake()
        {
            log::error!("cannot wake the event loop for an event: {e}");
        }
    }
}

/// The loop's end of the event queue.
pub(crate) struct EventQueue<E> {
    rx: Receiver<E>,
    shared: Arc<Shared>,
    /// Kept so senders can be handed out; dropped when the loop stops.
    tx: SyncSender<E>,
}

impl<E> EventQueue<E> {
    pub(crate) fn new(capacity: usize, waker: Arc<Waker>) -> EventQueue<E> {
        let (tx, rx) = mpsc::sync_channel(capacity.max(1));
        EventQueue {
            rx,
            tx,
            shared: Arc::new(Shared {
                queued: AtomicUsize::new(0),
                waker,
            }),
        }
    }

    pub(crate) fn sender(&self) -> EventSender<E> {
        EventSender {
            tx: self.tx.clone(),
            shared: Arc::clone(&self.shared),
        }
    }

    /// Takes the next event, if one is queued.
    pub(crate) fn next(&self) -> Option<E> {
        match self.rx.try_recv() {
            Ok(e) => {
                self.shared.queued.fetch_sub(1, Ordering::AcqRel);
                Some(e)
            }
            Err(TryRecvError::Empty | TryRecvError::Disconnected) => None,
        }
    }

    /// Events are waiting (or one is being sent right now).
    pub(crate) fn is_behind(&self) -> bool {
        self.shared.queued.load(Ordering::Acquire) > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_say_why_and_hand_the_event_back() {
        assert_eq!(
            SendError::Full(7).to_string(),
            "the event loop's event queue is full"
        );
        assert_eq!(
            SendError::Stopped(7).to_string(),
            "the event loop has stopped"
        );
        assert_eq!(SendError::Full(7).into_inner(), 7);
    }

    #[test]
    fn a_sender_shows_what_is_queued() {
        let poll = mio::Poll::new().expect("poll");
        let waker = Arc::new(Waker::new(poll.registry(), mio::Token(0)).expect("waker"));
        let queue: EventQueue<u8> = EventQueue::new(4, waker);
        let tx = queue.sender();
        tx.try_send(1).expect("room");
        tx.try_send(2).expect("room");
        assert_eq!(format!("{tx:?}"), "EventSender { queued: 2 }");
    }
}
