//! What the app sees: local records with their sync state, filters, the
//! sync report and progress.

use pufa_core::date::Date;
use pufa_core::schema::Kind;
use pufa_core::wire::{ConflictReport, ErrorObject};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

/// Where a record stands between this device and the server.
#[derive(Clone, Debug, PartialEq)]
pub enum SyncState {
    /// The local view is the server's.
    Synced,
    /// Local edits wait to be pushed (or to come back in a pull).
    Pending,
    /// The server refused an edit; it is kept until edited and resubmitted
    /// or discarded ([`crate::Client::resubmit`], [`crate::Client::discard`]).
    Rejected {
        code: String,
        message: String,
        field: Option<String>,
        mutation: Uuid,
    },
    /// The server holds open conflicts on the record (a coordinator
    /// decides); `details` are those this device was told about.
    Conflicted {
        open: u32,
        details: Vec<ConflictNotice>,
    },
}

/// A record as the app sees it: the server's state with this device's
/// pending edits applied on top.
#[derive(Clone, Debug, PartialEq)]
pub struct LocalRecord {
    pub id: Uuid,
    pub kind: Kind,
    pub fields: Map<String, Value>,
    pub deleted: bool,
    /// The server seq of the confirmed part (0 if never confirmed).
    pub seq: u64,
    pub state: SyncState,
}

impl LocalRecord {
    pub fn org_unit(&self) -> Option<&str> {
        self.fields.get("org_unit").and_then(Value::as_str)
    }

    /// The record's date for range filters: `held_on`, `appointed_on`,
    /// else `opened_on`.
    pub fn date(&self) -> Option<Date> {
        ["held_on", "appointed_on", "opened_on"]
            .iter()
            .find_map(|f| {
                self.fields
                    .get(*f)
                    .and_then(Value::as_str)
                    .and_then(Date::parse)
            })
    }
}

/// A conflict this device's push was told about.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConflictNotice {
    pub record_id: Uuid,
    pub mutation: Uuid,
    pub field: String,
    pub winner: Value,
    pub loser: Value,
}

impl ConflictNotice {
    pub(crate) fn from_report(
        record_id: Uuid,
        mutation: Uuid,
        c: &ConflictReport,
    ) -> ConflictNotice {
        ConflictNotice {
            record_id,
            mutation,
            field: c.field.clone(),
            winner: c.winner.clone(),
            loser: c.loser.clone(),
        }
    }
}

/// A mutation the server refused.
#[derive(Clone, Debug, PartialEq)]
pub struct RejectedEdit {
    pub mutation: Uuid,
    pub record_id: Uuid,
    pub kind: String,
    pub set: Map<String, Value>,
    pub delete: Option<bool>,
    pub error: ErrorObject,
}

/// Filters for [`crate::Client::list`]; all optional, combined with AND.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    pub kind: Option<Kind>,
    /// The unit or anything below it (needs the org tree from a sync;
    /// without it, the exact unit).
    pub org_unit: Option<String>,
    /// Inclusive, on `held_on` (lectures), `appointed_on` (legal
    /// understanders) or `opened_on` (corners).
    pub from: Option<Date>,
    pub to: Option<Date>,
    pub include_deleted: bool,
}

/// The phase a progress report is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Push,
    Pull,
    Repair,
    Checksum,
}

/// Progress of a sync: `done` of `total` units of the phase (mutations
/// pushed, feed positions pulled).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    pub phase: Phase,
    pub done: u64,
    pub total: u64,
}

/// What one [`crate::Client::sync`] did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SyncReport {
    /// Mutations sent (all statuses).
    pub pushed: u64,
    pub applied: u64,
    pub duplicates: u64,
    pub rejected: Vec<RejectedEdit>,
    pub conflicts: Vec<ConflictNotice>,
    /// Records received (in scope).
    pub pulled: u64,
    /// Records dropped because they left this device's scope, or because a
    /// repair found the server no longer lists them.
    pub removed: u64,
    /// Whether the final checksum matched the server's.
    pub checksum_ok: bool,
    /// Whether a repair (re-pull from 0) ran.
    pub repaired: bool,
    /// Confirmed records that a replaced server store (new `store_id`) no
    /// longer has. They are kept locally; [`crate::Client::resubmit_lost`]
    /// pushes them again.
    pub lost_on_server: Vec<Uuid>,
}
