//! The shard lifecycle, transition by transition.

use super::*;
use kinesis_format::SequenceNumber;

fn at(seq: u128, sub: u64) -> ExtendedSequenceNumber {
    ExtendedSequenceNumber::new(SequenceNumber::parse(&seq.to_string()).unwrap(), sub)
}

fn reading(initialized: bool, after: Option<ExtendedSequenceNumber>, progressed: bool) -> Reading {
    Reading {
        initialized,
        after,
        progressed,
    }
}

fn next(state: ShardState, event: Event) -> ShardState {
    match transition(state, event) {
        Step::Next(s) => s,
        Step::Done(o) => panic!("expected a next state, got the end {o:?}"),
    }
}

fn done(state: ShardState, event: Event) -> ShardOutcome {
    match transition(state, event) {
        Step::Done(o) => o,
        Step::Next(s) => panic!("expected the end, got {s:?}"),
    }
}

fn failure() -> ProcessorError {
    "boom".into()
}

fn fatal() -> AwsError {
    AwsError::new(
        "GetRecords",
        kinesis_retry::AwsErrorKind::Service {
            code: "ResourceNotFoundException".into(),
            message: "stream gone".into(),
            status: Some(400),
        },
    )
}

#[test]
fn parents_done_starts_a_fresh_reading() {
    let s = next(ShardState::WaitingOnParents, Event::ParentsDone);
    assert!(matches!(s, ShardState::Initializing(r) if r == Reading::default()));
}

#[test]
fn a_stop_before_initialize_ends_without_a_processor_call() {
    for state in [
        || ShardState::WaitingOnParents,
        || ShardState::Initializing(Reading::default()),
    ] {
        assert!(matches!(
            done(state(), Event::LeaseLost),
            ShardOutcome::LeaseLost
        ));
        assert!(matches!(
            done(state(), Event::ShutdownRequested),
            ShardOutcome::ShutDown
        ));
        assert!(matches!(
            done(state(), Event::KinesisFatal(fatal())),
            ShardOutcome::KinesisFatal(_)
        ));
    }
}

#[test]
fn a_stop_after_initialize_gives_the_processor_its_last_call() {
    let states = [
        || ShardState::Initializing(reading(true, None, false)),
        || ShardState::Processing(reading(true, Some(at(5, 0)), true)),
        || ShardState::ShardEnded {
            children: Vec::new(),
            progressed: true,
        },
    ];
    for state in states {
        assert!(matches!(
            next(state(), Event::LeaseLost),
            ShardState::Stopping(Stop::LeaseLost)
        ));
        assert!(matches!(
            next(state(), Event::ShutdownRequested),
            ShardState::Stopping(Stop::Shutdown)
        ));
        assert!(matches!(
            next(state(), Event::KinesisFatal(fatal())),
            ShardState::Stopping(Stop::Fatal(_))
        ));
    }
}

#[test]
fn the_last_call_ends_with_the_reason_it_was_made_for() {
    assert!(matches!(
        done(ShardState::Stopping(Stop::LeaseLost), Event::Notified),
        ShardOutcome::LeaseLost
    ));
    assert!(matches!(
        done(ShardState::Stopping(Stop::Shutdown), Event::Notified),
        ShardOutcome::ShutDown
    ));
    assert!(matches!(
        done(ShardState::Stopping(Stop::Fatal(fatal())), Event::Notified),
        ShardOutcome::KinesisFatal(_)
    ));
    // A second reason while stopping does not replace the first.
    assert!(matches!(
        next(ShardState::Stopping(Stop::Shutdown), Event::LeaseLost),
        ShardState::Stopping(Stop::Shutdown)
    ));
}

#[test]
fn the_first_start_resumes_inside_the_checkpointed_record() {
    let s = next(
        ShardState::Initializing(Reading::default()),
        Event::ReadsStarted {
            checkpoint: Some(at(7, 2)),
        },
    );
    assert!(matches!(s, ShardState::Processing(r) if r == reading(true, Some(at(7, 2)), false)));
}

#[test]
fn a_restart_of_the_reads_continues_after_what_was_delivered_not_the_checkpoint() {
    let s = next(
        ShardState::Initializing(reading(true, Some(at(9, 0)), true)),
        Event::ReadsStarted {
            checkpoint: Some(at(7, 2)),
        },
    );
    assert!(matches!(s, ShardState::Processing(r) if r == reading(true, Some(at(9, 0)), true)));
}

#[test]
fn a_failed_start_retries_keeping_its_data() {
    let r = reading(true, Some(at(3, 1)), true);
    let s = next(ShardState::Initializing(r.clone()), Event::StartFailed);
    assert!(matches!(s, ShardState::Initializing(got) if got == r));
    assert!(matches!(
        done(ShardState::Initializing(r), Event::AlreadyFinished),
        ShardOutcome::Finished
    ));
}

#[test]
fn delivered_batches_move_the_resume_position_and_mark_progress() {
    let s = next(
        ShardState::Processing(reading(true, Some(at(1, 0)), false)),
        Event::Delivered {
            last: Some(at(4, 3)),
            end: None,
        },
    );
    assert!(matches!(&s, ShardState::Processing(r) if *r == reading(true, Some(at(4, 3)), true)));
    // A batch filtered down to nothing keeps the position.
    let s = next(
        s,
        Event::Delivered {
            last: None,
            end: None,
        },
    );
    assert!(matches!(&s, ShardState::Processing(r) if *r == reading(true, Some(at(4, 3)), true)));
    // The fetcher stopping sends us back to get an iterator after that position.
    let s = next(s, Event::ReadsStopped);
    assert!(matches!(s, ShardState::Initializing(r) if r == reading(true, Some(at(4, 3)), true)));
}

#[test]
fn the_last_batch_ends_the_shard_with_its_children() {
    let child = ChildShard::new(
        "shardId-000000000002",
        vec!["shardId-000000000000".into()],
        Some(kinesis_format::HashKeyRange::ALL),
    );
    let s = next(
        ShardState::Processing(reading(true, None, false)),
        Event::Delivered {
            last: None,
            end: Some(vec![child.clone()]),
        },
    );
    match s {
        ShardState::ShardEnded {
            children,
            progressed,
        } => {
            assert_eq!(children, vec![child]);
            assert!(!progressed, "an empty last batch is no progress");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn shard_end_waits_for_the_checkpoint() {
    let ended = || ShardState::ShardEnded {
        children: Vec::new(),
        progressed: true,
    };
    assert!(matches!(
        next(ended(), Event::EndNotCheckpointed),
        ShardState::ShardEnded { .. }
    ));
    assert!(matches!(
        done(ended(), Event::EndCheckpointed),
        ShardOutcome::Finished
    ));
}

#[test]
fn a_processor_failure_ends_the_shard_and_says_whether_it_had_progressed() {
    let failed = |state| match done(
        state,
        Event::ProcessorFailed {
            call: "process_records",
            error: failure(),
        },
    ) {
        ShardOutcome::ProcessorFailed { progressed, .. } => progressed,
        other => panic!("{other:?}"),
    };
    assert!(!failed(ShardState::Initializing(Reading::default())));
    assert!(!failed(ShardState::Processing(reading(true, None, false))));
    assert!(failed(ShardState::Processing(reading(true, None, true))));
    assert!(failed(ShardState::ShardEnded {
        children: Vec::new(),
        progressed: true
    }));
}
