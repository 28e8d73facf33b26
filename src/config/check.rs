//! Validators of single values: each answers `Err` naming `field` and what was expected.

use super::{refuse, ConfigError};
use crate::model::{hex_value, quoted, UNKNOWN_VERSION};

/// `[a-z0-9-]{1,63}`: service names become metric labels and shared-data keys.
pub fn service(field: &str, name: &str) -> Result<(), ConfigError> {
    let ok = (1..=63).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(refuse(field, format!("must match [a-z0-9-]{{1,63}}, got {}", quoted(name.as_bytes()))))
    }
}

/// Version names become header values, cookie values and metric labels: keep them to
/// characters that are safe in all three and never split a stat name (no `.`).
pub fn version_name(field: &str, name: &str) -> Result<(), ConfigError> {
    if name == UNKNOWN_VERSION {
        return Err(refuse(field, "`unknown` is the version label of requests no version served"));
    }
    let ok =
        (1..=63).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(refuse(field, format!("must match [A-Za-z0-9_-]{{1,63}}, got {}", quoted(name.as_bytes()))))
    }
}

/// HTTP/2 and Envoy want lower-case header names made of token characters.
pub fn header_name(field: &str, name: &str) -> Result<(), ConfigError> {
    let ok = (1..=128).contains(&name.len())
        && !name.starts_with(':')
        && name.bytes().all(|b| is_token_byte(b) && !b.is_ascii_uppercase());
    if ok {
        Ok(())
    } else {
        Err(refuse(field, format!("must be a lower-case HTTP header name, got {}", quoted(name.as_bytes()))))
    }
}

/// Kubernetes label keys: an optional DNS prefix and a name of `[A-Za-z0-9._-]`.
pub fn label_name(field: &str, name: &str) -> Result<(), ConfigError> {
    let ok = (1..=253).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(refuse(field, format!("must be a label name, got {}", quoted(name.as_bytes()))))
    }
}

/// A request path the filter answers itself: `/` and visible ASCII, no query or fragment.
pub fn probe_path(field: &str, path: &str) -> Result<(), ConfigError> {
    if !path.starts_with('/') {
        return Err(refuse(field, format!("must be a path that starts with `/`, got {}", quoted(path.as_bytes()))));
    }
    if path == "/" {
        return Err(refuse(
            field,
            "must not be `/`: the filter answers this path itself, and `/` is the application's",
        ));
    }
    if path.len() > 128 || !path.bytes().all(|b| b.is_ascii_graphic() && b != b'?' && b != b'#') {
        return Err(refuse(
            field,
            format!(
                "must be at most 128 visible ASCII characters, no query or fragment, got {}",
                quoted(path.as_bytes())
            ),
        ));
    }
    Ok(())
}

/// A cookie name: an HTTP token.
pub fn token(field: &str, name: &str) -> Result<(), ConfigError> {
    if (1..=128).contains(&name.len()) && name.bytes().all(is_token_byte) {
        Ok(())
    } else {
        Err(refuse(field, format!("must be an HTTP token (cookie name), got {}", quoted(name.as_bytes()))))
    }
}

/// A SHA-256 digest as 64 lower-case hex digits (`sha256sum`'s output).
pub fn sha256_hex(field: &str, text: &str) -> Result<[u8; 32], ConfigError> {
    let mut out = [0u8; 32];
    let bytes = text.as_bytes();
    let mut ok = bytes.len() == 64;
    for (i, digit) in bytes.iter().enumerate().take(64) {
        let value = hex_value(*digit).unwrap_or_else(|| {
            ok = false;
            0
        });
        if let Some(o) = out.get_mut(i / 2) {
            *o = *o << 4 | value;
        }
    }
    if ok {
        Ok(out)
    } else {
        Err(refuse(field, format!("must be a SHA-256 digest in 64 lower-case hex digits, got {}", quoted(bytes))))
    }
}

/// An environment variable's name: `[A-Za-z_][A-Za-z0-9_]*`, at most 128 bytes.
pub fn env_name(field: &str, name: &str) -> Result<(), ConfigError> {
    let ok = (1..=128).contains(&name.len())
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(refuse(field, format!("must be an environment variable name, got {}", quoted(name.as_bytes()))))
    }
}

/// A `hosts` entry: a lower-case host name, or `*.` and one, optionally fully qualified
/// (`name.`).
pub fn host_pattern(field: &str, host: &str) -> Result<(), ConfigError> {
    let name = match host.strip_prefix('*') {
        Some(suffix) => suffix.strip_prefix('.').unwrap_or(""),
        None => host,
    };
    let name = name.strip_suffix('.').unwrap_or(name);
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len()) && l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    let ok = (1..=253).contains(&name.len()) && name.split('.').all(label_ok);
    if ok {
        Ok(())
    } else {
        Err(refuse(field, format!("must be a lower-case host name or `*.suffix`, got {}", quoted(host.as_bytes()))))
    }
}

/// RFC 9110 `tchar`.
pub fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// `value` within `low..=high`.
pub fn in_range(field: &str, value: u64, low: u64, high: u64, unit: &str) -> Result<u64, ConfigError> {
    if (low..=high).contains(&value) {
        Ok(value)
    } else {
        Err(refuse(field, format!("must be in {low}..={high}{unit}, got {value}")))
    }
}
