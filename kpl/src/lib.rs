//! The Kinesis producer (KPL equivalent). Under construction: see issue "Producer".
