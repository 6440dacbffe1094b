//! The contract suite (`suite/contract.rs`) on the PostgreSQL store: the
//! same tests as `contract.rs`, each server in a fresh schema of the
//! database named by `PUFA_TEST_DATABASE_URL` (`support::pg`). Without
//! that variable the tests are skipped with a loud line on stderr, except
//! under `CI=true`, where they fail.
//!
//! The harness chooses PostgreSQL because this binary's name ends in `_pg`.

mod support;

#[path = "suite/contract.rs"]
mod suite;
