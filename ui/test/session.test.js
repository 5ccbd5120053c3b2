import { test } from "node:test";
import assert from "node:assert/strict";
import { tokenClaims, refusalOf } from "../session.js";

/** A token shaped as runlog's: base64url(JSON claims) "." signature. */
const token = (claims) => Buffer.from(JSON.stringify(claims)).toString("base64url") + ".c2ln";

test("the claims of a runlog token are read, whatever its padding and base64url digits", () => {
  // Account ids are ASCII; "~~~" and "???" encode to base64url's own digits ("-", "_").
  for (const account of ["a", "ab", "abc", "acc~~~???"]) {
    const t = token({ account, scope: "read" });
    assert.deepEqual(tokenClaims(t), { account, scope: "read" }, t);
  }
  assert.match(token({ account: "acc~~~???" }), /[-_]/);
});

test("a token of another shape has no claims", () => {
  for (const t of ["", "not-a-token", "!!!.x", Buffer.from("42").toString("base64url") + ".x"]) {
    assert.equal(tokenClaims(t), null, t);
  }
});

test("a link may carry a read token, or one whose scope the page cannot read, but nothing stronger", () => {
  assert.equal(refusalOf(token({ scope: "read" })), null);
  assert.equal(refusalOf("opaque"), null); // the service decides
  for (const scope of ["write", "admin"]) assert.match(refusalOf(token({ scope })), new RegExp(`carries a ${scope} token`));
});
