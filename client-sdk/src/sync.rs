//! Sync: plan, then execute.
//!
//! The decisions are pure functions over local metadata and server answers
//! ([`plan`], [`after_checksum`], [`store_changed`]), unit-tested without IO.
//! [`run`] executes them: push the outbox in order, pull pages until the end
//! (each page and the cursor in one atomic local write), verify the
//! checksum, and repair by re-pulling from 0 when it disagrees. Every step
//! is idempotent, so an interrupted sync simply runs again.

use std::time::Duration;

use pufa_core::merge::record_digest;
use pufa_core::wire::{
    ChecksumResponse, DeviceReport, MutationStatus, OrgUnit, PullEntry, PullResponse, PushRequest,
    PushResponse,
};
use rand::Rng;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::model::{ConflictNotice, Phase, Progress, RejectedEdit, SyncReport};
use crate::store::{Confirmed, EntryStatus, Meta, OutboxEntry, Repair, Staged};
use crate::transport::{Method, Request, Response};
use crate::{lock, Inner, PUSH_BODY_BYTES_MAX};

/// What a sync will do, decided from local state alone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Mutations waiting to be pushed.
    pub pending: usize,
    /// Where the pull starts.
    pub pull_since: u64,
    /// A repair carried over from an interrupted sync.
    pub repair: Repair,
}

/// Plans a sync.
pub fn plan(meta: &Meta, pending: usize) -> Plan {
    Plan {
        pending,
        pull_since: meta.cursor,
        repair: meta.repair,
    }
}

/// What to do after comparing checksums.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The device holds exactly the server's view of its scope.
    Match,
    /// The server has moved on past our cursor: pull again, then compare.
    PullAgain,
    /// Same position, different contents: re-pull from 0 and drop what the
    /// server does not list.
    Repair,
}

/// The device's side of the checksum: `(count, xor)` over its confirmed
/// records (records a replaced store lost are not counted).
pub fn after_checksum(cursor: u64, local: (u64, u64), server: &ChecksumResponse) -> Verdict {
    if cursor < server.seq {
        return Verdict::PullAgain;
    }
    let text = pufa_core::merge::checksum_text(local.1);
    if local.0 == server.count && text == server.checksum {
        Verdict::Match
    } else {
        Verdict::Repair
    }
}

/// Whether an answer's `store_id` means the server store was replaced.
pub fn store_changed(known: Option<Uuid>, seen: Uuid) -> bool {
    known.is_some_and(|k| k != seen)
}

/// Longest wait between retries, whatever the server's `Retry-After` says.
const RETRY_AFTER_MAX_SECS: u64 = 300;

impl Inner {
    // Not a backoff crate: this is a dozen lines, and it has to honour the
    // server's Retry-After and draw jitter from the seeded RNG simulations
    // replay.
    fn backoff(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        let p = &self.retry;
        let exp = p
            .base_delay
            .saturating_mul(1u32 << attempt.min(16))
            .min(p.max_delay);
        let jitter: f64 = lock(&self.jitter).gen_range(0.5..1.0);
        let d = exp.mul_f64(jitter);
        match retry_after {
            Some(ra) => d.max(ra.min(Duration::from_secs(RETRY_AFTER_MAX_SECS))),
            None => d,
        }
    }

    /// Sends with retries: transport failures, 408, 429 and 5xx are retried
    /// with exponential backoff and jitter; 401 and other errors stop.
    async fn call(&self, method: Method, path: String, body: Option<Vec<u8>>) -> Result<Response> {
        let mut last = String::new();
        let mut retry_after = None;
        for attempt in 0..self.retry.attempts.max(1) {
            if attempt > 0 {
                let wait = self.backoff(attempt - 1, retry_after.take());
                if !wait.is_zero() {
                    tokio::time::sleep(wait).await;
                }
            }
            let req = Request {
                method,
                path: path.clone(),
                token: lock(&self.token).clone(),
                body: body.clone(),
            };
            match self.transport.send(req).await {
                Ok(r) if (200..300).contains(&r.status) => return Ok(r),
                Ok(r) if r.status == 401 => return Err(Error::Unauthorized),
                Ok(r) if r.status == 408 || r.status == 429 || r.status >= 500 => {
                    last = format!("HTTP {}", r.status);
                    retry_after = r.retry_after;
                }
                Ok(r) => {
                    return Err(match Error::refused(&r) {
                        Error::Server {
                            status: 403,
                            code,
                            message,
                        } => Error::Forbidden(format!("{code}: {message}")),
                        e => e,
                    });
                }
                Err(e) => last = e.0,
            }
        }
        Err(Error::Unreachable(last))
    }

    async fn get_json<T: DeserializeOwned>(&self, path: String) -> Result<T> {
        let r = self.call(Method::Get, path, None).await?;
        decode(&r)
    }

    /// Learns the clock offset and advances the HLC from an answer.
    fn observe_server_time(&self, meta: &mut Meta, server_time_ms: u64, sent_at: u64) {
        let now = self.clock.now_ms();
        // The answer was made somewhere between sending and receiving.
        let local_mid = sent_at / 2 + now / 2;
        meta.clock_offset_ms = server_time_ms as i64 - local_mid as i64;
        let mut hlc = meta.hlc_clock();
        hlc.observe_ms(server_time_ms);
        meta.hlc = hlc.parts();
    }
}

/// The JSON of a successful answer.
pub(crate) fn decode<T: DeserializeOwned>(r: &Response) -> Result<T> {
    serde_json::from_slice(&r.body).map_err(|e| Error::Server {
        status: r.status,
        code: "bad_response".into(),
        message: format!("unreadable answer: {e}"),
    })
}

/// Executes a sync.
///
/// # Errors
/// See [`crate::Client::sync`].
pub(crate) async fn run(
    inner: &Inner,
    progress: &(dyn Fn(Progress) + Send + Sync),
) -> Result<SyncReport> {
    let mut report = SyncReport::default();
    // A replaced server store turns acknowledged edits back into pending
    // ones; the second round pushes them to the new store.
    for _round in 0..2 {
        push_all(inner, &mut report, progress).await?;
        refresh_units(inner).await?;
        pull_all(inner, &mut report, progress).await?;
        verify(inner, &mut report, progress).await?;
        if !has_pending(inner)? {
            break;
        }
    }
    let _g = lock(&inner.meta_lock);
    let mut meta = inner.store.meta()?;
    meta.last_sync_ms = Some(inner.clock.now_ms());
    let mut s = Staged::default();
    s.meta(&meta);
    inner.store.commit(s, true)?;
    report.lost_on_server = inner.store.lost()?;
    Ok(report)
}

fn has_pending(inner: &Inner) -> Result<bool> {
    for e in inner.store.entries() {
        if e?.status == EntryStatus::Pending {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Compares checksums; pulls again while the server moves on; repairs at
/// most once. On a match, acknowledged edits are all reflected in the
/// confirmed records, so they leave the outbox (an edit that lost on every
/// field has a seq the device had already pulled, and would otherwise
/// linger in the local view).
async fn verify(
    inner: &Inner,
    report: &mut SyncReport,
    progress: &(dyn Fn(Progress) + Send + Sync),
) -> Result<()> {
    let mut repaired_now = false;
    report.checksum_ok = false;
    for _ in 0..4 {
        let server: ChecksumResponse = inner.get_json("/v1/sync/checksum".into()).await?;
        if store_changed(inner.store.meta()?.store_id, server.store_id) {
            begin_repair(inner, Repair::StoreReplaced, Some(server.store_id))?;
            pull_all(inner, report, progress).await?;
            continue;
        }
        let cursor = inner.store.meta()?.cursor;
        progress(Progress {
            phase: Phase::Checksum,
            done: 0,
            total: 1,
        });
        match after_checksum(cursor, local_checksum(inner)?, &server) {
            Verdict::Match => {
                report.checksum_ok = true;
                let _g = lock(&inner.meta_lock);
                let mut s = Staged::default();
                for e in inner.store.entries() {
                    let e = e?;
                    if matches!(e.status, EntryStatus::Acked { .. }) {
                        s.remove_entry(&e);
                    }
                }
                inner.store.commit(s, false)?;
                progress(Progress {
                    phase: Phase::Checksum,
                    done: 1,
                    total: 1,
                });
                return Ok(());
            }
            Verdict::PullAgain => pull_all(inner, report, progress).await?,
            Verdict::Repair if !repaired_now => {
                repaired_now = true;
                begin_repair(inner, Repair::Checksum, None)?;
                pull_all(inner, report, progress).await?;
            }
            Verdict::Repair => return Ok(()),
        }
    }
    Ok(())
}

fn local_checksum(inner: &Inner) -> Result<(u64, u64)> {
    let lost = inner.store.lost()?;
    let (mut count, mut xor) = (0u64, 0u64);
    for c in inner.store.all_confirmed() {
        let c = c?;
        if lost.binary_search(&c.view.id).is_err() {
            count += 1;
            xor ^= record_digest(c.view.id, c.view.seq);
        }
    }
    Ok((count, xor))
}

fn begin_repair(inner: &Inner, kind: Repair, store_id: Option<Uuid>) -> Result<()> {
    let _g = lock(&inner.meta_lock);
    let mut meta = inner.store.meta()?;
    meta.repair = kind;
    meta.epoch += 1;
    meta.cursor = 0;
    if let Some(id) = store_id {
        meta.store_id = Some(id);
    }
    let mut s = Staged::default();
    if kind == Repair::StoreReplaced {
        // The new store may predate these acknowledgements: push them again
        // (where it has them, they come back as duplicates).
        for e in inner.store.entries() {
            let mut e = e?;
            if matches!(e.status, EntryStatus::Acked { .. }) {
                e.status = EntryStatus::Pending;
                s.put_entry(&e);
            }
        }
    }
    s.meta(&meta);
    inner.store.commit(s, true)
}

async fn push_all(
    inner: &Inner,
    report: &mut SyncReport,
    progress: &(dyn Fn(Progress) + Send + Sync),
) -> Result<()> {
    let pending_total = inner
        .store
        .entries()
        .filter(|e| matches!(e, Ok(e) if e.status == EntryStatus::Pending))
        .count();
    let plan = plan(&inner.store.meta()?, pending_total);
    let total = plan.pending as u64;
    let mut done = 0u64;
    let mut batch_size = inner.push_batch;
    loop {
        // The report tells coordinators what is still waiting once this
        // push is answered (the server keeps it only if the push succeeds):
        // a device that has just synced everything reports 0, not the size
        // of its last batch.
        let mut batch: Vec<OutboxEntry> = Vec::new();
        let mut oldest = None::<u64>;
        let mut outbox_len = 0u64;
        for e in inner.store.entries() {
            let e = e?;
            if e.status == EntryStatus::Pending {
                if batch.len() < batch_size {
                    batch.push(e);
                } else {
                    outbox_len += 1;
                    oldest = Some(oldest.map_or(e.created_ms, |o| o.min(e.created_ms)));
                }
            }
        }
        if batch.is_empty() {
            return Ok(());
        }
        let sent_at = inner.clock.now_ms();
        let body = PushRequest {
            device_id: inner.device_id,
            mutations: batch.iter().map(|e| e.mutation.clone()).collect(),
            device: Some(DeviceReport {
                app_version: Some(inner.app_version.clone()),
                outbox_len: Some(outbox_len),
                oldest_pending_ms: oldest,
                now_ms: Some(sent_at),
            }),
        };
        let bytes = serde_json::to_vec(&body).map_err(|e| Error::Store(e.to_string()))?;
        if bytes.len() > PUSH_BODY_BYTES_MAX && batch_size > 1 {
            batch_size = batch_size.div_ceil(2);
            continue;
        }
        let r = inner
            .call(Method::Post, "/v1/sync/push".into(), Some(bytes))
            .await?;
        let resp: PushResponse = decode(&r)?;
        if resp.results.len() != batch.len() {
            return Err(Error::Server {
                status: r.status,
                code: "bad_response".into(),
                message: "one result per mutation expected".into(),
            });
        }
        let _g = lock(&inner.meta_lock);
        let mut meta = inner.store.meta()?;
        inner.observe_server_time(&mut meta, resp.server_time_ms, sent_at);
        if meta.store_id.is_none() {
            meta.store_id = Some(resp.store_id);
        }
        let mut hlc = meta.hlc_clock();
        let mut s = Staged::default();
        for (mut e, res) in batch.into_iter().zip(resp.results) {
            report.pushed += 1;
            if let Some(h) = &res.hlc {
                hlc.observe(h);
            }
            for c in &res.conflicts {
                let n = ConflictNotice::from_report(e.mutation.record_id, e.mutation.id, c);
                s.notice(&n);
                report.conflicts.push(n);
            }
            e.status = match (res.status, res.seq) {
                (MutationStatus::Applied | MutationStatus::Duplicate, Some(seq)) => {
                    if res.status == MutationStatus::Applied {
                        report.applied += 1;
                    } else {
                        report.duplicates += 1;
                    }
                    EntryStatus::Acked { seq }
                }
                _ => {
                    let error = res.error.unwrap_or(pufa_core::wire::ErrorObject {
                        code: "rejected".into(),
                        message: "rejected without a reason".into(),
                        field: None,
                        locked: None,
                    });
                    report.rejected.push(RejectedEdit {
                        mutation: e.mutation.id,
                        record_id: e.mutation.record_id,
                        kind: e.mutation.kind.clone(),
                        set: e.mutation.set.clone(),
                        delete: e.mutation.delete,
                        error: error.clone(),
                    });
                    EntryStatus::Rejected { error }
                }
            };
            s.put_entry(&e);
            done += 1;
        }
        meta.hlc = hlc.parts();
        s.meta(&meta);
        inner.store.commit(s, false)?;
        drop(_g);
        progress(Progress {
            phase: Phase::Push,
            done,
            total: total.max(done),
        });
    }
}

async fn refresh_units(inner: &Inner) -> Result<()> {
    let units: Vec<OrgUnit> = inner.get_json("/v1/org-units".into()).await?;
    let mut s = Staged::default();
    for u in &units {
        s.unit(u);
    }
    inner.store.commit(s, false)
}

async fn pull_all(
    inner: &Inner,
    report: &mut SyncReport,
    progress: &(dyn Fn(Progress) + Send + Sync),
) -> Result<()> {
    let start = inner.store.meta()?.cursor;
    loop {
        let meta = inner.store.meta()?;
        let phase = if meta.repair == Repair::None {
            Phase::Pull
        } else {
            Phase::Repair
        };
        let sent_at = inner.clock.now_ms();
        let page: PullResponse = inner
            .get_json(format!(
                "/v1/sync/pull?since={}&limit={}",
                meta.cursor, inner.pull_limit
            ))
            .await?;
        if store_changed(meta.store_id, page.store_id) {
            begin_repair(inner, Repair::StoreReplaced, Some(page.store_id))?;
            continue;
        }
        let _g = lock(&inner.meta_lock);
        let mut meta = inner.store.meta()?;
        meta.store_id = Some(page.store_id);
        inner.observe_server_time(&mut meta, page.server_time_ms, sent_at);
        let mut hlc = meta.hlc_clock();
        let mut s = Staged::default();
        // A first sync into an empty device has no outbox and no notices:
        // skip the per-record look-ups then.
        let any_entries = inner.store.has_entries()?;
        let any_notices = inner.store.has_notices()?;
        for entry in &page.records {
            let id = entry.id();
            // Edits this device pushed that the server has now folded in.
            let entries = if any_entries {
                inner.store.entries_for(id)?
            } else {
                Vec::new()
            };
            for e in entries {
                if let EntryStatus::Acked { seq } = e.status {
                    if matches!(entry, PullEntry::Gone(_)) || seq <= entry.seq() {
                        s.remove_entry(&e);
                    }
                }
            }
            match entry {
                PullEntry::Record(view) => {
                    if view.conflicts == 0 && any_notices {
                        // Resolved: the details no longer apply.
                        for n in inner.store.notices_for(id)? {
                            s.remove_notice(&n);
                        }
                    }
                    hlc.observe(&view.hlc);
                    s.put_confirmed(&Confirmed {
                        view: view.clone(),
                        epoch: meta.epoch,
                    });
                    report.pulled += 1;
                }
                PullEntry::Gone(_) => {
                    let notices = if any_notices {
                        inner.store.notices_for(id)?
                    } else {
                        Vec::new()
                    };
                    for n in notices {
                        s.remove_notice(&n);
                    }
                    if inner.store.confirmed(id)?.is_some() {
                        s.remove_confirmed(id);
                        report.removed += 1;
                    }
                }
            }
        }
        meta.cursor = page.next.max(meta.cursor);
        meta.hlc = hlc.parts();
        s.meta(&meta);
        inner.store.commit(s, false)?;
        if !page.has_more && meta.repair != Repair::None {
            // A second write, after the last page is in the store: the
            // repair judges epochs as stored. A crash between the two leaves
            // the repair flagged at the end of the feed; the next sync pulls
            // nothing more and finishes it here.
            let mut s = Staged::default();
            finish_repair(inner, &meta, &mut s, report)?;
            meta.repair = Repair::None;
            s.meta(&meta);
            inner.store.commit(s, false)?;
        }
        drop(_g);
        progress(Progress {
            phase,
            done: meta.cursor.saturating_sub(start),
            total: page.next.saturating_sub(start),
        });
        if !page.has_more {
            return Ok(());
        }
    }
}

/// After a repair's last page: records of older epochs were not listed.
fn finish_repair(
    inner: &Inner,
    meta: &Meta,
    s: &mut Staged,
    report: &mut SyncReport,
) -> Result<()> {
    report.repaired = true;
    for c in inner.store.all_confirmed() {
        let c = c?;
        if c.epoch < meta.epoch {
            match meta.repair {
                // Same store, different contents: the server does not list it.
                Repair::Checksum => {
                    s.remove_confirmed(c.view.id);
                    report.removed += 1;
                }
                // A replaced store lost it: keep it and tell the user.
                _ => s.lost(c.view.id),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(seq: u64, count: u64, xor: u64) -> ChecksumResponse {
        ChecksumResponse {
            seq,
            count,
            checksum: pufa_core::merge::checksum_text(xor),
            store_id: Uuid::nil(),
        }
    }

    #[test]
    fn checksum_verdicts() {
        assert_eq!(
            after_checksum(10, (3, 7), &server(10, 3, 7)),
            Verdict::Match
        );
        assert_eq!(
            after_checksum(12, (3, 7), &server(10, 3, 7)),
            Verdict::Match
        );
        assert_eq!(
            after_checksum(9, (3, 7), &server(10, 3, 7)),
            Verdict::PullAgain
        );
        assert_eq!(
            after_checksum(10, (2, 7), &server(10, 3, 7)),
            Verdict::Repair
        );
        assert_eq!(
            after_checksum(10, (3, 6), &server(10, 3, 7)),
            Verdict::Repair
        );
    }

    #[test]
    fn store_replacement_and_plans() {
        let a = Uuid::from_u128(1);
        assert!(!store_changed(None, a));
        assert!(!store_changed(Some(a), a));
        assert!(store_changed(Some(a), Uuid::from_u128(2)));
        let meta = Meta {
            cursor: 40,
            repair: Repair::Checksum,
            ..Meta::default()
        };
        assert_eq!(
            plan(&meta, 3),
            Plan {
                pending: 3,
                pull_since: 40,
                repair: Repair::Checksum
            }
        );
    }
}
