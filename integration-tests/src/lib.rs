//! Shared harness for the integration tests: every test talks to real Kinesis and DynamoDB
//! endpoints over HTTP (the local emulators from `scripts/local-aws.sh`, a LocalStack, or AWS when
//! explicitly allowed), never to mocks.
//!
//! - [`TestEnv`] builds the SDK configuration from the standard `AWS_ENDPOINT_URL*` variables and
//!   refuses to run (a failing test, not a skipped one) when none is set.
//! - [`TestStream`] and [`TestTable`] are resources with random names that delete themselves.
//! - [`read`] reads a whole stream back, shard by shard.
//! - [`fault_proxy`] injects throttling, 5xx, resets and stalls between the SDK and Kinesis.
//! - [`java_kcl`] runs the real Java KCL 3.x as a child process (the interop tests).
//! - [`simulation`] is the exception: a whole fleet in one process on the in-memory Kinesis and
//!   lease store, under tokio's paused clock.

pub mod check;
pub mod consume;
pub mod delivery_file;
mod env;
pub mod fault_proxy;
pub mod java_interop;
pub mod java_kcl;
pub mod log_capture;
mod names;
pub mod read;
mod resources;
pub mod simulation;

pub use env::{Endpoints, MissingEndpoint, TestEnv};
pub use names::random_name;
pub use resources::{TestStream, TestTable};
