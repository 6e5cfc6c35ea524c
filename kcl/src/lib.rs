//! The Kinesis consumer (KCL equivalent). Under construction: see issue "Consumer".
