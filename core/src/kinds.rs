//! Typed views of the four record kinds, for apps that prefer structs to
//! field maps. They convert to and from the `fields` map of the wire (§6);
//! validation stays in [`crate::schema`], so a struct can hold a value the
//! server would reject and the app learns why from [`crate::schema::check_set`].

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::schema::Kind;

/// A position, `{"lat","lon"}`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Location {
    pub lat: f64,
    pub lon: f64,
}

/// A legal lecture (法律大讲堂).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Lecture {
    pub org_unit: String,
    /// `YYYY-MM-DD`.
    pub held_on: String,
    pub title: String,
    pub attendees: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub topics: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speaker: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub venue: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
}

/// A legal library corner (法治图书角).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LibraryCorner {
    pub org_unit: String,
    pub name: String,
    /// `active`, `inactive` or `closed`.
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub books: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opened_on: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_checked_on: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
}

/// A rule-of-law demonstration village or community (法治示范村(社区)).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DemoSite {
    pub org_unit: String,
    /// `national`, `provincial`, `municipal` or `district`.
    pub level: String,
    /// `candidate`, `awarded` or `revoked`.
    pub status: String,
    pub year: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
}

/// A legal understander's appointment (法律明白人): a resident of a
/// community or village trained to help neighbours with the law. Only what
/// a coordinator needs to reach and count them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LegalUnderstander {
    pub org_unit: String,
    pub name: String,
    /// `YYYY-MM-DD`.
    pub appointed_on: String,
    /// `serving` or `resigned`.
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub training_hours: Option<u32>,
    /// Left out of exports unless asked for (`include=phone`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
}

/// A typed record kind.
pub trait RecordKind: Serialize + for<'de> Deserialize<'de> {
    const KIND: Kind;

    /// The wire `fields` map (absent optionals are left out).
    fn to_fields(&self) -> Map<String, Value> {
        match serde_json::to_value(self) {
            Ok(Value::Object(m)) => m,
            // Plain structs of strings and numbers always serialize to objects.
            _ => Map::new(),
        }
    }

    /// Reads a `fields` map.
    ///
    /// # Errors
    /// A field of the wrong type, or a required field missing.
    fn from_fields(fields: &Map<String, Value>) -> Result<Self, serde_json::Error> {
        serde_json::from_value(Value::Object(fields.clone()))
    }
}

impl RecordKind for Lecture {
    const KIND: Kind = Kind::Lecture;
}

impl RecordKind for LibraryCorner {
    const KIND: Kind = Kind::LibraryCorner;
}

impl RecordKind for DemoSite {
    const KIND: Kind = Kind::DemoSite;
}

impl RecordKind for LegalUnderstander {
    const KIND: Kind = Kind::LegalUnderstander;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::date::Date;
    use crate::schema::{check_set, Today};

    #[test]
    fn typed_records_round_trip_and_validate() {
        let l = Lecture {
            org_unit: "140106001001".into(),
            held_on: "2020-07-01".into(),
            title: "民法典进社区".into(),
            attendees: 87,
            topics: vec!["民法典".into()],
            location: Some(Location {
                lat: 37.86,
                lon: 112.55,
            }),
            ..Lecture::default()
        };
        let fields = l.to_fields();
        assert!(!fields.contains_key("speaker"));
        assert!(check_set(
            Kind::Lecture,
            &fields,
            Today(Date::parse("2020-07-02").unwrap())
        )
        .is_ok());
        assert_eq!(Lecture::from_fields(&fields).unwrap(), l);
        let site = DemoSite {
            org_unit: "x".into(),
            level: "provincial".into(),
            status: "awarded".into(),
            year: 2020,
            notes: None,
        };
        assert_eq!(DemoSite::from_fields(&site.to_fields()).unwrap(), site);
        let person = LegalUnderstander {
            org_unit: "140106001001".into(),
            name: "王丽".into(),
            appointed_on: "2020-06-01".into(),
            status: "serving".into(),
            training_hours: Some(16),
            phone: Some("0351-1234567".into()),
            notes: None,
        };
        let fields = person.to_fields();
        assert!(!fields.contains_key("notes"));
        assert!(check_set(
            Kind::LegalUnderstander,
            &fields,
            Today(Date::parse("2020-07-02").unwrap())
        )
        .is_ok());
        assert_eq!(LegalUnderstander::from_fields(&fields).unwrap(), person);
    }
}
