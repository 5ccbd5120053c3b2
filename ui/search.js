// Search over a LineStore: which lines contain the query (case-insensitive, in the
// text as shown: escape sequences stripped), and which match is the current one.
// No DOM: the page shows what this finds.

import { stripAnsi } from "./ansi.js";

/** Lines examined between yields to the event loop, so the page stays responsive. */
export const SEARCH_SLICE = 50_000;

const escapeRegExp = (s) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
const nextTask = () => new Promise((r) => setTimeout(r, 0));

/**
 * A search over `store`. `slice` lines are examined between awaits of `pause()`.
 *
 * One pass runs at a time: `run` replaces the query and scans the lines held; lines
 * added meanwhile wait for the pass to end, then `catchUp` examines them (and every
 * line added later), so matches stay in ascending order with no line examined twice.
 */
export function createSearch(store, { slice = SEARCH_SLICE, pause = nextTask } = {}) {
  let query = "";
  let lower = "";
  let rawPattern = null; // fast pre-filter over the raw JSON
  let matches = []; // line indexes, ascending
  let searched = 0; // lines examined for the current query
  let scanning = false; // a pass is under way: catchUp waits for it
  let current = null; // index into matches of the selected match
  let runs = 0; // passes started; a pass that sees a newer one stops
  let version = 0; // changes with the query: rows showing its marks redraw

  function lineMatches(i) {
    // The JSON-escaped query can only be absent from the raw row if the text lacks it,
    // so most rows are rejected without parsing — unless the row spells characters in
    // another way than JSON.stringify does (`\u` escapes: colour codes, non-ASCII from
    // some encoders; `\/`): those rows are always parsed.
    const raw = store.raw(i);
    if (!/\\[u/]/.test(raw) && !rawPattern.test(raw)) return false;
    return stripAnsi(store.parsed(i).out).toLowerCase().includes(lower);
  }

  function reset(q) {
    query = q;
    lower = q.toLowerCase();
    rawPattern = q ? new RegExp(escapeRegExp(JSON.stringify(q).slice(1, -1)), "i") : null;
    matches = [];
    current = null;
    searched = 0;
    version++;
    return ++runs;
  }

  /** Examines the lines added since the last look; true when it found new matches. */
  function catchUp() {
    if (!query || scanning) return false;
    const before = matches.length;
    for (; searched < store.length; searched++) if (lineMatches(searched)) matches.push(searched);
    return matches.length !== before;
  }

  return {
    /** The query of the current pass ("" for none). */
    get query() {
      return query;
    },
    /** Line indexes that match, ascending (grows as lines arrive; replaced by `run`). */
    get matches() {
      return matches;
    },
    /** Index into `matches` of the selected match, or null before one is selected. */
    get current() {
      return current;
    },
    /** Changes whenever the query does. */
    get version() {
      return version;
    },
    /** Whether a pass is still under way. */
    get scanning() {
      return scanning;
    },

    /** Ends any pass and forgets the query. */
    clear() {
      reset("");
      scanning = false;
    },

    /**
     * Searches every line held for `q`. Resolves true when the pass finished, false
     * when a newer `run` or `clear` replaced it. The query and the empty match list
     * are in place as soon as this is called.
     */
    async run(q) {
      const run = reset(q);
      if (!q) {
        scanning = false;
        return true;
      }
      scanning = true;
      const total = store.length;
      for (let i = 0; i < total; i++) {
        if (lineMatches(i)) matches.push(i);
        if (i % slice === slice - 1) {
          await pause();
          if (run !== runs) return false;
        }
      }
      searched = total;
      scanning = false;
      catchUp();
      return true;
    },

    catchUp,

    /** The selected match's line index, or null. */
    currentLine() {
      return current === null ? null : matches[current];
    },

    /** Selects match `k` (wrapping around either end); its line index, or null if none. */
    select(k) {
      if (!matches.length) return null;
      current = ((k % matches.length) + matches.length) % matches.length;
      return matches[current];
    },

    /**
     * Selects the match `delta` after the current one (before, when negative). With
     * none selected yet, the next is the first and the previous the last.
     */
    move(delta) {
      if (current === null) return this.select(delta > 0 ? delta - 1 : delta);
      return this.select(current + delta);
    },

    /** Index into `matches` of the first match at or after line `line` (0 if none). */
    firstFrom(line) {
      const k = matches.findIndex((i) => i >= line);
      return k < 0 ? 0 : k;
    },

    /** `[start, end)` offsets of every match of the query in `text`. */
    ranges(text) {
      const out = [];
      if (!lower) return out;
      const t = text.toLowerCase();
      for (let at = t.indexOf(lower); at >= 0; at = t.indexOf(lower, at + lower.length)) out.push([at, at + lower.length]);
      return out;
    },
  };
}
