//! Records from the command line: reading kinds, dates and `field=value`
//! changes (`pufa add`, `pufa edit`), adding a record, and finding one by
//! a prefix of its id.

use super::*;

pub(crate) fn parse_kind(text: &str) -> Out<Kind> {
    match text {
        "corner" => Ok(Kind::LibraryCorner),
        "site" => Ok(Kind::DemoSite),
        "understander" => Ok(Kind::LegalUnderstander),
        other => Kind::parse(other).ok_or_else(|| {
            Fail::invalid(format!(
                "unknown kind {other:?}: lecture, library_corner (corner), demo_site (site) or legal_understander (understander)"
            ))
        }),
    }
}

pub(crate) fn parse_date(flag: &str, text: &str) -> Out<Date> {
    Date::parse(text)
        .ok_or_else(|| Fail::invalid(format!("--{flag}: {text:?} is not a date YYYY-MM-DD")))
}

/// `--field value` / `--field=value` pairs; an empty value clears.
pub(crate) fn parse_changes(kind: Kind, args: &[String]) -> Out<Map<String, Value>> {
    let mut set = Map::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let Some(flag) = a.strip_prefix("--") else {
            return Err(Fail::invalid(format!("expected --field value, got {a:?}")));
        };
        let (name, value) = match flag.split_once('=') {
            Some((n, v)) => (n.to_string(), v.to_string()),
            None => (
                flag.to_string(),
                it.next()
                    .cloned()
                    .ok_or_else(|| Fail::invalid(format!("--{flag} needs a value")))?,
            ),
        };
        let name = match name.replace('-', "_").as_str() {
            "org" => "org_unit".to_string(),
            n => n.to_string(),
        };
        let v = fields::parse_value(kind, &name, &value).map_err(Fail::invalid)?;
        set.insert(name, v);
    }
    Ok(set)
}

pub(crate) fn add(
    client: &Client,
    kind: Kind,
    given: &[(&str, &Option<String>)],
    no_input: bool,
    json_out: bool,
    lang: Lang,
) -> Out {
    let units: Vec<OrgUnit> = client_units(client);
    let today = fields::today();
    let mut set = Map::new();
    for (name, value) in given {
        if let Some(text) = value {
            let text = if *name == "org_unit" {
                fields::resolve_org(&units, text).map_err(Fail::invalid)?
            } else {
                text.clone()
            };
            let v = fields::parse_value(kind, name, &text).map_err(Fail::invalid)?;
            if !v.is_null() {
                set.insert(name.to_string(), v);
            }
        }
    }
    let missing: Vec<&str> = kind
        .fields()
        .iter()
        .filter(|f| f.required && !set.contains_key(f.name))
        .map(|f| f.name)
        .collect();
    if !missing.is_empty() {
        let interactive = !no_input && std::io::stdin().is_terminal();
        if !interactive {
            return Err(Fail::invalid(format!(
                "{} {}",
                lang.t("缺少必填字段：", "missing required fields:"),
                missing
                    .iter()
                    .map(|m| format!(
                        "--{}",
                        if *m == "org_unit" { "org" } else { m }.replace('_', "-")
                    ))
                    .collect::<Vec<_>>()
                    .join(" ")
            )));
        }
        let stdin = std::io::stdin();
        let mut input = stdin.lock();
        let mut out = std::io::stderr();
        for name in missing {
            let ctx = fields::Ask {
                lang,
                kind,
                units: &units,
                today,
            };
            match fields::prompt(&ctx, name, true, &mut input, &mut out) {
                Some(v) => {
                    set.insert(name.to_string(), v);
                }
                None => return Err(Fail::invalid(lang.t("输入已结束", "input ended"))),
            }
        }
    }
    let id = client.create_fields(kind, set)?;
    if json_out {
        print_json(&json!({"id": id}));
    } else {
        println!("{id}");
    }
    Ok(())
}

pub(crate) fn client_units(client: &Client) -> Vec<OrgUnit> {
    client.org_units().unwrap_or_default()
}

pub(crate) fn find_id(client: &Client, text: &str) -> Out<Uuid> {
    if let Ok(id) = Uuid::parse_str(text) {
        return Ok(id);
    }
    let all = client.list(&Filter {
        include_deleted: true,
        ..Filter::default()
    })?;
    let hits: Vec<_> = all
        .iter()
        .filter(|r| r.id.to_string().starts_with(text))
        .collect();
    match hits.as_slice() {
        [r] => Ok(r.id),
        [] => Err(Fail::new(5, format!("no record {text}"))),
        _ => Err(Fail::invalid(format!(
            "{text} matches {} records: give more of the id",
            hits.len()
        ))),
    }
}
