// One stream: follow it live over SSE (backfill, then live, resuming with
// Last-Event-ID after a drop), or show its archive; render only the visible rows.
//
// Lines are kept as their raw JSON text in plain arrays and parsed only when a row
// is drawn or searched, so a 1 000 000-line log costs one string per line, not one
// object graph per line, and the DOM never holds more than a screenful of rows.

import { takeToken, takeAccount, authHeaders, errorMessage, showError, isAuthFailure, linkRefusal } from "./common.js";
import { afterCarriageReturn, parseAnsi, stripAnsi, styleSpan, isStyled } from "./ansi.js";

const ROW_HEIGHT = 18; // px; must match .row in viewer.css
// Browsers cap element heights (Chrome ~33.5M px, Firefox ~17.9M px). Beyond this,
// scroll positions map onto lines proportionally instead of one pixel per pixel.
const MAX_SPACER = 8_000_000;
const SEARCH_SLICE = 50_000; // lines searched between yields to the event loop
const MAX_DRAWN = 16_384; // characters of one line drawn in its row

const $ = (id) => document.getElementById(id);
const viewport = $("viewport");
const spacer = $("spacer");
const rowsBox = $("rows");
const statusEl = $("status");
const errorBox = $("error");
const searchInput = $("search");
const matchCount = $("match-count");
const followBox = $("follow");
const tsBox = $("timestamps");
const filterBox = $("filter");

const params = new URL(location.href).searchParams;
takeToken();
const account = takeAccount();
const key = params.get("key");

// --- line store ------------------------------------------------------------
const raws = []; // raw JSON of each line, in pos order
const poss = []; // pos of each line
let parsedCache = new Map(); // index -> parsed line, for drawn rows only

function parsed(i) {
  let p = parsedCache.get(i);
  if (p) return p;
  try {
    const o = JSON.parse(raws[i]);
    p = { pos: poss[i], level: String(o.level || "info"), out: String(o.out ?? ""), time: String(o.time || "") };
  } catch {
    p = { pos: poss[i], level: "error", out: "(malformed line) " + raws[i], time: "" };
  }
  if (parsedCache.size > 4000) parsedCache = new Map();
  parsedCache.set(i, p);
  return p;
}

function posOf(raw, fallback) {
  const at = raw.indexOf('"pos":');
  if (at < 0) return fallback;
  const n = parseInt(raw.slice(at + 6, at + 30), 10);
  return Number.isFinite(n) ? n : fallback;
}

/** Index of the line with `pos`, or of the first line after it. */
function indexOfPos(pos) {
  let lo = 0;
  let hi = poss.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (poss[mid] < pos) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

function addLine(raw, pos) {
  if (poss.length && pos <= poss[poss.length - 1]) return; // replay after a reconnect
  raws.push(raw);
  poss.push(pos);
  scheduleRender();
}

// --- view: all lines, or only matches when filtering --------------------------
let view = null; // null = every line; else an array of line indexes
const viewCount = () => (view ? view.length : raws.length);
const lineAt = (v) => (view ? view[v] : v);

// --- virtual scrolling ---------------------------------------------------------
let renderQueued = false;
let programmaticTop = null; // the scrollTop we set last, until its scroll event
let highlight = null; // {from, to} line numbers (1-based, inclusive)
let pendingHash = null;

function scheduleRender() {
  if (renderQueued) return;
  renderQueued = true;
  requestAnimationFrame(() => {
    renderQueued = false;
    onNewLines();
    render();
  });
}

function geometry() {
  const n = viewCount();
  const viewH = viewport.clientHeight;
  const full = n * ROW_HEIGHT;
  const spacerH = Math.min(full, MAX_SPACER);
  return { n, viewH, full, spacerH, scaled: full > MAX_SPACER };
}

/** The fractional view index at the top of the viewport. */
function topIndex(g) {
  const top = viewport.scrollTop;
  if (!g.scaled) return top / ROW_HEIGHT;
  const maxScroll = Math.max(1, g.spacerH - g.viewH);
  return (top / maxScroll) * Math.max(0, g.n - g.viewH / ROW_HEIGHT);
}

/** Sizes the spacer for the current line count (before any scroll that needs it). */
function syncSpacer(g = geometry()) {
  const h = g.spacerH + "px";
  if (spacer.style.height !== h) spacer.style.height = h;
  return g;
}

function setScrollTop(top) {
  programmaticTop = Math.round(top);
  viewport.scrollTop = top;
}

/** Scrolls so view index `v` is visible (centred when `centre`). */
function scrollToView(v, centre = true) {
  const g = syncSpacer();
  const rowsOnScreen = g.viewH / ROW_HEIGHT;
  const target = centre ? Math.max(0, v - rowsOnScreen / 2 + 0.5) : v;
  if (!g.scaled) setScrollTop(target * ROW_HEIGHT);
  else setScrollTop((target / Math.max(1, g.n - rowsOnScreen)) * (g.spacerH - g.viewH));
  render();
}

function scrollToBottom() {
  const g = syncSpacer();
  setScrollTop(Math.max(0, g.spacerH - g.viewH));
}

let gutterDigits = 0;
const pool = [];
function rowElement(k) {
  while (pool.length <= k) {
    const row = document.createElement("div");
    row.className = "row";
    const ln = document.createElement("a");
    ln.className = "ln";
    const ts = document.createElement("span");
    ts.className = "ts";
    const lv = document.createElement("span");
    lv.className = "lv";
    const tx = document.createElement("span");
    tx.className = "tx";
    row.append(ln, ts, lv, tx);
    rowsBox.append(row);
    pool.push(row);
  }
  return pool[k];
}

function render() {
  const g = syncSpacer();
  // Line-number gutter as wide as the largest number (no clipping at 1 000 000).
  const digits = String(poss.length ? poss[poss.length - 1] + 1 : 1).length;
  if (digits !== gutterDigits) {
    gutterDigits = digits;
    viewport.style.setProperty("--gutter", Math.max(4, digits) + 1 + "ch");
  }
  const first = Math.max(0, Math.floor(topIndex(g)));
  const frac = topIndex(g) - first;
  const count = Math.min(g.n - first, Math.ceil(g.viewH / ROW_HEIGHT) + 2);
  rowsBox.style.transform = `translateY(${viewport.scrollTop - frac * ROW_HEIGHT}px)`;
  for (let k = 0; k < Math.max(count, 0); k++) fillRow(rowElement(k), lineAt(first + k));
  if (count > 0) markOnce("runlog:first-line");
  for (let k = Math.max(count, 0); k < pool.length; k++) pool[k].hidden = true;
  updateStatus();
}

// User Timing marks, so the time to first line and to a linked line can be measured
// (bench/viewer.sh reads them); they cost nothing when nobody looks.
const marked = new Set();
function markOnce(name) {
  if (marked.has(name)) return;
  marked.add(name);
  performance.mark(name);
}

function fillRow(row, i) {
  const line = parsed(i);
  const number = line.pos + 1;
  const lit = Boolean(highlight && number >= highlight.from && number <= highlight.to);
  // Everything the row shows that can change without its line changing.
  const stamp = `${i}|${lit}|${searchGeneration}|${i === currentMatchLine()}`;
  row.hidden = false;
  if (row.dataset.stamp === stamp) return;
  row.dataset.stamp = stamp;
  row.dataset.line = String(number);
  const [ln, ts, lv, tx] = row.children;
  ln.textContent = String(number);
  ln.href = "#L" + number;
  ln.setAttribute("aria-label", "line " + number);
  ts.textContent = line.time ? line.time.slice(11, 23) : "";
  ts.title = line.time;
  const level = line.level.toLowerCase();
  lv.textContent = level.slice(0, 5).toUpperCase();
  lv.className = "lv lv-" + (/^[a-z]+$/.test(level) ? level : "other");
  row.classList.toggle("highlighted", lit);
  if (lit) markOnce("runlog:linked-line-shown");
  row.classList.toggle("current-match", i === currentMatchLine());
  drawText(tx, line.out);
}

/** Styled spans for the text, with search matches wrapped in <mark>. */
function drawText(el, out) {
  el.replaceChildren();
  // A line of megabytes (or of millions of colour codes) would freeze the tab: a row
  // shows its start; the downloads have it whole.
  // Cut what the line shows: after a progress bar's carriage returns, not before.
  const shown = afterCarriageReturn(out);
  const cut = shown.length > MAX_DRAWN;
  const segments = parseAnsi(cut ? shown.slice(0, MAX_DRAWN) : shown);
  const ranges = query ? matchRanges(segments.map((s) => s.text).join("")) : [];
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
      while (r < ranges.length && ranges[r][1] <= offset + at) r++;
      const range = ranges[r];
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

// --- live state, status ---------------------------------------------------------
let state = "connecting"; // connecting | live | reconnecting | closed | archived | error
function setState(s) {
  state = s;
  if (s === "closed" || s === "archived") markOnce("runlog:complete");
  document.body.dataset.state = s;
  updateStatus();
}

function updateStatus() {
  const n = raws.length.toLocaleString("en");
  const label = { connecting: "connecting…", live: "live", reconnecting: "reconnecting…", closed: "closed", archived: "archived", error: "error" }[state];
  statusEl.textContent = `${label} · ${n} ${raws.length === 1 ? "line" : "lines"}`;
}

// --- follow tail -------------------------------------------------------------------
function onNewLines() {
  searchNewLines();
  if (followBox.checked) scrollToBottom();
  applyPendingHash();
}

viewport.addEventListener("scroll", () => {
  const ours = programmaticTop !== null && Math.abs(viewport.scrollTop - programmaticTop) <= 1;
  programmaticTop = null;
  if (!ours) {
    const g = geometry();
    const atBottom = viewport.scrollTop + g.viewH >= g.spacerH - ROW_HEIGHT;
    // Scrolling up means reading: stop yanking the view to the end. Reaching the end
    // again while live means following again.
    if (!atBottom && followBox.checked) followBox.checked = false;
    else if (atBottom && !followBox.checked && state === "live") followBox.checked = true;
  }
  render();
});
followBox.addEventListener("change", () => {
  if (followBox.checked) scrollToBottom();
  render();
});
window.addEventListener("resize", () => render());

// --- line links: #L42, #L10-L20 -----------------------------------------------------
function parseHash() {
  const m = /^#L(\d+)(?:-L?(\d+))?$/.exec(location.hash);
  if (!m) return null;
  const a = Number(m[1]);
  const b = m[2] ? Number(m[2]) : a;
  return { from: Math.min(a, b), to: Math.max(a, b) };
}

function applyPendingHash() {
  if (!pendingHash) return;
  const idx = indexOfPos(pendingHash.from - 1);
  // Wait until the line has arrived (or the stream is complete).
  if (idx >= raws.length && !(state === "closed" || state === "archived")) return;
  highlight = pendingHash;
  pendingHash = null;
  followBox.checked = false;
  if (filterBox.checked) setFilter(false);
  scrollToView(Math.min(idx, Math.max(0, raws.length - 1)));
  document.body.dataset.highlighted = String(highlight.from);
}

window.addEventListener("hashchange", () => {
  pendingHash = parseHash();
  applyPendingHash();
  render();
});
rowsBox.addEventListener("click", (ev) => {
  const a = ev.target.closest("a.ln");
  if (!a || !ev.shiftKey || !highlight) return;
  // Shift-click extends the highlighted line into a range link.
  ev.preventDefault();
  const n = Number(a.closest(".row").dataset.line);
  const from = Math.min(highlight.from, n);
  const to = Math.max(highlight.from, n);
  location.hash = from === to ? `#L${from}` : `#L${from}-L${to}`;
});

// --- search ------------------------------------------------------------------------
let query = "";
let queryLower = "";
let rawPattern = null; // fast pre-filter over the raw JSON
let matches = []; // line indexes, ascending
let searched = 0; // lines examined for the current query
let current = -1; // index into matches
let searchGeneration = 0;
let searchRun = 0;
let searchTimer = 0;

const escapeRegExp = (s) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
const currentMatchLine = () => (current >= 0 ? matches[current] : -1);

function matchRanges(text) {
  const ranges = [];
  const lower = text.toLowerCase();
  for (let at = lower.indexOf(queryLower); at >= 0 && queryLower; at = lower.indexOf(queryLower, at + queryLower.length)) {
    ranges.push([at, at + queryLower.length]);
  }
  return ranges;
}

function lineMatches(i) {
  // The JSON-escaped query can only be absent from the raw row if the text lacks it,
  // so most rows are rejected without parsing — unless the row spells characters in
  // another way than JSON.stringify does (`\u` escapes: colour codes, non-ASCII from
  // some encoders; `\/`): those rows are always parsed.
  const raw = raws[i];
  if (!/\\[u/]/.test(raw) && !rawPattern.test(raw)) return false;
  return stripAnsi(parsed(i).out).toLowerCase().includes(queryLower);
}

function searchNewLines() {
  if (!query || searched < 0) return;
  const before = matches.length;
  for (; searched < raws.length; searched++) if (lineMatches(searched)) matches.push(searched);
  if (matches.length !== before) {
    if (view) view = matches;
    updateMatchCount();
  }
}

async function runSearch() {
  query = searchInput.value;
  queryLower = query.toLowerCase();
  matches = [];
  current = -1;
  searchGeneration++;
  // Its own counter: jumping to a match or toggling the filter redraws rows
  // (`searchGeneration`) but must not stop a search still under way.
  const run = ++searchRun;
  rawPattern = query ? new RegExp(escapeRegExp(JSON.stringify(query).slice(1, -1)), "i") : null;
  searched = -1; // live lines wait until this pass is done
  if (!query) {
    searched = 0;
    if (view) setFilter(true);
    updateMatchCount();
    render();
    return;
  }
  matchCount.textContent = "searching…";
  const total = raws.length;
  for (let i = 0; i < total; i++) {
    if (lineMatches(i)) matches.push(i);
    if (i % SEARCH_SLICE === SEARCH_SLICE - 1) {
      await new Promise((r) => setTimeout(r, 0)); // keep the page responsive
      if (run !== searchRun) return; // a newer query replaced this one
    }
  }
  searched = total;
  searchNewLines();
  if (filterBox.checked) setFilter(true);
  updateMatchCount();
  if (matches.length) jumpTo(firstMatchFromTop());
  else render();
}

function firstMatchFromTop() {
  const top = lineAt(Math.floor(topIndex(geometry())));
  const k = matches.findIndex((i) => i >= top);
  return k < 0 ? 0 : k;
}

function updateMatchCount() {
  if (!query) matchCount.textContent = "";
  else if (!matches.length) matchCount.textContent = "no matches";
  else matchCount.textContent = `${current >= 0 ? current + 1 : "–"} / ${matches.length.toLocaleString("en")}`;
  document.body.dataset.matches = String(matches.length);
}

function jumpTo(k) {
  if (!matches.length) return;
  current = ((k % matches.length) + matches.length) % matches.length;
  followBox.checked = false;
  searchGeneration++; // redraw rows: the current match moved
  updateMatchCount();
  const i = matches[current];
  scrollToView(view ? current : i);
  document.body.dataset.currentMatch = String(poss[i] + 1);
}

function setFilter(on) {
  filterBox.checked = on;
  const anchor = lineAt(Math.floor(topIndex(geometry())));
  view = on && query ? matches : null;
  searchGeneration++;
  if (view && current >= 0) scrollToView(current);
  else if (!view && raws.length) scrollToView(Math.min(anchor, raws.length - 1), false);
  render();
}

searchInput.addEventListener("input", () => {
  clearTimeout(searchTimer);
  searchTimer = setTimeout(runSearch, 200);
});
searchInput.addEventListener("keydown", (ev) => {
  if (ev.key === "Enter") {
    ev.preventDefault();
    if (query !== searchInput.value) runSearch();
    else jumpTo(current + (ev.shiftKey ? -1 : 1));
  } else if (ev.key === "Escape") {
    searchInput.value = "";
    runSearch();
    viewport.focus();
  }
});
$("next-match").addEventListener("click", () => jumpTo(current + 1));
$("prev-match").addEventListener("click", () => jumpTo(current - 1));
filterBox.addEventListener("change", () => setFilter(filterBox.checked));
tsBox.addEventListener("change", () => document.body.classList.toggle("show-ts", tsBox.checked));

// Keyboard: "/" search, "n"/"N" matches, "f" follow, "t" timestamps, "g"/"G" ends.
document.addEventListener("keydown", (ev) => {
  if (ev.target instanceof HTMLInputElement || ev.ctrlKey || ev.metaKey || ev.altKey) return;
  const actions = {
    "/": () => searchInput.focus(),
    n: () => jumpTo(current + 1),
    N: () => jumpTo(current - 1),
    f: () => followBox.click(),
    t: () => tsBox.click(),
    g: () => scrollToView(0, false),
    G: () => {
      followBox.checked = state === "live";
      scrollToBottom();
      render();
    },
  };
  const act = actions[ev.key];
  if (act) {
    ev.preventDefault();
    act();
  }
});

// --- downloads ---------------------------------------------------------------------
function download(name, parts, type) {
  const url = URL.createObjectURL(new Blob(parts, { type }));
  const a = document.createElement("a");
  a.href = url;
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}
const fileBase = () => (key || "log").replaceAll("/", "_");
$("download-ndjson").addEventListener("click", () => download(fileBase() + ".ndjson", raws.map((r) => r + "\n"), "application/x-ndjson"));
$("download-text").addEventListener("click", () => {
  const parts = raws.map((_, i) => {
    const out = parsed(i).out;
    return out.endsWith("\n") ? out : out + "\n";
  });
  parsedCache = new Map();
  download(fileBase() + ".log", parts, "text/plain");
});

// --- reading: SSE over fetch, archive fallback --------------------------------------
const streamQuery = () => `accountID=${encodeURIComponent(account)}&key=${encodeURIComponent(key)}`;

function fail(message, askToken) {
  setState("error");
  showError(errorBox, message, { askToken });
}

/** Parses an event-stream body; calls `onEvent(event, data, id)` per event. */
async function readEvents(body, onEvent) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let rest = "";
  let event = "";
  let data = null;
  let id = null;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return false;
    // One cursor over the chunk: slicing the remainder per line would copy it per line.
    const buf = rest + value;
    let start = 0;
    for (let nl = buf.indexOf("\n"); nl >= 0; nl = buf.indexOf("\n", start)) {
      const end = nl > start && buf.charCodeAt(nl - 1) === 13 ? nl - 1 : nl;
      const lineStart = start;
      start = nl + 1;
      if (end === lineStart) {
        if (data !== null || event) {
          if (onEvent(event || "message", data ?? "", id) === "stop") {
            reader.cancel().catch(() => {});
            return true;
          }
        }
        event = "";
        data = null;
        id = null;
        continue;
      }
      if (buf.charCodeAt(lineStart) === 58) continue; // ":" comment (keep-alive ping)
      const colon = buf.indexOf(":", lineStart);
      const fieldEnd = colon < 0 || colon > end ? end : colon;
      const field = buf.slice(lineStart, fieldEnd);
      let valueStart = fieldEnd < end ? fieldEnd + 1 : end;
      if (buf.charCodeAt(valueStart) === 32 && valueStart < end) valueStart++;
      const val = buf.slice(valueStart, end);
      if (field === "data") data = data === null ? val : data + "\n" + val;
      else if (field === "event") event = val;
      else if (field === "id") id = val;
    }
    rest = buf.slice(start);
  }
}

async function follow() {
  let delay = 250;
  for (;;) {
    const headers = authHeaders({ Accept: "text/event-stream" });
    if (poss.length) headers["Last-Event-ID"] = String(poss[poss.length - 1]);
    let resp;
    try {
      resp = await fetch("/stream?" + streamQuery(), { headers, cache: "no-store" });
    } catch {
      resp = null;
    }
    if (resp && resp.status === 404 && !raws.length) return loadArchive();
    if (resp && !resp.ok && !(resp.status >= 500 || resp.status === 429 || resp.status === 408)) {
      return fail(await errorMessage(resp), isAuthFailure(resp.status));
    }
    if (resp && resp.ok) {
      setState("live");
      if (!raws.length) followBox.checked = true;
      let serverError = false;
      try {
        const ended = await readEvents(resp.body, (event, data, id) => {
          if (event === "eof") return "stop";
          if (event === "error") {
            serverError = true;
            return "stop";
          }
          if (event === "message" && data) {
            const fallback = raws.length ? poss[poss.length - 1] + 1 : 0;
            addLine(data, id !== null && /^\d+$/.test(id) ? Number(id) : posOf(data, fallback));
            delay = 250;
          }
          return undefined;
        });
        if (ended && !serverError) {
          setState("closed");
          followBox.checked = false;
          scheduleRender();
          return;
        }
      } catch {
        // The connection dropped; reconnect below and resume after the last line.
      }
    }
    setState("reconnecting");
    await new Promise((r) => setTimeout(r, delay + Math.random() * delay));
    delay = Math.min(delay * 2, 10_000);
  }
}

async function loadArchive() {
  let resp;
  try {
    resp = await fetch("/blob?" + streamQuery(), { headers: authHeaders(), cache: "no-store" });
  } catch (e) {
    return fail("Could not reach the log service: " + e.message, false);
  }
  if (!resp.ok) {
    const msg = resp.status === 404 ? `No stream or archive named “${key}” in account “${account}”.` : await errorMessage(resp);
    return fail(msg, isAuthFailure(resp.status));
  }
  const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
  let rest = "";
  for (;;) {
    const { value, done } = await reader.read();
    const text = done ? rest + "\n" : rest + value;
    let start = 0;
    for (let nl = text.indexOf("\n"); nl >= 0; nl = text.indexOf("\n", start)) {
      const row = text.slice(start, nl).trim();
      start = nl + 1;
      if (row) {
        const fallback = raws.length ? poss[poss.length - 1] + 1 : 0;
        addLine(row, posOf(row, fallback));
      }
    }
    rest = text.slice(start);
    if (done) break;
  }
  setState("archived");
  scheduleRender();
}

// --- start ---------------------------------------------------------------------------
$("stream-key").textContent = key || "";
document.title = `${key || "stream"} · runlog`;
$("back").href = "/?accountID=" + encodeURIComponent(account || "");
pendingHash = parseHash();
setState("connecting");
if (linkRefusal) {
  fail(linkRefusal, true);
} else if (!account || !key) {
  fail("This link lacks an account or a stream key (expected ?accountID=…&key=…).", false);
} else if (!sessionStorage.getItem("runlog.token")) {
  fail("A read token is needed to see this stream.", true);
} else {
  follow();
}
render();
viewport.focus();
