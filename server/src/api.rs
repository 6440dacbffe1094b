//! HTTP handlers: extract, call one domain function, `?`. Status codes are
//! chosen by [`ApiError`] (errors) and the response types below (success).

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use pufa_core::date::Date;
use pufa_core::org::{OrgTree, Scope};
use pufa_core::report::{self, Behind, YearFigures};
use pufa_core::schema::{personal_fields, Kind};
use pufa_core::wire::{
    AccountPatch, AccountRequest, AccountView, CodeIssued, CodeRequest, CodeView, EnrollRequest,
    SessionIssued, SignInRequest,
};
use pufa_core::wire::{
    ChecksumResponse, ConflictView, DeviceView, Health, Mutation, OrgUnit, PullResponse, PushBody,
    PushResponse, RecordView, RecordsResponse, RejectionView, ResolveRequest, TokenIssued,
    TokenRequest, TotalsResponse, Upserted, WhoAmI, LIST_LIMIT_DEFAULT, LIST_LIMIT_MAX,
    PULL_LIMIT_DEFAULT, PULL_LIMIT_MAX, PUSH_MUTATIONS_MAX,
};
use pufa_core::wire::{HistoryEntry, HISTORY_LIMIT_DEFAULT, HISTORY_LIMIT_MAX};
use uuid::Uuid;

use crate::auth;
use crate::auth::Principal;
use crate::error::ApiError;
use crate::export;
use crate::extract::{parse_at, ApiJson, Caller, ClientIp, DeviceCaller, Params, Signed};
use crate::service_error::ServiceError;
use crate::store::{Device, PushInput, RecordQuery, ResolveOutcome};
use crate::AppState;
use crate::{enrol, people};

/// Longest `device.app_version` in a push, in characters.
pub const APP_VERSION_CHARS_MAX: usize = 100;

type ApiResult<T> = Result<T, ApiError>;
/// What the helpers the dashboard shares answer with.
type ServiceResult<T> = Result<T, ServiceError>;

/// `201 Created` with a JSON body.
pub struct Created<T>(pub T);

impl<T: serde::Serialize> IntoResponse for Created<T> {
    fn into_response(self) -> Response {
        (StatusCode::CREATED, Json(self.0)).into_response()
    }
}

/// `204 No Content`.
pub struct NoContent;

impl IntoResponse for NoContent {
    fn into_response(self) -> Response {
        StatusCode::NO_CONTENT.into_response()
    }
}

/// `200 ok`, or `503 unavailable` while the store cannot write (a full
/// disk) until the server has reopened it (`crate::serve`), or while its
/// database does not answer (PostgreSQL).
pub async fn health(State(s): State<AppState>) -> ApiResult<Json<Health>> {
    let failure = s.store.failure().borrow().clone();
    if let Some(reason) = failure {
        return Err(ApiError::Unavailable(format!(
            "storage failed ({reason}); writes are refused until the server reopens its store, which it does once the data dir has room again"
        )));
    }
    s.store.ready().await?;
    Ok(Json(Health {
        status: "ok".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        warnings: s.store.durability_warnings(),
    }))
}

pub async fn whoami(Signed(who): Signed) -> Json<WhoAmI> {
    let username = match &who {
        Principal::Session { username, .. } => Some(username.clone()),
        Principal::Device(_) => None,
    };
    let d = who.into_acting();
    Json(WhoAmI {
        device_id: d.id,
        role: d.role,
        org_unit: d.org_unit,
        label: d.label,
        username,
    })
}

pub async fn issue_token(
    State(s): State<AppState>,
    Caller(d): Caller,
    ApiJson(req): ApiJson<TokenRequest>,
) -> ApiResult<Created<TokenIssued>> {
    Ok(Created(auth::issue_token(&s, &d, req).await?))
}

fn path_uuid(text: &str) -> ApiResult<Uuid> {
    // An id in a path that is not a UUID names nothing (§0).
    Uuid::parse_str(text).map_err(|_| ApiError::NotFound(format!("{text:?} is not an id")))
}

pub async fn revoke_token(
    State(s): State<AppState>,
    Caller(d): Caller,
    Path(id): Path<String>,
) -> ApiResult<NoContent> {
    d.require_admin()?;
    let id = path_uuid(&id)?;
    if s.store.revoke_device(id).await? {
        Ok(NoContent)
    } else {
        Err(ApiError::NotFound(format!("no device {id}")))
    }
}

pub async fn put_org_units(
    State(s): State<AppState>,
    Caller(d): Caller,
    ApiJson(units): ApiJson<Vec<OrgUnit>>,
) -> ApiResult<Json<Upserted>> {
    d.require_admin()?;
    match s
        .store
        .upsert_org_units(units, &d, s.config.clock.now_ms())
        .await?
    {
        Ok(upserted) => Ok(Json(Upserted { upserted })),
        Err(e) => Err(ApiError::InvalidOrgTree {
            message: e.to_string(),
            field: None,
        }),
    }
}

pub async fn org_units(State(s): State<AppState>, Caller(d): Caller) -> Json<Vec<OrgUnit>> {
    let tree = s.store.org_tree();
    Json(
        tree.in_scope_units(&d.scope())
            .into_iter()
            .cloned()
            .collect(),
    )
}

pub async fn push(
    State(s): State<AppState>,
    DeviceCaller(d): DeviceCaller,
    ApiJson(body): ApiJson<PushBody>,
) -> ApiResult<Json<PushResponse>> {
    let mut mutations = Vec::with_capacity(body.mutations.len());
    for (i, raw) in body.mutations.iter().enumerate() {
        mutations.push(parse_at::<Mutation>(&format!("mutations[{i}]"), raw.get())?);
    }
    if body.device_id != d.id {
        return Err(ApiError::DeviceMismatch);
    }
    if mutations.len() > PUSH_MUTATIONS_MAX {
        return Err(ApiError::BatchTooLarge(mutations.len()));
    }
    if body
        .device
        .as_ref()
        .and_then(|r| r.app_version.as_ref())
        .is_some_and(|v| v.chars().count() > APP_VERSION_CHARS_MAX)
    {
        return Err(ApiError::BadJson {
            message: format!(
                "device.app_version is longer than {APP_VERSION_CHARS_MAX} characters"
            ),
            field: Some("device.app_version".into()),
        });
    }
    let input = PushInput {
        device: d,
        mutations,
        raw: body
            .mutations
            .into_iter()
            .map(|r| r.get().to_string())
            .collect(),
        report: body.device,
        now_ms: s.config.clock.now_ms(),
        max_skew_ms: s.config.max_skew.as_millis() as u64,
    };
    let results = s.store.push(input).await?;
    Ok(Json(PushResponse {
        server_time_ms: s.config.clock.now_ms(),
        store_id: s.store.store_id(),
        results,
    }))
}

pub async fn pull(
    State(s): State<AppState>,
    DeviceCaller(d): DeviceCaller,
    q: Params,
) -> ApiResult<Json<PullResponse>> {
    let since = q.u64("since")?.unwrap_or(0);
    let limit = q.limit(PULL_LIMIT_DEFAULT, PULL_LIMIT_MAX)?;
    let page = s.store.pull(d.scope(), since, limit).await?;
    let now = s.config.clock.now_ms();
    // The last-pull time is bookkeeping: a pull is a read, and must not
    // fail because the store cannot write (a full disk).
    if let Err(e) = s.store.note_pull(d.id, now).await {
        tracing::warn!(error = %e, device = %d.id, "could not note the pull time");
    }
    Ok(Json(PullResponse {
        records: page.entries,
        next: page.next,
        has_more: page.has_more,
        server_time_ms: now,
        store_id: s.store.store_id(),
    }))
}

pub async fn checksum(
    State(s): State<AppState>,
    DeviceCaller(d): DeviceCaller,
) -> ApiResult<Json<ChecksumResponse>> {
    let c = s.store.checksum(&d.scope()).await?;
    Ok(Json(ChecksumResponse {
        seq: c.seq,
        count: c.count,
        checksum: pufa_core::merge::checksum_text(c.xor),
        store_id: s.store.store_id(),
    }))
}

fn date_param(q: &Params, key: &'static str) -> ServiceResult<Option<Date>> {
    q.get(key)
        .map(|v| {
            Date::parse(v).ok_or_else(|| {
                ServiceError::bad_query(
                    key,
                    Some(v),
                    format!("{key} must be a real date YYYY-MM-DD, got {v:?}"),
                )
            })
        })
        .transpose()
}

/// The unit a figure is asked for: `org=` if in the caller's scope, else
/// the caller's own unit; an admin without `org=` gets the tree's one root.
pub(crate) fn figure_org(d: &Device, tree: &OrgTree, org: Option<&str>) -> ServiceResult<String> {
    match auth::narrow(d, tree, org)? {
        Scope::Unit(code) => Ok(code),
        Scope::All => match tree.roots().as_slice() {
            [root] => Ok(root.code.clone()),
            [] => Err(ServiceError::bad_query(
                "org",
                org,
                "no org units have been imported yet",
            )),
            _ => Err(ServiceError::bad_query(
                "org",
                org,
                "there are several root units: name one with org=",
            )),
        },
    }
}

fn date_range(q: &Params) -> ServiceResult<(Option<Date>, Option<Date>)> {
    let (from, to) = (date_param(q, "from")?, date_param(q, "to")?);
    if let (Some(f), Some(t)) = (from, to) {
        if f > t {
            return Err(ServiceError::bad_query(
                "from",
                q.get("from"),
                format!("from {f} is after to {t}"),
            ));
        }
    }
    Ok((from, to))
}

pub async fn totals(
    State(s): State<AppState>,
    Caller(d): Caller,
    q: Params,
) -> ApiResult<Json<TotalsResponse>> {
    d.require_coordinator()?;
    let org = figure_org(&d, &s.store.org_tree(), q.get("org"))?;
    let (from, to) = date_range(&q)?;
    let totals = s.store.totals(&org, from, to).await?;
    totals
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no org unit {org:?}")))
}

/// Years a report or figures request may name.
pub const REPORT_YEARS: std::ops::RangeInclusive<i32> = 2000..=2100;

pub(crate) fn year_param(q: &Params) -> ServiceResult<i32> {
    let Some(text) = q.get("year") else {
        return Err(ServiceError::bad_query(
            "year",
            None,
            "year is required, e.g. year=2020",
        ));
    };
    text.parse::<i32>()
        .ok()
        .filter(|y| REPORT_YEARS.contains(y))
        .ok_or_else(|| {
            ServiceError::bad_query(
                "year",
                Some(text),
                format!(
                    "year must be a year from {} to {}, got {text:?}",
                    REPORT_YEARS.start(),
                    REPORT_YEARS.end()
                ),
            )
        })
}

/// `GET /v1/figures?org=&year=` (addition): a year month by month, by
/// topic, and per grassroots unit.
pub async fn year_figures(
    State(s): State<AppState>,
    Caller(d): Caller,
    q: Params,
) -> ApiResult<Json<YearFigures>> {
    d.require_coordinator()?;
    let org = figure_org(&d, &s.store.org_tree(), q.get("org"))?;
    let year = year_param(&q)?;
    crate::asof::year_figures(&*s.store, &s.config.time_zone, &org, year)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no org unit {org:?}")))
}

/// `GET /v1/reports/annual?year=&org=[&format=text|docx&lang=en]`
/// (addition).
pub async fn annual_report(
    State(s): State<AppState>,
    Caller(d): Caller,
    q: Params,
) -> ApiResult<Response> {
    Ok(annual_report_file(&s, &d, &q).await?)
}

/// What a report request's `format=` asks for.
enum ReportFormat {
    Json,
    Text,
    Docx,
}

/// The annual report of `q`'s `org` and `year` for `d`, in `q`'s `format`
/// (JSON, the paragraph as text, or a Word document) and `lang`. The API
/// and the dashboard's download share it, with its role and scope checks.
///
/// # Errors
/// `NeedsCoordinator`, `OutOfScope`, `BadQuery` (year, lang, format),
/// `NoSuchUnit`, the store's.
pub(crate) async fn annual_report_file(
    s: &AppState,
    d: &Device,
    q: &Params,
) -> ServiceResult<Response> {
    d.require_coordinator()?;
    let org = figure_org(d, &s.store.org_tree(), q.get("org"))?;
    let year = year_param(q)?;
    let lang = export::Lang::parse(q.get("lang"))
        .ok_or_else(|| ServiceError::bad_query("lang", q.get("lang"), "lang must be zh or en"))?;
    let format = match q.get("format") {
        None | Some("json") => ReportFormat::Json,
        Some("text") => ReportFormat::Text,
        Some("docx") => ReportFormat::Docx,
        Some(other) => {
            return Err(ServiceError::bad_query(
                "format",
                Some(other),
                format!("format must be json, text or docx, got {other:?}"),
            ))
        }
    };
    let figures = crate::asof::year_figures(&*s.store, &s.config.time_zone, &org, year)
        .await?
        .ok_or_else(|| ServiceError::NoSuchUnit { unit: org.clone() })?;
    let report = report::annual_report(&figures);
    Ok(match format {
        ReportFormat::Json => Json(report).into_response(),
        ReportFormat::Text => {
            let text = match lang {
                export::Lang::Zh => report.text_zh,
                export::Lang::En => report.text_en,
            };
            ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response()
        }
        ReportFormat::Docx => {
            let today = s.config.time_zone.date_of(s.config.clock.now_ms());
            let file = crate::docx::annual_report_docx(&report, &figures, lang, today)?;
            export::download_as(file.bytes, &file.filename, crate::docx::DOCX_MIME)
        }
    })
}

pub(crate) fn kind_param(q: &Params) -> ServiceResult<Option<Kind>> {
    q.get("kind")
        .map(|k| {
            Kind::parse(k).ok_or_else(|| {
                let kinds: Vec<&str> = Kind::ALL.iter().map(|k| k.as_str()).collect();
                ServiceError::bad_query(
                    "kind",
                    Some(k),
                    format!("kind must be one of {}, got {k:?}", kinds.join(", ")),
                )
            })
        })
        .transpose()
}

/// Which figure's records a drill-down or export asks for (`figure=`).
pub(crate) fn behind_param(q: &Params, kind: Option<Kind>) -> ServiceResult<Behind> {
    let (from, to) = date_range(q)?;
    let behind = match q.get("figure").unwrap_or("records") {
        "lectures" => Behind::Lectures {
            from,
            to,
            topic: q.get("topic").map(str::to_string),
        },
        "corners_active" => Behind::ActiveCorners,
        "understanders_appointed" => Behind::AppointedUnderstanders { from, to },
        "understanders_serving" => Behind::ServingUnderstanders { to },
        "sites_awarded" => Behind::AwardedSites {
            from_year: from.map(Date::year),
            to_year: to.map(Date::year),
            level: q
                .get("level")
                .map(|l| {
                    Behind::level(l).ok_or_else(|| {
                        ServiceError::bad_query(
                            "level",
                            Some(l),
                            "level must be national, provincial, municipal or district",
                        )
                    })
                })
                .transpose()?,
        },
        "records" => Behind::All {
            kind: kind.ok_or_else(|| {
                ServiceError::bad_query(
                    "kind",
                    q.get("kind"),
                    "kind is required with figure=records",
                )
            })?,
            include_deleted: match q.get("include_deleted") {
                None | Some("false") => false,
                Some("true") => true,
                other => {
                    return Err(ServiceError::bad_query(
                        "include_deleted",
                        other,
                        "include_deleted must be true or false",
                    ))
                }
            },
        },
        other => {
            return Err(ServiceError::bad_query(
                "figure",
                Some(other),
                format!(
                "figure must be lectures, corners_active, sites_awarded, understanders_appointed, understanders_serving or records, got {other:?}"
            ),
            ))
        }
    };
    if let Some(k) = kind.filter(|k| *k != behind.kind()) {
        return Err(ServiceError::bad_query(
            "kind",
            q.get("kind"),
            format!(
                "figure {} counts {} records, not {}",
                q.get("figure").unwrap_or("records"),
                behind.kind().as_str(),
                k.as_str()
            ),
        ));
    }
    Ok(behind)
}

/// `GET /v1/records` (addition): one page of the records behind a figure.
pub async fn records(
    State(s): State<AppState>,
    Caller(d): Caller,
    q: Params,
) -> ApiResult<Json<RecordsResponse>> {
    d.require_coordinator()?;
    let tree = s.store.org_tree();
    let org = figure_org(&d, &tree, q.get("org"))?;
    let behind = behind_param(&q, kind_param(&q)?)?;
    let after = q
        .get("after")
        .map(|a| {
            Uuid::parse_str(a)
                .map_err(|_| ApiError::invalid_query("after", "after must be a record id"))
        })
        .transpose()?;
    let page = s
        .store
        .records(RecordQuery {
            scope: Scope::Unit(org),
            behind,
            after,
            limit: q.limit(LIST_LIMIT_DEFAULT, LIST_LIMIT_MAX)?,
        })
        .await?;
    Ok(Json(RecordsResponse {
        records: page.records,
        next: page.next,
    }))
}

/// `GET /v1/exports/{file}` (addition): `lecture.csv`, `library_corner.xlsx`,
/// `demo_site.csv`, `legal_understander.csv`, `totals.xlsx`, ... with the
/// query of `/v1/records` or `/v1/totals`, `lang=zh|en` for the column
/// labels, and `include=phone` for the personal fields a record export
/// leaves out otherwise.
pub async fn export(
    State(s): State<AppState>,
    Caller(d): Caller,
    Path(file): Path<String>,
    q: Params,
) -> ApiResult<Response> {
    d.require_coordinator()?;
    Ok(export_file(&s, &d, &file, &q).await?)
}

/// An export for a coordinator or admin `d` (the API and the dashboard's
/// download links share it).
pub(crate) async fn export_file(
    s: &AppState,
    d: &Device,
    file: &str,
    q: &Params,
) -> ServiceResult<Response> {
    let bad_file = || ServiceError::NoSuchExport {
        file: file.to_string(),
    };
    let (stem, ext) = file.rsplit_once('.').ok_or_else(bad_file)?;
    let format = match ext {
        "csv" => export::Format::Csv,
        "xlsx" => export::Format::Xlsx,
        _ => return Err(bad_file()),
    };
    let lang = export::Lang::parse(q.get("lang"))
        .ok_or_else(|| ServiceError::bad_query("lang", q.get("lang"), "lang must be zh or en"))?;
    let tree = s.store.org_tree();
    let org = figure_org(d, &tree, q.get("org"))?;
    let filename = format!("{org}-{stem}.{ext}");
    let kind = Kind::parse(stem);
    if stem != "totals" && kind.is_none() {
        return Err(bad_file());
    }
    let include = included_fields(q, kind)?;
    if stem == "totals" {
        let (from, to) = date_range(q)?;
        let totals = s
            .store
            .totals(&org, from, to)
            .await?
            .ok_or_else(|| ServiceError::NoSuchUnit { unit: org.clone() })?;
        let table = export::totals_table(&totals, lang);
        let bytes = match format {
            export::Format::Csv => export::table_csv(&table),
            export::Format::Xlsx => export::table_xlsx(&table, "totals")?,
        };
        return Ok(export::download(bytes, &filename, format));
    }
    let kind = kind.ok_or_else(bad_file)?;
    let behind = behind_param(q, Some(kind))?;
    let query = RecordQuery {
        scope: Scope::Unit(org),
        behind,
        after: None,
        limit: 0,
    };
    let fields = export::export_fields(kind, &include);
    export::records(s.store.clone(), query, fields, lang, format, &filename).await
}

/// The personal fields an export is asked to include (`include=phone`,
/// comma-separated): each must be a personal field of `kind` (none for the
/// totals table), so a misspelt name is an error rather than a file that
/// silently lacks the column.
fn included_fields(q: &Params, kind: Option<Kind>) -> ServiceResult<Vec<&'static str>> {
    let list = q.get("include").unwrap_or_default();
    personal_fields(kind.as_slice(), list)
        .map_err(|e| ServiceError::bad_query("include", Some(list), e.to_string()))
}

pub async fn conflicts(
    State(s): State<AppState>,
    Caller(d): Caller,
    q: Params,
) -> ApiResult<Json<Vec<ConflictView>>> {
    d.require_coordinator()?;
    let scope = auth::narrow(&d, &s.store.org_tree(), q.get("org"))?;
    let limit = q.limit(LIST_LIMIT_DEFAULT, LIST_LIMIT_MAX)?;
    Ok(Json(s.store.conflicts(scope, limit).await?))
}

pub async fn resolve(
    State(s): State<AppState>,
    Signed(who): Signed,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<ResolveRequest>,
) -> ApiResult<Json<RecordView>> {
    let person = who.person().map(str::to_string);
    let d = who.into_acting();
    d.require_coordinator()?;
    let id = path_uuid(&id)?;
    match s
        .store
        .resolve(id, req.value, &d, person, s.config.clock.now_ms())
        .await?
    {
        ResolveOutcome::Resolved(view) => Ok(Json(view)),
        ResolveOutcome::NotFound => Err(ApiError::NotFound(format!(
            "no open conflict {id} in your scope"
        ))),
        ResolveOutcome::Invalid(r) => Err(ApiError::Rejected(r)),
    }
}

pub async fn devices(
    State(s): State<AppState>,
    Caller(d): Caller,
    q: Params,
) -> ApiResult<Json<Vec<DeviceView>>> {
    d.require_coordinator()?;
    let scope = auth::narrow(&d, &s.store.org_tree(), q.get("org"))?;
    let limit = q.limit(LIST_LIMIT_DEFAULT, LIST_LIMIT_MAX)?;
    Ok(Json(s.store.devices(scope, limit).await?))
}

pub async fn rejections(
    State(s): State<AppState>,
    Caller(d): Caller,
    q: Params,
) -> ApiResult<Json<Vec<RejectionView>>> {
    d.require_coordinator()?;
    let scope = auth::narrow(&d, &s.store.org_tree(), q.get("org"))?;
    let limit = q.limit(LIST_LIMIT_DEFAULT, LIST_LIMIT_MAX)?;
    Ok(Json(s.store.rejections(scope, limit).await?))
}

// People and enrolment codes (additions) ---------------------------------

pub async fn create_account(
    State(s): State<AppState>,
    Caller(d): Caller,
    ApiJson(req): ApiJson<AccountRequest>,
) -> ApiResult<Created<AccountView>> {
    Ok(Created(people::create_account(&s, &d, req).await?))
}

pub async fn accounts(
    State(s): State<AppState>,
    Caller(d): Caller,
    q: Params,
) -> ApiResult<Json<Vec<AccountView>>> {
    let limit = q.limit(LIST_LIMIT_DEFAULT, LIST_LIMIT_MAX)?;
    Ok(Json(people::accounts(&s, &d, limit).await?))
}

pub async fn change_account(
    State(s): State<AppState>,
    Caller(d): Caller,
    Path(username): Path<String>,
    ApiJson(patch): ApiJson<AccountPatch>,
) -> ApiResult<Json<AccountView>> {
    Ok(Json(
        people::change_account(&s, &d, &username, patch).await?,
    ))
}

pub async fn sign_in(
    State(s): State<AppState>,
    ApiJson(req): ApiJson<SignInRequest>,
) -> ApiResult<Created<SessionIssued>> {
    Ok(Created(
        people::sign_in(&s, &req.username, req.password).await?,
    ))
}

pub async fn sign_out(State(s): State<AppState>, Signed(who): Signed) -> ApiResult<NoContent> {
    people::sign_out(&s, &who).await?;
    Ok(NoContent)
}

pub async fn create_code(
    State(s): State<AppState>,
    Caller(d): Caller,
    ApiJson(req): ApiJson<CodeRequest>,
) -> ApiResult<Created<CodeIssued>> {
    Ok(Created(enrol::create(&s, &d, req).await?))
}

pub async fn codes(
    State(s): State<AppState>,
    Caller(d): Caller,
    q: Params,
) -> ApiResult<Json<Vec<CodeView>>> {
    let limit = q.limit(LIST_LIMIT_DEFAULT, LIST_LIMIT_MAX)?;
    Ok(Json(enrol::list(&s, &d, q.get("org"), limit).await?))
}

pub async fn withdraw_code(
    State(s): State<AppState>,
    Caller(d): Caller,
    Path(id): Path<String>,
) -> ApiResult<NoContent> {
    enrol::withdraw(&s, &d, path_uuid(&id)?).await?;
    Ok(NoContent)
}

pub async fn enroll(
    State(s): State<AppState>,
    ClientIp(ip): ClientIp,
    ApiJson(req): ApiJson<EnrollRequest>,
) -> ApiResult<Created<TokenIssued>> {
    Ok(Created(enrol::redeem(&s, ip, req).await?))
}

/// `GET /v1/records/{id}/history?after=<n>&limit=<n>` (addition): the
/// record's audit entries after `after`, oldest first.
pub async fn record_history(
    State(s): State<AppState>,
    Caller(d): Caller,
    Path(id): Path<String>,
    q: Params,
) -> ApiResult<Json<Vec<HistoryEntry>>> {
    d.require_coordinator()?;
    let id = path_uuid(&id)?;
    let after = q.u64("after")?.unwrap_or(0);
    let limit = q.limit(HISTORY_LIMIT_DEFAULT, HISTORY_LIMIT_MAX)?;
    s.store
        .history(d.scope(), id, after, limit)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no record {id} in your scope")))
}

/// `GET /v1/admin/backup` (addition): the whole store as of the request,
/// streamed while the server goes on serving (`store::backup` describes
/// the file). A copy cut short lacks its trailer, which restore refuses.
pub async fn backup(State(s): State<AppState>, Caller(d): Caller) -> ApiResult<Response> {
    d.require_admin()?;
    let chunks = s.store.backup(s.config.clock.now_ms()).await?;
    // Not `stream::unfold`, which panics if polled again after its end
    // (a layer may do that); a closed channel just keeps answering `None`.
    let mut rx = chunks;
    let stream = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
    let name = format!("pufa-{}.backup", s.store.store_id());
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
        ],
        axum::body::Body::from_stream(stream),
    )
        .into_response())
}

pub async fn not_found() -> ApiError {
    ApiError::NotFound("no such endpoint".into())
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// `POST /v1/periods/{action}` (addition): submit, return, approve or
/// reopen a unit's period.
pub async fn period_step(
    State(s): State<AppState>,
    Signed(who): Signed,
    Path(action): Path<String>,
    ApiJson(req): ApiJson<pufa_core::wire::PeriodStepRequest>,
) -> ApiResult<Json<pufa_core::wire::PeriodView>> {
    let Some(action) = pufa_core::period::PeriodAction::parse(&action) else {
        return Err(ApiError::NotFound(format!(
            "no period action {action:?}: use submit, return, approve or reopen"
        )));
    };
    let person = who.person().map(str::to_string);
    let d = who.into_acting();
    Ok(Json(
        crate::periods::step(&s, &d, person.as_deref(), action, req).await?,
    ))
}

/// `GET /v1/periods?org=&year=` (addition).
pub async fn periods(
    State(s): State<AppState>,
    Caller(d): Caller,
    q: Params,
) -> ApiResult<Json<pufa_core::wire::PeriodsResponse>> {
    d.require_coordinator()?;
    let year = year_param(&q)?;
    Ok(Json(
        crate::periods::list(&s, &d, q.get("org"), year).await?,
    ))
}

/// `GET /v1/duplicates?org=&year=` (addition): likely double entries.
pub async fn duplicates(
    State(s): State<AppState>,
    Caller(d): Caller,
    q: Params,
) -> ApiResult<Json<pufa_core::wire::DuplicatesResponse>> {
    d.require_coordinator()?;
    let year = year_param(&q)?;
    Ok(Json(
        crate::duplicates::list(&s, &d, q.get("org"), year).await?,
    ))
}

/// `POST /v1/duplicates/dismiss` (addition): a pair is not a duplicate.
pub async fn dismiss_duplicate(
    State(s): State<AppState>,
    Signed(who): Signed,
    ApiJson(req): ApiJson<pufa_core::wire::DismissRequest>,
) -> ApiResult<Json<pufa_core::wire::DismissalView>> {
    let person = who.person().map(str::to_string);
    let d = who.into_acting();
    Ok(Json(crate::duplicates::dismiss(&s, &d, person, req).await?))
}

/// `POST /v1/records/{id}/delete` (addition): a coordinator deletes a
/// record (one of a likely duplicate pair).
pub async fn delete_record(
    State(s): State<AppState>,
    Signed(who): Signed,
    Path(id): Path<String>,
) -> ApiResult<Json<RecordView>> {
    let person = who.person().map(str::to_string);
    let d = who.into_acting();
    d.require_coordinator()?;
    let id = path_uuid(&id)?;
    Ok(Json(crate::duplicates::delete(&s, &d, person, id).await?))
}
