//! `pufa-server demo`: a running server filled with a realistic year 2020 of
//! 迎泽区 (Yingze District), for trying the coordinators' dashboard and the
//! API without real data.
//!
//! The figures mirror the district's 2020 rule-of-law report
//! (`docs/operations.md`, "Demo data"): 97 legal lectures (近百场) held in
//! communities and villages, fewer in February and March (the COVID months);
//! an active legal library corner (法治图书角) in each of the 113 grassroots
//! units (全覆盖); 3 provincial and 5 municipal demonstration sites awarded in
//! 2020 (省级示范 3, 市级示范 5); 113 legal understanders (法律明白人)
//! appointed, one in every community and village (覆盖所有社区(村)).
//!
//! Nothing is written into the store directly. The data goes through the
//! real sync path, so that the demo also shows what the path produces:
//! simulated field devices, each a [`pufa_client::Client`] with its own
//! local store under `<data>/demo-devices/<name>`, record offline and sync
//! over HTTP with the running server. Along the way a few devices edit the
//! same field concurrently (open conflicts), a few record into units outside
//! their scope (rejections), and one device ends with an unsynced edit.
//!
//! The year is a [`Plan`], made by a pure function of the seed
//! ([`plan`]); [`populate`] carries it out against a server. The same seed
//! gives the same records, the same conflicts and the same totals (ids,
//! tokens and sync times differ: they are made by the devices and the
//! server, with the real clock).

mod plan;
mod populate;

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};

use pufa_client::transport::TransportError;
use pufa_client::AdminClient;
use pufa_core::org::Scope;
use pufa_core::wire::OrgUnit;
use pufa_server::{Config, RunError};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use plan::{plan, DevicePlan, Expected, NewRecord, Plan, Step};
pub use populate::{populate, Coordinator, DemoDevice, DemoInfo, Figures};

/// The org tree of 迎泽区: a copy of `shared/fixtures/yingze-org-units.json`,
/// embedded so that the binary needs no file besides itself.
pub const ORG_UNITS_JSON: &str = include_str!("../yingze-org-units.json");
/// Where the simulated devices keep their local stores, under the data dir
/// (the server's data dir check knows it).
pub use pufa_server::DEMO_DEVICES_DIR as DEVICES_DIR;
/// The coordinators' tokens, under the data dir (mode 0600). Written last:
/// its presence is what marks a data dir as a complete demo.
pub use pufa_server::DEMO_TOKENS_FILE as TOKENS_FILE;
/// The seed of `pufa-server demo` when `--seed` is not given.
pub const SEED_DEFAULT: u64 = 2020;

/// The root unit: 迎泽区.
const DISTRICT: &str = "140106";
/// The street coordinator's unit: 迎泽街道.
const STREET_COORDINATOR_UNIT: &str = "140106004";

/// The org units of the demo.
pub fn org_units() -> Vec<OrgUnit> {
    // The file is part of the source; the unit tests parse it.
    serde_json::from_str(ORG_UNITS_JSON).expect("the embedded org tree is valid")
}

/// A bearer token, kept out of `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    pub fn new(secret: impl Into<String>) -> Token {
        Token(secret.into())
    }

    /// The secret itself, for an `Authorization` header or the user.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(…)")
    }
}

/// Why the demo could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("{dir} holds a Pufa store that is not a demo; `pufa-server demo` never mixes demo data into a real store: choose a new directory, e.g. --data ./pufa-demo")]
    NotADemo { dir: PathBuf },
    #[error("{dir} holds a demo whose filling did not finish ({TOKENS_FILE} is missing); delete the directory and run `pufa-server demo` again")]
    Unfinished { dir: PathBuf },
    #[error("the server already holds records; demo data goes only into a new, empty store")]
    StoreNotEmpty,
    #[error("the server stopped before the demo data was complete; delete {dir} and run `pufa-server demo` again")]
    Stopped { dir: PathBuf },
    #[error(transparent)]
    Run(#[from] RunError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{call}: {source}")]
    Api {
        call: &'static str,
        source: pufa_client::Error,
    },
    #[error("HTTP client: {0}")]
    Http(#[from] TransportError),
    #[error("demo device {device}: {source}")]
    Device {
        device: String,
        source: pufa_client::Error,
    },
    #[error("the demo did not go as planned: {0}")]
    Unexpected(String),
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> DemoError + '_ {
    move |source| DemoError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What a data dir holds, as far as the demo is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataDir {
    /// Missing, or nothing but dotfiles: the demo may fill it.
    Empty,
    /// A complete demo ([`TOKENS_FILE`] exists).
    Demo,
    /// A demo whose filling did not finish.
    Unfinished,
    /// A store that is not a demo.
    Store,
    /// Files that are not Pufa's.
    Foreign,
}

/// Looks at a data dir without changing it.
///
/// # Errors
/// The dir exists but cannot be read.
pub fn inspect(dir: &Path) -> Result<DataDir, DemoError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(DataDir::Empty),
        Err(e) => return Err(io_err(dir)(e)),
    };
    let mut names = Vec::new();
    for e in entries {
        let name = e.map_err(io_err(dir))?.file_name();
        let name = name.to_string_lossy().into_owned();
        if !name.starts_with('.') {
            names.push(name);
        }
    }
    let has = |n: &str| names.iter().any(|x| x == n);
    Ok(if names.is_empty() {
        DataDir::Empty
    } else if has(TOKENS_FILE) {
        DataDir::Demo
    } else if has(DEVICES_DIR) {
        DataDir::Unfinished
    } else if has("store") || has("admin.token") {
        DataDir::Store
    } else {
        DataDir::Foreign
    })
}

/// The tokens file: comment lines, then `coordinator<TAB>code<TAB>name<TAB>token`.
pub(crate) fn write_tokens(
    dir: &Path,
    seed: u64,
    coordinators: &[Coordinator],
) -> Result<(), DemoError> {
    let mut text = format!(
        "# Pufa Sync demo data (seed {seed}): coordinators' sign-in tokens. Keep private.\n\
         # role\torg_unit\tname\ttoken\n"
    );
    for c in coordinators {
        text.push_str(&format!(
            "coordinator\t{}\t{}\t{}\n",
            c.org_unit,
            c.name,
            c.token.expose()
        ));
    }
    let path = dir.join(TOKENS_FILE);
    pufa_durable::create_new(&path, text.as_bytes(), pufa_durable::Access::Private)
        .map_err(io_err(&path))
}

fn read_tokens(dir: &Path) -> Result<Vec<Coordinator>, DemoError> {
    let path = dir.join(TOKENS_FILE);
    let text = std::fs::read_to_string(&path).map_err(io_err(&path))?;
    let coordinators: Vec<Coordinator> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| match l.split('\t').collect::<Vec<_>>().as_slice() {
            ["coordinator", code, name, token] => Some(Coordinator {
                org_unit: (*code).into(),
                name: (*name).into(),
                token: Token::new(*token),
            }),
            _ => None,
        })
        .collect();
    if coordinators.is_empty() {
        return Err(DemoError::Unfinished {
            dir: dir.to_path_buf(),
        });
    }
    Ok(coordinators)
}

/// The URL clients use for a listener: a wildcard address is reached on
/// loopback.
pub fn local_url(addr: SocketAddr) -> String {
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("http://{}", SocketAddr::new(ip, addr.port()))
}

/// A running demo server.
#[derive(Debug)]
pub struct Demo {
    pub url: String,
    /// Whether this start filled the data dir (else it was a demo already).
    pub filled: bool,
    pub coordinators: Vec<Coordinator>,
    pub admin_token_path: PathBuf,
    pub figures: Figures,
    /// Set when this start filled the data dir.
    pub info: Option<DemoInfo>,
    server: JoinHandle<Result<(), RunError>>,
}

impl Demo {
    /// What to tell the person who started it.
    pub fn banner(&self) -> String {
        let mut s = format!("Pufa Sync demo is running: {}/\n", self.url);
        for (i, c) in self.coordinators.iter().enumerate() {
            let role = if i == 0 { "district" } else { "street" };
            s.push_str(&format!(
                "Sign in ({role} coordinator, {} {}): {}\n",
                c.name,
                c.org_unit,
                c.token.expose()
            ));
        }
        s.push_str(&format!(
            "Admin token: {}\n",
            self.admin_token_path.display()
        ));
        s.push_str(&self.figures.summary());
        s.push('\n');
        s
    }

    /// Serves until the shutdown future given to [`launch`] resolves, then
    /// drains and flushes like the normal server.
    ///
    /// # Errors
    /// As [`pufa_server::serve`].
    pub async fn wait(self) -> Result<(), DemoError> {
        match self.server.await {
            Ok(r) => Ok(r?),
            Err(e) => Err(DemoError::Unexpected(format!(
                "the server task failed: {e}"
            ))),
        }
    }
}

/// `pufa-server demo`: serves `config.data_dir` on `listener` until
/// `shutdown`, having filled it first with [`populate`] if it was empty. A
/// data dir that holds a demo already is served as it is; one that holds
/// anything else is refused.
///
/// # Errors
/// [`DemoError::NotADemo`], [`DemoError::Unfinished`], or the failure of
/// opening the store or of filling it ([`DemoError::Stopped`] if `shutdown`
/// came first).
pub async fn launch(
    config: Config,
    listener: TcpListener,
    seed: u64,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<Demo, DemoError> {
    let dir = config.data_dir.clone();
    let filled = match inspect(&dir)? {
        DataDir::Empty => true,
        DataDir::Demo => false,
        DataDir::Unfinished => return Err(DemoError::Unfinished { dir }),
        DataDir::Store => return Err(DemoError::NotADemo { dir }),
        // The server's own check names the stray entry.
        DataDir::Foreign => {
            pufa_server::check_data_dir(&dir)?;
            return Err(DemoError::NotADemo { dir });
        }
    };
    if filled {
        // Made before the store, so that a start cut short is recognised
        // as an unfinished demo, never as a real store.
        let devices = dir.join(DEVICES_DIR);
        pufa_durable::create_dir_all(&devices).map_err(io_err(&devices))?;
    }
    let admin_token_path = config.admin_token_path();
    let url = local_url(listener.local_addr().map_err(RunError::Serve)?);
    let state = pufa_server::open(config).await?;
    let records = state
        .store
        .checksum(&Scope::All)
        .await
        .map_err(|source| RunError::Store {
            dir: dir.clone(),
            source,
        })?
        .count;
    if !filled && records == 0 {
        return Err(DemoError::Unfinished { dir });
    }
    tracing::info!(%url, store_id = %state.store.store_id(), "pufa-server demo listening");
    let mut server = tokio::spawn(pufa_server::serve(state, listener, shutdown));
    let admin = std::fs::read_to_string(&admin_token_path).map_err(io_err(&admin_token_path))?;
    let admin = admin.trim().to_string();
    let work = async {
        if filled {
            let info = populate(&url, &admin, &dir, seed).await?;
            Ok::<_, DemoError>((info.coordinators.clone(), info.figures.clone(), Some(info)))
        } else {
            let coordinators = read_tokens(&dir)?;
            let coordinator = AdminClient::over_http(&url, coordinators[0].token.expose())?;
            let figures = populate::figures(&coordinator).await?;
            Ok((coordinators, figures, None))
        }
    };
    let (coordinators, figures, info) = tokio::select! {
        r = work => match r {
            Ok(done) => done,
            Err(e) => {
                // Not left serving a half-filled demo behind the caller's
                // back; what was acknowledged is on disk already.
                server.abort();
                return Err(e);
            }
        },
        r = &mut server => {
            return Err(match r {
                Ok(Err(e)) => e.into(),
                _ => DemoError::Stopped { dir },
            })
        }
    };
    Ok(Demo {
        url,
        filled,
        coordinators,
        admin_token_path,
        figures,
        info,
        server,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_not_debug_printed() {
        assert_eq!(format!("{:?}", Token::new("pufa_secret")), "Token(…)");
    }

    #[test]
    fn wildcard_listeners_are_reached_on_loopback() {
        assert_eq!(
            local_url("0.0.0.0:8080".parse().unwrap()),
            "http://127.0.0.1:8080"
        );
        assert_eq!(local_url("[::]:80".parse().unwrap()), "http://[::1]:80");
        assert_eq!(
            local_url("10.0.0.2:1".parse().unwrap()),
            "http://10.0.0.2:1"
        );
    }
}
