//! Server-rendered SVG charts: no JavaScript, readable on a phone (the
//! `viewBox` scales to the width), and accessible (a `<title>` per bar and
//! the figures printed as text, not only as bar heights).

use std::fmt::Write as _;

use pufa_core::report::MonthFigure;

/// Escapes text for SVG/XML content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Chart geometry, in viewBox units.
const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 240.0;
const LEFT: f64 = 36.0;
const BOTTOM: f64 = 28.0;
const TOP: f64 = 20.0;

/// A "nice" axis maximum at or above `max` (1, 2, 5 × 10^n).
fn nice_max(max: u64) -> u64 {
    let mut step = 1u64;
    loop {
        for m in [1, 2, 5] {
            if step.saturating_mul(m) >= max.max(1) {
                return step.saturating_mul(m);
            }
        }
        step = step.saturating_mul(10);
    }
}

/// Lectures per month as bars, the count above each bar; each bar's
/// tooltip (`<title>`) gives lectures and attendees. `labels` names the
/// months; `tooltip(lectures, attendees)` words the tooltip.
pub fn month_bars(
    months: &[MonthFigure],
    labels: &[String],
    caption: &str,
    tooltip: impl Fn(u64, u64) -> String,
) -> String {
    let max = nice_max(months.iter().map(|m| m.lectures).max().unwrap_or(0));
    let plot_h = HEIGHT - TOP - BOTTOM;
    let slot = (WIDTH - LEFT) / months.len().max(1) as f64;
    let bar_w = slot * 0.6;
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{}" xmlns="http://www.w3.org/2000/svg">"#,
        escape(caption)
    );
    let _ = write!(svg, "<title>{}</title>", escape(caption));
    // Axis: zero, half and max, with light grid lines.
    for frac in [0.0, 0.5, 1.0] {
        let y = TOP + plot_h * (1.0 - frac);
        let value = (max as f64 * frac).round() as u64;
        let _ = write!(
            svg,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{WIDTH}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" font-size="11" text-anchor="end" fill="#555">{value}</text>"##,
            LEFT - 4.0,
            y + 4.0
        );
    }
    for (i, m) in months.iter().enumerate() {
        let h = plot_h * m.lectures as f64 / max as f64;
        let x = LEFT + slot * i as f64 + (slot - bar_w) / 2.0;
        let y = TOP + plot_h - h;
        let label = labels
            .get(i)
            .map_or_else(|| m.month.to_string(), |l| l.clone());
        let _ = write!(
            svg,
            r##"<g class="bar"><title>{}</title><rect x="{x:.1}" y="{y:.1}" width="{bar_w:.1}" height="{h:.1}" fill="#c0392b"/>"##,
            escape(&format!("{label}: {}", tooltip(m.lectures, m.attendees)))
        );
        if m.lectures > 0 {
            let _ = write!(
                svg,
                r##"<text x="{:.1}" y="{:.1}" font-size="11" text-anchor="middle" fill="#222">{}</text>"##,
                x + bar_w / 2.0,
                y - 3.0,
                m.lectures
            );
        }
        let _ = write!(
            svg,
            r##"<text x="{:.1}" y="{:.1}" font-size="11" text-anchor="middle" fill="#555">{}</text></g>"##,
            x + bar_w / 2.0,
            HEIGHT - BOTTOM + 16.0,
            escape(&label)
        );
    }
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    fn months(counts: &[u64]) -> Vec<MonthFigure> {
        counts
            .iter()
            .enumerate()
            .map(|(i, &n)| MonthFigure {
                month: i as u32 + 1,
                lectures: n,
                attendees: n * 10,
            })
            .collect()
    }

    #[test]
    fn bars_scale_to_a_nice_maximum_and_print_counts() {
        let m = months(&[3, 0, 7, 12, 0, 0, 0, 0, 0, 0, 0, 1]);
        let labels: Vec<String> = (1..=12).map(|i| format!("{i}月")).collect();
        let svg = month_bars(&m, &labels, "每月讲座 <2020>", |l, a| {
            format!("{l}场 {a}人次")
        });
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert_eq!(svg.matches("<rect").count(), 12);
        // 12 rounds up to 20; the tallest bar is 12/20 of the plot height.
        assert!(svg.contains(">20</text>"));
        assert!(svg.contains("4月: 12场 120人次"));
        assert!(svg.contains("每月讲座 &lt;2020&gt;"), "caption escaped");
        // Zero months print no count above the bar.
        assert!(!svg.contains(">0</text></g>"));
    }

    #[test]
    fn nice_max_rounds_up() {
        assert_eq!(nice_max(0), 1);
        assert_eq!(nice_max(1), 1);
        assert_eq!(nice_max(3), 5);
        assert_eq!(nice_max(12), 20);
        assert_eq!(nice_max(51), 100);
        assert_eq!(nice_max(u64::MAX), u64::MAX.saturating_mul(1));
    }
}
