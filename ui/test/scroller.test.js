import { test } from "node:test";
import assert from "node:assert/strict";
import { geometry, rowAt, topFor, atBottom, followAfterReaderScroll, ROW_HEIGHT, MAX_SPACER } from "../scroller.js";

test("one pixel is one pixel until the spacer would pass its cap", () => {
  const g = geometry(1000, 180);
  assert.equal(g.scaled, false);
  assert.equal(g.spacerH, 1000 * ROW_HEIGHT);
  assert.equal(rowAt(18 * 50, g), 50);
  assert.equal(topFor(50, g, false), 18 * 50);
  // Centred: the row sits in the middle of the 10 rows on screen.
  assert.equal(topFor(50, g, true), (50 - 5 + 0.5) * ROW_HEIGHT);
  assert.equal(topFor(2, g, true), 0);
});

test("past the cap, scroll positions map onto rows proportionally, both ways", () => {
  const n = 1_000_000;
  const g = geometry(n, 900);
  assert.equal(g.scaled, true);
  assert.equal(g.spacerH, MAX_SPACER);
  const rowsOnScreen = 900 / ROW_HEIGHT;
  assert.equal(rowAt(0, g), 0);
  assert.equal(rowAt(MAX_SPACER - 900, g), n - rowsOnScreen); // the end shows the last rows
  for (const v of [0, 1234, 500_000, n - rowsOnScreen]) {
    assert.ok(Math.abs(rowAt(topFor(v, g, false), g) - v) < 1e-6, `row ${v}`);
  }
});

test("the bottom is reached within a row of the end", () => {
  const g = geometry(100, 180);
  const end = g.spacerH - g.viewH;
  assert.equal(atBottom(end, g), true);
  assert.equal(atBottom(end - ROW_HEIGHT, g), true);
  assert.equal(atBottom(end - ROW_HEIGHT - 1, g), false);
});

test("reading up stops following; reaching the end of a live stream follows again", () => {
  const f = followAfterReaderScroll;
  assert.equal(f({ following: true, bottom: false, live: true }), false);
  assert.equal(f({ following: false, bottom: true, live: true }), true);
  assert.equal(f({ following: false, bottom: true, live: false }), false);
  assert.equal(f({ following: true, bottom: true, live: false }), true);
  assert.equal(f({ following: false, bottom: false, live: true }), false);
});
