//! Minimal HTTP/1.1 server side: keep-alive, Content-Length bodies, raw header bytes.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;

/// Largest request head accepted; larger heads close the connection.
const MAX_HEAD: usize = 256 * 1024;

/// A parsed request head.
pub struct Request {
    pub method: String,
    pub target: String,
    /// Lower-cased names, raw values.
    pub headers: Vec<(String, Vec<u8>)>,
}

/// What to answer.
pub struct Response {
    pub status: u16,
    /// `content-type` of the body.
    pub content_type: &'static str,
    /// Extra headers, written as given (names and values are checked by the handler).
    pub headers: Vec<(String, String)>,
    /// Not sent for 204 and 304, which have no body.
    pub body: Vec<u8>,
}

impl Response {
    /// A JSON answer.
    pub fn json(status: u16, headers: Vec<(String, String)>, body: &serde_json::Value) -> Response {
        Response { status, content_type: "application/json", headers, body: body.to_string().into_bytes() }
    }
}

/// Serves requests on `stream` until the peer closes or asks to.
pub fn serve(stream: TcpStream, mut handler: impl FnMut(&Request) -> Response) {
    let _ = stream.set_nodelay(true);
    let Ok(mut writer) = stream.try_clone() else { return };
    let mut reader = BufReader::new(stream);
    while let Some((request, close)) = read_request(&mut reader) {
        let response = handler(&request);
        let reason = if response.status < 400 { "OK" } else { "Error" };
        let bodiless = matches!(response.status, 204 | 304);
        let body = if bodiless { &[][..] } else { response.body.as_slice() };
        let mut out = format!("HTTP/1.1 {} {reason}\r\ncontent-type: {}\r\n", response.status, response.content_type);
        if !bodiless {
            out.push_str(&format!("content-length: {}\r\n", body.len()));
        }
        for (k, v) in &response.headers {
            out.push_str(&format!("{k}: {v}\r\n"));
        }
        if close {
            out.push_str("connection: close\r\n");
        }
        out.push_str("\r\n");
        let mut bytes = out.into_bytes();
        bytes.extend_from_slice(body);
        if writer.write_all(&bytes).is_err() || close {
            return;
        }
    }
}

fn read_request(reader: &mut BufReader<TcpStream>) -> Option<(Request, bool)> {
    let mut head_size = 0;
    let mut line = Vec::new();
    let request_line = loop {
        line.clear();
        head_size += reader.read_until(b'\n', &mut line).ok().filter(|&n| n > 0)?;
        let text = String::from_utf8_lossy(&line).trim().to_string();
        if !text.is_empty() {
            break text;
        }
    };
    let mut parts = request_line.split_whitespace();
    let (method, target) = (parts.next()?.to_string(), parts.next()?.to_string());
    let mut headers = Vec::new();
    loop {
        line.clear();
        head_size += reader.read_until(b'\n', &mut line).ok().filter(|&n| n > 0)?;
        if head_size > MAX_HEAD {
            return None;
        }
        let trimmed = line.trim_ascii();
        if trimmed.is_empty() {
            break;
        }
        let colon = trimmed.iter().position(|&b| b == b':')?;
        let (name, value) = trimmed.split_at(colon);
        let value = value.get(1..).unwrap_or_default().trim_ascii();
        headers.push((String::from_utf8_lossy(name).to_ascii_lowercase(), value.to_vec()));
    }
    let header =
        |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| String::from_utf8_lossy(v).to_ascii_lowercase());
    let length: u64 = header("content-length").and_then(|v| v.trim().parse().ok()).unwrap_or(0);
    if length > 0 {
        std::io::copy(&mut reader.by_ref().take(length), &mut std::io::sink()).ok()?;
    }
    let close = header("connection").is_some_and(|v| v.contains("close"));
    Some((Request { method, target, headers }, close))
}
