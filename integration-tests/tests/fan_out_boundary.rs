//! Enhanced fan-out at the Kinesis boundary against a real endpoint: a consumer is registered and
//! becomes ACTIVE, a subscription from TRIM_HORIZON pushes the shard's records in order with a
//! continuation to resume from, and a subscription from that continuation sees only what came
//! after; a second subscription to an open one is refused as retryable. (The consumer on top of
//! it is work in progress: issue #12 §1.)

use std::time::Duration;

use aws_sdk_kinesis::primitives::Blob;
use integration_tests::TestEnv;
use kinesis_api::{ConsumerStatus, IteratorStart, Kinesis, SdkKinesis, StreamRef, Subscription};

/// Data of the records of `subscription` until `n` were seen (or 30 s passed), and the last
/// continuation.
async fn take(subscription: &mut Box<dyn Subscription>, n: usize) -> (Vec<String>, Option<String>) {
    let (mut data, mut continuation) = (Vec::new(), None);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while data.len() < n {
        let event = tokio::time::timeout_at(deadline, subscription.next_event())
            .await
            .unwrap_or_else(|_| panic!("only {} of {n} records in 30 s: {data:?}", data.len()))
            .unwrap_or_else(|| panic!("the subscription ended after {} records", data.len()))
            .unwrap_or_else(|e| panic!("subscription failed: {e}"));
        data.extend(
            event
                .records
                .iter()
                .map(|r| String::from_utf8_lossy(&r.data).into_owned()),
        );
        continuation = event.continuation_sequence_number.clone();
    }
    (data, continuation)
}

/// The consumer `name` once it is ACTIVE (at most 60 s).
async fn active(kinesis: &SdkKinesis, stream_arn: &str, name: &str) -> kinesis_api::StreamConsumer {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let c = kinesis
            .describe_stream_consumer(stream_arn, name)
            .await
            .expect("DescribeStreamConsumer");
        if c.status == ConsumerStatus::Active {
            return c;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not ACTIVE in 60 s: {c:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_registered_consumer_subscribes_and_resumes_from_the_continuation() {
    let env = TestEnv::new().await;
    let stream = env.create_stream(1).await;
    let put = |from: usize, to: usize| {
        let kinesis = env.kinesis.clone();
        let name = stream.name.clone();
        async move {
            for i in from..to {
                kinesis
                    .put_record()
                    .stream_name(&name)
                    .partition_key("k")
                    .data(Blob::new(format!("r{i}")))
                    .send()
                    .await
                    .expect("PutRecord");
            }
        }
    };
    put(0, 10).await;

    let kinesis = SdkKinesis::new(&env.kinesis, Duration::from_secs(30));
    let registered = kinesis
        .register_stream_consumer(&stream.arn, "it-consumer")
        .await
        .expect("RegisterStreamConsumer");
    assert_eq!(registered.name, "it-consumer");
    let consumer = active(&kinesis, &stream.arn, "it-consumer").await;
    assert_eq!(consumer.arn, registered.arn);
    let again = kinesis
        .register_stream_consumer(&stream.arn, "it-consumer")
        .await
        .expect_err("a second registration by the same name");
    assert!(again.is_code("ResourceInUseException"), "{again}");

    let shard = kinesis
        .list_shards(
            &StreamRef::new(&stream.name),
            kinesis_api::ShardFilter::Open,
        )
        .await
        .expect("ListShards")
        .remove(0);
    let mut first = kinesis
        .subscribe_to_shard(&consumer.arn, &shard.id, &IteratorStart::TrimHorizon)
        .await
        .expect("SubscribeToShard");
    let (data, continuation) = take(&mut first, 10).await;
    let expected: Vec<String> = (0..10).map(|i| format!("r{i}")).collect();
    assert_eq!(data, expected, "in order, each once");
    let continuation = continuation.expect("a continuation to resume from");

    // While it is open, a second subscription of the same consumer to the same shard is refused
    // (kinesis-mock says so on the event stream, AWS at the call): retried after a back-off.
    let refused = match kinesis
        .subscribe_to_shard(&consumer.arn, &shard.id, &IteratorStart::TrimHorizon)
        .await
    {
        Err(e) => e,
        Ok(mut second) => tokio::time::timeout(Duration::from_secs(30), second.next_event())
            .await
            .expect("an answer in 30 s")
            .expect("an event")
            .expect_err("a second subscription is refused"),
    };
    assert!(refused.is_code("ResourceInUseException"), "{refused}");
    assert_eq!(
        refused.class(),
        kinesis_retry::Class::Transient,
        "{refused}"
    );

    // Another consumer resumes from the continuation and sees only what came after it.
    put(10, 15).await;
    let other = kinesis
        .register_stream_consumer(&stream.arn, "it-consumer-2")
        .await
        .expect("RegisterStreamConsumer");
    let other = active(&kinesis, &stream.arn, &other.name).await;
    let mut resumed = kinesis
        .subscribe_to_shard(
            &other.arn,
            &shard.id,
            &IteratorStart::AfterSequence(continuation),
        )
        .await
        .expect("SubscribeToShard from the continuation");
    let (data, _) = take(&mut resumed, 5).await;
    let expected: Vec<String> = (10..15).map(|i| format!("r{i}")).collect();
    assert_eq!(data, expected, "only what came after the continuation");
    drop(first);
}
