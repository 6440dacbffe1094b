//! `pufa`: a command-line field device. Records lectures, library corners
//! and demonstration sites offline and syncs them with a Pufa Sync server.
//!
//! Exit codes (stable, for scripts): 0 ok · 1 other failure · 2 invalid
//! input or usage · 3 server unreachable (nothing lost; try later) ·
//! 4 token refused (revoked: enrol again) · 5 not found · 6 server error.

mod fields;
mod i18n;

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use i18n::Lang;
use pufa_client::{
    Client, ClientConfig, Error, Filter, HttpTransport, LocalRecord, Progress, SyncState,
};
use pufa_core::date::Date;
use pufa_core::schema::Kind;
use pufa_core::wire::{OrgUnit, WhoAmI};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use uuid::Uuid;

/// A Pufa Sync field device on the command line: record legal lectures,
/// library corners and demonstration sites offline, then sync.
#[derive(Debug, Parser)]
#[command(name = "pufa", version, about, long_about = None)]
struct Cli {
    /// Where this device keeps its records and settings.
    #[arg(long, env = "PUFA_DATA", global = true)]
    data: Option<PathBuf>,
    /// Language of prompts and messages: zh (中文) or en. Default: from LANG.
    #[arg(long, global = true)]
    lang: Option<String>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Bind this device to a server (once).
    Enroll {
        /// The server's URL, e.g. http://127.0.0.1:8080
        #[arg(long)]
        server: String,
        /// A short enrolment code from a coordinator (XXXX-XXXX; any case,
        /// the dash optional).
        #[arg(long, conflicts_with = "token", required_unless_present = "token")]
        code: Option<String>,
        /// A device token issued by an admin.
        #[arg(long)]
        token: Option<String>,
        /// This device's name on the server (with --code; default: the
        /// code's label).
        #[arg(long, requires = "code")]
        label: Option<String>,
        /// With --code on a device that is already enrolled and still has
        /// edits the server does not have: enrol anyway as a new device,
        /// keeping the old store (and those edits) aside in the data dir.
        #[arg(long, requires = "code")]
        force: bool,
    },
    /// Legal lectures (法律大讲堂).
    #[command(subcommand)]
    Lecture(AddLecture),
    /// Legal library corners (法治图书角).
    #[command(subcommand)]
    Corner(AddCorner),
    /// Rule-of-law demonstration sites (法治示范村/社区).
    #[command(subcommand)]
    Site(AddSite),
    /// List records on this device.
    List {
        /// lecture, library_corner or demo_site (also: corner, site)
        #[arg(long)]
        kind: Option<String>,
        /// An org unit code: that unit and everything below it.
        #[arg(long)]
        org: Option<String>,
        /// From this date (YYYY-MM-DD), inclusive.
        #[arg(long)]
        from: Option<String>,
        /// Up to this date (YYYY-MM-DD), inclusive.
        #[arg(long)]
        to: Option<String>,
        /// Include deleted records.
        #[arg(long)]
        deleted: bool,
        #[arg(long)]
        json: bool,
    },
    /// Show one record (id or a unique prefix of it).
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Change fields: `pufa edit ID --attendees 90 --speaker 王律师` (an empty value clears).
    Edit {
        id: String,
        #[arg(
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "--FIELD VALUE"
        )]
        changes: Vec<String>,
    },
    /// Delete a record (it can be restored).
    Delete { id: String },
    /// Restore a deleted record.
    Restore { id: String },
    /// Push this device's records and pull everyone else's.
    Sync {
        #[arg(long)]
        json: bool,
    },
    /// What is pending, when this device last synced, its clock.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Edits the server refused, with the reason.
    Rejected {
        #[arg(long)]
        json: bool,
    },
    /// Drop a refused edit for good (its mutation id from `pufa rejected`).
    Discard { mutation: Uuid },
    /// Send a refused edit again, optionally with fixed fields: `pufa resubmit MUT --org_unit 140106001001`.
    Resubmit {
        mutation: Uuid,
        #[arg(
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "--FIELD VALUE"
        )]
        changes: Vec<String>,
    },
    /// Record many events from a CSV file (UTF-8, with or without BOM); all rows or none.
    Import {
        file: PathBuf,
        /// The kind of every row, when the file has no `kind` column.
        #[arg(long)]
        kind: Option<String>,
    },
    /// Write the records on this device as CSV (UTF-8 with BOM, for Excel) or JSON.
    Export {
        #[arg(long, default_value = "csv")]
        format: String,
        #[arg(long)]
        kind: Option<String>,
        /// Write here instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum AddLecture {
    /// Record a lecture; asks for missing fields in a terminal.
    Add(LectureFields),
}

#[derive(Debug, Subcommand)]
enum AddCorner {
    /// Record a library corner; asks for missing fields in a terminal.
    Add(CornerFields),
}

#[derive(Debug, Subcommand)]
enum AddSite {
    /// Record a demonstration site; asks for missing fields in a terminal.
    Add(SiteFields),
}

#[derive(Debug, Args)]
struct LectureFields {
    /// Org unit: code or name.
    #[arg(long)]
    org: Option<String>,
    #[arg(long)]
    held_on: Option<String>,
    #[arg(long)]
    title: Option<String>,
    #[arg(long)]
    attendees: Option<String>,
    /// Comma-separated.
    #[arg(long)]
    topics: Option<String>,
    #[arg(long)]
    speaker: Option<String>,
    #[arg(long)]
    venue: Option<String>,
    /// residents, villagers, students, enterprise_staff, officials, mixed
    #[arg(long)]
    audience: Option<String>,
    #[arg(long)]
    notes: Option<String>,
    /// lat,lon
    #[arg(long)]
    location: Option<String>,
    /// Never ask: fail if a required field is missing.
    #[arg(long)]
    no_input: bool,
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct CornerFields {
    #[arg(long)]
    org: Option<String>,
    #[arg(long)]
    name: Option<String>,
    /// active, inactive or closed
    #[arg(long)]
    status: Option<String>,
    #[arg(long)]
    books: Option<String>,
    #[arg(long)]
    opened_on: Option<String>,
    #[arg(long)]
    last_checked_on: Option<String>,
    #[arg(long)]
    notes: Option<String>,
    #[arg(long)]
    no_input: bool,
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct SiteFields {
    #[arg(long)]
    org: Option<String>,
    /// national, provincial, municipal or district
    #[arg(long)]
    level: Option<String>,
    /// candidate, awarded or revoked
    #[arg(long)]
    status: Option<String>,
    #[arg(long)]
    year: Option<String>,
    #[arg(long)]
    notes: Option<String>,
    #[arg(long)]
    no_input: bool,
    #[arg(long)]
    json: bool,
}

/// What `enroll` stores next to the device's records.
#[derive(Debug, Serialize, Deserialize)]
struct DeviceConfig {
    server: String,
    token: String,
    device_id: Uuid,
    role: String,
    org_unit: Option<String>,
    label: String,
}

/// A failure with its exit code.
struct Fail {
    code: u8,
    message: String,
}

impl Fail {
    fn new(code: u8, message: impl Into<String>) -> Fail {
        Fail {
            code,
            message: message.into(),
        }
    }

    fn invalid(message: impl Into<String>) -> Fail {
        Fail::new(2, message)
    }
}

impl From<Error> for Fail {
    fn from(e: Error) -> Fail {
        if let Error::Unreachable(why) = &e {
            return Fail::new(
                3,
                format!(
                    "无法连接服务器，没有丢失任何数据，请稍后再同步（{why}）。\n\
                     cannot reach the server; nothing was lost, sync again later ({why})"
                ),
            );
        }
        if let Error::Unauthorized = e {
            return Fail::new(
                4,
                "服务器拒绝了本设备的令牌（已吊销或无效）。请管理员为本设备重新签发令牌，然后运行 pufa enroll --server URL --token 新令牌；待同步的修改会保留。\n\
                 the server refused this device's token (revoked or invalid): ask an admin to re-enrol this device, then run \
                 pufa enroll --server URL --token NEW; pending edits are kept",
            );
        }
        let code = match &e {
            Error::Invalid(_) => 2,
            Error::Unreachable(_) => 3,
            Error::Unauthorized | Error::Forbidden(_) => 4,
            Error::NotFound(_) => 5,
            Error::Server { .. } => 6,
            _ => 1,
        };
        Fail::new(code, e.to_string())
    }
}

type Out<T = ()> = Result<T, Fail>;

fn data_dir(cli: &Cli) -> PathBuf {
    cli.data.clone().unwrap_or_else(|| {
        dirs::data_dir()
            .unwrap_or_else(|| PathBuf::from("."))
            .join("pufa")
    })
}

fn config_path(dir: &Path) -> PathBuf {
    dir.join("device.json")
}

fn load_config(dir: &Path, lang: Lang) -> Out<DeviceConfig> {
    let text = std::fs::read_to_string(config_path(dir)).map_err(|_| {
        Fail::invalid(format!(
            "{} {} (pufa enroll --server URL --code XXXX-XXXX, or --token TOKEN)",
            lang.t("此设备尚未绑定服务器：", "this device is not enrolled yet:"),
            dir.display()
        ))
    })?;
    serde_json::from_str(&text)
        .map_err(|e| Fail::new(1, format!("{}: {e}", config_path(dir).display())))
}

fn open_client(dir: &Path, cfg: &DeviceConfig) -> Out<Client> {
    let transport = HttpTransport::new(&cfg.server).map_err(|e| Fail::new(1, e.to_string()))?;
    let mut config = ClientConfig::new(dir.join("store"), cfg.device_id, &cfg.token);
    config.app_version = concat!("pufa-cli/", env!("CARGO_PKG_VERSION")).into();
    Ok(Client::open(config, Arc::new(transport))?)
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let lang = Lang::detect(cli.lang.as_deref());
    match run(&cli, lang).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("pufa: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}

async fn run(cli: &Cli, lang: Lang) -> Out {
    let dir = data_dir(cli);
    if let Cmd::Enroll {
        server,
        code,
        token,
        label,
        force,
    } = &cli.cmd
    {
        let how = match (code, token) {
            (_, Some(t)) => Enrolment::Token(t),
            (Some(c), None) => Enrolment::Code {
                code: c,
                label: label.as_deref(),
                force: *force,
            },
            (None, None) => return Err(Fail::invalid("--code or --token")),
        };
        return enroll(&dir, server, how, lang).await;
    }
    let cfg = load_config(&dir, lang)?;
    let client = open_client(&dir, &cfg)?;
    match &cli.cmd {
        Cmd::Enroll { .. } => unreachable!("handled above"),
        Cmd::Lecture(AddLecture::Add(f)) => {
            let given = [
                ("org_unit", &f.org),
                ("held_on", &f.held_on),
                ("title", &f.title),
                ("attendees", &f.attendees),
                ("topics", &f.topics),
                ("speaker", &f.speaker),
                ("venue", &f.venue),
                ("audience", &f.audience),
                ("notes", &f.notes),
                ("location", &f.location),
            ];
            add(&client, Kind::Lecture, &given, f.no_input, f.json, lang)
        }
        Cmd::Corner(AddCorner::Add(f)) => {
            let given = [
                ("org_unit", &f.org),
                ("name", &f.name),
                ("status", &f.status),
                ("books", &f.books),
                ("opened_on", &f.opened_on),
                ("last_checked_on", &f.last_checked_on),
                ("notes", &f.notes),
            ];
            add(
                &client,
                Kind::LibraryCorner,
                &given,
                f.no_input,
                f.json,
                lang,
            )
        }
        Cmd::Site(AddSite::Add(f)) => {
            let given = [
                ("org_unit", &f.org),
                ("level", &f.level),
                ("status", &f.status),
                ("year", &f.year),
                ("notes", &f.notes),
            ];
            add(&client, Kind::DemoSite, &given, f.no_input, f.json, lang)
        }
        Cmd::List {
            kind,
            org,
            from,
            to,
            deleted,
            json,
        } => {
            let filter = Filter {
                kind: kind.as_deref().map(parse_kind).transpose()?,
                org_unit: org.clone(),
                from: from.as_deref().map(|d| parse_date("from", d)).transpose()?,
                to: to.as_deref().map(|d| parse_date("to", d)).transpose()?,
                include_deleted: *deleted,
            };
            let records = client.list(&filter)?;
            if *json {
                print_json(&Value::Array(records.iter().map(record_json).collect()));
            } else {
                print_table(&records, lang);
            }
            Ok(())
        }
        Cmd::Show { id, json } => {
            let r = client
                .get(find_id(&client, id)?)?
                .ok_or_else(|| Fail::new(5, format!("no record {id}")))?;
            if *json {
                print_json(&record_json(&r));
            } else {
                println!(
                    "{}  {}  seq {}  {}",
                    r.id,
                    r.kind.as_str(),
                    r.seq,
                    state_text(&r.state, lang)
                );
                if r.deleted {
                    println!("  {}", lang.t("（已删除）", "(deleted)"));
                }
                for (k, v) in &r.fields {
                    println!("  {:<16} {}", k, plain(v));
                }
            }
            Ok(())
        }
        Cmd::Edit { id, changes } => {
            let id = find_id(&client, id)?;
            let kind = client
                .get(id)?
                .map(|r| r.kind)
                .ok_or_else(|| Fail::new(5, format!("no record {id}")))?;
            let set = parse_changes(kind, changes)?;
            if set.is_empty() {
                return Err(Fail::invalid(lang.t(
                    "没有要修改的字段：pufa edit ID --字段 值",
                    "nothing to change: pufa edit ID --field value",
                )));
            }
            client.update(id, set)?;
            println!("{id}");
            Ok(())
        }
        Cmd::Delete { id } => {
            let id = find_id(&client, id)?;
            client.delete(id)?;
            println!("{id}");
            Ok(())
        }
        Cmd::Restore { id } => {
            let id = find_id(&client, id)?;
            client.restore(id)?;
            println!("{id}");
            Ok(())
        }
        Cmd::Sync { json } => sync(&client, *json, lang).await,
        Cmd::Status { json } => status(&client, &cfg, *json, lang),
        Cmd::Rejected { json } => {
            let rejected = client.rejected()?;
            if *json {
                print_json(&Value::Array(
                    rejected
                        .iter()
                        .map(|r| json!({"mutation": r.mutation, "record_id": r.record_id, "kind": r.kind, "set": r.set, "delete": r.delete, "error": r.error}))
                        .collect(),
                ));
            } else if rejected.is_empty() {
                println!("{}", lang.t("没有被拒绝的修改。", "No refused edits."));
            } else {
                for r in &rejected {
                    println!(
                        "{}  {} {}  {}: {}",
                        r.mutation, r.kind, r.record_id, r.error.code, r.error.message
                    );
                    println!(
                        "    {}",
                        fix_hint(&r.error.code, r.error.field.as_deref(), lang)
                    );
                }
            }
            Ok(())
        }
        Cmd::Discard { mutation } => {
            client.discard(*mutation)?;
            Ok(())
        }
        Cmd::Resubmit { mutation, changes } => {
            let rej = client
                .rejected()?
                .into_iter()
                .find(|r| r.mutation == *mutation)
                .ok_or_else(|| Fail::new(5, format!("no refused edit {mutation}")))?;
            let kind = parse_kind(&rej.kind)?;
            let set = if changes.is_empty() {
                None
            } else {
                let mut set = rej.set.clone();
                set.extend(parse_changes(kind, changes)?);
                Some(set)
            };
            println!("{}", client.resubmit(*mutation, set)?);
            Ok(())
        }
        Cmd::Import { file, kind } => import(&client, file, kind.as_deref(), lang),
        Cmd::Export { format, kind, out } => {
            export(&client, format, kind.as_deref(), out.as_deref())
        }
    }
}

/// How `pufa enroll` gets its token.
enum Enrolment<'a> {
    /// A device token from an admin: checked with `/v1/whoami`.
    Token(&'a str),
    /// A one-time code from a coordinator, exchanged at `/v1/enroll`.
    Code {
        code: &'a str,
        label: Option<&'a str>,
        force: bool,
    },
}

async fn enroll(dir: &Path, server: &str, how: Enrolment<'_>, lang: Lang) -> Out {
    // An enrolled dir may take a new token for the same device (after a
    // revocation); a token for another device is refused.
    let existing: Option<DeviceConfig> = std::fs::read_to_string(config_path(dir))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok());
    let http = HttpTransport::new(server).map_err(|e| Fail::new(1, e.to_string()))?;
    let by_code = matches!(how, Enrolment::Code { .. });
    let (token, who) = match how {
        Enrolment::Token(t) => (t.to_string(), whoami(&http, server, t, lang).await?),
        Enrolment::Code { code, label, force } => {
            // Checked before the code is spent: a refused re-enrolment
            // leaves the code usable.
            if let Some(old) = &existing {
                check_replaceable(dir, old, force, lang)?;
            }
            redeem_code(&http, server, code, label, lang).await?
        }
    };
    pufa_durable::create_dir_all(dir)
        .map_err(|e| Fail::new(1, format!("{}: {e}", dir.display())))?;
    let cfg = DeviceConfig {
        server: server.trim_end_matches('/').to_string(),
        token,
        device_id: who.device_id,
        role: who.role.as_str().to_string(),
        org_unit: who.org_unit,
        label: who.label,
    };
    if let Some(old) = &existing {
        if old.device_id != cfg.device_id && by_code {
            // A code always makes a new device: the old store (bound to the
            // old device id, whose mutation ids only it may push) is kept
            // aside, and the new device starts from a fresh pull.
            let aside = set_store_aside(dir, old.device_id)?;
            println!(
                "{} {}",
                lang.t(
                    "原设备的本地数据已保留在",
                    "the previous device's local store is kept in"
                ),
                aside.display()
            );
        } else if old.device_id != cfg.device_id {
            return Err(Fail::invalid(format!(
                "{} {} ({} {}); {}",
                lang.t("此数据目录属于设备", "this data dir belongs to device"),
                old.device_id,
                lang.t("新令牌属于", "the new token is for"),
                cfg.device_id,
                lang.t(
                    "请让管理员为原设备重新签发令牌（同一 device_id），或换一个 --data 目录",
                    "ask an admin to re-enrol the same device_id, or use another --data dir"
                )
            )));
        }
    }
    // Open the store first: a store of another device is refused before
    // anything is written.
    let client = open_client(dir, &cfg)?;
    let bytes = serde_json::to_vec_pretty(&cfg).unwrap_or_default();
    let path = config_path(dir);
    let written = if existing.is_some() {
        pufa_durable::replace(&path, &bytes, pufa_durable::Access::Private)
    } else {
        pufa_durable::create_new(&path, &bytes, pufa_durable::Access::Private)
    };
    written.map_err(|e| Fail::new(1, format!("{}: {e}", path.display())))?;
    println!(
        "{} {} ({}, {})",
        lang.t("已绑定设备", "enrolled device"),
        cfg.device_id,
        cfg.role,
        cfg.org_unit.as_deref().unwrap_or("*")
    );
    // Fetch the org units now, so that `add` can offer them offline.
    match client.sync().await {
        Ok(r) => println!(
            "{} {}",
            lang.t("已同步，收到记录", "synced, records received:"),
            r.pulled
        ),
        Err(e) => println!("{} {e}", lang.t("稍后再同步：", "sync later:")),
    }
    Ok(())
}

/// Who a device token belongs to (`GET /v1/whoami`).
async fn whoami(http: &HttpTransport, server: &str, token: &str, lang: Lang) -> Out<WhoAmI> {
    let resp = pufa_client::Transport::send(
        http,
        pufa_client::transport::Request {
            method: pufa_client::transport::Method::Get,
            path: "/v1/whoami".into(),
            token: token.to_string(),
            body: None,
        },
    )
    .await
    .map_err(|e| {
        Fail::new(
            3,
            format!("{} {server}: {e}", lang.t("无法连接服务器", "cannot reach")),
        )
    })?;
    match resp.status {
        200 => {}
        401 => {
            return Err(Fail::new(
                4,
                lang.t(
                    "服务器拒绝了这个令牌（无效或已吊销）",
                    "the server refused this token (invalid or revoked)",
                ),
            ))
        }
        s => return Err(Fail::new(6, format!("{server}/v1/whoami: HTTP {s}"))),
    }
    let who: WhoAmI = serde_json::from_slice(&resp.body)
        .map_err(|e| Fail::new(6, format!("unreadable whoami: {e}")))?;
    if who.username.is_some() {
        // A person's sign-in session acts as them but cannot sync.
        return Err(Fail::invalid(lang.t(
            "这是个人登录会话的令牌，不是设备令牌；请使用登记码（--code）或管理员签发的设备令牌",
            "this is a person's sign-in session, not a device token: use an enrolment code (--code) or a device token from an admin",
        )));
    }
    Ok(who)
}

/// Exchanges an enrolment code for a new device's token (`POST /v1/enroll`).
async fn redeem_code(
    http: &HttpTransport,
    server: &str,
    code: &str,
    label: Option<&str>,
    lang: Lang,
) -> Out<(String, WhoAmI)> {
    let body = json!({"code": code, "label": label});
    let resp = pufa_client::Transport::send(
        http,
        pufa_client::transport::Request {
            method: pufa_client::transport::Method::Post,
            path: "/v1/enroll".into(),
            token: String::new(),
            body: Some(body.to_string().into_bytes()),
        },
    )
    .await
    .map_err(|e| {
        Fail::new(
            3,
            format!(
                "{} {server}: {e} ({})",
                lang.t("无法连接服务器", "cannot reach"),
                lang.t(
                    "若再次失败，登记码可能已被使用，请向协调员索取新码",
                    "if it fails again, the code may have been used: ask for a new one"
                )
            ),
        )
    })?;
    match resp.status {
        201 => {}
        401 => {
            return Err(Fail::new(
                4,
                lang.t(
                    "登记码无效、已使用或已过期，请向协调员索取新码",
                    "invalid or expired enrolment code (or already used): ask your coordinator for a new one",
                ),
            ))
        }
        429 => {
            let wait = resp.retry_after.map_or(60, |d| d.as_secs().max(1));
            return Err(Fail::new(
                6,
                format!(
                    "{} {wait} s",
                    lang.t(
                        "服务器上登记失败次数过多，请稍后再试：",
                        "too many failed enrolments on the server; try again in"
                    )
                ),
            ));
        }
        400 => {
            let why = serde_json::from_slice::<Value>(&resp.body)
                .ok()
                .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
                .unwrap_or_default();
            return Err(Fail::invalid(why));
        }
        s => return Err(Fail::new(6, format!("{server}/v1/enroll: HTTP {s}"))),
    }
    let issued: pufa_core::wire::TokenIssued = serde_json::from_slice(&resp.body)
        .map_err(|e| Fail::new(6, format!("unreadable /v1/enroll answer: {e}")))?;
    let who = WhoAmI {
        device_id: issued.device_id,
        role: issued.role,
        org_unit: issued.org_unit,
        label: issued.label,
        username: None,
    };
    Ok((issued.token, who))
}

/// Refuses to enrol an enrolled dir as a new device while its store holds
/// edits the server does not have (pending, or refused and kept for the
/// user), unless `force`: mutation ids belong to a device, so the new one
/// could never push them.
fn check_replaceable(dir: &Path, old: &DeviceConfig, force: bool, lang: Lang) -> Out {
    let status = open_client(dir, old)?.status()?;
    let unsent = status.pending + status.rejected;
    if unsent == 0 || force {
        return Ok(());
    }
    Err(Fail::invalid(format!(
        "{} {} ({} {}, {} {}). {}",
        lang.t(
            "此设备已绑定，且有服务器尚未收到的修改：",
            "this device is already enrolled and has edits the server does not have:"
        ),
        old.device_id,
        status.pending,
        lang.t("条待同步", "pending"),
        status.rejected,
        lang.t("条被拒绝", "rejected"),
        lang.t(
            "登记码会生成一台新设备，这些修改无法由新设备上传。请先同步（pufa sync），或请管理员为本设备重新签发令牌（pufa enroll --token）；若确定要放弃上传，加 --force（原数据会保留在数据目录中）。",
            "a code makes a new device, which cannot push them. Sync first (pufa sync), or ask an admin to re-enrol this device (pufa enroll --token); to enrol anyway, add --force (the old store is kept in the data dir)."
        )
    )))
}

/// Moves the store of `device` out of the way: `store` → `store.<device>`
/// (never overwriting), so nothing of it is lost.
fn set_store_aside(dir: &Path, device: Uuid) -> Out<PathBuf> {
    let from = dir.join("store");
    let mut to = dir.join(format!("store.{device}"));
    let mut n = 1;
    while to.exists() {
        n += 1;
        to = dir.join(format!("store.{device}.{n}"));
    }
    if from.exists() {
        std::fs::rename(&from, &to)
            .and_then(|()| pufa_durable::sync_dir(dir))
            .map_err(|e| Fail::new(1, format!("{} → {}: {e}", from.display(), to.display())))?;
    }
    Ok(to)
}

fn parse_kind(text: &str) -> Out<Kind> {
    match text {
        "corner" => Ok(Kind::LibraryCorner),
        "site" => Ok(Kind::DemoSite),
        other => Kind::parse(other).ok_or_else(|| {
            Fail::invalid(format!(
                "unknown kind {other:?}: lecture, library_corner (corner) or demo_site (site)"
            ))
        }),
    }
}

fn parse_date(flag: &str, text: &str) -> Out<Date> {
    Date::parse(text)
        .ok_or_else(|| Fail::invalid(format!("--{flag}: {text:?} is not a date YYYY-MM-DD")))
}

/// `--field value` / `--field=value` pairs; an empty value clears.
fn parse_changes(kind: Kind, args: &[String]) -> Out<Map<String, Value>> {
    let mut set = Map::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let Some(flag) = a.strip_prefix("--") else {
            return Err(Fail::invalid(format!("expected --field value, got {a:?}")));
        };
        let (name, value) = match flag.split_once('=') {
            Some((n, v)) => (n.to_string(), v.to_string()),
            None => (
                flag.to_string(),
                it.next()
                    .cloned()
                    .ok_or_else(|| Fail::invalid(format!("--{flag} needs a value")))?,
            ),
        };
        let name = match name.replace('-', "_").as_str() {
            "org" => "org_unit".to_string(),
            n => n.to_string(),
        };
        let v = fields::parse_value(kind, &name, &value).map_err(Fail::invalid)?;
        set.insert(name, v);
    }
    Ok(set)
}

fn add(
    client: &Client,
    kind: Kind,
    given: &[(&str, &Option<String>)],
    no_input: bool,
    json_out: bool,
    lang: Lang,
) -> Out {
    let units: Vec<OrgUnit> = client_units(client);
    let today = fields::today();
    let mut set = Map::new();
    for (name, value) in given {
        if let Some(text) = value {
            let text = if *name == "org_unit" {
                fields::resolve_org(&units, text).map_err(Fail::invalid)?
            } else {
                text.clone()
            };
            let v = fields::parse_value(kind, name, &text).map_err(Fail::invalid)?;
            if !v.is_null() {
                set.insert(name.to_string(), v);
            }
        }
    }
    let missing: Vec<&str> = kind
        .fields()
        .iter()
        .filter(|f| f.required && !set.contains_key(f.name))
        .map(|f| f.name)
        .collect();
    if !missing.is_empty() {
        let interactive = !no_input && std::io::stdin().is_terminal();
        if !interactive {
            return Err(Fail::invalid(format!(
                "{} {}",
                lang.t("缺少必填字段：", "missing required fields:"),
                missing
                    .iter()
                    .map(|m| format!(
                        "--{}",
                        if *m == "org_unit" { "org" } else { m }.replace('_', "-")
                    ))
                    .collect::<Vec<_>>()
                    .join(" ")
            )));
        }
        let stdin = std::io::stdin();
        let mut input = stdin.lock();
        let mut out = std::io::stderr();
        for name in missing {
            let ctx = fields::Ask {
                lang,
                kind,
                units: &units,
                today,
            };
            match fields::prompt(&ctx, name, true, &mut input, &mut out) {
                Some(v) => {
                    set.insert(name.to_string(), v);
                }
                None => return Err(Fail::invalid(lang.t("输入已结束", "input ended"))),
            }
        }
    }
    let id = client.create_fields(kind, set)?;
    if json_out {
        print_json(&json!({"id": id}));
    } else {
        println!("{id}");
    }
    Ok(())
}

fn client_units(client: &Client) -> Vec<OrgUnit> {
    client.org_units().unwrap_or_default()
}

fn find_id(client: &Client, text: &str) -> Out<Uuid> {
    if let Ok(id) = Uuid::parse_str(text) {
        return Ok(id);
    }
    let all = client.list(&Filter {
        include_deleted: true,
        ..Filter::default()
    })?;
    let hits: Vec<_> = all
        .iter()
        .filter(|r| r.id.to_string().starts_with(text))
        .collect();
    match hits.as_slice() {
        [r] => Ok(r.id),
        [] => Err(Fail::new(5, format!("no record {text}"))),
        _ => Err(Fail::invalid(format!(
            "{text} matches {} records: give more of the id",
            hits.len()
        ))),
    }
}

fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(plain).collect::<Vec<_>>().join(", "),
        Value::Object(o) if o.contains_key("lat") => {
            format!("{},{}", plain(&o["lat"]), plain(&o["lon"]))
        }
        other => other.to_string(),
    }
}

fn state_text(s: &SyncState, lang: Lang) -> String {
    match s {
        SyncState::Synced => lang.t("已同步", "synced").into(),
        SyncState::Pending => lang.t("待同步", "pending").into(),
        SyncState::Rejected { code, field, .. } => format!(
            "{}({code}{})",
            lang.t("被拒绝", "rejected"),
            field
                .as_deref()
                .map(|f| format!(" {f}"))
                .unwrap_or_default()
        ),
        SyncState::Conflicted { open, .. } => format!("{}({open})", lang.t("有冲突", "conflicted")),
    }
}

fn state_json(s: &SyncState) -> Value {
    match s {
        SyncState::Synced => json!({"state": "synced"}),
        SyncState::Pending => json!({"state": "pending"}),
        SyncState::Rejected {
            code,
            message,
            field,
            mutation,
        } => {
            json!({"state": "rejected", "code": code, "message": message, "field": field, "mutation": mutation})
        }
        SyncState::Conflicted { open, details } => {
            json!({"state": "conflicted", "open": open, "details": details})
        }
    }
}

fn record_json(r: &LocalRecord) -> Value {
    json!({"id": r.id, "kind": r.kind.as_str(), "fields": r.fields, "deleted": r.deleted, "seq": r.seq, "sync": state_json(&r.state)})
}

fn print_json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

fn print_table(records: &[LocalRecord], lang: Lang) {
    if records.is_empty() {
        println!("{}", lang.t("没有记录。", "No records."));
        return;
    }
    for r in records {
        let title = ["title", "name", "level"]
            .iter()
            .find_map(|f| r.fields.get(*f))
            .map(plain)
            .unwrap_or_default();
        let date = ["held_on", "opened_on", "year"]
            .iter()
            .find_map(|f| r.fields.get(*f))
            .map(plain)
            .unwrap_or_default();
        println!(
            "{}  {:<14} {:<14} {:<10} {}{}  [{}]",
            r.id,
            r.kind.as_str(),
            r.org_unit().unwrap_or(""),
            date,
            title,
            if r.deleted {
                lang.t(" （已删除）", " (deleted)")
            } else {
                ""
            },
            state_text(&r.state, lang)
        );
    }
}

fn fix_hint(code: &str, field: Option<&str>, lang: Lang) -> String {
    let f = field.unwrap_or("");
    match code {
        "out_of_scope" => lang.t("该单位不在本设备范围内：用 pufa resubmit MUT --org 单位 改到范围内的单位，或 pufa discard MUT", "the unit is outside this device's scope: pufa resubmit MUT --org UNIT, or pufa discard MUT").into(),
        "unknown_org_unit" => lang.t("服务器没有这个单位：等管理员导入后 pufa resubmit MUT，或改用其他单位", "the server has no such unit: pufa resubmit MUT once it is imported, or use another unit").into(),
        "invalid_field" | "missing_field" => format!("{} --{f} …", lang.t("修正后重新提交：pufa resubmit MUT", "fix it and send again: pufa resubmit MUT")),
        _ => lang.t("pufa resubmit MUT 重新提交，或 pufa discard MUT 放弃", "pufa resubmit MUT to send again, or pufa discard MUT").into(),
    }
}

async fn sync(client: &Client, json_out: bool, lang: Lang) -> Out {
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg:>6} [{bar:30}] {pos}/{len}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    if json_out || !std::io::stderr().is_terminal() {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let b = bar.clone();
    let result = client
        .sync_with_progress(move |p: Progress| {
            b.set_message(format!("{:?}", p.phase).to_lowercase());
            b.set_length(p.total.max(p.done));
            b.set_position(p.done);
        })
        .await;
    bar.finish_and_clear();
    let r = result?;
    if json_out {
        print_json(&json!({
            "pushed": r.pushed, "applied": r.applied, "duplicates": r.duplicates, "pulled": r.pulled, "removed": r.removed,
            "checksum_ok": r.checksum_ok, "repaired": r.repaired, "lost_on_server": r.lost_on_server,
            "conflicts": r.conflicts,
            "rejected": r.rejected.iter().map(|x| json!({"mutation": x.mutation, "record_id": x.record_id, "error": x.error})).collect::<Vec<_>>(),
        }));
        return Ok(());
    }
    println!(
        "{} {}  {} {}  {} {}  {} {}",
        lang.t("上传", "pushed"),
        r.pushed,
        lang.t("下载", "pulled"),
        r.pulled,
        lang.t("冲突", "conflicts"),
        r.conflicts.len(),
        lang.t("被拒绝", "rejected"),
        r.rejected.len()
    );
    for c in &r.conflicts {
        println!(
            "  {} {} {}: {} {} / {} {}",
            lang.t("冲突", "conflict"),
            c.record_id,
            c.field,
            lang.t("保留", "kept"),
            plain(&c.winner),
            lang.t("未采用", "not kept"),
            plain(&c.loser)
        );
    }
    for x in &r.rejected {
        println!(
            "  {} {} {}: {}",
            lang.t("被拒绝", "rejected"),
            x.record_id,
            x.error.code,
            x.error.message
        );
        println!(
            "    {}",
            fix_hint(&x.error.code, x.error.field.as_deref(), lang)
                .replace("MUT", &x.mutation.to_string())
        );
    }
    if !r.lost_on_server.is_empty() {
        println!(
            "  {} {}",
            r.lost_on_server.len(),
            lang.t(
                "条已确认记录服务器上已没有（服务器数据被恢复）",
                "confirmed records are no longer on the server (it was restored)"
            )
        );
    }
    if !r.checksum_ok {
        println!(
            "  {}",
            lang.t(
                "校验未通过：请稍后再次同步",
                "checksum did not match: sync again later"
            )
        );
    }
    Ok(())
}

fn status(client: &Client, cfg: &DeviceConfig, json_out: bool, lang: Lang) -> Out {
    let s = client.status()?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let all = client.list(&Filter {
        include_deleted: true,
        ..Filter::default()
    })?;
    let conflicted = all
        .iter()
        .filter(|r| matches!(r.state, SyncState::Conflicted { .. }))
        .count();
    if json_out {
        print_json(&json!({
            "server": cfg.server, "device_id": s.device_id, "role": cfg.role, "org_unit": cfg.org_unit, "label": cfg.label,
            "pending": s.pending, "oldest_pending_ms": s.oldest_pending_ms, "rejected": s.rejected, "conflicted": conflicted,
            "last_sync_ms": s.last_sync_ms, "clock_offset_ms": s.clock_offset_ms, "records": all.len(), "lost_on_server": s.lost_on_server,
        }));
        return Ok(());
    }
    let age = |ms: Option<u64>| {
        ms.map_or_else(
            || lang.t("从未", "never").to_string(),
            |t| format!("{} {}", ago(now.saturating_sub(t)), lang.t("前", "ago")),
        )
    };
    println!("{}: {}", lang.t("服务器", "server"), cfg.server);
    println!(
        "{}: {} ({}, {})",
        lang.t("设备", "device"),
        s.device_id,
        cfg.role,
        cfg.org_unit.as_deref().unwrap_or("*")
    );
    println!(
        "{}: {}",
        lang.t("本机记录", "records on this device"),
        all.len()
    );
    println!(
        "{}: {} ({} {})",
        lang.t("待同步修改", "pending edits"),
        s.pending,
        lang.t("最早", "oldest"),
        age(s.oldest_pending_ms)
    );
    println!(
        "{}: {}",
        lang.t("上次同步", "last sync"),
        age(s.last_sync_ms)
    );
    println!(
        "{}: {} ms",
        lang.t("时钟偏差（服务器−本机）", "clock offset (server − device)"),
        s.clock_offset_ms
    );
    println!(
        "{}: {}   {}: {}",
        lang.t("被拒绝", "rejected"),
        s.rejected,
        lang.t("有冲突", "conflicted"),
        conflicted
    );
    Ok(())
}

fn ago(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m", s / 60),
        3600..=86_399 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

fn row_error(lang: Lang, line: usize, e: &str) -> String {
    match lang {
        Lang::Zh => format!("第 {line} 行: {e}"),
        Lang::En => format!("row {line}: {e}"),
    }
}

fn import(client: &Client, file: &Path, kind: Option<&str>, lang: Lang) -> Out {
    let bytes =
        std::fs::read(file).map_err(|e| Fail::invalid(format!("{}: {e}", file.display())))?;
    let text = String::from_utf8(bytes)
        .map_err(|_| Fail::invalid(format!("{}: not UTF-8", file.display())))?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let mut reader = csv::ReaderBuilder::new()
        .flexible(false)
        .from_reader(text.as_bytes());
    let headers: Vec<String> = reader
        .headers()
        .map_err(|e| Fail::invalid(e.to_string()))?
        .iter()
        .map(|h| h.trim().to_string())
        .collect();
    let fixed = kind.map(parse_kind).transpose()?;
    if fixed.is_none() && !headers.iter().any(|h| h == "kind") {
        return Err(Fail::invalid(lang.t(
            "文件没有 kind 列：请加 --kind",
            "the file has no kind column: add --kind",
        )));
    }
    let units = client_units(client);
    let today = fields::today();
    let (mut rows, mut errors) = (Vec::new(), Vec::new());
    for (i, rec) in reader.records().enumerate() {
        let line = i + 2;
        let rec = match rec {
            Ok(r) => r,
            Err(e) => {
                errors.push(row_error(lang, line, &e.to_string()));
                continue;
            }
        };
        let row: Vec<(&str, &str)> = headers.iter().map(String::as_str).zip(rec.iter()).collect();
        let row_kind = match fixed {
            Some(k) => Ok(k),
            None => parse_kind(
                row.iter()
                    .find(|(h, _)| *h == "kind")
                    .map_or("", |(_, v)| v.trim()),
            )
            .map_err(|f| f.message),
        };
        let result = row_kind.and_then(|k| {
            let mut set = Map::new();
            for (h, v) in &row {
                if *h == "kind" || *h == "id" || v.trim().is_empty() {
                    continue;
                }
                let value = if *h == "org_unit" {
                    fields::resolve_org(&units, v.trim())?
                } else {
                    v.trim().to_string()
                };
                set.insert(h.to_string(), fields::parse_value(k, h, &value)?);
            }
            pufa_core::schema::check_set(k, &set, today).map_err(|r| r.message)?;
            if let Some(m) = pufa_core::schema::first_missing_required(k, |f| set.contains_key(f)) {
                return Err(format!("{m}: {}", lang.t("必填", "required")));
            }
            Ok((k, set))
        });
        match result {
            Ok(r) => rows.push(r),
            Err(e) => errors.push(row_error(lang, line, &e)),
        }
    }
    if !errors.is_empty() {
        for e in &errors {
            eprintln!("  ✗ {e}");
        }
        return Err(Fail::invalid(format!(
            "{} {} {}",
            errors.len(),
            lang.t(
                "行有错误，没有导入任何记录；改正后重新导入",
                "rows have errors; nothing was imported; fix them and import again"
            ),
            file.display()
        )));
    }
    let n = client.create_many(rows)?.len();
    println!("{} {n}", lang.t("已导入", "imported"));
    Ok(())
}

fn export(client: &Client, format: &str, kind: Option<&str>, out: Option<&Path>) -> Out {
    let kind = kind.map(parse_kind).transpose()?;
    let records = client.list(&Filter {
        kind,
        include_deleted: true,
        ..Filter::default()
    })?;
    let bytes = match format {
        "json" => {
            serde_json::to_vec_pretty(&Value::Array(records.iter().map(record_json).collect()))
                .unwrap_or_default()
        }
        "csv" => {
            let kinds: Vec<Kind> = kind.map_or(Kind::ALL.to_vec(), |k| vec![k]);
            let mut columns: Vec<&str> = Vec::new();
            for k in &kinds {
                for f in k.fields() {
                    if !columns.contains(&f.name) {
                        columns.push(f.name);
                    }
                }
            }
            let mut w = csv::Writer::from_writer(Vec::from("\u{feff}".as_bytes()));
            let mut header = vec!["id", "kind", "deleted", "sync"];
            header.extend(&columns);
            w.write_record(&header)
                .map_err(|e| Fail::new(1, e.to_string()))?;
            for r in &records {
                let mut row = vec![
                    r.id.to_string(),
                    r.kind.as_str().to_string(),
                    r.deleted.to_string(),
                    state_json(&r.state)["state"]
                        .as_str()
                        .unwrap_or("")
                        .to_string(),
                ];
                row.extend(
                    columns
                        .iter()
                        .map(|c| r.fields.get(*c).map(plain).unwrap_or_default()),
                );
                w.write_record(&row)
                    .map_err(|e| Fail::new(1, e.to_string()))?;
            }
            w.into_inner().map_err(|e| Fail::new(1, e.to_string()))?
        }
        other => return Err(Fail::invalid(format!("--format {other:?}: csv or json"))),
    };
    match out {
        Some(path) => pufa_durable::replace(path, &bytes, pufa_durable::Access::Shared)
            .map_err(|e| Fail::new(1, format!("{}: {e}", path.display()))),
        None => std::io::stdout()
            .write_all(&bytes)
            .map_err(|e| Fail::new(1, e.to_string())),
    }
}
