//! The native Envoy dynamic module (`make native`: `libcanary_gate.so`): binds the filter's
//! flow ([`crate::filter`]) to Envoy's dynamic-module C ABI ([`abi`]), as `proxy` binds it to
//! proxy-wasm.
//!
//! Envoy runs one configuration for all worker threads. Each worker gets a lane, what a Wasm VM
//! is to the Wasm build: its coordinator, its bucket RNG and its pending counts, behind a lock
//! only its worker takes on the request path. Every evaluation period the configuration's
//! scheduler runs the tick on the main thread: each lane ships its tallies into process memory,
//! the lane holding the lease merges them and publishes the verdict, and every lane adopts it,
//! exactly the Wasm VMs' protocol ([`crate::coord`]). A clock thread only sleeps and wakes the
//! scheduler. Every hook catches a panic: none crosses the ABI.

mod abi;
mod host;

use crate::config::Role;
use crate::coord::Coordinator;
use crate::filter::{self, Action, Env, Setup};
use crate::measure::beacon::{Pending, Rejection};
use crate::measure::metrics::MetricIds;
use crate::route::bucket::BucketRng;
use abi::{ConfigEnvoyPtr, ConfigSchedulerPtr, EnvoyBuffer, EnvoyHeader, FilterEnvoyPtr, FilterSchedulerPtr};
use host::{lock, ConfigCalls, Labelled, StreamCalls};
use std::cell::{Cell, RefCell};
use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// What one worker keeps for one service and role across configuration updates: the Wasm
/// build's VM state.
struct Lane {
    coordinator: Coordinator,
    rng: Cell<BucketRng>,
}

/// The lanes of one service and role, one per worker.
struct Lanes {
    name: String,
    workers: Box<[Mutex<Lane>]>,
}

/// Every service's lanes: bounded by configuration, kept for the process's life as a Wasm VM
/// keeps its coordinators.
static LANES: Mutex<Vec<Arc<Lanes>>> = Mutex::new(Vec::new());

/// A random seed from the standard library's per-process keys and the clock.
fn seed(salt: u64) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(salt);
    hasher.write_u64(host::now_micros());
    hasher.finish()
}

fn lanes_of(service: &str, measures: &str, workers: usize) -> Arc<Lanes> {
    let name = format!("{service}/{measures}");
    let mut all = lock(&LANES);
    if let Some(existing) = all.iter().find(|l| l.name == name && l.workers.len() >= workers) {
        return existing.clone();
    }
    let lanes = (0..workers)
        .map(|i| {
            let seed = seed(i as u64);
            Mutex::new(Lane {
                coordinator: Coordinator::new(service, measures, (seed.rotate_left(17) ^ 0x5bd1_e995).max(1)),
                rng: Cell::new(BucketRng::new(seed)),
            })
        })
        .collect();
    let created = Arc::new(Lanes { name, workers: lanes });
    all.retain(|l| l.name != created.name);
    all.push(created.clone());
    created
}

/// A configuration's stats with one worker's pending counts, that worker's request tag, and
/// its beacons waiting for their body.
struct WorkerStats {
    metrics: MetricIds,
    stamp_tag: Option<String>,
    waiting: Waiting,
}

/// One worker's beacons waiting for their body, as a Wasm VM keeps them
/// ([`crate::measure::beacon::Pending`]: at most 64, each for at most 5 s): the tick wakes the
/// stream of one overdue, on its worker, to answer it.
#[derive(Default)]
struct Waiting {
    table: Pending,
    /// The scheduler of each waiting stream, by stream id.
    schedulers: Vec<(u32, FilterScheduler)>,
}

/// A stream's scheduler. Committed from the tick on the main thread (Envoy allows it from any
/// thread); deleted by its stream, under the same lock, so never committed after.
struct FilterScheduler(FilterSchedulerPtr);
// SAFETY: see above; the pointer is only used under the worker's lock.
unsafe impl Send for FilterScheduler {}

/// The stream event that answers a beacon no longer waited for.
const GIVE_UP: u64 = 1;

/// The clock thread's controls: the next delay, and the stop signal.
struct Clock {
    next_ms: AtomicU64,
    stopped: Mutex<bool>,
    wake: Condvar,
}

/// The scheduler, sent to the clock thread: Envoy's commit may be called from any thread.
struct Scheduler(ConfigSchedulerPtr);
// SAFETY: Envoy documents `scheduler_commit` as callable from any thread; the pointer is
// deleted only after the clock thread has been joined.
unsafe impl Send for Scheduler {}

/// One filter configuration.
struct Config {
    plugin: filter::Plugin,
    lanes: Arc<Lanes>,
    workers: Box<[Mutex<WorkerStats>]>,
    envoy: ConfigEnvoyPtr,
    scheduler: ConfigSchedulerPtr,
    clock: Arc<Clock>,
    clock_thread: Mutex<Option<JoinHandle<()>>>,
    flushed_s: AtomicU64,
    /// The series first seen while running (revisions).
    labelled: Labelled,
    /// Ids of this configuration's streams.
    stream_ids: AtomicU32,
    /// Whether the first late beacon body was logged.
    logged_late: AtomicBool,
}

// SAFETY: the Envoy pointers are used on the main thread only (the tick, creation and
// destruction); everything else is immutable or behind a lock.
unsafe impl Send for Config {}
unsafe impl Sync for Config {}

impl Config {
    fn create(envoy: ConfigEnvoyPtr, json: &[u8]) -> Option<Config> {
        let setup = Setup {
            // Envoy gives a dynamic module no node metadata: an observer's labels come from
            // the environment (`CANARY_GATE_LABEL_<name>`).
            node_label: |name: &str| std::env::var(format!("CANARY_GATE_LABEL_{name}")).ok().map(String::into_bytes),
            env_var: |name: &str| std::env::var(name).ok(),
            offers_clear_route_cache: true,
        };
        let plugin = match filter::Plugin::configure(json, &setup) {
            Ok(plugin) => plugin,
            Err(e) => {
                log::error!("{e}");
                return None;
            }
        };
        let calls = ConfigCalls { config: envoy, labelled: None };
        let metrics = plugin.define_metrics(&calls);
        let labelled = Labelled::define(envoy);
        let config = plugin.config();
        // SAFETY: main thread (configuration).
        let workers = (unsafe { abi::envoy_dynamic_module_callback_get_concurrency() } as usize).max(1);
        let lanes = lanes_of(&config.service, config.measures(), workers);
        let stats = lanes
            .workers
            .iter()
            .map(|lane| {
                let lane = lock(lane);
                if config.role == Role::Observer && config.direction == "inbound" {
                    lane.coordinator.resolve_pod(&calls);
                }
                // Envoy hands a dynamic module every body: one missing is late.
                let mut waiting = Waiting::default();
                waiting.table.bodies_seen = true;
                Mutex::new(WorkerStats {
                    metrics: metrics.clone(),
                    stamp_tag: plugin.stamp_tag(&lane.coordinator),
                    waiting,
                })
            })
            .collect();
        // SAFETY: main thread; deleted in `Drop`.
        let scheduler = unsafe { abi::envoy_dynamic_module_callback_http_filter_config_scheduler_new(envoy) };
        let period = u64::from(config.eval_period_ms());
        let clock =
            Arc::new(Clock { next_ms: AtomicU64::new(period), stopped: Mutex::new(false), wake: Condvar::new() });
        Some(Config {
            plugin,
            lanes,
            workers: stats,
            envoy,
            scheduler,
            clock,
            clock_thread: Mutex::new(None),
            flushed_s: AtomicU64::new(0),
            labelled,
            stream_ids: AtomicU32::new(0),
            logged_late: AtomicBool::new(false),
        })
    }

    /// Starts the clock thread: it sleeps until the next step and wakes the scheduler, which
    /// runs [`Config::tick`] on the main thread.
    fn start_clock(&self) {
        if self.scheduler.is_null() {
            return;
        }
        let (clock, scheduler) = (self.clock.clone(), Scheduler(self.scheduler));
        let spawned = std::thread::Builder::new().name("canary-gate-clock".into()).spawn(move || {
            let scheduler = scheduler;
            let mut stopped = lock(&clock.stopped);
            loop {
                let delay = Duration::from_millis(clock.next_ms.load(Ordering::Relaxed).max(1));
                stopped = clock.wake.wait_timeout(stopped, delay).map_or_else(|e| e.into_inner().0, |(g, _)| g);
                if *stopped {
                    return;
                }
                // SAFETY: the scheduler outlives this thread (joined before deletion).
                unsafe { abi::envoy_dynamic_module_callback_http_filter_config_scheduler_commit(scheduler.0, 0) };
            }
        });
        match spawned {
            Ok(handle) => *lock(&self.clock_thread) = Some(handle),
            Err(e) => log::error!("cannot start the evaluation clock: {e}"),
        }
    }

    /// Every lane's step of the period (main thread), and once a second the pending counts.
    fn tick(&self) {
        let calls = ConfigCalls { config: self.envoy, labelled: Some(&self.labelled) };
        let now_us = host::now_micros();
        let now_s = now_us / 1_000_000;
        let flush = self.flushed_s.swap(now_s, Ordering::Relaxed) != now_s;
        let mut next_ms = u64::MAX;
        for (lane, stats) in self.lanes.workers.iter().zip(self.workers.iter()) {
            let lane = lock(lane);
            let mut stats = lock(stats);
            if flush {
                stats.metrics.flush(&calls);
            }
            next_ms = next_ms.min(lane.coordinator.tick(&calls, self.plugin.config(), &stats.metrics));
            let waiting = &mut stats.waiting;
            while let Some(id) = waiting.table.pop_due(now_us) {
                if let Some((_, scheduler)) = waiting.schedulers.iter().find(|(s, _)| *s == id) {
                    // SAFETY: the stream deletes its scheduler only under this lock.
                    unsafe { abi::envoy_dynamic_module_callback_http_filter_scheduler_commit(scheduler.0, GIVE_UP) };
                }
            }
        }
        if next_ms != u64::MAX {
            self.clock.next_ms.store(next_ms.max(1), Ordering::Relaxed);
        }
    }

    /// The answer to the canary subset's revision probe: heard by every lane (the one that
    /// asked believes it; the others find no stamp of theirs).
    fn hear_probe(&self, headers: &[(Vec<u8>, Vec<u8>)]) {
        let calls = ConfigCalls { config: self.envoy, labelled: Some(&self.labelled) };
        let header = |name: &str| headers.iter().find(|(k, _)| k == name.as_bytes()).map(|(_, v)| v.clone());
        for lane in self.lanes.workers.iter() {
            let lane = lock(lane);
            filter::hear_probe_answer(&self.plugin, &lane.coordinator, &calls, header);
        }
    }
}

impl Drop for Config {
    fn drop(&mut self) {
        *lock(&self.clock.stopped) = true;
        self.clock.wake.notify_all();
        if let Some(handle) = lock(&self.clock_thread).take() {
            let _ = handle.join();
        }
        // The counts of the last second.
        let calls = ConfigCalls { config: self.envoy, labelled: Some(&self.labelled) };
        for stats in self.workers.iter() {
            lock(stats).metrics.flush(&calls);
        }
        if !self.scheduler.is_null() {
            // SAFETY: main thread; the clock thread, its only other user, has stopped.
            unsafe { abi::envoy_dynamic_module_callback_http_filter_config_scheduler_delete(self.scheduler) };
        }
    }
}

/// One HTTP stream.
struct Filter {
    config: Arc<Config>,
    /// The stream's worker (its lane).
    worker: usize,
    /// Borrowed by one hook at a time: a local reply re-enters the filter's response hooks
    /// from inside a request hook, and that inner call leaves the stream alone.
    flow: RefCell<filter::Stream>,
    /// Among the configuration's streams.
    id: u32,
    /// While a beacon waits for its body: the stream's scheduler is in its worker's table.
    scheduled: Cell<bool>,
}

impl Filter {
    /// After a step of the flow: a beacon that starts waiting for its body joins its worker's
    /// table, with a scheduler for the tick to wake it; one that stops waiting leaves it.
    fn after_step(&self, envoy: FilterEnvoyPtr) {
        let waiting = self.flow.try_borrow().is_ok_and(|flow| flow.awaits_body());
        if waiting == self.scheduled.get() {
            return;
        }
        let Some(stats) = self.config.workers.get(self.worker) else { return };
        let mut stats = lock(stats);
        if waiting {
            // SAFETY: the live stream of the current hook, on its worker.
            let scheduler = unsafe { abi::envoy_dynamic_module_callback_http_filter_scheduler_new(envoy) };
            if scheduler.is_null() {
                return;
            }
            let started_us = self.flow.try_borrow().map_or(0, |flow| flow.started_us());
            stats.waiting.table.add(self.id, started_us);
            stats.waiting.schedulers.push((self.id, FilterScheduler(scheduler)));
            self.scheduled.set(true);
        } else {
            self.unschedule(&mut stats.waiting);
        }
    }

    /// Leaves the worker's table of waiting beacons and deletes the stream's scheduler.
    fn unschedule(&self, waiting: &mut Waiting) {
        if !self.scheduled.replace(false) {
            return;
        }
        waiting.table.remove(self.id);
        if let Some(at) = waiting.schedulers.iter().position(|(id, _)| *id == self.id) {
            let (_, scheduler) = waiting.schedulers.swap_remove(at);
            // SAFETY: removed from the table under its lock: the tick no longer commits it.
            unsafe { abi::envoy_dynamic_module_callback_http_filter_scheduler_delete(scheduler.0) };
        }
    }

    /// A beacon waited for too long, or gave its place to a newer one: answered and counted.
    fn give_up(&self, envoy: FilterEnvoyPtr) {
        let rejection = Rejection::LateBody;
        let answered = self.with(envoy, |flow, env| {
            if flow.stop_waiting() {
                filter::beacon::refuse(env, rejection);
                true
            } else {
                false
            }
        });
        if answered == Some(true) && !self.config.logged_late.swap(true, Ordering::Relaxed) {
            log::info!(
                "{}: a web-vitals beacon body came too late (over {} s after its headers, or more than {} beacons per \
                 worker were waiting): answered 408 and dropped",
                self.config.plugin.config().service,
                crate::measure::beacon::BODY_WAIT_US / 1_000_000,
                crate::measure::beacon::MAX_PENDING
            );
        }
        self.after_step(envoy);
    }

    /// Runs `step` of the flow with the stream's environment; `None` if re-entered.
    fn with<R>(
        &self,
        envoy: FilterEnvoyPtr,
        step: impl FnOnce(&mut filter::Stream, &Env<StreamCalls>) -> R,
    ) -> Option<R> {
        let mut flow = self.flow.try_borrow_mut().ok()?;
        let config = &self.config;
        let lane = lock(config.lanes.workers.get(self.worker)?);
        let stats = lock(config.workers.get(self.worker)?);
        let calls = StreamCalls { filter: envoy };
        let env = Env {
            plugin: &config.plugin,
            metrics: &stats.metrics,
            coordinator: &lane.coordinator,
            rng: &lane.rng,
            stamp_tag: stats.stamp_tag.as_deref(),
            host: &calls,
        };
        Some(step(&mut flow, &env))
    }
}

/// Runs a hook body, turning a panic into `fallback` (Envoy never sees one).
fn guarded<R>(fallback: R, body: impl FnOnce() -> R) -> R {
    catch_unwind(AssertUnwindSafe(body)).unwrap_or_else(|_| {
        log::error!("internal error in a hook, answered with the neutral action");
        fallback
    })
}

/// The module's filter behind `ptr`.
///
/// # Safety
/// `ptr` is a pointer `on_http_filter_new` returned and Envoy has not destroyed.
unsafe fn filter<'a>(ptr: *const c_void) -> Option<&'a Filter> {
    ptr.cast::<Filter>().as_ref()
}

/// The configuration behind `ptr`.
///
/// # Safety
/// `ptr` is a pointer `on_http_filter_config_new` returned and Envoy has not destroyed.
unsafe fn config<'a>(ptr: *const c_void) -> Option<&'a Config> {
    ptr.cast::<Config>().as_ref()
}

static LOGGER: host::EnvoyLog = host::EnvoyLog;

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_program_init() -> *const u8 {
    guarded(std::ptr::null(), || {
        if log::set_logger(&LOGGER).is_ok() {
            log::set_max_level(log::LevelFilter::Debug);
        }
        abi::ABI_VERSION.as_ptr()
    })
}

/// # Safety
/// Envoy's contract: `config` is valid for the call.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_new(
    envoy: ConfigEnvoyPtr,
    _name: EnvoyBuffer,
    json: EnvoyBuffer,
) -> *const c_void {
    guarded(std::ptr::null(), || {
        // SAFETY: Envoy's buffer, valid during this call.
        let json = unsafe { json.to_vec() };
        let Some(config) = Config::create(envoy, &json) else { return std::ptr::null() };
        // SAFETY: main thread.
        if !unsafe { abi::envoy_dynamic_module_callback_is_validation_mode() } {
            config.start_clock();
        }
        Arc::into_raw(Arc::new(config)).cast()
    })
}

/// # Safety
/// `config` came from `on_http_filter_config_new`; Envoy destroys it once.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_destroy(config: *const c_void) {
    guarded((), || {
        if !config.is_null() {
            // SAFETY: the `Arc` `on_http_filter_config_new` leaked; filters hold their own.
            drop(unsafe { Arc::from_raw(config.cast::<Config>()) });
        }
    });
}

/// # Safety
/// As for the configuration's hooks.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_scheduled(
    _envoy: ConfigEnvoyPtr,
    config_ptr: *const c_void,
    _event: u64,
) {
    guarded((), || {
        // SAFETY: Envoy passes the live configuration.
        if let Some(config) = unsafe { config(config_ptr) } {
            config.tick();
        }
    });
}

/// # Safety
/// As for the configuration's hooks; `headers` holds `headers_len` entries valid for the call.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_http_callout_done(
    _envoy: ConfigEnvoyPtr,
    config_ptr: *const c_void,
    _callout: u64,
    _result: u32,
    headers: *const EnvoyHeader,
    headers_len: usize,
    _body: *const EnvoyBuffer,
    _body_len: usize,
) {
    guarded((), || {
        // SAFETY: Envoy passes the live configuration.
        let Some(config) = (unsafe { config(config_ptr) }) else { return };
        if headers.is_null() {
            return;
        }
        // SAFETY: Envoy's array of `headers_len` headers, valid during this call.
        let headers = unsafe { std::slice::from_raw_parts(headers, headers_len) };
        let copied: Vec<(Vec<u8>, Vec<u8>)> = headers
            .iter()
            .map(|h| {
                // SAFETY: Envoy's buffers, valid during this call.
                unsafe {
                    (
                        EnvoyBuffer { ptr: h.key_ptr, length: h.key_length }.to_vec(),
                        EnvoyBuffer { ptr: h.value_ptr, length: h.value_length }.to_vec(),
                    )
                }
            })
            .collect();
        config.hear_probe(&copied);
    });
}

/// # Safety
/// `config_ptr` is a live configuration; `envoy` the new stream.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_new(
    config_ptr: *const c_void,
    envoy: FilterEnvoyPtr,
) -> *const c_void {
    guarded(std::ptr::null(), || {
        if config_ptr.is_null() {
            return std::ptr::null();
        }
        let config_ptr = config_ptr.cast::<Config>();
        // SAFETY: the `Arc` leaked by `on_http_filter_config_new`, alive while Envoy has the
        // configuration: this stream holds one more reference.
        let config = unsafe {
            Arc::increment_strong_count(config_ptr);
            Arc::from_raw(config_ptr)
        };
        let worker = StreamCalls { filter: envoy }.worker_index() % config.lanes.workers.len().max(1);
        let flow = RefCell::new(filter::Stream::new(&config.plugin));
        let id = config.stream_ids.fetch_add(1, Ordering::Relaxed);
        Box::into_raw(Box::new(Filter { config, worker, flow, id, scheduled: Cell::new(false) })).cast_const().cast()
    })
}

/// # Safety
/// `filter_ptr` came from `on_http_filter_new`; Envoy destroys it once.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_destroy(filter_ptr: *const c_void) {
    guarded((), || {
        if !filter_ptr.is_null() {
            // SAFETY: the box `on_http_filter_new` leaked.
            let filter = unsafe { Box::from_raw(filter_ptr.cast::<Filter>().cast_mut()) };
            if filter.scheduled.get() {
                if let Some(stats) = filter.config.workers.get(filter.worker) {
                    filter.unschedule(&mut lock(stats).waiting);
                }
            }
        }
    });
}

fn headers_status(action: Option<Action>) -> u32 {
    match action {
        Some(Action::Pause) => abi::HEADERS_STOP_ITERATION,
        _ => abi::HEADERS_CONTINUE,
    }
}

/// # Safety
/// Envoy's stream hooks: `envoy` and `filter_ptr` are the live stream's.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_request_headers(
    envoy: FilterEnvoyPtr,
    filter_ptr: *const c_void,
    end_of_stream: bool,
) -> u32 {
    guarded(abi::HEADERS_CONTINUE, || {
        // SAFETY: the live stream.
        let Some(f) = (unsafe { filter(filter_ptr) }) else { return abi::HEADERS_CONTINUE };
        let action = f.with(envoy, |flow, env| flow.on_request_headers(env, end_of_stream));
        f.after_step(envoy);
        headers_status(action)
    })
}

/// # Safety
/// As for the request headers.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_request_body(
    envoy: FilterEnvoyPtr,
    filter_ptr: *const c_void,
    end_of_stream: bool,
) -> u32 {
    guarded(abi::BODY_CONTINUE, || {
        // SAFETY: the live stream.
        let Some(f) = (unsafe { filter(filter_ptr) }) else { return abi::BODY_CONTINUE };
        if !f.flow.try_borrow().is_ok_and(|flow| flow.awaits_body()) {
            return abi::BODY_CONTINUE;
        }
        let buffered = StreamCalls { filter: envoy }.request_body_size();
        let action = f.with(envoy, |flow, env| flow.on_request_body(env, buffered, end_of_stream));
        f.after_step(envoy);
        // Paused: waiting for the rest (Envoy keeps what came in its buffer), or answered.
        match action {
            Some(Action::Pause) => abi::BODY_STOP_AND_BUFFER,
            _ => abi::BODY_CONTINUE,
        }
    })
}

/// # Safety
/// As for the request headers.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_request_trailers(
    _envoy: FilterEnvoyPtr,
    _filter_ptr: *const c_void,
) -> u32 {
    abi::TRAILERS_CONTINUE
}

/// # Safety
/// As for the request headers.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_response_headers(
    envoy: FilterEnvoyPtr,
    filter_ptr: *const c_void,
    _end_of_stream: bool,
) -> u32 {
    guarded(abi::HEADERS_CONTINUE, || {
        // SAFETY: the live stream.
        let Some(f) = (unsafe { filter(filter_ptr) }) else { return abi::HEADERS_CONTINUE };
        f.with(envoy, |flow, env| flow.on_response_headers(env));
        abi::HEADERS_CONTINUE
    })
}

/// # Safety
/// As for the request headers.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_response_body(
    _envoy: FilterEnvoyPtr,
    _filter_ptr: *const c_void,
    _end_of_stream: bool,
) -> u32 {
    abi::BODY_CONTINUE
}

/// # Safety
/// As for the request headers.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_response_trailers(
    _envoy: FilterEnvoyPtr,
    _filter_ptr: *const c_void,
) -> u32 {
    abi::TRAILERS_CONTINUE
}

/// # Safety
/// As for the request headers.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_stream_complete(
    envoy: FilterEnvoyPtr,
    filter_ptr: *const c_void,
) {
    guarded((), || {
        // SAFETY: the live stream.
        if let Some(f) = unsafe { filter(filter_ptr) } {
            f.with(envoy, |flow, env| flow.on_complete(env));
        }
    });
}

// Hooks Envoy requires of every HTTP filter module, unused by canary-gate.

/// # Safety
/// Unused: does nothing.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_http_callout_done(
    _envoy: FilterEnvoyPtr,
    _filter_ptr: *const c_void,
    _callout: u64,
    _result: u32,
    _headers: *const EnvoyHeader,
    _headers_len: usize,
    _body: *const EnvoyBuffer,
    _body_len: usize,
) {
}

/// # Safety
/// Unused: does nothing.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_headers(
    _envoy: FilterEnvoyPtr,
    _filter_ptr: *const c_void,
    _stream: u64,
    _headers: *const EnvoyHeader,
    _headers_len: usize,
    _end_of_stream: bool,
) {
}

/// # Safety
/// Unused: does nothing.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_data(
    _envoy: FilterEnvoyPtr,
    _filter_ptr: *const c_void,
    _stream: u64,
    _data: *const EnvoyBuffer,
    _data_len: usize,
    _end_of_stream: bool,
) {
}

/// # Safety
/// Unused: does nothing.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_trailers(
    _envoy: FilterEnvoyPtr,
    _filter_ptr: *const c_void,
    _stream: u64,
    _trailers: *const EnvoyHeader,
    _trailers_len: usize,
) {
}

/// # Safety
/// Unused: does nothing.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_complete(
    _envoy: FilterEnvoyPtr,
    _filter_ptr: *const c_void,
    _stream: u64,
) {
}

/// # Safety
/// Unused: does nothing.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_reset(
    _envoy: FilterEnvoyPtr,
    _filter_ptr: *const c_void,
    _stream: u64,
    _reason: u32,
) {
}

/// # Safety
/// As for the request headers.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_scheduled(
    envoy: FilterEnvoyPtr,
    filter_ptr: *const c_void,
    event: u64,
) {
    guarded((), || {
        // SAFETY: the live stream.
        if let (Some(f), GIVE_UP) = (unsafe { filter(filter_ptr) }, event) {
            f.give_up(envoy);
        }
    });
}

/// # Safety
/// Unused: does nothing.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark(
    _envoy: FilterEnvoyPtr,
    _filter_ptr: *const c_void,
) {
}

/// # Safety
/// Unused: does nothing.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark(
    _envoy: FilterEnvoyPtr,
    _filter_ptr: *const c_void,
) {
}
