//! Validated names: stream keys and account ids.
//!
//! Validation happens here, once, before a name reaches any store. Stores map keys
//! to file paths and object names (through the service's one mapping,
//! `runlog_service::store::names`), so the rules exclude everything that could
//! escape a directory or alias another key: `..` and `.` segments, empty segments,
//! a leading or trailing `/`, and any byte outside `[A-Za-z0-9._:$/-]` (which also
//! rules out NUL and other control characters, `\`, `%`-encodings and non-ASCII
//! look-alikes).
//!
//! `:` and `$` are in the key alphabet because Harness pipelines name their streams
//! `accountId:abc/orgId:default/…/level2:s1/addon:20004` and Harness identifiers may
//! contain `$`; both are plain bytes in a file or object name. Account ids keep the
//! narrower alphabet.

use serde::{Deserialize, Deserializer, Serialize};
use std::fmt;

/// Longest accepted stream key, in bytes (Harness keys name a pipeline's whole
/// path of stages and steps; 1024 leaves room for deep ones).
pub const MAX_KEY_LEN: usize = 1024;
/// Longest accepted account id, in bytes.
pub const MAX_ACCOUNT_LEN: usize = 128;

/// Why a key or account id was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The name was empty.
    #[error("{what} must not be empty")]
    Empty {
        /// "key" or "account id".
        what: &'static str,
    },
    /// The name was longer than allowed.
    #[error("{what} is {len} bytes long; at most {max} are allowed")]
    TooLong {
        /// "key" or "account id".
        what: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A character outside the allowed set.
    #[error("{what} contains {found:?} at byte {at}; only A-Z a-z 0-9 . _ - {slash}are allowed")]
    BadChar {
        /// "key" or "account id".
        what: &'static str,
        /// The offending character (lossily decoded).
        found: char,
        /// Its byte offset.
        at: usize,
        /// The characters allowed besides `A-Z a-z 0-9 . _ -`, as the message lists
        /// them (`": $ / "` for keys, `""` for account ids).
        slash: &'static str,
    },
    /// A path segment that could escape or alias (`..`, `.`, empty).
    #[error(
        "{what} has a forbidden segment {segment:?} (no '..', '.', empty segments, or leading/trailing '/')"
    )]
    BadSegment {
        /// "key" or "account id".
        what: &'static str,
        /// The segment.
        segment: String,
    },
}

/// Whether `c` may appear in a key (`key == true`) or an account id.
fn allowed(c: char, key: bool) -> bool {
    c.is_ascii_alphanumeric()
        || matches!(c, '.' | '_' | '-')
        || (key && matches!(c, '/' | ':' | '$'))
}

fn check(s: &str, what: &'static str, max: usize, key: bool) -> Result<(), KeyError> {
    if s.is_empty() {
        return Err(KeyError::Empty { what });
    }
    if s.len() > max {
        return Err(KeyError::TooLong {
            what,
            len: s.len(),
            max,
        });
    }
    for (at, c) in s.char_indices() {
        if !allowed(c, key) {
            return Err(KeyError::BadChar {
                what,
                found: c,
                at,
                slash: if key { ": $ / " } else { "" },
            });
        }
    }
    for segment in s.split('/') {
        if segment.is_empty() || segment == "." || segment == ".." {
            return Err(KeyError::BadSegment {
                what,
                segment: segment.to_owned(),
            });
        }
    }
    Ok(())
}

macro_rules! validated_name {
    ($(#[$doc:meta])* $name:ident, $what:literal, $max:expr, $slash:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Validates and wraps a name.
            pub fn new(s: impl Into<String>) -> Result<Self, KeyError> {
                let s = s.into();
                check(&s, $what, $max, $slash)?;
                Ok($name(s))
            }

            /// The validated name.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl std::str::FromStr for $name {
            type Err = KeyError;
            fn from_str(s: &str) -> Result<Self, KeyError> {
                $name::new(s)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                $name::new(s).map_err(serde::de::Error::custom)
            }
        }
    };
}

validated_name!(
    /// A stream key: 1–1024 bytes of `[A-Za-z0-9._:$/-]`, `/`-separated segments,
    /// none of them empty, `.` or `..`.
    ///
    /// ```
    /// use runlog_protocol::StreamKey;
    /// assert!(StreamKey::new("stage-1/step-2.log").is_ok());
    /// assert!(StreamKey::new("accountId:abc/level2:s$1/addon:20004").is_ok());
    /// assert!(StreamKey::new("a/../../b").is_err());
    /// assert!(StreamKey::new("/etc/passwd").is_err());
    /// ```
    StreamKey,
    "key",
    MAX_KEY_LEN,
    true
);

validated_name!(
    /// An account id: 1–128 bytes of `[A-Za-z0-9._-]` (no `/`), not `.` or `..`.
    AccountId,
    "account id",
    MAX_ACCOUNT_LEN,
    false
);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn traversal_and_odd_keys_are_refused() {
        for bad in [
            "",
            "../x",
            "/etc/passwd",
            "a/../../b",
            "a/./b",
            "a//b",
            "a/",
            ".",
            "..",
            "a\0b",
            "a%2e%2e/b",
            "a\\b",
            "key with space",
            "ключ",
            "a\nb",
            "a\tb",
            "a\x7fb",
            "a:b/../c",
            "$/./x",
            "a%3Ab",
            "a+b",
            "a?b",
            "a#b",
            "a~b",
        ] {
            assert!(StreamKey::new(bad).is_err(), "{bad:?} should be refused");
        }
        assert!(StreamKey::new("x".repeat(MAX_KEY_LEN + 1)).is_err());
    }

    #[test]
    fn harness_keys_are_accepted() {
        for good in [
            "accountId:abc/orgId:default/projectId:p/pipelineId:x/runSequence:1/level0:pipeline/level1:stages/level2:s1/addon:20004",
            "accountId:kmpySmUISimoRrJL6NL73w/orgId:default/projectId:p$1/pipelineId:_x$/runSequence:42/level0:pipeline",
            "$",
            ":",
            "a:/b",
            &"k".repeat(MAX_KEY_LEN),
            &format!("{}/{}", "a".repeat(600), "b".repeat(MAX_KEY_LEN - 601)),
        ] {
            assert!(StreamKey::new(good).is_ok(), "{good:?} should be accepted");
        }
        assert!(
            AccountId::new("a:b").is_err(),
            "account ids keep their alphabet"
        );
        assert!(
            AccountId::new("a$b").is_err(),
            "account ids keep their alphabet"
        );
    }

    #[test]
    fn ordinary_keys_are_accepted() {
        for good in [
            "a",
            "stage-123/lite-engine-logs",
            "x.y_z-1/2/3",
            "..a/b..",
            &"k".repeat(512),
        ] {
            assert!(StreamKey::new(good).is_ok(), "{good:?} should be accepted");
        }
    }

    #[test]
    fn account_ids_have_no_slash() {
        assert!(AccountId::new("account-123").is_ok());
        assert!(AccountId::new("a/b").is_err());
        assert!(AccountId::new("..").is_err());
    }

    #[test]
    fn deserialising_validates() {
        assert!(serde_json::from_str::<StreamKey>(r#""ok/key""#).is_ok());
        assert!(serde_json::from_str::<StreamKey>(r#""../bad""#).is_err());
    }

    proptest! {
        #[test]
        fn accepted_keys_never_escape(s in "[A-Za-z0-9._:$/\\\\%-]{1,40}") {
            if let Ok(k) = StreamKey::new(s) {
                let k = k.as_str();
                prop_assert!(!k.starts_with('/'));
                prop_assert!(!k.ends_with('/'));
                prop_assert!(k.split('/').all(|seg| !seg.is_empty() && seg != "." && seg != ".."));
                prop_assert!(!k.contains('\\') && !k.contains('%'));
            }
        }
    }
}
