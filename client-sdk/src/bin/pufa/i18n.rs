//! The CLI's words in zh-CN and English. Chosen by `--lang`, else `LANG`
//! (English when it starts with `en`, Chinese otherwise).

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lang {
    Zh,
    En,
}

impl Lang {
    pub fn detect(flag: Option<&str>) -> Lang {
        let from = |s: &str| {
            if s.to_ascii_lowercase().starts_with("en") {
                Lang::En
            } else {
                Lang::Zh
            }
        };
        match flag {
            Some(f) => from(f),
            None => std::env::var("LANG").map_or(Lang::Zh, |l| from(&l)),
        }
    }

    /// A message in this language.
    pub fn t(self, zh: &'static str, en: &'static str) -> &'static str {
        match self {
            Lang::Zh => zh,
            Lang::En => en,
        }
    }

    /// A field's human name.
    pub fn field(self, name: &str) -> &'static str {
        let (zh, en) = match name {
            "org_unit" => ("组织单位", "org unit"),
            "held_on" => ("举办日期 (YYYY-MM-DD)", "date held (YYYY-MM-DD)"),
            "title" => ("标题", "title"),
            "attendees" => ("参加人数", "attendees"),
            "topics" => ("主题 (逗号分隔)", "topics (comma-separated)"),
            "speaker" => ("主讲人", "speaker"),
            "venue" => ("地点", "venue"),
            "audience" => ("对象", "audience"),
            "notes" => ("备注", "notes"),
            "location" => ("位置 (纬度,经度)", "location (lat,lon)"),
            "name" => ("名称", "name"),
            "status" => ("状态", "status"),
            "books" => ("藏书数", "books"),
            "opened_on" => ("设立日期 (YYYY-MM-DD)", "opened on (YYYY-MM-DD)"),
            "last_checked_on" => ("最近检查日期 (YYYY-MM-DD)", "last checked on (YYYY-MM-DD)"),
            "level" => ("级别", "level"),
            "year" => ("年度", "year"),
            _ => ("字段", "field"),
        };
        self.t(zh, en)
    }
}
