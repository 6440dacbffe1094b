// Sync, the whole contract (../../../shared/sync-protocol-v1.md), as
// client-sdk/src/sync.rs does it: push the outbox in order and in batches,
// fetch the org units, pull pages until the end (each page and the cursor
// in one transaction), compare the checksum and repair by re-pulling from
// 0. Every step is saved as it completes, so a sync cut off anywhere (a
// closed tab, a killed browser, a lost signal) is simply run again.
//
// The decisions are small pure functions (`storeChanged`, `verdict`,
// `backoffMs`) next to the IO that follows them.

import { req, tx, readMeta, writeMeta, putCached, getCached } from './db.js';
import { HlcClock } from './hlc.js';
import { recordDigest, checksumText, utf8 } from './hash.js';

export const APP_VERSION = 'pufa-field/1';

/** Most mutations per push (the SDK's `PUSH_BATCH_MAX`). */
const PUSH_BATCH_MAX = 500;
/** Largest push body built, in bytes (the SDK's `PUSH_BODY_BYTES_MAX`). */
const PUSH_BODY_BYTES_MAX = 4 * 1024 * 1024;
/** Records per pull page. */
const PULL_LIMIT = 1000;
/** Bodies smaller than this go uncompressed: gzip would not pay. */
const GZIP_BYTES_MIN = 1024;
/** How a request is retried: tries in all, first delay, longest delay. */
const RETRY = { attempts: 6, baseMs: 200, maxMs: 30_000 };
/** Longest wait between retries, whatever `Retry-After` says. */
const RETRY_AFTER_MAX_MS = 300_000;
/** A request with no answer after this long counts as no answer. */
const REQUEST_TIMEOUT_MS = 60_000;

/** The server refused the device's token (revoked or unknown): enrol again. */
export class Unauthorized extends Error {}
/** No answer after the retries; nothing was lost. */
export class Unreachable extends Error {
  constructor(message, retryAfterMs = null) {
    super(message);
    this.retryAfterMs = retryAfterMs;
  }
}
/** An answer that retrying cannot fix. */
export class ServerError extends Error {
  constructor(status, code, message) {
    super(`${status} ${code}: ${message}`);
    this.status = status;
    this.code = code;
  }
}

export function storeChanged(known, seen) {
  return !!known && known !== seen;
}

/**
 * What to do after comparing checksums: 'match' (the device holds exactly
 * the server's view), 'pull_again' (the server moved on past the cursor),
 * or 'repair' (same position, different contents).
 */
export function verdict(cursor, local, server) {
  if (cursor < server.seq) return 'pull_again';
  return local.count === server.count && checksumText(local.xor) === server.checksum ? 'match' : 'repair';
}

/** Delay before retry `attempt` (0-based): doubling, jittered, at least Retry-After. */
export function backoffMs(attempt, retryAfterMs) {
  const exp = Math.min(RETRY.baseMs * 2 ** Math.min(attempt, 16), RETRY.maxMs);
  const d = exp * (0.5 + Math.random() / 2);
  return retryAfterMs === null ? d : Math.max(d, Math.min(retryAfterMs, RETRY_AFTER_MAX_MS));
}

/** `Retry-After` in ms: delta-seconds or an HTTP date. */
export function parseRetryAfter(value) {
  if (!value) return null;
  if (/^\d+$/.test(value.trim())) return Number(value.trim()) * 1000;
  const t = Date.parse(value);
  return Number.isNaN(t) ? null : Math.max(0, t - Date.now());
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function gzip(text) {
  const stream = new Blob([text]).stream().pipeThrough(new CompressionStream('gzip'));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

/**
 * One call with retries: no answer, 408, 429 and 5xx are retried with
 * backoff (honouring Retry-After); 401 and other errors stop.
 */
export async function call(ctx, method, path, body) {
  let last = '';
  let retryAfter = null;
  for (let attempt = 0; attempt < RETRY.attempts; attempt++) {
    if (attempt > 0) await sleep(backoffMs(attempt - 1, retryAfter));
    retryAfter = null;
    if (typeof navigator !== 'undefined' && navigator.onLine === false) {
      throw new Unreachable('offline');
    }
    const headers = { Authorization: `Bearer ${ctx.token}` };
    let payload;
    let zipped = false;
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      payload = body;
      if (ctx.gzipPush && body.length >= GZIP_BYTES_MIN && typeof CompressionStream === 'function') {
        payload = await gzip(body);
        headers['Content-Encoding'] = 'gzip';
        zipped = true;
      }
    }
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), REQUEST_TIMEOUT_MS);
    let r;
    try {
      r = await fetch(path, { method, headers, body: payload, cache: 'no-store', signal: abort.signal });
    } catch (e) {
      clearTimeout(timer);
      last = e.name === 'AbortError' ? 'timeout' : e.message;
      continue;
    }
    let text;
    try {
      text = await r.text();
    } catch (e) {
      clearTimeout(timer);
      last = e.message;
      continue;
    }
    clearTimeout(timer);
    if (r.ok) {
      try {
        return JSON.parse(text);
      } catch {
        throw new ServerError(r.status, 'bad_response', 'unreadable answer');
      }
    }
    if (r.status === 401) throw new Unauthorized('unauthorized');
    if (zipped && (r.status === 400 || r.status === 415)) {
      // A server that does not take gzip bodies: say so once, send plain.
      ctx.gzipPush = false;
      await putCached(ctx.db, 'gzip_push', false);
      attempt -= 1;
      continue;
    }
    if (r.status === 408 || r.status === 429 || r.status >= 500) {
      last = `HTTP ${r.status}`;
      retryAfter = parseRetryAfter(r.headers.get('Retry-After'));
      continue;
    }
    let code = 'unknown';
    let message = text;
    try {
      const e = JSON.parse(text).error;
      code = e.code;
      message = e.message;
    } catch {
      /* not the contract's error body */
    }
    throw new ServerError(r.status, code, message);
  }
  throw new Unreachable(last, retryAfter);
}

/** Learns the clock offset from an answer and advances the HLC past its time. */
function observeServerTime(meta, clock, serverTimeMs, sentAt) {
  const now = Date.now();
  // The answer was made somewhere between sending and receiving.
  meta.clock_offset_ms = serverTimeMs - Math.floor((sentAt + now) / 2);
  clock.observeMs(serverTimeMs);
}

function getMeta(db) {
  return tx(db, ['meta'], 'readonly', (s) => readMeta(s));
}

function pendingEntries(db) {
  return tx(db, ['outbox'], 'readonly', async (s) =>
    (await req(s.outbox.getAll())).filter((e) => e.status === 'pending'),
  );
}

async function pushAll(ctx, report) {
  const limits = (ctx.schema && ctx.schema.limits) || {};
  let batchSize = Math.min(PUSH_BATCH_MAX, limits.push_mutations_max || PUSH_BATCH_MAX);
  const bytesMax = Math.min(PUSH_BODY_BYTES_MAX, Math.floor((limits.push_body_bytes_max || 2 * PUSH_BODY_BYTES_MAX) / 2));
  const total = (await pendingEntries(ctx.db)).length;
  let done = 0;
  for (;;) {
    const pending = await pendingEntries(ctx.db);
    if (pending.length === 0) return;
    const batch = pending.slice(0, batchSize);
    const rest = pending.slice(batchSize);
    const sentAt = Date.now();
    // What is still waiting once this push is answered: a device that has
    // just synced everything reports 0, not the size of its last batch.
    const body = JSON.stringify({
      device_id: ctx.deviceId,
      mutations: batch.map((e) => e.mutation),
      device: {
        app_version: APP_VERSION,
        outbox_len: rest.length,
        oldest_pending_ms: rest.length ? Math.min(...rest.map((e) => e.created_ms)) : null,
        now_ms: sentAt,
      },
    });
    if (utf8(body).length > bytesMax && batchSize > 1) {
      batchSize = Math.ceil(batchSize / 2);
      continue;
    }
    const resp = await call(ctx, 'POST', '/v1/sync/push', body);
    if (!Array.isArray(resp.results) || resp.results.length !== batch.length) {
      throw new ServerError(200, 'bad_response', 'one result per mutation expected');
    }
    await tx(
      ctx.db,
      ['meta', 'outbox', 'notices'],
      'readwrite',
      async (s) => {
        const meta = await readMeta(s);
        const clock = new HlcClock(meta.hlc);
        observeServerTime(meta, clock, resp.server_time_ms, sentAt);
        if (!meta.store_id) meta.store_id = resp.store_id;
        for (const [i, e] of batch.entries()) {
          const res = resp.results[i];
          const current = await req(s.outbox.get(e.n));
          // Changed meanwhile (nothing should: edits wait for the lock).
          if (!current || current.mutation.id !== e.mutation.id) continue;
          report.pushed += 1;
          if (res.hlc) clock.observe(res.hlc);
          if (res.restamped) report.restamped += 1;
          for (const c of res.conflicts || []) {
            const n = { record_id: e.record_id, mutation: e.mutation.id, field: c.field, winner: c.winner, loser: c.loser };
            s.notices.put(n);
            report.conflicts.push(n);
          }
          const next = { ...e };
          if ((res.status === 'applied' || res.status === 'duplicate') && res.seq !== null && res.seq !== undefined) {
            if (res.status === 'applied') report.applied += 1;
            else report.duplicates += 1;
            next.status = 'acked';
            next.seq = res.seq;
          } else {
            next.status = 'rejected';
            next.error = res.error || { code: 'rejected', message: 'rejected without a reason', field: null };
            report.rejected.push(next);
          }
          s.outbox.put(next);
        }
        meta.hlc = clock.parts();
        await writeMeta(s, meta);
      },
      true,
    );
    done += batch.length;
    ctx.progress({ phase: 'push', done, total: Math.max(total, done) });
  }
}

async function refreshUnits(ctx) {
  const units = await call(ctx, 'GET', '/v1/org-units');
  await putCached(ctx.db, 'units', units);
}

async function refreshSchema(ctx) {
  try {
    ctx.schema = await call(ctx, 'GET', '/v1/schema');
    await putCached(ctx.db, 'schema', ctx.schema);
  } catch (e) {
    // A server without /v1/schema: keep the cached one.
    if (!(e instanceof ServerError && e.status === 404)) throw e;
  }
}

/** Starts a repair: re-pull from 0 under a new epoch. */
function beginRepair(ctx, kind, storeId) {
  return tx(
    ctx.db,
    ['meta', 'outbox'],
    'readwrite',
    async (s) => {
      const meta = await readMeta(s);
      meta.repair = kind;
      meta.epoch += 1;
      meta.cursor = 0;
      if (storeId) meta.store_id = storeId;
      if (kind === 'store_replaced') {
        // The new store may predate these acknowledgements: push them
        // again (where it has them, they come back as duplicates).
        for (const e of await req(s.outbox.getAll())) {
          if (e.status === 'acked') s.outbox.put({ ...e, status: 'pending', seq: undefined });
        }
      }
      await writeMeta(s, meta);
    },
    true,
  );
}

async function pullAll(ctx, report) {
  const limits = (ctx.schema && ctx.schema.limits) || {};
  const limit = Math.min(PULL_LIMIT, limits.pull_limit_max || PULL_LIMIT);
  const start = (await getMeta(ctx.db)).cursor;
  for (;;) {
    const before = await getMeta(ctx.db);
    const sentAt = Date.now();
    const page = await call(ctx, 'GET', `/v1/sync/pull?since=${before.cursor}&limit=${limit}`);
    if (storeChanged(before.store_id, page.store_id)) {
      await beginRepair(ctx, 'store_replaced', page.store_id);
      continue;
    }
    const meta = await tx(ctx.db, ['meta', 'records', 'outbox', 'notices'], 'readwrite', async (s) => {
      const meta = await readMeta(s);
      meta.store_id = page.store_id;
      const clock = new HlcClock(meta.hlc);
      observeServerTime(meta, clock, page.server_time_ms, sentAt);
      // A first sync into an empty device has no outbox and no notices:
      // skip the per-record look-ups then.
      const anyEntries = (await req(s.outbox.count())) > 0;
      const anyNotices = (await req(s.notices.count())) > 0;
      for (const entry of page.records) {
        const gone = entry.in_scope === false;
        if (anyEntries) {
          // Edits this device pushed that the server has now folded in.
          for (const e of await req(s.outbox.index('record').getAll(entry.id))) {
            if (e.status === 'acked' && (gone || e.seq <= entry.seq)) s.outbox.delete(e.n);
          }
        }
        if (anyNotices && (gone || entry.conflicts === 0)) {
          // Resolved, or out of sight: the details no longer apply.
          for (const k of await req(s.notices.index('record').getAllKeys(entry.id))) s.notices.delete(k);
        }
        if (gone) {
          if ((await req(s.records.count(entry.id))) > 0) {
            s.records.delete(entry.id);
            report.removed += 1;
          }
        } else {
          clock.observe(entry.hlc);
          s.records.put({ id: entry.id, view: entry, epoch: meta.epoch, digest: recordDigest(entry.id, entry.seq) });
          report.pulled += 1;
        }
      }
      meta.cursor = Math.max(page.next, meta.cursor);
      if (!page.has_more && meta.repair !== 'none') {
        await finishRepair(s, meta, report);
        meta.repair = 'none';
      }
      meta.hlc = clock.parts();
      await writeMeta(s, meta);
      return meta;
    });
    ctx.progress({
      phase: before.repair === 'none' ? 'pull' : 'repair',
      done: meta.cursor - start,
      total: Math.max(page.next - start, 0),
    });
    if (!page.has_more) return;
  }
}

/** After a repair's last page: records of older epochs were not listed. */
async function finishRepair(s, meta, report) {
  report.repaired = true;
  for (const c of await req(s.records.getAll())) {
    if (c.epoch >= meta.epoch) continue;
    if (meta.repair === 'checksum') {
      // Same store, different contents: the server does not list it.
      s.records.delete(c.id);
      report.removed += 1;
    } else if (!c.lost) {
      // A replaced store lost it: keep it and tell the user.
      s.records.put({ ...c, lost: 1 });
    }
  }
}

/** `(count, xor)` over the confirmed records (those a replaced store lost excluded). */
function localChecksum(db) {
  return tx(db, ['records'], 'readonly', async (s) => {
    let count = 0;
    let hi = 0;
    let lo = 0;
    for (const c of await req(s.records.getAll())) {
      if (c.lost) continue;
      const d = c.digest || recordDigest(c.id, c.view.seq);
      count += 1;
      hi ^= d[0];
      lo ^= d[1];
    }
    return { count, xor: [hi >>> 0, lo >>> 0] };
  });
}

/**
 * Compares checksums; pulls again while the server moves on; repairs at
 * most once. On a match, acknowledged edits are all in the confirmed
 * records, so they leave the outbox.
 */
async function verify(ctx, report) {
  let repairedNow = false;
  report.checksum_ok = false;
  for (let i = 0; i < 4; i++) {
    const server = await call(ctx, 'GET', '/v1/sync/checksum');
    const meta = await getMeta(ctx.db);
    if (storeChanged(meta.store_id, server.store_id)) {
      await beginRepair(ctx, 'store_replaced', server.store_id);
      await pullAll(ctx, report);
      continue;
    }
    ctx.progress({ phase: 'checksum', done: 0, total: 1 });
    const v = verdict(meta.cursor, await localChecksum(ctx.db), server);
    if (v === 'match') {
      report.checksum_ok = true;
      await tx(ctx.db, ['outbox'], 'readwrite', async (s) => {
        for (const e of await req(s.outbox.getAll())) if (e.status === 'acked') s.outbox.delete(e.n);
      });
      ctx.progress({ phase: 'checksum', done: 1, total: 1 });
      return;
    }
    if (v === 'pull_again') {
      await pullAll(ctx, report);
    } else if (!repairedNow) {
      repairedNow = true;
      await beginRepair(ctx, 'checksum', null);
      await pullAll(ctx, report);
    } else {
      return;
    }
  }
}

async function run(db, onProgress) {
  const meta = await getMeta(db);
  if (!meta.token) throw new Unauthorized('not enrolled');
  const ctx = {
    db,
    token: meta.token,
    deviceId: meta.device_id,
    schema: await getCached(db, 'schema'),
    gzipPush: (await getCached(db, 'gzip_push', true)) !== false,
    progress: onProgress || (() => {}),
  };
  const report = {
    pushed: 0,
    applied: 0,
    duplicates: 0,
    restamped: 0,
    rejected: [],
    conflicts: [],
    pulled: 0,
    removed: 0,
    checksum_ok: false,
    repaired: false,
  };
  try {
    await refreshSchema(ctx);
    // A replaced server store turns acknowledged edits back into pending
    // ones; the second round pushes them to the new store.
    for (let round = 0; round < 2; round++) {
      await pushAll(ctx, report);
      await refreshUnits(ctx);
      await pullAll(ctx, report);
      await verify(ctx, report);
      if ((await pendingEntries(db)).length === 0) break;
    }
  } catch (e) {
    if (e instanceof Unauthorized) {
      await tx(db, ['meta'], 'readwrite', async (s) => {
        const m = await readMeta(s);
        // Only if the token that failed is still the device's.
        if (m.token === ctx.token) {
          m.unauthorized = true;
          await writeMeta(s, m);
        }
      });
    }
    throw e;
  }
  await tx(db, ['meta'], 'readwrite', async (s) => {
    const m = await readMeta(s);
    m.last_sync_ms = Date.now();
    m.unauthorized = false;
    await writeMeta(s, m);
  });
  return report;
}

/**
 * Syncs once. Two tabs never sync at once (Web Locks): if another tab is
 * syncing, this resolves with `{skipped: true}`.
 */
export function sync(db, onProgress) {
  if (typeof navigator !== 'undefined' && navigator.locks) {
    return navigator.locks.request('pufa-sync', { ifAvailable: true }, (lock) =>
      lock ? run(db, onProgress) : { skipped: true },
    );
  }
  return run(db, onProgress);
}

/** Runs `fn` while holding the sync lock (waits for a running sync). */
export function withSyncLock(fn) {
  if (typeof navigator !== 'undefined' && navigator.locks) return navigator.locks.request('pufa-sync', fn);
  return fn();
}
