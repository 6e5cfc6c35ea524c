//! The DynamoDB lease store against DynamoDB Local: table creation, the lease life cycle, racing
//! takers, and a row written by a Java KCL keeping its extra attributes.

use std::sync::Arc;

use aws_sdk_dynamodb::types::AttributeValue;
use integration_tests::{TestEnv, TestTable, random_name};
use kcl::leases::{CheckpointPosition, DynamoDbLeaseStore, Lease, LeaseError, LeaseStore};
use kinesis_format::SequenceNumber;

async fn store(env: &TestEnv) -> (DynamoDbLeaseStore, TestTable) {
    let name = random_name("leases");
    let store = DynamoDbLeaseStore::new(env.dynamodb.clone(), name.clone());
    store.ensure_table().await.expect("create the lease table");
    // Idempotent: a second worker starting up finds it.
    store.ensure_table().await.expect("table exists");
    (store, TestTable::adopt(env, name))
}

#[tokio::test]
async fn a_lease_goes_through_its_life_cycle_with_conditional_writes() {
    let env = TestEnv::new().await;
    let (store, _table) = store(&env).await;
    let lease = Lease::new("shardId-000000000000", CheckpointPosition::TrimHorizon)
        .with_parents(vec!["shardId-parent".into()]);
    assert!(store.create_if_absent(&lease).await.unwrap());
    assert!(
        !store.create_if_absent(&lease).await.unwrap(),
        "a second create is a no-op"
    );

    let held = store.take(&lease, "worker-a").await.unwrap();
    assert_eq!((held.owner.as_deref(), held.counter), (Some("worker-a"), 1));
    let renewed = store.renew(&held).await.unwrap();
    assert_eq!(renewed.counter, 2);

    let position = CheckpointPosition::Sequence {
        sequence: SequenceNumber::parse("49590338271490256608559692538361571095921575989136588898")
            .unwrap(),
        sub_sequence: 3,
    };
    let checkpointed = store
        .checkpoint(&renewed, &position, Some(&CheckpointPosition::ShardEnd))
        .await
        .unwrap();
    let stored = store.get(&lease.key).await.unwrap().expect("exists");
    assert_eq!(stored, checkpointed);
    assert_eq!(stored.checkpoint, position);
    assert_eq!(
        stored.pending_checkpoint,
        Some(CheckpointPosition::ShardEnd)
    );
    assert_eq!(stored.parent_shard_ids, ["shardId-parent"]);

    // A stale copy (counter 1) can neither renew nor checkpoint: the typed conflict says who holds it.
    match store.checkpoint(&held, &position, None).await {
        Err(LeaseError::Conflict {
            current: Some(c), ..
        }) => assert_eq!(c.counter, checkpointed.counter),
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert!(store.renew(&held).await.unwrap_err().is_conflict());

    let ended = store
        .checkpoint(&checkpointed, &CheckpointPosition::ShardEnd, None)
        .await
        .unwrap();
    assert_eq!(
        ended.pending_checkpoint, None,
        "no pending checkpoint any more"
    );
    let with_children = store
        .set_child_shards(&ended, &["shardId-a".into(), "shardId-b".into()])
        .await
        .unwrap();
    assert_eq!(with_children.child_shard_ids.len(), 2);

    let released = store.release(&with_children).await.unwrap();
    assert_eq!(released.owner, None);
    let by_b = store.take(&released, "worker-b").await.unwrap();
    assert_eq!(by_b.owner.as_deref(), Some("worker-b"));
    assert_eq!(store.list().await.unwrap(), vec![by_b.clone()]);
    store.delete(&by_b.key).await.unwrap();
    assert!(store.get(&by_b.key).await.unwrap().is_none());
    assert!(matches!(
        store.renew(&by_b).await,
        Err(LeaseError::NotFound { .. })
    ));
}

#[tokio::test]
async fn racing_takers_on_one_expired_lease_exactly_one_wins() {
    let env = TestEnv::new().await;
    let (store, _table) = store(&env).await;
    let store = Arc::new(store);
    let lease = Lease::new("shardId-000000000007", CheckpointPosition::Latest);
    store.create_if_absent(&lease).await.unwrap();
    let expired = store.take(&lease, "dead-worker").await.unwrap();

    // Eight workers all saw the same counter and all try to take it at once.
    let barrier = Arc::new(tokio::sync::Barrier::new(8));
    let mut tasks = Vec::new();
    for i in 0..8 {
        let (store, expired, barrier) = (store.clone(), expired.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            store.take(&expired, &format!("worker-{i}")).await
        }));
    }
    let mut winners = Vec::new();
    let mut conflicts = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(lease) => winners.push(lease),
            Err(e) if e.is_conflict() => conflicts += 1,
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one taker wins");
    assert_eq!(conflicts, 7, "every other taker gets the typed conflict");
    let stored = store.get(&lease.key).await.unwrap().unwrap();
    assert_eq!(stored.owner, winners[0].owner);
    assert_eq!(stored.owner_switches_since_checkpoint, 1);
}

#[tokio::test]
async fn a_java_kcl_row_is_read_and_its_extra_attributes_survive_our_writes() {
    let env = TestEnv::new().await;
    let (store, table) = store(&env).await;
    let s = |v: &str| AttributeValue::S(v.to_owned());
    let n = |v: &str| AttributeValue::N(v.to_owned());
    env.dynamodb
        .put_item()
        .table_name(&table.name)
        .item("leaseKey", s("shardId-000000000001"))
        .item("leaseOwner", s("java-worker"))
        .item("leaseCounter", n("41"))
        .item("ownerSwitchesSinceCheckpoint", n("0"))
        .item(
            "checkpoint",
            s("49590338271490256608559692538361571095921575989136588898"),
        )
        .item("checkpointSubSequenceNumber", n("5"))
        .item(
            "parentShardId",
            AttributeValue::Ss(vec!["shardId-000000000000".into()]),
        )
        .item("startingHashKey", s("0"))
        .item(
            "endingHashKey",
            s("170141183460469231731687303715884105727"),
        )
        .item("throughputKBps", n("12.5"))
        .send()
        .await
        .unwrap();
    let lease = store
        .get("shardId-000000000001")
        .await
        .unwrap()
        .expect("readable");
    assert_eq!(
        (lease.owner.as_deref(), lease.counter),
        (Some("java-worker"), 41)
    );
    assert!(lease.hash_key_range.is_some());
    let taken = store.take(&lease, "rust-worker").await.unwrap();
    assert_eq!(taken.counter, 42);
    let raw = env
        .dynamodb
        .get_item()
        .table_name(&table.name)
        .key("leaseKey", s("shardId-000000000001"))
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .item
        .unwrap();
    assert_eq!(
        raw.get("throughputKBps"),
        Some(&n("12.5")),
        "attributes we do not know are kept"
    );
    assert_eq!(raw.get("leaseOwner"), Some(&s("rust-worker")));

    // KCL 3.5+ keeps its other entities in the lease table: they are not leases.
    env.dynamodb
        .put_item()
        .table_name(&table.name)
        .item("leaseKey", s("java-worker"))
        .item("entityType", s("WORKER_METRIC_STATS"))
        .item("lut", n("1733000000"))
        .send()
        .await
        .unwrap();
    let keys: Vec<String> = store
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.key)
        .collect();
    assert_eq!(keys, ["shardId-000000000001"]);
    assert_eq!(store.get("java-worker").await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_whose_answer_was_lost_is_recognised_as_done_when_retried() {
    let env = TestEnv::new().await;
    let (direct, _table) = store(&env).await;
    let lease = Lease::new("shardId-000000000000", CheckpointPosition::TrimHorizon);
    direct.create_if_absent(&lease).await.unwrap();
    let mine = direct.take(&lease, "w").await.unwrap();
    let proxy = env
        .dynamodb_fault_proxy(integration_tests::fault_proxy::Faults {
            lose_first_answers: 1,
            ..Default::default()
        })
        .await;
    let proxied = DynamoDbLeaseStore::new(env.dynamodb_client_at(&proxy.url), direct.table());
    let at = CheckpointPosition::Sequence {
        sequence: SequenceNumber::parse("4959").unwrap(),
        sub_sequence: 3,
    };
    // The first attempt is stored but its answer lost; the retry's condition then fails on the
    // counter the first attempt moved, and finds the lease exactly as intended.
    let written = proxied
        .checkpoint(&mine, &at, None)
        .await
        .expect("recognised as done, not as a lost lease");
    assert_eq!(
        proxy
            .counts
            .answers_lost
            .load(std::sync::atomic::Ordering::SeqCst),
        1
    );
    assert_eq!(written.checkpoint, at);
    assert_eq!(direct.get(&mine.key).await.unwrap().unwrap(), written);

    // A real conflict is still one: another worker took the lease since.
    let current = direct.get(&mine.key).await.unwrap().unwrap();
    direct.take(&current, "thief").await.unwrap();
    let err = proxied.checkpoint(&written, &at, None).await.unwrap_err();
    assert!(err.is_conflict(), "{err}");
}

/// A graceful hand-off (KCL 3.x's `checkpointOwner`) through DynamoDB's condition expressions:
/// the old owner stays in charge, renewing and checkpointing, until it releases the lease to the
/// new owner; the new owner can do neither before.
#[tokio::test]
async fn a_hand_off_keeps_the_old_owner_in_charge_until_it_releases() {
    let env = TestEnv::new().await;
    let (store, _table) = store(&env).await;
    hand_off_scenario(&store).await;
}

/// The in-memory lease store (what the simulation and unit tests run on) obeys the same rules.
#[tokio::test]
async fn the_in_memory_store_hands_off_alike() {
    hand_off_scenario(&kcl::leases::MemoryLeaseStore::new()).await;
}

async fn hand_off_scenario(store: &dyn LeaseStore) {
    let lease = Lease::new("shardId-000000000000", CheckpointPosition::TrimHorizon);
    store.create_if_absent(&lease).await.unwrap();
    let a = store.take(&lease, "worker-a").await.unwrap();

    let handing = store.hand_off(&a, "worker-b").await.unwrap();
    assert_eq!(
        (
            handing.owner.as_deref(),
            handing.checkpoint_owner.as_deref()
        ),
        (Some("worker-b"), Some("worker-a"))
    );
    assert_eq!(handing.counter, a.counter, "the counter does not move");
    assert!(
        store
            .hand_off(&a, "worker-c")
            .await
            .unwrap_err()
            .is_conflict(),
        "one hand-off at a time"
    );

    // The old owner's renewal goes through and tells it of the hand-off.
    let renewed = store.renew(&a).await.unwrap();
    assert_eq!(renewed.checkpoint_owner.as_deref(), Some("worker-a"));
    let position = CheckpointPosition::Sequence {
        sequence: SequenceNumber::parse("49590338271490256608559692538361571095921575989136588898")
            .unwrap(),
        sub_sequence: 0,
    };
    let checkpointed = store.checkpoint(&renewed, &position, None).await.unwrap();
    // The new owner's copy (no checkpoint owner) is refused until the hand-off completes.
    let mut b_copy = checkpointed.clone();
    b_copy.checkpoint_owner = None;
    assert!(
        store
            .checkpoint(&b_copy, &position, None)
            .await
            .unwrap_err()
            .is_conflict()
    );
    assert!(store.release(&b_copy).await.unwrap_err().is_conflict());

    let done = store.release(&checkpointed).await.unwrap();
    assert_eq!(
        (done.owner.as_deref(), done.checkpoint_owner.as_deref()),
        (Some("worker-b"), None)
    );
    let stored = store.get(&lease.key).await.unwrap().unwrap();
    assert_eq!(stored, done);
    assert_eq!(stored.checkpoint, position);
    let b = store.take(&stored, "worker-b").await.unwrap();
    assert_eq!(b.owner.as_deref(), Some("worker-b"));

    // A take in the middle of a hand-off (its old owner died) ends it.
    let handing = store.hand_off(&b, "worker-c").await.unwrap();
    let d = store.take(&handing, "worker-d").await.unwrap();
    assert_eq!(
        (d.owner.as_deref(), d.checkpoint_owner.as_deref()),
        (Some("worker-d"), None)
    );
    assert_eq!(store.get(&lease.key).await.unwrap().unwrap(), d);
}
