//! Group commit, as both stores do it: a push queues, then waits for the
//! *write turn*; the push that gets the turn takes every push queued by then
//! and has its store apply them as one group (sled: batches of whole pushes,
//! then one shared flush; PostgreSQL: one transaction). Each push is answered
//! with its own result once its group is done.
//!
//! The store decides what "done" means, and so when a push may be
//! acknowledged: PostgreSQL's group is committed (synchronously) when it
//! answers; sled's answer carries the write generation the push must still
//! wait for, outside the turn, before it is durable.

use std::future::Future;
use std::sync::Mutex;

use tokio::sync::oneshot;

use super::{lock, PushInput, StoreError};

/// Where a queued push is answered.
type Reply<A> = oneshot::Sender<Result<A, StoreError>>;

/// Pushes waiting for the next group, and whose turn it is to write. `A` is
/// what a store answers for one push of a group.
pub(crate) struct PushQueue<A> {
    /// Whose turn it is to write: writers queue here, asynchronously, rather
    /// than each parking a blocking-pool thread on a lock (200 devices
    /// pushing at once otherwise meant 200 threads and their allocator
    /// caches).
    turn: tokio::sync::Mutex<()>,
    /// Pushes waiting for the next group, with where to answer.
    queued: Mutex<Vec<(PushInput, Reply<A>)>>,
}

impl<A> Default for PushQueue<A> {
    fn default() -> PushQueue<A> {
        PushQueue {
            turn: tokio::sync::Mutex::new(()),
            queued: Mutex::new(Vec::new()),
        }
    }
}

impl<A: Send + 'static> PushQueue<A> {
    /// Waits for the write turn, for a write other than a push (which then
    /// runs between two groups).
    pub(crate) async fn turn(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.turn.lock().await
    }

    /// Queues `input` and answers it. The push that gets the turn applies
    /// every queued push with `apply_group`, which answers each input in
    /// order (a missing answer fails its push); an earlier turn may already
    /// have taken this push with its group.
    ///
    /// # Errors
    /// The push's own answer, or [`StoreError::Other`] if it was never
    /// answered (the group's task panicked).
    pub(crate) async fn push<G, F>(&self, input: PushInput, apply_group: G) -> Result<A, StoreError>
    where
        G: FnOnce(Vec<PushInput>) -> F,
        F: Future<Output = Vec<Result<A, StoreError>>> + Send + 'static,
    {
        let (reply, mut answer) = oneshot::channel();
        lock(&self.queued).push((input, reply));
        let turn = self.turn.lock().await;
        // An earlier turn may have taken this push with its group.
        if let Ok(answer) = answer.try_recv() {
            return answer;
        }
        let jobs = std::mem::take(&mut *lock(&self.queued));
        if !jobs.is_empty() {
            let (inputs, replies): (Vec<_>, Vec<_>) = jobs.into_iter().unzip();
            let applied = apply_group(inputs);
            // Its own task, so that the answers go out even if this request
            // is dropped (timeout, disconnect) meanwhile.
            let group = tokio::spawn(async move {
                for (reply, answer) in replies.into_iter().zip(applied.await) {
                    let _ = reply.send(answer);
                }
            });
            let _ = group.await;
        }
        drop(turn);
        // Answered by now, or soon by an earlier group whose request was
        // dropped while it ran.
        answer
            .await
            .map_err(|_| StoreError::Other("push lost its reply".into()))?
    }
}
