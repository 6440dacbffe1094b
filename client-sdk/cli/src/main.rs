//! `pufa`: a command-line field device. Records lectures, library corners,
//! demonstration sites and legal understanders' appointments offline and
//! syncs them with a Pufa Sync server.
//!
//! Exit codes (stable, for scripts): 0 ok · 1 other failure · 2 invalid
//! input or usage · 3 server unreachable (nothing lost; try later) ·
//! 4 token refused (revoked: enrol again) · 5 not found · 6 server error.
//!
//! `main.rs` reads the command line and runs the command; each command's
//! work is in the module named for it. Modules take this one's imports
//! (`use super::*`): they are parts of one program, not a library.

mod args;
mod edit;
mod enrol;
mod fields;
mod files;
mod i18n;
mod show;
mod sync;

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

use args::*;
use edit::*;
use enrol::*;
use files::*;
use show::*;
use sync::*;

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
        Cmd::Understander(AddUnderstander::Add(f)) => {
            let given = [
                ("org_unit", &f.org),
                ("name", &f.name),
                ("appointed_on", &f.appointed_on),
                ("status", &f.status),
                ("training_hours", &f.training_hours),
                ("phone", &f.phone),
                ("notes", &f.notes),
            ];
            add(
                &client,
                Kind::LegalUnderstander,
                &given,
                f.no_input,
                f.json,
                lang,
            )
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
                    println!("    {}", fix_hint(&r.error, lang));
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
        Cmd::Export {
            format,
            kind,
            include,
            out,
        } => export(
            &client,
            format,
            kind.as_deref(),
            include.as_deref(),
            out.as_deref(),
        ),
    }
}
