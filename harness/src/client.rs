//! A small blocking HTTP client for tests and the demo: never errors on 4xx/5xx, keeps
//! connections alive, exposes what canary-gate writes.

use std::time::Duration;

/// A keep-alive HTTP client.
#[derive(Clone)]
pub struct Client {
    agent: ureq::Agent,
}

/// What came back.
#[derive(Debug, Clone)]
pub struct Reply {
    /// HTTP status; 0 if the request failed at transport level.
    pub status: u16,
    /// `x-canary-version` of the response.
    pub version: Option<String>,
    /// `x-canary-reason` of the response.
    pub reason: Option<String>,
    /// Every `set-cookie` of the response.
    pub set_cookies: Vec<String>,
    /// `x-served-by` (set by the test backend).
    pub served_by: Option<String>,
    /// Every response header: (lower-case name, value).
    pub headers: Vec<(String, String)>,
    /// The body (transport error text if status is 0).
    pub body: String,
}

impl Reply {
    /// The body as JSON (Null if it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// A request header as the upstream received it (from the backend's echo).
    pub fn upstream_header(&self, name: &str) -> Option<String> {
        self.json()["headers"][name].as_str().map(str::to_string)
    }

    /// The first response header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// `name=value` of the first `set-cookie` setting `name`.
    pub fn cookie_pair(&self, name: &str) -> Option<String> {
        self.set_cookies
            .iter()
            .filter_map(|c| c.split(';').next())
            .find(|pair| pair.split('=').next() == Some(name))
            .map(str::to_string)
    }
}

impl Default for Client {
    fn default() -> Self {
        Self::new()
    }
}

impl Client {
    /// A client with a 10 s timeout.
    pub fn new() -> Client {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .max_idle_connections_per_host(64)
            .build();
        Client { agent: config.into() }
    }

    /// GET `url` with `headers` (raw bytes allowed in values).
    pub fn get(&self, url: &str, headers: &[(&str, &[u8])]) -> Reply {
        let mut request = self.agent.get(url);
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        Self::reply(request.call())
    }

    /// POST `url` with an empty body.
    pub fn post(&self, url: &str) -> Reply {
        Self::reply(self.agent.post(url).send_empty())
    }

    /// `method` `url` with `headers` and `body` (sent with its content-length).
    pub fn send(&self, method: &str, url: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
        let mut request = ureq::http::Request::builder().method(method).uri(url);
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        match request.body(body.to_vec()) {
            Ok(request) => Self::reply(self.agent.run(request)),
            Err(e) => Self::reply(Err(ureq::Error::Http(e))),
        }
    }

    fn reply(result: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Reply {
        match result {
            Ok(mut response) => {
                let headers = response.headers();
                let one = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
                let (version, reason, served_by) =
                    (one("x-canary-version"), one("x-canary-reason"), one("x-served-by"));
                let set_cookies =
                    headers.get_all("set-cookie").iter().filter_map(|v| v.to_str().ok()).map(str::to_string).collect();
                let headers = headers
                    .iter()
                    .filter_map(|(n, v)| Some((n.as_str().to_string(), v.to_str().ok()?.to_string())))
                    .collect();
                let status = response.status().as_u16();
                let body = response.body_mut().read_to_string().unwrap_or_default();
                Reply { status, version, reason, set_cookies, served_by, headers, body }
            }
            Err(e) => Reply {
                status: 0,
                version: None,
                reason: None,
                set_cookies: vec![],
                served_by: None,
                headers: vec![],
                body: e.to_string(),
            },
        }
    }
}
