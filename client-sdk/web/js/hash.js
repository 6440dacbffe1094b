// Hashes that must agree with pufa-core byte for byte: the checksum term of
// a record (contract §7, `record_digest`), and a mutation's idempotency
// fingerprint (`content_hash`), over canonical JSON (`canonical_json`).
//
// SHA-256 is written out here rather than taken from `crypto.subtle`:
// browsers offer `crypto.subtle` only on HTTPS or localhost, and a district
// may first try the app over plain HTTP on its LAN. It is synchronous, which
// also lets a pull page compute its digests inside one IndexedDB
// transaction. Checked against core by tests/tests/field_app.rs.

const K = new Uint32Array([
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
  0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
  0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
  0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
  0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
  0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
  0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
  0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
]);

const W = new Uint32Array(64);

/** SHA-256 of `bytes` (a Uint8Array): 32 bytes. */
export function sha256(bytes) {
  const len = bytes.length;
  const blocks = new Uint8Array(((len + 9 + 63) >> 6) << 6);
  blocks.set(bytes);
  blocks[len] = 0x80;
  const view = new DataView(blocks.buffer);
  view.setUint32(blocks.length - 8, Math.floor(len / 0x20000000));
  view.setUint32(blocks.length - 4, (len << 3) >>> 0);
  const h = new Uint32Array([
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
  ]);
  for (let off = 0; off < blocks.length; off += 64) {
    for (let i = 0; i < 16; i++) W[i] = view.getUint32(off + 4 * i);
    for (let i = 16; i < 64; i++) {
      const x = W[i - 15];
      const y = W[i - 2];
      const s0 = ((x >>> 7) | (x << 25)) ^ ((x >>> 18) | (x << 14)) ^ (x >>> 3);
      const s1 = ((y >>> 17) | (y << 15)) ^ ((y >>> 19) | (y << 13)) ^ (y >>> 10);
      W[i] = (W[i - 16] + s0 + W[i - 7] + s1) | 0;
    }
    let [a, b, c, d, e, f, g, hh] = h;
    for (let i = 0; i < 64; i++) {
      const s1 = ((e >>> 6) | (e << 26)) ^ ((e >>> 11) | (e << 21)) ^ ((e >>> 25) | (e << 7));
      const ch = (e & f) ^ (~e & g);
      const t1 = (hh + s1 + ch + K[i] + W[i]) | 0;
      const s0 = ((a >>> 2) | (a << 30)) ^ ((a >>> 13) | (a << 19)) ^ ((a >>> 22) | (a << 10));
      const maj = (a & b) ^ (a & c) ^ (b & c);
      const t2 = (s0 + maj) | 0;
      hh = g;
      g = f;
      f = e;
      e = (d + t1) | 0;
      d = c;
      c = b;
      b = a;
      a = (t1 + t2) | 0;
    }
    h[0] += a;
    h[1] += b;
    h[2] += c;
    h[3] += d;
    h[4] += e;
    h[5] += f;
    h[6] += g;
    h[7] += hh;
  }
  const out = new Uint8Array(32);
  const ov = new DataView(out.buffer);
  for (let i = 0; i < 8; i++) ov.setUint32(4 * i, h[i]);
  return out;
}

const encoder = new TextEncoder();

export function utf8(text) {
  return encoder.encode(text);
}

export function hex(bytes) {
  let s = '';
  for (const b of bytes) s += b.toString(16).padStart(2, '0');
  return s;
}

/** The 16 bytes of a UUID written as text (any case, hyphenated). */
export function uuidBytes(uuid) {
  const h = uuid.replace(/-/g, '');
  if (!/^[0-9a-fA-F]{32}$/.test(h)) throw new Error(`not a UUID: ${uuid}`);
  const out = new Uint8Array(16);
  for (let i = 0; i < 16; i++) out[i] = parseInt(h.slice(2 * i, 2 * i + 2), 16);
  return out;
}

// Object keys sort as Rust sorts `String`s: by UTF-8 bytes, which is code
// point order (JavaScript's default sort compares UTF-16 units instead).
function byCodePoint(a, b) {
  const x = [...a];
  const y = [...b];
  const n = Math.min(x.length, y.length);
  for (let i = 0; i < n; i++) {
    const d = x[i].codePointAt(0) - y[i].codePointAt(0);
    if (d !== 0) return d;
  }
  return x.length - y.length;
}

const U64_END = 18446744073709551616; // 2^64
const I64_MIN = -9223372036854775808; // -2^63

/**
 * A number as serde_json writes it back after reading it from the
 * app's JSON: integers within u64/i64 as integers; anything else is an
 * f64, which serde_json (1.0.15x, through `zmij`) writes with the same
 * shortest digits as JavaScript but laid out differently: plain from
 * 10^-5 up to below 10^16 (`0.00001234`, `37.8`, `1e20` is `1e+20`),
 * exponents otherwise (`1e-6`, where JavaScript writes `0.000001`), and
 * `.0` after a whole f64. tests/tests/field_app.rs checks this against
 * the serde_json in Cargo.lock.
 */
export function numberText(x) {
  if (!Number.isFinite(x)) return 'null';
  if (Number.isInteger(x) && x >= I64_MIN && x < U64_END) return String(x);
  const [mantissa, exp] = Math.abs(x).toExponential().split('e');
  const digits = mantissa.replace('.', '');
  const len = digits.length;
  const kk = Number(exp) + 1; // 10^(kk-1) <= |x| < 10^kk
  const k = kk - len;
  let s;
  if (k >= 0 && kk <= 16) s = `${digits}${'0'.repeat(k)}.0`;
  else if (kk > 0 && kk <= 16) s = `${digits.slice(0, kk)}.${digits.slice(kk)}`;
  else if (kk > -5 && kk <= 0) s = `0.${'0'.repeat(-kk)}${digits}`;
  else {
    const e = kk - 1 >= 0 ? `e+${kk - 1}` : `e${kk - 1}`;
    s = len === 1 ? `${digits}${e}` : `${digits[0]}.${digits.slice(1)}${e}`;
  }
  return x < 0 ? `-${s}` : s;
}

/**
 * JSON text with object keys sorted at every depth and no spaces: core's
 * `canonical_json`. `JSON.stringify` escapes strings exactly as serde_json
 * does (the two-letter escapes, other controls as lowercase `\u00xx`,
 * nothing else); numbers go through `numberText`.
 */
export function canonicalJson(v) {
  if (typeof v === 'number') return numberText(v);
  if (v === null || typeof v !== 'object') return JSON.stringify(v);
  if (Array.isArray(v)) return `[${v.map(canonicalJson).join(',')}]`;
  const keys = Object.keys(v)
    .filter((k) => v[k] !== undefined)
    .sort(byCodePoint);
  return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson(v[k])}`).join(',')}}`;
}

function u64be(n) {
  const out = new Uint8Array(8);
  const view = new DataView(out.buffer);
  view.setUint32(0, Math.floor(n / 0x100000000));
  view.setUint32(4, n >>> 0);
  return out;
}

function u32be(n) {
  const out = new Uint8Array(4);
  new DataView(out.buffer).setUint32(0, n >>> 0);
  return out;
}

function concat(parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/**
 * A mutation's idempotency fingerprint (core `content_hash`): everything but
 * `id` and `base_seq`. 32 lowercase hex digits.
 */
export function contentHash(m) {
  const del = m.delete === undefined || m.delete === null ? 0 : m.delete ? 2 : 1;
  const bytes = concat([
    uuidBytes(m.record_id),
    new Uint8Array([0]),
    utf8(m.kind),
    new Uint8Array([0]),
    u64be(m.hlc.ms),
    u32be(m.hlc.c),
    uuidBytes(m.hlc.node),
    utf8(canonicalJson(m.set)),
    new Uint8Array([del]),
  ]);
  return hex(sha256(bytes).subarray(0, 16));
}

/**
 * A record's checksum term (core `record_digest`): the first 8 bytes of
 * SHA-256 of `"<id>:<seq>"`, as two unsigned 32-bit halves `[hi, lo]`.
 */
export function recordDigest(id, seq) {
  const d = sha256(utf8(`${id.toLowerCase()}:${seq}`));
  const view = new DataView(d.buffer);
  return [view.getUint32(0), view.getUint32(4)];
}

/** XOR of digests, as the checksum's text form: 16 lowercase hex digits. */
export function checksumText([hi, lo]) {
  return (hi >>> 0).toString(16).padStart(8, '0') + (lo >>> 0).toString(16).padStart(8, '0');
}
