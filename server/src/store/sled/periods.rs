//! Reporting periods on the sled store: `q/` holds each period someone
//! acted on; the approved ones are also kept in memory as the locks every
//! write consults.

use async_trait::async_trait;
use pufa_core::period::Locks;

use super::{Inner, SledStore};
use crate::store::apply;
use crate::store::codec::{self, decode};
use crate::store::{PeriodOutcome, PeriodStepInput, PeriodStore, StoreError, StoredPeriod};

/// The approved periods in `db`.
pub(super) fn load_locks(db: &sled::Db) -> Result<Locks, StoreError> {
    let mut approvals = Vec::new();
    for kv in db.scan_prefix(codec::PERIOD) {
        let (_, v) = kv?;
        approvals.extend(decode::<StoredPeriod>(&v)?.approval());
    }
    Ok(Locks::from_approvals(approvals))
}

impl Inner {
    fn period_step(&self, input: PeriodStepInput) -> Result<(PeriodOutcome, u64), StoreError> {
        let tree = self.tree();
        let mut tx = self.begin();
        let current = self
            .db
            .get(codec::period_key(&input.org_unit, input.period))?
            .map(|v| decode::<StoredPeriod>(&v))
            .transpose()?;
        let outcome = apply::period_step(&mut tx, &tree, current, &input)?;
        if !matches!(outcome, PeriodOutcome::Done(_)) {
            return Ok((outcome, 0));
        }
        Ok((outcome, tx.commit(None)?))
    }
}

#[async_trait]
impl PeriodStore for SledStore {
    async fn period_step(&self, step: PeriodStepInput) -> Result<PeriodOutcome, StoreError> {
        self.write(move |inner| inner.period_step(step)).await
    }

    async fn periods_of_year(&self, year: i32) -> Result<Vec<StoredPeriod>, StoreError> {
        self.blocking(move |inner| {
            let mut out = Vec::new();
            for kv in inner.db.scan_prefix(codec::PERIOD) {
                let (_, v) = kv?;
                let p = decode::<StoredPeriod>(&v)?;
                if p.period.year() == year {
                    out.push(p);
                }
            }
            out.sort_by(|a, b| (&a.org_unit, a.period).cmp(&(&b.org_unit, b.period)));
            Ok(out)
        })
        .await
    }

    async fn locks(&self) -> Result<Locks, StoreError> {
        Ok((*self.inner.locks()).clone())
    }
}
