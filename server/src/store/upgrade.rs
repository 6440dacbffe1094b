//! The upgrade to store format 6, where every value is written from its
//! disk type ([`super::disk`]).
//!
//! Format 6 writes the same bytes as format 5 (the golden tests in
//! `disk/golden.rs` prove it), so the upgrade changes no value that is
//! already right. It reads every stored value as its disk type, so a store
//! is marked 6 only once the new types are known to read all of it, and
//! rewrites records still in the positional layout (stores from before
//! format 5) in the compact one, so that from format 6 on only upgrades
//! meet the positional layout. Both steps are idempotent: an upgrade cut
//! short by a crash runs again whole at the next start.
//!
//! sled: at open, before anything is served ([`sled_to_format_6`]).
//! PostgreSQL: in the transaction of schema migration 4
//! ([`pg_to_format_6`]), so several instances starting at once upgrade
//! exactly once.
//!
//! [`topics`]: the upgrade from 6 to 7, which recounts topic aggregates by
//! the topic vocabulary, the same way.

pub(crate) mod topics;

use futures_util::{pin_mut, TryStreamExt as _};
use pufa_core::wire::OrgUnit;

use super::codec::{self, decode, Applied, Hash, StoredConflict, StoredRejection};
use super::{Account, Device, EnrolmentCode, Session, StoreError};

/// Rewritten records per sled batch (each a few hundred bytes).
const RECORDS_PER_BATCH: usize = 10_000;

/// Which disk type a stored value is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stored {
    Record,
    Applied,
    Conflict,
    Rejection,
    Device,
    OrgUnit,
    Aggregate,
    Audit,
    Account,
    Session,
    Code,
    ServerHlc,
    AuditHead,
}

impl Stored {
    /// The type of the sled value under `key`; `None` for keys whose values
    /// are plain bytes (ids, counters, big-endian integers) or empty.
    fn of_sled_key(key: &[u8]) -> Option<Stored> {
        let families: [(&[u8], Stored); 13] = [
            (codec::RECORD, Stored::Record),
            (codec::APPLIED, Stored::Applied),
            (codec::CONFLICT, Stored::Conflict),
            (codec::REJECTION, Stored::Rejection),
            (codec::DEVICE, Stored::Device),
            (codec::ORG_UNIT, Stored::OrgUnit),
            (codec::AGG, Stored::Aggregate),
            (codec::AUDIT, Stored::Audit),
            (codec::ACCOUNT, Stored::Account),
            (codec::SESSION, Stored::Session),
            (codec::CODE, Stored::Code),
            (codec::META_HLC, Stored::ServerHlc),
            (codec::META_AUDIT, Stored::AuditHead),
        ];
        families
            .into_iter()
            .find(|(prefix, _)| key.starts_with(prefix))
            .map(|(_, s)| s)
    }
}

/// Reads `value` (stored under `key`) as its disk type; `Some(bytes)` when
/// it is to be rewritten (a positional record).
fn check(stored: Stored, key: &[u8], value: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
    match stored {
        Stored::Record => {
            let record = codec::decode_record(value)?;
            let compact = codec::encode_record(&record);
            return Ok((compact.first() != value.first()).then_some(compact));
        }
        Stored::Applied => decode::<Applied>(value).map(drop)?,
        Stored::Conflict => decode::<StoredConflict>(value).map(drop)?,
        Stored::Rejection => decode::<StoredRejection>(value).map(drop)?,
        Stored::Device => decode::<Device>(value).map(drop)?,
        Stored::OrgUnit => decode::<OrgUnit>(value).map(drop)?,
        Stored::Aggregate => {
            let key = key.strip_prefix(codec::AGG).unwrap_or(key);
            codec::decode_agg(key, value).map(drop)?;
        }
        Stored::Audit => codec::decode_audit(value).map(drop)?,
        Stored::Account => decode::<Account>(value).map(drop)?,
        Stored::Session => decode::<Session>(value).map(drop)?,
        Stored::Code => decode::<EnrolmentCode>(value).map(drop)?,
        Stored::ServerHlc => decode::<(u64, u32)>(value).map(drop)?,
        Stored::AuditHead => decode::<(u64, Hash)>(value).map(drop)?,
    }
    Ok(None)
}

/// Names the value that failed, so an operator can find it.
fn unreadable(stored: Stored, key: &[u8], e: StoreError) -> StoreError {
    StoreError::Corrupt(format!(
        "upgrading to store format {}: the value under {} ({stored:?}) does not read: {e}",
        codec::STORE_FORMAT_6,
        String::from_utf8_lossy(key).escape_debug()
    ))
}

/// What an upgrade did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Upgraded {
    /// Values read as their disk types.
    pub checked: u64,
    /// Records rewritten from the positional layout.
    pub rewritten: u64,
}

/// Upgrades a format 4 or 5 sled store to 6 and marks it so (the caller
/// upgrades it on and makes that durable with everything else it wrote at
/// open).
///
/// # Errors
/// sled's, or [`StoreError::Corrupt`] naming a value that does not read.
pub(crate) fn sled_to_format_6(db: &sled::Db) -> Result<Upgraded, StoreError> {
    let mut done = Upgraded::default();
    let mut batch = sled::Batch::default();
    let mut in_batch = 0;
    for kv in db.iter() {
        let (key, value) = kv?;
        let Some(stored) = Stored::of_sled_key(&key) else {
            continue;
        };
        done.checked += 1;
        if let Some(compact) =
            check(stored, &key, &value).map_err(|e| unreadable(stored, &key, e))?
        {
            batch.insert(key, compact);
            done.rewritten += 1;
            in_batch += 1;
            if in_batch == RECORDS_PER_BATCH {
                db.apply_batch(std::mem::take(&mut batch))?;
                in_batch = 0;
            }
        }
    }
    batch.insert(codec::META_FORMAT, &codec::STORE_FORMAT_6.to_be_bytes());
    db.apply_batch(batch)?;
    tracing::info!(
        checked = done.checked,
        rewritten = done.rewritten,
        "store upgraded to format {}",
        codec::STORE_FORMAT_6
    );
    Ok(done)
}

/// The PostgreSQL columns that hold disk types: `(table, key, value
/// column, type)`. The key (as bytes) names a value that fails; an
/// aggregate's is also what it is decoded with.
const PG_VALUES: [(&str, &str, &str, Stored); 12] = [
    ("pufa_records", "id::text", "body", Stored::Record),
    ("pufa_applied", "mutation_id::text", "body", Stored::Applied),
    ("pufa_conflicts", "id::text", "body", Stored::Conflict),
    ("pufa_rejections", "n::text", "body", Stored::Rejection),
    ("pufa_devices", "id::text", "body", Stored::Device),
    ("pufa_org_units", "code", "body", Stored::OrgUnit),
    ("pufa_aggregates", "", "value", Stored::Aggregate),
    ("pufa_audit", "n::text", "value", Stored::Audit),
    ("pufa_accounts", "username", "body", Stored::Account),
    ("pufa_sessions", "username", "body", Stored::Session),
    ("pufa_codes", "id::text", "body", Stored::Code),
    ("pufa_state", "'m/hlc'", "hlc", Stored::ServerHlc),
];

/// Upgrades a PostgreSQL store to format 6 inside the migration's
/// transaction `tx`: reads every value as its disk type (streamed, so a
/// large store is not held in memory) and rewrites positional record
/// bodies.
///
/// # Errors
/// The database's, or [`StoreError::Corrupt`] naming a value that does not
/// read (the migration then rolls back whole).
pub(crate) async fn pg_to_format_6(
    tx: &tokio_postgres::Transaction<'_>,
) -> Result<Upgraded, StoreError> {
    let mut done = Upgraded::default();
    let mut positional = Vec::new();
    for (table, key_col, value_col, stored) in PG_VALUES {
        let key = match key_col {
            "" => "key".to_string(),
            text => format!("convert_to({text}, 'UTF8')"),
        };
        let sql = format!("SELECT {key}, {value_col} FROM {table}");
        let rows = tx
            .query_raw(&sql, std::iter::empty::<i32>())
            .await
            .map_err(super::pg::pg_err)?;
        pin_mut!(rows);
        while let Some(row) = rows.try_next().await.map_err(super::pg::pg_err)? {
            let key: &[u8] = row.get(0);
            let Some(value) = row.get::<_, Option<&[u8]>>(1) else {
                // A removed aggregate, kept as NULL for other instances.
                continue;
            };
            done.checked += 1;
            if let Some(compact) =
                check(stored, key, value).map_err(|e| unreadable(stored, key, e))?
            {
                let id = std::str::from_utf8(key)
                    .ok()
                    .and_then(|k| k.parse::<uuid::Uuid>().ok())
                    .ok_or_else(|| {
                        unreadable(stored, key, StoreError::Corrupt("no uuid".into()))
                    })?;
                positional.push((id, compact));
            }
        }
    }
    for chunk in positional.chunks(RECORDS_PER_BATCH) {
        let (ids, bodies): (Vec<uuid::Uuid>, Vec<&[u8]>) = chunk
            .iter()
            .map(|(id, body)| (*id, body.as_slice()))
            .unzip();
        tx.execute(
            "UPDATE pufa_records r SET body = u.body
               FROM unnest($1::uuid[], $2::bytea[]) AS u(id, body)
              WHERE r.id = u.id",
            &[&ids, &bodies],
        )
        .await
        .map_err(super::pg::pg_err)?;
        done.rewritten += chunk.len() as u64;
    }
    tracing::info!(
        checked = done.checked,
        rewritten = done.rewritten,
        "database upgraded to store format {}",
        codec::STORE_FORMAT_6
    );
    Ok(done)
}
