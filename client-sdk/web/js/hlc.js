// Hybrid logical clocks (contract §5), as core's `hlc.rs`: a timestamp
// `{ms, c, node}` orders by `ms`, then `c`, then `node` as a string. Node
// ids are lowercase hyphenated UUIDs, so JavaScript's string order (UTF-16
// units, all ASCII here) is the contract's. Checked against core by
// tests/tests/field_app.rs.

const C_MAX = 0xffffffff;

/** -1, 0 or 1: the order of two timestamps. */
export function compareHlc(a, b) {
  if (a.ms !== b.ms) return a.ms < b.ms ? -1 : 1;
  if (a.c !== b.c) return a.c < b.c ? -1 : 1;
  const x = a.node.toLowerCase();
  const y = b.node.toLowerCase();
  return x < y ? -1 : x > y ? 1 : 0;
}

/**
 * A clock that never goes back. Holds only `(ms, c)`, stored as `[ms, c]`
 * in the device's metadata; whoever stamps adds the node.
 */
export class HlcClock {
  constructor(parts = [0, 0]) {
    this.ms = parts[0];
    this.c = parts[1];
  }

  parts() {
    return [this.ms, this.c];
  }

  /** Next stamp for a local event at wall time `nowMs`. */
  next(nowMs, node) {
    if (nowMs > this.ms) {
      this.ms = nowMs;
      this.c = 0;
    } else if (this.c === C_MAX) {
      // The counter is exhausted: borrow a millisecond from the future.
      this.ms += 1;
      this.c = 0;
    } else {
      this.c += 1;
    }
    return { ms: this.ms, c: this.c, node };
  }

  /** Advances past a timestamp received from elsewhere. */
  observe(h) {
    if (h.ms > this.ms || (h.ms === this.ms && h.c > this.c)) {
      this.ms = h.ms;
      this.c = h.c;
    }
  }

  /** Advances to at least `{ms, c: 0}` (a server's reported time). */
  observeMs(ms) {
    if (ms > this.ms) {
      this.ms = ms;
      this.c = 0;
    }
  }
}

let lastV7Ms = 0;
let lastV7Seq = 0;

/**
 * A UUID v7: 48 bits of Unix ms, then randomness, so ids sort in creation
 * order. Within one millisecond a counter in the random bits keeps them
 * increasing. Uses `getRandomValues`, which (unlike `randomUUID`) works
 * outside secure contexts too.
 */
export function uuidv7(nowMs = Date.now()) {
  const b = new Uint8Array(16);
  crypto.getRandomValues(b);
  if (nowMs <= lastV7Ms) {
    nowMs = lastV7Ms;
    lastV7Seq += 1;
    if (lastV7Seq > 0xfff) {
      lastV7Ms += 1;
      nowMs = lastV7Ms;
      lastV7Seq = 0;
    }
  } else {
    lastV7Ms = nowMs;
    lastV7Seq = 0;
  }
  const hi = Math.floor(nowMs / 0x100000000);
  const lo = nowMs >>> 0;
  b[0] = (hi >>> 8) & 0xff;
  b[1] = hi & 0xff;
  b[2] = (lo >>> 24) & 0xff;
  b[3] = (lo >>> 16) & 0xff;
  b[4] = (lo >>> 8) & 0xff;
  b[5] = lo & 0xff;
  // 12 bits after the version: a counter within the millisecond.
  b[6] = 0x70 | ((lastV7Seq >>> 8) & 0x0f);
  b[7] = lastV7Seq & 0xff;
  b[8] = 0x80 | (b[8] & 0x3f);
  let s = '';
  for (let i = 0; i < 16; i++) {
    if (i === 4 || i === 6 || i === 8 || i === 10) s += '-';
    s += b[i].toString(16).padStart(2, '0');
  }
  return s;
}
