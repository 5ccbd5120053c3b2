import { test } from "node:test";
import assert from "node:assert/strict";
import { parseLineHash, lineHash } from "../links.js";

test("a line link names one line or a range in either order", () => {
  assert.deepEqual(parseLineHash("#L42"), { from: 42, to: 42 });
  assert.deepEqual(parseLineHash("#L10-L20"), { from: 10, to: 20 });
  assert.deepEqual(parseLineHash("#L20-10"), { from: 10, to: 20 });
  for (const bad of ["", "#", "#L", "#Lx", "#L1-", "#l5", "#L5 ", "#L1-L2-L3"]) assert.equal(parseLineHash(bad), null, bad);
});

test("a link made from two lines reads back as their range", () => {
  assert.equal(lineHash(7, 7), "#L7");
  assert.equal(lineHash(9, 3), "#L3-L9");
  assert.deepEqual(parseLineHash(lineHash(9, 3)), { from: 3, to: 9 });
});
