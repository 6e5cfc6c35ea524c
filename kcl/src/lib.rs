//! The Kinesis consumer (KCL equivalent). Built so far: the lease table ([`leases`]) with the
//! Java KCL's attribute names and conditional-write semantics, in DynamoDB and in memory. The
//! coordinator, shard consumers and checkpointer build on it.

mod coordinator;
pub mod leases;
