//! Upgrades of older store formats, in place, when the store is opened.

use pufa_core::audit;
use pufa_core::totals::{AggKey, Aggregates};
use pufa_core::wire::AuditCause;

use super::open::audit_head;
use crate::store::codec::{self, encode, AuditBody};
use crate::store::StoreError;

/// Records logged per batch when a format-3 store gets its baseline audit
/// entries (bounded so that a million records never make one huge batch).
const UPGRADE_RECORDS_PER_BATCH: usize = 10_000;

/// Format 3 added the per-topic lecture aggregates: recount them from the
/// records and write them with the new format mark in one batch, so a crash
/// mid-upgrade leaves a format-2 store that upgrades again.
pub(super) fn upgrade_from_format_2(db: &sled::Db) -> Result<(), StoreError> {
    let mut fresh = Aggregates::default();
    for kv in db.scan_prefix(codec::RECORD) {
        let (_, v) = kv?;
        let record = codec::decode_record(&v)?;
        fresh.apply(None, &record);
    }
    let mut b = sled::Batch::default();
    for (key, value) in fresh.take_dirty() {
        if let (AggKey::Topics(..), Some(bytes)) = (&key, codec::agg_value(&value)) {
            b.insert(codec::agg_key(&key), bytes);
        }
    }
    b.insert(codec::META_FORMAT, &codec::STORE_FORMAT_3.to_be_bytes());
    db.apply_batch(b)?;
    db.flush()?;
    tracing::info!("store upgraded from format 2 to 3 (topic aggregates)");
    Ok(())
}

/// Format 4 added the audit log. A format-3 store's records get one
/// `baseline` entry each (their values as they stand), in record-id order
/// and batches of [`UPGRADE_RECORDS_PER_BATCH`]; the format mark comes last,
/// so an upgrade cut short resumes after the last record it logged.
pub(super) fn upgrade_from_format_3(db: &sled::Db, now_ms: u64) -> Result<(), StoreError> {
    let (mut n, mut head) = audit_head(db)?;
    let mut start = codec::RECORD.to_vec();
    if let Some((_, v)) = db.scan_prefix(codec::AUDIT).next_back().transpose()? {
        let last = codec::decode_audit(&v)?;
        start = codec::record_key(last.body.record_id);
        start.push(0);
    }
    let mut logged = 0u64;
    loop {
        let mut b = sled::Batch::default();
        let mut in_batch = 0;
        for kv in db.range(start.clone()..) {
            let (k, v) = kv?;
            if !k.starts_with(codec::RECORD) {
                break;
            }
            let r = codec::decode_record(&v)?;
            n += 1;
            let body = AuditBody {
                n,
                server_ms: now_ms,
                seq: r.seq,
                record_id: r.id,
                kind: r.kind,
                cause: AuditCause::Baseline,
                mutation_id: None,
                conflict_id: None,
                device_id: None,
                actor: None,
                record_prev: None,
                hlc: r.hlc(),
                pushed_hlc: None,
                changes: audit::changes(None, &r),
                conflicts: Vec::new(),
                period: None,
            };
            let (value, hash) = codec::encode_audit(&head, &body);
            head = hash;
            b.insert(codec::audit_key(n), value);
            b.insert(codec::seq_key(r.seq), &codec::feed_value(r.id, n));
            start = k.to_vec();
            start.push(0);
            in_batch += 1;
            if in_batch == UPGRADE_RECORDS_PER_BATCH {
                break;
            }
        }
        b.insert(codec::META_AUDIT, encode(&(n, head)));
        logged += in_batch as u64;
        let done = in_batch < UPGRADE_RECORDS_PER_BATCH;
        if done {
            b.insert(codec::META_FORMAT, &codec::STORE_FORMAT_5.to_be_bytes());
        }
        db.apply_batch(b)?;
        if done {
            break;
        }
    }
    db.flush()?;
    tracing::info!(
        records = logged,
        "store upgraded from format 3 (audit log added)"
    );
    Ok(())
}
