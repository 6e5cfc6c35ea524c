//! One-shot result slots: how a record's result travels from the dispatcher to its `PutFuture`.
//!
//! A general one-shot channel allocates per message. At hundreds of thousands of records a
//! second that allocation, freed later on another thread and in bursts (a whole aggregate's
//! records resolve together), costs more than everything else the channel does. So slots are
//! allocated [`CHUNK`] at a time, per thread that puts records: a chunk is one allocation,
//! shared by the futures and senders of its slots, and freed when the last of them is gone.
//! Each slot is a small mutex-guarded state (uncontended: one sender writes it once, one
//! receiver reads it), so there is no unsafe code.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

/// Slots per allocation.
pub(crate) const CHUNK: usize = 256;

#[derive(Debug)]
enum State<T> {
    /// No value yet; the receiver's waker once it has polled.
    Waiting(Option<Waker>),
    /// Sent, not yet received.
    Full(T),
    /// Received, or the receiver is gone.
    Done,
    /// The sender was dropped without sending.
    Closed,
}

/// One cache line each: a slot is written by the dispatcher and read by the future's task, at
/// different times, and neighbours belong to unrelated records.
#[derive(Debug)]
#[repr(align(64))]
struct Slot<T> {
    state: Mutex<State<T>>,
}

impl<T> Slot<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // Nothing panics while holding a slot's lock; a poisoned one is still consistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A sized array, so a handle is a thin pointer (a smaller pending record).
type Chunk<T> = Arc<[Slot<T>; CHUNK]>;

/// Hands out sender/receiver pairs, one chunk at a time. Not shared between threads: each
/// thread that puts records has its own (see `Producer`), so handing out a pair takes no lock.
#[derive(Debug)]
pub(crate) struct Slots<T> {
    current: RefCell<(Chunk<T>, usize)>,
}

impl<T> Default for Slots<T> {
    fn default() -> Self {
        Slots {
            current: RefCell::new((new_chunk(), 0)),
        }
    }
}

fn new_chunk<T>() -> Chunk<T> {
    Arc::new(std::array::from_fn(|_| Slot {
        state: Mutex::new(State::Waiting(None)),
    }))
}

impl<T> Slots<T> {
    /// A connected pair on a fresh slot.
    pub(crate) fn pair(&self) -> (Sender<T>, Receiver<T>) {
        let mut current = self.current.borrow_mut();
        if current.1 == CHUNK {
            *current = (new_chunk(), 0);
        }
        let index = current.1;
        current.1 += 1;
        let chunk = &current.0;
        (
            Sender {
                chunk: Some(chunk.clone()),
                index,
            },
            Receiver {
                chunk: chunk.clone(),
                index,
                finished: false,
            },
        )
    }
}

/// Sends one value to its [`Receiver`]. Dropped unsent, the receiver gets `None`.
#[derive(Debug)]
pub(crate) struct Sender<T> {
    /// `None` once sent.
    chunk: Option<Chunk<T>>,
    index: usize,
}

impl<T> Sender<T> {
    /// Reads the slot's cache line without writing it, so that a later [`send`](Self::send)
    /// finds it in cache: touching many slots first lets their misses overlap.
    pub(crate) fn touch(&self) {
        if let Some(chunk) = &self.chunk {
            std::hint::black_box(chunk[self.index].state.is_poisoned());
        }
    }

    /// Whether it can still send (it has not sent or closed).
    pub(crate) fn is_open(&self) -> bool {
        self.chunk.is_some()
    }

    /// Delivers `value`; if the receiver is gone (or this sender already sent or closed) the
    /// value is dropped here.
    pub(crate) fn send(&mut self, value: T) {
        let Some(chunk) = self.chunk.take() else {
            return;
        };
        let waker = {
            let mut state = chunk[self.index].lock();
            match std::mem::replace(&mut *state, State::Done) {
                State::Waiting(waker) => {
                    *state = State::Full(value);
                    waker
                }
                // The receiver is gone (`Done`); `Full` and `Closed` cannot happen (one send).
                _ => None,
            }
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Gives up without sending: the receiver resolves to `None`.
    pub(crate) fn close(&mut self) {
        let Some(chunk) = self.chunk.take() else {
            return;
        };
        let waker = {
            let mut state = chunk[self.index].lock();
            match &mut *state {
                State::Waiting(waker) => {
                    let waker = waker.take();
                    *state = State::Closed;
                    waker
                }
                _ => None,
            }
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        self.close();
    }
}

/// Resolves to the sent value, or `None` if the sender was dropped without sending.
#[derive(Debug)]
pub(crate) struct Receiver<T> {
    chunk: Chunk<T>,
    index: usize,
    /// It has returned `Ready`: the slot is `Done` or `Closed`, nothing left to clean up.
    finished: bool,
}

impl<T> Future for Receiver<T> {
    type Output = Option<T>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let value = {
            let mut state = self.chunk[self.index].lock();
            match &mut *state {
                State::Waiting(waker) => {
                    match waker {
                        Some(w) if w.will_wake(cx.waker()) => {}
                        _ => *waker = Some(cx.waker().clone()),
                    }
                    return Poll::Pending;
                }
                State::Full(_) => match std::mem::replace(&mut *state, State::Done) {
                    State::Full(value) => Some(value),
                    _ => None,
                },
                // Closed, or polled again after it resolved.
                State::Closed | State::Done => None,
            }
        };
        self.finished = true;
        Poll::Ready(value)
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        // Drops an unreceived value now rather than when the whole chunk goes.
        let mut state = self.chunk[self.index].lock();
        if !matches!(*state, State::Closed) {
            *state = State::Done;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test]
    async fn a_sent_value_arrives_whether_sent_before_or_after_the_first_poll() {
        let slots = Slots::default();
        let (mut tx, rx) = slots.pair();
        tx.send(1);
        assert_eq!(rx.await, Some(1));

        let (mut tx, rx) = slots.pair();
        let waiter = tokio::spawn(rx);
        tokio::task::yield_now().await;
        tx.send(2);
        assert_eq!(waiter.await.expect("task"), Some(2));
    }

    #[tokio::test]
    async fn a_sender_dropped_unsent_resolves_to_none() {
        let slots = Slots::<u32>::default();
        let (tx, rx) = slots.pair();
        let waiter = tokio::spawn(rx);
        tokio::task::yield_now().await;
        drop(tx);
        assert_eq!(waiter.await.expect("task"), None);
    }

    /// Counts live values, to see that each is dropped exactly once.
    struct Counted(Arc<AtomicUsize>);
    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn values_never_received_are_dropped_once() {
        let live = Arc::new(AtomicUsize::new(0));
        let slots = Slots::default();
        let mut receivers = Vec::new();
        for i in 0..(CHUNK * 2 + 3) {
            let (mut tx, rx) = slots.pair();
            live.fetch_add(1, Ordering::SeqCst);
            if i % 2 == 0 {
                drop(rx); // receiver gone first: the send drops the value
                tx.send(Counted(live.clone()));
            } else {
                tx.send(Counted(live.clone()));
                receivers.push(rx); // sent, never polled
            }
        }
        assert_eq!(live.load(Ordering::SeqCst), receivers.len());
        drop(receivers);
        assert_eq!(live.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn a_result_slot_is_one_cache_line() {
        let size = std::mem::size_of::<Slot<crate::pipeline::pending::PutResult>>();
        assert_eq!(
            size, 64,
            "a slot spanning two lines costs two misses per result"
        );
    }

    #[test]
    fn pairs_fill_a_chunk_before_the_next_is_allocated() {
        let slots = Slots::<u8>::default();
        let pairs: Vec<_> = (0..CHUNK + 1).map(|_| slots.pair()).collect();
        let first = &pairs[0].1.chunk;
        assert!(
            pairs[..CHUNK]
                .iter()
                .all(|(_, rx)| Arc::ptr_eq(&rx.chunk, first))
        );
        assert!(!Arc::ptr_eq(&pairs[CHUNK].1.chunk, first));
        let indices: Vec<usize> = pairs.iter().map(|(_, rx)| rx.index).collect();
        assert_eq!(indices[..3], [0, 1, 2]);
        assert_eq!(indices[CHUNK], 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_value_arrives_across_threads() {
        let slots = Slots::default();
        let (senders, receivers): (Vec<_>, Vec<_>) = (0..10_000).map(|_| slots.pair()).unzip();
        let sending = tokio::spawn(async move {
            for (i, mut tx) in senders.into_iter().enumerate() {
                tx.send(i);
                if i % 100 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        });
        for (i, rx) in receivers.into_iter().enumerate() {
            assert_eq!(rx.await, Some(i));
        }
        sending.await.expect("task");
    }
}
