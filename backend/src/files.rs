//! Static files for the browser tests: `--static [PREFIX=]DIR` serves `GET PREFIX<path>` from
//! `DIR/<path>` (PREFIX defaults to `/static/`; the longest matching prefix wins).
//!
//! Only plain relative paths are served: segments of `[A-Za-z0-9._-]`, none empty or starting
//! with `.` (so no `..`, no hidden files, no percent-encoding), resolving to a regular file
//! inside DIR. `?delay_ms=N` (at most 30,000) holds the answer back N ms, e.g. to make an image
//! the browser's late largest paint. Answers are `cache-control: no-store`, so every load of a
//! page reaches the proxy and the backend.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// The longest `delay_ms` honoured.
const MAX_DELAY_MS: u64 = 30_000;

/// One `--static` mount.
#[derive(Debug, Clone)]
pub struct Mount {
    /// URL path prefix, starting and ending with `/`.
    prefix: String,
    /// The directory, canonical.
    dir: PathBuf,
}

impl Mount {
    /// Parses `[PREFIX=]DIR`; the directory must exist.
    pub fn parse(arg: &str) -> Result<Mount, String> {
        let (prefix, dir) = match arg.split_once('=') {
            Some((prefix, dir)) if prefix.starts_with('/') => (prefix.to_string(), dir),
            _ => ("/static/".to_string(), arg),
        };
        if !prefix.ends_with('/') {
            return Err(format!("static prefix {prefix} must start and end with /"));
        }
        let dir = Path::new(dir).canonicalize().map_err(|e| format!("static directory {dir}: {e}"))?;
        if !dir.is_dir() {
            return Err(format!("static directory {}: not a directory", dir.display()));
        }
        Ok(Mount { prefix, dir })
    }
}

/// A static file's content type, by extension.
fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()).unwrap_or_default() {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "json" | "map" => "application/json",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// Whether `rest` is a plain relative path (see the module doc).
fn plain(rest: &str) -> bool {
    let segment_ok = |s: &str| {
        !s.is_empty()
            && !s.starts_with('.')
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    };
    rest.split('/').all(segment_ok)
}

/// The delay a query asks for (`delay_ms=N`, capped), 0 if none or invalid.
fn delay(query: &str) -> u64 {
    query
        .split('&')
        .filter_map(|kv| kv.strip_prefix("delay_ms="))
        .find_map(|v| v.parse::<u64>().ok())
        .map_or(0, |ms| ms.min(MAX_DELAY_MS))
}

/// What a static request is answered: `None` if `target` is under no mount (the request is
/// answered as usual), else the status, content type and body (after the requested delay).
pub fn serve(mounts: &[Mount], target: &str) -> Option<(u16, &'static str, Vec<u8>)> {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let path = path.split('#').next().unwrap_or_default();
    let (mount, rest) = mounts
        .iter()
        .filter_map(|m| path.strip_prefix(m.prefix.as_str()).map(|rest| (m, rest)))
        .max_by_key(|(m, _)| m.prefix.len())?;
    let not_found = || Some((404, "text/plain; charset=utf-8", b"not found\n".to_vec()));
    if !plain(rest) {
        return not_found();
    }
    // The path is plain, so it stays inside the mount unless a symbolic link leads out.
    let Ok(file) = mount.dir.join(rest).canonicalize() else { return not_found() };
    if !file.starts_with(&mount.dir) || !file.is_file() {
        return not_found();
    }
    let Ok(body) = std::fs::read(&file) else { return not_found() };
    let ms = delay(query);
    if ms > 0 {
        std::thread::sleep(Duration::from_millis(ms));
    }
    Some((200, content_type(&file), body))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn mounts(dir: &Path) -> Vec<Mount> {
        let lib = format!("/static/lib/={}", dir.join("lib").display());
        vec![Mount::parse(&dir.display().to_string()).unwrap(), Mount::parse(&lib).unwrap()]
    }

    #[test]
    fn serves_files_under_the_longest_prefix_and_nothing_outside() {
        let dir = std::env::temp_dir().join(format!("canary-backend-files-{}", std::process::id()));
        let _ = std::fs::create_dir_all(dir.join("lib"));
        let _ = std::fs::write(dir.join("index.html"), "<p>hi</p>");
        let _ = std::fs::write(dir.join("lib").join("a.js"), "export {}");
        let _ = std::fs::write(dir.join(".hidden"), "secret");
        let m = mounts(&dir);
        let status = |t: &str| serve(&m, t).map(|(s, _, _)| s);
        assert_eq!(
            serve(&m, "/static/index.html?delay_ms=1"),
            Some((200, "text/html; charset=utf-8", b"<p>hi</p>".to_vec()))
        );
        assert_eq!(
            serve(&m, "/static/lib/a.js").map(|(s, t, _)| (s, t)),
            Some((200, "text/javascript; charset=utf-8"))
        );
        for bad in [
            "/static/../Cargo.toml",
            "/static/lib/../index.html",
            "/static/%2e%2e/x",
            "/static/.hidden",
            "/static/",
            "/static/lib",
            "/static//index.html",
            "/static/missing.png",
            "/static/a\\b",
        ] {
            assert_eq!(status(bad), Some(404), "{bad}");
        }
        assert_eq!(status("/"), None);
        assert_eq!(status("/api/static/index.html"), None);
        assert_eq!(delay("a=1&delay_ms=70000"), MAX_DELAY_MS);
        assert_eq!(delay("delay_ms=x"), 0);
        assert!(Mount::parse("/static=/tmp").is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
