//! An uploaded archive checked while its body arrives: inflated (when gzip) and
//! split into rows a piece at a time, every row validated, and the bytes to store
//! kept compressed — the body as it came when gzip, compressed here at level 1 when
//! plain. No plain copy of the archive is ever held: memory is the compressed
//! archive plus one piece of text (a 200 MB plain upload used to be held whole, and a
//! gzip one inflated whole, up to the 4 GiB archive limit).

use crate::archive::{ArchiveError, ReadLimits, RowDecoder, is_gzip, validate_row};
use bytes::Bytes;
use flate2::Compression;
use flate2::write::GzEncoder;
use std::io::Write;

/// What is kept to store.
enum Kept {
    /// Not decided yet (fewer than two bytes seen).
    Undecided(Vec<u8>),
    /// The body was gzip: kept as it came.
    Gzip(Vec<u8>),
    /// The body was plain: compressed as it arrives.
    Plain(Box<GzEncoder<Vec<u8>>>),
}

/// One upload's check; see the module docs.
pub struct ArchiveIngest {
    declared_gzip: bool,
    dec: RowDecoder,
    kept: Kept,
    /// Rows offered so far, blank ones included (error messages count lines).
    seen: usize,
    /// Non-blank rows, each a JSON object.
    rows: usize,
}

impl ArchiveIngest {
    /// The check of one upload; `declared_gzip`: its `Content-Encoding` said gzip.
    pub fn new(declared_gzip: bool, max_inflated: u64) -> Self {
        ArchiveIngest {
            declared_gzip,
            dec: RowDecoder::new(ReadLimits {
                max_inflated,
                // A row is bounded only by the archive's size, as before.
                max_row: usize::try_from(max_inflated).unwrap_or(usize::MAX),
            }),
            kept: Kept::Undecided(Vec::new()),
            seen: 0,
            rows: 0,
        }
    }

    /// The next piece of the body.
    pub fn feed(&mut self, mut piece: &[u8]) -> Result<(), ArchiveError> {
        self.keep(piece)?;
        while !piece.is_empty() {
            let n = self.dec.feed(piece)?;
            piece = &piece[n..];
            self.take_rows()?;
        }
        Ok(())
    }

    /// The body ended: the number of rows and the gzip bytes to store.
    pub fn finish(mut self) -> Result<(usize, Bytes), ArchiveError> {
        self.decide(true)?;
        self.dec.finish()?;
        self.take_rows()?;
        if let Some(last) = self.dec.last_row() {
            self.seen += 1;
            if validate_row(&last, self.seen)? {
                self.rows += 1;
            }
        }
        let gz = match self.kept {
            Kept::Gzip(raw) => raw,
            Kept::Plain(enc) => enc
                .finish()
                .map_err(|e| ArchiveError::BadGzip(e.to_string()))?,
            Kept::Undecided(_) => GzEncoder::new(Vec::new(), Compression::fast())
                .finish()
                .map_err(|e| ArchiveError::BadGzip(e.to_string()))?,
        };
        Ok((self.rows, Bytes::from(gz)))
    }

    fn take_rows(&mut self) -> Result<(), ArchiveError> {
        let (mut seen, mut rows, mut bad) = (self.seen, self.rows, None);
        self.dec.rows(|row| {
            seen += 1;
            match validate_row(row, seen) {
                Ok(counted) => {
                    rows += usize::from(counted);
                    true
                }
                Err(e) => {
                    bad = Some(e);
                    false
                }
            }
        })?;
        (self.seen, self.rows) = (seen, rows);
        bad.map_or(Ok(()), Err)
    }

    fn keep(&mut self, piece: &[u8]) -> Result<(), ArchiveError> {
        match &mut self.kept {
            Kept::Undecided(head) => {
                head.extend_from_slice(piece);
                self.decide(false)
            }
            Kept::Gzip(raw) => {
                raw.extend_from_slice(piece);
                Ok(())
            }
            Kept::Plain(enc) => enc
                .write_all(piece)
                .map_err(|e| ArchiveError::BadGzip(e.to_string())),
        }
    }

    /// Picks how to keep the body once two bytes are known (or it ended). The
    /// bytes are trusted over the header: a gzip body without the header is kept as
    /// gzip, never compressed twice; a body declared gzip that is not is refused.
    fn decide(&mut self, ended: bool) -> Result<(), ArchiveError> {
        let Kept::Undecided(head) = &mut self.kept else {
            return Ok(());
        };
        if head.len() < 2 && !ended {
            return Ok(());
        }
        let head = std::mem::take(head);
        if is_gzip(&head) {
            self.kept = Kept::Gzip(head);
        } else if self.declared_gzip {
            return Err(ArchiveError::BadGzip("invalid gzip header".into()));
        } else {
            let mut enc = GzEncoder::new(Vec::new(), Compression::fast());
            enc.write_all(&head)
                .map_err(|e| ArchiveError::BadGzip(e.to_string()))?;
            self.kept = Kept::Plain(Box::new(enc));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::archive::{gunzip_limited, gzip};

    fn ingest(body: &[u8], gz: bool, piece: usize) -> Result<(usize, Bytes), ArchiveError> {
        let mut i = ArchiveIngest::new(gz, 1 << 30);
        for p in body.chunks(piece.max(1)) {
            i.feed(p)?;
        }
        i.finish()
    }

    #[test]
    fn plain_and_gzip_bodies_in_any_pieces_store_the_same_text() {
        // Blank rows, CRLF, and a last row without its newline.
        let mut text = b"{\"pos\":0}\n\n{\"pos\":1}\r\n{\"pos\":2}\n".repeat(50);
        text.extend_from_slice(b"{\"pos\":3}");
        for piece in [1, 2, 3, 7, 64, 100_000] {
            let (rows, gz) = ingest(&text, false, piece).unwrap();
            assert_eq!(rows, 151, "piece {piece}");
            assert_eq!(gunzip_limited(&gz, 1 << 30).unwrap(), text);
            let sent = gzip(&text);
            let (rows, kept) = ingest(&sent, true, piece).unwrap();
            assert_eq!(rows, 151);
            assert_eq!(kept, sent, "gzip is kept as it came");
        }
    }

    #[test]
    fn a_bad_row_is_refused_with_its_line() {
        let body = b"{\"a\":1}\n[1]\n";
        let err = ingest(body, false, 3).unwrap_err();
        assert!(
            matches!(err, ArchiveError::BadRow { line: 2, .. }),
            "{err:?}"
        );
        let err = ingest(b"{\"a\":1}\n{\"b\":", false, 4).unwrap_err();
        assert!(
            matches!(err, ArchiveError::BadRow { line: 2, .. }),
            "{err:?}"
        );
        assert!(ingest(b"{}\n", true, 1).is_err(), "declared gzip, is not");
    }

    #[test]
    fn more_text_than_the_limit_is_refused() {
        let text = b"{\"pos\":0}\n".repeat(1000);
        let mut i = ArchiveIngest::new(false, 5000);
        let err = text.chunks(512).try_for_each(|p| i.feed(p)).unwrap_err();
        assert!(matches!(err, ArchiveError::TooLarge(5000)), "{err:?}");
        let mut i = ArchiveIngest::new(true, 5000);
        let err = gzip(&text)
            .chunks(64)
            .try_for_each(|p| i.feed(p))
            .unwrap_err();
        assert!(matches!(err, ArchiveError::TooLarge(5000)), "{err:?}");
    }
}
