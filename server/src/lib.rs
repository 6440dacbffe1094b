//! `pufa-server`: the Pufa Sync server as a library.
//!
//! [`run`] opens the store under a data dir, bootstraps the admin token on
//! first start, and serves the HTTP API of `sync-protocol-v1.md` on a
//! listener until `shutdown` resolves; then it drains in-flight requests and
//! flushes. The binary only parses flags and passes a signal future; tests
//! pass a oneshot.
//!
//! - [`api`]: handlers. [`auth`]: tokens, roles, scopes. [`extract`]:
//!   extractors with contract errors. [`error`]: `ApiError`.
//!   [`service_error`]: `ServiceError`, what the services answer instead.
//! - [`people`]: coordinators' and admins' accounts and sign-in sessions.
//!   [`enrol`]: enrolment codes for field devices.
//! - [`store`]: the storage trait and its sled implementation.
//! - [`config`]: configuration, clock and id sources.
//! - [`dashboard`]: the coordinators' HTML pages at `/`.
//! - [`field_app`]: the field app at `/field/` and `GET /v1/schema`.
//!   [`encoding`]: compressed answers, gzip request bodies.

pub mod api;
pub mod asof;
pub mod auth;
pub mod config;
mod connection;
pub mod dashboard;
pub mod docx;
pub mod duplicates;
pub mod encoding;
pub mod enrol;
pub mod error;
pub mod export;
pub mod extract;
pub mod field_app;
pub mod limits;
pub mod people;
pub mod periods;
pub mod service_error;
pub mod store;
mod strict_json;
mod timeouts;
pub mod tls;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::response::IntoResponse;
use axum::routing::{delete, get, patch, post, put};
use axum::Router;
use pufa_core::wire::Role;
use tokio::net::TcpListener;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;

pub use config::Config;
use error::ApiError;
use store::sled::SledStore;
use store::{Device, DynStore, StoreError};

/// What every handler gets: cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub store: DynStore,
    pub config: Arc<Config>,
    pub limits: Arc<limits::Limiters>,
}

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("data dir {dir}: {reason}")]
    DataDir { dir: PathBuf, reason: String },
    #[error("cannot open the store in {dir}: {source}. Nothing was changed; see docs/operations.md (\"The server refuses to start\")")]
    Store { dir: PathBuf, source: StoreError },
    #[error("cannot open the store in the database {url}: {source}. Nothing was changed; see docs/operations.md (\"PostgreSQL\")")]
    Database { url: String, source: StoreError },
    #[error("serving failed: {0}")]
    Serve(#[from] std::io::Error),
}

/// The HTTP API.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/health", get(api::health))
        .route("/v1/whoami", get(api::whoami))
        .route("/v1/admin/tokens", post(api::issue_token))
        .route("/v1/admin/tokens/{device_id}", delete(api::revoke_token))
        .route("/v1/admin/org-units", put(api::put_org_units))
        .route("/v1/org-units", get(api::org_units))
        .route("/v1/sync/push", post(api::push))
        .route("/v1/sync/pull", get(api::pull))
        .route("/v1/sync/checksum", get(api::checksum))
        .route("/v1/totals", get(api::totals))
        .route("/v1/conflicts", get(api::conflicts))
        .route("/v1/conflicts/{id}/resolve", post(api::resolve))
        .route("/v1/devices", get(api::devices))
        .route("/v1/rejections", get(api::rejections))
        .route("/v1/figures", get(api::year_figures))
        .route("/v1/reports/annual", get(api::annual_report))
        .route("/v1/periods", get(api::periods))
        .route("/v1/periods/{action}", post(api::period_step))
        .route("/v1/duplicates", get(api::duplicates))
        .route("/v1/duplicates/dismiss", post(api::dismiss_duplicate))
        .route("/v1/records/{id}/delete", post(api::delete_record))
        .route("/v1/records", get(api::records))
        .route("/v1/exports/{file}", get(api::export))
        .route(
            "/v1/admin/accounts",
            post(api::create_account).get(api::accounts),
        )
        .route("/v1/admin/accounts/{username}", patch(api::change_account))
        .route("/v1/sessions", post(api::sign_in))
        .route("/v1/sessions/current", delete(api::sign_out))
        .route(
            "/v1/enrollment-codes",
            post(api::create_code).get(api::codes),
        )
        .route("/v1/enrollment-codes/{id}", delete(api::withdraw_code))
        .route("/v1/enroll", post(api::enroll))
        .route("/v1/records/{id}/history", get(api::record_history))
        .route("/v1/admin/backup", get(api::backup))
        .route("/v1/schema", get(field_app::schema))
        .merge(dashboard::routes(&state))
        .merge(field_app::routes())
        .fallback(api::not_found)
        .method_not_allowed_fallback(api::method_not_allowed)
        .layer(DefaultBodyLimit::max(state.config.max_body_bytes))
        .layer(encoding::decompression())
        .layer(middleware::from_fn_with_state(
            state.clone(),
            encoding::check_request_encoding,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            timeouts::enforce,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            limits::enforce,
        ))
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::Internal("the handler panicked".into()).into_response()
        }))
        .layer(encoding::compression())
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// Checks the data dir, opens the store, and on first start creates the
/// admin token and writes it to `<data>/admin.token` (§1).
///
/// # Errors
/// [`RunError`] naming the dir and the cause. It never wipes or rewrites
/// existing data.
pub async fn open(config: Config) -> Result<AppState, RunError> {
    let dir = config.data_dir.clone();
    check_data_dir(&dir)?;
    let store: DynStore =
        match config.pg_store() {
            Some(pg) => Arc::new(store::pg::PgStore::open(&pg).await.map_err(|source| {
                RunError::Database {
                    url: store::pg::redacted(&pg.url),
                    source,
                }
            })?),
            None => {
                Arc::new(
                    SledStore::open(&(&config).into()).map_err(|source| RunError::Store {
                        dir: dir.clone(),
                        source,
                    })?,
                )
            }
        };
    let limits = Arc::new(limits::Limiters {
        tokens: config.token_rate.map(limits::Buckets::new),
        ips: config.ip_rate.map(limits::Buckets::new),
        trust_proxy: config.trust_proxy,
        people: people::Guards::new(config.enrol_failures, config.enrol_failures_per_ip),
    });
    let state = AppState {
        store,
        config: Arc::new(config),
        limits,
    };
    bootstrap_admin(&state).await?;
    Ok(state)
}

/// Where `pufa-server demo` (the `pufa-demo` crate) keeps its simulated
/// devices' stores, beside the store in a data dir.
pub const DEMO_DEVICES_DIR: &str = "demo-devices";
/// The demo's coordinators' tokens, beside the store in a data dir.
pub const DEMO_TOKENS_FILE: &str = "demo-tokens.txt";

/// Refuses a dir that holds something other than a Pufa store, so that a
/// mistyped `--data` never sprinkles sled files into someone's home.
///
/// # Errors
/// [`RunError::DataDir`] naming the first stray entry, or why the dir
/// cannot be read or made.
pub fn check_data_dir(dir: &Path) -> Result<(), RunError> {
    let err = |reason: String| RunError::DataDir {
        dir: dir.to_path_buf(),
        reason,
    };
    match std::fs::read_dir(dir) {
        Ok(entries) => {
            for e in entries {
                let name = e.map_err(|e| err(e.to_string()))?.file_name();
                let name = name.to_string_lossy();
                // `pufa-server demo` keeps its devices and tokens beside the
                // store, so that the normal server can serve a demo too.
                if !matches!(
                    name.as_ref(),
                    "store" | "admin.token" | DEMO_DEVICES_DIR | DEMO_TOKENS_FILE
                ) && !name.starts_with('.')
                {
                    return Err(err(format!(
                        "holds {name:?}, which is not part of a Pufa data dir; choose an empty or new directory"
                    )));
                }
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            pufa_durable::create_dir_all(dir).map_err(|e| err(format!("cannot create it: {e}")))
        }
        Err(e) => Err(err(e.to_string())),
    }
}

async fn bootstrap_admin(state: &AppState) -> Result<(), RunError> {
    let store_err = |source| match &state.config.database_url {
        Some(url) => RunError::Database {
            url: store::pg::redacted(url),
            source,
        },
        None => RunError::Store {
            dir: state.config.data_dir.clone(),
            source,
        },
    };
    if state.store.admin_bootstrapped().await.map_err(store_err)? {
        return Ok(());
    }
    let path = state.config.admin_token_path();
    let dir_err = |reason: String| RunError::DataDir {
        dir: state.config.data_dir.clone(),
        reason,
    };
    // An admin.token without a bootstrapped store means an earlier first
    // start stopped between writing the file and the store: adopt the file
    // rather than rewrite it.
    let mut created = false;
    let secret = match std::fs::read_to_string(&path) {
        Ok(text) => text.lines().next().unwrap_or("").trim().to_string(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let secret = auth::new_secret(state.config.ids.as_ref());
            write_private_file(&path, &format!("{secret}\n"))
                .map_err(|e| dir_err(format!("cannot write {}: {e}", path.display())))?;
            created = true;
            secret
        }
        Err(e) => return Err(dir_err(format!("cannot read {}: {e}", path.display()))),
    };
    if secret.is_empty() {
        return Err(dir_err(format!(
            "{} is empty; remove it to have a new admin token made",
            path.display()
        )));
    }
    let device = Device {
        id: state.config.ids.uuid(),
        role: Role::Admin,
        org_unit: None,
        label: "bootstrap admin".into(),
        revoked: false,
        token_hash: auth::hash_token(&secret),
        created_ms: state.config.clock.now_ms(),
        last_push_ms: None,
        report: None,
        clock_skew_ms: None,
    };
    let made = state
        .store
        .bootstrap_admin(device)
        .await
        .map_err(store_err)?;
    if !made {
        // Another instance on the same database made the admin first: its
        // data dir holds the token, and this file would be a dead one.
        if created {
            let _ = std::fs::remove_file(&path);
        }
        tracing::info!("another server instance made the bootstrap admin token");
        return Ok(());
    }
    tracing::info!(path = %path.display(), "created the admin token");
    Ok(())
}

/// Writes a new file readable by its owner only (0600), durably (a power
/// cut keeps all of it or none); never replaces an existing one.
pub(crate) fn write_private_file(path: &Path, contents: &str) -> std::io::Result<()> {
    pufa_durable::create_new(path, contents.as_bytes(), pufa_durable::Access::Private)
}

/// Serves `state` on `listener` until `shutdown` resolves, drains in-flight
/// requests for at most [`config::SHUTDOWN_DRAIN_SECS`], then flushes.
///
/// The accept loop is ours rather than `axum::serve`'s, for three limits
/// that it does not offer (`docs/operations.md`, "Connections"):
///
/// - at most `config.max_connections` connections are served at once; the
///   loop waits for a free slot *before* it accepts, so further connections
///   wait in the kernel's accept queue (they are not refused) until a slot
///   frees;
/// - at most `config.max_connections_per_ip` of them from one client
///   address, and the last eighth of the slots only for addresses holding
///   no other connection ([`limits::ConnectionSlots`]); a connection past
///   these is closed as soon as it is accepted (not with `trust_proxy`);
/// - every connection must deliver each request's head within
///   `config.header_timeout` of being opened (TLS handshake included) or of
///   its previous answer, so a client that trickles bytes, or idles on a
///   kept-alive connection, cannot hold a slot for ever;
/// - with `config.tls`, connections are TLS (rustls) and speak HTTP/1.1.
///
/// **Storage failure.** sled refuses every write after its first IO error
/// (a full disk, say) until the `Db` is reopened. When the store reports
/// such a failure ([`store::MaintenanceStore::failure`]) the server keeps serving (reads
/// work; writes and `/v1/health` answer `503 unavailable`), checks the free
/// space of the data dir every [`config::STORAGE_CHECK_SECS`], and once at
/// least [`config::REOPEN_FREE_BYTES_MIN`] are free it drains, reopens the
/// store on the same listener and serves on: no restart needed. While the
/// store is closed, requests get `503 unavailable`.
///
/// # Errors
/// [`RunError::Store`] when a reopened store turns out corrupt. Accept
/// errors (e.g. out of file descriptors) are logged and retried, as
/// `axum::serve` does.
pub async fn serve(
    state: AppState,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    let config = state.config.clone();
    let mut shutdown: Shutdown = Box::pin(shutdown);
    let mut state = state;
    loop {
        let store = state.store.clone();
        let recovered = storage_recovered(config.clone(), store.failure());
        match serve_until(router(state), &config, &listener, &mut shutdown, recovered).await {
            Stopped::Shutdown => {
                if let Err(e) = store.flush().await {
                    tracing::error!(error = %e, "final flush failed");
                }
                return Ok(());
            }
            Stopped::Trigger => {
                // The old store closes once the last request holding it has
                // finished; `reopen` retries until its lock is free.
                drop(store);
                match reopen(&config, &listener, &mut shutdown).await? {
                    Some(s) => state = s,
                    None => return Ok(()),
                }
            }
        }
    }
}

type Shutdown = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

/// Why [`serve_until`] stopped.
enum Stopped {
    Shutdown,
    /// Its `trigger` fired: the caller has something else to serve.
    Trigger,
}

/// Serves `app` until `shutdown` or `trigger` resolves, then lets the
/// connections finish their requests (at most [`config::SHUTDOWN_DRAIN_SECS`]).
async fn serve_until(
    app: Router,
    config: &Config,
    listener: &TcpListener,
    shutdown: &mut Shutdown,
    trigger: impl Future<Output = ()>,
) -> Stopped {
    let tls = config.tls.clone().map(tokio_rustls::TlsAcceptor::from);
    let slots = limits::ConnectionSlots::new(
        config.max_connections,
        config.max_connections_per_ip,
        config.trust_proxy,
    );
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut trigger = std::pin::pin!(trigger);
    let stopped = loop {
        // Accept only with a slot free, so that connections beyond the cap
        // wait in the kernel's queue rather than in ours.
        tokio::select! {
            biased;
            () = shutdown.as_mut() => break Stopped::Shutdown,
            () = &mut trigger => break Stopped::Trigger,
            () = slots.any_free() => {}
        }
        let (stream, peer) = tokio::select! {
            biased;
            () = shutdown.as_mut() => break Stopped::Shutdown,
            () = &mut trigger => break Stopped::Trigger,
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
        };
        let slot = match slots.take(peer.ip()) {
            Ok(slot) => slot,
            Err(why) => {
                // Closed at once: held in the queue instead, a flood from
                // one address would keep everyone behind it waiting.
                tracing::debug!(%peer, ?why, "connection shed");
                drop(stream);
                continue;
            }
        };
        tokio::spawn(connection::serve(
            connection::Conn {
                stream,
                peer,
                slot,
                tls: tls.clone(),
                header_timeout: config.header_timeout,
                stop: stop_rx.clone(),
            },
            app.clone(),
        ));
    };
    drop(app);
    let _ = stop_tx.send(true);
    // Every connection gives its slot back when it ends: all slots back
    // means every in-flight request has been answered.
    let drain = Duration::from_secs(config::SHUTDOWN_DRAIN_SECS);
    if tokio::time::timeout(drain, slots.all_free()).await.is_err() {
        tracing::warn!("in-flight requests did not finish in time; stopping anyway");
    }
    stopped
}

/// Resolves when the store has failed and the data dir has room again.
/// Never resolves for a healthy store.
async fn storage_recovered(
    config: Arc<Config>,
    mut failure: tokio::sync::watch::Receiver<Option<String>>,
) {
    let reason = failure
        .wait_for(Option::is_some)
        .await
        .map(|r| r.clone().unwrap_or_default());
    let Ok(reason) = reason else {
        // A store that cannot fail this way.
        return std::future::pending().await;
    };
    tracing::error!(
        reason,
        dir = %config.data_dir.display(),
        "storage failed: writes answer 503 until the store is reopened, which happens by itself once {} MiB are free in the data dir",
        config::REOPEN_FREE_BYTES_MIN / (1024 * 1024)
    );
    loop {
        tokio::time::sleep(Duration::from_secs(config::STORAGE_CHECK_SECS)).await;
        match fs2::available_space(&config.data_dir) {
            Ok(free) if free >= config::REOPEN_FREE_BYTES_MIN => {
                tracing::info!(free, "space is free again; reopening the store");
                return;
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot read the free space of the data dir"),
        }
    }
}

/// Opens the store again after a storage failure, answering `503
/// unavailable` meanwhile; retries every [`config::STORAGE_CHECK_SECS`]
/// (the old store may still be closing, or the disk may have filled again).
/// `None` when `shutdown` came first.
async fn reopen(
    config: &Arc<Config>,
    listener: &TcpListener,
    shutdown: &mut Shutdown,
) -> Result<Option<AppState>, RunError> {
    loop {
        match open((**config).clone()).await {
            Ok(state) => {
                tracing::info!(store_id = %state.store.store_id(), "reopened the store");
                return Ok(Some(state));
            }
            Err(
                e @ RunError::Store {
                    source: StoreError::Corrupt(_),
                    ..
                },
            ) => return Err(e),
            Err(e) => tracing::warn!(error = %e, "cannot reopen the store yet"),
        }
        let closed = Router::new().fallback(|| async {
            ApiError::Unavailable(
                "the server is reopening its store after a storage failure; retry later".into(),
            )
        });
        let wait = tokio::time::sleep(Duration::from_secs(config::STORAGE_CHECK_SECS));
        if let Stopped::Shutdown = serve_until(closed, config, listener, shutdown, wait).await {
            return Ok(None);
        }
    }
}

/// An accept error: a connection that died in the queue is skipped; anything
/// else (out of file descriptors, say) is logged and retried after a pause,
/// so the loop neither spins nor gives up.
async fn accept_failed(e: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "accepting a connection failed; retrying in 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// [`open`] then [`serve`].
///
/// # Errors
/// See [`open`] and [`serve`].
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    let state = open(config).await?;
    tracing::info!(addr = %listener.local_addr()?, store_id = %state.store.store_id(), tls = state.config.tls.is_some(), "pufa-server listening");
    serve(state, listener, shutdown).await
}
