// The local model, as pufa-client's `Client`: every edit becomes a mutation
// in the outbox, committed in one transaction with the HLC before the UI
// says "saved"; reads show the confirmed record with the device's unsent
// edits applied on top. The app never merges: the server's answer is what
// a sync converges to.

import { req, tx, readMeta, writeMeta } from './db.js';
import { HlcClock, uuidv7 } from './hlc.js';

/** The device clock corrected by the offset learned from the server. */
export function nowCorrected(meta) {
  return Math.max(0, Date.now() + (meta.clock_offset_ms || 0));
}

function entryFor(meta, clock, recordId, kind, baseSeq, set, del) {
  const mutation = {
    id: uuidv7(),
    record_id: recordId,
    kind,
    base_seq: baseSeq,
    hlc: clock.next(nowCorrected(meta), meta.device_id),
    set,
  };
  if (del !== undefined && del !== null) mutation.delete = del;
  return mutation;
}

/**
 * Appends edits `{record_id, kind, set, delete}` to the outbox in one
 * durable transaction (with the HLC and, via `extra`, anything else that
 * must change with them). Resolves with the mutation ids once committed.
 */
export function recordEdits(db, edits, extra) {
  return tx(
    db,
    ['meta', 'records', 'outbox'],
    'readwrite',
    async (s) => {
      const meta = await readMeta(s);
      if (!meta.device_id) throw new Error('not enrolled');
      const clock = new HlcClock(meta.hlc);
      const ids = [];
      const wall = Date.now();
      for (const e of edits) {
        const confirmed = await req(s.records.get(e.record_id));
        const m = entryFor(meta, clock, e.record_id, e.kind, confirmed ? confirmed.view.seq : 0, e.set, e.delete);
        ids.push(m.id);
        s.outbox.put({ n: meta.outbox_next, record_id: e.record_id, mutation: m, status: 'pending', created_ms: wall });
        meta.outbox_next += 1;
      }
      if (extra) await extra(s, meta);
      meta.hlc = clock.parts();
      await writeMeta(s, meta);
      return ids;
    },
    true,
  );
}

export async function createRecord(db, kind, fields) {
  const id = uuidv7();
  await recordEdits(db, [{ record_id: id, kind, set: fields }]);
  return id;
}

export function updateRecord(db, rec, set) {
  return recordEdits(db, [{ record_id: rec.id, kind: rec.kind, set }]);
}

export function setDeleted(db, rec, deleted) {
  return recordEdits(db, [{ record_id: rec.id, kind: rec.kind, set: {}, delete: deleted }]);
}

/**
 * The local view: the confirmed record with `entries` (this record's
 * outbox entries, in order) applied on top, and its sync state. A rejected
 * edit outranks pending ones, and pending edits outrank conflicts.
 */
export function buildView(id, confirmed, entries, notices) {
  let fields = {};
  let deleted = false;
  let kind = null;
  let seq = 0;
  let open = 0;
  if (confirmed) {
    fields = { ...confirmed.view.fields };
    deleted = confirmed.view.deleted;
    kind = confirmed.view.kind;
    seq = confirmed.view.seq;
    open = confirmed.view.conflicts;
  }
  let state = null;
  for (const e of entries) {
    kind = kind || e.mutation.kind;
    for (const [k, v] of Object.entries(e.mutation.set)) {
      if (v === null) delete fields[k];
      else fields[k] = v;
    }
    if (typeof e.mutation.delete === 'boolean') deleted = e.mutation.delete;
    if (e.status === 'rejected' && (!state || state.type === 'pending')) {
      state = { type: 'rejected', error: e.error, n: e.n, mutation: e.mutation };
    } else if (!state) {
      state = { type: 'pending' };
    }
  }
  if (!kind) return null;
  if (!state) {
    state = open > 0 ? { type: 'conflicted', open, details: notices || [] } : { type: 'synced' };
  }
  return {
    id,
    kind,
    fields,
    deleted,
    seq,
    state,
    lost: !!(confirmed && confirmed.lost),
    hlc: confirmed ? confirmed.view.hlc : null,
  };
}

function groupBy(items, key) {
  const m = new Map();
  for (const it of items) {
    const k = it[key];
    if (!m.has(k)) m.set(k, []);
    m.get(k).push(it);
  }
  return m;
}

/** Every local record (deleted ones included), unsorted. */
export function allRecords(db) {
  return tx(db, ['records', 'outbox', 'notices'], 'readonly', async (s) => {
    const [confirmed, entries, notices] = await Promise.all([
      req(s.records.getAll()),
      req(s.outbox.getAll()),
      req(s.notices.getAll()),
    ]);
    const byRecord = groupBy(entries, 'record_id');
    const noticesBy = groupBy(notices, 'record_id');
    const out = [];
    for (const c of confirmed) {
      const v = buildView(c.id, c, byRecord.get(c.id) || [], noticesBy.get(c.id));
      byRecord.delete(c.id);
      if (v) out.push(v);
    }
    for (const [id, es] of byRecord) {
      const v = buildView(id, null, es, noticesBy.get(id));
      if (v) out.push(v);
    }
    return out;
  });
}

export function getRecord(db, id) {
  return tx(db, ['records', 'outbox', 'notices'], 'readonly', async (s) => {
    const [c, es, ns] = await Promise.all([
      req(s.records.get(id)),
      req(s.outbox.index('record').getAll(id)),
      req(s.notices.index('record').getAll(id)),
    ]);
    es.sort((a, b) => a.n - b.n);
    return buildView(id, c, es, ns);
  });
}

/**
 * The view of a record without one outbox entry (`n`): what a fix of a
 * rejected edit starts from.
 */
export function getRecordWithout(db, id, n) {
  return tx(db, ['records', 'outbox'], 'readonly', async (s) => {
    const [c, es] = await Promise.all([req(s.records.get(id)), req(s.outbox.index('record').getAll(id))]);
    const rest = es.filter((e) => e.n !== n).sort((a, b) => a.n - b.n);
    return buildView(id, c, rest, []) || { id, kind: null, fields: {}, deleted: false, seq: 0, state: { type: 'pending' } };
  });
}

/**
 * Sends a rejected edit again with `set` replacing its fields (or as it
 * was, with `null`): a new mutation id and HLC, judged afresh, in the old
 * edit's place in the order.
 */
export function resubmit(db, n, set) {
  return tx(
    db,
    ['meta', 'records', 'outbox'],
    'readwrite',
    async (s) => {
      const old = await req(s.outbox.get(n));
      if (!old || old.status !== 'rejected') throw new Error('no such rejected edit');
      const meta = await readMeta(s);
      const clock = new HlcClock(meta.hlc);
      const confirmed = await req(s.records.get(old.record_id));
      const m = entryFor(
        meta,
        clock,
        old.record_id,
        old.mutation.kind,
        confirmed ? confirmed.view.seq : 0,
        set === null ? old.mutation.set : set,
        old.mutation.delete,
      );
      await req(s.outbox.put({ n, record_id: old.record_id, mutation: m, status: 'pending', created_ms: Date.now() }));
      meta.hlc = clock.parts();
      await writeMeta(s, meta);
      return m.id;
    },
    true,
  );
}

/** Drops a rejected edit for good; the view falls back to the rest. */
export function discard(db, n) {
  return tx(
    db,
    ['outbox'],
    'readwrite',
    async (s) => {
      const old = await req(s.outbox.get(n));
      if (old && old.status === 'rejected') await req(s.outbox.delete(n));
    },
    true,
  );
}

/**
 * Pushes again, as new edits, the confirmed records a replaced server
 * store no longer has. One transaction: the new edits, and the records
 * leave the confirmed set, so a crash cannot resubmit twice.
 */
export async function resubmitLost(db) {
  const lost = await tx(db, ['records'], 'readonly', (s) => req(s.records.index('lost').getAll()));
  if (lost.length === 0) return 0;
  const edits = lost.map((c) => ({
    record_id: c.id,
    kind: c.view.kind,
    set: { ...c.view.fields },
    delete: c.view.deleted ? true : undefined,
  }));
  await recordEdits(db, edits, async (s) => {
    for (const c of lost) await req(s.records.delete(c.id));
  });
  return lost.length;
}

/** Where the device stands: counts for the status line. */
export function status(db) {
  return tx(db, ['meta', 'outbox', 'records'], 'readonly', async (s) => {
    const meta = await readMeta(s);
    const entries = await req(s.outbox.getAll());
    let pending = 0;
    let rejected = 0;
    let oldest = null;
    for (const e of entries) {
      if (e.status === 'pending') {
        pending += 1;
        oldest = oldest === null ? e.created_ms : Math.min(oldest, e.created_ms);
      } else if (e.status === 'rejected') rejected += 1;
    }
    const lost = await req(s.records.index('lost').count());
    return { meta, pending, rejected, oldest_pending_ms: oldest, lost };
  });
}
