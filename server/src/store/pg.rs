//! The PostgreSQL store: the same [`Store`] as sled's, on a database that
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

pub mod schema;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use pufa_core::date::Date;
use pufa_core::hlc::HlcClock;
use pufa_core::merge::RecordState;
use pufa_core::org::{OrgTree, OrgTreeError, Scope};
use pufa_core::report::{self, YearFigures};
use pufa_core::schema::Rejection;
use pufa_core::totals::{self, Aggregates};
use pufa_core::wire::{
    ConflictView, DeviceView, HistoryEntry, Mutation, MutationResult, OrgUnit, RecordView,
    RejectionView, TotalsResponse,
};
use tokio_postgres::types::ToSql;
use tokio_postgres::{IsolationLevel, NoTls, Row};
use uuid::Uuid;

use super::apply::{self, Staging};
use super::codec::{self, decode, encode, Applied, AuditBody, StoredConflict, StoredRejection};
use super::{
    Account, AccountChange, BackupChunks, Device, EnrolmentCode, PullPage, PushInput, RecordPage,
    RecordQuery, Redemption, ResolveOutcome, ScopeChecksum, Session, Store, StoreError, TokenHash,
    LIST_SCAN_MAX, PULL_SCAN_MAX, RECORDS_SCAN_MAX,
};
use crate::config::{Config, IdSource, RejectionsKept, REJECTIONS_LIST_BYTES_MAX};

/// Longest wait for a pooled connection, in seconds, before a request is
/// answered 503 (retryable): the database is down or every connection busy.
pub const POOL_WAIT_SECS: u64 = 10;
/// Longest wait to open a new connection to the database, in seconds.
pub const CONNECT_TIMEOUT_SECS: u64 = 5;
/// Longest `/v1/health` waits for the database, in milliseconds, before
/// answering 503 (a load balancer's check must not hang).
pub const READY_TIMEOUT_MS: u64 = 2_000;
/// Rows fetched per round trip when a read scans (feed, records, lists).
const SCAN_CHUNK: i64 = 2_000;

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

/// The URL without its password, for messages.
pub fn redacted(url: &str) -> String {
    match url.parse::<tokio_postgres::Config>() {
        Ok(c) => {
            let host = c
                .get_hosts()
                .first()
                .map(|h| match h {
                    tokio_postgres::config::Host::Tcp(h) => h.clone(),
                    tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
                })
                .unwrap_or_default();
            format!(
                "postgres://{}@{}/{}",
                c.get_user().unwrap_or(""),
                host,
                c.get_dbname().unwrap_or("")
            )
        }
        Err(_) => "(unparseable database URL)".into(),
    }
}

/// The PostgreSQL-backed [`Store`].
pub struct PgStore {
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
    /// Whose turn it is to push from this instance (see [`PgStore::push`]).
    write_turn: tokio::sync::Mutex<()>,
    /// Pushes waiting for the next group, with where to answer.
    queued: Mutex<Vec<(PushInput, PushReply)>>,
}

type PushReply = tokio::sync::oneshot::Sender<Result<Vec<MutationResult>, StoreError>>;

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

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn hash_of(bytes: &[u8]) -> Result<codec::Hash, StoreError> {
    bytes
        .try_into()
        .map_err(|_| StoreError::Corrupt("malformed audit hash in pufa_state".into()))
}

/// The PostgreSQL settings a `200` for a push relies on: with any of them
/// off, a crash of the database (or of its machine) can lose or corrupt
/// what was acknowledged.
pub const DURABILITY_SETTINGS: [&str; 3] = ["fsync", "synchronous_commit", "full_page_writes"];

/// A warning for each of [`DURABILITY_SETTINGS`] that is off, from
/// `(name, setting)` pairs as `pg_settings` lists them.
pub fn unsafe_settings<'a>(settings: impl IntoIterator<Item = (&'a str, &'a str)>) -> Vec<String> {
    settings
        .into_iter()
        .filter(|(name, setting)| DURABILITY_SETTINGS.contains(name) && *setting == "off")
        .map(|(name, _)| {
            format!(
                "PostgreSQL runs with {name}=off: a crash of the database or its machine can lose acknowledged pushes; set {name}=on (docs/operations.md)"
            )
        })
        .collect()
}

impl PgStore {
    /// Connects to `config.database_url`, migrates the schema (safe from
    /// several instances at once) and creates the store's state on an
    /// empty database.
    ///
    /// # Errors
    /// The database's (unreachable, refused, newer schema), as
    /// [`StoreError`].
    pub async fn open(config: &Config) -> Result<PgStore, StoreError> {
        let url = config
            .database_url
            .as_deref()
            .ok_or_else(|| StoreError::Other("no database URL".into()))?;
        let pool = pool(url, config.pg_pool_size)?;
        let mut client = pool.get().await.map_err(pool_err)?;
        schema::migrate(&mut client).await?;
        let settings = client
            .query(
                "SELECT name, setting FROM pg_settings WHERE name = ANY($1)",
                &[&DURABILITY_SETTINGS.as_slice()],
            )
            .await
            .map_err(pg_err)?;
        let warnings = unsafe_settings(settings.iter().map(|r| (r.get(0), r.get(1))));
        for w in &warnings {
            tracing::warn!("{w}");
        }
        let hlc0 = encode(&HlcClock::default().parts());
        client
            .execute(
                "INSERT INTO pufa_state (id, store_id, seq, hlc, rejections, audit_n, audit_hash, gen, org_version)
                 VALUES (1, $1, 0, $2, 0, 0, $3, 0, 0) ON CONFLICT (id) DO NOTHING",
                &[&config.ids.uuid(), &hlc0, &codec::GENESIS.as_slice()],
            )
            .await
            .map_err(pg_err)?;
        let store_id: Uuid = client
            .query_one("SELECT store_id FROM pufa_state WHERE id = 1", &[])
            .await
            .map_err(pg_err)?
            .get(0);
        drop(client);
        let inner = Arc::new(Inner {
            pool,
            warnings,
            store_id,
            ids: config.ids.clone(),
            rejections_kept: config.rejections_limits(),
            hlc: Mutex::new(HlcClock::default()),
            org: RwLock::new((-1, Arc::new(OrgTree::from_units(Vec::new())))),
            agg: RwLock::new(AggCache {
                gen: None,
                agg: Aggregates::default(),
            }),
            refresh: tokio::sync::Mutex::new(()),
            write_turn: tokio::sync::Mutex::new(()),
            queued: Mutex::new(Vec::new()),
        });
        let client = inner.client().await?;
        inner.catch_up(&**client).await?;
        Ok(PgStore { inner })
    }
}

/// A pool of `size` connections to `url`.
///
/// # Errors
/// An unparseable URL.
pub fn pool(url: &str, size: usize) -> Result<Pool, StoreError> {
    let mut pg: tokio_postgres::Config = url
        .parse()
        .map_err(|e| StoreError::Other(format!("database URL {}: {e}", redacted(url))))?;
    if pg.get_connect_timeout().is_none() {
        pg.connect_timeout(Duration::from_secs(CONNECT_TIMEOUT_SECS));
    }
    if pg.get_application_name().is_none() {
        pg.application_name("pufa-server");
    }
    let mgr = Manager::from_config(
        pg,
        NoTls,
        ManagerConfig {
            // A connection that broke (database restarted) is noticed and
            // replaced when next taken from the pool.
            recycling_method: RecyclingMethod::Verified,
        },
    );
    Pool::builder(mgr)
        .max_size(size.max(1))
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(Duration::from_secs(POOL_WAIT_SECS)))
        .create_timeout(Some(Duration::from_secs(CONNECT_TIMEOUT_SECS)))
        .recycle_timeout(Some(Duration::from_secs(CONNECT_TIMEOUT_SECS)))
        .build()
        .map_err(|e| StoreError::Other(format!("database pool: {e}")))
}

impl Inner {
    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(pool_err)
    }

    fn tree(&self) -> Arc<OrgTree> {
        self.org.read().unwrap_or_else(|e| e.into_inner()).1.clone()
    }

    /// Brings the cached aggregates and org tree up to what the database
    /// has committed; returns the committed seq.
    async fn catch_up(
        &self,
        client: &impl tokio_postgres::GenericClient,
    ) -> Result<u64, StoreError> {
        let _one = self.refresh.lock().await;
        self.catch_up_locked(client).await
    }

    async fn catch_up_locked(
        &self,
        client: &impl tokio_postgres::GenericClient,
    ) -> Result<u64, StoreError> {
        let since = self
            .agg
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .gen
            .unwrap_or(-1);
        // One statement, one snapshot: the state row and the aggregate rows
        // written after `since` agree.
        let rows = client
            .query(
                "SELECT s.gen, s.seq, s.org_version, a.key, a.value
                   FROM pufa_state s LEFT JOIN pufa_aggregates a ON a.gen > $1
                  WHERE s.id = 1",
                &[&since],
            )
            .await
            .map_err(pg_err)?;
        let Some(first) = rows.first() else {
            return Err(StoreError::Corrupt("pufa_state has no row".into()));
        };
        let (gen, seq, org_version): (i64, i64, i64) = (first.get(0), first.get(1), first.get(2));
        let cached_version = self.org.read().unwrap_or_else(|e| e.into_inner()).0;
        if org_version != cached_version {
            let units = client
                .query("SELECT body FROM pufa_org_units", &[])
                .await
                .map_err(pg_err)?
                .iter()
                .map(|r| decode::<OrgUnit>(r.get(0)))
                .collect::<Result<Vec<_>, _>>()?;
            *self.org.write().unwrap_or_else(|e| e.into_inner()) =
                (org_version, Arc::new(OrgTree::from_units(units)));
        }
        let mut cache = self.agg.write().unwrap_or_else(|e| e.into_inner());
        if cache.gen.is_none() {
            cache.agg = Aggregates::default();
        }
        for row in &rows {
            let Some(key) = row.get::<_, Option<&[u8]>>(3) else {
                continue;
            };
            let key = key
                .strip_prefix(codec::AGG)
                .ok_or_else(|| StoreError::Corrupt("aggregate key without g/".into()))?;
            match row.get::<_, Option<&[u8]>>(4) {
                Some(value) => {
                    let (k, v) = codec::decode_agg(key, value)?;
                    cache.agg.replace(k, Some(v));
                }
                None => cache.agg.replace(codec::decode_agg_key(key)?, None),
            }
        }
        cache.agg.note_max_seq(small(seq));
        cache.gen = Some(cache.gen.map_or(gen, |g| g.max(gen)));
        Ok(small(seq))
    }

    /// Begins a write: a transaction holding the state row, with the
    /// caches caught up to it. The refresh guard stays held until the
    /// write has staged its aggregates.
    async fn begin<'c>(
        &self,
        client: &'c mut deadpool_postgres::Object,
    ) -> Result<(deadpool_postgres::Transaction<'c>, State), StoreError> {
        let tx = client.transaction().await.map_err(pg_err)?;
        let row = tx
            .query_one(
                "SELECT seq, hlc, rejections, audit_n, audit_hash, gen, org_version, admin
                   FROM pufa_state WHERE id = 1 FOR UPDATE",
                &[],
            )
            .await
            .map_err(pg_err)?;
        // The org tree and aggregates as of this write: nobody else can
        // commit until it does.
        self.catch_up(&*tx).await?;
        let (ms, c): (u64, u32) = decode(row.get(1))?;
        let stored = HlcClock::from_parts(ms, c);
        let hlc = {
            let mut mine = lock(&self.hlc);
            if stored.parts() > mine.parts() {
                *mine = stored;
            }
            *mine
        };
        let state = State {
            seq: small(row.get(0)),
            hlc,
            rejections: small(row.get(2)),
            audit: (small(row.get(3)), hash_of(row.get(4))?),
            gen: row.get(5),
            org_version: row.get(6),
            admin: row.get(7),
        };
        Ok((tx, state))
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

/// What one write has loaded and staged, for [`apply`]'s logic.
struct PgStaging {
    state: State,
    rejections_kept: RejectionsKept,
    /// Loaded before the logic runs (`None`: no such record), then kept at
    /// their staged state, with their newest audit entry.
    records: HashMap<Uuid, Option<(RecordState, u64)>>,
    applied: HashMap<(Uuid, Uuid), Option<Applied>>,
    devices: HashMap<Uuid, Option<Device>>,
    // Staged writes.
    put_records: Vec<Uuid>,
    new_applied: Vec<(Uuid, Uuid, Applied)>,
    conflicts: Vec<(Uuid, StoredConflict)>,
    /// Number, the pushing device's org unit, what is kept.
    rejections: Vec<(u64, String, StoredRejection)>,
    audit: Vec<(u64, Vec<u8>)>,
    put_devices: Vec<Uuid>,
    changes: Vec<(Option<RecordState>, RecordState)>,
}

impl PgStaging {
    fn new(state: State, rejections_kept: RejectionsKept) -> PgStaging {
        PgStaging {
            state,
            rejections_kept,
            records: HashMap::new(),
            applied: HashMap::new(),
            devices: HashMap::new(),
            put_records: Vec::new(),
            new_applied: Vec::new(),
            conflicts: Vec::new(),
            rejections: Vec::new(),
            audit: Vec::new(),
            put_devices: Vec::new(),
            changes: Vec::new(),
        }
    }

    /// Loads the records `ids` (those not loaded yet).
    async fn load_records(
        &mut self,
        tx: &deadpool_postgres::Transaction<'_>,
        ids: Vec<Uuid>,
    ) -> Result<(), StoreError> {
        let ids: Vec<Uuid> = ids
            .into_iter()
            .filter(|id| !self.records.contains_key(id))
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        if ids.is_empty() {
            return Ok(());
        }
        let st = tx
            .prepare_cached("SELECT id, body, last_entry FROM pufa_records WHERE id = ANY($1)")
            .await
            .map_err(pg_err)?;
        for row in tx.query(&st, &[&ids]).await.map_err(pg_err)? {
            self.records
                .insert(row.get(0), Some(Inner::record_of(&row, 1, 2)?));
        }
        for id in ids {
            self.records.entry(id).or_insert(None);
        }
        Ok(())
    }

    async fn load_devices(
        &mut self,
        tx: &deadpool_postgres::Transaction<'_>,
        ids: Vec<Uuid>,
    ) -> Result<(), StoreError> {
        let st = tx
            .prepare_cached("SELECT id, body FROM pufa_devices WHERE id = ANY($1)")
            .await
            .map_err(pg_err)?;
        for row in tx.query(&st, &[&ids]).await.map_err(pg_err)? {
            self.devices.insert(row.get(0), Some(decode(row.get(1))?));
        }
        for id in ids {
            self.devices.entry(id).or_insert(None);
        }
        Ok(())
    }

    /// Loads the idempotency entries of `keys` (device, mutation).
    async fn load_applied(
        &mut self,
        tx: &deadpool_postgres::Transaction<'_>,
        keys: Vec<(Uuid, Uuid)>,
    ) -> Result<(), StoreError> {
        // A join on the pairs, not `device_id = $1 AND mutation_id = ANY($2)`:
        // a cached generic plan for that walked all of a device's entries
        // (the key's first column) and slowed pushes as they grew.
        let st = tx
            .prepare_cached(
                "SELECT a.device_id, a.mutation_id, a.body
                   FROM UNNEST($1::uuid[], $2::uuid[]) AS k(device_id, mutation_id)
                   JOIN pufa_applied a
                     ON a.device_id = k.device_id AND a.mutation_id = k.mutation_id",
            )
            .await
            .map_err(pg_err)?;
        let (devices, mutations): (Vec<Uuid>, Vec<Uuid>) = keys.iter().copied().unzip();
        for row in tx
            .query(&st, &[&devices, &mutations])
            .await
            .map_err(pg_err)?
        {
            self.applied
                .insert((row.get(0), row.get(1)), Some(decode(row.get(2))?));
        }
        for k in keys {
            self.applied.entry(k).or_insert(None);
        }
        Ok(())
    }

    fn not_loaded(what: &str, id: Uuid) -> StoreError {
        StoreError::Other(format!(
            "internal: {what} {id} was not loaded for this write"
        ))
    }
}

impl Staging for PgStaging {
    fn record(&mut self, id: Uuid) -> Result<Option<RecordState>, StoreError> {
        match self.records.get(&id) {
            Some(r) => Ok(r.as_ref().map(|(r, _)| r.clone())),
            None => Err(PgStaging::not_loaded("record", id)),
        }
    }

    fn applied(&mut self, device: Uuid, mutation: Uuid) -> Result<Option<Applied>, StoreError> {
        match self.applied.get(&(device, mutation)) {
            Some(a) => Ok(a.clone()),
            None => Err(PgStaging::not_loaded("mutation", mutation)),
        }
    }

    fn device(&mut self, id: Uuid) -> Result<Option<Device>, StoreError> {
        match self.devices.get(&id) {
            Some(d) => Ok(d.clone()),
            None => Err(PgStaging::not_loaded("device", id)),
        }
    }

    fn seq(&mut self) -> &mut u64 {
        &mut self.state.seq
    }

    fn hlc(&mut self) -> &mut HlcClock {
        &mut self.state.hlc
    }

    fn reject(
        &mut self,
        device: &Device,
        now_ms: u64,
        m: &Mutation,
        raw: Option<&str>,
        r: &Rejection,
    ) -> Result<(), StoreError> {
        self.state.rejections += 1;
        self.rejections.push((
            self.state.rejections,
            device.org_unit.clone().unwrap_or_default(),
            StoredRejection::new(device.id, now_ms, m, raw, r),
        ));
        Ok(())
    }

    fn log(&mut self, mut body: AuditBody, current_seq: Option<u64>) -> Result<u64, StoreError> {
        body.record_prev = match current_seq {
            Some(_) => match self.records.get(&body.record_id) {
                Some(Some((_, n))) => Some(*n),
                _ => return Err(PgStaging::not_loaded("record", body.record_id)),
            },
            None => None,
        };
        let (n, prev) = self.state.audit;
        body.n = n + 1;
        let (value, hash) = codec::encode_audit(&prev, &body);
        self.audit.push((body.n, value));
        self.state.audit = (body.n, hash);
        Ok(body.n)
    }

    fn put_record(
        &mut self,
        before: Option<RecordState>,
        after: RecordState,
        entry: u64,
    ) -> Result<(), StoreError> {
        self.put_records.push(after.id);
        self.records.insert(after.id, Some((after.clone(), entry)));
        self.changes.push((before, after));
        Ok(())
    }

    fn note_entry(&mut self, record: &RecordState, entry: u64) -> Result<(), StoreError> {
        self.put_records.push(record.id);
        self.records
            .insert(record.id, Some((record.clone(), entry)));
        Ok(())
    }

    fn put_applied(
        &mut self,
        device: Uuid,
        mutation: Uuid,
        applied: Applied,
    ) -> Result<(), StoreError> {
        self.applied
            .insert((device, mutation), Some(applied.clone()));
        self.new_applied.push((device, mutation, applied));
        Ok(())
    }

    fn put_conflict(&mut self, id: Uuid, stored: &StoredConflict) -> Result<(), StoreError> {
        self.conflicts.push((id, stored.clone()));
        Ok(())
    }

    fn put_device(&mut self, device: &Device) -> Result<(), StoreError> {
        self.devices.insert(device.id, Some(device.clone()));
        self.put_devices.push(device.id);
        Ok(())
    }
}

/// Keeps the last of each id, in first-seen order (one row may be
/// written once per statement).
fn last_of<K: Eq + std::hash::Hash + Copy, V>(items: Vec<(K, V)>) -> Vec<(K, V)> {
    let mut seen = HashSet::new();
    let mut out: Vec<(K, V)> = items
        .into_iter()
        .rev()
        .filter(|(k, _)| seen.insert(*k))
        .collect();
    out.reverse();
    out
}

impl Inner {
    /// Writes what `st` staged, advances the state row, and commits; then
    /// updates this instance's caches.
    async fn commit(
        &self,
        tx: deadpool_postgres::Transaction<'_>,
        mut st: PgStaging,
        tree: Option<(Vec<OrgUnit>, Arc<OrgTree>)>,
    ) -> Result<(), StoreError> {
        let gen = st.state.gen + 1;
        // This instance's copy of the aggregates is caught up to the state
        // row (whose lock this write holds) but left untouched until the
        // commit: other requests read it, and this write may still fail or
        // be cancelled. The entries to write come from a scratch copy of
        // just what the changes touch. (`begin` caught the copy up under
        // the lock this write still holds: nothing newer can exist.)
        let dirty = {
            let cache = self.agg.read().unwrap_or_else(|e| e.into_inner());
            let mut scratch = cache.agg.scratch_for(&st.changes);
            drop(cache);
            for (before, after) in &st.changes {
                scratch.apply(before.as_ref(), after);
            }
            scratch.take_dirty()
        };
        self.write_staged(&tx, &mut st, gen, &dirty, tree.as_ref())
            .await?;
        tx.commit().await.map_err(pg_err)?;
        {
            let mut mine = lock(&self.hlc);
            if st.state.hlc.parts() > mine.parts() {
                *mine = st.state.hlc;
            }
        }
        // Committed: install what it wrote, as a catch-up would read it back
        // (unless one already did, or the copy is elsewhere: then the next
        // catch-up reads it).
        {
            let _one = self.refresh.lock().await;
            let mut cache = self.agg.write().unwrap_or_else(|e| e.into_inner());
            if cache.gen == Some(st.state.gen) {
                for (k, v) in dirty {
                    let v = codec::agg_value(&v).is_some().then_some(v);
                    cache.agg.replace(k, v);
                }
                cache.agg.note_max_seq(st.state.seq);
                cache.gen = Some(gen);
            }
        }
        if let Some((_, tree)) = tree {
            *self.org.write().unwrap_or_else(|e| e.into_inner()) = (st.state.org_version, tree);
        }
        Ok(())
    }

    async fn write_staged(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        st: &mut PgStaging,
        gen: i64,
        dirty: &[(pufa_core::totals::AggKey, pufa_core::totals::AggValue)],
        tree: Option<&(Vec<OrgUnit>, Arc<OrgTree>)>,
    ) -> Result<(), StoreError> {
        let exec = |sql: &'static str| async move { tx.prepare_cached(sql).await.map_err(pg_err) };
        if !st.put_records.is_empty() {
            let ids: Vec<Uuid> = last_of(st.put_records.iter().map(|id| (*id, ())).collect())
                .into_iter()
                .map(|(id, ())| id)
                .collect();
            let mut seqs = Vec::with_capacity(ids.len());
            let mut entries = Vec::with_capacity(ids.len());
            let mut units = Vec::with_capacity(ids.len());
            let mut bodies = Vec::with_capacity(ids.len());
            for id in &ids {
                let Some(Some((r, entry))) = st.records.get(id) else {
                    return Err(PgStaging::not_loaded("record", *id));
                };
                seqs.push(big(r.seq));
                entries.push(big(*entry));
                units.push(r.org_unit().map(str::to_string));
                bodies.push(codec::encode_record(r));
            }
            let s = exec(
                "INSERT INTO pufa_records (id, seq, last_entry, org_unit, body)
                 SELECT * FROM UNNEST($1::uuid[], $2::int8[], $3::int8[], $4::text[], $5::bytea[])
                 ON CONFLICT (id) DO UPDATE SET seq = EXCLUDED.seq, last_entry = EXCLUDED.last_entry,
                     org_unit = EXCLUDED.org_unit, body = EXCLUDED.body",
            )
            .await?;
            tx.execute(&s, &[&ids, &seqs, &entries, &units, &bodies])
                .await
                .map_err(pg_err)?;
        }
        if !st.new_applied.is_empty() {
            let mut devices = Vec::with_capacity(st.new_applied.len());
            let mut mutations = Vec::with_capacity(st.new_applied.len());
            let mut bodies = Vec::with_capacity(st.new_applied.len());
            for (d, m, a) in &st.new_applied {
                devices.push(*d);
                mutations.push(*m);
                bodies.push(encode(a));
            }
            // No ON CONFLICT: a second application must fail the write.
            let s = exec(
                "INSERT INTO pufa_applied (device_id, mutation_id, body)
                 SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::bytea[])",
            )
            .await?;
            tx.execute(&s, &[&devices, &mutations, &bodies])
                .await
                .map_err(pg_err)?;
        }
        if !st.conflicts.is_empty() {
            let conflicts = last_of(std::mem::take(&mut st.conflicts));
            let ids: Vec<Uuid> = conflicts.iter().map(|(id, _)| *id).collect();
            let records: Vec<Uuid> = conflicts.iter().map(|(_, c)| c.record_id).collect();
            let seqs: Vec<i64> = conflicts.iter().map(|(_, c)| big(c.seq)).collect();
            let open: Vec<bool> = conflicts.iter().map(|(_, c)| c.open).collect();
            let bodies: Vec<Vec<u8>> = conflicts.iter().map(|(_, c)| encode(c)).collect();
            let s = exec(
                "INSERT INTO pufa_conflicts (id, record_id, seq, open, body)
                 SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::int8[], $4::bool[], $5::bytea[])
                 ON CONFLICT (id) DO UPDATE SET open = EXCLUDED.open, body = EXCLUDED.body",
            )
            .await?;
            tx.execute(&s, &[&ids, &records, &seqs, &open, &bodies])
                .await
                .map_err(pg_err)?;
        }
        if !st.rejections.is_empty() {
            let ns: Vec<i64> = st.rejections.iter().map(|(n, ..)| big(*n)).collect();
            let devices: Vec<Uuid> = st.rejections.iter().map(|(.., r)| r.device_id).collect();
            let units: Vec<&str> = st.rejections.iter().map(|(_, u, _)| u.as_str()).collect();
            let bodies: Vec<Vec<u8>> = st.rejections.iter().map(|(.., r)| encode(r)).collect();
            let s = exec(
                "INSERT INTO pufa_rejections (n, device_id, org_unit, body)
                 SELECT * FROM UNNEST($1::int8[], $2::uuid[], $3::text[], $4::bytea[])",
            )
            .await?;
            tx.execute(&s, &[&ns, &devices, &units, &bodies])
                .await
                .map_err(pg_err)?;
            // Keep each device's newest REJECTIONS_PER_DEVICE_KEPT and each
            // unit's newest REJECTIONS_PER_UNIT_KEPT, so that a flood evicts
            // only its own device's and street's, and then the store's
            // newest REJECTIONS_KEPT, so that many devices cannot fill the
            // disk either.
            let by: [(&str, &(dyn ToSql + Sync), u64); 2] = [
                ("device_id", &devices, st.rejections_kept.per_device),
                ("org_unit", &units, st.rejections_kept.per_unit),
            ];
            for (column, keys, keep) in by {
                let sql = format!(
                    "DELETE FROM pufa_rejections WHERE n IN (
                         SELECT n FROM (
                             SELECT n, row_number() OVER (PARTITION BY {column} ORDER BY n DESC) AS k
                             FROM pufa_rejections WHERE {column} = ANY($1)) newest
                         WHERE k > $2)"
                );
                let s = tx.prepare_cached(&sql).await.map_err(pg_err)?;
                tx.execute(&s, &[keys, &big(keep)]).await.map_err(pg_err)?;
            }
            let s = exec(
                "DELETE FROM pufa_rejections WHERE n <= (
                     SELECT n FROM pufa_rejections ORDER BY n DESC OFFSET $1 LIMIT 1)",
            )
            .await?;
            tx.execute(&s, &[&big(st.rejections_kept.total)])
                .await
                .map_err(pg_err)?;
        }
        if !st.audit.is_empty() {
            let ns: Vec<i64> = st.audit.iter().map(|(n, _)| big(*n)).collect();
            let values: Vec<&[u8]> = st.audit.iter().map(|(_, v)| v.as_slice()).collect();
            let s = exec(
                "INSERT INTO pufa_audit (n, value) SELECT * FROM UNNEST($1::int8[], $2::bytea[])",
            )
            .await?;
            tx.execute(&s, &[&ns, &values]).await.map_err(pg_err)?;
        }
        for id in last_of(st.put_devices.iter().map(|id| (*id, ())).collect()) {
            let Some(Some(d)) = st.devices.get(&id.0) else {
                continue;
            };
            let s = exec("UPDATE pufa_devices SET body = $2 WHERE id = $1").await?;
            tx.execute(&s, &[&d.id, &encode(d)]).await.map_err(pg_err)?;
        }
        if !dirty.is_empty() {
            let keys: Vec<Vec<u8>> = dirty.iter().map(|(k, _)| codec::agg_key(k)).collect();
            let values: Vec<Option<Vec<u8>>> =
                dirty.iter().map(|(_, v)| codec::agg_value(v)).collect();
            let s = exec(
                "INSERT INTO pufa_aggregates (key, gen, value)
                 SELECT k, $2, v FROM UNNEST($1::bytea[], $3::bytea[]) AS u(k, v)
                 ON CONFLICT (key) DO UPDATE SET gen = EXCLUDED.gen, value = EXCLUDED.value",
            )
            .await?;
            tx.execute(&s, &[&keys, &gen, &values])
                .await
                .map_err(pg_err)?;
        }
        if let Some((units, _)) = tree {
            let codes: Vec<&str> = units.iter().map(|u| u.code.as_str()).collect();
            let bodies: Vec<Vec<u8>> = units.iter().map(encode).collect();
            let s = exec(
                "INSERT INTO pufa_org_units (code, body) SELECT * FROM UNNEST($1::text[], $2::bytea[])
                 ON CONFLICT (code) DO UPDATE SET body = EXCLUDED.body",
            )
            .await?;
            tx.execute(&s, &[&codes, &bodies]).await.map_err(pg_err)?;
            st.state.org_version += 1;
        }
        let s = exec(
            "UPDATE pufa_state SET seq = $1, hlc = $2, rejections = $3, audit_n = $4,
                 audit_hash = $5, gen = $6, org_version = $7, admin = $8
              WHERE id = 1",
        )
        .await?;
        tx.execute(
            &s,
            &[
                &big(st.state.seq),
                &encode(&st.state.hlc.parts()),
                &big(st.state.rejections),
                &big(st.state.audit.0),
                &st.state.audit.1.as_slice(),
                &gen,
                &st.state.org_version,
                &st.state.admin,
            ],
        )
        .await
        .map_err(pg_err)?;
        Ok(())
    }

    /// Inserts or replaces a device and its live token (inside a write).
    async fn upsert_device(
        tx: &deadpool_postgres::Transaction<'_>,
        device: &Device,
    ) -> Result<(), StoreError> {
        let token: Option<&[u8]> = (!device.revoked).then_some(device.token_hash.as_slice());
        tx.execute(
            "INSERT INTO pufa_devices (id, token_hash, body) VALUES ($1, $2, $3)
             ON CONFLICT (id) DO UPDATE SET token_hash = EXCLUDED.token_hash, body = EXCLUDED.body",
            &[&device.id, &token, &encode(device)],
        )
        .await
        .map_err(pg_err)?;
        Ok(())
    }

    /// Stores a device and its token (`bootstrap`: as the bootstrap admin,
    /// unless there is one already). Returns whether it was stored.
    async fn device_write(&self, device: Device, bootstrap: bool) -> Result<bool, StoreError> {
        let mut client = self.client().await?;
        let (tx, state) = self.begin(&mut client).await?;
        let mut st = PgStaging::new(state, self.rejections_kept);
        if bootstrap {
            if st.state.admin.is_some() {
                tx.rollback().await.map_err(pg_err)?;
                return Ok(false);
            }
            st.state.admin = Some(device.id);
        }
        Inner::upsert_device(&tx, &device).await?;
        self.commit(tx, st, None).await?;
        Ok(true)
    }

    /// Applies several pushes in one transaction (group apply): the pushes
    /// that queued on this instance while the previous group ran share its
    /// lock, round trips and commit.
    async fn push_group(
        &self,
        inputs: &[PushInput],
    ) -> Result<Vec<Vec<MutationResult>>, StoreError> {
        let mut client = self.client().await?;
        let (tx, state) = self.begin(&mut client).await?;
        let mut st = PgStaging::new(state, self.rejections_kept);
        st.load_records(
            &tx,
            inputs
                .iter()
                .flat_map(|i| i.mutations.iter().map(|m| m.record_id))
                .collect(),
        )
        .await?;
        st.load_applied(
            &tx,
            inputs
                .iter()
                .flat_map(|i| i.mutations.iter().map(|m| (i.device.id, m.id)))
                .collect(),
        )
        .await?;
        st.load_devices(&tx, inputs.iter().map(|i| i.device.id).collect())
            .await?;
        let tree = self.tree();
        let mut all = Vec::with_capacity(inputs.len());
        for input in inputs {
            all.push(apply::push(&mut st, self.ids.as_ref(), &tree, input)?);
        }
        self.commit(tx, st, None).await?;
        Ok(all)
    }
}

/// One page of the feed from one snapshot (see [`PgStore::pull`]).
async fn pull_page(
    tx: &deadpool_postgres::Transaction<'_>,
    tree: &OrgTree,
    scope: &Scope,
    since: u64,
    limit: usize,
) -> Result<PullPage, StoreError> {
    let watermark = small(
        tx.query_one("SELECT seq FROM pufa_state WHERE id = 1", &[])
            .await
            .map_err(pg_err)?
            .get(0),
    );
    let mut entries = Vec::new();
    if since >= watermark {
        return Ok(PullPage {
            entries,
            next: since,
            has_more: false,
        });
    }
    let st = tx
        .prepare_cached(
            "SELECT seq, body FROM pufa_records WHERE seq > $1 AND seq <= $2
                  ORDER BY seq LIMIT $3",
        )
        .await
        .map_err(pg_err)?;
    let chunk = big(limit as u64 + 1).clamp(256, SCAN_CHUNK);
    let mut after = since;
    let mut scanned = 0;
    loop {
        let rows = tx
            .query(&st, &[&big(after), &big(watermark), &chunk])
            .await
            .map_err(pg_err)?;
        let full = rows.len() as i64 == chunk;
        for (i, row) in rows.iter().enumerate() {
            let seq = small(row.get(0));
            let rec = codec::decode_record(row.get(1))?;
            scanned += 1;
            after = seq;
            debug_assert_eq!(rec.seq, seq, "a record row is at its own seq");
            entries.extend(rec.pull_entry(tree, scope));
            if entries.len() >= limit || scanned >= PULL_SCAN_MAX {
                let has_more = i + 1 < rows.len()
                    || (full
                        && tx
                            .query_opt(&st, &[&big(seq), &big(watermark), &1i64])
                            .await
                            .map_err(pg_err)?
                            .is_some());
                return Ok(PullPage {
                    entries,
                    next: if has_more { seq } else { watermark },
                    has_more,
                });
            }
        }
        if !full {
            return Ok(PullPage {
                entries,
                next: watermark,
                has_more: false,
            });
        }
    }
}

#[async_trait]
impl Store for PgStore {
    fn store_id(&self) -> Uuid {
        self.inner.store_id
    }

    fn org_tree(&self) -> Arc<OrgTree> {
        self.inner.tree()
    }

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

    async fn authenticate(&self, hash: TokenHash) -> Result<Option<Device>, StoreError> {
        let client = self.inner.client().await?;
        // Every authenticated request passes here: catching up keeps this
        // instance's org tree no older than the request.
        self.inner.catch_up(&**client).await?;
        let st = client
            .prepare_cached("SELECT body FROM pufa_devices WHERE token_hash = $1")
            .await
            .map_err(pg_err)?;
        let Some(row) = client
            .query_opt(&st, &[&hash.as_slice()])
            .await
            .map_err(pg_err)?
        else {
            return Ok(None);
        };
        let d: Device = decode(row.get(0))?;
        Ok((!d.revoked && d.token_hash == hash).then_some(d))
    }

    async fn device(&self, id: Uuid) -> Result<Option<Device>, StoreError> {
        let client = self.inner.client().await?;
        client
            .query_opt("SELECT body FROM pufa_devices WHERE id = $1", &[&id])
            .await
            .map_err(pg_err)?
            .map(|r| decode(r.get(0)))
            .transpose()
    }

    async fn admin_bootstrapped(&self) -> Result<bool, StoreError> {
        let client = self.inner.client().await?;
        let row = client
            .query_one("SELECT admin IS NOT NULL FROM pufa_state WHERE id = 1", &[])
            .await
            .map_err(pg_err)?;
        Ok(row.get(0))
    }

    async fn bootstrap_admin(&self, device: Device) -> Result<bool, StoreError> {
        // Several instances may start on an empty database at once: the
        // first to take the lock makes the admin; the others learn so.
        self.inner.device_write(device, true).await
    }

    async fn put_device(&self, device: Device) -> Result<(), StoreError> {
        self.inner.device_write(device, false).await.map(|_| ())
    }

    async fn revoke_device(&self, id: Uuid) -> Result<bool, StoreError> {
        let mut client = self.inner.client().await?;
        let (tx, state) = self.inner.begin(&mut client).await?;
        // Read under the lock: a push may be updating its health.
        let Some(row) = tx
            .query_opt("SELECT body FROM pufa_devices WHERE id = $1", &[&id])
            .await
            .map_err(pg_err)?
        else {
            tx.rollback().await.map_err(pg_err)?;
            return Ok(false);
        };
        let mut d: Device = decode(row.get(0))?;
        d.revoked = true;
        Inner::upsert_device(&tx, &d).await?;
        self.inner
            .commit(tx, PgStaging::new(state, self.inner.rejections_kept), None)
            .await?;
        Ok(true)
    }

    async fn upsert_org_units(
        &self,
        units: Vec<OrgUnit>,
        by: &Device,
        now_ms: u64,
    ) -> Result<Result<usize, OrgTreeError>, StoreError> {
        let mut client = self.inner.client().await?;
        let (tx, state) = self.inner.begin(&mut client).await?;
        let old = self.inner.tree();
        let (next, moved) = match old.with_upserts(&units) {
            Ok(x) => x,
            Err(e) => {
                tx.rollback().await.map_err(pg_err)?;
                return Ok(Err(e));
            }
        };
        let mut st = PgStaging::new(state, self.inner.rejections_kept);
        // Every record below a re-parented unit changes scope: new seq, and
        // its `ever` learns the new ancestors (§4).
        if !moved.is_empty() {
            let affected: Vec<String> = moved
                .iter()
                .flat_map(|code| next.subtree(code))
                .map(|u| u.code.clone())
                .collect::<HashSet<_>>()
                .into_iter()
                .collect();
            let rows = tx
                .query(
                    "SELECT id, body, last_entry FROM pufa_records
                      WHERE org_unit = ANY($1) ORDER BY id",
                    &[&affected],
                )
                .await
                .map_err(pg_err)?;
            let mut befores = Vec::with_capacity(rows.len());
            for row in &rows {
                let (r, entry) = Inner::record_of(row, 1, 2)?;
                st.records.insert(r.id, Some((r.clone(), entry)));
                befores.push(r);
            }
            for before in befores {
                apply::move_record(&mut st, before, &old, &next, by, now_ms)?;
            }
        }
        let n = units.len();
        self.inner
            .commit(tx, st, Some((units, Arc::new(next))))
            .await?;
        Ok(Ok(n))
    }

    async fn push(&self, input: PushInput) -> Result<Vec<MutationResult>, StoreError> {
        let (reply, mut answer) = tokio::sync::oneshot::channel();
        lock(&self.inner.queued).push((input, reply));
        let turn = self.inner.write_turn.lock().await;
        // An earlier turn may have taken this push with its group.
        if let Ok(answer) = answer.try_recv() {
            return answer;
        }
        let jobs = std::mem::take(&mut *lock(&self.inner.queued));
        if !jobs.is_empty() {
            // Its own task, so that the answers go out even if this request
            // is dropped (timeout, disconnect) meanwhile.
            let inner = self.inner.clone();
            let group = tokio::spawn(async move {
                let (inputs, replies): (Vec<_>, Vec<_>) = jobs.into_iter().unzip();
                match inner.push_group(&inputs).await {
                    Ok(results) => {
                        for (reply, r) in replies.into_iter().zip(results) {
                            let _ = reply.send(Ok(r));
                        }
                    }
                    Err(e) => {
                        for reply in replies {
                            let _ = reply.send(Err(e.again()));
                        }
                    }
                }
            });
            let _ = group.await;
        }
        drop(turn);
        answer
            .await
            .map_err(|_| StoreError::Other("push lost its reply".into()))?
    }

    async fn pull(&self, scope: Scope, since: u64, limit: usize) -> Result<PullPage, StoreError> {
        let mut client = self.inner.client().await?;
        self.inner.catch_up(&**client).await?;
        let tree = self.inner.tree();
        // One snapshot for the watermark and the rows below it.
        let tx = client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(pg_err)?;
        let page = pull_page(&tx, &tree, &scope, since, limit).await?;
        // Read-only: ending it either way releases the snapshot now rather
        // than when the pooled connection is next used.
        tx.commit().await.map_err(pg_err)?;
        Ok(page)
    }

    async fn note_pull(&self, device: Uuid, now_ms: u64) -> Result<(), StoreError> {
        let client = self.inner.client().await?;
        client
            .execute(
                "UPDATE pufa_devices SET last_pull_ms = $2 WHERE id = $1",
                &[&device, &big(now_ms)],
            )
            .await
            .map_err(pg_err)?;
        Ok(())
    }

    async fn checksum(&self, scope: &Scope) -> Result<ScopeChecksum, StoreError> {
        let client = self.inner.client().await?;
        self.inner.catch_up(&**client).await?;
        let tree = self.inner.tree();
        let cache = self.inner.agg.read().unwrap_or_else(|e| e.into_inner());
        let (seq, count, xor) = match scope {
            Scope::All => cache.agg.checksum_all(),
            Scope::Unit(root) => cache.agg.checksum_scope(&tree, root),
        };
        Ok(ScopeChecksum { seq, count, xor })
    }

    async fn totals(
        &self,
        org: &str,
        from: Option<Date>,
        to: Option<Date>,
    ) -> Result<Option<TotalsResponse>, StoreError> {
        let client = self.inner.client().await?;
        self.inner.catch_up(&**client).await?;
        let tree = self.inner.tree();
        let cache = self.inner.agg.read().unwrap_or_else(|e| e.into_inner());
        Ok(totals::totals(&tree, &cache.agg, org, from, to))
    }

    async fn year_figures(&self, org: &str, year: i32) -> Result<Option<YearFigures>, StoreError> {
        let client = self.inner.client().await?;
        self.inner.catch_up(&**client).await?;
        let tree = self.inner.tree();
        let cache = self.inner.agg.read().unwrap_or_else(|e| e.into_inner());
        Ok(report::year_figures(&tree, &cache.agg, org, year))
    }

    async fn records(&self, q: RecordQuery) -> Result<RecordPage, StoreError> {
        let client = self.inner.client().await?;
        self.inner.catch_up(&**client).await?;
        let tree = self.inner.tree();
        // Two statements rather than `$1 IS NULL OR id > $1`, which a
        // cached generic plan would answer by scanning from the start.
        let first = client
            .prepare_cached("SELECT id, body FROM pufa_records ORDER BY id LIMIT $1")
            .await
            .map_err(pg_err)?;
        let next = client
            .prepare_cached("SELECT id, body FROM pufa_records WHERE id > $1 ORDER BY id LIMIT $2")
            .await
            .map_err(pg_err)?;
        let mut after = q.after;
        let mut records: Vec<RecordView> = Vec::new();
        let mut examined = 0;
        let mut last_examined = None;
        loop {
            let rows = match after {
                None => client.query(&first, &[&SCAN_CHUNK]).await,
                Some(id) => client.query(&next, &[&id, &SCAN_CHUNK]).await,
            }
            .map_err(pg_err)?;
            for row in &rows {
                if examined == RECORDS_SCAN_MAX {
                    return Ok(RecordPage {
                        records,
                        next: last_examined,
                    });
                }
                let r = codec::decode_record(row.get(1))?;
                examined += 1;
                last_examined = Some(r.id);
                after = Some(r.id);
                let in_scope = r.org_unit().is_some_and(|u| tree.in_scope(u, &q.scope));
                if !in_scope || !q.behind.counts(&r) {
                    continue;
                }
                if records.len() == q.limit {
                    return Ok(RecordPage {
                        next: records.last().map(|v| v.id),
                        records,
                    });
                }
                records.push(r.view());
            }
            if (rows.len() as i64) < SCAN_CHUNK {
                return Ok(RecordPage {
                    records,
                    next: None,
                });
            }
        }
    }

    async fn record(&self, id: Uuid) -> Result<Option<RecordView>, StoreError> {
        let client = self.inner.client().await?;
        client
            .query_opt("SELECT body FROM pufa_records WHERE id = $1", &[&id])
            .await
            .map_err(pg_err)?
            .map(|r| codec::decode_record(r.get(0)).map(|r| r.view()))
            .transpose()
    }

    async fn conflicts(&self, scope: Scope, limit: usize) -> Result<Vec<ConflictView>, StoreError> {
        let client = self.inner.client().await?;
        self.inner.catch_up(&**client).await?;
        let tree = self.inner.tree();
        let rows = client
            .query(
                "SELECT c.id, c.body, r.body FROM pufa_conflicts c
                   JOIN pufa_records r ON r.id = c.record_id
                  WHERE c.open ORDER BY c.seq DESC, c.id DESC LIMIT $1",
                &[&big(LIST_SCAN_MAX as u64)],
            )
            .await
            .map_err(pg_err)?;
        let mut out = Vec::new();
        for row in rows {
            let id: Uuid = row.get(0);
            let c: StoredConflict = decode(row.get(1))?;
            let rec = codec::decode_record(row.get(2))?;
            if rec.org_unit().is_some_and(|u| tree.in_scope(u, &scope)) {
                out.push(c.conflict.view(id, c.record_id, c.seq));
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    async fn resolve(
        &self,
        conflict: Uuid,
        value: serde_json::Value,
        by: &Device,
        person: Option<String>,
        now_ms: u64,
    ) -> Result<ResolveOutcome, StoreError> {
        let mut client = self.inner.client().await?;
        let (tx, state) = self.inner.begin(&mut client).await?;
        let Some(row) = tx
            .query_opt(
                "SELECT body FROM pufa_conflicts WHERE id = $1",
                &[&conflict],
            )
            .await
            .map_err(pg_err)?
        else {
            tx.rollback().await.map_err(pg_err)?;
            return Ok(ResolveOutcome::NotFound);
        };
        let stored: StoredConflict = decode(row.get(0))?;
        let mut st = PgStaging::new(state, self.inner.rejections_kept);
        st.load_records(&tx, vec![stored.record_id]).await?;
        let tree = self.inner.tree();
        let outcome = apply::resolve(&mut st, &tree, conflict, stored, value, by, person, now_ms)?;
        if matches!(outcome, ResolveOutcome::Resolved(_)) {
            self.inner.commit(tx, st, None).await?;
        } else {
            tx.rollback().await.map_err(pg_err)?;
        }
        Ok(outcome)
    }

    async fn devices(&self, scope: Scope, limit: usize) -> Result<Vec<DeviceView>, StoreError> {
        let client = self.inner.client().await?;
        self.inner.catch_up(&**client).await?;
        let tree = self.inner.tree();
        let rows = client
            .query(
                "SELECT body, last_pull_ms FROM pufa_devices ORDER BY id",
                &[],
            )
            .await
            .map_err(pg_err)?;
        let mut out = Vec::new();
        for row in rows {
            let d: Device = decode(row.get(0))?;
            if d.visible_in(&tree, &scope) {
                out.push(d.view(row.get::<_, Option<i64>>(1).map(small)));
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    async fn rejections(
        &self,
        scope: Scope,
        limit: usize,
    ) -> Result<Vec<RejectionView>, StoreError> {
        let client = self.inner.client().await?;
        self.inner.catch_up(&**client).await?;
        let tree = self.inner.tree();
        let mut visible: HashMap<Uuid, bool> = HashMap::new();
        for row in client
            .query("SELECT body FROM pufa_devices", &[])
            .await
            .map_err(pg_err)?
        {
            let d: Device = decode(row.get(0))?;
            visible.insert(d.id, d.visible_in(&tree, &scope));
        }
        // Streamed, so that no more than one body at a time is held
        // beyond what the answer keeps.
        let rows = client
            .query_raw(
                "SELECT body FROM pufa_rejections ORDER BY n DESC LIMIT $1",
                [big(LIST_SCAN_MAX as u64)],
            )
            .await
            .map_err(pg_err)?;
        futures_util::pin_mut!(rows);
        let mut out = Vec::new();
        let mut bytes = 0;
        while let Some(row) = futures_util::TryStreamExt::try_next(&mut rows)
            .await
            .map_err(pg_err)?
        {
            let body: &[u8] = row.get(0);
            let r: StoredRejection = decode(body)?;
            if visible.get(&r.device_id).copied().unwrap_or(false) {
                bytes += codec::rejection_listed_bytes(body.len());
                if bytes > REJECTIONS_LIST_BYTES_MAX && !out.is_empty() {
                    break;
                }
                out.push(r.view()?);
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    async fn flush(&self) -> Result<(), StoreError> {
        // Every commit is synchronous: nothing is waiting to be flushed.
        Ok(())
    }

    async fn account(&self, username: &str) -> Result<Option<Account>, StoreError> {
        let client = self.inner.client().await?;
        client
            .query_opt(
                "SELECT body FROM pufa_accounts WHERE username = $1",
                &[&username],
            )
            .await
            .map_err(pg_err)?
            .map(|r| decode(r.get(0)))
            .transpose()
    }

    async fn accounts(&self, limit: usize) -> Result<Vec<Account>, StoreError> {
        let client = self.inner.client().await?;
        client
            .query(
                "SELECT body FROM pufa_accounts ORDER BY username LIMIT $1",
                &[&big(limit as u64)],
            )
            .await
            .map_err(pg_err)?
            .iter()
            .map(|r| decode(r.get(0)))
            .collect()
    }

    async fn create_account(&self, account: Account) -> Result<bool, StoreError> {
        let client = self.inner.client().await?;
        let n = client
            .execute(
                "INSERT INTO pufa_accounts (username, body) VALUES ($1, $2)
                 ON CONFLICT (username) DO NOTHING",
                &[&account.username, &encode(&account)],
            )
            .await
            .map_err(pg_err)?;
        Ok(n == 1)
    }

    async fn change_account(
        &self,
        username: &str,
        change: AccountChange,
    ) -> Result<Option<Account>, StoreError> {
        let mut client = self.inner.client().await?;
        let tx = client.transaction().await.map_err(pg_err)?;
        // The row lock keeps two admins' changes from undoing each other.
        let Some(row) = tx
            .query_opt(
                "SELECT body FROM pufa_accounts WHERE username = $1 FOR UPDATE",
                &[&username],
            )
            .await
            .map_err(pg_err)?
        else {
            tx.rollback().await.map_err(pg_err)?;
            return Ok(None);
        };
        let before: Account = decode(row.get(0))?;
        let after = before.changed(&change);
        tx.execute(
            "UPDATE pufa_accounts SET body = $2 WHERE username = $1",
            &[&username, &encode(&after)],
        )
        .await
        .map_err(pg_err)?;
        tx.commit().await.map_err(pg_err)?;
        Ok(Some(after))
    }

    async fn put_session(
        &self,
        hash: TokenHash,
        session: Session,
        per_account_max: usize,
    ) -> Result<(), StoreError> {
        let mut client = self.inner.client().await?;
        let tx = client.transaction().await.map_err(pg_err)?;
        // Expired sessions go, and so do the oldest of this person's beyond
        // the limit, so that signing in in a loop cannot grow the store.
        tx.execute(
            "DELETE FROM pufa_sessions WHERE expires_ms <= $1",
            &[&big(session.created_ms)],
        )
        .await
        .map_err(pg_err)?;
        let keep = big(per_account_max.max(1) as u64 - 1);
        tx.execute(
            "DELETE FROM pufa_sessions WHERE hash IN (
                 SELECT hash FROM pufa_sessions WHERE username = $1
                  ORDER BY created_ms DESC OFFSET $2)",
            &[&session.username, &keep],
        )
        .await
        .map_err(pg_err)?;
        tx.execute(
            "INSERT INTO pufa_sessions (hash, username, created_ms, expires_ms, body)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (hash) DO UPDATE SET body = EXCLUDED.body",
            &[
                &hash.as_slice(),
                &session.username,
                &big(session.created_ms),
                &big(session.expires_ms),
                &encode(&session),
            ],
        )
        .await
        .map_err(pg_err)?;
        tx.commit().await.map_err(pg_err)
    }

    async fn session(&self, hash: TokenHash) -> Result<Option<Session>, StoreError> {
        let client = self.inner.client().await?;
        self.inner.catch_up(&**client).await?;
        client
            .query_opt(
                "SELECT body FROM pufa_sessions WHERE hash = $1",
                &[&hash.as_slice()],
            )
            .await
            .map_err(pg_err)?
            .map(|r| decode(r.get(0)))
            .transpose()
    }

    async fn end_session(&self, hash: TokenHash) -> Result<bool, StoreError> {
        let client = self.inner.client().await?;
        let n = client
            .execute(
                "DELETE FROM pufa_sessions WHERE hash = $1",
                &[&hash.as_slice()],
            )
            .await
            .map_err(pg_err)?;
        Ok(n > 0)
    }

    async fn put_code(&self, code: EnrolmentCode, now_ms: u64) -> Result<(), StoreError> {
        let mut client = self.inner.client().await?;
        let tx = client.transaction().await.map_err(pg_err)?;
        tx.execute(
            "DELETE FROM pufa_codes WHERE expires_ms <= $1",
            &[&big(now_ms)],
        )
        .await
        .map_err(pg_err)?;
        tx.execute(
            "INSERT INTO pufa_codes (id, hash, expires_ms, body) VALUES ($1, $2, $3, $4)",
            &[
                &code.id,
                &code.code_hash.as_slice(),
                &big(code.expires_ms),
                &encode(&code),
            ],
        )
        .await
        .map_err(pg_err)?;
        tx.commit().await.map_err(pg_err)
    }

    async fn codes(&self) -> Result<Vec<EnrolmentCode>, StoreError> {
        let client = self.inner.client().await?;
        client
            .query("SELECT body FROM pufa_codes ORDER BY id", &[])
            .await
            .map_err(pg_err)?
            .iter()
            .map(|r| decode(r.get(0)))
            .collect()
    }

    async fn withdraw_code(&self, id: Uuid) -> Result<bool, StoreError> {
        let client = self.inner.client().await?;
        let n = client
            .execute("DELETE FROM pufa_codes WHERE id = $1", &[&id])
            .await
            .map_err(pg_err)?;
        Ok(n > 0)
    }

    async fn redeem_code(
        &self,
        hash: TokenHash,
        r: Redemption,
    ) -> Result<Option<Device>, StoreError> {
        let mut client = self.inner.client().await?;
        let (tx, state) = self.inner.begin(&mut client).await?;
        // Deleted in the write that makes the device: a second request with
        // the same code waits for the lock, then finds it gone.
        let Some(row) = tx
            .query_opt(
                "DELETE FROM pufa_codes WHERE hash = $1 RETURNING body",
                &[&hash.as_slice()],
            )
            .await
            .map_err(pg_err)?
        else {
            tx.rollback().await.map_err(pg_err)?;
            return Ok(None);
        };
        let code: EnrolmentCode = decode(row.get(0))?;
        if code.expires_ms <= r.now_ms {
            // Rolled back: an expired code stays until swept.
            tx.rollback().await.map_err(pg_err)?;
            return Ok(None);
        }
        let device = code.device(r);
        Inner::upsert_device(&tx, &device).await?;
        self.inner
            .commit(tx, PgStaging::new(state, self.inner.rejections_kept), None)
            .await?;
        Ok(Some(device))
    }

    async fn history(
        &self,
        scope: Scope,
        id: Uuid,
        after: u64,
        limit: usize,
    ) -> Result<Option<Vec<HistoryEntry>>, StoreError> {
        let client = self.inner.client().await?;
        self.inner.catch_up(&**client).await?;
        let tree = self.inner.tree();
        let Some(row) = client
            .query_opt(
                "SELECT body, last_entry FROM pufa_records WHERE id = $1",
                &[&id],
            )
            .await
            .map_err(pg_err)?
        else {
            return Ok(None);
        };
        let (rec, last) = Inner::record_of(&row, 0, 1)?;
        if !(rec.org_unit().is_some_and(|u| tree.in_scope(u, &scope)) || rec.ever_in(&scope)) {
            return Ok(None);
        }
        let st = client
            .prepare_cached("SELECT value FROM pufa_audit WHERE n = $1")
            .await
            .map_err(pg_err)?;
        let mut next = Some(last);
        let mut newer = Vec::new();
        while let Some(n) = next.filter(|n| *n > after) {
            let row = client
                .query_opt(&st, &[&big(n)])
                .await
                .map_err(pg_err)?
                .ok_or_else(|| {
                    StoreError::Corrupt(format!("history of {id} names a missing audit entry {n}"))
                })?;
            let entry = codec::decode_audit(row.get(0))?;
            next = entry.body.record_prev;
            newer.push(entry);
        }
        Ok(Some(
            super::readable_history(newer, &tree, &scope, rec.org_unit())
                .into_iter()
                .rev()
                .take(limit)
                .map(codec::StoredAudit::view)
                .collect(),
        ))
    }

    async fn backup(&self, _now_ms: u64) -> Result<BackupChunks, StoreError> {
        Err(StoreError::Unsupported(
            "this server keeps its store in PostgreSQL: back it up with pg_dump or continuous archiving (docs/operations.md)".into(),
        ))
    }
}
