//! The lease coordinator: renewing held leases, taking expired ones, stealing toward balance.

// The worker that drives the taker is the next step of the consumer; until it lands, the taker
// is exercised only by its unit tests.
#[allow(dead_code)]
pub(crate) mod taker;
