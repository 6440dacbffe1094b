//! Exports for spreadsheets: records of one kind and the totals table, as
//! CSV (UTF-8 with a BOM, which is what makes Excel read Chinese right) or
//! XLSX.
//!
//! Record exports carry one column per level of the org hierarchy (district,
//! street/town, community/village: whatever depth the tree has), so a
//! coordinator can pivot by any level without a lookup table. Personal
//! fields (a legal understander's phone) have a column only when the
//! request names them (`include=phone`): a file travels further than the
//! dashboard. CSV streams page by page and has no size limit; XLSX is built
//! in memory and capped at [`XLSX_ROWS_MAX`] rows.

use axum::body::Body;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use pufa_core::org::OrgTree;
use pufa_core::schema::{FieldSpec, Kind};
use pufa_core::wire::{
    CornerTotals, LectureTotals, OrgRef, RecordView, SiteTotals, TotalsResponse, UnderstanderTotals,
};
use serde_json::Value;

use crate::service_error::ServiceError;
use crate::store::{DynStore, RecordQuery};

/// Most data rows an XLSX export holds (the workbook is built in memory);
/// larger exports must use CSV, which streams.
pub const XLSX_ROWS_MAX: usize = 200_000;

/// Records fetched from the store per CSV chunk.
const EXPORT_PAGE: usize = 2_000;

/// The byte-order mark Excel needs to read a CSV as UTF-8.
const BOM: &str = "\u{feff}";

/// An export's file format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Csv,
    Xlsx,
}

/// Column labels' language.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lang {
    Zh,
    En,
}

impl Lang {
    pub fn parse(s: Option<&str>) -> Option<Lang> {
        match s {
            None | Some("zh") | Some("zh-CN") => Some(Lang::Zh),
            Some("en") => Some(Lang::En),
            _ => None,
        }
    }
}

/// One spreadsheet cell.
#[derive(Clone, Debug, PartialEq)]
pub enum Cell {
    Text(String),
    Int(i64),
    Num(f64),
    Empty,
}

/// A whole table, for the exports small enough to build at once.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Table {
    pub headers: Vec<String>,
    pub rows: Vec<Vec<Cell>>,
}

/// A field's column label: its name in core's schema in Chinese; in
/// English the field's own name, which scripts reading the file expect.
pub fn field_label(field: &FieldSpec, lang: Lang) -> &'static str {
    match lang {
        Lang::Zh => field.label.zh,
        Lang::En => field.name,
    }
}

/// How many org levels the tree has (the deepest chain).
pub fn tree_depth(tree: &OrgTree) -> usize {
    tree.units()
        .map(|u| tree.chain(&u.code).len())
        .max()
        .unwrap_or(0)
}

/// The fields a record export of `kind` has columns for, in the schema's
/// order: all but the personal ones ([`FieldSpec::personal`]), and those
/// that `include` names.
pub fn export_fields(kind: Kind, include: &[&str]) -> Vec<&'static FieldSpec> {
    kind.fields()
        .iter()
        .filter(|f| !f.personal || include.contains(&f.name))
        .collect()
}

/// Header row of a record export with columns for `fields`.
pub fn record_headers(fields: &[&FieldSpec], depth: usize, lang: Lang) -> Vec<String> {
    let mut h = vec![match lang {
        Lang::Zh => "记录ID".to_string(),
        Lang::En => "id".to_string(),
    }];
    for level in 1..=depth {
        h.push(match lang {
            Lang::Zh => format!("{level}级单位"),
            Lang::En => format!("org_level_{level}"),
        });
    }
    h.extend(fields.iter().map(|f| field_label(f, lang).to_string()));
    let tail: [&str; 3] = match lang {
        Lang::Zh => ["已删除", "未决冲突", "序号"],
        Lang::En => ["deleted", "open_conflicts", "seq"],
    };
    h.extend(tail.iter().map(|s| s.to_string()));
    h
}

fn value_cell(v: Option<&Value>) -> Cell {
    match v {
        None | Some(Value::Null) => Cell::Empty,
        Some(Value::String(s)) => Cell::Text(s.clone()),
        Some(Value::Number(n)) => match n.as_i64() {
            Some(i) => Cell::Int(i),
            None => Cell::Num(n.as_f64().unwrap_or(0.0)),
        },
        Some(Value::Bool(b)) => Cell::Text(b.to_string()),
        Some(Value::Array(items)) => Cell::Text(
            items
                .iter()
                .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_string))
                .collect::<Vec<_>>()
                .join("、"),
        ),
        Some(other) => Cell::Text(other.to_string()),
    }
}

/// One record as a row under [`record_headers`].
pub fn record_row(
    r: &RecordView,
    fields: &[&FieldSpec],
    tree: &OrgTree,
    depth: usize,
) -> Vec<Cell> {
    let mut row = vec![Cell::Text(r.id.to_string())];
    let mut levels: Vec<String> = r
        .fields
        .get("org_unit")
        .and_then(Value::as_str)
        .map(|u| tree.chain(u))
        .unwrap_or_default()
        .iter()
        .map(|c| tree.get(c).map_or_else(|| c.clone(), |u| u.name.clone()))
        .collect();
    levels.reverse();
    for level in 0..depth {
        row.push(levels.get(level).cloned().map_or(Cell::Empty, Cell::Text));
    }
    for f in fields {
        row.push(value_cell(r.fields.get(f.name)));
    }
    row.push(Cell::Text(r.deleted.to_string()));
    row.push(Cell::Int(i64::from(r.conflicts)));
    row.push(Cell::Int(i64::try_from(r.seq).unwrap_or(i64::MAX)));
    row
}

/// The totals table: the unit itself, then one row per child.
pub fn totals_table(t: &TotalsResponse, lang: Lang) -> Table {
    let headers: Vec<String> = match lang {
        Lang::Zh => vec![
            "单位代码",
            "单位",
            "讲座场次",
            "参加人次",
            "开展讲座的社区(村)",
            "在用图书角",
            "建有图书角的社区(村)",
            "社区(村)总数",
            "图书角覆盖率",
            "国家级示范",
            "省级示范",
            "市级示范",
            "区级示范",
            "选聘法律明白人",
            "在任法律明白人",
            "有在任法律明白人的社区(村)",
            "法律明白人覆盖率",
            "未决冲突",
        ],
        Lang::En => vec![
            "org_code",
            "org_name",
            "lectures",
            "attendees",
            "units_with_lectures",
            "corners_active",
            "units_with_corner",
            "grassroots_units",
            "corner_coverage",
            "sites_national",
            "sites_provincial",
            "sites_municipal",
            "sites_district",
            "understanders_appointed",
            "understanders_serving",
            "units_with_understander",
            "understander_coverage",
            "conflicts_open",
        ],
    }
    .into_iter()
    .map(str::to_string)
    .collect();
    let mut rows = vec![totals_row(
        &t.org,
        &t.lectures,
        &t.library_corners,
        &t.demo_sites,
        &t.legal_understanders,
        t.conflicts_open,
    )];
    rows.extend(t.children.iter().map(|c| {
        totals_row(
            &c.org,
            &c.lectures,
            &c.library_corners,
            &c.demo_sites,
            &c.legal_understanders,
            c.conflicts_open,
        )
    }));
    Table { headers, rows }
}

/// Text a spreadsheet would run as a formula (`=HYPERLINK(…)` typed as a
/// lecture title) gets a leading apostrophe, which Excel shows as text.
/// That is text starting with `= + - @`, their fullwidth forms `＝ ＋ －
/// ＠` (a Chinese IME types those, and spreadsheets in CJK locales read
/// them as formulas too), or a tab or carriage return; or such a character
/// after leading whitespace (ASCII or the ideographic space), which
/// spreadsheets skip.
fn defuse(text: &str) -> std::borrow::Cow<'_, str> {
    const STARTS: [char; 8] = ['=', '+', '-', '@', '＝', '＋', '－', '＠'];
    let first = text
        .trim_start_matches([' ', '\u{3000}', '\n', '\t', '\r'])
        .chars()
        .next();
    let risky = text.starts_with(['\t', '\r']) || first.is_some_and(|c| STARTS.contains(&c));
    if risky {
        format!("'{text}").into()
    } else {
        text.into()
    }
}

/// One unit's row of the totals table (the unit itself and each child
/// carry the same figures).
fn totals_row(
    org: &OrgRef,
    l: &LectureTotals,
    c: &CornerTotals,
    d: &SiteTotals,
    u: &UnderstanderTotals,
    conflicts_open: u64,
) -> Vec<Cell> {
    let n = |v: u64| Cell::Int(i64::try_from(v).unwrap_or(i64::MAX));
    vec![
        Cell::Text(org.code.clone()),
        Cell::Text(org.name.clone()),
        n(l.count),
        n(l.attendees),
        n(l.units_covered),
        n(c.active),
        n(c.units_covered),
        n(c.units_total),
        Cell::Num(c.coverage),
        n(d.national),
        n(d.provincial),
        n(d.municipal),
        n(d.district),
        n(u.appointed),
        n(u.serving),
        n(u.units_covered),
        Cell::Num(u.coverage),
        n(conflicts_open),
    ]
}

/// CSV as Excel reads it: the BOM, then RFC 4180 lines (CRLF, quotes only
/// around fields that hold a comma, quote or line break), every text cell
/// [`defuse`]d. Bytes are taken out in chunks as they are written.
struct CsvOut(csv::Writer<Vec<u8>>);

impl CsvOut {
    fn new() -> Self {
        CsvOut(csv_writer(BOM.as_bytes().to_vec()))
    }

    fn row<'a>(&mut self, cells: impl IntoIterator<Item = &'a Cell>) -> &mut Self {
        // The only errors csv reports are IO (a Vec cannot fail) and rows
        // of unequal length (allowed by `csv_writer`).
        const INFALLIBLE: &str = "writing CSV into memory cannot fail";
        for c in cells {
            match c {
                Cell::Text(t) => self.0.write_field(defuse(t).as_bytes()),
                Cell::Int(n) => self.0.write_field(n.to_string()),
                // f64's Display: the shortest digits that read back the
                // same, never an exponent.
                Cell::Num(x) => self.0.write_field(x.to_string()),
                Cell::Empty => self.0.write_field(""),
            }
            .expect(INFALLIBLE);
        }
        self.0.write_record(None::<&[u8]>).expect(INFALLIBLE);
        self
    }

    /// Everything written since the last take.
    fn take(&mut self) -> Vec<u8> {
        let done = std::mem::replace(&mut self.0, csv_writer(Vec::new()));
        done.into_inner().expect("flushing into a Vec cannot fail")
    }
}

fn csv_writer(start: Vec<u8>) -> csv::Writer<Vec<u8>> {
    csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        // Rows match their headers by construction; should one not, the
        // file still carries every cell rather than failing.
        .flexible(true)
        .from_writer(start)
}

fn header_cells(headers: &[String]) -> Vec<Cell> {
    headers.iter().cloned().map(Cell::Text).collect()
}

/// The table as CSV bytes, BOM first.
pub fn table_csv(t: &Table) -> Vec<u8> {
    let mut out = CsvOut::new();
    out.row(&header_cells(&t.headers));
    for r in &t.rows {
        out.row(r);
    }
    out.take()
}

/// The table as an XLSX workbook of one sheet.
///
/// # Errors
/// [`ServiceError::ExportTooLarge`] over [`XLSX_ROWS_MAX`] rows;
/// `Internal` if the writer fails.
pub fn table_xlsx(t: &Table, sheet: &str) -> Result<Vec<u8>, ServiceError> {
    if t.rows.len() > XLSX_ROWS_MAX {
        return Err(ServiceError::ExportTooLarge {
            rows: t.rows.len(),
            max: XLSX_ROWS_MAX,
        });
    }
    let internal = |e: rust_xlsxwriter::XlsxError| ServiceError::Internal(format!("xlsx: {e}"));
    let mut book = rust_xlsxwriter::Workbook::new();
    let ws = book.add_worksheet();
    ws.set_name(sheet).map_err(internal)?;
    let bold = rust_xlsxwriter::Format::new().set_bold();
    for (c, h) in t.headers.iter().enumerate() {
        ws.write_string_with_format(0, c as u16, h, &bold)
            .map_err(internal)?;
    }
    for (r, row) in t.rows.iter().enumerate() {
        let r = (r + 1) as u32;
        for (c, cell) in row.iter().enumerate() {
            let c = c as u16;
            match cell {
                // write_string never makes a formula; defused anyway so the
                // CSV and XLSX of one export read the same.
                Cell::Text(s) => ws.write_string(r, c, &*defuse(s)).map(|_| ()),
                // Excel numbers are doubles; ids and counts here fit.
                Cell::Int(n) => ws.write_number(r, c, *n as f64).map(|_| ()),
                Cell::Num(x) => ws.write_number(r, c, *x).map(|_| ()),
                Cell::Empty => Ok(()),
            }
            .map_err(internal)?;
        }
    }
    ws.set_freeze_panes(1, 0).map_err(internal)?;
    book.save_to_buffer().map_err(internal)
}

/// A file download response.
pub fn download(bytes: Vec<u8>, filename: &str, format: Format) -> Response {
    let mime = match format {
        Format::Csv => "text/csv; charset=utf-8",
        Format::Xlsx => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    };
    download_as(bytes, filename, mime)
}

/// A download of `bytes` of type `mime` named `filename`.
pub fn download_as(bytes: Vec<u8>, filename: &str, mime: &str) -> Response {
    (
        [
            (header::CONTENT_TYPE, mime.to_string()),
            (header::CONTENT_DISPOSITION, content_disposition(filename)),
        ],
        bytes,
    )
        .into_response()
}

/// Bytes a `filename*` carries as they are: the ones the ASCII fallback
/// keeps (a subset of RFC 5987's `attr-char`); every other byte is `%XX`.
const FILENAME_KEEP: &AsciiSet = &NON_ALPHANUMERIC.remove(b'.').remove(b'_').remove(b'-');

/// `attachment` with an ASCII fallback name and the real one in RFC 5987
/// form: org codes may be Chinese or hold quotes, which a plain quoted
/// `filename` cannot carry.
fn content_disposition(filename: &str) -> String {
    let ascii: String = filename
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let encoded = utf8_percent_encode(filename, FILENAME_KEEP);
    format!("attachment; filename=\"{ascii}\"; filename*=UTF-8''{encoded}")
}

/// Every record of `query` (its `after`/`limit` are ignored) as a file,
/// with columns for `fields` ([`export_fields`]). CSV streams; XLSX is
/// collected first and refused past [`XLSX_ROWS_MAX`].
///
/// # Errors
/// Store errors (before the first byte), [`ServiceError::ExportTooLarge`].
pub async fn records(
    store: DynStore,
    query: RecordQuery,
    fields: Vec<&'static FieldSpec>,
    lang: Lang,
    format: Format,
    filename: &str,
) -> Result<Response, ServiceError> {
    let kind = query.behind.kind();
    let tree = store.org_tree();
    let depth = tree_depth(&tree);
    let headers = record_headers(&fields, depth, lang);
    let first = store
        .records(RecordQuery {
            after: None,
            limit: EXPORT_PAGE,
            ..query.clone()
        })
        .await?;
    match format {
        Format::Xlsx => {
            let mut table = Table {
                headers,
                rows: Vec::new(),
            };
            let mut page = first;
            loop {
                table.rows.extend(
                    page.records
                        .iter()
                        .map(|r| record_row(r, &fields, &tree, depth)),
                );
                if table.rows.len() > XLSX_ROWS_MAX {
                    return Err(ServiceError::ExportTooLarge {
                        rows: table.rows.len(),
                        max: XLSX_ROWS_MAX,
                    });
                }
                let Some(after) = page.next else { break };
                page = store
                    .records(RecordQuery {
                        after: Some(after),
                        limit: EXPORT_PAGE,
                        ..query.clone()
                    })
                    .await?;
            }
            let bytes = table_xlsx(&table, kind.as_str())?;
            Ok(download(bytes, filename, format))
        }
        Format::Csv => {
            let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
            tokio::spawn(async move {
                let mut out = CsvOut::new();
                out.row(&header_cells(&headers));
                let mut page = first;
                loop {
                    for r in &page.records {
                        out.row(&record_row(r, &fields, &tree, depth));
                    }
                    if tx.send(Ok(out.take())).await.is_err() {
                        return; // the client went away
                    }
                    let Some(after) = page.next else { return };
                    match store
                        .records(RecordQuery {
                            after: Some(after),
                            limit: EXPORT_PAGE,
                            ..query.clone()
                        })
                        .await
                    {
                        Ok(p) => page = p,
                        Err(e) => {
                            // Headers are sent: all we can do is cut the
                            // body short, which clients see as an error.
                            tracing::error!(error = %e, "export aborted");
                            let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
                            return;
                        }
                    }
                }
            });
            // A receiver keeps answering `None` once done: the compression
            // layer polls a body's stream again after its end, which
            // `stream::unfold` answers with a panic.
            let mut rx = rx;
            let stream = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
            let mut resp = download(Vec::new(), filename, format);
            *resp.body_mut() = Body::from_stream(stream);
            Ok(resp)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One CSV line as text, without the BOM.
    fn csv_line(cells: &[Cell]) -> String {
        let bytes = CsvOut::new().row(cells).take();
        let text = String::from_utf8(bytes).unwrap();
        text.strip_prefix(BOM).unwrap().to_string()
    }

    #[test]
    fn csv_quotes_only_what_needs_quoting() {
        let out = csv_line(&[
            Cell::Text("民法典".into()),
            Cell::Text("a,b".into()),
            Cell::Text("say \"hi\"".into()),
            Cell::Int(-3),
            Cell::Empty,
            Cell::Num(0.5),
        ]);
        assert_eq!(out, "民法典,\"a,b\",\"say \"\"hi\"\"\",-3,,0.5\r\n");
    }

    #[test]
    fn formulas_are_defused_and_filenames_survive_any_org_code() {
        let out = csv_line(&[Cell::Text("=HYPERLINK(\"x\")".into()), Cell::Int(-3)]);
        assert_eq!(out, "\"'=HYPERLINK(\"\"x\"\")\",-3\r\n");
        for risky in [
            "＝HYPERLINK(\"x\")",
            "＋1",
            "－1",
            "＠SUM(A1)",
            "  =1+1",
            "\u{3000}＝1",
            "\n=1",
            "\t=1",
            " \t@x",
        ] {
            assert_eq!(defuse(risky), format!("'{risky}"), "{risky:?}");
        }
        for plain in ["民法典进社区", "a=b", "1-2", "  讲座", ""] {
            assert_eq!(defuse(plain), plain, "{plain:?}");
        }
        let h = content_disposition("迎泽区-lecture.csv");
        assert!(h.is_ascii(), "{h}");
        assert!(h.contains("filename=\"___-lecture.csv\""), "{h}");
        assert!(h.contains("filename*=UTF-8''%E8%BF%8E"), "{h}");
        let q = content_disposition("a\"b;c-totals.csv");
        assert!(q.contains("filename=\"a_b_c-totals.csv\""), "{q}");
        assert!(q.contains("a%22b%3Bc-totals.csv"), "{q}");
    }

    #[test]
    fn table_csv_starts_with_a_bom() {
        let t = Table {
            headers: vec!["单位".into()],
            rows: vec![vec![Cell::Text("迎泽区".into())]],
        };
        let bytes = table_csv(&t);
        assert_eq!(&bytes[..3], b"\xEF\xBB\xBF");
        assert_eq!(
            String::from_utf8(bytes[3..].to_vec()).unwrap(),
            "单位\r\n迎泽区\r\n"
        );
    }

    #[test]
    fn xlsx_is_a_zip_and_refuses_oversized_tables() {
        let t = Table {
            headers: vec!["a".into()],
            rows: vec![vec![Cell::Int(1)]],
        };
        let bytes = table_xlsx(&t, "sheet").unwrap();
        assert_eq!(&bytes[..2], b"PK");
        let big = Table {
            headers: vec!["a".into()],
            rows: vec![vec![Cell::Empty]; XLSX_ROWS_MAX + 1],
        };
        assert!(matches!(
            table_xlsx(&big, "s"),
            Err(ServiceError::ExportTooLarge { .. })
        ));
    }
}
