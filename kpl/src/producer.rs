//! The producer handle: cheap to clone, backed by one dispatcher task.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use aws_config::SdkConfig;
use bytes::Bytes;
use kinesis_format::{HashKey, validate_partition_key};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::config::{DEFAULT_RECORD_LIMIT, MAX_RECORD_SIZE_CEILING, ProducerConfig};
use crate::error::{ConfigError, PutError, PutErrorKind, SubmitError, SubmitErrorKind};
use crate::kinesis::{Boundary, KinesisApi};
use crate::pipeline::capacity::{Capacity, Refused, bytes_of};
use crate::pipeline::dispatcher::{COMMAND_BATCH, Command, Dispatcher};
use crate::pipeline::inbox::{Inbox, TrySendError};
use crate::pipeline::pending::{Incoming, PutResult};
use crate::pipeline::slots::{self, Slots};
use crate::pipeline::streams::Streams;
use crate::record::{PutOutcome, UserRecord};
use crate::stats::{Counters, ProducerStats};

/// A Kinesis producer. Clone it freely: clones share one pipeline.
///
/// Records go in with [`put`](Self::put) (waits while the memory bounds are full) or
/// [`try_put`](Self::try_put) (never waits for capacity); each returns a [`PutFuture`] that
/// resolves to the record's own result.
#[derive(Clone, Debug)]
pub struct Producer {
    inner: Arc<Inner>,
}

struct Inner {
    config: Arc<ProducerConfig>,
    /// Bounded, so a producer faster than the pipeline waits here instead of letting records
    /// age in a queue (their linger deadlines would pass before they are aggregated).
    commands: Arc<Inbox<Command>>,
    capacity: Arc<Capacity>,
    streams: Arc<Streams>,
    api: Arc<dyn KinesisApi>,
    counters: Arc<Counters>,
    closed: AtomicBool,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The last handle is gone: the dispatcher drains what was accepted, then stops.
        self.commands.close();
    }
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Producer {
    /// A producer using the endpoint, region and credentials of `sdk_config`. Must be called
    /// inside a Tokio runtime (it starts the pipeline task).
    pub fn new(sdk_config: &SdkConfig, config: ProducerConfig) -> Result<Producer, ConfigError> {
        Self::with_client(&aws_sdk_kinesis::Client::new(sdk_config), config)
    }

    /// A producer using a ready Kinesis client. The producer makes its own copy of the client
    /// with the SDK's retries off and `request_timeout` as the call timeout.
    pub fn with_client(
        client: &aws_sdk_kinesis::Client,
        config: ProducerConfig,
    ) -> Result<Producer, ConfigError> {
        config.validate()?;
        let kinesis = kinesis_api::SdkKinesis::new(client, config.request_timeout);
        Self::with_kinesis(Arc::new(kinesis), config)
    }

    /// A producer on any implementation of the Kinesis boundary (an in-memory Kinesis in tests).
    pub fn with_kinesis(
        kinesis: Arc<dyn kinesis_api::Kinesis>,
        config: ProducerConfig,
    ) -> Result<Producer, ConfigError> {
        config.validate()?;
        Self::start(Arc::new(Boundary(kinesis)), config)
    }

    pub(crate) fn start(
        api: Arc<dyn KinesisApi>,
        config: ProducerConfig,
    ) -> Result<Producer, ConfigError> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| ConfigError("a Producer must be created inside a Tokio runtime".into()))?;
        let config = Arc::new(config);
        let commands = Arc::new(Inbox::new(COMMAND_BATCH));
        let streams = Arc::new(Streams::default());
        let counters = Arc::new(Counters::default());
        let capacity = Arc::new(Capacity::new(
            config.max_outstanding_records,
            config.max_outstanding_bytes,
        ));
        crate::stats::kpl_metrics::describe();
        let dispatcher = Dispatcher::new(
            config.clone(),
            api.clone(),
            streams.clone(),
            counters.clone(),
            capacity.clone(),
            commands.clone(),
        );
        let task = runtime.spawn(dispatcher.run());
        Ok(Producer {
            inner: Arc::new(Inner {
                config,
                commands,
                capacity,
                streams,
                api,
                counters,
                closed: AtomicBool::new(false),
                task: Mutex::new(Some(task)),
            }),
        })
    }

    /// The configuration in force.
    pub fn config(&self) -> &ProducerConfig {
        &self.inner.config
    }

    /// Accepts a record, waiting while `max_outstanding_records` or `max_outstanding_bytes` is
    /// reached. The first record for a stream also waits for its shard list. Invalid records and
    /// unknown streams are refused with the record given back; nothing is enqueued then.
    pub async fn put(&self, record: UserRecord) -> Result<PutFuture, SubmitError> {
        // Usually nothing has to wait: then the record is handed over without being moved
        // through the states of the awaiting path below (each move is a copy).
        let record = match self.put_now(record) {
            Ok(done) => return done,
            Err(record) => record,
        };
        if let Err(kind) = self.admit(&record).await {
            return Err(refuse(kind, record));
        }
        if self.inner.capacity.acquire(&record).await.is_err() {
            return Err(refuse(SubmitErrorKind::ShutDown, record));
        }
        self.enqueue(record).await
    }

    /// Like [`put`](Self::put) but never waits for capacity: a full producer refuses the record
    /// with [`SubmitErrorKind::Full`] and gives it back.
    pub async fn try_put(&self, record: UserRecord) -> Result<PutFuture, SubmitError> {
        if let Err(kind) = self.admit(&record).await {
            return Err(refuse(kind, record));
        }
        match self.inner.capacity.try_acquire(&record) {
            Ok(()) => self.enqueue(record).await,
            Err(Refused::Full(what)) => Err(refuse(SubmitErrorKind::Full { what }, record)),
            Err(Refused::Closed) => Err(refuse(SubmitErrorKind::ShutDown, record)),
        }
    }

    /// `put` when nothing has to wait: the stream is loaded and there is capacity and room in
    /// the inbox. Otherwise the record comes back untouched, for `put` to wait.
    fn put_now(&self, record: UserRecord) -> Result<Result<PutFuture, SubmitError>, UserRecord> {
        if let Err(kind) = self.check(&record) {
            return Ok(Err(refuse(kind, record)));
        }
        let size = record.kinesis_size();
        if size > DEFAULT_RECORD_LIMIT || !self.inner.streams.is_loaded(&record.stream) {
            return Err(record);
        }
        match self.inner.capacity.try_acquire(&record) {
            Ok(()) => {}
            Err(Refused::Full(_)) => return Err(record),
            Err(Refused::Closed) => return Ok(Err(refuse(SubmitErrorKind::ShutDown, record))),
        }
        let (pending, receiver) = self.pending(record);
        match self.inner.commands.try_send(Command::Put(pending)) {
            Ok(()) => Ok(Ok(self.accepted(receiver))),
            Err(TrySendError::Full(command)) => {
                let record = self.take_back(command);
                Err(record)
            }
            Err(TrySendError::Closed(command)) => {
                let record = self.take_back(command);
                Ok(Err(refuse(SubmitErrorKind::ShutDown, record)))
            }
        }
    }

    /// Validates the record and makes sure its stream's shard map is loaded; a record above
    /// 1 MiB is checked against the stream's own limit.
    async fn admit(&self, record: &UserRecord) -> Result<(), SubmitErrorKind> {
        self.check(record)?;
        let (streams, api) = (&self.inner.streams, &*self.inner.api);
        streams
            .ensure_loaded(&record.stream, api, self.inner.config.record_ttl)
            .await?;
        let size = record.kinesis_size();
        if size > DEFAULT_RECORD_LIMIT {
            let cap = self.inner.config.max_user_record_size;
            let max = streams.record_limit(&record.stream, api, cap, size).await;
            if size > max {
                return Err(SubmitErrorKind::TooLarge { size, max });
            }
        }
        Ok(())
    }

    /// Validates the record.
    fn check(&self, record: &UserRecord) -> Result<(), SubmitErrorKind> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(SubmitErrorKind::ShutDown);
        }
        if record.stream.is_empty() {
            return Err(SubmitErrorKind::EmptyStream);
        }
        validate_partition_key(&record.partition_key)?;
        // A partition key's hash is computed by the dispatcher, many at a time (see
        // `Dispatcher::on_commands`); an explicit hash key is checked here (and read there).
        if let Some(explicit) = &record.explicit_hash_key {
            HashKey::parse_explicit_strict(explicit)?;
        }
        // Above 1 MiB, the stream's own limit decides too (see `admit`).
        let size = record.kinesis_size();
        let config = &self.inner.config;
        let max = config
            .max_user_record_size
            .unwrap_or(MAX_RECORD_SIZE_CEILING);
        if size > max {
            return Err(SubmitErrorKind::TooLarge { size, max });
        }
        // It must fit the memory bound too, or it would wait for capacity forever.
        if record.size() > config.max_outstanding_bytes {
            let max = config.max_outstanding_bytes;
            return Err(SubmitErrorKind::TooLarge { size, max });
        }
        Ok(())
    }

    /// Hands a record holding its capacity to the dispatcher.
    async fn enqueue(&self, record: UserRecord) -> Result<PutFuture, SubmitError> {
        let (pending, receiver) = self.pending(record);
        match self.inner.commands.send(Command::Put(pending)).await {
            Ok(()) => Ok(self.accepted(receiver)),
            Err(command) => {
                let record = self.take_back(command);
                Err(refuse(SubmitErrorKind::ShutDown, record))
            }
        }
    }

    /// The pipeline's form of a record that holds its capacity, and its result's receiver.
    fn pending(&self, record: UserRecord) -> (Incoming, slots::Receiver<PutResult>) {
        let (reply, receiver) = RESULT_SLOTS.with(Slots::pair);
        (Incoming { record, reply }, receiver)
    }

    fn accepted(&self, receiver: slots::Receiver<PutResult>) -> PutFuture {
        Counters::add(&self.inner.counters.user_records_received.0, 1);
        PutFuture { receiver }
    }

    /// The record of a put the inbox refused, its capacity given back.
    fn take_back(&self, command: Command) -> UserRecord {
        match command {
            Command::Put(p) => {
                let record = p.into_record();
                self.inner.capacity.release(1, bytes_of(&record) as usize);
                record
            }
            _ => unreachable!("only a Put is handed back here"),
        }
    }

    /// Sends everything buffered now, without waiting for `record_max_buffered_time`.
    pub async fn flush(&self) {
        let _ = self.inner.commands.send(Command::Flush).await;
    }

    /// Flushes, then waits until every record accepted before this call has its result.
    pub async fn flush_and_wait(&self) {
        let (done, told) = oneshot::channel();
        if self
            .inner
            .commands
            .send(Command::FlushAndWait(done))
            .await
            .is_ok()
        {
            // An error means the dispatcher stopped: nothing is left to wait for.
            let _ = told.await;
        }
    }

    /// Stops accepting records, sends and resolves every accepted one (retries included, within
    /// `record_ttl`), then stops the pipeline task. Every future gets its result.
    pub async fn shutdown(&self) {
        self.inner.closed.store(true, Ordering::Release);
        self.flush_and_wait().await;
        let _ = self.inner.commands.send(Command::Shutdown).await;
        let task = self
            .inner
            .task
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(task) = task {
            let _ = task.await;
        }
        // Wake anything still waiting for capacity: it gets ShutDown and its record back.
        self.inner.capacity.close();
    }

    /// A snapshot of counters and bounds.
    pub fn stats(&self) -> ProducerStats {
        let (records, bytes) = self.inner.capacity.outstanding();
        self.inner.counters.snapshot(records as u64, bytes as u64)
    }
}

fn refuse(kind: SubmitErrorKind, record: UserRecord) -> SubmitError {
    SubmitError {
        kind,
        record: Box::new(record),
    }
}

thread_local! {
    /// Result slots for records put from this thread (by any producer): handing one out takes
    /// no lock, and records put together share an allocation.
    static RESULT_SLOTS: Slots<PutResult> = Slots::default();
}

/// Resolves to one user record's result.
#[derive(Debug)]
#[must_use = "the result says whether the record was stored"]
pub struct PutFuture {
    receiver: slots::Receiver<PutResult>,
}

impl Future for PutFuture {
    type Output = Result<PutOutcome, PutError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.receiver).poll(cx).map(|r| {
            // A pending record always sends before it is dropped; this is only a backstop.
            match r {
                Some(Ok(outcome)) => Ok(outcome),
                Some(Err(error)) => Err(*error),
                None => Err(PutError {
                    kind: PutErrorKind::Stopped,
                    record: Box::new(UserRecord::new("", "", Bytes::new())),
                    attempts: Vec::new(),
                }),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_and_futures_can_move_between_tasks() {
        fn send_sync_static<T: Send + Sync + 'static>() {}
        fn send_static<T: Send + 'static>() {}
        send_sync_static::<Producer>();
        send_static::<PutFuture>();
    }
}
