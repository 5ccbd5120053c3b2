// One stream's page: wires the line store, the event stream, the scroller, the rows
// and the search to the page's controls. What each part does lives in its module:
// events.js (reading the stream; sse.js parses it), lines.js (the lines held),
// scroller.js (virtual scrolling, following the tail), rows.js (drawing a row),
// search.js, view.js (which lines are rows), sections.js (folded sections, the
// ledger), links.js (#L links), time.js (the time column), session.js (token,
// account), errors.js.

import { takeToken, takeAccount } from "./session.js";
import { showError } from "./errors.js";
import { LineStore } from "./lines.js";
import { readStream, readSections } from "./events.js";
import { Scroller, ROW_HEIGHT } from "./scroller.js";
import { RowPool, fillRow, sectionOf } from "./rows.js";
import { createSearch } from "./search.js";
import { parseLineHash, lineHash } from "./links.js";
import { TIME_MODES, describeTime, parseTime, duration } from "./time.js";
import { allLines, someLines } from "./view.js";
import { SectionIndex, FoldState, foldedLines, describeLedger, describeSection, mayBeMarker } from "./sections.js";

const $ = (id) => document.getElementById(id);
const viewport = $("viewport");
const rowsBox = $("rows");
const statusEl = $("status");
const searchInput = $("search");
const matchCount = $("match-count");
const followBox = $("follow");
const tsBox = $("timestamps");
const filterBox = $("filter");
const timeModeBox = $("time-mode");
const durationEl = $("duration");
const ledgerEl = $("ledger");
const slowestList = $("slowest");

const params = new URL(location.href).searchParams;
const { token, refusal } = takeToken();
const account = takeAccount();
const key = params.get("key");

const store = new LineStore();
const search = createSearch(store);
const pool = new RowPool(rowsBox);

// --- view: all lines (sections folded), or only matches when filtering ---------
const everyLine = allLines(store);
let index = new SectionIndex();
const folds = new FoldState();
let reading = everyLine; // every line but those of folded sections
let view = reading;

// --- live state, status ---------------------------------------------------------
let state = "connecting"; // connecting | live | reconnecting | closed | archived | error
const complete = () => state === "closed" || state === "archived";

const scroller = new Scroller({
  viewport,
  spacer: $("spacer"),
  followBox,
  count: () => view.count,
  isLive: () => state === "live",
  render: () => render(),
});

function setState(s) {
  state = s;
  if (complete()) markOnce("runlog:complete");
  document.body.dataset.state = s;
  updateStatus();
}

function updateStatus() {
  const n = store.length.toLocaleString("en");
  const label = { connecting: "connecting…", live: "live", reconnecting: "reconnecting…", closed: "closed", archived: "archived", error: "error" }[state];
  statusEl.textContent = `${label} · ${n} ${store.length === 1 ? "line" : "lines"}`;
  updateDuration();
}

// The stream's total: from its first line's time to its last's.
let durationLines = 0;
function updateDuration() {
  if (store.length === durationLines) return;
  durationLines = store.length;
  const span = parseTime(store.parsed(store.length - 1).time) - parseTime(store.parsed(0).time);
  durationEl.textContent = Number.isFinite(span) ? duration(span) : "";
  document.body.dataset.duration = durationEl.textContent;
}

function fail(message, askToken) {
  setState("error");
  showError($("error"), message, { askToken });
}

// User Timing marks, so the time to first line and to a linked line can be measured
// (bench/viewer.sh reads them); they cost nothing when nobody looks.
const marked = new Set();
function markOnce(name) {
  if (marked.has(name)) return;
  marked.add(name);
  performance.mark(name);
}

// --- time column: UTC, local, since the first line, since the line before ---------------
const TIME_KEY = "runlog.time"; // the reader's choice, kept across pages and visits
let timeMode = TIME_MODES.includes(localStorage.getItem(TIME_KEY)) ? localStorage.getItem(TIME_KEY) : "utc";
timeModeBox.value = timeMode;
timeModeBox.addEventListener("change", () => {
  timeMode = timeModeBox.value;
  localStorage.setItem(TIME_KEY, timeMode);
  if (!tsBox.checked) tsBox.click(); // choosing how to show times means wanting to see them
  render();
});

/** The time column of line `i` (delta: to the line before in the stream, even when filtering). */
const timeOf = (i, line) => describeTime(timeMode, line.time, store.parsed(0).time, i > 0 ? store.parsed(i - 1).time : "");

// --- drawing ---------------------------------------------------------------------
let highlight = null; // {from, to} line numbers (1-based, inclusive)
let pendingHash = null; // a linked range waiting for its lines to arrive
let renderQueued = false;
let gutterDigits = 0;

function scheduleRender() {
  if (renderQueued) return;
  renderQueued = true;
  requestAnimationFrame(() => {
    renderQueued = false;
    onNewLines();
    render();
  });
}

const NO_SECTION = { indent: 0, head: null, stamp: "" };

function render() {
  const g = scroller.syncSpacer();
  if (document.body.dataset.rows !== String(g.n)) document.body.dataset.rows = String(g.n);
  // Line-number gutter as wide as the largest number (no clipping at 1 000 000).
  const last = store.lastPos;
  const digits = String(last === null ? 1 : last + 1).length;
  if (digits !== gutterDigits) {
    gutterDigits = digits;
    viewport.style.setProperty("--gutter", Math.max(4, digits) + 1 + "ch");
  }
  const top = scroller.topIndex(g);
  const first = Math.max(0, Math.floor(top));
  const count = Math.max(0, Math.min(g.n - first, Math.ceil(g.viewH / ROW_HEIGHT) + 2));
  rowsBox.style.transform = `translateY(${viewport.scrollTop - (top - first) * ROW_HEIGHT}px)`;
  const marks = {
    searchVersion: search.version,
    ranges: search.query ? search.ranges : null,
    timeMode,
    timeOf,
  };
  const sectioned = index.list.length > 0;
  const currentLine = search.currentLine();
  for (let k = 0; k < count; k++) {
    const i = view.lineAt(first + k);
    const line = store.parsed(i);
    const number = line.pos + 1;
    const lit = Boolean(highlight && number >= highlight.from && number <= highlight.to);
    if (lit) markOnce("runlog:linked-line-shown");
    const section = sectioned ? sectionOf(index, folds, line.pos) : NO_SECTION;
    fillRow(pool.row(k), i, line, { ...marks, lit, current: i === currentLine, section });
  }
  if (count > 0) markOnce("runlog:first-line");
  pool.hideFrom(count);
  updateStatus();
}

// --- lines arriving ------------------------------------------------------------------
function onNewLines() {
  if (search.catchUp()) {
    if (!view.whole) view = someLines(search.matches);
    updateMatchCount();
  }
  scroller.onNewRows();
  applyPendingHash();
  applyPendingFailure();
}

const sink = {
  lastPos: () => store.lastPos,
  line(raw, pos) {
    if (!store.add(raw, pos)) return;
    if (mayBeMarker(raw)) sectionsWanted();
    scheduleRender();
  },
  state(s) {
    if (s === "live" && !store.length) scroller.following = true;
    setState(s);
    if (complete()) {
      sectionsWanted(); // the final index, with the ledger
      if (s === "closed") scroller.following = false;
      scheduleRender();
    }
  },
  fail,
};

// --- line links: #L42, #L10-L20 -----------------------------------------------------
function applyPendingHash() {
  if (!pendingHash) return;
  const idx = store.indexOfPos(pendingHash.from - 1);
  // Wait until the line has arrived (or the stream is complete).
  if (idx >= store.length && !complete()) return;
  highlight = pendingHash;
  pendingHash = null;
  pendingFailure = null; // the reader asked for a line: that is where to be
  scroller.following = false;
  if (filterBox.checked) setFilter(false);
  const i = Math.min(idx, Math.max(0, store.length - 1));
  if (store.length) reveal(i);
  scroller.scrollToView(view.rowOf(i));
  document.body.dataset.highlighted = String(highlight.from);
}

window.addEventListener("hashchange", () => {
  pendingHash = parseLineHash(location.hash);
  applyPendingHash();
  render();
});
rowsBox.addEventListener("click", (ev) => {
  const a = ev.target.closest("a.ln");
  if (!a || !ev.shiftKey || !highlight) return;
  // Shift-click extends the highlighted line into a range link.
  ev.preventDefault();
  location.hash = lineHash(highlight.from, Number(a.closest(".row").dataset.line));
});

// --- search ------------------------------------------------------------------------
let searchTimer = 0;

async function runSearch() {
  const q = searchInput.value;
  if (!q) {
    search.clear();
    if (!view.whole) setFilter(true);
    updateMatchCount();
    render();
    return;
  }
  const pass = search.run(q);
  matchCount.textContent = "searching…";
  if (!(await pass)) return; // a newer query replaced this one
  if (filterBox.checked) setFilter(true);
  updateMatchCount();
  if (search.matches.length) jumpTo(search.select(search.firstFrom(view.lineAt(Math.floor(scroller.topIndex())))));
  else render();
}

function updateMatchCount() {
  const n = search.matches.length;
  if (!search.query) matchCount.textContent = "";
  else if (!n) matchCount.textContent = "no matches";
  else matchCount.textContent = `${search.current === null ? "–" : search.current + 1} / ${n.toLocaleString("en")}`;
  document.body.dataset.matches = String(n);
}

/** Shows the selected match at line index `i` (null: there is none). */
function jumpTo(i) {
  if (i === null) return;
  scroller.following = false;
  pendingFailure = null;
  reveal(i);
  updateMatchCount();
  scroller.scrollToView(view.rowOf(i));
  document.body.dataset.currentMatch = String(store.pos(i) + 1);
}

function setFilter(on) {
  filterBox.checked = on;
  const anchor = view.lineAt(Math.floor(scroller.topIndex()));
  view = on && search.query ? someLines(search.matches) : reading;
  const current = search.currentLine();
  if (!view.whole && current !== null) scroller.scrollToView(view.rowOf(current));
  else if (view.whole && store.length) scroller.scrollToView(view.rowOf(Math.min(anchor, store.length - 1)), false);
  render();
}

searchInput.addEventListener("input", () => {
  clearTimeout(searchTimer);
  searchTimer = setTimeout(runSearch, 200);
});
searchInput.addEventListener("keydown", (ev) => {
  if (ev.key === "Enter") {
    ev.preventDefault();
    if (search.query !== searchInput.value) runSearch();
    else jumpTo(search.move(ev.shiftKey ? -1 : 1));
  } else if (ev.key === "Escape") {
    searchInput.value = "";
    runSearch();
    viewport.focus();
  }
});
$("next-match").addEventListener("click", () => jumpTo(search.move(1)));
$("prev-match").addEventListener("click", () => jumpTo(search.move(-1)));
filterBox.addEventListener("change", () => setFilter(filterBox.checked));
tsBox.addEventListener("change", () => document.body.classList.toggle("show-ts", tsBox.checked));

// Keyboard: "/" search, "n"/"N" matches, "f" follow, "t" timestamps, "g"/"G" ends,
// "[" fold every section, "]" open every section.
document.addEventListener("keydown", (ev) => {
  if (ev.target instanceof HTMLInputElement || ev.ctrlKey || ev.metaKey || ev.altKey) return;
  const actions = {
    "/": () => searchInput.focus(),
    n: () => jumpTo(search.move(1)),
    N: () => jumpTo(search.move(-1)),
    f: () => followBox.click(),
    t: () => tsBox.click(),
    "[": () => $("collapse-all").click(),
    "]": () => $("expand-all").click(),
    g: () => scroller.scrollToView(0, false),
    G: () => {
      scroller.following = state === "live";
      scroller.scrollToBottom();
      render();
    },
  };
  const act = actions[ev.key];
  if (act) {
    ev.preventDefault();
    act();
  }
});

// --- sections: folded by outcome, the index fetched again as markers arrive ------------
// The index is the service's (GET /stream/sections): the page parses no marker itself,
// so it shows exactly what the API answers any other reader. While lines
// arrive, a line that may be a marker (sections.js `mayBeMarker`) asks for the index
// again, at most one request in flight and one per SECTIONS_EVERY_MS: a build that
// prints a header per test costs one request a second, not one per header. The final
// index (with the ledger) is fetched once the stream is complete (again, a few
// times, while the service still calls it open).
const SECTIONS_EVERY_MS = 1000;
const CLOSING_TRIES = 10;
let closingTries = 0;
let sectionsBusy = false;
let sectionsAgain = false;
let sectionsLast = -Infinity;
let sectionsTimer = 0;
let firstIndex = true;
let pendingFailure = null; // pos of the first failure, shown once its line has arrived
// The pos the reader was sent to (a link, a search match): a new index keeps the
// sections around it open, until the reader folds or opens sections themselves.
let keepOpen = null;

function sectionsWanted() {
  if (!account || !key || !token) return;
  if (sectionsBusy) {
    sectionsAgain = true;
    return;
  }
  if (sectionsTimer) return; // a fetch is already due
  const wait = sectionsLast + SECTIONS_EVERY_MS - performance.now();
  if (wait > 0) {
    sectionsTimer = setTimeout(() => {
      sectionsTimer = 0;
      sectionsWanted();
    }, wait);
    return;
  }
  sectionsBusy = true;
  sectionsLast = performance.now();
  readSections(account, key, index.resumeAt()).then((answer) => {
    sectionsBusy = false;
    if (answer) onSections(index.merge(answer));
    firstIndex = false; // only the page's first look decides where it opens
    // Asked again meanwhile, or the stream ended before the service closed its index.
    const closing = answer && answer.open && complete() && closingTries++ < CLOSING_TRIES;
    if (sectionsAgain || closing) {
      sectionsAgain = false;
      sectionsWanted();
    }
  });
}

function onSections(answer) {
  const wasEmpty = !index.list.length;
  index = new SectionIndex(answer);
  document.body.classList.toggle("has-sections", index.list.length > 0);
  document.body.dataset.sections = String(index.list.length);
  // A stream already finished when the page opened it starts at its first failure.
  if (firstIndex && !answer.open && !highlight && !pendingHash) {
    const k = index.firstFailure();
    if (k !== null) pendingFailure = index.list[k].first_pos;
  }
  if (keepOpen !== null) folds.reveal(index, keepOpen);
  refold(wasEmpty);
  showLedger(answer);
  showSlowest();
  applyPendingFailure();
}

/** Rebuilds the reading view from the folds, keeping the line at the top where it is. */
function refold(keepTop = true) {
  const anchor = view.whole && view.count ? view.lineAt(Math.min(view.count - 1, Math.floor(scroller.topIndex()))) : null;
  reading = index.list.length ? foldedLines(store, folds.hiddenRanges(index)) : everyLine;
  if (view.whole) view = reading;
  if (scroller.following) scroller.onNewRows();
  else if (keepTop && anchor !== null && view.whole) scroller.scrollToView(view.rowOf(anchor), false);
  render();
}

/** Opens the folded sections around line `i`, so it has a row. */
function reveal(i) {
  keepOpen = store.pos(i);
  if (view.whole && reading !== everyLine && reading.hides(i) && folds.reveal(index, store.pos(i))) refold(false);
}

function applyPendingFailure() {
  if (pendingFailure === null) return;
  const i = store.indexOfPos(pendingFailure);
  if (i >= store.length) return; // its line has not arrived yet
  pendingFailure = null;
  scroller.following = false;
  reveal(i);
  scroller.scrollToView(view.rowOf(i), false);
  document.body.dataset.firstFailure = String(store.pos(i) + 1);
  markOnce("runlog:first-failure-shown");
}

function showLedger(answer) {
  const { state: ledgerState, text, reasons } = describeLedger(answer);
  ledgerEl.textContent = ledgerState === "open" ? "" : ledgerState === "complete" ? "✓ complete" : "⚠ incomplete";
  ledgerEl.title = text;
  ledgerEl.dataset.state = ledgerState;
  $("ledger-reasons").replaceChildren(
    ...(ledgerState === "incomplete" ? reasons : text ? [text] : []).map((r) => {
      const li = document.createElement("li");
      li.textContent = r;
      return li;
    }),
  );
  document.body.dataset.ledger = ledgerState;
}

/** The slowest sections, each a link that opens and shows it. */
function showSlowest() {
  const items = index.slowest(10).map((k) => {
    const s = index.list[k];
    const li = document.createElement("li");
    const a = document.createElement("a");
    a.href = "#L" + (s.first_pos + 1);
    a.textContent = s.title || s.name;
    const d = document.createElement("span");
    d.className = "sum outcome-" + (s.outcome || "running");
    d.textContent = " " + describeSection(s).text;
    li.append(a, d);
    return li;
  });
  slowestList.replaceChildren(...items);
}

rowsBox.addEventListener("click", (ev) => {
  const fold = ev.target.closest(".fold, .sum"); // the toggle, or the header's summary
  const row = fold && fold.closest(".row.section-head");
  if (!row) return;
  const s = index.list[Number(row.dataset.section)];
  if (!s) return;
  keepOpen = null;
  folds.set(s, !folds.collapsed(s));
  refold();
});
$("expand-all").addEventListener("click", () => {
  keepOpen = null;
  folds.setAll(false);
  refold();
});
$("collapse-all").addEventListener("click", () => {
  keepOpen = null;
  folds.setAll(true);
  refold();
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
$("download-ndjson").addEventListener("click", () => download(fileBase() + ".ndjson", store.map((r) => r + "\n"), "application/x-ndjson"));
$("download-text").addEventListener("click", () => {
  const parts = store.map((_, i) => {
    const out = store.parsed(i).out;
    return out.endsWith("\n") ? out : out + "\n";
  });
  store.forgetParsed();
  download(fileBase() + ".log", parts, "text/plain");
});

// --- start ---------------------------------------------------------------------------
$("stream-key").textContent = key || "";
document.title = `${key || "stream"} · runlog`;
$("back").href = "/?accountID=" + encodeURIComponent(account || "");
pendingHash = parseLineHash(location.hash);
setState("connecting");
if (refusal) {
  fail(refusal, true);
} else if (!account || !key) {
  fail("This link lacks an account or a stream key (expected ?accountID=…&key=…).", false);
} else if (!token) {
  fail("A read token is needed to see this stream.", true);
} else {
  readStream(account, key, sink);
  sectionsWanted();
}
render();
viewport.focus();
