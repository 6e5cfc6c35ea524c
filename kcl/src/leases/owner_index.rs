//! The `LeaseOwnerToLeaseKeyIndex` global secondary index of KCL 3.x (hash `leaseOwner`, range
//! `leaseKey`, keys only): a worker finds the leases its id owns with one Query and reads them
//! with BatchGetItem, instead of scanning the whole table.
//!
//! A new table is created with the index; an existing table without it gets it added
//! (`UpdateTable`, not waited for). Until the index can be read (being built, not allowed, an
//! emulator without it) the table is scanned as before: tables without it keep working.

use std::collections::HashMap;

use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, GlobalSecondaryIndex, GlobalSecondaryIndexUpdate, KeySchemaElement,
    KeyType, KeysAndAttributes, Projection, ProjectionType, ScalarAttributeType, TableDescription,
};
use kinesis_retry::{AwsError, retry};

use super::dynamodb::{DynamoDbLeaseStore, policy};
use super::item::{Item, LEASE_KEY, LEASE_OWNER, from_item, is_lease_row, s};
use super::lease::Lease;
use super::store::LeaseError;

/// The index's name, as KCL 3.x names it.
pub const OWNER_INDEX: &str = "LeaseOwnerToLeaseKeyIndex";

/// Most keys in one BatchGetItem.
const BATCH_GET: usize = 100;

fn key(attribute: &str, key_type: KeyType) -> KeySchemaElement {
    KeySchemaElement::builder()
        .attribute_name(attribute)
        .key_type(key_type)
        .build()
        .expect("name and type are set")
}

/// The string attribute definitions a table with the index needs.
pub(super) fn attribute_definitions() -> Vec<AttributeDefinition> {
    [LEASE_KEY, LEASE_OWNER]
        .into_iter()
        .map(|name| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .expect("name and type are set")
        })
        .collect()
}

fn keys_only() -> Projection {
    Projection::builder()
        .projection_type(ProjectionType::KeysOnly)
        .build()
}

/// The index, for a new table.
pub(super) fn index() -> GlobalSecondaryIndex {
    GlobalSecondaryIndex::builder()
        .index_name(OWNER_INDEX)
        .key_schema(key(LEASE_OWNER, KeyType::Hash))
        .key_schema(key(LEASE_KEY, KeyType::Range))
        .projection(keys_only())
        .build()
        .expect("name, keys and projection are set")
}

impl DynamoDbLeaseStore {
    /// Adds the index to an existing table that lacks it, without waiting for it to be built.
    /// Failing to (not allowed, or another index change under way) only logs: the table is
    /// scanned meanwhile.
    pub(super) async fn ensure_owner_index(&self, table: &TableDescription) {
        if table
            .global_secondary_indexes()
            .iter()
            .any(|i| i.index_name() == Some(OWNER_INDEX))
        {
            return;
        }
        let create = aws_sdk_dynamodb::types::CreateGlobalSecondaryIndexAction::builder()
            .index_name(OWNER_INDEX)
            .key_schema(key(LEASE_OWNER, KeyType::Hash))
            .key_schema(key(LEASE_KEY, KeyType::Range))
            .projection(keys_only());
        // A provisioned table needs the index's capacity too: the table's own.
        let create = match table
            .provisioned_throughput()
            .and_then(|p| Some((p.read_capacity_units()?, p.write_capacity_units()?)))
        {
            Some((read, write)) if read > 0 && write > 0 => create.provisioned_throughput(
                aws_sdk_dynamodb::types::ProvisionedThroughput::builder()
                    .read_capacity_units(read)
                    .write_capacity_units(write)
                    .build()
                    .expect("both set"),
            ),
            _ => create,
        };
        let result = self
            .client
            .update_table()
            .table_name(&self.table)
            .set_attribute_definitions(Some(attribute_definitions()))
            .global_secondary_index_updates(
                GlobalSecondaryIndexUpdate::builder()
                    .create(create.build().expect("name, keys and projection are set"))
                    .build(),
            )
            .send()
            .await;
        match result {
            Ok(_) => {
                tracing::info!(table = %self.table, index = OWNER_INDEX, "adding the lease owner index to the lease table (workers scan the table until it is built)")
            }
            Err(e) => {
                let e = AwsError::from_sdk("DynamoDB UpdateTable", e);
                tracing::info!(table = %self.table, index = OWNER_INDEX, error = %e, "could not add the lease owner index; workers scan the table for their own leases (allow dynamodb:UpdateTable once, or add the index by hand)");
            }
        }
    }

    /// The leases whose `leaseOwner` is `owner`, through the index (eventually consistent: a
    /// lease taken a moment ago may be missing); `None` when the index cannot be read.
    pub(super) async fn owned_through_index(
        &self,
        owner: &str,
    ) -> Result<Option<Vec<Lease>>, LeaseError> {
        let mut keys = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let request = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(OWNER_INDEX)
                .key_condition_expression("#owner = :owner")
                .expression_attribute_names("#owner", LEASE_OWNER)
                .expression_attribute_values(":owner", s(owner))
                .set_exclusive_start_key(start.take());
            let page = retry(policy(), LeaseError::class, || async {
                match request.clone().send().await {
                    Ok(page) => Ok(Some(page)),
                    // No such index (yet), or still being built.
                    Err(SdkError::ServiceError(e))
                        if aws_sdk_dynamodb::error::ProvideErrorMetadata::code(e.err())
                            == Some("ValidationException") =>
                    {
                        Ok(None)
                    }
                    Err(e) => Err(self.error("DynamoDB Query", e)),
                }
            })
            .await?;
            let Some(page) = page else { return Ok(None) };
            keys.extend(
                page.items()
                    .iter()
                    .filter_map(|item| item.get(LEASE_KEY)?.as_s().ok().cloned()),
            );
            match page.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => break,
            }
        }
        let mut leases = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(BATCH_GET) {
            self.batch_get(chunk, &mut leases).await?;
        }
        Ok(Some(leases))
    }

    /// Reads `keys` (at most 100) consistently into `into`, asking again for what DynamoDB
    /// leaves unprocessed.
    async fn batch_get(&self, keys: &[String], into: &mut Vec<Lease>) -> Result<(), LeaseError> {
        let mut wanted: Vec<Item> = keys
            .iter()
            .map(|k| HashMap::from([(LEASE_KEY.to_owned(), s(k))]))
            .collect();
        for round in 0.. {
            if wanted.is_empty() {
                break;
            }
            if round == 10 {
                return Err(LeaseError::Store {
                    source: AwsError::new(
                        "DynamoDB BatchGetItem",
                        kinesis_retry::AwsErrorKind::Other {
                            message: format!(
                                "{} keys left unprocessed after 10 rounds (throttled)",
                                wanted.len()
                            ),
                        },
                    ),
                });
            }
            let request = self.client.batch_get_item().request_items(
                &self.table,
                KeysAndAttributes::builder()
                    .set_keys(Some(std::mem::take(&mut wanted)))
                    .consistent_read(true)
                    .build()
                    .expect("keys are set"),
            );
            let output = retry(policy(), LeaseError::class, || async {
                request
                    .clone()
                    .send()
                    .await
                    .map_err(|e| self.error("DynamoDB BatchGetItem", e))
            })
            .await?;
            for item in output
                .responses()
                .and_then(|r| r.get(&self.table))
                .into_iter()
                .flatten()
                .filter(|item| is_lease_row(item))
            {
                match from_item(item) {
                    Ok(lease) => into.push(lease),
                    Err(e) => self.log_malformed(&e),
                }
            }
            if let Some(left) = output.unprocessed_keys().and_then(|u| u.get(&self.table)) {
                wanted = left.keys().to_vec();
                if !wanted.is_empty() {
                    tokio::time::sleep(std::time::Duration::from_millis(50 << round)).await;
                }
            }
        }
        Ok(())
    }
}
