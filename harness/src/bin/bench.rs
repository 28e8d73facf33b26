//! `make bench`: side-by-side throughput and latency of Envoy 1.40 with and without
//! canary-gate, in one run, alternating rounds, from `wrk` on loopback.
//!
//! Variants, one listener each in `envoy/bench.yaml`, same Envoy process:
//! - a-direct / a-backend: header routing, no filter;
//! - b-native: header route, weighted clusters and a stateful_session cookie;
//! - c-filter / c-direct: canary-gate (filter mode, metrics and gate);
//! - c-mesh: canary-gate in mesh mode behind weighted clusters, the counterpart of b-native;
//! - c-skip / c-skip-backend: canary-gate configured for another host, so it only reads
//!   `:authority`: the fixed cost of any Wasm filter in V8, to a `direct_response` / to the backends;
//! - c-baseline, with `BENCH_BASELINE_WASM=FILE`: c-filter running another build of the filter
//!   (an earlier commit's), so a change is measured side by side with what it changes;
//! - c-classes: c-filter with 8 route classes by path, none matching: the cost of classes;
//! - c-vitals: c-filter with the web-vitals beacon endpoint: the cost it adds to the requests
//!   that are not beacons;
//! - n-filter / n-skip: c-filter and c-skip-backend on the native dynamic module (`make native`)
//!   instead of the Wasm filter: the same decisions at the speed of Envoy's own filters;
//! - g-native / g-filter: gRPC unary calls from h2load over HTTP/2 to two grpcio servers
//!   (`tests/grpc/server.py`), Envoy speaking HTTP/2 to them; header routing with no filter /
//!   canary-gate as in c-filter.
//!
//! Envoy runs one worker pinned to CPU 0; wrk, h2load and the backends run on CPU 1. Users are
//! known by an `x-user-id` header; with `BENCH_USERS=browser`, by a `session` cookie among a
//! browser's other cookies, with their sticky cookie. h2load sends the same headers with every
//! call, so every gRPC call is the same user's.
//!
//! `BENCH_LISTENER_ORDER=reversed` declares the listeners in reverse order: where a listener sits
//! in the configuration moves a variant's throughput by a few tenths of a percent, so a
//! comparison that matters is measured in both orders.

use canary_harness::grpc::{calls, python_bin};
use canary_harness::{backend_bin, envoy_bin, free_port, median, native_file, root, wasm_file, Client, TempDir};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

const VARIANTS: [(&str, u16); 15] = [
    ("a-direct", 10001),
    ("c-skip", 10006),
    ("c-direct", 10005),
    ("a-backend", 10002),
    ("b-native", 10003),
    ("c-skip-backend", 10007),
    ("c-filter", 10004),
    ("c-mesh", 10009),
    ("c-baseline", 10008),
    ("c-classes", 10010),
    ("c-vitals", 10011),
    ("g-native", 10012),
    ("g-filter", 10013),
    ("n-filter", 10014),
    ("n-skip", 10015),
];

/// The gRPC variants, loaded by h2load instead of wrk.
fn is_grpc(name: &str) -> bool {
    name.starts_with("g-")
}

/// The user of every gRPC call (h2load cannot vary a header from one request to the next); it
/// falls in canary-gate's stable share, where g-native's calls all go.
const GRPC_USER: &str = "user-1";

/// The gRPC method the benchmark calls: it answers raw bytes, no protobuf.
const GRPC_PATH: &str = "/canary.Test/Unary";

/// c-classes' configuration: c-filter's with 8 route classes by path, none of which the
/// benchmark's `GET /` matches, so every request is checked against all eight.
const EIGHT_CLASSES: &str = r#"{"service": "checkout-classes", "split": {"canary_percent": 10}, "gate": {"max_error_ratio": 0.05, "max_p95_ms": 200}, "classes": [{"name": "api", "path_prefix": ["/api/"]}, {"name": "v1", "path_prefix": ["/v1/"]}, {"name": "v2", "path_prefix": ["/v2/"]}, {"name": "admin", "path_prefix": ["/admin/"]}, {"name": "health", "path_prefix": ["/healthz", "/readyz"]}, {"name": "script", "path_suffix": [".js", ".mjs"]}, {"name": "style", "path_suffix": [".css"]}, {"name": "image", "path_suffix": [".png", ".jpg", ".svg", ".webp"]}]}"#;

/// c-vitals' configuration: c-filter's with the beacon endpoint, which the benchmark's `GET /`
/// never calls.
const VITALS: &str = r#"{"service": "checkout-vitals", "split": {"canary_percent": 10}, "gate": {"max_error_ratio": 0.05, "max_p95_ms": 200}, "vitals": {}}"#;

/// Adds the listener `name` on `port`: a copy of c-filter's, in a VM of its own, configured
/// with `filter_json`.
fn with_variant(config: &str, name: &str, port: u16, filter_json: &str) -> String {
    let start = config.find("  - name: c-filter\n").expect("c-filter listener in envoy/bench.yaml");
    let end = config[start + 1..].find("\n  - name: ").map_or(config.len(), |i| start + 1 + i + 1);
    let filter = &config[start..end];
    let value_start = filter.find("value: '").expect("c-filter's configuration") + "value: '".len();
    let value_end = value_start + filter[value_start..].find('\'').expect("quoted configuration");
    let listener = format!("{}{filter_json}{}", &filter[..value_start], &filter[value_end..])
        .replace("c-filter", name)
        .replace("port_value: 10004", &format!("port_value: {port}"))
        .replace("vm_id: canary-gate", &format!("vm_id: canary-gate-{name}"));
    format!("{}{listener}{}", &config[..end], &config[end..])
}

/// Adds the c-baseline listener: a copy of c-filter's that loads `wasm` instead of `filter_wasm`,
/// in a VM of its own.
fn with_baseline(config: &str, filter_wasm: &str, wasm: &str) -> String {
    let start = config.find("  - name: c-filter\n").expect("c-filter listener in envoy/bench.yaml");
    let end = config[start + 1..].find("\n  - name: ").map_or(config.len(), |i| start + 1 + i + 1);
    let listener = config[start..end]
        .replace("c-filter", "c-baseline")
        .replace("port_value: 10004", "port_value: 10008")
        .replace("vm_id: canary-gate", "vm_id: canary-gate-baseline")
        .replace(filter_wasm, wasm);
    format!("{}{listener}{}", &config[..end], &config[end..])
}

/// The configuration with its listeners declared in reverse order.
fn reversed_listeners(config: &str) -> String {
    let start = config.find("  listeners:\n").expect("listeners in envoy/bench.yaml") + "  listeners:\n".len();
    let end = config.find("\n  clusters:\n").expect("clusters in envoy/bench.yaml") + 1;
    let mut blocks: Vec<String> = Vec::new();
    for line in config[start..end].split_inclusive('\n') {
        match blocks.last_mut() {
            Some(block) if !line.starts_with("  - name: ") => block.push_str(line),
            _ => blocks.push(line.to_string()),
        }
    }
    blocks.reverse();
    format!("{}{}{}", &config[..start], blocks.concat(), &config[end..])
}

struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn pinned(cpu: &str, program: &std::path::Path) -> Command {
    let mut c = Command::new("taskset");
    c.args(["-c", cpu]).arg(program);
    c
}

#[derive(Debug, Clone, Copy, Default)]
struct Run {
    rps: f64,
    p50_us: f64,
    p99_us: f64,
    /// Envoy's CPU time (all threads) per request: the cost, whether or not Envoy saturates.
    envoy_cpu_us: f64,
}

/// CPU seconds (user + system) process `pid` has used.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the `(comm)`: state is the 1st, utime the 12th, stime the 13th.
    let fields: Vec<&str> =
        stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(f64::NAN);
    // Clock ticks of USER_HZ, which Linux fixes at 100.
    (ticks(11) + ticks(12)) / 100.0
}

fn wrk(url: &str, script: &std::path::Path, connections: u32, seconds: u32, envoy_pid: u32) -> Run {
    let cpu_before = cpu_seconds(envoy_pid);
    let out = Command::new("taskset")
        .args(["-c", "1", "wrk", "-t1", &format!("-c{connections}"), &format!("-d{seconds}s"), "--latency", "-s"])
        .arg(script)
        .arg(url)
        .output()
        .expect("wrk (Debian package `wrk`)");
    let cpu = cpu_seconds(envoy_pid) - cpu_before;
    let text = String::from_utf8_lossy(&out.stdout);
    let requests: f64 = text
        .lines()
        .find_map(|l| l.trim().split_once(" requests in").and_then(|(n, _)| n.trim().parse().ok()))
        .unwrap_or(f64::NAN);
    let field = |prefix: &str| text.lines().find_map(|l| l.trim().strip_prefix(prefix).map(|v| v.trim().to_string()));
    let micros = |v: Option<String>| {
        let v = v.unwrap_or_default();
        let (num, unit) = v.split_at(v.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(v.len()));
        let n: f64 = num.parse().unwrap_or(f64::NAN);
        match unit {
            "us" => n,
            "ms" => n * 1e3,
            "s" => n * 1e6,
            _ => f64::NAN,
        }
    };
    Run {
        rps: field("Requests/sec:").and_then(|v| v.parse().ok()).unwrap_or(0.0),
        p50_us: micros(field("50%")),
        p99_us: micros(field("99%")),
        envoy_cpu_us: cpu * 1e6 / requests,
    }
}

/// Unary gRPC calls from h2load (1 thread, `connections` connections of one stream each) for
/// `seconds`: calls/s and Envoy CPU per call from its summary, p50 and p99 from its per-call log.
fn h2load(url: &str, dir: &Path, connections: u32, seconds: u32, envoy_pid: u32) -> Run {
    let (body, log) = (dir.join("empty.grpc"), dir.join("h2load.log"));
    let cpu_before = cpu_seconds(envoy_pid);
    let out = Command::new("taskset")
        .args(["-c", "1", "h2load", "-t1", &format!("-c{connections}"), "-m1", &format!("-D{seconds}")])
        .args(["-H", "content-type: application/grpc", "-H", "te: trailers", "-H", &format!("x-user-id: {GRPC_USER}")])
        .arg("-d")
        .arg(&body)
        .arg(format!("--log-file={}", log.display()))
        .arg(url)
        .output()
        .expect("h2load (Debian package `nghttp2-client`)");
    let cpu = cpu_seconds(envoy_pid) - cpu_before;
    let text = String::from_utf8_lossy(&out.stdout);
    // `finished in 5.00s, 6500.50 req/s, 571.84KB/s`
    let rps = text
        .lines()
        .find_map(|l| l.strip_prefix("finished in ")?.split(", ").nth(1)?.strip_suffix(" req/s")?.parse().ok())
        .unwrap_or(0.0);
    // `requests: 32500 total, 32516 started, 32500 done, 32500 succeeded, 0 failed, 0 errored, 0 timeout`
    let count = |what: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix("requests: "))
            .and_then(|l| l.split(", ").find_map(|f| f.strip_suffix(what)?.trim().parse::<f64>().ok()))
            .unwrap_or(f64::NAN)
    };
    let (done, succeeded) = (count(" done"), count(" succeeded"));
    if succeeded != done {
        eprintln!("h2load {url}: {succeeded} of {done} calls succeeded");
    }
    // Each line of the log: start (µs since the epoch), HTTP status, elapsed µs.
    let mut elapsed: Vec<f64> = std::fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split('\t').nth(2)?.trim().parse().ok())
        .collect();
    elapsed.sort_by(f64::total_cmp);
    let percentile =
        |p: f64| elapsed.get(((elapsed.len() as f64 - 1.0) * p).round() as usize).copied().unwrap_or(f64::NAN);
    Run { rps, p50_us: percentile(0.5), p99_us: percentile(0.99), envoy_cpu_us: cpu * 1e6 / done }
}

/// Waits until something listens on `port` (a grpcio server takes a moment to start).
fn wait_for_port(port: u16, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(child.try_wait().ok().flatten().is_none(), "tests/grpc/server.py exited before listening on {port}");
        assert!(Instant::now() < deadline, "tests/grpc/server.py did not listen on {port} within 30 s");
        sleep(Duration::from_millis(20));
    }
}

fn main() {
    let rounds: usize = std::env::var("BENCH_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(7);
    let seconds: u32 = std::env::var("BENCH_SECONDS").ok().and_then(|v| v.parse().ok()).unwrap_or(5);
    let dir = TempDir::new("bench");
    let (stable_port, canary_port, admin_port) = (free_port(), free_port(), free_port());
    let (grpc_stable_port, grpc_canary_port) = (free_port(), free_port());
    let mut ports = Vec::new();
    let baseline = std::env::var("BENCH_BASELINE_WASM").ok().filter(|v| !v.is_empty());
    let filter_wasm = wasm_file().display().to_string();
    let mut config = std::fs::read_to_string(root().join("envoy/bench.yaml"))
        .expect("envoy/bench.yaml")
        .replace("port_value: 18001", &format!("port_value: {stable_port}"))
        .replace("port_value: 18002", &format!("port_value: {canary_port}"))
        .replace("port_value: 18003", &format!("port_value: {grpc_stable_port}"))
        .replace("port_value: 18004", &format!("port_value: {grpc_canary_port}"))
        .replace("port_value: 9901", &format!("port_value: {admin_port}"))
        .replace("target/wasm32-wasip1/release/canary_gate.wasm", &filter_wasm);
    let native_module = native_file().display().to_string();
    config = config.replace("target/native/libcanary_gate.so", &native_module);
    if let Some(wasm) = &baseline {
        config = with_baseline(&config, &filter_wasm, wasm);
    }
    // An earlier build may refuse their configurations: added only when run.
    let only = std::env::var("BENCH_VARIANTS").ok();
    for (name, port, filter_json) in [("c-classes", 10010, EIGHT_CLASSES), ("c-vitals", 10011, VITALS)] {
        if only.as_deref().is_none_or(|list| list.split(',').any(|v| v.trim() == name)) {
            config = with_variant(&config, name, port, filter_json);
        }
    }
    if std::env::var("BENCH_LISTENER_ORDER").as_deref() == Ok("reversed") {
        config = reversed_listeners(&config);
    }
    for (_, port) in VARIANTS {
        let free = free_port();
        config = config.replace(&format!("port_value: {port}"), &format!("port_value: {free}"));
        ports.push(free);
    }
    let bootstrap = dir.path().join("bench.yaml");
    std::fs::write(&bootstrap, config).expect("write bench.yaml");
    let script = dir.path().join("users.lua");
    // BENCH_USERS=browser: a browser's request, the user known by a `session` cookie among
    // others and already carrying the sticky cookie, instead of an `x-user-id` header.
    let user = match std::env::var("BENCH_USERS").as_deref() {
        Ok("browser") => concat!(
            "{[\"user-agent\"] = \"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36\", ",
            "[\"accept\"] = \"text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8\", ",
            "[\"accept-language\"] = \"en-US,en;q=0.9\", [\"accept-encoding\"] = \"gzip, deflate, br, zstd\", ",
            "[\"referer\"] = \"https://shop.example.com/\", ",
            "[\"cookie\"] = \"_ga=GA1.2.1234567890.1700000000; lang=en; session=user-\" .. (n % 100000) .. \"; canary_bucket=\" .. (n % 10000)}"
        ),
        _ => "{[\"x-user-id\"] = \"user-\" .. (n % 100000)}",
    };
    std::fs::write(
        &script,
        format!("local n = 0\nrequest = function()\n  n = n + 1\n  return wrk.format(\"GET\", \"/\", {user})\nend\n"),
    )
    .expect("write users.lua");

    let backend = |version: &str, port: u16| {
        Proc(
            pinned("1", &backend_bin())
                .args(["--listen", &format!("127.0.0.1:{port}"), "--version", version])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("canary-backend"),
        )
    };
    let _backends = [backend("stable", stable_port), backend("canary", canary_port)];
    // BENCH_VARIANTS=a-direct,c-direct narrows a run to some variants (and skips the memory run).
    let chosen: Vec<usize> = (0..VARIANTS.len())
        .filter(|&i| VARIANTS[i].0 != "c-baseline" || baseline.is_some())
        .filter(|&i| only.as_deref().is_none_or(|list| list.split(',').any(|v| v.trim() == VARIANTS[i].0)))
        .collect();
    let (http, grpc): (Vec<usize>, Vec<usize>) = chosen.iter().partition(|&&i| !is_grpc(VARIANTS[i].0));
    // The gRPC servers, started only for the gRPC variants: pinned like the backends.
    let grpc_backend = |version: &str, port: u16| {
        let mut child = pinned("1", &python_bin())
            .arg(root().join("tests/grpc/server.py"))
            .args(["--listen", &format!("127.0.0.1:{port}"), "--version", version])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tests/grpc/server.py");
        wait_for_port(port, &mut child);
        Proc(child)
    };
    let _grpc_backends = (!grpc.is_empty())
        .then(|| [grpc_backend("stable", grpc_stable_port), grpc_backend("canary", grpc_canary_port)]);
    // A gRPC call's 5-byte frame of an empty message: not compressed, length 0.
    std::fs::write(dir.path().join("empty.grpc"), [0u8; 5]).expect("write empty.grpc");
    let envoy = Proc(
        pinned("0", &envoy_bin())
            .arg("-c")
            .arg(&bootstrap)
            .args(["--concurrency", "1", "--disable-hot-restart", "-l", "warning"])
            .current_dir(root())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("envoy"),
    );
    // taskset and the venv's launcher exec Envoy: the child's pid is Envoy's.
    let pid = envoy.0.id();
    let admin = |path: &str| Client::new().get(&format!("http://127.0.0.1:{admin_port}{path}"), &[]);
    for _ in 0..200 {
        if admin("/ready").status == 200 {
            break;
        }
        sleep(Duration::from_millis(100));
    }
    let url = |i: usize| format!("http://127.0.0.1:{}/", ports[i]);
    let run = |i: usize, connections: u32, seconds: u32| match is_grpc(VARIANTS[i].0) {
        true => h2load(&format!("http://127.0.0.1:{}{GRPC_PATH}", ports[i]), dir.path(), connections, seconds, pid),
        false => wrk(&url(i), &script, connections, seconds, pid),
    };
    // Each gRPC variant answers a call with status OK, from the stable server.
    for &i in &grpc {
        let plan = serde_json::json!([{"method": "Unary", "metadata": {"x-user-id": GRPC_USER}, "timeout_s": 5}]);
        let call = calls(ports[i], &plan).pop();
        assert!(
            call.as_ref().is_some_and(|c| c.code == 0 && c.served_by.as_deref() == Some("stable")),
            "{}: a gRPC call answered {call:?}",
            VARIANTS[i].0
        );
    }
    let memory = || {
        let body = admin("/stats?filter=^wasmcustom.canary_vm_memory_bytes$").body;
        body.split(": ").nth(1).and_then(|v| v.trim().parse::<u64>().ok()).unwrap_or(0)
    };
    let requests = || {
        let body = admin("/stats?filter=^wasmcustom.canary_requests_total").body;
        body.lines().filter_map(|l| l.split(": ").nth(1)?.trim().parse::<u64>().ok()).sum::<u64>()
    };

    println!("# canary-gate benchmark\n");
    let size = |path: &std::path::Path| std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let order = std::env::var("BENCH_LISTENER_ORDER").unwrap_or_else(|_| "as declared".into());
    println!("wasm: {} bytes; native module: {} bytes; Envoy 1 worker on CPU 0, wrk (1 thread) and backends on CPU 1; {rounds} rounds x {seconds} s per variant, order alternating; listeners {order}\n", size(&wasm_file()), size(&native_file()));
    if let Some(wasm) = &baseline {
        println!("c-baseline: {wasm}, {} bytes\n", size(std::path::Path::new(wasm)));
    }
    if !grpc.is_empty() {
        println!("gRPC: unary calls ({GRPC_PATH}, an empty message) from h2load (1 thread, 1 stream per connection), every call `x-user-id: {GRPC_USER}`; two grpcio servers (tests/grpc/server.py) on CPU 1, Envoy speaking HTTP/2 to them\n");
    }
    for &i in &chosen {
        run(i, 16, 2);
    }

    let mut saturated: Vec<Vec<Run>> = vec![Vec::new(); VARIANTS.len()];
    let mut moderate: Vec<Vec<Run>> = vec![Vec::new(); VARIANTS.len()];
    for round in 0..rounds {
        let order: Vec<usize> = if round % 2 == 0 { chosen.clone() } else { chosen.iter().rev().copied().collect() };
        for &i in &order {
            saturated[i].push(run(i, 16, seconds));
        }
        for &i in &order {
            moderate[i].push(run(i, 2, seconds));
        }
        eprintln!(
            "round {}: {:?}",
            round + 1,
            order.iter().map(|&i| (VARIANTS[i].0, saturated[i].last().map(|r| r.rps as u64))).collect::<Vec<_>>()
        );
    }

    let table = |variants: &[usize]| {
        for &i in variants {
            let name = VARIANTS[i].0;
            let m = |v: &Vec<Run>, f: fn(&Run) -> f64| median(&mut v.iter().map(f).collect::<Vec<_>>());
            println!(
                "| {name} | {:.0} | {:.1} | {:.0} | {:.0} | {:.0} |",
                m(&saturated[i], |r| r.rps),
                m(&saturated[i], |r| r.envoy_cpu_us),
                m(&saturated[i], |r| r.p50_us),
                m(&saturated[i], |r| r.p99_us),
                m(&moderate[i], |r| r.p99_us)
            );
        }
    };
    if !http.is_empty() {
        println!("| variant | throughput rps (median, 16 conn) | Envoy CPU µs per request | p50 µs | p99 µs | p99 µs at moderate load (2 conn) |");
        println!("|---|---|---|---|---|---|");
        table(&http);
    }
    let index = |name: &str| VARIANTS.iter().position(|(n, _)| *n == name).unwrap_or(0);
    // Median over the rounds of `f` applied to variant `a`'s and `b`'s runs of the same round.
    let paired = |runs: &[Vec<Run>], a: &str, b: &str, f: fn(&Run, &Run) -> f64| {
        median(&mut runs[index(a)].iter().zip(&runs[index(b)]).map(|(x, y)| f(x, y)).collect::<Vec<_>>())
    };
    let ratio = |a: &str, b: &str| paired(&saturated, a, b, |x, y| x.rps / y.rps);
    let cpu_added = |a: &str, b: &str| paired(&saturated, a, b, |x, y| x.envoy_cpu_us - y.envoy_cpu_us);
    let added = |a: &str, b: &str| paired(&moderate, a, b, |x, y| x.p99_us - y.p99_us);
    let pair_table = |per: &str, pairs: &[(&str, &str)]| {
        println!("\n| pair (same round) | median throughput ratio | median Envoy CPU added per {per} | median p99 added at moderate load |");
        println!("|---|---|---|---|");
        for &(a, b) in pairs {
            if [a, b].iter().all(|v| chosen.contains(&index(v))) {
                println!("| {a} / {b} | {:.3} | {:+.1} µs | {:+.0} µs |", ratio(a, b), cpu_added(a, b), added(a, b));
            }
        }
    };
    let http_pairs = [
        ("n-filter", "b-native"),
        ("n-skip", "b-native"),
        ("n-filter", "n-skip"),
        ("c-filter", "n-filter"),
        ("c-filter", "c-baseline"),
        ("c-classes", "c-filter"),
        ("c-vitals", "c-filter"),
        ("c-filter", "c-skip-backend"),
        ("c-baseline", "c-skip-backend"),
        ("c-filter", "b-native"),
        ("c-mesh", "b-native"),
        ("c-skip-backend", "b-native"),
        ("c-filter", "a-backend"),
        ("b-native", "a-backend"),
        ("c-direct", "a-direct"),
        ("c-skip", "a-direct"),
        ("c-direct", "c-skip"),
    ];
    if !http.is_empty() {
        pair_table("request", &http_pairs);
    }
    if !grpc.is_empty() {
        println!("\n| gRPC variant | throughput calls/s (median, 16 conn) | Envoy CPU µs per call | p50 µs | p99 µs | p99 µs at moderate load (2 conn) |");
        println!("|---|---|---|---|---|---|");
        table(&grpc);
        pair_table("call", &[("g-filter", "g-native")]);
    }
    if only.is_some() {
        return;
    }

    // Memory: after the rounds (minutes of traffic: every window slot used), and after one
    // million more requests through canary-gate.
    sleep(Duration::from_secs(2));
    let (memory_warm, requests_warm) = (memory(), requests());
    while requests() < requests_warm + 1_000_000 {
        wrk(&url(index("c-direct")), &script, 16, 10, pid);
    }
    sleep(Duration::from_secs(2));
    println!(
        "\nVM linear memory (largest VM, canary_vm_memory_bytes): {memory_warm} bytes after warm-up ({requests_warm} requests), {} bytes after {} more",
        memory(),
        requests() - requests_warm
    );
}
