// The line store: every line of one stream as its raw JSON text, in `pos` order.
//
// Lines are kept as their raw JSON text in plain arrays and parsed only when a row
// is drawn or searched, so a 1 000 000-line log costs one string per line, not one
// object graph per line.

/** Parsed lines kept at most; drawn rows are all that need to stay parsed. */
const PARSED_CACHE = 4000;

/** The fields the viewer shows of one raw line; a line that is not JSON says so. */
export function parseLine(raw, pos) {
  try {
    const o = JSON.parse(raw);
    return { pos, level: String(o.level || "info"), out: String(o.out ?? ""), time: String(o.time || "") };
  } catch {
    return { pos, level: "error", out: "(malformed line) " + raw, time: "" };
  }
}

/**
 * The `pos` field of a raw line, found without parsing it (an archive row carries its
 * `pos`; an SSE event normally carries it as its id), or `fallback`.
 */
export function posOf(raw, fallback) {
  const at = raw.indexOf('"pos":');
  if (at < 0) return fallback;
  const n = parseInt(raw.slice(at + 6, at + 30), 10);
  return Number.isFinite(n) ? n : fallback;
}

/** Lines of one stream in ascending `pos`, each added once. */
export class LineStore {
  #raws = []; // raw JSON of each line, in pos order
  #poss = []; // pos of each line
  #parsed = new Map(); // index -> parsed line, for drawn and searched rows

  /** Number of lines held. */
  get length() {
    return this.#raws.length;
  }

  /** `pos` of the last line, or null while there is none. */
  get lastPos() {
    return this.#poss.length ? this.#poss[this.#poss.length - 1] : null;
  }

  /**
   * Adds a line after the last one. A `pos` at or before the last is a replay (after
   * a reconnect) and is ignored: returns false.
   */
  add(raw, pos) {
    if (this.#poss.length && pos <= this.#poss[this.#poss.length - 1]) return false;
    this.#raws.push(raw);
    this.#poss.push(pos);
    return true;
  }

  /** Raw JSON text of line `i` (an index, not a `pos`). */
  raw(i) {
    return this.#raws[i];
  }

  /** `pos` of line `i`. */
  pos(i) {
    return this.#poss[i];
  }

  /** Index of the line with `pos`, or of the first line after it (`length` if none). */
  indexOfPos(pos) {
    let lo = 0;
    let hi = this.#poss.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.#poss[mid] < pos) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /** Line `i` parsed (`{pos, level, out, time}`), cached for the rows on screen. */
  parsed(i) {
    let p = this.#parsed.get(i);
    if (p) return p;
    p = parseLine(this.#raws[i], this.#poss[i]);
    if (this.#parsed.size > PARSED_CACHE) this.#parsed = new Map();
    this.#parsed.set(i, p);
    return p;
  }

  /** Drops the parsed lines (after a pass over the whole log, such as a download). */
  forgetParsed() {
    this.#parsed = new Map();
  }

  /** `f(raw, i)` for every line, in order, as an array. */
  map(f) {
    return this.#raws.map(f);
  }
}
