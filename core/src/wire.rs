//! The JSON of `sync-protocol-v1.md`: every type here is a compatibility
//! promise. Server and SDK both use these; nothing else in the workspace
//! derives `Serialize` for the wire.
//!
//! Shapes are strict where the contract is (an `hlc` without `c`, a
//! fractional `base_seq`, `delete: null` are `bad_json`) and tolerant of
//! unknown keys, so that later versions may add fields.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::hlc::Hlc;

/// Most mutations one push may carry (`batch_too_large` above it).
pub const PUSH_MUTATIONS_MAX: usize = 1000;
/// Default page size of a pull, in entries.
pub const PULL_LIMIT_DEFAULT: usize = 500;
/// Largest page size of a pull, in entries; larger requests are clamped.
pub const PULL_LIMIT_MAX: usize = 5000;
/// Default and largest `limit` of the conflict, device and rejection lists.
pub const LIST_LIMIT_DEFAULT: usize = 1000;
pub const LIST_LIMIT_MAX: usize = 5000;

/// `{"error":{…}}`, the body of every non-2xx response.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorObject,
}

/// An error: a request's, or a rejected mutation's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorObject {
    pub code: String,
    pub message: String,
    pub field: Option<String>,
    /// With `period_locked` (an addition): which approval locks the
    /// period, so a device can say who to ask.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locked: Option<crate::period::Approval>,
}

/// `GET /v1/health`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Health {
    pub status: String,
    pub version: String,
    /// Set-up that puts acknowledged writes at risk (an addition to the
    /// contract; absent when there is none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// A token's role (§3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Field,
    Coordinator,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Field => "field",
            Role::Coordinator => "coordinator",
            Role::Admin => "admin",
        }
    }
}

/// `POST /v1/admin/tokens` request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TokenRequest {
    pub role: Role,
    #[serde(default)]
    pub org_unit: Option<String>,
    #[serde(default)]
    pub label: Option<String>,
    /// Re-enrolment: a known device gets a new secret, the old one is revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<Uuid>,
}

/// `POST /v1/admin/tokens` answer (201). The secret is shown only here.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TokenIssued {
    pub token: String,
    pub device_id: Uuid,
    pub role: Role,
    pub org_unit: Option<String>,
    pub label: String,
}

/// `GET /v1/whoami`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WhoAmI {
    pub device_id: Uuid,
    pub role: Role,
    pub org_unit: Option<String>,
    pub label: String,
    /// Present only for a person's sign-in session (addition): then
    /// `device_id` is the account's id, and the session cannot sync.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
}

/// The type of an org unit (§4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnitType {
    District,
    Street,
    Town,
    Community,
    Village,
}

/// One org unit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrgUnit {
    pub code: String,
    pub name: String,
    #[serde(rename = "type")]
    pub unit_type: UnitType,
    #[serde(default)]
    pub parent: Option<String>,
}

/// `PUT /v1/admin/org-units` answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Upserted {
    pub upserted: usize,
}

/// A mutation as pushed (§6). The envelope is judged here; `kind` and `set`
/// are judged per mutation by [`crate::schema`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Mutation {
    pub id: Uuid,
    pub record_id: Uuid,
    pub kind: String,
    pub base_seq: u64,
    pub hlc: Hlc,
    pub set: Map<String, Value>,
    #[serde(
        default,
        deserialize_with = "strict_bool",
        skip_serializing_if = "Option::is_none"
    )]
    pub delete: Option<bool>,
}

/// `delete` may be absent or a boolean; `null` is the wrong shape.
fn strict_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    bool::deserialize(d).map(Some)
}

/// The optional health report a device sends with a push.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceReport {
    #[serde(default)]
    pub app_version: Option<String>,
    #[serde(default)]
    pub outbox_len: Option<u64>,
    #[serde(default)]
    pub oldest_pending_ms: Option<u64>,
    #[serde(default)]
    pub now_ms: Option<u64>,
}

/// `POST /v1/sync/push` as the server reads it: the envelope first, each
/// mutation kept as its raw JSON, so that a malformed one is reported as
/// `mutations[i]` and a rejected one is shown to coordinators exactly as
/// pushed (§7). Each is then read as a [`Mutation`]. (`fuzz/` feeds bytes
/// through this same path.)
#[derive(Debug, Deserialize)]
pub struct PushBody {
    pub device_id: Uuid,
    pub mutations: Vec<Box<serde_json::value::RawValue>>,
    #[serde(default)]
    pub device: Option<DeviceReport>,
}

/// `POST /v1/sync/push` request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PushRequest {
    pub device_id: Uuid,
    pub mutations: Vec<Mutation>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<DeviceReport>,
}

/// What became of one mutation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MutationStatus {
    Applied,
    Duplicate,
    Rejected,
}

/// A conflict as reported in a push result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConflictReport {
    pub field: String,
    pub winner: Value,
    pub loser: Value,
}

/// One push result, in the order of the request's mutations.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MutationResult {
    pub id: Uuid,
    pub status: MutationStatus,
    pub seq: Option<u64>,
    pub restamped: bool,
    pub error: Option<ErrorObject>,
    pub conflicts: Vec<ConflictReport>,
    /// Addition to the contract: the HLC the server stored the mutation with
    /// (differs from the pushed one when `restamped`). Absent when rejected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hlc: Option<Hlc>,
}

/// `POST /v1/sync/push` answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PushResponse {
    pub server_time_ms: u64,
    pub store_id: Uuid,
    pub results: Vec<MutationResult>,
}

/// A record as pulled.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecordView {
    pub id: Uuid,
    pub kind: String,
    pub seq: u64,
    pub deleted: bool,
    pub fields: Map<String, Value>,
    pub hlc: Hlc,
    pub conflicts: u32,
}

/// A record that left the caller's scope.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GoneView {
    pub id: Uuid,
    pub seq: u64,
    pub in_scope: bool,
}

/// One entry of a pull page.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum PullEntry {
    Record(RecordView),
    Gone(GoneView),
}

/// Either shape of a pull entry, read in one pass: serde's untagged enums
/// buffer every entry into an intermediate tree first, which was a tenth of
/// a device's first-sync CPU.
#[derive(Deserialize)]
struct AnyEntry {
    id: Uuid,
    seq: u64,
    #[serde(default)]
    in_scope: Option<bool>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    deleted: Option<bool>,
    #[serde(default)]
    fields: Option<Map<String, Value>>,
    #[serde(default)]
    hlc: Option<Hlc>,
    #[serde(default)]
    conflicts: Option<u32>,
}

impl<'de> Deserialize<'de> for PullEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<PullEntry, D::Error> {
        use serde::de::Error;
        let e = AnyEntry::deserialize(d)?;
        if e.in_scope == Some(false) {
            return Ok(PullEntry::Gone(GoneView {
                id: e.id,
                seq: e.seq,
                in_scope: false,
            }));
        }
        match (e.kind, e.deleted, e.fields, e.hlc, e.conflicts) {
            (Some(kind), Some(deleted), Some(fields), Some(hlc), Some(conflicts)) => {
                Ok(PullEntry::Record(RecordView {
                    id: e.id,
                    kind,
                    seq: e.seq,
                    deleted,
                    fields,
                    hlc,
                    conflicts,
                }))
            }
            _ => Err(D::Error::custom(
                "a pull entry needs kind, deleted, fields, hlc and conflicts, or in_scope:false",
            )),
        }
    }
}

impl PullEntry {
    pub fn id(&self) -> Uuid {
        match self {
            PullEntry::Record(r) => r.id,
            PullEntry::Gone(g) => g.id,
        }
    }

    pub fn seq(&self) -> u64 {
        match self {
            PullEntry::Record(r) => r.seq,
            PullEntry::Gone(g) => g.seq,
        }
    }
}

/// `GET /v1/sync/pull` answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PullResponse {
    pub records: Vec<PullEntry>,
    pub next: u64,
    pub has_more: bool,
    pub server_time_ms: u64,
    pub store_id: Uuid,
}

/// `GET /v1/sync/checksum` answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChecksumResponse {
    pub seq: u64,
    pub count: u64,
    pub checksum: String,
    pub store_id: Uuid,
}

/// `{"code","name"}` of a unit in totals.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OrgRef {
    pub code: String,
    pub name: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LectureTotals {
    pub count: u64,
    pub attendees: u64,
    pub units_covered: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CornerTotals {
    pub active: u64,
    pub units_covered: u64,
    pub units_total: u64,
    pub coverage: f64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteTotals {
    pub national: u64,
    pub provincial: u64,
    pub municipal: u64,
    pub district: u64,
}

/// Legal understanders (法律明白人) in totals (addition).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct UnderstanderTotals {
    /// Not-deleted appointments with `appointed_on` in the period, whatever
    /// their status now.
    pub appointed: u64,
    /// Not-deleted, status `serving`, appointed on or before the period's
    /// end (`to`; every one when there is no `to`).
    pub serving: u64,
    /// Grassroots units (communities and villages) with at least one of
    /// `serving`, of `units_total`.
    pub units_covered: u64,
    pub units_total: u64,
    /// `units_covered / units_total`, four decimals (0 without units).
    pub coverage: f64,
}

/// Figures of one child unit in a totals answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChildTotals {
    pub org: OrgRef,
    pub lectures: LectureTotals,
    pub library_corners: CornerTotals,
    pub demo_sites: SiteTotals,
    /// Addition.
    #[serde(default)]
    pub legal_understanders: UnderstanderTotals,
    /// Addition: open conflicts in this child's subtree.
    pub conflicts_open: u64,
}

/// `GET /v1/totals` answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TotalsResponse {
    pub org: OrgRef,
    pub from: Option<String>,
    pub to: Option<String>,
    pub lectures: LectureTotals,
    pub library_corners: CornerTotals,
    pub demo_sites: SiteTotals,
    /// Addition.
    #[serde(default)]
    pub legal_understanders: UnderstanderTotals,
    pub conflicts_open: u64,
    pub children: Vec<ChildTotals>,
}

/// An open conflict (`GET /v1/conflicts`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConflictView {
    pub id: Uuid,
    pub record_id: Uuid,
    pub field: String,
    pub winner: Value,
    pub loser: Value,
    pub winner_hlc: Hlc,
    pub loser_hlc: Hlc,
    pub seq: u64,
}

/// `POST /v1/conflicts/{id}/resolve` request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResolveRequest {
    pub value: Value,
}

/// `GET /v1/records` (addition): one page of the records behind a figure.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecordsResponse {
    pub records: Vec<RecordView>,
    /// Pass as `after=` for the next page; `null` at the end.
    pub next: Option<Uuid>,
}

/// A device as listed by `GET /v1/devices`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeviceView {
    pub device_id: Uuid,
    pub label: String,
    pub role: Role,
    pub org_unit: Option<String>,
    pub revoked: bool,
    pub last_push_ms: Option<u64>,
    pub last_pull_ms: Option<u64>,
    pub app_version: Option<String>,
    pub outbox_len: Option<u64>,
    pub oldest_pending_ms: Option<u64>,
    pub clock_skew_ms: Option<i64>,
}

/// A rejected mutation as listed by `GET /v1/rejections`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RejectionView {
    pub device_id: Uuid,
    pub received_ms: u64,
    pub mutation: Value,
    pub error: ErrorObject,
}

// People and enrolment codes (server additions, docs/protocol.md §17) -------

/// `POST /v1/admin/accounts`: a person who signs in with a password.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct AccountRequest {
    pub username: String,
    pub password: String,
    /// `coordinator` or `admin`.
    pub role: Role,
    #[serde(default)]
    pub org_unit: Option<String>,
    #[serde(default)]
    pub display_name: Option<String>,
}

/// `PATCH /v1/admin/accounts/{username}`: absent keys stay as they are.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AccountPatch {
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub disabled: Option<bool>,
    #[serde(default)]
    pub role: Option<Role>,
    #[serde(default)]
    pub org_unit: Option<String>,
    #[serde(default)]
    pub display_name: Option<String>,
}

// Passwords never reach a log through `{:?}`.
impl std::fmt::Debug for AccountRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccountRequest")
            .field("username", &self.username)
            .field("role", &self.role)
            .field("org_unit", &self.org_unit)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for AccountPatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccountPatch")
            .field("password", &self.password.as_ref().map(|_| "…"))
            .field("disabled", &self.disabled)
            .field("role", &self.role)
            .field("org_unit", &self.org_unit)
            .finish_non_exhaustive()
    }
}

/// An account as listed: never its password hash.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AccountView {
    pub username: String,
    pub display_name: Option<String>,
    pub role: Role,
    pub org_unit: Option<String>,
    pub disabled: bool,
    pub created_ms: u64,
}

/// `POST /v1/sessions`: sign in.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct SignInRequest {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for SignInRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignInRequest")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// `POST /v1/sessions` answer (201): a bearer token for this person.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SessionIssued {
    pub token: String,
    pub expires_ms: u64,
    pub role: Role,
    pub org_unit: Option<String>,
    pub username: String,
}

/// `POST /v1/enrollment-codes`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CodeRequest {
    /// `field`, or (admins only) `coordinator`.
    pub role: Role,
    pub org_unit: String,
    #[serde(default)]
    pub label: Option<String>,
    /// How long the code stays usable; default one day, at most seven.
    #[serde(default)]
    pub ttl_secs: Option<u64>,
}

/// `POST /v1/enrollment-codes` answer (201): the code is shown only here.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CodeIssued {
    pub id: Uuid,
    /// `XXXX-XXXX`.
    pub code: String,
    pub expires_ms: u64,
    pub role: Role,
    pub org_unit: String,
    pub label: String,
}

/// An unused enrolment code as listed (without the code itself).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CodeView {
    pub id: Uuid,
    pub role: Role,
    pub org_unit: String,
    pub label: String,
    pub created_ms: u64,
    pub expires_ms: u64,
    /// Who made it: a username, or a device's label.
    pub created_by: String,
}

/// `POST /v1/enroll` (no token): a code becomes a device token, answered
/// as [`TokenIssued`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EnrollRequest {
    pub code: String,
    #[serde(default)]
    pub label: Option<String>,
}

/// Default and largest `limit` of `GET /v1/records/{id}/history`, in entries.
pub const HISTORY_LIMIT_DEFAULT: usize = 1000;
pub const HISTORY_LIMIT_MAX: usize = 1000;

/// What caused an audit entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditCause {
    /// An applied mutation of a push.
    Push,
    /// A coordinator's resolution of a conflict.
    Resolve,
    /// Re-parenting of the record's unit or an ancestor (§4).
    Move,
    /// The record as it stood when a store written before the audit trail
    /// existed was upgraded.
    Baseline,
    /// A step on a reporting period (submit, return, approve, reopen):
    /// about no record.
    Period,
    /// A coordinator marked the record and another "not a duplicate"
    /// (the change's `_not_duplicate_of` names the other; the record
    /// itself is unchanged).
    Dismiss,
    /// A coordinator deleted the record (one of a likely duplicate pair).
    Delete,
}

/// A conflict that a logged write opened.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditConflict {
    pub id: Uuid,
    pub field: String,
    pub winner: Value,
    pub loser: Value,
}

/// One entry of `GET /v1/records/{id}/history` (addition to the contract).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// Position in the store-wide audit log (1, 2, …; no gaps).
    pub n: u64,
    pub server_ms: u64,
    /// The record's seq after this write.
    pub seq: u64,
    pub record_id: Uuid,
    pub kind: String,
    pub cause: AuditCause,
    pub mutation_id: Option<Uuid>,
    /// The conflict a resolution closed.
    pub conflict_id: Option<Uuid>,
    /// The pushing or resolving device; for a move, the admin's.
    pub device_id: Option<Uuid>,
    /// Who acted: the device id, or the username of a person whose sign-in
    /// session resolved a conflict.
    pub actor: Option<String>,
    /// The HLC stored with the write.
    pub hlc: Hlc,
    pub restamped: bool,
    /// The HLC as pushed, when re-stamped.
    pub pushed_hlc: Option<Hlc>,
    pub changes: Vec<crate::audit::Change>,
    pub conflicts: Vec<AuditConflict>,
    /// Hex SHA-256 of the previous entry (64 zeros for the first) and of this one.
    pub prev: String,
    pub hash: String,
}

/// The version of [`SchemaResponse`]'s shape; it changes only when a
/// client written for the old shape would misread the new one.
pub const SCHEMA_VERSION: u32 = 1;

/// `GET /v1/schema` (addition): the kinds, their fields and rules, what
/// they and the rejection codes are called, and the limits a client keeps
/// to, so that forms are generated from the server's own rules.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SchemaResponse {
    pub schema_version: u32,
    /// IANA name of the zone the server's people read times in, e.g.
    /// `Asia/Shanghai` (`--time-zone`). Dates on the wire stay as they are.
    pub time_zone: String,
    pub limits: SchemaLimits,
    pub kinds: Vec<KindSchema>,
    /// Per rejection code (§6 rule 2); `{field}` stands for the field's label.
    pub rejections: std::collections::BTreeMap<String, Localized>,
    /// Other texts a client may show, by key (request-level error codes).
    pub messages: std::collections::BTreeMap<String, Localized>,
    /// The topic vocabulary figures count by (absent from older servers).
    #[serde(default)]
    pub topics: Vec<TopicSchema>,
}

/// One canonical topic of [`SchemaResponse::topics`]: figures count a
/// lecture tagged with any of `synonyms` under `name` (records keep what
/// was written).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicSchema {
    pub name: String,
    pub label: Localized,
    pub synonyms: Vec<String>,
}

/// A text in Chinese and English: `{"zh-CN": "…", "en": "…"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Localized {
    #[serde(rename = "zh-CN")]
    pub zh: String,
    pub en: String,
}

impl Localized {
    /// The same text in both languages (a name that has no translation).
    pub fn same(text: &str) -> Localized {
        Localized {
            zh: text.to_string(),
            en: text.to_string(),
        }
    }
}

/// The limits of [`SchemaResponse`], each named with its unit.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SchemaLimits {
    /// Mutations per push ([`PUSH_MUTATIONS_MAX`]).
    pub push_mutations_max: usize,
    /// Bytes of a request body, counted after a `Content-Encoding: gzip`
    /// body is decompressed (`--max-body-bytes`).
    pub push_body_bytes_max: usize,
    pub pull_limit_default: usize,
    pub pull_limit_max: usize,
    pub held_on_future_days_max: i32,
    pub notes_chars_max: usize,
    pub topics_items_max: usize,
    pub topic_chars_max: usize,
    /// `device.app_version` of a push, in characters.
    pub app_version_chars_max: usize,
    /// A device's label (enrolment, tokens), in characters.
    pub device_label_chars_max: usize,
    /// How far a device's clock may run ahead before its edits are
    /// re-stamped (§5), in seconds.
    pub clock_skew_secs_max: u64,
    /// Longest the server works on one request, in seconds.
    pub request_timeout_secs: u64,
}

/// One kind in [`SchemaResponse`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KindSchema {
    pub kind: String,
    pub label: Localized,
    /// Required fields first, in the contract's order.
    pub fields: Vec<FieldSchema>,
}

/// One field of a [`KindSchema`]: its name, whether a new record needs
/// it, its label, and its rule (`"type"` and the rule's limits).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FieldSchema {
    pub name: String,
    pub required: bool,
    pub label: Localized,
    #[serde(flatten)]
    pub rule: FieldRule,
}

/// A field's type and its limits, flattened into [`FieldSchema`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FieldRule {
    /// An org code in the device's scope (`GET /v1/org-units`).
    OrgUnit,
    /// `YYYY-MM-DD`; `min` and `max_days_after_today` when bounded.
    Date {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        min: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_days_after_today: Option<i32>,
    },
    Text {
        min_chars: usize,
        max_chars: usize,
    },
    /// A JSON integer (no fraction or exponent).
    Int {
        min: i64,
        max: i64,
    },
    /// An array of strings.
    Topics {
        max_items: usize,
        item_min_chars: usize,
        item_max_chars: usize,
    },
    Enum {
        values: Vec<Choice>,
    },
    /// `{"lat","lon"}` in degrees.
    Location {
        lat_min: f64,
        lat_max: f64,
        lon_min: f64,
        lon_max: f64,
    },
    /// A phone number: up to `max_chars` of digits, `+`, `-` and spaces,
    /// at least one digit. A client that does not know this type may ask
    /// for it as text; the server judges it.
    Phone {
        max_chars: usize,
    },
}

/// One value of an enum field, and what it is called.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Choice {
    pub value: String,
    pub label: Localized,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<PushRequest, serde_json::Error> {
        serde_json::from_str(text)
    }

    const DEV: &str = "0192f7a0-0000-7000-8000-000000000001";

    fn push_with(mutation: &str) -> String {
        format!(r#"{{"device_id":"{DEV}","mutations":[{mutation}]}}"#)
    }

    fn mutation(extra: &str) -> String {
        format!(
            r#"{{"id":"{DEV}","record_id":"{DEV}","kind":"lecture","base_seq":0,"hlc":{{"ms":1,"c":0,"node":"{DEV}"}},"set":{{}}{extra}}}"#
        )
    }

    #[test]
    fn envelope_shape_is_strict() {
        assert!(parse(&push_with(&mutation(""))).is_ok());
        assert_eq!(
            parse(&push_with(&mutation(r#","delete":true"#)))
                .unwrap()
                .mutations[0]
                .delete,
            Some(true)
        );
        for bad in [r#","delete":null"#, r#","delete":"yes""#] {
            assert!(parse(&push_with(&mutation(bad))).is_err(), "{bad}");
        }
        let m = mutation("");
        for (from, to) in [
            (r#""base_seq":0"#, r#""base_seq":1.0"#),
            (r#""base_seq":0"#, r#""base_seq":-1"#),
            (r#","c":0"#, ""),
            (r#""c":0"#, r#""c":4294967296"#),
            (r#""set":{}"#, r#""set":[]"#),
            (r#""kind":"lecture""#, r#""kind":7"#),
            (r#""record_id":"0192"#, r#""record_id":"x0192"#),
        ] {
            let broken = m.replacen(from, to, 1);
            assert_ne!(broken, m, "{from}");
            assert!(parse(&push_with(&broken)).is_err(), "{to}");
        }
        assert!(parse(r#"{"device_id":"x","mutations":[]}"#).is_err());
        assert!(parse(&format!(r#"{{"device_id":"{DEV}","mutations":{{}}}}"#)).is_err());
    }

    #[test]
    fn pull_entries_round_trip() {
        let gone = PullEntry::Gone(GoneView {
            id: Uuid::nil(),
            seq: 3,
            in_scope: false,
        });
        let text = serde_json::to_string(&gone).unwrap();
        assert_eq!(
            text,
            r#"{"id":"00000000-0000-0000-0000-000000000000","seq":3,"in_scope":false}"#
        );
        assert_eq!(serde_json::from_str::<PullEntry>(&text).unwrap(), gone);
        let rec = PullEntry::Record(RecordView {
            id: Uuid::nil(),
            kind: "lecture".into(),
            seq: 4,
            deleted: true,
            fields: Map::new(),
            hlc: Hlc::new(1, 2, Uuid::nil()),
            conflicts: 1,
        });
        let text = serde_json::to_string(&rec).unwrap();
        assert_eq!(serde_json::from_str::<PullEntry>(&text).unwrap(), rec);
        assert!(serde_json::from_str::<PullEntry>(
            r#"{"id":"00000000-0000-0000-0000-000000000000","seq":1}"#
        )
        .is_err());
    }
}

/// `POST /v1/periods/{submit|return|approve|reopen}` (an addition).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeriodStepRequest {
    pub org_unit: String,
    /// `2020`, `2020-Q1` or `2020-03`.
    pub period: String,
    /// Required to return or reopen; at most
    /// [`crate::period::COMMENT_MAX_CHARS`] characters.
    #[serde(default)]
    pub comment: Option<String>,
}

/// One unit's period as `GET /v1/periods` lists it and a step answers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PeriodView {
    pub org_unit: String,
    pub name: String,
    pub period: crate::period::Period,
    /// The unit's own state (`open` when no one acted on it).
    pub state: crate::period::PeriodState,
    /// Whether writes dated in it are refused: approved for this unit, or
    /// for an ancestor or a period covering it (then `locked_by` says which).
    pub locked: bool,
    pub locked_by: Option<crate::period::Approval>,
    /// The last step: who, when, its comment (absent for `open`).
    pub by: Option<String>,
    pub at_ms: Option<u64>,
    pub comment: Option<String>,
}

/// `GET /v1/periods?org=&year=` (an addition): the subtree's periods of a
/// year, units in tree order, each with its year and every quarter or
/// month someone acted on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PeriodsResponse {
    pub org: OrgRef,
    pub year: i32,
    pub periods: Vec<PeriodView>,
}

/// One likely double entry of `GET /v1/duplicates` (an addition): two
/// live lectures of one unit and day with similar titles, `a` the one
/// with the smaller id.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DuplicatePair {
    pub org_unit: String,
    /// The unit's name.
    pub name: String,
    pub held_on: String,
    pub a: RecordView,
    pub b: RecordView,
}

/// `GET /v1/duplicates?org=&year=` (an addition).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DuplicatesResponse {
    pub org: OrgRef,
    pub year: i32,
    /// How many pairs are flagged (not marked "not a duplicate").
    pub count: usize,
    pub pairs: Vec<DuplicatePair>,
    /// Whether the year had more lectures than one listing compares, or
    /// more pairs than it lists: then `count` is a lower bound.
    pub truncated: bool,
}

/// `POST /v1/duplicates/dismiss` (an addition): the pair `{a, b}` (either
/// order) is not a duplicate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DismissRequest {
    pub a: Uuid,
    pub b: Uuid,
}

/// A "not a duplicate" mark, as `POST /v1/duplicates/dismiss` answers it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DismissalView {
    /// The pair, smaller id first.
    pub a: Uuid,
    pub b: Uuid,
    pub by: String,
    pub at_ms: u64,
}
