import { test } from "node:test";
import assert from "node:assert/strict";
import { LineStore, parseLine, posOf } from "../lines.js";

const raw = (pos, out, extra = {}) => JSON.stringify({ pos, out, ...extra });

test("lines are kept in pos order and a replayed pos is ignored", () => {
  const s = new LineStore();
  assert.equal(s.lastPos, null);
  assert.equal(s.add(raw(0, "a"), 0), true);
  assert.equal(s.add(raw(1, "b"), 1), true);
  assert.equal(s.add(raw(1, "b again"), 1), false);
  assert.equal(s.add(raw(0, "a again"), 0), false);
  assert.equal(s.add(raw(5, "after a gap"), 5), true);
  assert.equal(s.length, 3);
  assert.equal(s.lastPos, 5);
  assert.deepEqual([0, 1, 2].map((i) => s.pos(i)), [0, 1, 5]);
  assert.equal(s.parsed(1).out, "b");
});

test("indexOfPos finds a line or the first one after it", () => {
  const s = new LineStore();
  for (const p of [2, 3, 7, 10]) s.add(raw(p, ""), p);
  assert.equal(s.indexOfPos(0), 0);
  assert.equal(s.indexOfPos(3), 1);
  assert.equal(s.indexOfPos(4), 2);
  assert.equal(s.indexOfPos(10), 3);
  assert.equal(s.indexOfPos(11), 4);
});

test("a parsed line has defaults, and a line that is not JSON says so", () => {
  assert.deepEqual(parseLine('{"out":"x"}', 3), { pos: 3, level: "info", out: "x", time: "" });
  assert.deepEqual(parseLine('{"out":1,"level":"warn","time":"T"}', 0), { pos: 0, level: "warn", out: "1", time: "T" });
  const bad = parseLine("not json", 9);
  assert.equal(bad.level, "error");
  assert.equal(bad.out, "(malformed line) not json");
});

test("the parsed cache is bounded and forgetting it changes no answer", () => {
  const s = new LineStore();
  for (let i = 0; i < 10_000; i++) s.add(raw(i, "line " + i), i);
  for (let i = 0; i < 10_000; i++) assert.equal(s.parsed(i).out, "line " + i);
  s.forgetParsed();
  assert.equal(s.parsed(9_999).out, "line 9999");
  assert.deepEqual(s.map((r, i) => i).length, 10_000);
});

test("posOf reads the pos field without parsing, or gives the fallback", () => {
  assert.equal(posOf('{"pos":42,"out":"x"}', 7), 42);
  assert.equal(posOf('{"out":"x","pos": 8}', 7), 8);
  assert.equal(posOf('{"out":"x"}', 7), 7);
  assert.equal(posOf('{"pos":"oops"}', 7), 7);
});
