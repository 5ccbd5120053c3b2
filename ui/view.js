// Which lines are rows, in order. The store counts lines, the scroller counts rows; a
// view maps between them: every line, or a subset (the search matches while
// filtering). Views that hide lines another way (folded sections) answer the same
// three questions.

/** Every line of `store` is a row. */
export function allLines(store) {
  return {
    /** Whether this is the reading view (every line, folded sections aside), not the filter's matches. */
    whole: true,
    /** Rows in the view. */
    get count() {
      return store.length;
    },
    /** Line index of row `v`. */
    lineAt: (v) => v,
    /** Row of line `i`. */
    rowOf: (i) => i,
  };
}

/** The lines `indexes` (ascending; it may grow while the view is used) are the rows. */
export function someLines(indexes) {
  return {
    whole: false,
    get count() {
      return indexes.length;
    },
    lineAt: (v) => indexes[v],
    /** Row of line `i`, or of the first line after it in the view (`count` if none). */
    rowOf(i) {
      let lo = 0;
      let hi = indexes.length;
      while (lo < hi) {
        const mid = (lo + hi) >>> 1;
        if (indexes[mid] < i) lo = mid + 1;
        else hi = mid;
      }
      return lo;
    },
  };
}
