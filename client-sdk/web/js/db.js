// The device's durable local store, in IndexedDB: what client-sdk's sled
// store keeps, in object stores instead of key prefixes.
//
// | store     | key                            | value                                   |
// | --------- | ------------------------------ | --------------------------------------- |
// | `meta`    | `device`                       | device, token, cursor, store id, HLC, … |
// | `meta`    | `schema`, `units`, `settings`  | caches for offline use                   |
// | `records` | record id                      | a confirmed record as last pulled        |
// | `outbox`  | `n` (order of edits)           | a local mutation and where it stands    |
// | `notices` | [record id, mutation, field]   | a conflict a push answer reported        |
//
// Every multi-store change is one transaction, so each is atomic across a
// crash: an edit (record, outbox entry, HLC), a pull page and its cursor.

const DB_NAME = 'pufa-field';
const DB_VERSION = 1;

export const STORES = ['meta', 'records', 'outbox', 'notices'];

/** Wraps an IDBRequest in a promise (awaiting it keeps its transaction alive). */
export function req(r) {
  return new Promise((resolve, reject) => {
    r.onsuccess = () => resolve(r.result);
    r.onerror = () => reject(r.error);
  });
}

export function openDb(name = DB_NAME) {
  return new Promise((resolve, reject) => {
    const r = indexedDB.open(name, DB_VERSION);
    r.onupgradeneeded = () => {
      const db = r.result;
      db.createObjectStore('meta');
      // `lost: 1` (absent otherwise) marks a confirmed record that a
      // replaced server store no longer has.
      db.createObjectStore('records', { keyPath: 'id' }).createIndex('lost', 'lost');
      const outbox = db.createObjectStore('outbox', { keyPath: 'n' });
      outbox.createIndex('record', 'record_id');
      const notices = db.createObjectStore('notices', { keyPath: ['record_id', 'mutation', 'field'] });
      notices.createIndex('record', 'record_id');
    };
    r.onsuccess = () => {
      const db = r.result;
      // Another tab upgrading the schema: step aside.
      db.onversionchange = () => db.close();
      resolve(db);
    };
    r.onerror = () => reject(r.error);
    r.onblocked = () => reject(new Error('the local database is held by an older tab'));
  });
}

/**
 * Runs `fn(stores, transaction)` in one transaction over `names` and
 * resolves with its result once the transaction has committed (with
 * `durable`, once it is on disk). `fn` may await `req(...)` between
 * requests; if it throws, nothing of it is written.
 */
export function tx(db, names, mode, fn, durable = false) {
  return new Promise((resolve, reject) => {
    const opts = mode === 'readwrite' ? { durability: durable ? 'strict' : 'default' } : undefined;
    const t = db.transaction(names, mode, opts);
    const stores = {};
    for (const n of names) stores[n] = t.objectStore(n);
    let result;
    let failed = null;
    t.oncomplete = () => resolve(result);
    t.onabort = () => reject(failed || t.error || new Error('transaction aborted'));
    t.onerror = () => {};
    Promise.resolve()
      .then(() => fn(stores, t))
      .then(
        (r) => {
          result = r;
        },
        (e) => {
          failed = e;
          try {
            t.abort();
          } catch {
            reject(e);
          }
        },
      );
  });
}

/** The device's sync metadata, with defaults for a device not yet enrolled. */
export function defaultMeta() {
  return {
    device_id: null,
    token: null,
    role: null,
    org_unit: null,
    label: null,
    cursor: 0,
    store_id: null,
    hlc: [0, 0],
    clock_offset_ms: 0,
    outbox_next: 1,
    // Bumped when a repair starts; records pulled during it carry it.
    epoch: 0,
    // 'none' | 'checksum' | 'store_replaced': a repair in progress.
    repair: 'none',
    last_sync_ms: null,
    // The server refused the token (401): sync waits for a re-enrolment.
    unauthorized: false,
  };
}

export async function readMeta(stores) {
  const m = await req(stores.meta.get('device'));
  return { ...defaultMeta(), ...(m || {}) };
}

export function writeMeta(stores, meta) {
  return req(stores.meta.put(meta, 'device'));
}

/** One cached value (`schema`, `units`, `settings`), or `fallback`. */
export async function getCached(db, key, fallback = null) {
  const v = await tx(db, ['meta'], 'readonly', (s) => req(s.meta.get(key)));
  return v === undefined ? fallback : v;
}

export function putCached(db, key, value) {
  return tx(db, ['meta'], 'readwrite', (s) => req(s.meta.put(value, key)));
}
