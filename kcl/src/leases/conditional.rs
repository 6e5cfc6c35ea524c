//! The lease table's one write path: a conditional `UpdateItem` that sets and removes only the
//! attributes it changes (so a Java KCL's extra attributes survive), retried by class, and that
//! recognises a retried write whose first attempt had landed.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue, ReturnValuesOnConditionCheckFailure};
use kinesis_retry::{AwsErrorKind, RetryPolicy, retry};

use super::dynamodb::DynamoDbLeaseStore;
use super::item::{CHECKPOINT_OWNER, LEASE_COUNTER, LEASE_KEY, LEASE_OWNER, from_item, n, s};
use super::lease::Lease;
use super::store::LeaseError;

impl DynamoDbLeaseStore {
    /// A conditional update: `set` these attributes, `remove` those, if `condition` holds.
    /// `intended` is the lease as the update should leave it: when an attempt whose outcome is
    /// unknown (timeout, connection lost) is retried and the retry's condition fails because the
    /// lease already is `intended`, the first attempt landed and the update is done.
    pub(super) async fn update(
        &self,
        key: &str,
        set: Vec<(&str, AttributeValue)>,
        remove: &[&str],
        condition: Condition,
        intended: &Lease,
        policy: RetryPolicy,
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
        let request = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(LEASE_KEY, s(key))
            .update_expression(expression)
            .condition_expression(condition.expression)
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(values))
            .return_values(ReturnValue::AllNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        let outcome_unknown = std::sync::atomic::AtomicBool::new(false);
        retry(policy, LeaseError::class, || {
            let request = request.clone();
            let outcome_unknown = &outcome_unknown;
            async move {
                match request.send().await {
                    Ok(output) => from_item(&output.attributes.unwrap_or_default()),
                    Err(SdkError::ServiceError(e))
                        if matches!(
                            e.err(),
                            UpdateItemError::ConditionalCheckFailedException(_)
                        ) =>
                    {
                        let UpdateItemError::ConditionalCheckFailedException(c) = e.err() else {
                            unreachable!("matched above")
                        };
                        match c.item() {
                            Some(item) => {
                                let current = from_item(item)?;
                                if outcome_unknown.load(Ordering::Relaxed) && current == *intended {
                                    return Ok(current);
                                }
                                Err(LeaseError::Conflict {
                                    key: key.to_owned(),
                                    current: Some(Box::new(current)),
                                })
                            }
                            None => Err(LeaseError::NotFound {
                                key: key.to_owned(),
                            }),
                        }
                    }
                    Err(e) => {
                        let e = self.error("DynamoDB UpdateItem", e);
                        if let LeaseError::Store { source } = &e
                            && matches!(
                                source.kind(),
                                AwsErrorKind::Timeout | AwsErrorKind::Connection { .. }
                            )
                        {
                            outcome_unknown.store(true, Ordering::Relaxed);
                        }
                        Err(e)
                    }
                }
            }
        })
        .await
    }
}

/// The condition of an update, always requiring the lease to exist. An owner condition is on
/// the lease's actual owner: `checkpointOwner` while a hand-off is under way, else `leaseOwner`.
pub(super) enum Condition {
    Counter(u64),
    Owner(Option<String>),
    CounterAndOwner(u64, Option<String>),
    /// Owned by this worker, with no hand-off under way.
    OwnerNotHandingOff(String),
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
            Condition::OwnerNotHandingOff(o) => {
                values.push((":owner".into(), s(&o)));
                parts.push("#owner = :owner AND attribute_not_exists(#cpowner)".into());
                (None, None)
            }
        };
        if let Some(c) = counter {
            names.push(("#counter".into(), LEASE_COUNTER.into()));
            values.push((":counter".into(), n(c)));
            parts.push("#counter = :counter".into());
        }
        match owner {
            Some(Some(o)) => {
                values.push((":owner".into(), s(&o)));
                parts.push(
                    "(#cpowner = :owner OR (attribute_not_exists(#cpowner) AND #owner = :owner))"
                        .into(),
                );
            }
            Some(None) => {
                parts.push("attribute_not_exists(#owner) AND attribute_not_exists(#cpowner)".into())
            }
            None => {}
        }
        if parts.iter().any(|p| p.contains("#owner")) {
            names.push(("#owner".into(), LEASE_OWNER.into()));
            names.push(("#cpowner".into(), CHECKPOINT_OWNER.into()));
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
