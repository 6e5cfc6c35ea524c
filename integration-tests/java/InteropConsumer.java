// A Java KCL 3.x consumer for the interop tests (integration-tests/tests/java_interop.rs),
// compiled by scripts/java-kcl.sh against the KCL jars it installs. It reads one stream from
// TRIM_HORIZON (or the lease table's checkpoints) and writes what it does, one line each, to a
// file the Rust test reads:
//
//   STARTED
//   INIT <shard> <checkpoint>
//   DELIVER <shard> <sequence> <subSequence> <partitionKey> <base64 data>
//   CHECKPOINT <shard> <sequence> <subSequence>      (after every batch)
//   ENDED <shard> | LOST <shard> | SHUTDOWN_REQUESTED <shard> (after its checkpoint) | STOPPED
//
// Usage: java -cp ... InteropConsumer <stream> <application> <workerId> <outputFile>
// Endpoints, region and credentials come from AWS_ENDPOINT_URL_KINESIS,
// AWS_ENDPOINT_URL_DYNAMODB, AWS_REGION, AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY. SIGTERM
// shuts the scheduler down gracefully. INTEROP_MAX_RECORDS (Kinesis records per GetRecords call)
// and INTEROP_BATCH_DELAY_MS (a pause after each batch) slow it down, so that a test can stop it
// part way through a stream.

import java.io.FileOutputStream;
import java.io.PrintStream;
import java.net.URI;
import java.nio.charset.StandardCharsets;
import java.util.Base64;
import java.util.List;
import java.util.concurrent.TimeUnit;

import software.amazon.awssdk.auth.credentials.AwsBasicCredentials;
import software.amazon.awssdk.auth.credentials.StaticCredentialsProvider;
import software.amazon.awssdk.http.Protocol;
import software.amazon.awssdk.http.nio.netty.NettyNioAsyncHttpClient;
import software.amazon.awssdk.regions.Region;
import software.amazon.awssdk.services.cloudwatch.CloudWatchAsyncClient;
import software.amazon.awssdk.services.dynamodb.DynamoDbAsyncClient;
import software.amazon.awssdk.services.kinesis.KinesisAsyncClient;
import software.amazon.kinesis.checkpoint.CheckpointConfig;
import software.amazon.kinesis.common.ConfigsBuilder;
import software.amazon.kinesis.common.InitialPositionInStream;
import software.amazon.kinesis.common.InitialPositionInStreamExtended;
import software.amazon.kinesis.coordinator.CoordinatorConfig;
import software.amazon.kinesis.coordinator.Scheduler;
import software.amazon.kinesis.leases.LeaseManagementConfig;
import software.amazon.kinesis.lifecycle.LifecycleConfig;
import software.amazon.kinesis.lifecycle.events.InitializationInput;
import software.amazon.kinesis.lifecycle.events.LeaseLostInput;
import software.amazon.kinesis.lifecycle.events.ProcessRecordsInput;
import software.amazon.kinesis.lifecycle.events.ShardEndedInput;
import software.amazon.kinesis.lifecycle.events.ShutdownRequestedInput;
import software.amazon.kinesis.metrics.MetricsConfig;
import software.amazon.kinesis.metrics.MetricsLevel;
import software.amazon.kinesis.processor.ProcessorConfig;
import software.amazon.kinesis.processor.ShardRecordProcessor;
import software.amazon.kinesis.processor.SingleStreamTracker;
import software.amazon.kinesis.retrieval.KinesisClientRecord;
import software.amazon.kinesis.retrieval.RetrievalConfig;
import software.amazon.kinesis.retrieval.polling.PollingConfig;

public final class InteropConsumer {
    private static PrintStream out;

    private static synchronized void line(String... fields) {
        out.println(String.join(" ", fields));
        out.flush();
    }

    private static String env(String name, String otherwise) {
        String value = System.getenv(name);
        return value == null || value.isEmpty() ? otherwise : value;
    }

    public static void main(String[] args) throws Exception {
        String stream = args[0];
        String application = args[1];
        String worker = args[2];
        out = new PrintStream(new FileOutputStream(args[3], true), true, StandardCharsets.UTF_8);

        Region region = Region.of(env("AWS_REGION", "us-east-1"));
        StaticCredentialsProvider credentials = StaticCredentialsProvider.create(AwsBasicCredentials.create(
                env("AWS_ACCESS_KEY_ID", "local"), env("AWS_SECRET_ACCESS_KEY", "local")));
        KinesisAsyncClient kinesis = KinesisAsyncClient.builder()
                .region(region)
                .credentialsProvider(credentials)
                .endpointOverride(URI.create(env("AWS_ENDPOINT_URL_KINESIS", "http://127.0.0.1:4568")))
                .httpClientBuilder(NettyNioAsyncHttpClient.builder().protocol(Protocol.HTTP1_1))
                .build();
        DynamoDbAsyncClient dynamo = DynamoDbAsyncClient.builder()
                .region(region)
                .credentialsProvider(credentials)
                .endpointOverride(URI.create(env("AWS_ENDPOINT_URL_DYNAMODB", "http://127.0.0.1:8000")))
                .build();
        // Never called: metrics are off.
        CloudWatchAsyncClient cloudWatch = CloudWatchAsyncClient.builder()
                .region(region)
                .credentialsProvider(credentials)
                .endpointOverride(URI.create("http://127.0.0.1:9"))
                .build();

        SingleStreamTracker tracker = new SingleStreamTracker(
                stream, InitialPositionInStreamExtended.newInitialPosition(InitialPositionInStream.TRIM_HORIZON));
        ConfigsBuilder configs =
                new ConfigsBuilder(tracker, application, kinesis, dynamo, cloudWatch, worker, Processor::new);
        // ConfigsBuilder makes a new object on every call: tune the ones passed to the scheduler.
        LeaseManagementConfig leases = configs.leaseManagementConfig()
                .shardSyncIntervalMillis(1_000)
                .leaseAssignmentIntervalMillis(1_000L)
                .failoverTimeMillis(3_000)
                .leasesRecoveryAuditorExecutionFrequencyMillis(1_000);
        leases.workerUtilizationAwareAssignmentConfig()
                .inMemoryWorkerMetricsCaptureFrequencyMillis(200)
                .workerMetricsReporterFreqInMillis(1_000);
        CoordinatorConfig coordinator = configs.coordinatorConfig()
                .parentShardPollIntervalMillis(200)
                .shardConsumerDispatchPollIntervalMillis(100)
                .schedulerInitializationBackoffTimeMillis(500);
        PollingConfig polling = new PollingConfig(stream, kinesis).idleTimeBetweenReadsInMillis(200);
        String maxRecords = System.getenv("INTEROP_MAX_RECORDS");
        if (maxRecords != null) {
            polling.maxRecords(Integer.parseInt(maxRecords));
        }
        RetrievalConfig retrieval = configs.retrievalConfig().retrievalSpecificConfig(polling);
        MetricsConfig metrics = configs.metricsConfig().metricsLevel(MetricsLevel.NONE);
        CheckpointConfig checkpoint = configs.checkpointConfig();
        LifecycleConfig lifecycle = configs.lifecycleConfig();
        ProcessorConfig processor = configs.processorConfig();

        Scheduler scheduler =
                new Scheduler(checkpoint, coordinator, leases, lifecycle, metrics, processor, retrieval);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            try {
                scheduler.startGracefulShutdown().get(30, TimeUnit.SECONDS);
            } catch (Exception e) {
                line("SHUTDOWN_FAILED", e.toString().replace(' ', '_'));
            }
            line("STOPPED");
        }));
        Thread running = new Thread(scheduler, "scheduler");
        running.start();
        line("STARTED");
        running.join();
    }

    /** Writes every record and checkpoints after every batch. */
    static final class Processor implements ShardRecordProcessor {
        private static final long DELAY_MS = Long.parseLong(env("INTEROP_BATCH_DELAY_MS", "0"));
        private String shard = "?";

        @Override
        public void initialize(InitializationInput input) {
            shard = input.shardId();
            line("INIT", shard, String.valueOf(input.extendedSequenceNumber()).replace(' ', '_'));
        }

        @Override
        public void processRecords(ProcessRecordsInput input) {
            List<KinesisClientRecord> records = input.records();
            for (KinesisClientRecord r : records) {
                byte[] data = new byte[r.data().remaining()];
                r.data().get(data);
                line("DELIVER", shard, r.sequenceNumber(), String.valueOf(r.subSequenceNumber()), r.partitionKey(),
                        Base64.getEncoder().encodeToString(data));
            }
            if (records.isEmpty()) {
                return;
            }
            KinesisClientRecord last = records.get(records.size() - 1);
            try {
                input.checkpointer().checkpoint(last.sequenceNumber(), last.subSequenceNumber());
                line("CHECKPOINT", shard, last.sequenceNumber(), String.valueOf(last.subSequenceNumber()));
                Thread.sleep(DELAY_MS);
            } catch (Exception e) {
                line("CHECKPOINT_FAILED", shard, e.getClass().getSimpleName());
            }
        }

        @Override
        public void leaseLost(LeaseLostInput input) {
            line("LOST", shard);
        }

        @Override
        public void shardEnded(ShardEndedInput input) {
            try {
                input.checkpointer().checkpoint();
                line("ENDED", shard);
            } catch (Exception e) {
                line("CHECKPOINT_FAILED", shard, e.getClass().getSimpleName());
            }
        }

        @Override
        public void shutdownRequested(ShutdownRequestedInput input) {
            // Every batch is checkpointed already; this is where an application checkpoints
            // what it holds before a shutdown or a hand-off to another worker.
            try {
                input.checkpointer().checkpoint();
            } catch (Exception e) {
                line("CHECKPOINT_FAILED", shard, e.getClass().getSimpleName());
            }
            line("SHUTDOWN_REQUESTED", shard);
        }
    }
}
