// ANSI escape sequences in log text → styled segments.
//
// Only SGR sequences (ESC [ … m) change the style; every other escape sequence
// (cursor moves, screen clears, OSC titles and hyperlinks) is removed, so an escape
// code is never shown raw. Nothing here builds HTML: callers put segment text into
// textContent, so a log line can never inject markup.

const SEQUENCE = /\x1b(?:\[([0-9;:?]*)([ -/]*[@-~])|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[PX^_][^\x1b]*(?:\x1b\\)?|[^[\]PX^_]?)/g;

/** Style state: fg/bg are null, a palette index 0–255, or an "rgb(…)" string. */
function freshStyle() {
  return { fg: null, bg: null, bold: false, dim: false, italic: false, underline: false, inverse: false, strike: false };
}

/** A terminal's handling of `\r`: the text after the last carriage return wins. */
export function afterCarriageReturn(text) {
  const trimmed = text.endsWith("\r\n") ? text.slice(0, -2) : text.endsWith("\n") ? text.slice(0, -1) : text;
  const cr = trimmed.lastIndexOf("\r");
  return cr >= 0 && cr < trimmed.length - 1 ? trimmed.slice(cr + 1) : trimmed.replace(/\r$/, "");
}

function applySgr(style, params) {
  const codes = params === "" ? [0] : params.split(/[;:]/).map((p) => (p === "" ? 0 : Number(p)));
  for (let i = 0; i < codes.length; i++) {
    const c = codes[i];
    if (c === 0) Object.assign(style, freshStyle());
    else if (c === 1) style.bold = true;
    else if (c === 2) style.dim = true;
    else if (c === 3) style.italic = true;
    else if (c === 4) style.underline = true;
    else if (c === 7) style.inverse = true;
    else if (c === 9) style.strike = true;
    else if (c === 22) style.bold = style.dim = false;
    else if (c === 23) style.italic = false;
    else if (c === 24) style.underline = false;
    else if (c === 27) style.inverse = false;
    else if (c === 29) style.strike = false;
    else if (c >= 30 && c <= 37) style.fg = c - 30;
    else if (c === 39) style.fg = null;
    else if (c >= 40 && c <= 47) style.bg = c - 40;
    else if (c === 49) style.bg = null;
    else if (c >= 90 && c <= 97) style.fg = c - 90 + 8;
    else if (c >= 100 && c <= 107) style.bg = c - 100 + 8;
    else if (c === 38 || c === 48) {
      let colour = null;
      if (codes[i + 1] === 5 && i + 2 < codes.length) {
        colour = Math.max(0, Math.min(255, codes[i + 2]));
        i += 2;
      } else if (codes[i + 1] === 2 && i + 4 < codes.length) {
        const [r, g, b] = codes.slice(i + 2, i + 5).map((v) => Math.max(0, Math.min(255, v | 0)));
        colour = `rgb(${r}, ${g}, ${b})`;
        i += 4;
      } else {
        break; // malformed extended colour: ignore the rest, as terminals do
      }
      if (c === 38) style.fg = colour;
      else style.bg = colour;
    }
  }
}

/** Splits a line into `{text, style}` segments; escape sequences are consumed. */
export function parseAnsi(raw) {
  const text = afterCarriageReturn(raw);
  const segments = [];
  let style = freshStyle();
  let last = 0;
  if (text.indexOf("\x1b") < 0) return text ? [{ text, style }] : [];
  SEQUENCE.lastIndex = 0;
  for (let m; (m = SEQUENCE.exec(text)); ) {
    if (m.index > last) segments.push({ text: text.slice(last, m.index), style });
    last = SEQUENCE.lastIndex;
    if (m[2] === "m" && m[1] !== undefined && !m[1].includes("?")) {
      style = { ...style };
      applySgr(style, m[1]);
    }
  }
  if (last < text.length) segments.push({ text: text.slice(last), style });
  return segments;
}

/** The line's visible text: escape sequences removed, `\r` overwrites applied. */
export function stripAnsi(raw) {
  const text = afterCarriageReturn(raw);
  return text.indexOf("\x1b") < 0 ? text : text.replace(SEQUENCE, "");
}

/** The 256-colour palette entry `n` (16–255) as a CSS colour. */
export function paletteColour(n) {
  if (n < 232) {
    const v = n - 16;
    const level = (x) => (x === 0 ? 0 : 55 + x * 40);
    return `rgb(${level(Math.floor(v / 36))}, ${level(Math.floor(v / 6) % 6)}, ${level(v % 6)})`;
  }
  const grey = 8 + (n - 232) * 10;
  return `rgb(${grey}, ${grey}, ${grey})`;
}

/**
 * Applies a segment's style to a span: palette colours 0–15 through classes (so
 * the theme decides them), the rest through the CSSOM (allowed by the strict CSP,
 * unlike style attributes).
 */
export function styleSpan(span, style) {
  let fg = style.fg;
  let bg = style.bg;
  if (style.inverse) [fg, bg] = [bg === null ? "inv-fg" : bg, fg === null ? "inv-bg" : fg];
  const classes = [];
  if (style.bold) classes.push("sgr-bold");
  if (style.dim) classes.push("sgr-dim");
  if (style.italic) classes.push("sgr-italic");
  if (style.underline) classes.push("sgr-underline");
  if (style.strike) classes.push("sgr-strike");
  if (fg === "inv-fg") classes.push("sgr-inv-fg");
  else if (typeof fg === "number" && fg < 16) classes.push("fg" + fg);
  else if (typeof fg === "number") span.style.color = paletteColour(fg);
  else if (typeof fg === "string") span.style.color = fg;
  if (bg === "inv-bg") classes.push("sgr-inv-bg");
  else if (typeof bg === "number" && bg < 16) classes.push("bg" + bg);
  else if (typeof bg === "number") span.style.backgroundColor = paletteColour(bg);
  else if (typeof bg === "string") span.style.backgroundColor = bg;
  if (classes.length) span.className = classes.join(" ");
}

/** Whether a segment's style differs from the default (needs a span). */
export function isStyled(style) {
  return style.fg !== null || style.bg !== null || style.bold || style.dim || style.italic || style.underline || style.inverse || style.strike;
}
