//! canary-gate: a proxy-wasm filter that routes canary traffic in Envoy.
//!
//! The decision logic lives in host-testable modules with no host calls
//! ([`config`], [`bucket`], [`cookie`], [`route`]); the proxy-wasm glue in `filter`
//! is compiled for the proxy (wasm32-wasip1) only and stays thin.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing))]

pub mod bucket;
pub mod config;
pub mod cookie;
pub mod gate;
pub mod histogram;
pub mod leader;
pub mod route;
pub mod stats;
pub mod window;
pub mod wire;

#[cfg(target_os = "wasi")]
mod filter;
