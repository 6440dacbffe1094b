//! The disk format's own types: what the stores persist, field by field.
//!
//! Every value a store writes is one of the structs here, encoded as
//! positional MessagePack ([`super::codec`]). The stores work with domain
//! types (`Device`, `AuditBody`, core's `Conflict`, the wire's `OrgUnit`,
//! …) and convert at the boundary through [`Persist`], so a change to a
//! wire or core type (an optional field the contract allows, a renamed
//! variant) cannot change the bytes on disk, break decoding of stored
//! entries or the audit chain's hashes: it stops at a conversion here,
//! which then fails to compile or is changed on purpose.
//!
//! A disk type named `<Name>V` is the stored value of the domain type
//! `<Name>` (`DeviceV` of `Device`); the smaller ones inside them (`Hlc`,
//! `Kind`, `Conflict`…) share their domain twin's name.
//!
//! The rules a change here must keep (`disk/golden.rs` pins the bytes of
//! each type and fails on any other change):
//! - Positional encoding: fields are never skipped, reordered or removed.
//! - A field may be added at the end with `#[serde(default)]`, so that older
//!   bytes still decode; anything else is a new store format with an
//!   upgrade ([`super::codec::STORE_FORMAT`]).
//! - Enums are encoded by name: a variant may be added, never renamed.
//! - JSON values (`serde_json::Value`) are field values as devices sent
//!   them; MessagePack encodes them by their own data model.

use std::collections::BTreeMap;

use pufa_core::totals::{LectureSum, LevelIx};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::codec::{Applied, AuditBody, Hash, StoredConflict, StoredRejection};
use super::{Account, Device, EnrolmentCode, Session, StoreError, TokenHash};

/// A domain value with a disk type of its own: [`super::codec::encode`]
/// and [`super::codec::decode`] take only these.
pub trait Persist: Sized {
    /// The value as stored.
    type Disk: Serialize + DeserializeOwned;

    fn to_disk(&self) -> Self::Disk;

    /// # Errors
    /// [`StoreError::Corrupt`] when the stored value breaks a domain rule.
    fn from_disk(disk: Self::Disk) -> Result<Self, StoreError>;
}

/// Plain data that is its own disk type (counters, hashes, sums).
macro_rules! persisted_as_is {
    ($($t:ty),* $(,)?) => {$(
        impl Persist for $t {
            type Disk = $t;

            fn to_disk(&self) -> $t {
                self.clone()
            }

            fn from_disk(disk: $t) -> Result<$t, StoreError> {
                Ok(disk)
            }
        }
    )*};
}

persisted_as_is!(
    // `m/hlc`: the server HLC's `(ms, counter)`.
    (u64, u32),
    // `m/audit`: the last audit entry's `(n, hash)`.
    (u64, Hash),
    // `g/m…`: a month's lectures, `(day, (lectures, attendees))`; and
    // `g/l…`, a unit's legal understanders, `(day, (appointed, serving))`
    // (`UnderstanderSum` is the same pair of counts).
    Vec<(i32, LectureSum)>,
    // `g/k…`: a year's lectures by topic.
    Vec<(String, LectureSum)>,
);

/// Two-way conversion of an enum to its disk twin, variant by variant.
macro_rules! disk_enum {
    ($(#[$m:meta])* $name:ident <=> $domain:path { $($v:ident),* $(,)? }) => {
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
        $(#[$m])*
        pub enum $name { $($v),* }

        impl From<$domain> for $name {
            fn from(v: $domain) -> $name {
                use $domain as D;
                match v { $(D::$v => $name::$v),* }
            }
        }

        impl From<$name> for $domain {
            fn from(v: $name) -> $domain {
                use $domain as D;
                match v { $($name::$v => D::$v),* }
            }
        }
    };
}

disk_enum!(
    /// A record kind, by variant name (`"Lecture"`).
    Kind <=> pufa_core::schema::Kind { Lecture, LibraryCorner, DemoSite, LegalUnderstander }
);
disk_enum!(
    #[serde(rename_all = "snake_case")]
    Role <=> pufa_core::wire::Role { Field, Coordinator, Admin }
);
disk_enum!(
    #[serde(rename_all = "snake_case")]
    UnitType <=> pufa_core::wire::UnitType { District, Street, Town, Community, Village }
);
disk_enum!(
    #[serde(rename_all = "snake_case")]
    AuditCause <=> pufa_core::wire::AuditCause { Push, Resolve, Move, Baseline, Period, Dismiss, Delete }
);
disk_enum!(
    #[serde(rename_all = "snake_case")]
    PeriodState <=> pufa_core::period::PeriodState { Open, Submitted, Returned, Approved }
);
disk_enum!(
    #[serde(rename_all = "snake_case")]
    PeriodAction <=> pufa_core::period::PeriodAction { Submit, Return, Approve, Reopen }
);

fn period_of(text: &str) -> Result<pufa_core::period::Period, StoreError> {
    pufa_core::period::Period::parse(text)
        .ok_or_else(|| StoreError::Corrupt(format!("stored period {text:?} does not read")))
}

/// `q/<unit>\0<period>`: a unit's reporting period, its state and last step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PeriodV {
    pub org_unit: String,
    /// `2020`, `2020-Q1` or `2020-03`.
    pub period: String,
    pub state: PeriodState,
    pub by: String,
    pub at_ms: u64,
    pub comment: String,
}

impl Persist for super::StoredPeriod {
    type Disk = PeriodV;

    fn to_disk(&self) -> PeriodV {
        PeriodV {
            org_unit: self.org_unit.clone(),
            period: self.period.to_string(),
            state: self.state.into(),
            by: self.by.clone(),
            at_ms: self.at_ms,
            comment: self.comment.clone(),
        }
    }

    fn from_disk(p: PeriodV) -> Result<super::StoredPeriod, StoreError> {
        Ok(super::StoredPeriod {
            period: period_of(&p.period)?,
            org_unit: p.org_unit,
            state: p.state.into(),
            by: p.by,
            at_ms: p.at_ms,
            comment: p.comment,
        })
    }
}

/// `x/<a:16><b:16>`: a pair of records a coordinator marked "not a
/// duplicate" (`a` the smaller id).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DismissalV {
    pub a: Uuid,
    pub b: Uuid,
    pub by: String,
    pub at_ms: u64,
}

impl Persist for super::StoredDismissal {
    type Disk = DismissalV;

    fn to_disk(&self) -> DismissalV {
        DismissalV {
            a: self.a,
            b: self.b,
            by: self.by.clone(),
            at_ms: self.at_ms,
        }
    }

    fn from_disk(d: DismissalV) -> Result<super::StoredDismissal, StoreError> {
        if d.a >= d.b {
            return Err(StoreError::Corrupt(format!(
                "dismissed pair {} / {} is not in id order",
                d.a, d.b
            )));
        }
        Ok(super::StoredDismissal {
            a: d.a,
            b: d.b,
            by: d.by,
            at_ms: d.at_ms,
        })
    }
}

/// A period step inside an audit entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PeriodStepV {
    pub org_unit: String,
    pub period: String,
    pub action: PeriodAction,
    pub state: PeriodState,
    pub comment: String,
}

/// The approval that refused a `period_locked` rejection.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ApprovalV {
    pub org_unit: String,
    pub period: String,
    pub approved_by: String,
    pub approved_ms: u64,
}

/// An HLC timestamp.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hlc {
    pub ms: u64,
    pub c: u32,
    pub node: Uuid,
}

impl From<pufa_core::hlc::Hlc> for Hlc {
    fn from(h: pufa_core::hlc::Hlc) -> Hlc {
        Hlc {
            ms: h.ms,
            c: h.c,
            node: h.node,
        }
    }
}

impl From<Hlc> for pufa_core::hlc::Hlc {
    fn from(h: Hlc) -> pufa_core::hlc::Hlc {
        pufa_core::hlc::Hlc::new(h.ms, h.c, h.node)
    }
}

/// What a device last reported of itself in a push.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeviceReport {
    pub app_version: Option<String>,
    pub outbox_len: Option<u64>,
    pub oldest_pending_ms: Option<u64>,
    pub now_ms: Option<u64>,
}

/// `d/<device>`: a device and its token.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeviceV {
    pub id: Uuid,
    pub role: Role,
    pub org_unit: Option<String>,
    pub label: String,
    pub revoked: bool,
    pub token_hash: TokenHash,
    pub created_ms: u64,
    pub last_push_ms: Option<u64>,
    pub report: Option<DeviceReport>,
    pub clock_skew_ms: Option<i64>,
}

impl Persist for Device {
    type Disk = DeviceV;

    fn to_disk(&self) -> DeviceV {
        DeviceV {
            id: self.id,
            role: self.role.into(),
            org_unit: self.org_unit.clone(),
            label: self.label.clone(),
            revoked: self.revoked,
            token_hash: self.token_hash,
            created_ms: self.created_ms,
            last_push_ms: self.last_push_ms,
            report: self.report.as_ref().map(|r| DeviceReport {
                app_version: r.app_version.clone(),
                outbox_len: r.outbox_len,
                oldest_pending_ms: r.oldest_pending_ms,
                now_ms: r.now_ms,
            }),
            clock_skew_ms: self.clock_skew_ms,
        }
    }

    fn from_disk(d: DeviceV) -> Result<Device, StoreError> {
        Ok(Device {
            id: d.id,
            role: d.role.into(),
            org_unit: d.org_unit,
            label: d.label,
            revoked: d.revoked,
            token_hash: d.token_hash,
            created_ms: d.created_ms,
            last_push_ms: d.last_push_ms,
            report: d.report.map(|r| pufa_core::wire::DeviceReport {
                app_version: r.app_version,
                outbox_len: r.outbox_len,
                oldest_pending_ms: r.oldest_pending_ms,
                now_ms: r.now_ms,
            }),
            clock_skew_ms: d.clock_skew_ms,
        })
    }
}

/// `pa/<username>`: a person who signs in.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AccountV {
    pub id: Uuid,
    pub username: String,
    pub display_name: Option<String>,
    pub role: Role,
    pub org_unit: Option<String>,
    pub password_hash: String,
    pub disabled: bool,
    pub created_ms: u64,
    pub epoch: u64,
}

impl Persist for Account {
    type Disk = AccountV;

    fn to_disk(&self) -> AccountV {
        AccountV {
            id: self.id,
            username: self.username.clone(),
            display_name: self.display_name.clone(),
            role: self.role.into(),
            org_unit: self.org_unit.clone(),
            password_hash: self.password_hash.clone(),
            disabled: self.disabled,
            created_ms: self.created_ms,
            epoch: self.epoch,
        }
    }

    fn from_disk(a: AccountV) -> Result<Account, StoreError> {
        Ok(Account {
            id: a.id,
            username: a.username,
            display_name: a.display_name,
            role: a.role.into(),
            org_unit: a.org_unit,
            password_hash: a.password_hash,
            disabled: a.disabled,
            created_ms: a.created_ms,
            epoch: a.epoch,
        })
    }
}

/// `ps/<hash>`: a sign-in session.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SessionV {
    pub username: String,
    pub epoch: u64,
    pub created_ms: u64,
    pub expires_ms: u64,
}

impl Persist for Session {
    type Disk = SessionV;

    fn to_disk(&self) -> SessionV {
        SessionV {
            username: self.username.clone(),
            epoch: self.epoch,
            created_ms: self.created_ms,
            expires_ms: self.expires_ms,
        }
    }

    fn from_disk(s: SessionV) -> Result<Session, StoreError> {
        Ok(Session {
            username: s.username,
            epoch: s.epoch,
            created_ms: s.created_ms,
            expires_ms: s.expires_ms,
        })
    }
}

/// `pc/<id>`: an enrolment code (its hash, never the code).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CodeV {
    pub id: Uuid,
    pub code_hash: TokenHash,
    pub role: Role,
    pub org_unit: String,
    pub label: String,
    pub created_ms: u64,
    pub expires_ms: u64,
    pub created_by: String,
}

impl Persist for EnrolmentCode {
    type Disk = CodeV;

    fn to_disk(&self) -> CodeV {
        CodeV {
            id: self.id,
            code_hash: self.code_hash,
            role: self.role.into(),
            org_unit: self.org_unit.clone(),
            label: self.label.clone(),
            created_ms: self.created_ms,
            expires_ms: self.expires_ms,
            created_by: self.created_by.clone(),
        }
    }

    fn from_disk(c: CodeV) -> Result<EnrolmentCode, StoreError> {
        Ok(EnrolmentCode {
            id: c.id,
            code_hash: c.code_hash,
            role: c.role.into(),
            org_unit: c.org_unit,
            label: c.label,
            created_ms: c.created_ms,
            expires_ms: c.expires_ms,
            created_by: c.created_by,
        })
    }
}

/// `n/<code>`: one org unit.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OrgUnitV {
    pub code: String,
    pub name: String,
    pub unit_type: UnitType,
    pub parent: Option<String>,
}

impl Persist for pufa_core::wire::OrgUnit {
    type Disk = OrgUnitV;

    fn to_disk(&self) -> OrgUnitV {
        OrgUnitV {
            code: self.code.clone(),
            name: self.name.clone(),
            unit_type: self.unit_type.into(),
            parent: self.parent.clone(),
        }
    }

    fn from_disk(u: OrgUnitV) -> Result<pufa_core::wire::OrgUnit, StoreError> {
        Ok(pufa_core::wire::OrgUnit {
            code: u.code,
            name: u.name,
            unit_type: u.unit_type.into(),
            parent: u.parent,
        })
    }
}

/// A field's competing values, as a push answer reported them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConflictReport {
    pub field: String,
    pub winner: Value,
    pub loser: Value,
}

/// `a/<device><mutation>`: what repeating an applied mutation answers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AppliedV {
    pub content: [u8; 16],
    pub seq: u64,
    pub restamped: bool,
    pub hlc: Hlc,
    pub conflicts: Vec<ConflictReport>,
}

impl Persist for Applied {
    type Disk = AppliedV;

    fn to_disk(&self) -> AppliedV {
        AppliedV {
            content: self.content,
            seq: self.seq,
            restamped: self.restamped,
            hlc: self.hlc.into(),
            conflicts: self
                .conflicts
                .iter()
                .map(|c| ConflictReport {
                    field: c.field.clone(),
                    winner: c.winner.clone(),
                    loser: c.loser.clone(),
                })
                .collect(),
        }
    }

    fn from_disk(a: AppliedV) -> Result<Applied, StoreError> {
        Ok(Applied {
            content: a.content,
            seq: a.seq,
            restamped: a.restamped,
            hlc: a.hlc.into(),
            conflicts: a
                .conflicts
                .into_iter()
                .map(|c| pufa_core::wire::ConflictReport {
                    field: c.field,
                    winner: c.winner,
                    loser: c.loser,
                })
                .collect(),
        })
    }
}

/// A conflict the merge detected: both values and their stamps.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Conflict {
    pub field: String,
    pub winner: Value,
    pub loser: Value,
    pub winner_hlc: Hlc,
    pub loser_hlc: Hlc,
}

impl From<&pufa_core::merge::Conflict> for Conflict {
    fn from(c: &pufa_core::merge::Conflict) -> Conflict {
        Conflict {
            field: c.field.clone(),
            winner: c.winner.clone(),
            loser: c.loser.clone(),
            winner_hlc: c.winner_hlc.into(),
            loser_hlc: c.loser_hlc.into(),
        }
    }
}

impl From<Conflict> for pufa_core::merge::Conflict {
    fn from(c: Conflict) -> pufa_core::merge::Conflict {
        pufa_core::merge::Conflict {
            field: c.field,
            winner: c.winner,
            loser: c.loser,
            winner_hlc: c.winner_hlc.into(),
            loser_hlc: c.loser_hlc.into(),
        }
    }
}

/// `c/<id>`: a conflict, open or resolved.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConflictV {
    pub record_id: Uuid,
    pub conflict: Conflict,
    pub seq: u64,
    pub open: bool,
}

impl Persist for StoredConflict {
    type Disk = ConflictV;

    fn to_disk(&self) -> ConflictV {
        ConflictV {
            record_id: self.record_id,
            conflict: (&self.conflict).into(),
            seq: self.seq,
            open: self.open,
        }
    }

    fn from_disk(c: ConflictV) -> Result<StoredConflict, StoreError> {
        Ok(StoredConflict {
            record_id: c.record_id,
            conflict: c.conflict.into(),
            seq: c.seq,
            open: c.open,
        })
    }
}

/// Why a mutation was rejected: the contract's error code and message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Error {
    pub code: String,
    pub message: String,
    pub field: Option<String>,
}

/// `j/<n>`: a rejected mutation, as pushed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RejectionV {
    pub device_id: Uuid,
    pub received_ms: u64,
    /// JSON text: the mutation as pushed, bounded.
    pub mutation: String,
    pub error: Error,
    /// Absent unless the rejection is `period_locked` (older bytes end
    /// before it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locked: Option<ApprovalV>,
}

impl Persist for StoredRejection {
    type Disk = RejectionV;

    fn to_disk(&self) -> RejectionV {
        RejectionV {
            device_id: self.device_id,
            received_ms: self.received_ms,
            mutation: self.mutation.clone(),
            error: Error {
                code: self.error.code.clone(),
                message: self.error.message.clone(),
                field: self.error.field.clone(),
            },
            locked: self.error.locked.as_ref().map(|a| ApprovalV {
                org_unit: a.org_unit.clone(),
                period: a.period.to_string(),
                approved_by: a.approved_by.clone(),
                approved_ms: a.approved_ms,
            }),
        }
    }

    fn from_disk(r: RejectionV) -> Result<StoredRejection, StoreError> {
        let locked = match r.locked {
            Some(a) => Some(pufa_core::period::Approval {
                period: period_of(&a.period)?,
                org_unit: a.org_unit,
                approved_by: a.approved_by,
                approved_ms: a.approved_ms,
            }),
            None => None,
        };
        Ok(StoredRejection {
            device_id: r.device_id,
            received_ms: r.received_ms,
            mutation: r.mutation,
            error: pufa_core::wire::ErrorObject {
                code: r.error.code,
                message: r.error.message,
                field: r.error.field,
                locked,
            },
        })
    }
}

/// `g/u<unit>`: a unit's scalar figures.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UnitAggV {
    pub records: u64,
    pub xor: u64,
    pub corners_active: u64,
    pub conflicts_open: u64,
    pub sites: BTreeMap<(i32, LevelIx), u64>,
}

impl Persist for pufa_core::totals::UnitAgg {
    type Disk = UnitAggV;

    fn to_disk(&self) -> UnitAggV {
        UnitAggV {
            records: self.records,
            xor: self.xor,
            corners_active: self.corners_active,
            conflicts_open: self.conflicts_open,
            sites: self.sites.clone(),
        }
    }

    fn from_disk(u: UnitAggV) -> Result<pufa_core::totals::UnitAgg, StoreError> {
        Ok(pufa_core::totals::UnitAgg {
            records: u.records,
            xor: u.xor,
            corners_active: u.corners_active,
            conflicts_open: u.conflicts_open,
            sites: u.sites,
        })
    }
}

/// One value a logged write changed (`null`: absent).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub field: String,
    pub from: Value,
    pub to: Value,
}

/// `l/<n>` after its header: one audit entry's content. Its stored bytes
/// are hashed into the chain, so this layout is never re-encoded.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditV {
    pub n: u64,
    pub server_ms: u64,
    pub seq: u64,
    pub record_id: Uuid,
    pub kind: Kind,
    pub cause: AuditCause,
    pub mutation_id: Option<Uuid>,
    pub conflict_id: Option<Uuid>,
    pub device_id: Option<Uuid>,
    pub actor: Option<String>,
    pub record_prev: Option<u64>,
    pub hlc: Hlc,
    pub pushed_hlc: Option<Hlc>,
    pub changes: Vec<Change>,
    pub conflicts: Vec<(Uuid, Conflict)>,
    /// Only on a period step's entry (record entries end before it, so
    /// their bytes and hashes are as they were).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period: Option<PeriodStepV>,
}

impl Persist for AuditBody {
    type Disk = AuditV;

    fn to_disk(&self) -> AuditV {
        AuditV {
            n: self.n,
            server_ms: self.server_ms,
            seq: self.seq,
            record_id: self.record_id,
            kind: self.kind.into(),
            cause: self.cause.into(),
            mutation_id: self.mutation_id,
            conflict_id: self.conflict_id,
            device_id: self.device_id,
            actor: self.actor.clone(),
            record_prev: self.record_prev,
            hlc: self.hlc.into(),
            pushed_hlc: self.pushed_hlc.map(Hlc::from),
            changes: self
                .changes
                .iter()
                .map(|c| Change {
                    field: c.field.clone(),
                    from: c.from.clone(),
                    to: c.to.clone(),
                })
                .collect(),
            conflicts: self
                .conflicts
                .iter()
                .map(|(id, c)| (*id, c.into()))
                .collect(),
            period: self.period.as_ref().map(|p| PeriodStepV {
                org_unit: p.org_unit.clone(),
                period: p.period.to_string(),
                action: p.action.into(),
                state: p.state.into(),
                comment: p.comment.clone(),
            }),
        }
    }

    fn from_disk(a: AuditV) -> Result<AuditBody, StoreError> {
        let period = match a.period {
            Some(p) => Some(super::codec::PeriodStep {
                period: period_of(&p.period)?,
                org_unit: p.org_unit,
                action: p.action.into(),
                state: p.state.into(),
                comment: p.comment,
            }),
            None => None,
        };
        Ok(AuditBody {
            period,
            n: a.n,
            server_ms: a.server_ms,
            seq: a.seq,
            record_id: a.record_id,
            kind: a.kind.into(),
            cause: a.cause.into(),
            mutation_id: a.mutation_id,
            conflict_id: a.conflict_id,
            device_id: a.device_id,
            actor: a.actor,
            record_prev: a.record_prev,
            hlc: a.hlc.into(),
            pushed_hlc: a.pushed_hlc.map(Into::into),
            changes: a
                .changes
                .into_iter()
                .map(|c| pufa_core::audit::Change {
                    field: c.field,
                    from: c.from,
                    to: c.to,
                })
                .collect(),
            conflicts: a
                .conflicts
                .into_iter()
                .map(|(id, c)| (id, c.into()))
                .collect(),
        })
    }
}

/// One last-writer-wins register of a record in the positional layout.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Register {
    pub value: Value,
    pub hlc: Hlc,
    pub seq: u64,
}

impl From<&pufa_core::merge::Register> for Register {
    fn from(r: &pufa_core::merge::Register) -> Register {
        Register {
            value: r.value.clone(),
            hlc: r.hlc.into(),
            seq: r.seq,
        }
    }
}

impl From<Register> for pufa_core::merge::Register {
    fn from(r: Register) -> pufa_core::merge::Register {
        pufa_core::merge::Register {
            value: r.value,
            hlc: r.hlc.into(),
            seq: r.seq,
        }
    }
}

/// A record in the positional layout, every register with its own stamp:
/// what store formats before 5 wrote, and what [`super::codec::decode_record`]
/// still reads (a format-6 upgrade rewrites such records compact). New
/// records are written by [`super::codec::encode_record`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PositionalRecord {
    pub id: Uuid,
    pub kind: Kind,
    pub seq: u64,
    pub fields: BTreeMap<String, Register>,
    pub deleted: Option<Register>,
    pub open_conflicts: u32,
    pub ever: Vec<String>,
}

impl Persist for pufa_core::merge::RecordState {
    type Disk = PositionalRecord;

    fn to_disk(&self) -> PositionalRecord {
        PositionalRecord {
            id: self.id,
            kind: self.kind.into(),
            seq: self.seq,
            fields: self
                .fields
                .iter()
                .map(|(k, r)| (k.clone(), r.into()))
                .collect(),
            deleted: self.deleted.as_ref().map(Register::from),
            open_conflicts: self.open_conflicts,
            ever: self.ever.clone(),
        }
    }

    fn from_disk(r: PositionalRecord) -> Result<pufa_core::merge::RecordState, StoreError> {
        Ok(pufa_core::merge::RecordState {
            id: r.id,
            kind: r.kind.into(),
            seq: r.seq,
            fields: r.fields.into_iter().map(|(k, r)| (k, r.into())).collect(),
            deleted: r.deleted.map(Into::into),
            open_conflicts: r.open_conflicts,
            ever: r.ever,
        })
    }
}

#[cfg(test)]
mod golden;
