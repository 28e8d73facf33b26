//! JSON text to a tree, for the plugin configuration only.
//!
//! Hand-written instead of `serde_json`: with serde_json (its deserializer, error paths and the
//! float formatting they pull in) the filter was 55 KB larger (209,655 → 153,565 bytes). Numbers
//! stay text, so thresholds and weights are read exactly ([`super::decimal`]). A key given twice
//! in one object is refused, naming its path: serde_json would silently keep the last one.
//! Otherwise it accepts exactly what RFC 8259 (and serde_json) accepts, up to 128 levels deep;
//! the fuzz target `config` checks that against serde_json.

use super::{refuse, ConfigError};

/// A parsed JSON value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A number, as written.
    Number(String),
    /// A string, unescaped.
    String(String),
    /// An array.
    Array(Vec<Value>),
    /// An object's members in order; no key twice.
    Object(Vec<(String, Value)>),
}

/// How deep arrays and objects may nest.
const MAX_DEPTH: usize = 128;

/// Parses one JSON value, with nothing but white space around it.
pub fn parse(bytes: &[u8]) -> Result<Value, ConfigError> {
    let mut parser = Parser { bytes, at: 0, path: Vec::new() };
    let value = parser.value(0)?;
    parser.skip_white_space();
    if parser.at < bytes.len() {
        return Err(parser.error("trailing characters"));
    }
    Ok(value)
}

/// One step of the path to the value being parsed.
enum Step {
    Key(String),
    Index(usize),
}

struct Parser<'a> {
    bytes: &'a [u8],
    at: usize,
    path: Vec<Step>,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let b = self.peek();
        self.at += usize::from(b.is_some());
        b
    }

    fn skip_white_space(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    /// A syntax error at the current position.
    fn error(&self, what: &str) -> ConfigError {
        let before = self.bytes.get(..self.at).unwrap_or_default();
        let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
        let column = before.iter().rev().take_while(|&&b| b != b'\n').count() + 1;
        refuse("(root)", format!("invalid JSON: {what} at line {line} column {column}"))
    }

    fn expect(&mut self, byte: u8, what: &str) -> Result<(), ConfigError> {
        self.skip_white_space();
        if self.peek() == Some(byte) {
            self.at += 1;
            Ok(())
        } else if self.peek().is_none() {
            Err(self.error("unexpected end of input"))
        } else {
            Err(self.error(what))
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value, ConfigError> {
        self.skip_white_space();
        match self.peek() {
            None => Err(self.error("unexpected end of input")),
            Some(b'{' | b'[') if depth >= MAX_DEPTH => Err(self.error("nested too deep")),
            Some(b'{') => self.object(depth + 1),
            Some(b'[') => self.array(depth + 1),
            Some(b'"') => self.string().map(Value::String),
            Some(b't') => self.literal("true", Value::Bool(true)),
            Some(b'f') => self.literal("false", Value::Bool(false)),
            Some(b'n') => self.literal("null", Value::Null),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(_) => Err(self.error("expected a value")),
        }
    }

    fn literal(&mut self, word: &str, value: Value) -> Result<Value, ConfigError> {
        if self.bytes.get(self.at..).is_some_and(|rest| rest.starts_with(word.as_bytes())) {
            self.at += word.len();
            Ok(value)
        } else {
            Err(self.error("expected a value"))
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.at;
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.at += 1;
        }
        self.at - start
    }

    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`
    fn number(&mut self) -> Result<Value, ConfigError> {
        let start = self.at;
        if self.peek() == Some(b'-') {
            self.at += 1;
        }
        match self.peek() {
            Some(b'0') => self.at += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return Err(self.error("invalid number")),
        }
        if self.peek() == Some(b'.') {
            self.at += 1;
            if self.digits() == 0 {
                return Err(self.error("invalid number"));
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.at += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.at += 1;
            }
            if self.digits() == 0 {
                return Err(self.error("invalid number"));
            }
        }
        let text = self.bytes.get(start..self.at).unwrap_or_default();
        Ok(Value::Number(String::from_utf8_lossy(text).into_owned()))
    }

    fn hex4(&mut self) -> Result<u32, ConfigError> {
        let mut value = 0;
        for _ in 0..4 {
            let digit = self.next().and_then(|b| char::from(b).to_digit(16));
            value = value * 16 + digit.ok_or_else(|| self.error("invalid escape"))?;
        }
        Ok(value)
    }

    /// A `\u` escape (after the `u`), with the second half of a surrogate pair.
    fn unicode_escape(&mut self) -> Result<char, ConfigError> {
        let first = self.hex4()?;
        let code = match first {
            0xD800..=0xDBFF => {
                if self.next() != Some(b'\\') || self.next() != Some(b'u') {
                    return Err(self.error("lone leading surrogate in escape"));
                }
                let second = self.hex4()?;
                if !(0xDC00..=0xDFFF).contains(&second) {
                    return Err(self.error("invalid surrogate pair in escape"));
                }
                0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00)
            }
            0xDC00..=0xDFFF => return Err(self.error("lone trailing surrogate in escape")),
            code => code,
        };
        char::from_u32(code).ok_or_else(|| self.error("invalid escape"))
    }

    fn string(&mut self) -> Result<String, ConfigError> {
        self.at += 1; // the opening quote
        let mut out = Vec::new();
        loop {
            match self.next() {
                None => return Err(self.error("unexpected end of input in a string")),
                Some(b'"') => break,
                Some(b'\\') => {
                    let unescaped = match self.next() {
                        Some(b'"') => '"',
                        Some(b'\\') => '\\',
                        Some(b'/') => '/',
                        Some(b'b') => '\u{8}',
                        Some(b'f') => '\u{c}',
                        Some(b'n') => '\n',
                        Some(b'r') => '\r',
                        Some(b't') => '\t',
                        Some(b'u') => self.unicode_escape()?,
                        _ => return Err(self.error("invalid escape")),
                    };
                    let mut buffer = [0; 4];
                    out.extend_from_slice(unescaped.encode_utf8(&mut buffer).as_bytes());
                }
                Some(0..=0x1f) => return Err(self.error("control character in a string")),
                Some(b) => out.push(b),
            }
        }
        String::from_utf8(out).map_err(|_| self.error("invalid UTF-8 in a string"))
    }

    fn array(&mut self, depth: usize) -> Result<Value, ConfigError> {
        self.at += 1;
        let mut items = Vec::new();
        self.skip_white_space();
        if self.peek() == Some(b']') {
            self.at += 1;
            return Ok(Value::Array(items));
        }
        loop {
            self.path.push(Step::Index(items.len()));
            items.push(self.value(depth)?);
            self.path.pop();
            self.skip_white_space();
            match self.next() {
                Some(b',') => {}
                Some(b']') => return Ok(Value::Array(items)),
                None => return Err(self.error("unexpected end of input")),
                Some(_) => {
                    self.at -= 1;
                    return Err(self.error("expected `,` or `]`"));
                }
            }
        }
    }

    fn object(&mut self, depth: usize) -> Result<Value, ConfigError> {
        self.at += 1;
        let mut members: Vec<(String, Value)> = Vec::new();
        self.skip_white_space();
        if self.peek() == Some(b'}') {
            self.at += 1;
            return Ok(Value::Object(members));
        }
        loop {
            self.skip_white_space();
            if self.peek() != Some(b'"') {
                return Err(self.error("expected a string key"));
            }
            let key = self.string()?;
            self.expect(b':', "expected `:`")?;
            self.path.push(Step::Key(key));
            let value = self.value(depth)?;
            let Some(Step::Key(key)) = self.path.pop() else { return Err(self.error("internal error")) };
            members.push((key, value));
            self.skip_white_space();
            match self.next() {
                Some(b',') => {}
                Some(b'}') => {
                    if let Some(key) = first_duplicate(&members) {
                        let key = key.to_string();
                        self.path.push(Step::Key(key.clone()));
                        return Err(refuse(&self.path_text(), format!("duplicate field `{key}`")));
                    }
                    return Ok(Value::Object(members));
                }
                None => return Err(self.error("unexpected end of input")),
                Some(_) => {
                    self.at -= 1;
                    return Err(self.error("expected `,` or `}`"));
                }
            }
        }
    }

    /// The dotted path of the value being parsed (`split.hash_key[1].cookie`).
    fn path_text(&self) -> String {
        let mut out = String::new();
        for step in &self.path {
            match step {
                Step::Key(key) => {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    // As `Fields::path_of` names an empty key.
                    out.push_str(if key.is_empty() { "\"\"" } else { key });
                }
                Step::Index(i) => {
                    out.push('[');
                    out.push_str(&i.to_string());
                    out.push(']');
                }
            }
        }
        out
    }
}

/// The key of the first member, in input order, whose key an earlier member has; in n log n
/// for objects of more than a few members (a heap sort of their indices by key and index), so
/// a large input cannot make the check quadratic.
fn first_duplicate(members: &[(String, Value)]) -> Option<&str> {
    const FEW: usize = 8;
    let key = |i: u32| {
        #[cfg(test)]
        tests::KEY_READS.with(|reads| reads.set(reads.get() + 1));
        members.get(i as usize).map_or("", |(key, _)| key.as_str())
    };
    let count = u32::try_from(members.len()).unwrap_or(u32::MAX);
    if members.len() <= FEW {
        return (1..count).find(|&i| (0..i).any(|e| key(e) == key(i))).map(key);
    }
    let mut order: Vec<u32> = (0..count).collect();
    heap_sort(&mut order, |a, b| (key(a), a) < (key(b), b));
    let later = order.windows(2).filter_map(|pair| match *pair {
        [a, b] if key(a) == key(b) => Some(b),
        _ => None,
    });
    later.min().map(key)
}

/// Sorts `items` by `less`: n log n at worst, in a fraction of the standard sort's code.
fn heap_sort(items: &mut [u32], less: impl Fn(u32, u32) -> bool) {
    let sift_down = |items: &mut [u32], mut root: usize, end: usize| loop {
        let at = |i: usize| items.get(i).copied().unwrap_or_default();
        let mut child = 2 * root + 1;
        if child >= end {
            return;
        }
        if child + 1 < end && less(at(child), at(child + 1)) {
            child += 1;
        }
        if !less(at(root), at(child)) {
            return;
        }
        items.swap(root, child);
        root = child;
    };
    let len = items.len();
    for root in (0..len / 2).rev() {
        sift_down(items, root, len);
    }
    for end in (1..len).rev() {
        items.swap(0, end);
        sift_down(items, 0, end);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use wasm_bindgen_test::wasm_bindgen_test;

    thread_local! {
        /// Keys the duplicate check has read: two per comparison.
        pub(super) static KEY_READS: Cell<u64> = const { Cell::new(0) };
    }

    /// The duplicate check's key reads while parsing `text`, which must parse.
    fn key_reads(text: &str) -> u64 {
        KEY_READS.with(|reads| reads.set(0));
        assert!(parse(text.as_bytes()).is_ok(), "{}...", text.get(..80).unwrap_or(text));
        KEY_READS.with(Cell::get)
    }

    /// Members `"key":0` with the shortest distinct keys (alphanumeric, after `prefix`), as many
    /// as fit in `bytes` with their separators: the most members a body of that size can hold.
    fn densest_members(prefix: &str, bytes: usize) -> (String, usize) {
        const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
        let (mut out, mut count) = (String::new(), 0usize);
        for width in 1.. {
            for mut n in 0..DIGITS.len().pow(width) {
                let mut key = prefix.to_string();
                for _ in 0..width {
                    key.push(char::from(DIGITS[n % DIGITS.len()]));
                    n /= DIGITS.len();
                }
                let member = format!("{}\"{key}\":0", if out.is_empty() { "" } else { "," });
                if out.len() + member.len() > bytes {
                    return (out, count);
                }
                out.push_str(&member);
                count += 1;
            }
        }
        unreachable!()
    }

    /// `c · n · log2 n` key reads for `n` members: the heap sort compares about `2 n log2 n`
    /// times, reading two keys each time.
    fn n_log_n(c: f64, n: usize) -> u64 {
        (c * n as f64 * (n as f64).log2()) as u64
    }

    fn ok(text: &str) -> Value {
        parse(text.as_bytes()).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn err(text: &[u8]) -> ConfigError {
        parse(text).unwrap_err()
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn parses_every_kind_of_value() {
        let v =
            ok(r#" {"a": [1, -0.5e+3, true, false, null, "x\"\\\/\b\f\n\r\t\u00e9\ud83d\ude00"], "b": {}, "c": []} "#);
        let Value::Object(members) = v else { panic!() };
        assert_eq!(members.len(), 3);
        assert_eq!(
            members[0].1,
            Value::Array(vec![
                Value::Number("1".into()),
                Value::Number("-0.5e+3".into()),
                Value::Bool(true),
                Value::Bool(false),
                Value::Null,
                Value::String("x\"\\/\u{8}\u{c}\n\r\té😀".into()),
            ])
        );
        assert_eq!(members[1], ("b".into(), Value::Object(vec![])));
        assert_eq!(ok("12.50"), Value::Number("12.50".into()));
        assert_eq!(ok("\"\u{e9}\""), Value::String("é".into()));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn refuses_what_json_does_not_allow() {
        let bad: &[&[u8]] = &[
            b"",
            b" ",
            b"{",
            b"[1,]",
            b"{\"a\":1,}",
            b"{\"a\" 1}",
            b"{a:1}",
            b"[1 2]",
            b"01",
            b"1.",
            b".5",
            b"+1",
            b"1e",
            b"-",
            b"tru",
            b"nul",
            b"NaN",
            b"\"a",
            b"\"\\x\"",
            b"\"\\u12\"",
            b"\"\\ud800\"",
            b"\"\\udc00\"",
            b"\"\\ud800\\u0041\"",
            b"\"\x01\"",
            b"\"\xff\"",
            b"1 2",
            b"{} x",
            b"'a'",
            b"[",
            b"[1,",
        ];
        for text in bad {
            let e = err(text);
            assert_eq!(e.field, "(root)", "{}", text.escape_ascii());
            assert!(e.reason.starts_with("invalid JSON: "), "{}: {e}", text.escape_ascii());
        }
        assert!(err(b"{\n  \"a\": x}").reason.ends_with("at line 2 column 8"), "{}", err(b"{\n  \"a\": x}"));
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(parse(deep.as_bytes()).is_ok());
        let deeper = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        assert!(err(deeper.as_bytes()).reason.contains("nested too deep"));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_key_given_twice_is_refused_with_its_path() {
        let e = err(br#"{"a":[{"b":{"c":1,"d":[1,{"e":2,"e":3}]}}]}"#);
        assert_eq!((e.field.as_str(), e.reason.as_str()), ("a[0].b.d[1].e", "duplicate field `e`"));
        let e = err(br#"{"g\u0061te":{},"gate":{}}"#);
        assert_eq!((e.field.as_str(), e.reason.as_str()), ("gate", "duplicate field `gate`"));
        assert!(parse(br#"{"a":{"x":1},"b":{"x":1},"c":["x","x"]}"#).is_ok());
        let e = err(br#"{"":{"":1,"":2}}"#);
        assert_eq!((e.field.as_str(), e.reason.as_str()), (r#"""."""#, "duplicate field ``"));
        // Past a few members the check sorts: the first repeat in input order is named.
        let members: Vec<String> =
            (0..40).map(|i| format!(r#""k{}":{i}"#, [i, 7, 3][usize::from(i >= 30) + usize::from(i >= 35)])).collect();
        let e = err(format!("{{{}}}", members.join(",")).as_bytes());
        assert_eq!((e.field.as_str(), e.reason.as_str()), ("k7", "duplicate field `k7`"));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn the_heap_sort_sorts() {
        for len in [0u32, 1, 2, 3, 9, 100, 1_000] {
            let mut items: Vec<u32> = (0..len).map(|i| i.wrapping_mul(2_654_435_761) % 97).collect();
            let mut expected = items.clone();
            expected.sort_unstable();
            heap_sort(&mut items, |a, b| a < b);
            assert_eq!(items, expected, "{len} items");
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn the_largest_beacons_and_a_20000_key_configuration_take_n_log_n_key_reads() {
        // A beacon of 64 KiB (the largest `vitals.max_body_bytes`) as one object of as many
        // distinct keys as fit: a pairwise check would read keys ~75 million times.
        let (members, n) = densest_members("", 65_536 - 2);
        let text = format!("{{{members:<65534}}}");
        assert_eq!(text.len(), 65_536);
        assert!(n > 8_500, "{n} members");
        let reads = key_reads(&text);
        assert!(reads <= n_log_n(5.0, n), "{reads} key reads for {n} members");
        // The largest valid beacon: 64 reports of 1 KiB, each padded with distinct keys.
        let report = |i: usize| {
            let (members, _) = densest_members(&format!("r{i}_"), 1_024 - 3 - r#""name":"page_view","#.len());
            format!(r#"{{"name":"page_view",{members}}}"#)
        };
        let text = format!("[{}]", (0..64).map(report).collect::<Vec<_>>().join(","));
        assert!(text.len() <= 65_536 && text.len() > 65_000, "{} bytes", text.len());
        let n = text.matches("\":").count();
        let reads = key_reads(&text);
        assert!(reads <= n_log_n(5.0, n), "{reads} key reads for {n} members in 64 objects");
        // A configuration of 20,000 keys.
        let members: Vec<String> = (0..20_000).map(|i| format!(r#""key-{i}":{i}"#)).collect();
        let text = format!(r#"{{"service":"checkout",{}}}"#, members.join(","));
        let reads = key_reads(&text);
        assert!(reads <= n_log_n(5.0, 20_001), "{reads} key reads for 20,001 members");
        // Few members are compared pairwise, which is cheaper there.
        assert_eq!(key_reads(r#"{"a":1,"b":2,"c":3}"#), 6);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_large_object_of_distinct_keys_parses_in_n_log_n() {
        // 20,000 distinct keys: a pairwise check would compare 200 million pairs.
        let members: Vec<String> = (0..20_000).map(|i| format!(r#""key-{i}":{i}"#)).collect();
        let Ok(Value::Object(parsed)) = parse(format!("{{{}}}", members.join(",")).as_bytes()) else {
            panic!("20,000 distinct keys parse")
        };
        assert_eq!(parsed.len(), 20_000);
    }
}
