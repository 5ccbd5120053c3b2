//! The lines waiting to be sent: the line numbering, the memory queue, its byte count
//! and the spill cursor, kept consistent by one type.
//!
//! Who owns what: the producer side ([`crate::lines`]) numbers lines and puts them
//! here; the sender ([`crate::sender`]) takes them out, moves the cursor over the rows
//! it read back from the spool, rewinds it to resend, or stops the queue. Both work
//! only through these methods, under the writer's lock, so the invariants below hold
//! between any two calls whoever made them:
//! - the byte count is the sum of the queued rows' lengths;
//! - the queued rows are the lines just before the spill cursor's `pos` (or before
//!   `next_pos` when not spilling), with no gap: the first queued `pos` follows from the
//!   counts alone;
//! - while spilling, the lines from the cursor's `pos` up to `next_pos` are in the
//!   spool only, and no new line is queued in memory (a line queued past them would be
//!   sent before them);
//! - a stopped queue holds nothing and never takes a line again.
//!
//! Pure: no I/O, no clock, no lock of its own (tested against a model below).

use std::collections::VecDeque;

/// Where the sender must read from the spool: lines from `pos` (at byte `offset`)
/// onwards are on disk only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SpillCursor {
    /// The first line that is on disk only.
    pos: u64,
    /// Its byte offset in the spool file.
    offset: u64,
}

impl SpillCursor {
    /// The first line that is on disk only.
    pub(crate) fn pos(self) -> u64 {
        self.pos
    }

    /// Its byte offset in the spool file.
    pub(crate) fn offset(self) -> u64 {
        self.offset
    }
}

/// Rows taken from the front of the memory queue for one batch.
#[derive(Debug)]
pub(crate) struct Taken {
    first_pos: u64,
    rows: Vec<Vec<u8>>,
    body_len: usize,
}

impl Taken {
    /// The `pos` of the first row.
    pub(crate) fn first_pos(&self) -> u64 {
        self.first_pos
    }

    /// The rows, in `pos` order (each a serialised line without its newline).
    pub(crate) fn rows(&self) -> &[Vec<u8>] {
        &self.rows
    }

    /// The length of the JSON array body they make (`[row,row]`).
    pub(crate) fn body_len(&self) -> usize {
        self.body_len
    }
}

/// The numbering and the lines not yet handed to the sender; see the module docs.
#[derive(Debug, Default, Clone)]
pub(crate) struct SendQueue {
    next_pos: u64,
    /// Rows kept as the `Vec` they were serialised into: turning them into `Bytes`
    /// would allocate a second time per line (the capacity is larger than the length).
    rows: VecDeque<Vec<u8>>,
    bytes: usize,
    spill: Option<SpillCursor>,
    stopped: bool,
}

/// What numbering a spooled line did to the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Numbered {
    pos: u64,
    spill_started: bool,
}

impl Numbered {
    /// The line's `pos`.
    pub(crate) fn pos(self) -> u64 {
        self.pos
    }

    /// The queue overflowed with this line: the sender reads from the spool from here on.
    pub(crate) fn spill_started(self) -> bool {
        self.spill_started
    }
}

impl SendQueue {
    /// An empty queue whose first line gets `pos` `first` (a writer continuing a
    /// stream that already holds `first` lines).
    pub(crate) fn starting_at(first: u64) -> SendQueue {
        SendQueue {
            next_pos: first,
            ..SendQueue::default()
        }
    }

    /// The `pos` the next line gets.
    pub(crate) fn next_pos(&self) -> u64 {
        self.next_pos
    }

    /// Bytes of rows in memory.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Rows in memory.
    pub(crate) fn len(&self) -> usize {
        self.rows.len()
    }

    /// Where reading from the spool starts, while lines are on disk only.
    pub(crate) fn spill(&self) -> Option<SpillCursor> {
        self.spill
    }

    /// Live streaming has stopped: nothing is queued any more.
    pub(crate) fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// Whether a producer must wait for room (backpressure): the queue is at its cap
    /// of `max` bytes, or lines wait on disk.
    pub(crate) fn is_full(&self, max: usize) -> bool {
        !self.stopped && (self.spill.is_some() || self.bytes >= max)
    }

    /// Whether a row of `len` bytes would be queued in memory now (callers copy the
    /// row only then).
    pub(crate) fn fits(&self, len: usize, max: usize) -> bool {
        !self.stopped && self.spill.is_none() && self.bytes + len <= max
    }

    /// Numbers a line that is in the spool at `offset`. Its row is queued when it
    /// [`fits`](Self::fits) under `max`; otherwise, unless the queue is stopped or
    /// spilling already, the queue starts spilling at this line.
    pub(crate) fn push_spooled(&mut self, row: &[u8], offset: u64, max: usize) -> Numbered {
        let pos = self.next_pos;
        self.next_pos += 1;
        let mut spill_started = false;
        if self.fits(row.len(), max) {
            self.bytes += row.len();
            self.rows.push_back(row.to_vec());
        } else if !self.stopped && self.spill.is_none() {
            self.spill = Some(SpillCursor { pos, offset });
            spill_started = true;
        }
        Numbered { pos, spill_started }
    }

    /// Numbers and queues a row that is nowhere else (a marker the spool could not
    /// take), past the byte cap: it is small and says what was lost. Refused, and
    /// handed back unnumbered, while spilling (it would overtake the lines on disk)
    /// or stopped.
    pub(crate) fn push_unspooled(&mut self, row: Vec<u8>) -> Result<u64, Vec<u8>> {
        if self.stopped || self.spill.is_some() {
            return Err(row);
        }
        let pos = self.next_pos;
        self.next_pos += 1;
        self.bytes += row.len();
        self.rows.push_back(row);
        Ok(pos)
    }

    /// Lines numbered after the queue that are only in the spool (0 unless spilling).
    pub(crate) fn spilled_count(&self) -> u64 {
        self.spill.map_or(0, |c| self.next_pos - c.pos)
    }

    /// Takes rows from the front for one batch: at most `max_lines`, and no more than
    /// `max_bytes` of body unless a single row is longer.
    pub(crate) fn take(&mut self, max_lines: usize, max_bytes: usize) -> Option<Taken> {
        if self.rows.is_empty() {
            return None;
        }
        let first_pos = self.next_pos - self.rows.len() as u64 - self.spilled_count();
        let mut rows = Vec::with_capacity(self.rows.len().min(max_lines));
        // `[` and `]`, and a comma before every row but the first.
        let mut body_len = 1;
        while let Some(row) = self.rows.front() {
            let n = rows.len();
            if n > 0 && (n >= max_lines || body_len + row.len() + 1 > max_bytes) {
                break;
            }
            body_len += row.len() + 1;
            self.bytes -= row.len();
            rows.extend(self.rows.pop_front());
        }
        Some(Taken {
            first_pos,
            rows,
            body_len,
        })
    }

    /// The sender read `count` rows (`len` bytes of the file) from the spool at `cur`:
    /// the cursor moves past them, and spilling ends once it reaches `next_pos`.
    /// Returns false (and changes nothing) when the cursor is no longer `cur` — it was
    /// rewound, or stopped, while the rows were read.
    pub(crate) fn advance_spill(&mut self, cur: SpillCursor, count: u64, len: u64) -> bool {
        if self.spill != Some(cur) {
            return false;
        }
        let next = SpillCursor {
            pos: cur.pos + count,
            offset: cur.offset + len,
        };
        self.spill = (next.pos < self.next_pos).then_some(next);
        true
    }

    /// Sends everything from `pos` (at byte `offset` of the spool) again: the memory
    /// queue is dropped (every queued line is also in the spool) and the sender reads
    /// from the spool until it catches up. Refused when stopped or `pos` is not numbered.
    pub(crate) fn rewind(&mut self, pos: u64, offset: u64) -> bool {
        if self.stopped || pos >= self.next_pos {
            return false;
        }
        self.clear();
        self.spill = Some(SpillCursor { pos, offset });
        true
    }

    /// The spool lost the lines from `keep` on, which were on disk only (a failed
    /// write): their numbers are given back, and spilling ends when no spilled line is
    /// left. `keep` is not below the spill cursor (queued lines are never given back).
    pub(crate) fn give_back(&mut self, keep: u64) {
        let Some(cur) = self.spill else {
            return;
        };
        let keep = keep.max(cur.pos);
        self.next_pos = self.next_pos.min(keep);
        if cur.pos >= self.next_pos {
            self.spill = None;
        }
    }

    /// Live streaming stopped: everything queued is dropped and nothing more is taken.
    /// Returns whether this call stopped it.
    pub(crate) fn stop(&mut self) -> bool {
        let first = !self.stopped;
        self.stopped = true;
        self.clear();
        first
    }

    /// Whether the next batch is as large as it can get: at a size cap, or (spilling)
    /// made of queued lines that no new line can join, or of spilled lines past a cap
    /// (`spool_written`: the spool's length, where the spilled rows end).
    pub(crate) fn full_batch_ready(
        &self,
        max_lines: usize,
        max_bytes: u64,
        spool_written: u64,
    ) -> bool {
        match self.spill {
            Some(_) if !self.rows.is_empty() => true,
            Some(cur) => {
                self.next_pos - cur.pos >= max_lines as u64
                    || spool_written - cur.offset >= max_bytes
            }
            None => self.rows.len() >= max_lines || self.bytes as u64 >= max_bytes,
        }
    }

    fn clear(&mut self) {
        self.rows.clear();
        self.bytes = 0;
        self.spill = None;
    }
}

#[cfg(test)]
mod tests {
    //! A model test in the manner of Vector's disk buffer: random operations on the
    //! queue and on a model too simple to be wrong (every line's row and offset, and the
    //! next `pos` the sender expects), checked against each other after every step.
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        /// A producer line of this many bytes, spooled.
        Line(usize),
        /// A marker that the spool refused.
        Marker,
        /// The sender takes the next batch (memory first, else reads the spool).
        Send {
            max_lines: usize,
            max_bytes: usize,
        },
        /// The service lost lines: resend from this far back (a fraction of sent).
        Rewind(u8),
        /// The spool's write failed: lines past this fraction of the spilled ones are gone.
        GiveBack(u8),
        Stop,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (1usize..60).prop_map(Op::Line),
            1 => Just(Op::Marker),
            4 => (1usize..6, 1usize..200).prop_map(|(l, b)| Op::Send { max_lines: l, max_bytes: b }),
            1 => any::<u8>().prop_map(Op::Rewind),
            1 => any::<u8>().prop_map(Op::GiveBack),
            1 => Just(Op::Stop),
        ]
    }

    /// The model: every numbered line's row and spool offset (`None`: not in the
    /// spool), what the sender has received, whether streaming stopped.
    #[derive(Default)]
    struct Model {
        lines: Vec<(Vec<u8>, Option<u64>)>,
        spool_len: u64,
        sent_to: u64,
        stopped: bool,
        /// A marker went out unspooled: the spool had failed, so resending from it is
        /// refused (the sender checks the spool's failure before rewinding).
        spool_failed: bool,
    }

    fn row(pos: u64, len: usize) -> Vec<u8> {
        let mut r = format!("{pos}:").into_bytes();
        r.resize(r.len().max(len), b'x');
        r
    }

    fn pos_of(row: &[u8]) -> u64 {
        let end = row.iter().position(|b| *b == b':').unwrap_or(0);
        std::str::from_utf8(&row[..end])
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(u64::MAX)
    }

    const MAX: usize = 150;

    proptest! {
        /// `full_batch_ready` is what lets the sender take a batch while a request is in
        /// flight: a batch it calls full is the same whether or not more lines arrive
        /// first, so taking it early never splits lines adaptive batching sends together.
        #[test]
        fn a_batch_called_full_cannot_grow(
            lens in proptest::collection::vec(1usize..60, 0..40),
            extra in 1usize..60, max_lines in 1usize..8, max_bytes in 1u64..300,
        ) {
            let mut q = SendQueue::default();
            let mut offset = 0;
            for len in lens {
                q.push_spooled(&row(q.next_pos(), len), offset, MAX);
                offset += len as u64 + 1;
            }
            let ready = q.full_batch_ready(max_lines, max_bytes, offset);
            let mut now = q.clone();
            let mut later = q.clone();
            later.push_spooled(&row(later.next_pos(), extra), offset, MAX);
            let taken_now = now.take(max_lines, max_bytes as usize).map(|t| t.rows);
            let taken_later = later.take(max_lines, max_bytes as usize).map(|t| t.rows);
            if ready {
                prop_assert_eq!(taken_now, taken_later);
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        #[test]
        fn the_queue_hands_out_every_line_once_in_order_within_its_cap(
            ops in proptest::collection::vec(op(), 1..200)
        ) {
            let mut q = SendQueue::default();
            let mut m = Model::default();
            for op in ops {
                match op {
                    Op::Line(len) => {
                        let r = row(q.next_pos(), len);
                        let fits = q.fits(r.len(), MAX);
                        let was_spilling = q.spill().is_some();
                        let n = q.push_spooled(&r, m.spool_len, MAX);
                        prop_assert_eq!(n.pos, m.lines.len() as u64);
                        prop_assert_eq!(n.spill_started, !fits && !was_spilling && !m.stopped);
                        m.lines.push((r.clone(), Some(m.spool_len)));
                        m.spool_len += r.len() as u64 + 1;
                    }
                    Op::Marker => {
                        let r = row(q.next_pos(), 10);
                        let spilling = q.spill().is_some();
                        match q.push_unspooled(r.clone()) {
                            Ok(pos) => {
                                prop_assert!(!spilling && !m.stopped);
                                prop_assert_eq!(pos, m.lines.len() as u64);
                                m.lines.push((r, None));
                                m.spool_failed = true;
                            }
                            Err(back) => {
                                prop_assert!(spilling || m.stopped);
                                prop_assert_eq!(back, r);
                            }
                        }
                    }
                    Op::Send { max_lines, max_bytes } => {
                        if let Some(t) = q.take(max_lines, max_bytes) {
                            prop_assert!(!m.stopped);
                            prop_assert_eq!(t.first_pos, m.sent_to, "memory rows out of order");
                            prop_assert!(!t.rows.is_empty() && t.rows.len() <= max_lines);
                            prop_assert!(t.rows.len() == 1 || t.body_len <= max_bytes);
                            let body: usize = 1 + t.rows.iter().map(|r| r.len() + 1).sum::<usize>();
                            prop_assert_eq!(t.body_len, body);
                            for (i, r) in t.rows.iter().enumerate() {
                                let pos = t.first_pos + i as u64;
                                prop_assert_eq!(pos_of(r), pos);
                                prop_assert_eq!(r, &m.lines[pos as usize].0);
                            }
                            m.sent_to += t.rows.len() as u64;
                        } else if let Some(cur) = q.spill() {
                            // Read back from the model's spool, as the sender would.
                            prop_assert_eq!(cur.pos, m.sent_to, "spool read out of order");
                            prop_assert_eq!(Some(cur.offset), m.lines[cur.pos as usize].1);
                            let end = (cur.pos + max_lines as u64).min(m.lines.len() as u64);
                            let read = &m.lines[cur.pos as usize..end as usize];
                            prop_assert!(read.iter().all(|(_, off)| off.is_some()), "a spilled line is not in the spool");
                            let len: u64 = read.iter().map(|(r, _)| r.len() as u64 + 1).sum();
                            prop_assert!(q.advance_spill(cur, read.len() as u64, len));
                            prop_assert!(!q.advance_spill(cur, 1, 1), "a stale cursor moved");
                            m.sent_to = end;
                        } else {
                            // Nothing waits: the sender has everything, or streaming stopped.
                            prop_assert!(m.stopped || m.sent_to == m.lines.len() as u64);
                        }
                    }
                    Op::Rewind(f) => {
                        let pos = m.sent_to * u64::from(f) / 255;
                        let offset = m.lines.get(pos as usize).and_then(|l| l.1);
                        // Only to a spooled line (the sender finds its offset in the file).
                        if let Some(offset) = offset.filter(|_| !m.spool_failed) {
                            let done = q.rewind(pos, offset);
                            prop_assert_eq!(done, !m.stopped);
                            if done {
                                m.sent_to = pos;
                            }
                        }
                    }
                    Op::GiveBack(f) => {
                        if let Some(cur) = q.spill() {
                            let spilled = m.lines.len() as u64 - cur.pos;
                            let keep = cur.pos + spilled * u64::from(f) / 255;
                            q.give_back(keep);
                            m.lines.truncate(keep as usize);
                            m.spool_len = m.lines.last().and_then(|(r, off)| off.map(|o| o + r.len() as u64 + 1)).unwrap_or(0);
                        }
                    }
                    Op::Stop => {
                        prop_assert_eq!(q.stop(), !m.stopped);
                        m.stopped = true;
                    }
                }
                // The invariants, after every operation.
                prop_assert_eq!(q.next_pos(), m.lines.len() as u64);
                prop_assert_eq!(q.bytes(), q.rows.iter().map(Vec::len).sum::<usize>());
                prop_assert!(q.bytes() <= MAX + 10 * m.lines.iter().filter(|l| l.1.is_none()).count());
                if m.stopped {
                    prop_assert!(q.len() == 0 && q.spill().is_none() && !q.is_full(MAX));
                }
                if let Some(cur) = q.spill() {
                    prop_assert!(cur.pos < q.next_pos());
                    prop_assert!(q.is_full(MAX));
                }
                let queued_end = q.spill().map_or(q.next_pos(), |c| c.pos);
                prop_assert!(queued_end >= q.len() as u64);
                // What waits (memory, then spool) is exactly what the sender lacks.
                if !m.stopped {
                    prop_assert_eq!(queued_end - q.len() as u64, m.sent_to);
                }
            }
        }
    }
}
