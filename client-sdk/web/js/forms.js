// Forms generated from the server's schema (`GET /v1/schema`, cached for
// offline use): one input per field, by its type, judged with the same
// rules the server applies (core's `check_field`) before anything is saved.

import { h, clear } from './dom.js';
import { t, loc, getLang } from './i18n.js';
import { isRealDate, addDays, formatDay } from './dates.js';
import { canonicalJson } from './hash.js';

const chars = (s) => [...s].length;

/** Units by code, and a unit's path of names from the top of `units`. */
export function unitIndex(units) {
  const byCode = new Map((units || []).map((u) => [u.code, u]));
  const path = (code) => {
    const names = [];
    let u = byCode.get(code);
    for (let i = 0; u && i < 10; i++) {
      names.unshift(u.name);
      u = u.parent ? byCode.get(u.parent) : null;
    }
    return names;
  };
  const within = (code, ancestor) => {
    let u = byCode.get(code);
    for (let i = 0; u && i < 20; i++) {
      if (u.code === ancestor) return true;
      u = u.parent ? byCode.get(u.parent) : null;
    }
    return code === ancestor;
  };
  return { byCode, path, within, list: units || [] };
}

/** A unit's name; one this device does not know is said so, with its code. */
export function unitName(idx, code) {
  if (!code) return '';
  const u = idx.byCode.get(code);
  return u ? u.name : t('unit_unknown', { code });
}

/** A location for people: `纬度 37.8571，经度 112.563`. */
function showLocation(v) {
  return t('lat_lon', { lat: v.lat, lon: v.lon });
}

/** A field's value as people read it. */
export function showValue(field, value, idx) {
  if (value === undefined || value === null) return '';
  switch (field.type) {
    case 'org_unit':
      return unitName(idx, value);
    case 'enum': {
      const c = (field.values || []).find((v) => v.value === value);
      return c ? loc(c.label, value) : String(value);
    }
    case 'topics':
      return Array.isArray(value) ? value.join('、') : String(value);
    case 'location':
      return value && typeof value === 'object' ? showLocation(value) : String(value);
    case 'date':
      return formatDay(value, getLang());
    default:
      return typeof value === 'object' ? JSON.stringify(value) : String(value);
  }
}

/**
 * Judges one value (`null` = empty) of a field; returns the reason in the
 * UI's language, or null. `today` is the server-corrected UTC date.
 */
export function checkValue(field, value, ctx) {
  const label = loc(field.label, field.name);
  if (value === null || value === undefined) {
    return field.required ? t('v_required', { field: label }) : null;
  }
  switch (field.type) {
    case 'org_unit':
      if (typeof value !== 'string' || !value) return t('v_required', { field: label });
      if (ctx.units.list.length && !ctx.units.byCode.has(value)) return t('v_unit', { field: label });
      return null;
    case 'date': {
      if (!isRealDate(value)) return t('v_date', { field: label });
      const min = field.min || null;
      const max =
        field.max_days_after_today !== undefined && field.max_days_after_today !== null
          ? addDays(ctx.today, field.max_days_after_today)
          : field.max || null;
      if ((min && value < min) || (max && value > max)) {
        return t('v_date_range', { field: label, min: min || '…', max: max || '…' });
      }
      return null;
    }
    case 'text': {
      const n = chars(value);
      const min = field.min_chars || 0;
      const max = field.max_chars ?? Infinity;
      return n < min || n > max ? t('v_text', { field: label, min, max }) : null;
    }
    case 'int':
      return Number.isSafeInteger(value) && value >= field.min && value <= field.max
        ? null
        : t('v_int', { field: label, min: field.min, max: field.max });
    case 'phone': {
      const max = field.max_chars ?? 20;
      const ok = typeof value === 'string' && chars(value) <= max && /^[0-9+\- ]+$/.test(value) && /[0-9]/.test(value);
      return ok ? null : t('v_phone', { field: label, max });
    }
    case 'topics': {
      const max = field.max_items ?? 20;
      const min = field.item_min_chars ?? 1;
      const len = field.item_max_chars ?? 50;
      const ok = Array.isArray(value) && value.length <= max && value.every((s) => typeof s === 'string' && chars(s) >= min && chars(s) <= len);
      return ok ? null : t('v_topics', { max, min, len });
    }
    case 'enum':
      return (field.values || []).some((v) => v.value === value) ? null : t('v_required', { field: label });
    case 'location': {
      const ok =
        value &&
        typeof value.lat === 'number' &&
        typeof value.lon === 'number' &&
        value.lat >= (field.lat_min ?? -90) &&
        value.lat <= (field.lat_max ?? 90) &&
        value.lon >= (field.lon_min ?? -180) &&
        value.lon <= (field.lon_max ?? 180);
      return ok ? null : t('v_required', { field: label });
    }
    default:
      return null;
  }
}

let seq = 0;
const nextId = (name) => `f-${name}-${++seq}`;

function textInput(field, value, id) {
  const long = (field.max_chars ?? 0) > 200;
  const input = long
    ? h('textarea', { id, name: field.name, rows: 3 })
    : h('input', { id, name: field.name, type: 'text', autocomplete: 'off' });
  input.value = value ?? '';
  const counter = h('small.counter');
  const count = () => {
    const n = chars(input.value.trim());
    counter.textContent = field.max_chars ? t('chars', { n, max: field.max_chars }) : '';
    counter.classList.toggle('over', !!field.max_chars && n > field.max_chars);
  };
  input.addEventListener('input', count);
  count();
  return {
    nodes: [input, counter],
    get: () => {
      const v = input.value.trim();
      return v === '' ? null : v;
    },
    focus: () => input.focus(),
  };
}

/** A phone number: the phone's dial pad, the same rule as the server's. */
function phoneInput(field, value, id) {
  const input = h('input', {
    id,
    name: field.name,
    type: 'tel',
    inputmode: 'tel',
    autocomplete: 'off',
    maxlength: field.max_chars || null,
  });
  input.value = value ?? '';
  return {
    nodes: [input],
    get: () => {
      const v = input.value.trim();
      return v === '' ? null : v;
    },
    focus: () => input.focus(),
  };
}

function intInput(field, value, id) {
  const input = h('input', {
    id,
    name: field.name,
    type: 'text',
    inputmode: 'numeric',
    pattern: '[0-9]*',
    autocomplete: 'off',
    enterkeyhint: 'next',
  });
  input.value = value ?? '';
  return {
    nodes: [input],
    get: () => {
      // Full-width digits from a Chinese keyboard count too.
      const v = input.value.trim().replace(/[０-９]/g, (d) => String.fromCharCode(d.charCodeAt(0) - 0xfee0));
      if (v === '') return null;
      return /^-?\d+$/.test(v) ? Number(v) : NaN;
    },
    focus: () => input.focus(),
  };
}

function dateInput(field, value, id, ctx) {
  const input = h('input', { id, name: field.name, type: 'date' });
  if (field.min) input.min = field.min;
  if (field.max_days_after_today !== undefined && field.max_days_after_today !== null) {
    input.max = addDays(ctx.today, field.max_days_after_today);
  }
  input.value = value ?? '';
  const today = h('button.link', { type: 'button', onclick: () => (input.value = ctx.localToday) }, t('today'));
  return { nodes: [h('div.row', input, today)], get: () => input.value || null, focus: () => input.focus() };
}

function enumInput(field, value, id) {
  const choices = (field.values || []).map((v) => ({ value: v.value, label: loc(v.label, v.value) }));
  if (!field.required) choices.push({ value: '', label: t('none_chosen') });
  const group = h(
    'div.choices',
    { id, role: 'radiogroup' },
    choices.map((c) =>
      h(
        'label.chip',
        h('input', { type: 'radio', name: `${id}-r`, value: c.value, checked: (value ?? '') === c.value }),
        h('span', c.label),
      ),
    ),
  );
  return {
    nodes: [group],
    get: () => {
      const on = group.querySelector('input:checked');
      return on && on.value !== '' ? on.value : null;
    },
    focus: () => group.querySelector('input')?.focus(),
  };
}

function topicsInput(field, value, id, ctx) {
  let items = Array.isArray(value) ? [...value] : [];
  const chipsBox = h('div.chips');
  // The server's topic vocabulary (`schema.topics`) as suggestions: figures
  // fold synonyms anyway, but the canonical name reads best in a report.
  const vocabulary = (ctx && ctx.topics) || [];
  const listId = `${id}-topics`;
  const suggestions = h(
    'datalist',
    { id: listId },
    vocabulary.map((tp) => h('option', { value: tp.name, label: loc(tp.label, tp.name) })),
  );
  const input = h('input', {
    id,
    type: 'text',
    autocomplete: 'off',
    placeholder: t('topic_placeholder'),
    enterkeyhint: 'done',
    list: vocabulary.length ? listId : null,
  });
  const render = () => {
    clear(chipsBox);
    items.forEach((s, i) =>
      chipsBox.append(
        h(
          'span.chip.on',
          s,
          h(
            'button.x',
            {
              type: 'button',
              'aria-label': `${t('remove')} ${s}`,
              onclick: () => {
                items.splice(i, 1);
                render();
              },
            },
            '×',
          ),
        ),
      ),
    );
  };
  const add = () => {
    for (const part of input.value.split(/[,，、;；]/)) {
      const s = part.trim();
      if (s && !items.includes(s)) items.push(s);
    }
    input.value = '';
    render();
  };
  input.addEventListener('keydown', (e) => {
    // Enter while the Chinese IME is composing picks a candidate: not ours.
    if (e.key === 'Enter' && !e.isComposing) {
      e.preventDefault();
      add();
    }
  });
  render();
  return {
    nodes: [chipsBox, h('div.row', input, h('button', { type: 'button', onclick: add }, t('add_topic'))), suggestions],
    get: () => {
      if (input.value.trim()) add();
      return items.length ? [...items] : null;
    },
    focus: () => input.focus(),
  };
}

/** Why the phone gave no position, in the UI's language (never the browser's English). */
function locationError(e) {
  if (typeof window !== 'undefined' && window.isSecureContext === false) return t('location_insecure');
  switch (e && e.code) {
    case 1:
      return t('location_denied');
    case 3:
      return t('location_timeout');
    default:
      return t('location_unavailable');
  }
}

function locationInput(field, value, id) {
  let loc = value && typeof value === 'object' ? { lat: value.lat, lon: value.lon } : null;
  const shown = h('span.coords', { id });
  const note = h('p.note.location-note', { role: 'status', 'aria-live': 'polite' });
  const button = h('button', { type: 'button', class: 'locate' }, t('use_location'));
  const show = () => {
    shown.textContent = loc ? showLocation(loc) : t('none_chosen');
  };
  const round = (x) => Math.round(x * 1e6) / 1e6;
  const fail = (text) => {
    note.textContent = text;
    note.classList.add('warn');
    button.disabled = false;
  };
  const locate = () => {
    note.classList.remove('warn');
    if (!navigator.geolocation) {
      fail(window.isSecureContext === false ? t('location_insecure') : t('location_unsupported'));
      return;
    }
    note.textContent = t('locating');
    button.disabled = true;
    navigator.geolocation.getCurrentPosition(
      (p) => {
        loc = { lat: round(p.coords.latitude), lon: round(p.coords.longitude) };
        note.textContent = Number.isFinite(p.coords.accuracy) ? t('location_got', { m: Math.max(1, Math.round(p.coords.accuracy)) }) : '';
        button.disabled = false;
        show();
      },
      (e) => fail(locationError(e)),
      { enableHighAccuracy: true, timeout: 20_000, maximumAge: 60_000 },
    );
  };
  button.addEventListener('click', locate);
  show();
  return {
    nodes: [
      h('div.row', shown),
      h(
        'div.row',
        button,
        h(
          'button.link',
          {
            type: 'button',
            onclick: () => {
              loc = null;
              note.textContent = '';
              show();
            },
          },
          t('clear'),
        ),
      ),
      note,
    ],
    get: () => loc,
    focus: () => button.focus(),
  };
}

function unitInput(field, value, id, ctx) {
  let chosen = value || null;
  const idx = ctx.units;
  const shown = h('div.unit-chosen', { id });
  const search = h('input', { type: 'search', class: 'unit-search', placeholder: t('search_unit'), autocomplete: 'off', 'aria-label': t('search_unit') });
  const results = h('div.unit-results');
  const show = () => {
    clear(shown);
    if (chosen) {
      shown.append(h('strong', unitName(idx, chosen)), h('small', idx.path(chosen).slice(0, -1).join(' › ')));
    } else {
      shown.append(h('span.placeholder', t('pick_unit')));
    }
  };
  const list = () => {
    clear(results);
    const q = search.value.trim().toLowerCase();
    if (!idx.list.length) {
      results.append(h('p.note', t('no_units')));
      return;
    }
    // Grassroots units first: records are mostly made there.
    const rank = { community: 0, village: 0, street: 1, town: 1, district: 2 };
    const matches = idx.list
      .filter((u) => !q || u.name.toLowerCase().includes(q) || u.code.startsWith(q))
      .sort((a, b) => (rank[a.type] ?? 3) - (rank[b.type] ?? 3) || a.name.localeCompare(b.name, 'zh-CN'))
      .slice(0, 30);
    if (!matches.length) results.append(h('p.note', t('no_unit_match', { q: search.value.trim() })));
    for (const u of matches) {
      results.append(
        h(
          'button.unit',
          {
            type: 'button',
            'data-code': u.code,
            'aria-pressed': u.code === chosen ? 'true' : 'false',
            onclick: () => {
              chosen = u.code;
              show();
              search.value = '';
              list();
            },
          },
          h('span', u.name),
          h('small', idx.path(u.code).slice(0, -1).join(' › ')),
        ),
      );
    }
  };
  search.addEventListener('input', list);
  show();
  list();
  return { nodes: [shown, search, results], get: () => chosen, focus: () => search.focus() };
}

const INPUTS = {
  text: textInput,
  int: intInput,
  phone: phoneInput,
  date: dateInput,
  enum: enumInput,
  topics: topicsInput,
  location: locationInput,
  org_unit: unitInput,
};

/**
 * A form for one kind. `values`: the record's current fields (empty for a
 * new record). `ctx`: `{units: unitIndex, today, localToday, topics}` (topics:
 * the schema's vocabulary, suggested for topics fields). Returns the
 * element and `collect()`, which reads and judges every field:
 * `{values, errors: [{field, message}]}`.
 */
export function buildForm(kindSchema, values, ctx, errorsFromServer = {}) {
  const inputs = [];
  const form = h('div.fields');
  for (const field of kindSchema.fields) {
    const id = nextId(field.name);
    const make = INPUTS[field.type] || textInput;
    const input = make(field, values[field.name], id, ctx);
    const errId = `${id}-error`;
    const labelId = `${id}-label`;
    const err = h('p.field-error', { id: errId, role: 'alert' });
    if (errorsFromServer[field.name]) err.textContent = errorsFromServer[field.name];
    const box = h(
      'div.field',
      { 'data-field': field.name, 'data-type': field.type, class: errorsFromServer[field.name] ? 'invalid' : null },
      h('label', { for: id, id: labelId }, loc(field.label, field.name), field.required ? h('span.req', { 'aria-hidden': 'true' }, ' *') : null),
      input.nodes,
      err,
    );
    // Tie the label and the error to what the worker types in or taps:
    // a group (choices, a unit picker, a location) is named by the label.
    for (const el of box.querySelectorAll('input, textarea, [role=radiogroup]')) {
      if (el.type === 'radio') continue;
      // `<label for>` names only a form control: a group is named by id.
      if (el.getAttribute('role') === 'radiogroup') el.setAttribute('aria-labelledby', labelId);
      el.setAttribute('aria-describedby', errId);
      if (field.required && el.type !== 'search') el.setAttribute('aria-required', 'true');
    }
    const judge = () => {
      const v = input.get();
      const why = Number.isNaN(v) ? checkValue(field, -Infinity, ctx) : checkValue(field, v, ctx);
      err.textContent = why || '';
      box.classList.toggle('invalid', !!why);
      for (const el of box.querySelectorAll('input, textarea')) {
        if (why) el.setAttribute('aria-invalid', 'true');
        else el.removeAttribute('aria-invalid');
      }
      return { v, why };
    };
    // Once a field was marked wrong, its message follows what is typed or
    // tapped: it goes away as soon as the value is right.
    const again = (e) => {
      // Reading topics adds what is typed as a chip: not while typing.
      if (e && e.type === 'input' && field.type === 'topics') return;
      if (box.classList.contains('invalid')) judge();
    };
    box.addEventListener('input', again);
    box.addEventListener('change', again);
    box.addEventListener('click', (e) => {
      if (e.target.closest('button')) setTimeout(again, 0);
    });
    form.append(box);
    inputs.push({ field, input, judge });
  }
  const collect = () => {
    const out = {};
    const errors = [];
    for (const { field, input, judge } of inputs) {
      const { v, why } = judge();
      if (why) errors.push({ field: field.name, message: why, focus: input.focus });
      out[field.name] = Number.isNaN(v) ? null : v;
    }
    return { values: out, errors };
  };
  return { el: form, collect };
}

/**
 * The `set` of an edit: fields whose value differs from `before`
 * (`null` clears), or, for a new record, every field with a value.
 */
export function diffSet(before, after, isNew) {
  const set = {};
  for (const [k, v] of Object.entries(after)) {
    if (isNew) {
      if (v !== null) set[k] = v;
    } else if (canonicalJson(v ?? null) !== canonicalJson(before[k] ?? null)) {
      set[k] = v;
    }
  }
  return set;
}
