//! The PostgreSQL store's part for people: accounts, sign-in sessions and
//! enrolment codes (tables `pufa_accounts`, `pufa_sessions`, `pufa_codes`).
//! A code is redeemed under the state-row lock, in the write that makes
//! its device, so it makes one device however many requests carry it.

use async_trait::async_trait;
use uuid::Uuid;

use super::staging::PgStaging;
use super::{big, pg_err, small, Inner, PgStore};
use crate::store::codec::{decode, encode};
use crate::store::sessions::{self, Held};
use crate::store::{
    Account, AccountChange, Device, EnrolmentCode, PeopleStore, Redemption, Session, StoreError,
    TokenHash,
};

#[async_trait]
impl PeopleStore for PgStore {
    async fn account(&self, username: &str) -> Result<Option<Account>, StoreError> {
        let client = self.inner.client().await?;
        client
            .query_opt(
                "SELECT body FROM pufa_accounts WHERE username = $1",
                &[&username],
            )
            .await
            .map_err(pg_err)?
            .map(|r| decode(r.get(0)))
            .transpose()
    }

    async fn accounts(&self, limit: usize) -> Result<Vec<Account>, StoreError> {
        let client = self.inner.client().await?;
        client
            .query(
                "SELECT body FROM pufa_accounts ORDER BY username LIMIT $1",
                &[&big(limit as u64)],
            )
            .await
            .map_err(pg_err)?
            .iter()
            .map(|r| decode(r.get(0)))
            .collect()
    }

    async fn create_account(&self, account: Account) -> Result<bool, StoreError> {
        let client = self.inner.client().await?;
        let n = client
            .execute(
                "INSERT INTO pufa_accounts (username, body) VALUES ($1, $2)
                 ON CONFLICT (username) DO NOTHING",
                &[&account.username, &encode(&account)],
            )
            .await
            .map_err(pg_err)?;
        Ok(n == 1)
    }

    async fn change_account(
        &self,
        username: &str,
        change: AccountChange,
    ) -> Result<Option<Account>, StoreError> {
        let mut client = self.inner.client().await?;
        let tx = client.transaction().await.map_err(pg_err)?;
        // The row lock keeps two admins' changes from undoing each other.
        let Some(row) = tx
            .query_opt(
                "SELECT body FROM pufa_accounts WHERE username = $1 FOR UPDATE",
                &[&username],
            )
            .await
            .map_err(pg_err)?
        else {
            tx.rollback().await.map_err(pg_err)?;
            return Ok(None);
        };
        let before: Account = decode(row.get(0))?;
        let after = before.changed(&change);
        tx.execute(
            "UPDATE pufa_accounts SET body = $2 WHERE username = $1",
            &[&username, &encode(&after)],
        )
        .await
        .map_err(pg_err)?;
        tx.commit().await.map_err(pg_err)?;
        Ok(Some(after))
    }

    async fn put_session(
        &self,
        hash: TokenHash,
        session: Session,
        per_account_max: usize,
    ) -> Result<(), StoreError> {
        let mut client = self.inner.client().await?;
        let tx = client.transaction().await.map_err(pg_err)?;
        // The sessions that may have to go: expired ones and this person's.
        let held = tx
            .query(
                "SELECT hash, username, created_ms, expires_ms FROM pufa_sessions
                  WHERE expires_ms <= $1 OR username = $2",
                &[&big(session.created_ms), &session.username],
            )
            .await
            .map_err(pg_err)?
            .iter()
            .map(|r| Held {
                key: r.get::<_, Vec<u8>>(0),
                username: r.get(1),
                created_ms: small(r.get(2)),
                expires_ms: small(r.get(3)),
            })
            .collect::<Vec<_>>();
        let gone = sessions::to_end(held, &session, per_account_max);
        if !gone.is_empty() {
            tx.execute("DELETE FROM pufa_sessions WHERE hash = ANY($1)", &[&gone])
                .await
                .map_err(pg_err)?;
        }
        tx.execute(
            "INSERT INTO pufa_sessions (hash, username, created_ms, expires_ms, body)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (hash) DO UPDATE SET body = EXCLUDED.body",
            &[
                &hash.as_slice(),
                &session.username,
                &big(session.created_ms),
                &big(session.expires_ms),
                &encode(&session),
            ],
        )
        .await
        .map_err(pg_err)?;
        tx.commit().await.map_err(pg_err)
    }

    async fn session(&self, hash: TokenHash) -> Result<Option<Session>, StoreError> {
        let client = self.inner.client().await?;
        self.inner.catch_up(&**client).await?;
        client
            .query_opt(
                "SELECT body FROM pufa_sessions WHERE hash = $1",
                &[&hash.as_slice()],
            )
            .await
            .map_err(pg_err)?
            .map(|r| decode(r.get(0)))
            .transpose()
    }

    async fn end_session(&self, hash: TokenHash) -> Result<bool, StoreError> {
        let client = self.inner.client().await?;
        let n = client
            .execute(
                "DELETE FROM pufa_sessions WHERE hash = $1",
                &[&hash.as_slice()],
            )
            .await
            .map_err(pg_err)?;
        Ok(n > 0)
    }

    async fn put_code(&self, code: EnrolmentCode, now_ms: u64) -> Result<(), StoreError> {
        let mut client = self.inner.client().await?;
        let tx = client.transaction().await.map_err(pg_err)?;
        tx.execute(
            "DELETE FROM pufa_codes WHERE expires_ms <= $1",
            &[&big(now_ms)],
        )
        .await
        .map_err(pg_err)?;
        tx.execute(
            "INSERT INTO pufa_codes (id, hash, expires_ms, body) VALUES ($1, $2, $3, $4)",
            &[
                &code.id,
                &code.code_hash.as_slice(),
                &big(code.expires_ms),
                &encode(&code),
            ],
        )
        .await
        .map_err(pg_err)?;
        tx.commit().await.map_err(pg_err)
    }

    async fn codes(&self) -> Result<Vec<EnrolmentCode>, StoreError> {
        let client = self.inner.client().await?;
        client
            .query("SELECT body FROM pufa_codes ORDER BY id", &[])
            .await
            .map_err(pg_err)?
            .iter()
            .map(|r| decode(r.get(0)))
            .collect()
    }

    async fn withdraw_code(&self, id: Uuid) -> Result<bool, StoreError> {
        let client = self.inner.client().await?;
        let n = client
            .execute("DELETE FROM pufa_codes WHERE id = $1", &[&id])
            .await
            .map_err(pg_err)?;
        Ok(n > 0)
    }

    async fn redeem_code(
        &self,
        hash: TokenHash,
        r: Redemption,
    ) -> Result<Option<Device>, StoreError> {
        let mut client = self.inner.client().await?;
        let (tx, state) = self.inner.begin(&mut client).await?;
        // Deleted in the write that makes the device: a second request with
        // the same code waits for the lock, then finds it gone.
        let Some(row) = tx
            .query_opt(
                "DELETE FROM pufa_codes WHERE hash = $1 RETURNING body",
                &[&hash.as_slice()],
            )
            .await
            .map_err(pg_err)?
        else {
            tx.rollback().await.map_err(pg_err)?;
            return Ok(None);
        };
        let code: EnrolmentCode = decode(row.get(0))?;
        if code.expires_ms <= r.now_ms {
            // Rolled back: an expired code stays until swept.
            tx.rollback().await.map_err(pg_err)?;
            return Ok(None);
        }
        let device = code.device(r);
        Inner::upsert_device(&tx, &device).await?;
        self.inner
            .commit(tx, PgStaging::new(state, self.inner.rejections_kept), None)
            .await?;
        Ok(Some(device))
    }
}
