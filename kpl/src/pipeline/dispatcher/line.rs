//! One shard's line in the dispatcher: the Kinesis records waiting for the shard's rate limiter,
//! and in ordered mode what the line has on its way.

use std::collections::VecDeque;

use kinesis_format::HashKeyRange;
use tokio::time::Instant;

use crate::pipeline::limiter::ShardLimiter;
use crate::pipeline::pending::{KinesisRecord, Pending};

#[derive(Debug)]
pub(super) struct ShardQueue {
    pub(super) limiter: ShardLimiter,
    pub(super) queue: VecDeque<KinesisRecord>,
    /// Ordered mode: a record of this line is on its way (collected or in a call).
    pub(super) in_flight: bool,
    /// Ordered mode: user records of this line to re-send before anything else, and when.
    pub(super) redo: Vec<Pending>,
    pub(super) redo_at: Option<Instant>,
    /// The limiter held its front record back since the queue was last empty.
    pub(super) rate_limited: bool,
    /// Ordered mode: its record in flight landed on another shard and waits for a fresh map.
    pub(super) parked: bool,
    /// Ordered mode: a fresh map showed its shard closed (handled once, see `reshard_lines`).
    pub(super) retired: bool,
    /// The shard's hash-key range (all keys if the map did not know it).
    pub(super) range: HashKeyRange,
}

impl ShardQueue {
    pub(super) fn new(percent: u32, range: HashKeyRange) -> Self {
        ShardQueue {
            parked: false,
            retired: false,
            range,
            limiter: ShardLimiter::new(percent, Instant::now()),
            queue: VecDeque::new(),
            in_flight: false,
            redo: Vec::new(),
            redo_at: None,
            rate_limited: false,
        }
    }

    /// Whether the line may send its front record now (ordered mode: nothing else on its way).
    pub(super) fn may_send(&self, ordered: bool) -> bool {
        !ordered || (!self.in_flight && !self.parked && self.redo_at.is_none())
    }

    /// Ordered mode: whether records of this line are still on their way or waiting.
    pub(super) fn outstanding(&self) -> bool {
        self.in_flight || self.parked || !self.queue.is_empty() || !self.redo.is_empty()
    }
}
