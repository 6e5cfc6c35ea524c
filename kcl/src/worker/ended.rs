//! What a worker does when a shard's consumer ends: release a finished or handed-off lease,
//! restart a failed processor after a back-off, or act on a fatal Kinesis error.

use std::sync::Arc;

use kinesis_retry::AwsError;

use super::consumers::{Consumers, Ended};
use super::{Stop, Worker};
use crate::coordinator::LeaseCoordinator;
use crate::held::HeldLease;
use crate::lifecycle::ShardOutcome;
use crate::shard_sync;
use crate::streams::StreamContext;

impl Worker {
    /// What a consumer's fatal Kinesis error means: the stream is gone (stop), the shard is gone
    /// (drop its lease), access is denied (stop), or something about this shard (restart it).
    pub(super) async fn on_kinesis_fatal(
        &self,
        held: Arc<HeldLease>,
        stream: Arc<StreamContext>,
        error: AwsError,
        coordinator: &LeaseCoordinator,
        consumers: &mut Consumers,
    ) -> Option<Stop> {
        if error.is_not_found() {
            if let Some(gone) = self.stream_is_gone(&stream.stream).await {
                let stop = self.stream_failed(&stream, gone);
                coordinator.release(&held).await;
                return stop;
            }
            let listed =
                shard_sync::list_all_shards(&*self.kinesis, &stream.stream, &self.jitter).await;
            if let Ok(shards) = listed
                && !shards.iter().any(|s| s.id == held.shard_id)
            {
                tracing::warn!(lease = %held.key, stream = %stream.stream.as_str(), error = %error, "the lease's shard does not exist in the stream (expired past retention, or the lease came from elsewhere): lease deleted");
                coordinator.drop_lease(&held);
                consumers.forget(&held.key);
                if let Err(e) = self.store.delete(&held.key).await {
                    tracing::warn!(lease = %held.key, error = %e, "deleting the lease of a missing shard failed; it is tried again when taken next");
                }
                return None;
            }
        } else if matches!(
            error.code(),
            Some(
                "AccessDeniedException"
                    | "UnrecognizedClientException"
                    | "KMSAccessDeniedException"
                    | "KMSDisabledException"
                    | "KMSNotFoundException"
            )
        ) {
            let stop = self.stream_failed(&stream, error);
            coordinator.release(&held).await;
            return stop;
        }
        let delay = consumers.restart(held.clone(), stream, false);
        tracing::error!(shard = %held.key, error = %error, retry_in = ?delay, "Kinesis refused reading the shard; restarting it from its checkpoint after a back-off");
        None
    }

    /// Acts on a consumer's end; `Some` when the worker must stop.
    pub(super) async fn on_consumer_end(
        &self,
        held: Arc<HeldLease>,
        stream: Arc<StreamContext>,
        ended: Ended,
        coordinator: &LeaseCoordinator,
        consumers: &mut Consumers,
    ) -> Option<Stop> {
        // A lease being handed off goes to its new owner (from the last checkpoint) instead of
        // restarting here.
        if held.handoff.is_cancelled() && !held.lost.is_cancelled() {
            if let Ended::Outcome(ShardOutcome::ProcessorFailed { call, error, .. }) = &ended {
                tracing::warn!(shard = %held.key, call, error = %error, "record processor failed while handing its lease off");
            }
            if let Ended::Panicked(message) = &ended {
                tracing::error!(shard = %held.key, panic = %message, "record processor panicked while handing its lease off");
            }
            if !matches!(ended, Ended::Outcome(ShardOutcome::KinesisFatal(_))) {
                consumers.forget(&held.key);
                coordinator.release(&held).await;
                crate::kcl_metrics::handed_off();
                tracing::info!(shard = %held.key, "lease handed off");
                return None;
            }
        }
        let restart = |consumers: &mut Consumers, held: Arc<HeldLease>, progressed| {
            if held.lost.is_cancelled() {
                coordinator.drop_lease(&held);
                consumers.forget(&held.key);
                None
            } else {
                Some(consumers.restart(held, stream.clone(), progressed))
            }
        };
        match ended {
            // A finished shard is released: nobody needs to hold it any more.
            Ended::Outcome(ShardOutcome::Finished) => {
                consumers.forget(&held.key);
                coordinator.release(&held).await;
            }
            // The stream is no longer read (removed from the list, or refused by Kinesis): its
            // processor had its `shutdown_requested`; the lease is released for whoever reads
            // the stream.
            Ended::Outcome(ShardOutcome::ShutDown) if stream.stop.is_cancelled() => {
                consumers.forget(&held.key);
                coordinator.release(&held).await;
                tracing::info!(shard = %held.key, stream = %stream.stream.as_str(), "stopped: the stream is no longer read; lease released");
            }
            Ended::Outcome(ShardOutcome::LeaseLost | ShardOutcome::ShutDown) | Ended::Aborted => {
                consumers.forget(&held.key);
                coordinator.drop_lease(&held);
            }
            Ended::Outcome(ShardOutcome::ProcessorFailed {
                call,
                error,
                progressed,
            }) => {
                if let Some(delay) = restart(consumers, held.clone(), progressed) {
                    tracing::error!(shard = %held.key, call, error = %error, retry_in = ?delay, "record processor failed; the shard restarts from its last checkpoint after a back-off");
                }
            }
            Ended::Panicked(message) => {
                if let Some(delay) = restart(consumers, held.clone(), false) {
                    tracing::error!(shard = %held.key, panic = %message, retry_in = ?delay, "record processor panicked; the shard restarts from its last checkpoint after a back-off");
                }
            }
            Ended::Outcome(ShardOutcome::KinesisFatal(error)) => {
                return self
                    .on_kinesis_fatal(held, stream, error, coordinator, consumers)
                    .await;
            }
        }
        None
    }
}
