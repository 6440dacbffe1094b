//! What a device's sync asks of the PostgreSQL store: token checks, pushes
//! applied in groups (one transaction each), pages of the feed from one
//! snapshot, the checksum from the caught-up aggregates.

use std::sync::Arc;

use async_trait::async_trait;
use pufa_core::org::{OrgTree, Scope};
use pufa_core::wire::MutationResult;
use tokio_postgres::IsolationLevel;
use uuid::Uuid;

use super::staging::PgStaging;
use super::{big, pg_err, small, Inner, PgStore, SCAN_CHUNK};
use crate::store::apply;
use crate::store::codec::{self, decode};
use crate::store::{
    Device, PullPage, PushInput, ScopeChecksum, StoreError, SyncStore, TokenHash, PULL_SCAN_MAX,
};

impl Inner {
    /// Applies several pushes in one transaction (group apply): the pushes
    /// that queued on this instance while the previous group ran share its
    /// lock, round trips and commit.
    pub(super) async fn push_group(
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
        st.load_locks(&tx).await?;
        let tree = self.tree();
        let mut all = Vec::with_capacity(inputs.len());
        for input in inputs {
            all.push(apply::push(&mut st, self.ids.as_ref(), &tree, input)?);
        }
        self.commit(tx, st, None).await?;
        Ok(all)
    }
}

/// One page of the feed from one snapshot (see `pull` below).
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
impl SyncStore for PgStore {
    fn store_id(&self) -> Uuid {
        self.inner.store_id
    }

    fn org_tree(&self) -> Arc<OrgTree> {
        self.inner.tree()
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

    async fn push(&self, input: PushInput) -> Result<Vec<MutationResult>, StoreError> {
        let inner = self.inner.clone();
        self.inner
            .pushes
            .push(input, move |inputs| async move {
                match inner.push_group(&inputs).await {
                    Ok(results) => results.into_iter().map(Ok).collect(),
                    Err(e) => inputs.iter().map(|_| Err(e.again())).collect(),
                }
            })
            .await
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
}
