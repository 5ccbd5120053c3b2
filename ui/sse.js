// Server-sent events (the `text/event-stream` format): a parser that does no I/O, so it
// can be tested alone, and `readEvents`, which feeds it a fetch body.
//
// The viewer reads `/stream` with fetch rather than EventSource because it must send
// `Authorization` and `Last-Event-ID`; this is the part of EventSource it then needs.

/**
 * Splits event-stream text, fed in chunks cut anywhere (even inside a line or a
 * CRLF), into events. Fields other than `event`, `data` and `id` are ignored, as are
 * comment lines (the service's keep-alive pings); an event is dispatched at a blank
 * line if it has data or a name. Unlike EventSource, an event without an `id` field
 * reports no id (null) rather than the last one seen: the caller derives a line's
 * `pos` from each event alone.
 */
export class SseParser {
  #rest = "";
  #event = "";
  #data = null;
  #id = null;

  /**
   * Parses `chunk` and calls `onEvent(event, data, id)` for every event it completes
   * (`event` defaults to "message"). When `onEvent` answers "stop", parsing ends
   * there and `push` returns true; otherwise it returns false and keeps any partial
   * line for the next chunk.
   */
  push(chunk, onEvent) {
    // One cursor over the chunk: slicing the remainder per line would copy it per line.
    const buf = this.#rest + chunk;
    let start = 0;
    for (let nl = buf.indexOf("\n"); nl >= 0; nl = buf.indexOf("\n", start)) {
      const end = nl > start && buf.charCodeAt(nl - 1) === 13 ? nl - 1 : nl;
      const lineStart = start;
      start = nl + 1;
      if (end === lineStart) {
        const complete = this.#data !== null || this.#event;
        const stop = complete && onEvent(this.#event || "message", this.#data ?? "", this.#id) === "stop";
        this.#event = "";
        this.#data = null;
        this.#id = null;
        if (stop) {
          this.#rest = buf.slice(start);
          return true;
        }
        continue;
      }
      if (buf.charCodeAt(lineStart) === 58) continue; // ":" comment (keep-alive ping)
      const colon = buf.indexOf(":", lineStart);
      const fieldEnd = colon < 0 || colon > end ? end : colon;
      const field = buf.slice(lineStart, fieldEnd);
      let valueStart = fieldEnd < end ? fieldEnd + 1 : end;
      if (buf.charCodeAt(valueStart) === 32 && valueStart < end) valueStart++;
      const val = buf.slice(valueStart, end);
      if (field === "data") this.#data = this.#data === null ? val : this.#data + "\n" + val;
      else if (field === "event") this.#event = val;
      else if (field === "id") this.#id = val;
    }
    this.#rest = buf.slice(start);
    return false;
  }
}

/**
 * Reads an event-stream `body` (a ReadableStream of bytes) to its end, calling
 * `onEvent(event, data, id)` per event. Returns true when `onEvent` stopped it (the
 * body is then cancelled), false when the body ended first.
 */
export async function readEvents(body, onEvent) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  const parser = new SseParser();
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return false;
    if (parser.push(value, onEvent)) {
      reader.cancel().catch(() => {});
      return true;
    }
  }
}
