// The app's own words, in Chinese (default) and English. What records are
// called, their fields, choices and rejection reasons come from the
// server's schema (`GET /v1/schema`, one place in core); only the app's
// chrome is here.

export const LANGS = ['zh-CN', 'en'];
let lang = 'zh-CN';

export function setLang(l) {
  lang = LANGS.includes(l) ? l : 'zh-CN';
  document.documentElement.lang = lang;
}

export function getLang() {
  return lang;
}

/** Picks this language from a `{"zh-CN": …, "en": …}` label. */
export function loc(label, fallback = '') {
  if (!label) return fallback;
  if (typeof label === 'string') return label;
  return label[lang] || label['zh-CN'] || label.zh || label.en || fallback;
}

const S = {
  app_name: ['普法同步', 'Pufa Sync'],
  locked_by: ['（{unit} {period} 由 {who} 审核）', ' ({unit} {period}, approved by {who})'],
  records: ['记录', 'Records'],
  new_record: ['新建', 'New'],
  sync_now: ['同步', 'Sync'],
  settings: ['设置', 'Settings'],
  // status line
  offline: ['离线', 'Offline'],
  syncing: ['正在同步…', 'Syncing…'],
  pending_n: ['待同步 {n} 条', '{n} waiting to sync'],
  rejected_n: ['被拒绝 {n} 条', '{n} rejected'],
  last_sync: ['上次同步 {t}', 'Last synced {t}'],
  never_synced: ['尚未同步', 'Not synced yet'],
  all_synced: ['已全部同步', 'All synced'],
  sync_failed: ['同步失败，稍后自动重试', 'Sync failed; will retry'],
  sync_unreachable: ['连不上服务器，稍后自动重试', 'Cannot reach the server; will retry'],
  sync_offline_tap: [
    '现在没有网络。记录已保存在本机，联网后会自动同步。',
    'No network now. Records are saved on this phone and sync by themselves once online.',
  ],
  need_reenrol: ['需要重新登记', 'Enrol again'],
  need_reenrol_banner: [
    '本手机的登记已失效（可能已被协调员停用）。请向协调员索取新的登记码，点“重新登记”。本机待同步的记录会保留，重新登记后自动上传。',
    'This phone’s enrolment is no longer valid (a coordinator may have revoked it). Ask your coordinator for a new code and tap “Enrol again”. Unsynced records stay on this phone and are sent after enrolling.',
  ],
  persist_refused: [
    '浏览器没有同意长期保存本机数据，手机空间不足时可能清除未同步的记录。请把本应用添加到主屏幕，并尽快联网同步。',
    'The browser did not agree to keep this data for good: it may clear unsynced records when space runs low. Add the app to your home screen and sync soon.',
  ],
  got_it: ['知道了', 'OK'],
  synced_report: ['已同步：上传 {p} 条，收到 {r} 条', 'Synced: sent {p}, received {r}'],
  // states
  st_synced: ['已同步', 'Synced'],
  st_pending: ['待同步', 'Waiting to sync'],
  st_rejected: ['被拒绝', 'Rejected'],
  st_conflicted: ['有冲突', 'Conflict'],
  st_deleted: ['已删除', 'Deleted'],
  pending_note: ['已保存在本机，联网后自动上传。', 'Saved on this phone; sent by itself once online.'],
  deleted_note: ['这条记录已删除，可点“恢复”找回。', 'This record is deleted; tap “Restore” to bring it back.'],
  // enrolment
  enrol_title: ['登记本设备', 'Enrol this device'],
  enrol_intro: [
    '请输入协调员给您的登记码（或用手机扫描登记页上的二维码）。登记后，即使没有网络也能记录，联网后自动同步。',
    'Enter the enrolment code from your coordinator (or scan the QR code on the enrolment page). Once enrolled you can record without a signal; it syncs when you are back online.',
  ],
  enrol_code: ['登记码', 'Enrolment code'],
  enrol_label: ['您的姓名或设备名称（可选）', 'Your name or a device name (optional)'],
  enrol_button: ['登记', 'Enrol'],
  enrol_from_link: ['已从链接读取登记码，确认后登记。', 'Code read from the link: confirm to enrol.'],
  enrol_working: ['正在登记…', 'Enrolling…'],
  enrol_bad_code: ['登记码无效、已使用或已过期，请向协调员索取新码。', 'Invalid, used or expired code: ask your coordinator for a new one.'],
  enrol_rate_limited: ['服务器上登记失败次数过多，请 {s} 秒后再试。', 'Too many failed enrolments on the server; try again in {s} s.'],
  enrol_offline: ['无法连接服务器。登记需要网络；若已提交过，该码可能已被使用。', 'Cannot reach the server. Enrolling needs a network; if you already submitted, the code may be spent.'],
  enrol_done: ['登记成功：{label}', 'Enrolled: {label}'],
  enrol_token: ['使用管理员签发的设备令牌', 'Use a device token from an admin'],
  enrol_token_field: ['设备令牌', 'Device token'],
  enrol_bad_token: ['服务器拒绝了这个令牌（无效或已吊销）。', 'The server refused this token (invalid or revoked).'],
  enrol_session_token: ['这是个人登录会话的令牌，不是设备令牌。', 'This is a person’s sign-in session, not a device token.'],
  reenrol_keeps: [
    '重新登记后，本机待同步的 {n} 条修改会保留，并由新登记的设备上传。',
    'After enrolling again, the {n} unsynced edits on this phone are kept and sent by the newly enrolled device.',
  ],
  reenrol: ['重新登记', 'Enrol again'],
  // list
  filter_kind: ['类型', 'Kind'],
  filter_unit: ['单位', 'Unit'],
  filter_month: ['月份', 'Month'],
  filter_all: ['全部', 'All'],
  show_deleted: ['显示已删除', 'Show deleted'],
  no_records: ['还没有记录。点“新建”记录一场活动。', 'No records yet. Tap “New” to record one.'],
  more: ['显示更多', 'Show more'],
  n_records: ['共 {n} 条', '{n} records'],
  // form
  choose_kind: ['要记录什么？', 'What are you recording?'],
  save: ['保存', 'Save'],
  cancel: ['取消', 'Cancel'],
  saved: ['已保存在本机', 'Saved on this phone'],
  saved_resubmitted: ['已修改并重新提交', 'Fixed and resubmitted'],
  search_unit: ['搜索单位名称', 'Search units by name'],
  no_units: ['还没有单位列表：请先联网同步一次。', 'No units yet: sync once while online.'],
  no_unit_match: ['没有名称含“{q}”的单位。', 'No unit has “{q}” in its name.'],
  unit_unknown: ['本设备范围外的单位（编号 {code}）', 'a unit outside this device’s scope (code {code})'],
  pick_unit: ['请选择单位', 'Choose a unit'],
  add_topic: ['添加', 'Add'],
  topic_placeholder: ['输入主题后点“添加”', 'Type a topic, then Add'],
  remove: ['移除', 'Remove'],
  use_location: ['使用我的位置', 'Use my location'],
  locating: ['正在定位…', 'Locating…'],
  location_denied: [
    '没有定位权限：请在浏览器或手机设置中允许本网站使用位置后再点一次；也可以不填位置。',
    'No permission to use the location: allow it for this site in the browser or phone settings and tap again, or leave it empty.',
  ],
  location_unavailable: [
    '暂时无法确定位置（手机定位可能未开启或信号弱），请到室外再试；也可以不填位置。',
    'The position is not available now (location may be off or the signal weak); try again outdoors, or leave it empty.',
  ],
  location_timeout: ['定位超时，请再点一次；也可以不填位置。', 'Locating took too long; tap again, or leave it empty.'],
  location_insecure: [
    '浏览器只允许通过 HTTPS 打开的网页定位，请联系管理员；也可以不填位置。',
    'Browsers allow locating only for pages opened over HTTPS: tell your administrator, or leave it empty.',
  ],
  location_unsupported: ['这个浏览器不能定位；可以不填位置。', 'This browser cannot locate; leave it empty.'],
  location_got: ['已获取位置（精度约 {m} 米）', 'Location found (to about {m} m)'],
  lat_lon: ['纬度 {lat}，经度 {lon}', 'latitude {lat}, longitude {lon}'],
  clear: ['清除', 'Clear'],
  none_chosen: ['（未选择）', '(none)'],
  today: ['今天', 'Today'],
  chars: ['{n}/{max} 字', '{n}/{max} characters'],
  // field checks (the schema's rejection messages name the code; these say the rule)
  form_errors: ['还有 {n} 处需要修改，见上方红字，本条尚未保存。', '{n} fields to correct (in red above); not saved yet.'],
  v_required: ['请填写{field}', '{field} is required'],
  v_int: ['{field}须为 {min}–{max} 的整数', '{field} must be a whole number from {min} to {max}'],
  v_text: ['{field}须为 {min}–{max} 个字', '{field} must be {min}–{max} characters'],
  v_phone: ['{field}须为电话号码：最多 {max} 位，只含数字、+、- 和空格', '{field} must be a phone number: at most {max} digits, +, - or spaces'],
  v_date: ['{field}须为有效日期', '{field} must be a real date'],
  v_date_range: ['{field}须在 {min} 至 {max} 之间', '{field} must be between {min} and {max}'],
  v_topics: ['主题最多 {max} 个，每个 {min}–{len} 个字', 'At most {max} topics of {min}–{len} characters'],
  v_unit: ['{field}不在本设备的单位范围内', '{field} is not one of this device’s units'],
  // detail
  edit: ['编辑', 'Edit'],
  delete: ['删除', 'Delete'],
  restore: ['恢复', 'Restore'],
  confirm_delete: ['确定删除这条记录？删除后仍可恢复。', 'Delete this record? You can restore it later.'],
  rejected_reason: ['服务器拒绝了这次修改：', 'The server refused this edit:'],
  rejected_what_now: [
    '怎么办：改正后点“修改后重新提交”；如果协调员已在服务器上解决了问题，点“原样重新提交”；不需要这次修改就点“放弃这次修改”。',
    'What to do: correct it and tap “Fix and resubmit”; if a coordinator has fixed the problem on the server, tap “Resubmit as it was”; if the edit is not needed, tap “Discard this edit”.',
  ],
  fix_resubmit: ['修改后重新提交', 'Fix and resubmit'],
  resubmit_as_is: ['原样重新提交', 'Resubmit as it was'],
  discard_edit: ['放弃这次修改', 'Discard this edit'],
  confirm_discard: ['放弃后，这次修改不会上传。确定？', 'The edit will not be sent. Discard it?'],
  conflict_intro: [
    '另一台设备同时修改了这条记录。服务器保留了较晚的修改，协调员会在工作看板上审核。手机上无需操作。',
    'Another device edited this record at the same time. The server kept the later edit; a coordinator will review it on the dashboard. Nothing to do on the phone.',
  ],
  conflict_open: ['未处理的冲突：{n} 处', 'Open conflicts: {n}'],
  kept: ['保留的值', 'Value kept'],
  not_kept: ['未保留的值', 'Value not kept'],
  deleted_flag: ['是否删除', 'Deleted'],
  not_deleted: ['未删除', 'Not deleted'],
  back: ['返回', 'Back'],

  lost_banner: [
    '服务器已从备份恢复，本机有 {n} 条已同步的记录服务器上已没有。',
    'The server was restored from a backup: it no longer has {n} records this phone holds.',
  ],
  lost_resubmit: ['重新上传这些记录', 'Send them again'],
  lost_note: ['（服务器上已没有，可重新上传）', '(not on the server any more; can be sent again)'],
  // settings
  device: ['本设备', 'This device'],
  device_label: ['名称', 'Name'],
  device_unit: ['所属单位', 'Unit'],
  device_id: ['设备编号', 'Device id'],
  tech_info: ['技术信息（排查问题时告诉管理员）', 'Technical details (for an administrator)'],
  language: ['语言', 'Language'],
  storage: ['本机存储', 'Storage on this phone'],
  storage_used: ['已用 {used}（可用约 {quota}）', '{used} used (about {quota} available)'],
  storage_persisted: ['已设为持久存储，浏览器不会自动清除。', 'Persistent: the browser will not clear it by itself.'],
  storage_not_persisted: [
    '浏览器可能在空间不足时清除数据：请把本应用添加到主屏幕。',
    'The browser may clear this data when space runs low: add the app to your home screen.',
  ],
  storage_unknown: ['无法读取', 'unknown'],
  app_version: ['应用版本', 'App version'],
  update_ready: ['新版本已就绪，', 'A new version is ready: '],
  reload: ['重新加载', 'reload'],
  time_zone: ['时区', 'Time zone'],
  install_hint: [
    '在浏览器菜单中选择“添加到主屏幕”，即可像应用一样打开（需 HTTPS）。',
    'Choose “Add to Home screen” in the browser menu to open it like an app (needs HTTPS).',
  ],
  schema_missing: ['还没有表单定义：请联网同步一次。', 'No forms yet: sync once while online.'],
  error: ['出错了：{why}', 'Something went wrong: {why}'],
  server_error: ['服务器出错（{status}），请稍后再试。', 'The server had a problem ({status}); try again later.'],
  filter_month_all: ['月份: 全部', 'Month: All'],
};

/** The app string `key`, with `{name}` placeholders filled from `vars`. */
export function t(key, vars = {}) {
  const pair = S[key];
  let s = pair ? pair[lang === 'en' ? 1 : 0] : key;
  for (const [k, v] of Object.entries(vars)) s = s.split(`{${k}}`).join(String(v));
  return s;
}

/**
 * A rejection's reason in this language: the schema's message for its
 * code with the field's label, else the server's own message.
 */
export function rejectionText(schema, error, fieldLabel) {
  const msgs = schema && schema.rejections && schema.rejections[error.code];
  if (msgs) {
    const m = loc(msgs);
    if (m) return m.split('{field}').join(fieldLabel || error.field || '');
  }
  return error.message || error.code;
}
