// Calendar days as `YYYY-MM-DD`, and times shown in the server's time zone.

const DAY_MS = 86_400_000;

/** Whether `s` is `YYYY-MM-DD` naming a real day (as core's `Date::parse`). */
export function isRealDate(s) {
  if (typeof s !== 'string' || !/^\d{4}-\d{2}-\d{2}$/.test(s)) return false;
  const [y, m, d] = s.split('-').map(Number);
  if (m < 1 || m > 12 || d < 1) return false;
  const dim = [31, (y % 4 === 0 && y % 100 !== 0) || y % 400 === 0 ? 29 : 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
  return d <= dim[m - 1];
}

/** The UTC day containing `ms` (the server judges `held_on` by its UTC date). */
export function utcDay(ms) {
  return new Date(Math.floor(ms / DAY_MS) * DAY_MS).toISOString().slice(0, 10);
}

export function addDays(day, n) {
  return utcDay(Date.parse(`${day}T00:00:00Z`) + n * DAY_MS);
}

/** Today in `timeZone` (e.g. Asia/Shanghai), as `YYYY-MM-DD`. */
export function dayIn(ms, timeZone) {
  try {
    const parts = new Intl.DateTimeFormat('en-CA', { timeZone, year: 'numeric', month: '2-digit', day: '2-digit' }).formatToParts(ms);
    const get = (t) => parts.find((p) => p.type === t).value;
    return `${get('year')}-${get('month')}-${get('day')}`;
  } catch {
    return utcDay(ms);
  }
}

/**
 * A moment, for people: date and time in `timeZone`, in the UI's language
 * (`12月7日 14:05`, `7 Dec, 14:05`).
 */
export function formatTime(ms, timeZone, lang) {
  const opts = { timeZone, month: 'numeric', day: 'numeric', hour: '2-digit', minute: '2-digit', hour12: false };
  let parts;
  try {
    parts = new Intl.DateTimeFormat('en-GB', opts).formatToParts(ms);
  } catch {
    delete opts.timeZone;
    parts = new Intl.DateTimeFormat('en-GB', opts).formatToParts(ms);
  }
  const get = (t) => (parts.find((p) => p.type === t) || {}).value || '';
  const hm = `${get('hour') === '24' ? '00' : get('hour')}:${get('minute')}`;
  if (lang === 'en') return `${Number(get('day'))} ${MONTHS_EN[Number(get('month')) - 1]}, ${hm}`;
  return `${Number(get('month'))}月${Number(get('day'))}日 ${hm}`;
}

const MONTHS_EN = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];

/** A calendar day `YYYY-MM-DD` for people: `2026年12月5日`, `5 Dec 2026`. */
export function formatDay(day, lang) {
  if (!isRealDate(day)) return String(day);
  const [y, m, d] = day.split('-').map(Number);
  return lang === 'en' ? `${d} ${MONTHS_EN[m - 1]} ${y}` : `${y}年${m}月${d}日`;
}

/** A month `YYYY-MM` for people: `2026年12月`, `Dec 2026`. */
export function formatMonth(month, lang) {
  const [y, m] = month.split('-').map(Number);
  if (!y || !m || m > 12) return month;
  return lang === 'en' ? `${MONTHS_EN[m - 1]} ${y}` : `${y}年${m}月`;
}

/** A time zone's name for people (`中国标准时间`), or the zone's id. */
export function zoneName(timeZone, lang) {
  try {
    const parts = new Intl.DateTimeFormat(lang, { timeZone, timeZoneName: 'long' }).formatToParts(Date.now());
    const name = parts.find((p) => p.type === 'timeZoneName');
    return name ? name.value : timeZone;
  } catch {
    return timeZone;
  }
}
