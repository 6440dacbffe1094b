//! What a device's sync asks of the sled store: token checks from memory,
//! pushes applied in groups under the writer lock, pages of the feed, the
//! checksum from the aggregates.

use std::sync::Arc;

use async_trait::async_trait;
use pufa_core::org::{OrgTree, Scope};
use pufa_core::wire::MutationResult;
use uuid::Uuid;

use super::{Inner, SledStore, GROUP_BATCH_MUTATIONS_MAX};
use crate::store::apply;
use crate::store::codec;
use crate::store::{Device, PullPage, PushInput, ScopeChecksum, StoreError, SyncStore, TokenHash};

/// What the group apply answers for one push: its results, and the write
/// generation it waits for before it is durable.
pub(super) type PushAnswer = Result<(Vec<MutationResult>, u64), StoreError>;

impl Inner {
    /// Applies the pushes queued while the previous write ran (group apply):
    /// whole pushes, in order, in sled batches of up to
    /// [`GROUP_BATCH_MUTATIONS_MAX`] mutations (at least one push each), so
    /// every push is atomic and each waits for its own batch's durability.
    /// One answer per input; after a failed batch, that batch's pushes and
    /// all later ones fail (nothing of them was written).
    ///
    /// The answers go out together when the group is done. Sending each
    /// batch's answers as it committed was measured slower (A/B at 300,000
    /// records: push −10–15%, 200-device p50 +10 ms): the woken requests
    /// then compete with the writer for the two cores. A panic here fails
    /// every push of the group, including those whose batches committed;
    /// their retries are answered `duplicate`.
    pub(super) fn push_group(&self, inputs: Vec<PushInput>) -> Vec<PushAnswer> {
        let tree = self.tree();
        let mut answers: Vec<PushAnswer> = Vec::with_capacity(inputs.len());
        let mut rest = &inputs[..];
        while !rest.is_empty() {
            let mut take = 1;
            let mut mutations = rest[0].mutations.len();
            while let Some(next) = rest.get(take) {
                mutations += next.mutations.len();
                if mutations > GROUP_BATCH_MUTATIONS_MAX {
                    break;
                }
                take += 1;
            }
            let written = (|| {
                let mut tx = self.begin();
                let mut results = Vec::with_capacity(take);
                for input in &rest[..take] {
                    results.push(apply::push(&mut tx, self.ids.as_ref(), &tree, input)?);
                }
                Ok::<_, StoreError>((results, tx.commit(None)?))
            })();
            match written {
                Ok((results, generation)) => {
                    answers.extend(results.into_iter().map(|r| Ok((r, generation))));
                    rest = &rest[take..];
                }
                Err(e) => {
                    self.durability.failed(&e);
                    let msg = format!("the write failed: {e}");
                    answers.extend(
                        rest.iter()
                            .map(|_| Err(StoreError::Unavailable(msg.clone()))),
                    );
                    break;
                }
            }
        }
        answers
    }
}

#[async_trait]
impl SyncStore for SledStore {
    fn store_id(&self) -> Uuid {
        self.inner.store_id
    }

    fn org_tree(&self) -> Arc<OrgTree> {
        self.inner.tree()
    }

    /// From memory, on the calling task: every request asks, and a hand-off
    /// to a blocking thread per request made a burst of 200 devices wake a
    /// thread each, every one keeping its own allocator pages
    /// (docs/performance.md).
    async fn authenticate(&self, hash: TokenHash) -> Result<Option<Device>, StoreError> {
        let devices = self.inner.devices.read().unwrap_or_else(|e| e.into_inner());
        Ok(devices
            .by_token
            .get(&hash)
            .and_then(|id| devices.by_id.get(id))
            .filter(|d| !d.revoked && d.token_hash == hash)
            .cloned())
    }

    async fn device(&self, id: Uuid) -> Result<Option<Device>, StoreError> {
        self.inner.device(id)
    }

    async fn push(&self, input: PushInput) -> Result<Vec<MutationResult>, StoreError> {
        let inner = self.inner.clone();
        let (results, generation) = self
            .inner
            .pushes
            .push(input, move |inputs| async move {
                let n = inputs.len();
                match tokio::task::spawn_blocking(move || inner.push_group(inputs)).await {
                    Ok(answers) => answers,
                    Err(e) => {
                        let msg = format!("store task failed: {e}");
                        (0..n)
                            .map(|_| Err(StoreError::Other(msg.clone())))
                            .collect()
                    }
                }
            })
            .await?;
        // Outside the turn: the next group is applied while this one's flush
        // runs.
        self.inner.wait_durable(generation).await?;
        Ok(results)
    }

    async fn pull(&self, scope: Scope, since: u64, limit: usize) -> Result<PullPage, StoreError> {
        self.blocking(move |inner| inner.pull(&scope, since, limit))
            .await
    }

    async fn note_pull(&self, device: Uuid, now_ms: u64) -> Result<(), StoreError> {
        self.blocking(move |inner| {
            inner
                .db
                .insert(codec::pulled_key(device), &now_ms.to_be_bytes())?;
            Ok(())
        })
        .await
    }

    async fn checksum(&self, scope: &Scope) -> Result<ScopeChecksum, StoreError> {
        let tree = self.inner.tree();
        let agg = self.inner.agg.read().unwrap_or_else(|e| e.into_inner());
        let (seq, count, xor) = match scope {
            Scope::All => agg.checksum_all(),
            Scope::Unit(root) => agg.checksum_scope(&tree, root),
        };
        Ok(ScopeChecksum { seq, count, xor })
    }
}
