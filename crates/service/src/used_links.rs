//! Self-signed upload links already used: each link accepts one archive.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::{Mutex, PoisonError};

/// Signatures of the links whose upload was accepted or is under way, each with its
/// link's expiry (Unix seconds). An expired link is refused by its signature check
/// anyway, so an entry is dropped once its link has expired: the set holds at most the
/// links used within one link lifetime (`--link-ttl`).
#[derive(Debug, Default)]
pub struct UsedLinks {
    used: Mutex<HashMap<String, u64>>,
}

impl UsedLinks {
    /// Claims the link signed `sig` (expiring at `expires`) for one upload, `now`
    /// being the current Unix time; `false` when it was claimed before.
    pub fn claim(&self, sig: &str, expires: u64, now: u64) -> bool {
        let mut used = self.used.lock().unwrap_or_else(PoisonError::into_inner);
        used.retain(|_, exp| *exp > now);
        match used.entry(sig.to_owned()) {
            Entry::Occupied(_) => false,
            Entry::Vacant(v) => {
                v.insert(expires);
                true
            }
        }
    }

    /// Gives a claim back: the upload it was made for stored nothing (a refused
    /// body), so the link may be used again until it expires.
    pub fn release(&self, sig: &str) {
        self.used
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(sig);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_is_claimed_once_until_released_and_forgotten_once_expired() {
        let links = UsedLinks::default();
        assert!(links.claim("a", 100, 10));
        assert!(!links.claim("a", 100, 11));
        assert!(links.claim("b", 100, 11));
        links.release("a");
        assert!(links.claim("a", 100, 12));
        // Past their expiry, entries are dropped (their links are refused anyway).
        assert!(links.claim("c", 200, 150));
        assert_eq!(
            links
                .used
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .len(),
            1
        );
    }
}
