//! Host calls with every error handled: a failed call is logged at debug level and answered
//! with a neutral value, never a trap.

use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, MapType, MetricType};

/// A request header's raw value.
pub fn request_header(name: &str) -> Option<Vec<u8>> {
    hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, name).ok().flatten()
}

/// The response's `:status`, if it is a number.
pub fn response_status() -> Option<u64> {
    let value = hostcalls::get_map_value_bytes(MapType::HttpResponseHeaders, ":status").ok().flatten()?;
    std::str::from_utf8(&value).ok()?.parse().ok()
}

/// Every `cookie` line of the request joined with `; ` (Envoy keeps repeated lines apart
/// for HTTP/1.1, and a single-value read would see only the first).
pub fn request_cookies() -> Option<Vec<u8>> {
    let first = request_header("cookie")?;
    let Ok(all) = hostcalls::get_map_bytes(MapType::HttpRequestHeaders) else { return Some(first) };
    let lines: Vec<&[u8]> = all.iter().filter(|(k, _)| k == "cookie").map(|(_, v)| v.as_slice()).collect();
    Some(if lines.len() > 1 { lines.join(&b"; "[..]) } else { first })
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

/// Defines a host stat; `None` (logged) if the host refuses.
pub fn define_metric(kind: MetricType, name: &str) -> Option<u32> {
    match hostcalls::define_metric(kind, name) {
        Ok(id) => Some(id),
        Err(status) => {
            log::warn!("cannot define metric {name}: {status:?}");
            None
        }
    }
}

/// Adds one to a counter.
pub fn increment(id: Option<u32>) {
    if let Some(id) = id {
        let _ = hostcalls::increment_metric(id, 1);
    }
}

/// Sets a gauge or records a histogram value.
pub fn record(id: Option<u32>, value: u64) {
    if let Some(id) = id {
        let _ = hostcalls::record_metric(id, value);
    }
}

/// The current value of a stat.
pub fn metric_value(id: Option<u32>) -> u64 {
    id.and_then(|id| hostcalls::get_metric(id).ok()).unwrap_or(0)
}

/// This VM's linear memory in bytes.
pub fn vm_memory_bytes() -> u64 {
    core::arch::wasm32::memory_size(0) as u64 * 65_536
}

/// A shared-data value and its compare-and-swap token.
pub fn shared_data(key: &str) -> (Option<Vec<u8>>, Option<u32>) {
    hostcalls::get_shared_data(key).unwrap_or((None, None))
}

/// Writes shared data if `cas` still matches; false if another VM wrote first.
pub fn set_shared_data(key: &str, value: &[u8], cas: Option<u32>) -> bool {
    hostcalls::set_shared_data(key, Some(value), cas).is_ok()
}

/// This VM's handle of the shared queue `name` (the same queue in every VM).
pub fn register_queue(name: &str) -> Option<u32> {
    hostcalls::register_shared_queue(name).ok()
}

/// Appends a message to a shared queue.
pub fn enqueue(queue: u32, message: &[u8]) -> bool {
    hostcalls::enqueue_shared_queue(queue, Some(message)).is_ok()
}

/// Takes the oldest message of a shared queue.
pub fn dequeue(queue: u32) -> Option<Vec<u8>> {
    hostcalls::dequeue_shared_queue(queue).ok().flatten()
}
