//! The pages of [`ReadStore::records`](super::ReadStore::records), as both
//! stores cut them: records are examined in id order after the query's
//! `after`, those in scope and behind the figure are kept, and a page ends
//! at `limit` records or after [`RECORDS_SCAN_MAX`] examined, with a `next`
//! to continue from. The store only reads the records, in id order, and
//! hands each one's stored bytes to [`RecordScan::offer`].
//!
//! Also the pages of [`ReadStore::rejections`](super::ReadStore::rejections)
//! ([`RejectionPage`]): newest first, at most `limit` entries and
//! [`REJECTIONS_LIST_BYTES_MAX`] bytes as listed (always at least one).

use pufa_core::org::OrgTree;
use pufa_core::wire::{RecordView, RejectionView};
use uuid::Uuid;

use super::codec::StoredRejection;
use super::{codec, RecordPage, RecordQuery, StoreError, RECORDS_SCAN_MAX};
use crate::config::REJECTIONS_LIST_BYTES_MAX;

/// One page of a [`RecordQuery`] in the making.
pub(crate) struct RecordScan<'a> {
    query: &'a RecordQuery,
    tree: &'a OrgTree,
    records: Vec<RecordView>,
    examined: usize,
    last_examined: Option<Uuid>,
}

impl<'a> RecordScan<'a> {
    pub(crate) fn new(query: &'a RecordQuery, tree: &'a OrgTree) -> RecordScan<'a> {
        RecordScan {
            query,
            tree,
            records: Vec::new(),
            examined: 0,
            last_examined: None,
        }
    }

    /// Takes the next record in id order (its stored bytes); the page, once
    /// this record shows there is more than it holds.
    ///
    /// # Errors
    /// The record cannot be decoded.
    pub(crate) fn offer(&mut self, body: &[u8]) -> Result<Option<RecordPage>, StoreError> {
        if self.examined == RECORDS_SCAN_MAX {
            // Continue after the last record examined, matched or not.
            return Ok(Some(RecordPage {
                records: std::mem::take(&mut self.records),
                next: self.last_examined,
            }));
        }
        let r = codec::decode_record(body)?;
        self.examined += 1;
        self.last_examined = Some(r.id);
        let in_scope = r
            .org_unit()
            .is_some_and(|u| self.tree.in_scope(u, &self.query.scope));
        if !in_scope || !self.query.behind.counts(&r) {
            return Ok(None);
        }
        if self.records.len() == self.query.limit {
            return Ok(Some(RecordPage {
                next: self.records.last().map(|v| v.id),
                records: std::mem::take(&mut self.records),
            }));
        }
        self.records.push(r.view());
        Ok(None)
    }

    /// The id of the last record offered: where to read on from.
    pub(crate) fn last_examined(&self) -> Option<Uuid> {
        self.last_examined
    }

    /// The last page: there are no more records.
    pub(crate) fn end(self) -> RecordPage {
        RecordPage {
            records: self.records,
            next: None,
        }
    }
}

/// A listing of rejections in the making; the store offers the ones the
/// caller may see, newest first.
pub(crate) struct RejectionPage {
    views: Vec<RejectionView>,
    bytes: usize,
    limit: usize,
}

impl RejectionPage {
    pub(crate) fn new(limit: usize) -> RejectionPage {
        RejectionPage {
            views: Vec::new(),
            bytes: 0,
            limit,
        }
    }

    /// Adds `r`, stored in `stored_bytes`; `false` once the page is full
    /// (then `r` may not be on it).
    pub(crate) fn offer(
        &mut self,
        r: StoredRejection,
        stored_bytes: usize,
    ) -> Result<bool, StoreError> {
        self.bytes += codec::rejection_listed_bytes(stored_bytes);
        if self.bytes > REJECTIONS_LIST_BYTES_MAX && !self.views.is_empty() {
            return Ok(false);
        }
        self.views.push(r.view()?);
        Ok(self.views.len() < self.limit)
    }

    pub(crate) fn end(self) -> Vec<RejectionView> {
        self.views
    }
}
