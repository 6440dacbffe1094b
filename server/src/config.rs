//! Server configuration, validated once, and the clock and id sources the
//! server takes from it (so simulations are seeded and deterministic).

use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::{RngCore, SeedableRng};
use uuid::Uuid;

/// Default `--max-skew-secs` (§5).
pub const MAX_SKEW_SECS_DEFAULT: u64 = 300;
/// Default `--max-body-bytes` (§2): 8 MiB.
pub const BODY_BYTES_MAX_DEFAULT: usize = 8 * 1024 * 1024;
/// Default `--cache-mb`: sled's page cache, in MiB. 16 rather than 64:
/// at 500,000 records the server's RSS was 355–374 MiB instead of 448–483,
/// and pushes no slower (`docs/performance.md`); totals never read it.
pub const CACHE_MB_DEFAULT: u64 = 16;
/// Default `--request-timeout-secs`: a request still running after this is
/// answered with `503 timeout`.
pub const REQUEST_TIMEOUT_SECS_DEFAULT: u64 = 30;
/// Rejected mutations kept for coordinators (the newest); older ones are
/// dropped as new ones arrive, so a device pushing garbage in a loop cannot
/// fill the disk.
pub const REJECTIONS_KEPT: u64 = 100_000;
/// Rejected mutations kept per device (its newest): a device's flood of
/// junk evicts its own rejections, not other devices' (other streets').
pub const REJECTIONS_PER_DEVICE_KEPT: u64 = 1_000;
/// Rejected mutations kept of the devices enrolled at one org unit (their
/// newest): many devices of one street flooding together evict only that
/// street's rejections.
pub const REJECTIONS_PER_UNIT_KEPT: u64 = 10_000;
/// Longest value of a rejected mutation kept as pushed, in bytes of its
/// JSON text (the longest any field allows, 2,000 CJK characters, is
/// about 6,000): a longer one is kept as `{"omitted_bytes": N}`.
pub const REJECTION_VALUE_BYTES_MAX: usize = 8 * 1024;
/// Longest rejected mutation kept, in bytes of its JSON text, once its
/// values are bounded: past it the whole `set` is kept as
/// `{"omitted_bytes": N}`.
pub const REJECTION_MUTATION_BYTES_MAX: usize = 32 * 1024;
/// Longest rejection message or field name kept, in characters.
pub const REJECTION_TEXT_CHARS_MAX: usize = 300;
/// Most bytes of rejections (as stored) one listing answers
/// (`GET /v1/rejections`, the dashboard's page): past it the list ends
/// early, as it does at its count limit. 8 MiB: at least 256 rejections
/// of the largest kept size, thousands of ordinary ones.
pub const REJECTIONS_LIST_BYTES_MAX: usize = 8 * 1024 * 1024;
/// How long shutdown waits for in-flight requests before it stops waiting.
pub const SHUTDOWN_DRAIN_SECS: u64 = 10;
/// Connections one instance keeps to PostgreSQL, when it uses it.
pub const PG_POOL_SIZE_DEFAULT: usize = 16;
/// Default `--max-connections`: open client connections served at once.
/// Further connections wait in the kernel's accept queue (they are not
/// refused) until one closes.
pub const CONNECTIONS_MAX_DEFAULT: usize = 1024;
/// Default `--max-connections-per-ip`: connections one client address
/// may hold at once (an IPv6 client counts by its /64). 128 rather than
/// 64: phones in China often share an address through their carrier's or a
/// village's NAT, and 30 phones syncing (1–2 connections each) plus a few
/// browsers (up to 6 each) stay well below it; one address still holds at
/// most an eighth of the default [`CONNECTIONS_MAX_DEFAULT`]. Off with
/// `--trust-proxy`, where every connection comes from the proxy.
pub const CONNECTIONS_PER_IP_MAX_DEFAULT: usize = 128;
/// One slot in this many of `--max-connections` is reserved: once the
/// others are all taken, a reserved slot goes only to a client address that
/// holds no other connection (a health probe, a device syncing), so that a
/// few addresses holding their per-address cap cannot lock everyone out.
pub const CONNECTIONS_RESERVED_DIVISOR: usize = 8;
/// Default `--body-timeout-secs`: once a handler starts reading a request
/// body, the client has this long to deliver it, plus one second for every
/// [`BODY_RATE_MIN_BYTES_PER_SEC_DEFAULT`] bytes it has delivered; a body
/// slower than that is answered `408 body_timeout` and the connection
/// closed. Shorter than the request timeout, so a client trickling a body
/// holds its slot for seconds, not for the whole request timeout.
pub const BODY_TIMEOUT_SECS_DEFAULT: u64 = 10;
/// Default `--body-min-bytes-per-sec` (16 KiB/s): the rate a body must keep
/// up to earn time beyond `--body-timeout-secs`. A 2G phone sends several
/// times that; a client holding a slot with a trickle must spend real
/// bandwidth on it. 0: no extension.
pub const BODY_RATE_MIN_BYTES_PER_SEC_DEFAULT: u64 = 16 * 1024;
/// The listen backlog the binary asks for: connections beyond
/// `--max-connections` wait in it (the kernel caps it at `somaxconn`).
/// Past it, the kernel drops new connection attempts and clients retry them.
pub const LISTEN_BACKLOG: u32 = 1024;
/// Default `--header-timeout-secs`: a connection must deliver a request's
/// whole head (request line and headers; with TLS, the handshake first)
/// within this long of being opened or of its previous answer, or it is
/// closed. Idle keep-alive connections are closed after it too.
pub const HEADER_TIMEOUT_SECS_DEFAULT: u64 = 10;
/// After a storage failure (a full disk), how often the server checks
/// whether the data dir has room again.
pub const STORAGE_CHECK_SECS: u64 = 2;
/// Free bytes the data dir needs before the server reopens a store that
/// failed: 16 MiB, room for several of sled's 512 KiB log segments.
pub const REOPEN_FREE_BYTES_MIN: u64 = 16 * 1024 * 1024;

/// Default `--time-zone`.
pub const TIME_ZONE_DEFAULT: &str = "Asia/Shanghai";

/// Wall-clock time in milliseconds since the Unix epoch.
pub trait Clock: Send + Sync + 'static {
    fn now_ms(&self) -> u64;
}

/// The operating system's clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    }
}

/// A clock that moves only when told to: for tests and simulations.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    pub fn new(ms: u64) -> ManualClock {
        ManualClock(AtomicU64::new(ms))
    }

    pub fn set(&self, ms: u64) {
        self.0.store(ms, Ordering::SeqCst);
    }

    pub fn advance(&self, ms: u64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// Where new ids and token secrets come from.
pub trait IdSource: Send + Sync + 'static {
    /// A new unique id (conflicts, devices, stores).
    fn uuid(&self) -> Uuid;
    /// 32 unpredictable bytes for a token secret.
    fn secret(&self) -> [u8; 32];
}

/// UUID v7 ids and secrets from the operating system's CSPRNG.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemIds;

impl IdSource for SystemIds {
    fn uuid(&self) -> Uuid {
        Uuid::now_v7()
    }

    fn secret(&self) -> [u8; 32] {
        let mut b = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut b);
        b
    }
}

/// Ids from a seeded generator: the same seed gives the same ids.
/// For tests and simulations only: its secrets are predictable.
#[derive(Debug)]
pub struct SeededIds(Mutex<rand_chacha::ChaCha20Rng>);

impl SeededIds {
    pub fn new(seed: u64) -> SeededIds {
        SeededIds(Mutex::new(rand_chacha::ChaCha20Rng::seed_from_u64(seed)))
    }

    fn fill(&self, b: &mut [u8]) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .fill_bytes(b);
    }
}

impl IdSource for SeededIds {
    fn uuid(&self) -> Uuid {
        let mut b = [0u8; 16];
        self.fill(&mut b);
        uuid::Builder::from_random_bytes(b).into_uuid()
    }

    fn secret(&self) -> [u8; 32] {
        let mut b = [0u8; 32];
        self.fill(&mut b);
        b
    }
}

/// Everything the server needs to run.
#[derive(Clone)]
pub struct Config {
    /// Local files: the sled store under `store/`, and `admin.token`.
    pub data_dir: PathBuf,
    /// How far ahead of the server's clock an HLC may be before it is
    /// re-stamped.
    pub max_skew: Duration,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// sled's page cache, in bytes.
    pub cache_bytes: u64,
    pub request_timeout: Duration,
    /// How many rejected mutations to keep ([`REJECTIONS_KEPT`]).
    pub rejections_kept: u64,
    /// How many of one device's rejected mutations to keep
    /// ([`REJECTIONS_PER_DEVICE_KEPT`]).
    pub rejections_per_device_kept: u64,
    /// How many rejected mutations of the devices of one org unit to keep
    /// ([`REJECTIONS_PER_UNIT_KEPT`]).
    pub rejections_per_unit_kept: u64,
    /// Failed `/v1/enroll` attempts, server-wide.
    pub enrol_failures: crate::limits::RateLimit,
    /// Failed `/v1/enroll` attempts per client address (an IPv6 client
    /// counts by its /64), below the server-wide ceiling so that one source
    /// cannot use it all up.
    pub enrol_failures_per_ip: crate::limits::RateLimit,
    /// Per bearer token; `None`: off.
    pub token_rate: Option<crate::limits::RateLimit>,
    /// Per client IP; off unless configured.
    pub ip_rate: Option<crate::limits::RateLimit>,
    /// Take the client IP from `X-Forwarded-For` (behind a reverse proxy).
    pub trust_proxy: bool,
    /// Most client connections served at once ([`CONNECTIONS_MAX_DEFAULT`]).
    pub max_connections: usize,
    /// Most connections one client address holds at once
    /// ([`CONNECTIONS_PER_IP_MAX_DEFAULT`]); `None`: no per-address cap.
    /// Not applied with `trust_proxy`.
    pub max_connections_per_ip: Option<usize>,
    /// Time allowed for a request's head ([`HEADER_TIMEOUT_SECS_DEFAULT`]).
    pub header_timeout: Duration,
    /// Time allowed for a request's body ([`BODY_TIMEOUT_SECS_DEFAULT`]),
    /// extended by `body_rate_min_bytes_per_sec`.
    pub body_timeout: Duration,
    /// [`BODY_RATE_MIN_BYTES_PER_SEC_DEFAULT`]; 0: no extension.
    pub body_rate_min_bytes_per_sec: u64,
    /// Serve HTTPS with this config (`--tls-cert`, `--tls-key`); plain HTTP
    /// when `None`.
    pub tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    /// The zone people read times in (`--time-zone`, [`TIME_ZONE_DEFAULT`]):
    /// the dashboard shows times in it, and `GET /v1/schema` tells the
    /// field app its name.
    pub time_zone: TimeZone,
    /// The address devices reach this server at, e.g.
    /// `https://pufa.example.gov.cn` (`--public-url`): what the enrolment
    /// page's QR code points to. `None`: taken from each request's `Host`.
    pub public_url: Option<String>,
    /// `postgres://…`: keep the store in PostgreSQL instead of the embedded
    /// sled store under `data_dir` (`--database-url`, `PUFA_DATABASE_URL`).
    pub database_url: Option<String>,
    /// Connections this instance keeps to PostgreSQL
    /// ([`PG_POOL_SIZE_DEFAULT`]).
    pub pg_pool_size: usize,
    /// Follow every sled flush with real fsyncs, so that what is
    /// acknowledged survives a power cut, not only a killed process. Off
    /// only to measure what that costs (`--unsafe-no-fsync`).
    pub fsync: bool,
    pub clock: Arc<dyn Clock>,
    pub ids: Arc<dyn IdSource>,
}

impl Config {
    /// Defaults of the contract for a data dir, with the system clock and ids.
    pub fn new(data_dir: impl Into<PathBuf>) -> Config {
        Config {
            data_dir: data_dir.into(),
            max_skew: Duration::from_secs(MAX_SKEW_SECS_DEFAULT),
            max_body_bytes: BODY_BYTES_MAX_DEFAULT,
            cache_bytes: CACHE_MB_DEFAULT * 1024 * 1024,
            request_timeout: Duration::from_secs(REQUEST_TIMEOUT_SECS_DEFAULT),
            rejections_kept: REJECTIONS_KEPT,
            rejections_per_device_kept: REJECTIONS_PER_DEVICE_KEPT,
            rejections_per_unit_kept: REJECTIONS_PER_UNIT_KEPT,
            enrol_failures: crate::limits::RateLimit {
                per_sec: crate::limits::ENROLL_FAILURES_PER_SEC_DEFAULT,
                burst: crate::limits::ENROLL_FAILURES_BURST_DEFAULT,
            },
            enrol_failures_per_ip: crate::limits::RateLimit {
                per_sec: crate::limits::ENROLL_FAILURES_PER_IP_PER_SEC_DEFAULT,
                burst: crate::limits::ENROLL_FAILURES_PER_IP_BURST_DEFAULT,
            },
            token_rate: Some(crate::limits::RateLimit {
                per_sec: crate::limits::TOKEN_RATE_PER_SEC_DEFAULT,
                burst: crate::limits::TOKEN_BURST_DEFAULT,
            }),
            ip_rate: None,
            trust_proxy: false,
            max_connections: CONNECTIONS_MAX_DEFAULT,
            max_connections_per_ip: Some(CONNECTIONS_PER_IP_MAX_DEFAULT),
            header_timeout: Duration::from_secs(HEADER_TIMEOUT_SECS_DEFAULT),
            body_timeout: Duration::from_secs(BODY_TIMEOUT_SECS_DEFAULT),
            body_rate_min_bytes_per_sec: BODY_RATE_MIN_BYTES_PER_SEC_DEFAULT,
            tls: None,
            time_zone: TimeZone::default(),
            public_url: None,
            database_url: None,
            pg_pool_size: PG_POOL_SIZE_DEFAULT,
            fsync: true,
            clock: Arc::new(SystemClock),
            ids: Arc::new(SystemIds),
        }
    }

    pub fn admin_token_path(&self) -> PathBuf {
        self.data_dir.join("admin.token")
    }

    pub fn store_path(&self) -> PathBuf {
        self.data_dir.join("store")
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("data_dir", &self.data_dir)
            .field("max_skew", &self.max_skew)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("cache_bytes", &self.cache_bytes)
            .field("request_timeout", &self.request_timeout)
            .field("max_connections", &self.max_connections)
            .field("max_connections_per_ip", &self.max_connections_per_ip)
            .field("header_timeout", &self.header_timeout)
            .field("body_timeout", &self.body_timeout)
            .field("tls", &self.tls.is_some())
            .field("time_zone", &self.time_zone.name())
            .field("public_url", &self.public_url)
            .field("database", &self.database_url.is_some())
            .field("fsync", &self.fsync)
            .finish_non_exhaustive()
    }
}

/// A zone of the IANA time zone database (bundled in the binary, see the
/// `jiff` dependency), by its canonical name: what people read times in.
/// Always a named zone, never a bare offset, so the field app's browser can
/// be told its name.
#[derive(Clone, PartialEq, Eq)]
pub struct TimeZone {
    name: String,
    zone: jiff::tz::TimeZone,
}

impl TimeZone {
    pub fn utc() -> TimeZone {
        TimeZone {
            name: "UTC".to_string(),
            zone: jiff::tz::TimeZone::UTC,
        }
    }

    /// The canonical IANA name, e.g. `Asia/Shanghai` for `asia/shanghai`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The instant `ms` (Unix milliseconds) on this zone's wall clock.
    /// `None` only for an instant outside years -9999..=9999.
    pub fn wall_clock(&self, ms: i64) -> Option<jiff::Zoned> {
        let at = jiff::Timestamp::from_millisecond(ms).ok()?;
        Some(at.to_zoned(self.zone.clone()))
    }

    /// The day of the instant `ms` on this zone's wall clock (the UTC day
    /// for an instant [`TimeZone::wall_clock`] cannot place).
    pub fn date_of(&self, ms: u64) -> pufa_core::date::Date {
        use pufa_core::date::Date;
        i64::try_from(ms)
            .ok()
            .and_then(|ms| self.wall_clock(ms))
            .and_then(|t| {
                let (m, d) = (t.month().unsigned_abs(), t.day().unsigned_abs());
                Date::from_ymd(i32::from(t.year()), u32::from(m), u32::from(d))
            })
            .unwrap_or_else(|| Date::from_unix_ms(ms))
    }

    /// The last millisecond (Unix ms) of `day` on this zone's wall clock:
    /// what "at the end of `day`" means for figures as of a date. `None`
    /// for a day outside years -9999..=9998.
    pub fn day_end_ms(&self, day: pufa_core::date::Date) -> Option<u64> {
        let (y, m, d) = day.add_days(1).ymd();
        let next = jiff::civil::Date::new(
            i16::try_from(y).ok()?,
            i8::try_from(m).ok()?,
            i8::try_from(d).ok()?,
        )
        .ok()?;
        let start = next.to_zoned(self.zone.clone()).ok()?;
        u64::try_from(start.timestamp().as_millisecond() - 1).ok()
    }

    /// The zone's offset from UTC at the instant `ms`, e.g. `+08:00`.
    pub fn offset_text(&self, ms: i64) -> String {
        let offset = jiff::Timestamp::from_millisecond(ms)
            .map_or_else(|_| jiff::tz::Offset::UTC, |at| self.zone.to_offset(at));
        let secs = offset.seconds();
        let sign = if secs < 0 { '-' } else { '+' };
        let mins = secs.unsigned_abs() / 60;
        format!("{sign}{:02}:{:02}", mins / 60, mins % 60)
    }

    /// Whether the zone's offset from UTC changes in the year after `ms`
    /// (summer time), so that [`TimeZone::offset_text`] holds only for now.
    pub fn offset_changes_within_a_year(&self, ms: i64) -> bool {
        const YEAR_MS: i64 = 366 * 24 * 3_600_000;
        let Ok(at) = jiff::Timestamp::from_millisecond(ms) else {
            return false;
        };
        let now = self.zone.to_offset(at);
        self.zone
            .following(at)
            .take_while(|t| t.timestamp().as_millisecond() <= ms.saturating_add(YEAR_MS))
            .any(|t| t.offset() != now)
    }
}

impl Default for TimeZone {
    /// [`TIME_ZONE_DEFAULT`].
    fn default() -> TimeZone {
        parse_time_zone(TIME_ZONE_DEFAULT).expect("the default zone is in the bundled database")
    }
}

impl fmt::Debug for TimeZone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

/// How many rejected mutations a store keeps: the newest `total`, and of
/// those at most the newest `per_unit` of the devices whose token names
/// one org unit, and the newest `per_device` of each device (at least 1
/// each).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RejectionsKept {
    pub total: u64,
    pub per_unit: u64,
    pub per_device: u64,
}

impl Config {
    pub fn rejections_limits(&self) -> RejectionsKept {
        RejectionsKept {
            total: self.rejections_kept.max(1),
            per_unit: self.rejections_per_unit_kept.max(1),
            per_device: self.rejections_per_device_kept.max(1),
        }
    }

    /// What the PostgreSQL store is opened with, when `--database-url` names
    /// one.
    pub(crate) fn pg_store(&self) -> Option<crate::store::pg::PgConfig> {
        Some(crate::store::pg::PgConfig {
            url: self.database_url.clone()?,
            pool_size: self.pg_pool_size,
            rejections_kept: self.rejections_limits(),
            ids: self.ids.clone(),
        })
    }
}

/// What the sled store under `data_dir` is opened with.
impl From<&Config> for crate::store::sled::SledConfig {
    fn from(config: &Config) -> crate::store::sled::SledConfig {
        crate::store::sled::SledConfig {
            path: config.store_path(),
            cache_bytes: config.cache_bytes,
            fsync: config.fsync,
            rejections_kept: config.rejections_limits(),
            clock: config.clock.clone(),
            ids: config.ids.clone(),
        }
    }
}

/// Reads `--time-zone`: a zone of the IANA time zone database, such as
/// `Asia/Shanghai` or `Europe/Berlin`, or `UTC`; case does not matter.
/// Refusing an unknown name here matters: a browser that does not know the
/// zone would silently show the field app's times in UTC.
///
/// # Errors
/// A message saying the name is unknown and what a zone name looks like.
pub fn parse_time_zone(text: &str) -> Result<TimeZone, String> {
    let unknown = || {
        format!(
            "{text:?} is not a zone of the IANA time zone database; \
             write a name such as Asia/Shanghai, Europe/Berlin or UTC"
        )
    };
    let zone = jiff::tz::db().get(text.trim()).map_err(|_| unknown())?;
    // `Etc/Unknown` is found but names no zone.
    let name = zone.iana_name().ok_or_else(unknown)?.to_string();
    Ok(TimeZone { name, zone })
}

/// Reads `--public-url`: `http://` or `https://` and a host, perhaps with
/// a port; a trailing `/` is dropped. No path: the field app and the API
/// are served from the root of their host.
///
/// # Errors
/// A message naming what is wrong.
pub fn parse_public_url(text: &str) -> Result<String, String> {
    let url = text.trim().trim_end_matches('/');
    let host = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| format!("{text:?} must start with https:// or http://"))?;
    if !plain_host(host) {
        return Err(format!(
            "{text:?} must be a scheme and a host (perhaps with a port), e.g. https://pufa.example.gov.cn, without a path, query or spaces"
        ));
    }
    Ok(url.to_string())
}

/// A host as an address names it: a name or an IP (v6 in brackets),
/// perhaps with `:port`, and nothing else (no path, no spaces, no quotes).
pub fn plain_host(host: &str) -> bool {
    !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_zones_are_zones_of_the_database() {
        let shanghai = parse_time_zone("Asia/Shanghai").unwrap();
        assert_eq!(shanghai.name(), "Asia/Shanghai");
        assert_eq!(shanghai, TimeZone::default());
        // Case does not matter; the canonical name is kept.
        assert_eq!(
            parse_time_zone("europe/BERLIN").unwrap().name(),
            "Europe/Berlin"
        );
        assert_eq!(parse_time_zone("UTC").unwrap(), TimeZone::utc());
        assert_eq!(parse_time_zone("utc").unwrap().name(), "UTC");
        for bad in [
            "Foo/Bar",
            "Etc/Unknown",
            "",
            "Asia/Shang hai",
            "../etc/passwd",
            "+08:00",
        ] {
            let err = parse_time_zone(bad).unwrap_err();
            assert!(
                err.contains(&format!("{bad:?}")) && err.contains("Asia/Shanghai"),
                "{err}"
            );
        }
    }

    #[test]
    fn times_read_on_the_zone_s_wall_clock() {
        // 2020-07-01 00:05 UTC.
        let ms = 1_593_561_900_000;
        let shanghai = TimeZone::default();
        let at = shanghai.wall_clock(ms).unwrap();
        assert_eq!((at.hour(), at.minute()), (8, 5));
        assert_eq!(shanghai.offset_text(ms), "+08:00");
        let berlin = parse_time_zone("Europe/Berlin").unwrap();
        assert_eq!(berlin.offset_text(ms), "+02:00");
        assert_eq!(berlin.offset_text(1_577_836_800_000), "+01:00");
        assert_eq!(
            parse_time_zone("America/St_Johns").unwrap().offset_text(ms),
            "-02:30"
        );
        assert_eq!(TimeZone::utc().offset_text(ms), "+00:00");
        assert!(shanghai.wall_clock(i64::MAX).is_none());
        assert!(!shanghai.offset_changes_within_a_year(ms));
        assert!(berlin.offset_changes_within_a_year(ms));
        assert!(!TimeZone::utc().offset_changes_within_a_year(ms));
    }

    #[test]
    fn a_day_ends_at_midnight_on_the_zones_wall_clock() {
        let d = pufa_core::date::Date::parse("2020-12-31").unwrap();
        // 2021-01-01T00:00+08:00 is 2020-12-31T16:00Z = 1_609_430_400_000.
        assert_eq!(TimeZone::default().day_end_ms(d), Some(1_609_430_399_999));
        assert_eq!(TimeZone::utc().day_end_ms(d), Some(1_609_459_199_999));
    }
}
