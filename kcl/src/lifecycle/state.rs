//! The states of one shard's processing, each carrying what its next step needs, and the pure
//! function that moves between them. The I/O of each state lives in `shard_consumer.rs`, which
//! turns what happened into an [`Event`] and asks [`transition`] where to go.

use kinesis_api::ChildShard;
use kinesis_format::ExtendedSequenceNumber;
use kinesis_retry::AwsError;

use crate::processor::ProcessorError;

/// Where one shard's reading stands (carried from `Initializing` to `Processing` and back).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Reading {
    /// The processor's `initialize` has run: restarting the reads must not run it again.
    pub(crate) initialized: bool,
    /// The last position handed to the processor, or the checkpoint to resume inside: reads
    /// (re)start at its record and skip up to it.
    pub(crate) after: Option<ExtendedSequenceNumber>,
    /// Some batch was processed successfully (a later failure restarts its back-off small).
    pub(crate) progressed: bool,
}

/// Why a shard stops with a last call to its processor.
#[derive(Debug)]
pub(crate) enum Stop {
    /// Another worker took the lease: `lease_lost`.
    LeaseLost,
    /// The worker shuts down gracefully: `shutdown_requested` (the processor may checkpoint).
    Shutdown,
    /// Kinesis refused for good: `shutdown_requested` (a chance to checkpoint), then the worker
    /// decides what the failure means.
    Fatal(AwsError),
}

/// Where one shard's processing stands.
#[derive(Debug)]
pub(crate) enum ShardState {
    /// A parent shard has not been processed to its end yet.
    WaitingOnParents,
    /// Getting a shard iterator (and initialising the processor the first time).
    Initializing(Reading),
    /// Records are being read ahead and handed to the processor.
    Processing(Reading),
    /// The shard was read to its end: child leases are created and the processor must checkpoint
    /// SHARD_END.
    ShardEnded {
        children: Vec<ChildShard>,
        progressed: bool,
    },
    /// The processor gets its last call before the shard stops.
    Stopping(Stop),
}

/// What happened in the current state.
#[derive(Debug)]
pub(crate) enum Event {
    /// Every parent is at SHARD_END or has no lease any more.
    ParentsDone,
    /// The lease is at SHARD_END already: nothing to read.
    AlreadyFinished,
    /// An iterator is ready and the processor initialised; `checkpoint` is the record position to
    /// resume inside when the lease's checkpoint is one (first start only).
    ReadsStarted {
        checkpoint: Option<ExtendedSequenceNumber>,
    },
    /// Getting the iterator failed in a way worth retrying (after a pause).
    StartFailed,
    /// A batch went to the processor, which returned success. `last` is the last position it
    /// got (`None` when everything in the batch was filtered out); `end` holds the children when
    /// the batch was the shard's last.
    Delivered {
        last: Option<ExtendedSequenceNumber>,
        end: Option<Vec<ChildShard>>,
    },
    /// The fetcher stopped before the shard's end (its iterator expired before reading a record):
    /// read again from where we are.
    ReadsStopped,
    /// SHARD_END is checkpointed.
    EndCheckpointed,
    /// `shard_ended` returned without checkpointing SHARD_END (or the child leases could not be
    /// written yet): try again after a pause.
    EndNotCheckpointed,
    /// The lease was lost (a renewal or a checkpoint found it taken).
    LeaseLost,
    /// The worker shuts down gracefully.
    ShutdownRequested,
    /// The processor returned an error from `call`.
    ProcessorFailed {
        call: &'static str,
        error: ProcessorError,
    },
    /// Kinesis refused in a way no retry fixes (stream or shard gone, access denied...).
    KinesisFatal(AwsError),
    /// The processor had its last call (`lease_lost` or `shutdown_requested`).
    Notified,
}

/// How a shard consumer ended.
#[derive(Debug)]
pub(crate) enum ShardOutcome {
    /// Processed to its end and checkpointed SHARD_END.
    Finished,
    /// The lease went to another worker.
    LeaseLost,
    /// Stopped for a graceful shutdown.
    ShutDown,
    /// The processor returned an error: the shard restarts from its checkpoint after a back-off.
    /// (A panic reaches the worker as the task's failure instead.)
    ProcessorFailed {
        call: &'static str,
        error: ProcessorError,
        /// Whether some batch was processed successfully first (resets the back-off).
        progressed: bool,
    },
    /// Kinesis answered with an error that retrying cannot fix: the worker decides what it means.
    KinesisFatal(AwsError),
}

/// The next state, or the end.
#[derive(Debug)]
pub(crate) enum Step {
    Next(ShardState),
    Done(ShardOutcome),
}

/// Where `event` in `state` leads. Events a state cannot produce leave it unchanged (and are a
/// bug in the driver, caught in debug builds).
///
/// A processor whose `initialize` never ran gets no last call: a stop before it ends at once.
pub(crate) fn transition(state: ShardState, event: Event) -> Step {
    use ShardState as S;
    use Step::{Done, Next};
    let initialized = match &state {
        S::WaitingOnParents => false,
        S::Initializing(r) => r.initialized,
        S::Processing(_) | S::ShardEnded { .. } | S::Stopping(_) => true,
    };
    let progressed = match &state {
        S::Initializing(r) | S::Processing(r) => r.progressed,
        S::ShardEnded { progressed, .. } => *progressed,
        S::WaitingOnParents | S::Stopping(_) => false,
    };
    let stop = |stop: Stop, outcome: ShardOutcome| {
        if initialized {
            Next(S::Stopping(stop))
        } else {
            Done(outcome)
        }
    };
    match (state, event) {
        // Stops, from any working state.
        (S::Stopping(s), Event::Notified) => Done(match s {
            Stop::LeaseLost => ShardOutcome::LeaseLost,
            Stop::Shutdown => ShardOutcome::ShutDown,
            Stop::Fatal(e) => ShardOutcome::KinesisFatal(e),
        }),
        (S::Stopping(s), _) => Next(S::Stopping(s)),
        (_, Event::LeaseLost) => stop(Stop::LeaseLost, ShardOutcome::LeaseLost),
        (_, Event::ShutdownRequested) => stop(Stop::Shutdown, ShardOutcome::ShutDown),
        (_, Event::KinesisFatal(e)) if initialized => Next(S::Stopping(Stop::Fatal(e))),
        (_, Event::KinesisFatal(e)) => Done(ShardOutcome::KinesisFatal(e)),
        (_, Event::ProcessorFailed { call, error }) => Done(ShardOutcome::ProcessorFailed {
            call,
            error,
            progressed,
        }),

        (S::WaitingOnParents, Event::ParentsDone) => Next(S::Initializing(Reading::default())),

        (S::Initializing(_), Event::AlreadyFinished) => Done(ShardOutcome::Finished),
        (S::Initializing(r), Event::ReadsStarted { checkpoint }) => {
            let after = if r.initialized { r.after } else { checkpoint };
            Next(S::Processing(Reading {
                initialized: true,
                after,
                progressed: r.progressed,
            }))
        }
        (S::Initializing(r), Event::StartFailed) => Next(S::Initializing(r)),

        (S::Processing(r), Event::Delivered { last, end }) => {
            let progressed = r.progressed || last.is_some();
            match end {
                Some(children) => Next(S::ShardEnded {
                    children,
                    progressed,
                }),
                None => Next(S::Processing(Reading {
                    initialized: true,
                    after: last.or(r.after),
                    progressed,
                })),
            }
        }
        (S::Processing(r), Event::ReadsStopped) => Next(S::Initializing(r)),

        (S::ShardEnded { .. }, Event::EndCheckpointed) => Done(ShardOutcome::Finished),
        (
            S::ShardEnded {
                children,
                progressed,
            },
            Event::EndNotCheckpointed,
        ) => Next(S::ShardEnded {
            children,
            progressed,
        }),

        (state, event) => {
            debug_assert!(false, "{event:?} cannot happen in {state:?}");
            Next(state)
        }
    }
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
