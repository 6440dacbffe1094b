//! The simulated year as a [`Plan`]: a pure function of the seed. Which
//! devices there are, what each records offline, edits, deletes and syncs,
//! in order, and what the server should hold once it is carried out.

use pufa_core::schema::Kind;
use pufa_core::wire::UnitType;
use rand::seq::SliceRandom as _;
use rand::{Rng as _, SeedableRng as _};
use serde_json::{json, Map, Value};

use crate::{org_units, DISTRICT};

/// A community with its own device besides its street's (柳巷第03社区): the
/// two see the same records, which is what a concurrent edit needs.
const COMMUNITY_DEVICE_UNIT: &str = "140106001003";
/// A village with its own device besides its town's (郝庄第03村).
const VILLAGE_DEVICE_UNIT: &str = "140106100203";
/// The village where the town device mistypes a unit code (郝庄第01村), and
/// the code it types.
const TYPO_UNIT: &str = "140106100201";
const TYPO_CODE: &str = "14010610021";
/// Where two devices record a joint lecture that is not in their scope:
/// 柳巷第01社区 for 文庙街道's device, 郝庄第04村 for 郝庄第03村's.
const NEIGHBOUR_COMMUNITY: &str = "140106001001";
const NEIGHBOUR_VILLAGE: &str = "140106100204";

/// Short names of the streets and the town, for device directories.
const AREA_NAMES: &[(&str, &str)] = &[
    ("140106001", "liuxiang"),
    ("140106002", "wenmiao"),
    ("140106003", "miaoqian"),
    ("140106004", "yingze"),
    ("140106005", "qiaodong"),
    ("140106006", "laojunying"),
    ("140106100", "haozhuang"),
];

/// Lectures of the random pool in each month of 2020 (January first). With
/// the four scripted ones (one in January, two in September, and none of
/// the rejected, deleted or unsynced ones) the server counts 97. February
/// and March are the COVID months: one lecture online, two small ones.
const POOL_PER_MONTH: [u32; 12] = [6, 1, 2, 6, 8, 10, 9, 8, 7, 9, 12, 16];
const DAYS_2020: [u32; 12] = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
/// Mixed into the seed for the legal understanders' own generator.
const UNDERSTANDERS_SEED: u64 = 0x006d_6272_656e;

/// A simulated field device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DevicePlan {
    /// Its directory under `<data>/demo-devices/`.
    pub name: String,
    pub label: String,
    /// Its token's scope.
    pub org_unit: String,
}

/// A record the plan refers to after creating it. Its id is made on the
/// device when it is recorded, so steps name it by this index.
pub(crate) type Tag = usize;

/// One record a device makes offline.
#[derive(Clone, Debug, PartialEq)]
pub struct NewRecord {
    pub(crate) tag: Option<Tag>,
    pub(crate) kind: Kind,
    pub(crate) fields: Map<String, Value>,
}

/// One thing that happens in the simulated year, in order.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// A device records new records offline (one durable local write).
    Record {
        device: usize,
        records: Vec<NewRecord>,
    },
    /// A device changes some fields of a record offline.
    Edit {
        device: usize,
        tag: Tag,
        set: Map<String, Value>,
    },
    /// A device deletes a record offline.
    Delete { device: usize, tag: Tag },
    /// A device syncs.
    Sync { device: usize },
    /// Waits, if need be, until `device`'s clock has passed the latest edit
    /// the server holds of each record in `tags`. The device has not seen
    /// those edits, so its next edit is concurrent with them; without the
    /// wait, two edits made within the same millisecond on two devices
    /// would be ordered by their random device ids, and which one wins (and
    /// so the totals) would change from run to run.
    After { device: usize, tags: Vec<Tag> },
    /// The device's user corrects the org unit of the edit the server
    /// rejected as `unknown_org_unit`, and sends it again.
    FixOrgUnit { device: usize, org_unit: String },
    /// The device's user drops the edit the server rejected as
    /// `out_of_scope`.
    DiscardOutOfScope { device: usize },
}

/// What the server should hold for 2020 once the plan is carried out.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Expected {
    pub lectures: u64,
    pub attendees: u64,
    /// Grassroots units with at least one lecture.
    pub lecture_units: u64,
    pub corners_active: u64,
    pub grassroots_units: u64,
    pub provincial: u64,
    pub municipal: u64,
    /// Legal understanders appointed (and serving).
    pub understanders: u64,
    pub conflicts: u64,
    pub rejections: u64,
    /// Edits left unsynced on devices.
    pub pending_on_devices: u64,
}

/// The simulated year.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub seed: u64,
    pub devices: Vec<DevicePlan>,
    pub steps: Vec<Step>,
    pub expected: Expected,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Place {
    Any,
    Community,
    Village,
}

/// A lecture theme that was topical in some months of 2020.
struct Theme {
    title: &'static str,
    topics: &'static [&'static str],
    months: (u32, u32),
    place: Place,
    audience: Option<&'static str>,
}

const fn theme(
    title: &'static str,
    topics: &'static [&'static str],
    months: (u32, u32),
    place: Place,
    audience: Option<&'static str>,
) -> Theme {
    Theme {
        title,
        topics,
        months,
        place,
        audience,
    }
}

use Place::{Any, Community, Village};

/// Themes of 2020: before the Spring Festival and the epidemic; the
/// epidemic months; the Civil Code (民法典, adopted 28 May 2020) from June;
/// the wage-payment regulation (in force 1 May); the anti-drug day (26 June);
/// the revised minors' protection law (October); fire safety after the
/// "10.1" fire; the Constitution Day week (4 December).
// One theme a row: the table reads better than rustfmt's one field a line.
#[rustfmt::skip]
static THEMES: &[Theme] = &[
    theme("迎新春 平安建设法律宣传", &["平安建设", "防范诈骗"], (1, 1), Any, None),
    theme("宪法进社区：弘扬宪法精神", &["宪法"], (1, 1), Community, None),
    theme("扫黑除恶专项斗争法律知识宣讲", &["扫黑除恶"], (1, 1), Any, None),
    theme("新冠肺炎疫情防控法律知识线上讲座", &["疫情防控", "传染病防治法"], (2, 2), Any, Some("mixed")),
    theme("依法防控疫情：传染病防治法解读", &["疫情防控", "传染病防治法"], (3, 4), Any, None),
    theme("野生动物保护法与疫情防控", &["野生动物保护法", "疫情防控"], (3, 5), Any, None),
    theme("复工复产中的劳动用工法律问题", &["劳动合同", "复工复产"], (3, 6), Community, Some("enterprise_staff")),
    theme("扫黑除恶专项斗争法律知识宣讲", &["扫黑除恶"], (4, 11), Any, None),
    theme("防范电信网络诈骗 守护群众钱袋子", &["反诈", "电信网络诈骗"], (4, 12), Any, None),
    theme("老年人权益保障与防范养老诈骗", &["老年人权益保障", "反诈"], (4, 12), Any, None),
    theme("人民调解与邻里纠纷化解", &["人民调解", "矛盾纠纷化解"], (4, 12), Any, None),
    theme("法律援助进社区：困难群众如何申请法律援助", &["法律援助"], (4, 12), Community, None),
    theme("法律援助进村：讨薪维权与法律援助", &["法律援助", "农民工工资"], (4, 12), Village, None),
    theme("村规民约与农村土地承包法律知识", &["村规民约", "农村土地承包"], (4, 11), Village, None),
    theme("物业管理条例与业主委员会", &["物业管理"], (4, 12), Community, None),
    theme("依法理性表达诉求：信访法治化宣讲", &["信访", "依法维权"], (4, 12), Any, None),
    theme("《保障农民工工资支付条例》宣讲", &["农民工工资", "劳动保障"], (5, 12), Any, None),
    theme("防范非法集资宣传", &["非法集资", "金融安全"], (5, 7), Any, None),
    theme("食品安全法进社区", &["食品安全"], (5, 10), Community, None),
    theme("禁毒法律知识宣传", &["禁毒"], (6, 6), Any, None),
    theme("民法典进社区：与生活息息相关的法律", &["民法典"], (6, 12), Community, None),
    theme("民法典进乡村：农民身边的法律", &["民法典", "农村土地承包"], (6, 12), Village, None),
    theme("民法典婚姻家庭编解读", &["民法典", "婚姻家庭"], (6, 12), Any, None),
    theme("民法典继承编与遗嘱订立", &["民法典", "继承"], (6, 12), Any, None),
    theme("民法典物权编：业主权利与物业纠纷", &["民法典", "物权", "物业管理"], (6, 12), Community, None),
    theme("学习民法典 护航美好生活", &["民法典"], (6, 12), Any, None),
    theme("未成年人保护与预防犯罪", &["未成年人保护", "预防未成年人犯罪"], (6, 9), Any, Some("students")),
    theme("民法典合同编与消费维权", &["民法典", "合同", "消费者权益保护"], (7, 12), Any, None),
    theme("民法典人格权编与个人信息保护", &["民法典", "人格权", "个人信息保护"], (7, 12), Any, None),
    theme("法律明白人培训：群众身边的法律常识", &["法律明白人", "普法"], (8, 12), Any, Some("mixed")),
    theme("网络安全与个人信息保护", &["网络安全", "个人信息保护"], (9, 9), Any, None),
    theme("新修订《未成年人保护法》解读", &["未成年人保护"], (10, 12), Any, Some("students")),
    theme("消防安全与安全生产法律责任", &["消防安全", "安全生产"], (10, 12), Any, None),
    theme("反家庭暴力法宣讲", &["反家庭暴力", "妇女权益保障"], (11, 11), Any, None),
    theme("国家宪法日主题宣讲", &["宪法", "国家宪法日"], (12, 12), Any, None),
    theme("宪法宣传周：宪法与公民权利", &["宪法"], (12, 12), Any, None),
    theme("道路交通安全法规宣传", &["道路交通安全"], (12, 12), Any, None),
];

/// Common surnames in Shanxi, for speakers (no full names: the demo names
/// no real person).
const SURNAMES: &[&str] = &[
    "王", "李", "张", "刘", "郭", "赵", "杨", "武", "梁", "高", "田", "贾", "段", "白", "乔", "韩",
    "侯", "秦", "冯", "孟",
];

/// What the plan needs to know about a grassroots unit.
#[derive(Clone, Debug)]
struct Grassroots {
    code: String,
    name: String,
    village: bool,
    /// Index of its street or town in the district's children.
    area: usize,
}

/// Builds the plan of a seed.
pub fn plan(seed: u64) -> Plan {
    PlanBuilder::new(seed).build()
}

struct PlanBuilder {
    seed: u64,
    rng: rand_chacha::ChaCha8Rng,
    /// (code, name) of each street and the town, in code order.
    areas: Vec<(String, String)>,
    units: Vec<Grassroots>,
    devices: Vec<DevicePlan>,
    /// Device index of the community and village devices.
    community_device: usize,
    village_device: usize,
    /// Records per (round, device), in the order they are recorded.
    rounds: Vec<Vec<Vec<NewRecord>>>,
    next_tag: Tag,
    expected: Expected,
    lecture_units: std::collections::BTreeSet<String>,
}

/// The four sync rounds of the year: January–March, April–June,
/// July–September, October–December.
const ROUNDS: usize = 4;

fn round_of(month: u32) -> usize {
    ((month - 1) / 3) as usize
}

fn date(month: u32, day: u32) -> String {
    format!("2020-{month:02}-{day:02}")
}

fn fields(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        // Every call passes an object literal.
        _ => Map::new(),
    }
}

impl PlanBuilder {
    fn new(seed: u64) -> PlanBuilder {
        let all = org_units();
        let areas: Vec<(String, String)> = all
            .iter()
            .filter(|u| u.parent.as_deref() == Some(DISTRICT))
            .map(|u| (u.code.clone(), u.name.clone()))
            .collect();
        let units: Vec<Grassroots> = all
            .iter()
            .filter(|u| matches!(u.unit_type, UnitType::Community | UnitType::Village))
            .filter_map(|u| {
                let parent = u.parent.as_deref()?;
                Some(Grassroots {
                    code: u.code.clone(),
                    name: u.name.clone(),
                    village: u.unit_type == UnitType::Village,
                    area: areas.iter().position(|(c, _)| c == parent)?,
                })
            })
            .collect();
        let mut devices: Vec<DevicePlan> = areas
            .iter()
            .map(|(code, name)| DevicePlan {
                name: AREA_NAMES
                    .iter()
                    .find(|(c, _)| c == code)
                    .map_or_else(|| code.clone(), |(_, n)| (*n).to_string()),
                label: format!("{}司法所 平板", office_place(name)),
                org_unit: code.clone(),
            })
            .collect();
        let unit_name = |code: &str| {
            all.iter()
                .find(|u| u.code == code)
                .map_or_else(|| code.to_string(), |u| u.name.clone())
        };
        let community_device = devices.len();
        devices.push(DevicePlan {
            name: "liuxiang-03".into(),
            label: format!("{} 法律明白人手机", unit_name(COMMUNITY_DEVICE_UNIT)),
            org_unit: COMMUNITY_DEVICE_UNIT.into(),
        });
        let village_device = devices.len();
        devices.push(DevicePlan {
            name: "haozhuang-v03".into(),
            label: format!("{} 法律明白人手机", unit_name(VILLAGE_DEVICE_UNIT)),
            org_unit: VILLAGE_DEVICE_UNIT.into(),
        });
        let n_devices = devices.len();
        PlanBuilder {
            seed,
            rng: rand_chacha::ChaCha8Rng::seed_from_u64(seed),
            areas,
            units,
            devices,
            community_device,
            village_device,
            rounds: vec![vec![Vec::new(); n_devices]; ROUNDS],
            next_tag: 0,
            expected: Expected::default(),
            lecture_units: Default::default(),
        }
    }

    fn unit(&self, code: &str) -> Grassroots {
        self.units
            .iter()
            .find(|u| u.code == code)
            .cloned()
            .unwrap_or_else(|| Grassroots {
                code: code.into(),
                name: code.into(),
                village: false,
                area: 0,
            })
    }

    /// The device that records a unit's lectures: its own, if it has one,
    /// else its street's or town's.
    fn lecture_device(&self, u: &Grassroots) -> usize {
        match u.code.as_str() {
            COMMUNITY_DEVICE_UNIT => self.community_device,
            VILLAGE_DEVICE_UNIT => self.village_device,
            _ => u.area,
        }
    }

    fn tag(&mut self) -> Tag {
        self.next_tag += 1;
        self.next_tag - 1
    }

    fn add(
        &mut self,
        round: usize,
        device: usize,
        tag: Option<Tag>,
        kind: Kind,
        f: Map<String, Value>,
    ) {
        self.rounds[round][device].push(NewRecord {
            tag,
            kind,
            fields: f,
        });
    }

    /// A lecture counted on the server.
    fn count_lecture(&mut self, unit: &str, attendees: u64) {
        self.expected.lectures += 1;
        self.expected.attendees += attendees;
        self.lecture_units.insert(unit.to_string());
    }

    fn surname(&mut self) -> &'static str {
        SURNAMES[self.rng.gen_range(0..SURNAMES.len())]
    }

    fn speaker(&mut self, u: &Grassroots) -> String {
        let s = self.surname();
        match self.rng.gen_range(0..6) {
            0 => format!("{}司法所 {s}所长", office_place(&self.areas[u.area].1)),
            1 => format!("社区法律顾问 {s}律师"),
            2 => format!("迎泽区司法局 {s}科长"),
            3 => format!("迎泽区人民法院 {s}法官"),
            4 => format!("迎泽区人民检察院 {s}检察官"),
            _ => format!("辖区派出所 {s}警官"),
        }
    }

    /// A lecture of the pool: a theme of its month, held in `u`.
    fn lecture(&mut self, u: &Grassroots, month: u32) -> (Map<String, Value>, u64) {
        let day = match month {
            // Before the Spring Festival (25 January) and the lockdown.
            1 => self.rng.gen_range(2..=21),
            2 => self.rng.gen_range(10..=28),
            // Small gatherings again from mid-March.
            3 => self.rng.gen_range(16..=31),
            // The Constitution Day week (1–7 December) draws half of December.
            12 if self.rng.gen_bool(0.5) => self.rng.gen_range(1..=7),
            12 => self.rng.gen_range(8..=28),
            m => self.rng.gen_range(1..=DAYS_2020[m as usize - 1]),
        };
        let place = if u.village { Village } else { Community };
        let fits: Vec<&Theme> = THEMES
            .iter()
            .filter(|t| (t.months.0..=t.months.1).contains(&month))
            .filter(|t| t.place == Any || t.place == place)
            .filter(|t| !(month == 12 && day <= 7) || t.topics.contains(&"宪法"))
            .collect();
        let t = fits[self.rng.gen_range(0..fits.len())];
        let audience = t.audience.unwrap_or(if u.village {
            "villagers"
        } else if self.rng.gen_bool(0.7) {
            "residents"
        } else {
            "mixed"
        });
        let mut attendees: u64 = match (month, audience) {
            (2, _) => self.rng.gen_range(150..=420),
            (3, _) => self.rng.gen_range(15..=35),
            (4, _) => self.rng.gen_range(25..=60),
            (_, "students") => self.rng.gen_range(120..=320),
            (_, "enterprise_staff") => self.rng.gen_range(30..=80),
            (_, "villagers") => self.rng.gen_range(40..=130),
            _ => self.rng.gen_range(35..=110),
        };
        if month == 12 && day <= 7 {
            attendees += 20;
        }
        let venue = if month == 2 {
            "线上直播（社区微信群）".to_string()
        } else if audience == "students" {
            format!("{}辖区学校礼堂", u.name)
        } else if u.village {
            let v = ["村委会议室", "文化广场", "新时代文明实践站"];
            format!("{}{}", u.name, v[self.rng.gen_range(0..v.len())])
        } else {
            let v = ["党群服务中心", "居民活动室", "新时代文明实践站", "文化广场"];
            format!("{}{}", u.name, v[self.rng.gen_range(0..v.len())])
        };
        let mut f = fields(json!({
            "org_unit": u.code,
            "held_on": date(month, day),
            "title": t.title,
            "attendees": attendees,
            "topics": t.topics,
            "speaker": self.speaker(u),
            "venue": venue,
            "audience": audience,
        }));
        if month != 2 && self.rng.gen_bool(0.6) {
            // Around 迎泽区: 37.83–37.88 N, 112.54–112.62 E.
            let lat = 37_830_000 + u.area as u64 * 6_000 + self.rng.gen_range(0..6_000);
            let lon = 112_540_000 + self.rng.gen_range(0..80_000);
            f.insert(
                "location".into(),
                json!({"lat": lat as f64 / 1e6, "lon": lon as f64 / 1e6}),
            );
        }
        let notes = match month {
            2 => Some(format!("线上观看{attendees}人次")),
            3 | 4 => Some("落实疫情防控要求：测温、戴口罩、间隔就座".to_string()),
            _ if self.rng.gen_bool(0.4) => Some(match self.rng.gen_range(0..3) {
                0 => format!("发放宣传资料{}份", self.rng.gen_range(5..=30) * 10),
                1 => format!("现场解答法律咨询{}人次", self.rng.gen_range(5..=40)),
                _ => "结合身边案例讲解，群众互动踊跃".to_string(),
            }),
            _ => None,
        };
        if let Some(n) = notes {
            f.insert("notes".into(), json!(n));
        }
        (f, attendees)
    }

    fn build(mut self) -> Plan {
        let area = |code: &str| self.areas.iter().position(|(c, _)| c == code).unwrap_or(0);
        let (liuxiang, wenmiao, haozhuang) =
            (area("140106001"), area("140106002"), area("140106100"));
        let (community, village) = (self.community_device, self.village_device);

        // The pool of lectures, month by month, in random grassroots units.
        for month in 1..=12u32 {
            for _ in 0..POOL_PER_MONTH[month as usize - 1] {
                let u = self.units[self.rng.gen_range(0..self.units.len())].clone();
                let (f, attendees) = self.lecture(&u, month);
                self.count_lecture(&u.code, attendees);
                let device = self.lecture_device(&u);
                self.add(round_of(month), device, None, Kind::Lecture, f);
            }
        }

        // January: the town device mistypes a village's code before its
        // first sync (the device cannot check codes before it has the tree):
        // rejected as unknown_org_unit, then corrected and sent again.
        let typo_unit = self.unit(TYPO_UNIT);
        let (mut f, attendees) = self.lecture(&typo_unit, 1);
        self.count_lecture(TYPO_UNIT, attendees);
        f.insert("org_unit".into(), json!(TYPO_CODE));
        self.add(0, haozhuang, None, Kind::Lecture, f);
        self.expected.rejections += 1;

        // January: two joint lectures recorded by the guest's device, into
        // a unit outside its scope: rejected as out_of_scope. 文庙's stays
        // on its device, waiting for its user; the village's is discarded.
        let neighbour = self.unit(NEIGHBOUR_COMMUNITY);
        let (mut f, _) = self.lecture(&neighbour, 1);
        f.insert("notes".into(), json!("与柳巷街道联合举办"));
        self.add(0, wenmiao, None, Kind::Lecture, f);
        let neighbour = self.unit(NEIGHBOUR_VILLAGE);
        let (mut f, _) = self.lecture(&neighbour, 1);
        f.insert("notes".into(), json!("与郝庄第04村联合举办"));
        self.add(0, village, None, Kind::Lecture, f);
        self.expected.rejections += 2;

        // April–June: the yearly check of the legal library corners, one
        // active corner in every grassroots unit, recorded by the street's
        // or town's device; two more corners that are not active.
        let (mut corner_tag, mut corner_books) = (None, 0);
        for u in self.units.clone() {
            let tag = (u.code == VILLAGE_DEVICE_UNIT).then(|| self.tag());
            let f = self.corner(&u, "法治图书角", "active", None);
            if tag.is_some() {
                corner_books = f["books"].as_u64().unwrap_or_default();
            }
            self.add(1, u.area, tag, Kind::LibraryCorner, f);
            corner_tag = corner_tag.or(tag);
            self.expected.corners_active += 1;
        }
        self.expected.grassroots_units = self.units.len() as u64;
        let mut others: Vec<Grassroots> = self
            .units
            .iter()
            .filter(|u| u.code != VILLAGE_DEVICE_UNIT)
            .cloned()
            .collect();
        others.shuffle(&mut self.rng);
        let f = self.corner(
            &others[0],
            "法治图书角（二号点）",
            "inactive",
            Some("场地改造，暂停开放"),
        );
        self.add(1, others[0].area, None, Kind::LibraryCorner, f);
        let f = self.corner(
            &others[1],
            "法治图书角（旧址）",
            "closed",
            Some("已并入党群服务中心法治图书角"),
        );
        self.add(1, others[1].area, None, Kind::LibraryCorner, f);

        // Demonstration sites: 3 provincial and 5 municipal awarded in
        // 2020 and recorded when named (October–December), with two
        // candidates for 2021; two district-level ones of 2019 recorded in
        // January.
        let mut sites = self.units.clone();
        sites.shuffle(&mut self.rng);
        let awards = [
            (3, "provincial", "awarded", 2020, 3),
            (5, "municipal", "awarded", 2020, 3),
            (2, "municipal", "candidate", 2021, 3),
            (2, "district", "awarded", 2019, 0),
        ];
        let mut next = sites.into_iter();
        for (n, level, status, year, round) in awards {
            for u in next.by_ref().take(n) {
                let kind = if u.village { "村" } else { "社区" };
                let level_cn = match level {
                    "provincial" => "省级",
                    "municipal" => "市级",
                    _ => "区级",
                };
                let notes = if status == "candidate" {
                    format!("申报{year}年度{level_cn}民主法治示范{kind}")
                } else {
                    format!("{year}年度{level_cn}民主法治示范{kind}")
                };
                let f = fields(json!({
                    "org_unit": u.code, "level": level, "status": status,
                    "year": year, "notes": notes,
                }));
                self.add(round, u.area, None, Kind::DemoSite, f);
            }
        }
        self.expected.provincial = 3;
        self.expected.municipal = 5;

        // September: 柳巷街道's device records two lectures in 柳巷第03社区,
        // the second one twice by mistake. The community's own device pulls
        // them in the same round.
        let home = self.unit(COMMUNITY_DEVICE_UNIT);
        let (l1, l2, dup) = (self.tag(), self.tag(), self.tag());
        let (mut f1, a1) = self.lecture(&home, 9);
        f1.insert("title".into(), json!("民法典进社区：与生活息息相关的法律"));
        self.add(2, liuxiang, Some(l1), Kind::Lecture, f1);
        let (mut f2, a2) = self.lecture(&home, 9);
        let s = self.surname();
        let office = office_place(&self.areas[liuxiang].1).to_string();
        f2.insert("speaker".into(), json!(format!("{office}司法所 {s}所长")));
        self.add(2, liuxiang, Some(l2), Kind::Lecture, f2.clone());
        self.add(2, liuxiang, Some(dup), Kind::Lecture, f2);
        // Corrected in October, concurrently: the street's device from the
        // sign-in sheet, the community's device counting late arrivals
        // (edited later, it wins).
        let (street_count, community_count) = (a1 + 6, a1 + 9);
        self.count_lecture(COMMUNITY_DEVICE_UNIT, community_count);
        self.count_lecture(COMMUNITY_DEVICE_UNIT, a2);
        let lawyer = self.surname();
        let (lecture_edits_street, lecture_edits_community) = (
            vec![
                Step::Edit {
                    device: liuxiang,
                    tag: l1,
                    set: fields(json!({"attendees": street_count})),
                },
                Step::Edit {
                    device: liuxiang,
                    tag: l2,
                    set: fields(
                        json!({"speaker": format!("{office}司法所 {s}所长、社区法律顾问 {lawyer}律师")}),
                    ),
                },
                Step::Delete {
                    device: liuxiang,
                    tag: dup,
                },
            ],
            vec![
                Step::After {
                    device: community,
                    tags: vec![l1, l2, dup],
                },
                Step::Edit {
                    device: community,
                    tag: l1,
                    set: fields(json!({"attendees": community_count})),
                },
                Step::Edit {
                    device: community,
                    tag: l2,
                    set: fields(json!({"speaker": format!("社区法律顾问 {lawyer}律师")})),
                },
                // It edits the copy the street's device deleted: a conflict
                // on `_deleted`; the record stays deleted.
                Step::Edit {
                    device: community,
                    tag: dup,
                    set: fields(json!({"venue": format!("{}党群服务中心二楼会议室", home.name)})),
                },
            ],
        );
        // And the books of 郝庄第03村's corner, counted by the town's device
        // and, differently, by the village's own.
        let corner = corner_tag.unwrap_or_default();
        let corner_edits_town = vec![Step::Edit {
            device: haozhuang,
            tag: corner,
            set: fields(json!({"books": corner_books + 40})),
        }];
        let corner_edits_village = vec![
            Step::After {
                device: village,
                tags: vec![corner],
            },
            Step::Edit {
                device: village,
                tag: corner,
                set: fields(json!({"books": corner_books + 75})),
            },
        ];
        // attendees, speaker, _deleted, books.
        self.expected.conflicts = 4;

        self.appoint_understanders();

        // The steps: in each round every device records offline, then
        // syncs, streets and the town first. The community and village
        // devices come after their street and town, so they see the
        // records made there in the same round.
        let mut steps = Vec::new();
        let rounds = std::mem::take(&mut self.rounds);
        for (round, per_device) in rounds.into_iter().enumerate() {
            for (device, records) in per_device.into_iter().enumerate() {
                if !records.is_empty() {
                    steps.push(Step::Record { device, records });
                }
                if round == ROUNDS - 1 {
                    let edits = match device {
                        d if d == liuxiang => &lecture_edits_street,
                        d if d == community => &lecture_edits_community,
                        d if d == haozhuang => &corner_edits_town,
                        d if d == village => &corner_edits_village,
                        _ => &Vec::new(),
                    };
                    steps.extend(edits.iter().cloned());
                }
                steps.push(Step::Sync { device });
                if round == 0 && device == haozhuang {
                    steps.push(Step::FixOrgUnit {
                        device,
                        org_unit: TYPO_UNIT.into(),
                    });
                    steps.push(Step::Sync { device });
                }
                if round == 0 && device == village {
                    steps.push(Step::DiscardOutOfScope { device });
                }
            }
        }
        // A last sync everywhere, so that every device holds the year as
        // the server does (the streets learn how their conflicts ended).
        for device in 0..self.devices.len() {
            steps.push(Step::Sync { device });
        }
        // 29 December: the village device records a lecture and does not
        // sync again this year; it stays in its outbox.
        let me = self.unit(VILLAGE_DEVICE_UNIT);
        let (mut f, _) = self.lecture(&me, 12);
        f.insert("held_on".into(), json!("2020-12-29"));
        steps.push(Step::Record {
            device: village,
            records: vec![NewRecord {
                tag: None,
                kind: Kind::Lecture,
                fields: f,
            }],
        });
        self.expected.pending_on_devices = 1;
        self.expected.lecture_units = self.lecture_units.len() as u64;
        Plan {
            seed: self.seed,
            devices: self.devices,
            steps,
            expected: self.expected,
        }
    }

    /// April–June: the first 法律明白人 appointed, one in every community
    /// and village (首批选聘113名,覆盖所有社区(村)), recorded by the
    /// street's or town's device. Drawn from a generator of their own, so
    /// that the rest of the year stays what it was before they were added.
    fn appoint_understanders(&mut self) {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(self.seed ^ UNDERSTANDERS_SEED);
        for (i, u) in self.units.clone().into_iter().enumerate() {
            let month = rng.gen_range(4..=6);
            let day = rng.gen_range(1..=DAYS_2020[month as usize - 1]);
            // A surname and 某某: the demo names no real person, and its
            // numbers are in the 555 block no line is given.
            let surname = SURNAMES[rng.gen_range(0..SURNAMES.len())];
            let mut f = fields(json!({
                "org_unit": u.code,
                "name": format!("{surname}某某"),
                "appointed_on": date(month, day),
                "status": "serving",
                "training_hours": rng.gen_range(2..=10) * 4,
                "phone": format!("0351-555{i:04}"),
            }));
            if rng.gen_bool(0.2) {
                let role = ["村（居）民小组长", "人民调解员", "网格员", "退休教师"];
                f.insert("notes".into(), json!(role[rng.gen_range(0..role.len())]));
            }
            self.add(1, u.area, None, Kind::LegalUnderstander, f);
            self.expected.understanders += 1;
        }
    }

    fn corner(
        &mut self,
        u: &Grassroots,
        suffix: &str,
        status: &str,
        notes: Option<&str>,
    ) -> Map<String, Value> {
        let opened = format!(
            "{}-{:02}-{:02}",
            self.rng.gen_range(2016..=2019),
            self.rng.gen_range(1..=12),
            self.rng.gen_range(1..=28)
        );
        let checked = date(self.rng.gen_range(5..=6), self.rng.gen_range(1..=30));
        let mut f = fields(json!({
            "org_unit": u.code,
            "name": format!("{}{suffix}", u.name),
            "status": status,
            "books": self.rng.gen_range(18..=90) * 10,
            "opened_on": opened,
            "last_checked_on": checked,
        }));
        let notes = match notes {
            Some(n) => Some(n.to_string()),
            None if self.rng.gen_bool(0.3) => Some(format!(
                "新增《民法典》单行本{}册",
                self.rng.gen_range(10..=60)
            )),
            None => None,
        };
        if let Some(n) = notes {
            f.insert("notes".into(), json!(n));
        }
        f
    }
}

/// "柳巷街道" → "柳巷", "郝庄镇" → "郝庄": how a judicial office (司法所) is named.
fn office_place(area_name: &str) -> &str {
    area_name
        .strip_suffix("街道")
        .or_else(|| area_name.strip_suffix('镇'))
        .unwrap_or(area_name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{SEED_DEFAULT, STREET_COORDINATOR_UNIT};
    use pufa_core::date::Date;
    use pufa_core::schema::{check_set, first_missing_required, Today};

    fn records(plan: &Plan) -> impl Iterator<Item = &NewRecord> {
        plan.steps.iter().flat_map(|s| match s {
            Step::Record { records, .. } => records.as_slice(),
            _ => &[],
        })
    }

    #[test]
    fn the_embedded_tree_is_the_fixture() {
        let units = org_units();
        assert_eq!(units.len(), 121);
        let grassroots = units
            .iter()
            .filter(|u| matches!(u.unit_type, UnitType::Community | UnitType::Village))
            .count();
        assert_eq!(grassroots, 113);
        for (code, _) in AREA_NAMES {
            assert!(units.iter().any(|u| &u.code == code), "{code}");
        }
        for code in [
            COMMUNITY_DEVICE_UNIT,
            VILLAGE_DEVICE_UNIT,
            TYPO_UNIT,
            NEIGHBOUR_COMMUNITY,
            NEIGHBOUR_VILLAGE,
            STREET_COORDINATOR_UNIT,
        ] {
            assert!(units.iter().any(|u| u.code == code), "{code}");
        }
        assert!(!units.iter().any(|u| u.code == TYPO_CODE));
    }

    #[test]
    fn every_month_and_place_has_a_theme() {
        for month in 1..=12 {
            for place in [Community, Village] {
                assert!(
                    THEMES
                        .iter()
                        .any(|t| (t.months.0..=t.months.1).contains(&month)
                            && (t.place == Any || t.place == place)),
                    "month {month} {place:?}"
                );
            }
        }
        assert!(THEMES
            .iter()
            .any(|t| t.months.0 == 12 && t.topics.contains(&"宪法")));
    }

    #[test]
    fn the_plan_mirrors_the_report() {
        let p = plan(SEED_DEFAULT);
        let e = &p.expected;
        assert!((96..=99).contains(&e.lectures), "{e:?}");
        assert_eq!((e.corners_active, e.grassroots_units), (113, 113));
        assert_eq!(e.understanders, 113);
        let appointed: std::collections::BTreeSet<&str> = records(&p)
            .filter(|r| r.kind == Kind::LegalUnderstander)
            .map(|r| r.fields["org_unit"].as_str().unwrap())
            .collect();
        assert_eq!(appointed.len(), 113, "one in every community and village");
        assert_eq!((e.provincial, e.municipal), (3, 5));
        assert!(e.conflicts > 0 && e.rejections > 0, "{e:?}");
        // docs/operations.md ("Demo data") quotes these.
        assert_eq!((e.lectures, e.attendees, e.lecture_units), (97, 7925, 65));
        assert_eq!((e.conflicts, e.rejections), (4, 3));
        // Fewer lectures in the COVID months than in any other.
        let mut per_month = [0u32; 12];
        for r in records(&p).filter(|r| r.kind == Kind::Lecture) {
            let d = r.fields["held_on"].as_str().unwrap();
            assert!(d.starts_with("2020-"), "{d}");
            per_month[d[5..7].parse::<usize>().unwrap() - 1] += 1;
        }
        let busiest_covid = per_month[1].max(per_month[2]);
        assert!(per_month
            .iter()
            .enumerate()
            .all(|(m, n)| m == 1 || m == 2 || *n > busiest_covid));
    }

    #[test]
    fn every_record_passes_the_field_rules() {
        let today = Today(Date::parse("2021-01-01").unwrap());
        let p = plan(7);
        let grassroots: Vec<String> = org_units()
            .into_iter()
            .filter(|u| matches!(u.unit_type, UnitType::Community | UnitType::Village))
            .map(|u| u.code)
            .collect();
        for r in records(&p) {
            check_set(r.kind, &r.fields, today).unwrap_or_else(|e| panic!("{e:?}: {:?}", r.fields));
            let has = |f: &str| r.fields.contains_key(f);
            assert_eq!(first_missing_required(r.kind, has), None);
            let unit = r.fields["org_unit"].as_str().unwrap();
            assert!(
                unit == TYPO_CODE || grassroots.iter().any(|g| g == unit),
                "{unit}"
            );
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_plan() {
        assert_eq!(plan(1), plan(1));
        assert_ne!(plan(1).steps, plan(2).steps);
    }
}
