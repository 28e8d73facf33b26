//! gRPC for the end-to-end tests: the grpcio test server and client of `tests/grpc/` (run by
//! the project virtualenv's Python) and the bootstrap edit that speaks HTTP/2 to the upstreams.

use crate::{free_port, root, stop, wait_for_port};
use serde_json::Value;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

/// The virtualenv's Python with grpcio (`PYTHON_BIN`, default `.venv/bin/python`); fails the
/// test, naming `make deps`, if grpcio is missing (checked once per test process).
pub fn python_bin() -> PathBuf {
    static CHECKED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let path = std::env::var_os("PYTHON_BIN").map(PathBuf::from).unwrap_or_else(|| root().join(".venv/bin/python"));
    let ok = *CHECKED.get_or_init(|| {
        Command::new(&path).args(["-c", "import grpc"]).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
    });
    assert!(ok, "{} cannot import grpc: run `make deps` (installs grpcio into .venv)", path.display());
    path
}

fn script(name: &str) -> PathBuf {
    root().join("tests/grpc").join(name)
}

/// A running `tests/grpc/server.py`.
pub struct GrpcBackend {
    child: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

impl GrpcBackend {
    /// Starts a server answering as `version`; `args` are extra flags (`--error-ratio`,
    /// `--error-code`, `--revision`).
    pub fn start(version: &str, args: &[&str]) -> GrpcBackend {
        let port = free_port();
        let mut child = Command::new(python_bin())
            .arg(script("server.py"))
            .args(["--listen", &format!("127.0.0.1:{port}"), "--version", version])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start tests/grpc/server.py: {e}"));
        wait_for_port(port, &mut child, "tests/grpc/server.py");
        GrpcBackend { child, port }
    }

    /// Switches its failure share at run time, e.g. `{"error_ratio": 0.3, "error_code": 14}`.
    pub fn configure(&self, settings: &str) {
        let target = format!("127.0.0.1:{}", self.port);
        run_client(&["configure", "--target", &target, "--json", settings]);
    }

    /// Stops the server (its port then refuses connections).
    pub fn kill(&mut self) {
        stop(&mut self.child);
    }
}

impl Drop for GrpcBackend {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

/// Runs `tests/grpc/client.py` with `args` to the end (each of its calls has a deadline or
/// is bounded by `--seconds`) and parses what it prints.
fn run_client(args: &[&str]) -> Value {
    let output = Command::new(python_bin())
        .arg(script("client.py"))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run tests/grpc/client.py: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "tests/grpc/client.py {args:?} failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or(Value::Null)
}

/// One finished call, as the client saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// Its gRPC status code.
    pub code: u64,
    /// Messages it received.
    pub messages: u64,
    /// `x-canary-version` from its (initial or trailers-only) metadata.
    pub version: Option<String>,
    /// `x-served-by` from its metadata: the server that answered.
    pub served_by: Option<String>,
}

/// Runs the calls of `plan` (see `tests/grpc/client.py`) in order through `port` on 127.0.0.1.
pub fn calls(port: u16, plan: &Value) -> Vec<Call> {
    let target = format!("127.0.0.1:{port}");
    let results = run_client(&["calls", "--target", &target, "--plan", &plan.to_string()]);
    let text = |r: &Value, key: &str| r["metadata"][key].as_str().map(str::to_string);
    results
        .as_array()
        .map(|list| {
            list.iter()
                .map(|r| Call {
                    code: r["code"].as_u64().unwrap_or(u64::MAX),
                    messages: r["messages"].as_u64().unwrap_or(0),
                    version: text(r, "x-canary-version"),
                    served_by: text(r, "x-served-by"),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A bootstrap edit: every cluster speaks HTTP/2 without TLS (h2c) to its upstream, as
/// Istio's do to a port declared `grpc`.
pub fn http2_upstreams(bootstrap: String) -> String {
    bootstrap.replace(
        "    connect_timeout: 1s\n",
        "    connect_timeout: 1s\n    typed_extension_protocol_options:\n      \
         envoy.extensions.upstreams.http.v3.HttpProtocolOptions:\n        \
         \"@type\": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions\n        \
         explicit_http_config: {http2_protocol_options: {}}\n",
    )
}

/// How [`load`] calls.
pub struct Load<'a> {
    /// Seconds of load.
    pub seconds: f64,
    /// Clients, each making one call at a time (at most 30,000).
    pub threads: usize,
    /// Each client's pause between calls.
    pub pause_ms: u64,
    /// Every `override_every`-th call (0: none) is a tester's override to canary.
    pub override_every: u64,
    /// `(seconds from the start, server, settings)`: switches that server's failures then.
    pub fault: Option<(f64, &'a GrpcBackend, &'a str)>,
}

/// Unary calls through `port` as `load` says, each client cycling over 1,000 users. Returns
/// when the fault was sent and every call, in send order, its `status` the HTTP status Envoy
/// maps its gRPC code to (0 for a call that got no code).
pub fn load(port: u16, load: &Load<'_>) -> (std::time::Duration, Vec<crate::traffic::Event>) {
    let target = format!("127.0.0.1:{port}");
    let (seconds, threads) = (load.seconds.to_string(), load.threads.to_string());
    let (pause, every) = (load.pause_ms.to_string(), load.override_every.to_string());
    let mut args = vec!["load", "--target", &target, "--seconds", &seconds, "--threads", &threads];
    args.extend(["--pause-ms", &pause, "--override-every", &every]);
    let fault_args =
        load.fault.map(|(at, server, settings)| (at.to_string(), format!("127.0.0.1:{}", server.port), settings));
    if let Some((at, server, settings)) = &fault_args {
        args.extend(["--fault-at", at, "--fault-target", server, "--fault", settings]);
    }
    let out = run_client(&args);
    let secs = |v: &Value| std::time::Duration::from_secs_f64(v.as_f64().unwrap_or(0.0).max(0.0));
    let text = |v: &Value| v.as_str().map(str::to_string);
    let events = out["events"]
        .as_array()
        .map(|list| {
            list.iter()
                .map(|e| crate::traffic::Event {
                    sent: secs(&e[0]),
                    overridden: e[1].as_bool().unwrap_or(false),
                    status: e[2]
                        .as_u64()
                        .and_then(|c| canary_gate::config::ENVOY_HTTP_STATUS.get(c as usize).copied())
                        .unwrap_or(0),
                    version: text(&e[3]),
                    reason: text(&e[4]),
                    served_by: text(&e[5]),
                })
                .collect()
        })
        .unwrap_or_default();
    (secs(&out["fault_s"]), events)
}
