//! Per-version measurement: what a request records, how the rolling window aggregates it, and
//! the host stats it is exported as.

pub mod beacon;
pub mod classify;
pub mod fleet;
pub mod grpc;
pub mod histogram;
pub mod metrics;
pub mod names;
pub mod report;
pub mod vitals;
pub mod weight;
pub mod window;
