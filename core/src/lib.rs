//! `pufa-core`: the model that the Pufa Sync server and client SDK share.
//!
//! Pure and total: no IO, no async, no clocks. Callers pass in "now" and the
//! org tree; everything here is a function of its arguments.
//!
//! - [`wire`]: the JSON of `sync-protocol-v1.md`.
//! - [`schema`]: record kinds and field rules.
//! - [`hlc`]: hybrid logical clocks.
//! - [`kinds`]: typed structs for the three kinds.
//! - [`merge`]: judging mutations, last-writer-wins merge, conflicts, checksums.
//! - [`audit`]: what a write changed, and replaying it (the audit trail).
//! - [`org`]: the org-unit tree and scopes.
//! - [`period`]: reporting periods, their approval and the locks it makes.
//! - [`topics`]: the topic vocabulary and its synonyms.
//! - [`totals`]: per-unit aggregates and the totals they answer.
//! - [`report`]: figures over a year, coverage, the annual report, drill-down.
//! - [`date`]: calendar days.
//! - [`duplicates`]: likely double entries (one event recorded twice).
//! - [`asof`]: library corners as they stood at a period's end, from their history.
//!
//! ```
//! use pufa_core::{hlc::HlcClock, schema::{check_field, Kind, Today}, date::Date};
//! let today = Today(Date::parse("2020-07-01").unwrap());
//! assert!(check_field(Kind::Lecture, "attendees", &serde_json::json!(87), today).is_ok());
//! assert!(check_field(Kind::Lecture, "attendees", &serde_json::json!(87.0), today).is_err());
//! let mut clock = HlcClock::default();
//! let a = clock.next(1_000, uuid::Uuid::nil());
//! assert!(clock.next(999, uuid::Uuid::nil()) > a);
//! ```

pub mod asof;
pub mod audit;
pub mod date;
pub mod duplicates;
pub mod hlc;
pub mod kinds;
pub mod merge;
pub mod org;
pub mod period;
pub mod report;
pub mod schema;
pub mod topics;
pub mod totals;
pub mod wire;
