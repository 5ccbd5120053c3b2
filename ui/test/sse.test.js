import { test } from "node:test";
import assert from "node:assert/strict";
import { SseParser, readEvents } from "../sse.js";

/** Every event `text` holds, fed in chunks cut at `cuts` (offsets). */
function parse(text, cuts = []) {
  const parser = new SseParser();
  const events = [];
  let at = 0;
  for (const cut of [...cuts, text.length]) {
    parser.push(text.slice(at, cut), (event, data, id) => {
      events.push({ event, data, id });
    });
    at = cut;
  }
  return events;
}

test("an event is dispatched at the blank line, with its id", () => {
  assert.deepEqual(parse('id: 7\ndata: {"pos":7}\n\n'), [{ event: "message", data: '{"pos":7}', id: "7" }]);
});

test("nothing is dispatched before the blank line", () => {
  assert.deepEqual(parse("id: 1\ndata: x\n"), []);
});

test("data lines join with newlines; one space after the colon is dropped, a second is kept", () => {
  assert.deepEqual(parse("data: a\ndata:  b\ndata:c\n\n"), [{ event: "message", data: "a\n b\nc", id: null }]);
});

test("CRLF line ends are understood", () => {
  assert.deepEqual(parse("event: eof\r\ndata: done\r\n\r\n"), [{ event: "eof", data: "done", id: null }]);
});

test("comments (keep-alive pings) and unknown fields are ignored", () => {
  assert.deepEqual(parse(": ping\nretry: 100\nfoo: bar\ndata: x\n\n: ping\n\n"), [{ event: "message", data: "x", id: null }]);
});

test("a named event without data is dispatched with empty data", () => {
  assert.deepEqual(parse("event: eof\n\n"), [{ event: "eof", data: "", id: null }]);
});

test("a field without a colon has an empty value", () => {
  assert.deepEqual(parse("data\n\n"), [{ event: "message", data: "", id: null }]);
});

test("the id does not carry over to the next event", () => {
  assert.deepEqual(parse("id: 1\ndata: a\n\ndata: b\n\n"), [
    { event: "message", data: "a", id: "1" },
    { event: "message", data: "b", id: null },
  ]);
});

test("chunks cut anywhere give the same events", () => {
  const text = 'id: 1\r\ndata: {"out":"héllo: world"}\r\n\r\n: ping\nevent: eof\ndata: end\n\n';
  const whole = parse(text);
  assert.equal(whole.length, 2);
  for (let a = 0; a <= text.length; a++) {
    for (const b of [a, a + 1, a + 7]) {
      assert.deepEqual(parse(text, b <= text.length ? [a, b] : [a]), whole, `cut at ${a} and ${b}`);
    }
  }
});

test("answering stop ends parsing at that event", () => {
  const parser = new SseParser();
  const seen = [];
  const stopped = parser.push("data: a\n\nevent: eof\n\ndata: after\n\n", (event, data) => {
    seen.push(data);
    return event === "eof" ? "stop" : undefined;
  });
  assert.equal(stopped, true);
  assert.deepEqual(seen, ["a", ""]);
});

test("readEvents reads a byte stream to its end, or until stopped", async () => {
  const body = (parts) =>
    new ReadableStream({
      start(c) {
        for (const p of parts) c.enqueue(new TextEncoder().encode(p));
        c.close();
      },
    });
  const seen = [];
  assert.equal(await readEvents(body(["data: a\n", "\ndata: b\n\n"]), (_e, d) => void seen.push(d)), false);
  assert.deepEqual(seen, ["a", "b"]);
  assert.equal(await readEvents(body(["event: eof\n\n", "data: never\n\n"]), () => "stop"), true);
});

test("readEvents decodes a character split across chunks", async () => {
  const bytes = new TextEncoder().encode("data: é\n\n");
  const cut = bytes.indexOf(0xc3) + 1; // inside the two bytes of "é"
  const body = new ReadableStream({
    start(c) {
      c.enqueue(bytes.slice(0, cut));
      c.enqueue(bytes.slice(cut));
      c.close();
    },
  });
  const seen = [];
  await readEvents(body, (_e, d) => void seen.push(d));
  assert.deepEqual(seen, ["é"]);
});
