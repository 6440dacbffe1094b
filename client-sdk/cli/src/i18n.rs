//! The CLI's words in zh-CN and English. Chosen by `--lang`, else `LANG`
//! (English when it starts with `en`, Chinese otherwise).

use pufa_core::schema::{FieldType, Kind};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lang {
    Zh,
    En,
}

impl Lang {
    pub fn detect(flag: Option<&str>) -> Lang {
        let from = |s: &str| {
            if s.to_ascii_lowercase().starts_with("en") {
                Lang::En
            } else {
                Lang::Zh
            }
        };
        match flag {
            Some(f) => from(f),
            None => std::env::var("LANG").map_or(Lang::Zh, |l| from(&l)),
        }
    }

    /// A message in this language.
    pub fn t(self, zh: &'static str, en: &'static str) -> &'static str {
        match self {
            Lang::Zh => zh,
            Lang::En => en,
        }
    }

    /// A field's human name (core's schema says it), with how to type
    /// it where that is not obvious.
    pub fn field(self, kind: Kind, name: &str) -> String {
        let Some(spec) = kind.field(name) else {
            return name.to_string();
        };
        let label = self.t(spec.label.zh, spec.label.en);
        let hint = match spec.ty {
            FieldType::HeldOn | FieldType::Date => " (YYYY-MM-DD)",
            FieldType::Topics => self.t(" (逗号分隔)", " (comma-separated)"),
            FieldType::Location => self.t(" (纬度,经度)", " (lat,lon)"),
            FieldType::Phone { .. } => self.t(" (数字、+、-、空格)", " (digits, +, -, spaces)"),
            _ => "",
        };
        format!("{label}{hint}")
    }
}
