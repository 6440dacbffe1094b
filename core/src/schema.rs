//! The four record kinds and their field rules (contract §6), their
//! names in Chinese and English ([`labels`]), and the per-mutation
//! judgement of rule 2 in the contract's order.
//!
//! This is the one place that says what a field is called and what it
//! takes: the server's `GET /v1/schema` ([`describe`]), the field app's
//! forms, the CLI's prompts, the dashboard and the exports all read it.

mod labels;

use serde_json::{Map, Value};

use crate::date::Date;
use crate::wire::{Choice, ErrorObject, FieldRule, FieldSchema, KindSchema, Localized};

pub use labels::{choice_label, Label};

/// Days after the server's UTC date that `held_on` may still name.
pub const HELD_ON_FUTURE_DAYS_MAX: i32 = 366;
/// The earliest `held_on`, as (year, month, day).
pub const HELD_ON_MIN_YMD: (i32, u32, u32) = (2000, 1, 1);
/// Longest `notes`, in characters.
pub const NOTES_CHARS_MAX: usize = 2000;
/// Most `topics` of a lecture, in items.
pub const TOPICS_ITEMS_MAX: usize = 20;
/// Shortest and longest topic, in characters.
pub const TOPIC_CHARS_MIN: usize = 1;
pub const TOPIC_CHARS_MAX: usize = 50;
/// A `location`'s latitude and longitude ranges, in degrees.
pub const LAT_DEGREES_MAX: f64 = 90.0;
pub const LON_DEGREES_MAX: f64 = 180.0;
/// Longest legal understander's `name`, in characters.
pub const PERSON_NAME_CHARS_MAX: usize = 50;
/// Most `training_hours` of a legal understander, in hours.
pub const TRAINING_HOURS_MAX: i64 = 1000;
/// Longest `phone`, in characters (digits, `+`, `-` and spaces).
pub const PHONE_CHARS_MAX: usize = 20;

/// A record kind.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum Kind {
    Lecture,
    LibraryCorner,
    DemoSite,
    LegalUnderstander,
}

impl Kind {
    pub const ALL: [Kind; 4] = [
        Kind::Lecture,
        Kind::LibraryCorner,
        Kind::DemoSite,
        Kind::LegalUnderstander,
    ];

    pub fn parse(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == name)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Lecture => "lecture",
            Kind::LibraryCorner => "library_corner",
            Kind::DemoSite => "demo_site",
            Kind::LegalUnderstander => "legal_understander",
        }
    }

    /// The kind's fields, required ones first, in the contract's order.
    pub fn fields(self) -> &'static [FieldSpec] {
        match self {
            Kind::Lecture => LECTURE,
            Kind::LibraryCorner => LIBRARY_CORNER,
            Kind::DemoSite => DEMO_SITE,
            Kind::LegalUnderstander => LEGAL_UNDERSTANDER,
        }
    }

    pub fn field(self, name: &str) -> Option<&'static FieldSpec> {
        self.fields().iter().find(|f| f.name == name)
    }
}

/// One field's rule, and what it is called.
#[derive(Debug)]
pub struct FieldSpec {
    pub name: &'static str,
    pub required: bool,
    pub ty: FieldType,
    pub label: Label,
    /// Personal data of a person (a phone number): record exports leave
    /// it out unless the request names it.
    pub personal: bool,
}

/// The value rule of a field.
#[derive(Debug)]
pub enum FieldType {
    /// An org code; existence and scope are judged by the caller.
    OrgUnit,
    /// A date from 2000-01-01 to the server's date + 366 days.
    HeldOn,
    Date,
    Text {
        min: usize,
        max: usize,
    },
    Int {
        min: i64,
        max: i64,
    },
    Topics,
    OneOf(&'static [&'static str]),
    Location,
    /// A phone number: digits, `+`, `-` and spaces, at least one digit.
    Phone {
        max: usize,
    },
}

const fn f(name: &'static str, required: bool, ty: FieldType, label: Label) -> FieldSpec {
    FieldSpec {
        name,
        required,
        ty,
        label,
        personal: false,
    }
}

const fn l(zh: &'static str, en: &'static str) -> Label {
    Label { zh, en }
}

pub const AUDIENCES: &[&str] = &[
    "residents",
    "villagers",
    "students",
    "enterprise_staff",
    "officials",
    "mixed",
];
pub const CORNER_STATUSES: &[&str] = &["active", "inactive", "closed"];
pub const SITE_LEVELS: &[&str] = &["national", "provincial", "municipal", "district"];
pub const SITE_STATUSES: &[&str] = &["candidate", "awarded", "revoked"];
pub const UNDERSTANDER_STATUSES: &[&str] = &["serving", "resigned"];

const NOTES: FieldType = FieldType::Text {
    min: 0,
    max: NOTES_CHARS_MAX,
};
const ORG_UNIT: Label = l("所属单位", "Unit");
const NOTES_LABEL: Label = l("备注", "Notes");
const STATUS: Label = l("状态", "Status");

static LECTURE: &[FieldSpec] = &[
    f("org_unit", true, FieldType::OrgUnit, ORG_UNIT),
    f(
        "held_on",
        true,
        FieldType::HeldOn,
        l("举办日期", "Date held"),
    ),
    f(
        "title",
        true,
        FieldType::Text { min: 1, max: 200 },
        l("标题", "Title"),
    ),
    f(
        "attendees",
        true,
        FieldType::Int {
            min: 0,
            max: 100_000,
        },
        l("参加人数", "Attendees"),
    ),
    f("topics", false, FieldType::Topics, l("主题", "Topics")),
    f(
        "speaker",
        false,
        FieldType::Text { min: 0, max: 100 },
        l("主讲人", "Speaker"),
    ),
    f(
        "venue",
        false,
        FieldType::Text { min: 0, max: 200 },
        l("地点", "Venue"),
    ),
    f(
        "audience",
        false,
        FieldType::OneOf(AUDIENCES),
        l("宣讲对象", "Audience"),
    ),
    f("notes", false, NOTES, NOTES_LABEL),
    f(
        "location",
        false,
        FieldType::Location,
        l("位置", "Location"),
    ),
];

static LIBRARY_CORNER: &[FieldSpec] = &[
    f("org_unit", true, FieldType::OrgUnit, ORG_UNIT),
    f(
        "name",
        true,
        FieldType::Text { min: 1, max: 100 },
        l("名称", "Name"),
    ),
    f("status", true, FieldType::OneOf(CORNER_STATUSES), STATUS),
    f(
        "books",
        false,
        FieldType::Int {
            min: 0,
            max: 1_000_000,
        },
        l("藏书数", "Books"),
    ),
    f(
        "opened_on",
        false,
        FieldType::Date,
        l("设立日期", "Opened on"),
    ),
    f(
        "last_checked_on",
        false,
        FieldType::Date,
        l("最近检查日期", "Last checked on"),
    ),
    f("notes", false, NOTES, NOTES_LABEL),
];

static DEMO_SITE: &[FieldSpec] = &[
    f("org_unit", true, FieldType::OrgUnit, ORG_UNIT),
    f(
        "level",
        true,
        FieldType::OneOf(SITE_LEVELS),
        l("级别", "Level"),
    ),
    f("status", true, FieldType::OneOf(SITE_STATUSES), STATUS),
    f(
        "year",
        true,
        FieldType::Int {
            min: 2000,
            max: 2100,
        },
        l("年度", "Year"),
    ),
    f("notes", false, NOTES, NOTES_LABEL),
];

static LEGAL_UNDERSTANDER: &[FieldSpec] = &[
    f("org_unit", true, FieldType::OrgUnit, ORG_UNIT),
    f(
        "name",
        true,
        FieldType::Text {
            min: 1,
            max: PERSON_NAME_CHARS_MAX,
        },
        l("姓名", "Name"),
    ),
    f(
        "appointed_on",
        true,
        FieldType::HeldOn,
        l("选聘日期", "Appointed on"),
    ),
    f(
        "status",
        true,
        FieldType::OneOf(UNDERSTANDER_STATUSES),
        STATUS,
    ),
    f(
        "training_hours",
        false,
        FieldType::Int {
            min: 0,
            max: TRAINING_HOURS_MAX,
        },
        l("培训学时", "Training hours"),
    ),
    FieldSpec {
        personal: true,
        ..f(
            "phone",
            false,
            FieldType::Phone {
                max: PHONE_CHARS_MAX,
            },
            l("联系电话", "Phone"),
        )
    },
    f("notes", false, NOTES, NOTES_LABEL),
];

/// The reason codes of a rejected mutation (rule 2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RejectCode {
    InvalidHlc,
    UnknownKind,
    KindMismatch,
    UnknownField,
    InvalidField,
    MissingField,
    UnknownOrgUnit,
    OutOfScope,
    IdReused,
    /// The write falls in an approved, locked reporting period (an
    /// addition to the contract; see [`crate::period`]).
    PeriodLocked,
}

impl RejectCode {
    /// Every code, in the order rule 2 checks them (`id_reused` is judged
    /// before rule 2, when the id is looked up).
    pub const ALL: [RejectCode; 10] = [
        RejectCode::InvalidHlc,
        RejectCode::UnknownKind,
        RejectCode::KindMismatch,
        RejectCode::UnknownField,
        RejectCode::InvalidField,
        RejectCode::MissingField,
        RejectCode::UnknownOrgUnit,
        RejectCode::OutOfScope,
        RejectCode::IdReused,
        RejectCode::PeriodLocked,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RejectCode::InvalidHlc => "invalid_hlc",
            RejectCode::UnknownKind => "unknown_kind",
            RejectCode::KindMismatch => "kind_mismatch",
            RejectCode::UnknownField => "unknown_field",
            RejectCode::InvalidField => "invalid_field",
            RejectCode::MissingField => "missing_field",
            RejectCode::UnknownOrgUnit => "unknown_org_unit",
            RejectCode::OutOfScope => "out_of_scope",
            RejectCode::IdReused => "id_reused",
            RejectCode::PeriodLocked => "period_locked",
        }
    }
}

/// Why a mutation (or one field value) was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    pub code: RejectCode,
    pub field: Option<String>,
    pub message: String,
    /// For `period_locked`: the approval that holds the lock (boxed: a
    /// rejection travels in `Result`s, and most have none).
    pub lock: Option<Box<crate::period::Approval>>,
}

impl Rejection {
    pub fn new(code: RejectCode, field: Option<&str>, message: impl Into<String>) -> Rejection {
        Rejection {
            code,
            field: field.map(str::to_string),
            message: message.into(),
            lock: None,
        }
    }

    pub fn with_lock(mut self, lock: crate::period::Approval) -> Rejection {
        self.lock = Some(Box::new(lock));
        self
    }

    pub fn to_error(&self) -> ErrorObject {
        ErrorObject {
            code: self.code.as_str().to_string(),
            message: self.message.clone(),
            field: self.field.clone(),
            locked: self.lock.as_deref().cloned(),
        }
    }
}

/// What validation needs to know about the world.
#[derive(Clone, Copy, Debug)]
pub struct Today(pub Date);

/// Judges one value for one field of `kind` (type and range only; an
/// `org_unit`'s existence and scope are judged by the caller).
///
/// `Value::Null` means "clear": allowed for optional fields, `missing_field`
/// for required ones.
///
/// # Errors
/// `unknown_field`, `invalid_field` or `missing_field`.
pub fn check_field(kind: Kind, name: &str, value: &Value, today: Today) -> Result<(), Rejection> {
    let Some(spec) = kind.field(name) else {
        return Err(Rejection::new(
            RejectCode::UnknownField,
            Some(name),
            format!("{} has no field {name:?}", kind.as_str()),
        ));
    };
    if value.is_null() {
        return if spec.required {
            Err(Rejection::new(
                RejectCode::MissingField,
                Some(name),
                format!("{name} is required and cannot be cleared"),
            ))
        } else {
            Ok(())
        };
    }
    let invalid = |why: String| {
        Err(Rejection::new(
            RejectCode::InvalidField,
            Some(name),
            format!("{name}: {why}"),
        ))
    };
    match &spec.ty {
        FieldType::OrgUnit => match value.as_str() {
            Some(s) if !s.is_empty() => Ok(()),
            _ => invalid("must be an org unit code (a non-empty string)".into()),
        },
        FieldType::HeldOn => match value.as_str().and_then(Date::parse) {
            Some(d) => {
                let min = held_on_min();
                let max = today.0.add_days(HELD_ON_FUTURE_DAYS_MAX);
                if d < min || d > max {
                    invalid(format!("must be between {min} and {max}"))
                } else {
                    Ok(())
                }
            }
            None => invalid("must be a real date written YYYY-MM-DD".into()),
        },
        FieldType::Date => match value.as_str().and_then(Date::parse) {
            Some(_) => Ok(()),
            None => invalid("must be a real date written YYYY-MM-DD".into()),
        },
        FieldType::Text { min, max } => match value.as_str() {
            Some(s) => {
                let n = s.chars().count();
                if n < *min || n > *max {
                    invalid(format!("must be {min}..{max} characters, got {n}"))
                } else {
                    Ok(())
                }
            }
            None => invalid("must be a string".into()),
        },
        FieldType::Int { min, max } => match as_integer(value) {
            Some(n) if n >= *min && n <= *max => Ok(()),
            Some(n) => invalid(format!("must be {min}..{max}, got {n}")),
            None => invalid("must be an integer (no fraction or exponent)".into()),
        },
        FieldType::OneOf(options) => match value.as_str() {
            Some(s) if options.contains(&s) => Ok(()),
            _ => invalid(format!("must be one of {}", options.join(", "))),
        },
        FieldType::Topics => match value.as_array() {
            Some(items) if items.len() <= TOPICS_ITEMS_MAX => {
                for item in items {
                    match item.as_str().map(|s| s.chars().count()) {
                        Some(TOPIC_CHARS_MIN..=TOPIC_CHARS_MAX) => {}
                        _ => {
                            return invalid(format!(
                                "each topic must be a string of {TOPIC_CHARS_MIN}..{TOPIC_CHARS_MAX} characters"
                            ))
                        }
                    }
                }
                Ok(())
            }
            Some(_) => invalid(format!("at most {TOPICS_ITEMS_MAX} topics")),
            None => invalid("must be an array of strings".into()),
        },
        FieldType::Location => {
            let ok = value.as_object().is_some_and(|o| {
                o.len() == 2
                    && o.get("lat")
                        .and_then(Value::as_f64)
                        .is_some_and(|v| (-LAT_DEGREES_MAX..=LAT_DEGREES_MAX).contains(&v))
                    && o.get("lon")
                        .and_then(Value::as_f64)
                        .is_some_and(|v| (-LON_DEGREES_MAX..=LON_DEGREES_MAX).contains(&v))
            });
            if ok {
                Ok(())
            } else {
                invalid(r#"must be {"lat":-90..90,"lon":-180..180}"#.into())
            }
        }
        FieldType::Phone { max } => match value.as_str() {
            Some(s) if is_phone(s, *max) => Ok(()),
            _ => invalid(format!(
                "must be a phone number: 1..{max} digits, +, - or spaces, with a digit"
            )),
        },
    }
}

/// Whether `s` is a phone number as [`FieldType::Phone`] takes it.
fn is_phone(s: &str, max: usize) -> bool {
    (1..=max).contains(&s.chars().count())
        && s.chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '+' | '-' | ' '))
        && s.chars().any(|c| c.is_ascii_digit())
}

/// The earliest `held_on`: [`HELD_ON_MIN_YMD`].
pub fn held_on_min() -> Date {
    let (y, m, d) = HELD_ON_MIN_YMD;
    Date::from_ymd(y, m, d).expect("HELD_ON_MIN_YMD is a real day")
}

/// Every kind, its fields, their rules and names, as `GET /v1/schema`
/// lists them (`kinds`): what a form needs to ask for a record and to judge
/// it before the server does.
pub fn describe() -> Vec<KindSchema> {
    Kind::ALL
        .into_iter()
        .map(|kind| KindSchema {
            kind: kind.as_str().to_string(),
            label: kind.label().into(),
            fields: kind
                .fields()
                .iter()
                .map(|spec| FieldSchema {
                    name: spec.name.to_string(),
                    required: spec.required,
                    label: spec.label.into(),
                    rule: rule_of(spec),
                })
                .collect(),
        })
        .collect()
}

/// Every rejection code's message, as `GET /v1/schema` lists them
/// (`rejections`).
pub fn rejection_messages() -> std::collections::BTreeMap<String, Localized> {
    RejectCode::ALL
        .into_iter()
        .map(|code| (code.as_str().to_string(), code.message().into()))
        .collect()
}

fn rule_of(spec: &FieldSpec) -> FieldRule {
    match &spec.ty {
        FieldType::OrgUnit => FieldRule::OrgUnit,
        FieldType::HeldOn => FieldRule::Date {
            min: Some(held_on_min().to_string()),
            max_days_after_today: Some(HELD_ON_FUTURE_DAYS_MAX),
        },
        FieldType::Date => FieldRule::Date {
            min: None,
            max_days_after_today: None,
        },
        FieldType::Text { min, max } => FieldRule::Text {
            min_chars: *min,
            max_chars: *max,
        },
        FieldType::Int { min, max } => FieldRule::Int {
            min: *min,
            max: *max,
        },
        FieldType::Topics => FieldRule::Topics {
            max_items: TOPICS_ITEMS_MAX,
            item_min_chars: TOPIC_CHARS_MIN,
            item_max_chars: TOPIC_CHARS_MAX,
        },
        FieldType::OneOf(values) => FieldRule::Enum {
            values: values
                .iter()
                .map(|v| Choice {
                    value: v.to_string(),
                    label: choice_label(spec.name, v)
                        .map_or_else(|| Localized::same(v), Localized::from),
                })
                .collect(),
        },
        FieldType::Location => FieldRule::Location {
            lat_min: -LAT_DEGREES_MAX,
            lat_max: LAT_DEGREES_MAX,
            lon_min: -LON_DEGREES_MAX,
            lon_max: LON_DEGREES_MAX,
        },
        FieldType::Phone { max } => FieldRule::Phone { max_chars: *max },
    }
}

/// An integer in the contract's sense: a JSON number written without
/// fraction or exponent. serde_json keeps such numbers as i64/u64.
pub fn as_integer(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) if !n.is_f64() => n.as_i64(),
        _ => None,
    }
}

/// Checks every field of `set` (in key order), stopping at the first failure.
///
/// # Errors
/// The first field's `unknown_field`, `invalid_field` or `missing_field`.
pub fn check_set(kind: Kind, set: &Map<String, Value>, today: Today) -> Result<(), Rejection> {
    set.iter()
        .try_for_each(|(k, v)| check_field(kind, k, v, today))
}

/// A name that [`personal_fields`] was given and that is no personal field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotPersonal {
    pub name: String,
    /// The personal fields there are.
    pub personal: Vec<&'static str>,
}

impl std::fmt::Display for NotPersonal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.personal.as_slice() {
            [] => write!(
                f,
                "there are no personal fields to include, not {:?}",
                self.name
            ),
            names => write!(
                f,
                "include may name {}, not {:?}",
                names.join(", "),
                self.name
            ),
        }
    }
}

/// The personal fields ([`FieldSpec::personal`]) of `kinds` that `list`
/// names, comma-separated: what an export is asked to include.
///
/// # Errors
/// The first name that is no personal field of `kinds`.
pub fn personal_fields(kinds: &[Kind], list: &str) -> Result<Vec<&'static str>, NotPersonal> {
    let personal: Vec<&'static str> = kinds
        .iter()
        .flat_map(|k| k.fields().iter().filter(|f| f.personal).map(|f| f.name))
        .collect();
    list.split(',')
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .map(|name| {
            personal
                .iter()
                .find(|p| **p == name)
                .copied()
                .ok_or_else(|| NotPersonal {
                    name: name.to_string(),
                    personal: personal.clone(),
                })
        })
        .collect()
}

/// The first required field that `fields` lacks (a new record's check).
pub fn first_missing_required(kind: Kind, has: impl Fn(&str) -> bool) -> Option<&'static str> {
    kind.fields()
        .iter()
        .find(|f| f.required && !has(f.name))
        .map(|f| f.name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn today() -> Today {
        Today(Date::parse("2026-11-29").unwrap())
    }

    #[track_caller]
    fn check(kind: Kind, field: &str, value: Value, expect: Option<RejectCode>) {
        let got = check_field(kind, field, &value, today())
            .err()
            .map(|r| r.code);
        assert_eq!(got, expect, "{}.{field} = {value}", kind.as_str());
    }

    #[test]
    fn lecture_rules() {
        use RejectCode::*;
        let k = Kind::Lecture;
        check(k, "held_on", json!("2000-01-01"), None);
        check(k, "held_on", json!("1999-12-31"), Some(InvalidField));
        check(k, "held_on", json!("2027-11-30"), None);
        check(k, "held_on", json!("2027-12-01"), Some(InvalidField));
        check(k, "held_on", json!("2021-02-29"), Some(InvalidField));
        check(k, "held_on", json!(null), Some(MissingField));
        check(k, "title", json!(""), Some(InvalidField));
        check(k, "title", json!("法".repeat(200)), None);
        check(k, "title", json!("法".repeat(201)), Some(InvalidField));
        check(k, "attendees", json!(87), None);
        check(k, "attendees", json!(87.0), Some(InvalidField));
        check(k, "attendees", json!(-1), Some(InvalidField));
        check(k, "attendees", json!(100_001), Some(InvalidField));
        check(k, "attendees", json!("87"), Some(InvalidField));
        check(k, "topics", json!(vec!["民法典"; 20]), None);
        check(k, "topics", json!(vec!["民法典"; 21]), Some(InvalidField));
        check(k, "topics", json!([""]), Some(InvalidField));
        check(k, "topics", json!(null), None);
        check(k, "speaker", json!(""), None);
        check(k, "speaker", json!("x".repeat(101)), Some(InvalidField));
        check(k, "audience", json!("villagers"), None);
        check(k, "audience", json!("aliens"), Some(InvalidField));
        check(k, "notes", json!("x".repeat(2001)), Some(InvalidField));
        check(k, "location", json!({"lat": 37.8, "lon": 112.5}), None);
        check(
            k,
            "location",
            json!({"lat": 91, "lon": 0}),
            Some(InvalidField),
        );
        check(
            k,
            "location",
            json!({"lat": 1, "lon": 0, "alt": 3}),
            Some(InvalidField),
        );
        check(k, "location", json!([1, 2]), Some(InvalidField));
        check(k, "colour", json!("red"), Some(UnknownField));
        check(k, "org_unit", json!(""), Some(InvalidField));
        check(k, "org_unit", json!(5), Some(InvalidField));
    }

    #[test]
    fn corner_and_site_rules() {
        use RejectCode::*;
        check(Kind::LibraryCorner, "status", json!("active"), None);
        check(
            Kind::LibraryCorner,
            "status",
            json!("open"),
            Some(InvalidField),
        );
        check(Kind::LibraryCorner, "books", json!(1_000_000), None);
        check(
            Kind::LibraryCorner,
            "books",
            json!(1_000_001),
            Some(InvalidField),
        );
        check(Kind::LibraryCorner, "opened_on", json!("1990-05-05"), None);
        check(
            Kind::LibraryCorner,
            "opened_on",
            json!("1990-5-5"),
            Some(InvalidField),
        );
        check(Kind::LibraryCorner, "title", json!("x"), Some(UnknownField));
        check(Kind::DemoSite, "year", json!(2100), None);
        check(Kind::DemoSite, "year", json!(1999), Some(InvalidField));
        check(Kind::DemoSite, "level", json!("provincial"), None);
        check(Kind::DemoSite, "level", json!("county"), Some(InvalidField));
        check(Kind::DemoSite, "status", json!(null), Some(MissingField));
        check(Kind::DemoSite, "notes", json!(null), None);
    }

    #[test]
    fn understander_rules() {
        use RejectCode::*;
        let k = Kind::LegalUnderstander;
        check(k, "name", json!("王丽"), None);
        check(k, "name", json!(""), Some(InvalidField));
        check(k, "name", json!("王".repeat(50)), None);
        check(k, "name", json!("王".repeat(51)), Some(InvalidField));
        check(k, "appointed_on", json!("2020-06-01"), None);
        check(k, "appointed_on", json!("1999-12-31"), Some(InvalidField));
        check(k, "appointed_on", json!("2027-12-01"), Some(InvalidField));
        check(k, "appointed_on", json!(null), Some(MissingField));
        check(k, "status", json!("serving"), None);
        check(k, "status", json!("resigned"), None);
        check(k, "status", json!("active"), Some(InvalidField));
        check(k, "training_hours", json!(0), None);
        check(k, "training_hours", json!(1000), None);
        check(k, "training_hours", json!(1001), Some(InvalidField));
        check(k, "training_hours", json!(-1), Some(InvalidField));
        check(k, "phone", json!("0351-1234567"), None);
        check(k, "phone", json!("+86 139 0000 0000"), None);
        check(k, "phone", json!("1".repeat(20)), None);
        check(k, "phone", json!("1".repeat(21)), Some(InvalidField));
        check(k, "phone", json!(""), Some(InvalidField));
        check(k, "phone", json!("+- "), Some(InvalidField));
        check(k, "phone", json!("139x"), Some(InvalidField));
        check(k, "phone", json!("１３９"), Some(InvalidField));
        check(k, "phone", json!(13900000000u64), Some(InvalidField));
        check(k, "phone", json!(null), None);
        check(k, "id_number", json!("x"), Some(UnknownField));
        let personal: Vec<_> = k.fields().iter().filter(|f| f.personal).collect();
        assert_eq!(personal.len(), 1);
        assert_eq!(personal[0].name, "phone");
        assert_eq!(personal_fields(&[k], " phone,,"), Ok(vec!["phone"]));
        assert_eq!(personal_fields(&Kind::ALL, ""), Ok(vec![]));
        let e = personal_fields(&Kind::ALL, "phone,name").unwrap_err();
        assert_eq!(e.to_string(), r#"include may name phone, not "name""#);
        let e = personal_fields(&[Kind::Lecture], "phone").unwrap_err();
        assert_eq!(e.personal, Vec::<&str>::new());
        for other in [Kind::Lecture, Kind::LibraryCorner, Kind::DemoSite] {
            assert!(other.fields().iter().all(|f| !f.personal), "{other:?}");
        }
        let phone = serde_json::to_value(&describe()[3].fields[5]).unwrap();
        assert_eq!(
            phone,
            json!({"name": "phone", "type": "phone", "required": false, "max_chars": 20,
                   "label": {"zh-CN": "联系电话", "en": "Phone"}})
        );
    }

    #[test]
    fn the_description_lists_every_field_with_its_rule() {
        let kinds = describe();
        assert_eq!(kinds.len(), Kind::ALL.len());
        let lecture = &kinds[0];
        assert_eq!(lecture.kind, "lecture");
        assert_eq!(lecture.label.zh, "法律大讲堂");
        let names: Vec<_> = lecture.fields.iter().map(|f| f.name.as_str()).collect();
        let specs: Vec<_> = Kind::Lecture.fields().iter().map(|f| f.name).collect();
        assert_eq!(names, specs);
        let held_on = serde_json::to_value(&lecture.fields[1]).unwrap();
        assert_eq!(
            held_on,
            json!({"name": "held_on", "type": "date", "required": true,
                   "min": "2000-01-01", "max_days_after_today": 366,
                   "label": {"zh-CN": "举办日期", "en": "Date held"}})
        );
        let audience = serde_json::to_value(&lecture.fields[7]).unwrap();
        assert_eq!(audience["type"], "enum");
        assert_eq!(
            audience["values"][0],
            json!({"value": "residents", "label": {"zh-CN": "居民", "en": "Residents"}})
        );
        assert_eq!(rejection_messages().len(), RejectCode::ALL.len());
    }

    #[test]
    fn missing_required_in_spec_order() {
        assert_eq!(
            first_missing_required(Kind::Lecture, |f| f == "org_unit"),
            Some("held_on")
        );
        assert_eq!(first_missing_required(Kind::DemoSite, |_| true), None);
        assert_eq!(Kind::parse("library_corner"), Some(Kind::LibraryCorner));
        assert_eq!(Kind::parse("Lecture"), None);
    }
}
