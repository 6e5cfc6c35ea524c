//! Enhanced fan-out in the in-memory Kinesis: consumers are ACTIVE once registered; a
//! subscription pushes new records as they arrive (checking every [`POLL`]) for five minutes,
//! then ends; the last event of a closed shard read to its end has no continuation and names the
//! children. One subscription per consumer and shard, as Kinesis: a new one within 5 s of the
//! open one's start is refused (`ResourceInUseException`); a later one takes over, and the old
//! one fails with `ResourceInUseException`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use kinesis_retry::AwsError;
use tokio::time::Instant;

use super::state::record;
use super::{MemoryKinesis, State, refused, start_index, stream_name};
use crate::fan_out::{ConsumerStatus, StreamConsumer, Subscription, SubscriptionEvent};
use crate::stream::StreamRef;
use crate::types::IteratorStart;

/// How long a subscription lasts.
const SUBSCRIPTION_LIFETIME: Duration = Duration::from_secs(300);
/// How often an open subscription looks for new records.
const POLL: Duration = Duration::from_millis(50);
/// A subscription younger than this cannot be taken over.
const TAKE_OVER_AFTER: Duration = Duration::from_secs(5);
/// The most records one event carries.
const MAX_EVENT_RECORDS: usize = 1_000;

const SUBSCRIBE: &str = "Kinesis SubscribeToShard";

impl MemoryKinesis {
    pub(super) async fn register(
        &self,
        stream_arn: &str,
        name: &str,
    ) -> Result<StreamConsumer, AwsError> {
        const OP: &str = "Kinesis RegisterStreamConsumer";
        self.enter(OP).await?;
        let mut state = self.state();
        let stream = stream_name(&StreamRef::new(stream_arn)).to_owned();
        Self::stream_mut(&mut state, &stream).map_err(|r| refused(OP, r))?;
        let arn = format!("{stream_arn}/consumer/{name}:1");
        if state.consumers.contains_key(&arn) {
            let message = format!("Consumer {name} already exists");
            return Err(refused(OP, ("ResourceInUseException", message)));
        }
        state
            .consumers
            .insert(arn.clone(), (stream, name.to_owned()));
        Ok(StreamConsumer::new(arn, name, ConsumerStatus::Active))
    }

    pub(super) async fn describe(
        &self,
        stream_arn: &str,
        name: &str,
    ) -> Result<StreamConsumer, AwsError> {
        const OP: &str = "Kinesis DescribeStreamConsumer";
        self.enter(OP).await?;
        let arn = format!("{stream_arn}/consumer/{name}:1");
        if !self.state().consumers.contains_key(&arn) {
            let message = format!("Consumer {name} not found");
            return Err(refused(OP, ("ResourceNotFoundException", message)));
        }
        Ok(StreamConsumer::new(arn, name, ConsumerStatus::Active))
    }

    pub(super) async fn subscribe(
        &self,
        consumer_arn: &str,
        shard_id: &str,
        start: &IteratorStart,
    ) -> Result<Box<dyn Subscription>, AwsError> {
        self.enter(SUBSCRIBE).await?;
        let mut state = self.state();
        let Some((stream, _)) = state.consumers.get(consumer_arn).cloned() else {
            let message = format!("Consumer {consumer_arn} not found");
            return Err(refused(SUBSCRIBE, ("ResourceNotFoundException", message)));
        };
        let s = Self::stream_mut(&mut state, &stream).map_err(|r| refused(SUBSCRIBE, r))?;
        let shard = s.shard(shard_id).map_err(|r| refused(SUBSCRIBE, r))?;
        let index = start_index(&shard.records, start).map_err(|r| refused(SUBSCRIBE, r))?;
        let key = (consumer_arn.to_owned(), shard_id.to_owned());
        let now = self.now();
        if let Some((_, since)) = state.subscriptions.get(&key)
            && now.saturating_sub(*since) < TAKE_OVER_AFTER
        {
            let message = format!(
                "Another active subscription exists for consumer {consumer_arn} on shard {shard_id}"
            );
            return Err(refused(SUBSCRIBE, ("ResourceInUseException", message)));
        }
        let id = state.next_subscription;
        state.next_subscription += 1;
        state.subscriptions.insert(key.clone(), (id, now));
        Ok(Box::new(MemorySubscription {
            state: self.state.clone(),
            started: self.started,
            stream,
            key,
            id,
            index,
            ends: Instant::now() + SUBSCRIPTION_LIFETIME,
            done: false,
        }))
    }
}

/// An open subscription: reads the shard from `index` as records arrive.
#[derive(Debug)]
struct MemorySubscription {
    state: Arc<Mutex<State>>,
    started: Instant,
    stream: String,
    /// (consumer ARN, shard): released when the subscription ends or is dropped.
    key: (String, String),
    /// Which subscription of the key this is (a later one takes over).
    id: u64,
    index: usize,
    ends: Instant,
    done: bool,
}

impl Drop for MemorySubscription {
    fn drop(&mut self) {
        self.release();
    }
}

impl MemorySubscription {
    fn release(&mut self) {
        self.done = true;
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.subscriptions.get(&self.key).map(|(id, _)| *id) == Some(self.id) {
            state.subscriptions.remove(&self.key);
        }
    }

    /// The next event if there is one to send now.
    fn poll(&mut self) -> Result<Option<SubscriptionEvent>, AwsError> {
        let now = self.started.elapsed();
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.outage {
            return Err(AwsError::new(
                SUBSCRIBE,
                kinesis_retry::AwsErrorKind::Connection {
                    message: "in-memory Kinesis outage: the subscription broke".into(),
                },
            ));
        }
        if state.subscriptions.get(&self.key).map(|(id, _)| *id) != Some(self.id) {
            let message = format!(
                "Another subscription took over consumer {} on shard {}",
                self.key.0, self.key.1
            );
            return Err(refused(SUBSCRIBE, ("ResourceInUseException", message)));
        }
        let Some(s) = state.streams.get(&self.stream) else {
            let message = format!("Stream {} not found", self.stream);
            return Err(refused(SUBSCRIBE, ("ResourceNotFoundException", message)));
        };
        let shard = s.shard(&self.key.1).map_err(|r| refused(SUBSCRIBE, r))?;
        let from = self.index.min(shard.records.len());
        let end = shard.records.len().min(from + MAX_EVENT_RECORDS);
        let at_end = end == shard.records.len();
        if from == end && !(shard.closed && at_end) {
            return Ok(None);
        }
        let records = shard.records[from..end].iter().map(record).collect();
        self.index = end;
        let millis_behind = if at_end {
            0
        } else {
            i64::try_from(now.saturating_sub(shard.records[end].arrival).as_millis())
                .unwrap_or(i64::MAX)
        };
        let (continuation, children) = if shard.closed && at_end {
            (None, s.children_of(shard))
        } else {
            // Where to continue after (AFTER_SEQUENCE_NUMBER): the last record sent.
            let last = end.checked_sub(1).map(|i| shard.records[i].sequence);
            (Some(last.unwrap_or(0).to_string()), Vec::new())
        };
        Ok(Some(SubscriptionEvent::new(
            records,
            continuation,
            Some(millis_behind),
            children,
        )))
    }
}

#[async_trait]
impl Subscription for MemorySubscription {
    async fn next_event(&mut self) -> Option<Result<SubscriptionEvent, AwsError>> {
        while !self.done {
            if Instant::now() >= self.ends {
                self.release();
                return None;
            }
            match self.poll() {
                Ok(Some(event)) => {
                    if event.is_shard_end() {
                        self.release();
                    }
                    return Some(Ok(event));
                }
                Ok(None) => tokio::time::sleep(POLL).await,
                Err(e) => {
                    self.release();
                    return Some(Err(e));
                }
            }
        }
        None
    }
}
