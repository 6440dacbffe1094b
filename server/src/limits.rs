//! Rate limits: a token bucket per bearer token (generous by default) and,
//! when configured, per client IP. The client IP is the socket's peer, or
//! the last `X-Forwarded-For` hop only with `--trust-proxy`. Also the
//! accept loop's connection slots ([`ConnectionSlots`]): a cap per client
//! address and a reserve for clients holding no other connection.
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
/// Failed `/v1/enroll` attempts allowed per client address (an IPv6
/// client counts by its /64) per second, sustained (12 a minute), and in a
/// burst. Both are below the server-wide figures, so one source can never
/// empty the server-wide bucket: keeping it empty takes at least 50
/// addresses. A village of 30 phones behind one NAT, each mistyping its
/// code once, uses 30 of the burst; a second typo each within the next two
/// minutes is covered by the refill.
pub const ENROLL_FAILURES_PER_IP_PER_SEC_DEFAULT: f64 = 0.2;
pub const ENROLL_FAILURES_PER_IP_BURST_DEFAULT: f64 = 40.0;
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

/// The client's address: the socket's peer, or with `trust_proxy` the last
/// `X-Forwarded-For` hop (the one the proxy added). `None` only for a
/// request that did not come over a socket (router tests).
pub fn client_ip(
    headers: &axum::http::HeaderMap,
    extensions: &axum::http::Extensions,
    trust_proxy: bool,
) -> Option<IpAddr> {
    if trust_proxy {
        let forwarded = headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .and_then(|ip| ip.trim().parse().ok());
        if forwarded.is_some() {
            return forwarded;
        }
    }
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
}

/// The key a per-client limit counts `ip` under: an IPv4 address (also
/// when written IPv4-mapped, as a dual-stack socket reports it), or an
/// IPv6 address's /64, since one IPv6 host usually has a whole /64 to
/// pick addresses from.
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut s = v6.segments();
                s[4..].fill(0);
                IpAddr::V6(s.into())
            }
        },
    }
}

/// The middleware: `429 rate_limited` with `Retry-After` when a bucket is empty.
pub async fn enforce(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let now = Instant::now();
    let limits = &s.limits;
    let ip = client_ip(req.headers(), req.extensions(), limits.trust_proxy);
    if let (Some(ips), Some(ip)) = (&limits.ips, ip) {
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

/// The accept loop's connection slots: at most `max` connections at once,
/// at most `per_ip_max` of them from one client address, and the last
/// `max / CONNECTIONS_RESERVED_DIVISOR` slots only for addresses that hold
/// no other connection.
///
/// Behind a trusted proxy every connection comes from the proxy's address,
/// so per-address rules would cap the proxy itself: with `trust_proxy`
/// neither the per-address cap nor the reserve applies, only `max` (the
/// proxy limits its clients, `docs/operations.md`).
#[derive(Debug)]
pub(crate) struct ConnectionSlots {
    max: usize,
    /// Slots above `max - reserved` go only to addresses holding none.
    reserved: usize,
    /// `None`: no per-address rules (off, or behind a trusted proxy).
    per_ip_max: Option<usize>,
    /// Connections held, by [`client_key`]; only with `per_ip_max`.
    held: Mutex<HashMap<IpAddr, usize>>,
    /// Connections open. Changed only with `held` locked.
    open: tokio::sync::watch::Sender<usize>,
}

/// Why [`ConnectionSlots::take`] refused a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Shed {
    /// Its address already holds `per_ip_max` connections.
    AddressFull,
    /// Only reserved slots are left, and its address holds a connection.
    OnlyReserveLeft,
    /// Every slot is taken.
    Full,
}

impl ConnectionSlots {
    pub fn new(
        max: usize,
        per_ip_max: Option<usize>,
        trust_proxy: bool,
    ) -> std::sync::Arc<ConnectionSlots> {
        let max = max.max(1);
        let per_ip_max = per_ip_max.filter(|_| !trust_proxy);
        let reserved = if per_ip_max.is_some() {
            max / crate::config::CONNECTIONS_RESERVED_DIVISOR
        } else {
            0
        };
        std::sync::Arc::new(ConnectionSlots {
            max,
            reserved,
            per_ip_max,
            held: Mutex::new(HashMap::new()),
            open: tokio::sync::watch::Sender::new(0),
        })
    }

    /// Resolves once a slot is free (at once if one is). Only the accept
    /// loop takes slots, so one is still free when it then accepts.
    pub async fn any_free(&self) {
        let max = self.max;
        let _ = self.open.subscribe().wait_for(|open| *open < max).await;
    }

    /// Resolves once every connection has ended.
    pub async fn all_free(&self) {
        let _ = self.open.subscribe().wait_for(|open| *open == 0).await;
    }

    /// A slot for a connection from `peer`, held until the [`Slot`] drops.
    pub fn take(self: &std::sync::Arc<Self>, peer: IpAddr) -> Result<Slot, Shed> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let open = *self.open.borrow();
        if open >= self.max {
            return Err(Shed::Full);
        }
        let key = self.per_ip_max.map(|_| client_key(peer));
        if let (Some(cap), Some(key)) = (self.per_ip_max, key) {
            let mine = held.get(&key).copied().unwrap_or(0);
            if mine >= cap.max(1) {
                return Err(Shed::AddressFull);
            }
            if open >= self.max - self.reserved && mine > 0 {
                return Err(Shed::OnlyReserveLeft);
            }
            *held.entry(key).or_insert(0) += 1;
        }
        self.open.send_modify(|open| *open += 1);
        Ok(Slot {
            slots: self.clone(),
            key,
        })
    }
}

/// One connection's slot; given back on drop, however the connection ends.
#[derive(Debug)]
pub(crate) struct Slot {
    slots: std::sync::Arc<ConnectionSlots>,
    key: Option<IpAddr>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut held = self.slots.held.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(key) = self.key {
            if let std::collections::hash_map::Entry::Occupied(mut e) = held.entry(key) {
                *e.get_mut() -= 1;
                if *e.get() == 0 {
                    e.remove();
                }
            }
        }
        self.slots.open.send_modify(|open| *open -= 1);
    }
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

    #[test]
    fn connection_slots_cap_each_address_and_keep_a_reserve() {
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let c: IpAddr = "::ffff:192.0.2.3".parse().unwrap();
        // 16 slots, 2 of them reserved; 4 per address.
        let slots = ConnectionSlots::new(16, Some(4), false);
        let mut held: Vec<Slot> = (0..4).map(|_| slots.take(a).unwrap()).collect();
        assert_eq!(slots.take(a).unwrap_err(), Shed::AddressFull);
        held.extend((0..4).map(|_| slots.take(b).unwrap()));
        for i in 3..=8 {
            held.push(slots.take(IpAddr::from([192, 0, 2, i])).unwrap());
        }
        // 14 taken: only the reserve is left, for addresses holding none.
        assert_eq!(held.len(), 14);
        assert_eq!(
            slots.take("192.0.2.8".parse().unwrap()).unwrap_err(),
            Shed::OnlyReserveLeft
        );
        assert_eq!(
            slots.take(c).unwrap_err(),
            Shed::OnlyReserveLeft,
            "mapped = v4"
        );
        held.push(slots.take("192.0.2.100".parse().unwrap()).unwrap());
        held.push(slots.take("2001:db8::1".parse().unwrap()).unwrap());
        assert_eq!(
            slots.take("192.0.2.101".parse().unwrap()).unwrap_err(),
            Shed::Full
        );
        // A slot given back is free again: while the reserve's holders
        // keep the count past the others, only for an address holding
        // none; below that, for anyone under its cap.
        held.remove(0);
        assert_eq!(slots.take(a).unwrap_err(), Shed::OnlyReserveLeft);
        held.pop();
        held.pop();
        assert!(slots.take(a).is_ok());

        // Behind a trusted proxy: one address may take every slot.
        let proxied = ConnectionSlots::new(16, Some(4), true);
        let all: Vec<Slot> = (0..16).map(|_| proxied.take(a).unwrap()).collect();
        assert_eq!(proxied.take(b).unwrap_err(), Shed::Full);
        drop(all);
        assert!(proxied.take(b).is_ok());
    }

    #[test]
    fn ipv6_clients_count_by_their_64() {
        let k = |s: &str| client_key(s.parse().unwrap());
        assert_eq!(k("2001:db8:1:2:aaaa::1"), k("2001:db8:1:2:bbbb::2"));
        assert_ne!(k("2001:db8:1:2::1"), k("2001:db8:1:3::1"));
        assert_eq!(k("::ffff:10.0.0.1"), k("10.0.0.1"));
        assert_ne!(k("10.0.0.1"), k("10.0.0.2"));
    }
}
