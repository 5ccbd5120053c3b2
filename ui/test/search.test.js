import { test } from "node:test";
import assert from "node:assert/strict";
import { createSearch } from "../search.js";
import { LineStore } from "../lines.js";

function storeOf(outs) {
  const s = new LineStore();
  outs.forEach((out, i) => s.add(JSON.stringify({ pos: i, out }), i));
  return s;
}

test("a search finds every line holding the query, ignoring case", async () => {
  const search = createSearch(storeOf(["Alpha", "beta", "ALPHABET", "gamma"]));
  assert.equal(await search.run("alpha"), true);
  assert.deepEqual(search.matches, [0, 2]);
  assert.equal(search.current, null);
});

test("the text searched is the text shown: escapes stripped, JSON escapes decoded", async () => {
  const s = new LineStore();
  s.add('{"pos":0,"out":"\\u001b[31merr\\u001b[0mor"}', 0); // "error" once colours are gone
  s.add('{"pos":1,"out":"path\\/to"}', 1); // another encoder's spelling of "/"
  s.add('{"pos":2,"out":"say \\"hi\\""}', 2);
  s.add('{"pos":3,"out":"[31m"}', 3);
  const search = createSearch(s);
  await search.run("error");
  assert.deepEqual(search.matches, [0]);
  await search.run("path/to");
  assert.deepEqual(search.matches, [1]);
  await search.run('"hi"');
  assert.deepEqual(search.matches, [2]);
  await search.run("[31m");
  assert.deepEqual(search.matches, [3]);
});

test("lines added after a pass are found by catchUp, once", async () => {
  const store = storeOf(["x", "needle"]);
  const search = createSearch(store);
  await search.run("needle");
  assert.equal(search.catchUp(), false);
  store.add(JSON.stringify({ pos: 2, out: "another needle" }), 2);
  store.add(JSON.stringify({ pos: 3, out: "hay" }), 3);
  assert.equal(search.catchUp(), true);
  assert.equal(search.catchUp(), false);
  assert.deepEqual(search.matches, [1, 2]);
});

test("lines added during a pass wait for it, then are found in order", async () => {
  const store = storeOf(Array.from({ length: 10 }, (_, i) => (i % 3 ? "hay" : "needle")));
  let pauses = 0;
  const search = createSearch(store, {
    slice: 4,
    pause: async () => {
      pauses++;
      assert.equal(search.scanning, true);
      assert.equal(search.catchUp(), false); // never ahead of the pass
      store.add(JSON.stringify({ pos: store.length, out: "late needle" }), store.length);
    },
  });
  assert.equal(await search.run("needle"), true);
  assert.equal(pauses, 2);
  assert.deepEqual(search.matches, [0, 3, 6, 9, 10, 11]);
});

test("a newer query replaces a pass under way", async () => {
  const store = storeOf(Array.from({ length: 100 }, () => "needle"));
  let release;
  const search = createSearch(store, { slice: 10, pause: () => new Promise((r) => (release = r)) });
  const first = search.run("needle");
  search.clear();
  release();
  assert.equal(await first, false);
  assert.equal(search.query, "");
  assert.deepEqual(search.matches, []);
});

test("moving between matches wraps; with none selected, next is the first and previous the last", async () => {
  const search = createSearch(storeOf(["a", "b", "a", "a"]));
  await search.run("a");
  assert.equal(search.move(-1), 3);
  assert.equal(search.current, 2);
  assert.equal(search.move(1), 0);
  assert.equal(search.move(-1), 3);
  search.clear();
  await search.run("a");
  assert.equal(search.move(1), 0);
  assert.equal(search.select(search.firstFrom(1)), 2);
  assert.equal(search.firstFrom(4), 0);
  await search.run("zzz");
  assert.equal(search.move(1), null);
  assert.equal(search.currentLine(), null);
});

test("ranges marks every occurrence, ignoring case; none without a query", async () => {
  const search = createSearch(storeOf([]));
  assert.deepEqual(search.ranges("abc"), []);
  await search.run("Ab");
  assert.deepEqual(search.ranges("ab xAB abab"), [[0, 2], [4, 6], [7, 9], [9, 11]]);
});

test("the version changes with every query", async () => {
  const search = createSearch(storeOf(["a"]));
  const v = search.version;
  await search.run("a");
  assert.notEqual(search.version, v);
});
