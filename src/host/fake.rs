//! A fake proxy for tests: one process's shared data, shared queues, stats and clock, seen by
//! any number of fake VMs. It follows Envoy's semantics where the logic depends on them:
//! a compare-and-swap token of 0 (`None`) or a missing key writes unconditionally, every write
//! takes a new token, a queue name maps to the same queue in every VM, and a stat name to the
//! same process-wide stat.

use super::{Host, MetricKind, Stats};
use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};

#[derive(Default)]
struct Process {
    now_us: u64,
    data: HashMap<String, (Vec<u8>, u32)>,
    next_cas: u32,
    queue_names: Vec<String>,
    queues: Vec<VecDeque<Vec<u8>>>,
    stats: Vec<(String, MetricKind, u64)>,
    histograms: HashMap<u32, Vec<u64>>,
    http_calls: Vec<[String; 4]>,
}

/// The shared half of a proxy process.
#[derive(Default)]
pub struct FakeProxy {
    process: RefCell<Process>,
}

impl FakeProxy {
    /// A proxy whose clock reads `now_s` seconds.
    pub fn at(now_s: u64) -> Self {
        let proxy = FakeProxy::default();
        proxy.set_time_ms(now_s * 1000);
        proxy
    }

    /// A VM of this proxy.
    pub fn vm(&self) -> FakeVm<'_> {
        FakeVm { proxy: self }
    }

    /// Sets the clock, in milliseconds since the epoch.
    pub fn set_time_ms(&self, ms: u64) {
        self.process.borrow_mut().now_us = ms * 1000;
    }

    /// The clock, in milliseconds.
    pub fn time_ms(&self) -> u64 {
        self.process.borrow().now_us / 1000
    }

    /// Moves the clock forward by `ms`.
    pub fn advance_ms(&self, ms: u64) {
        self.set_time_ms(self.time_ms() + ms);
    }

    /// The value of the stat `name`, if defined.
    pub fn stat(&self, name: &str) -> Option<u64> {
        self.process.borrow().stats.iter().find(|(n, _, _)| n == name).map(|(_, _, v)| *v)
    }

    /// Values recorded into the histogram `name`.
    pub fn histogram(&self, name: &str) -> Vec<u64> {
        let process = self.process.borrow();
        let id = process.stats.iter().position(|(n, _, _)| n == name);
        id.and_then(|id| process.histograms.get(&(id as u32)).cloned()).unwrap_or_default()
    }

    /// Writes shared data as another party would (any format), unconditionally.
    pub fn put_shared(&self, key: &str, value: &[u8]) {
        let vm = self.vm();
        assert!(vm.set_shared_data(key, value, None));
    }

    /// Appends a message to the queue `name`, as another VM would.
    pub fn push_queue(&self, name: &str, message: &[u8]) {
        let vm = self.vm();
        let queue = vm.register_queue(name).unwrap();
        assert!(vm.enqueue(queue, message));
    }

    /// The HTTP calls sent so far: cluster, authority and path of each.
    pub fn http_calls(&self) -> Vec<[String; 4]> {
        self.process.borrow().http_calls.clone()
    }

    /// Messages waiting in the queue `name`.
    pub fn queued(&self, name: &str) -> usize {
        let process = self.process.borrow();
        process.queue_names.iter().position(|n| n == name).map_or(0, |i| process.queues[i].len())
    }
}

/// One VM's view of a [`FakeProxy`].
#[derive(Clone, Copy)]
pub struct FakeVm<'p> {
    proxy: &'p FakeProxy,
}

impl Stats for FakeVm<'_> {
    fn define_metric(&self, kind: MetricKind, name: &str) -> Option<u32> {
        let mut process = self.proxy.process.borrow_mut();
        let id = match process.stats.iter().position(|(n, _, _)| n == name) {
            Some(id) => id,
            None => {
                process.stats.push((name.to_string(), kind, 0));
                process.stats.len() - 1
            }
        };
        u32::try_from(id).ok()
    }

    fn add(&self, id: u32, delta: u64) {
        if let Some(stat) = self.proxy.process.borrow_mut().stats.get_mut(id as usize) {
            assert_eq!(stat.1, MetricKind::Counter, "{}", stat.0);
            stat.2 += delta;
        }
    }

    fn record(&self, id: u32, value: u64) {
        let mut process = self.proxy.process.borrow_mut();
        let Some(stat) = process.stats.get_mut(id as usize) else { return };
        match stat.1 {
            MetricKind::Gauge => stat.2 = value,
            MetricKind::Histogram => process.histograms.entry(id).or_default().push(value),
            MetricKind::Counter => panic!("record on counter {}", stat.0),
        }
    }

    fn metric_value(&self, id: u32) -> u64 {
        self.proxy.process.borrow().stats.get(id as usize).map_or(0, |s| s.2)
    }
}

impl Host for FakeVm<'_> {
    fn now_micros(&self) -> u64 {
        self.proxy.process.borrow().now_us
    }

    fn shared_data(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        match self.proxy.process.borrow().data.get(key) {
            Some((value, cas)) => (Some(value.clone()), Some(*cas)),
            None => (None, None),
        }
    }

    fn set_shared_data(&self, key: &str, value: &[u8], cas: Option<u32>) -> bool {
        let mut process = self.proxy.process.borrow_mut();
        process.next_cas += 1;
        let next = process.next_cas;
        match process.data.get_mut(key) {
            Some((_, current)) if cas.is_some_and(|c| c != 0 && c != *current) => false,
            Some(entry) => {
                *entry = (value.to_vec(), next);
                true
            }
            None => {
                process.data.insert(key.to_string(), (value.to_vec(), next));
                true
            }
        }
    }

    fn register_queue(&self, name: &str) -> Option<u32> {
        let mut process = self.proxy.process.borrow_mut();
        let id = match process.queue_names.iter().position(|n| n == name) {
            Some(id) => id,
            None => {
                process.queue_names.push(name.to_string());
                process.queues.push(VecDeque::new());
                process.queues.len() - 1
            }
        };
        u32::try_from(id).ok()
    }

    fn enqueue(&self, queue: u32, message: &[u8]) -> bool {
        match self.proxy.process.borrow_mut().queues.get_mut(queue as usize) {
            Some(q) => {
                q.push_back(message.to_vec());
                true
            }
            None => false,
        }
    }

    fn dequeue(&self, queue: u32) -> Option<Vec<u8>> {
        self.proxy.process.borrow_mut().queues.get_mut(queue as usize)?.pop_front()
    }

    fn http_get(&self, cluster: &str, authority: &str, path: &str, headers: &[(&str, &str)], _timeout_ms: u64) -> bool {
        let headers: Vec<String> = headers.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        self.proxy.process.borrow_mut().http_calls.push([
            cluster.into(),
            authority.into(),
            path.into(),
            headers.join("\n"),
        ]);
        true
    }
}

/// One stream through a [`FakeVm`]: its request and response headers, local reply, filter
/// state and attributes, as Envoy keeps them (header names lower case).
pub struct FakeStream<'p> {
    vm: FakeVm<'p>,
    state: RefCell<StreamState>,
}

#[derive(Default)]
struct StreamState {
    request: Vec<(String, Vec<u8>)>,
    response: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
    /// The local reply's status.
    reply: Option<u32>,
    filter_state: Vec<(String, String)>,
    attributes: Vec<(super::Attribute, u64)>,
    cluster: Option<String>,
    route_cleared: u32,
}

impl<'p> FakeStream<'p> {
    /// A stream of `vm` whose request has `headers`.
    pub fn new(vm: FakeVm<'p>, headers: &[(&str, &str)]) -> Self {
        let request = headers.iter().map(|(k, v)| (k.to_string(), v.as_bytes().to_vec())).collect();
        FakeStream { vm, state: RefCell::new(StreamState { request, ..StreamState::default() }) }
    }

    /// The upstream's response headers arrive.
    pub fn respond(&self, headers: &[(&str, &str)]) {
        self.state.borrow_mut().response =
            headers.iter().map(|(k, v)| (k.to_string(), v.as_bytes().to_vec())).collect();
    }

    /// Request body bytes buffered so far.
    pub fn receive_body(&self, bytes: &[u8]) {
        self.state.borrow_mut().body.extend_from_slice(bytes);
    }

    /// Sets an integer attribute (`response.code`, ...).
    pub fn set_attribute(&self, attribute: super::Attribute, value: u64) {
        self.state.borrow_mut().attributes.push((attribute, value));
    }

    /// Sets the cluster the route chose.
    pub fn set_cluster(&self, cluster: &str) {
        self.state.borrow_mut().cluster = Some(cluster.to_string());
    }

    /// Every line of a header, as text.
    pub fn lines(&self, map: super::Map, name: &str) -> Vec<String> {
        let state = self.state.borrow();
        let headers = match map {
            super::Map::Request => &state.request,
            super::Map::Response => &state.response,
        };
        headers.iter().filter(|(k, _)| k == name).map(|(_, v)| String::from_utf8_lossy(v).into_owned()).collect()
    }

    /// The local reply's status, if the filter answered.
    pub fn reply_status(&self) -> Option<u32> {
        self.state.borrow().reply
    }

    /// Filter state `key`.
    pub fn filter_state(&self, key: &str) -> Option<String> {
        self.state.borrow().filter_state.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone())
    }

    /// How many times the route cache was cleared.
    pub fn route_cleared(&self) -> u32 {
        self.state.borrow().route_cleared
    }
}

impl Stats for FakeStream<'_> {
    fn define_metric(&self, kind: MetricKind, name: &str) -> Option<u32> {
        self.vm.define_metric(kind, name)
    }

    fn add(&self, id: u32, delta: u64) {
        self.vm.add(id, delta);
    }

    fn record(&self, id: u32, value: u64) {
        self.vm.record(id, value);
    }

    fn metric_value(&self, id: u32) -> u64 {
        self.vm.metric_value(id)
    }
}

impl Host for FakeStream<'_> {
    fn now_micros(&self) -> u64 {
        self.vm.now_micros()
    }

    fn shared_data(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        self.vm.shared_data(key)
    }

    fn set_shared_data(&self, key: &str, value: &[u8], cas: Option<u32>) -> bool {
        self.vm.set_shared_data(key, value, cas)
    }

    fn register_queue(&self, name: &str) -> Option<u32> {
        self.vm.register_queue(name)
    }

    fn enqueue(&self, queue: u32, message: &[u8]) -> bool {
        self.vm.enqueue(queue, message)
    }

    fn dequeue(&self, queue: u32) -> Option<Vec<u8>> {
        self.vm.dequeue(queue)
    }

    fn http_get(&self, cluster: &str, authority: &str, path: &str, headers: &[(&str, &str)], timeout_ms: u64) -> bool {
        self.vm.http_get(cluster, authority, path, headers, timeout_ms)
    }
}

impl super::StreamHost for FakeStream<'_> {
    fn header(&self, map: super::Map, name: &str) -> Option<Vec<u8>> {
        self.lines(map, name).into_iter().next().map(String::into_bytes)
    }

    fn request_header_lines(&self, name: &str) -> Vec<Vec<u8>> {
        self.lines(super::Map::Request, name).into_iter().map(String::into_bytes).collect()
    }

    fn set_header(&self, map: super::Map, name: &str, value: Option<&str>) {
        let mut state = self.state.borrow_mut();
        let headers = match map {
            super::Map::Request => &mut state.request,
            super::Map::Response => &mut state.response,
        };
        headers.retain(|(k, _)| k != name);
        if let Some(value) = value {
            headers.push((name.to_string(), value.as_bytes().to_vec()));
        }
    }

    fn add_response_header(&self, name: &str, value: &str) {
        self.state.borrow_mut().response.push((name.to_string(), value.as_bytes().to_vec()));
    }

    fn clear_route_cache(&self) {
        self.state.borrow_mut().route_cleared += 1;
    }

    fn send_response(&self, status: u32, _headers: &[(&str, &str)], _body: &[u8]) {
        self.state.borrow_mut().reply = Some(status);
    }

    fn request_body(&self, size: usize) -> Vec<u8> {
        let state = self.state.borrow();
        state.body.get(..size.min(state.body.len())).unwrap_or_default().to_vec()
    }

    fn attribute(&self, attribute: super::Attribute) -> Option<u64> {
        self.state.borrow().attributes.iter().rev().find(|(a, _)| *a == attribute).map(|(_, v)| *v)
    }

    fn response_code_details(&self) -> Option<Vec<u8>> {
        None
    }

    fn cluster_name(&self) -> Option<Vec<u8>> {
        self.state.borrow().cluster.clone().map(String::into_bytes)
    }

    fn set_state(&self, key: &str, value: &str) {
        self.state.borrow_mut().filter_state.push((key.to_string(), value.to_string()));
    }
}
