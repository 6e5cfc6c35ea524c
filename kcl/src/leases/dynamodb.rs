//! The lease table in DynamoDB, with the Java KCL's attribute names. Changes are `UpdateItem`s that
//! set or remove only the attributes they change, so attributes written by a Java KCL 3.x worker
//! (`throughputKBps`, `checkpointOwner`, ...) survive.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, ReturnValue,
    ReturnValuesOnConditionCheckFailure, ScalarAttributeType, TableStatus,
};

use super::item::{
    CHECKPOINT, CHECKPOINT_SUB, CHILD_SHARD_IDS, Item, LEASE_COUNTER, LEASE_KEY, LEASE_OWNER,
    OWNER_SWITCHES, PENDING_CHECKPOINT, PENDING_CHECKPOINT_SUB, from_item, n, s, to_item,
};
use super::lease::{CheckpointPosition, Lease};
use super::store::{LeaseError, LeaseStore};

/// How long `ensure_table` waits for a new table to become ACTIVE.
const TABLE_ACTIVE_TIMEOUT: Duration = Duration::from_secs(120);

/// A lease table in DynamoDB (on-demand capacity when this creates it).
#[derive(Clone, Debug)]
pub struct DynamoDbLeaseStore {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

impl DynamoDbLeaseStore {
    /// The table `table` (the KCL application name) through `client`.
    pub fn new(client: aws_sdk_dynamodb::Client, table: impl Into<String>) -> Self {
        DynamoDbLeaseStore {
            client,
            table: table.into(),
        }
    }

    /// The table name.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// A conditional update: `set` these attributes, `remove` those, if `condition` holds.
    async fn update(
        &self,
        key: &str,
        set: Vec<(&str, AttributeValue)>,
        remove: &[&str],
        condition: Condition,
    ) -> Result<Lease, LeaseError> {
        let mut names = HashMap::new();
        let mut values = HashMap::new();
        let mut sets = Vec::new();
        for (i, (attr, value)) in set.into_iter().enumerate() {
            names.insert(format!("#s{i}"), attr.to_owned());
            values.insert(format!(":s{i}"), value);
            sets.push(format!("#s{i} = :s{i}"));
        }
        let mut removes = Vec::new();
        for (i, attr) in remove.iter().enumerate() {
            names.insert(format!("#r{i}"), (*attr).to_owned());
            removes.push(format!("#r{i}"));
        }
        let mut expression = String::new();
        if !sets.is_empty() {
            expression += &format!("SET {}", sets.join(", "));
        }
        if !removes.is_empty() {
            expression += &format!(" REMOVE {}", removes.join(", "));
        }
        let condition = condition.render();
        names.extend(condition.names);
        values.extend(condition.values);
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(LEASE_KEY, s(key))
            .update_expression(expression)
            .condition_expression(condition.expression)
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(values))
            .return_values(ReturnValue::AllNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(output) => from_item(&output.attributes.unwrap_or_default()),
            Err(SdkError::ServiceError(e)) => match e.err() {
                UpdateItemError::ConditionalCheckFailedException(c) => match c.item() {
                    Some(item) => Err(LeaseError::Conflict {
                        key: key.to_owned(),
                        current: Some(Box::new(from_item(item)?)),
                    }),
                    None => Err(LeaseError::NotFound {
                        key: key.to_owned(),
                    }),
                },
                other => Err(store_error(other)),
            },
            Err(e) => Err(store_error(&e)),
        }
    }
}

/// The condition of an update, always requiring the lease to exist.
enum Condition {
    Counter(u64),
    Owner(Option<String>),
    CounterAndOwner(u64, Option<String>),
}

impl Condition {
    fn render(self) -> RenderedCondition {
        let mut names = vec![("#key".to_owned(), LEASE_KEY.to_owned())];
        let mut values = Vec::new();
        let mut parts = vec!["attribute_exists(#key)".to_owned()];
        let (counter, owner) = match self {
            Condition::Counter(c) => (Some(c), None),
            Condition::Owner(o) => (None, Some(o)),
            Condition::CounterAndOwner(c, o) => (Some(c), Some(o)),
        };
        if let Some(c) = counter {
            names.push(("#counter".into(), LEASE_COUNTER.into()));
            values.push((":counter".into(), n(c)));
            parts.push("#counter = :counter".into());
        }
        if let Some(owner) = owner {
            names.push(("#owner".into(), LEASE_OWNER.into()));
            match owner {
                Some(o) => {
                    values.push((":owner".into(), s(&o)));
                    parts.push("#owner = :owner".into());
                }
                None => parts.push("attribute_not_exists(#owner)".into()),
            }
        }
        RenderedCondition {
            expression: parts.join(" AND "),
            names,
            values,
        }
    }
}

/// A condition expression with its attribute names and values.
struct RenderedCondition {
    expression: String,
    names: Vec<(String, String)>,
    values: Vec<(String, AttributeValue)>,
}

#[async_trait]
impl LeaseStore for DynamoDbLeaseStore {
    async fn ensure_table(&self) -> Result<(), LeaseError> {
        let deadline = tokio::time::Instant::now() + TABLE_ACTIVE_TIMEOUT;
        let mut created = false;
        loop {
            match self
                .client
                .describe_table()
                .table_name(&self.table)
                .send()
                .await
            {
                Ok(d) => {
                    if d.table().and_then(|t| t.table_status()) == Some(&TableStatus::Active) {
                        return Ok(());
                    }
                }
                Err(SdkError::ServiceError(e))
                    if e.err().is_resource_not_found_exception() && !created =>
                {
                    let create = self
                        .client
                        .create_table()
                        .table_name(&self.table)
                        .billing_mode(BillingMode::PayPerRequest)
                        .attribute_definitions(
                            AttributeDefinition::builder()
                                .attribute_name(LEASE_KEY)
                                .attribute_type(ScalarAttributeType::S)
                                .build()
                                .map_err(|e| LeaseError::Store {
                                    message: e.to_string(),
                                })?,
                        )
                        .key_schema(
                            KeySchemaElement::builder()
                                .attribute_name(LEASE_KEY)
                                .key_type(KeyType::Hash)
                                .build()
                                .map_err(|e| LeaseError::Store {
                                    message: e.to_string(),
                                })?,
                        )
                        .send()
                        .await;
                    match create {
                        Ok(_) => tracing::info!(table = %self.table, "created lease table"),
                        // Another worker created it at the same moment.
                        Err(SdkError::ServiceError(e))
                            if e.err().is_resource_in_use_exception() => {}
                        Err(e) => return Err(store_error(&e)),
                    }
                    created = true;
                }
                Err(e) => return Err(store_error(&e)),
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(LeaseError::Store {
                    message: format!(
                        "lease table {} not ACTIVE after {TABLE_ACTIVE_TIMEOUT:?}",
                        self.table
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
            let page = self
                .client
                .scan()
                .table_name(&self.table)
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| store_error(&e))?;
            for item in page.items() {
                leases.push(from_item(item)?);
            }
            match page.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return Ok(leases),
            }
        }
    }

    async fn get(&self, key: &str) -> Result<Option<Lease>, LeaseError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(LEASE_KEY, s(key))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| store_error(&e))?;
        output.item.as_ref().map(from_item).transpose()
    }

    async fn create_if_absent(&self, lease: &Lease) -> Result<bool, LeaseError> {
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(to_item(lease)))
            .condition_expression("attribute_not_exists(leaseKey)")
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(SdkError::ServiceError(e)) if e.err().is_conditional_check_failed_exception() => {
                Ok(false)
            }
            Err(e) => Err(store_error(&e)),
        }
    }

    async fn renew(&self, lease: &Lease) -> Result<Lease, LeaseError> {
        let next = lease.renewed();
        self.update(
            &lease.key,
            vec![(LEASE_COUNTER, n(next.counter))],
            &[],
            Condition::Counter(lease.counter),
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
        self.update(&lease.key, set, &[], Condition::Counter(lease.counter))
            .await
    }

    async fn release(&self, lease: &Lease) -> Result<Lease, LeaseError> {
        let next = lease.released();
        self.update(
            &lease.key,
            vec![(LEASE_COUNTER, n(next.counter))],
            &[LEASE_OWNER],
            Condition::Owner(lease.owner.clone()),
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
            Condition::CounterAndOwner(lease.counter, lease.owner.clone()),
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
        self.update(
            &lease.key,
            vec![(CHILD_SHARD_IDS, AttributeValue::Ss(children.to_vec()))],
            &[],
            Condition::Owner(lease.owner.clone()),
        )
        .await
    }

    async fn delete(&self, key: &str) -> Result<(), LeaseError> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .key(LEASE_KEY, s(key))
            .send()
            .await
            .map(drop)
            .map_err(|e| store_error(&e))
    }
}

fn store_error(e: &(impl ProvideErrorMetadata + std::fmt::Debug)) -> LeaseError {
    LeaseError::Store {
        message: match (e.code(), e.message()) {
            (Some(code), Some(message)) => format!("{code}: {message}"),
            (Some(code), None) => code.to_owned(),
            _ => format!("{e:?}"),
        },
    }
}
