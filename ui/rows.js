// Drawing lines into row elements: a pool of rows reused as the view scrolls, each
// showing its line number (a link), time, level and text with colours and search
// marks. Log text only ever reaches the page as textContent, never as markup.

import { afterCarriageReturn, parseAnsi, styleSpan, isStyled } from "./ansi.js";
import { describeSection } from "./sections.js";

/** Characters of one line drawn in its row. */
export const MAX_DRAWN = 16_384;

/** The row elements inside `box`, created as needed and reused. */
export class RowPool {
  #box;
  #rows = [];

  constructor(box) {
    this.#box = box;
  }

  /** Row `k` from the top of the drawn rows, created on first use. */
  row(k) {
    while (this.#rows.length <= k) {
      const row = document.createElement("div");
      row.className = "row";
      const ln = document.createElement("a");
      ln.className = "ln";
      const ts = document.createElement("span");
      ts.className = "ts";
      const lv = document.createElement("span");
      lv.className = "lv";
      const fold = document.createElement("span");
      fold.className = "fold";
      const tx = document.createElement("span");
      tx.className = "tx";
      const sum = document.createElement("span");
      sum.className = "sum";
      row.append(ln, ts, lv, fold, tx, sum);
      this.#box.append(row);
      this.#rows.push(row);
    }
    return this.#rows[k];
  }

  /** Hides every row from `k` on. */
  hideFrom(k) {
    for (let j = Math.max(k, 0); j < this.#rows.length; j++) this.#rows[j].hidden = true;
  }
}

/**
 * Draws `line` (`{pos, level, out, time}`, index `i` in the store) into `row`.
 * `lit`: inside the linked range; `current`: the selected search match;
 * `searchVersion` and `ranges(text)`: the query's version and where it matches
 * (null when there is no query); `timeMode` and `timeOf(i, line)`: how times are
 * shown and the line's `{text, title, gap}` (time.js `describeTime`); `section`: how
 * the line sits among sections (`sectionOf` below).
 * A row whose line and marks are unchanged is left alone.
 */
export function fillRow(row, i, line, { lit, current, searchVersion, ranges, timeMode, timeOf, section }) {
  const number = line.pos + 1;
  // Everything the row shows that can change without its line changing.
  const stamp = `${i}|${lit}|${searchVersion}|${current}|${timeMode}|${section.stamp}`;
  row.hidden = false;
  if (row.dataset.stamp === stamp) return;
  row.dataset.stamp = stamp;
  row.dataset.line = String(number);
  const [ln, ts, lv, fold, tx, sum] = row.children;
  drawSection(row, fold, sum, section);
  ln.textContent = String(number);
  ln.href = "#L" + number;
  ln.setAttribute("aria-label", "line " + number);
  const time = timeOf(i, line);
  ts.textContent = time.text;
  ts.title = time.title;
  // A long pause is marked in the gutter, whether or not times are shown.
  row.classList.toggle("gap", time.gap !== null);
  ln.title = time.gap === null ? "" : `${time.gap} after the line before`;
  const level = line.level.toLowerCase();
  lv.textContent = level.slice(0, 5).toUpperCase();
  lv.className = "lv lv-" + (/^[a-z]+$/.test(level) ? level : "other");
  row.classList.toggle("highlighted", lit);
  row.classList.toggle("current-match", current);
  drawText(tx, line.out, ranges);
}

/**
 * How line `pos` sits among the sections of `index` (sections.js), folded as `folds`
 * says: `{indent, head, stamp}` — `indent` in steps (0 when the stream has no
 * sections), `head` the section it opens (`{k, collapsed, outcome, text}`) or null.
 */
export function sectionOf(index, folds, pos) {
  if (!index.list.length) return { indent: 0, head: null, stamp: "" };
  const k = index.headAt(pos);
  if (k === undefined) {
    const indent = index.depthAt(pos) + 1;
    return { indent, head: null, stamp: String(indent) };
  }
  const s = index.list[k];
  const { outcome, text } = describeSection(s);
  const collapsed = folds.collapsed(s);
  return { indent: s.depth + 1, head: { k, collapsed, outcome, text }, stamp: `${s.depth}|${k}|${collapsed}|${text}` };
}

/** The fold toggle (indented by nesting) and the header's summary of a section's first line. */
function drawSection(row, fold, sum, { indent, head }) {
  fold.style.width = indent ? `${indent * 2}ch` : "";
  fold.textContent = head ? (head.collapsed ? "▸" : "▾") : "";
  row.classList.toggle("section-head", Boolean(head));
  if (head) {
    row.dataset.section = String(head.k);
    row.dataset.outcome = head.outcome;
    row.dataset.collapsed = String(head.collapsed);
    fold.setAttribute("role", "button");
    fold.setAttribute("aria-expanded", String(!head.collapsed));
    fold.title = head.collapsed ? "Show this section's lines" : "Fold this section";
    sum.textContent = head.text;
    sum.className = "sum outcome-" + head.outcome;
  } else {
    delete row.dataset.section;
    delete row.dataset.outcome;
    delete row.dataset.collapsed;
    fold.removeAttribute("role");
    fold.removeAttribute("aria-expanded");
    fold.title = "";
    sum.textContent = "";
    sum.className = "sum";
  }
}

/** Styled spans for the text, with the `ranges(text)` it answers (if any) in <mark>. */
function drawText(el, out, ranges) {
  el.replaceChildren();
  // A line of megabytes (or of millions of colour codes) would freeze the tab: a row
  // shows its start; the downloads have it whole.
  // Cut what the line shows: after a progress bar's carriage returns, not before.
  const shown = afterCarriageReturn(out);
  const cut = shown.length > MAX_DRAWN;
  const segments = parseAnsi(cut ? shown.slice(0, MAX_DRAWN) : shown);
  const marks = ranges ? ranges(segments.map((s) => s.text).join("")) : [];
  let offset = 0;
  let r = 0;
  for (const seg of segments) {
    const parent = isStyled(seg.style) ? document.createElement("span") : el;
    if (parent !== el) {
      styleSpan(parent, seg.style);
      el.append(parent);
    }
    let at = 0;
    while (at < seg.text.length) {
      while (r < marks.length && marks[r][1] <= offset + at) r++;
      const range = marks[r];
      if (!range || range[0] >= offset + seg.text.length) {
        parent.append(seg.text.slice(at));
        break;
      }
      const start = Math.max(range[0] - offset, at);
      if (start > at) parent.append(seg.text.slice(at, start));
      const end = Math.min(range[1] - offset, seg.text.length);
      const mark = document.createElement("mark");
      mark.textContent = seg.text.slice(start, end);
      parent.append(mark);
      at = end;
    }
    offset += seg.text.length;
  }
  if (cut) {
    const more = document.createElement("span");
    more.className = "cut";
    more.textContent = ` … ${(shown.length - MAX_DRAWN).toLocaleString("en")} more characters (download the log for the whole line)`;
    el.append(more);
  }
}
