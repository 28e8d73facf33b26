//! Host calls with every error handled: a failed call is logged at debug level and answered
//! with a neutral value, never a trap. [`ProxyHost`] puts the calls the logic needs behind the
//! traits of [`crate::host`].

use crate::host::{Attribute, Host, Map, MetricKind, Stats, StreamHost};
use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, MapType, MetricType};

/// Name of Envoy's foreign function that makes the router select the route again.
const CLEAR_ROUTE_CACHE: &str = "clear_route_cache";

/// Whether the host offers `clear_route_cache` (asked once per configuration, outside a stream:
/// only a missing function answers `NotFound`).
pub fn offers_clear_route_cache() -> bool {
    !matches!(hostcalls::call_foreign_function(CLEAR_ROUTE_CACHE, None), Err(proxy_wasm::types::Status::NotFound))
}

/// Makes Envoy select the route again after a header the routes match on changed. With the
/// proxy-wasm ABI 0.2.1 Envoy also does this on any header change; newer ABIs leave it to the
/// filter.
pub fn clear_route_cache() {
    if let Err(status) = hostcalls::call_foreign_function(CLEAR_ROUTE_CACHE, None) {
        log::debug!("cannot clear the route cache: {status:?}");
    }
}

/// Answers the request from the filter, never forwarding it.
pub fn send_response(status: u32, headers: &[(&str, &str)], body: &[u8]) {
    if let Err(status) = hostcalls::send_http_response(status, headers.to_vec(), Some(body)) {
        log::debug!("cannot answer the request: {status:?}");
    }
}

/// The first `size` bytes of the buffered request body (empty if the host has none).
pub fn request_body(size: usize) -> Vec<u8> {
    hostcalls::get_buffer(BufferType::HttpRequestBody, 0, size).ok().flatten().unwrap_or_default()
}

/// Every line of request header `name`, in order (Envoy keeps repeated lines apart, and a
/// single-value read sees only the first).
pub fn request_header_lines(name: &str) -> Vec<Vec<u8>> {
    let Ok(all) = hostcalls::get_map_bytes(MapType::HttpRequestHeaders) else { return Vec::new() };
    all.into_iter().filter(|(k, _)| k == name).map(|(_, v)| v).collect()
}

/// Sets (or, with `None`, removes) a header of `map`.
pub fn set_header(map: MapType, name: &str, value: Option<&str>) {
    if let Err(status) = hostcalls::set_map_value(map, name, value) {
        log::debug!("cannot set header {name}: {status:?}");
    }
}

/// Appends a response header (for `set-cookie`, which may repeat).
pub fn add_response_header(name: &str, value: &str) {
    if let Err(status) = hostcalls::add_map_value(MapType::HttpResponseHeaders, name, value) {
        log::debug!("cannot add header {name}: {status:?}");
    }
}

/// A property of the stream or the proxy, as raw bytes.
pub fn property(path: &[&str]) -> Option<Vec<u8>> {
    hostcalls::get_property(path.to_vec()).ok().flatten()
}

/// A label of this proxy's node metadata (where Istio puts the pod's labels).
pub fn node_label(name: &str) -> Option<Vec<u8>> {
    property(&["xds", "node", "metadata", "LABELS", name])
}

/// An integer property (Envoy encodes them as 8 little-endian bytes).
pub fn property_u64(path: &[&str]) -> Option<u64> {
    let bytes: [u8; 8] = property(path)?.try_into().ok()?;
    Some(u64::from_le_bytes(bytes))
}

/// Writes filter state (`wasm.<key>` for the access log).
pub fn set_state(key: &str, value: &str) {
    if let Err(status) = hostcalls::set_property(vec![key], Some(value.as_bytes())) {
        log::debug!("cannot set filter state {key}: {status:?}");
    }
}

/// The plugin configuration bytes.
pub fn plugin_configuration() -> Vec<u8> {
    hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX).ok().flatten().unwrap_or_default()
}

/// Microseconds since the Unix epoch (0 if the host cannot tell).
pub fn now_micros() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

#[link(wasm_import_module = "wasi_snapshot_preview1")]
extern "C" {
    /// WASI `random_get`: fills `len` bytes at `buf`; 0 on success.
    fn random_get(buf: *mut u8, len: usize) -> u16;
    /// WASI `environ_sizes_get`: the number of variables and the bytes of their text.
    fn environ_sizes_get(count: *mut usize, text_bytes: *mut usize) -> u16;
    /// WASI `environ_get`: writes the variables as `NAME=value\0` at `text`, and a pointer to
    /// each at `pointers`.
    fn environ_get(pointers: *mut *mut u8, text: *mut u8) -> u16;
}

/// The VM's environment variable `name` (Envoy's `vm_config.environment_variables`), read
/// through WASI: std's environment in a reactor module never asks the host.
pub fn env_var(name: &str) -> Option<String> {
    let (mut count, mut text_bytes) = (0usize, 0usize);
    // SAFETY: both point at live, writable usizes.
    if unsafe { environ_sizes_get(&mut count, &mut text_bytes) } != 0 || count == 0 {
        return None;
    }
    let mut pointers = vec![std::ptr::null_mut::<u8>(); count];
    let mut text = vec![0u8; text_bytes];
    // SAFETY: the buffers have the lengths the host just gave for its own variables.
    if unsafe { environ_get(pointers.as_mut_ptr(), text.as_mut_ptr()) } != 0 {
        return None;
    }
    text.split(|&b| b == 0).find_map(|entry| {
        let value = entry.strip_prefix(name.as_bytes())?.strip_prefix(b"=")?;
        String::from_utf8(value.to_vec()).ok()
    })
}

/// 8 random bytes from the host (0 if it has none). Called directly rather than through std's
/// `RandomState`, whose error path links std's I/O error formatting (5 KB of the filter).
pub fn random_u64() -> u64 {
    let mut bytes = [0u8; 8];
    // SAFETY: `bytes` is a live, writable buffer of exactly the length passed.
    let status = unsafe { random_get(bytes.as_mut_ptr(), bytes.len()) };
    if status == 0 {
        u64::from_le_bytes(bytes)
    } else {
        0
    }
}

/// This VM's linear memory in bytes.
pub fn vm_memory_bytes() -> u64 {
    core::arch::wasm32::memory_size(0) as u64 * 65_536
}

/// Envoy, as the logic's host traits see it.
#[derive(Clone, Copy, Default)]
pub struct ProxyHost;

impl Stats for ProxyHost {
    fn define_metric(&self, kind: MetricKind, name: &str) -> Option<u32> {
        let kind = match kind {
            MetricKind::Counter => MetricType::Counter,
            MetricKind::Gauge => MetricType::Gauge,
            MetricKind::Histogram => MetricType::Histogram,
        };
        match hostcalls::define_metric(kind, name) {
            Ok(id) => Some(id),
            Err(status) => {
                log::warn!("cannot define metric {name}: {status:?}");
                None
            }
        }
    }

    fn add(&self, id: u32, delta: u64) {
        let _ = hostcalls::increment_metric(id, i64::try_from(delta).unwrap_or(i64::MAX));
    }

    fn record(&self, id: u32, value: u64) {
        let _ = hostcalls::record_metric(id, value);
    }

    fn metric_value(&self, id: u32) -> u64 {
        hostcalls::get_metric(id).unwrap_or(0)
    }
}

fn map_type(map: Map) -> MapType {
    match map {
        Map::Request => MapType::HttpRequestHeaders,
        Map::Response => MapType::HttpResponseHeaders,
    }
}

impl StreamHost for ProxyHost {
    fn header(&self, map: Map, name: &str) -> Option<Vec<u8>> {
        hostcalls::get_map_value_bytes(map_type(map), name).ok().flatten()
    }

    fn request_header_lines(&self, name: &str) -> Vec<Vec<u8>> {
        request_header_lines(name)
    }

    fn set_header(&self, map: Map, name: &str, value: Option<&str>) {
        set_header(map_type(map), name, value);
    }

    fn add_response_header(&self, name: &str, value: &str) {
        add_response_header(name, value);
    }

    fn clear_route_cache(&self) {
        clear_route_cache();
    }

    fn send_response(&self, status: u32, headers: &[(&str, &str)], body: &[u8]) {
        send_response(status, headers, body);
    }

    fn request_body(&self, size: usize) -> Vec<u8> {
        request_body(size)
    }

    fn attribute(&self, attribute: Attribute) -> Option<u64> {
        let name = match attribute {
            Attribute::ResponseCode => "code",
            Attribute::ResponseGrpcStatus => "grpc_status",
            Attribute::ResponseFlags => "flags",
        };
        property_u64(&["response", name])
    }

    fn response_code_details(&self) -> Option<Vec<u8>> {
        property(&["response", "code_details"])
    }

    fn cluster_name(&self) -> Option<Vec<u8>> {
        property(&["xds", "cluster_name"])
    }

    fn set_state(&self, key: &str, value: &str) {
        set_state(key, value);
    }
}

impl Host for ProxyHost {
    fn now_micros(&self) -> u64 {
        now_micros()
    }

    fn shared_data(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        hostcalls::get_shared_data(key).unwrap_or((None, None))
    }

    fn set_shared_data(&self, key: &str, value: &[u8], cas: Option<u32>) -> bool {
        hostcalls::set_shared_data(key, Some(value), cas).is_ok()
    }

    fn register_queue(&self, name: &str) -> Option<u32> {
        hostcalls::register_shared_queue(name).ok()
    }

    fn enqueue(&self, queue: u32, message: &[u8]) -> bool {
        hostcalls::enqueue_shared_queue(queue, Some(message)).is_ok()
    }

    fn dequeue(&self, queue: u32) -> Option<Vec<u8>> {
        hostcalls::dequeue_shared_queue(queue).ok().flatten()
    }

    fn http_get(&self, cluster: &str, authority: &str, path: &str, extra: &[(&str, &str)], timeout_ms: u64) -> bool {
        let mut headers = vec![(":method", "GET"), (":path", path), (":authority", authority), (":scheme", "http")];
        headers.extend_from_slice(extra);
        let timeout = std::time::Duration::from_millis(timeout_ms);
        hostcalls::dispatch_http_call(cluster, headers, None, Vec::new(), timeout).is_ok()
    }
}

// wasi-libc's C allocator, routed to Rust's global allocator. Only std's panic hook reaches C
// code that allocates (its environment, its working directory); without these, wasi-libc
// would link its own dlmalloc (7.5 KB) beside the global allocator. Each block starts with a
// 16-byte header (C's `max_align_t`) holding the block's total size, for `free`.

/// Header before each C block: its total size, padded to C's strictest alignment.
const C_HEADER: usize = 16;

fn c_layout(size: usize) -> Option<std::alloc::Layout> {
    std::alloc::Layout::from_size_align(size.checked_add(C_HEADER)?, C_HEADER).ok()
}

/// Writes the header into a fresh block and returns what C sees.
///
/// # Safety
/// `base` is null or a block of `layout` from the global allocator.
unsafe fn c_block(base: *mut u8, layout: std::alloc::Layout) -> *mut std::ffi::c_void {
    if base.is_null() {
        return std::ptr::null_mut();
    }
    base.cast::<usize>().write(layout.size());
    base.add(C_HEADER).cast()
}

/// # Safety
/// C's `malloc`.
#[no_mangle]
pub unsafe extern "C" fn malloc(size: usize) -> *mut std::ffi::c_void {
    match c_layout(size) {
        Some(layout) => c_block(std::alloc::alloc(layout), layout),
        None => std::ptr::null_mut(),
    }
}

/// # Safety
/// C's `calloc`.
#[no_mangle]
pub unsafe extern "C" fn calloc(count: usize, size: usize) -> *mut std::ffi::c_void {
    match count.checked_mul(size).and_then(c_layout) {
        Some(layout) => c_block(std::alloc::alloc_zeroed(layout), layout),
        None => std::ptr::null_mut(),
    }
}

/// # Safety
/// C's `aligned_alloc`, for alignments up to the header's (larger ones answer null, as C
/// allows; std asks for them only through its `System` allocator, which is not in use).
#[no_mangle]
pub unsafe extern "C" fn aligned_alloc(align: usize, size: usize) -> *mut std::ffi::c_void {
    if align > C_HEADER {
        return std::ptr::null_mut();
    }
    malloc(size)
}

/// # Safety
/// C's `posix_memalign`, as [`aligned_alloc`].
#[no_mangle]
pub unsafe extern "C" fn posix_memalign(out: *mut *mut std::ffi::c_void, align: usize, size: usize) -> i32 {
    const ENOMEM: i32 = 48;
    let block = aligned_alloc(align, size);
    if block.is_null() {
        return ENOMEM;
    }
    out.write(block);
    0
}

/// # Safety
/// C's `free`: `block` is null or from these functions.
#[no_mangle]
pub unsafe extern "C" fn free(block: *mut std::ffi::c_void) {
    if block.is_null() {
        return;
    }
    let base = block.cast::<u8>().sub(C_HEADER);
    let size = base.cast::<usize>().read();
    std::alloc::dealloc(base, std::alloc::Layout::from_size_align_unchecked(size, C_HEADER));
}

/// # Safety
/// C's `realloc`: `block` is null or from these functions.
#[no_mangle]
pub unsafe extern "C" fn realloc(block: *mut std::ffi::c_void, size: usize) -> *mut std::ffi::c_void {
    if block.is_null() {
        return malloc(size);
    }
    let Some(layout) = c_layout(size) else { return std::ptr::null_mut() };
    let base = block.cast::<u8>().sub(C_HEADER);
    let old = std::alloc::Layout::from_size_align_unchecked(base.cast::<usize>().read(), C_HEADER);
    c_block(std::alloc::realloc(base, old, layout.size()), layout)
}

/// wasi-libc's `getenv`, which only std's panic hook calls (for `RUST_BACKTRACE`): wasi-libc's
/// reads the environment from the host into allocated memory. A Wasm VM in Envoy has no
/// environment unless configured, and a panic aborts the VM without a backtrace either way.
#[no_mangle]
pub extern "C" fn getenv(_name: *const std::ffi::c_char) -> *mut std::ffi::c_char {
    std::ptr::null_mut()
}
