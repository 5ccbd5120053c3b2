// Line links in the address: `#L42` one line, `#L10-L20` a range (line numbers are
// `pos + 1`).

/** The range `{from, to}` (inclusive, ascending) a hash names, or null. */
export function parseLineHash(hash) {
  const m = /^#L(\d+)(?:-L?(\d+))?$/.exec(hash);
  if (!m) return null;
  const a = Number(m[1]);
  const b = m[2] ? Number(m[2]) : a;
  return { from: Math.min(a, b), to: Math.max(a, b) };
}

/** The hash naming lines `a` to `b`, in either order. */
export function lineHash(a, b) {
  const from = Math.min(a, b);
  const to = Math.max(a, b);
  return from === to ? `#L${from}` : `#L${from}-L${to}`;
}
