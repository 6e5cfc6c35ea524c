//! [`WorkerBuilder`]: a worker from named parts, checked when it is built.

use std::sync::Arc;

use aws_config::SdkConfig;
use kinesis_api::Kinesis;

use super::Worker;
use crate::config::{ConfigError, WorkerConfig};
use crate::leases::{DynamoDbLeaseStore, LeaseStore};
use crate::processor::RecordProcessorFactory;

/// Why [`WorkerBuilder::build`] refused to build a worker: each says what to set or fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// A required part was not given.
    #[error("worker builder: {part} is not set: {hint}")]
    Missing {
        /// The builder method that sets it.
        part: &'static str,
        /// What to do.
        hint: &'static str,
    },
    /// The application name cannot be a DynamoDB table name.
    #[error(
        "application name {name:?} cannot name the lease table: DynamoDB table names are 3 to 255 characters of a-z, A-Z, 0-9, '_', '-' and '.'"
    )]
    ApplicationName {
        /// The name given.
        name: String,
    },
    /// The stream name is empty.
    #[error("worker builder: the stream name (or ARN) is empty")]
    EmptyStream,
    /// Both `.stream(...)` and `.streams(...)` were given, or a stream is listed twice.
    #[error("worker builder: {problem}")]
    Streams {
        /// What is wrong.
        problem: String,
    },
    /// A setting of the [`WorkerConfig`] is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// Builds a [`Worker`] (see [`Worker::builder`]). Required: the stream (or streams), a processor
/// factory, and where Kinesis and the lease table are (an `SdkConfig`, or clients, or
/// implementations). Everything else has a default, documented on its method.
#[derive(Default)]
#[must_use = "a builder does nothing until built"]
pub struct WorkerBuilder {
    sdk_config: Option<SdkConfig>,
    kinesis_client: Option<aws_sdk_kinesis::Client>,
    dynamodb_client: Option<aws_sdk_dynamodb::Client>,
    kinesis: Option<Arc<dyn Kinesis>>,
    lease_store: Option<Arc<dyn LeaseStore>>,
    application_name: Option<String>,
    stream: Option<String>,
    streams: Option<Vec<crate::StreamSpec>>,
    factory: Option<Arc<dyn RecordProcessorFactory>>,
    config: Option<WorkerConfig>,
}

impl std::fmt::Debug for WorkerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerBuilder")
            .field("application_name", &self.application_name)
            .field("stream", &self.stream)
            .field("streams", &self.streams)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl WorkerBuilder {
    /// Where Kinesis and DynamoDB are (region, credentials, endpoints): the clients are made from
    /// it unless given below.
    pub fn sdk_config(mut self, config: &SdkConfig) -> Self {
        self.sdk_config = Some(config.clone());
        self
    }

    /// The Kinesis client (its retries and timeouts are replaced: the worker retries by class
    /// with [`WorkerConfig::kinesis_call_timeout`]). Default: made from `sdk_config`.
    pub fn kinesis_client(mut self, client: aws_sdk_kinesis::Client) -> Self {
        self.kinesis_client = Some(client);
        self
    }

    /// The DynamoDB client of the lease table (its calls limited by
    /// [`WorkerConfig::lease_call_timeout`]). Default: made from `sdk_config`.
    pub fn dynamodb_client(mut self, client: aws_sdk_dynamodb::Client) -> Self {
        self.dynamodb_client = Some(client);
        self
    }

    /// Any implementation of the Kinesis boundary (an in-memory Kinesis in tests); takes the
    /// place of the Kinesis client.
    pub fn kinesis(mut self, kinesis: Arc<dyn Kinesis>) -> Self {
        self.kinesis = Some(kinesis);
        self
    }

    /// Any lease store (an in-memory one in tests); takes the place of the DynamoDB table, and
    /// the application name is then not needed.
    pub fn lease_store(mut self, store: Arc<dyn LeaseStore>) -> Self {
        self.lease_store = Some(store);
        self
    }

    /// The application's name, which is also the lease table's name: every worker of one
    /// application uses the same. Required with a DynamoDB lease table.
    pub fn application_name(mut self, name: impl Into<String>) -> Self {
        self.application_name = Some(name.into());
        self
    }

    /// The stream to read: its name, or its ARN (`arn:...`). Required, unless
    /// [`streams`](Self::streams) is given instead.
    pub fn stream(mut self, stream: impl Into<String>) -> Self {
        self.stream = Some(stream.into());
        self
    }

    /// Makes a multi-stream worker reading these streams (names, ARNs or
    /// [`StreamSpec`](crate::StreamSpec)s with their own initial position), with the Java
    /// KCL's multi-stream lease keys (`account:stream:creationEpoch:shardId`); the list may
    /// change while the worker runs ([`Worker::streams_handle`]), and may start empty. Instead
    /// of [`stream`](Self::stream): a lease table is either single-stream or multi-stream.
    pub fn streams<S: Into<crate::StreamSpec>>(
        mut self,
        streams: impl IntoIterator<Item = S>,
    ) -> Self {
        self.streams = Some(streams.into_iter().map(Into::into).collect());
        self
    }

    /// Makes one processor per shard: a closure `|shard_id: &str| -> Box<dyn RecordProcessor>`
    /// or any [`RecordProcessorFactory`]. Required.
    pub fn processor_factory(mut self, factory: impl RecordProcessorFactory) -> Self {
        self.factory = Some(Arc::new(factory));
        self
    }

    /// The settings. Default: [`WorkerConfig::default`].
    pub fn config(mut self, config: WorkerConfig) -> Self {
        self.config = Some(config);
        self
    }

    /// The worker and a [`RecordStream`](crate::RecordStream) of its shards' batches, instead
    /// of processors (a `processor_factory` is not needed, and is replaced). At most `capacity`
    /// batches wait in the stream; a full stream holds the shards' reads back. Run the worker
    /// (`tokio::spawn(worker.run())`) and take the stream's batches:
    ///
    /// ```no_run
    /// # async fn demo(sdk_config: aws_config::SdkConfig) -> Result<(), Box<dyn std::error::Error>> {
    /// let (worker, mut batches) = kcl::Worker::builder()
    ///     .sdk_config(&sdk_config)
    ///     .application_name("my-application")
    ///     .stream("my-stream")
    ///     .build_stream(16)?;
    /// let running = tokio::spawn(worker.run());
    /// // Or, as a futures::Stream: `while let Some(batch) = batches.next().await`.
    /// while let Some(mut batch) = batches.next_batch().await {
    ///     for record in &batch.records {
    ///         println!("{} {:?}", batch.shard_id, record.data);
    ///     }
    ///     // After the work is done; at a shard's end (an empty batch) this lets its children start.
    ///     batch.checkpoint().await?;
    /// }
    /// running.await??;
    /// # Ok(())
    /// # }
    /// ```
    pub fn build_stream(
        mut self,
        capacity: usize,
    ) -> Result<(Worker, crate::RecordStream), BuildError> {
        let (factory, stream) = crate::stream::channel(capacity);
        self.factory = Some(Arc::new(factory));
        Ok((self.build()?, stream))
    }

    /// The worker, or what is missing or invalid. Nothing is called yet: the stream and the
    /// lease table are checked when the worker runs.
    pub fn build(self) -> Result<Worker, BuildError> {
        let config = self.config.unwrap_or_default();
        config.validate()?;
        let (streams, multi) = match (self.stream, self.streams) {
            (Some(_), Some(_)) => {
                return Err(BuildError::Streams {
                    problem: "both .stream(...) and .streams(...) are given: a worker (and its lease table) reads one stream, or several with multi-stream lease keys".into(),
                });
            }
            (Some(stream), None) => (vec![crate::StreamSpec::new(stream)], false),
            (None, Some(streams)) => (streams, true),
            (None, None) => {
                return Err(BuildError::Missing {
                    part: "stream",
                    hint: "name the stream (or give its ARN) with .stream(...), or several with .streams(...)",
                });
            }
        };
        for (i, spec) in streams.iter().enumerate() {
            if spec.name.trim().is_empty() {
                return Err(BuildError::EmptyStream);
            }
            if streams[..i].iter().any(|s| s.name == spec.name) {
                return Err(BuildError::Streams {
                    problem: format!("stream {} is listed twice", spec.name),
                });
            }
        }
        let factory = self.factory.ok_or(BuildError::Missing {
            part: "processor_factory",
            hint: "give a closure making a RecordProcessor per shard with .processor_factory(...)",
        })?;
        let kinesis: Arc<dyn Kinesis> = match (self.kinesis, self.kinesis_client) {
            (Some(kinesis), _) => kinesis,
            (None, Some(client)) => super::sdk_kinesis(&client, &config),
            (None, None) => match &self.sdk_config {
                Some(sdk) => super::sdk_kinesis(&aws_sdk_kinesis::Client::new(sdk), &config),
                None => {
                    return Err(BuildError::Missing {
                        part: "sdk_config",
                        hint: "say where Kinesis is with .sdk_config(...) (or .kinesis_client(...))",
                    });
                }
            },
        };
        let store: Arc<dyn LeaseStore> = match self.lease_store {
            Some(store) => store,
            None => {
                let name = self.application_name.ok_or(BuildError::Missing {
                    part: "application_name",
                    hint: "name the application (and so its lease table) with .application_name(...)",
                })?;
                if !is_table_name(&name) {
                    return Err(BuildError::ApplicationName { name });
                }
                let client = match (self.dynamodb_client, &self.sdk_config) {
                    (Some(client), _) => client,
                    (None, Some(sdk)) => aws_sdk_dynamodb::Client::new(sdk),
                    (None, None) => {
                        return Err(BuildError::Missing {
                            part: "sdk_config",
                            hint: "say where DynamoDB is with .sdk_config(...) (or .dynamodb_client(...))",
                        });
                    }
                };
                Arc::new(
                    DynamoDbLeaseStore::new(client, name)
                        .with_call_timeout(config.lease_call_timeout),
                )
            }
        };
        Ok(Worker::assemble(
            kinesis, store, streams, multi, factory, config,
        ))
    }
}

/// DynamoDB's rule for table names.
fn is_table_name(name: &str) -> bool {
    (3..=255).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::leases::MemoryLeaseStore;
    use crate::processor::RecordProcessor;
    use kinesis_api::memory::MemoryKinesis;

    fn factory(_: &str) -> Box<dyn RecordProcessor> {
        unreachable!("no worker runs in these tests")
    }

    fn sdk() -> SdkConfig {
        SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .build()
    }

    #[test]
    fn each_missing_part_is_named() {
        let err = Worker::builder().processor_factory(factory).build();
        assert!(
            matches!(err, Err(BuildError::Missing { part: "stream", .. })),
            "{err:?}"
        );
        let err = Worker::builder().stream("s").build();
        assert!(
            matches!(
                err,
                Err(BuildError::Missing {
                    part: "processor_factory",
                    ..
                })
            ),
            "{err:?}"
        );
        let err = Worker::builder()
            .stream("s")
            .processor_factory(factory)
            .build();
        assert!(
            matches!(
                err,
                Err(BuildError::Missing {
                    part: "sdk_config",
                    ..
                })
            ),
            "{err:?}"
        );
        let err = Worker::builder()
            .sdk_config(&sdk())
            .stream("s")
            .processor_factory(factory)
            .build();
        let Err(e @ BuildError::Missing { .. }) = err else {
            panic!("{err:?}");
        };
        assert!(e.to_string().contains(".application_name("), "{e}");
    }

    #[test]
    fn invalid_names_and_settings_are_refused_at_build() {
        let base = || {
            Worker::builder()
                .sdk_config(&sdk())
                .stream("s")
                .processor_factory(factory)
        };
        for bad in ["ab", "my app", "app/1", ""] {
            let err = base().application_name(bad).build();
            assert!(
                matches!(err, Err(BuildError::ApplicationName { .. })),
                "{bad:?}: {err:?}"
            );
        }
        let err = base().application_name("app").stream(" ").build();
        assert!(matches!(err, Err(BuildError::EmptyStream)), "{err:?}");
        let err = base().application_name("app").streams(["a"]).build();
        assert!(matches!(err, Err(BuildError::Streams { .. })), "{err:?}");
        let multi = || {
            Worker::builder()
                .sdk_config(&sdk())
                .application_name("app")
                .processor_factory(factory)
        };
        let err = multi().streams(["a", "b", "a"]).build();
        assert!(matches!(err, Err(BuildError::Streams { .. })), "{err:?}");
        let err = multi().streams(["a", ""]).build();
        assert!(matches!(err, Err(BuildError::EmptyStream)), "{err:?}");
        let worker = multi().streams(["a", "b"]).build().unwrap();
        let names: Vec<String> = worker
            .streams_handle()
            .unwrap()
            .list()
            .into_iter()
            .map(|s| s.name)
            .collect();
        assert_eq!(names, ["a", "b"]);
        assert!(
            base()
                .application_name("app")
                .build()
                .unwrap()
                .streams_handle()
                .is_none()
        );
        let config = WorkerConfig::default().renew_interval(std::time::Duration::from_secs(60));
        let err = base().application_name("app").config(config).build();
        let Err(BuildError::Config(e)) = err else {
            panic!("{err:?}");
        };
        assert_eq!(e.setting, "renew_interval");
        assert!(base().application_name("my-app_1.v2").build().is_ok());
    }

    #[test]
    fn implementations_take_the_place_of_clients_and_table() {
        let built = Worker::builder()
            .kinesis(Arc::new(MemoryKinesis::with_seed(1)))
            .lease_store(Arc::new(MemoryLeaseStore::new()))
            .stream("s")
            .processor_factory(factory)
            .build();
        assert!(built.is_ok(), "{built:?}");
    }
}
