//! Streams and tables with random names that delete themselves when dropped.

use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
};
use aws_sdk_kinesis::types::{Shard, ShardFilter, ShardFilterType, StreamStatus};
use kinesis_format::HashKeyRange;

use crate::{TestEnv, random_name};

/// How long to wait for a stream to become ACTIVE before failing the test.
const ACTIVE_TIMEOUT: Duration = Duration::from_secs(60);

/// A Kinesis stream made for one test.
#[derive(Debug)]
pub struct TestStream {
    /// Its random name.
    pub name: String,
    /// Its ARN.
    pub arn: String,
    kinesis: aws_sdk_kinesis::Client,
}

impl TestEnv {
    /// Creates a stream with a random name and `shards` shards and waits until it is ACTIVE,
    /// polling every 50 ms (the SDK's waiter sleeps 20 s between polls).
    pub async fn create_stream(&self, shards: i32) -> TestStream {
        let name = random_name("it");
        self.kinesis
            .create_stream()
            .stream_name(&name)
            .shard_count(shards)
            .send()
            .await
            .unwrap_or_else(|e| panic!("CreateStream {name}: {e:?}"));
        let stream = TestStream {
            arn: self.wait_stream_active(&name).await,
            name,
            kinesis: self.kinesis.clone(),
        };
        tracing_free_log(&format!("created stream {} ({shards} shards)", stream.name));
        stream
    }

    /// Waits until the stream is ACTIVE (after creation or a reshard) and returns its ARN.
    pub async fn wait_stream_active(&self, name: &str) -> String {
        let deadline = tokio::time::Instant::now() + ACTIVE_TIMEOUT;
        loop {
            let summary = self
                .kinesis
                .describe_stream_summary()
                .stream_name(name)
                .send()
                .await
                .unwrap_or_else(|e| panic!("DescribeStreamSummary {name}: {e:?}"));
            let description = summary
                .stream_description_summary()
                .unwrap_or_else(|| panic!("DescribeStreamSummary {name}: no description"));
            if description.stream_status() == &StreamStatus::Active {
                return description.stream_arn().to_owned();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "stream {name} not ACTIVE after {ACTIVE_TIMEOUT:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Creates a PAY_PER_REQUEST table with a random name and a string hash key `hash_key`.
    pub async fn create_table(&self, hash_key: &str) -> TestTable {
        let name = random_name("it");
        self.dynamodb
            .create_table()
            .table_name(&name)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name(hash_key)
                    .attribute_type(ScalarAttributeType::S)
                    .build()
                    .expect("attribute definition"),
            )
            .key_schema(
                KeySchemaElement::builder()
                    .attribute_name(hash_key)
                    .key_type(KeyType::Hash)
                    .build()
                    .expect("key schema"),
            )
            .send()
            .await
            .unwrap_or_else(|e| panic!("CreateTable {name}: {e:?}"));
        TestTable::adopt(self, name)
    }
}

impl TestStream {
    /// All shards of the stream (open and closed), paginated, in ListShards order.
    pub async fn shards(&self) -> Vec<Shard> {
        list_shards(&self.kinesis, &self.name, None).await
    }

    /// A Kinesis client for this stream's endpoint.
    pub fn kinesis(&self) -> &aws_sdk_kinesis::Client {
        &self.kinesis
    }

    /// The open shards only (ShardFilter AT_LATEST).
    pub async fn open_shards(&self) -> Vec<Shard> {
        let filter = ShardFilter::builder()
            .r#type(ShardFilterType::AtLatest)
            .build()
            .expect("shard filter");
        list_shards(&self.kinesis, &self.name, Some(filter)).await
    }

    /// Splits `shard` in the middle of its hash key range (SplitShard; the stream is UPDATING
    /// until the split is done).
    pub async fn split_in_half(&self, shard: &Shard) {
        let range = shard_range(shard);
        let middle = kinesis_format::HashKey(range.start.0 + (range.end.0 - range.start.0) / 2);
        self.kinesis
            .split_shard()
            .stream_name(&self.name)
            .shard_to_split(shard.shard_id())
            .new_starting_hash_key(middle.to_string())
            .send()
            .await
            .unwrap_or_else(|e| panic!("SplitShard {} of {}: {e:?}", shard.shard_id(), self.name));
    }
}

async fn list_shards(
    kinesis: &aws_sdk_kinesis::Client,
    name: &str,
    filter: Option<ShardFilter>,
) -> Vec<Shard> {
    let mut shards = Vec::new();
    let mut next_token: Option<String> = None;
    loop {
        // The first page names the stream; later pages send only the token.
        let request = match &next_token {
            Some(token) => kinesis.list_shards().next_token(token),
            None => kinesis
                .list_shards()
                .stream_name(name)
                .set_shard_filter(filter.clone()),
        };
        let page = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("ListShards {name}: {e:?}"));
        shards.extend(page.shards().iter().cloned());
        match page.next_token() {
            Some(token) => next_token = Some(token.to_owned()),
            None => return shards,
        }
    }
}

/// The hash key range a shard owns.
pub fn shard_range(shard: &Shard) -> HashKeyRange {
    let range = shard.hash_key_range().expect("shard has a hash key range");
    HashKeyRange::parse(range.starting_hash_key(), range.ending_hash_key())
        .expect("valid shard hash key range")
}

impl Drop for TestStream {
    fn drop(&mut self) {
        let name = self.name.clone();
        delete_in_background_thread(move |config| async move {
            aws_sdk_kinesis::Client::new(&config)
                .delete_stream()
                .stream_name(name)
                .enforce_consumer_deletion(true)
                .send()
                .await
                .map(drop)
                .map_err(|e| format!("{e:?}"))
        });
    }
}

/// A DynamoDB table made for (or by) one test.
#[derive(Debug)]
pub struct TestTable {
    /// Its name.
    pub name: String,
}

impl TestTable {
    /// Takes charge of deleting a table (for one that the code under test creates itself).
    pub fn adopt(_env: &TestEnv, name: String) -> TestTable {
        TestTable { name }
    }
}

impl Drop for TestTable {
    fn drop(&mut self) {
        let name = self.name.clone();
        delete_in_background_thread(move |config| async move {
            aws_sdk_dynamodb::Client::new(&config)
                .delete_table()
                .table_name(name)
                .send()
                .await
                .map(drop)
                .map_err(|e| format!("{e:?}"))
        });
    }
}

/// Runs a clean-up call on a fresh runtime and fresh clients in another thread: `Drop` cannot
/// await, and the test's own runtime may be single-threaded or shutting down. Failures are only
/// logged (a missing resource is already clean).
fn delete_in_background_thread<F, Fut>(call: F)
where
    F: FnOnce(aws_config::SdkConfig) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), String>>,
{
    let outcome = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        runtime.block_on(async move {
            let config = aws_config::defaults(BehaviorVersion::latest()).load().await;
            tokio::time::timeout(Duration::from_secs(10), call(config))
                .await
                .map_err(|_| "timed out".to_owned())?
        })
    })
    .join();
    if let Ok(Err(e)) = outcome {
        tracing_free_log(&format!("clean-up failed: {e}"));
    }
}

/// Test-harness logging without a subscriber: goes to stderr, which the test runner captures.
fn tracing_free_log(message: &str) {
    eprintln!("[integration-tests] {message}");
}
