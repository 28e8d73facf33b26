//! A real Prometheus server (Debian's `prometheus`) on a free loopback port, scraping Envoy's
//! `/stats/prometheus` every second. Stopped by PID when dropped.

use crate::{free_port, wait_for_port, Client, TempDir};
use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

/// The Prometheus binary (`PROMETHEUS_BIN`, default from PATH).
pub fn prometheus_bin() -> PathBuf {
    std::env::var_os("PROMETHEUS_BIN").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("prometheus"))
}

/// One sample of a query result: its labels and value (NaN allowed).
#[derive(Debug, Clone)]
pub struct Sample {
    /// Label pairs.
    pub labels: serde_json::Map<String, serde_json::Value>,
    /// The value.
    pub value: f64,
}

impl Sample {
    /// A label's value, empty if absent.
    pub fn label(&self, name: &str) -> &str {
        self.labels.get(name).and_then(|v| v.as_str()).unwrap_or("")
    }
}

/// A running Prometheus.
pub struct Prometheus {
    child: Child,
    _dir: TempDir,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

impl Prometheus {
    /// Starts Prometheus with the shipped `envoy/prometheus.yml` (the configuration
    /// docker-compose runs) and its rules, scraping the Envoy admin on `admin_port`.
    pub fn start_shipped(admin_port: u16) -> Prometheus {
        let dir = TempDir::new("prometheus");
        let shipped = fs::read_to_string(crate::root().join("envoy/prometheus.yml"))
            .unwrap_or_else(|e| panic!("read envoy/prometheus.yml: {e}"));
        let rules = crate::root().join("istio/prometheus/canary-gate-rules.yaml");
        let config = shipped
            .replace("127.0.0.1:9901", &format!("127.0.0.1:{admin_port}"))
            .replace("../istio/prometheus/canary-gate-rules.yaml", &rules.display().to_string());
        Self::launch(dir, &config)
    }

    /// Starts Prometheus scraping each `admin_ports` Envoy admin, with the rule files given
    /// (copied next to its configuration).
    pub fn start(admin_ports: &[u16], rule_files: &[PathBuf]) -> Prometheus {
        let dir = TempDir::new("prometheus");
        let targets: Vec<String> = admin_ports.iter().map(|p| format!("'127.0.0.1:{p}'")).collect();
        let mut rules = String::new();
        for (i, file) in rule_files.iter().enumerate() {
            let target = dir.path().join(format!("rules-{i}.yaml"));
            fs::copy(file, &target).unwrap_or_else(|e| panic!("copy {}: {e}", file.display()));
            rules.push_str(&format!("  - {}\n", target.display()));
        }
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n{rules}scrape_configs:\n- job_name: envoy\n  metrics_path: /stats/prometheus\n  static_configs:\n  - targets: [{}]\n",
            targets.join(", ")
        );
        Self::launch(dir, &config)
    }

    fn launch(dir: TempDir, config: &str) -> Prometheus {
        let port = free_port();
        let config_path = dir.path().join("prometheus.yml");
        fs::write(&config_path, config).unwrap_or_else(|e| panic!("write prometheus.yml: {e}"));
        let log = fs::File::create(dir.path().join("prometheus.log")).unwrap_or_else(|e| panic!("log: {e}"));
        let mut child = Command::new(prometheus_bin())
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start prometheus: {e}"));
        wait_for_port(port, &mut child, "prometheus");
        let prometheus = Prometheus { child, _dir: dir, port };
        prometheus.wait_ready();
        prometheus
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Client::new().get(&format!("http://127.0.0.1:{}/-/ready", self.port), &[]).status != 200 {
            assert!(Instant::now() < deadline, "prometheus not ready");
            sleep(Duration::from_millis(100));
        }
    }

    /// Runs an instant query; panics on a query error.
    pub fn query(&self, promql: &str) -> Vec<Sample> {
        let url = format!("http://127.0.0.1:{}/api/v1/query?query={}", self.port, encode(promql));
        let reply = Client::new().get(&url, &[]);
        let json = reply.json();
        assert_eq!(json["status"], "success", "query {promql}: {}", reply.body);
        json["data"]["result"]
            .as_array()
            .map(|results| {
                results
                    .iter()
                    .map(|r| Sample {
                        labels: r["metric"].as_object().cloned().unwrap_or_default(),
                        value: r["value"][1].as_str().and_then(|v| v.parse().ok()).unwrap_or(f64::NAN),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Waits until `promql` returns a result that satisfies `ok`; returns it.
    pub fn wait_for(&self, promql: &str, timeout: Duration, ok: impl Fn(&[Sample]) -> bool) -> Vec<Sample> {
        let deadline = Instant::now() + timeout;
        loop {
            let result = self.query(promql);
            if ok(&result) {
                return result;
            }
            assert!(Instant::now() < deadline, "{promql}: condition not met within {timeout:?}; last {result:?}");
            sleep(Duration::from_millis(250));
        }
    }

    /// Whether Prometheus has scraped a target successfully.
    pub fn target_up(&self) -> bool {
        self.query("up").iter().any(|s| s.value == 1.0)
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Percent-encodes a query string value.
pub fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
