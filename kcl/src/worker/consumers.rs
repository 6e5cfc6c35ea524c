//! The shard consumers a worker runs: one task per held lease, whose end is always observed.
//! A consumer whose processor failed (returned an error or panicked) is restarted from the
//! lease's last checkpoint with a new processor after a jittered back-off that grows while the
//! shard keeps failing; the lease stays held, and a task exists for it, all the while.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use kinesis_retry::Backoff;
use rand::rngs::StdRng;
use tokio::task::{Id, JoinError, JoinSet};
use tokio_util::sync::CancellationToken;

use crate::config::WorkerConfig;
use crate::held::HeldLease;
use crate::leases::LeaseStore;
use crate::lifecycle::{ShardConsumer, ShardOutcome};
use crate::processor::RecordProcessorFactory;
use crate::streams::StreamContext;

/// What every consumer of a worker shares.
pub(crate) struct Context {
    pub(crate) store: Arc<dyn LeaseStore>,
    pub(crate) kinesis: Arc<dyn kinesis_api::Kinesis>,
    pub(crate) config: Arc<WorkerConfig>,
    pub(crate) factory: Arc<dyn RecordProcessorFactory>,
    pub(crate) jitter: Arc<crate::jitter::Jitter>,
    /// Cancelled when the worker shuts down gracefully (each stream's token is its child).
    pub(crate) stop: CancellationToken,
    /// Where the shard consumers report their phase and progress.
    pub(crate) status: Arc<super::status::Board>,
}

/// How a consumer task ended.
#[derive(Debug)]
pub(crate) enum Ended {
    Outcome(ShardOutcome),
    /// The processor (or the factory) panicked; the message when it was a string.
    Panicked(String),
    /// Aborted (an immediate stop).
    Aborted,
}

pub(crate) struct Consumers {
    ctx: Context,
    tasks: JoinSet<ShardOutcome>,
    by_task: HashMap<Id, (Arc<HeldLease>, Arc<StreamContext>)>,
    /// Consecutive failures per shard.
    failures: HashMap<String, Backoff>,
    rng: StdRng,
}

impl Consumers {
    pub(crate) fn new(ctx: Context) -> Self {
        Consumers {
            rng: ctx.jitter.rng(),
            ctx,
            tasks: JoinSet::new(),
            by_task: HashMap::new(),
            failures: HashMap::new(),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// Starts processing a newly held lease of `stream`.
    pub(crate) fn start(&mut self, held: Arc<HeldLease>, stream: Arc<StreamContext>) {
        self.spawn(held, stream, Duration::ZERO);
    }

    /// Restarts a failed shard after its back-off; `progressed`: it processed a batch first (the
    /// back-off starts over).
    pub(crate) fn restart(
        &mut self,
        held: Arc<HeldLease>,
        stream: Arc<StreamContext>,
        progressed: bool,
    ) -> Duration {
        let config = self.ctx.config.failure_backoff_config();
        let backoff = self
            .failures
            .entry(held.key.clone())
            .or_insert_with(|| Backoff::new(config));
        if progressed {
            backoff.reset();
        }
        let delay = backoff.next_delay(&mut self.rng);
        self.spawn(held, stream, delay);
        delay
    }

    /// Forgets a shard's failures (it finished, or the lease is gone).
    pub(crate) fn forget(&mut self, key: &str) {
        self.failures.remove(key);
    }

    fn spawn(&mut self, held: Arc<HeldLease>, stream: Arc<StreamContext>, delay: Duration) {
        let consumer = ShardConsumer {
            held: held.clone(),
            store: self.ctx.store.clone(),
            kinesis: self.ctx.kinesis.clone(),
            stream: stream.clone(),
            jitter: self.ctx.jitter.clone(),
            config: self.ctx.config.clone(),
            shutdown: stream.stop.child_token(),
            status: self.ctx.status.clone(),
        };
        if !delay.is_zero() {
            self.ctx
                .status
                .shard_phase(&held.key, super::ShardPhase::RestartPending);
        }
        let factory = self.ctx.factory.clone();
        let span = tracing::info_span!("shard_consumer", shard = %held.key);
        // A hand-off asks the processor to stop as a worker shutdown does.
        let (handoff, shutdown) = (held.handoff.clone(), consumer.shutdown.clone());
        let handle = self.tasks.spawn(tracing::Instrument::instrument(
            async move {
                if !delay.is_zero() {
                    tokio::select! {
                        biased;
                        () = consumer.held.lost.cancelled() => return ShardOutcome::LeaseLost,
                        () = consumer.shutdown.cancelled() => return ShardOutcome::ShutDown,
                        () = handoff.cancelled() => return ShardOutcome::ShutDown,
                        () = tokio::time::sleep(delay) => {}
                    }
                }
                let processor =
                    factory.create_for(consumer.stream.stream.as_str(), &consumer.held.shard_id);
                let run = consumer.run(processor);
                tokio::pin!(run);
                tokio::select! {
                    biased;
                    outcome = &mut run => outcome,
                    () = handoff.cancelled() => {
                        shutdown.cancel();
                        run.await
                    }
                }
            },
            span,
        ));
        self.by_task.insert(handle.id(), (held, stream));
    }

    /// The next consumer to end, with its lease and stream.
    pub(crate) async fn next(&mut self) -> Option<(Arc<HeldLease>, Arc<StreamContext>, Ended)> {
        let joined = self.tasks.join_next_with_id().await?;
        let (id, ended) = match joined {
            Ok((id, outcome)) => (id, Ended::Outcome(outcome)),
            Err(e) => (e.id(), ended_by(e)),
        };
        let (held, stream) = self
            .by_task
            .remove(&id)
            .expect("every consumer task is registered when spawned");
        // A shard taken again has a newer consumer already: its status stays.
        if !self.by_task.values().any(|(h, _)| h.key == held.key) {
            self.ctx.status.remove(&held.key);
        }
        Some((held, stream, ended))
    }

    /// Asks every consumer to stop gracefully (`shutdown_requested`).
    pub(crate) fn stop(&self) {
        self.ctx.stop.cancel();
    }

    /// Aborts every consumer (an immediate stop).
    pub(crate) fn abort_all(&mut self) {
        self.tasks.abort_all();
    }
}

fn ended_by(e: JoinError) -> Ended {
    if !e.is_panic() {
        return Ended::Aborted;
    }
    let payload = e.into_panic();
    let message = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(a panic without a message)".to_owned());
    Ended::Panicked(message)
}
