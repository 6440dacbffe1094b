//! Likely double entries: two lectures that record one event (made on two
//! phones, so they count twice in the figures).
//!
//! Two live lectures are a likely pair when they are held by the same
//! unit on the same day and their titles are similar: equal once
//! normalised ([`normalise_title`]), one containing the other, or with a
//! character-bigram Dice similarity of at least [`TITLE_SIMILARITY_MIN`].
//! A pair is named smaller id first ([`pair`]), so it has one identity
//! whichever record is found first; a coordinator's "not a duplicate" mark
//! is kept under that identity.

use std::collections::BTreeMap;

use uuid::Uuid;

/// Dice similarity of two normalised titles' character bigrams at or
/// above which they are taken for one event (0 to 1).
pub const TITLE_SIMILARITY_MIN: f64 = 0.6;

/// Fewest characters a normalised title needs before containing it makes
/// another title similar (a one-character title is in too many others).
pub const CONTAINED_CHARS_MIN: usize = 2;

/// One lecture as the comparison needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Candidate<'a> {
    pub id: Uuid,
    pub org_unit: &'a str,
    /// `held_on`, as stored (`YYYY-MM-DD`).
    pub held_on: &'a str,
    pub title: &'a str,
}

/// The pair `{a, b}`, smaller id first.
pub fn pair(a: Uuid, b: Uuid) -> (Uuid, Uuid) {
    if a <= b {
        (a, b)
    } else {
        (b, a)
    }
}

/// A title as compared: trimmed; whitespace, punctuation and quotes
/// (《》“”"') dropped; full-width letters and digits made half-width;
/// Latin letters in lower case.
pub fn normalise_title(title: &str) -> String {
    title
        .chars()
        .map(half_width)
        .filter(|c| !c.is_whitespace() && !is_punctuation(*c))
        .flat_map(char::to_lowercase)
        .collect()
}

/// The half-width twin of a full-width form (`Ａ` → `A`, `１` → `1`,
/// the ideographic space → a space); other characters as they are.
fn half_width(c: char) -> char {
    match c {
        '\u{3000}' => ' ',
        '\u{FF01}'..='\u{FF5E}' => char::from_u32(c as u32 - 0xFEE0).unwrap_or(c),
        _ => c,
    }
}

/// ASCII punctuation, general punctuation (dashes, “” ‘’, …), the CJK
/// symbols and punctuation block (、。《》「」【】) and the middle dot.
fn is_punctuation(c: char) -> bool {
    c.is_ascii_punctuation()
        || matches!(c, '\u{00B7}' | '\u{2010}'..='\u{2027}' | '\u{3001}'..='\u{303F}' | '\u{FF5F}'..='\u{FF65}')
}

/// Dice similarity of the character bigrams of `a` and `b` (a
/// one-character string counts as its one character), from 0 to 1.
pub fn dice(a: &str, b: &str) -> f64 {
    let grams = |s: &str| {
        let chars: Vec<char> = s.chars().collect();
        let mut out: BTreeMap<(char, char), usize> = BTreeMap::new();
        if let [only] = chars.as_slice() {
            *out.entry((*only, '\0')).or_default() += 1;
        }
        for w in chars.windows(2) {
            *out.entry((w[0], w[1])).or_default() += 1;
        }
        out
    };
    let (ga, gb) = (grams(a), grams(b));
    let total: usize = ga.values().sum::<usize>() + gb.values().sum::<usize>();
    if total == 0 {
        return 0.0;
    }
    let shared: usize = ga
        .iter()
        .map(|(g, n)| (*n).min(gb.get(g).copied().unwrap_or(0)))
        .sum();
    (2 * shared) as f64 / total as f64
}

/// Whether two titles likely name one event.
pub fn similar_titles(a: &str, b: &str) -> bool {
    let (a, b) = (normalise_title(a), normalise_title(b));
    if a.is_empty() || b.is_empty() {
        return false;
    }
    let (short, long) = if a.chars().count() <= b.chars().count() {
        (&a, &b)
    } else {
        (&b, &a)
    };
    a == b
        || (short.chars().count() >= CONTAINED_CHARS_MIN && long.contains(short.as_str()))
        || dice(&a, &b) >= TITLE_SIMILARITY_MIN
}

/// The likely pairs among `lectures` (live ones, as the caller picked
/// them), each smaller id first, in order. Only lectures of one unit and
/// one day are compared.
pub fn likely_pairs(lectures: &[Candidate<'_>]) -> Vec<(Uuid, Uuid)> {
    let mut groups: BTreeMap<(&str, &str), Vec<&Candidate<'_>>> = BTreeMap::new();
    for c in lectures {
        groups.entry((c.org_unit, c.held_on)).or_default().push(c);
    }
    let mut out = Vec::new();
    for group in groups.values() {
        for (i, x) in group.iter().enumerate() {
            for y in &group[i + 1..] {
                if x.id != y.id && similar_titles(x.title, y.title) {
                    out.push(pair(x.id, y.id));
                }
            }
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    fn lecture<'a>(n: u128, unit: &'a str, day: &'a str, title: &'a str) -> Candidate<'a> {
        Candidate {
            id: id(n),
            org_unit: unit,
            held_on: day,
            title,
        }
    }

    #[track_caller]
    fn check(a: &str, b: &str, similar: bool) {
        assert_eq!(similar_titles(a, b), similar, "{a:?} / {b:?}");
        assert_eq!(similar_titles(b, a), similar, "{b:?} / {a:?}");
    }

    #[test]
    fn titles_are_normalised() {
        assert_eq!(normalise_title(" 《民法典》进社区 "), "民法典进社区");
        assert_eq!(normalise_title("“宪法”宣传周：Ａｂｃ１"), "宪法宣传周abc1");
        assert_eq!(normalise_title("反诈 宣传　讲座。"), "反诈宣传讲座");
        assert_eq!(normalise_title("'Law' Day"), "lawday");
        assert_eq!(normalise_title("、。…"), "");
    }

    #[test]
    fn similar_titles_are_found() {
        check("民法典进社区", "《民法典》进社区", true);
        check("民法典进社区", "民法典进社区活动", true);
        check("反电信网络诈骗宣传讲座", "反电信网络诈骗宣传", true);
        check("民法典进社区宣讲", "民法典进社区讲座", true);
        check("Law Day", "law  day", true);
    }

    #[test]
    fn different_titles_are_not() {
        check("民法典进社区", "反诈宣传", false);
        check("宪法宣传", "民法典宣传", false);
        check("法", "民法典进社区", false);
        check("", "", false);
        check("。。", "。。", false);
    }

    #[test]
    fn dice_counts_bigrams() {
        assert_eq!(dice("ab", "ab"), 1.0);
        assert_eq!(dice("ab", "cd"), 0.0);
        assert_eq!(dice("a", "a"), 1.0);
        assert_eq!(dice("", ""), 0.0);
        assert!((dice("abc", "abd") - 0.5).abs() < 1e-9);
    }

    #[test]
    fn pairs_need_one_unit_and_one_day() {
        let all = [
            lecture(5, "u1", "2020-03-01", "民法典进社区"),
            lecture(2, "u1", "2020-03-01", "《民法典》进社区"),
            lecture(3, "u1", "2020-03-01", "反诈宣传"),
            lecture(4, "u2", "2020-03-01", "民法典进社区"),
            lecture(1, "u1", "2020-03-02", "民法典进社区"),
        ];
        assert_eq!(likely_pairs(&all), vec![(id(2), id(5))]);
        assert_eq!(pair(id(5), id(2)), (id(2), id(5)));
        assert!(likely_pairs(&[]).is_empty());
    }

    #[test]
    fn three_records_of_one_event_make_three_pairs() {
        let all = [
            lecture(3, "u", "2020-05-01", "宪法宣传"),
            lecture(1, "u", "2020-05-01", "宪法宣传日"),
            lecture(2, "u", "2020-05-01", "“宪法”宣传"),
        ];
        assert_eq!(
            likely_pairs(&all),
            vec![(id(1), id(2)), (id(1), id(3)), (id(2), id(3))]
        );
    }
}
