// Virtual scrolling and following the tail. The viewport holds a spacer as tall as
// all rows (scaled past MAX_SPACER) and one screenful of row elements moved to where
// the reader looks; this module maps scroll positions to rows and back, and decides
// when the reader's own scrolling turns following off or on.

/** px; must match .row in viewer.css. */
export const ROW_HEIGHT = 18;
/**
 * Browsers cap element heights (Chrome ~33.5M px, Firefox ~17.9M px). Beyond this,
 * scroll positions map onto rows proportionally instead of one pixel per pixel.
 */
export const MAX_SPACER = 8_000_000;

/** The scroll geometry of `n` rows in a viewport `viewH` px tall. */
export function geometry(n, viewH) {
  const full = n * ROW_HEIGHT;
  const spacerH = Math.min(full, MAX_SPACER);
  return { n, viewH, full, spacerH, scaled: full > MAX_SPACER };
}

/** The fractional row index at the top of the viewport when scrolled to `top`. */
export function rowAt(top, g) {
  if (!g.scaled) return top / ROW_HEIGHT;
  const maxScroll = Math.max(1, g.spacerH - g.viewH);
  return (top / maxScroll) * Math.max(0, g.n - g.viewH / ROW_HEIGHT);
}

/** The scroll position that shows row `v` at the top, or centred when `centre`. */
export function topFor(v, g, centre) {
  const rowsOnScreen = g.viewH / ROW_HEIGHT;
  const target = centre ? Math.max(0, v - rowsOnScreen / 2 + 0.5) : v;
  if (!g.scaled) return target * ROW_HEIGHT;
  return (target / Math.max(1, g.n - rowsOnScreen)) * (g.spacerH - g.viewH);
}

/** Whether scrolled to `top` the last row is in view. */
export function atBottom(top, g) {
  return top + g.viewH >= g.spacerH - ROW_HEIGHT;
}

/**
 * Whether to follow the tail after the reader (not the page) scrolled. Scrolling up
 * means reading: stop yanking the view to the end. Reaching the end again while the
 * stream is live means following again.
 */
export function followAfterReaderScroll({ following, bottom, live }) {
  if (!bottom && following) return false;
  if (bottom && !following && live) return true;
  return following;
}

/**
 * The scroll state of one viewport: `count()` rows, following the tail while
 * `followBox` is checked. Calls `render()` after every scroll, follow toggle and resize.
 */
export class Scroller {
  #viewport;
  #spacer;
  #followBox;
  #count;
  #isLive;
  #render;
  #programmaticTop = null; // the scrollTop we set last, until its scroll event

  constructor({ viewport, spacer, followBox, count, isLive, render }) {
    this.#viewport = viewport;
    this.#spacer = spacer;
    this.#followBox = followBox;
    this.#count = count;
    this.#isLive = isLive;
    this.#render = render;
    viewport.addEventListener("scroll", () => this.#onScroll());
    followBox.addEventListener("change", () => {
      if (followBox.checked) this.scrollToBottom();
      render();
    });
    window.addEventListener("resize", () => render());
  }

  /** Whether the view follows the end of the log. */
  get following() {
    return this.#followBox.checked;
  }

  set following(on) {
    this.#followBox.checked = on;
  }

  /** The current geometry. */
  geometry() {
    return geometry(this.#count(), this.#viewport.clientHeight);
  }

  /** The fractional row index at the top of the viewport. */
  topIndex(g = this.geometry()) {
    return rowAt(this.#viewport.scrollTop, g);
  }

  /** Sizes the spacer for the current row count (before any scroll that needs it). */
  syncSpacer(g = this.geometry()) {
    const h = g.spacerH + "px";
    if (this.#spacer.style.height !== h) this.#spacer.style.height = h;
    return g;
  }

  /** Scrolls so row `v` is visible (centred when `centre`), then renders. */
  scrollToView(v, centre = true) {
    this.#setScrollTop(topFor(v, this.syncSpacer(), centre));
    this.#render();
  }

  /** Scrolls to the last row. */
  scrollToBottom() {
    const g = this.syncSpacer();
    this.#setScrollTop(Math.max(0, g.spacerH - g.viewH));
  }

  /** New rows arrived: keep the last in view while following. */
  onNewRows() {
    if (this.following) this.scrollToBottom();
  }

  #setScrollTop(top) {
    this.#programmaticTop = Math.round(top);
    this.#viewport.scrollTop = top;
  }

  #onScroll() {
    const top = this.#viewport.scrollTop;
    const ours = this.#programmaticTop !== null && Math.abs(top - this.#programmaticTop) <= 1;
    this.#programmaticTop = null;
    if (!ours) {
      const bottom = atBottom(top, this.geometry());
      this.following = followAfterReaderScroll({ following: this.following, bottom, live: this.#isLive() });
    }
    this.#render();
  }
}
