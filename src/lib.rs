//! canary-gate: an Envoy filter that routes, tags, measures and gates canary traffic, built as
//! a proxy-wasm filter (`proxy`) and as a native dynamic module (`native`, feature `native`).
//! The data path of a request, and the module that owns each step:
//!
//! ```text
//! plugin JSON ──► config ──────────────► (validated once, at on_configure)
//! request ──────► route   decide: override, sticky bucket, hash key, mesh pin (by revision), gate
//!           ├───► measure classify: the route class (path, method, header, host)
//!           └───► filter  tag: version and reason headers, Set-Cookie, filter state
//! response ─────► filter  observer: stamp its revision; mesh router: learn the subset's
//!                         revision (route::revisions, shared by coord); outcomes
//! response end ─► measure record: host counters and histogram; this VM's tally per lane
//!                         (version and class)
//! each period ──► coord   ship tallies, lease, merge into the window (measure),
//! (gate.eval_ms)          evaluate the gate (gate), publish and adopt the verdict,
//!                         share the revision table, probe a tripped gate's canary subset
//! ```
//!
//! [`model`] is the shared vocabulary; [`host`] the narrow traits through which [`measure`],
//! [`coord`] and [`filter`] (the per-stream flow) reach Envoy. Everything but the glue in
//! `proxy` (wasm32-wasip1 only) and `native` (the dynamic-module C ABI) is plain Rust with no
//! host calls, tested on the host. Dependencies point one way:
//! `model ← config ← route, measure ← gate ← coord ← filter ← proxy, native` (`coord` also
//! shares `route`'s revision table between VMs or workers).
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing))]

pub mod config;
pub mod coord;
pub mod filter;
pub mod gate;
pub mod host;
pub mod measure;
pub mod model;
pub mod route;

#[cfg(target_os = "wasi")]
mod proxy;

#[cfg(all(feature = "native", not(target_family = "wasm")))]
mod native;
