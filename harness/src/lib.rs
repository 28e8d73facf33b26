//! Runs real components for canary-gate's end-to-end tests and demo: Envoy 1.40 with the
//! built filter, and `canary-backend` processes, all on free 127.0.0.1 ports. Every process
//! started here is stopped by PID when its handle drops.

use std::fs;
use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

pub mod analysis;
pub mod analysis_run;
pub mod chaos;
pub mod client;
pub mod fleet;
pub mod grpc;
pub mod hostile;
pub mod mesh;
pub mod mirror;
pub mod prometheus;
pub mod report;
pub mod shadow;
pub mod traffic;
pub use client::{Client, Reply};

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
}

fn artifact(env: &str, default: &str) -> PathBuf {
    let path = std::env::var_os(env).map(PathBuf::from).unwrap_or_else(|| root().join(default));
    assert!(path.exists(), "{} not found (set {env} or run `make test`, which builds it)", path.display());
    path
}

/// The Envoy binary (`ENVOY_BIN`, default `.venv/bin/envoy`).
pub fn envoy_bin() -> PathBuf {
    artifact("ENVOY_BIN", ".venv/bin/envoy")
}

/// The built filter (`CANARY_GATE_WASM`, default the release build).
pub fn wasm_file() -> PathBuf {
    artifact("CANARY_GATE_WASM", "target/wasm32-wasip1/release/canary_gate.wasm")
}

/// The built native dynamic module (`CANARY_GATE_NATIVE`, default `make native`'s build).
pub fn native_file() -> PathBuf {
    artifact("CANARY_GATE_NATIVE", NATIVE_PATH)
}

/// Which build of canary-gate Envoy runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Build {
    /// The proxy-wasm filter (`make build`).
    Wasm,
    /// The native dynamic module (`make native`).
    Native,
}

/// The build the suites run against: `CANARY_GATE_BUILD=native` picks the native module, anything
/// else (or nothing) the Wasm filter.
pub fn build() -> Build {
    match std::env::var("CANARY_GATE_BUILD").as_deref() {
        Ok("native") => Build::Native,
        _ => Build::Wasm,
    }
}

/// The namespace Envoy puts canary-gate's stats under (`wasmcustom`, `dynamicmodulescustom`);
/// both reach Prometheus as the same series (`envoy/filter-mode.yaml`).
pub fn stat_namespace() -> &'static str {
    match build() {
        Build::Wasm => "wasmcustom",
        Build::Native => "dynamicmodulescustom",
    }
}

/// The key the build under test writes filter state `key` under: Envoy's Wasm host prefixes
/// `wasm.`, the native module writes the key as it is.
pub fn filter_state_key(key: &str) -> String {
    match build() {
        Build::Wasm => format!("wasm.{key}"),
        Build::Native => key.to_owned(),
    }
}

/// A stat name written with the Wasm build's namespace (`wasmcustom.canary_...`), in the
/// namespace of the build under test.
pub fn stat_name(name: &str) -> String {
    match name.strip_prefix("wasmcustom.") {
        Some(rest) => format!("{}.{rest}", stat_namespace()),
        None => name.to_owned(),
    }
}

/// The test backend binary (`CANARY_BACKEND_BIN`, default the release build).
pub fn backend_bin() -> PathBuf {
    artifact("CANARY_BACKEND_BIN", "target/release/canary-backend")
}

/// A free TCP port on 127.0.0.1, outside the kernel's ephemeral range: there the source
/// port of any test's outgoing connection could take it before the server binds it.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static DRAWS: AtomicU64 = AtomicU64::new(0);
    let (low, high) = listening_range();
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let mut state = (nanos as u64) ^ (u64::from(std::process::id()) << 32);
    for _ in 0..200 {
        // splitmix64: a different sequence per process and per call.
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15 ^ DRAWS.fetch_add(1, Ordering::Relaxed));
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        let port = low + (z % u64::from(high - low + 1)) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or(0)
}

/// Ports for servers: below the ephemeral range when it leaves room, else above it.
fn listening_range() -> (u16, u16) {
    let ephemeral = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap_or_default();
    let mut bounds = ephemeral.split_whitespace().filter_map(|n| n.parse::<u16>().ok());
    match (bounds.next(), bounds.next()) {
        (Some(low), _) if low > 12_000 => (10_000, low - 1),
        (_, Some(high)) if high < 63_000 => (high + 1, 65_000),
        _ => (20_000, 30_000),
    }
}

/// The median (upper, for an even count) of `values`, sorting them; NaN sorts last, so a
/// NaN for "never" counts as the slowest. NaN when empty.
pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Polls `ok` until it holds and returns how long that took; fails the test after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < timeout, "{what}: not within {timeout:?}");
        sleep(Duration::from_millis(50));
    }
    start.elapsed()
}

pub(crate) fn wait_for_port(port: u16, child: &mut Child, what: &str) {
    if let Err(status) = try_wait_for_port(port, child, what) {
        panic!("{what} exited before listening on {port}: {status}");
    }
}

/// Waits until `port` accepts; `Err` with the exit status when `child` exits first.
fn try_wait_for_port(port: u16, child: &mut Child, what: &str) -> Result<(), std::process::ExitStatus> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(status);
        }
        assert!(Instant::now() < deadline, "{what} did not listen on {port} within 30 s");
        sleep(Duration::from_millis(20));
    }
    Ok(())
}

fn stop(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// A scratch directory removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    /// A new empty directory under the system temp dir.
    pub fn new(tag: &str) -> TempDir {
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let dir = std::env::temp_dir().join(format!("canary-gate-{tag}-{}-{nanos}", std::process::id()));
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        TempDir(dir)
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("CANARY_GATE_KEEP_TMP").is_none() {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
}

/// A running `canary-backend`.
pub struct Backend {
    child: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// The version it answers as.
    pub version: String,
}

impl Backend {
    /// Starts a backend answering as `version`; `args` are extra flags
    /// (`--error-ratio`, `--latency-ms`, `--latency-spread-ms`).
    pub fn start(version: &str, args: &[&str]) -> Backend {
        let port = free_port();
        let mut child = Command::new(backend_bin())
            .args(["--listen", &format!("127.0.0.1:{port}"), "--version", version])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start canary-backend: {e}"));
        wait_for_port(port, &mut child, "canary-backend");
        Backend { child, port, version: version.to_string() }
    }

    /// Switches behaviour at run time, e.g. `error_ratio=0.3&latency_ms=400`.
    pub fn configure(&self, query: &str) {
        let reply = Client::new().post(&format!("http://127.0.0.1:{}/_backend/config?{query}", self.port));
        assert_eq!(reply.status, 200, "backend rejected {query}: {}", reply.body);
    }

    /// Requests this backend has answered (its own count).
    pub fn requests(&self) -> u64 {
        let reply = Client::new().get(&format!("http://127.0.0.1:{}/_backend/state", self.port), &[]);
        reply.json()["requests"].as_u64().unwrap_or(0)
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

/// One of the Envoy configurations shipped in `envoy/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `envoy/filter-mode.yaml` with `envoy/canary-gate.filter.yaml`.
    FilterMode,
    /// `envoy/mesh-mode.yaml` with `envoy/canary-gate-mesh.filter.yaml`.
    MeshMode,
}

impl Layout {
    fn files(self) -> (&'static str, &'static str) {
        match self {
            Layout::FilterMode => ("filter-mode.yaml", "canary-gate.filter.yaml"),
            Layout::MeshMode => ("mesh-mode.yaml", "canary-gate-mesh.filter.yaml"),
        }
    }
}

/// Ports and paths the shipped configurations use, rewritten for a test instance.
const ADMIN_PORT: &str = "port_value: 9901";
const LISTEN_PORT: &str = "port_value: 10000";
const STABLE_PORT: &str = "port_value: 18001";
const CANARY_PORT: &str = "port_value: 18002";
const WASM_PATH: &str = "target/wasm32-wasip1/release/canary_gate.wasm";
const NATIVE_PATH: &str = "target/native/libcanary_gate.so";

/// The shipped ECDS file of `ecds` (the Wasm filter's) for the build under test.
fn ecds_source(ecds: &str) -> String {
    match build() {
        Build::Wasm => ecds.to_owned(),
        Build::Native => ecds.replace(".filter.yaml", ".native.yaml"),
    }
}

/// A running Envoy with canary-gate loaded through file-based ECDS.
pub struct Envoy {
    child: Child,
    dir: TempDir,
    ecds_file: PathBuf,
    ecds_template: String,
    /// Listener port on 127.0.0.1.
    pub port: u16,
    /// Admin port on 127.0.0.1.
    pub admin_port: u16,
}

/// Renders the shipped files of `layout` into `dir` for the given ports and filter JSON;
/// returns (bootstrap path, ECDS path, ECDS template).
fn render(
    layout: Layout,
    dir: &Path,
    ports: [u16; 4],
    filter_json: &str,
    edit: &dyn Fn(String) -> String,
) -> (PathBuf, PathBuf, String) {
    let (main, ecds) = layout.files();
    let read = |name: &str| {
        fs::read_to_string(root().join("envoy").join(name)).unwrap_or_else(|e| panic!("read envoy/{name}: {e}"))
    };
    let ecds_path = dir.join(ecds);
    let [admin, listen, stable, canary] = ports;
    let bootstrap = edit(read(main))
        .replace(ADMIN_PORT, &format!("port_value: {admin}"))
        .replace(LISTEN_PORT, &format!("port_value: {listen}"))
        .replace(STABLE_PORT, &format!("port_value: {stable}"))
        .replace(CANARY_PORT, &format!("port_value: {canary}"))
        .replace(&format!("path: envoy/{ecds}"), &format!("path: {}", ecds_path.display()))
        .replace("watched_directory: {path: envoy}", &format!("watched_directory: {{path: {}}}", dir.display()))
        .replace("path: /dev/stdout", &format!("path: {}", dir.join("access.log").display()));
    let template = match build() {
        Build::Wasm => read(ecds).replace(WASM_PATH, &wasm_file().display().to_string()),
        Build::Native => read(&ecds_source(ecds)).replace(NATIVE_PATH, &native_file().display().to_string()),
    };
    let bootstrap_path = dir.join(main);
    fs::write(&bootstrap_path, bootstrap).unwrap_or_else(|e| panic!("write bootstrap: {e}"));
    fs::write(&ecds_path, with_filter_config(&template, filter_json)).unwrap_or_else(|e| panic!("write ecds: {e}"));
    (bootstrap_path, ecds_path, template)
}

/// The ECDS file text with the filter's JSON configuration replaced by `json`.
fn with_filter_config(template: &str, json: &str) -> String {
    let marker = "value: |";
    let at = template.find(marker).unwrap_or_else(|| panic!("ECDS template lacks `{marker}`"));
    let indent = " ".repeat(template[..at].rsplit('\n').next().map_or(0, str::len) + 2);
    let body: String = json.lines().map(|l| format!("{indent}{l}\n")).collect();
    format!("{}{marker}\n{body}", &template[..at])
}

/// Options for [`Envoy::start`].
pub struct EnvoyOptions<'a> {
    /// Which shipped configuration.
    pub layout: Layout,
    /// The filter's JSON configuration.
    pub filter_json: &'a str,
    /// Worker threads (`--concurrency`).
    pub workers: u32,
    /// A text edit applied to the bootstrap before ports are rewritten (e.g. weights).
    pub edit: &'a dyn Fn(String) -> String,
}

impl Envoy {
    /// Starts Envoy with `options`, routing `stable`/`canary` to the given backends.
    pub fn start(options: EnvoyOptions<'_>, stable: &Backend, canary: &Backend) -> Envoy {
        Self::start_with(options, [stable.port, canary.port], None)
    }

    /// Like [`Envoy::start`], routing `stable`/`canary` to whatever listens on these ports.
    pub fn start_on_ports(options: EnvoyOptions<'_>, stable_port: u16, canary_port: u16) -> Envoy {
        Self::start_with(options, [stable_port, canary_port], None)
    }

    /// Like [`Envoy::start`], with one inline filter per configuration in `filters` instead
    /// of the ECDS-delivered one (no live reconfiguration then).
    pub fn start_inline(options: EnvoyOptions<'_>, stable: &Backend, canary: &Backend, filters: &[&str]) -> Envoy {
        Self::start_with(options, [stable.port, canary.port], Some(filters))
    }

    fn start_with(options: EnvoyOptions<'_>, upstreams: [u16; 2], inline: Option<&[&str]>) -> Envoy {
        // A port taken between choosing and binding it is chosen again.
        for _ in 0..3 {
            match Self::try_start(&options, upstreams, inline) {
                Ok(envoy) => return envoy,
                Err(log) if log.contains("Address already in use") => continue,
                Err(log) => panic!("envoy exited before listening:\n{log}"),
            }
        }
        panic!("envoy could not bind free ports in 3 attempts")
    }

    fn try_start(options: &EnvoyOptions<'_>, upstreams: [u16; 2], inline: Option<&[&str]>) -> Result<Envoy, String> {
        let dir = TempDir::new("envoy");
        let (admin_port, port) = (free_port(), free_port());
        let (bootstrap, ecds_file, ecds_template) = render(
            options.layout,
            dir.path(),
            [admin_port, port, upstreams[0], upstreams[1]],
            options.filter_json,
            options.edit,
        );
        if let Some(filters) = inline {
            let text = inline_filters(&read_to_string(&bootstrap), filters);
            fs::write(&bootstrap, text).unwrap_or_else(|e| panic!("write bootstrap: {e}"));
        }
        let log = fs::File::create(dir.path().join("envoy.log")).unwrap_or_else(|e| panic!("create envoy.log: {e}"));
        let mut command = Command::new(envoy_bin());
        if build() == Build::Native {
            // Envoy gives a dynamic module no node metadata: the native module reads the pod's
            // labels from the environment, as an operator would set them.
            for (label, value) in node_labels(&read_to_string(&bootstrap)) {
                command.env(format!("CANARY_GATE_LABEL_{label}"), value);
            }
        }
        let mut child = command
            .arg("-c")
            .arg(&bootstrap)
            .args(["--concurrency", &options.workers.to_string(), "--disable-hot-restart", "-l", "info"])
            .current_dir(root())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start envoy: {e}"));
        if try_wait_for_port(port, &mut child, "envoy").is_err() {
            return Err(read_to_string(&dir.path().join("envoy.log")));
        }
        let envoy = Envoy { child, dir, ecds_file, ecds_template, port, admin_port };
        envoy.wait_ready();
        Ok(envoy)
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let reply = Client::new().get(&self.admin("/ready"), &[]);
            if reply.status == 200 {
                return;
            }
            assert!(Instant::now() < deadline, "envoy not ready: {}\n{}", reply.body, self.log());
            sleep(Duration::from_millis(50));
        }
    }

    /// URL of `path` on the listener.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// URL of `path` on the admin interface.
    pub fn admin(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.admin_port)
    }

    /// Envoy's own log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("envoy.log")).unwrap_or_default()
    }

    /// The access log so far.
    pub fn access_log(&self) -> String {
        fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default()
    }

    /// A counter or gauge from `/stats`, 0 if absent.
    pub fn stat(&self, name: &str) -> u64 {
        admin_stat(self.admin_port, name)
    }

    /// Replaces the filter configuration through ECDS and waits until Envoy applied it
    /// (or rejected it: then returns false).
    pub fn reconfigure(&self, filter_json: &str) -> bool {
        let stat = |s: &str| self.stat(&format!("extension_config_discovery.http_filter.canary-gate.{s}"));
        let (reloads, rejects) = (stat("update_success"), stat("update_rejected"));
        let staged = self.dir.path().join("staged.yaml");
        fs::write(&staged, with_filter_config(&self.ecds_template, filter_json))
            .unwrap_or_else(|e| panic!("write staged: {e}"));
        // Atomic replace: Envoy sees a complete file or none.
        fs::rename(&staged, &self.ecds_file).unwrap_or_else(|e| panic!("move ecds: {e}"));
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if stat("update_success") > reloads {
                return true;
            }
            if stat("update_rejected") > rejects {
                return false;
            }
            assert!(Instant::now() < deadline, "ECDS update not seen within 20 s\n{}", self.log());
            sleep(Duration::from_millis(25));
        }
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The Envoy process's id (for reading its CPU time from `/proc`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

/// `envoy --mode validate` on a shipped layout with `filter_json`: (accepted, output).
/// Validation does not fetch ECDS resources, so the filter is inlined into the bootstrap.
pub fn validate(layout: Layout, filter_json: &str) -> (bool, String) {
    let dir = TempDir::new("validate");
    let (bootstrap, _, _) = render(layout, dir.path(), [9901, 10000, 18001, 18002], filter_json, &|s| s);
    let inlined = inline_filters(&read_to_string(&bootstrap), &[filter_json]);
    fs::write(&bootstrap, inlined).unwrap_or_else(|e| panic!("write bootstrap: {e}"));
    let output = Command::new(envoy_bin())
        .arg("--mode")
        .arg("validate")
        .arg("-c")
        .arg(&bootstrap)
        .args(["--disable-hot-restart", "-l", "info"])
        .current_dir(root())
        .output()
        .unwrap_or_else(|e| panic!("run envoy --mode validate: {e}"));
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

/// The bootstrap with its `config_discovery` filter replaced by one inline Wasm filter per
/// configuration in `filters` (all in the same VM, each with its own root context).
fn inline_filters(bootstrap: &str, filters: &[&str]) -> String {
    let discovery = bootstrap.find("config_discovery:").unwrap_or_else(|| panic!("bootstrap lacks config_discovery"));
    let item = bootstrap[..discovery].rfind("- name: canary-gate").unwrap_or_else(|| panic!("no canary-gate filter"));
    let indent = bootstrap[..item].rsplit('\n').next().unwrap_or_default();
    // The block ends where the next filter of the list begins.
    let end = bootstrap[discovery..]
        .find(&format!("\n{indent}- name:"))
        .map(|i| discovery + i)
        .unwrap_or_else(|| panic!("no filter after canary-gate"));
    let items: Vec<String> = filters
        .iter()
        .enumerate()
        .map(|(i, json)| {
            let typed_config = build_filter_config(&format!("canary-gate-{i}"), json);
            format!("- name: canary-gate-{i}\n{indent}  typed_config: {typed_config}")
        })
        .collect();
    format!("{}{}{}", &bootstrap[..item], items.join(&format!("\n{indent}")), &bootstrap[end..])
}

/// The `typed_config` of canary-gate's build under test as `name` with the JSON configuration
/// `filter_json`: [`wasm_filter_config`] or [`native_filter_config`].
pub fn build_filter_config(name: &str, filter_json: &str) -> serde_json::Value {
    match build() {
        Build::Wasm => wasm_filter_config(name, filter_json),
        Build::Native => native_filter_config(filter_json),
    }
}

/// The native dynamic module's `typed_config` with the JSON configuration `filter_json`.
pub fn native_filter_config(filter_json: &str) -> serde_json::Value {
    serde_json::json!({
        "@type": "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter",
        "dynamic_module_config": {"module": {"local": {"filename": native_file().display().to_string()}}, "do_not_close": true},
        "filter_name": "canary-gate",
        "filter_config": {"@type": "type.googleapis.com/google.protobuf.StringValue", "value": filter_json}
    })
}

/// The Wasm filter's `typed_config` running the built canary-gate as `name` (root `canary-gate`,
/// VM `canary-gate`, V8) with the JSON configuration `filter_json`.
pub fn wasm_filter_config(name: &str, filter_json: &str) -> serde_json::Value {
    serde_json::json!({
        "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
        "config": {
            "name": name,
            "root_id": "canary-gate",
            "vm_config": {
                "vm_id": "canary-gate",
                "runtime": "envoy.wasm.runtime.v8",
                "code": {"local": {"filename": wasm_file().display().to_string()}}
            },
            "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue", "value": filter_json}
        }
    })
}

/// The counter or gauge `name` from the `/stats` of the Envoy admin on `admin_port`, 0 if absent.
pub fn admin_stat(admin_port: u16, name: &str) -> u64 {
    let name = &stat_name(name);
    let url = format!("http://127.0.0.1:{admin_port}/stats?filter=^{}$", name.replace('|', "\\|"));
    Client::new()
        .get(&url, &[])
        .body
        .lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(": ")).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0)
}

/// Reads a whole file as a string for assertions, empty if absent.
pub fn read_to_string(path: &Path) -> String {
    let mut s = String::new();
    if let Ok(mut f) = fs::File::open(path) {
        let _ = f.read_to_string(&mut s);
    }
    s
}

/// A filter-mode configuration for service `checkout` at `percent`.
pub fn filter_config(percent: f64) -> String {
    format!(
        r#"{{
  "service": "checkout",
  "split": {{"mode": "filter", "canary_percent": {percent},
            "hash_key": [{{"header": "x-user-id"}}, {{"cookie": "session"}}]}},
  "override": {{"header": "x-canary"}},
  "sticky": {{"cookie": "canary_bucket", "max_age_s": 86400}}
}}"#
    )
}

/// A mesh-mode configuration for service `checkout`.
pub fn mesh_config() -> String {
    r#"{"service": "checkout", "split": {"mode": "mesh"}}"#.to_string()
}

/// An edit of an `envoy/*.yaml` bootstrap that gives its node the pod labels `labels` (YAML
/// flow mapping entries, e.g. `app: checkout, role: canary`), where Istio puts them.
pub fn with_node_labels(labels: &str) -> impl Fn(String) -> String + '_ {
    move |s: String| {
        s.replace(
            "node: {id: canary-gate, cluster: canary-gate}",
            &format!("node: {{id: canary-gate, cluster: canary-gate, metadata: {{LABELS: {{{labels}}}}}}}"),
        )
    }
}

/// The node's labels in a bootstrap [`with_node_labels`] edited: `(label, value)` pairs.
fn node_labels(bootstrap: &str) -> Vec<(String, String)> {
    let Some(start) = bootstrap.find("LABELS: {").map(|i| i + "LABELS: {".len()) else { return Vec::new() };
    let end = bootstrap[start..].find('}').map_or(start, |i| start + i);
    bootstrap[start..end]
        .split(',')
        .filter_map(|pair| pair.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// Stable and canary backends plus Envoy in `layout` with `filter_json` and 2 workers.
pub fn start_stack(layout: Layout, filter_json: &str, edit: &dyn Fn(String) -> String) -> (Envoy, Backend, Backend) {
    let stable = Backend::start("stable", &[]);
    let canary = Backend::start("canary", &[]);
    let envoy = Envoy::start(EnvoyOptions { layout, filter_json, workers: 2, edit }, &stable, &canary);
    (envoy, stable, canary)
}

/// Envoy with 2 workers in `layout`, in front of the given backends.
pub fn start_envoy(layout: Layout, filter_json: &str, stable: &Backend, canary: &Backend) -> Envoy {
    Envoy::start(EnvoyOptions { layout, filter_json, workers: 2, edit: &|s| s }, stable, canary)
}

/// What canary-gate's own stats say about one version, read from Envoy's admin.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VersionStats {
    /// `canary_requests_total`.
    pub requests_total: u64,
    /// `canary_responses_total{code_class="5xx"}`.
    pub errors_total: u64,
    /// `canary_window_requests`.
    pub window_requests: u64,
    /// `canary_window_error_ratio_ppm`.
    pub window_error_ppm: u64,
    /// `canary_window_latency_p50_microseconds`.
    pub p50_us: u64,
    /// `canary_window_latency_p95_microseconds`.
    pub p95_us: u64,
    /// `canary_window_latency_p99_microseconds`.
    pub p99_us: u64,
}

impl Envoy {
    /// Reads the router's stats of `version` of `service` (route class `other`: no `classes`
    /// configured) in one admin call.
    pub fn version_stats(&self, service: &str, version: &str) -> VersionStats {
        let namespace = stat_namespace();
        let body = Client::new().get(&self.admin(&format!("/stats?filter=^{namespace}\\.canary_")), &[]).body;
        let get = |metric: &str, suffix: &str| {
            let name = format!(
                "{namespace}.{metric}.service.{service}.version.{version}.reporter.router.class.other{suffix}: "
            );
            body.lines().find_map(|l| l.strip_prefix(&name).and_then(|v| v.trim().parse().ok())).unwrap_or(0)
        };
        VersionStats {
            requests_total: get("canary_requests_total", ""),
            errors_total: get("canary_responses_total", ".code_class.5xx"),
            window_requests: get("canary_window_requests", ""),
            window_error_ppm: get("canary_window_error_ratio_ppm", ""),
            p50_us: get("canary_window_latency_p50_microseconds", ""),
            p95_us: get("canary_window_latency_p95_microseconds", ""),
            p99_us: get("canary_window_latency_p99_microseconds", ""),
        }
    }
}

/// A filter-mode configuration at `percent` with the `gate` object given as JSON.
pub fn gated_config(percent: f64, gate: &str) -> String {
    format!(r#"{{"service": "checkout", "split": {{"mode": "filter", "canary_percent": {percent}}}, "gate": {gate}}}"#)
}

impl Envoy {
    /// `canary_gate_tripped`, `canary_gate_trips_total`, `canary_gate_state` of `service`.
    pub fn gate_stats(&self, service: &str) -> (u64, u64, u64) {
        let stat = |m: &str| self.stat(&format!("wasmcustom.{m}.service.{service}"));
        (stat("canary_gate_tripped"), stat("canary_gate_trips_total"), stat("canary_gate_state"))
    }
}

/// One histogram of Envoy's `/stats/prometheus`: cumulative bucket counts by upper bound,
/// the sum and the count.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PromHistogram {
    /// `(le, cumulative count)` in the order Envoy lists them (`+Inf` as infinity).
    pub buckets: Vec<(f64, u64)>,
    /// `_sum` (Envoy's approximation: each sample counts as the midpoint of its bin).
    pub sum: f64,
    /// `_count`.
    pub count: u64,
}

/// The labels and value of a Prometheus text line `name{k="v",...} value`, if it is one.
fn prom_sample<'a>(line: &'a str, name: &str) -> Option<(Vec<(&'a str, &'a str)>, &'a str)> {
    let rest = line.strip_prefix(name)?.strip_prefix('{')?;
    let (labels, value) = rest.split_once("} ")?;
    let labels =
        labels.split(',').filter_map(|kv| kv.split_once("=\"")).map(|(k, v)| (k, v.trim_end_matches('"'))).collect();
    Some((labels, value.trim()))
}

impl Envoy {
    /// The histogram `name` (as Envoy's Prometheus output names it, e.g.
    /// `canary_web_vitals_lcp_milliseconds`) whose labels include `labels`; `None` if Envoy
    /// lists no such series (a histogram appears once it has a sample and stats were flushed).
    pub fn prometheus_histogram(&self, name: &str, labels: &[(&str, &str)]) -> Option<PromHistogram> {
        let body = Client::new().get(&self.admin("/stats/prometheus"), &[]).body;
        let wanted = |found: &[(&str, &str)]| labels.iter().all(|l| found.contains(l));
        let mut histogram = PromHistogram::default();
        let mut seen = false;
        for line in body.lines() {
            if let Some((found, value)) = prom_sample(line, &format!("{name}_bucket")).filter(|(f, _)| wanted(f)) {
                let le = found.iter().find(|(k, _)| *k == "le").map_or("", |(_, v)| *v);
                let le = if le == "+Inf" { f64::INFINITY } else { le.parse().unwrap_or(f64::NAN) };
                histogram.buckets.push((le, value.parse().unwrap_or(0)));
                seen = true;
            } else if let Some((_, value)) = prom_sample(line, &format!("{name}_sum")).filter(|(f, _)| wanted(f)) {
                histogram.sum = value.parse().unwrap_or(f64::NAN);
            } else if let Some((_, value)) = prom_sample(line, &format!("{name}_count")).filter(|(f, _)| wanted(f)) {
                histogram.count = value.parse().unwrap_or(0);
                seen = true;
            }
        }
        seen.then_some(histogram)
    }
}

/// The bin `[low, high)` of Envoy's histograms (circllhist: two significant decimal digits)
/// that holds the non-negative integer `value`; 0 has the bin `[0, 0]`. A Prometheus bucket
/// `le` of Envoy 1.40 counts exactly the samples whose bin's `low <= le` (measured: 300 to 309
/// are counted in `le="300"`, 310 is not), and `_sum` adds each sample's bin midpoint.
pub fn envoy_histogram_bin(value: u64) -> (f64, f64) {
    if value == 0 {
        return (0.0, 0.0);
    }
    if value < 10 {
        // value × 10⁻¹ with two digits: the bin is a tenth wide.
        return (value as f64, value as f64 + 0.1);
    }
    let mut scale = 1u64;
    while value / scale >= 100 {
        scale *= 10;
    }
    let low = value / scale * scale;
    (low as f64, (low + scale) as f64)
}

/// Debian's Chromium for the browser tests (`CHROMIUM_BIN`, default `/usr/bin/chromium`);
/// fails the test, naming `make deps`, if it is missing.
pub fn chromium_bin() -> PathBuf {
    let path = chromium_path();
    assert!(
        path.exists(),
        "{} not found: run `make deps` (installs Debian's chromium) or set CHROMIUM_BIN",
        path.display()
    );
    path
}

/// Where Chromium is expected: `CHROMIUM_BIN`, default `/usr/bin/chromium` (it may be missing).
pub fn chromium_path() -> PathBuf {
    std::env::var_os("CHROMIUM_BIN").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

/// Waits for `child` to exit: its status, or `None` once `timeout` passed (then it is stopped
/// by PID).
pub fn wait_or_stop(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let start = Instant::now();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if start.elapsed() > timeout {
            stop(child);
            return None;
        }
        sleep(Duration::from_millis(50));
    }
}

/// `tests/browser` with its npm packages installed; fails the test, naming `make deps`, if they
/// are not.
pub fn browser_test_dir() -> PathBuf {
    let dir = root().join("tests/browser");
    for package in ["puppeteer-core", "web-vitals"] {
        let path = dir.join("node_modules").join(package).join("package.json");
        assert!(path.exists(), "{} not found: run `make deps` (npm ci in tests/browser)", path.display());
    }
    dir
}

/// Runs `node script args...` in `dir` with the extra environment `env`: its stdout, or why it
/// failed (exit status, stdout and stderr) if it exits non-zero or runs longer than `timeout`
/// (then it is killed by PID). Fails the test if node is missing. Its stderr (progress) is
/// printed through the test's output.
pub fn run_node(
    dir: &Path,
    script: &str,
    args: &[String],
    env: &[(&str, &Path)],
    timeout: Duration,
) -> Result<String, String> {
    let mut child = Command::new("node")
        .arg(script)
        .args(args)
        .current_dir(dir)
        .envs(env.iter().map(|(k, v)| (*k, *v)))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start node {script}: {e} (run `make deps`, which installs nodejs)"));
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_string(&mut text);
            }
            text
        })
    };
    let stdout = drain(child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let stderr = drain(child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let status = wait_or_stop(&mut child, timeout);
    let (out, err) = (stdout.join().unwrap_or_default(), stderr.join().unwrap_or_default());
    eprint!("{err}");
    match status {
        Some(status) if status.success() => Ok(out),
        Some(status) => Err(format!("node {script} failed ({status})\nstderr:\n{err}\nstdout:\n{out}")),
        None => Err(format!("node {script} did not finish within {timeout:?}: killed\nstderr:\n{err}\nstdout:\n{out}")),
    }
}

/// `text` as `encodeURIComponent` writes it.
pub fn percent_encoded(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'!' | b'~' | b'*' | b'\'' | b'(' | b')' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
