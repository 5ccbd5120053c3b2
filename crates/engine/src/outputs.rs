//! Output variables: `KEY=VALUE` lines a step writes to the file named by `$RUNLOG_OUTPUT`.

use std::collections::BTreeMap;
use std::path::Path;

/// Name of the environment variable that tells a step where to write its outputs.
pub const OUTPUT_ENV: &str = "RUNLOG_OUTPUT";

/// Largest outputs file read; the rest is ignored (outputs are small values, not logs).
const MAX_OUTPUT_BYTES: u64 = 1 << 20;

/// Parses `KEY=VALUE` lines; blank lines, `#` comments and lines without `=` are
/// skipped; a later value of a key replaces an earlier one.
pub fn parse(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            let k = k.trim();
            if !k.is_empty() {
                out.insert(k.to_owned(), v.to_owned());
            }
        }
    }
    out
}

/// Reads and parses the outputs file; a missing file means no outputs.
pub async fn read(path: &Path) -> BTreeMap<String, String> {
    use tokio::io::AsyncReadExt as _;
    let Ok(file) = tokio::fs::File::open(path).await else {
        return BTreeMap::new();
    };
    let mut bytes = Vec::new();
    if file
        .take(MAX_OUTPUT_BYTES)
        .read_to_end(&mut bytes)
        .await
        .is_err()
    {
        return BTreeMap::new();
    }
    parse(&String::from_utf8_lossy(&bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_value_lines_are_parsed_and_noise_skipped() {
        let o = parse("A=1\n\n# note\nnoequals\nB = two=2\r\nA=3\n=x\n");
        assert_eq!(o.get("A").map(String::as_str), Some("3"));
        assert_eq!(o.get("B").map(String::as_str), Some(" two=2"));
        assert_eq!(o.len(), 2);
    }
}
