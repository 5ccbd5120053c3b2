//! Splitting NDJSON (an archive as `GET /blob` sends it) arriving in chunks of any
//! size into whole rows.

/// Splits NDJSON bytes arriving in arbitrary chunks into complete lines.
///
/// ```
/// use runlog_client::NdjsonSplitter;
/// let mut rows = Vec::new();
/// let mut split = NdjsonSplitter::default();
/// split.push(b"{\"pos\":0}\n{\"po", |r| Ok(rows.push(r.to_vec()))).unwrap();
/// split.push(b"s\":1}", |r| Ok(rows.push(r.to_vec()))).unwrap();
/// split.finish(|r| Ok(rows.push(r.to_vec()))).unwrap();
/// assert_eq!(rows, [b"{\"pos\":0}".to_vec(), b"{\"pos\":1}".to_vec()]);
/// ```
#[derive(Debug, Default)]
pub struct NdjsonSplitter {
    partial: Vec<u8>,
}

impl NdjsonSplitter {
    /// Feeds a chunk, calling `on_row` for every complete, non-empty row (without `\n`).
    pub fn push(
        &mut self,
        chunk: &[u8],
        mut on_row: impl FnMut(&[u8]) -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        let mut rest = chunk;
        while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
            let (row, tail) = rest.split_at(nl);
            if self.partial.is_empty() {
                emit(row, &mut on_row)?;
            } else {
                self.partial.extend_from_slice(row);
                let joined = std::mem::take(&mut self.partial);
                emit(&joined, &mut on_row)?;
            }
            rest = &tail[1..];
        }
        self.partial.extend_from_slice(rest);
        Ok(())
    }

    /// Flushes a last row that had no trailing newline.
    pub fn finish(
        &mut self,
        mut on_row: impl FnMut(&[u8]) -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        let last = std::mem::take(&mut self.partial);
        emit(&last, &mut on_row)
    }
}

fn emit(row: &[u8], on_row: &mut impl FnMut(&[u8]) -> std::io::Result<()>) -> std::io::Result<()> {
    let row = row.strip_suffix(b"\r").unwrap_or(row);
    if row.iter().all(u8::is_ascii_whitespace) {
        return Ok(());
    }
    on_row(row)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ndjson_rows_split_across_chunks_are_whole() {
        let mut split = NdjsonSplitter::default();
        let mut rows = Vec::new();
        for chunk in [&b"{\"a\":1}\n{\"b\""[..], b":2}\r\n\n{\"c\":3}"] {
            split
                .push(chunk, |r| {
                    rows.push(String::from_utf8_lossy(r).into_owned());
                    Ok(())
                })
                .expect("no sink error");
        }
        split
            .finish(|r| {
                rows.push(String::from_utf8_lossy(r).into_owned());
                Ok(())
            })
            .expect("no sink error");
        assert_eq!(rows, ["{\"a\":1}", "{\"b\":2}", "{\"c\":3}"]);
    }
}
