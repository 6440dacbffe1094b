//! A throwaway PostgreSQL cluster for fault tests: its own data dir and
//! port, started with the installed server binaries
//! (`/usr/lib/postgresql/<major>/bin`), crashed and recovered on demand,
//! and removed on drop.
//!
//! The server runs as the `postgres` OS user (`runuser`) when the tests run
//! as root, since PostgreSQL refuses to run as root; as the current user
//! otherwise. It listens on 127.0.0.1 only, with its socket inside the
//! temp dir, so it never meets the system's own cluster.
//!
//! [`PgCluster::start_or_skip`] carries the rule of the tests that need
//! tools beyond Rust: without the binaries a test is skipped with a loud
//! line on stderr, except under `CI=true` (`.ci/run` installs them), where
//! it fails.

use std::io::Write as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, ensure, Context as _};

/// The superuser the cluster is made with (over TCP, with [`PASSWORD`]).
pub const USER: &str = "pufa";
pub const PASSWORD: &str = "pufa";
/// The database [`PgCluster::url`] names.
pub const DATABASE: &str = "pufa";

/// How long `pg_ctl` waits for the server to start (including crash
/// recovery) or stop.
const PG_CTL_WAIT_SECS: u32 = 60;

/// Ports tried when the free port found is taken before the server binds it.
const START_ATTEMPTS_MAX: usize = 3;

/// The newest installed major version's server binaries, if any.
pub fn bin_dir() -> Option<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| {
            let e = e.ok()?;
            let major: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            ["initdb", "pg_ctl", "postgres", "psql"]
                .iter()
                .all(|b| bin.join(b).is_file())
                .then_some((major, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin)
}

/// A PostgreSQL cluster of its own in a temp dir. Dropping it stops the
/// server (`-m immediate`) and removes the dir.
pub struct PgCluster {
    /// `data/` (the cluster), `sock/`, `pwfile`, `server.log`.
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    /// Run the server binaries through `runuser -u postgres` (we are root).
    as_postgres: bool,
    running: bool,
}

impl PgCluster {
    /// [`PgCluster::start`] for a test: `None` when the server binaries are
    /// missing, after a loud line on stderr (written to the process's
    /// stderr, which libtest does not capture).
    ///
    /// # Panics
    /// Under `CI=true` when the binaries are missing, and whenever they are
    /// there but the cluster does not start.
    pub fn start_or_skip() -> Option<PgCluster> {
        if bin_dir().is_none() {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI=true but the PostgreSQL server binaries are missing \
                 (/usr/lib/postgresql/*/bin; .ci/run installs the postgresql package)"
            );
            let _ = std::io::stderr().write_all(
                b"\n*** SKIPPED a PostgreSQL fault test: no server binaries in \
                  /usr/lib/postgresql/*/bin (apt-get install postgresql) ***\n",
            );
            return None;
        }
        Some(PgCluster::start().unwrap_or_else(|e| panic!("start a PostgreSQL cluster: {e:#}")))
    }

    /// Makes a new cluster (`initdb`) in a temp dir and starts it on a free
    /// loopback port with `fsync` and `synchronous_commit` on, then creates
    /// the [`DATABASE`] of [`USER`], which proves it accepts connections.
    ///
    /// # Errors
    /// When the binaries are missing, or `initdb`, `pg_ctl` or `psql`
    /// fail; the message holds their output and the server's log.
    pub fn start() -> anyhow::Result<PgCluster> {
        let bin =
            bin_dir().context("no PostgreSQL server binaries in /usr/lib/postgresql/*/bin")?;
        let dir = tempfile::tempdir().context("temp dir")?;
        let as_postgres = std::fs::metadata(dir.path())?.uid() == 0;
        std::fs::create_dir(dir.path().join("sock"))?;
        std::fs::write(dir.path().join("pwfile"), format!("{PASSWORD}\n"))?;
        if as_postgres {
            let (uid, gid) = (id_of("-u")?, id_of("-g")?);
            for p in ["", "sock", "pwfile"] {
                std::os::unix::fs::chown(dir.path().join(p), Some(uid), Some(gid))
                    .with_context(|| format!("chown {p:?} to postgres"))?;
            }
        }
        let mut cluster = PgCluster {
            dir,
            bin,
            port: 0,
            as_postgres,
            running: false,
        };
        let mut initdb = cluster.server_command("initdb");
        initdb
            .arg("--pgdata")
            .arg(cluster.data())
            .args(["--username", USER, "--auth", "scram-sha-256"])
            .arg(format!(
                "--pwfile={}",
                cluster.dir.path().join("pwfile").display()
            ))
            .args(["--encoding", "UTF8", "--no-locale"])
            // The faults are crashes of the server process, which the OS's
            // page cache survives; the server itself runs with fsync on.
            .arg("--no-sync");
        run(&mut initdb)?;
        for attempt in 1..=START_ATTEMPTS_MAX {
            cluster.port = free_port()?;
            match cluster.pg_ctl_start() {
                Ok(()) => break,
                Err(_)
                    if attempt < START_ATTEMPTS_MAX
                        && cluster.log().contains("Address already in use") => {}
                Err(e) => return Err(e),
            }
        }
        let mut psql = Command::new(cluster.bin.join("psql"));
        psql.current_dir(cluster.dir.path())
            .env("PGPASSWORD", PASSWORD)
            .env("PGCONNECT_TIMEOUT", "10")
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1"])
            .args([
                "-p",
                &cluster.port.to_string(),
                "-U",
                USER,
                "-d",
                "postgres",
            ])
            .args(["-c", &format!("CREATE DATABASE {DATABASE} OWNER {USER}")]);
        run(&mut psql).with_context(|| format!("create database; log:\n{}", cluster.log()))?;
        Ok(cluster)
    }

    /// `postgres://pufa:pufa@127.0.0.1:<port>/pufa`
    pub fn url(&self) -> String {
        format!(
            "postgres://{USER}:{PASSWORD}@127.0.0.1:{}/{DATABASE}",
            self.port
        )
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's log so far (every start appends to it).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// A database crash and recovery: stops the server at once (`-m
    /// immediate`, no checkpoint, like a killed server) if it runs, and
    /// starts it again on the same data dir and port, which replays the
    /// WAL. Returns when it accepts connections again.
    ///
    /// # Errors
    /// When `pg_ctl` fails to stop or start it.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        if self.running {
            self.pg_ctl_stop("immediate")?;
        }
        self.pg_ctl_start()
    }

    /// Stops the server cleanly (`-m fast`); [`PgCluster::restart`] starts
    /// it again.
    ///
    /// # Errors
    /// When `pg_ctl` fails to stop it.
    pub fn stop(&mut self) -> anyhow::Result<()> {
        if self.running {
            self.pg_ctl_stop("fast")?;
        }
        Ok(())
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// One of the server binaries, as the user who may run the server.
    fn server_command(&self, name: &str) -> Command {
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(self.bin.join(name));
            c
        } else {
            Command::new(self.bin.join(name))
        };
        // A dir the postgres user can enter, whatever the test's own is.
        cmd.current_dir(self.dir.path());
        cmd
    }

    fn pg_ctl_start(&mut self) -> anyhow::Result<()> {
        let sock = self.dir.path().join("sock");
        ensure!(
            !sock.to_string_lossy().contains(['\'', ' ']),
            "temp dir {sock:?} would need quoting in pg_ctl's -o"
        );
        // pg_ctl hands -o to a shell, hence the quotes.
        let options = format!(
            "-c port={} -c listen_addresses=127.0.0.1 -c unix_socket_directories='{}' \
             -c fsync=on -c synchronous_commit=on -c max_connections=40 -c shared_buffers=16MB",
            self.port,
            sock.display()
        );
        let mut pg_ctl = self.server_command("pg_ctl");
        pg_ctl
            .arg("--pgdata")
            .arg(self.data())
            .arg("--log")
            .arg(self.dir.path().join("server.log"))
            .args(["--wait", "--timeout", &PG_CTL_WAIT_SECS.to_string()])
            .args(["-o", &options, "start"]);
        let started = run(&mut pg_ctl);
        // pg_ctl may give up waiting while the server still comes up.
        self.running = true;
        started.with_context(|| format!("pg_ctl start; log:\n{}", self.log()))?;
        Ok(())
    }

    fn pg_ctl_stop(&mut self, mode: &str) -> anyhow::Result<()> {
        let mut pg_ctl = self.server_command("pg_ctl");
        pg_ctl
            .arg("--pgdata")
            .arg(self.data())
            .args(["--mode", mode, "--wait", "--timeout"])
            .arg(PG_CTL_WAIT_SECS.to_string())
            .arg("stop");
        run(&mut pg_ctl).with_context(|| format!("pg_ctl stop -m {mode}"))?;
        self.running = false;
        Ok(())
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if self.running {
            // Nothing to keep; and a failure here must not hide the test's.
            let _ = self.pg_ctl_stop("immediate");
        }
    }
}

/// Runs `cmd`; an error with its output unless it succeeds.
fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let out = cmd.output().with_context(|| format!("run {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?}: {}\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// The `postgres` OS user's uid (`-u`) or gid (`-g`).
fn id_of(flag: &str) -> anyhow::Result<u32> {
    let out = Command::new("id").args([flag, "postgres"]).output()?;
    ensure!(
        out.status.success(),
        "no postgres OS user (id {flag} postgres)"
    );
    Ok(String::from_utf8(out.stdout)?.trim().parse()?)
}

/// A loopback port nothing listens on at the moment (the server binds it
/// a moment later; [`PgCluster::start`] tries another if it was taken).
fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}
