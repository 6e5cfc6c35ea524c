//! The producer pipeline. Data flows one way:
//!
//! ```text
//!  Producer::put ──validate, take capacity──▶ [bounded inbox] ──▶ dispatcher task
//!                                                     │
//!   shard_map.predict(hash key) ◀─────────────────────┤ (map per stream, refreshed by tasks)
//!                                                     ▼
//!   aggregator: one open aggregate per shard ── closes on size / count / deadline
//!                                                     ▼
//!   limiter: per-shard records + bytes buckets (halved on throttling, recovering)
//!                                                     ▼
//!   collector: PutRecords calls ≤ 500 records, ≤ collection_max_size bytes, per stream
//!                                                     ▼
//!   PutRecords tasks (≤ max_concurrent_requests) ──▶ results back to the dispatcher:
//!     stored → resolve futures (wrong shard → refresh map, re-send what the shard doesn't own)
//!     failed → retry classifier: transient/throttled → back-off → aggregator again;
//!              fatal, throttled with fail_if_throttled, or past record_ttl → fail with record
//!   every resolved record: capacity given back → its future told → its flush epoch counted
//! ```

pub(crate) mod aggregator;
pub(crate) mod capacity;
pub(crate) mod collector;
pub(crate) mod concurrency;
pub(crate) mod dispatcher;
pub(crate) mod epochs;
pub(crate) mod inbox;
pub(crate) mod limiter;
pub(crate) mod pending;
pub(crate) mod retry;
pub(crate) mod shard_map;
pub(crate) mod slots;
pub(crate) mod streams;
pub(crate) mod unwind;
