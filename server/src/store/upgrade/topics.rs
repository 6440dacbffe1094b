//! The upgrade to store format 7, where topic aggregates count lectures by
//! the topic vocabulary (`pufa_core::topics`): 反诈 and 电信网络诈骗 under
//! 反电信网络诈骗, once per lecture.
//!
//! A format-6 store's topic entries count topics as written. Left as they
//! are, the figures would keep the synonyms apart, and every later write
//! would subtract a lecture's folded topics from entries that never held
//! them. So the upgrade recounts every topic entry from the records (what
//! `verify` recounts, and what the format-2 upgrade did when topic entries
//! were added) and replaces them all, with the format mark, in one write:
//! an upgrade cut short leaves a format-6 store that upgrades again.
//! Records keep their topics as written; nothing else is touched.
//!
//! sled: at open ([`sled_to_format_7`]). PostgreSQL: in the transaction of
//! schema migration 5 ([`pg_to_format_7`]); replaced entries are written
//! with a new write generation and removed ones kept as NULL, as every
//! write does, so caches catch up.

use std::collections::BTreeMap;

use futures_util::{pin_mut, TryStreamExt as _};
use pufa_core::totals::{AggKey, Aggregates};

use crate::store::codec;
use crate::store::StoreError;

/// What an upgrade did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Refolded {
    /// Records read.
    pub records: u64,
    /// Topic entries written (a unit's year).
    pub written: u64,
    /// Topic entries removed: stored, yet given by no record.
    pub removed: u64,
}

impl Refolded {
    /// Says in the log what the upgrade of `what` (the store, the
    /// database) did.
    fn logged(self, what: &str) -> Refolded {
        tracing::info!(
            records = self.records,
            written = self.written,
            removed = self.removed,
            "{what} upgraded to store format {}: topic figures by the vocabulary",
            codec::STORE_FORMAT
        );
        self
    }
}

/// Records read, and the aggregates they give.
#[derive(Default)]
struct Recount {
    agg: Aggregates,
    records: u64,
}

impl Recount {
    fn add(&mut self, body: &[u8]) -> Result<(), StoreError> {
        self.agg.apply(None, &codec::decode_record(body)?);
        self.records += 1;
        Ok(())
    }

    /// The topic entries: encoded key → encoded value.
    fn entries(mut self) -> BTreeMap<Vec<u8>, Vec<u8>> {
        self.agg
            .take_dirty()
            .into_iter()
            .filter(|(k, _)| matches!(k, AggKey::Topics(..)))
            .filter_map(|(k, v)| Some((codec::agg_key(&k), codec::agg_value(&v)?)))
            .collect()
    }
}

/// Whether an aggregate key (with its `g/` prefix) is a topic entry.
fn is_topics(key: &[u8]) -> Result<bool, StoreError> {
    let bare = key
        .strip_prefix(codec::AGG)
        .ok_or_else(|| StoreError::Corrupt("aggregate key without g/".into()))?;
    Ok(matches!(codec::decode_agg_key(bare)?, AggKey::Topics(..)))
}

/// Upgrades a format-6 sled store to 7 and marks it so (the caller makes
/// that durable with everything else it wrote at open).
///
/// # Errors
/// sled's, or [`StoreError::Corrupt`] for a record or key that does not
/// read (the store then stays at format 6).
pub(crate) fn sled_to_format_7(db: &sled::Db) -> Result<Refolded, StoreError> {
    let mut recount = Recount::default();
    for kv in db.scan_prefix(codec::RECORD) {
        recount.add(&kv?.1)?;
    }
    let records = recount.records;
    let fresh = recount.entries();
    let mut batch = sled::Batch::default();
    let mut removed = 0;
    for kv in db.scan_prefix(codec::AGG) {
        let (key, _) = kv?;
        if is_topics(&key)? && !fresh.contains_key(&key[..]) {
            batch.remove(key);
            removed += 1;
        }
    }
    for (key, value) in &fresh {
        batch.insert(key.as_slice(), value.as_slice());
    }
    batch.insert(codec::META_FORMAT, &codec::STORE_FORMAT.to_be_bytes());
    db.apply_batch(batch)?;
    Ok(Refolded {
        records,
        written: fresh.len() as u64,
        removed,
    }
    .logged("store"))
}

/// Upgrades a PostgreSQL store to format 7 inside the migration's
/// transaction `tx` (records streamed, so a large store is not held in
/// memory).
///
/// # Errors
/// The database's, or [`StoreError::Corrupt`] for a record or key that
/// does not read (the migration then rolls back whole).
pub(crate) async fn pg_to_format_7(
    tx: &tokio_postgres::Transaction<'_>,
) -> Result<Refolded, StoreError> {
    use crate::store::pg::pg_err;
    let mut recount = Recount::default();
    let rows = tx
        .query_raw("SELECT body FROM pufa_records", std::iter::empty::<i32>())
        .await
        .map_err(pg_err)?;
    pin_mut!(rows);
    while let Some(row) = rows.try_next().await.map_err(pg_err)? {
        recount.add(row.get(0))?;
    }
    let records = recount.records;
    let fresh = recount.entries();
    let mut gone = Vec::new();
    for row in tx
        .query(
            "SELECT key FROM pufa_aggregates WHERE value IS NOT NULL",
            &[],
        )
        .await
        .map_err(pg_err)?
    {
        let key: Vec<u8> = row.get(0);
        if is_topics(&key)? && !fresh.contains_key(&key) {
            gone.push(key);
        }
    }
    // A database without a state row (being created by this very
    // migration run) has no records and no aggregates either.
    let Some(gen) = tx
        .query_opt(
            "UPDATE pufa_state SET gen = gen + 1 WHERE id = 1 RETURNING gen",
            &[],
        )
        .await
        .map_err(pg_err)?
        .map(|row| row.get::<_, i64>(0))
    else {
        return Ok(Refolded::default());
    };
    tx.execute(
        "UPDATE pufa_aggregates SET value = NULL, gen = $2 WHERE key = ANY($1)",
        &[&gone, &gen],
    )
    .await
    .map_err(pg_err)?;
    let (keys, values): (Vec<&[u8]>, Vec<&[u8]>) = fresh
        .iter()
        .map(|(k, v)| (k.as_slice(), v.as_slice()))
        .unzip();
    tx.execute(
        "INSERT INTO pufa_aggregates (key, gen, value)
         SELECT k, $2, v FROM UNNEST($1::bytea[], $3::bytea[]) AS u(k, v)
         ON CONFLICT (key) DO UPDATE SET gen = EXCLUDED.gen, value = EXCLUDED.value",
        &[&keys, &gen, &values],
    )
    .await
    .map_err(pg_err)?;
    Ok(Refolded {
        records,
        written: fresh.len() as u64,
        removed: gone.len() as u64,
    }
    .logged("database"))
}

#[cfg(test)]
mod tests {
    use sha2::{Digest as _, Sha256};

    /// The vocabulary stored topic aggregates are counted by, as of this
    /// store format. A change to it (a synonym, a topic; or to how
    /// `topics.rs` matches what was written) changes what stored figures
    /// mean: it needs a new store format whose upgrade recounts them as
    /// this one does, and then the new digest here.
    const VOCABULARY_SHA256: &str =
        "ba5ed45aa13bf3e09f29dc52e8b2fd20334e84073ce02fb91068ceb9d1d9ee9b";

    #[test]
    fn the_vocabulary_is_the_one_stored_figures_count_by() {
        let mut h = Sha256::new();
        for t in pufa_core::topics::VOCABULARY {
            h.update(t.name.as_bytes());
            for s in t.synonyms {
                h.update(b"\0");
                h.update(s.as_bytes());
            }
            h.update(b"\n");
        }
        assert_eq!(
            hex::encode(h.finalize()),
            VOCABULARY_SHA256,
            "the topic vocabulary changed: stored topic figures count by the old one; \
             add a store format whose upgrade recounts them (store/upgrade/topics.rs)"
        );
    }
}
