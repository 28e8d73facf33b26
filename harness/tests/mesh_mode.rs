//! Mesh mode through a real Envoy: weighted clusters choose, canary-gate learns and pins.

use canary_harness::{mesh_config, start_stack, Client, Layout};

fn weights(stable: u32, canary: u32) -> impl Fn(String) -> String {
    move |s: String| {
        s.replace("weight: 90\n", &format!("weight: {stable}\n"))
            .replace("weight: 10\n", &format!("weight: {canary}\n"))
    }
}

#[test]
fn the_mesh_chooses_and_canary_gate_pins_the_choice() {
    let (envoy, _stable, _canary) = start_stack(Layout::MeshMode, &mesh_config(), &weights(50, 50));
    let client = Client::new();
    let url = envoy.url("/");
    let mut pinned = std::collections::HashMap::new();
    for user in 0..40 {
        let first = client.get(&url, &[]);
        assert_eq!(first.status, 200);
        assert_eq!(first.reason.as_deref(), Some("mesh"));
        let version = first.served_by.clone().unwrap();
        // The version is learned from the Istio-style cluster name that served.
        assert_eq!(first.version.as_deref(), Some(version.as_str()));
        assert_eq!(first.upstream_header("x-canary-version"), None, "mesh requests carry no version header");
        let pin = first.cookie_pair("canary_bucket").unwrap();
        assert_eq!(pin, format!("canary_bucket={version}"));
        for _ in 0..25 {
            let reply = client.get(&url, &[("cookie", pin.as_bytes())]);
            assert_eq!(reply.served_by.as_deref(), Some(version.as_str()), "user {user} pinned to {version}");
            assert_eq!(reply.reason.as_deref(), Some("pin"));
            assert_eq!(reply.upstream_header("x-canary-version").as_deref(), Some(version.as_str()));
            assert!(reply.set_cookies.is_empty());
        }
        *pinned.entry(version).or_insert(0) += 1;
    }
    assert_eq!(pinned.len(), 2, "a 50/50 split pins users to both versions: {pinned:?}");
}

#[test]
fn client_sent_version_headers_are_stripped_and_bad_pins_replaced() {
    let (envoy, _stable, _canary) = start_stack(Layout::MeshMode, &mesh_config(), &weights(100, 0));
    let client = Client::new();
    let url = envoy.url("/");
    for cookie in ["", "canary_bucket=v9", "canary_bucket=", "canary_bucket=\"stable"] {
        let reply = client.get(&url, &[("x-canary-version", b"canary"), ("cookie", cookie.as_bytes())]);
        assert_eq!(reply.served_by.as_deref(), Some("stable"), "cookie {cookie:?}");
        assert_eq!(reply.reason.as_deref(), Some("mesh"));
        assert_eq!(reply.cookie_pair("canary_bucket").as_deref(), Some("canary_bucket=stable"));
    }
}

#[test]
fn override_reaches_either_version_in_mesh_mode() {
    let (envoy, _stable, _canary) = start_stack(Layout::MeshMode, &mesh_config(), &weights(100, 0));
    let client = Client::new();
    let reply = client.get(&envoy.url("/"), &[("x-canary", b"canary"), ("cookie", b"canary_bucket=stable")]);
    assert_eq!((reply.served_by.as_deref(), reply.reason.as_deref()), (Some("canary"), Some("override")));
    assert!(reply.set_cookies.is_empty(), "an override does not move the pin");
}
