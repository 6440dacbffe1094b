//! `pufa enroll`: with an enrolment code or an admin's token, keeping
//! pending edits (a store with some is set aside only with `--force`).

use super::*;
use pufa_client::{AdminClient, Transport};
use pufa_core::wire::EnrollRequest;

/// How `pufa enroll` gets its token.
pub(crate) enum Enrolment<'a> {
    /// A device token from an admin: checked with `/v1/whoami`.
    Token(&'a str),
    /// A one-time code from a coordinator, exchanged at `/v1/enroll`.
    Code {
        code: &'a str,
        label: Option<&'a str>,
        force: bool,
    },
}

pub(crate) async fn enroll(dir: &Path, server: &str, how: Enrolment<'_>, lang: Lang) -> Out {
    // An enrolled dir may take a new token for the same device (after a
    // revocation); a token for another device is refused.
    let existing: Option<DeviceConfig> = std::fs::read_to_string(config_path(dir))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok());
    let http: Arc<dyn Transport> =
        Arc::new(HttpTransport::new(server).map_err(|e| Fail::new(1, e.to_string()))?);
    let by_code = matches!(how, Enrolment::Code { .. });
    let (token, who) = match how {
        Enrolment::Token(t) => {
            let api = AdminClient::new(http, t);
            (t.to_string(), whoami(&api, server, lang).await?)
        }
        Enrolment::Code { code, label, force } => {
            // Checked before the code is spent: a refused re-enrolment
            // leaves the code usable.
            if let Some(old) = &existing {
                check_replaceable(dir, old, force, lang)?;
            }
            // A code is all it takes: the request carries no token.
            let api = AdminClient::new(http, "");
            redeem_code(&api, server, code, label, lang).await?
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

/// Who a device token belongs to (`GET /v1/whoami`, with `api`'s token).
pub(crate) async fn whoami(api: &AdminClient, server: &str, lang: Lang) -> Out<WhoAmI> {
    let who = match api.whoami().await {
        Ok(who) => who,
        Err(Error::Unreachable(e)) => {
            return Err(Fail::new(
                3,
                format!("{} {server}: {e}", lang.t("无法连接服务器", "cannot reach")),
            ))
        }
        Err(Error::Server { status: 401, .. }) => {
            return Err(Fail::new(
                4,
                lang.t(
                    "服务器拒绝了这个令牌（无效或已吊销）",
                    "the server refused this token (invalid or revoked)",
                ),
            ))
        }
        Err(e) => return Err(refused(server, "/v1/whoami", &e)),
    };
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
pub(crate) async fn redeem_code(
    api: &AdminClient,
    server: &str,
    code: &str,
    label: Option<&str>,
    lang: Lang,
) -> Out<(String, WhoAmI)> {
    let req = EnrollRequest {
        code: code.to_string(),
        label: label.map(str::to_string),
    };
    let issued = match api.enroll(&req).await {
        Ok(issued) => issued,
        Err(Error::Unreachable(e)) => {
            return Err(Fail::new(
                3,
                format!(
                    "{} {server}: {e} ({})",
                    lang.t("无法连接服务器", "cannot reach"),
                    lang.t(
                        "若再次失败，登记码可能已被使用，请向协调员索取新码",
                        "if it fails again, the code may have been used: ask for a new one"
                    )
                ),
            ))
        }
        Err(Error::Server { status: 401, .. }) => {
            return Err(Fail::new(
                4,
                lang.t(
                    "登记码无效、已使用或已过期，请向协调员索取新码",
                    "invalid or expired enrolment code (or already used): ask your coordinator for a new one",
                ),
            ))
        }
        Err(Error::RateLimited { retry_after }) => {
            let wait = retry_after.map_or(60, |d| d.as_secs().max(1));
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
        Err(Error::Server {
            status: 400,
            message,
            ..
        }) => return Err(Fail::invalid(message)),
        Err(e) => return Err(refused(server, "/v1/enroll", &e)),
    };
    let who = WhoAmI {
        device_id: issued.device_id,
        role: issued.role,
        org_unit: issued.org_unit,
        label: issued.label,
        username: None,
    };
    Ok((issued.token, who))
}

/// Exit code 6 for an answer the command has no better words for: its
/// HTTP status, or why it could not be read.
fn refused(server: &str, path: &str, e: &Error) -> Fail {
    match e {
        Error::Server { code, message, .. } if code == "bad_response" => {
            Fail::new(6, format!("{server}{path}: {message}"))
        }
        Error::Server { status, .. } => Fail::new(6, format!("{server}{path}: HTTP {status}")),
        Error::RateLimited { .. } => Fail::new(6, format!("{server}{path}: HTTP 429")),
        other => Fail::new(6, format!("{server}{path}: {other}")),
    }
}

/// Refuses to enrol an enrolled dir as a new device while its store holds
/// edits the server does not have (pending, or refused and kept for the
/// user), unless `force`: mutation ids belong to a device, so the new one
/// could never push them.
pub(crate) fn check_replaceable(dir: &Path, old: &DeviceConfig, force: bool, lang: Lang) -> Out {
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
pub(crate) fn set_store_aside(dir: &Path, device: Uuid) -> Out<PathBuf> {
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
