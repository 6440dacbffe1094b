//! How requests reach the server: a small trait, with reqwest over HTTP for
//! production. Tests plug in an in-process transport that can drop, delay
//! or duplicate requests.

use std::time::Duration;

use async_trait::async_trait;

/// One request: method, path with query, bearer token, JSON body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub method: Method,
    /// e.g. `/v1/sync/pull?since=42&limit=500`
    pub path: String,
    pub token: String,
    pub body: Option<Vec<u8>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
}

/// An HTTP answer (any status).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
    /// From a `Retry-After` header in seconds, if any.
    pub retry_after: Option<Duration>,
}

/// The request may or may not have reached the server; the answer did not
/// come back. Always worth retrying: every request of the protocol is
/// idempotent (a push repeats as `duplicate`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TransportError(pub String);

/// Sends requests to a server.
#[async_trait]
pub trait Transport: Send + Sync + 'static {
    /// # Errors
    /// [`TransportError`] when no answer arrived.
    async fn send(&self, req: Request) -> Result<Response, TransportError>;
}

/// Longest a single HTTP request may take before it counts as failed.
pub const HTTP_TIMEOUT_SECS: u64 = 60;
/// Longest a connection attempt may take.
pub const CONNECT_TIMEOUT_SECS: u64 = 10;

/// reqwest (rustls) over HTTP(S).
#[derive(Clone, Debug)]
pub struct HttpTransport {
    base: String,
    client: reqwest::Client,
}

impl HttpTransport {
    /// `base` is the server's URL, e.g. `https://pufa.example.gov.cn`.
    ///
    /// # Errors
    /// When the TLS stack cannot be set up.
    pub fn new(base: &str) -> Result<HttpTransport, TransportError> {
        HttpTransport::build(base, reqwest::Client::builder())
    }

    /// Like [`HttpTransport::new`], also trusting the PEM certificate(s) in
    /// `pem` for `https://` URLs: for a server with its own (e.g.
    /// self-signed) certificate, started with `--tls-cert`. The built-in
    /// (Mozilla) roots stay trusted too.
    ///
    /// # Errors
    /// When `pem` holds no usable certificate, or the TLS stack cannot be
    /// set up.
    pub fn with_root_certificate(base: &str, pem: &[u8]) -> Result<HttpTransport, TransportError> {
        let certs = reqwest::Certificate::from_pem_bundle(pem)
            .map_err(|e| TransportError(format!("not a PEM certificate: {e}")))?;
        if certs.is_empty() {
            return Err(TransportError("no PEM certificate found".into()));
        }
        let builder = certs
            .into_iter()
            .fold(reqwest::Client::builder(), |b, c| b.add_root_certificate(c));
        HttpTransport::build(base, builder)
    }

    fn build(base: &str, builder: reqwest::ClientBuilder) -> Result<HttpTransport, TransportError> {
        let client = builder
            .timeout(Duration::from_secs(HTTP_TIMEOUT_SECS))
            .connect_timeout(Duration::from_secs(CONNECT_TIMEOUT_SECS))
            .build()
            .map_err(|e| TransportError(e.to_string()))?;
        Ok(HttpTransport {
            base: base.trim_end_matches('/').to_string(),
            client,
        })
    }
}

#[async_trait]
impl Transport for HttpTransport {
    async fn send(&self, req: Request) -> Result<Response, TransportError> {
        let url = format!("{}{}", self.base, req.path);
        let mut b = match req.method {
            Method::Get => self.client.get(url),
            Method::Post => self.client.post(url),
        }
        .bearer_auth(&req.token);
        if let Some(body) = req.body {
            b = b.header("content-type", "application/json").body(body);
        }
        let resp = b.send().await.map_err(|e| TransportError(e.to_string()))?;
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = resp
            .bytes()
            .await
            .map_err(|e| TransportError(e.to_string()))?
            .to_vec();
        Ok(Response {
            status,
            body,
            retry_after,
        })
    }
}
