// Time as a reader wants it, from the `time` every line carries (RFC 3339): the
// clock time in UTC or the browser's zone, the time since the stream's first line, or
// the time since the line before; pauses long enough to notice; a stream's total.
// No DOM: rows.js and stream.js show what this computes.

/** The ways the time column can show a line's time. */
export const TIME_MODES = ["utc", "local", "start", "delta"];

/** A pause between two lines at least this long is marked in the gutter: long enough
 * to notice when watching a log, short enough to catch a stalled download. */
export const GAP_MS = 5_000;

/**
 * Milliseconds since the epoch of an RFC 3339 time (finer digits are dropped), or NaN.
 * Only the RFC 3339 shape is accepted: Date.parse alone would also read other,
 * browser-dependent spellings.
 */
export function parseTime(text) {
  if (!/^\d{4}-\d\d-\d\d[Tt ]\d\d:\d\d:\d\d(?:\.\d+)?(?:[Zz]|[+-]\d\d:\d\d)$/.test(text)) return NaN;
  return Date.parse(text);
}

const pad = (n, width = 2) => String(n).padStart(width, "0");

/** `HH:MM:SS.mmm` of `ms`, in UTC or (zone "local") the browser's time zone. */
export function clock(ms, zone) {
  const d = new Date(ms);
  return zone === "local"
    ? `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`
    : `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())}.${pad(d.getUTCMilliseconds(), 3)}`;
}

/**
 * A signed offset to the millisecond, as short as it can be: `+2.345s`, `+1:02.345`,
 * `+1:02:03.456`. A negative offset (writers whose clocks disagree) keeps its sign.
 */
export function offset(ms) {
  const sign = ms < 0 ? "-" : "+";
  const abs = Math.round(Math.abs(ms));
  const milli = pad(abs % 1000, 3);
  const s = Math.floor(abs / 1000);
  if (s < 60) return `${sign}${s}.${milli}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${sign}${m}:${pad(s % 60)}.${milli}`;
  return `${sign}${Math.floor(m / 60)}:${pad(m % 60)}:${pad(s % 60)}.${milli}`;
}

/** A duration for people: `850ms`, `12.3s`, `4m 05s`, `2h 03m 04s`. */
export function duration(ms) {
  const abs = Math.max(0, Math.round(ms));
  if (abs < 1000) return `${abs}ms`;
  if (abs < 60_000) return `${(Math.floor(abs / 100) / 10).toFixed(1)}s`;
  const s = Math.floor(abs / 1000);
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${pad(s % 60)}s`;
  return `${Math.floor(m / 60)}h ${pad(m % 60)}m ${pad(s % 60)}s`;
}

/**
 * What the time column shows for a line written at `time` (its RFC 3339 text), given
 * the first line's time `start` and the previous line's `previous` (either may be ""
 * when there is none): `{text, title, gap}`, `gap` the length of the pause before the
 * line when it is `GAP_MS` or more (else null). A time that cannot be read is shown as
 * written, with no offsets.
 */
export function describeTime(mode, time, start, previous) {
  const t = parseTime(time);
  if (!Number.isFinite(t)) return { text: time ? time.slice(11, 23) : "", title: time, gap: null };
  const s = parseTime(start);
  const p = parseTime(previous);
  const sinceStart = Number.isFinite(s) ? offset(t - s) : "";
  const sincePrevious = Number.isFinite(p) ? offset(t - p) : "";
  const text = { utc: () => clock(t, "utc"), local: () => clock(t, "local"), start: () => sinceStart, delta: () => sincePrevious }[mode]?.() ?? clock(t, "utc");
  const title = [time, sinceStart && `${sinceStart} since the first line`, sincePrevious && `${sincePrevious} since the line before`].filter(Boolean).join(" · ");
  return { text, title, gap: Number.isFinite(p) && t - p >= GAP_MS ? duration(t - p) : null };
}

/** How long ago `time` was at `now` (ms), coarsely: `42s ago`, `5m ago`, `3h ago`, `2d ago`. */
export function ago(time, now) {
  const t = Date.parse(time);
  if (!Number.isFinite(t)) return time;
  const s = Math.max(0, Math.round((now - t) / 1000));
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.floor(s / 60)}m ago`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ago`;
  return `${Math.floor(s / 86400)}d ago`;
}
