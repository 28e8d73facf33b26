//! canary-gate's host traits ([`crate::host`]) on the dynamic-module ABI: a stream's callbacks
//! ([`StreamCalls`], on its worker), the configuration's ([`ConfigCalls`], on the main thread),
//! and the process's memory standing in for proxy-wasm's shared data and queues ([`Store`]).
//! A refused call is answered with a neutral value, as in the Wasm build.

use super::abi::{self, AttributeId, BodyType, ConfigEnvoyPtr, EnvoyBuffer, FilterEnvoyPtr, HeaderType, ModuleBuffer};
use crate::host::{Attribute, Host, Map, MetricKind, Stats, StreamHost};
use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard, PoisonError};

/// A lock that survives a panic of its last holder (the data stays consistent: every write
/// under these locks is a plain store).
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Microseconds since the Unix epoch.
pub fn now_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// The most messages a queue holds: the coordination ships a few per worker and period, so
/// this is reached only if no lease holder reads them; the oldest then go.
const QUEUE_LIMIT: usize = 4096;

/// Shared data (value and compare-and-swap token per key) and queues of the whole process:
/// what proxy-wasm gives every VM of a proxy, here plain memory behind one lock, touched on
/// the tick and by beacons, never on a request's path otherwise.
pub struct Store {
    data: Vec<(String, Vec<u8>, u32)>,
    queues: Vec<(String, VecDeque<Vec<u8>>)>,
}

static STORE: Mutex<Store> = Mutex::new(Store { data: Vec::new(), queues: Vec::new() });

fn shared_data(key: &str) -> (Option<Vec<u8>>, Option<u32>) {
    let store = lock(&STORE);
    match store.data.iter().find(|(k, _, _)| k == key) {
        Some((_, value, cas)) => (Some(value.clone()), Some(*cas)),
        None => (None, None),
    }
}

fn set_shared_data(key: &str, value: &[u8], cas: Option<u32>) -> bool {
    let mut store = lock(&STORE);
    match store.data.iter_mut().find(|(k, _, _)| k == key) {
        Some((_, stored, token)) => {
            if cas.is_some_and(|c| c != *token) {
                return false;
            }
            stored.clear();
            stored.extend_from_slice(value);
            *token = token.wrapping_add(1).max(1);
        }
        None => store.data.push((key.to_owned(), value.to_vec(), 1)),
    }
    true
}

fn register_queue(name: &str) -> Option<u32> {
    let mut store = lock(&STORE);
    let index = match store.queues.iter().position(|(n, _)| n == name) {
        Some(index) => index,
        None => {
            store.queues.push((name.to_owned(), VecDeque::new()));
            store.queues.len() - 1
        }
    };
    u32::try_from(index).ok()
}

fn enqueue(queue: u32, message: &[u8]) -> bool {
    let mut store = lock(&STORE);
    let Some((_, messages)) = store.queues.get_mut(queue as usize) else { return false };
    if messages.len() >= QUEUE_LIMIT {
        messages.pop_front();
    }
    messages.push_back(message.to_vec());
    true
}

fn dequeue(queue: u32) -> Option<Vec<u8>> {
    lock(&STORE).queues.get_mut(queue as usize)?.1.pop_front()
}

/// The series the Wasm build defines when it first sees a revision, as (metric, labels). Envoy
/// lets a module define stats only while it creates a configuration: the native module defines
/// each then as a gauge with labels, named as Envoy names labelled stats
/// (`metric.label.value...`, the Wasm build's names), and a series first seen later is that
/// gauge with the series' label values.
const LABELLED: [(&str, &[&str]); 3] = [
    ("canary_gate_state", &["service", "revision"]),
    ("canary_gate_tripped", &["service", "revision"]),
    ("canary_revision_info", &["service", "version", "revision"]),
];

/// The most series of [`LABELLED`] a configuration keeps (revisions come and go; a Wasm VM's
/// defined stats are bounded the same way by the revisions a rollout sees).
const MAX_LABELLED_SERIES: usize = 1024;

/// A configuration's labelled gauges and the series seen of them.
#[derive(Default)]
pub struct Labelled {
    /// Envoy's id of each of [`LABELLED`], if defined.
    families: [Option<usize>; 3],
    /// Each series seen: its family and label values.
    series: Mutex<Vec<(usize, Vec<String>)>>,
}

impl Labelled {
    /// Defines the gauges (while Envoy creates the configuration).
    pub fn define(config: ConfigEnvoyPtr) -> Labelled {
        let mut families = [None; 3];
        for (slot, (name, labels)) in families.iter_mut().zip(LABELLED) {
            let mut labels: Vec<ModuleBuffer> = labels.iter().map(|l| ModuleBuffer::of(l.as_bytes())).collect();
            let mut id = 0usize;
            // SAFETY: main thread, inside `on_http_filter_config_new`; Envoy copies the names.
            let result = unsafe {
                abi::envoy_dynamic_module_callback_http_filter_config_define_gauge(
                    config,
                    ModuleBuffer::of(name.as_bytes()),
                    labels.as_mut_ptr(),
                    labels.len(),
                    &mut id,
                )
            };
            *slot = (result == 0).then_some(id);
        }
        Labelled { families, series: Mutex::new(Vec::new()) }
    }

    /// The series `name` (`metric.label.value...`) of a labelled gauge: its id, kept from now on.
    fn series_id(&self, name: &str) -> Option<u32> {
        let mut parts = name.split('.');
        let metric = parts.next()?;
        let family = LABELLED.iter().position(|(m, _)| *m == metric)?;
        let (labels, values): (Vec<&str>, Vec<&str>) = {
            let rest: Vec<&str> = parts.collect();
            rest.chunks(2).map(|kv| (kv.first().copied().unwrap_or(""), kv.get(1).copied().unwrap_or(""))).unzip()
        };
        if labels.as_slice() != LABELLED.get(family)?.1 || values.iter().any(|v| v.is_empty()) {
            return None;
        }
        self.families.get(family).copied().flatten()?;
        let mut series = lock(&self.series);
        let values: Vec<String> = values.into_iter().map(str::to_owned).collect();
        let index = match series.iter().position(|(f, v)| *f == family && *v == values) {
            Some(index) => index,
            None if series.len() < MAX_LABELLED_SERIES => {
                series.push((family, values));
                series.len() - 1
            }
            None => return None,
        };
        u32::try_from(index).ok().filter(|&i| i < 1 << 30).map(|i| 3 << 30 | i)
    }

    /// Sets series `index` to `value`.
    fn set(&self, config: ConfigEnvoyPtr, index: usize, value: u64) {
        let series = lock(&self.series);
        let Some((family, values)) = series.get(index) else { return };
        let Some(id) = self.families.get(*family).copied().flatten() else { return };
        let mut values: Vec<ModuleBuffer> = values.iter().map(|v| ModuleBuffer::of(v.as_bytes())).collect();
        // SAFETY: main thread (the tick); Envoy copies the label values.
        unsafe {
            abi::envoy_dynamic_module_callback_http_filter_config_set_gauge(
                config,
                id,
                values.as_mut_ptr(),
                values.len(),
                value,
            )
        };
    }
}

/// The clock, shared data and queues of [`Host`], the same for every caller in the process.
macro_rules! process_memory {
    () => {
        fn now_micros(&self) -> u64 {
            now_micros()
        }

        fn shared_data(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
            shared_data(key)
        }

        fn set_shared_data(&self, key: &str, value: &[u8], cas: Option<u32>) -> bool {
            set_shared_data(key, value, cas)
        }

        fn register_queue(&self, name: &str) -> Option<u32> {
            register_queue(name)
        }

        fn enqueue(&self, queue: u32, message: &[u8]) -> bool {
            enqueue(queue, message)
        }

        fn dequeue(&self, queue: u32) -> Option<Vec<u8>> {
            dequeue(queue)
        }
    };
}

/// A stat's Envoy id with its kind in the top two bits: Envoy numbers counters, gauges and
/// histograms each from 1 (and 3: a series of a [`Labelled`] gauge, by index).
fn encode(kind: MetricKind, id: usize) -> Option<u32> {
    let id = u32::try_from(id).ok().filter(|&id| id < 1 << 30)?;
    let kind = match kind {
        MetricKind::Counter => 0,
        MetricKind::Gauge => 1,
        MetricKind::Histogram => 2,
    };
    Some(kind << 30 | id)
}

fn decode(id: u32) -> (MetricKind, usize) {
    let kind = match id >> 30 {
        0 => MetricKind::Counter,
        1 => MetricKind::Gauge,
        _ => MetricKind::Histogram,
    };
    (kind, (id & ((1 << 30) - 1)) as usize)
}

/// Whether `id` is a series of a [`Labelled`] gauge.
fn is_labelled(id: u32) -> bool {
    id >> 30 == 3
}

/// The configuration's side of Envoy: defines stats (only while Envoy creates the
/// configuration; later, a series of its [`Labelled`] gauges), updates them, and sends the
/// revision probe (main thread).
#[derive(Clone, Copy)]
pub struct ConfigCalls<'a> {
    pub config: ConfigEnvoyPtr,
    pub labelled: Option<&'a Labelled>,
}

impl Stats for ConfigCalls<'_> {
    fn define_metric(&self, kind: MetricKind, name: &str) -> Option<u32> {
        if let Some(id) = self.labelled.and_then(|l| l.series_id(name)) {
            return Some(id);
        }
        let define = match kind {
            MetricKind::Counter => abi::envoy_dynamic_module_callback_http_filter_config_define_counter,
            MetricKind::Gauge => abi::envoy_dynamic_module_callback_http_filter_config_define_gauge,
            MetricKind::Histogram => abi::envoy_dynamic_module_callback_http_filter_config_define_histogram,
        };
        let mut id = 0usize;
        // SAFETY: `config` is Envoy's live configuration; the name is copied during the call.
        let result =
            unsafe { define(self.config, ModuleBuffer::of(name.as_bytes()), std::ptr::null_mut(), 0, &mut id) };
        if result != 0 {
            // Envoy defines stats only while it creates the configuration (result 3 later).
            log::debug!("cannot define metric {name}: result {result}");
            return None;
        }
        encode(kind, id)
    }

    fn add(&self, id: u32, delta: u64) {
        let (_, id) = decode(id);
        // SAFETY: as above; no labels.
        unsafe {
            abi::envoy_dynamic_module_callback_http_filter_config_increment_counter(
                self.config,
                id,
                std::ptr::null_mut(),
                0,
                delta,
            )
        };
    }

    fn record(&self, id: u32, value: u64) {
        if is_labelled(id) {
            if let Some(labelled) = self.labelled {
                labelled.set(self.config, (id & ((1 << 30) - 1)) as usize, value);
            }
            return;
        }
        let (kind, id) = decode(id);
        let update = match kind {
            MetricKind::Histogram => abi::envoy_dynamic_module_callback_http_filter_config_record_histogram_value,
            _ => abi::envoy_dynamic_module_callback_http_filter_config_set_gauge,
        };
        // SAFETY: as above; no labels.
        unsafe { update(self.config, id, std::ptr::null_mut(), 0, value) };
    }

    fn metric_value(&self, _id: u32) -> u64 {
        0
    }
}

impl Host for ConfigCalls<'_> {
    process_memory!();

    fn http_get(&self, cluster: &str, authority: &str, path: &str, extra: &[(&str, &str)], timeout_ms: u64) -> bool {
        let mut headers = vec![
            abi::ModuleHeader::of(":method", "GET"),
            abi::ModuleHeader::of(":path", path),
            abi::ModuleHeader::of("host", authority),
        ];
        headers.extend(extra.iter().map(|(k, v)| abi::ModuleHeader::of(k, v)));
        let mut id = 0u64;
        // SAFETY: main thread (the tick); every buffer outlives the call, which copies them.
        let result = unsafe {
            abi::envoy_dynamic_module_callback_http_filter_config_http_callout(
                self.config,
                &mut id,
                ModuleBuffer::of(cluster.as_bytes()),
                headers.as_mut_ptr(),
                headers.len(),
                ModuleBuffer::NULL,
                timeout_ms,
            )
        };
        result == 0
    }
}

/// One stream's side of Envoy, valid during the stream's hooks on its worker.
#[derive(Clone, Copy)]
pub struct StreamCalls {
    pub filter: FilterEnvoyPtr,
}

fn header_type(map: Map) -> HeaderType {
    match map {
        Map::Request => HeaderType::RequestHeader,
        Map::Response => HeaderType::ResponseHeader,
    }
}

impl StreamCalls {
    /// Line `index` of a header, and how many lines it has.
    fn header_line(&self, map: Map, name: &str, index: usize) -> (Option<Vec<u8>>, usize) {
        let (mut value, mut lines) = (EnvoyBuffer::EMPTY, 0usize);
        // SAFETY: `filter` is the live stream of the current hook; the value is copied before
        // any header changes.
        let found = unsafe {
            abi::envoy_dynamic_module_callback_http_get_header(
                self.filter,
                header_type(map),
                ModuleBuffer::of(name.as_bytes()),
                &mut value,
                index,
                &mut lines,
            )
        };
        // SAFETY: Envoy's buffer, valid during this hook.
        (found.then(|| unsafe { value.to_vec() }), lines)
    }

    /// A body of the stream: the chunks of `body`, appended to `out`.
    fn append_body(&self, body: BodyType, out: &mut Vec<u8>, limit: usize) {
        // SAFETY: the live stream of the current hook.
        let count = unsafe { abi::envoy_dynamic_module_callback_http_get_body_chunks_size(self.filter, body) };
        if count == 0 {
            return;
        }
        let mut chunks = vec![EnvoyBuffer::EMPTY; count];
        // SAFETY: `chunks` has room for the `count` entries Envoy writes.
        if !unsafe { abi::envoy_dynamic_module_callback_http_get_body_chunks(self.filter, body, chunks.as_mut_ptr()) } {
            return;
        }
        for chunk in chunks {
            let room = limit.saturating_sub(out.len());
            if chunk.ptr.is_null() || room == 0 {
                continue;
            }
            // SAFETY: Envoy's chunk, valid during this hook.
            let bytes = unsafe { std::slice::from_raw_parts(chunk.ptr, chunk.length) };
            out.extend_from_slice(bytes.get(..room.min(bytes.len())).unwrap_or(bytes));
        }
    }

    /// The bytes of the request body Envoy holds: buffered so far and the chunk just received.
    pub fn request_body_size(&self) -> usize {
        // SAFETY: the live stream of the current hook.
        unsafe {
            abi::envoy_dynamic_module_callback_http_get_body_size(self.filter, BodyType::BufferedRequestBody)
                .saturating_add(abi::envoy_dynamic_module_callback_http_get_body_size(
                    self.filter,
                    BodyType::ReceivedRequestBody,
                ))
        }
    }

    /// The worker the stream runs on.
    pub fn worker_index(&self) -> usize {
        // SAFETY: the live stream of the current hook.
        unsafe { abi::envoy_dynamic_module_callback_http_filter_get_worker_index(self.filter) as usize }
    }

    fn string_attribute(&self, id: AttributeId) -> Option<Vec<u8>> {
        let mut value = EnvoyBuffer::EMPTY;
        // SAFETY: the live stream of the current hook; the value is copied at once.
        let found =
            unsafe { abi::envoy_dynamic_module_callback_http_filter_get_attribute_string(self.filter, id, &mut value) };
        // SAFETY: Envoy's buffer, valid during this hook.
        found.then(|| unsafe { value.to_vec() })
    }
}

impl Stats for StreamCalls {
    fn define_metric(&self, _kind: MetricKind, name: &str) -> Option<u32> {
        log::debug!("cannot define metric {name} on a stream");
        None
    }

    fn add(&self, id: u32, delta: u64) {
        let (_, id) = decode(id);
        // SAFETY: the live stream of the current hook; no labels.
        unsafe {
            abi::envoy_dynamic_module_callback_http_filter_increment_counter(
                self.filter,
                id,
                std::ptr::null_mut(),
                0,
                delta,
            )
        };
    }

    fn record(&self, id: u32, value: u64) {
        let (kind, id) = decode(id);
        let update = match kind {
            MetricKind::Histogram => abi::envoy_dynamic_module_callback_http_filter_record_histogram_value,
            _ => abi::envoy_dynamic_module_callback_http_filter_set_gauge,
        };
        // SAFETY: as above.
        unsafe { update(self.filter, id, std::ptr::null_mut(), 0, value) };
    }

    fn metric_value(&self, _id: u32) -> u64 {
        0
    }
}

impl Host for StreamCalls {
    process_memory!();

    fn http_get(
        &self,
        _cluster: &str,
        _authority: &str,
        _path: &str,
        _extra: &[(&str, &str)],
        _timeout_ms: u64,
    ) -> bool {
        // Probes go out from the configuration's tick on the main thread only.
        false
    }
}

impl StreamHost for StreamCalls {
    fn header(&self, map: Map, name: &str) -> Option<Vec<u8>> {
        self.header_line(map, name, 0).0
    }

    fn request_header_lines(&self, name: &str) -> Vec<Vec<u8>> {
        let (first, lines) = self.header_line(Map::Request, name, 0);
        let mut all: Vec<Vec<u8>> = first.into_iter().collect();
        all.extend((1..lines).filter_map(|i| self.header_line(Map::Request, name, i).0));
        all
    }

    fn set_header(&self, map: Map, name: &str, value: Option<&str>) {
        let value = value.map_or(ModuleBuffer::NULL, |v| ModuleBuffer::of(v.as_bytes()));
        // SAFETY: the live stream of the current hook; Envoy copies both buffers.
        let done = unsafe {
            abi::envoy_dynamic_module_callback_http_set_header(
                self.filter,
                header_type(map),
                ModuleBuffer::of(name.as_bytes()),
                value,
            )
        };
        if !done {
            log::debug!("cannot set header {name}");
        }
    }

    fn add_response_header(&self, name: &str, value: &str) {
        // SAFETY: as above.
        let done = unsafe {
            abi::envoy_dynamic_module_callback_http_add_header(
                self.filter,
                HeaderType::ResponseHeader,
                ModuleBuffer::of(name.as_bytes()),
                ModuleBuffer::of(value.as_bytes()),
            )
        };
        if !done {
            log::debug!("cannot add header {name}");
        }
    }

    fn clear_route_cache(&self) {
        // SAFETY: the live stream of the current hook.
        unsafe { abi::envoy_dynamic_module_callback_http_clear_route_cache(self.filter) };
    }

    fn send_response(&self, status: u32, headers: &[(&str, &str)], body: &[u8]) {
        let mut headers: Vec<abi::ModuleHeader> = headers.iter().map(|(k, v)| abi::ModuleHeader::of(k, v)).collect();
        // SAFETY: the live stream of the current hook; Envoy copies the headers and body.
        unsafe {
            abi::envoy_dynamic_module_callback_http_send_response(
                self.filter,
                status,
                headers.as_mut_ptr(),
                headers.len(),
                ModuleBuffer::of(body),
                ModuleBuffer::NULL,
            )
        };
    }

    fn request_body(&self, size: usize) -> Vec<u8> {
        let mut body = Vec::with_capacity(size);
        self.append_body(BodyType::BufferedRequestBody, &mut body, size);
        self.append_body(BodyType::ReceivedRequestBody, &mut body, size);
        body
    }

    fn attribute(&self, attribute: Attribute) -> Option<u64> {
        let id = match attribute {
            Attribute::ResponseCode => AttributeId::ResponseCode,
            Attribute::ResponseGrpcStatus => AttributeId::ResponseGrpcStatus,
            Attribute::ResponseFlags => AttributeId::ResponseFlags,
        };
        let mut value = 0u64;
        // SAFETY: the live stream of the current hook.
        unsafe { abi::envoy_dynamic_module_callback_http_filter_get_attribute_int(self.filter, id, &mut value) }
            .then_some(value)
    }

    fn response_code_details(&self) -> Option<Vec<u8>> {
        self.string_attribute(AttributeId::ResponseCodeDetails)
    }

    fn cluster_name(&self) -> Option<Vec<u8>> {
        let mut value = EnvoyBuffer::EMPTY;
        // SAFETY: the live stream of the current hook; the name is copied at once.
        let found = unsafe { abi::envoy_dynamic_module_callback_http_get_cluster_name(self.filter, &mut value) };
        // SAFETY: Envoy's buffer, valid during this hook.
        found.then(|| unsafe { value.to_vec() })
    }

    fn set_state(&self, key: &str, value: &str) {
        // SAFETY: the live stream of the current hook; Envoy copies both.
        let done = unsafe {
            abi::envoy_dynamic_module_callback_http_set_filter_state_bytes(
                self.filter,
                ModuleBuffer::of(key.as_bytes()),
                ModuleBuffer::of(value.as_bytes()),
            )
        };
        if !done {
            log::debug!("cannot set filter state {key}");
        }
    }
}

/// The `log` crate's records, in Envoy's log (logger `dynamic_modules`).
pub struct EnvoyLog;

fn level_of(level: log::Level) -> abi::LogLevel {
    match level {
        log::Level::Error => abi::LogLevel::Error,
        log::Level::Warn => abi::LogLevel::Warn,
        log::Level::Info => abi::LogLevel::Info,
        log::Level::Debug => abi::LogLevel::Debug,
        log::Level::Trace => abi::LogLevel::Trace,
    }
}

impl log::Log for EnvoyLog {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        // SAFETY: callable from any thread.
        unsafe { abi::envoy_dynamic_module_callback_log_enabled(level_of(metadata.level())) }
    }

    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let message = format!("canary-gate: {}", record.args());
        // SAFETY: callable from any thread; Envoy copies the message.
        unsafe {
            abi::envoy_dynamic_module_callback_log(level_of(record.level()), ModuleBuffer::of(message.as_bytes()))
        };
    }

    fn flush(&self) {}
}
