//! The producer handle: cheap to clone, backed by one dispatcher task.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use aws_config::SdkConfig;
use bytes::Bytes;
use kinesis_format::{HashKey, validate_partition_key};
use tokio::sync::{Semaphore, TryAcquireError, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::config::ProducerConfig;
use crate::error::{ConfigError, PutError, PutErrorKind, SubmitError, SubmitErrorKind};
use crate::kinesis::{KinesisApi, SdkKinesis};
use crate::pipeline::dispatcher::{COMMAND_BATCH, Command, Dispatcher};
use crate::pipeline::pending::{Pending, Permits, PutResult};
use crate::pipeline::streams::{StreamEntry, Streams};
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
    commands: mpsc::Sender<Command>,
    records: Arc<Semaphore>,
    bytes: Arc<Semaphore>,
    /// The current flush epoch: every accepted record holds a clone of its sender.
    epoch: Mutex<(mpsc::Sender<()>, mpsc::Receiver<()>)>,
    flush_lock: tokio::sync::Mutex<()>,
    streams: Arc<Streams>,
    api: Arc<dyn KinesisApi>,
    counters: Arc<Counters>,
    closed: AtomicBool,
    task: Mutex<Option<JoinHandle<()>>>,
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
        let api = Arc::new(SdkKinesis::new(client, config.request_timeout));
        Self::start(api, config)
    }

    pub(crate) fn start(
        api: Arc<dyn KinesisApi>,
        config: ProducerConfig,
    ) -> Result<Producer, ConfigError> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| ConfigError("a Producer must be created inside a Tokio runtime".into()))?;
        let config = Arc::new(config);
        let (commands, receiver) = mpsc::channel(COMMAND_BATCH);
        let streams = Arc::new(Streams::default());
        let counters = Arc::new(Counters::default());
        let dispatcher = Dispatcher::new(
            config.clone(),
            api.clone(),
            streams.clone(),
            counters.clone(),
            receiver,
        );
        let task = runtime.spawn(dispatcher.run());
        Ok(Producer {
            inner: Arc::new(Inner {
                records: Arc::new(Semaphore::new(config.max_outstanding_records)),
                bytes: Arc::new(Semaphore::new(config.max_outstanding_bytes)),
                config,
                commands,
                epoch: Mutex::new(mpsc::channel(1)),
                flush_lock: tokio::sync::Mutex::new(()),
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
        let (hash_key, entry) = match self.admit(&record).await {
            Ok(admitted) => admitted,
            Err(kind) => return Err(refuse(kind, record)),
        };
        let size = permit_count(&record);
        let Ok(records) = self.inner.records.clone().acquire_owned().await else {
            return Err(refuse(SubmitErrorKind::ShutDown, record));
        };
        let bytes = match size {
            0 => None,
            n => match self.inner.bytes.clone().acquire_many_owned(n).await {
                Ok(permit) => Some(permit),
                Err(_) => return Err(refuse(SubmitErrorKind::ShutDown, record)),
            },
        };
        self.enqueue(record, hash_key, entry, records, bytes).await
    }

    /// Like [`put`](Self::put) but never waits for capacity: a full producer refuses the record
    /// with [`SubmitErrorKind::Full`] and gives it back.
    pub async fn try_put(&self, record: UserRecord) -> Result<PutFuture, SubmitError> {
        let (hash_key, entry) = match self.admit(&record).await {
            Ok(admitted) => admitted,
            Err(kind) => return Err(refuse(kind, record)),
        };
        let full = |e: TryAcquireError, what| match e {
            TryAcquireError::NoPermits => SubmitErrorKind::Full { what },
            TryAcquireError::Closed => SubmitErrorKind::ShutDown,
        };
        let records = match self.inner.records.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(e) => return Err(refuse(full(e, "records"), record)),
        };
        let bytes = match permit_count(&record) {
            0 => None,
            n => match self.inner.bytes.clone().try_acquire_many_owned(n) {
                Ok(p) => Some(p),
                Err(e) => return Err(refuse(full(e, "bytes"), record)),
            },
        };
        self.enqueue(record, hash_key, entry, records, bytes).await
    }

    /// Validates the record and makes sure its stream's shard map is loaded.
    async fn admit(
        &self,
        record: &UserRecord,
    ) -> Result<(HashKey, Arc<StreamEntry>), SubmitErrorKind> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(SubmitErrorKind::ShutDown);
        }
        if record.stream.is_empty() {
            return Err(SubmitErrorKind::EmptyStream);
        }
        validate_partition_key(&record.partition_key)?;
        let hash_key =
            HashKey::for_record(&record.partition_key, record.explicit_hash_key.as_deref())?;
        let size = record.data.len() + record.partition_key.len();
        if size > self.inner.config.max_user_record_size {
            return Err(SubmitErrorKind::TooLarge {
                size,
                max: self.inner.config.max_user_record_size,
            });
        }
        let entry = self
            .inner
            .streams
            .get_or_load(&record.stream, &*self.inner.api)
            .await?;
        Ok((hash_key, entry))
    }

    async fn enqueue(
        &self,
        record: UserRecord,
        hash_key: HashKey,
        entry: Arc<StreamEntry>,
        records: tokio::sync::OwnedSemaphorePermit,
        bytes: Option<tokio::sync::OwnedSemaphorePermit>,
    ) -> Result<PutFuture, SubmitError> {
        let (reply, receiver) = oneshot::channel();
        let now = Instant::now();
        let epoch = self
            .inner
            .epoch
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .clone();
        let pending = Pending {
            record,
            entry,
            hash_key,
            arrival: now,
            expires: now + self.inner.config.record_ttl,
            waiting_since: now,
            attempts: Vec::new(),
            backoff: None,
            reply: Some(reply),
            permits: Some(Permits {
                _records: records,
                _bytes: bytes,
            }),
            epoch: Some(epoch),
        };
        match self.inner.commands.send(Command::Put(pending)).await {
            Ok(()) => {
                Counters::add(&self.inner.counters.user_records_received, 1);
                Ok(PutFuture { receiver })
            }
            Err(mpsc::error::SendError(command)) => match command {
                Command::Put(p) => Err(refuse(SubmitErrorKind::ShutDown, p.into_record())),
                _ => unreachable!("only a Put was sent"),
            },
        }
    }

    /// Sends everything buffered now, without waiting for `record_max_buffered_time`.
    pub async fn flush(&self) {
        let _ = self.inner.commands.send(Command::Flush).await;
    }

    /// Flushes, then waits until every record accepted before this call has its result.
    pub async fn flush_and_wait(&self) {
        let _serial = self.inner.flush_lock.lock().await;
        let (old_sender, mut old_receiver) = {
            let mut epoch = self.inner.epoch.lock().unwrap_or_else(|e| e.into_inner());
            std::mem::replace(&mut *epoch, mpsc::channel(1))
        };
        drop(old_sender);
        self.flush().await;
        // Returns None once every record of the old epoch has dropped its sender.
        let _ = old_receiver.recv().await;
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
        self.inner.records.close();
        self.inner.bytes.close();
    }

    /// A snapshot of counters and bounds.
    pub fn stats(&self) -> ProducerStats {
        let c = &self.inner.config;
        let records = c
            .max_outstanding_records
            .saturating_sub(self.inner.records.available_permits());
        let bytes = c
            .max_outstanding_bytes
            .saturating_sub(self.inner.bytes.available_permits());
        self.inner.counters.snapshot(records as u64, bytes as u64)
    }
}

fn refuse(kind: SubmitErrorKind, record: UserRecord) -> SubmitError {
    SubmitError {
        kind,
        record: Box::new(record),
    }
}

/// Byte permits a record holds: its size, as a semaphore count (records are ≤ 10 MiB).
fn permit_count(record: &UserRecord) -> u32 {
    u32::try_from(record.size()).unwrap_or(u32::MAX)
}

/// Resolves to one user record's result.
#[derive(Debug)]
#[must_use = "the result says whether the record was stored"]
pub struct PutFuture {
    receiver: oneshot::Receiver<PutResult>,
}

impl Future for PutFuture {
    type Output = Result<PutOutcome, PutError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.receiver).poll(cx).map(|r| {
            // A pending record always sends before it is dropped; this is only a backstop.
            r.unwrap_or_else(|_| {
                Err(PutError {
                    kind: PutErrorKind::Stopped,
                    record: Box::new(UserRecord::new("", "", Bytes::new())),
                    attempts: Vec::new(),
                })
            })
        })
    }
}
