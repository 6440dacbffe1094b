//! Likely double entries on PostgreSQL: `pufa_dismissals` holds the
//! pairs marked "not a duplicate"; a coordinator's delete is a record
//! write like a resolution.

use async_trait::async_trait;
use uuid::Uuid;

use super::staging::PgStaging;
use super::{pg_err, PgStore};
use crate::store::apply;
use crate::store::codec::decode;
use crate::store::{
    Device, DismissInput, DismissOutcome, DuplicateStore, ResolveOutcome, StoreError,
    StoredDismissal,
};

#[async_trait]
impl DuplicateStore for PgStore {
    async fn dismiss_pair(&self, input: DismissInput) -> Result<DismissOutcome, StoreError> {
        let mut client = self.inner.client().await?;
        let (tx, state) = self.inner.begin(&mut client).await?;
        let current = tx
            .query_opt(
                "SELECT body FROM pufa_dismissals WHERE a = $1 AND b = $2",
                &[&input.a, &input.b],
            )
            .await
            .map_err(pg_err)?
            .map(|row| decode::<StoredDismissal>(row.get(0)))
            .transpose()?;
        let mut st = PgStaging::new(state, self.inner.rejections_kept);
        st.load_records(&tx, vec![input.a, input.b]).await?;
        let tree = self.inner.tree();
        let outcome = apply::dismiss(&mut st, &tree, current, &input)?;
        if matches!(outcome, DismissOutcome::Dismissed(_)) {
            self.inner.commit(tx, st, None).await?;
        } else {
            tx.rollback().await.map_err(pg_err)?;
        }
        Ok(outcome)
    }

    async fn dismissed(&self, pairs: Vec<(Uuid, Uuid)>) -> Result<Vec<(Uuid, Uuid)>, StoreError> {
        if pairs.is_empty() {
            return Ok(Vec::new());
        }
        let client = self.inner.client().await?;
        let (a, b): (Vec<Uuid>, Vec<Uuid>) = pairs.iter().copied().unzip();
        let rows = client
            .query(
                "SELECT d.a, d.b FROM pufa_dismissals d
                   JOIN UNNEST($1::uuid[], $2::uuid[]) AS p(a, b) ON d.a = p.a AND d.b = p.b",
                &[&a, &b],
            )
            .await
            .map_err(pg_err)?;
        let mut out: Vec<(Uuid, Uuid)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    async fn delete_record(
        &self,
        id: Uuid,
        by: &Device,
        person: Option<String>,
        now_ms: u64,
    ) -> Result<ResolveOutcome, StoreError> {
        let mut client = self.inner.client().await?;
        let (tx, state) = self.inner.begin(&mut client).await?;
        let mut st = PgStaging::new(state, self.inner.rejections_kept);
        st.load_records(&tx, vec![id]).await?;
        st.load_locks(&tx).await?;
        let tree = self.inner.tree();
        let outcome = apply::delete_record(&mut st, &tree, id, by, person, now_ms)?;
        if matches!(outcome, ResolveOutcome::Resolved(_)) {
            self.inner.commit(tx, st, None).await?;
        } else {
            tx.rollback().await.map_err(pg_err)?;
        }
        Ok(outcome)
    }
}
