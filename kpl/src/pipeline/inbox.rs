//! The bounded queue from producer handles to the dispatcher.
//!
//! A mutex-guarded `Vec` that the dispatcher swaps out whole: a send is a lock, a push and an
//! unlock (plus one wake-up when the queue was empty), and a receive takes every queued command
//! at once. Unlike a general channel it allocates nothing per message or per block of messages,
//! which matters at hundreds of thousands of records a second.
//!
//! Bounded so that a producer faster than the pipeline waits here, instead of letting records
//! age in a queue (their linger deadlines would pass before they are aggregated).

use std::sync::{Mutex, MutexGuard};

use tokio::sync::Notify;

#[derive(Debug)]
pub(crate) struct Inbox<T> {
    state: Mutex<State<T>>,
    capacity: usize,
    /// Wakes the receiver when the queue stops being empty, or closes.
    ready: Notify,
    /// Wakes senders waiting for room.
    room: Notify,
}

/// Why [`Inbox::try_send`] gave its item back.
#[derive(Debug)]
pub(crate) enum TrySendError<T> {
    Full(T),
    Closed(T),
}

#[derive(Debug)]
struct State<T> {
    queue: Vec<T>,
    closed: bool,
}

impl<T> Inbox<T> {
    pub(crate) fn new(capacity: usize) -> Self {
        Inbox {
            state: Mutex::new(State {
                queue: Vec::with_capacity(capacity),
                closed: false,
            }),
            capacity: capacity.max(1),
            ready: Notify::new(),
            room: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // Nothing panics while holding the lock; a poisoned one is still consistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `item`, waiting while the queue is full. A closed inbox hands the item back.
    pub(crate) async fn send(&self, item: T) -> Result<(), T> {
        loop {
            let room = self.room.notified();
            tokio::pin!(room);
            {
                let state = self.lock();
                if state.closed {
                    return Err(item);
                }
                if state.queue.len() < self.capacity {
                    self.push(state, item);
                    return Ok(());
                }
                // Registered before the lock is released, so the receiver's next take (which
                // needs the lock) cannot wake the others and miss this one.
                room.as_mut().enable();
            }
            room.await;
        }
    }

    /// Queues `item` if there is room now; otherwise hands it back, saying whether the inbox
    /// was full or closed.
    pub(crate) fn try_send(&self, item: T) -> Result<(), TrySendError<T>> {
        let state = self.lock();
        if state.closed {
            return Err(TrySendError::Closed(item));
        }
        if state.queue.len() >= self.capacity {
            return Err(TrySendError::Full(item));
        }
        self.push(state, item);
        Ok(())
    }

    /// Queues `item` (the caller checked for room) and releases the lock.
    fn push(&self, mut state: MutexGuard<'_, State<T>>, item: T) {
        let was_empty = state.queue.is_empty();
        state.queue.push(item);
        drop(state);
        if was_empty {
            // Stores a permit if the receiver is busy: it is not lost.
            self.ready.notify_one();
        }
    }

    /// Moves every queued item into `into` (which should be empty), waiting until there is at
    /// least one. Returns `false` once the inbox is closed and empty. Cancel-safe.
    pub(crate) async fn recv_all(&self, into: &mut Vec<T>) -> bool {
        loop {
            let ready = self.ready.notified();
            {
                let mut state = self.lock();
                if !state.queue.is_empty() {
                    // Swap buffers: both keep their capacity, nothing is copied.
                    std::mem::swap(&mut state.queue, into);
                    drop(state);
                    self.room.notify_waiters();
                    return true;
                }
                if state.closed {
                    return false;
                }
            }
            ready.await;
        }
    }

    /// Takes what is queued without waiting (for draining after the receiver stops).
    pub(crate) fn take_all(&self) -> Vec<T> {
        let mut state = self.lock();
        let items = std::mem::take(&mut state.queue);
        drop(state);
        self.room.notify_waiters();
        items
    }

    /// Refuses further sends (waiting senders get their items back) and lets the receiver see
    /// the end once it has taken what is queued.
    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_one();
        self.room.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[tokio::test]
    async fn delivers_in_order_in_bulk() {
        let inbox = Inbox::new(8);
        for i in 0..5 {
            inbox.send(i).await.expect("open");
        }
        let mut got = Vec::new();
        assert!(inbox.recv_all(&mut got).await);
        assert_eq!(got, [0, 1, 2, 3, 4]);
    }

    #[tokio::test]
    async fn a_full_inbox_makes_senders_wait_until_the_receiver_takes() {
        let inbox = Arc::new(Inbox::new(2));
        inbox.send(1).await.expect("room");
        inbox.send(2).await.expect("room");
        let waiting = tokio::spawn({
            let inbox = inbox.clone();
            async move { inbox.send(3).await }
        });
        // The third send cannot finish while the queue holds two.
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        let mut got = Vec::new();
        assert!(inbox.recv_all(&mut got).await);
        assert_eq!(got, [1, 2]);
        waiting.await.expect("task").expect("sent after the take");
        got.clear();
        assert!(inbox.recv_all(&mut got).await);
        assert_eq!(got, [3]);
    }

    #[tokio::test]
    async fn the_receiver_wakes_for_a_send_and_for_close() {
        let inbox = Arc::new(Inbox::new(4));
        let receiver = tokio::spawn({
            let inbox = inbox.clone();
            async move {
                let mut got = Vec::new();
                let first = inbox.recv_all(&mut got).await;
                let mut rest = Vec::new();
                let second = inbox.recv_all(&mut rest).await;
                (first, got, second)
            }
        });
        inbox.send(7).await.expect("open");
        inbox.close();
        let (first, got, second) = receiver.await.expect("task");
        assert!(first);
        assert_eq!(got, [7]);
        assert!(!second, "closed and empty");
    }

    #[tokio::test]
    async fn close_hands_items_back_to_waiting_and_later_senders() {
        let inbox = Arc::new(Inbox::new(1));
        inbox.send(1).await.expect("room");
        let waiting = tokio::spawn({
            let inbox = inbox.clone();
            async move { inbox.send(2).await }
        });
        tokio::task::yield_now().await;
        inbox.close();
        assert_eq!(waiting.await.expect("task"), Err(2));
        assert_eq!(inbox.send(3).await, Err(3));
        // What was queued before the close is still delivered.
        assert_eq!(inbox.take_all(), [1]);
    }
}
