//! The completeness check at close: the writer's stated totals against the lines
//! the store holds.

use crate::archive_build::ArchiveBuild;
use crate::store::section_index::StreamIndex;
use crate::store::{StoreError, StoredLine, StreamId, StreamStore};
use runlog_protocol::ledger::{Basis, Incomplete, Ledger, LineDigest, WriterTotals};
use std::borrow::Cow;
use std::sync::Arc;

/// Lines read per store call while checking.
const READ: usize = 16_384;

/// Most gaps listed; past it the last one listed runs to the end of what is missing
/// (a stream with every other line lost would otherwise list millions).
const MAX_GAPS: usize = 1_000;

/// What a pass over the held lines found.
#[derive(Default)]
struct Pass {
    lines: u64,
    bytes: u64,
    digest: LineDigest,
    first: Option<u64>,
    last: Option<u64>,
    gaps: Vec<Incomplete>,
}

impl Pass {
    fn gap(&mut self, from: u64, to: u64) {
        if self.gaps.len() < MAX_GAPS {
            self.gaps.push(Incomplete::Gap { from, to });
        } else if let Some(Incomplete::Gap { to: end, .. }) = self.gaps.last_mut() {
            *end = to;
        }
    }
}

/// Checks `id`'s held lines against `totals`. Reads every line back only when it
/// must: the writer stated bytes or a digest, the store holds a gap (to say
/// exactly where), or `archive` is to be built from the lines read. Otherwise the
/// store's counts prove contiguity on their own.
///
/// `archive` gets every line read, in `pos` order, while the digest is computed:
/// the caller keeps it only when the ledger proves those lines the writer's.
pub async fn check(
    streams: &dyn StreamStore,
    id: &StreamId,
    index: &StreamIndex,
    totals: &WriterTotals,
    closed_by_writer: bool,
    archive: Option<&mut ArchiveBuild>,
) -> Result<Ledger, StoreError> {
    let meta = streams.meta(id).await?;
    let contiguous = meta.last_contiguous_pos.map_or(0, |p| p + 1);
    let needs_text = totals.bytes.is_some() || totals.digest.is_some();
    let mut pass = Pass::default();
    if needs_text || archive.is_some() || meta.lines != contiguous {
        read_all(streams, id, needs_text, &mut pass, archive).await?;
    } else {
        pass.lines = meta.lines;
        pass.first = (meta.lines > 0).then_some(0);
        pass.last = meta.last_contiguous_pos;
    }
    let mut reasons = std::mem::take(&mut pass.gaps);
    if let Some(stated) = totals.lines {
        let next = pass.last.map_or(0, |l| l + 1);
        if stated > next {
            reasons.push(Incomplete::Gap {
                from: next,
                to: stated - 1,
            });
        }
        if stated != pass.lines {
            reasons.push(Incomplete::Lines {
                stated,
                held: pass.lines,
            });
        }
    }
    if let Some(stated) = totals.bytes
        && stated != pass.bytes
    {
        reasons.push(Incomplete::Bytes {
            stated,
            held: pass.bytes,
        });
    }
    let held_digest = pass.digest.finish();
    if let Some(stated) = &totals.digest
        && *stated != held_digest
    {
        reasons.push(Incomplete::Digest {
            stated: stated.clone(),
            held: held_digest,
        });
    }
    let marked: u64 = index.drops.iter().filter_map(|(_, n)| *n).sum();
    let dropped = totals.dropped.unwrap_or(marked);
    if dropped > 0 || !index.drops.is_empty() {
        reasons.push(Incomplete::Dropped {
            lines: dropped,
            at: index.drops.iter().map(|(pos, _)| *pos).collect(),
        });
    }
    if !closed_by_writer {
        reasons.push(Incomplete::NeverClosed);
    }
    let stated = totals_stated(totals);
    Ok(Ledger {
        complete: reasons.is_empty(),
        basis: if totals.states_totals() {
            Basis::WriterTotals
        } else {
            Basis::Contiguity
        },
        lines: pass.lines,
        first_pos: pass.first,
        last_pos: pass.last,
        stated,
        reasons,
    })
}

fn totals_stated(totals: &WriterTotals) -> Option<WriterTotals> {
    (totals.states_totals() || totals.dropped.is_some() || totals.outcome.is_some())
        .then(|| totals.clone())
}

/// The one part of a stored line the ledger reads.
#[derive(serde::Deserialize)]
struct Out<'a> {
    #[serde(borrow)]
    out: Cow<'a, str>,
}

/// A stored line's `out` text. Ingest validated every line; an undecodable one
/// counts as no text. `scratch` holds the text of a line whose `out` has escapes.
fn out_of<'a>(line: &'a StoredLine, scratch: &'a mut Vec<u8>) -> Cow<'a, str> {
    if let Some(text) = compact_out(&line.json, scratch) {
        return Cow::Borrowed(text);
    }
    serde_json::from_slice::<Out<'_>>(&line.json).map_or(Cow::Borrowed(""), |l| l.out)
}

/// `out` of a line in the shape runlog's writers send (`{"level":"…","pos":N,
/// "out":"…",…`, no `\u` escape in `out`), decoded without a JSON parser, or `None`
/// for any other shape (the parser then reads it). The general parser was the
/// larger half of a close's work (two strings allocated per line). A wrong answer
/// here could only make the digest differ, and the writer then uploads: it can cost
/// time, never a line.
fn compact_out<'a>(json: &'a [u8], scratch: &'a mut Vec<u8>) -> Option<&'a str> {
    let text = super::line_text::out_start(json)?;
    scratch.clear();
    super::line_text::decode_string(text, scratch)?;
    std::str::from_utf8(scratch).ok()
}

/// Reads every held line in `pos` order: gaps always, text bytes and digest when
/// `text` (parsing and hashing on a blocking thread, a chunk at a time), each chunk
/// handed to `archive` too (whose encoder compresses it meanwhile).
async fn read_all(
    streams: &dyn StreamStore,
    id: &StreamId,
    text: bool,
    pass: &mut Pass,
    mut archive: Option<&mut ArchiveBuild>,
) -> Result<(), StoreError> {
    let mut from = 0;
    loop {
        let chunk = streams.read(id, from, READ).await?;
        let Some(last) = chunk.last() else {
            return Ok(());
        };
        let after = last.pos.checked_add(1);
        for line in &chunk {
            let expected = pass.last.map_or(0, |l| l + 1);
            if line.pos > expected {
                pass.gap(expected, line.pos - 1);
            }
            pass.first.get_or_insert(line.pos);
            pass.last = Some(line.pos);
            pass.lines += 1;
        }
        let chunk = Arc::new(chunk);
        if let Some(build) = archive.as_deref_mut() {
            build.add(Arc::clone(&chunk)).await;
        }
        if text {
            let (digest, bytes) = (std::mem::take(&mut pass.digest), pass.bytes);
            let (digest, bytes) = tokio::task::spawn_blocking(move || {
                let (mut digest, mut bytes) = (digest, bytes);
                let mut scratch = Vec::new();
                for line in chunk.iter() {
                    let out = out_of(line, &mut scratch);
                    bytes += out.len() as u64;
                    digest.line(&out);
                }
                (digest, bytes)
            })
            .await
            .map_err(|e| StoreError::Unavailable(format!("ledger check failed: {e}")))?;
            pass.digest = digest;
            pass.bytes = bytes;
        }
        match after {
            Some(after) => from = after,
            None => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    fn stored(json: String) -> StoredLine {
        StoredLine {
            pos: 0,
            json: json.into(),
        }
    }

    #[test]
    fn a_writers_line_is_read_without_the_parser() {
        let line = r#"{"level":"info","pos":12,"out":"a \"b\" \\ c\td\n","time":"t"}"#;
        let mut scratch = Vec::new();
        assert_eq!(
            compact_out(line.as_bytes(), &mut scratch),
            Some("a \"b\" \\ c\td\n")
        );
        // Another key order, or a `\u` escape: the parser reads it.
        for other in [
            r#"{"pos":12,"level":"info","out":"x","time":"t"}"#,
            r#"{"level":"info","pos":12,"out":"\u00e9","time":"t"}"#,
        ] {
            assert_eq!(compact_out(other.as_bytes(), &mut scratch), None);
            let line = stored(other.into());
            assert!(!out_of(&line, &mut scratch).is_empty());
        }
    }

    proptest! {
        /// Whatever the text, the fast path reads what the parser reads (or leaves it
        /// to the parser).
        #[test]
        fn the_fast_path_reads_what_the_parser_reads(out in any::<String>(), pos in any::<u32>()) {
            // The writer's key order, its string escapes.
            let text = serde_json::to_string(&out).unwrap();
            let json = format!(r#"{{"level":"info","pos":{pos},"out":{text},"time":"t"}}"#);
            let mut scratch = Vec::new();
            let parsed = serde_json::from_str::<Out<'_>>(&json).unwrap().out.into_owned();
            // serde_json writes `\u` only for control characters without a short
            // escape: every other text takes the fast path.
            let fast = compact_out(json.as_bytes(), &mut scratch).map(str::to_owned);
            prop_assert!(fast.is_some() || text.contains("\\u"), "{}", json);
            if let Some(fast) = fast {
                prop_assert_eq!(fast, parsed.clone());
            }
            let line = stored(json);
            prop_assert_eq!(out_of(&line, &mut scratch), parsed.as_str());
        }
    }
}
