//! The `LeaseOwnerToLeaseKeyIndex` (KCL 3.x) against DynamoDB Local: a new lease table has it, a
//! table made without it (as a Java KCL 2.x makes one) gets it added, and a worker finds its own
//! leases through it.

use std::time::Duration;

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
};
use integration_tests::{TestEnv, TestTable, random_name};
use kcl::leases::{CheckpointPosition, DynamoDbLeaseStore, Lease, LeaseStore, OWNER_INDEX};

/// Five leases, of which "a" takes three and "b" one.
async fn five_leases(store: &DynamoDbLeaseStore) {
    for i in 0..5 {
        let lease = Lease::new(format!("shardId-{i:012}"), CheckpointPosition::TrimHorizon);
        store.create_if_absent(&lease).await.unwrap();
        let owner = match i {
            0..=2 => "a",
            3 => "b",
            _ => continue,
        };
        store.take(&lease, owner).await.unwrap();
    }
}

/// The keys `owner` owns, read through the index (sorted); `None` when it cannot be read.
async fn owned_keys(store: &DynamoDbLeaseStore, owner: &str) -> Option<Vec<String>> {
    let leases = store.owned_by(owner).await.unwrap()?;
    let mut keys: Vec<String> = leases.into_iter().map(|l| l.key).collect();
    keys.sort();
    Some(keys)
}

/// The table's global secondary indexes: (name, whether ACTIVE).
async fn indexes(env: &TestEnv, table: &str) -> Vec<(String, bool)> {
    env.dynamodb
        .describe_table()
        .table_name(table)
        .send()
        .await
        .unwrap()
        .table()
        .unwrap()
        .global_secondary_indexes()
        .iter()
        .filter_map(|i| {
            let active = i.index_status() == Some(&aws_sdk_dynamodb::types::IndexStatus::Active);
            Some((i.index_name()?.to_owned(), active))
        })
        .collect()
}

fn names(indexes: Vec<(String, bool)>) -> Vec<String> {
    indexes.into_iter().map(|(name, _)| name).collect()
}

#[tokio::test]
async fn a_new_table_has_the_index_and_a_worker_finds_its_leases_through_it() {
    let env = TestEnv::new().await;
    let name = random_name("leases");
    let store = DynamoDbLeaseStore::new(env.dynamodb.clone(), name.clone());
    store.ensure_table().await.unwrap();
    let _table = TestTable::adopt(&env, name.clone());
    assert_eq!(names(indexes(&env, &name).await), [OWNER_INDEX]);
    five_leases(&store).await;
    assert_eq!(
        owned_keys(&store, "a").await,
        Some(vec![
            "shardId-000000000000".to_owned(),
            "shardId-000000000001".to_owned(),
            "shardId-000000000002".to_owned()
        ])
    );
    assert_eq!(
        owned_keys(&store, "b").await,
        Some(vec!["shardId-000000000003".to_owned()])
    );
    assert_eq!(owned_keys(&store, "c").await, Some(vec![]));
    // The leases read through it are whole.
    let a = store.owned_by("a").await.unwrap().unwrap();
    assert!(
        a.iter()
            .all(|l| l.owner.as_deref() == Some("a") && l.counter == 1)
    );
}

#[tokio::test]
async fn a_table_without_the_index_keeps_working_and_gets_it_added() {
    let env = TestEnv::new().await;
    let name = random_name("leases");
    // As a Java KCL 2.x creates its table: the key only.
    env.dynamodb
        .create_table()
        .table_name(&name)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("leaseKey")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("leaseKey")
                .key_type(KeyType::Hash)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let _table = TestTable::adopt(&env, name.clone());
    let store = DynamoDbLeaseStore::new(env.dynamodb.clone(), name.clone());
    assert_eq!(
        store.owned_by("a").await.unwrap(),
        None,
        "no index: the caller scans"
    );

    store.ensure_table().await.unwrap();
    assert_eq!(
        names(indexes(&env, &name).await),
        [OWNER_INDEX],
        "added at start"
    );
    // Built in the background (within a second on DynamoDB Local, which answers reads and
    // writes with HTTP 500 meanwhile; real DynamoDB takes writes while it builds, for minutes on
    // a large table, and refuses reads of the index).
    for _ in 0..100 {
        if indexes(&env, &name).await == [(OWNER_INDEX.to_owned(), true)] {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    five_leases(&store).await;
    assert_eq!(
        owned_keys(&store, "b").await,
        Some(vec!["shardId-000000000003".to_owned()])
    );
}
