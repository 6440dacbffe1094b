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

/** A moment, for people: date and time in `timeZone`, in the UI's language. */
export function formatTime(ms, timeZone, lang) {
  const opts = { timeZone, month: 'numeric', day: 'numeric', hour: '2-digit', minute: '2-digit', hour12: false };
  try {
    return new Intl.DateTimeFormat(lang, opts).format(ms);
  } catch {
    delete opts.timeZone;
    return new Intl.DateTimeFormat(lang, opts).format(ms);
  }
}
