//! `pufa import` (CSV or JSON) and `pufa export`.

use super::*;

pub(crate) fn row_error(lang: Lang, line: usize, e: &str) -> String {
    match lang {
        Lang::Zh => format!("第 {line} 行: {e}"),
        Lang::En => format!("row {line}: {e}"),
    }
}

pub(crate) fn import(client: &Client, file: &Path, kind: Option<&str>, lang: Lang) -> Out {
    let bytes =
        std::fs::read(file).map_err(|e| Fail::invalid(format!("{}: {e}", file.display())))?;
    let text = String::from_utf8(bytes)
        .map_err(|_| Fail::invalid(format!("{}: not UTF-8", file.display())))?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let mut reader = csv::ReaderBuilder::new()
        .flexible(false)
        .from_reader(text.as_bytes());
    let headers: Vec<String> = reader
        .headers()
        .map_err(|e| Fail::invalid(e.to_string()))?
        .iter()
        .map(|h| h.trim().to_string())
        .collect();
    let fixed = kind.map(parse_kind).transpose()?;
    if fixed.is_none() && !headers.iter().any(|h| h == "kind") {
        return Err(Fail::invalid(lang.t(
            "文件没有 kind 列：请加 --kind",
            "the file has no kind column: add --kind",
        )));
    }
    let units = client_units(client);
    let today = fields::today();
    let (mut rows, mut errors) = (Vec::new(), Vec::new());
    for (i, rec) in reader.records().enumerate() {
        let line = i + 2;
        let rec = match rec {
            Ok(r) => r,
            Err(e) => {
                errors.push(row_error(lang, line, &e.to_string()));
                continue;
            }
        };
        let row: Vec<(&str, &str)> = headers.iter().map(String::as_str).zip(rec.iter()).collect();
        let row_kind = match fixed {
            Some(k) => Ok(k),
            None => parse_kind(
                row.iter()
                    .find(|(h, _)| *h == "kind")
                    .map_or("", |(_, v)| v.trim()),
            )
            .map_err(|f| f.message),
        };
        let result = row_kind.and_then(|k| {
            let mut set = Map::new();
            for (h, v) in &row {
                if *h == "kind" || *h == "id" || v.trim().is_empty() {
                    continue;
                }
                let value = if *h == "org_unit" {
                    fields::resolve_org(&units, v.trim())?
                } else {
                    v.trim().to_string()
                };
                set.insert(h.to_string(), fields::parse_value(k, h, &value)?);
            }
            pufa_core::schema::check_set(k, &set, today).map_err(|r| r.message)?;
            if let Some(m) = pufa_core::schema::first_missing_required(k, |f| set.contains_key(f)) {
                return Err(format!("{m}: {}", lang.t("必填", "required")));
            }
            Ok((k, set))
        });
        match result {
            Ok(r) => rows.push(r),
            Err(e) => errors.push(row_error(lang, line, &e)),
        }
    }
    if !errors.is_empty() {
        for e in &errors {
            eprintln!("  ✗ {e}");
        }
        return Err(Fail::invalid(format!(
            "{} {} {}",
            errors.len(),
            lang.t(
                "行有错误，没有导入任何记录；改正后重新导入",
                "rows have errors; nothing was imported; fix them and import again"
            ),
            file.display()
        )));
    }
    let n = client.create_many(rows)?.len();
    println!("{} {n}", lang.t("已导入", "imported"));
    Ok(())
}

pub(crate) fn export(
    client: &Client,
    format: &str,
    kind: Option<&str>,
    include: Option<&str>,
    out: Option<&Path>,
) -> Out {
    let kind = kind.map(parse_kind).transpose()?;
    let kinds: Vec<Kind> = kind.map_or(Kind::ALL.to_vec(), |k| vec![k]);
    let include = pufa_core::schema::personal_fields(&kinds, include.unwrap_or_default())
        .map_err(|e| Fail::invalid(format!("--{e}")))?;
    // A phone number leaves the device in a file only when asked for.
    let exported = |k: Kind, name: &str| {
        k.field(name)
            .is_none_or(|f| !f.personal || include.contains(&f.name))
    };
    let records = client.list(&Filter {
        kind,
        include_deleted: true,
        ..Filter::default()
    })?;
    let bytes = match format {
        "json" => {
            let list = records.iter().map(|r| {
                let mut v = record_json(r);
                if let Some(fields) = v["fields"].as_object_mut() {
                    fields.retain(|name, _| exported(r.kind, name));
                }
                v
            });
            serde_json::to_vec_pretty(&Value::Array(list.collect())).unwrap_or_default()
        }
        "csv" => {
            let mut columns: Vec<&str> = Vec::new();
            for k in &kinds {
                for f in k.fields() {
                    if !columns.contains(&f.name) && exported(*k, f.name) {
                        columns.push(f.name);
                    }
                }
            }
            let mut w = csv::Writer::from_writer(Vec::from("\u{feff}".as_bytes()));
            let mut header = vec!["id", "kind", "deleted", "sync"];
            header.extend(&columns);
            w.write_record(&header)
                .map_err(|e| Fail::new(1, e.to_string()))?;
            for r in &records {
                let mut row = vec![
                    r.id.to_string(),
                    r.kind.as_str().to_string(),
                    r.deleted.to_string(),
                    state_json(&r.state)["state"]
                        .as_str()
                        .unwrap_or("")
                        .to_string(),
                ];
                row.extend(
                    columns
                        .iter()
                        .map(|c| r.fields.get(*c).map(plain).unwrap_or_default()),
                );
                w.write_record(&row)
                    .map_err(|e| Fail::new(1, e.to_string()))?;
            }
            w.into_inner().map_err(|e| Fail::new(1, e.to_string()))?
        }
        other => return Err(Fail::invalid(format!("--format {other:?}: csv or json"))),
    };
    match out {
        Some(path) => pufa_durable::replace(path, &bytes, pufa_durable::Access::Shared)
            .map_err(|e| Fail::new(1, format!("{}: {e}", path.display()))),
        None => std::io::stdout()
            .write_all(&bytes)
            .map_err(|e| Fail::new(1, e.to_string())),
    }
}
