//! What kinds, enum values and rejections are called, in Chinese (zh-CN,
//! the default) and English. Field names sit beside their rules in
//! [`super::FieldSpec::label`]; everything else that a person reads about
//! the schema is here, once, for the field app (through `GET /v1/schema`),
//! the CLI, the dashboard and the exports alike.

use super::{Kind, RejectCode};
use crate::wire::Localized;

/// A text in the two languages the apps speak.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Label {
    pub zh: &'static str,
    pub en: &'static str,
}

impl From<Label> for Localized {
    fn from(l: Label) -> Localized {
        Localized {
            zh: l.zh.to_string(),
            en: l.en.to_string(),
        }
    }
}

impl Kind {
    /// One record of the kind: 法律大讲堂 / Legal lecture.
    pub fn label(self) -> Label {
        match self {
            Kind::Lecture => Label {
                zh: "法律大讲堂",
                en: "Legal lecture",
            },
            Kind::LibraryCorner => Label {
                zh: "法治图书角",
                en: "Legal library corner",
            },
            Kind::DemoSite => Label {
                zh: "法治示范村（社区）",
                en: "Rule-of-law demonstration site",
            },
            Kind::LegalUnderstander => Label {
                zh: "法律明白人",
                en: "Legal understander",
            },
        }
    }

    /// Records of the kind, as a heading says it (Chinese has no plural).
    pub fn label_plural(self) -> Label {
        let one = self.label();
        Label {
            zh: one.zh,
            en: match self {
                Kind::Lecture => "Legal lectures",
                Kind::LibraryCorner => "Legal library corners",
                Kind::DemoSite => "Rule-of-law demonstration sites",
                Kind::LegalUnderstander => "Legal understanders",
            },
        }
    }
}

impl RejectCode {
    /// What a person is told when an edit is rejected with this code.
    /// `{field}` stands for the field's name (its label where the kind
    /// is known, else the name as pushed).
    pub fn message(self) -> Label {
        let (zh, en) = match self {
            RejectCode::InvalidHlc => (
                "这条修改的时间戳不属于本设备，请重新登记设备后再试",
                "This edit's timestamp belongs to another device; enrol this device again and retry",
            ),
            RejectCode::UnknownKind => (
                "服务器不认识这种记录类型，请更新应用",
                "The server does not know this kind of record; update the app",
            ),
            RejectCode::KindMismatch => (
                "记录类型与服务器上的记录不一致",
                "The record's kind differs from the one on the server",
            ),
            RejectCode::UnknownField => (
                "服务器不认识字段：{field}，请更新应用",
                "The server does not know the field {field}; update the app",
            ),
            RejectCode::InvalidField => ("{field}的值不符合要求", "{field}: the value is not allowed"),
            RejectCode::MissingField => ("缺少必填项：{field}", "Required field missing: {field}"),
            RejectCode::UnknownOrgUnit => (
                "服务器上没有所选的单位，请同步后重新选择",
                "The chosen unit does not exist on the server; sync and choose again",
            ),
            RejectCode::OutOfScope => (
                "该单位不在本设备的工作范围内",
                "That unit is outside this device's scope",
            ),
            RejectCode::IdReused => (
                "这条修改的编号已用于另一条内容不同的修改",
                "This edit's id was already used for a different edit",
            ),
            RejectCode::PeriodLocked => (
                "该时段的数据已经审核锁定，不能再修改；如需修改，请联系区里重新开放",
                "The figures of this period are approved and locked; ask the district to reopen it",
            ),
        };
        Label { zh, en }
    }
}

/// What an enum value of `field` is called (`None` for a value no field
/// takes).
pub fn choice_label(field: &str, value: &str) -> Option<Label> {
    let (zh, en) = match (field, value) {
        ("audience", "residents") => ("居民", "Residents"),
        ("audience", "villagers") => ("村民", "Villagers"),
        ("audience", "students") => ("学生", "Students"),
        ("audience", "enterprise_staff") => ("企业职工", "Enterprise staff"),
        ("audience", "officials") => ("机关干部", "Officials"),
        ("audience", "mixed") => ("多类人群", "Mixed"),
        ("status", "active") => ("在用", "Active"),
        ("status", "inactive") => ("暂停使用", "Inactive"),
        ("status", "closed") => ("已关闭", "Closed"),
        ("level", "national") => ("国家级", "National"),
        ("level", "provincial") => ("省级", "Provincial"),
        ("level", "municipal") => ("市级", "Municipal"),
        ("level", "district") => ("区级", "District"),
        ("status", "candidate") => ("创建中", "Candidate"),
        ("status", "awarded") => ("已授牌", "Awarded"),
        ("status", "revoked") => ("已撤销", "Revoked"),
        ("status", "serving") => ("在任", "Serving"),
        ("status", "resigned") => ("已离任", "Resigned"),
        _ => return None,
    };
    Some(Label { zh, en })
}

#[cfg(test)]
mod tests {
    use super::super::FieldType;
    use super::*;

    fn named(l: Label) -> bool {
        !l.zh.trim().is_empty() && !l.en.trim().is_empty() && l.zh != l.en
    }

    #[test]
    fn every_kind_field_and_value_is_named_in_both_languages() {
        for kind in Kind::ALL {
            assert!(
                named(kind.label()) && named(kind.label_plural()),
                "{kind:?}"
            );
            for spec in kind.fields() {
                assert!(named(spec.label), "{kind:?}.{}", spec.name);
                if let FieldType::OneOf(values) = spec.ty {
                    for v in values {
                        let l = choice_label(spec.name, v);
                        assert!(l.is_some_and(named), "{kind:?}.{} = {v}", spec.name);
                    }
                }
            }
        }
    }

    #[test]
    fn every_rejection_has_a_message_and_placeholders_agree() {
        for code in RejectCode::ALL {
            let m = code.message();
            assert!(named(m), "{code:?}");
            assert_eq!(
                m.zh.contains("{field}"),
                m.en.contains("{field}"),
                "{code:?}"
            );
        }
    }

    #[test]
    fn field_labels_are_unique_within_a_kind() {
        for kind in Kind::ALL {
            let mut zh: Vec<_> = kind.fields().iter().map(|f| f.label.zh).collect();
            zh.sort_unstable();
            zh.dedup();
            assert_eq!(zh.len(), kind.fields().len(), "{kind:?}");
        }
    }
}
