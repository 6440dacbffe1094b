//! Turning text (flags, prompts, CSV cells) into field values by the kind's
//! rules, and asking for missing fields in a terminal.

use std::io::{BufRead, Write};

use pufa_core::date::Date;
use pufa_core::schema::{check_field, choice_label, FieldType, Kind, Today};
use pufa_core::wire::OrgUnit;
use serde_json::{json, Value};

use crate::i18n::Lang;

/// Parses one field's text. Empty text or `null` means "clear" (`Value::Null`).
///
/// # Errors
/// A message naming the field and what it takes.
pub fn parse_value(kind: Kind, field: &str, text: &str) -> Result<Value, String> {
    let Some(spec) = kind.field(field) else {
        let known: Vec<_> = kind.fields().iter().map(|f| f.name).collect();
        return Err(format!(
            "{} has no field {field:?} (fields: {})",
            kind.as_str(),
            known.join(", ")
        ));
    };
    let text = text.trim();
    if text.is_empty() || text == "null" {
        return Ok(Value::Null);
    }
    match &spec.ty {
        FieldType::Int { .. } => text
            .parse::<i64>()
            .map(Value::from)
            .map_err(|_| format!("{field}: {text:?} is not a whole number")),
        FieldType::Topics => Ok(Value::Array(
            text.split([',', '，', '、'])
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(|t| json!(t))
                .collect(),
        )),
        FieldType::Location => {
            let parts: Vec<_> = text.split([',', '，']).map(str::trim).collect();
            match parts.as_slice() {
                [lat, lon] => match (lat.parse::<f64>(), lon.parse::<f64>()) {
                    (Ok(lat), Ok(lon)) => Ok(json!({"lat": lat, "lon": lon})),
                    _ => Err(format!("{field}: write lat,lon, e.g. 37.86,112.55")),
                },
                _ => Err(format!("{field}: write lat,lon, e.g. 37.86,112.55")),
            }
        }
        _ => Ok(Value::String(text.to_string())),
    }
}

/// Resolves an org unit given by code or by (unique) name.
///
/// # Errors
/// No such unit in this device's scope, or a name that matches several.
pub fn resolve_org(units: &[OrgUnit], text: &str) -> Result<String, String> {
    if units.is_empty() || units.iter().any(|u| u.code == text) {
        return Ok(text.to_string());
    }
    let by_name: Vec<_> = units.iter().filter(|u| u.name == text).collect();
    match by_name.as_slice() {
        [u] => Ok(u.code.clone()),
        [] => {
            let partial: Vec<_> = units.iter().filter(|u| u.name.contains(text)).collect();
            match partial.as_slice() {
                [u] => Ok(u.code.clone()),
                [] => Err(format!("no org unit {text:?} in this device's scope (see `pufa status` and sync to refresh)")),
                many => Err(format!("{text:?} matches several units: {}", many.iter().map(|u| format!("{} {}", u.code, u.name)).collect::<Vec<_>>().join("; "))),
            }
        }
        many => Err(format!(
            "{text:?} matches several units: {}",
            many.iter()
                .map(|u| u.code.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// What prompting needs to know.
#[derive(Clone, Copy)]
pub struct Ask<'a> {
    pub lang: Lang,
    pub kind: Kind,
    pub units: &'a [OrgUnit],
    pub today: Today,
}

/// Asks for one field until the answer passes the field's rule (or is
/// empty for an optional field). `None` at end of input.
pub fn prompt(
    ctx: &Ask<'_>,
    field: &str,
    required: bool,
    input: &mut dyn BufRead,
    out: &mut dyn Write,
) -> Option<Value> {
    let Ask {
        lang,
        kind,
        units,
        today,
    } = *ctx;
    loop {
        let hint = match (field, kind.field(field).map(|f| &f.ty)) {
            (_, Some(FieldType::OneOf(options))) => {
                let named: Vec<_> = options
                    .iter()
                    .map(|v| match choice_label(field, v) {
                        Some(l) => format!("{v} {}", lang.t(l.zh, l.en)),
                        None => v.to_string(),
                    })
                    .collect();
                format!(" [{}]", named.join(" / "))
            }
            ("org_unit", _) if !units.is_empty() => {
                let grassroots: Vec<_> = units
                    .iter()
                    .take(6)
                    .map(|u| format!("{} {}", u.code, u.name))
                    .collect();
                format!(
                    " [{}{}]",
                    grassroots.join("; "),
                    if units.len() > 6 { "; …" } else { "" }
                )
            }
            ("held_on", _) => format!(" [{}]", today.0),
            _ => String::new(),
        };
        let opt = if required {
            ""
        } else {
            lang.t(" (可留空)", " (optional)")
        };
        let _ = write!(out, "{}{opt}{hint}: ", lang.field(kind, field));
        let _ = out.flush();
        let mut line = String::new();
        if input.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let mut text = line.trim().to_string();
        if text.is_empty() && field == "held_on" {
            text = today.0.to_string();
        }
        if text.is_empty() && !required {
            return Some(Value::Null);
        }
        if field == "org_unit" {
            match resolve_org(units, &text) {
                Ok(code) => text = code,
                Err(e) => {
                    let _ = writeln!(out, "  ✗ {e}");
                    continue;
                }
            }
        }
        let value = match parse_value(kind, field, &text) {
            Ok(v) => v,
            Err(e) => {
                let _ = writeln!(out, "  ✗ {e}");
                continue;
            }
        };
        if value.is_null() && required {
            let _ = writeln!(out, "  ✗ {}", lang.t("此项必填", "this field is required"));
            continue;
        }
        match check_field(kind, field, &value, today) {
            Ok(()) => return Some(value),
            Err(r) => {
                let _ = writeln!(out, "  ✗ {}", r.message);
            }
        }
    }
}

/// Today for validation (the device's clock; the server re-judges).
pub fn today() -> Today {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    Today(Date::from_unix_ms(ms))
}
