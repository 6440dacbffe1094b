//! PostgreSQL for the contract suite's PostgreSQL half (`contract_pg.rs`):
//! the database named by `PUFA_TEST_DATABASE_URL` (`.ci/run` starts one),
//! and a fresh schema in it for each server, dropped with the server.
//!
//! The store uses unqualified table names, so a URL with
//! `options=-csearch_path%3D<schema>` keeps one test's tables apart from
//! every other's in the same database.

use std::io::Write as _;
use std::sync::Once;
use std::time::Duration;

/// The variable naming the test database.
pub const URL_VAR: &str = "PUFA_TEST_DATABASE_URL";

/// What `.ci/run` exports; the hint in the skip message.
const CI_URL: &str = "postgres://pufa:pufa@127.0.0.1:5432/pufa_test";

/// How long dropping a schema may take before it is left behind (a test
/// must not hang on a database that went away).
const DROP_TIMEOUT: Duration = Duration::from_secs(30);

/// The test database's URL, from `PUFA_TEST_DATABASE_URL`.
///
/// `None` when it is unset (or empty), after a loud line on the process's
/// stderr, once per test binary, that the PostgreSQL tests are skipped. The
/// line is written to the process's stderr itself, not through `eprintln!`,
/// which libtest captures and shows only for failing tests.
///
/// # Panics
/// When it is unset under `CI=true`: CI must run these tests, not skip them.
pub fn base_url() -> Option<String> {
    match std::env::var(URL_VAR) {
        Ok(url) if !url.trim().is_empty() => return Some(url),
        _ => {}
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{URL_VAR} is not set; .ci/run starts PostgreSQL and sets it \
         (CI=true, so the PostgreSQL tests fail instead of being skipped)"
    );
    static WARNED: Once = Once::new();
    WARNED.call_once(|| {
        let line = format!(
            "\n*** SKIPPED the PostgreSQL tests of {}: {URL_VAR} is not set. Run them with \
             {URL_VAR}={CI_URL} (a superuser's database; .ci/run sets one up) ***\n",
            env!("CARGO_CRATE_NAME"),
        );
        // Nowhere better to report a failure to warn.
        let _ = std::io::stderr().write_all(line.as_bytes());
    });
    None
}

/// Creates a schema with a new unique name (`pufa_t_<uuid>`) in the
/// database of `base` and returns `base` with that schema as its
/// `search_path`. [`SchemaGuard`] drops it again.
///
/// # Panics
/// When the database cannot be reached or the schema not created.
pub async fn fresh_schema(base: &str) -> String {
    let name = format!("pufa_t_{}", uuid::Uuid::new_v4().simple());
    let client = connect(base).await;
    client
        .batch_execute(&format!("CREATE SCHEMA {name}"))
        .await
        .unwrap_or_else(|e| panic!("create schema {name} in {URL_VAR}: {e}"));
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}options=-csearch_path%3D{name}")
}

/// Drops the schema of a URL from [`fresh_schema`] when dropped itself
/// (`DROP SCHEMA … CASCADE`, errors ignored), so that test schemas do not
/// pile up in the test database.
pub struct SchemaGuard {
    url: String,
}

impl SchemaGuard {
    /// A guard for `url`, which [`fresh_schema`] returned.
    ///
    /// # Panics
    /// When `url` names no schema of [`fresh_schema`]'s.
    pub fn new(url: String) -> SchemaGuard {
        assert!(schema_of(&url).is_some(), "not a fresh_schema URL: {url}");
        SchemaGuard { url }
    }

    /// The URL of the schema (the one [`fresh_schema`] returned).
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for SchemaGuard {
    fn drop(&mut self) {
        let Some(name) = schema_of(&self.url).map(str::to_owned) else {
            return;
        };
        let url = self.url.clone();
        // Drop runs inside the test's runtime, which cannot block on a
        // future; a thread with a runtime of its own can. Joined, so that
        // the schema is gone before the test (and maybe the process) ends.
        let dropper = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                let _ = tokio::time::timeout(DROP_TIMEOUT, async {
                    let Ok((client, conn)) =
                        tokio_postgres::connect(&url, tokio_postgres::NoTls).await
                    else {
                        return;
                    };
                    tokio::spawn(conn);
                    let _ = client
                        .batch_execute(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"))
                        .await;
                })
                .await;
            });
        });
        let _ = dropper.join();
    }
}

/// The schema a [`fresh_schema`] URL sets as its `search_path`.
fn schema_of(url: &str) -> Option<&str> {
    let (_, rest) = url.split_once("options=-csearch_path%3D")?;
    let name = rest.split('&').next()?;
    let ours =
        name.starts_with("pufa_t_") && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    ours.then_some(name)
}

async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect to {URL_VAR} ({url}): {e}"));
    tokio::spawn(async move {
        // Ends when the client is dropped; an error here shows in the queries.
        let _ = conn.await;
    });
    client
}
