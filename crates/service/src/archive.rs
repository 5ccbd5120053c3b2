//! Archive encoding: NDJSON rows, gzip in and out, with bounded decompression.
//!
//! Everything here is synchronous CPU work on whole buffers; callers with large
//! inputs run it under `spawn_blocking`.

use crate::store::StoredLine;
use bytes::Bytes;
use flate2::Compression;
use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;
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
        if row.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        // serde_json skips ignored strings without checking their UTF-8, so check here.
        std::str::from_utf8(row).map_err(|e| ArchiveError::BadRow {
            line: i + 1,
            msg: e.to_string(),
        })?;
        serde_json::from_slice::<serde::de::IgnoredAny>(row)
            .map_err(|e| ArchiveError::BadRow {
                line: i + 1,
                msg: e.to_string(),
            })
            .and_then(|_| {
                if row.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{') {
                    Ok(())
                } else {
                    Err(ArchiveError::BadRow {
                        line: i + 1,
                        msg: "expected an object".into(),
                    })
                }
            })?;
        rows += 1;
    }
    Ok(rows)
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

/// The `pos` of each NDJSON row (rows without a numeric `pos` are skipped), paired
/// with the row's bytes; used to replay an archive as SSE.
pub fn rows_with_pos(data: &Bytes) -> Vec<StoredLine> {
    #[derive(serde::Deserialize)]
    struct Pos {
        pos: u64,
    }
    let mut out = Vec::new();
    let mut start = 0;
    for row in data.split(|&b| b == b'\n') {
        let end = start + row.len();
        let trimmed = row.strip_suffix(b"\r").unwrap_or(row);
        if let Ok(p) = serde_json::from_slice::<Pos>(trimmed) {
            out.push(StoredLine {
                pos: p.pos,
                json: data.slice(start..start + trimmed.len()),
            });
        }
        start = end + 1;
    }
    out
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

    #[test]
    fn rows_keep_their_pos() {
        let rows = rows_with_pos(&Bytes::from_static(b"{\"pos\":4}\r\n{\"pos\":7}\n"));
        assert_eq!(rows.iter().map(|r| r.pos).collect::<Vec<_>>(), vec![4, 7]);
        assert_eq!(&rows[1].json[..], b"{\"pos\":7}");
    }
}
