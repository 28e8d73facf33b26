//! Bad configurations are refused by Envoy itself: `on_configure` fails with one log line
//! naming the field, and `envoy --mode validate` exits non-zero.

use canary_harness::{filter_config, mesh_config, start_stack, validate, Client, Layout};

#[test]
fn shipped_and_default_configurations_validate() {
    for (layout, json) in [
        (Layout::FilterMode, filter_config(10.0)),
        (Layout::MeshMode, mesh_config()),
        (Layout::FilterMode, r#"{"service":"checkout"}"#.to_string()),
    ] {
        let (ok, output) = validate(layout, &json);
        assert!(ok, "{json}\n{output}");
    }
}

#[test]
fn bad_configurations_are_refused_naming_the_field() {
    let cases = [
        (r#"{"split":{"canary_percent":10}}"#, "`(root)`: missing field `service`"),
        (r#"{"service":"Checkout_1"}"#, "`service`"),
        (r#"{"service":"checkout","role":"sidecar"}"#, "`role`"),
        (
            r#"{"service":"checkout","split":{"canary_percent":150}}"#,
            "`split.canary_percent`: must be between 0 and 100",
        ),
        (r#"{"service":"checkout","split":{"canary_percent":12.345}}"#, "`split.canary_percent`: at most 2 decimals"),
        (r#"{"service":"checkout","split":{"canary_percent":"ten"}}"#, "`split.canary_percent`: invalid type"),
        (r#"{"service":"checkout","split":{"mode":"istio"}}"#, "`split.mode`"),
        (r#"{"service":"checkout","split":{"hash_key":[{"header":"x-user-id","cookie":"s"}]}}"#, "`split.hash_key[0]`"),
        (r#"{"service":"checkout","split":{"hash_key":"x-user-id"}}"#, "`split.hash_key`"),
        (r#"{"service":"checkout","stable":"v1","canary":"v1"}"#, "`canary`: must differ"),
        (r#"{"service":"checkout","canary":"v2.0"}"#, "`canary`"),
        (r#"{"service":"checkout","version_header":"X-Version"}"#, "`version_header`"),
        (
            r#"{"service":"checkout","override":{"header":"x-canary","values":["a"]}}"#,
            "`override.values`: unknown field",
        ),
        (r#"{"service":"checkout","sticky":{"cookie":"canary bucket"}}"#, "`sticky.cookie`"),
        (r#"{"service":"checkout","sticky":{"max_age_s":99999999999}}"#, "`sticky.max_age_s`"),
        (r#"{"service":"checkout","weight":10}"#, "`weight`: unknown field"),
        (r#"{"service":"checkout""#, "`(root)`"),
        (r#"{"service":"checkout","service":"other"}"#, "`service`: duplicate field `service`"),
        (r#"{"service":"checkout","vitals":{"path":"/"}}"#, "`vitals.path`: must not be `/`"),
        (
            r#"{"service":"checkout","outcomes":[{"name":"hit","response_header":"x-cache","equals":["HIT"]}],
                "gate":{"min_outcome_ratio":{"hit":0.9},"max_outcome_ratio":{"hit":0.1}}}"#,
            "`gate.min_outcome_ratio.hit`: must not exceed `max_outcome_ratio.hit`",
        ),
        (
            r#"{"service":"checkout","sticky":{"cookie":"session"}}"#,
            "`sticky.cookie`: `session` is also the hash key cookie `split.hash_key[1].cookie`",
        ),
    ];
    for (json, expected) in cases {
        let (ok, output) = validate(Layout::FilterMode, json);
        assert!(!ok, "accepted {json}");
        let line =
            output.lines().find(|l| l.contains("invalid configuration")).unwrap_or_else(|| panic!("{json}: {output}"));
        assert!(line.contains(expected), "{json}: expected {expected:?} in {line}");
        assert!(line.contains("[error]"), "{line}");
    }
}

#[test]
fn a_bad_live_update_is_rejected_and_the_running_configuration_keeps_serving() {
    let (envoy, _stable, _canary) = start_stack(Layout::FilterMode, &filter_config(100.0), &|s| s);
    let client = Client::new();
    assert!(!envoy.reconfigure(r#"{"service":"checkout","split":{"canary_percent":-3}}"#));
    let reply = client.get(&envoy.url("/"), &[("x-user-id", b"u1")]);
    assert_eq!((reply.status, reply.version.as_deref()), (200, Some("canary")));
    assert!(envoy.log().contains("field `split.canary_percent`"));
}
