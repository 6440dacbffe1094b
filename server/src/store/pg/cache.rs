//! This instance's copies of the org tree and the aggregates, caught up with
//! what the database has committed before they are used.

use std::sync::Arc;

use pufa_core::org::OrgTree;
use pufa_core::totals::Aggregates;
use pufa_core::wire::OrgUnit;

use super::{pg_err, small, Inner};
use crate::store::codec::{self, decode};
use crate::store::StoreError;

impl Inner {
    /// Brings the cached aggregates and org tree up to what the database
    /// has committed; returns the committed seq.
    pub(super) async fn catch_up(
        &self,
        client: &impl tokio_postgres::GenericClient,
    ) -> Result<u64, StoreError> {
        let _one = self.refresh.lock().await;
        self.catch_up_locked(client).await
    }

    pub(super) async fn catch_up_locked(
        &self,
        client: &impl tokio_postgres::GenericClient,
    ) -> Result<u64, StoreError> {
        let since = self
            .agg
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .gen
            .unwrap_or(-1);
        // One statement, one snapshot: the state row and the aggregate rows
        // written after `since` agree.
        let rows = client
            .query(
                "SELECT s.gen, s.seq, s.org_version, a.key, a.value
                   FROM pufa_state s LEFT JOIN pufa_aggregates a ON a.gen > $1
                  WHERE s.id = 1",
                &[&since],
            )
            .await
            .map_err(pg_err)?;
        let Some(first) = rows.first() else {
            return Err(StoreError::Corrupt("pufa_state has no row".into()));
        };
        let (gen, seq, org_version): (i64, i64, i64) = (first.get(0), first.get(1), first.get(2));
        let cached_version = self.org.read().unwrap_or_else(|e| e.into_inner()).0;
        if org_version != cached_version {
            let units = client
                .query("SELECT body FROM pufa_org_units", &[])
                .await
                .map_err(pg_err)?
                .iter()
                .map(|r| decode::<OrgUnit>(r.get(0)))
                .collect::<Result<Vec<_>, _>>()?;
            *self.org.write().unwrap_or_else(|e| e.into_inner()) =
                (org_version, Arc::new(OrgTree::from_units(units)));
        }
        let mut cache = self.agg.write().unwrap_or_else(|e| e.into_inner());
        if cache.gen.is_none() {
            cache.agg = Aggregates::default();
        }
        for row in &rows {
            let Some(key) = row.get::<_, Option<&[u8]>>(3) else {
                continue;
            };
            let key = key
                .strip_prefix(codec::AGG)
                .ok_or_else(|| StoreError::Corrupt("aggregate key without g/".into()))?;
            match row.get::<_, Option<&[u8]>>(4) {
                Some(value) => {
                    let (k, v) = codec::decode_agg(key, value)?;
                    cache.agg.replace(k, Some(v));
                }
                None => cache.agg.replace(codec::decode_agg_key(key)?, None),
            }
        }
        cache.agg.note_max_seq(small(seq));
        cache.gen = Some(cache.gen.map_or(gen, |g| g.max(gen)));
        Ok(small(seq))
    }
}
