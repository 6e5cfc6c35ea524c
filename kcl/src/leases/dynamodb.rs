//! The lease table in DynamoDB, with the Java KCL's attribute names. Changes are `UpdateItem`s that
//! set or remove only the attributes they change, so attributes written by a Java KCL 3.x worker
//! (`throughputKBps`, `checkpointOwner`, ...) survive.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::types::{
    AttributeValue, BillingMode, KeySchemaElement, KeyType, TableStatus,
};
use kinesis_retry::{AwsError, AwsErrorKind, BackoffConfig, RetryPolicy, retry};

use super::conditional::Condition;
use super::item::{
    CHECKPOINT, CHECKPOINT_OWNER, CHECKPOINT_SUB, CHILD_SHARD_IDS, Item, LEASE_COUNTER, LEASE_KEY,
    LEASE_OWNER, OWNER_SWITCHES, PENDING_CHECKPOINT, PENDING_CHECKPOINT_SUB, THROUGHPUT, from_item,
    is_lease_row, kbps_value, n, s, to_item,
};
use super::lease::{CheckpointPosition, Lease};
use super::owner_index;
use super::store::{LeaseError, LeaseStore};

/// How long `ensure_table` waits for a new table to become ACTIVE.
const TABLE_ACTIVE_TIMEOUT: Duration = Duration::from_secs(120);
/// The default limit on one DynamoDB call (each attempt).
pub(crate) const DEFAULT_LEASE_CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Attempts per lease-table call: throttled and transient failures are retried with jittered
/// back-off (the SDK's own retries are off, so they do not multiply).
pub(super) fn policy() -> RetryPolicy {
    RetryPolicy::new(
        3,
        BackoffConfig::new(Duration::from_millis(50), Duration::from_secs(1)).expect("valid"),
    )
}

/// A lease table in DynamoDB (on-demand capacity when this creates it).
///
/// Every call has a timeout (default 5 s, [`DynamoDbLeaseStore::with_call_timeout`]) and up to 3
/// attempts for throttled or transient failures (renewals: one; the next renewal is the retry).
/// A conditional write retried after a timeout
/// whose first attempt did land is recognised as done, not reported as a conflict.
#[derive(Clone, Debug)]
pub struct DynamoDbLeaseStore {
    pub(super) client: aws_sdk_dynamodb::Client,
    pub(super) table: String,
    /// Malformed rows already logged (key and reason), so each is logged once.
    malformed_logged: Arc<Mutex<HashSet<(String, String)>>>,
}

impl DynamoDbLeaseStore {
    /// The table `table` (the KCL application name) through `client`, whose retry and timeout
    /// settings are replaced: no SDK retries, and a 5 s limit per call.
    pub fn new(client: aws_sdk_dynamodb::Client, table: impl Into<String>) -> Self {
        DynamoDbLeaseStore {
            client,
            table: table.into(),
            malformed_logged: Arc::default(),
        }
        .with_call_timeout(DEFAULT_LEASE_CALL_TIMEOUT)
    }

    /// Limits each DynamoDB call to `timeout` (default 5 s).
    pub fn with_call_timeout(mut self, timeout: Duration) -> Self {
        let (retries, timeouts) = kinesis_retry::sdk_call_settings(timeout);
        let config = self
            .client
            .config()
            .to_builder()
            .retry_config(retries)
            .timeout_config(timeouts)
            .build();
        self.client = aws_sdk_dynamodb::Client::from_conf(config);
        self
    }

    /// The table name.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// A failed call as a lease error: a missing table is its own error.
    pub(super) fn error<E>(&self, operation: &'static str, e: SdkError<E>) -> LeaseError
    where
        E: aws_sdk_dynamodb::error::ProvideErrorMetadata
            + std::error::Error
            + Send
            + Sync
            + 'static,
    {
        let e = AwsError::from_sdk(operation, e);
        if e.is_not_found() {
            LeaseError::TableNotFound {
                table: self.table.clone(),
                source: Some(e),
            }
        } else {
            LeaseError::Store { source: e }
        }
    }
}

impl DynamoDbLeaseStore {
    /// Creates the table (on-demand capacity, key `leaseKey`, with the lease owner index);
    /// another worker creating it at the same moment is fine.
    async fn create_table(&self) -> Result<(), LeaseError> {
        let key = KeySchemaElement::builder()
            .attribute_name(LEASE_KEY)
            .key_type(KeyType::Hash)
            .build()
            .expect("name and type are set");
        let request = self
            .client
            .create_table()
            .table_name(&self.table)
            .billing_mode(BillingMode::PayPerRequest)
            .set_attribute_definitions(Some(owner_index::attribute_definitions()))
            .key_schema(key)
            .global_secondary_indexes(owner_index::index());
        let result = retry(policy(), LeaseError::class, || async {
            match request.clone().send().await {
                Ok(_) => Ok(true),
                Err(SdkError::ServiceError(e)) if e.err().is_resource_in_use_exception() => {
                    Ok(false)
                }
                Err(e) => Err(LeaseError::Store {
                    source: AwsError::from_sdk("DynamoDB CreateTable", e),
                }),
            }
        })
        .await?;
        if result {
            tracing::info!(table = %self.table, "created lease table");
        }
        Ok(())
    }

    /// Logs a malformed row once (per key and reason).
    pub(super) fn log_malformed(&self, e: &LeaseError) {
        if let LeaseError::Malformed { key, message } = e {
            let mut logged = self
                .malformed_logged
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if logged.insert((key.clone(), message.clone())) {
                tracing::error!(table = %self.table, lease = %key, reason = %message, "lease row is malformed: its shard is skipped until the row is fixed or deleted");
            }
        }
    }
}

#[async_trait]
impl LeaseStore for DynamoDbLeaseStore {
    async fn ensure_table(&self) -> Result<(), LeaseError> {
        let deadline = tokio::time::Instant::now() + TABLE_ACTIVE_TIMEOUT;
        let mut created = false;
        loop {
            let request = self.client.describe_table().table_name(&self.table);
            let described = retry(policy(), LeaseError::class, || async {
                request
                    .clone()
                    .send()
                    .await
                    .map_err(|e| self.error("DynamoDB DescribeTable", e))
            })
            .await;
            match described {
                Ok(d) => {
                    if let Some(table) = d.table()
                        && table.table_status() == Some(&TableStatus::Active)
                    {
                        self.ensure_owner_index(table).await;
                        return Ok(());
                    }
                }
                Err(LeaseError::TableNotFound { .. }) if !created => {
                    self.create_table().await?;
                    created = true;
                }
                // Created, but not visible yet (eventually consistent): wait.
                Err(LeaseError::TableNotFound { .. }) => {}
                Err(e) => return Err(e),
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(LeaseError::Store {
                    source: AwsError::new(
                        "DynamoDB DescribeTable",
                        AwsErrorKind::Other {
                            message: format!(
                                "lease table {} not ACTIVE after {TABLE_ACTIVE_TIMEOUT:?}",
                                self.table
                            ),
                        },
                    ),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn list(&self) -> Result<Vec<Lease>, LeaseError> {
        let mut leases = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let request = self
                .client
                .scan()
                .table_name(&self.table)
                .consistent_read(true)
                .set_exclusive_start_key(start.take());
            let page = retry(policy(), LeaseError::class, || async {
                request
                    .clone()
                    .send()
                    .await
                    .map_err(|e| self.error("DynamoDB Scan", e))
            })
            .await?;
            for item in page.items().iter().filter(|item| is_lease_row(item)) {
                match from_item(item) {
                    Ok(lease) => leases.push(lease),
                    Err(e) => self.log_malformed(&e),
                }
            }
            match page.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return Ok(leases),
            }
        }
    }

    async fn owned_by(&self, owner: &str) -> Result<Option<Vec<Lease>>, LeaseError> {
        self.owned_through_index(owner).await
    }

    async fn get(&self, key: &str) -> Result<Option<Lease>, LeaseError> {
        let request = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(LEASE_KEY, s(key))
            .consistent_read(true);
        let output = retry(policy(), LeaseError::class, || async {
            request
                .clone()
                .send()
                .await
                .map_err(|e| self.error("DynamoDB GetItem", e))
        })
        .await?;
        output
            .item
            .as_ref()
            .filter(|item| is_lease_row(item))
            .map(from_item)
            .transpose()
    }

    async fn create_if_absent(&self, lease: &Lease) -> Result<bool, LeaseError> {
        let request = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(to_item(lease)))
            .condition_expression("attribute_not_exists(leaseKey)");
        // Retrying after an attempt that landed says "existed": the same answer as losing a race
        // to another worker creating the same lease, and equally harmless.
        retry(policy(), LeaseError::class, || async {
            match request.clone().send().await {
                Ok(_) => Ok(true),
                Err(SdkError::ServiceError(e))
                    if e.err().is_conditional_check_failed_exception() =>
                {
                    Ok(false)
                }
                Err(e) => Err(self.error("DynamoDB PutItem", e)),
            }
        })
        .await
    }

    async fn renew(&self, lease: &Lease) -> Result<Lease, LeaseError> {
        let next = lease.renewed();
        let mut set = vec![(LEASE_COUNTER, n(next.counter))];
        if let Some(kbps) = lease.throughput_kbps {
            set.push((THROUGHPUT, kbps_value(kbps)));
        }
        self.update(
            &lease.key,
            set,
            &[],
            Condition::Counter(lease.counter),
            &next,
            // The next renewal, a renew interval later, is the retry: a renewal round stays short.
            RetryPolicy::once(),
        )
        .await
    }

    async fn take(&self, lease: &Lease, owner: &str) -> Result<Lease, LeaseError> {
        let next = lease.taken_by(owner);
        let set = vec![
            (LEASE_OWNER, s(owner)),
            (LEASE_COUNTER, n(next.counter)),
            (OWNER_SWITCHES, n(next.owner_switches_since_checkpoint)),
        ];
        self.update(
            &lease.key,
            set,
            &[CHECKPOINT_OWNER],
            Condition::Counter(lease.counter),
            &next,
            policy(),
        )
        .await
    }

    async fn release(&self, lease: &Lease) -> Result<Lease, LeaseError> {
        let next = lease.released();
        let remove: &[&str] = if lease.is_handing_off() {
            &[CHECKPOINT_OWNER]
        } else {
            &[LEASE_OWNER, CHECKPOINT_OWNER]
        };
        self.update(
            &lease.key,
            vec![(LEASE_COUNTER, n(next.counter))],
            remove,
            Condition::Owner(lease.actual_owner().map(str::to_owned)),
            &next,
            policy(),
        )
        .await
    }

    async fn hand_off(&self, lease: &Lease, new_owner: &str) -> Result<Lease, LeaseError> {
        let Some(owner) = lease.owner.clone() else {
            return Err(LeaseError::Conflict {
                key: lease.key.clone(),
                current: Some(Box::new(lease.clone())),
            });
        };
        let next = lease.handed_off_to(new_owner);
        self.update(
            &lease.key,
            vec![(LEASE_OWNER, s(new_owner)), (CHECKPOINT_OWNER, s(&owner))],
            &[],
            Condition::OwnerNotHandingOff(owner),
            &next,
            policy(),
        )
        .await
    }

    async fn checkpoint(
        &self,
        lease: &Lease,
        checkpoint: &CheckpointPosition,
        pending: Option<&CheckpointPosition>,
    ) -> Result<Lease, LeaseError> {
        let next = lease.checkpointed(checkpoint, pending);
        let (text, sub) = checkpoint.as_stored();
        let mut set = vec![
            (CHECKPOINT, s(&text)),
            (CHECKPOINT_SUB, n(sub)),
            (OWNER_SWITCHES, n(0)),
            (LEASE_COUNTER, n(next.counter)),
        ];
        let mut remove = Vec::new();
        match pending {
            Some(p) => {
                let (text, sub) = p.as_stored();
                set.push((PENDING_CHECKPOINT, s(&text)));
                set.push((PENDING_CHECKPOINT_SUB, n(sub)));
            }
            None => remove.extend([PENDING_CHECKPOINT, PENDING_CHECKPOINT_SUB]),
        }
        self.update(
            &lease.key,
            set,
            &remove,
            Condition::CounterAndOwner(lease.counter, lease.actual_owner().map(str::to_owned)),
            &next,
            policy(),
        )
        .await
    }

    async fn set_child_shards(
        &self,
        lease: &Lease,
        children: &[String],
    ) -> Result<Lease, LeaseError> {
        if children.is_empty() {
            return Ok(lease.clone());
        }
        let next = Lease {
            child_shard_ids: children.to_vec(),
            ..lease.clone()
        };
        self.update(
            &lease.key,
            vec![(CHILD_SHARD_IDS, AttributeValue::Ss(children.to_vec()))],
            &[],
            Condition::Owner(lease.actual_owner().map(str::to_owned)),
            &next,
            policy(),
        )
        .await
    }

    async fn delete(&self, key: &str) -> Result<(), LeaseError> {
        let request = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key(LEASE_KEY, s(key));
        retry(policy(), LeaseError::class, || async {
            request
                .clone()
                .send()
                .await
                .map(drop)
                .map_err(|e| self.error("DynamoDB DeleteItem", e))
        })
        .await
    }
}
