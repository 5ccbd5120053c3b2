//! Archive encoding: NDJSON rows, gzip in and out, with bounded decompression.
//!
//! Whole-buffer functions ([`gunzip_limited`], [`validate_ndjson`]) are
//! synchronous CPU work; callers with large inputs run them under `spawn_blocking`.
//! Reading an archive back ([`RowDecoder`], [`replay`], [`inflate`]) is done as it
//! arrives from the object store, a bounded piece at a time: a reader that stops
//! reading holds one piece, never the archive.
//!
//! Over 700 lines with its tests (about 170); the code is writing and reading one
//! format, which change together.

use crate::store::{StoreError, StoredLine, TAIL_CHUNK_BYTES, TAIL_CHUNK_LINES, TailItem};
use bytes::{Buf, Bytes};
use flate2::Compression;
use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;
use futures_util::stream::{BoxStream, StreamExt};
use std::io::{Read, Write};

/// Why an archive body was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArchiveError {
    /// Not valid gzip.
    #[error("body is not valid gzip: {0}")]
    BadGzip(String),
    /// Decompressed to more than the limit (a zip bomb, or simply too big).
    #[error("archive decompresses to more than {0} bytes")]
    TooLarge(u64),
    /// A row of an archive being read back is longer than the replay allows.
    #[error("row {line} of the archive is longer than {max} bytes")]
    RowTooLong {
        /// 1-based row number.
        line: usize,
        /// The limit.
        max: usize,
    },
    /// A row is not a JSON object (or not UTF-8).
    #[error("line {line} of the archive is not a JSON object: {msg}")]
    BadRow {
        /// 1-based row number.
        line: usize,
        /// The parser's message.
        msg: String,
    },
}

/// Whether `b` starts with the gzip magic bytes.
pub fn is_gzip(b: &[u8]) -> bool {
    b.starts_with(&[0x1f, 0x8b])
}

/// Compresses `data` with gzip. Level 1: archives are written on the request path,
/// and fast compression still shrinks log text several times.
pub fn gzip(data: &[u8]) -> Bytes {
    let mut enc = GzEncoder::new(Vec::with_capacity(data.len() / 4 + 64), Compression::fast());
    // Writing into a Vec cannot fail.
    let _ = enc.write_all(data);
    Bytes::from(enc.finish().unwrap_or_default())
}

/// Decompresses gzip (every member), refusing output larger than `max` bytes.
pub fn gunzip_limited(data: &[u8], max: u64) -> Result<Vec<u8>, ArchiveError> {
    let mut out = Vec::new();
    let mut dec = MultiGzDecoder::new(data).take(max + 1);
    dec.read_to_end(&mut out)
        .map_err(|e| ArchiveError::BadGzip(e.to_string()))?;
    if out.len() as u64 > max {
        return Err(ArchiveError::TooLarge(max));
    }
    Ok(out)
}

/// Checks that every non-empty row of NDJSON is a JSON object.
pub fn validate_ndjson(data: &[u8]) -> Result<usize, ArchiveError> {
    let mut rows = 0;
    for (i, row) in data.split(|&b| b == b'\n').enumerate() {
        let row = row.strip_suffix(b"\r").unwrap_or(row);
        rows += usize::from(validate_row(row, i + 1)?);
    }
    Ok(rows)
}

/// Checks one row (line number `line`, without its newline): blank (`false`) or a
/// JSON object (`true`).
pub fn validate_row(row: &[u8], line: usize) -> Result<bool, ArchiveError> {
    if row.iter().all(u8::is_ascii_whitespace) {
        return Ok(false);
    }
    // serde_json skips ignored strings without checking their UTF-8, so check here.
    std::str::from_utf8(row).map_err(|e| ArchiveError::BadRow {
        line,
        msg: e.to_string(),
    })?;
    serde_json::from_slice::<serde::de::IgnoredAny>(row).map_err(|e| ArchiveError::BadRow {
        line,
        msg: e.to_string(),
    })?;
    if row.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{') {
        Ok(true)
    } else {
        Err(ArchiveError::BadRow {
            line,
            msg: "expected an object".into(),
        })
    }
}

/// NDJSON of stored lines: one JSON object per row, each ending in `\n`.
pub fn ndjson(lines: &[StoredLine]) -> Vec<u8> {
    let size = lines.iter().map(|l| l.json.len() + 1).sum();
    let mut out = Vec::with_capacity(size);
    for l in lines {
        out.extend_from_slice(&l.json);
        out.push(b'\n');
    }
    out
}

/// Most compressed bytes given to the decoder at once, and most plain bytes taken
/// from the input at once: what one step of a reader inflates is bounded by this
/// (plus the decoder's own 32 KiB output buffer), whatever the compression ratio.
const FEED_BYTES: usize = 64 << 10;

/// Longest archive row replayed as a line to a viewer: a row is held whole while
/// it is found and sent, so this bounds what one viewer of an archive holds. Lines
/// are cut by writers far below it (livelog: 64 KiB); a longer row ends the replay
/// with an error, and `GET /blob` still serves the archive whole.
pub const MAX_REPLAY_ROW_BYTES: usize = 16 << 20;

/// Bounds of reading an archive back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadLimits {
    /// Most bytes the archive may inflate to (the same bound as for an upload).
    pub max_inflated: u64,
    /// Longest row held while looking for its end: a row without a newline is
    /// otherwise read into memory to the archive's end.
    pub max_row: usize,
}

enum Mode {
    /// Fewer than two bytes seen: gzip or not is not known yet.
    Sniffing(Vec<u8>),
    /// Inflating; the decoder writes into its `Vec`, which holds the text not yet
    /// taken as rows.
    Gzip(Box<flate2::write::MultiGzDecoder<Vec<u8>>>),
    /// Stored as plain NDJSON (an external uploader, through a presigned link).
    Plain(Vec<u8>),
}

/// Splits an archive into rows as its bytes arrive: gzip (every member) or plain
/// NDJSON, decided by the first two bytes, as [`is_gzip`] does for a whole body.
///
/// Memory: the text not yet taken as rows (the rows of one feed plus one
/// unfinished row, which is refused once longer than [`ReadLimits::max_row`]), plus
/// what one [`feed`](Self::feed) inflates.
pub struct RowDecoder {
    mode: Mode,
    /// Bytes at the start of the text already taken as rows.
    taken: usize,
    /// Bytes after `taken` known to hold no newline.
    scanned: usize,
    /// Rows taken so far (for error messages).
    rows: usize,
    inflated: u64,
    limits: ReadLimits,
}

impl RowDecoder {
    /// A decoder for one archive.
    pub fn new(limits: ReadLimits) -> Self {
        RowDecoder {
            mode: Mode::Sniffing(Vec::with_capacity(2)),
            taken: 0,
            scanned: 0,
            rows: 0,
            inflated: 0,
            limits,
        }
    }

    fn text(&mut self) -> &mut Vec<u8> {
        if matches!(self.mode, Mode::Sniffing(_)) {
            // Not reached (text is only asked for once the mode is known); an empty
            // plain text is the harmless answer.
            self.mode = Mode::Plain(Vec::new());
        }
        match &mut self.mode {
            Mode::Gzip(dec) => dec.get_mut(),
            Mode::Plain(text) | Mode::Sniffing(text) => text,
        }
    }

    /// Drops the rows already taken from the text, so the decoder's output goes
    /// after what is still needed; done before more input, never per row (one move
    /// of the rest of the text per feed, not one per row).
    fn compact(&mut self) {
        let taken = std::mem::take(&mut self.taken);
        if taken > 0 {
            self.text().drain(..taken);
        }
    }

    fn check_inflated(&mut self, before: usize) -> Result<(), ArchiveError> {
        let after = self.text().len();
        self.inflated += after.saturating_sub(before) as u64;
        if self.inflated > self.limits.max_inflated {
            return Err(ArchiveError::TooLarge(self.limits.max_inflated));
        }
        Ok(())
    }

    /// Takes some of `input` (at most `FEED_BYTES`, 64 KiB) and answers how many bytes it
    /// took; their text is then offered by [`rows`](Self::rows).
    pub fn feed(&mut self, input: &[u8]) -> Result<usize, ArchiveError> {
        self.compact();
        if let Mode::Sniffing(head) = &mut self.mode {
            let n = input.len().min(2 - head.len());
            head.extend_from_slice(&input[..n]);
            if head.len() == 2 {
                self.decide()?;
            }
            return Ok(n);
        }
        let input = &input[..input.len().min(FEED_BYTES)];
        let before = self.text().len();
        let n = match &mut self.mode {
            Mode::Gzip(dec) => dec
                .write(input)
                .map_err(|e| ArchiveError::BadGzip(e.to_string()))?,
            Mode::Plain(text) => {
                text.extend_from_slice(input);
                input.len()
            }
            Mode::Sniffing(_) => 0,
        };
        self.check_inflated(before)?;
        Ok(n)
    }

    /// Picks the mode from the first bytes and gives them to it.
    fn decide(&mut self) -> Result<(), ArchiveError> {
        let Mode::Sniffing(head) = &mut self.mode else {
            return Ok(());
        };
        let head = std::mem::take(head);
        if is_gzip(&head) {
            let mut dec = flate2::write::MultiGzDecoder::new(Vec::new());
            // Two header bytes: the decoder keeps them until its header is whole.
            dec.write_all(&head)
                .map_err(|e| ArchiveError::BadGzip(e.to_string()))?;
            self.mode = Mode::Gzip(Box::new(dec));
        } else {
            self.mode = Mode::Plain(head);
        }
        Ok(())
    }

    /// The input has ended: inflates what the decoder still holds and checks the
    /// gzip trailer. The last row, if it has no newline, is then offered by
    /// [`last_row`](Self::last_row).
    pub fn finish(&mut self) -> Result<(), ArchiveError> {
        self.decide()?;
        self.compact();
        let before = self.text().len();
        if let Mode::Gzip(dec) = &mut self.mode {
            dec.try_finish()
                .map_err(|e| ArchiveError::BadGzip(e.to_string()))?;
        }
        self.check_inflated(before)
    }

    /// Offers each complete row (without its `\n` and a `\r` before it) to `take`,
    /// in order, until `take` answers `false` (that row is kept for the next call)
    /// or no complete row is left. Fails on a row longer than
    /// [`ReadLimits::max_row`], complete or still unfinished.
    pub fn rows(&mut self, mut take: impl FnMut(&[u8]) -> bool) -> Result<(), ArchiveError> {
        if matches!(self.mode, Mode::Sniffing(_)) {
            return Ok(());
        }
        let (mut taken, mut scanned) = (self.taken, self.scanned);
        let mut rows = self.rows;
        let text = std::mem::take(self.text());
        let result = loop {
            let start = taken + scanned;
            let Some(i) = memchr::memchr(b'\n', &text[start..]) else {
                scanned = text.len() - taken;
                if scanned > self.limits.max_row {
                    break Err(ArchiveError::RowTooLong {
                        line: rows + 1,
                        max: self.limits.max_row,
                    });
                }
                break Ok(());
            };
            let end = start + i;
            let row = &text[taken..end];
            // Refused however the bytes arrived (a row found whole in one feed too).
            if row.len() > self.limits.max_row {
                break Err(ArchiveError::RowTooLong {
                    line: rows + 1,
                    max: self.limits.max_row,
                });
            }
            if !take(row.strip_suffix(b"\r").unwrap_or(row)) {
                scanned = end - taken;
                break Ok(());
            }
            taken = end + 1;
            scanned = 0;
            rows += 1;
        };
        *self.text() = text;
        (self.taken, self.scanned, self.rows) = (taken, scanned, rows);
        result
    }

    /// After [`finish`](Self::finish): the last row when the text does not end
    /// with a newline (taken from the decoder).
    pub fn last_row(&mut self) -> Option<Vec<u8>> {
        if matches!(self.mode, Mode::Sniffing(_)) {
            return None;
        }
        self.compact();
        let rest = std::mem::take(self.text());
        self.scanned = 0;
        let trimmed = rest.strip_suffix(b"\r").unwrap_or(&rest);
        (!trimmed.iter().all(u8::is_ascii_whitespace)).then(|| trimmed.to_vec())
    }
}

impl RowDecoder {
    /// All the text inflated so far and not taken, rows or not (for a reader that
    /// wants the bytes, not the rows).
    pub fn take_text(&mut self) -> Vec<u8> {
        if matches!(self.mode, Mode::Sniffing(_)) {
            return Vec::new();
        }
        self.compact();
        self.scanned = 0;
        std::mem::take(self.text())
    }
}

/// The `pos` of one NDJSON row, if it has a numeric one.
fn row_pos(row: &[u8]) -> Option<u64> {
    #[derive(serde::Deserialize)]
    struct Pos {
        pos: u64,
    }
    serde_json::from_slice::<Pos>(row).ok().map(|p| p.pos)
}

/// Lines for one tail item, copied into one buffer: one allocation per chunk, and
/// a chunk never keeps the decoder's text alive.
#[derive(Default)]
struct ChunkBuilder {
    buf: Vec<u8>,
    lines: Vec<(u64, std::ops::Range<usize>)>,
}

impl ChunkBuilder {
    /// Adds a row unless the chunk is full (`false`: keep it for the next chunk).
    fn push(&mut self, pos: u64, row: &[u8]) -> bool {
        let full = self.lines.len() >= TAIL_CHUNK_LINES
            || (!self.lines.is_empty() && self.buf.len() + row.len() > TAIL_CHUNK_BYTES);
        if full {
            return false;
        }
        let start = self.buf.len();
        self.buf.extend_from_slice(row);
        self.lines.push((pos, start..self.buf.len()));
        true
    }

    fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    fn take(&mut self) -> Vec<StoredLine> {
        let buf = Bytes::from(std::mem::take(&mut self.buf));
        std::mem::take(&mut self.lines)
            .into_iter()
            .map(|(pos, span)| StoredLine {
                pos,
                json: buf.slice(span),
            })
            .collect()
    }
}

/// Inflated bytes between two yields to the scheduler while no chunk is ready (a
/// resume deep into a large archive inflates and skips rows for a while; the
/// worker thread must serve other connections meanwhile).
const YIELD_EVERY_BYTES: u64 = 4 << 20;

/// An archive's lines as a tail: the rows with `pos >= from`, in chunks of at
/// most [`TAIL_CHUNK_LINES`] lines and [`TAIL_CHUNK_BYTES`] bytes (a longer row is
/// a chunk of its own), then [`TailItem::Eof`]. `input` is the stored object as the
/// object store hands it out; it is read only when the next chunk is asked for, so
/// a reader that stops reading holds one chunk and one piece of input. Rows
/// without a numeric `pos` are skipped. A damaged archive ends the tail with
/// [`StoreError::Corrupt`] after the lines before the damage.
pub fn replay(
    input: BoxStream<'static, Result<Bytes, StoreError>>,
    from: u64,
    limits: ReadLimits,
) -> BoxStream<'static, Result<TailItem, StoreError>> {
    struct Replay {
        input: BoxStream<'static, Result<Bytes, StoreError>>,
        piece: Bytes,
        input_ended: bool,
        decoder: RowDecoder,
        chunk: ChunkBuilder,
        /// An error found while a chunk was being filled: it follows that chunk.
        failed: Option<StoreError>,
        done: bool,
    }
    let corrupt = |e: ArchiveError| StoreError::Corrupt(format!("archive: {e}"));
    let start = Replay {
        input,
        piece: Bytes::new(),
        input_ended: false,
        decoder: RowDecoder::new(limits),
        chunk: ChunkBuilder::default(),
        failed: None,
        done: false,
    };
    futures_util::stream::unfold(start, move |mut r| async move {
        if r.done {
            return None;
        }
        if let Some(e) = r.failed.take() {
            r.done = true;
            return Some((Err(e), r));
        }
        let mut since_yield = 0u64;
        let item = loop {
            let chunk = &mut r.chunk;
            let mut full = false;
            let rows = r.decoder.rows(|row| match row_pos(row) {
                Some(pos) if pos >= from => {
                    full = !chunk.push(pos, row);
                    !full
                }
                _ => true,
            });
            if let Err(e) = rows {
                break Err(corrupt(e));
            }
            if full {
                break Ok(TailItem::Lines(r.chunk.take()));
            }
            if r.input_ended {
                if let Some(row) = r.decoder.last_row()
                    && let Some(pos) = row_pos(&row).filter(|p| *p >= from)
                    && !r.chunk.push(pos, &row)
                {
                    // Full: this row goes out with the next call.
                    let lines = r.chunk.take();
                    r.chunk.push(pos, &row);
                    break Ok(TailItem::Lines(lines));
                }
                if !r.chunk.is_empty() {
                    break Ok(TailItem::Lines(r.chunk.take()));
                }
                r.done = true;
                break Ok(TailItem::Eof);
            }
            if r.piece.is_empty() {
                match r.input.next().await {
                    Some(Ok(piece)) => r.piece = piece,
                    Some(Err(e)) => break Err(e),
                    None => {
                        r.input_ended = true;
                        if let Err(e) = r.decoder.finish() {
                            break Err(corrupt(e));
                        }
                        continue;
                    }
                }
            }
            let before = r.decoder.inflated;
            match r.decoder.feed(&r.piece) {
                Ok(n) => r.piece.advance(n),
                Err(e) => break Err(corrupt(e)),
            }
            since_yield += r.decoder.inflated - before;
            if since_yield >= YIELD_EVERY_BYTES {
                since_yield = 0;
                tokio::task::yield_now().await;
            }
        };
        let item = match item {
            // The lines decoded before the damage go out first.
            Err(e) if !r.chunk.is_empty() => {
                r.failed = Some(e);
                Ok(TailItem::Lines(r.chunk.take()))
            }
            Err(e) => {
                r.done = true;
                Err(e)
            }
            ok => ok,
        };
        Some((item, r))
    })
    .boxed()
}

/// A stored archive inflated as it is read (for `GET /blob` from a client that
/// does not take gzip): pieces of at most about `FEED_BYTES` (64 KiB) plus the decoder's
/// buffer, read from `input` only when asked for. Plain archives pass through.
pub fn inflate(
    input: BoxStream<'static, Result<Bytes, StoreError>>,
    max_inflated: u64,
) -> BoxStream<'static, Result<Bytes, StoreError>> {
    struct Inflate {
        input: BoxStream<'static, Result<Bytes, StoreError>>,
        piece: Bytes,
        decoder: RowDecoder,
        done: bool,
    }
    let limits = ReadLimits {
        max_inflated,
        max_row: usize::MAX,
    };
    let corrupt = |e: ArchiveError| StoreError::Corrupt(format!("archive: {e}"));
    let start = Inflate {
        input,
        piece: Bytes::new(),
        decoder: RowDecoder::new(limits),
        done: false,
    };
    futures_util::stream::unfold(start, move |mut s| async move {
        if s.done {
            return None;
        }
        loop {
            if s.piece.is_empty() {
                match s.input.next().await {
                    Some(Ok(piece)) => s.piece = piece,
                    Some(Err(e)) => {
                        s.done = true;
                        return Some((Err(e), s));
                    }
                    None => {
                        s.done = true;
                        if let Err(e) = s.decoder.finish() {
                            return Some((Err(corrupt(e)), s));
                        }
                        let rest = s.decoder.take_text();
                        return (!rest.is_empty()).then(|| (Ok(Bytes::from(rest)), s));
                    }
                }
            }
            match s.decoder.feed(&s.piece) {
                Ok(n) => s.piece.advance(n),
                Err(e) => {
                    s.done = true;
                    return Some((Err(corrupt(e)), s));
                }
            }
            let out = s.decoder.take_text();
            if !out.is_empty() {
                return Some((Ok(Bytes::from(out)), s));
            }
        }
    })
    .boxed()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn gzip_round_trips_and_bombs_are_refused() {
        let data = vec![b'a'; 100_000];
        let gz = gzip(&data);
        assert!(is_gzip(&gz));
        assert_eq!(gunzip_limited(&gz, 100_000).unwrap(), data);
        assert_eq!(
            gunzip_limited(&gz, 99_999),
            Err(ArchiveError::TooLarge(99_999))
        );
        assert!(matches!(
            gunzip_limited(b"\x1f\x8bnope", 10),
            Err(ArchiveError::BadGzip(_))
        ));
    }

    #[test]
    fn ndjson_rows_must_be_objects() {
        assert_eq!(validate_ndjson(b"{\"pos\":0}\n\n{\"pos\":1}\n").unwrap(), 2);
        assert!(matches!(
            validate_ndjson(b"{\"pos\":0}\n[1]\n"),
            Err(ArchiveError::BadRow { line: 2, .. })
        ));
        assert!(validate_ndjson(b"{\"out\":\"\xff\"}\n").is_err());
    }

    fn pieces(data: &[u8], size: usize) -> BoxStream<'static, Result<Bytes, StoreError>> {
        let pieces: Vec<_> = data
            .chunks(size.max(1))
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        futures_util::stream::iter(pieces).boxed()
    }

    const LIMITS: ReadLimits = ReadLimits {
        max_inflated: 1 << 30,
        max_row: 1 << 20,
    };

    /// Every item of a replay: the lines' (pos, json) per chunk, and how it ended.
    async fn replayed(
        data: &[u8],
        piece: usize,
        from: u64,
        limits: ReadLimits,
    ) -> (Vec<Vec<(u64, Vec<u8>)>>, Result<(), StoreError>) {
        let mut tail = replay(pieces(data, piece), from, limits);
        let mut chunks = Vec::new();
        while let Some(item) = tail.next().await {
            match item {
                Ok(TailItem::Lines(lines)) => chunks.push(
                    lines
                        .into_iter()
                        .map(|l| (l.pos, l.json.to_vec()))
                        .collect(),
                ),
                Ok(TailItem::Eof) => {
                    assert!(tail.next().await.is_none(), "nothing after eof");
                    return (chunks, Ok(()));
                }
                Err(e) => {
                    assert!(tail.next().await.is_none(), "nothing after an error");
                    return (chunks, Err(e));
                }
            }
        }
        panic!("a replay ends with eof or an error");
    }

    fn flat(chunks: &[Vec<(u64, Vec<u8>)>]) -> Vec<(u64, Vec<u8>)> {
        chunks.iter().flatten().cloned().collect()
    }

    #[tokio::test]
    async fn replay_reads_rows_in_any_pieces_gzip_or_plain() {
        let plain = b"{\"pos\":0}\r\n\n{\"x\":1}\n{\"pos\":1,\"out\":\"a\"}\n{\"pos\":2}".to_vec();
        let want = vec![
            (0, b"{\"pos\":0}".to_vec()),
            (1, b"{\"pos\":1,\"out\":\"a\"}".to_vec()),
            (2, b"{\"pos\":2}".to_vec()),
        ];
        // Two gzip members, as an archive re-sent in parts may be.
        let mut two_members = gzip(&plain[..20]).to_vec();
        two_members.extend_from_slice(&gzip(&plain[20..]));
        for data in [plain.clone(), gzip(&plain).to_vec(), two_members] {
            for piece in [1, 2, 3, 7, 1 << 20] {
                let (chunks, end) = replayed(&data, piece, 0, LIMITS).await;
                assert_eq!(end, Ok(()));
                assert_eq!(flat(&chunks), want, "piece size {piece}");
                let (chunks, _) = replayed(&data, piece, 1, LIMITS).await;
                assert_eq!(flat(&chunks), want[1..], "from 1, piece size {piece}");
            }
        }
        let (chunks, end) = replayed(b"", 1, 0, LIMITS).await;
        assert!(chunks.is_empty() && end.is_ok());
    }

    #[tokio::test]
    async fn replay_chunks_are_capped_by_lines_and_bytes() {
        let row =
            |pos: u64, len: usize| format!("{{\"pos\":{pos},\"out\":\"{}\"}}\n", "x".repeat(len));
        // 100 KiB rows: two fit a chunk's bytes, three do not.
        let mut data: String = (0..10).map(|p| row(p, 100 << 10)).collect();
        // A row longer than a chunk's bytes is a chunk of its own.
        data += &row(10, TAIL_CHUNK_BYTES * 2);
        // Short rows: chunks of TAIL_CHUNK_LINES.
        data.extend((11..11 + 5000).map(|p| row(p, 1)));
        let (chunks, end) = replayed(&gzip(data.as_bytes()), 64 << 10, 0, LIMITS).await;
        assert_eq!(end, Ok(()));
        for chunk in &chunks {
            let bytes: usize = chunk.iter().map(|(_, j)| j.len()).sum();
            assert!(chunk.len() <= TAIL_CHUNK_LINES);
            assert!(
                chunk.len() == 1 || bytes <= TAIL_CHUNK_BYTES,
                "{bytes} bytes"
            );
        }
        let positions: Vec<u64> = flat(&chunks).iter().map(|(p, _)| *p).collect();
        assert_eq!(positions, (0..5011).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn replay_refuses_bombs_long_rows_and_damage_after_the_good_lines() {
        // Inflates past the limit: an error, not the whole text in memory.
        let bomb = gzip(&vec![b'\n'; 10 << 20]);
        let limits = ReadLimits {
            max_inflated: 1 << 20,
            ..LIMITS
        };
        let (_, end) = replayed(&bomb, 4096, 0, limits).await;
        assert!(matches!(end, Err(StoreError::Corrupt(m)) if m.contains("decompresses to more")));
        // A row without its end past `max_row`.
        let endless = gzip(&vec![b'a'; 3 << 20]);
        let (_, end) = replayed(&endless, 4096, 0, LIMITS).await;
        assert!(matches!(end, Err(StoreError::Corrupt(m)) if m.contains("longer than")));
        // Cut short: the lines before the cut, then an error.
        let rows: String = (0..1000).map(|p| format!("{{\"pos\":{p}}}\n")).collect();
        let gz = gzip(rows.as_bytes());
        let (chunks, end) = replayed(&gz[..gz.len() - 4], 100, 0, LIMITS).await;
        assert!(matches!(end, Err(StoreError::Corrupt(_))));
        assert_eq!(flat(&chunks).len(), 1000);
    }

    #[tokio::test]
    async fn inflate_streams_what_gunzip_answers() {
        let data: Vec<u8> = (0..200_000u32).flat_map(|i| i.to_le_bytes()).collect();
        let gz = gzip(&data);
        let mut out = Vec::new();
        let mut biggest = 0;
        let mut s = inflate(pieces(&gz, 10_000), 1 << 30);
        while let Some(piece) = s.next().await {
            let piece = piece.unwrap();
            biggest = biggest.max(piece.len());
            out.extend_from_slice(&piece);
        }
        assert_eq!(out, data);
        assert!(biggest <= 2 * FEED_BYTES, "pieces stay small: {biggest}");
        let mut s = inflate(pieces(&gz, 10_000), 1000);
        let mut failed = false;
        while let Some(piece) = s.next().await {
            failed |= piece.is_err();
        }
        assert!(failed, "the inflate limit holds");
    }
}
