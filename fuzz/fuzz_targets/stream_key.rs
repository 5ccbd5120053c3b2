//! Key and account-id validation: whatever the bytes, an accepted name can never
//! escape or alias a directory, and validation agrees with deserialisation.
#![no_main]

use libfuzzer_sys::fuzz_target;
use runlog_protocol::key::{MAX_ACCOUNT_LEN, MAX_KEY_LEN};
use runlog_protocol::{AccountId, StreamKey};

fn allowed(c: char, slash: bool) -> bool {
    c.is_ascii_alphanumeric()
        || matches!(c, '.' | '_' | '-')
        || (slash && matches!(c, '/' | ':' | '$'))
}

fn check_safe(name: &str, max: usize, slash: bool) {
    assert!(!name.is_empty() && name.len() <= max, "{name:?}");
    assert!(name.chars().all(|c| allowed(c, slash)), "{name:?}");
    assert!(!name.starts_with('/') && !name.ends_with('/'), "{name:?}");
    for segment in name.split('/') {
        assert!(
            !segment.is_empty() && segment != "." && segment != "..",
            "{name:?}"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let key = StreamKey::new(text.as_ref());
    if let Ok(k) = &key {
        check_safe(k.as_str(), MAX_KEY_LEN, true);
        // A path built from an accepted key stays under its root.
        let root = std::path::Path::new("/data/archives");
        let joined = root.join(k.as_str());
        assert!(joined.starts_with(root), "{joined:?}");
        assert!(
            joined
                .components()
                .all(|c| !matches!(c, std::path::Component::ParentDir)),
            "{joined:?}"
        );
    }
    // The JSON route validates exactly as the constructor does.
    let json = serde_json::to_string(text.as_ref()).expect("a string serialises");
    let via_serde = serde_json::from_str::<StreamKey>(&json);
    assert_eq!(key.is_ok(), via_serde.is_ok(), "{text:?}");

    let account = AccountId::new(text.as_ref());
    if let Ok(a) = &account {
        check_safe(a.as_str(), MAX_ACCOUNT_LEN, false);
        assert!(!a.as_str().contains('/'));
    }
});
