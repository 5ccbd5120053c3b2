import { test } from "node:test";
import assert from "node:assert/strict";
import { parseTime, clock, offset, duration, describeTime, ago, GAP_MS } from "../time.js";

const T0 = "2026-11-20T10:00:00.000Z";
const at = (ms) => new Date(Date.parse(T0) + ms).toISOString();

test("RFC 3339 times are read to the millisecond, other spellings are not", () => {
  assert.equal(parseTime("2026-11-20T10:00:00.123456789Z"), Date.parse(T0) + 123);
  assert.equal(parseTime("2026-11-20T15:30:00+05:30"), Date.parse(T0));
  assert.equal(parseTime("2026-11-20T10:00:00Z"), Date.parse(T0));
  for (const bad of ["", "Nov 20 2026", "2026-11-20", "2026-11-20T10:00:00", "yesterday"]) assert.ok(Number.isNaN(parseTime(bad)), bad);
});

test("clock time in UTC and in the browser's zone", () => {
  const before = process.env.TZ;
  process.env.TZ = "Asia/Kolkata"; // +05:30: a zone whole hours would get wrong
  try {
    assert.equal(clock(Date.parse("2026-11-20T10:00:00.042Z"), "utc"), "10:00:00.042");
    assert.equal(clock(Date.parse("2026-11-20T10:00:00.042Z"), "local"), "15:30:00.042");
    assert.equal(describeTime("local", "2026-11-20T20:45:01.500Z", "", "").text, "02:15:01.500");
  } finally {
    if (before === undefined) delete process.env.TZ;
    else process.env.TZ = before;
  }
});

test("offsets are as short as they can be and keep their sign", () => {
  assert.equal(offset(0), "+0.000s");
  assert.equal(offset(2345), "+2.345s");
  assert.equal(offset(59_999), "+59.999s");
  assert.equal(offset(62_345), "+1:02.345");
  assert.equal(offset(3_723_456), "+1:02:03.456");
  assert.equal(offset(-5), "-0.005s");
});

test("durations for people", () => {
  assert.equal(duration(850), "850ms");
  assert.equal(duration(12_345), "12.3s");
  assert.equal(duration(245_000), "4m 05s");
  assert.equal(duration(7_384_000), "2h 03m 04s");
  assert.equal(duration(-1), "0ms");
});

test("each mode shows its time; the title has them all", () => {
  const time = at(62_345);
  const previous = at(62_000);
  assert.equal(describeTime("utc", time, T0, previous).text, "10:01:02.345");
  assert.equal(describeTime("start", time, T0, previous).text, "+1:02.345");
  assert.equal(describeTime("delta", time, T0, previous).text, "+0.345s");
  assert.equal(describeTime("nonsense", time, T0, previous).text, "10:01:02.345");
  assert.equal(describeTime("utc", time, T0, previous).title, `${time} · +1:02.345 since the first line · +0.345s since the line before`);
});

test("the first line has no time since the line before", () => {
  assert.deepEqual(describeTime("delta", T0, T0, ""), { text: "", title: `${T0} · +0.000s since the first line`, gap: null });
});

test("a pause of GAP_MS or more is a gap, with its length", () => {
  assert.equal(describeTime("utc", at(GAP_MS - 1), T0, T0).gap, null);
  assert.equal(describeTime("utc", at(GAP_MS), T0, T0).gap, "5.0s");
  assert.equal(describeTime("utc", at(125_000), T0, at(5_000)).gap, "2m 00s");
});

test("a time that cannot be read is shown as written", () => {
  assert.deepEqual(describeTime("start", "2026-11-20 10:00:00.000 local", T0, T0), { text: "10:00:00.000", title: "2026-11-20 10:00:00.000 local", gap: null });
  assert.deepEqual(describeTime("delta", "", T0, T0), { text: "", title: "", gap: null });
});

test("ago is coarse", () => {
  const now = Date.parse(T0);
  assert.equal(ago(at(-42_000), now), "42s ago");
  assert.equal(ago(at(-300_000), now), "5m ago");
  assert.equal(ago(at(-3 * 3600_000), now), "3h ago");
  assert.equal(ago(at(-49 * 3600_000), now), "2d ago");
  assert.equal(ago("?", now), "?");
});
