//! What a fault test's devices sent and were told: a transport that writes
//! every push and every push answer into a [`Ledger`], counts the pushes on
//! the wire (so a test can kill the server while some are), and can cut the
//! devices off (so a test can look at the server while no device writes).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use pufa_client::transport::{Request, Response, Transport, TransportError};
use pufa_client::HttpTransport;
use pufa_core::hlc::Hlc;
use pufa_core::wire::{Mutation, MutationStatus, PushRequest, PushResponse};
use uuid::Uuid;

use crate::Answer;

/// Every push the devices sent and every push answer that reached them.
#[derive(Default)]
pub struct Ledger {
    /// Mutations as pushed, by id.
    pub sent: Mutex<HashMap<Uuid, Mutation>>,
    /// `(status, seq, stored hlc)` of every result a device received.
    pub answers: Mutex<HashMap<Uuid, Vec<Answer>>>,
}

impl Ledger {
    /// The mutations acknowledged so far (`applied` or `duplicate`), each
    /// with the HLC it was stored under; and those sent but never answered,
    /// which the server may or may not hold.
    ///
    /// # Panics
    /// When a lock was poisoned by a panicking device.
    pub fn acked_and_unanswered(&self) -> (Vec<(Mutation, Hlc)>, Vec<Mutation>) {
        let sent = self.sent.lock().expect("ledger");
        let answers = self.answers.lock().expect("ledger");
        let mut acked = Vec::new();
        let mut unanswered = Vec::new();
        for (id, m) in sent.iter() {
            match answers.get(id).and_then(|seen| {
                seen.iter()
                    .find(|a| a.0 != MutationStatus::Rejected)
                    .copied()
            }) {
                Some((_, _, stored)) => acked.push((m.clone(), stored.unwrap_or(m.hlc))),
                None if !answers.contains_key(id) => unanswered.push(m.clone()),
                None => {}
            }
        }
        (acked, unanswered)
    }
}

/// Pushes on the wire, and the switch that cuts the devices off.
#[derive(Default)]
pub struct Wire {
    pushes: AtomicUsize,
    changed: tokio::sync::Notify,
    cut_off: AtomicBool,
}

impl Wire {
    pub fn pushes(&self) -> usize {
        self.pushes.load(Ordering::SeqCst)
    }

    /// Returns once at least `n` pushes are on the wire.
    pub async fn wait_for_pushes(&self, n: usize) {
        loop {
            let changed = self.changed.notified();
            if self.pushes() >= n {
                return;
            }
            changed.await;
        }
    }

    /// While cut off, every request fails at once, as with no network.
    pub fn cut_off(&self, off: bool) {
        self.cut_off.store(off, Ordering::SeqCst);
    }
}

/// [`HttpTransport`], writing pushes and their answers into the ledger.
pub struct Recorded {
    pub http: HttpTransport,
    pub ledger: Arc<Ledger>,
    pub wire: Arc<Wire>,
}

#[async_trait]
impl Transport for Recorded {
    async fn send(&self, req: Request) -> Result<Response, TransportError> {
        if self.wire.cut_off.load(Ordering::SeqCst) {
            return Err(TransportError("cut off by the test".into()));
        }
        let push = req.path == "/v1/sync/push";
        if push {
            let body: PushRequest = serde_json::from_slice(req.body.as_deref().unwrap_or_default())
                .expect("the SDK pushes a push request");
            let mut sent = self.ledger.sent.lock().expect("ledger");
            for m in body.mutations {
                sent.insert(m.id, m);
            }
            drop(sent);
            self.wire.pushes.fetch_add(1, Ordering::SeqCst);
            self.wire.changed.notify_waiters();
        }
        let r = self.http.send(req).await;
        if push {
            self.wire.pushes.fetch_sub(1, Ordering::SeqCst);
        }
        let r = r?;
        if push && r.status == 200 {
            let resp: PushResponse = serde_json::from_slice(&r.body).expect("a push answer");
            let mut answers = self.ledger.answers.lock().expect("ledger");
            for x in resp.results {
                answers
                    .entry(x.id)
                    .or_default()
                    .push((x.status, x.seq, x.hlc));
            }
        }
        Ok(r)
    }
}
