//! The annual report as a Word document (`GET /v1/reports/annual?
//! format=docx`), laid out as a government work report is: a title, a
//! dated line, an opening sentence, numbered sections (一、二、三…) holding
//! the report's paragraph part by part ([`pufa_core::report::ReportParts`]),
//! and the figures as tables (the year's totals, month by month, and per
//! community and village), on A4 with the margins and type sizes of
//! GB/T 9704 (title 二号, text 三号 at a fixed 28 pt line).
//!
//! Built with `docx-rs` (no images, so without its image crate). A
//! district's report with a row for each of its 113 communities and
//! villages is ≈ 230 KB, made in ≈ 0.14 s by a debug build, so it is made
//! in memory.

use docx_rs::{
    AlignmentType, Docx, LineSpacing, LineSpacingType, Paragraph, Run, RunFonts, SpecialIndentType,
    Table, TableCell, TableRow, WidthType,
};
use pufa_core::date::Date;
use pufa_core::report::{self, AnnualReport, ReportParts, YearFigures};

use crate::export::Lang;
use crate::service_error::ServiceError;

/// The media type of a `.docx` file.
pub const DOCX_MIME: &str =
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document";

/// A4 in twentieths of a point.
const PAGE_TWIPS: (u32, u32) = (11_906, 16_838);
/// GB/T 9704 margins (top 37 mm, bottom 35 mm, left 28 mm, right 26 mm) in
/// twentieths of a point.
const MARGIN_TWIPS: [i32; 4] = [2_098, 1_984, 1_588, 1_474];
/// Type sizes in half points: 二号 (22 pt), 三号 (16 pt), 小四 (12 pt).
const TITLE_SIZE: usize = 44;
const TEXT_SIZE: usize = 32;
const TABLE_SIZE: usize = 24;
/// The fixed line of the text, 28 pt, in twentieths of a point.
const LINE_TWIPS: i32 = 560;

/// Typefaces a Chinese work report uses: the title in 宋体 (小标宋 where
/// installed is the same family), headings in 黑体, second-level headings
/// in 楷体, text in 仿宋.
const TITLE_FONT: &str = "宋体";
const HEADING_FONT: &str = "黑体";
const SUBHEADING_FONT: &str = "楷体";
const TEXT_FONT: &str = "仿宋";

/// A made document and the name to download it under.
pub struct ReportFile {
    pub bytes: Vec<u8>,
    pub filename: String,
}

/// Chinese section numbers.
const NUMERALS: [&str; 6] = ["一", "二", "三", "四", "五", "六"];

fn fonts(face: &str) -> RunFonts {
    RunFonts::new().east_asia(face).ascii(face).hi_ansi(face)
}

fn run(text: &str, face: &str, size: usize) -> Run {
    Run::new().add_text(text).fonts(fonts(face)).size(size)
}

/// Two characters of text, the first-line indent of every paragraph, in
/// twentieths of a point.
const INDENT_TWIPS: i32 = 2 * TEXT_SIZE as i32 * 10;

/// A paragraph of `run` at the fixed line, its first line indented.
fn line(run: Run) -> Paragraph {
    Paragraph::new()
        .add_run(run)
        .align(AlignmentType::Justified)
        .line_spacing(
            LineSpacing::new()
                .line_rule(LineSpacingType::Exact)
                .line(LINE_TWIPS),
        )
        .indent(
            None,
            Some(SpecialIndentType::FirstLine(INDENT_TWIPS)),
            None,
            None,
        )
}

fn text(s: &str) -> Paragraph {
    line(run(s, TEXT_FONT, TEXT_SIZE))
}

fn heading(s: &str, face: &str) -> Paragraph {
    line(run(s, face, TEXT_SIZE)).keep_next(true)
}

fn centered(s: &str, face: &str, size: usize) -> Paragraph {
    Paragraph::new()
        .add_run(run(s, face, size))
        .align(AlignmentType::Center)
}

fn cell(s: &str, header: bool, right: bool) -> TableCell {
    let mut r = run(s, TEXT_FONT, TABLE_SIZE);
    if header {
        r = r.bold();
    }
    let align = if right {
        AlignmentType::Right
    } else {
        AlignmentType::Left
    };
    TableCell::new().add_paragraph(Paragraph::new().add_run(r).align(align))
}

/// A table with a header row; columns after the first `text_columns` are
/// figures, set flush right.
fn table(headers: &[&str], rows: &[Vec<String>], text_columns: usize) -> Table {
    let head = TableRow::new(headers.iter().map(|h| cell(h, true, false)).collect());
    let body = rows.iter().map(|row| {
        TableRow::new(
            row.iter()
                .enumerate()
                .map(|(i, v)| cell(v, false, i >= text_columns))
                .collect(),
        )
    });
    Table::new(std::iter::once(head).chain(body).collect()).width(5_000, WidthType::Pct)
}

/// The words around the figures, in one language.
struct Words {
    title: String,
    dated: String,
    opening: String,
    filename: String,
    /// Section headings: activities, positions, awards, figures, notes.
    sections: [&'static str; 5],
    /// Sub-headings of the figures: the year, by month, by unit.
    tables: [&'static str; 3],
    /// Rows of the year's table.
    year_rows: YearRows,
    month_headers: [&'static str; 3],
    month: fn(u32) -> String,
    total: &'static str,
    unit_headers: [&'static str; 6],
    generated: String,
}

/// Labels of the rows of the year's table.
struct YearRows {
    lectures: &'static str,
    in_grassroots: String,
    attendees: &'static str,
    units_reached: String,
    corners: &'static str,
    units_with_corner: String,
    levels: [&'static str; 4],
    understanders: &'static str,
}

fn words(r: &AnnualReport, lang: Lang, today: Date) -> Words {
    let (y, m, d) = today.ymd();
    let org = &r.org.name;
    let year = r.year;
    match lang {
        Lang::Zh => {
            let p = report::grassroots_zh(r);
            Words {
                title: format!("{org}{year}年度法治宣传教育工作情况报告"),
                dated: format!("({y}年{m}月{d}日)"),
                opening: format!("现将{org}{year}年度法治宣传教育工作情况报告如下:"),
                filename: format!("{org}{year}年法治宣传教育工作报告.docx"),
                sections: [
                    "法治宣传教育活动开展情况",
                    "法治文化阵地建设情况",
                    "法治示范创建情况",
                    "主要数据",
                    "数据说明",
                ],
                tables: ["(一)全年汇总", "(二)分月情况", "(三)各单位情况"],
                year_rows: YearRows {
                    lectures: "法律讲座(场)",
                    in_grassroots: format!("其中在{p}开展(场)"),
                    attendees: "参加群众(人次)",
                    units_reached: format!("开展讲座的{p}(个)"),
                    corners: "在用法治图书角(个)",
                    units_with_corner: format!("建有法治图书角的{p}(个)"),
                    levels: [
                        "国家级示范(个)",
                        "省级示范(个)",
                        "市级示范(个)",
                        "区级示范(个)",
                    ],
                    understanders: "“法律明白人”(名)",
                },
                month_headers: ["月份", "讲座(场)", "参加群众(人次)"],
                month: |m| format!("{m}月"),
                total: "合计",
                unit_headers: [
                    "单位",
                    "所属",
                    "讲座(场)",
                    "参加群众(人次)",
                    "在用图书角(个)",
                    "获评示范(个)",
                ],
                generated: format!(
                    "本报告由普法同步系统于{y}年{m}月{d}日根据各单位登记的记录生成,数字以系统记录为准。"
                ),
            }
        }
        Lang::En => {
            let units = r.lectures.grassroots_units;
            let p = report::grassroots_en(r, units);
            Words {
                title: format!("Rule-of-law education in {org}, {year}: work report"),
                dated: format!("({today})"),
                opening: format!(
                    "This report sets out the rule-of-law education work of {org} in {year}."
                ),
                filename: format!("{org} {year} rule-of-law education report.docx"),
                sections: [
                    "Legal education activities",
                    "Legal culture positions",
                    "Demonstration sites",
                    "Figures",
                    "Notes on the data",
                ],
                tables: [
                    "(1) The year",
                    "(2) Month by month",
                    "(3) Community and village",
                ],
                year_rows: YearRows {
                    lectures: "Legal lectures",
                    in_grassroots: format!("of which in its {p}"),
                    attendees: "Attendances",
                    units_reached: format!("Of its {p}, with lectures"),
                    corners: "Active legal library corners",
                    units_with_corner: format!("Of its {p}, with a corner"),
                    levels: [
                        "National demonstration sites",
                        "Provincial demonstration sites",
                        "Municipal demonstration sites",
                        "District demonstration sites",
                    ],
                    understanders: "Legal understanders",
                },
                month_headers: ["Month", "Lectures", "Attendances"],
                month: |m| {
                    [
                        "January",
                        "February",
                        "March",
                        "April",
                        "May",
                        "June",
                        "July",
                        "August",
                        "September",
                        "October",
                        "November",
                        "December",
                    ]
                    .get(m as usize - 1)
                    .copied()
                    .unwrap_or_default()
                    .to_string()
                },
                total: "Total",
                unit_headers: [
                    "Unit",
                    "Part of",
                    "Lectures",
                    "Attendances",
                    "Active corners",
                    "Sites awarded",
                ],
                generated: format!(
                    "Made by Pufa Sync on {today} from the records the units entered; the records are authoritative."
                ),
            }
        }
    }
}

/// `covered / total` as a table cell, with the share when there is one.
fn share(covered: u64, total: u64) -> String {
    if total == 0 {
        covered.to_string()
    } else {
        let p = covered as f64 / total as f64 * 100.0;
        format!("{covered} / {total} ({p:.0}%)")
    }
}

/// The rows of the year's table.
fn year_table(r: &AnnualReport, w: &YearRows) -> Vec<Vec<String>> {
    let l = &r.lectures;
    let c = &r.library_corners;
    let s = &r.demo_sites;
    let mut rows = vec![
        (w.lectures.to_string(), l.count.to_string()),
        (w.in_grassroots.clone(), l.in_grassroots.to_string()),
        (w.attendees.to_string(), l.attendees.to_string()),
        (
            w.units_reached.clone(),
            share(l.grassroots_units_reached, l.grassroots_units),
        ),
        (w.corners.to_string(), c.active.to_string()),
        (
            w.units_with_corner.clone(),
            share(c.units_covered, c.units_total),
        ),
    ];
    for (label, n) in w
        .levels
        .iter()
        .zip([s.national, s.provincial, s.municipal, s.district])
    {
        rows.push((label.to_string(), n.to_string()));
    }
    if let Some(u) = &r.legal_understanders {
        rows.push((w.understanders.to_string(), u.appointed.to_string()));
    }
    rows.into_iter().map(|(a, b)| vec![a, b]).collect()
}

/// The report of `figures` (which `r` was made from) as a `.docx`, dated
/// `today`.
///
/// # Errors
/// [`ServiceError::Internal`] when the document cannot be written (writing
/// to memory does not fail short of running out of it).
pub fn annual_report_docx(
    r: &AnnualReport,
    figures: &YearFigures,
    lang: Lang,
    today: Date,
) -> Result<ReportFile, ServiceError> {
    let w = words(r, lang, today);
    let parts: ReportParts = match lang {
        Lang::Zh => report::parts_zh(r),
        Lang::En => report::parts_en(r),
    };
    let (page_w, page_h) = PAGE_TWIPS;
    let [top, bottom, left, right] = MARGIN_TWIPS;
    let mut doc = Docx::new()
        .page_size(page_w, page_h)
        .page_margin(
            docx_rs::PageMargin::new()
                .top(top)
                .bottom(bottom)
                .left(left)
                .right(right),
        )
        .add_paragraph(centered(&w.title, TITLE_FONT, TITLE_SIZE))
        .add_paragraph(centered(&w.dated, SUBHEADING_FONT, TEXT_SIZE))
        .add_paragraph(text(&w.opening));
    let mut n = 0;
    let mut section = |doc: Docx, title: &str| {
        let numbered = match lang {
            Lang::Zh => format!("{}、{title}", NUMERALS[n % NUMERALS.len()]),
            Lang::En => format!("{}. {title}", n + 1),
        };
        n += 1;
        doc.add_paragraph(heading(&numbered, HEADING_FONT))
    };
    for (title, body) in w
        .sections
        .iter()
        .zip([&parts.activities, &parts.positions, &parts.awards])
        .filter(|(_, body)| !body.is_empty())
    {
        doc = section(doc, title).add_paragraph(text(body));
    }
    doc = section(doc, w.sections[3])
        .add_paragraph(heading(w.tables[0], SUBHEADING_FONT))
        .add_table(table(&["", ""], &year_table(r, &w.year_rows), 1));
    if r.lectures.count > 0 {
        let mut rows: Vec<Vec<String>> = figures
            .months
            .iter()
            .map(|m| {
                vec![
                    (w.month)(m.month),
                    m.lectures.to_string(),
                    m.attendees.to_string(),
                ]
            })
            .collect();
        rows.push(vec![
            w.total.to_string(),
            r.lectures.count.to_string(),
            r.lectures.attendees.to_string(),
        ]);
        doc = doc
            .add_paragraph(heading(w.tables[1], SUBHEADING_FONT))
            .add_table(table(&w.month_headers, &rows, 1));
    }
    if figures.grassroots.len() > 1 {
        let rows: Vec<Vec<String>> = figures
            .grassroots
            .iter()
            .map(|u| {
                let s = &u.demo_sites;
                vec![
                    u.org.name.clone(),
                    u.path.last().map(|p| p.name.clone()).unwrap_or_default(),
                    u.lectures.to_string(),
                    u.attendees.to_string(),
                    u.corners_active.to_string(),
                    (s.national + s.provincial + s.municipal + s.district).to_string(),
                ]
            })
            .collect();
        doc = doc
            .add_paragraph(heading(w.tables[2], SUBHEADING_FONT))
            .add_table(table(&w.unit_headers, &rows, 2));
    }
    doc = section(doc, w.sections[4]);
    if !parts.caveat.is_empty() {
        doc = doc.add_paragraph(text(&parts.caveat));
    }
    doc = doc.add_paragraph(text(&w.generated));
    let mut out = std::io::Cursor::new(Vec::new());
    doc.pack(&mut out)
        .map_err(|e| ServiceError::Internal(format!("writing the report document: {e}")))?;
    Ok(ReportFile {
        bytes: out.into_inner(),
        filename: w.filename,
    })
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;

    use pufa_core::org::OrgTree;
    use pufa_core::totals::Aggregates;
    use pufa_core::wire::{OrgUnit, UnitType};

    use super::*;

    fn document_xml(bytes: Vec<u8>) -> String {
        let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes)).expect("a zip");
        let mut xml = String::new();
        zip.by_name("word/document.xml")
            .expect("word/document.xml")
            .read_to_string(&mut xml)
            .expect("utf-8");
        xml
    }

    #[test]
    fn an_empty_year_is_an_a4_report_that_says_so() {
        let tree = OrgTree::from_units([
            OrgUnit {
                code: "s".into(),
                name: "柳巷街道".into(),
                unit_type: UnitType::Street,
                parent: None,
            },
            OrgUnit {
                code: "c".into(),
                name: "柳巷第01社区".into(),
                unit_type: UnitType::Community,
                parent: Some("s".into()),
            },
        ]);
        let f = report::year_figures(&tree, &Aggregates::default(), "s", 2020).unwrap();
        let r = report::annual_report(&f);
        let today = Date::from_ymd(2021, 1, 5).unwrap();
        let file = annual_report_docx(&r, &f, Lang::Zh, today).unwrap();
        assert_eq!(file.filename, "柳巷街道2020年法治宣传教育工作报告.docx");
        let xml = document_xml(file.bytes);
        for needle in [
            "w:w=\"11906\"",
            "w:h=\"16838\"",
            "w:top=\"2098\"",
            "w:left=\"1588\"",
            "柳巷街道2020年度法治宣传教育工作情况报告",
            "(2021年1月5日)",
            "一、法治宣传教育活动开展情况",
            "暂无法治宣传教育工作记录",
            "二、主要数据",
            "三、数据说明",
        ] {
            assert!(xml.contains(needle), "{needle:?} not in {xml}");
        }
        // No month table for a year without lectures.
        assert!(!xml.contains("(二)分月情况"), "{xml}");
        let en = annual_report_docx(&r, &f, Lang::En, today).unwrap();
        assert_eq!(
            en.filename,
            "柳巷街道 2020 rule-of-law education report.docx"
        );
        assert!(document_xml(en.bytes).contains("1. Legal education activities"));
    }
}
