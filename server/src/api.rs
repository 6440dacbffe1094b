//! HTTP handlers: extract, call one domain function, `?`. Status codes are
//! chosen by [`ApiError`] (errors) and the response types below (success).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use pufa_core::date::Date;
use pufa_core::org::Scope;
use pufa_core::wire::{
    ChecksumResponse, ConflictView, DeviceReport, DeviceView, Health, Mutation, OrgUnit,
    PullResponse, PushResponse, RecordView, RejectionView, ResolveRequest, TokenIssued,
    TokenRequest, TotalsResponse, Upserted, WhoAmI, LIST_LIMIT_DEFAULT, LIST_LIMIT_MAX,
    PULL_LIMIT_DEFAULT, PULL_LIMIT_MAX, PUSH_MUTATIONS_MAX,
};
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::auth;
use crate::error::ApiError;
use crate::extract::{parse_at, ApiJson, Caller, Params};
use crate::store::{PushInput, ResolveOutcome};
use crate::AppState;

/// Longest `device.app_version` in a push, in characters.
pub const APP_VERSION_CHARS_MAX: usize = 100;

type ApiResult<T> = Result<T, ApiError>;

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

pub async fn health() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
        version: env!("CARGO_PKG_VERSION").into(),
    })
}

pub async fn whoami(Caller(d): Caller) -> Json<WhoAmI> {
    Json(WhoAmI {
        device_id: d.id,
        role: d.role,
        org_unit: d.org_unit,
        label: d.label,
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
    match s.store.upsert_org_units(units).await? {
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

/// A push as received: each mutation also kept as its raw JSON, so that a
/// rejected one is shown to coordinators exactly as pushed (§7).
#[derive(serde::Deserialize)]
pub struct PushBody {
    device_id: Uuid,
    mutations: Vec<Box<RawValue>>,
    #[serde(default)]
    device: Option<DeviceReport>,
}

pub async fn push(
    State(s): State<AppState>,
    Caller(d): Caller,
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
    Caller(d): Caller,
    q: Params,
) -> ApiResult<Json<PullResponse>> {
    let since = q.u64("since")?.unwrap_or(0);
    let limit = q.limit(PULL_LIMIT_DEFAULT, PULL_LIMIT_MAX)?;
    let page = s.store.pull(d.scope(), since, limit).await?;
    let now = s.config.clock.now_ms();
    s.store.note_pull(d.id, now).await?;
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
    Caller(d): Caller,
) -> ApiResult<Json<ChecksumResponse>> {
    let c = s.store.checksum(&d.scope()).await?;
    Ok(Json(ChecksumResponse {
        seq: c.seq,
        count: c.count,
        checksum: pufa_core::merge::checksum_text(c.xor),
        store_id: s.store.store_id(),
    }))
}

fn date_param(q: &Params, key: &str) -> ApiResult<Option<Date>> {
    q.get(key)
        .map(|v| {
            Date::parse(v).ok_or_else(|| {
                ApiError::invalid_query(
                    key,
                    format!("{key} must be a real date YYYY-MM-DD, got {v:?}"),
                )
            })
        })
        .transpose()
}

pub async fn totals(
    State(s): State<AppState>,
    Caller(d): Caller,
    q: Params,
) -> ApiResult<Json<TotalsResponse>> {
    d.require_coordinator()?;
    let tree = s.store.org_tree();
    let org = match auth::narrow(&d, &tree, q.get("org"))? {
        Scope::Unit(code) => code,
        Scope::All => match tree.roots().as_slice() {
            [root] => root.code.clone(),
            [] => {
                return Err(ApiError::invalid_query(
                    "org",
                    "no org units have been imported yet",
                ))
            }
            _ => {
                return Err(ApiError::invalid_query(
                    "org",
                    "there are several root units: name one with org=",
                ))
            }
        },
    };
    let (from, to) = (date_param(&q, "from")?, date_param(&q, "to")?);
    if let (Some(f), Some(t)) = (from, to) {
        if f > t {
            return Err(ApiError::invalid_query(
                "from",
                format!("from {f} is after to {t}"),
            ));
        }
    }
    let totals = s.store.totals(&org, from, to).await?;
    totals
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no org unit {org:?}")))
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
    Caller(d): Caller,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<ResolveRequest>,
) -> ApiResult<Json<RecordView>> {
    d.require_coordinator()?;
    let id = path_uuid(&id)?;
    match s
        .store
        .resolve(id, req.value, &d, s.config.clock.now_ms())
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

pub async fn not_found() -> ApiError {
    ApiError::NotFound("no such endpoint".into())
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}
