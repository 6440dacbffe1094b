//! Which sign-in sessions a store ends when it stores a new one, as both
//! stores decide it: expired ones, and the account's oldest beyond the
//! per-account limit (the new one counted), so that signing in in a loop
//! cannot grow the store.

use super::Session;

/// A stored session, as far as ending it is concerned; `key` is where the
/// store keeps it.
pub(crate) struct Held<K> {
    pub(crate) key: K,
    pub(crate) username: String,
    pub(crate) created_ms: u64,
    pub(crate) expires_ms: u64,
}

/// The keys of the sessions of `held` to end when `new` is stored: those
/// expired when `new` began, and the oldest of `new`'s account's beyond
/// `per_account_max` (at least 1) with `new` counted. Sessions of other
/// accounts that have not expired stay.
pub(crate) fn to_end<K: Ord>(
    held: impl IntoIterator<Item = Held<K>>,
    new: &Session,
    per_account_max: usize,
) -> Vec<K> {
    let mut gone = Vec::new();
    let mut own: Vec<(u64, K)> = Vec::new();
    for s in held {
        if s.expires_ms <= new.created_ms {
            gone.push(s.key);
        } else if s.username == new.username {
            own.push((s.created_ms, s.key));
        }
    }
    own.sort();
    let excess = (own.len() + 1).saturating_sub(per_account_max.max(1));
    gone.extend(own.into_iter().take(excess).map(|(_, k)| k));
    gone
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(key: u8, username: &str, created_ms: u64, expires_ms: u64) -> Held<u8> {
        Held {
            key,
            username: username.into(),
            created_ms,
            expires_ms,
        }
    }

    #[test]
    fn expired_sessions_and_the_oldest_beyond_the_limit_end() {
        let new = Session {
            username: "li".into(),
            epoch: 0,
            created_ms: 100,
            expires_ms: 200,
        };
        let stored = || {
            vec![
                held(1, "li", 50, 100),   // expired as `new` begins
                held(2, "li", 90, 150),   // li's newest
                held(3, "li", 60, 150),   // li's oldest live one
                held(4, "wang", 10, 150), // someone else's
                held(5, "wang", 10, 20),  // someone else's, expired
                held(6, "li", 70, 150),
            ]
        };
        let mut gone = to_end(stored(), &new, 3);
        gone.sort();
        assert_eq!(gone, vec![1, 3, 5]);
        let mut gone = to_end(stored(), &new, 0);
        gone.sort();
        assert_eq!(gone, vec![1, 2, 3, 5, 6], "at least the new one stays");
        assert_eq!(to_end(stored(), &new, 10), vec![1, 5]);
    }
}
