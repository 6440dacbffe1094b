//! The topic vocabulary: the canonical names of what lectures are about
//! (民法典, 宪法, 反电信网络诈骗, …), each with the other ways people write
//! it (反诈, 防范诈骗 and 电信网络诈骗 all mean 反电信网络诈骗).
//!
//! Records keep their topics as written; only figures fold them, through
//! [`fold`], which the aggregates' per-record contribution applies, so a
//! lecture tagged `[反诈, 电信网络诈骗]` counts once, under
//! 反电信网络诈骗. A topic outside the vocabulary is counted as written.
//!
//! Matching ignores what people vary without meaning anything by it:
//! surrounding and inner white space (ideographic spaces too), book-title
//! marks and quotes (`《民法典》` is 民法典), full-width against half-width
//! forms, and the case of Latin letters.
//!
//! The vocabulary is part of the store's meaning: stored topic aggregates
//! are counted by it, so changing it (a new synonym, a new topic) is a new
//! store format whose upgrade recounts them (a test in the server pins its
//! digest to the format).

use std::collections::HashMap;
use std::sync::OnceLock;

use crate::wire::{Localized, TopicSchema};

/// One canonical topic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Topic {
    /// The canonical name, as figures and reports show it.
    pub name: &'static str,
    /// What it is called in English.
    pub en: &'static str,
    /// Other ways of writing it, folded into [`Topic::name`].
    pub synonyms: &'static [&'static str],
}

const fn topic(name: &'static str, en: &'static str, synonyms: &'static [&'static str]) -> Topic {
    Topic { name, en, synonyms }
}

/// The vocabulary: the topics districts report on (the themes of the
/// 七五/八五 普法 plans and of 2020's campaigns), most reported first.
// One topic a row: the table reads better than rustfmt's one field a line.
#[rustfmt::skip]
pub const VOCABULARY: &[Topic] = &[
    topic("民法典", "Civil Code", &["民法典宣传", "民法典宣讲", "学习民法典", "中华人民共和国民法典", "民法典进社区", "民法典进乡村"]),
    topic("宪法", "Constitution", &["宪法宣传", "宪法宣传周", "国家宪法日", "宪法日", "中华人民共和国宪法", "宪法进社区"]),
    topic("反电信网络诈骗", "Countering telecom fraud", &["反诈", "反电诈", "反诈骗", "反电信诈骗", "电信网络诈骗", "电信诈骗", "网络诈骗", "防范诈骗", "防诈骗", "防骗", "防范电信诈骗", "防范电信网络诈骗", "反电信网络诈骗法", "电诈"]),
    topic("扫黑除恶", "Fighting organised crime", &["扫黑除恶专项斗争", "常态化扫黑除恶", "扫黑除恶宣传"]),
    topic("禁毒", "Drug control", &["禁毒法", "禁毒宣传", "毒品预防", "禁毒知识"]),
    topic("未成年人保护", "Protection of minors", &["未成年人保护法", "未成年人权益保护"]),
    topic("预防未成年人犯罪", "Preventing juvenile crime", &["预防未成年人犯罪法"]),
    topic("防范非法集资", "Preventing illegal fund-raising", &["非法集资", "打击非法集资", "防范和处置非法集资", "处置非法集资", "防范和处置非法集资条例"]),
    topic("安全生产", "Work safety", &["安全生产法"]),
    topic("消防安全", "Fire safety", &["消防", "消防法", "消防安全知识"]),
    topic("道路交通安全", "Road traffic safety", &["道路交通安全法", "交通安全", "交通法规"]),
    topic("劳动法", "Labour law", &["劳动合同", "劳动合同法", "劳动用工", "劳动法律"]),
    topic("农民工工资", "Migrant workers' wages", &["保障农民工工资支付条例", "农民工工资支付", "根治欠薪", "讨薪"]),
    topic("婚姻家庭", "Marriage and family", &["婚姻法", "婚姻家庭编", "婚姻家庭纠纷"]),
    topic("土地承包", "Land contracting", &["农村土地承包", "土地承包法", "农村土地承包法"]),
    topic("人民调解", "People's mediation", &["人民调解法", "调解"]),
    topic("信访条例", "Petitions regulation", &["信访", "信访工作条例", "依法信访", "信访法治化"]),
    topic("网络安全", "Cybersecurity", &["网络安全法"]),
    topic("个人信息保护", "Personal information protection", &["个人信息保护法", "个人信息"]),
    topic("食品安全", "Food safety", &["食品安全法"]),
    topic("生态环境保护", "Environmental protection", &["环境保护", "环境保护法", "生态环境", "环保"]),
    topic("疫情防控", "Epidemic prevention and control", &["依法防控疫情", "新冠肺炎疫情防控", "疫情防控法律知识", "防疫"]),
    topic("传染病防治法", "Law on infectious diseases", &["传染病防治"]),
    topic("野生动物保护法", "Wildlife protection law", &["野生动物保护"]),
    topic("法律援助", "Legal aid", &["法律援助法", "法律援助条例"]),
    topic("消费者权益保护", "Consumer rights", &["消费者权益保护法", "消费维权"]),
    topic("老年人权益保障", "Rights of the elderly", &["老年人权益保障法"]),
    topic("妇女权益保障", "Women's rights", &["妇女权益保障法"]),
    topic("反家庭暴力", "Countering domestic violence", &["反家庭暴力法", "家庭暴力", "反家暴"]),
    topic("国家安全", "National security", &["国家安全法", "全民国家安全教育日"]),
    topic("物业管理", "Property management", &["物业管理条例"]),
    topic("法律明白人", "Legal understanders", &["法律明白人培训", "法律明白人培养"]),
];

/// `written` as matched against the vocabulary: no white space, book-title
/// marks or quotes, full-width forms as half-width, Latin letters in lower
/// case.
fn match_key(written: &str) -> String {
    written
        .chars()
        .map(|c| match c {
            // Full-width ASCII (！ … ～) is ASCII shifted by 0xFEE0.
            '\u{FF01}'..='\u{FF5E}' => char::from_u32(c as u32 - 0xFEE0).unwrap_or(c),
            '\u{3000}' => ' ',
            _ => c,
        })
        .filter(|c| {
            !c.is_whitespace()
                && !matches!(
                    c,
                    '《' | '》'
                        | '〈'
                        | '〉'
                        | '<'
                        | '>'
                        | '"'
                        | '\''
                        | '“'
                        | '”'
                        | '‘'
                        | '’'
                        | '「'
                        | '」'
                        | '『'
                        | '』'
                )
        })
        .flat_map(char::to_lowercase)
        .collect()
}

/// Match keys of every name and synonym, to their topic.
fn index() -> &'static HashMap<String, &'static Topic> {
    static INDEX: OnceLock<HashMap<String, &'static Topic>> = OnceLock::new();
    INDEX.get_or_init(|| {
        let mut index = HashMap::new();
        for t in VOCABULARY {
            for written in std::iter::once(&t.name).chain(t.synonyms) {
                index.insert(match_key(written), t);
            }
        }
        index
    })
}

/// The vocabulary's topic that `written` names, if any.
pub fn canonical(written: &str) -> Option<&'static Topic> {
    index().get(&match_key(written)).copied()
}

/// The name figures count `written` under: its canonical name, or itself
/// when the vocabulary does not know it.
pub fn fold(written: &str) -> &str {
    canonical(written).map_or(written, |t| t.name)
}

/// What `GET /v1/schema` lists: the vocabulary, for forms to suggest.
pub fn describe() -> Vec<TopicSchema> {
    VOCABULARY
        .iter()
        .map(|t| TopicSchema {
            name: t.name.to_string(),
            label: Localized {
                zh: t.name.to_string(),
                en: t.en.to_string(),
            },
            synonyms: t.synonyms.iter().map(|s| s.to_string()).collect(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{TOPIC_CHARS_MAX, TOPIC_CHARS_MIN};

    #[track_caller]
    fn check(written: &str, folded: &str) {
        assert_eq!(fold(written), folded, "{written:?}");
    }

    #[test]
    fn synonyms_and_spellings_fold() {
        check("反诈", "反电信网络诈骗");
        check("电信网络诈骗", "反电信网络诈骗");
        check("防范诈骗", "反电信网络诈骗");
        check("防诈骗", "反电信网络诈骗");
        check("《民法典》", "民法典");
        check("民法典宣传", "民法典");
        check(" 民法典\u{3000}", "民法典");
        check("《 中华人民共和国民法典 》", "民法典");
        check("“扫黑除恶”", "扫黑除恶");
        check("劳动合同", "劳动法");
        check("国家宪法日", "宪法");
        check("非法集资", "防范非法集资");
    }

    #[test]
    fn full_width_and_case_do_not_matter() {
        // A made-up Latin spelling, folded both ways.
        assert_eq!(match_key("ＡＢｃ　d"), match_key("abc d"));
        assert_eq!(match_key("ＡＢｃ　d"), "abcd");
    }

    #[test]
    fn unknown_topics_stay_as_written() {
        for t in ["平安建设", "Safety, \"first\"", " 物权 ", ""] {
            check(t, t);
        }
    }

    #[test]
    fn the_vocabulary_is_consistent() {
        let mut seen: HashMap<String, &str> = HashMap::new();
        for t in VOCABULARY {
            assert_eq!(fold(t.name), t.name, "a canonical name folds to itself");
            assert_eq!(match_key(t.name), t.name, "{}: written plainly", t.name);
            assert!(!t.en.is_empty());
            for written in std::iter::once(&t.name).chain(t.synonyms) {
                let chars = written.chars().count();
                assert!(
                    (TOPIC_CHARS_MIN..=TOPIC_CHARS_MAX).contains(&chars),
                    "{written}: a topic a record may carry"
                );
                if let Some(other) = seen.insert(match_key(written), t.name) {
                    panic!("{written:?} names both {other} and {}", t.name);
                }
            }
        }
    }
}
