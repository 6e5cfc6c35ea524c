//! The fleet simulation: N workers in one process, under tokio's paused clock, on the in-memory
//! Kinesis and lease store, each worker behind its own [`probe`] (a gate that pauses it, and the
//! journal of its takes and refused renewals), with processors that record every delivery.
//!
//! [`scenario::run`] is one seeded run with its schedule of events and its checks; the
//! `fleet_simulation` test runs a few hundred seeds, the `fleet_scale` binary the 100 × 10,000
//! benchmark. Everything a run does follows from its seed: the fleet, the schedule, the services'
//! faults and every worker's jitter (`jitter_seed`); the paused clock orders the rest.

pub mod invariants;
pub mod journal;
pub mod probe;
pub mod scenario;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use kcl::leases::{LeaseStore, MemoryLeaseStore};
use kcl::{
    Checkpointer, InitializeInput, ProcessRecordsInput, ProcessorResult, RecordProcessor,
    RecordProcessorFactory, ShutdownHandle, StreamsHandle, Worker, WorkerConfig, WorkerError,
};
use kinesis_api::memory::MemoryKinesis;
use tokio::task::JoinHandle;

use crate::delivery_file::{Checkpoint, Deliveries, Delivery};
use journal::{Entry, Journal};
use probe::{Gate, ProbedKinesis, ProbedStore, StoreCalls};

/// Deliveries and stored checkpoints of every processor of a run, in one total order.
#[derive(Clone, Debug, Default)]
pub struct Log(pub Arc<Mutex<Deliveries>>);

impl Log {
    /// A copy of everything so far.
    pub fn snapshot(&self) -> Deliveries {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// The processor every simulated worker runs: records each delivery, checkpoints after each
/// batch, checkpoints SHARD_END and at shutdown. A paused worker's processors wait at the gate.
struct Recorder {
    log: Option<Log>,
    journal: Journal,
    gate: Gate,
    worker: String,
    session: String,
    /// The shard id (deliveries name it, as the stored records do).
    shard: String,
    /// The lease key (the journal names it, as the lease store's probe does).
    lease: String,
}

#[async_trait]
impl RecordProcessor for Recorder {
    async fn initialize(&mut self, _input: InitializeInput) -> ProcessorResult {
        self.journal.push(Entry::Initialized {
            worker: self.worker.clone(),
            session: self.session.clone(),
            shard: self.lease.clone(),
        });
        Ok(())
    }

    async fn process_records(&mut self, input: ProcessRecordsInput<'_>) -> ProcessorResult {
        self.journal.push(Entry::BatchStart {
            worker: self.worker.clone(),
            session: self.session.clone(),
            shard: self.lease.clone(),
        });
        self.gate.pass().await;
        let Some(log) = &self.log else {
            return Ok(());
        };
        {
            let mut log = log.0.lock().unwrap_or_else(|e| e.into_inner());
            for r in &input.records {
                let n = log.deliveries.len();
                log.deliveries.push(Delivery {
                    session: self.session.clone(),
                    shard: self.shard.clone(),
                    key: r.partition_key.to_string(),
                    position: r.position(),
                    data: String::from_utf8_lossy(&r.data).into_owned(),
                    at: n as u128,
                    order: (0, n),
                });
            }
        }
        if input.checkpointer.checkpoint().await.is_ok()
            && let Some(last) = input.records.last()
        {
            log.0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .checkpoints
                .push(Checkpoint {
                    session: self.session.clone(),
                    shard: self.shard.clone(),
                    position: last.position(),
                });
        }
        Ok(())
    }

    async fn shard_ended(&mut self, checkpointer: &Checkpointer) -> ProcessorResult {
        self.gate.pass().await;
        checkpointer.checkpoint().await?;
        self.ended();
        Ok(())
    }

    async fn lease_lost(&mut self) -> ProcessorResult {
        self.ended();
        Ok(())
    }

    async fn shutdown_requested(&mut self, checkpointer: &Checkpointer) -> ProcessorResult {
        self.gate.pass().await;
        let _ = checkpointer.checkpoint().await;
        self.ended();
        Ok(())
    }
}

impl Recorder {
    fn ended(&self) {
        self.journal.push(Entry::Ended {
            worker: self.worker.clone(),
            session: self.session.clone(),
            shard: self.lease.clone(),
        });
    }
}

/// Makes the recording processors of one worker.
struct Recorders {
    log: Option<Log>,
    journal: Journal,
    gate: Gate,
    worker: String,
    sessions: Arc<AtomicU64>,
    /// Stream name → identifier, for the lease keys of a multi-stream fleet.
    identifiers: Arc<HashMap<String, String>>,
}

impl RecordProcessorFactory for Recorders {
    fn create(&self, shard: &str) -> Box<dyn RecordProcessor> {
        self.recorder(shard, shard.to_owned())
    }

    fn create_for(&self, stream: &str, shard: &str) -> Box<dyn RecordProcessor> {
        let lease = match self.identifiers.get(stream) {
            Some(identifier) => format!("{identifier}:{shard}"),
            None => shard.to_owned(),
        };
        self.recorder(shard, lease)
    }
}

impl Recorders {
    fn recorder(&self, shard: &str, lease: String) -> Box<dyn RecordProcessor> {
        let n = self.sessions.fetch_add(1, Ordering::Relaxed);
        Box::new(Recorder {
            log: self.log.clone(),
            journal: self.journal.clone(),
            gate: self.gate.clone(),
            worker: self.worker.clone(),
            session: format!("{}/{n}", self.worker),
            shard: shard.to_owned(),
            lease,
        })
    }
}

/// A running worker.
#[derive(Debug)]
struct Member {
    id: String,
    handle: ShutdownHandle,
    task: JoinHandle<Result<(), WorkerError>>,
    gate: Gate,
    /// A multi-stream worker's list.
    streams: Option<StreamsHandle>,
}

/// The simulated fleet: shared services, the journal, and a slot per worker.
#[derive(Debug)]
pub struct Fleet {
    /// The stream's Kinesis (stream `"s"`).
    pub kinesis: Arc<MemoryKinesis>,
    /// The lease table.
    pub store: Arc<MemoryLeaseStore>,
    /// Takes, refused renewals, processor starts and batches.
    pub journal: Journal,
    /// Deliveries (`None`: not recorded, for the scale benchmark).
    pub log: Option<Log>,
    /// Lease-store calls, all workers together.
    pub store_calls: Arc<StoreCalls>,
    sessions: Arc<AtomicU64>,
    members: Vec<Option<Member>>,
    config: WorkerConfig,
    seed: u64,
    starts: u64,
    /// Multi-stream workers' list (`None`: single-stream workers on `"s"`).
    streams: Option<Vec<String>>,
    identifiers: Arc<HashMap<String, String>>,
}

impl Fleet {
    /// A fleet of `slots` (none running yet) whose workers use `config` (with their own id and
    /// jitter seed).
    pub fn new(
        kinesis: Arc<MemoryKinesis>,
        store: Arc<MemoryLeaseStore>,
        slots: usize,
        config: WorkerConfig,
        seed: u64,
        record_deliveries: bool,
    ) -> Fleet {
        Fleet {
            kinesis,
            store,
            journal: Journal::default(),
            log: record_deliveries.then(Log::default),
            store_calls: Arc::default(),
            sessions: Arc::default(),
            members: (0..slots).map(|_| None).collect(),
            config,
            seed,
            starts: 0,
            streams: None,
            identifiers: Arc::default(),
        }
    }

    /// The same fleet of multi-stream workers, reading `streams` (their identifiers by name).
    pub fn multi_stream(
        mut self,
        streams: Vec<String>,
        identifiers: HashMap<String, String>,
    ) -> Fleet {
        self.streams = Some(streams);
        self.identifiers = Arc::new(identifiers);
        self
    }

    /// Adds a stream to every running multi-stream worker's list, and to later workers'.
    pub fn add_stream(&mut self, stream: &str) {
        if let Some(streams) = &mut self.streams {
            streams.push(stream.to_owned());
        }
        for m in self.members.iter().flatten() {
            if let Some(list) = &m.streams {
                list.add(stream);
            }
        }
    }

    /// Removes a stream from every running multi-stream worker's list, and from later workers'.
    pub fn remove_stream(&mut self, stream: &str) {
        if let Some(streams) = &mut self.streams {
            streams.retain(|s| s != stream);
        }
        for m in self.members.iter().flatten() {
            if let Some(list) = &m.streams {
                list.remove(stream);
            }
        }
    }

    /// How many slots (running or not).
    pub fn slots(&self) -> usize {
        self.members.len()
    }

    /// Adds an empty slot; its index.
    pub fn add_slot(&mut self) -> usize {
        self.members.push(None);
        self.members.len() - 1
    }

    /// The id running in `slot`.
    pub fn id(&self, slot: usize) -> Option<&str> {
        self.members[slot].as_ref().map(|m| m.id.as_str())
    }

    /// The ids of the running workers.
    pub fn live(&self) -> HashSet<String> {
        self.members
            .iter()
            .flatten()
            .map(|m| m.id.clone())
            .collect()
    }

    /// Starts worker `id` in `slot`.
    pub fn start(&mut self, slot: usize, id: String) {
        let gate = Gate::default();
        let factory = Recorders {
            log: self.log.clone(),
            journal: self.journal.clone(),
            gate: gate.clone(),
            worker: id.clone(),
            sessions: self.sessions.clone(),
            identifiers: self.identifiers.clone(),
        };
        let config = self
            .config
            .clone()
            .worker_id(&id)
            .jitter_seed(self.seed.wrapping_mul(1_000_003).wrapping_add(self.starts));
        self.starts += 1;
        let store: Arc<dyn LeaseStore> = Arc::new(ProbedStore {
            inner: self.store.clone(),
            worker: id.clone(),
            gate: gate.clone(),
            journal: self.journal.clone(),
            calls: self.store_calls.clone(),
        });
        let kinesis = Arc::new(ProbedKinesis {
            inner: self.kinesis.clone(),
            gate: gate.clone(),
        });
        let builder = Worker::builder()
            .kinesis(kinesis)
            .lease_store(store)
            .processor_factory(factory)
            .config(config);
        let builder = match &self.streams {
            Some(streams) => builder.streams(streams.iter().map(String::as_str)),
            None => builder.stream("s"),
        };
        let worker = builder.build().expect("a valid simulated worker");
        let (handle, streams) = (worker.shutdown_handle(), worker.streams_handle());
        let task = tokio::spawn(worker.run());
        self.members[slot] = Some(Member {
            id,
            handle,
            task,
            gate,
            streams,
        });
    }

    /// Stops a worker dead (no release, no last calls); its id.
    pub async fn crash(&mut self, slot: usize) -> Result<Option<String>, String> {
        let id = self.stop(slot, ShutdownHandle::stop_now).await?;
        if let Some(id) = &id {
            self.journal.push(Entry::Crashed { worker: id.clone() });
        }
        Ok(id)
    }

    /// Shuts a worker down gracefully (processors checkpoint, leases released); its id.
    pub async fn shutdown(&mut self, slot: usize) -> Result<Option<String>, String> {
        self.stop(slot, ShutdownHandle::shutdown).await
    }

    /// Stops the worker in `slot` through `how`, opening its gate so it can; its id.
    async fn stop(
        &mut self,
        slot: usize,
        how: fn(&ShutdownHandle),
    ) -> Result<Option<String>, String> {
        let Some(m) = self.members[slot].take() else {
            return Ok(None);
        };
        how(&m.handle);
        m.gate.set_open(true);
        finished(&m.id, m.task).await?;
        Ok(Some(m.id))
    }

    /// Pauses (`true`) or resumes a worker: while paused, every call it makes to the services and
    /// every call to its processors waits.
    pub fn pause(&self, slot: usize, paused: bool) {
        if let Some(m) = &self.members[slot] {
            m.gate.set_open(!paused);
        }
    }

    /// Shuts every worker down gracefully.
    pub async fn shutdown_all(&mut self) -> Result<(), String> {
        for slot in 0..self.members.len() {
            self.shutdown(slot).await?;
        }
        Ok(())
    }
}

/// Polls `done` every `step` (of the paused clock) for at most `limit`; how long it took, if it
/// happened.
pub async fn until(
    step: Duration,
    limit: Duration,
    mut done: impl AsyncFnMut() -> bool,
) -> Option<Duration> {
    let start = tokio::time::Instant::now();
    loop {
        if done().await {
            return Some(start.elapsed());
        }
        if start.elapsed() >= limit {
            return None;
        }
        tokio::time::sleep(step).await;
    }
}

async fn finished(id: &str, task: JoinHandle<Result<(), WorkerError>>) -> Result<(), String> {
    match task.await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("worker {id} failed: {e}")),
        Err(e) => Err(format!("worker {id}'s task failed: {e}")),
    }
}
