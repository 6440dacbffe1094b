//! Reporting periods on PostgreSQL: `pufa_periods` holds each period
//! someone acted on, with `approved` set on the ones that lock writes
//! (every write that consults them reads them under the state row's lock).

use async_trait::async_trait;
use pufa_core::period::Locks;
use tokio_postgres::GenericClient;

use super::staging::PgStaging;
use super::{pg_err, PgStore};
use crate::store::apply;
use crate::store::codec::decode;
use crate::store::{PeriodOutcome, PeriodStepInput, PeriodStore, StoreError, StoredPeriod};

#[async_trait]
impl PeriodStore for PgStore {
    async fn period_step(&self, step: PeriodStepInput) -> Result<PeriodOutcome, StoreError> {
        let mut client = self.inner.client().await?;
        let (tx, state) = self.inner.begin(&mut client).await?;
        let current = tx
            .query_opt(
                "SELECT body FROM pufa_periods WHERE org_unit = $1 AND period = $2",
                &[&step.org_unit, &step.period.to_string()],
            )
            .await
            .map_err(pg_err)?
            .map(|row| decode::<StoredPeriod>(row.get(0)))
            .transpose()?;
        let mut st = PgStaging::new(state, self.inner.rejections_kept);
        st.load_locks(&tx).await?;
        let tree = self.inner.tree();
        let outcome = apply::period_step(&mut st, &tree, current, &step)?;
        if matches!(outcome, PeriodOutcome::Done(_)) {
            self.inner.commit(tx, st, None).await?;
        } else {
            tx.rollback().await.map_err(pg_err)?;
        }
        Ok(outcome)
    }

    async fn periods_of_year(&self, year: i32) -> Result<Vec<StoredPeriod>, StoreError> {
        let client = self.inner.client().await?;
        let rows = client
            .query(
                "SELECT body FROM pufa_periods WHERE left(period, 4) = $1
                  ORDER BY org_unit, period",
                &[&year.to_string()],
            )
            .await
            .map_err(pg_err)?;
        let mut out = rows
            .iter()
            .map(|row| decode::<StoredPeriod>(row.get(0)))
            .collect::<Result<Vec<_>, _>>()?;
        out.sort_by(|a, b| (&a.org_unit, a.period).cmp(&(&b.org_unit, b.period)));
        Ok(out)
    }

    async fn locks(&self) -> Result<Locks, StoreError> {
        let client = self.inner.client().await?;
        load_locks(&**client).await
    }
}

/// The approved periods, as `c` sees them.
pub(super) async fn load_locks(c: &impl GenericClient) -> Result<Locks, StoreError> {
    let rows = c
        .query("SELECT body FROM pufa_periods WHERE approved", &[])
        .await
        .map_err(pg_err)?;
    let mut approvals = Vec::with_capacity(rows.len());
    for row in rows {
        approvals.extend(decode::<StoredPeriod>(row.get(0))?.approval());
    }
    Ok(Locks::from_approvals(approvals))
}
