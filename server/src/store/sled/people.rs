//! The sled store's part for people: accounts, sign-in sessions and
//! enrolment codes (keys `pa/`, `ps/`, `pc/`, `ph/` in [`codec`]).
//!
//! Every write goes through the writer lock like a push, so that a code is
//! redeemed once however many requests carry it, and two admins editing
//! one account never undo each other's change.

use uuid::Uuid;

use super::{codec, decode, encode, Inner};
use crate::store::{
    Account, AccountChange, Device, EnrolmentCode, Redemption, Session, StoreError, TokenHash,
};

impl Inner {
    pub(super) fn account(&self, username: &str) -> Result<Option<Account>, StoreError> {
        self.db
            .get(codec::account_key(username))?
            .map(|v| decode(&v))
            .transpose()
    }

    pub(super) fn accounts(&self, limit: usize) -> Result<Vec<Account>, StoreError> {
        let mut out = Vec::new();
        for kv in self.db.scan_prefix(codec::ACCOUNT).take(limit) {
            let (_, v) = kv?;
            out.push(decode(&v)?);
        }
        Ok(out)
    }

    pub(super) fn create_account(&self, account: Account) -> Result<(bool, u64), StoreError> {
        let mut tx = self.begin();
        if self.account(&account.username)?.is_some() {
            return Ok((false, 0));
        }
        tx.batch
            .insert(codec::account_key(&account.username), encode(&account));
        Ok((true, tx.commit(None)?))
    }

    pub(super) fn change_account(
        &self,
        username: &str,
        change: AccountChange,
    ) -> Result<(Option<Account>, u64), StoreError> {
        let mut tx = self.begin();
        let Some(before) = self.account(username)? else {
            return Ok((None, 0));
        };
        let after = before.changed(&change);
        tx.batch
            .insert(codec::account_key(username), encode(&after));
        Ok((Some(after), tx.commit(None)?))
    }

    pub(super) fn put_session(
        &self,
        hash: TokenHash,
        session: Session,
        per_account_max: usize,
    ) -> Result<((), u64), StoreError> {
        let mut tx = self.begin();
        // Sessions are few (people, not devices), so each sign-in sweeps
        // them all: expired ones go, and so do the oldest of this person's
        // beyond the limit, so that signing in in a loop cannot grow the store.
        let mut own: Vec<(u64, Vec<u8>)> = Vec::new();
        for kv in self.db.scan_prefix(codec::SESSION) {
            let (k, v) = kv?;
            let s: Session = decode(&v)?;
            if s.expires_ms <= session.created_ms {
                tx.batch.remove(k);
            } else if s.username == session.username {
                own.push((s.created_ms, k.to_vec()));
            }
        }
        own.sort();
        let excess = (own.len() + 1).saturating_sub(per_account_max.max(1));
        for (_, k) in own.into_iter().take(excess) {
            tx.batch.remove(k);
        }
        tx.batch.insert(codec::session_key(&hash), encode(&session));
        Ok(((), tx.commit(None)?))
    }

    pub(super) fn session(&self, hash: TokenHash) -> Result<Option<Session>, StoreError> {
        self.db
            .get(codec::session_key(&hash))?
            .map(|v| decode(&v))
            .transpose()
    }

    pub(super) fn end_session(&self, hash: TokenHash) -> Result<(bool, u64), StoreError> {
        let mut tx = self.begin();
        if self.session(hash)?.is_none() {
            return Ok((false, 0));
        }
        tx.batch.remove(codec::session_key(&hash));
        Ok((true, tx.commit(None)?))
    }

    fn code(&self, id: Uuid) -> Result<Option<EnrolmentCode>, StoreError> {
        self.db
            .get(codec::code_key(id))?
            .map(|v| decode(&v))
            .transpose()
    }

    pub(super) fn codes(&self) -> Result<Vec<EnrolmentCode>, StoreError> {
        let mut out = Vec::new();
        for kv in self.db.scan_prefix(codec::CODE) {
            let (_, v) = kv?;
            out.push(decode(&v)?);
        }
        Ok(out)
    }

    pub(super) fn put_code(
        &self,
        code: EnrolmentCode,
        now_ms: u64,
    ) -> Result<((), u64), StoreError> {
        let mut tx = self.begin();
        for old in self.codes()? {
            if old.expires_ms <= now_ms {
                tx.batch.remove(codec::code_key(old.id));
                tx.batch.remove(codec::code_hash_key(&old.code_hash));
            }
        }
        tx.batch
            .insert(codec::code_hash_key(&code.code_hash), code.id.as_bytes());
        tx.batch.insert(codec::code_key(code.id), encode(&code));
        Ok(((), tx.commit(None)?))
    }

    pub(super) fn withdraw_code(&self, id: Uuid) -> Result<(bool, u64), StoreError> {
        let mut tx = self.begin();
        let Some(code) = self.code(id)? else {
            return Ok((false, 0));
        };
        tx.batch.remove(codec::code_key(id));
        tx.batch.remove(codec::code_hash_key(&code.code_hash));
        Ok((true, tx.commit(None)?))
    }

    pub(super) fn redeem_code(
        &self,
        hash: TokenHash,
        r: Redemption,
    ) -> Result<(Option<Device>, u64), StoreError> {
        // Looked up under the writer lock: a second request with the same
        // code waits here and then finds it gone.
        let mut tx = self.begin();
        let Some(id) = self.db.get(codec::code_hash_key(&hash))? else {
            return Ok((None, 0));
        };
        let Some(code) = self.code(codec::uuid_of(&id)?)? else {
            return Ok((None, 0));
        };
        debug_assert_eq!(code.code_hash, hash, "ph/ points at its own code");
        if code.expires_ms <= r.now_ms {
            return Ok((None, 0));
        }
        let device = code.device(r);
        tx.batch.remove(codec::code_key(code.id));
        tx.batch.remove(codec::code_hash_key(&hash));
        tx.stage_device(&device)?;
        Ok((Some(device), tx.commit(None)?))
    }
}
