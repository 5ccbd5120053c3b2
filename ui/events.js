// Reading one stream from the service: follow it live over SSE (backfill, then live,
// resuming with Last-Event-ID after a drop), or, when no live stream has that name,
// read its archive. Hands each line and each change of state to the caller.

import { authHeaders } from "./session.js";
import { errorMessage, isAuthFailure } from "./errors.js";
import { readEvents } from "./sse.js";
import { posOf } from "./lines.js";

const FIRST_RETRY_MS = 250;
const MAX_RETRY_MS = 10_000;

/** Whether a failed answer may succeed when asked again (server trouble, throttling). */
const retryable = (status) => status >= 500 || status === 429 || status === 408;

/** The `pos` a line without one is given: one after the last held, or 0. */
function nextPos(sink) {
  const last = sink.lastPos();
  return last === null ? 0 : last + 1;
}

/**
 * Reads stream `key` of `account` until it ends or fails.
 *
 * `sink` holds what was read and receives the rest: `lastPos()` (of the last line
 * held, null before any; a reconnect resumes after it), `line(raw, pos)`, `state(s)` with `s` one
 * of "live" | "reconnecting" | "closed" | "archived", and `fail(message, askToken)`
 * for a refusal that retrying cannot fix (`askToken`: the token was the problem).
 */
export async function readStream(account, key, sink) {
  const query = `accountID=${encodeURIComponent(account)}&key=${encodeURIComponent(key)}`;
  let delay = FIRST_RETRY_MS;
  for (;;) {
    const headers = authHeaders({ Accept: "text/event-stream" });
    const last = sink.lastPos();
    if (last !== null) headers["Last-Event-ID"] = String(last);
    let resp;
    try {
      resp = await fetch("/stream?" + query, { headers, cache: "no-store" });
    } catch {
      resp = null;
    }
    if (resp && resp.status === 404 && last === null) return readArchive(query, key, account, sink);
    if (resp && !resp.ok && !retryable(resp.status)) {
      return sink.fail(await errorMessage(resp), isAuthFailure(resp.status));
    }
    if (resp && resp.ok) {
      sink.state("live");
      let serverError = false;
      try {
        const ended = await readEvents(resp.body, (event, data, id) => {
          if (event === "eof") return "stop";
          if (event === "error") {
            serverError = true;
            return "stop";
          }
          if (event === "message" && data) {
            sink.line(data, id !== null && /^\d+$/.test(id) ? Number(id) : posOf(data, nextPos(sink)));
            delay = FIRST_RETRY_MS;
          }
          return undefined;
        });
        if (ended && !serverError) return sink.state("closed");
      } catch {
        // The connection dropped; reconnect below and resume after the last line.
      }
    }
    sink.state("reconnecting");
    await new Promise((r) => setTimeout(r, delay + Math.random() * delay));
    delay = Math.min(delay * 2, MAX_RETRY_MS);
  }
}

/** Reads the archive of a stream that is not live (`GET /blob`, NDJSON). */
async function readArchive(query, key, account, sink) {
  let resp;
  try {
    resp = await fetch("/blob?" + query, { headers: authHeaders(), cache: "no-store" });
  } catch (e) {
    return sink.fail("Could not reach the log service: " + e.message, false);
  }
  if (!resp.ok) {
    const msg = resp.status === 404 ? `No stream or archive named “${key}” in account “${account}”.` : await errorMessage(resp);
    return sink.fail(msg, isAuthFailure(resp.status));
  }
  const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
  let rest = "";
  for (;;) {
    const { value, done } = await reader.read();
    const text = done ? rest + "\n" : rest + value;
    let start = 0;
    for (let nl = text.indexOf("\n"); nl >= 0; nl = text.indexOf("\n", start)) {
      const row = text.slice(start, nl).trim();
      start = nl + 1;
      if (row) sink.line(row, posOf(row, nextPos(sink)));
    }
    rest = text.slice(start);
    if (done) break;
  }
  sink.state("archived");
}

/**
 * The section index and ledger of stream `key` (`GET /stream/sections`): the answer's
 * JSON, or null when it could not be had (the page then shows the lines unfolded;
 * a later fetch may succeed).
 */
export async function readSections(account, key, since = 0) {
  // `since`: only the sections from that index on (the page keeps the closed ones before it).
  const query = `accountID=${encodeURIComponent(account)}&key=${encodeURIComponent(key)}` + (since > 0 ? `&since=${since}` : "");
  try {
    const resp = await fetch("/stream/sections?" + query, { headers: authHeaders(), cache: "no-store" });
    return resp.ok ? await resp.json() : null;
  } catch {
    return null;
  }
}
