//! How requests reach the server: a small trait, with reqwest over HTTP for
//! production. Tests plug in an in-process transport that can drop, delay
//! or duplicate requests.
//!
//! [`HttpTransport`] saves bytes on metered connections: it asks for
//! compressed answers (gzip or brotli; reqwest decodes them) and sends
//! request bodies of at least [`GZIP_BODY_BYTES_MIN`] bytes gzip-encoded.

use std::io::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
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
    /// Administration only ([`crate::admin`]): sync uses GET and POST.
    Put,
    Patch,
    Delete,
}

impl Method {
    /// As it goes on the wire: `GET`, `POST`, …
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
        }
    }
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

/// Request bodies of at least this many bytes are sent gzip-encoded
/// (`Content-Encoding: gzip`). Below it gzip's framing and the CPU are not
/// worth it: a push of one lecture is about 400 bytes, and pushes of a few
/// dozen edits shrink to a fifth or less.
pub const GZIP_BODY_BYTES_MIN: usize = 1024;

/// reqwest (rustls) over HTTP(S).
#[derive(Clone, Debug)]
pub struct HttpTransport {
    base: String,
    client: reqwest::Client,
    /// Whether to gzip large bodies. A server that does not read gzip
    /// bodies answers one with 415 (or, older, 400): the body is then sent
    /// again as it is, and this transport stops compressing.
    gzip_bodies: Arc<AtomicBool>,
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
            gzip_bodies: Arc::new(AtomicBool::new(true)),
        })
    }

    async fn send_once(
        &self,
        req: &Request,
        body: Option<Body>,
    ) -> Result<Response, TransportError> {
        let url = format!("{}{}", self.base, req.path);
        let method = match req.method {
            Method::Get => reqwest::Method::GET,
            Method::Post => reqwest::Method::POST,
            Method::Put => reqwest::Method::PUT,
            Method::Patch => reqwest::Method::PATCH,
            Method::Delete => reqwest::Method::DELETE,
        };
        let mut b = self.client.request(method, url).bearer_auth(&req.token);
        if let Some(body) = body {
            b = b.header("content-type", "application/json");
            if body.gzipped {
                b = b.header("content-encoding", "gzip");
            }
            b = b.body(body.bytes);
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

/// A request body as it goes on the wire.
struct Body {
    bytes: Vec<u8>,
    gzipped: bool,
}

/// `body` gzip-encoded, if it is at least [`GZIP_BODY_BYTES_MIN`] bytes.
fn gzip_body(body: &[u8]) -> Option<Vec<u8>> {
    if body.len() < GZIP_BODY_BYTES_MIN {
        return None;
    }
    let mut gz = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 4),
        flate2::Compression::default(),
    );
    gz.write_all(body).ok()?;
    gz.finish().ok()
}

#[async_trait]
impl Transport for HttpTransport {
    async fn send(&self, req: Request) -> Result<Response, TransportError> {
        let plain = |req: &Request| {
            req.body.clone().map(|bytes| Body {
                bytes,
                gzipped: false,
            })
        };
        let gzipped = match &req.body {
            Some(body) if self.gzip_bodies.load(Ordering::Relaxed) => gzip_body(body),
            _ => None,
        };
        let Some(bytes) = gzipped else {
            return self.send_once(&req, plain(&req)).await;
        };
        let body = Body {
            bytes,
            gzipped: true,
        };
        let resp = self.send_once(&req, Some(body)).await?;
        let refused = resp.status == 415
            || (resp.status == 400 && String::from_utf8_lossy(&resp.body).contains("\"bad_json\""));
        if refused {
            // Not read as gzip (`bad_json` is an older server reading the
            // bytes as JSON; a malformed request changes nothing): once
            // more as it is, and no more gzip to this server.
            self.gzip_bodies.store(false, Ordering::Relaxed);
            return self.send_once(&req, plain(&req)).await;
        }
        Ok(resp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read as _;

    #[test]
    fn large_bodies_are_gzipped_and_decode_to_themselves() {
        assert_eq!(gzip_body(&[b'x'; GZIP_BODY_BYTES_MIN - 1]), None);
        let body = br#"{"device_id":"x","mutations":[]}"#.repeat(100);
        let gz = gzip_body(&body).expect("gzipped");
        assert!(gz.len() * 5 < body.len(), "{} of {}", gz.len(), body.len());
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, body);
    }
}
