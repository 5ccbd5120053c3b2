import { test } from "node:test";
import assert from "node:assert/strict";
import { SectionIndex, FoldState, foldedLines, describeLedger, describeSection, mayBeMarker } from "../sections.js";
import { LineStore } from "../lines.js";

/** A store holding the lines with these `pos`. */
function storeOf(poss) {
  const store = new LineStore();
  for (const p of poss) store.add("{}", p);
  return store;
}

const range = (n) => [...Array(n).keys()];

// 0 ┬ build (success, 0–5)
// 1 │ ┬ compile (success, 1–3)
// 6 ┬ test (failure, 6–12)
// 8 │ ┬ unit (success, 8–9)
// 10│ ┬ e2e (failure, 10–11)
// 13┬ deploy (running, from 13)
const SECTIONS = [
  { name: "build", depth: 0, first_pos: 0, last_pos: 5, outcome: "success", duration_ms: 4000, lines: 6 },
  { name: "compile", depth: 1, parent: 0, first_pos: 1, last_pos: 3, outcome: "success", duration_ms: 3000, lines: 3 },
  { name: "test", depth: 0, first_pos: 6, last_pos: 12, outcome: "failure", duration_ms: 9000, lines: 7 },
  { name: "unit", depth: 1, parent: 2, first_pos: 8, last_pos: 9, outcome: "success", duration_ms: 1000, lines: 2 },
  { name: "e2e", depth: 1, parent: 2, first_pos: 10, last_pos: 11, outcome: "failure", duration_ms: 5000, lines: 2 },
  { name: "deploy", depth: 0, first_pos: 13 },
];
const index = () => new SectionIndex({ open: true, sections: SECTIONS });

test("successful sections fold, failed and running ones stay open, nested folds hide once", () => {
  const folds = new FoldState();
  assert.deepEqual(folds.hiddenRanges(index()), [
    [1, 5], // build (compile inside it is not listed again)
    [9, 9], // unit
  ]);
});

test("the reader's choice beats the outcome, and expand/collapse all reset every choice", () => {
  const idx = index();
  const folds = new FoldState();
  folds.set(idx.list[0], false); // open build: compile is folded on its own
  folds.set(idx.list[2], true); // fold the failed test
  assert.deepEqual(folds.hiddenRanges(idx), [
    [2, 3],
    [7, 12],
  ]);
  folds.setAll(false);
  assert.deepEqual(folds.hiddenRanges(idx), []);
  folds.setAll(true);
  // A running section folded hides everything after its header, lines to come included.
  assert.deepEqual(folds.hiddenRanges(idx), [
    [1, 5],
    [7, 12],
    [14, Infinity],
  ]);
});

test("the folded view maps rows to the visible lines and hidden lines to their header", () => {
  const store = storeOf(range(16));
  const idx = index();
  const view = foldedLines(store, new FoldState().hiddenRanges(idx));
  const visible = [0, 6, 7, 8, 10, 11, 12, 13, 14, 15];
  assert.equal(view.count, visible.length);
  assert.deepEqual(range(view.count).map((v) => view.lineAt(v)), visible);
  visible.forEach((i, v) => assert.equal(view.rowOf(i), v));
  assert.equal(view.rowOf(3), 0, "inside build: build's header row");
  assert.equal(view.rowOf(9), 3, "inside unit: unit's header row");
  assert.equal(view.hides(4), true);
  assert.equal(view.hides(6), false);
});

test("lines arriving inside a folded running section stay hidden", () => {
  const store = storeOf(range(14));
  const view = foldedLines(store, [[14, Infinity]]);
  assert.equal(view.count, 14);
  store.add("{}", 14);
  store.add("{}", 15);
  assert.equal(view.count, 14);
  assert.equal(view.rowOf(15), 13);
});

test("the folded view agrees with filtering line by line, gaps in pos included", () => {
  // A deterministic pseudo-random walk: many shapes of ranges over stores with gaps.
  let seed = 7;
  const rand = (n) => {
    seed = (seed * 1103515245 + 12345) % 2147483648;
    return seed % n;
  };
  for (let round = 0; round < 200; round++) {
    const poss = range(60).filter(() => rand(5) !== 0);
    const store = storeOf(poss);
    const ranges = [];
    let at = rand(4);
    while (at < 70) {
      const from = at + 1 + rand(3);
      const to = rand(6) === 0 ? Infinity : from + rand(8);
      ranges.push([from, to]);
      if (to === Infinity) break;
      at = to + 1 + rand(6);
    }
    const view = foldedLines(store, ranges);
    const hidden = (p) => ranges.some(([a, b]) => p >= a && p <= b);
    const expect = range(store.length).filter((i) => !hidden(store.pos(i)));
    assert.deepEqual(range(view.count).map((v) => view.lineAt(v)), expect, JSON.stringify({ poss, ranges }));
    for (let i = 0; i < store.length; i++) {
      const row = view.rowOf(i);
      if (hidden(store.pos(i))) {
        assert.equal(view.hides(i), true);
        // The row of the last visible line before it (its section's header), or the top.
        const before = expect.filter((j) => j < i).length;
        assert.equal(row, Math.max(0, before - 1), `hidden line ${i}`);
      } else {
        assert.equal(expect[row], i);
      }
    }
  }
});

test("revealing a line opens every folded section around it, not one it heads", () => {
  const idx = index();
  const folds = new FoldState();
  folds.setAll(true);
  assert.equal(folds.reveal(idx, 2), true);
  assert.equal(folds.collapsed(idx.list[0]), false);
  assert.equal(folds.collapsed(idx.list[1]), false);
  assert.equal(folds.collapsed(idx.list[2]), true, "a section not holding the line stays folded");
  assert.equal(folds.reveal(idx, 10), true);
  assert.equal(folds.collapsed(idx.list[2]), false);
  assert.equal(folds.collapsed(idx.list[4]), true, "the line heads e2e: e2e need not open");
  assert.equal(folds.reveal(idx, 10), false);
});

test("the first failure is where it happened, and the slowest sections come longest first", () => {
  const idx = index();
  assert.equal(idx.list[idx.firstFailure()].name, "e2e");
  assert.deepEqual(idx.slowest(3).map((k) => idx.list[k].name), ["test", "e2e", "build"]);
  assert.deepEqual(idx.containing(11), [4, 2]);
  assert.deepEqual(idx.containing(12), [2]);
  assert.deepEqual(idx.containing(40), [5], "a running section holds what comes after it");
  assert.equal(idx.depthAt(2), 2);
  assert.equal(idx.headAt(10), 4);
  assert.equal(new SectionIndex({ sections: [SECTIONS[0]] }).firstFailure(), null);
});

test("a header names outcome, duration and line count", () => {
  assert.deepEqual(describeSection(SECTIONS[4]), { outcome: "failure", text: "✗ failed · 5.0s · 2 lines" });
  assert.deepEqual(describeSection(SECTIONS[5]), { outcome: "running", text: "… running" });
});

test("the ledger is described as complete or by every reason", () => {
  assert.equal(describeLedger({ open: true }).state, "open");
  const ok = describeLedger({ ledger: { complete: true, basis: "writer_totals", lines: 3, first_pos: 0, last_pos: 2 } });
  assert.equal(ok.state, "complete");
  assert.match(ok.text, /^complete: lines 1–3, no gap/);
  const lite = describeLedger({ ledger: { complete: true, basis: "contiguity", lines: 3, first_pos: 0, last_pos: 2 } });
  assert.match(lite.text, /stated no totals/);
  const bad = describeLedger({
    ledger: {
      complete: false,
      basis: "writer_totals",
      lines: 8,
      first_pos: 0,
      last_pos: 9,
      reasons: [
        { reason: "gap", from: 3, to: 4 },
        { reason: "dropped", lines: 5, at: [7] },
        { reason: "never_closed" },
        { reason: "lines", stated: 12, held: 8 },
        { reason: "digest", stated: "sha256:a", held: "sha256:b" },
      ],
    },
  });
  assert.equal(bad.state, "incomplete");
  assert.deepEqual(bad.reasons, [
    "lines 4–5 missing",
    "5 lines dropped by the writer (at line 8)",
    "the writer never closed the stream",
    "the writer stated 12 lines, the service holds 8",
    "the text differs from the writer's digest",
  ]);
});

test("marker-like lines are told from others without parsing", () => {
  const raw = (out) => JSON.stringify({ level: "info", out, pos: 1, time: "t" });
  for (const out of ["::group::Build\n", "::endgroup::\n", "\u001b[0Ksection_start:1:x\r\u001b[0KX\n", "section_end:1:x\n", "--- Test\n", "+++ :x:\n", "~~~ a\n", "^^^ +++\n"]) {
    assert.equal(mayBeMarker(raw(out)), true, out);
  }
  for (const out of ["compiling\n", "a --- b\n", "---\n"]) assert.equal(mayBeMarker(raw(out)), false, out);
});

test("a live index asks again from its first open section and keeps the closed ones before it", () => {
  const ix = index();
  assert.equal(ix.resumeAt(), 5, "deploy (5) is the first section still open");
  const deployDone = { ...SECTIONS[5], last_pos: 20, outcome: "success", duration_ms: 1000 };
  const lint = { name: "lint", depth: 0, parent: null, first_pos: 21, start: "t" };
  const merged = new SectionIndex(ix.merge({ open: true, from: 5, sections: [deployDone, lint] }));
  assert.deepEqual(merged.list.map((s) => s.name), ["build", "compile", "test", "unit", "e2e", "deploy", "lint"]);
  assert.equal(merged.list[5].outcome, "success");
  assert.equal(merged.resumeAt(), 6);
  assert.equal(merged.answer.from, 0);
  const whole = { open: false, sections: [SECTIONS[0]] };
  assert.equal(ix.merge(whole), whole, "an answer without from replaces the list");
  assert.equal(new SectionIndex({ open: false, sections: [SECTIONS[0], SECTIONS[1]] }).resumeAt(), 2);
});
