//! The one mapping from a stream to storage names: archive objects (local
//! directory, memory, S3) and the Redis store's overflow directories.
//!
//! Keys are validated (`runlog_protocol::key`) before they get here, so every key
//! segment is 1+ bytes of `[A-Za-z0-9._:$-]` and never `.` or `..`. A key segment
//! becomes one or more storage parts:
//!
//! - it is cut into chunks of at most [`CHUNK`] bytes; every chunk but the last is
//!   stored as `<chunk>+` (a directory "continued in the next part"). A file name
//!   must stay below the file systems' 255-byte limit *with* the `#<n>` suffix the
//!   local store appends to a file while writing it: a key segment of 244 bytes or
//!   more made that staging name too long, and the upload failed;
//! - the last chunk of the key's last segment is the archive file,
//!   `<chunk>.ndjson.gz`;
//! - the last chunk of any other segment is a directory, `<chunk>`, written
//!   `<chunk>=` when it ends in `.ndjson.gz` or is `.` or `..`. Without that, the
//!   directory of key `p.ndjson.gz/q` was the archive file of key `p`: whichever
//!   came second could not be stored.
//!
//! `+` and `=` never occur in a key, and neither needs escaping in an
//! `object_store` path, in a file name or in an S3 object name. A name is decoded
//! by reading those marks back ([`key_of_archive`]) and accepted only if encoding
//! the result gives the same name again, so the mapping is injective (every name
//! belongs to at most one key, and no key can name another key's file or
//! directory) and a listing recovers every key. A key whose segments are all at
//! most [`CHUNK`] bytes, none but the last ending in `.ndjson.gz`, keeps the name
//! runlog always gave it (`<account>/<key>.ndjson.gz`); for the others, archives
//! written under the earlier name are still found ([`legacy_archive_path`]).
//!
//! A whole name is kept within [`MAX_NAME`] bytes, so that it fits S3's limit of
//! 1024 bytes on an object name together with the bucket prefix (at most
//! [`MAX_PREFIX`] bytes, checked when the S3 backend is configured). The few keys
//! whose name would be longer (keys may be 1024 bytes) are stored under a digest
//! instead, on every backend alike: the archive is `<account>/!<sha256 of the
//! key>.ndjson.gz`, the stream's directory `<account>/!<sha256>`, and the key itself
//! is kept beside them in `<account>/!<sha256>.key` ([`key_record_path`]), which a
//! listing reads to name the archive. `!` never occurs in a key, so no key's parts
//! can take a digest name. Archives such a key had under its long name before are
//! still found ([`former_archive_paths`]).

use super::StreamId;
use object_store::path::Path as ObjectPath;
use runlog_protocol::StreamKey;
use sha2::{Digest, Sha256};
use std::fmt::Write as _;

/// Suffix of every archive object.
pub const ARCHIVE_SUFFIX: &str = ".ndjson.gz";

/// Longest chunk of a key segment in one storage part. The longest part is then
/// `CHUNK + 10` bytes (an archive file name), which leaves room under 255 bytes for
/// the `#<counter>` the local store appends while it writes a file.
pub const CHUNK: usize = 200;

/// Longest object name (account and key parts, without a backend's prefix): S3's
/// 1024 bytes less room for the longest bucket prefix and its `/+overflow` part.
pub const MAX_NAME: usize = 896;
/// Longest bucket prefix of an S3 backend, so that every name fits S3's limit.
pub const MAX_PREFIX: usize = 100;
/// Bytes kept free in a stream directory's name for the objects put in it
/// (overflow segments `+<20 digits>.ndjson`, `=sections.json`).
const ROOM_IN_DIRECTORY: usize = 40;
/// First byte of a name made from a key's digest; never a byte of a key, and safe
/// in every object store's names (`~` is percent-encoded by `object_store`).
const DIGEST: char = '!';
/// Suffix of the object holding the key of a digest name.
const KEY_RECORD_SUFFIX: &str = ".key";

/// Mark ending a part that the next part continues (one long key segment).
const CONTINUED: char = '+';
/// Mark ending a directory part that would otherwise read as a file name (or as
/// `.`/`..`).
const ESCAPED: char = '=';

/// How the last chunk of the key's last segment is stored.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Last {
    /// As the archive file (`<chunk>.ndjson.gz`).
    Archive,
    /// As a directory (the stream's own directory in the overflow store).
    Directory,
}

/// Pushes the storage parts of `key` onto `parts`.
fn push_key_parts(parts: &mut Vec<String>, key: &StreamKey, last: Last) {
    let mut segments = key.as_str().split('/').peekable();
    while let Some(segment) = segments.next() {
        let final_segment = segments.peek().is_none();
        // Key bytes are ASCII, so every byte offset is a char boundary.
        let mut rest = segment;
        while rest.len() > CHUNK {
            let (chunk, tail) = rest.split_at(CHUNK);
            parts.push(format!("{chunk}{CONTINUED}"));
            rest = tail;
        }
        if final_segment && last == Last::Archive {
            parts.push(format!("{rest}{ARCHIVE_SUFFIX}"));
        } else if rest.ends_with(ARCHIVE_SUFFIX) || rest == "." || rest == ".." {
            parts.push(format!("{rest}{ESCAPED}"));
        } else {
            parts.push(rest.to_owned());
        }
    }
}

/// The object name of a stream's archive: `<account>/<parts of the key>`, the last
/// part ending in [`ARCHIVE_SUFFIX`]; `<account>/!<digest>.ndjson.gz` when that
/// would be longer than [`MAX_NAME`].
pub fn archive_path(id: &StreamId) -> ObjectPath {
    let parts = parts_of(id, Last::Archive);
    if !too_long(&parts) {
        ObjectPath::from_iter(parts)
    } else {
        ObjectPath::from_iter([
            id.account.as_str().to_owned(),
            format!("{}{ARCHIVE_SUFFIX}", digest_name(&id.key)),
        ])
    }
}

/// The directory of a stream's own objects (the Redis store's overflow segments):
/// `<account>/<parts of the key>/`, or `<account>/!<digest>/` when that leaves less
/// than room for the objects in it. Objects put in it must have names no key part
/// can take (the overflow store starts them with `+`, which no part starts with).
pub fn stream_dir(id: &StreamId) -> ObjectPath {
    let parts = parts_of(id, Last::Directory);
    if name_len(&parts) + ROOM_IN_DIRECTORY <= MAX_NAME {
        ObjectPath::from_iter(parts)
    } else {
        ObjectPath::from_iter([id.account.as_str().to_owned(), digest_name(&id.key)])
    }
}

/// Where the key of a stream stored under a digest name is kept
/// (`<account>/!<digest>.key`); `None` for a stream stored under its own name.
pub fn key_record_path(id: &StreamId) -> Option<ObjectPath> {
    too_long(&parts_of(id, Last::Archive)).then(|| {
        ObjectPath::from_iter([
            id.account.as_str().to_owned(),
            format!("{}{KEY_RECORD_SUFFIX}", digest_name(&id.key)),
        ])
    })
}

/// For an archive stored under a digest name (the name after `<account>/`), the
/// name of its key record in the same account; `None` for any other name.
pub fn key_record_of_digest_archive(name: &str) -> Option<String> {
    let digest = name.strip_suffix(ARCHIVE_SUFFIX)?.strip_prefix(DIGEST)?;
    (digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| format!("{DIGEST}{digest}{KEY_RECORD_SUFFIX}"))
}

/// The key a key record holds, if it is the key of the digest archive `name`.
pub fn key_of_record(name: &str, record: &[u8]) -> Option<StreamKey> {
    let key = StreamKey::new(std::str::from_utf8(record).ok()?).ok()?;
    let digest = name.strip_suffix(ARCHIVE_SUFFIX)?;
    (digest_name(&key) == digest).then_some(key)
}

/// The key's bytes a key record holds.
pub fn key_record(id: &StreamId) -> bytes::Bytes {
    bytes::Bytes::copy_from_slice(id.key.as_str().as_bytes())
}

/// `!` and the SHA-256 of the key in hex.
fn digest_name(key: &StreamKey) -> String {
    let mut name = String::with_capacity(65);
    name.push(DIGEST);
    for b in Sha256::digest(key.as_str().as_bytes()) {
        let _ = write!(name, "{b:02x}");
    }
    name
}

/// `<account>` and the storage parts of the key.
fn parts_of(id: &StreamId, last: Last) -> Vec<String> {
    let mut parts = Vec::with_capacity(2 + id.key.as_str().len() / CHUNK);
    parts.push(id.account.as_str().to_owned());
    push_key_parts(&mut parts, &id.key, last);
    parts
}

/// Length of the name the parts make, separators included.
fn name_len(parts: &[String]) -> usize {
    parts.iter().map(String::len).sum::<usize>() + parts.len().saturating_sub(1)
}

/// Whether an archive name of these parts passes [`MAX_NAME`], so that the stream
/// is stored under its key's digest instead.
fn too_long(parts: &[String]) -> bool {
    name_len(parts) > MAX_NAME
}

/// Every name a stream's archive may have been written under before, besides
/// [`archive_path`]: its own long name when it is now stored under a digest, and
/// the name runlog gave it before this mapping ([`legacy_archive_path`]).
pub fn former_archive_paths(id: &StreamId) -> Vec<ObjectPath> {
    let own = parts_of(id, Last::Archive);
    let digest_named = too_long(&own);
    let own = ObjectPath::from_iter(own);
    let mut former = Vec::new();
    let legacy = legacy_name(id);
    if digest_named {
        former.push(own.clone());
    }
    if legacy != own {
        former.push(legacy);
    }
    former
}

/// The name runlog gave a stream's archive before this mapping
/// (`<account>/<key>.ndjson.gz`), when it differs from [`archive_path`]: archives
/// stored under it are still read. No key's current name is ever such a name (it
/// holds a part longer than [`CHUNK`] or a directory ending in `.ndjson.gz`, which
/// current names never do), so reading it never reads another key's archive.
pub fn legacy_archive_path(id: &StreamId) -> Option<ObjectPath> {
    let legacy = legacy_name(id);
    (legacy != ObjectPath::from_iter(parts_of(id, Last::Archive))).then_some(legacy)
}

/// `<account>/<key>.ndjson.gz`, the key verbatim.
fn legacy_name(id: &StreamId) -> ObjectPath {
    ObjectPath::from(format!(
        "{}/{}{ARCHIVE_SUFFIX}",
        id.account.as_str(),
        id.key.as_str()
    ))
}

/// The key whose archive is stored as `name` (the object name after
/// `<account>/`), or `None` when no key's archive has that name (an object that
/// is not an archive, e.g. a staging file).
pub fn key_of_archive(name: &str) -> Option<StreamKey> {
    let mut key = String::with_capacity(name.len());
    let mut parts = name.split('/').peekable();
    while let Some(part) = parts.next() {
        if parts.peek().is_none() {
            key.push_str(part.strip_suffix(ARCHIVE_SUFFIX)?);
        } else if let Some(chunk) = part.strip_suffix(CONTINUED) {
            key.push_str(chunk);
        } else {
            key.push_str(part.strip_suffix(ESCAPED).unwrap_or(part));
            key.push('/');
        }
    }
    let key = StreamKey::new(key).ok()?;
    // Only the canonical name of a key is that key's: a name with other cuts or
    // marks (never written by this mapping) decodes to nothing.
    let mut again = Vec::new();
    push_key_parts(&mut again, &key, Last::Archive);
    (again.join("/") == name).then_some(key)
}

/// [`key_of_archive`], also accepting the name an archive had before this mapping
/// ([`legacy_archive_path`]), for listings.
pub fn key_of_archive_or_legacy(name: &str) -> Option<StreamKey> {
    if let Some(key) = key_of_archive(name) {
        return Some(key);
    }
    let key = StreamKey::new(name.strip_suffix(ARCHIVE_SUFFIX)?).ok()?;
    // Only names that are not some key's current name: those decoded above.
    let mut current = Vec::new();
    push_key_parts(&mut current, &key, Last::Archive);
    (current.join("/") != name).then_some(key)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;
    use runlog_protocol::AccountId;
    use std::collections::HashMap;

    fn id(key: &str) -> StreamId {
        StreamId {
            account: AccountId::new("acc").unwrap(),
            key: StreamKey::new(key).unwrap(),
        }
    }

    fn name_in_account(key: &str) -> String {
        let path = archive_path(&id(key));
        path.as_ref().strip_prefix("acc/").unwrap().to_owned()
    }

    #[test]
    fn ordinary_and_harness_keys_keep_their_plain_names() {
        assert_eq!(
            archive_path(&id("a/b.log")).as_ref(),
            "acc/a/b.log.ndjson.gz"
        );
        let harness = "accountId:abc/orgId:default/projectId:p/pipelineId:x/runSequence:1/level0:pipeline/level1:stages/level2:s1/addon:20004";
        assert_eq!(
            archive_path(&id(harness)).as_ref(),
            format!("acc/{harness}.ndjson.gz")
        );
        assert_eq!(legacy_archive_path(&id(harness)), None);
        assert_eq!(stream_dir(&id("a/b")).as_ref(), "acc/a/b");
    }

    #[test]
    fn an_archive_file_and_a_directory_never_share_a_name() {
        let file = archive_path(&id("p"));
        let dir_of_other = archive_path(&id("p.ndjson.gz/q"));
        assert_eq!(file.as_ref(), "acc/p.ndjson.gz");
        assert_eq!(dir_of_other.as_ref(), "acc/p.ndjson.gz=/q.ndjson.gz");
        assert_eq!(
            key_of_archive("p.ndjson.gz=/q.ndjson.gz").unwrap().as_str(),
            "p.ndjson.gz/q"
        );
        assert!(legacy_archive_path(&id("p.ndjson.gz/q")).is_some());
    }

    #[test]
    fn long_segments_are_cut_into_short_parts_and_read_back() {
        let long = "s".repeat(800);
        let path = archive_path(&id(&long));
        for part in path.parts() {
            assert!(part.as_ref().len() <= CHUNK + ARCHIVE_SUFFIX.len());
        }
        assert_eq!(path.parts().count(), 1 + 4);
        assert_eq!(
            key_of_archive(&name_in_account(&long)).unwrap().as_str(),
            long
        );
        // Exactly CHUNK bytes: one part, no continuation.
        let exact = "e".repeat(CHUNK);
        assert_eq!(name_in_account(&exact), format!("{exact}.ndjson.gz"));
        // A cut leaving `.` as a directory's last chunk is escaped.
        let dotted = format!("{}./x", "d".repeat(CHUNK));
        let name = name_in_account(&dotted);
        assert_eq!(name, format!("{}+/.=/x.ndjson.gz", "d".repeat(CHUNK)));
        assert_eq!(key_of_archive(&name).unwrap().as_str(), dotted);
    }

    #[test]
    fn names_no_key_has_decode_to_nothing() {
        for name in [
            "a",
            "a.ndjson.gz#1",
            "a+.ndjson.gz",
            "a=/b.ndjson.gz",
            "a+/b.ndjson.gz",
            "+00000000000000000001.ndjson",
            "../a.ndjson.gz",
            "a.ndjson.gz/b.ndjson.gz",
        ] {
            assert_eq!(key_of_archive(name), None, "{name:?}");
        }
    }

    #[test]
    fn old_names_are_listed_only_when_no_key_owns_them_now() {
        let long = "l".repeat(300);
        let legacy = legacy_archive_path(&id(&long)).unwrap();
        let name = legacy.as_ref().strip_prefix("acc/").unwrap();
        assert_eq!(key_of_archive(name), None);
        assert_eq!(key_of_archive_or_legacy(name).unwrap().as_str(), long);
        assert_eq!(
            key_of_archive_or_legacy("a.ndjson.gz").unwrap().as_str(),
            "a"
        );
    }

    #[test]
    fn a_key_too_long_for_one_name_is_stored_under_its_digest() {
        let long = format!("{}/{}", "a".repeat(500), "b".repeat(523));
        let stream = id(&long);
        let path = archive_path(&stream);
        let name = path.as_ref().strip_prefix("acc/").unwrap();
        assert!(
            name.starts_with('!') && name.ends_with(ARCHIVE_SUFFIX),
            "{name}"
        );
        assert_eq!(
            key_of_archive(name),
            None,
            "a digest name decodes to no key"
        );
        let record = key_record_of_digest_archive(name).unwrap();
        assert_eq!(
            key_record_path(&stream).unwrap().as_ref(),
            format!("acc/{record}")
        );
        assert_eq!(key_of_record(name, long.as_bytes()).unwrap().as_str(), long);
        assert_eq!(
            key_of_record(name, b"another/key"),
            None,
            "a record naming another key is not believed"
        );
        let dir = stream_dir(&stream);
        assert_eq!(dir.parts().count(), 2);
        assert!(dir.as_ref().starts_with("acc/!"));
        // Where it would have been written under its long name is still looked at.
        let former = former_archive_paths(&stream);
        assert!(former[0].as_ref().len() > MAX_NAME);
        assert_eq!(
            key_of_archive(former[0].as_ref().strip_prefix("acc/").unwrap())
                .unwrap()
                .as_str(),
            long
        );
        // A short key has no record and keeps its name.
        assert_eq!(key_record_path(&id("a/b")), None);
        assert_eq!(key_record_of_digest_archive("a/b.ndjson.gz"), None);
    }

    #[test]
    fn every_name_fits_the_limit_whatever_the_key_and_account() {
        let account =
            runlog_protocol::AccountId::new("x".repeat(runlog_protocol::key::MAX_ACCOUNT_LEN))
                .unwrap();
        for len in (1..=runlog_protocol::key::MAX_KEY_LEN).step_by(7) {
            for key in ["k".repeat(len), "k/".repeat(len / 2) + "k"] {
                let Ok(key) = StreamKey::new(key) else {
                    continue;
                };
                let stream = StreamId {
                    account: account.clone(),
                    key,
                };
                assert!(archive_path(&stream).as_ref().len() <= MAX_NAME);
                assert!(stream_dir(&stream).as_ref().len() + ROOM_IN_DIRECTORY <= MAX_NAME);
                if let Some(record) = key_record_path(&stream) {
                    assert!(record.as_ref().len() <= MAX_NAME);
                }
            }
        }
    }

    fn key_strategy() -> impl Strategy<Value = String> {
        // Segments from a small alphabet with the marks' neighbours, lengths around
        // the chunk size, so cuts, escapes and suffixes meet often.
        let segment = prop_oneof![
            "[a.:$]{1,4}",
            "[ab]{195,205}",
            "[a.]{0,3}\\.ndjson\\.gz",
            "[ab]{190,200}\\.ndjson\\.gz",
        ];
        proptest::collection::vec(segment, 1..4).prop_map(|s| s.join("/"))
    }

    proptest! {
        #[test]
        fn the_mapping_is_injective_and_reversible(keys in proptest::collection::vec(key_strategy(), 1..8)) {
            let mut files: HashMap<String, String> = HashMap::new();
            let mut dirs: HashMap<String, String> = HashMap::new();
            for key in keys {
                let Ok(k) = StreamKey::new(key.clone()) else { continue };
                let name = name_in_account(k.as_str());
                prop_assert_eq!(key_of_archive(&name).map(|k| k.as_str().to_owned()), Some(key.clone()));
                for part in name.split('/') {
                    prop_assert!(part.len() <= CHUNK + ARCHIVE_SUFFIX.len());
                    prop_assert!(part != "." && part != "..");
                }
                if let Some(other) = files.insert(name.clone(), key.clone()) {
                    prop_assert_eq!(&other, &key, "two keys, one name");
                }
                // Every directory on the way to the file.
                let mut prefix = String::new();
                for part in name.split('/').collect::<Vec<_>>().split_last().unwrap().1 {
                    prefix.push_str(part);
                    dirs.insert(prefix.clone(), key.clone());
                    prefix.push('/');
                }
                // The stream's own directory never is an archive file either.
                let dir = stream_dir(&id(&key));
                dirs.insert(dir.as_ref().strip_prefix("acc/").unwrap().to_owned(), key.clone());
            }
            for (file, key) in &files {
                prop_assert!(!dirs.contains_key(file), "{} is a file of {} and a directory of {:?}", file, key, dirs.get(file));
            }
        }
    }
}
