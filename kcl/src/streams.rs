//! Multi-stream: one worker (and one lease table) for several streams, as the Java KCL's
//! `MultiStreamTracker`. Leases carry the Java KCL's multi-stream key
//! (`account:stream:creationEpoch:shardId`) and attributes (`streamName`, `shardId`), so the
//! same table holds every stream's shards and a fleet balances all of them together.
//!
//! The list can change while the worker runs ([`StreamsHandle`]): an added stream gets its
//! leases and is taken like any other; a removed one stops (its processors get
//! `shutdown_requested`, checkpoint, and the leases are released) and its leases are kept or,
//! with [`FormerStreamLeases::DeleteAfter`], deleted once nobody has touched them for that long.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kinesis_api::StreamRef;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::InitialPosition;
use crate::leases::{CheckpointPosition, Lease};

/// One stream of a multi-stream worker: its name (or ARN) and, optionally, its own initial
/// position (default: [`WorkerConfig::initial_position`](crate::WorkerConfig::initial_position)).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct StreamSpec {
    /// The stream's name, or its ARN (`arn:...`).
    pub name: String,
    /// Where a first look at its shards starts; `None`: the worker's setting.
    pub initial_position: Option<InitialPosition>,
}

impl StreamSpec {
    /// The stream `name` (or ARN) at the worker's initial position.
    pub fn new(name: impl Into<String>) -> Self {
        StreamSpec {
            name: name.into(),
            initial_position: None,
        }
    }

    /// Starts this stream's shards at `position` on the application's first look at them.
    #[must_use]
    pub fn initial_position(mut self, position: InitialPosition) -> Self {
        self.initial_position = Some(position);
        self
    }

    /// The stream's name without an ARN's prefix.
    pub(crate) fn stream_name(&self) -> &str {
        name_of(&self.name)
    }
}

impl From<&str> for StreamSpec {
    fn from(name: &str) -> Self {
        StreamSpec::new(name)
    }
}

impl From<String> for StreamSpec {
    fn from(name: String) -> Self {
        StreamSpec::new(name)
    }
}

/// The stream name inside an identifier (`account:name:creationEpoch`).
pub(crate) fn name_in_identifier(identifier: &str) -> Option<&str> {
    identifier.split(':').nth(1)
}

/// A stream's name from its name or ARN (`arn:aws:kinesis:region:account:stream/name`).
fn name_of(name_or_arn: &str) -> &str {
    match name_or_arn.strip_prefix("arn:") {
        Some(rest) => rest.rsplit_once("stream/").map_or(rest, |(_, name)| name),
        None => name_or_arn,
    }
}

/// What happens to the leases of a stream that is no longer read: removed from the list, or
/// deleted and created again (its leases name the old stream's creation time).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum FormerStreamLeases {
    /// Kept (the Java KCL's default): adding the stream again resumes from its checkpoints.
    #[default]
    Keep,
    /// Deleted once nobody has changed them for this long (at least the failover time), by the
    /// lease cleanup: a lease some worker still holds or takes is renewed, so it is never
    /// deleted. Adding the stream again afterwards starts at its initial position.
    DeleteAfter(Duration),
}

/// Changes a running multi-stream worker's list of streams, from any task
/// ([`Worker::streams_handle`](crate::Worker::streams_handle)). Give every worker of an
/// application the same list: a worker takes leases only of the streams on its own list.
#[derive(Clone, Debug)]
pub struct StreamsHandle(pub(crate) Arc<Desired>);

impl StreamsHandle {
    /// Adds a stream (by the name or ARN given); `false` when it is listed already. The worker
    /// creates its leases at once and takes them like any other.
    pub fn add(&self, stream: impl Into<StreamSpec>) -> bool {
        let spec = stream.into();
        let added = {
            let mut specs = self.0.lock();
            if specs.iter().any(|s| s.name == spec.name) {
                false
            } else {
                specs.push(spec);
                true
            }
        };
        if added {
            self.0.changed.notify_one();
        }
        added
    }

    /// Removes a stream (named as when added); `false` when it is not listed. Its processors get
    /// `shutdown_requested` (their chance to checkpoint) and its leases are released; what then
    /// happens to them follows [`WorkerConfig::former_stream_leases`](crate::WorkerConfig::former_stream_leases).
    pub fn remove(&self, stream: &str) -> bool {
        let removed = {
            let mut specs = self.0.lock();
            let before = specs.len();
            specs.retain(|s| s.name != stream);
            specs.len() != before
        };
        if removed {
            self.0.changed.notify_one();
        }
        removed
    }

    /// The streams listed now.
    pub fn list(&self) -> Vec<StreamSpec> {
        self.0.lock().clone()
    }
}

/// The list the application wants, and a signal when it changes.
#[derive(Debug, Default)]
pub(crate) struct Desired {
    specs: Mutex<Vec<StreamSpec>>,
    pub(crate) changed: Notify,
}

impl Desired {
    pub(crate) fn new(specs: Vec<StreamSpec>) -> Arc<Self> {
        Arc::new(Desired {
            specs: Mutex::new(specs),
            changed: Notify::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<StreamSpec>> {
        self.specs.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn specs(&self) -> Vec<StreamSpec> {
        self.lock().clone()
    }
}

/// A stream being read: how to reach it, what its leases are named, and how to stop its shards.
#[derive(Debug)]
pub(crate) struct StreamContext {
    /// The name or ARN as given.
    pub(crate) stream: StreamRef,
    /// `account:name:creationEpoch`.
    pub(crate) identifier: Arc<str>,
    /// Multi-stream lease keys (else the shard id is the key, as a single-stream table).
    pub(crate) multi: bool,
    pub(crate) initial: InitialPosition,
    /// The enhanced fan-out consumer's ARN; `None`: polling.
    pub(crate) fan_out: Option<Arc<str>>,
    /// The shards the last shard sync found closed.
    pub(crate) closed: Arc<crate::fan_out::ClosedShards>,
    /// Cancelled when the stream is no longer read (removed, or gone) or the worker stops:
    /// its shards' processors get `shutdown_requested`.
    pub(crate) stop: CancellationToken,
}

impl StreamContext {
    /// A new lease of `shard_id` in this stream.
    pub(crate) fn new_lease(&self, shard_id: &str, checkpoint: CheckpointPosition) -> Lease {
        if self.multi {
            Lease::in_stream(&self.identifier, shard_id, checkpoint)
        } else {
            let mut lease = Lease::new(shard_id, checkpoint);
            lease.stream = Some(self.identifier.to_string());
            lease
        }
    }

    /// Whether `lease` is one of this stream's.
    pub(crate) fn owns(&self, lease: &Lease) -> bool {
        !self.multi || lease.stream_identifier.as_deref() == Some(&*self.identifier)
    }
}

/// The streams being read now, by their name as given.
#[derive(Debug)]
pub(crate) struct Active {
    pub(crate) multi: bool,
    streams: Mutex<BTreeMap<String, Arc<StreamContext>>>,
}

impl Active {
    pub(crate) fn new(multi: bool) -> Arc<Self> {
        Arc::new(Active {
            multi,
            streams: Mutex::new(BTreeMap::new()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Arc<StreamContext>>> {
        self.streams.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn insert(&self, name: &str, stream: Arc<StreamContext>) {
        self.lock().insert(name.to_owned(), stream);
    }

    /// Stops reading a stream: its shards' processors are asked to stop.
    pub(crate) fn remove(&self, name: &str) -> Option<Arc<StreamContext>> {
        let removed = self.lock().remove(name);
        if let Some(stream) = &removed {
            stream.stop.cancel();
        }
        removed
    }

    pub(crate) fn names(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    pub(crate) fn all(&self) -> Vec<Arc<StreamContext>> {
        self.lock().values().cloned().collect()
    }

    /// The stream a lease belongs to, if it is read now (a single-stream worker's every lease is
    /// its stream's).
    pub(crate) fn of(&self, lease: &Lease) -> Option<Arc<StreamContext>> {
        self.lock().values().find(|s| s.owns(lease)).cloned()
    }

    /// Whether this worker takes `lease`: its stream is read now.
    pub(crate) fn accepts(&self, lease: &Lease) -> bool {
        !self.multi || self.of(lease).is_some()
    }
}

/// Finds the leases of streams no longer read and says which may be deleted: those nobody has
/// changed (no renewal, take or checkpoint) for the policy's wait.
#[derive(Debug, Default)]
pub(crate) struct FormerLeases {
    /// Per lease key: the counter last seen, and since when it has not moved.
    still: HashMap<String, (u64, Instant)>,
}

impl FormerLeases {
    /// The keys of the former streams' leases unchanged for `wait`, among `leases`; `desired`
    /// are the streams listed, `active` the identifiers read now.
    pub(crate) fn deletable(
        &mut self,
        leases: &[Lease],
        desired: &[StreamSpec],
        active: &[Arc<str>],
        wait: Duration,
        now: Instant,
    ) -> Vec<String> {
        let is_former = |identifier: &str| {
            if active.iter().any(|a| **a == *identifier) {
                return false;
            }
            // A listed stream not read yet (it could not be described): its leases wait for it,
            // unless the listed stream is read under another identifier (created again).
            let name = name_in_identifier(identifier);
            !desired.iter().any(|d| {
                name == Some(d.stream_name())
                    && !(active.iter()).any(|a| name_in_identifier(a) == Some(d.stream_name()))
            })
        };
        let mut seen = HashMap::new();
        let mut deletable = Vec::new();
        for lease in leases {
            let Some(identifier) = &lease.stream_identifier else {
                continue;
            };
            if !is_former(identifier) {
                continue;
            }
            let since = match self.still.get(&lease.key) {
                Some((counter, since)) if *counter == lease.counter => *since,
                _ => now,
            };
            if now.saturating_duration_since(since) >= wait {
                deletable.push(lease.key.clone());
            }
            seen.insert(lease.key.clone(), (lease.counter, since));
        }
        self.still = seen;
        deletable
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(stream: &str, shard: &str, counter: u64) -> Lease {
        let mut l = Lease::in_stream(stream, shard, CheckpointPosition::TrimHorizon);
        l.counter = counter;
        l
    }

    #[test]
    fn names_come_from_names_and_arns() {
        assert_eq!(StreamSpec::new("orders").stream_name(), "orders");
        let arn = "arn:aws:kinesis:eu-west-1:123456789012:stream/orders";
        assert_eq!(StreamSpec::new(arn).stream_name(), "orders");
    }

    #[tokio::test(start_paused = true)]
    async fn only_untouched_leases_of_unlisted_streams_are_deleted_after_the_wait() {
        let wait = Duration::from_secs(60);
        let (a, b, old_a) = ("1:a:100", "1:b:200", "1:a:50");
        let desired = [StreamSpec::new("a")];
        let active: Vec<Arc<str>> = vec![a.into()];
        let mut former = FormerLeases::default();
        let t0 = Instant::now();
        let leases = |b1: u64| {
            vec![
                lease(a, "s0", 1),
                lease(b, "s0", 3),
                lease(b, "s1", b1),
                lease(old_a, "s0", 9),
            ]
        };
        assert!(
            former
                .deletable(&leases(5), &desired, &active, wait, t0)
                .is_empty()
        );
        // b/s1 is renewed meanwhile (a worker still reads b): it stays.
        let later = former.deletable(&leases(6), &desired, &active, wait, t0 + wait);
        assert_eq!(later, ["1:b:200:s0", "1:a:50:s0"]);
        // A listed stream that is not read yet keeps its leases, whatever their age.
        let mut former = FormerLeases::default();
        for t in [t0, t0 + wait * 2] {
            assert!(
                former
                    .deletable(&leases(5)[..1], &desired, &[], wait, t)
                    .is_empty()
            );
        }
    }
}
