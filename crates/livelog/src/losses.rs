//! Lines lost to a bound, and the marker lines that say so.
//!
//! A line is lost when the spool refuses it (its disk cap, or a failed write); the
//! loss is counted here, and the stream gets a marker line at the first loss ("lines
//! are being dropped from here on: …") and one at close with the exact totals. This
//! module decides what the markers say and when; [`crate::lines`] numbers, spools and
//! queues them like any line. It keeps no other state and does no I/O.

/// The marker text at the first loss.
fn dropping_marker(reason: &str) -> String {
    format!("[livelog] lines are being dropped from here on: {reason}\n")
}

/// Where the first loss started and why.
#[derive(Debug, Clone)]
struct Loss {
    /// `pos` the first lost line would have had.
    at_pos: u64,
    reason: String,
    /// The totals the last totals marker gave (`None`: none given yet, or that
    /// marker was lost with the rows of a failed write).
    reported: Option<(u64, u64)>,
}

/// The writer's losses and the markers waiting to say them.
#[derive(Debug, Default)]
pub(crate) struct Losses {
    first: Option<Loss>,
    dropped_lines: u64,
    dropped_bytes: u64,
    /// Marker texts (with their times) waiting for the sender to finish reading the
    /// spilled lines the spool file holds: the spool has failed, so a marker can only
    /// go out from memory, and only after every line numbered before it.
    held: Vec<(String, String)>,
    /// Numbers of the marker lines written to the spool: a failed write that takes
    /// one back must not count it as a dropped line of the process.
    spooled: Vec<u64>,
}

impl Losses {
    /// Lines and bytes of the process dropped so far.
    pub(crate) fn dropped(&self) -> (u64, u64) {
        (self.dropped_lines, self.dropped_bytes)
    }

    /// One line of `len` bytes that would have been `pos` was refused; `reason` is
    /// asked only at the first loss. Returns the marker to emit, at the first loss.
    pub(crate) fn line_refused(
        &mut self,
        pos: u64,
        len: usize,
        reason: impl FnOnce() -> String,
    ) -> Option<String> {
        self.dropped_lines += 1;
        self.dropped_bytes += len as u64;
        metrics::counter!("livelog_dropped_lines_total").increment(1);
        if self.first.is_some() {
            return None;
        }
        let reason = reason();
        let marker = dropping_marker(&reason);
        self.first = Some(Loss {
            at_pos: pos,
            reason,
            reported: None,
        });
        Some(marker)
    }

    /// A failed spool write took the lines from `keep` on with it: `lines` lines of the
    /// process (`bytes` of text) and, when `marker_lost`, a marker. Returns the marker
    /// to hold (see [`Losses::hold`]): at the first loss, or to say again one that was
    /// taken back.
    pub(crate) fn unwritten_lost(
        &mut self,
        keep: u64,
        lines: u64,
        bytes: u64,
        marker_lost: bool,
        reason: impl FnOnce() -> String,
    ) -> Option<String> {
        self.dropped_lines += lines;
        self.dropped_bytes += bytes;
        metrics::counter!("livelog_dropped_lines_total").increment(lines);
        self.spooled.retain(|p| *p < keep);
        if lines == 0 && !marker_lost {
            return None;
        }
        let first_loss = self.first.is_none();
        let loss = self.first.get_or_insert_with(|| Loss {
            at_pos: keep,
            reason: reason(),
            reported: None,
        });
        // Lines from `keep` on are all lost now, whatever was lost before.
        loss.at_pos = loss.at_pos.min(keep);
        loss.reported = None;
        (first_loss || marker_lost).then(|| dropping_marker(&loss.reason))
    }

    /// The totals marker due at close (unless these totals were said already), and
    /// the totals to pass to [`Losses::reported`] once it is emitted.
    pub(crate) fn totals_marker(&self) -> Option<(String, (u64, u64))> {
        let loss = self.first.as_ref()?;
        let totals = self.dropped();
        if loss.reported == Some(totals) {
            return None;
        }
        let (lines, bytes) = totals;
        let text = format!(
            "[livelog] {lines} lines ({bytes} bytes) were dropped starting after line {}: {}\n",
            loss.at_pos.saturating_sub(1),
            loss.reason
        );
        Some((text, totals))
    }

    /// The totals marker for `totals` was emitted.
    pub(crate) fn reported(&mut self, totals: (u64, u64)) {
        if let Some(l) = self.first.as_mut() {
            l.reported = Some(totals);
        }
    }

    /// A marker was written to the spool as line `pos`.
    pub(crate) fn marker_spooled(&mut self, pos: u64) {
        self.spooled.push(pos);
    }

    /// Whether line `pos` is a marker written to the spool.
    pub(crate) fn is_spooled_marker(&self, pos: u64) -> bool {
        self.spooled.contains(&pos)
    }

    /// Keeps a marker (with its time) until it can be queued after the spilled lines.
    pub(crate) fn hold(&mut self, text: String, time: String) {
        self.held.push((text, time));
    }

    /// Whether markers are held.
    pub(crate) fn holds_markers(&self) -> bool {
        !self.held.is_empty()
    }

    /// The held markers, in order, handed over once.
    pub(crate) fn take_held(&mut self) -> Vec<(String, String)> {
        std::mem::take(&mut self.held)
    }
}
