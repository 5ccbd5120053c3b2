// Sections of a stream as the service indexes them (`GET /stream/sections`), and
// which of them are folded. Pure: no DOM, no I/O.
//
// Folding follows how a section ended, not how it began: a section that succeeded
// is folded, one that failed, was cancelled or ended without a known outcome is
// open, and one still running is open (its lines are what a reader watches). The
// writer's own hint (GitLab `collapsed=`, Buildkite `---`/`+++`) is not used: it
// was written before the outcome was known. A reader's own choice for a section
// (kept by its first `pos`, so it survives the index being fetched again) wins,
// and "expand all"/"collapse all" reset every choice to one answer.

import { duration } from "./time.js";

/**
 * Whether raw line JSON may hold a section marker (GitHub, GitLab, Buildkite), checked
 * without parsing it: the page asks the service for the index again only then. False
 * positives cost one request; a marker missed is picked up at the next fetch.
 */
export function mayBeMarker(raw) {
  return (
    raw.includes("::group::") ||
    raw.includes("::endgroup") ||
    raw.includes("section_start:") ||
    raw.includes("section_end:") ||
    /"out":"(?:--- |\+\+\+ |~~~ |\^\^\^ \+\+\+)/.test(raw)
  );
}

/** How many items of `sorted` (ascending by `key`) have a key at or below `x`. */
export function countAtMost(sorted, x, key = (v) => v) {
  let lo = 0;
  let hi = sorted.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (key(sorted[mid]) <= x) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** The index answered by the service, with the look-ups the page needs. */
export class SectionIndex {
  /** `answer`: the JSON of `GET /stream/sections` (`{open, sections, ledger?, …}`). */
  constructor(answer = { open: true, sections: [] }) {
    this.answer = answer;
    /** Every section, in the order they opened (ascending `first_pos`). */
    this.list = answer.sections || [];
    this.#heads = new Map(this.list.map((s, k) => [s.first_pos, k]));
    this.#failedChild = new Set();
    for (const s of this.list) {
      if (s.outcome === "failure" && s.parent !== undefined && s.parent !== null) this.#failedChild.add(s.parent);
    }
  }

  #heads;
  #failedChild;

  /** Index (in `list`) of the section whose first line has `pos`, or undefined. */
  headAt(pos) {
    return this.#heads.get(pos);
  }

  /** Whether section `s` holds `pos` (an open section holds everything after its start). */
  static holds(s, pos) {
    return s.first_pos <= pos && (s.last_pos === undefined || s.last_pos === null || pos <= s.last_pos);
  }

  /** Indexes of the sections holding `pos`, innermost first. */
  containing(pos) {
    // The last section to start at or before `pos` is the innermost holding it or a
    // descendant of it (sections nest), so its parent chain has every one.
    const lo = countAtMost(this.list, pos, (s) => s.first_pos);
    const out = [];
    for (let k = lo - 1; k !== undefined && k !== null && k >= 0; k = this.list[k].parent) {
      if (SectionIndex.holds(this.list[k], pos)) out.push(k);
    }
    return out;
  }

  /** Depth of the innermost section holding `pos` plus one (0 outside every section). */
  depthAt(pos) {
    const [k] = this.containing(pos);
    return k === undefined ? 0 : this.list[k].depth + 1;
  }

  /**
   * The section a reader of a failed stream wants first: the earliest failed one with no
   * failed section inside it (where the failure happened, not the job around it), or null.
   */
  firstFailure() {
    for (let k = 0; k < this.list.length; k++) {
      if (this.list[k].outcome === "failure" && !this.#failedChild.has(k)) return k;
    }
    return null;
  }

  /**
   * Where the next look at the index may start (`?since=`): the first section still open,
   * or the count of sections when none is — a closed section never changes.
   */
  resumeAt() {
    const k = this.list.findIndex((s) => s.last_pos === undefined || s.last_pos === null);
    return k < 0 ? this.list.length : k;
  }

  /**
   * The whole answer from this index and a newer `answer` to `?since=`: the sections before
   * its `from` kept, the rest replaced (an answer without `from` is whole already).
   */
  merge(answer) {
    const from = answer.from || 0;
    if (!from) return answer;
    return { ...answer, from: 0, sections: this.list.slice(0, from).concat(answer.sections || []) };
  }

  /** The `n` longest closed sections, longest first (ties: the earlier first). */
  slowest(n) {
    return this.list
      .map((s, k) => k)
      .filter((k) => Number.isFinite(this.list[k].duration_ms))
      .sort((a, b) => this.list[b].duration_ms - this.list[a].duration_ms || a - b)
      .slice(0, n);
  }
}

/** A section's outcome as the page names it: success, failure, cancelled, unknown or running. */
export const outcomeOf = (s) => s.outcome || "running";

/** What a section's header says after its name: `{outcome, text}` (outcome, duration, lines). */
export function describeSection(s) {
  const outcome = outcomeOf(s);
  const parts = [{ success: "✓ success", failure: "✗ failed", cancelled: "⊘ cancelled", unknown: "? unknown", running: "… running" }[outcome]];
  if (Number.isFinite(s.duration_ms)) parts.push(duration(s.duration_ms));
  if (Number.isFinite(s.lines)) parts.push(`${s.lines.toLocaleString("en")} ${s.lines === 1 ? "line" : "lines"}`);
  return { outcome, text: parts.join(" · ") };
}

/** Which sections are folded: by outcome, unless the reader chose otherwise. */
export class FoldState {
  #choice = new Map(); // first_pos -> collapsed, the reader's own choices
  #all = null; // null, or the answer "expand all"/"collapse all" gave every section

  /** Whether section `s` is folded. */
  collapsed(s) {
    const chosen = this.#choice.get(s.first_pos);
    if (chosen !== undefined) return chosen;
    if (this.#all !== null) return this.#all;
    return s.outcome === "success";
  }

  /** The reader folds (`true`) or opens section `s`. */
  set(s, collapsed) {
    this.#choice.set(s.first_pos, collapsed);
  }

  /** Every section folded (`true`) or open, the reader's earlier choices forgotten. */
  setAll(collapsed) {
    this.#choice.clear();
    this.#all = collapsed;
  }

  /** Opens every section holding `pos` except one that starts there (its header shows). */
  reveal(index, pos) {
    let changed = false;
    for (const k of index.containing(pos)) {
      const s = index.list[k];
      if (s.first_pos < pos && this.collapsed(s)) {
        this.set(s, false);
        changed = true;
      }
    }
    return changed;
  }

  /**
   * The `pos` ranges hidden: `[from, to]` (both included, `to` Infinity for a folded
   * section still open), ascending and disjoint — the lines after the header of each
   * folded section that no folded section holds.
   */
  hiddenRanges(index) {
    const out = [];
    let end = -1; // last pos hidden so far
    for (const s of index.list) {
      if (s.first_pos <= end) continue; // inside a folded section already
      if (!this.collapsed(s)) continue;
      const last = s.last_pos === undefined || s.last_pos === null ? Infinity : s.last_pos;
      if (last <= s.first_pos) continue; // a one-line section: nothing to hide
      out.push([s.first_pos + 1, last]);
      end = last;
    }
    return out;
  }
}

/**
 * A view (view.js) of `store` without the lines in `ranges` (`pos` ranges from
 * `FoldState#hiddenRanges`). The ranges are turned into line indexes again whenever
 * the store has grown, so lines arriving inside a folded section stay hidden. Cost:
 * O(ranges · log lines) per growth, O(log ranges) per look-up — nothing per line.
 */
export function foldedLines(store, ranges) {
  let synced = -1;
  let starts = []; // first hidden index of each range
  let ends = []; // one past its last hidden index
  let rowStarts = []; // the row range k's first line would have: starts[k] - before[k]
  let before = []; // lines hidden by the ranges before k
  let hidden = 0;
  const sync = () => {
    if (synced === store.length) return;
    synced = store.length;
    starts = [];
    ends = [];
    rowStarts = [];
    before = [];
    hidden = 0;
    for (const [from, to] of ranges) {
      const a = store.indexOfPos(from);
      const b = to === Infinity ? store.length : store.indexOfPos(to + 1);
      if (b <= a) continue;
      starts.push(a);
      ends.push(b);
      before.push(hidden);
      rowStarts.push(a - hidden);
      hidden += b - a;
    }
  };
  return {
    whole: true,
    get count() {
      sync();
      return store.length - hidden;
    },
    lineAt(v) {
      sync();
      const k = countAtMost(rowStarts, v); // ranges whose row is at or before v
      return k === 0 ? v : v + before[k - 1] + (ends[k - 1] - starts[k - 1]);
    },
    /** Row of line `i`; a hidden line answers the row of its section's header. */
    rowOf(i) {
      sync();
      const k = countAtMost(starts, i) - 1; // the last range starting at or before i
      if (k < 0) return i;
      if (i < ends[k]) return Math.max(0, rowStarts[k] - 1);
      return i - before[k] - (ends[k] - starts[k]);
    },
    /** Whether line `i` is hidden. */
    hides(i) {
      sync();
      const k = countAtMost(starts, i) - 1; // the last range starting at or before i
      return k >= 0 && i < ends[k];
    },
  };
}

/**
 * What the header says about the ledger of a stream (`answer.ledger`): `{state, text,
 * reasons}`, state `open` (no ledger yet), `complete` or `incomplete`; `reasons` one
 * sentence each. Line numbers are shown as the viewer numbers lines (`pos` + 1).
 */
export function describeLedger(answer) {
  const ledger = answer && answer.ledger;
  if (!ledger) return { state: "open", text: "", reasons: [] };
  const n = (x) => Number(x).toLocaleString("en");
  const span = ledger.first_pos === undefined || ledger.first_pos === null ? "no lines" : `lines ${n(ledger.first_pos + 1)}–${n(ledger.last_pos + 1)}`;
  if (ledger.complete) {
    const text =
      ledger.basis === "contiguity"
        ? `complete: ${span}, no gap (the writer stated no totals; contiguity checked)`
        : `complete: ${span}, no gap, totals and digest match the writer's`;
    return { state: "complete", text, reasons: [] };
  }
  const reasons = (ledger.reasons || []).map((r) => {
    switch (r.reason) {
      case "gap":
        return r.from === r.to ? `line ${n(r.from + 1)} missing` : `lines ${n(r.from + 1)}–${n(r.to + 1)} missing`;
      case "dropped":
        return `${n(r.lines)} ${r.lines === 1 ? "line" : "lines"} dropped by the writer` + (r.at && r.at.length ? ` (at line ${r.at.map((p) => n(p + 1)).join(", ")})` : "");
      case "never_closed":
        return "the writer never closed the stream";
      case "lines":
        return `the writer stated ${n(r.stated)} lines, the service holds ${n(r.held)}`;
      case "bytes":
        return `the writer stated ${n(r.stated)} bytes, the service holds ${n(r.held)}`;
      case "digest":
        return "the text differs from the writer's digest";
      default:
        return `incomplete (${String(r.reason)})`;
    }
  });
  return { state: "incomplete", text: `incomplete: ${reasons.join("; ")}`, reasons };
}
