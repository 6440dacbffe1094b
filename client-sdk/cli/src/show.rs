//! What `pufa list` and `pufa status` print (tables for people, JSON for
//! scripts), and the hint that tells a person how to fix a rejected edit.

use super::*;

pub(crate) fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(plain).collect::<Vec<_>>().join(", "),
        Value::Object(o) if o.contains_key("lat") => {
            format!("{},{}", plain(&o["lat"]), plain(&o["lon"]))
        }
        other => other.to_string(),
    }
}

pub(crate) fn state_text(s: &SyncState, lang: Lang) -> String {
    match s {
        SyncState::Synced => lang.t("已同步", "synced").into(),
        SyncState::Pending => lang.t("待同步", "pending").into(),
        SyncState::Rejected { code, field, .. } => format!(
            "{}({code}{})",
            lang.t("被拒绝", "rejected"),
            field
                .as_deref()
                .map(|f| format!(" {f}"))
                .unwrap_or_default()
        ),
        SyncState::Conflicted { open, .. } => format!("{}({open})", lang.t("有冲突", "conflicted")),
    }
}

pub(crate) fn state_json(s: &SyncState) -> Value {
    match s {
        SyncState::Synced => json!({"state": "synced"}),
        SyncState::Pending => json!({"state": "pending"}),
        SyncState::Rejected {
            code,
            message,
            field,
            mutation,
        } => {
            json!({"state": "rejected", "code": code, "message": message, "field": field, "mutation": mutation})
        }
        SyncState::Conflicted { open, details } => {
            json!({"state": "conflicted", "open": open, "details": details})
        }
    }
}

pub(crate) fn record_json(r: &LocalRecord) -> Value {
    json!({"id": r.id, "kind": r.kind.as_str(), "fields": r.fields, "deleted": r.deleted, "seq": r.seq, "sync": state_json(&r.state)})
}

pub(crate) fn print_json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

pub(crate) fn print_table(records: &[LocalRecord], lang: Lang) {
    if records.is_empty() {
        println!("{}", lang.t("没有记录。", "No records."));
        return;
    }
    for r in records {
        let title = ["title", "name", "level"]
            .iter()
            .find_map(|f| r.fields.get(*f))
            .map(plain)
            .unwrap_or_default();
        let date = ["held_on", "appointed_on", "opened_on", "year"]
            .iter()
            .find_map(|f| r.fields.get(*f))
            .map(plain)
            .unwrap_or_default();
        println!(
            "{}  {:<14} {:<14} {:<10} {}{}  [{}]",
            r.id,
            r.kind.as_str(),
            r.org_unit().unwrap_or(""),
            date,
            title,
            if r.deleted {
                lang.t(" （已删除）", " (deleted)")
            } else {
                ""
            },
            state_text(&r.state, lang)
        );
    }
}

pub(crate) fn fix_hint(error: &pufa_core::wire::ErrorObject, lang: Lang) -> String {
    let f = error.field.as_deref().unwrap_or("");
    match error.code.as_str() {
        "period_locked" => {
            let (who, what) = error.locked.as_ref().map_or((String::new(), String::new()), |a| {
                (a.approved_by.clone(), format!("{} {}", a.org_unit, a.period))
            });
            match lang {
                Lang::Zh => format!("{what} 的数据已由 {who} 审核锁定，不能再改：请联系区里重新开放该时段，之后 pufa resubmit MUT 重新提交，或 pufa discard MUT 放弃"),
                Lang::En => format!("{what} was approved by {who} and is locked: ask the district to reopen it, then pufa resubmit MUT, or pufa discard MUT"),
            }
        }
        "out_of_scope" => lang.t("该单位不在本设备范围内：用 pufa resubmit MUT --org 单位 改到范围内的单位，或 pufa discard MUT", "the unit is outside this device's scope: pufa resubmit MUT --org UNIT, or pufa discard MUT").into(),
        "unknown_org_unit" => lang.t("服务器没有这个单位：等管理员导入后 pufa resubmit MUT，或改用其他单位", "the server has no such unit: pufa resubmit MUT once it is imported, or use another unit").into(),
        "invalid_field" | "missing_field" => format!("{} --{f} …", lang.t("修正后重新提交：pufa resubmit MUT", "fix it and send again: pufa resubmit MUT")),
        _ => lang.t("pufa resubmit MUT 重新提交，或 pufa discard MUT 放弃", "pufa resubmit MUT to send again, or pufa discard MUT").into(),
    }
}

pub(crate) fn status(client: &Client, cfg: &DeviceConfig, json_out: bool, lang: Lang) -> Out {
    let s = client.status()?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let all = client.list(&Filter {
        include_deleted: true,
        ..Filter::default()
    })?;
    let conflicted = all
        .iter()
        .filter(|r| matches!(r.state, SyncState::Conflicted { .. }))
        .count();
    if json_out {
        print_json(&json!({
            "server": cfg.server, "device_id": s.device_id, "role": cfg.role, "org_unit": cfg.org_unit, "label": cfg.label,
            "pending": s.pending, "oldest_pending_ms": s.oldest_pending_ms, "rejected": s.rejected, "conflicted": conflicted,
            "last_sync_ms": s.last_sync_ms, "clock_offset_ms": s.clock_offset_ms, "records": all.len(), "lost_on_server": s.lost_on_server,
        }));
        return Ok(());
    }
    let age = |ms: Option<u64>| {
        ms.map_or_else(
            || lang.t("从未", "never").to_string(),
            |t| format!("{} {}", ago(now.saturating_sub(t)), lang.t("前", "ago")),
        )
    };
    println!("{}: {}", lang.t("服务器", "server"), cfg.server);
    println!(
        "{}: {} ({}, {})",
        lang.t("设备", "device"),
        s.device_id,
        cfg.role,
        cfg.org_unit.as_deref().unwrap_or("*")
    );
    println!(
        "{}: {}",
        lang.t("本机记录", "records on this device"),
        all.len()
    );
    println!(
        "{}: {} ({} {})",
        lang.t("待同步修改", "pending edits"),
        s.pending,
        lang.t("最早", "oldest"),
        age(s.oldest_pending_ms)
    );
    println!(
        "{}: {}",
        lang.t("上次同步", "last sync"),
        age(s.last_sync_ms)
    );
    println!(
        "{}: {} ms",
        lang.t("时钟偏差（服务器−本机）", "clock offset (server − device)"),
        s.clock_offset_ms
    );
    println!(
        "{}: {}   {}: {}",
        lang.t("被拒绝", "rejected"),
        s.rejected,
        lang.t("有冲突", "conflicted"),
        conflicted
    );
    Ok(())
}

pub(crate) fn ago(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m", s / 60),
        3600..=86_399 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}
