//! `flush_and_wait` bookkeeping, kept by the dispatcher alone (no per-record shared state).
//!
//! Every record the dispatcher receives belongs to the current epoch; a `flush_and_wait` closes
//! the epoch and waits until every record of it and of all earlier epochs has resolved. The
//! command channel is ordered, so the records a caller had accepted before calling
//! `flush_and_wait` are all in epochs up to the one its command closes.

use std::collections::VecDeque;

use tokio::sync::oneshot;

#[derive(Debug)]
pub(crate) struct Epochs {
    /// The epoch of `unresolved[0]`.
    base: u64,
    /// Unresolved records per epoch, from `base` to the current epoch (the last).
    unresolved: VecDeque<u64>,
    /// Callers waiting for every epoch up to and including theirs, in epoch order.
    waiters: VecDeque<(u64, oneshot::Sender<()>)>,
}

impl Default for Epochs {
    fn default() -> Self {
        Epochs {
            base: 0,
            unresolved: VecDeque::from([0]),
            waiters: VecDeque::new(),
        }
    }
}

impl Epochs {
    /// Counts a received record; returns its epoch.
    pub(crate) fn accept(&mut self) -> u64 {
        let current = self.base + self.unresolved.len() as u64 - 1;
        if let Some(n) = self.unresolved.back_mut() {
            *n += 1;
        }
        current
    }

    /// A record of `epoch` has resolved.
    pub(crate) fn resolved(&mut self, epoch: u64) {
        let Some(i) = epoch.checked_sub(self.base) else {
            return;
        };
        if let Some(n) = usize::try_from(i)
            .ok()
            .and_then(|i| self.unresolved.get_mut(i))
        {
            *n = n.saturating_sub(1);
        }
    }

    /// Closes the current epoch; `done` is told once it and every earlier epoch have resolved.
    pub(crate) fn wait(&mut self, done: oneshot::Sender<()>) {
        let current = self.base + self.unresolved.len() as u64 - 1;
        self.waiters.push_back((current, done));
        self.unresolved.push_back(0);
    }

    /// Tells the waiters whose epochs have all resolved. Call after resolving records.
    pub(crate) fn notify(&mut self) {
        // Drop fully resolved epochs from the front, keeping the current one.
        while self.unresolved.len() > 1 && self.unresolved.front() == Some(&0) {
            self.unresolved.pop_front();
            self.base += 1;
        }
        let first_open = if self.unresolved.front() == Some(&0) {
            // Only the current epoch is left, and it is empty: everything before it is done.
            self.base + 1
        } else {
            self.base
        };
        while self
            .waiters
            .front()
            .is_some_and(|(epoch, _)| *epoch < first_open)
        {
            if let Some((_, done)) = self.waiters.pop_front() {
                // The caller may have given up waiting.
                let _ = done.send(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiter(epochs: &mut Epochs) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        epochs.wait(tx);
        rx
    }

    fn told(rx: &mut oneshot::Receiver<()>) -> bool {
        rx.try_recv().is_ok()
    }

    #[test]
    fn a_waiter_is_told_when_its_epoch_and_earlier_ones_resolve() {
        let mut e = Epochs::default();
        let a = e.accept();
        let b = e.accept();
        let mut first = waiter(&mut e);
        let c = e.accept();
        let mut second = waiter(&mut e);
        let d = e.accept(); // after both waits: neither waits for it

        e.resolved(c);
        e.notify();
        assert!(!told(&mut first) && !told(&mut second), "a and b are open");
        e.resolved(a);
        e.notify();
        assert!(!told(&mut first), "b is open");
        e.resolved(b);
        e.notify();
        assert!(told(&mut first) && told(&mut second));
        assert_eq!(d, c + 1);
        assert_eq!(a, b);
        assert_eq!(c, a + 1);
    }

    #[test]
    fn a_waiter_with_nothing_outstanding_is_told_at_once() {
        let mut e = Epochs::default();
        let mut rx = waiter(&mut e);
        e.notify();
        assert!(told(&mut rx));
        let r = e.accept();
        let mut later = waiter(&mut e);
        e.notify();
        assert!(!told(&mut later));
        e.resolved(r);
        e.notify();
        assert!(told(&mut later));
    }

    #[test]
    fn a_later_epoch_does_not_release_an_earlier_waiter() {
        let mut e = Epochs::default();
        let old = e.accept();
        let mut first = waiter(&mut e);
        let new = e.accept();
        e.resolved(new);
        e.notify();
        assert!(!told(&mut first));
        e.resolved(old);
        e.notify();
        assert!(told(&mut first));
    }
}
