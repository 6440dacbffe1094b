//! `pufa sync`: the SDK's sync with a progress bar, and what a person is
//! told about each rejected edit.

use super::*;

pub(crate) async fn sync(client: &Client, json_out: bool, lang: Lang) -> Out {
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg:>6} [{bar:30}] {pos}/{len}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    if json_out || !std::io::stderr().is_terminal() {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let b = bar.clone();
    let result = client
        .sync_with_progress(move |p: Progress| {
            b.set_message(format!("{:?}", p.phase).to_lowercase());
            b.set_length(p.total.max(p.done));
            b.set_position(p.done);
        })
        .await;
    bar.finish_and_clear();
    let r = result?;
    if json_out {
        print_json(&json!({
            "pushed": r.pushed, "applied": r.applied, "duplicates": r.duplicates, "pulled": r.pulled, "removed": r.removed,
            "checksum_ok": r.checksum_ok, "repaired": r.repaired, "lost_on_server": r.lost_on_server,
            "conflicts": r.conflicts,
            "rejected": r.rejected.iter().map(|x| json!({"mutation": x.mutation, "record_id": x.record_id, "error": x.error})).collect::<Vec<_>>(),
        }));
        return Ok(());
    }
    println!(
        "{} {}  {} {}  {} {}  {} {}",
        lang.t("上传", "pushed"),
        r.pushed,
        lang.t("下载", "pulled"),
        r.pulled,
        lang.t("冲突", "conflicts"),
        r.conflicts.len(),
        lang.t("被拒绝", "rejected"),
        r.rejected.len()
    );
    for c in &r.conflicts {
        println!(
            "  {} {} {}: {} {} / {} {}",
            lang.t("冲突", "conflict"),
            c.record_id,
            c.field,
            lang.t("保留", "kept"),
            plain(&c.winner),
            lang.t("未采用", "not kept"),
            plain(&c.loser)
        );
    }
    for x in &r.rejected {
        println!(
            "  {} {} {}: {}",
            lang.t("被拒绝", "rejected"),
            x.record_id,
            x.error.code,
            x.error.message
        );
        println!(
            "    {}",
            fix_hint(&x.error, lang).replace("MUT", &x.mutation.to_string())
        );
    }
    if !r.lost_on_server.is_empty() {
        println!(
            "  {} {}",
            r.lost_on_server.len(),
            lang.t(
                "条已确认记录服务器上已没有（服务器数据被恢复）",
                "confirmed records are no longer on the server (it was restored)"
            )
        );
    }
    if !r.checksum_ok {
        println!(
            "  {}",
            lang.t(
                "校验未通过：请稍后再次同步",
                "checksum did not match: sync again later"
            )
        );
    }
    Ok(())
}
