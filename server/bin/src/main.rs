//! `pufa-server`: flags, logging, bind, run until SIGINT/SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use pufa_server::config::{self, Config};

/// The Pufa Sync server: field devices push and pull records, coordinators
/// read totals. Data lives in an embedded sled store under --data.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    #[command(subcommand)]
    command: Option<Cmd>,
    /// Data directory: the store and admin.token [default: ./pufa-data;
    /// ./pufa-demo for `demo`].
    #[arg(long, env = "PUFA_DATA", global = true)]
    data: Option<PathBuf>,
    /// Address to serve HTTP on.
    #[arg(
        long,
        env = "PUFA_LISTEN",
        default_value = "127.0.0.1:8080",
        global = true
    )]
    listen: SocketAddr,
    /// How far (seconds) a device's clock may run ahead before its edits are re-stamped.
    #[arg(long, default_value_t = config::MAX_SKEW_SECS_DEFAULT, global = true)]
    max_skew_secs: u64,
    /// Largest request body, in bytes.
    #[arg(long, default_value_t = config::BODY_BYTES_MAX_DEFAULT, global = true)]
    max_body_bytes: usize,
    /// sled page cache, in MiB.
    #[arg(long, env = "PUFA_CACHE_MB", default_value_t = config::CACHE_MB_DEFAULT, global = true)]
    cache_mb: u64,
    /// Requests per second allowed per bearer token, sustained (0: no limit).
    #[arg(long, default_value_t = pufa_server::limits::TOKEN_RATE_PER_SEC_DEFAULT, global = true)]
    token_rate_per_sec: f64,
    /// Requests a token may send in a burst above the sustained rate.
    #[arg(long, default_value_t = pufa_server::limits::TOKEN_BURST_DEFAULT, global = true)]
    token_burst: f64,
    /// Requests per second allowed per client IP (off unless set).
    #[arg(long, global = true)]
    ip_rate_per_sec: Option<f64>,
    /// Burst per client IP.
    #[arg(long, default_value_t = 100.0, global = true)]
    ip_burst: f64,
    /// Take the client IP from X-Forwarded-For (only behind your own reverse proxy).
    #[arg(long, global = true)]
    trust_proxy: bool,
    /// Longest a request may run, in seconds.
    #[arg(long, default_value_t = config::REQUEST_TIMEOUT_SECS_DEFAULT, global = true)]
    request_timeout_secs: u64,
    /// Most client connections served at once; further ones wait in the
    /// accept queue until one closes.
    #[arg(long, default_value_t = config::CONNECTIONS_MAX_DEFAULT, global = true)]
    max_connections: usize,
    /// Most connections one client address may hold at once (an IPv6
    /// client counts by its /64); more are closed as soon as they are
    /// accepted. 0: no cap. Not applied with --trust-proxy.
    #[arg(long, env = "PUFA_MAX_CONNECTIONS_PER_IP",
          default_value_t = config::CONNECTIONS_PER_IP_MAX_DEFAULT, global = true)]
    max_connections_per_ip: usize,
    /// Seconds a client has to deliver a request's body once the server
    /// reads it, plus one second for every --body-min-bytes-per-sec bytes
    /// delivered; a slower body gets 408 body_timeout.
    #[arg(long, default_value_t = config::BODY_TIMEOUT_SECS_DEFAULT, global = true)]
    body_timeout_secs: u64,
    /// Bytes per second of a body that earn it time beyond
    /// --body-timeout-secs (0: none).
    #[arg(long, default_value_t = config::BODY_RATE_MIN_BYTES_PER_SEC_DEFAULT, global = true)]
    body_min_bytes_per_sec: u64,
    /// Failed enrolments (bad codes) allowed per client address per second,
    /// sustained; the server-wide limit (10/s) applies as well.
    #[arg(long, default_value_t = pufa_server::limits::ENROLL_FAILURES_PER_IP_PER_SEC_DEFAULT, global = true)]
    enrol_failures_per_ip_per_sec: f64,
    /// Failed enrolments a client address may make in a burst.
    #[arg(long, default_value_t = pufa_server::limits::ENROLL_FAILURES_PER_IP_BURST_DEFAULT, global = true)]
    enrol_failures_per_ip_burst: f64,
    /// Seconds a connection has to send a request's headers (and, with TLS,
    /// to finish the handshake) before it is closed; also how long an idle
    /// kept-alive connection stays open.
    #[arg(long, default_value_t = config::HEADER_TIMEOUT_SECS_DEFAULT, global = true)]
    header_timeout_secs: u64,
    /// Serve HTTPS with this PEM certificate chain (leaf first); needs --tls-key.
    #[arg(long, env = "PUFA_TLS_CERT", requires = "tls_key", global = true)]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "PUFA_TLS_KEY", requires = "tls_cert", global = true)]
    tls_key: Option<PathBuf>,
    /// The time zone people read times in (an IANA name such as
    /// Asia/Shanghai, or UTC); the dashboard and the field app show times
    /// in it. A name the bundled time zone database lacks is refused.
    #[arg(long, env = "PUFA_TIME_ZONE", default_value = config::TIME_ZONE_DEFAULT,
          value_parser = config::parse_time_zone, global = true)]
    time_zone: config::TimeZone,
    /// The address phones reach this server at, e.g.
    /// https://pufa.example.gov.cn: the enrolment page's QR code points to
    /// <URL>/field/. Default: the address the coordinator's browser used.
    #[arg(long, env = "PUFA_PUBLIC_URL", value_parser = config::parse_public_url, global = true)]
    public_url: Option<String>,
    /// Keep the store in PostgreSQL (`postgres://user:password@host/db`)
    /// instead of the embedded sled store under --data; several instances
    /// may share one database. --data then holds only admin.token.
    #[arg(long, env = "PUFA_DATABASE_URL", global = true)]
    database_url: Option<String>,
    /// Connections this instance keeps to PostgreSQL.
    #[arg(long, default_value_t = config::PG_POOL_SIZE_DEFAULT, global = true)]
    pg_pool_size: usize,
    /// UNSAFE, for measuring what durability costs: acknowledge writes after
    /// sled's flush alone, without fsync. A power cut then loses
    /// acknowledged pushes. Hidden from --help.
    #[arg(long, hide = true, global = true)]
    unsafe_no_fsync: bool,
}

#[derive(Debug, clap::Subcommand)]
enum Cmd {
    /// Give a store restored from a backup a new store_id, so devices notice
    /// the restore, pull again from 0 and push what the server lacks. Run it
    /// with the server stopped, after copying the backup into --data.
    NewStoreId,
    /// Create a person's account (a coordinator or an admin), e.g. the first
    /// admin, in a stopped server's data dir. The password is read from
    /// PUFA_PASSWORD, else from the first line of standard input. On a
    /// running server use POST /v1/admin/accounts instead.
    AddAccount {
        #[arg(long)]
        username: String,
        /// coordinator or admin
        #[arg(long)]
        role: String,
        /// The unit a coordinator works for (required for coordinators).
        #[arg(long)]
        org_unit: Option<String>,
        /// The name shown on the dashboard.
        #[arg(long)]
        display_name: Option<String>,
    },
    /// Check a stopped server's store: the audit chain, every record
    /// against its audit entries, and the aggregates against the records.
    /// Exit code 0 when intact, 1 when something is broken (named), 2 when
    /// the store cannot be read.
    Verify,
    /// Copy the sled store of a stopped server (--from-data) into an empty
    /// PostgreSQL database, keeping store id, seqs, tokens, conflicts,
    /// rejections and the audit log, then check the copy (checksum and
    /// counts). Devices go on syncing without re-enrolling.
    Migrate {
        /// The data dir whose sled store is copied (the server must be stopped).
        #[arg(long)]
        from_data: PathBuf,
        /// The empty database to copy into.
        #[arg(long, env = "PUFA_DATABASE_URL")]
        to_database_url: String,
    },
    /// Load a backup (from `GET /v1/admin/backup`) into an empty --data
    /// dir, with a new store_id so devices notice and repair, then verify.
    Restore {
        /// The backup file.
        #[arg(long)]
        from: PathBuf,
        /// Keep the backup's store_id (only if the original store is gone
        /// for good and no device synced after the backup was taken).
        #[arg(long)]
        keep_store_id: bool,
    },
    /// Serve a demo: 迎泽区's year 2020, made by simulated field devices.
    ///
    /// On an empty data dir, first fill it with a year (2020) of 迎泽区's
    /// legal-education records, made by simulated field devices that sync
    /// with this server; then print coordinators' sign-in tokens and serve
    /// until Ctrl-C. A data dir that holds a demo is served as it is; one
    /// that holds anything else is refused.
    Demo {
        /// Seed of the simulated year: the same seed gives the same records.
        #[arg(long, default_value_t = pufa_demo::SEED_DEFAULT)]
        seed: u64,
    },
}

// sled rewrites whole nodes on every write: glibc's malloc spent ~40% of
// push CPU and fragmented into ~2x the RSS (docs/performance.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Threads for blocking store calls (sled reads, the writer, flushes). Each
/// thread keeps its own allocator cache; tokio's default of 512 let a burst
/// of 200 devices grow the server by hundreds of MiB for no throughput.
const BLOCKING_THREADS_MAX: usize = 16;

fn main() -> ExitCode {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(BLOCKING_THREADS_MAX)
        .build()
    {
        Ok(rt) => rt.block_on(serve_main()),
        Err(e) => {
            eprintln!("pufa-server: cannot start the async runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve_main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,tower_http=warn".into()),
        )
        .init();
    let args = Args::parse();
    let data = args.data.clone().unwrap_or_else(|| {
        PathBuf::from(match args.command {
            Some(Cmd::Demo { .. }) => "./pufa-demo",
            _ => "./pufa-data",
        })
    });
    let mut config = Config::new(&data);
    config.max_skew = Duration::from_secs(args.max_skew_secs);
    config.max_body_bytes = args.max_body_bytes;
    config.cache_bytes = args.cache_mb.saturating_mul(1024 * 1024);
    config.request_timeout = Duration::from_secs(args.request_timeout_secs.max(1));
    config.token_rate = (args.token_rate_per_sec > 0.0).then_some(pufa_server::limits::RateLimit {
        per_sec: args.token_rate_per_sec,
        burst: args.token_burst.max(1.0),
    });
    config.ip_rate =
        args.ip_rate_per_sec
            .filter(|r| *r > 0.0)
            .map(|per_sec| pufa_server::limits::RateLimit {
                per_sec,
                burst: args.ip_burst.max(1.0),
            });
    config.trust_proxy = args.trust_proxy;
    config.max_connections = args.max_connections.max(1);
    config.header_timeout = Duration::from_secs(args.header_timeout_secs.max(1));
    config.max_connections_per_ip =
        (args.max_connections_per_ip > 0).then_some(args.max_connections_per_ip);
    config.body_timeout = Duration::from_secs(args.body_timeout_secs.max(1));
    config.body_rate_min_bytes_per_sec = args.body_min_bytes_per_sec;
    // A rate of 0 or less (or NaN) would never refill: the least is one
    // failure an hour.
    config.enrol_failures_per_ip = pufa_server::limits::RateLimit {
        per_sec: args.enrol_failures_per_ip_per_sec.max(1.0 / 3600.0),
        burst: args.enrol_failures_per_ip_burst.max(1.0),
    };
    config.database_url = args.database_url.clone();
    config.pg_pool_size = args.pg_pool_size.max(1);
    config.time_zone = args.time_zone.clone();
    config.public_url = args.public_url.clone();
    if args.unsafe_no_fsync {
        tracing::warn!("--unsafe-no-fsync: a power cut can lose acknowledged writes");
        config.fsync = false;
    }
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        match pufa_server::tls::server_config(cert, key) {
            Ok(tls) => config.tls = Some(tls),
            Err(e) => {
                eprintln!("pufa-server: TLS: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    // These act on the embedded store's files; a PostgreSQL store has its
    // own tools (docs/operations.md, "PostgreSQL").
    if config.database_url.is_some() {
        let sled_only = match &args.command {
            Some(Cmd::NewStoreId) => Some("new-store-id"),
            Some(Cmd::Restore { .. }) => Some("restore"),
            Some(Cmd::Demo { .. }) => Some("demo"),
            _ => None,
        };
        if let Some(cmd) = sled_only {
            eprintln!(
                "pufa-server {cmd}: works on the embedded sled store under --data, not with --database-url (PUFA_DATABASE_URL); for PostgreSQL see docs/operations.md, \"PostgreSQL: several instances on one database\""
            );
            return ExitCode::from(2);
        }
    }
    if let Some(Cmd::NewStoreId) = args.command {
        return match pufa_server::store::sled::SledStore::renew_store_id(&config) {
            Ok((old, new)) => {
                println!("store_id of {} changed from {old} to {new}", data.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("pufa-server: {}: {e}", data.display());
                ExitCode::FAILURE
            }
        };
    }
    if let Some(Cmd::AddAccount {
        username,
        role,
        org_unit,
        display_name,
    }) = &args.command
    {
        return add_account(config, username, role, org_unit, display_name).await;
    }
    match &args.command {
        Some(Cmd::Migrate {
            from_data,
            to_database_url,
        }) => return migrate(&config, from_data, to_database_url).await,
        Some(Cmd::Verify) if config.database_url.is_some() => return verify_pg(&config).await,
        Some(Cmd::Verify) => return verify(&config),
        Some(Cmd::Restore {
            from,
            keep_store_id,
        }) => return restore(&config, from, *keep_store_id),
        _ => {}
    }
    let listener = match bind(args.listen) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("pufa-server: cannot listen on {}: {e}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    if let Some(Cmd::Demo { seed }) = args.command {
        return demo(config, listener, seed).await;
    }
    match pufa_server::run(config, listener, shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pufa-server: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Binds like `TcpListener::bind` (with `SO_REUSEADDR`, so a restart can
/// take the port at once), but with a listen backlog of
/// [`config::LISTEN_BACKLOG`] instead of 128: connections beyond
/// `--max-connections` wait there.
fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(config::LISTEN_BACKLOG)
}

async fn migrate(config: &Config, from: &std::path::Path, url: &str) -> ExitCode {
    let mut source = config.clone();
    source.data_dir = from.to_path_buf();
    source.database_url = None;
    let mut target = config.clone();
    target.database_url = Some(url.to_string());
    match pufa_server::store::migrate::sled_to_pg(&source, &target).await {
        Ok(m) => {
            println!("{m}");
            println!(
                "start the servers with --database-url; keep {} (with admin.token) until you no longer need to go back",
                from.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!(
                "pufa-server migrate: {} → {}: {e}",
                from.display(),
                pufa_server::store::pg::redacted(url)
            );
            ExitCode::FAILURE
        }
    }
}

async fn verify_pg(config: &Config) -> ExitCode {
    let url = config.database_url.as_deref().unwrap_or_default();
    verify_exit(
        pufa_server::store::verify::verify_pg(config).await,
        pufa_server::store::pg::redacted(url),
    )
}

fn verify(config: &Config) -> ExitCode {
    verify_exit(
        pufa_server::store::verify::verify(config),
        config.data_dir.display(),
    )
}

/// Prints a verification's report; exit code 0 when intact, 1 when
/// something is broken, 2 when the store (`what`) could not be read.
fn verify_exit(
    report: Result<pufa_server::store::verify::Report, pufa_server::store::StoreError>,
    what: impl std::fmt::Display,
) -> ExitCode {
    match report {
        Ok(report) => {
            println!("{report}");
            if report.broken.is_none() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("pufa-server verify: {what}: {e}");
            ExitCode::from(2)
        }
    }
}

fn restore(config: &Config, from: &std::path::Path, keep_store_id: bool) -> ExitCode {
    match pufa_server::store::backup::restore(from, config, keep_store_id) {
        Ok(r) => {
            println!(
                "restored {} pairs of store {} at seq {} into {}; store_id is now {}",
                r.pairs,
                r.header.store_id,
                r.header.seq,
                config.data_dir.display(),
                r.store_id
            );
            println!(
                "copy admin.token from the original data dir (the backup holds no secrets; the old admin token still works)"
            );
            verify(config)
        }
        Err(e) => {
            eprintln!("pufa-server restore: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn demo(config: Config, listener: tokio::net::TcpListener, seed: u64) -> ExitCode {
    let data = config.data_dir.clone();
    let started = match pufa_demo::launch(config, listener, seed, shutdown_signal()).await {
        Ok(d) => d,
        Err(e) => {
            eprintln!("pufa-server demo: {e}");
            return ExitCode::FAILURE;
        }
    };
    if started.filled {
        println!(
            "Filled {} with the demo year 2020 (seed {seed}); field devices' stores are in {}",
            data.display(),
            data.join(pufa_demo::DEVICES_DIR).display()
        );
    }
    print!("{}", started.banner());
    match started.wait().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pufa-server demo: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn add_account(
    config: Config,
    username: &str,
    role: &str,
    org_unit: &Option<String>,
    display_name: &Option<String>,
) -> ExitCode {
    let role = match role {
        "coordinator" => pufa_core::wire::Role::Coordinator,
        "admin" => pufa_core::wire::Role::Admin,
        other => {
            eprintln!(
                "pufa-server add-account: --role must be coordinator or admin, not {other:?}"
            );
            return ExitCode::from(2);
        }
    };
    let password = match std::env::var("PUFA_PASSWORD") {
        Ok(p) => p,
        Err(_) => {
            if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
                eprintln!("password for {username} (typed text is shown; end with Enter):");
            }
            let mut line = String::new();
            if let Err(e) = std::io::stdin().read_line(&mut line) {
                eprintln!("pufa-server add-account: cannot read the password: {e}");
                return ExitCode::FAILURE;
            }
            line.trim_end_matches(['\r', '\n']).to_string()
        }
    };
    let req = pufa_core::wire::AccountRequest {
        username: username.to_string(),
        password,
        role,
        org_unit: org_unit.clone(),
        display_name: display_name.clone(),
    };
    let data = config.data_dir.clone();
    match pufa_server::people::add_account_offline(config, req).await {
        Ok(view) => {
            println!(
                "created {} account {:?} in {}",
                view.role.as_str(),
                view.username,
                data.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("pufa-server add-account: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down");
}
