//! The sled store's disk format: key layout and value encoding.
//!
//! Everything lives in sled's default tree under one-letter prefixes, so that
//! one `sled::Batch` writes a whole push atomically (sled batches are atomic
//! within one tree, including across a crash). Integers in keys are
//! big-endian so that sled's byte order is numeric order.
//!
//! | key | value |
//! | --- | --- |
//! | `m/<name>` | meta: store id, seq counter, server HLC, rejection counter, format |
//! | `r/<record id:16>` | [`pufa_core::merge::RecordState`], compact ([`encode_record`]) |
//! | `s/<seq:8>` | record id (16) ‖ its last audit entry n (8): the change feed, one entry per record |
//! | `a/<device:16><mutation id:16>` | [`Applied`]: idempotency index |
//! | `c/<conflict id:16>` | [`StoredConflict`] |
//! | `o/<seq:8><conflict id:16>` | (empty): open conflicts, by seq |
//! | `j/<n:8>` | [`StoredRejection`] |
//! | `t/<token hash:32>` | device id |
//! | `d/<device:16>` | [`super::Device`] |
//! | `p/<device:16>` | last pull time (u64) |
//! | `n/<unit code>` | [`pufa_core::wire::OrgUnit`] |
//! | `g/u<unit code>` / `g/m<unit code>\0<month:4>` / `g/e<unit code>` / `g/k<unit code>\0<year:4>` / `g/l<unit code>` | aggregates (per unit; lectures by month, day by day; lectures by topic per year; legal understanders by day of appointment) |
//! | `pa/<username>` | [`super::Account`]: a person who signs in |
//! | `ps/<session token hash:32>` | [`super::Session`] |
//! | `pc/<code id:16>` | [`super::EnrolmentCode`] |
//! | `ph/<code hash:32>` | code id: finds a code by what is typed |
//! | `l/<n:8>` | audit entry n: format byte, `prev` (32), `hash` (32), [`AuditBody`] |
//! | `m/audit` | `(n, hash)` of the last audit entry |
//! | `x/<a:16><b:16>` | [`super::StoredDismissal`]: a pair marked "not a duplicate" |
//!
//! Values are positional MessagePack (rmp-serde) of their disk types
//! ([`super::disk`], never a wire or core type) behind one format byte;
//! [`encode`] and [`decode`] take only types with a disk twin
//! ([`Persist`]). Records have a second, compact layout behind their own
//! byte ([`encode_record`]); both are read.
//!
//! The audit log is a hash chain: entry n stores `prev`, the hash of entry
//! n−1 (zeros for n = 1), and `hash` = SHA-256(`prev` ‖ the entry's
//! MessagePack bytes as stored). The hash covers the stored bytes, not a
//! re-encoding, so checking it never depends on encoders agreeing.
//!
//! A record's entries are found from its feed entry (which names its last
//! one) and each entry's `record_prev`, newest to oldest. A per-record
//! index key (`h/<record><n>`) cost a tenth of push throughput on its own;
//! the feed entry is written with every record write anyway.

use pufa_core::audit::Change;
use pufa_core::hlc::Hlc;
use pufa_core::merge::{Conflict, RecordState, Register};
use pufa_core::schema::Kind;
use pufa_core::totals::{AggKey, AggValue, UnitAgg};
use pufa_core::wire::{AuditCause, AuditConflict, ConflictReport, ErrorObject, HistoryEntry};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::disk::{self, Persist};
use super::StoreError;
use crate::config::{
    REJECTION_MUTATION_BYTES_MAX, REJECTION_TEXT_CHARS_MAX, REJECTION_VALUE_BYTES_MAX,
};

/// The first byte of every value: bump when the encoding changes.
const VALUE_FORMAT: u8 = 1;
/// Written to `m/format`; a store with another is refused at open.
/// Format 7: topic aggregates count lectures by the topic vocabulary
/// (`pufa_core::topics`, synonyms folded).
pub const STORE_FORMAT: u64 = 7;
/// The format before the topic vocabulary: topic aggregates by topic as
/// written. Opening such a store recounts them
/// ([`super::upgrade::topics`]).
/// Format 6 itself: every value is written from its own disk type
/// ([`super::disk`]), and records only in the compact layout.
pub const STORE_FORMAT_6: u64 = 6;
/// The format before the disk types: the same bytes, written from domain
/// and wire types, and records possibly in the positional layout. Opening
/// such a store checks that every value reads as its disk type and
/// rewrites positional records compact ([`super::upgrade`]).
pub const STORE_FORMAT_5: u64 = 5;
/// The format before compact records: every record in the positional
/// layout. Opening such a store upgrades it as a format-5 one.
pub const STORE_FORMAT_4: u64 = 4;
/// The format before the audit log; opening such a store logs a baseline
/// entry for every record (see `SledStore::open`).
pub const STORE_FORMAT_3: u64 = 3;
/// The format before per-topic aggregates; opening such a store adds them
/// (see `SledStore::open`).
pub const STORE_FORMAT_2: u64 = 2;

/// `v` as stored: its disk type ([`Persist`]) behind [`VALUE_FORMAT`].
pub fn encode<T: Persist>(v: &T) -> Vec<u8> {
    let mut out = vec![VALUE_FORMAT];
    // Serializing plain data to a Vec cannot fail.
    rmp_serde::encode::write(&mut out, &v.to_disk()).expect("msgpack encoding of store values");
    out
}

/// # Errors
/// [`StoreError::Corrupt`] for bytes this version did not write.
pub fn decode<T: Persist>(bytes: &[u8]) -> Result<T, StoreError> {
    match bytes.split_first() {
        Some((&VALUE_FORMAT, rest)) => T::from_disk(
            rmp_serde::from_slice(rest)
                .map_err(|e| StoreError::Corrupt(format!("undecodable value: {e}")))?,
        ),
        _ => Err(StoreError::Corrupt("value with unknown format byte".into())),
    }
}

/// The first byte of a record in the compact layout: the registers' stamps
/// (HLC and seq) are listed once and fields name theirs by index. A record
/// written by one mutation has one stamp for all its fields, which the
/// positional layout ([`VALUE_FORMAT`]) repeated per field (≈ 35 bytes
/// each, half of a lecture's stored size).
const RECORD_COMPACT: u8 = 2;

/// A record as [`encode_record`] writes it.
#[derive(Serialize)]
struct CompactRecordOut<'a> {
    id: Uuid,
    kind: disk::Kind,
    seq: u64,
    stamps: Vec<(disk::Hlc, u64)>,
    /// Name, value, index into `stamps`; in name order.
    fields: Vec<(&'a str, &'a serde_json::Value, u32)>,
    deleted: Option<(&'a serde_json::Value, u32)>,
    open_conflicts: u32,
    ever: &'a [String],
}

#[derive(Deserialize)]
struct CompactRecordIn {
    id: Uuid,
    kind: disk::Kind,
    seq: u64,
    stamps: Vec<(disk::Hlc, u64)>,
    fields: Vec<(String, serde_json::Value, u32)>,
    deleted: Option<(serde_json::Value, u32)>,
    open_conflicts: u32,
    ever: Vec<String>,
}

/// Encodes a record (`r/` in sled, `pufa_records.body` in PostgreSQL).
pub fn encode_record(r: &RecordState) -> Vec<u8> {
    let mut stamps: Vec<(disk::Hlc, u64)> = Vec::with_capacity(2);
    let mut stamp = |reg: &Register| -> u32 {
        let hlc = disk::Hlc::from(reg.hlc);
        let at = stamps
            .iter()
            .position(|&(h, seq)| h == hlc && seq == reg.seq)
            .unwrap_or_else(|| {
                stamps.push((hlc, reg.seq));
                stamps.len() - 1
            });
        // A record has a few dozen fields at most.
        u32::try_from(at).expect("fewer than 2^32 stamps")
    };
    let fields: Vec<_> = r
        .fields
        .iter()
        .map(|(name, reg)| (name.as_str(), &reg.value, stamp(reg)))
        .collect();
    let deleted = r.deleted.as_ref().map(|reg| (&reg.value, stamp(reg)));
    let compact = CompactRecordOut {
        id: r.id,
        kind: r.kind.into(),
        seq: r.seq,
        stamps,
        fields,
        deleted,
        open_conflicts: r.open_conflicts,
        ever: &r.ever,
    };
    let mut out = Vec::with_capacity(512);
    out.push(RECORD_COMPACT);
    rmp_serde::encode::write(&mut out, &compact).expect("msgpack encoding of records");
    out
}

/// Decodes a record in either layout (stores written before the compact
/// one keep their records until they are next written).
///
/// # Errors
/// [`StoreError::Corrupt`] for bytes that are not a record.
pub fn decode_record(bytes: &[u8]) -> Result<RecordState, StoreError> {
    let Some((&RECORD_COMPACT, rest)) = bytes.split_first() else {
        return decode::<RecordState>(bytes);
    };
    let c: CompactRecordIn = rmp_serde::from_slice(rest)
        .map_err(|e| StoreError::Corrupt(format!("undecodable record: {e}")))?;
    let register = |value, at: u32| {
        let (hlc, seq) = *c
            .stamps
            .get(at as usize)
            .ok_or_else(|| StoreError::Corrupt("record register without its stamp".into()))?;
        Ok::<_, StoreError>(Register {
            value,
            hlc: hlc.into(),
            seq,
        })
    };
    let mut fields = std::collections::BTreeMap::new();
    for (name, value, at) in c.fields {
        fields.insert(name, register(value, at)?);
    }
    let deleted = match c.deleted {
        Some((value, at)) => Some(register(value, at)?),
        None => None,
    };
    Ok(RecordState {
        id: c.id,
        kind: c.kind.into(),
        seq: c.seq,
        fields,
        deleted,
        open_conflicts: c.open_conflicts,
        ever: c.ever,
    })
}

pub fn u64_of(bytes: &[u8]) -> Result<u64, StoreError> {
    bytes
        .try_into()
        .map(u64::from_be_bytes)
        .map_err(|_| StoreError::Corrupt("expected 8 bytes".into()))
}

pub fn uuid_of(bytes: &[u8]) -> Result<Uuid, StoreError> {
    Uuid::from_slice(bytes).map_err(|_| StoreError::Corrupt("expected a 16-byte id".into()))
}

fn key(prefix: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut k = Vec::with_capacity(prefix.len() + parts.iter().map(|p| p.len()).sum::<usize>());
    k.extend_from_slice(prefix);
    for p in parts {
        k.extend_from_slice(p);
    }
    k
}

pub const META_STORE_ID: &[u8] = b"m/store_id";
pub const META_SEQ: &[u8] = b"m/seq";
pub const META_HLC: &[u8] = b"m/hlc";
pub const META_REJECTIONS: &[u8] = b"m/rejections";
pub const META_FORMAT: &[u8] = b"m/format";
pub const META_ADMIN: &[u8] = b"m/admin";
pub const META_AUDIT: &[u8] = b"m/audit";

pub const RECORD: &[u8] = b"r/";
pub const SEQ: &[u8] = b"s/";
pub const APPLIED: &[u8] = b"a/";
pub const CONFLICT: &[u8] = b"c/";
pub const OPEN_CONFLICT: &[u8] = b"o/";
pub const REJECTION: &[u8] = b"j/";
pub const TOKEN: &[u8] = b"t/";
pub const DEVICE: &[u8] = b"d/";
pub const PULLED: &[u8] = b"p/";
pub const ORG_UNIT: &[u8] = b"n/";
pub const AGG: &[u8] = b"g/";
// People and enrolment codes: two letters, so they never share a prefix
// with the one-letter families above.
pub const ACCOUNT: &[u8] = b"pa/";
pub const SESSION: &[u8] = b"ps/";
pub const CODE: &[u8] = b"pc/";
pub const CODE_HASH: &[u8] = b"ph/";

pub fn account_key(username: &str) -> Vec<u8> {
    key(ACCOUNT, &[username.as_bytes()])
}

pub fn session_key(hash: &[u8; 32]) -> Vec<u8> {
    key(SESSION, &[hash])
}

pub fn code_key(id: Uuid) -> Vec<u8> {
    key(CODE, &[id.as_bytes()])
}

pub fn code_hash_key(hash: &[u8; 32]) -> Vec<u8> {
    key(CODE_HASH, &[hash])
}
pub const AUDIT: &[u8] = b"l/";
/// Reporting periods a coordinator acted on: `q/<unit>\0<period>`.
pub const PERIOD: &[u8] = b"q/";

pub fn period_key(unit: &str, period: pufa_core::period::Period) -> Vec<u8> {
    let mut k = PERIOD.to_vec();
    k.extend_from_slice(unit.as_bytes());
    k.push(0);
    k.extend_from_slice(period.to_string().as_bytes());
    k
}

/// Pairs marked "not a duplicate": `x/<a:16><b:16>`, smaller id first.
pub const DISMISSAL: &[u8] = b"x/";

pub fn dismissal_key(a: Uuid, b: Uuid) -> Vec<u8> {
    key(DISMISSAL, &[a.as_bytes(), b.as_bytes()])
}

pub fn record_key(id: Uuid) -> Vec<u8> {
    key(RECORD, &[id.as_bytes()])
}

pub fn seq_key(seq: u64) -> Vec<u8> {
    key(SEQ, &[&seq.to_be_bytes()])
}

pub fn applied_key(device: Uuid, mutation: Uuid) -> Vec<u8> {
    key(APPLIED, &[device.as_bytes(), mutation.as_bytes()])
}

pub fn conflict_key(id: Uuid) -> Vec<u8> {
    key(CONFLICT, &[id.as_bytes()])
}

pub fn open_conflict_key(seq: u64, id: Uuid) -> Vec<u8> {
    key(OPEN_CONFLICT, &[&seq.to_be_bytes(), id.as_bytes()])
}

pub fn rejection_key(n: u64) -> Vec<u8> {
    key(REJECTION, &[&n.to_be_bytes()])
}

pub fn token_key(hash: &[u8; 32]) -> Vec<u8> {
    key(TOKEN, &[hash])
}

pub fn device_key(id: Uuid) -> Vec<u8> {
    key(DEVICE, &[id.as_bytes()])
}

pub fn pulled_key(id: Uuid) -> Vec<u8> {
    key(PULLED, &[id.as_bytes()])
}

pub fn org_unit_key(code: &str) -> Vec<u8> {
    key(ORG_UNIT, &[code.as_bytes()])
}

pub fn audit_key(n: u64) -> Vec<u8> {
    key(AUDIT, &[&n.to_be_bytes()])
}

/// A feed entry's value: the record, and its last audit entry.
pub fn feed_value(record: Uuid, last_entry: u64) -> [u8; 24] {
    let mut v = [0u8; 24];
    v[..16].copy_from_slice(record.as_bytes());
    v[16..].copy_from_slice(&last_entry.to_be_bytes());
    v
}

/// # Errors
/// [`StoreError::Corrupt`] unless 24 bytes.
pub fn decode_feed(v: &[u8]) -> Result<(Uuid, u64), StoreError> {
    match v.len() {
        24 => Ok((uuid_of(&v[..16])?, u64_of(&v[16..])?)),
        _ => Err(StoreError::Corrupt("malformed feed entry".into())),
    }
}

pub fn agg_key(k: &AggKey) -> Vec<u8> {
    match k {
        AggKey::Unit(u) => key(AGG, &[b"u", u.as_bytes()]),
        AggKey::Month(u, m) => key(AGG, &[b"m", u.as_bytes(), b"\0", &m.to_be_bytes()]),
        AggKey::EverMax(u) => key(AGG, &[b"e", u.as_bytes()]),
        AggKey::Topics(u, y) => key(AGG, &[b"k", u.as_bytes(), b"\0", &y.to_be_bytes()]),
        AggKey::Understanders(u) => key(AGG, &[b"l", u.as_bytes()]),
    }
}

/// `None` for a `Month`, `Topics` or `Understanders` left empty: delete it.
pub fn agg_value(v: &AggValue) -> Option<Vec<u8>> {
    match v {
        AggValue::Unit(u) => Some(encode(u)),
        AggValue::Month(days) if days.is_empty() => None,
        AggValue::Month(days) => Some(encode(days)),
        AggValue::EverMax(m) => Some(m.to_be_bytes().to_vec()),
        AggValue::Topics(list) if list.is_empty() => None,
        AggValue::Topics(list) => Some(encode(list)),
        AggValue::Understanders(days) if days.is_empty() => None,
        AggValue::Understanders(days) => Some(encode(days)),
    }
}

/// Decodes an aggregate entry's key (without the `g/` prefix).
pub fn decode_agg_key(k: &[u8]) -> Result<AggKey, StoreError> {
    let bad = || StoreError::Corrupt("malformed aggregate key".into());
    let text = |b: &[u8]| String::from_utf8(b.to_vec()).map_err(|_| bad());
    let split = |rest: &[u8]| -> Result<(String, i32), StoreError> {
        if rest.len() <= 5 {
            return Err(bad());
        }
        let (code, n) = rest.split_at(rest.len() - 5);
        Ok((
            text(code)?,
            i32::from_be_bytes(n[1..].try_into().map_err(|_| bad())?),
        ))
    };
    match k.split_first() {
        Some((b'u', code)) => Ok(AggKey::Unit(text(code)?)),
        Some((b'e', code)) => Ok(AggKey::EverMax(text(code)?)),
        Some((b'l', code)) => Ok(AggKey::Understanders(text(code)?)),
        Some((b'm', rest)) => split(rest).map(|(code, month)| AggKey::Month(code, month)),
        Some((b'k', rest)) => split(rest).map(|(code, year)| AggKey::Topics(code, year)),
        _ => Err(bad()),
    }
}

/// Decodes an aggregate entry (key without the `g/` prefix).
pub fn decode_agg(k: &[u8], v: &[u8]) -> Result<(AggKey, AggValue), StoreError> {
    let key = decode_agg_key(k)?;
    let value = match &key {
        AggKey::Unit(_) => AggValue::Unit(decode::<UnitAgg>(v)?),
        AggKey::EverMax(_) => AggValue::EverMax(u64_of(v)?),
        AggKey::Month(..) => AggValue::Month(decode(v)?),
        AggKey::Topics(..) => AggValue::Topics(decode(v)?),
        AggKey::Understanders(_) => AggValue::Understanders(decode(v)?),
    };
    Ok((key, value))
}

/// What the idempotency index remembers of an applied mutation: enough to
/// repeat its first result.
#[derive(Clone, Debug, PartialEq)]
pub struct Applied {
    pub content: [u8; 16],
    pub seq: u64,
    pub restamped: bool,
    pub hlc: Hlc,
    pub conflicts: Vec<ConflictReport>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct StoredConflict {
    pub record_id: Uuid,
    pub conflict: Conflict,
    /// The record's seq when the conflict was recorded.
    pub seq: u64,
    pub open: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct StoredRejection {
    pub device_id: Uuid,
    pub received_ms: u64,
    /// The mutation as JSON text (wire types skip absent fields, which a
    /// positional encoding cannot).
    pub mutation: String,
    pub error: ErrorObject,
}

impl StoredRejection {
    /// `raw` is the mutation's JSON as pushed, when the push kept it.
    pub fn new(
        device_id: Uuid,
        received_ms: u64,
        m: &pufa_core::wire::Mutation,
        raw: Option<&str>,
        r: &pufa_core::schema::Rejection,
    ) -> StoredRejection {
        let text = raw.map_or_else(
            || serde_json::to_string(m).unwrap_or_default(),
            str::to_string,
        );
        let mut error = r.to_error();
        error.message = cut_text(&error.message);
        error.field = error.field.as_deref().map(cut_text);
        StoredRejection {
            device_id,
            received_ms,
            mutation: bounded_mutation(text),
            error,
        }
    }
}

/// What a stored rejection of `stored` bytes counts towards a listing's
/// [`crate::config::REJECTIONS_LIST_BYTES_MAX`]: its size as listed, which
/// [`bounded_mutation`] caps (entries stored before it may be larger).
pub fn rejection_listed_bytes(stored: usize) -> usize {
    stored.min(REJECTION_MUTATION_BYTES_MAX + 1024)
}

/// At most [`REJECTION_TEXT_CHARS_MAX`] characters of `text`, with `…`
/// where it was cut (a message may echo a huge kind or field name).
fn cut_text(text: &str) -> String {
    match text.char_indices().nth(REJECTION_TEXT_CHARS_MAX) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}

/// What a rejected mutation keeps of `text` (its JSON as pushed): every
/// value whose JSON is longer than [`REJECTION_VALUE_BYTES_MAX`], at the
/// top level or in `set`, becomes `{"omitted_bytes": N}`; if the whole is
/// still longer than [`REJECTION_MUTATION_BYTES_MAX`], so does `set`. A
/// rejection then costs the disk at most about that much, whatever the
/// pusher sent (up to `--max-body-bytes` per push).
pub fn bounded_mutation(text: String) -> String {
    if text.len() <= REJECTION_VALUE_BYTES_MAX {
        return text;
    }
    let omitted = |bytes: usize| serde_json::json!({ "omitted_bytes": bytes });
    let Ok(serde_json::Value::Object(mut m)) = serde_json::from_str(&text) else {
        return omitted(text.len()).to_string();
    };
    let size = |v: &serde_json::Value| serde_json::to_string(v).map_or(usize::MAX, |t| t.len());
    let bound = |map: &mut serde_json::Map<String, serde_json::Value>| {
        for v in map.values_mut() {
            let n = size(v);
            if n > REJECTION_VALUE_BYTES_MAX {
                *v = omitted(n);
            }
        }
    };
    if let Some(serde_json::Value::Object(set)) = m.get_mut("set") {
        bound(set);
    }
    bound(&mut m);
    let mut out = serde_json::Value::Object(m);
    if size(&out) > REJECTION_MUTATION_BYTES_MAX {
        if let Some(set) = out.get_mut("set") {
            *set = omitted(size(set));
        }
    }
    // Many long keys at the top level: only the size is kept.
    match serde_json::to_string(&out) {
        Ok(t) if t.len() <= REJECTION_MUTATION_BYTES_MAX => t,
        _ => omitted(text.len()).to_string(),
    }
}

impl StoredRejection {
    /// As `GET /v1/rejections` lists it: the mutation as pushed.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] when the stored mutation text is not JSON.
    pub fn view(self) -> Result<pufa_core::wire::RejectionView, StoreError> {
        // Entries stored before rejections were bounded are bounded here.
        let mutation = serde_json::from_str(&bounded_mutation(self.mutation))
            .map_err(|e| StoreError::Corrupt(format!("stored rejection: {e}")))?;
        Ok(pufa_core::wire::RejectionView {
            device_id: self.device_id,
            received_ms: self.received_ms,
            mutation,
            error: ErrorObject {
                message: cut_text(&self.error.message),
                field: self.error.field.as_deref().map(cut_text),
                code: self.error.code,
                locked: self.error.locked,
            },
        })
    }
}

/// A SHA-256 digest in the audit chain.
pub type Hash = [u8; 32];
/// The `prev` of the first audit entry.
pub const GENESIS: Hash = [0; 32];

/// One audit entry's content (the `hash` covers its encoding). Entries are
/// written in the batch of the record write they describe, never changed.
#[derive(Clone, Debug, PartialEq)]
pub struct AuditBody {
    pub n: u64,
    pub server_ms: u64,
    /// The record's seq after the write.
    pub seq: u64,
    pub record_id: Uuid,
    pub kind: Kind,
    pub cause: AuditCause,
    pub mutation_id: Option<Uuid>,
    pub conflict_id: Option<Uuid>,
    pub device_id: Option<Uuid>,
    /// Who acted when it is not simply `device_id` (e.g. a signed-in
    /// person); `None` keeps the common case small.
    pub actor: Option<String>,
    /// The same record's entry before this one.
    pub record_prev: Option<u64>,
    pub hlc: Hlc,
    /// The HLC as pushed, when the server re-stamped it.
    pub pushed_hlc: Option<Hlc>,
    pub changes: Vec<Change>,
    /// Conflicts the write opened, with their ids.
    pub conflicts: Vec<(Uuid, Conflict)>,
    /// A step on a reporting period: then the entry is about no record
    /// (`record_id` nil, `changes` empty) and `cause` is `Period`.
    pub period: Option<PeriodStep>,
}

/// A period step as the audit chain logs it.
#[derive(Clone, Debug, PartialEq)]
pub struct PeriodStep {
    pub org_unit: String,
    pub period: pufa_core::period::Period,
    pub action: pufa_core::period::PeriodAction,
    /// The state it led to.
    pub state: pufa_core::period::PeriodState,
    pub comment: String,
}

/// An audit entry as read back.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredAudit {
    pub prev: Hash,
    pub hash: Hash,
    pub body: AuditBody,
    /// Whether `hash` is the hash of `prev` and the stored body.
    pub hash_ok: bool,
}

const AUDIT_HEADER: usize = 1 + 32 + 32;

fn audit_hash(prev: &Hash, body: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update(prev);
    h.update(body);
    h.finalize().into()
}

/// Encodes an entry chained after `prev`; returns the value and its hash.
pub fn encode_audit(prev: &Hash, body: &AuditBody) -> (Vec<u8>, Hash) {
    let mut out = Vec::with_capacity(512);
    out.push(VALUE_FORMAT);
    out.extend_from_slice(prev);
    out.extend_from_slice(&GENESIS);
    rmp_serde::encode::write(&mut out, &body.to_disk()).expect("msgpack encoding of audit entries");
    let hash = audit_hash(prev, &out[AUDIT_HEADER..]);
    out[33..AUDIT_HEADER].copy_from_slice(&hash);
    (out, hash)
}

/// # Errors
/// [`StoreError::Corrupt`] for bytes that are not an audit entry.
pub fn decode_audit(bytes: &[u8]) -> Result<StoredAudit, StoreError> {
    if bytes.len() <= AUDIT_HEADER || bytes[0] != VALUE_FORMAT {
        return Err(StoreError::Corrupt("malformed audit entry".into()));
    }
    let prev: Hash = bytes[1..33].try_into().expect("32 bytes");
    let hash: Hash = bytes[33..AUDIT_HEADER].try_into().expect("32 bytes");
    let body = AuditBody::from_disk(
        rmp_serde::from_slice(&bytes[AUDIT_HEADER..])
            .map_err(|e| StoreError::Corrupt(format!("undecodable audit entry: {e}")))?,
    )?;
    Ok(StoredAudit {
        hash_ok: audit_hash(&prev, &bytes[AUDIT_HEADER..]) == hash,
        prev,
        hash,
        body,
    })
}

impl StoredAudit {
    /// The entry as `GET /v1/records/{id}/history` shows it.
    pub fn view(self) -> HistoryEntry {
        let b = self.body;
        HistoryEntry {
            n: b.n,
            server_ms: b.server_ms,
            seq: b.seq,
            record_id: b.record_id,
            kind: b.kind.as_str().to_string(),
            cause: b.cause,
            mutation_id: b.mutation_id,
            conflict_id: b.conflict_id,
            actor: b.actor.or_else(|| b.device_id.map(|d| d.to_string())),
            device_id: b.device_id,
            hlc: b.hlc,
            restamped: b.pushed_hlc.is_some(),
            pushed_hlc: b.pushed_hlc,
            changes: b.changes,
            conflicts: b
                .conflicts
                .into_iter()
                .map(|(id, c)| AuditConflict {
                    id,
                    field: c.field,
                    winner: c.winner,
                    loser: c.loser,
                })
                .collect(),
            prev: hex::encode(self.prev),
            hash: hex::encode(self.hash),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pufa_core::merge::{merge, Write};
    use serde_json::{json, Map, Value};

    fn hlc(ms: u64, c: u32, node: u128) -> Hlc {
        Hlc::new(ms, c, Uuid::from_u128(node))
    }

    /// `existing` after a write of `set` (and `delete`) at `at`, seq `seq`.
    fn written(
        existing: Option<&RecordState>,
        set: Value,
        delete: Option<bool>,
        at: Hlc,
        seq: u64,
    ) -> RecordState {
        let set: Map<String, Value> = serde_json::from_value(set).unwrap();
        let w = Write {
            record_id: Uuid::from_u128(9),
            kind: Kind::Lecture,
            base_seq: 0,
            hlc: at,
            set: &set,
            delete,
        };
        merge(existing, w, seq).state
    }

    /// Records with one stamp, several, a deleted flag, a cleared field,
    /// conflicts and scope history all come back as they went in, from both
    /// layouts; the compact one is the smaller.
    #[test]
    fn records_round_trip_in_both_layouts() {
        let lecture = json!({
            "org_unit": "b1c05", "held_on": "2020-03-04", "title": "民法典进社区",
            "attendees": 42, "topics": ["宪法", "劳动合同"], "speaker": "王律师",
            "venue": "社区活动中心", "audience": "residents", "notes": "居民踊跃提问"
        });
        let first = written(None, lecture, None, hlc(1_000, 0, 1), 1);
        let mut edited = written(
            Some(&first),
            json!({"attendees": 50, "notes": null}),
            None,
            hlc(2_000, 3, 2),
            2,
        );
        edited.ever = vec!["b".into(), "b1".into(), "b1c05".into()];
        edited.open_conflicts = 2;
        let deleted = written(Some(&edited), json!({}), Some(true), hlc(3_000, 0, 3), 3);
        assert!(deleted.is_deleted());
        let mut empty = first.clone();
        empty.fields = std::collections::BTreeMap::new();
        for r in [&first, &edited, &deleted, &empty] {
            let compact = encode_record(r);
            let positional = encode(r);
            assert_eq!(&decode_record(&compact).unwrap(), r);
            assert_eq!(&decode_record(&positional).unwrap(), r);
            if !r.fields.is_empty() {
                assert!(
                    compact.len() * 10 < positional.len() * 7,
                    "{} vs {} bytes",
                    compact.len(),
                    positional.len()
                );
            }
        }
    }

    #[test]
    fn a_record_naming_a_missing_stamp_is_corrupt() {
        let r = written(
            None,
            json!({"org_unit": "b", "attendees": 1}),
            None,
            hlc(1, 0, 1),
            1,
        );
        let one = json!(1);
        let compact = CompactRecordOut {
            id: r.id,
            kind: r.kind.into(),
            seq: r.seq,
            stamps: Vec::new(),
            fields: vec![("attendees", &one, 0)],
            deleted: None,
            open_conflicts: 0,
            ever: &[],
        };
        let mut bytes = vec![RECORD_COMPACT];
        rmp_serde::encode::write(&mut bytes, &compact).unwrap();
        assert!(matches!(decode_record(&bytes), Err(StoreError::Corrupt(_))));
        assert!(matches!(
            decode_record(&[RECORD_COMPACT, 0xc1]),
            Err(StoreError::Corrupt(_))
        ));
        assert!(matches!(
            decode_record(&[7, 1, 2]),
            Err(StoreError::Corrupt(_))
        ));
    }
}
