//! The memory bounds: `max_outstanding_records` and `max_outstanding_bytes`, as two semaphores.
//!
//! `put` takes a record's permits and forgets them (no permit object travels with the record);
//! the dispatcher gives them back in bulk when records resolve. That keeps the per-record cost to
//! the acquiring compare-and-swap: no reference counts shared between the caller's thread and the
//! dispatcher's.

use tokio::sync::{AcquireError, Semaphore, TryAcquireError};

use crate::record::UserRecord;

#[derive(Debug)]
pub(crate) struct Capacity {
    records: Semaphore,
    bytes: Semaphore,
    max_records: usize,
    max_bytes: usize,
}

/// Which bound refused a record in `try_acquire`.
#[derive(Debug)]
pub(crate) enum Refused {
    Full(&'static str),
    Closed,
}

impl Capacity {
    pub(crate) fn new(max_records: usize, max_bytes: usize) -> Self {
        Capacity {
            records: Semaphore::new(max_records),
            bytes: Semaphore::new(max_bytes),
            max_records,
            max_bytes,
        }
    }

    /// Waits until the record fits, then holds its capacity until [`release`](Self::release).
    pub(crate) async fn acquire(&self, record: &UserRecord) -> Result<(), AcquireError> {
        // Without waiting first: the usual case, and cheaper than building the futures.
        let records = match self.records.try_acquire() {
            Ok(permit) => permit,
            Err(_) => self.records.acquire().await?,
        };
        let bytes = match self.bytes.try_acquire_many(bytes_of(record)) {
            Ok(permit) => permit,
            Err(_) => self.bytes.acquire_many(bytes_of(record)).await?,
        };
        records.forget();
        bytes.forget();
        Ok(())
    }

    /// Holds the record's capacity if it fits now.
    pub(crate) fn try_acquire(&self, record: &UserRecord) -> Result<(), Refused> {
        let refused = |e: TryAcquireError, what| match e {
            TryAcquireError::NoPermits => Refused::Full(what),
            TryAcquireError::Closed => Refused::Closed,
        };
        let records = self
            .records
            .try_acquire()
            .map_err(|e| refused(e, "records"))?;
        let bytes = self
            .bytes
            .try_acquire_many(bytes_of(record))
            .map_err(|e| refused(e, "bytes"))?;
        records.forget();
        bytes.forget();
        Ok(())
    }

    /// Gives back the capacity of `records` records totalling `bytes` (as counted by
    /// [`bytes_of`]). One call per batch: each release takes the semaphore's lock.
    pub(crate) fn release(&self, records: usize, bytes: usize) {
        if records > 0 {
            self.records.add_permits(records);
        }
        if bytes > 0 {
            self.bytes.add_permits(bytes);
        }
    }

    /// Records and bytes held now.
    pub(crate) fn outstanding(&self) -> (usize, usize) {
        (
            self.max_records
                .saturating_sub(self.records.available_permits()),
            self.max_bytes
                .saturating_sub(self.bytes.available_permits()),
        )
    }

    /// Wakes everything waiting for capacity with an error (shutdown).
    pub(crate) fn close(&self) {
        self.records.close();
        self.bytes.close();
    }
}

/// The byte permits a record holds: its size (records are at most 10 MiB, so this fits).
pub(crate) fn bytes_of(record: &UserRecord) -> u32 {
    u32::try_from(record.size()).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_until_released_and_refuses_when_full() {
        let capacity = Capacity::new(2, 100);
        let record = UserRecord::new("s", "k", vec![0u8; 59]);
        capacity.try_acquire(&record).expect("first fits");
        assert_eq!(capacity.outstanding(), (1, 60));
        assert!(matches!(
            capacity.try_acquire(&record),
            Err(Refused::Full("bytes"))
        ));
        // A refused record holds nothing.
        assert_eq!(capacity.outstanding(), (1, 60));
        capacity.release(1, 60);
        assert_eq!(capacity.outstanding(), (0, 0));
        let small = UserRecord::new("s", "k", vec![0u8; 9]);
        capacity.try_acquire(&small).expect("fits");
        capacity.try_acquire(&small).expect("fits");
        assert!(matches!(
            capacity.try_acquire(&small),
            Err(Refused::Full("records"))
        ));
        capacity.close();
        assert!(matches!(capacity.try_acquire(&small), Err(Refused::Closed)));
    }
}
