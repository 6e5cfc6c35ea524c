//! Conditional writes on a real DynamoDB endpoint: the primitives the lease table is built on.

use std::collections::HashMap;

use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValuesOnConditionCheckFailure};
use integration_tests::TestEnv;

fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_owned())
}

fn n(v: u64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

#[tokio::test]
async fn create_only_if_absent_then_compare_and_swap_on_the_counter() {
    let env = TestEnv::new().await;
    let table = env.create_table("leaseKey").await;
    let ddb = &env.dynamodb;

    let item = HashMap::from([
        ("leaseKey".to_owned(), s("shardId-000000000000")),
        ("leaseOwner".to_owned(), s("worker-a")),
        ("leaseCounter".to_owned(), n(1)),
    ]);
    let create = || {
        ddb.put_item()
            .table_name(&table.name)
            .set_item(Some(item.clone()))
            .condition_expression("attribute_not_exists(leaseKey)")
    };
    create().send().await.expect("first create succeeds");
    match create().send().await {
        Err(SdkError::ServiceError(e)) => assert!(
            matches!(e.err(), PutItemError::ConditionalCheckFailedException(_)),
            "expected ConditionalCheckFailed, got {:?}",
            e.err()
        ),
        other => panic!("second create must fail the condition, got {other:?}"),
    }

    // Take the lease: succeed only if the counter is what we last saw.
    let take = |expected: u64, owner: &str| {
        ddb.update_item()
            .table_name(&table.name)
            .key("leaseKey", s("shardId-000000000000"))
            .update_expression("SET leaseOwner = :owner, leaseCounter = leaseCounter + :one")
            .condition_expression("leaseCounter = :expected")
            .expression_attribute_values(":owner", s(owner))
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":expected", n(expected))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
    };
    take(1, "worker-b")
        .send()
        .await
        .expect("take with the current counter");

    // A second taker with the stale counter loses, and learns the current state.
    match take(1, "worker-c").send().await {
        Err(SdkError::ServiceError(e)) => match e.err() {
            UpdateItemError::ConditionalCheckFailedException(c) => {
                let current = c.item().expect("ALL_OLD returns the item");
                assert_eq!(current.get("leaseOwner"), Some(&s("worker-b")));
                assert_eq!(current.get("leaseCounter"), Some(&n(2)));
            }
            other => panic!("expected ConditionalCheckFailed, got {other:?}"),
        },
        other => panic!("stale take must fail the condition, got {other:?}"),
    }

    let stored = ddb
        .get_item()
        .table_name(&table.name)
        .key("leaseKey", s("shardId-000000000000"))
        .consistent_read(true)
        .send()
        .await
        .expect("GetItem")
        .item
        .expect("item exists");
    assert_eq!(stored.get("leaseOwner"), Some(&s("worker-b")));
    assert_eq!(stored.get("leaseCounter"), Some(&n(2)));
}
