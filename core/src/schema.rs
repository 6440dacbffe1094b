//! The three record kinds and their field rules (contract §6), and the
//! per-mutation judgement of rule 2 in the contract's order.

use serde_json::{Map, Value};

use crate::date::Date;
use crate::wire::ErrorObject;

/// Days after the server's UTC date that `held_on` may still name.
pub const HELD_ON_FUTURE_DAYS_MAX: i32 = 366;
/// Longest `notes`, in characters.
pub const NOTES_CHARS_MAX: usize = 2000;

/// A record kind.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum Kind {
    Lecture,
    LibraryCorner,
    DemoSite,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Lecture, Kind::LibraryCorner, Kind::DemoSite];

    pub fn parse(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == name)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Lecture => "lecture",
            Kind::LibraryCorner => "library_corner",
            Kind::DemoSite => "demo_site",
        }
    }

    /// The kind's fields, required ones first, in the contract's order.
    pub fn fields(self) -> &'static [FieldSpec] {
        match self {
            Kind::Lecture => LECTURE,
            Kind::LibraryCorner => LIBRARY_CORNER,
            Kind::DemoSite => DEMO_SITE,
        }
    }

    pub fn field(self, name: &str) -> Option<&'static FieldSpec> {
        self.fields().iter().find(|f| f.name == name)
    }
}

/// One field's rule.
#[derive(Debug)]
pub struct FieldSpec {
    pub name: &'static str,
    pub required: bool,
    pub ty: FieldType,
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
}

const fn f(name: &'static str, required: bool, ty: FieldType) -> FieldSpec {
    FieldSpec { name, required, ty }
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

static LECTURE: &[FieldSpec] = &[
    f("org_unit", true, FieldType::OrgUnit),
    f("held_on", true, FieldType::HeldOn),
    f("title", true, FieldType::Text { min: 1, max: 200 }),
    f(
        "attendees",
        true,
        FieldType::Int {
            min: 0,
            max: 100_000,
        },
    ),
    f("topics", false, FieldType::Topics),
    f("speaker", false, FieldType::Text { min: 0, max: 100 }),
    f("venue", false, FieldType::Text { min: 0, max: 200 }),
    f("audience", false, FieldType::OneOf(AUDIENCES)),
    f(
        "notes",
        false,
        FieldType::Text {
            min: 0,
            max: NOTES_CHARS_MAX,
        },
    ),
    f("location", false, FieldType::Location),
];

static LIBRARY_CORNER: &[FieldSpec] = &[
    f("org_unit", true, FieldType::OrgUnit),
    f("name", true, FieldType::Text { min: 1, max: 100 }),
    f("status", true, FieldType::OneOf(CORNER_STATUSES)),
    f(
        "books",
        false,
        FieldType::Int {
            min: 0,
            max: 1_000_000,
        },
    ),
    f("opened_on", false, FieldType::Date),
    f("last_checked_on", false, FieldType::Date),
    f(
        "notes",
        false,
        FieldType::Text {
            min: 0,
            max: NOTES_CHARS_MAX,
        },
    ),
];

static DEMO_SITE: &[FieldSpec] = &[
    f("org_unit", true, FieldType::OrgUnit),
    f("level", true, FieldType::OneOf(SITE_LEVELS)),
    f("status", true, FieldType::OneOf(SITE_STATUSES)),
    f(
        "year",
        true,
        FieldType::Int {
            min: 2000,
            max: 2100,
        },
    ),
    f(
        "notes",
        false,
        FieldType::Text {
            min: 0,
            max: NOTES_CHARS_MAX,
        },
    ),
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
}

impl RejectCode {
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
        }
    }
}

/// Why a mutation (or one field value) was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    pub code: RejectCode,
    pub field: Option<String>,
    pub message: String,
}

impl Rejection {
    pub fn new(code: RejectCode, field: Option<&str>, message: impl Into<String>) -> Rejection {
        Rejection {
            code,
            field: field.map(str::to_string),
            message: message.into(),
        }
    }

    pub fn to_error(&self) -> ErrorObject {
        ErrorObject {
            code: self.code.as_str().to_string(),
            message: self.message.clone(),
            field: self.field.clone(),
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
                let min = Date::from_ymd(2000, 1, 1).expect("2000-01-01 is a real day");
                let max = today.0.add_days(HELD_ON_FUTURE_DAYS_MAX);
                if d < min || d > max {
                    invalid(format!("must be between 2000-01-01 and {max}"))
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
            Some(items) if items.len() <= 20 => {
                for item in items {
                    match item.as_str().map(|s| s.chars().count()) {
                        Some(1..=50) => {}
                        _ => {
                            return invalid(
                                "each topic must be a string of 1..50 characters".into(),
                            )
                        }
                    }
                }
                Ok(())
            }
            Some(_) => invalid("at most 20 topics".into()),
            None => invalid("must be an array of strings".into()),
        },
        FieldType::Location => {
            let ok = value.as_object().is_some_and(|o| {
                o.len() == 2
                    && o.get("lat")
                        .and_then(Value::as_f64)
                        .is_some_and(|v| (-90.0..=90.0).contains(&v))
                    && o.get("lon")
                        .and_then(Value::as_f64)
                        .is_some_and(|v| (-180.0..=180.0).contains(&v))
            });
            if ok {
                Ok(())
            } else {
                invalid(r#"must be {"lat":-90..90,"lon":-180..180}"#.into())
            }
        }
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
