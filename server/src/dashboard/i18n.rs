//! Every piece of dashboard UI text, in Chinese (zh-CN, the default) and
//! English, as one table.
//!
//! Pages name a [`T`] and never spell text themselves, so a translation
//! is fixed here once and a missing one is a compile error, not an
//! English word in a Chinese page. What kinds, fields and enum values are
//! called comes from `pufa_core::schema`, shared with the field app, the
//! CLI and the exports. Data (unit names, device labels, rejection
//! messages from the validator) is shown as stored.

use pufa_core::schema::{choice_label, Kind, Label};

/// The language a page is rendered in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Lang {
    #[default]
    Zh,
    En,
}

impl Lang {
    /// The value of `?lang=` and of the `pufa_lang` cookie.
    pub fn param(self) -> &'static str {
        match self {
            Lang::Zh => "zh",
            Lang::En => "en",
        }
    }

    /// The `<html lang>` attribute.
    pub fn html_tag(self) -> &'static str {
        match self {
            Lang::Zh => "zh-CN",
            Lang::En => "en",
        }
    }

    /// Reads a `?lang=` or cookie value.
    pub fn parse(text: &str) -> Option<Lang> {
        match text {
            "zh" | "zh-CN" => Some(Lang::Zh),
            "en" => Some(Lang::En),
            _ => None,
        }
    }

    /// The language the switch link offers.
    pub fn other(self) -> Lang {
        match self {
            Lang::Zh => Lang::En,
            Lang::En => Lang::Zh,
        }
    }
}

// One line per text: key, Chinese, English. The macro keeps the two
// languages side by side so a reviewer sees both at once. Names of kinds
// and enum values come from `pufa_core::schema` (`core { … }`), which the
// field app, the CLI and the exports read too.
macro_rules! texts {
    (
        core { $($core_key:ident => $label:expr;)* }
        $($key:ident => $zh:literal, $en:literal;)*
    ) => {
        /// A UI text; [`T::get`] gives it in a language.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum T { $($core_key,)* $($key,)* }

        impl T {
            /// Every text, for the table's own tests.
            pub const ALL: &'static [T] = &[$(T::$core_key,)* $(T::$key,)*];

            pub fn get(self, lang: Lang) -> &'static str {
                let (zh, en) = match self {
                    $(T::$core_key => {
                        let label: Label = $label;
                        (label.zh, label.en)
                    })*
                    $(T::$key => ($zh, $en),)*
                };
                match lang {
                    Lang::Zh => zh,
                    Lang::En => en,
                }
            }
        }
    };
}

/// What core calls an enum value; a value core does not know stays as it is.
fn choice(field: &str, value: &'static str) -> Label {
    choice_label(field, value).unwrap_or(Label {
        zh: value,
        en: value,
    })
}

texts! {
    core {
        Lectures => Kind::Lecture.label_plural();
        Corners => Kind::LibraryCorner.label_plural();
        DemoSites => Kind::DemoSite.label_plural();
        Understanders => Kind::LegalUnderstander.label_plural();
        LevelNational => choice("level", "national");
        LevelProvincial => choice("level", "provincial");
        LevelMunicipal => choice("level", "municipal");
        LevelDistrict => choice("level", "district");
    }
    AppName => "普法同步 · 工作看板", "Pufa Sync · Coordinator dashboard";
    MainMenu => "主菜单", "Main menu";
    NavOverview => "概览", "Overview";
    NavConflicts => "冲突处理", "Conflicts";
    NavRejections => "被拒绝的提交", "Rejected edits";
    NavDevices => "设备", "Devices";
    // The switch link names the language it switches to, in that language.
    SwitchLang => "English", "中文";
    SignIn => "登录", "Sign in";
    SignOut => "退出登录", "Sign out";
    SignedInAs => "当前用户", "Signed in as";
    Token => "令牌", "Token";
    LoginIntro => "请使用您的用户名和密码登录，或使用协调员或管理员令牌登录。外勤设备的令牌不能登录看板。",
        "Sign in with your username and password, or with a coordinator or admin token. Field-device tokens cannot sign in here.";
    LoginEmpty => "请输入令牌。", "Enter a token.";
    LoginUnknown => "令牌无效或已被吊销。", "This token is unknown or has been revoked.";
    LoginFieldToken => "这是外勤设备的令牌，不能登录看板。请使用协调员或管理员令牌。",
        "This is a field-device token: it cannot sign in to the dashboard. Use a coordinator or admin token.";

    RoleField => "外勤", "field";
    RoleCoordinator => "协调员", "coordinator";
    RoleAdmin => "管理员", "admin";
    UnitDistrict => "区", "district";
    UnitStreet => "街道", "street";
    UnitTown => "镇", "town";
    UnitCommunity => "社区", "community";
    UnitVillage => "村", "village";
    Everything => "全部", "everything";

    Breadcrumbs => "当前位置", "You are here";
    Period => "统计期间", "Period";
    From => "开始日期", "From";
    To => "结束日期", "To";
    Apply => "查询", "Apply";
    PeriodHint => "默认为本年度（本年度尚无数据时为最近有数据的年度）；留空表示不限。讲座按举办日期统计，示范村（社区）按授牌年度统计，图书角为当前状态；法律明白人按选聘日期统计，在任人数为结束日期前选聘、现仍在任的人数。",
        "This year by default (the latest year with data if this one has none); leave a date empty for no limit. Lectures count by date held, demonstration sites by award year; library corners are as they are now; legal understanders count by date of appointment, those serving being the ones appointed by the end date who serve now.";
    AnyDate => "不限", "any";
    LectureCount => "场次", "Lectures held";
    Attendees => "参与人次", "Attendees";
    UnitsWithLecture => "开展讲座的基层单位", "Grassroots units with a lecture";
    CornersActive => "在用图书角", "Active corners";
    FigureRules => "统计口径：讲座按举办日期统计；图书角为 {n}年12月31日 在用的（按各图书角的修改记录，以手机上修改的时间为准）；示范村（社区）按授牌年度；法律明白人按选聘日期，在任人数为年末在任。", "How each figure counts: lectures by the day held; library corners active on 31 December {n} (from each corner's history, as of when an edit was made on the phone); demonstration sites by the year awarded; legal understanders by the day appointed, serving as of the year's end.";
    Coverage => "基层单位覆盖率", "Grassroots coverage";
    UnitsCovered => "已覆盖 / 基层单位总数", "Units covered / grassroots units";
    ConflictsOpen => "待处理冲突", "Open conflicts";
    SubUnits => "下级单位", "Sub-units";
    NoSubUnits => "该单位没有下级单位。", "This unit has no sub-units.";
    Name => "名称", "Name";
    UnitType => "类型", "Type";
    NoOrgUnits => "尚未导入组织机构。", "No org units have been imported yet.";
    ChooseRoot => "有多个顶级单位，请选择一个：", "There are several top-level units; choose one:";

    NavPeriods => "报送审核", "Approvals";
    PeriodsIntro => "各街道（镇）报送本单位的年度、季度或月度数据，区里审核通过后，该时段的数据即锁定：之后同步上来的、日期在该时段内的修改都会被拒绝，报表不再变动。需要更正时，由区里重新开放。",
        "Streets and towns submit their figures for a year, quarter or month; once the district approves, the period is locked: later edits dated in it are refused and the report no longer moves. To correct it, the district reopens it.";
    PeriodUnit => "单位", "Unit";
    PeriodWhich => "时段", "Period";
    PeriodState => "状态", "State";
    PeriodLast => "最近操作", "Last step";
    PeriodActions => "操作", "Actions";
    StateOpen => "未提交", "Not submitted";
    StateSubmitted => "已提交", "Submitted";
    StateReturned => "已退回", "Returned";
    StateApproved => "已审核", "Approved";
    LockedBy => "已锁定：随上级审核", "Locked by the approval of";
    Locked => "已锁定", "Locked";
    ActSubmit => "提交", "Submit";
    ActReturn => "退回", "Return";
    ActApprove => "审核通过", "Approve";
    ActReopen => "重新开放", "Reopen";
    Reason => "原因", "Reason";
    OtherPeriod => "办理其他时段（季度、月度）", "Act on another period (a quarter or month)";
    PeriodFormat => "时段格式：2020、2020-Q1 或 2020-03", "Period: 2020, 2020-Q1 or 2020-03";
    StepDone => "已办理。", "Done.";
    StepWrongState => "该时段当前的状态不能办理这一步：", "The period's state does not allow this step:";
    StepLockedAbove => "包含该时段的更大时段已经审核锁定，请先重新开放：", "A period covering this one is approved and locked; reopen it first:";
    StepNeedsApprover => "退回、审核和重新开放须由上级单位的协调员或管理员办理。", "Only a coordinator above the unit, or an admin, returns, approves and reopens.";
    StepNeedsReason => "退回或重新开放时，请填写原因。", "Say why when returning or reopening.";
    StepBadPeriod => "时段格式不对。应为 2020、2020-Q1 或 2020-03。", "That is not a period: use 2020, 2020-Q1 or 2020-03.";
    StepLongReason => "原因太长（最多 500 字）。", "The reason is too long (at most 500 characters).";
    ConflictsIntro => "两台设备在互不知情时修改了同一字段。目前保留的是较新的值；请确定应保留哪个值。",
        "Two devices changed the same field without seeing each other's edit. The newer value stands for now; decide which value to keep.";
    NoConflicts => "没有待处理的冲突。", "No open conflicts.";
    Record => "记录", "Record";
    Field => "字段", "Field";
    CurrentValue => "当前值", "Current value";
    OverwrittenValue => "被覆盖的值", "Overwritten value";
    Device => "设备", "Device";
    Time => "时间", "Time";
    KeepThis => "保留此值", "Keep this value";
    OtherValue => "改为其他值：", "Use another value:";
    Resolve => "确定", "Resolve";
    Resolved => "冲突已处理。", "The conflict is resolved.";
    ChooseValue => "请选择一个值，或输入新值。", "Choose one of the values, or type one.";
    ConflictGone => "该冲突已处理，或不在您的管理范围内。", "This conflict is already resolved, or outside your scope.";
    ValueRejected => "该值不符合字段规则：", "That value breaks the field's rules:";

    RejectionsIntro => "以下提交被服务器拒绝，没有保存。请联系使用该设备的人员更正后重新提交。",
        "The server refused these edits and did not save them. Ask the person using the device to correct and resubmit them.";
    NoRejections => "没有被拒绝的提交。", "No rejected edits.";
    Received => "接收时间", "Received";
    Code => "错误代码", "Code";
    Message => "说明", "Message";
    RecordKind => "记录类型", "Record kind";
    Submitted => "提交内容", "As submitted";

    DevicesIntro => "超过 14 天未同步或从未同步的设备已标出。时钟偏差为正数表示设备时钟慢于服务器。",
        "Devices that have not synced for over 14 days, or never, are marked. A positive clock skew means the device's clock is behind the server's.";
    NoDevices => "没有设备。", "No devices.";
    Label => "名称", "Label";
    Role => "角色", "Role";
    Unit => "单位", "Unit";
    LastPush => "最近上传", "Last push";
    LastPull => "最近下载", "Last pull";
    Outbox => "待上传条数", "Outbox";
    OldestPending => "最早待上传", "Oldest pending";
    ClockSkew => "时钟偏差", "Clock skew";
    AppVersion => "应用版本", "App version";
    Status => "状态", "Status";
    Never => "从未", "never";
    Stale => "⚠ 超过 14 天未同步", "⚠ not synced for over 14 days";
    NeverSynced => "⚠ 从未同步", "⚠ never synced";
    SkewFar => "⚠ 时钟偏差过大", "⚠ clock far off";
    Revoked => "已吊销", "revoked";
    Fine => "正常", "ok";
    Millis => "{n} 毫秒", "{n} ms";
    Seconds => "{n} 秒", "{n} s";
    Minutes => "{n} 分钟", "{n} min";
    Hours => "{n} 小时", "{n} h";
    Days => "{n} 天", "{n} d";

    TimesUtc => "所有时间均为 UTC（协调世界时）。", "All times are UTC.";
    TimesBeijing => "所有时间均为北京时间。", "All times are China Standard Time (Asia/Shanghai).";
    TimesInZone => "所有时间均为 {zone} 时间（UTC{offset}）。", "All times are {zone} time (UTC{offset}).";
    TimesInZoneNow => "所有时间均为 {zone} 时间（现为 UTC{offset}，随夏令时变化）。", "All times are {zone} time (now UTC{offset}; it changes with summer time).";
    ShowingNewest => "仅显示最新的 {n} 条。", "Showing the newest {n} only.";

    ErrBadRequest => "请求有误", "Bad request";
    ErrForbidden => "无权访问", "Not allowed";
    ErrNotFound => "未找到", "Not found";
    ErrUnavailable => "服务暂不可用", "Service unavailable";
    ErrInternal => "服务器出错", "Server error";
    ErrTooMany => "请稍后再试", "Try again later";
    TryAgainSeconds => "请求太频繁，请 {n} 秒后再试。", "Too many requests; try again in {n} s.";
    TryAgainMinutes => "已达到上限，请 {n} 分钟后再试；如需立即处理，请联系管理员。", "A limit has been reached; try again in {n} min, or ask an admin if it cannot wait.";
    BadDate => "须为 YYYY-MM-DD 格式的真实日期", "must be a real date written YYYY-MM-DD";
    FromAfterTo => "开始日期晚于结束日期。", "The start date is after the end date.";
    BadLang => "不支持该语言，请使用 zh 或 en", "unknown language; use zh or en";
    BadQueryString => "无法解析网址中的查询参数。", "The query string of this address could not be read.";
    BadForm => "无法解析提交的表单。", "The submitted form could not be read.";
    OutOfScope => "该单位不在您的管理范围内。", "That unit is outside your scope.";
    NoSuchUnit => "没有该单位。", "There is no such unit.";
    NoSuchPage => "没有该页面。", "There is no such page.";
    CsrfFailed => "表单已失效或并非来自本看板。请返回、刷新页面后重试。",
        "This form is stale or did not come from this dashboard. Go back, reload the page and try again.";
    CrossOrigin => "请求来自其他网站，已拒绝。", "The request came from another site and was refused.";
    FieldSession => "外勤设备的令牌不能使用看板。", "Field-device tokens cannot use the dashboard.";
    StoreTrouble => "数据存储暂时不可用，请稍后重试。", "Storage is unavailable right now; try again shortly.";
    InternalTrouble => "服务器内部错误，已记录日志。", "Internal server error; it has been logged.";
    BackHome => "返回概览", "Back to the overview";

    NavReport => "年度报告", "Annual report";
    NavCoverage => "覆盖情况", "Coverage";
    BadParam => "参数取值无效", "invalid value";
    LecturesPerMonth => "每月法律大讲堂场次", "Legal lectures per month";
    AsTable => "以表格查看", "Show as a table";
    Month => "月份", "Month";
    Year => "年度", "Year";
    TotalsTable => "统计汇总表", "Totals table";
    Downloads => "下载（Excel 可直接打开）", "Downloads (open in Excel)";
    DownloadsHint => "CSV 为带 BOM 的 UTF-8 编码，Excel 可正确显示中文；记录表中每级组织单位占一列。",
        "CSV is UTF-8 with a BOM, so Excel shows Chinese correctly; record tables have one column per org level.";
    ReportParagraph => "可直接粘贴到年度报告的文字", "A paragraph to paste into the annual report";
    ReportParagraphHint => "以下文字由已同步的数据生成，数字与下方统计一致。",
        "Generated from the synced records; the numbers match the figures below.";
    ReportHasConflicts => "尚有 {n} 处数据冲突待处理，数字可能调整。", "{n} data conflicts are still open; figures may change.";
    ReportDocx => "下载 Word 文档", "Download as a Word document";
    ReportDocxHint => "Word 文档按工作报告格式排版（标题、分节、数据表）；也可用浏览器打印本页（A4）。",
        "The Word document is laid out as a work report (title, sections, figure tables); this page also prints on A4 from the browser.";
    LecturesInGrassroots => "在社区（村）举办的场次", "Held in communities and villages";
    UnitsReached => "开展讲座的社区（村）", "Communities and villages reached";
    LecturesAll => "全部场次（含区、街道层面）", "All lectures (district and street level too)";
    UnitsWithoutCorner => "尚无在用图书角的社区（村）", "Communities and villages without an active corner";
    ByTopic => "按宣讲主题", "By topic";
    ByTopicHint => "一场讲座有多个主题时分别计入各主题，因此合计可能多于总场次。",
        "A lecture with several topics counts under each, so these add up to more than the lectures held.";
    NoLectures => "该年度没有讲座记录。", "No lectures recorded in this year.";
    Topic => "主题", "Topic";
    NoTopic => "（未填写主题）", "(no topic)";
    Quarter => "季度", "Quarter";
    BadQuarter => "须为 1 至 4", "must be 1 to 4";
    GapsOnly => "只看有缺口的单位", "Only units with gaps";
    GrassrootsUnits => "社区（村）总数", "Communities and villages";
    WithoutCorner => "无在用图书角", "Without an active library corner";
    WithoutLectureInQuarter => "第 {n} 季度未开展讲座", "No lecture in Q{n}";
    Parent => "上级单位", "Parent";
    LecturesInQuarter => "第 {n} 季度场次", "Lectures in Q{n}";
    LecturesInYear => "全年场次", "Lectures in the year";
    Gaps => "缺口", "Gaps";
    MarkNoCorner => "⚠ 无图书角", "⚠ no library corner";
    MarkNoLecture => "⚠ 第 {n} 季度无讲座", "⚠ no lecture in Q{n}";
    RecordsIntro => "以下是构成该统计数字的记录。", "These are the records behind the figure.";
    NoRecords => "没有符合条件的记录。", "No records match.";
    NextPage => "下一页 →", "Next page →";
    UnderstandersAppointed => "选聘人数", "Appointed";
    UnderstandersServing => "在任人数", "Serving";
    UnderstandersServingAtYearEnd => "年末在任人数", "Serving at the year's end";
    UnderstandersInUnit => "在任法律明白人", "Legal understanders serving";
    UnitsWithoutUnderstander => "尚无在任法律明白人的社区（村）", "Communities and villages without a serving legal understander";
    WithoutUnderstander => "无在任法律明白人", "Without a serving legal understander";
    MarkNoUnderstander => "⚠ 无法律明白人", "⚠ no legal understander";
    ExportTooLarge => "数据过多，无法生成 XLSX，请下载 CSV。", "Too many rows for XLSX; download the CSV instead.";

    Username => "用户名", "Username";
    Password => "密码", "Password";
    SignInWithToken => "或使用令牌登录", "Or sign in with a token";
    LoginPasswordEmpty => "请输入用户名和密码。", "Enter your username and password.";
    LoginBusy => "现在登录的人较多，请 {n} 秒后再试。", "Many sign-ins at once; try again in {n} s.";
    LoginWrongPassword => "用户名或密码不正确。", "Wrong username or password.";
    LoginLocked => "该用户名登录失败次数过多，已暂时锁定。请 {n} 分钟后再试，或请管理员重设密码。",
        "Too many failed sign-ins for this username: it is locked for now. Try again in {n} minutes, or ask an admin to reset the password.";
    LoginDisabled => "该账号已停用，请联系管理员。", "This account is disabled; ask an admin.";

    NavEnrol => "设备登记", "Enrol a device";
    EnrolIntro => "为外勤设备生成一次性登记码。外勤人员用手机扫描生成后显示的二维码，即可在手机浏览器中打开“普法同步”外勤应用（本服务器的 /field/ 页面），登记码自动填入；也可以在外勤应用中手动输入登记码，或在电脑上运行 pufa enroll --server 服务器地址 --code 登记码。登记后设备即绑定到所选单位。登记码只能使用一次，过期自动失效。",
        "Make a one-time enrolment code for a field device. The field worker scans the QR code shown with it on a phone: this opens the Pufa Sync field app (this server's /field/ page) in the phone's browser with the code filled in. The code can also be typed into the field app, or used on a computer with pufa enroll --server SERVER --code CODE. The device is then bound to the chosen unit. A code works once and stops working when it expires.";
    EnrolQrHint => "用手机扫描二维码，打开外勤应用并登记设备。二维码中的地址：", "Scan with the phone to open the field app and enrol it. The address in the QR code:";
    EnrolNew => "生成登记码", "Make a code";
    EnrolValidFor => "有效期", "Valid for";
    EnrolLabel => "设备名称（可选）", "Device name (optional)";
    EnrolDeviceRole => "设备角色", "Device role";
    EnrolCode => "登记码", "Enrolment code";
    EnrolCodeHint => "请将此码告知设备使用人（可读出）。此码只显示这一次。", "Read this code out to the person with the device. It is shown only this once.";
    EnrolExpires => "失效时间", "Expires";
    EnrolOpen => "未使用的登记码", "Unused codes";
    EnrolNone => "没有未使用的登记码。", "No unused codes.";
    EnrolCreatedBy => "创建人", "Made by";
    EnrolWithdraw => "撤回", "Withdraw";
    EnrolWithdrawn => "登记码已撤回。", "The code is withdrawn.";
    EnrolGone => "该登记码已使用、已撤回或不在您的管理范围内。", "That code is used, withdrawn, or outside your scope.";
    EnrolLabelTooLong => "设备名称过长。", "The device name is too long.";
    EnrolCoordinatorOnly => "协调员只能为外勤设备生成登记码。", "Coordinators make codes for field devices only.";
    HoursN => "{n} 小时", "{n} hours";
    DaysN => "{n} 天", "{n} days";
    NavDuplicates => "疑似重复", "Possible duplicates";
    DuplicatesIntro => "同一单位、同一天、标题相近的两条讲座记录，可能是两部手机重复录入了同一场活动，会被重复统计。请逐对核对：确实是两场活动的，点“不是重复”；重复的，删除其中一条。",
        "Two lectures of one unit on one day with similar titles may be one event recorded on two phones, counted twice. Check each pair: if they are two events, mark them not a duplicate; if not, delete one.";
    NoDuplicates => "没有疑似重复的记录。", "No possible duplicates.";
    DuplicatesCount => "本年度共有 {n} 对疑似重复。", "{n} possible duplicate pairs this year.";
    DuplicatesTruncated => "记录太多，只核对了一部分，实际可能更多。", "Too many records: only part was compared, there may be more.";
    NotDuplicate => "不是重复", "Not a duplicate";
    DeleteLeft => "删除左边", "Delete left";
    DeleteRight => "删除右边", "Delete right";
    RecordedBy => "录入设备", "Recorded by";
    DuplicateDismissed => "已标记为不是重复。", "Marked as not a duplicate.";
    DuplicateDeleted => "已删除该记录，统计数字已更新。", "The record is deleted; the figures are updated.";
    DuplicateGone => "该记录不存在、已删除或不在您的管辖范围内。", "This record does not exist, is deleted, or is outside your scope.";
    DuplicateLocked => "该记录所在时段已审核锁定，不能删除；如需删除，请联系区里重新开放。",
        "The record is in an approved, locked period and cannot be deleted; ask the district to reopen it.";
    ReportHasDuplicates => "本年度有 {n} 对疑似重复的讲座记录，请核对", "{n} possible duplicate lecture pairs this year: check them";
}

impl T {
    /// The text with `{n}` replaced by `n`.
    pub fn with_n(self, lang: Lang, n: impl std::fmt::Display) -> String {
        self.get(lang).replace("{n}", &n.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_text_exists_in_both_languages() {
        for t in T::ALL {
            for lang in [Lang::Zh, Lang::En] {
                assert!(!t.get(lang).trim().is_empty(), "{t:?} in {lang:?}");
            }
            // Placeholders must match, or one language would show "{n}".
            for placeholder in ["{n}", "{zone}", "{offset}"] {
                assert_eq!(
                    t.get(Lang::Zh).contains(placeholder),
                    t.get(Lang::En).contains(placeholder),
                    "{t:?} {placeholder}"
                );
            }
        }
    }

    #[test]
    fn lang_round_trips_through_its_parameter() {
        for lang in [Lang::Zh, Lang::En] {
            assert_eq!(Lang::parse(lang.param()), Some(lang));
            assert_ne!(lang.other(), lang);
        }
        assert_eq!(Lang::parse("fr"), None);
        assert_eq!(T::Days.with_n(Lang::En, 3), "3 d");
    }
}
