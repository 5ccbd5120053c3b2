import { test } from "node:test";
import assert from "node:assert/strict";
import { allLines, someLines } from "../view.js";
import { LineStore } from "../lines.js";

test("the whole view maps rows to lines one to one, and grows with the store", () => {
  const store = new LineStore();
  const view = allLines(store);
  assert.equal(view.count, 0);
  store.add("{}", 0);
  store.add("{}", 1);
  assert.equal(view.count, 2);
  assert.equal(view.lineAt(1), 1);
  assert.equal(view.rowOf(1), 1);
  assert.equal(view.whole, true);
});

test("a subset maps its rows to its lines and back, and sees lines added to it", () => {
  const indexes = [3, 10, 42];
  const view = someLines(indexes);
  assert.equal(view.whole, false);
  assert.deepEqual([0, 1, 2].map(view.lineAt), [3, 10, 42]);
  assert.deepEqual([3, 10, 42].map((i) => view.rowOf(i)), [0, 1, 2]);
  assert.equal(view.rowOf(0), 0);
  assert.equal(view.rowOf(11), 2); // the first line after it
  assert.equal(view.rowOf(43), 3);
  indexes.push(50);
  assert.equal(view.count, 4);
  assert.equal(view.rowOf(50), 3);
});
