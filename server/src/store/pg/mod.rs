//! The PostgreSQL store: the same [`Store`](super::Store) as sled's, on a database that
//! several `pufa-server` instances share (`--database-url`).
//!
//! **Writes.** Every write runs in one transaction that begins by locking
//! the single `pufa_state` row (`SELECT … FOR UPDATE`): the counters it
//! reads there (seq, HLC high-water mark, audit head, …) are the ones it
//! advances, and no other write, on any instance, runs until it commits.
//! Inside, it loads what the write touches in a few set queries, runs the
//! shared logic of [`super::apply`] (judging, merging, conflicts,
//! idempotency, audit entries) against what it loaded, and writes the
//! result with a handful of array (`UNNEST`) statements. A 200 for a push
//! means the transaction committed (synchronous commit: on disk); a crash
//! of the instance or the database at any point leaves all of it or none.
//!
//! **Why the change feed never skips.** Seqs are handed out only under the
//! state-row lock, which is held until commit, and PostgreSQL makes a
//! transaction visible before it releases its locks. So transactions
//! commit in seq order: a snapshot that sees seq n sees every seq below it.
//! A pull reads `pufa_state.seq` and the records up to it in one
//! repeatable-read snapshot, so its `next` never passes a write in flight.
//! (A sequence object would hand out seqs that commit out of order: a
//! reader that saw 11 would never see a 10 committing later.)
//!
//! **Idempotency** is the primary key of `pufa_applied`: a retry on another
//! instance finds the first application (the lock orders them), and a
//! second insert could not commit even if the logic were wrong.
//!
//! **Caches.** Each instance keeps the org tree and the aggregates in
//! memory, as sled does, and catches up before using them: aggregate rows
//! carry the write generation (`gen`) that last wrote them, so a reader
//! fetches only rows newer than its copy, and the org tree reloads when
//! `org_version` moved. Totals never scan records. A write computes the
//! entries it changes on a scratch copy of just the units it touches and
//! puts them into the shared copy only after it committed: readers never
//! count a write in flight, and a write that fails or is cancelled leaves
//! nothing behind (`tests/tests/pg_cancelled.rs`).
//!
//! **HLC.** Each instance has its own clock; every write merges it with the
//! stored high-water mark first, so restamps and resolutions stay ahead of
//! every HLC stored, whichever instance makes them.

mod admin;
mod cache;
mod duplicates;
mod open;
mod people;
mod periods;
mod read;
pub(crate) mod schema;
mod staging;
mod sync;
mod write;

use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::Pool;
use pufa_core::hlc::HlcClock;
use pufa_core::merge::RecordState;
use pufa_core::org::OrgTree;
use pufa_core::totals::Aggregates;
use pufa_core::wire::MutationResult;
use tokio_postgres::Row;
use uuid::Uuid;

use super::codec;
use super::commit::PushQueue;
use super::{BackupChunks, MaintenanceStore, StoreError};
use crate::config::{IdSource, RejectionsKept};

pub(crate) use open::pool;
pub use open::redacted;

/// Longest wait for a pooled connection, in seconds, before a request is
/// answered 503 (retryable): the database is down or every connection busy.
pub(crate) const POOL_WAIT_SECS: u64 = 10;
/// Longest wait to open a new connection to the database, in seconds.
pub(crate) const CONNECT_TIMEOUT_SECS: u64 = 5;
/// Longest `/v1/health` waits for the database, in milliseconds, before
/// answering 503 (a load balancer's check must not hang).
pub(crate) const READY_TIMEOUT_MS: u64 = 2_000;
/// Rows fetched per round trip when a read scans (feed, records, lists).
const SCAN_CHUNK: i64 = 2_000;

/// What the PostgreSQL store is opened with: the part of the server's
/// `Config` it needs (`Config::pg_store` builds it).
#[derive(Clone)]
pub(crate) struct PgConfig {
    /// `postgres://…` (`--database-url`).
    pub(crate) url: String,
    /// Connections this instance keeps to the database.
    pub(crate) pool_size: usize,
    /// How many rejected mutations to keep.
    pub(crate) rejections_kept: RejectionsKept,
    /// New store ids and conflict ids.
    pub(crate) ids: Arc<dyn IdSource>,
}

/// A database error as the store's: connection trouble, a database going
/// down or restarting, and serialization failures are retryable (503).
pub(crate) fn pg_err(e: tokio_postgres::Error) -> StoreError {
    use tokio_postgres::error::SqlState;
    let Some(db) = e.as_db_error() else {
        // Not the server's answer: the connection broke, or never was.
        return StoreError::Unavailable(format!("database: {e}"));
    };
    // tokio-postgres's own text for these is just "db error".
    let text = format!("database: {} (SQLSTATE {})", db.message(), db.code().code());
    let code = db.code();
    if code.code().starts_with("08")
        || code.code().starts_with("53")
        || code.code().starts_with("57P")
        || *code == SqlState::T_R_SERIALIZATION_FAILURE
        || *code == SqlState::T_R_DEADLOCK_DETECTED
        || *code == SqlState::READ_ONLY_SQL_TRANSACTION
    {
        StoreError::Unavailable(text)
    } else {
        StoreError::Other(text)
    }
}

fn pool_err(e: deadpool_postgres::PoolError) -> StoreError {
    match e {
        deadpool_postgres::PoolError::Backend(e) => pg_err(e),
        other => StoreError::Unavailable(format!("database: {other}")),
    }
}

/// Seqs, counters and times are u64 in the store and bigint in SQL.
fn big(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn small(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// The PostgreSQL-backed [`Store`](super::Store).
pub(crate) struct PgStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    /// [`unsafe_settings`] of the database, read at start-up.
    warnings: Vec<String>,
    store_id: Uuid,
    ids: Arc<dyn IdSource>,
    rejections_kept: RejectionsKept,
    /// This instance's HLC (merged with the stored one in every write).
    hlc: Mutex<HlcClock>,
    org: RwLock<(i64, Arc<OrgTree>)>,
    agg: RwLock<AggCache>,
    /// One catch-up at a time: two interleaved ones could apply an older
    /// row after a newer one.
    refresh: tokio::sync::Mutex<()>,
    /// Pushes waiting for the next group from this instance, and whose turn
    /// it is to push.
    pushes: PushQueue<Vec<MutationResult>>,
}

struct AggCache {
    /// The write generation this copy reflects; `None`: rebuild it.
    gen: Option<i64>,
    agg: Aggregates,
}

/// The counters of `pufa_state`, as a write read them.
#[derive(Clone, Debug)]
struct State {
    seq: u64,
    hlc: HlcClock,
    rejections: u64,
    audit: (u64, codec::Hash),
    gen: i64,
    org_version: i64,
    admin: Option<Uuid>,
}

fn hash_of(bytes: &[u8]) -> Result<codec::Hash, StoreError> {
    bytes
        .try_into()
        .map_err(|_| StoreError::Corrupt("malformed audit hash in pufa_state".into()))
}

impl Inner {
    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(pool_err)
    }

    fn tree(&self) -> Arc<OrgTree> {
        self.org.read().unwrap_or_else(|e| e.into_inner()).1.clone()
    }

    fn record_of(
        row: &Row,
        body: usize,
        last_entry: usize,
    ) -> Result<(RecordState, u64), StoreError> {
        Ok((
            codec::decode_record(row.get(body))?,
            small(row.get(last_entry)),
        ))
    }
}

#[async_trait]
impl MaintenanceStore for PgStore {
    fn durability_warnings(&self) -> Vec<String> {
        self.inner.warnings.clone()
    }

    async fn ready(&self) -> Result<(), StoreError> {
        let check = async {
            let client = self.inner.client().await?;
            client.simple_query("SELECT 1").await.map_err(pg_err)?;
            Ok::<_, StoreError>(())
        };
        tokio::time::timeout(Duration::from_millis(READY_TIMEOUT_MS), check)
            .await
            .map_err(|_| {
                StoreError::Unavailable(format!(
                    "the database did not answer within {READY_TIMEOUT_MS} ms"
                ))
            })?
    }

    async fn flush(&self) -> Result<(), StoreError> {
        // Every commit is synchronous: nothing is waiting to be flushed.
        Ok(())
    }

    async fn backup(&self, _now_ms: u64) -> Result<BackupChunks, StoreError> {
        Err(StoreError::Unsupported(
            "this server keeps its store in PostgreSQL: back it up with pg_dump or continuous archiving (docs/operations.md)".into(),
        ))
    }
}
