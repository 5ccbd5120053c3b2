//! The completeness ledger: what a writer states about its stream at close, and
//! what the service concludes from what it holds.
//!
//! A writer may close its stream with its totals (`DELETE /stream?…&lines=N&bytes=B&
//! digest=sha256:…`, all optional, so writers that state none keep working). The
//! service checks them against the lines it holds and records either `complete` or
//! every reason it is not. Without totals it can still prove contiguity (every
//! `pos` from 0 to the last one held) and says that is all it checked
//! ([`Basis::Contiguity`]).
//!
//! # The digest
//!
//! SHA-256 over the stream's lines in `pos` order, each line contributing the length
//! of its `out` text in bytes as 8 bytes little-endian, then that text's UTF-8 bytes
//! (masked, exactly as sent). Written `sha256:` and 64 lowercase hex digits. The
//! length prefix keeps two lines `"a"`, `"b\n"` apart from one line `"ab\n"`;
//! `level` and `time` are left out, so a digest says "the same text", whichever
//! way a line was encoded. [`LineDigest`] computes it.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The prefix of a digest's text form.
pub const DIGEST_PREFIX: &str = "sha256:";

/// The digest of a stream's text, fed one line at a time in `pos` order.
///
/// ```
/// use runlog_protocol::ledger::LineDigest;
/// let mut d = LineDigest::default();
/// d.line("hello\n");
/// assert!(d.finish().starts_with("sha256:"));
/// ```
#[derive(Debug, Clone, Default)]
pub struct LineDigest {
    hash: Sha256,
}

impl LineDigest {
    /// Adds the next line's `out`.
    pub fn line(&mut self, out: &str) {
        self.hash.update((out.len() as u64).to_le_bytes());
        self.hash.update(out.as_bytes());
    }

    /// The digest's text form, `sha256:` and 64 lowercase hex digits.
    pub fn finish(self) -> String {
        use std::fmt::Write;
        let mut s = String::with_capacity(DIGEST_PREFIX.len() + 64);
        s.push_str(DIGEST_PREFIX);
        for b in self.hash.finalize() {
            // Writing to a String cannot fail.
            let _ = write!(s, "{b:02x}");
        }
        s
    }
}

/// What a writer states at close (query parameters of `DELETE /stream`). Every
/// field is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriterTotals {
    /// Lines the writer numbered (`pos` 0 to `lines − 1`), drop markers included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lines: Option<u64>,
    /// Bytes of `out` text over those lines (UTF-8, masked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// [`LineDigest`] of those lines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Lines the writer produced but dropped under its bounds (never numbered).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dropped: Option<u64>,
    /// How the run that wrote the stream ended; `failure` marks the sections still
    /// open as failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<crate::sections::Outcome>,
}

impl WriterTotals {
    /// Whether the writer stated any total to check (not only an outcome).
    pub fn states_totals(&self) -> bool {
        self.lines.is_some() || self.bytes.is_some() || self.digest.is_some()
    }

    /// The digest, refused unless it has the documented form.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(d) = &self.digest {
            let hex = d
                .strip_prefix(DIGEST_PREFIX)
                .ok_or_else(|| format!("digest must start with {DIGEST_PREFIX:?}, got {d:?}"))?;
            if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
                return Err("digest must be sha256: and 64 lowercase hex digits".into());
            }
        }
        Ok(())
    }
}

/// What the ledger's verdict rests on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Basis {
    /// The writer stated totals, and they were checked.
    WriterTotals,
    /// The writer stated none (e.g. lite-engine): only contiguity of the held lines
    /// was checked.
    Contiguity,
}

/// One reason a stream is not complete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Incomplete {
    /// Lines `from..=to` are missing (between held lines, or after the last held
    /// one up to the writer's stated count).
    Gap {
        /// First missing `pos`.
        from: u64,
        /// Last missing `pos`.
        to: u64,
    },
    /// The writer dropped lines under its bounds; `at` are the `pos` of the marker
    /// lines it wrote where it dropped them.
    Dropped {
        /// How many (the writer's count, or the markers' when it stated none).
        lines: u64,
        /// `pos` of its drop markers found in the stream.
        at: Vec<u64>,
    },
    /// The stream was never closed by its writer (it expired while open).
    NeverClosed,
    /// The held line count differs from the stated one.
    Lines {
        /// What the writer stated.
        stated: u64,
        /// What the service holds.
        held: u64,
    },
    /// The held text's byte count differs from the stated one.
    Bytes {
        /// What the writer stated.
        stated: u64,
        /// What the service holds.
        held: u64,
    },
    /// The held text's digest differs from the stated one.
    Digest {
        /// What the writer stated.
        stated: String,
        /// What the service holds.
        held: String,
    },
}

/// The ledger of one closed stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ledger {
    /// `true` when no reason below applies.
    pub complete: bool,
    /// What was checked.
    pub basis: Basis,
    /// Lines held.
    pub lines: u64,
    /// Lowest and highest `pos` held (`None` for a stream without lines).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_pos: Option<u64>,
    /// See `first_pos`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_pos: Option<u64>,
    /// What the writer stated, as it stated it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stated: Option<WriterTotals>,
    /// Every reason the stream is not complete.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<Incomplete>,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn digest_frames_each_line() {
        let digest = |lines: &[&str]| {
            let mut d = LineDigest::default();
            lines.iter().for_each(|l| d.line(l));
            d.finish()
        };
        assert_ne!(digest(&["a", "b\n"]), digest(&["ab\n"]));
        assert_eq!(digest(&["a\n"]), digest(&["a\n"]));
        // SHA-256 of nothing: an empty stream's digest is well known.
        assert_eq!(
            digest(&[]),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let totals = WriterTotals {
            digest: Some(digest(&["x"])),
            ..WriterTotals::default()
        };
        assert!(totals.validate().is_ok());
        let bad = WriterTotals {
            digest: Some("md5:00".into()),
            ..WriterTotals::default()
        };
        assert!(bad.validate().is_err());
    }

    #[test]
    fn reasons_are_tagged() {
        let r = serde_json::to_value(Incomplete::Gap { from: 3, to: 4 }).unwrap();
        assert_eq!(r, serde_json::json!({"reason": "gap", "from": 3, "to": 4}));
        let r = serde_json::to_value(Incomplete::NeverClosed).unwrap();
        assert_eq!(r, serde_json::json!({"reason": "never_closed"}));
    }
}
