// The field app: enrolment, the record list, forms, a record's page,
// settings, the status line, and when to sync. Views are plain functions
// that build DOM into <main>; the route lives in the URL fragment
// (`#/`, `#/new/lecture`, `#/r/<id>`, …), except `#code=<CODE>`, which a
// QR code from the dashboard's enrolment page carries.

import { openDb, tx, req, readMeta, writeMeta, getCached, putCached } from './db.js';
import { HlcClock, uuidv7 } from './hlc.js';
import * as model from './records.js';
import { sync, withSyncLock, Unauthorized, Unreachable, APP_VERSION } from './sync.js';
import { buildForm, diffSet, unitIndex, unitName, showValue, checkValue } from './forms.js';
import { t, loc, setLang, getLang, rejectionText } from './i18n.js';
import { h, clear } from './dom.js';
import { dayIn, utcDay, formatTime, formatDay, formatMonth, zoneName } from './dates.js';

const PAGE_ROWS = 100;
/** Sync this long after an edit (while online), so quick edits go together. */
const SYNC_AFTER_EDIT_MS = 1500;
/** Longest wait before an automatic retry of a failed sync. */
const RETRY_MAX_MS = 15 * 60_000;

const app = {
  db: null,
  meta: null,
  schema: null,
  units: unitIndex([]),
  counts: { pending: 0, rejected: 0, lost: 0 },
  syncing: false,
  progress: null,
  failures: 0,
  retryTimer: null,
  editTimer: null,
  lastError: null,
  lastReport: null,
  notice: null,
  filters: { kind: '', unit: '', month: '', deleted: false },
  shown: PAGE_ROWS,
  updateReady: false,
};

const channel = typeof BroadcastChannel === 'function' ? new BroadcastChannel('pufa-field') : null;

const $ = (sel) => document.querySelector(sel);
const timeZone = () => (app.schema && app.schema.time_zone) || 'Asia/Shanghai';

function kindSchema(kind) {
  return ((app.schema && app.schema.kinds) || []).find((k) => k.kind === kind) || null;
}

function kindLabel(kind) {
  const k = kindSchema(kind);
  return k ? loc(k.label, kind) : kind;
}

function fieldLabel(kind, name) {
  if (name === '_deleted') return t('deleted_flag');
  const k = kindSchema(kind);
  const f = k && k.fields.find((x) => x.name === name);
  return f ? loc(f.label, name) : name;
}

function fieldOf(kind, name) {
  const k = kindSchema(kind);
  return (k && k.fields.find((x) => x.name === name)) || { name, type: 'text' };
}

/** A record's date (`YYYY-MM-DD`, or a year) as people read it. */
function showDate(d) {
  return /^\d{4}-\d{2}-\d{2}$/.test(d) ? formatDay(d, getLang()) : d;
}

/** A record's date for sorting and the month filter: its kind's first date
 *  field that has a value (held_on, appointed_on, opened_on…), else its year. */
function recordDate(r) {
  const f = r.fields;
  const k = kindSchema(r.kind);
  const dated = k && k.fields.find((x) => x.type === 'date' && f[x.name]);
  return dated ? f[dated.name] : f.year ? `${f.year}` : '';
}

function recordTitle(r) {
  const f = r.fields;
  if (f.title) return f.title;
  if (f.name) return f.name;
  const k = kindSchema(r.kind);
  const parts = [];
  for (const name of ['level', 'status']) {
    const field = k && k.fields.find((x) => x.name === name);
    if (field && f[name]) parts.push(showValue(field, f[name], app.units));
  }
  return [unitName(app.units, f.org_unit || ''), ...parts].filter(Boolean).join(' · ');
}

/**
 * Why the server refused an edit, in the UI's language. For a value it
 * found wrong, the app's own rule for the field says what is allowed
 * (*参加人数须为 0–100000 的整数*) rather than only that it is not.
 */
function rejectionReason(kind, state) {
  const e = state.error;
  if (e.code === 'invalid_field' && e.field && state.mutation && state.mutation.set) {
    const v = state.mutation.set[e.field];
    const field = kindSchema(kind)?.fields.find((x) => x.name === e.field);
    const why = field && v !== undefined && v !== null ? checkValue(field, v, formCtx()) : null;
    if (why) return why;
  }
  const text = rejectionText(app.schema, e, fieldLabel(kind, e.field));
  if (e.code === 'period_locked' && e.locked) {
    const l = e.locked;
    return text + t('locked_by', { unit: unitName(app.units, l.org_unit) || l.org_unit, period: periodText(l.period), who: l.approved_by });
  }
  return text;
}

/** `2020`, `2020-Q1`, `2020-03` as a person reads them (2020年第1季度). */
function periodText(p) {
  const m = /^(\d{4})(?:-(Q?)(\d{1,2}))?$/.exec(String(p));
  if (!m || getLang() === 'en') return String(p);
  if (!m[3]) return `${m[1]}年`;
  return m[2] ? `${m[1]}年第${Number(m[3])}季度` : `${m[1]}年${Number(m[3])}月`;
}

function formCtx() {
  const now = model.nowCorrected(app.meta || {});
  const topics = (app.schema && app.schema.topics) || [];
  return { units: app.units, today: utcDay(now), localToday: dayIn(now, timeZone()), topics };
}

// ---- status line ---------------------------------------------------------

async function refreshCounts() {
  if (!app.meta || !app.meta.device_id) return;
  const s = await model.status(app.db);
  app.meta = s.meta;
  app.counts = { pending: s.pending, rejected: s.rejected, lost: s.lost };
}

function renderStatus() {
  const line = $('#status');
  if (!line) return;
  const parts = [];
  let cls = 'ok';
  if (!app.meta || !app.meta.device_id) {
    line.textContent = '';
    return;
  }
  if (app.meta.unauthorized) {
    parts.push(t('need_reenrol'));
    cls = 'bad';
  } else if (app.syncing) {
    const p = app.progress;
    parts.push(t('syncing') + (p && p.total > 1 ? ` ${p.done}/${p.total}` : ''));
    cls = 'busy';
  } else if (!navigator.onLine) {
    parts.push(t('offline'));
    cls = 'off';
  }
  if (app.counts.pending) parts.push(t('pending_n', { n: app.counts.pending }));
  if (app.counts.rejected) {
    parts.push(t('rejected_n', { n: app.counts.rejected }));
    cls = cls === 'ok' ? 'warn' : cls;
  }
  if (!app.syncing && !app.meta.unauthorized) {
    if (app.lastError && navigator.onLine) {
      parts.push(app.lastError instanceof Unreachable ? t('sync_unreachable') : t('sync_failed'));
      cls = 'warn';
    }
    parts.push(app.meta.last_sync_ms ? t('last_sync', { t: formatTime(app.meta.last_sync_ms, timeZone(), getLang()) }) : t('never_synced'));
  }
  line.textContent = parts.join(' · ');
  line.className = `status ${cls}`;
  line.dataset.pending = String(app.counts.pending);
  line.dataset.state = app.syncing ? 'syncing' : navigator.onLine ? 'online' : 'offline';
  const btn = $('#sync-button');
  if (btn) btn.disabled = app.syncing;
}

let flashTimer = null;

/** A short note under the header ("saved"), gone after a few seconds. */
function flash(text) {
  app.notice = text;
  const n = $('#notice');
  if (n) {
    n.textContent = text || '';
    n.hidden = !text;
  }
  clearTimeout(flashTimer);
  if (text) flashTimer = setTimeout(() => flash(null), 4000);
}

// ---- sync scheduling -------------------------------------------------------

function scheduleRetry(ms) {
  clearTimeout(app.retryTimer);
  app.retryTimer = setTimeout(() => runSync('retry'), ms);
}

async function runSync(reason) {
  if (!app.meta || !app.meta.token) return;
  if (app.meta.unauthorized && reason !== 'manual' && reason !== 'enrol') return;
  if (!navigator.onLine) {
    // A tap on 同步 with no network says so, rather than nothing at all.
    if (reason === 'manual') flash(t('sync_offline_tap'));
    renderStatus();
    return;
  }
  if (app.syncing) return;
  clearTimeout(app.retryTimer);
  app.syncing = true;
  app.progress = null;
  renderStatus();
  try {
    const report = await sync(app.db, (p) => {
      app.progress = p;
      renderStatus();
    });
    if (!report.skipped) {
      app.lastReport = report;
      app.lastError = null;
      app.failures = 0;
      if (reason === 'manual') flash(t('synced_report', { p: report.pushed, r: report.pulled }));
    }
  } catch (e) {
    app.lastError = e;
    if (e instanceof Unauthorized) {
      app.failures = 0;
    } else {
      app.failures += 1;
      const wait = Math.min(30_000 * 2 ** (app.failures - 1), RETRY_MAX_MS);
      scheduleRetry(Math.max(wait, (e instanceof Unreachable && e.retryAfterMs) || 0));
      if (!(e instanceof Unreachable) && reason === 'manual') flash(t('error', { why: e.message }));
    }
  } finally {
    app.syncing = false;
    app.progress = null;
    await reload();
    if (channel) channel.postMessage('changed');
  }
}

/** After a local edit: the status line counts it, other tabs hear of it, a sync follows. */
function edited() {
  refreshCounts().then(renderStatus);
  if (channel) channel.postMessage('changed');
  clearTimeout(app.editTimer);
  if (navigator.onLine) app.editTimer = setTimeout(() => runSync('edit'), SYNC_AFTER_EDIT_MS);
}

/** Reads the caches again and redraws the current view. */
async function reload() {
  const wasEnrolled = !!(app.meta && app.meta.device_id);
  app.meta = await tx(app.db, ['meta'], 'readonly', (s) => readMeta(s));
  if (wasEnrolled !== !!app.meta.device_id) shell();
  app.schema = (await getCached(app.db, 'schema')) || app.schema;
  app.units = unitIndex(await getCached(app.db, 'units', []));
  await refreshCounts();
  renderStatus();
  await route(true);
}

// ---- enrolment -------------------------------------------------------------

/**
 * Makes `who` (with `token`) this phone's device, in one transaction
 * taken under the sync lock. The same device (a token re-issued by an
 * admin) only swaps the token. Another device (a code always makes a new
 * one) keeps every unsynced edit: pending ones are re-stamped with the new
 * device's id and HLC (the server takes mutations only from the device
 * that stamped them), and the records are pulled again for its scope.
 */
function adoptDevice(token, who) {
  return withSyncLock(() =>
    tx(
      app.db,
      ['meta', 'outbox'],
      'readwrite',
      async (s) => {
        const meta = await readMeta(s);
        if (meta.device_id && meta.device_id !== who.device_id) {
          const clock = new HlcClock(meta.hlc);
          for (const e of await req(s.outbox.getAll())) {
            if (e.status !== 'pending') continue;
            const m = { ...e.mutation, id: uuidv7(), hlc: clock.next(model.nowCorrected(meta), who.device_id) };
            s.outbox.put({ ...e, mutation: m });
          }
          meta.hlc = clock.parts();
          meta.cursor = 0;
          meta.epoch += 1;
          meta.repair = 'checksum';
          meta.last_sync_ms = null;
        }
        Object.assign(meta, {
          device_id: who.device_id,
          token,
          role: who.role,
          org_unit: who.org_unit,
          label: who.label,
          unauthorized: false,
        });
        await writeMeta(s, meta);
      },
      true,
    ),
  );
}

/**
 * Asks the browser to keep the data for good. A refusal is remembered
 * (`settings.persist_refused`), and the list says so once, until the
 * worker taps 知道了.
 */
async function askPersistence() {
  try {
    if (navigator.storage && navigator.storage.persist && !(await navigator.storage.persisted())) {
      const granted = await navigator.storage.persist();
      const s = (await getCached(app.db, 'settings', {})) || {};
      if (!granted !== !!s.persist_refused) {
        await putCached(app.db, 'settings', { ...s, persist_refused: !granted });
        if (location.hash === '#/' || location.hash === '') await route(true);
      }
    }
  } catch {
    /* not offered by this browser */
  }
}

async function enrolWithCode(code, label) {
  let r;
  try {
    r = await fetch('/v1/enroll', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ code, label: label || null }),
      cache: 'no-store',
    });
  } catch {
    throw new Error(t('enrol_offline'));
  }
  if (r.status === 401) throw new Error(t('enrol_bad_code'));
  if (r.status === 429) throw new Error(t('enrol_rate_limited', { s: r.headers.get('Retry-After') || 60 }));
  const body = await r.json().catch(() => ({}));
  if (r.status !== 201) throw new Error(t('server_error', { status: r.status }));
  await adoptDevice(body.token, body);
  return body;
}

async function enrolWithToken(token) {
  let r;
  try {
    r = await fetch('/v1/whoami', { headers: { Authorization: `Bearer ${token}` }, cache: 'no-store' });
  } catch {
    throw new Error(t('enrol_offline'));
  }
  if (r.status === 401) throw new Error(t('enrol_bad_token'));
  const who = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(t('server_error', { status: r.status }));
  if (who.username) throw new Error(t('enrol_session_token'));
  await adoptDevice(token, who);
  return who;
}

function viewEnrol(code) {
  const enrolled = !!(app.meta && app.meta.device_id);
  const err = h('p.error', { role: 'alert', id: 'enrol-error' });
  const codeInput = h('input', {
    id: 'enrol-code',
    name: 'code',
    type: 'text',
    autocomplete: 'one-time-code',
    autocapitalize: 'characters',
    spellcheck: 'false',
    placeholder: 'XXXX-XXXX',
    value: code || '',
  });
  const labelInput = h('input', { id: 'enrol-label', name: 'label', type: 'text', autocomplete: 'name', maxlength: 200, value: (enrolled && app.meta.label) || '' });
  const button = h('button.primary.wide', { id: 'enrol-submit', type: 'submit' }, enrolled ? t('reenrol') : t('enrol_button'));
  const form = h(
    'form.card',
    {
      id: 'enrol-form',
      onsubmit: async (e) => {
        e.preventDefault();
        err.textContent = '';
        const c = codeInput.value.trim();
        if (!c) {
          err.textContent = t('v_required', { field: t('enrol_code') });
          return;
        }
        button.disabled = true;
        button.textContent = t('enrol_working');
        try {
          const who = await enrolWithCode(c, labelInput.value.trim());
          await askPersistence();
          flash(t('enrol_done', { label: who.label || who.device_id }));
          await reload();
          go('#/');
          runSync('enrol');
        } catch (x) {
          err.textContent = x.message;
          button.disabled = false;
          button.textContent = enrolled ? t('reenrol') : t('enrol_button');
        }
      },
    },
    h('h1', enrolled ? t('reenrol') : t('enrol_title')),
    h('p', t('enrol_intro')),
    code ? h('p.note', t('enrol_from_link')) : null,
    enrolled && app.counts.pending + app.counts.rejected > 0
      ? h('p.note.warn', t('reenrol_keeps', { n: app.counts.pending + app.counts.rejected }))
      : null,
    h('label', { for: 'enrol-code' }, t('enrol_code')),
    codeInput,
    h('label', { for: 'enrol-label' }, t('enrol_label')),
    labelInput,
    err,
    button,
  );
  const tokenInput = h('input', { id: 'enrol-token', type: 'password', autocomplete: 'off' });
  const tokenErr = h('p.error', { role: 'alert' });
  const tokenForm = h(
    'details.card',
    h('summary', t('enrol_token')),
    h(
      'form',
      {
        onsubmit: async (e) => {
          e.preventDefault();
          tokenErr.textContent = '';
          try {
            const who = await enrolWithToken(tokenInput.value.trim());
            flash(t('enrol_done', { label: who.label || who.device_id }));
            await reload();
            go('#/');
            runSync('enrol');
          } catch (x) {
            tokenErr.textContent = x.message;
          }
        },
      },
      h('label', { for: 'enrol-token' }, t('enrol_token_field')),
      tokenInput,
      tokenErr,
      h('button.wide', { type: 'submit' }, t('enrol_button')),
    ),
  );
  return [form, tokenForm, languageSwitch()];
}

// ---- record list -----------------------------------------------------------

function stateBadge(r) {
  if (r.deleted && r.state.type === 'synced') return h('span.badge.deleted', t('st_deleted'));
  const label = { synced: 'st_synced', pending: 'st_pending', rejected: 'st_rejected', conflicted: 'st_conflicted' }[r.state.type];
  return h(`span.badge.${r.state.type}`, { 'data-state': r.state.type }, t(label));
}

function matches(r, f) {
  if (!f.deleted && r.deleted) return false;
  if (f.kind && r.kind !== f.kind) return false;
  if (f.unit && !(r.fields.org_unit && app.units.within(r.fields.org_unit, f.unit))) return false;
  if (f.month && !recordDate(r).startsWith(f.month)) return false;
  return true;
}

async function viewList() {
  const all = await model.allRecords(app.db);
  const f = app.filters;
  const rows = all.filter((r) => matches(r, f));
  rows.sort((a, b) => {
    const da = recordDate(a);
    const db = recordDate(b);
    if (da !== db) return da < db ? 1 : -1;
    return a.id < b.id ? 1 : -1;
  });
  const kinds = (app.schema && app.schema.kinds) || [];
  const kindSel = h(
    'select',
    { id: 'filter-kind', 'aria-label': t('filter_kind'), onchange: (e) => setFilter('kind', e.target.value) },
    h('option', { value: '' }, `${t('filter_kind')}: ${t('filter_all')}`),
    kinds.map((k) => h('option', { value: k.kind, selected: f.kind === k.kind }, loc(k.label, k.kind))),
  );
  const unitSel = h(
    'select',
    { id: 'filter-unit', 'aria-label': t('filter_unit'), onchange: (e) => setFilter('unit', e.target.value) },
    h('option', { value: '' }, `${t('filter_unit')}: ${t('filter_all')}`),
    app.units.list.map((u) =>
      h('option', { value: u.code, selected: f.unit === u.code }, '\u00a0'.repeat(2 * (app.units.path(u.code).length - 1)) + u.name),
    ),
  );
  // The months that have records, newest first: a list anyone can read,
  // where a month input shows a bare '---- --' until tapped.
  const months = [...new Set(all.map((r) => /^\d{4}-\d{2}/.exec(recordDate(r))?.[0]).filter(Boolean))].sort().reverse();
  if (f.month && !months.includes(f.month)) months.unshift(f.month);
  const month = h(
    'select',
    { id: 'filter-month', 'aria-label': t('filter_month'), onchange: (e) => setFilter('month', e.target.value) },
    h('option', { value: '' }, t('filter_month_all')),
    months.map((m) => h('option', { value: m, selected: f.month === m }, formatMonth(m, getLang()))),
  );
  const deleted = h(
    'label.check',
    h('input', { type: 'checkbox', id: 'filter-deleted', checked: f.deleted, onchange: (e) => setFilter('deleted', e.target.checked) }),
    t('show_deleted'),
  );
  const list = h('ul.records', { id: 'records' });
  for (const r of rows.slice(0, app.shown)) {
    list.append(
      h(
        'li',
        h(
          'a.record',
          { href: `#/r/${r.id}`, 'data-id': r.id, 'data-kind': r.kind, 'data-state': r.state.type, class: r.deleted ? 'is-deleted' : null },
          h('span.title', recordTitle(r)),
          h(
            'span.sub',
            [kindLabel(r.kind), unitName(app.units, r.fields.org_unit || ''), showDate(recordDate(r))]
              .filter(Boolean)
              .map((part, i) => [i ? ' · ' : null, h('span.part', part)]),
          ),
          stateBadge(r),
        ),
      ),
    );
  }
  const out = [];
  if (app.counts.lost) {
    out.push(
      h(
        'div.banner.warn',
        { id: 'lost-banner' },
        t('lost_banner', { n: app.counts.lost }),
        h(
          'button',
          {
            onclick: async () => {
              await model.resubmitLost(app.db);
              edited();
              await reload();
            },
          },
          t('lost_resubmit'),
        ),
      ),
    );
  }
  if (app.meta.unauthorized) {
    out.push(
      h('div.banner.bad', { id: 'reenrol-banner' }, h('p', t('need_reenrol_banner')), h('a.button.primary', { href: '#/enrol' }, t('reenrol'))),
    );
  }
  const settings = (await getCached(app.db, 'settings', {})) || {};
  if (settings.persist_refused && !settings.persist_hint_seen) {
    out.push(
      h(
        'div.banner.warn',
        { id: 'persist-banner' },
        h('p', t('persist_refused')),
        h(
          'button',
          {
            type: 'button',
            onclick: async () => {
              const s2 = (await getCached(app.db, 'settings', {})) || {};
              await putCached(app.db, 'settings', { ...s2, persist_hint_seen: true });
              document.getElementById('persist-banner')?.remove();
            },
          },
          t('got_it'),
        ),
      ),
    );
  }
  out.push(h('div.filters', kindSel, unitSel, month, deleted));
  out.push(h('p.count', t('n_records', { n: rows.length })));
  if (rows.length === 0) out.push(h('p.empty', t('no_records')));
  out.push(list);
  if (rows.length > app.shown) {
    out.push(
      h(
        'button.wide',
        {
          onclick: () => {
            app.shown += PAGE_ROWS;
            route();
          },
        },
        t('more'),
      ),
    );
  }
  return out;
}

function setFilter(k, v) {
  app.filters[k] = v;
  app.shown = PAGE_ROWS;
  route();
}

// ---- forms -----------------------------------------------------------------

function viewChooseKind() {
  const kinds = (app.schema && app.schema.kinds) || [];
  if (!kinds.length) return [h('p.empty', t('schema_missing'))];
  return [
    h('h1', t('choose_kind')),
    h(
      'div.kinds',
      kinds.map((k) => h('a.kind-button', { href: `#/new/${k.kind}`, 'data-kind': k.kind }, loc(k.label, k.kind))),
    ),
  ];
}

/**
 * The form for a new record, an edit, or the fix of a rejected edit.
 * `mode`: 'new' | 'edit' | 'fix'.
 */
async function viewForm(mode, kind, id, n) {
  const ks = kindSchema(kind);
  if (!ks) return [h('p.empty', t('schema_missing'))];
  let base = { fields: {} };
  let start = {};
  const serverErrors = {};
  let rejected = null;
  if (mode === 'edit') {
    base = await model.getRecord(app.db, id);
    start = base.fields;
  } else if (mode === 'fix') {
    const now = await model.getRecord(app.db, id);
    base = await model.getRecordWithout(app.db, id, n);
    start = now.fields;
    rejected = now.state.type === 'rejected' ? now.state : null;
    if (rejected && rejected.error.field) {
      serverErrors[rejected.error.field] = rejectionReason(kind, rejected);
    }
  } else {
    // A new record: the device's own unit when it is a grassroots one, or
    // the unit used last; today for a required date (the day a lecture was
    // held, an understander appointed).
    const settings = (await getCached(app.db, 'settings', {})) || {};
    const own = app.units.byCode.get(app.meta.org_unit || '');
    const unit = own && (own.type === 'community' || own.type === 'village') ? own.code : settings.last_unit || null;
    if (unit && app.units.byCode.has(unit)) start.org_unit = unit;
    for (const x of ks.fields) {
      if (x.type === 'date' && x.required) start[x.name] = formCtx().localToday;
    }
  }
  const form = buildForm(ks, start, formCtx(), serverErrors);
  const err = h('p.error', { role: 'alert', id: 'form-error' });
  const save = h('button.primary', { type: 'submit', id: 'save' }, t('save'));
  const onSubmit = async (e) => {
    e.preventDefault();
    const { values, errors } = form.collect();
    if (errors.length) {
      err.textContent = t('form_errors', { n: errors.length });
      errors[0].focus();
      return;
    }
    save.disabled = true;
    try {
      if (mode === 'new') {
        const set = diffSet({}, values, true);
        const newId = await model.createRecord(app.db, kind, set);
        const settings = (await getCached(app.db, 'settings', {})) || {};
        await putCached(app.db, 'settings', { ...settings, last_unit: set.org_unit });
        flash(t('saved'));
        go(`#/r/${newId}`);
      } else if (mode === 'edit') {
        const set = diffSet(base.fields, values, false);
        if (Object.keys(set).length) {
          await model.updateRecord(app.db, base, set);
          flash(t('saved'));
        }
        go(`#/r/${id}`);
      } else {
        const isNew = !base.kind;
        const set = diffSet(base.fields, values, isNew);
        if (!isNew && Object.keys(set).length === 0 && rejected && rejected.mutation.delete === undefined) {
          await model.discard(app.db, n);
        } else {
          await model.resubmit(app.db, n, set);
        }
        flash(t('saved_resubmitted'));
        go(`#/r/${id}`);
      }
      edited();
    } catch (x) {
      err.textContent = t('error', { why: x.message });
      save.disabled = false;
    }
  };
  // The count under the form follows the fields as they are corrected.
  const recount = () =>
    setTimeout(() => {
      if (!err.textContent) return;
      const n = form.el.querySelectorAll('.field.invalid').length;
      err.textContent = n ? t('form_errors', { n }) : '';
    }, 0);
  for (const type of ['input', 'change', 'click']) form.el.addEventListener(type, recount);
  const verb = { new: t('new_record'), edit: t('edit'), fix: t('fix_resubmit') }[mode];
  const title = `${verb}：${loc(ks.label, kind)}`;
  return [
    h(
      'form.record-form',
      { id: 'record-form', 'data-kind': kind, novalidate: true, onsubmit: onSubmit },
      h('h1', title),
      rejected ? h('div.banner.bad', t('rejected_reason'), ' ', rejectionReason(kind, rejected)) : null,
      form.el,
      err,
      h(
        'div.actions.sticky',
        h('a.button', { href: mode === 'new' ? '#/new' : `#/r/${id}` }, t('cancel')),
        save,
      ),
    ),
  ];
}

// ---- one record ------------------------------------------------------------

function showAny(kind, field, v) {
  if (field === '_deleted') return v ? t('st_deleted') : t('not_deleted');
  return showValue(fieldOf(kind, field), v, app.units) || '—';
}

async function viewRecord(id) {
  const r = await model.getRecord(app.db, id);
  if (!r) return [h('p.empty', '—'), h('a.button', { href: '#/' }, t('back'))];
  const ks = kindSchema(r.kind);
  const deletedBadge = r.deleted && r.state.type !== 'synced' ? [' ', h('span.badge.deleted', t('st_deleted'))] : null;
  const out = [h('h1', recordTitle(r)), h('p.sub', kindLabel(r.kind), ' ', stateBadge(r), deletedBadge)];
  if (r.lost) out.push(h('p.note.warn', t('lost_note')));
  if (r.deleted) out.push(h('p.note', { id: 'deleted-note' }, t('deleted_note')));
  if (r.state.type === 'pending') out.push(h('p.note', { id: 'pending-note' }, t('pending_note')));
  if (r.state.type === 'rejected') {
    out.push(
      h(
        'div.banner.bad',
        { id: 'rejection' },
        h('p', t('rejected_reason')),
        h('p.reason', { id: 'rejection-reason' }, rejectionReason(r.kind, r.state)),
        h('p.what-now', t('rejected_what_now')),
        h(
          'div.actions',
          h('a.button.primary', { id: 'fix', href: `#/fix/${r.id}/${r.state.n}` }, t('fix_resubmit')),
          h(
            'button',
            {
              id: 'resubmit',
              onclick: async () => {
                await model.resubmit(app.db, r.state.n, null);
                edited();
                route();
              },
            },
            t('resubmit_as_is'),
          ),
          h(
            'button.danger',
            {
              id: 'discard',
              onclick: async () => {
                if (!confirm(t('confirm_discard'))) return;
                await model.discard(app.db, r.state.n);
                await reload();
              },
            },
            t('discard_edit'),
          ),
        ),
      ),
    );
  }
  if (r.state.type === 'conflicted') {
    const box = h('div.banner.warn', { id: 'conflict' }, h('p', t('conflict_intro')), h('p', t('conflict_open', { n: r.state.open })));
    if (r.state.details.length) {
      box.append(
        h(
          'table.conflicts',
          h('tr', h('th', ''), h('th', t('kept')), h('th', t('not_kept'))),
          r.state.details.map((d) =>
            h(
              'tr',
              h('th', fieldLabel(r.kind, d.field)),
              h('td.kept', showAny(r.kind, d.field, d.winner)),
              h('td.not-kept', showAny(r.kind, d.field, d.loser)),
            ),
          ),
        ),
      );
    }
    out.push(box);
  }
  const dl = h('dl.fields');
  for (const f of (ks && ks.fields) || []) {
    const v = r.fields[f.name];
    if (v === undefined || v === null) continue;
    dl.append(h('dt', loc(f.label, f.name)), h('dd', { 'data-field': f.name }, showValue(f, v, app.units)));
  }
  out.push(dl);
  out.push(
    h(
      'div.actions.sticky',
      h('a.button', { href: '#/' }, t('back')),
      r.deleted
        ? h(
            'button',
            {
              id: 'restore',
              onclick: async () => {
                await model.setDeleted(app.db, r, false);
                edited();
                await reload();
              },
            },
            t('restore'),
          )
        : h(
            'button.danger',
            {
              id: 'delete',
              onclick: async () => {
                if (!confirm(t('confirm_delete'))) return;
                await model.setDeleted(app.db, r, true);
                edited();
                await reload();
              },
            },
            t('delete'),
          ),
      h('a.button.primary', { id: 'edit', href: `#/edit/${r.id}` }, t('edit')),
    ),
  );
  return out;
}

// ---- settings --------------------------------------------------------------

function languageSwitch() {
  return h(
    'div.lang',
    h('span', `${t('language')}: `),
    [
      ['zh-CN', '中文'],
      ['en', 'English'],
    ].map(([code, name]) =>
      h(
        'button.link',
        {
          type: 'button',
          'data-lang': code,
          'aria-pressed': getLang() === code ? 'true' : 'false',
          onclick: async () => {
            setLang(code);
            const s = (await getCached(app.db, 'settings', {})) || {};
            await putCached(app.db, 'settings', { ...s, lang: code });
            shell();
            await reload();
          },
        },
        name,
      ),
    ),
  );
}

function bytes(n) {
  if (n === undefined || n === null) return t('storage_unknown');
  if (n < 1024 * 1024) return `${Math.max(1, Math.round(n / 1024))} KB`;
  if (n < 1024 ** 3) return `${(n / 1024 / 1024).toFixed(1)} MB`;
  return `${(n / 1024 ** 3).toFixed(1)} GB`;
}

async function viewSettings() {
  const m = app.meta;
  const storage = h('p', { id: 'storage' }, t('storage_unknown'));
  const persisted = h('p.small', { id: 'persisted' });
  (async () => {
    try {
      const e = await navigator.storage.estimate();
      storage.textContent = t('storage_used', { used: bytes(e.usage), quota: bytes(e.quota) });
      persisted.textContent = (await navigator.storage.persisted()) ? t('storage_persisted') : t('storage_not_persisted');
    } catch {
      /* not offered */
    }
  })();
  return [
    h('h1', t('settings')),
    h(
      'section.card',
      h('h2', t('device')),
      h(
        'dl.fields',
        h('dt', t('device_label')),
        h('dd', { id: 'device-label' }, m.label || '—'),
        h('dt', t('device_unit')),
        h('dd', m.org_unit ? unitName(app.units, m.org_unit) : '—'),
        h('dt', t('time_zone')),
        h('dd', { id: 'time-zone', title: timeZone() }, zoneName(timeZone(), getLang())),
      ),
      h('a.button', { href: '#/enrol' }, t('reenrol')),
      h(
        'details.tech',
        h('summary', t('tech_info')),
        h('dl.fields', h('dt', t('device_id')), h('dd.small', { id: 'device-id' }, m.device_id), h('dt', t('app_version')), h('dd.small', APP_VERSION)),
      ),
    ),
    h('section.card', h('h2', t('storage')), storage, persisted),
    h('section.card', languageSwitch()),
    h('p.small', t('install_hint')),
  ];
}

// ---- routing and the shell ---------------------------------------------------

function go(hash) {
  if (location.hash === hash) route();
  else location.hash = hash;
}

let routing = 0;

/**
 * Draws the view the URL names. `refresh`: the data changed (a sync, an
 * edit in another tab), the URL did not; views that show no records, and a
 * form being filled in, stay as they are.
 */
async function route(refresh = false) {
  const main = $('#main');
  if (!main) return;
  const hash = location.hash || '#/';
  const same = main.dataset.hash === hash;
  if (refresh && same && (/^#\/(new|settings|enrol)$/.test(hash) || main.querySelector('form'))) return;
  const my = ++routing;
  const code = /^#code=([^&]*)/.exec(hash);
  let nodes;
  try {
    if (code) {
      const value = decodeURIComponent(code[1]);
      // Keep the code out of the history and bookmarks.
      history.replaceState(null, '', `${location.pathname}#/enrol`);
      nodes = viewEnrol(value);
    } else if (!app.meta || !app.meta.device_id || hash === '#/enrol') {
      nodes = viewEnrol('');
    } else {
      const parts = hash.slice(2).split('/');
      if (parts[0] === 'new' && parts[1]) nodes = await viewForm('new', parts[1]);
      else if (parts[0] === 'new') nodes = viewChooseKind();
      else if (parts[0] === 'r' && parts[1]) nodes = await viewRecord(parts[1]);
      else if (parts[0] === 'edit' && parts[1]) {
        const r = await model.getRecord(app.db, parts[1]);
        nodes = r ? await viewForm('edit', r.kind, r.id) : await viewList();
      } else if (parts[0] === 'fix' && parts[1]) {
        const r = await model.getRecord(app.db, parts[1]);
        nodes = r ? await viewForm('fix', r.kind, r.id, Number(parts[2])) : await viewList();
      } else if (parts[0] === 'settings') nodes = await viewSettings();
      else nodes = await viewList();
    }
  } catch (e) {
    nodes = [h('p.error', t('error', { why: e.message }))];
  }
  if (my !== routing) return;
  clear(main).append(...nodes.filter(Boolean));
  main.dataset.hash = hash;
  document.body.dataset.view = code ? 'enrol' : hash.slice(2).split('/')[0] || 'list';
}

function shell() {
  const root = clear($('#app'));
  const enrolled = app.meta && app.meta.device_id;
  const parts = [
    h(
      'header.top',
      h('span.brand', t('app_name')),
      h('p.status', { id: 'status', role: 'status', 'aria-live': 'polite' }),
    ),
    h('p.notice', { id: 'notice', role: 'status', hidden: !app.notice }, app.notice || ''),
    app.updateReady
      ? h('p.banner', t('update_ready'), h('button.link', { onclick: () => location.reload() }, t('reload')))
      : null,
    h('main', { id: 'main' }),
    enrolled
      ? h(
          'nav.bottom',
          h('a', { href: '#/', id: 'nav-list' }, t('records')),
          h('a.plus', { href: '#/new', id: 'nav-new' }, `＋ ${t('new_record')}`),
          h('button', { id: 'sync-button', type: 'button', onclick: () => runSync('manual') }, t('sync_now')),
          h('a', { href: '#/settings', id: 'nav-settings' }, t('settings')),
        )
      : null,
  ];
  root.append(...parts.filter(Boolean));
  renderStatus();
}

async function registerWorker() {
  if (!('serviceWorker' in navigator)) return;
  try {
    const hadController = !!navigator.serviceWorker.controller;
    navigator.serviceWorker.addEventListener('controllerchange', () => {
      // A new version took over: offer a reload (never forced mid-edit).
      if (hadController) {
        app.updateReady = true;
        shell();
        route();
      }
    });
    await navigator.serviceWorker.register('sw.js', { scope: './' });
  } catch {
    /* no offline shell (e.g. plain HTTP on a LAN): the app still works online */
  }
}

async function boot() {
  app.db = await openDb();
  const settings = (await getCached(app.db, 'settings', {})) || {};
  setLang(settings.lang || 'zh-CN');
  app.meta = await tx(app.db, ['meta'], 'readonly', (s) => readMeta(s));
  app.schema = await getCached(app.db, 'schema');
  app.units = unitIndex(await getCached(app.db, 'units', []));
  await refreshCounts();
  shell();
  await route();
  document.body.dataset.ready = '1';
  window.addEventListener('hashchange', () => route());
  window.addEventListener('online', () => {
    renderStatus();
    runSync('online');
  });
  window.addEventListener('offline', renderStatus);
  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState === 'visible') runSync('visible');
  });
  if (channel) {
    channel.onmessage = async () => {
      if (!document.querySelector('form.record-form')) await reload();
      else await refreshCounts().then(renderStatus);
    };
  }
  registerWorker();
  if (app.meta.device_id) {
    askPersistence();
    runSync('open');
  }
}

boot().catch((e) => {
  const root = document.getElementById('app');
  root.textContent = `${t('error', { why: e.message })}`;
});
