//! The host boundary: the narrow traits through which the logic reaches Envoy. The proxy glue
//! implements them with proxy-wasm host calls (`proxy::host`), the tests with a fake
//! ([`fake`]), so cross-VM coordination runs on the host in milliseconds.

#[cfg(test)]
pub mod fake;

/// The kind of a host stat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// Monotonic counter.
    Counter,
    /// Settable gauge.
    Gauge,
    /// Histogram of recorded values.
    Histogram,
}

/// Envoy's stats, process-wide: every VM that defines a name gets the same stat.
pub trait Stats {
    /// Defines (or finds) the stat `name`; `None` if the host refuses.
    fn define_metric(&self, kind: MetricKind, name: &str) -> Option<u32>;
    /// Adds one to a counter.
    fn increment(&self, id: u32) {
        self.add(id, 1);
    }
    /// Adds `delta` to a counter.
    fn add(&self, id: u32, delta: u64);
    /// Sets a gauge or records a histogram value.
    fn record(&self, id: u32, value: u64);
    /// The current value of a counter or gauge (0 if unknown).
    fn metric_value(&self, id: u32) -> u64;
}

/// What the cross-VM coordination needs besides stats: the clock, shared data and shared
/// queues. Every VM of a proxy sees the same shared data and queues.
pub trait Host: Stats {
    /// Microseconds since the Unix epoch (0 if the host cannot tell).
    fn now_micros(&self) -> u64;
    /// A shared-data value and its compare-and-swap token.
    fn shared_data(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>);
    /// Writes shared data if `cas` still matches (`None`: unconditionally); false if another
    /// VM wrote first or the host refused.
    fn set_shared_data(&self, key: &str, value: &[u8], cas: Option<u32>) -> bool;
    /// This VM's handle of the shared queue `name` (the same queue in every VM).
    fn register_queue(&self, name: &str) -> Option<u32>;
    /// Appends a message to a shared queue.
    fn enqueue(&self, queue: u32, message: &[u8]) -> bool;
    /// Takes the oldest message of a shared queue.
    fn dequeue(&self, queue: u32) -> Option<Vec<u8>>;
    /// Sends `GET path` to the upstream `cluster` with `:authority` `authority` and `headers`;
    /// the answer reaches the root context later. False if the host refused.
    fn http_get(&self, cluster: &str, authority: &str, path: &str, headers: &[(&str, &str)], timeout_ms: u64) -> bool;
}

/// The header maps of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Map {
    /// The request's headers.
    Request,
    /// The response's headers.
    Response,
}

/// Integer attributes of a stream (Envoy's attributes of the same names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attribute {
    /// `response.code`: the status Envoy answered with, its own replies included.
    ResponseCode,
    /// `response.grpc_status`: a gRPC call's status, from its trailers or headers.
    ResponseGrpcStatus,
    /// `response.flags`: Envoy's response flags as a bit set.
    ResponseFlags,
}

/// One stream's side of the host: its headers, attributes and local replies. A call the host
/// refuses is answered with a neutral value (absent, empty, nothing done), never a trap.
pub trait StreamHost: Host {
    /// A header's raw value (the first line of a repeated header).
    fn header(&self, map: Map, name: &str) -> Option<Vec<u8>>;
    /// Every line of request header `name`, in order.
    fn request_header_lines(&self, name: &str) -> Vec<Vec<u8>>;
    /// Sets (or, with `None`, removes) a header.
    fn set_header(&self, map: Map, name: &str, value: Option<&str>);
    /// Appends a response header line (for `set-cookie`, which may repeat).
    fn add_response_header(&self, name: &str, value: &str);
    /// Makes Envoy select the route again after a header the routes match on changed.
    fn clear_route_cache(&self);
    /// Answers the request from the filter, never forwarding it.
    fn send_response(&self, status: u32, headers: &[(&str, &str)], body: &[u8]);
    /// The first `size` bytes of the buffered request body.
    fn request_body(&self, size: usize) -> Vec<u8>;
    /// An integer attribute of the stream.
    fn attribute(&self, attribute: Attribute) -> Option<u64>;
    /// `response.code_details`: why Envoy answered as it did (`no_healthy_upstream`, ...).
    fn response_code_details(&self) -> Option<Vec<u8>>;
    /// The upstream cluster the route chose (`xds.cluster_name`).
    fn cluster_name(&self) -> Option<Vec<u8>>;
    /// Writes filter state for the access log.
    fn set_state(&self, key: &str, value: &str);
}
