//! Connecting to PostgreSQL: the pool, the schema migrated, the store's
//! state made on an empty database, and the settings a `200` relies on
//! checked.

use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use pufa_core::hlc::HlcClock;
use pufa_core::org::OrgTree;
use pufa_core::totals::Aggregates;
use tokio_postgres::NoTls;
use uuid::Uuid;

use super::{
    pg_err, pool_err, schema, AggCache, Inner, PgConfig, PgStore, CONNECT_TIMEOUT_SECS,
    POOL_WAIT_SECS,
};
use crate::store::codec::{self, encode};
use crate::store::commit::PushQueue;
use crate::store::StoreError;

/// The URL without its password, for messages.
pub fn redacted(url: &str) -> String {
    match url.parse::<tokio_postgres::Config>() {
        Ok(c) => {
            let host = c
                .get_hosts()
                .first()
                .map(|h| match h {
                    tokio_postgres::config::Host::Tcp(h) => h.clone(),
                    tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
                })
                .unwrap_or_default();
            format!(
                "postgres://{}@{}/{}",
                c.get_user().unwrap_or(""),
                host,
                c.get_dbname().unwrap_or("")
            )
        }
        Err(_) => "(unparseable database URL)".into(),
    }
}

/// The PostgreSQL settings a `200` for a push relies on: with any of them
/// off, a crash of the database (or of its machine) can lose or corrupt
/// what was acknowledged.
pub(crate) const DURABILITY_SETTINGS: [&str; 3] =
    ["fsync", "synchronous_commit", "full_page_writes"];

/// A warning for each of [`DURABILITY_SETTINGS`] that is off, from
/// `(name, setting)` pairs as `pg_settings` lists them.
pub(crate) fn unsafe_settings<'a>(
    settings: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Vec<String> {
    settings
        .into_iter()
        .filter(|(name, setting)| DURABILITY_SETTINGS.contains(name) && *setting == "off")
        .map(|(name, _)| {
            format!(
                "PostgreSQL runs with {name}=off: a crash of the database or its machine can lose acknowledged pushes; set {name}=on (docs/operations.md)"
            )
        })
        .collect()
}

impl PgStore {
    /// Connects to `config.url`, migrates the schema (safe from
    /// several instances at once) and creates the store's state on an
    /// empty database.
    ///
    /// # Errors
    /// The database's (unreachable, refused, newer schema), as
    /// [`StoreError`].
    pub(crate) async fn open(config: &PgConfig) -> Result<PgStore, StoreError> {
        let pool = pool(&config.url, config.pool_size)?;
        let mut client = pool.get().await.map_err(pool_err)?;
        schema::migrate(&mut client).await?;
        let settings = client
            .query(
                "SELECT name, setting FROM pg_settings WHERE name = ANY($1)",
                &[&DURABILITY_SETTINGS.as_slice()],
            )
            .await
            .map_err(pg_err)?;
        let warnings = unsafe_settings(settings.iter().map(|r| (r.get(0), r.get(1))));
        for w in &warnings {
            tracing::warn!("{w}");
        }
        let hlc0 = encode(&HlcClock::default().parts());
        client
            .execute(
                "INSERT INTO pufa_state (id, store_id, seq, hlc, rejections, audit_n, audit_hash, gen, org_version)
                 VALUES (1, $1, 0, $2, 0, 0, $3, 0, 0) ON CONFLICT (id) DO NOTHING",
                &[&config.ids.uuid(), &hlc0, &codec::GENESIS.as_slice()],
            )
            .await
            .map_err(pg_err)?;
        let store_id: Uuid = client
            .query_one("SELECT store_id FROM pufa_state WHERE id = 1", &[])
            .await
            .map_err(pg_err)?
            .get(0);
        drop(client);
        let inner = Arc::new(Inner {
            pool,
            warnings,
            store_id,
            ids: config.ids.clone(),
            rejections_kept: config.rejections_kept,
            hlc: Mutex::new(HlcClock::default()),
            org: RwLock::new((-1, Arc::new(OrgTree::from_units(Vec::new())))),
            agg: RwLock::new(AggCache {
                gen: None,
                agg: Aggregates::default(),
            }),
            refresh: tokio::sync::Mutex::new(()),
            pushes: PushQueue::default(),
        });
        let client = inner.client().await?;
        inner.catch_up(&**client).await?;
        Ok(PgStore { inner })
    }
}

/// A pool of `size` connections to `url`.
///
/// # Errors
/// An unparseable URL.
pub(crate) fn pool(url: &str, size: usize) -> Result<Pool, StoreError> {
    let mut pg: tokio_postgres::Config = url
        .parse()
        .map_err(|e| StoreError::Other(format!("database URL {}: {e}", redacted(url))))?;
    if pg.get_connect_timeout().is_none() {
        pg.connect_timeout(Duration::from_secs(CONNECT_TIMEOUT_SECS));
    }
    if pg.get_application_name().is_none() {
        pg.application_name("pufa-server");
    }
    let mgr = Manager::from_config(
        pg,
        NoTls,
        ManagerConfig {
            // A connection that broke (database restarted) is noticed and
            // replaced when next taken from the pool.
            recycling_method: RecyclingMethod::Verified,
        },
    );
    Pool::builder(mgr)
        .max_size(size.max(1))
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(Duration::from_secs(POOL_WAIT_SECS)))
        .create_timeout(Some(Duration::from_secs(CONNECT_TIMEOUT_SECS)))
        .recycle_timeout(Some(Duration::from_secs(CONNECT_TIMEOUT_SECS)))
        .build()
        .map_err(|e| StoreError::Other(format!("database pool: {e}")))
}
