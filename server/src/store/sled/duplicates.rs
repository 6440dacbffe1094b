//! Likely double entries on the sled store: `x/` holds the pairs marked
//! "not a duplicate"; a coordinator's delete is a record write like a
//! resolution.

use async_trait::async_trait;
use uuid::Uuid;

use super::{Inner, SledStore};
use crate::store::apply;
use crate::store::codec::{self, decode};
use crate::store::{
    Device, DismissInput, DismissOutcome, DuplicateStore, ResolveOutcome, StoreError,
    StoredDismissal,
};

impl Inner {
    fn dismiss_pair(&self, input: DismissInput) -> Result<(DismissOutcome, u64), StoreError> {
        let tree = self.tree();
        let mut tx = self.begin();
        let current = self
            .db
            .get(codec::dismissal_key(input.a, input.b))?
            .map(|v| decode::<StoredDismissal>(&v))
            .transpose()?;
        let outcome = apply::dismiss(&mut tx, &tree, current, &input)?;
        if !matches!(outcome, DismissOutcome::Dismissed(_)) {
            return Ok((outcome, 0));
        }
        Ok((outcome, tx.commit(None)?))
    }

    fn delete_record(
        &self,
        id: Uuid,
        by: &Device,
        person: Option<String>,
        now_ms: u64,
    ) -> Result<(ResolveOutcome, u64), StoreError> {
        let tree = self.tree();
        let mut tx = self.begin();
        let outcome = apply::delete_record(&mut tx, &tree, id, by, person, now_ms)?;
        if !matches!(outcome, ResolveOutcome::Resolved(_)) {
            return Ok((outcome, 0));
        }
        Ok((outcome, tx.commit(None)?))
    }
}

#[async_trait]
impl DuplicateStore for SledStore {
    async fn dismiss_pair(&self, input: DismissInput) -> Result<DismissOutcome, StoreError> {
        self.write(move |inner| inner.dismiss_pair(input)).await
    }

    async fn dismissed(&self, pairs: Vec<(Uuid, Uuid)>) -> Result<Vec<(Uuid, Uuid)>, StoreError> {
        self.blocking(move |inner| {
            let mut out = Vec::new();
            for (a, b) in pairs {
                if inner.db.contains_key(codec::dismissal_key(a, b))? {
                    out.push((a, b));
                }
            }
            Ok(out)
        })
        .await
    }

    async fn delete_record(
        &self,
        id: Uuid,
        by: &Device,
        person: Option<String>,
        now_ms: u64,
    ) -> Result<ResolveOutcome, StoreError> {
        let by = by.clone();
        self.write(move |inner| inner.delete_record(id, &by, person, now_ms))
            .await
    }
}
