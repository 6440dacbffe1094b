//! The sled store's part for people: accounts, sign-in sessions and
//! enrolment codes (keys `pa/`, `ps/`, `pc/`, `ph/` in [`codec`]).
//!
//! Every write goes through the writer lock like a push, so that a code is
//! redeemed once however many requests carry it, and two admins editing
//! one account never undo each other's change.

use async_trait::async_trait;
use uuid::Uuid;

use super::{Inner, SledStore};
use crate::store::codec::{self, decode, encode};
use crate::store::sessions::{self, Held};
use crate::store::{
    Account, AccountChange, Device, EnrolmentCode, PeopleStore, Redemption, Session, StoreError,
    TokenHash,
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
        // them all.
        let mut held = Vec::new();
        for kv in self.db.scan_prefix(codec::SESSION) {
            let (k, v) = kv?;
            let s: Session = decode(&v)?;
            held.push(Held {
                key: k.to_vec(),
                username: s.username,
                created_ms: s.created_ms,
                expires_ms: s.expires_ms,
            });
        }
        for k in sessions::to_end(held, &session, per_account_max) {
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

#[async_trait]
impl PeopleStore for SledStore {
    async fn account(&self, username: &str) -> Result<Option<Account>, StoreError> {
        let username = username.to_string();
        self.blocking(move |inner| inner.account(&username)).await
    }

    async fn accounts(&self, limit: usize) -> Result<Vec<Account>, StoreError> {
        self.blocking(move |inner| inner.accounts(limit)).await
    }

    async fn create_account(&self, account: Account) -> Result<bool, StoreError> {
        self.write(move |inner| inner.create_account(account)).await
    }

    async fn change_account(
        &self,
        username: &str,
        change: AccountChange,
    ) -> Result<Option<Account>, StoreError> {
        let username = username.to_string();
        self.write(move |inner| inner.change_account(&username, change))
            .await
    }

    async fn put_session(
        &self,
        hash: TokenHash,
        session: Session,
        per_account_max: usize,
    ) -> Result<(), StoreError> {
        self.write(move |inner| inner.put_session(hash, session, per_account_max))
            .await
    }

    async fn session(&self, hash: TokenHash) -> Result<Option<Session>, StoreError> {
        self.blocking(move |inner| inner.session(hash)).await
    }

    async fn end_session(&self, hash: TokenHash) -> Result<bool, StoreError> {
        self.write(move |inner| inner.end_session(hash)).await
    }

    async fn put_code(&self, code: EnrolmentCode, now_ms: u64) -> Result<(), StoreError> {
        self.write(move |inner| inner.put_code(code, now_ms)).await
    }

    async fn codes(&self) -> Result<Vec<EnrolmentCode>, StoreError> {
        self.blocking(|inner| inner.codes()).await
    }

    async fn withdraw_code(&self, id: Uuid) -> Result<bool, StoreError> {
        self.write(move |inner| inner.withdraw_code(id)).await
    }

    async fn redeem_code(
        &self,
        hash: TokenHash,
        redemption: Redemption,
    ) -> Result<Option<Device>, StoreError> {
        self.write(move |inner| inner.redeem_code(hash, redemption))
            .await
    }
}
