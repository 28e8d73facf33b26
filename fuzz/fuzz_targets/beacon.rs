//! Arbitrary bytes as a web-vitals beacon body and as a request path with a `beacon` query
//! parameter: never a panic, and what is taken matches a model of the documented rules built on
//! serde_json (which the filter's JSON parser follows, duplicate keys aside: those it refuses).
#![no_main]

use canary_gate::measure::beacon::{self, Event, Rejection, Report, Vital, MAX_REPORTS};
use libfuzzer_sys::fuzz_target;
use serde::de::{Deserialize, Deserializer, Error, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use std::collections::HashSet;

/// Any JSON value, refused if an object has a key twice (which the filter refuses too).
struct NoDuplicateKeys;

impl<'de> Deserialize<'de> for NoDuplicateKeys {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NoDuplicateKeys)
    }
}

impl<'de> Visitor<'de> for NoDuplicateKeys {
    type Value = NoDuplicateKeys;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("JSON")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self, E> {
        Ok(self)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self, E> {
        Ok(self)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self, E> {
        Ok(self)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self, E> {
        Ok(self)
    }
    fn visit_str<E>(self, _: &str) -> Result<Self, E> {
        Ok(self)
    }
    fn visit_unit<E>(self) -> Result<Self, E> {
        Ok(self)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self, A::Error> {
        while seq.next_element::<NoDuplicateKeys>()?.is_some() {}
        Ok(self)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self, A::Error> {
        let mut keys = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            // arbitrary_precision reports numbers as a map with this one key.
            if key != "$serde_json::private::Number" && !keys.insert(key) {
                return Err(A::Error::custom("duplicate key"));
            }
            map.next_value::<NoDuplicateKeys>()?;
        }
        Ok(self)
    }
}

/// What a report must read as, from serde_json's tree: `None` if the item is refused.
fn model(item: &Value) -> Result<Option<(String, Option<f64>)>, Rejection> {
    let Value::Object(members) = item else { return Err(Rejection::Malformed) };
    let Some(Value::String(name)) = members.get("name") else { return Err(Rejection::Malformed) };
    if ["page_view", "js_error", "resource_error"].contains(&name.as_str()) {
        return Ok(Some((name.clone(), None)));
    }
    if !["LCP", "INP", "CLS", "FCP", "TTFB"].contains(&name.as_str()) {
        return Err(Rejection::UnknownName);
    }
    let Some(Value::Number(n)) = members.get("value") else { return Err(Rejection::BadValue) };
    // arbitrary_precision: the number as written.
    let text = n.to_string();
    let (scale, limit) = if name == "CLS" { (1e6, 1e9) } else { (1e3, 3.6e9) };
    match text.parse::<f64>() {
        _ if text.starts_with('-') => Err(Rejection::BadValue),
        Ok(v) if v * scale > limit * (1.0 + 1e-9) => Err(Rejection::BadValue),
        // Within f64's reach of the limit: either answer is right.
        Ok(v) if v * scale > limit * (1.0 - 1e-9) => Ok(None),
        Ok(v) => Ok(Some((name.clone(), Some(v)))),
        Err(_) => Ok(None),
    }
}

fn check_reports(reports: &[Report], items: &[Value]) {
    assert_eq!(reports.len(), items.len());
    for (report, item) in reports.iter().zip(items) {
        let Some((name, value)) = model(item).expect("taken items are valid") else { continue };
        match *report {
            Report::Event(event) => {
                let expected = match event {
                    Event::PageView => "page_view",
                    Event::JsError => "js_error",
                    Event::ResourceError => "resource_error",
                };
                assert_eq!(name, expected);
            }
            Report::Vital(vital, scaled) => {
                assert_eq!(name, vital.name());
                let scale = if vital == Vital::Cls { 1e6 } else { 1e3 };
                let limit = if vital == Vital::Cls { 1e9 } else { 3.6e9 };
                assert!(scaled as f64 <= limit, "{scaled} over {limit}");
                // f64 reads the text within its 53 bits: compare away from rounding edges.
                if let Some(v) = value.filter(|v| (v * scale) < 1e15) {
                    let exact = v * scale;
                    if (exact - exact.floor() - 0.5).abs() > 1e-3 {
                        assert_eq!(scaled, exact.round() as u64, "{name} {v}");
                    }
                }
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut reports = Vec::new();
    let ours = beacon::read(data, &mut reports);
    match serde_json::from_slice::<Value>(data) {
        // What serde_json refuses, the filter refuses as malformed.
        Err(_) => assert_eq!(ours, Err(Rejection::Malformed)),
        Ok(value) => {
            let items: Vec<Value> = match &value {
                Value::Array(items) => items.clone(),
                other => vec![other.clone()],
            };
            let ambiguous = items.iter().any(|i| matches!(model(i), Ok(None)));
            let expected: Result<(), Rejection> = match &value {
                Value::Array(items) if items.is_empty() => Err(Rejection::Malformed),
                Value::Array(items) if items.len() > MAX_REPORTS => Err(Rejection::TooLarge),
                Value::Array(_) | Value::Object(_) => items.iter().try_for_each(|i| model(i).map(|_| ())),
                _ => Err(Rejection::Malformed),
            };
            let duplicate_keys = serde_json::from_slice::<NoDuplicateKeys>(data).is_err();
            match (ours, expected) {
                // A key twice: the filter refuses it, serde_json keeps the last.
                _ if duplicate_keys => assert_eq!(ours, Err(Rejection::Malformed)),
                (Ok(()), Ok(())) => check_reports(&reports, &items),
                (Err(Rejection::BadValue), Ok(())) | (Ok(()), Err(Rejection::BadValue)) if ambiguous => {}
                (ours, expected) => assert_eq!(ours, expected),
            }
            if ours.is_err() {
                assert!(reports.is_empty());
            }
        }
    }
    // The same bytes as a path: a `beacon` parameter decodes within the limit or is refused.
    let mut path = b"/__canary/vitals?".to_vec();
    path.extend_from_slice(data);
    if let Some(decoded) = beacon::from_query(&path, 4096) {
        match decoded {
            Ok(bytes) => assert!(bytes.len() <= 4096),
            Err(rejection) => assert!(matches!(rejection, Rejection::Malformed | Rejection::TooLarge)),
        }
    }
});
