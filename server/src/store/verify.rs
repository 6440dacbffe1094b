//! `pufa-server verify`: checks a stopped server's store against its audit
//! log.
//!
//! 1. The chain: entries `l/1, l/2, …` without gaps, each one's `prev` the
//!    hash of the one before, each `hash` the hash of its stored bytes, and
//!    the last one the head named in `m/audit`.
//! 2. The records: replaying each record's entries (from the one its feed
//!    entry names, back along `record_prev`) gives its current fields,
//!    `deleted` flag and seq; every entry is in exactly one record's
//!    history, of that record and kind.
//! 3. The aggregates: recounted from the records, they equal the stored
//!    ones; `m/seq` is the highest record seq.
//!
//! So a record, an entry or an aggregate changed in the store by anything
//! but the server is found, and named. What the chain cannot prove is said
//! in `docs/operations.md`.

use std::collections::BTreeMap;
use std::fmt;

use pufa_core::audit::Replay;
use pufa_core::totals::{AggKey, AggValue, Aggregates, UnitAgg};
use uuid::Uuid;

use super::codec::{self, decode, Hash};
use super::StoreError;
use crate::config::Config;

/// The first thing found wrong.
#[derive(Clone, Debug, PartialEq)]
pub enum Broken {
    Entry { n: u64, why: String },
    Record { id: Uuid, why: String },
    Aggregate { key: String, why: String },
    Store(String),
}

impl fmt::Display for Broken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Broken::Entry { n, why } => write!(f, "audit entry {n}: {why}"),
            Broken::Record { id, why } => write!(f, "record {id}: {why}"),
            Broken::Aggregate { key, why } => write!(f, "aggregate {key}: {why}"),
            Broken::Store(why) => write!(f, "store: {why}"),
        }
    }
}

/// What [`verify`] found.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    pub store_id: Uuid,
    pub seq: u64,
    /// Audit entries walked, and the last one's `(n, hash)`.
    pub entries: u64,
    pub head: (u64, Hash),
    pub records: u64,
    /// The entries that log period steps (about no record).
    pub period_entries: Vec<u64>,
    /// Aggregate entries compared.
    pub aggregates: u64,
    /// `None`: intact.
    pub broken: Option<Broken>,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "store {} at seq {}", self.store_id, self.seq)?;
        writeln!(
            f,
            "audit chain: {} entries, head n={} hash={}",
            self.entries,
            self.head.0,
            hex::encode(self.head.1)
        )?;
        writeln!(f, "records replayed from their entries: {}", self.records)?;
        writeln!(f, "aggregate entries recounted: {}", self.aggregates)?;
        match &self.broken {
            None => write!(f, "intact"),
            Some(b) => write!(f, "BROKEN: {b}"),
        }
    }
}

/// Verifies the store under `config.store_path()`. The server must be
/// stopped (sled locks the store; opening it here then fails). Nothing is
/// written.
///
/// # Errors
/// The store cannot be opened or read at all. Damage it finds is a
/// [`Report`] with `broken` set.
pub fn verify(config: &Config) -> Result<Report, StoreError> {
    let path = config.store_path();
    if !path.join("conf").exists() {
        return Err(StoreError::Other(format!("no store at {}", path.display())));
    }
    // Nothing is written, so no periodic flusher (whose thread could hold
    // the store a moment past the end, locking out the next opener).
    super::sled::set_aside_incomplete_snapshots(&path).map_err(|e| {
        StoreError::Unavailable(format!("setting aside an incomplete snapshot: {e}"))
    })?;
    let db = super::sled::open_db(
        &sled::Config::new()
            .path(&path)
            .cache_capacity(config.cache_bytes)
            .flush_every_ms(None),
    )
    .map_err(|e| match e {
        sled::Error::Io(io) => {
            StoreError::Unavailable(format!("{io} (is the server running? stop it first)"))
        }
        other => other.into(),
    })?;
    let meta_u64 = |key: &[u8]| -> Result<u64, StoreError> {
        db.get(key)?.map_or(Ok(0), |v| codec::u64_of(&v))
    };
    let store_id = db
        .get(codec::META_STORE_ID)?
        .map(|v| codec::uuid_of(&v))
        .transpose()?
        .unwrap_or_default();
    let mut report = Report {
        store_id,
        seq: meta_u64(codec::META_SEQ)?,
        entries: 0,
        head: (0, codec::GENESIS),
        records: 0,
        period_entries: Vec::new(),
        aggregates: 0,
        broken: None,
    };
    let format = meta_u64(codec::META_FORMAT)?;
    // Formats 4 and 5 hold the same values as 6 (positional records, read
    // alike), and 6 as 7 but for topic aggregates (not compared, see
    // `aggregates`); the server upgrades them at start.
    if ![
        codec::STORE_FORMAT,
        codec::STORE_FORMAT_6,
        codec::STORE_FORMAT_5,
        codec::STORE_FORMAT_4,
    ]
    .contains(&format)
    {
        report.broken = Some(Broken::Store(format!(
            "store format {format}, this version verifies {} (start the server once to upgrade)",
            codec::STORE_FORMAT
        )));
        return Ok(report);
    }
    report.broken = check(&db, &mut report)?;
    Ok(report)
}

/// Verifies the PostgreSQL store of `config.database_url` with the same
/// checks: its audit chain, records and aggregates are copied, unchanged,
/// into a temporary sled store under the keys the embedded store uses (the
/// values are the same bytes), which [`check`] then reads. Nothing is
/// written to the database; servers may keep running (what they commit
/// meanwhile may make the copy inconsistent: verify a quiet database, or a
/// restored copy).
///
/// # Errors
/// The database cannot be reached or read.
pub async fn verify_pg(config: &Config) -> Result<Report, StoreError> {
    use super::pg::{pg_err, pool};
    let url = config
        .database_url
        .as_deref()
        .ok_or_else(|| StoreError::Other("no database URL".into()))?;
    let pool = pool(url, 1)?;
    let mut client = pool
        .get()
        .await
        .map_err(|e| StoreError::Unavailable(format!("database: {e}")))?;
    let tmp = tempfile::tempdir().map_err(|e| StoreError::Other(format!("temp dir: {e}")))?;
    let db = sled::Config::new()
        .path(tmp.path())
        .cache_capacity(config.cache_bytes)
        .flush_every_ms(None)
        .open()?;
    // One snapshot for everything read.
    let tx = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(pg_err)?;
    let state = tx
        .query_one(
            "SELECT store_id, seq, audit_n, audit_hash FROM pufa_state WHERE id = 1",
            &[],
        )
        .await
        .map_err(pg_err)?;
    let store_id: uuid::Uuid = state.get(0);
    let seq = u64::try_from(state.get::<_, i64>(1)).unwrap_or(0);
    let audit_n = u64::try_from(state.get::<_, i64>(2)).unwrap_or(0);
    let audit_hash: Hash = state
        .get::<_, &[u8]>(3)
        .try_into()
        .map_err(|_| StoreError::Corrupt("malformed audit hash in pufa_state".into()))?;
    let schema: i32 = tx
        .query_one("SELECT coalesce(max(version), 0) FROM pufa_migrations", &[])
        .await
        .map_err(pg_err)?
        .get(0);
    // The store format the database's schema version holds (for which
    // aggregates `check` compares).
    let format = if schema >= super::pg::schema::TOPICS_FOLDED {
        codec::STORE_FORMAT
    } else {
        codec::STORE_FORMAT_6
    };
    db.insert(codec::META_FORMAT, &format.to_be_bytes())?;
    db.insert(codec::META_STORE_ID, store_id.as_bytes())?;
    db.insert(codec::META_SEQ, &seq.to_be_bytes())?;
    db.insert(codec::META_AUDIT, codec::encode(&(audit_n, audit_hash)))?;
    for row in tx
        .query("SELECT id, seq, last_entry, body FROM pufa_records", &[])
        .await
        .map_err(pg_err)?
    {
        let (id, rseq, last): (uuid::Uuid, i64, i64) = (row.get(0), row.get(1), row.get(2));
        let rseq = u64::try_from(rseq).unwrap_or(0);
        db.insert(codec::record_key(id), row.get::<_, &[u8]>(3))?;
        db.insert(
            codec::seq_key(rseq),
            &codec::feed_value(id, u64::try_from(last).unwrap_or(0)),
        )?;
    }
    for row in tx
        .query("SELECT n, value FROM pufa_audit", &[])
        .await
        .map_err(pg_err)?
    {
        let n = u64::try_from(row.get::<_, i64>(0)).unwrap_or(0);
        db.insert(codec::audit_key(n), row.get::<_, &[u8]>(1))?;
    }
    for row in tx
        .query(
            "SELECT key, value FROM pufa_aggregates WHERE value IS NOT NULL",
            &[],
        )
        .await
        .map_err(pg_err)?
    {
        db.insert(row.get::<_, &[u8]>(0), row.get::<_, &[u8]>(1))?;
    }
    tx.commit().await.map_err(pg_err)?;
    let mut report = Report {
        store_id,
        seq,
        entries: 0,
        head: (0, codec::GENESIS),
        records: 0,
        period_entries: Vec::new(),
        aggregates: 0,
        broken: None,
    };
    report.broken = check(&db, &mut report)?;
    Ok(report)
}

fn check(db: &sled::Db, report: &mut Report) -> Result<Option<Broken>, StoreError> {
    if let Some(b) = chain(db, report)? {
        return Ok(Some(b));
    }
    let mut recount = Aggregates::default();
    if let Some(b) = records(db, report, &mut recount)? {
        return Ok(Some(b));
    }
    aggregates(db, report, recount)
}

fn chain(db: &sled::Db, report: &mut Report) -> Result<Option<Broken>, StoreError> {
    let entry = |n, why: String| Ok(Some(Broken::Entry { n, why }));
    let (mut n, mut prev) = (0u64, codec::GENESIS);
    for kv in db.scan_prefix(codec::AUDIT) {
        let (k, v) = kv?;
        let at = codec::u64_of(&k[codec::AUDIT.len()..])?;
        if at != n + 1 {
            return entry(n + 1, format!("missing (the log goes on at {at})"));
        }
        let a = match codec::decode_audit(&v) {
            Ok(a) => a,
            Err(e) => return entry(at, e.to_string()),
        };
        if a.body.n != at {
            return entry(at, format!("says it is entry {}", a.body.n));
        }
        if a.prev != prev {
            return entry(at, "its prev is not the hash of the entry before".into());
        }
        if !a.hash_ok {
            return entry(at, "its hash does not match its contents".into());
        }
        if a.body.seq > report.seq {
            return entry(at, format!("seq {} is above the store's", a.body.seq));
        }
        if a.body.period.is_some() {
            // About no record: no record's history reaches it.
            report.period_entries.push(at);
        }
        (n, prev) = (at, a.hash);
        report.entries += 1;
        report.head = (n, prev);
    }
    let stated: (u64, Hash) = db
        .get(codec::META_AUDIT)?
        .map_or(Ok((0, codec::GENESIS)), |v| decode(&v))?;
    if stated.0 > n {
        return entry(
            n + 1,
            format!("missing (the log should end at {})", stated.0),
        );
    }
    if stated != (n, prev) {
        return Ok(Some(Broken::Store(format!(
            "m/audit names entry {} with another hash than the log's last, {n}",
            stated.0
        ))));
    }
    Ok(None)
}

fn records(
    db: &sled::Db,
    report: &mut Report,
    recount: &mut Aggregates,
) -> Result<Option<Broken>, StoreError> {
    let record = |id, why: String| Ok(Some(Broken::Record { id, why }));
    let entry = |n, why: String| Ok(Some(Broken::Entry { n, why }));
    let head = report.head.0;
    // Which entries some record's history reaches: each exactly once.
    let mut reached = vec![false; head as usize + 1];
    for n in &report.period_entries {
        reached[*n as usize] = true;
    }
    let mut max_seq = 0;
    for kv in db.scan_prefix(codec::RECORD) {
        let (k, v) = kv?;
        let id = codec::uuid_of(&k[codec::RECORD.len()..])?;
        let r = match codec::decode_record(&v) {
            Ok(r) => r,
            Err(e) => return record(id, e.to_string()),
        };
        if r.id != id {
            return record(id, format!("is stored under another id ({})", r.id));
        }
        let Some(feed) = db.get(codec::seq_key(r.seq))? else {
            return record(id, format!("its feed entry s/{} is missing", r.seq));
        };
        let last = match codec::decode_feed(&feed) {
            Ok((fid, last)) if fid == id => last,
            Ok((fid, _)) => return record(id, format!("its feed entry names {fid}")),
            Err(e) => return record(id, e.to_string()),
        };
        // The record's entries, newest first, along `record_prev`.
        let mut chain = Vec::new();
        let mut next = Some(last);
        while let Some(n) = next {
            if n == 0 || n > head {
                return record(id, format!("its history names entry {n}, not in the log"));
            }
            if std::mem::replace(&mut reached[n as usize], true) {
                return entry(n, "is in the history of two records, or twice".into());
            }
            let Some(ev) = db.get(codec::audit_key(n))? else {
                return record(id, format!("its history names entry {n}, which is missing"));
            };
            let body = codec::decode_audit(&ev)?.body;
            if body.record_id != id {
                return entry(
                    n,
                    format!(
                        "is in record {id}'s history but is about {}",
                        body.record_id
                    ),
                );
            }
            if body.kind != r.kind {
                return entry(n, format!("logs another kind than record {id}'s"));
            }
            next = body.record_prev;
            chain.push(body);
        }
        let mut replay = Replay::default();
        for body in chain.iter().rev() {
            replay.apply(&body.changes);
        }
        if let Err(why) = replay.check(&r) {
            return record(id, why);
        }
        let logged = chain.first().map_or(0, |b| b.seq);
        if logged != r.seq {
            return record(
                id,
                format!("has seq {}, its last audit entry gives {logged}", r.seq),
            );
        }
        max_seq = max_seq.max(r.seq);
        recount.apply(None, &r);
        report.records += 1;
    }
    if let Some(n) = (1..=head).find(|n| !reached[*n as usize]) {
        return entry(n, "is in no record's history".into());
    }
    let feed = db.scan_prefix(codec::SEQ).count() as u64;
    if feed != report.records {
        return Ok(Some(Broken::Store(format!(
            "the feed has {feed} entries for {} records",
            report.records
        ))));
    }
    if max_seq != report.seq {
        return Ok(Some(Broken::Store(format!(
            "m/seq is {}, the highest record seq {max_seq}",
            report.seq
        ))));
    }
    Ok(None)
}

/// Entries that say something: a unit without records and an empty month,
/// topic or understander list are the same as no entry.
fn meaningful(v: &AggValue) -> bool {
    match v {
        AggValue::Unit(u) => *u != UnitAgg::default(),
        AggValue::Month(days) => !days.is_empty(),
        AggValue::Topics(list) => !list.is_empty(),
        AggValue::Understanders(days) => !days.is_empty(),
        AggValue::EverMax(_) => true,
    }
}

fn aggregates(
    db: &sled::Db,
    report: &mut Report,
    mut recount: Aggregates,
) -> Result<Option<Broken>, StoreError> {
    // Before format 7 topic entries count topics as written, which this
    // version no longer computes; the server recounts them at start.
    let topics_comparable = db
        .get(codec::META_FORMAT)?
        .map_or(Ok(0), |v| codec::u64_of(&v))?
        >= codec::STORE_FORMAT;
    let compared = |k: &AggKey| topics_comparable || !matches!(k, AggKey::Topics(..));
    let fresh: BTreeMap<AggKey, AggValue> = recount
        .take_dirty()
        .into_iter()
        .filter(|(k, v)| meaningful(v) && compared(k))
        .collect();
    let mut stored = BTreeMap::new();
    for kv in db.scan_prefix(codec::AGG) {
        let (k, v) = kv?;
        let (key, value) = match codec::decode_agg(&k[codec::AGG.len()..], &v) {
            Ok(x) => x,
            Err(e) => {
                return Ok(Some(Broken::Aggregate {
                    key: String::from_utf8_lossy(&k).into_owned(),
                    why: e.to_string(),
                }))
            }
        };
        if meaningful(&value) && compared(&key) {
            stored.insert(key, value);
        }
    }
    let keys: std::collections::BTreeSet<&AggKey> = fresh.keys().chain(stored.keys()).collect();
    for key in keys {
        let (s, f) = (stored.get(key), fresh.get(key));
        if s != f {
            return Ok(Some(Broken::Aggregate {
                key: format!("{key:?}"),
                why: format!("stored {s:?}, the records give {f:?}"),
            }));
        }
        report.aggregates += 1;
    }
    Ok(None)
}
