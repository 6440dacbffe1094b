//! Rate limits: a token bucket per bearer token (generous by default) and,
//! when configured, per client IP. The client IP is the socket's peer, or
//! the last `X-Forwarded-For` hop only with `--trust-proxy`.
//!
//! Limits are wall-clock mechanics, so they use `Instant`, not the
//! configurable clock that stamps data.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;
use crate::AppState;

/// Sustained requests per second and burst, per key.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateLimit {
    pub per_sec: f64,
    pub burst: f64,
}

/// Default per-token limit: far above what a device, the CLI, the tests or
/// the benchmark send, so that only a runaway loop meets it.
pub const TOKEN_RATE_PER_SEC_DEFAULT: f64 = 1000.0;
pub const TOKEN_BURST_DEFAULT: f64 = 5000.0;
/// Failed `/v1/enroll` attempts allowed server-wide per second, sustained,
/// and in a burst: with 31^8 possible codes this keeps guessing one of a
/// few open codes hopeless, while a room enrolling phones never meets it.
pub const ENROLL_FAILURES_PER_SEC_DEFAULT: f64 = 10.0;
pub const ENROLL_FAILURES_BURST_DEFAULT: f64 = 50.0;
/// Most keys remembered per limiter; past it, idle (full) buckets are
/// forgotten.
pub const LIMITER_KEYS_MAX: usize = 100_000;

#[derive(Clone, Copy, Debug)]
struct Bucket {
    level: f64,
    at: Instant,
}

/// Token buckets by key.
#[derive(Debug)]
pub struct Buckets<K> {
    limit: RateLimit,
    map: Mutex<HashMap<K, Bucket>>,
}

impl<K: Hash + Eq + Copy> Buckets<K> {
    pub fn new(limit: RateLimit) -> Buckets<K> {
        Buckets {
            limit,
            map: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `key`'s bucket has a request left, without taking it;
    /// `Err(wait)` when it is empty.
    pub fn check(&self, key: K, now: Instant) -> Result<(), Duration> {
        let RateLimit { per_sec, burst } = self.limit;
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let Some(b) = map.get(&key) else {
            return Ok(());
        };
        let level = (b.level + now.duration_since(b.at).as_secs_f64() * per_sec).min(burst);
        if level >= 1.0 {
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (1.0 - level) / per_sec.max(f64::MIN_POSITIVE),
            ))
        }
    }

    /// Takes one request from `key`'s bucket; `Err(wait)` when it is empty.
    pub fn take(&self, key: K, now: Instant) -> Result<(), Duration> {
        let RateLimit { per_sec, burst } = self.limit;
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= LIMITER_KEYS_MAX && !map.contains_key(&key) {
            map.retain(|_, b| b.level + now.duration_since(b.at).as_secs_f64() * per_sec < burst);
        }
        let b = map.entry(key).or_insert(Bucket {
            level: burst,
            at: now,
        });
        b.level = (b.level + now.duration_since(b.at).as_secs_f64() * per_sec).min(burst);
        b.at = now;
        if b.level >= 1.0 {
            b.level -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (1.0 - b.level) / per_sec.max(f64::MIN_POSITIVE),
            ))
        }
    }
}

/// The limiters of a server.
#[derive(Debug)]
pub struct Limiters {
    pub tokens: Option<Buckets<[u8; 32]>>,
    pub ips: Option<Buckets<IpAddr>>,
    pub trust_proxy: bool,
    /// Sign-in lockout, password hashing slots, enrolment failures.
    pub people: crate::people::Guards,
}

fn client_ip(req: &Request, trust_proxy: bool) -> Option<IpAddr> {
    if trust_proxy {
        let forwarded = req
            .headers()
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .and_then(|ip| ip.trim().parse().ok());
        if forwarded.is_some() {
            return forwarded;
        }
    }
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
}

/// The middleware: `429 rate_limited` with `Retry-After` when a bucket is empty.
pub async fn enforce(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let now = Instant::now();
    let limits = &s.limits;
    if let (Some(ips), Some(ip)) = (&limits.ips, client_ip(&req, limits.trust_proxy)) {
        if let Err(wait) = ips.take(ip, now) {
            return ApiError::RateLimited(wait.as_secs() + 1).into_response();
        }
    }
    if let Some(tokens) = &limits.tokens {
        let bearer = req
            .headers()
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim);
        if let Some(token) = bearer.filter(|t| !t.is_empty()) {
            if let Err(wait) = tokens.take(crate::auth::hash_token(token), now) {
                return ApiError::RateLimited(wait.as_secs() + 1).into_response();
            }
        }
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_refill_at_the_rate_and_cap_at_the_burst() {
        let b = Buckets::new(RateLimit {
            per_sec: 2.0,
            burst: 3.0,
        });
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(b.take(1u8, t0).is_ok());
        }
        let wait = b.take(1u8, t0).unwrap_err();
        assert!(wait <= Duration::from_millis(500) && wait > Duration::ZERO);
        assert!(b.take(2u8, t0).is_ok(), "another key has its own bucket");
        assert!(b.take(1u8, t0 + Duration::from_millis(500)).is_ok());
        assert!(b.take(1u8, t0 + Duration::from_millis(500)).is_err());
        // A long pause refills only up to the burst.
        let later = t0 + Duration::from_secs(60);
        for _ in 0..3 {
            assert!(b.take(1u8, later).is_ok());
        }
        assert!(b.take(1u8, later).is_err());
    }
}
