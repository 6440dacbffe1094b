//! `pufa-server migrate`: moves a district's sled store into an empty
//! PostgreSQL database, keeping everything a device or a coordinator
//! relies on: the store id and every seq (devices go on syncing from
//! where they were, without re-enrolling or pulling again), tokens,
//! conflicts, rejections, device health, the audit log byte for byte,
//! accounts, sessions and enrolment codes.
//!
//! The copy is one transaction: it lands whole or not at all. It refuses a
//! database that already holds a store. Afterwards it opens the database
//! as a server would and checks it against the sled store: the contract's
//! checksum, record, audit-entry, conflict and device counts.

use pufa_core::org::Scope;

use super::codec::{self, decode, StoredConflict, StoredRejection};
use super::pg::{self, pg_err, PgStore};
use super::sled::SledStore;
use super::{Account, Device, EnrolmentCode, Session, StoreError, SyncStore};
use crate::config::Config;

/// Rows sent per statement while copying.
const ROWS_PER_STATEMENT: usize = 5_000;

/// What was copied, and what the check compared.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Migrated {
    pub records: u64,
    pub audit_entries: u64,
    pub devices: u64,
    pub conflicts: u64,
    pub rejections: u64,
    pub applied: u64,
    pub org_units: u64,
    pub aggregates: u64,
    pub accounts: u64,
    pub seq: u64,
    /// The checksum both stores gave for everything (`seq`, `count`, `xor`).
    pub checksum: (u64, u64, u64),
}

impl std::fmt::Display for Migrated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "migrated {} records (seq {}), {} audit entries, {} devices, {} conflicts, {} rejections, {} applied mutations, {} org units, {} aggregate entries, {} accounts; checksum seq {} count {} xor {:016x} equal on both stores",
            self.records,
            self.seq,
            self.audit_entries,
            self.devices,
            self.conflicts,
            self.rejections,
            self.applied,
            self.org_units,
            self.aggregates,
            self.accounts,
            self.checksum.0,
            self.checksum.1,
            self.checksum.2
        )
    }
}

/// Columns of one table being copied, sent every [`ROWS_PER_STATEMENT`].
struct Batch {
    sql: &'static str,
    cols: Vec<Col>,
    rows: usize,
    total: u64,
}

enum Col {
    Uuid(Vec<uuid::Uuid>),
    Big(Vec<i64>),
    OptBig(Vec<Option<i64>>),
    Text(Vec<Option<String>>),
    Bytes(Vec<Option<Vec<u8>>>),
    Bool(Vec<bool>),
}

impl Col {
    fn param(&self) -> &(dyn tokio_postgres::types::ToSql + Sync) {
        match self {
            Col::Uuid(v) => v,
            Col::Big(v) => v,
            Col::OptBig(v) => v,
            Col::Text(v) => v,
            Col::Bytes(v) => v,
            Col::Bool(v) => v,
        }
    }

    fn clear(&mut self) {
        match self {
            Col::Uuid(v) => v.clear(),
            Col::Big(v) => v.clear(),
            Col::OptBig(v) => v.clear(),
            Col::Text(v) => v.clear(),
            Col::Bytes(v) => v.clear(),
            Col::Bool(v) => v.clear(),
        }
    }
}

impl Batch {
    fn new(sql: &'static str, cols: Vec<Col>) -> Batch {
        Batch {
            sql,
            cols,
            rows: 0,
            total: 0,
        }
    }

    async fn row_done(&mut self, tx: &tokio_postgres::Transaction<'_>) -> Result<(), StoreError> {
        self.rows += 1;
        self.total += 1;
        if self.rows >= ROWS_PER_STATEMENT {
            self.send(tx).await?;
        }
        Ok(())
    }

    async fn send(&mut self, tx: &tokio_postgres::Transaction<'_>) -> Result<(), StoreError> {
        if self.rows == 0 {
            return Ok(());
        }
        let params: Vec<_> = self.cols.iter().map(Col::param).collect();
        tx.execute(self.sql, &params).await.map_err(pg_err)?;
        for c in &mut self.cols {
            c.clear();
        }
        self.rows = 0;
        Ok(())
    }
}

macro_rules! push {
    ($batch:expr, $i:expr, $variant:ident, $v:expr) => {
        match &mut $batch.cols[$i] {
            Col::$variant(col) => col.push($v),
            _ => unreachable!("column {} of {}", $i, $batch.sql),
        }
    };
}

fn big(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Copies the (stopped) sled store of `from` into the empty database of
/// `to.database_url`, then checks the copy.
///
/// # Errors
/// The sled store cannot be opened (a running server holds it), the
/// database is unreachable or not empty, or the check finds a difference
/// (then the database holds the copy, for inspection; drop it and retry).
pub async fn sled_to_pg(from: &Config, to: &Config) -> Result<Migrated, StoreError> {
    let target_config = to
        .pg_store()
        .ok_or_else(|| StoreError::Other("no --to-database-url".into()))?;
    let url = target_config.url.as_str();
    if !from.store_path().exists() {
        return Err(StoreError::Other(format!(
            "no sled store in {}",
            from.data_dir.display()
        )));
    }
    // Opened as the server opens it (format upgrades included), so what is
    // copied is what that server would serve.
    let source = SledStore::open(&from.into())?;
    let sled_sum = source.checksum(&Scope::All).await?;
    let db = source.db();
    let pool = pg::pool(url, 2)?;
    let mut client = pool
        .get()
        .await
        .map_err(|e| StoreError::Unavailable(format!("database: {e}")))?;
    pg::schema::migrate(&mut client).await?;
    let has_state: bool = client
        .query_one("SELECT EXISTS (SELECT 1 FROM pufa_state)", &[])
        .await
        .map_err(pg_err)?
        .get(0);
    if has_state || !pg::schema::is_empty(&**client).await? {
        return Err(StoreError::Other(format!(
            "the database {} already holds a Pufa store; migrate only into an empty one",
            pg::redacted(url)
        )));
    }
    let tx = client.transaction().await.map_err(pg_err)?;
    let mut out = copy(db, &tx).await?;
    tx.commit().await.map_err(pg_err)?;
    drop(client);
    drop(source);

    // Check: the database as a server opens it.
    let target = PgStore::open(&target_config).await?;
    let pg_sum = target.checksum(&Scope::All).await?;
    if pg_sum != sled_sum {
        return Err(StoreError::Corrupt(format!(
            "after copying, the checksums differ: sled {sled_sum:?}, PostgreSQL {pg_sum:?}"
        )));
    }
    let client = pool
        .get()
        .await
        .map_err(|e| StoreError::Unavailable(format!("database: {e}")))?;
    for (table, expected) in [
        ("pufa_records", out.records),
        ("pufa_audit", out.audit_entries),
        ("pufa_devices", out.devices),
        ("pufa_conflicts", out.conflicts),
        ("pufa_applied", out.applied),
    ] {
        let n: i64 = client
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .map_err(pg_err)?
            .get(0);
        if n != big(expected) {
            return Err(StoreError::Corrupt(format!(
                "after copying, {table} holds {n} rows, the sled store {expected}"
            )));
        }
    }
    out.checksum = (pg_sum.seq, pg_sum.count, pg_sum.xor);
    Ok(out)
}

fn meta_u64(db: &sled::Db, key: &[u8]) -> Result<u64, StoreError> {
    db.get(key)?
        .map(|v| codec::u64_of(&v))
        .transpose()
        .map(Option::unwrap_or_default)
}

async fn copy(db: &sled::Db, tx: &tokio_postgres::Transaction<'_>) -> Result<Migrated, StoreError> {
    let mut out = Migrated::default();
    let store_id = db
        .get(codec::META_STORE_ID)?
        .map(|v| codec::uuid_of(&v))
        .transpose()?
        .ok_or_else(|| StoreError::Corrupt("the sled store has no store_id".into()))?;
    out.seq = meta_u64(db, codec::META_SEQ)?;
    let hlc = db
        .get(codec::META_HLC)?
        .map(|v| v.to_vec())
        .unwrap_or_else(|| codec::encode(&(0u64, 0u32)));
    let (audit_n, audit_hash): (u64, codec::Hash) = match db.get(codec::META_AUDIT)? {
        Some(v) => decode(&v)?,
        None => (0, codec::GENESIS),
    };
    let admin = db
        .get(codec::META_ADMIN)?
        .map(|v| codec::uuid_of(&v))
        .transpose()?;
    tx.execute(
        "INSERT INTO pufa_state (id, store_id, seq, hlc, rejections, audit_n, audit_hash, gen, org_version, admin)
         VALUES (1, $1, $2, $3, $4, $5, $6, 1, 1, $7)",
        &[
            &store_id,
            &big(out.seq),
            &hlc,
            &big(meta_u64(db, codec::META_REJECTIONS)?),
            &big(audit_n),
            &audit_hash.as_slice(),
            &admin,
        ],
    )
    .await
    .map_err(pg_err)?;

    // Records, with their newest audit entry from the feed entry at their seq.
    let mut b = Batch::new(
        "INSERT INTO pufa_records (id, seq, last_entry, org_unit, body)
         SELECT * FROM UNNEST($1::uuid[], $2::int8[], $3::int8[], $4::text[], $5::bytea[])",
        vec![
            Col::Uuid(vec![]),
            Col::Big(vec![]),
            Col::Big(vec![]),
            Col::Text(vec![]),
            Col::Bytes(vec![]),
        ],
    );
    for kv in db.scan_prefix(codec::RECORD) {
        let (_, v) = kv?;
        let r = codec::decode_record(&v)?;
        let feed = db
            .get(codec::seq_key(r.seq))?
            .ok_or_else(|| StoreError::Corrupt(format!("no feed entry for record {}", r.id)))?;
        let (id, last_entry) = codec::decode_feed(&feed)?;
        if id != r.id {
            return Err(StoreError::Corrupt(format!(
                "the feed entry at seq {} names {id}, not {}",
                r.seq, r.id
            )));
        }
        push!(b, 0, Uuid, r.id);
        push!(b, 1, Big, big(r.seq));
        push!(b, 2, Big, big(last_entry));
        push!(b, 3, Text, r.org_unit().map(str::to_string));
        push!(b, 4, Bytes, Some(v.to_vec()));
        b.row_done(tx).await?;
    }
    b.send(tx).await?;
    out.records = b.total;

    let mut b = Batch::new(
        "INSERT INTO pufa_applied (device_id, mutation_id, body)
         SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::bytea[])",
        vec![Col::Uuid(vec![]), Col::Uuid(vec![]), Col::Bytes(vec![])],
    );
    for kv in db.scan_prefix(codec::APPLIED) {
        let (k, v) = kv?;
        let rest = &k[codec::APPLIED.len()..];
        if rest.len() != 32 {
            return Err(StoreError::Corrupt("malformed idempotency key".into()));
        }
        push!(b, 0, Uuid, codec::uuid_of(&rest[..16])?);
        push!(b, 1, Uuid, codec::uuid_of(&rest[16..])?);
        push!(b, 2, Bytes, Some(v.to_vec()));
        b.row_done(tx).await?;
    }
    b.send(tx).await?;
    out.applied = b.total;

    let mut b = Batch::new(
        "INSERT INTO pufa_conflicts (id, record_id, seq, open, body)
         SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::int8[], $4::bool[], $5::bytea[])",
        vec![
            Col::Uuid(vec![]),
            Col::Uuid(vec![]),
            Col::Big(vec![]),
            Col::Bool(vec![]),
            Col::Bytes(vec![]),
        ],
    );
    for kv in db.scan_prefix(codec::CONFLICT) {
        let (k, v) = kv?;
        let c: StoredConflict = decode(&v)?;
        push!(b, 0, Uuid, codec::uuid_of(&k[codec::CONFLICT.len()..])?);
        push!(b, 1, Uuid, c.record_id);
        push!(b, 2, Big, big(c.seq));
        push!(b, 3, Bool, c.open);
        push!(b, 4, Bytes, Some(v.to_vec()));
        b.row_done(tx).await?;
    }
    b.send(tx).await?;
    out.conflicts = b.total;

    // Rejections are kept per unit of the pushing device's token.
    let mut units = std::collections::HashMap::new();
    for kv in db.scan_prefix(codec::DEVICE) {
        let (_, v) = kv?;
        let d: Device = decode(&v)?;
        units.insert(d.id, d.org_unit.unwrap_or_default());
    }
    let mut b = Batch::new(
        "INSERT INTO pufa_rejections (n, device_id, org_unit, body)
         SELECT * FROM UNNEST($1::int8[], $2::uuid[], $3::text[], $4::bytea[])",
        vec![
            Col::Big(vec![]),
            Col::Uuid(vec![]),
            Col::Text(vec![]),
            Col::Bytes(vec![]),
        ],
    );
    for kv in db.scan_prefix(codec::REJECTION) {
        let (k, v) = kv?;
        let r: StoredRejection = decode(&v)?;
        push!(b, 0, Big, big(codec::u64_of(&k[codec::REJECTION.len()..])?));
        push!(b, 1, Uuid, r.device_id);
        let unit = units.get(&r.device_id).cloned().unwrap_or_default();
        push!(b, 2, Text, Some(unit));
        push!(b, 3, Bytes, Some(v.to_vec()));
        b.row_done(tx).await?;
    }
    b.send(tx).await?;
    out.rejections = b.total;

    let mut b = Batch::new(
        "INSERT INTO pufa_devices (id, token_hash, last_pull_ms, body)
         SELECT * FROM UNNEST($1::uuid[], $2::bytea[], $3::int8[], $4::bytea[])",
        vec![
            Col::Uuid(vec![]),
            Col::Bytes(vec![]),
            Col::OptBig(vec![]),
            Col::Bytes(vec![]),
        ],
    );
    for kv in db.scan_prefix(codec::DEVICE) {
        let (_, v) = kv?;
        let d: Device = decode(&v)?;
        // The token index says which token is live.
        let live = db
            .get(codec::token_key(&d.token_hash))?
            .map(|id| codec::uuid_of(&id))
            .transpose()?
            == Some(d.id);
        let pulled = db
            .get(codec::pulled_key(d.id))?
            .map(|v| codec::u64_of(&v))
            .transpose()?;
        push!(b, 0, Uuid, d.id);
        push!(b, 1, Bytes, live.then(|| d.token_hash.to_vec()));
        push!(b, 2, OptBig, pulled.map(big));
        push!(b, 3, Bytes, Some(v.to_vec()));
        b.row_done(tx).await?;
    }
    b.send(tx).await?;
    out.devices = b.total;

    let mut b = Batch::new(
        "INSERT INTO pufa_org_units (code, body) SELECT * FROM UNNEST($1::text[], $2::bytea[])",
        vec![Col::Text(vec![]), Col::Bytes(vec![])],
    );
    for kv in db.scan_prefix(codec::ORG_UNIT) {
        let (k, v) = kv?;
        let code = String::from_utf8(k[codec::ORG_UNIT.len()..].to_vec())
            .map_err(|_| StoreError::Corrupt("org unit code is not UTF-8".into()))?;
        push!(b, 0, Text, Some(code));
        push!(b, 1, Bytes, Some(v.to_vec()));
        b.row_done(tx).await?;
    }
    b.send(tx).await?;
    out.org_units = b.total;

    let mut b = Batch::new(
        "INSERT INTO pufa_aggregates (key, gen, value)
         SELECT k, 1, v FROM UNNEST($1::bytea[], $2::bytea[]) AS u(k, v)",
        vec![Col::Bytes(vec![]), Col::Bytes(vec![])],
    );
    for kv in db.scan_prefix(codec::AGG) {
        let (k, v) = kv?;
        push!(b, 0, Bytes, Some(k.to_vec()));
        push!(b, 1, Bytes, Some(v.to_vec()));
        b.row_done(tx).await?;
    }
    b.send(tx).await?;
    out.aggregates = b.total;

    let mut b = Batch::new(
        "INSERT INTO pufa_audit (n, value) SELECT * FROM UNNEST($1::int8[], $2::bytea[])",
        vec![Col::Big(vec![]), Col::Bytes(vec![])],
    );
    for kv in db.scan_prefix(codec::AUDIT) {
        let (k, v) = kv?;
        push!(b, 0, Big, big(codec::u64_of(&k[codec::AUDIT.len()..])?));
        push!(b, 1, Bytes, Some(v.to_vec()));
        b.row_done(tx).await?;
    }
    b.send(tx).await?;
    out.audit_entries = b.total;

    for kv in db.scan_prefix(codec::PERIOD) {
        let (_, v) = kv?;
        let p: crate::store::StoredPeriod = decode(&v)?;
        tx.execute(
            "INSERT INTO pufa_periods (org_unit, period, approved, body) VALUES ($1, $2, $3, $4)",
            &[
                &p.org_unit,
                &p.period.to_string(),
                &p.approval().is_some(),
                &v.to_vec(),
            ],
        )
        .await
        .map_err(pg_err)?;
    }

    for kv in db.scan_prefix(codec::DISMISSAL) {
        let (_, v) = kv?;
        let d: crate::store::StoredDismissal = decode(&v)?;
        tx.execute(
            "INSERT INTO pufa_dismissals (a, b, body) VALUES ($1, $2, $3)",
            &[&d.a, &d.b, &v.to_vec()],
        )
        .await
        .map_err(pg_err)?;
    }

    for kv in db.scan_prefix(codec::ACCOUNT) {
        let (_, v) = kv?;
        let a: Account = decode(&v)?;
        tx.execute(
            "INSERT INTO pufa_accounts (username, body) VALUES ($1, $2)",
            &[&a.username, &v.to_vec()],
        )
        .await
        .map_err(pg_err)?;
        out.accounts += 1;
    }
    for kv in db.scan_prefix(codec::SESSION) {
        let (k, v) = kv?;
        let s: Session = decode(&v)?;
        tx.execute(
            "INSERT INTO pufa_sessions (hash, username, created_ms, expires_ms, body)
             VALUES ($1, $2, $3, $4, $5)",
            &[
                &k[codec::SESSION.len()..].to_vec(),
                &s.username,
                &big(s.created_ms),
                &big(s.expires_ms),
                &v.to_vec(),
            ],
        )
        .await
        .map_err(pg_err)?;
    }
    for kv in db.scan_prefix(codec::CODE) {
        let (_, v) = kv?;
        let c: EnrolmentCode = decode(&v)?;
        tx.execute(
            "INSERT INTO pufa_codes (id, hash, expires_ms, body) VALUES ($1, $2, $3, $4)",
            &[
                &c.id,
                &c.code_hash.as_slice(),
                &big(c.expires_ms),
                &v.to_vec(),
            ],
        )
        .await
        .map_err(pg_err)?;
    }
    Ok(out)
}
