//! Account tokens and the admin secret.
//!
//! A token is `base64url(JSON claims) "." base64url(HMAC-SHA256(secret, claims part))`.
//! Claims are `{account, scope, exp}`; `account` is absent only on admin tokens,
//! which are not bound to an account. Verification recomputes the MAC and compares
//! it in constant time (`hmac`'s `verify_slice`), then checks the expiry.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use runlog_protocol::{AccountId, Scope};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

type HmacSha256 = Hmac<Sha256>;

/// File name of the generated admin secret inside the data directory.
pub const SECRET_FILE: &str = "admin-secret";

/// What a token grants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The account it is bound to; `None` only for admin tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<AccountId>,
    /// What it allows.
    pub scope: Scope,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
}

impl Claims {
    /// Whether these claims allow `needed` on `account`'s data.
    pub fn allows(&self, account: &AccountId, needed: Scope) -> bool {
        if self.scope == Scope::Admin {
            return true;
        }
        self.account.as_ref() == Some(account) && self.scope.allows(needed)
    }

    /// Expiry as a `SystemTime`.
    pub fn expires_at(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(self.exp)
    }
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Not of the form `claims.mac`, or not base64url, or the claims are not JSON.
    #[error("malformed token")]
    Malformed,
    /// The MAC does not match: forged, altered, or minted with another secret.
    #[error("invalid token signature")]
    BadSignature,
    /// Past its expiry.
    #[error("token expired")]
    Expired,
    /// A non-admin token without an account.
    #[error("token is not bound to an account")]
    NoAccount,
    /// A lifetime longer than [`MAX_TOKEN_TTL`].
    #[error("a token lives at most {} days", MAX_TOKEN_TTL.as_secs() / 86_400)]
    TtlTooLong,
}

/// The longest lifetime a token can be minted with: ten years. Longer ones are
/// refused rather than clamped (a caller asking for a century made a mistake), and
/// every expiry stays a time that can be written out (years up to 9999).
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(3_653 * 86_400);

fn mac(secret: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length, so this cannot fail.
    <HmacSha256 as Mac>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"))
}

/// The current Unix time in seconds, as token and upload-link expiries count it.
pub(crate) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Mints a token. `account` may be `None` only with [`Scope::Admin`].
///
/// ```
/// use runlog_service::auth::{mint_token, verify_token};
/// use runlog_protocol::{AccountId, Scope};
/// let acc = AccountId::new("acc").unwrap();
/// let t = mint_token(b"secret", Some(&acc), Scope::Write, std::time::Duration::from_secs(60)).unwrap();
/// assert_eq!(verify_token(b"secret", &t).unwrap().account, Some(acc));
/// assert!(verify_token(b"other", &t).is_err());
/// ```
pub fn mint_token(
    secret: &[u8],
    account: Option<&AccountId>,
    scope: Scope,
    ttl: Duration,
) -> Result<String, AuthError> {
    if account.is_none() && scope != Scope::Admin {
        return Err(AuthError::NoAccount);
    }
    if ttl > MAX_TOKEN_TTL {
        return Err(AuthError::TtlTooLong);
    }
    let claims = Claims {
        account: account.cloned(),
        scope,
        exp: now_secs().saturating_add(ttl.as_secs()),
    };
    Ok(sign_claims(secret, &claims))
}

/// Signs arbitrary claims (tests use it to mint expired tokens).
pub fn sign_claims(secret: &[u8], claims: &Claims) -> String {
    let json = serde_json::to_vec(claims).unwrap_or_default();
    let body = URL_SAFE_NO_PAD.encode(json);
    let mut m = mac(secret);
    m.update(body.as_bytes());
    let sig = URL_SAFE_NO_PAD.encode(m.finalize().into_bytes());
    format!("{body}.{sig}")
}

/// Verifies a token's signature and expiry and returns its claims.
pub fn verify_token(secret: &[u8], token: &str) -> Result<Claims, AuthError> {
    let (body, sig) = token.trim().split_once('.').ok_or(AuthError::Malformed)?;
    let sig = URL_SAFE_NO_PAD
        .decode(sig)
        .map_err(|_| AuthError::Malformed)?;
    let mut m = mac(secret);
    m.update(body.as_bytes());
    m.verify_slice(&sig).map_err(|_| AuthError::BadSignature)?;
    let json = URL_SAFE_NO_PAD
        .decode(body)
        .map_err(|_| AuthError::Malformed)?;
    let claims: Claims = serde_json::from_slice(&json).map_err(|_| AuthError::Malformed)?;
    if claims.account.is_none() && claims.scope != Scope::Admin {
        return Err(AuthError::NoAccount);
    }
    if claims.exp <= now_secs() {
        return Err(AuthError::Expired);
    }
    Ok(claims)
}

/// What a self-signed link allows. The purpose is part of what is signed, so a
/// link made for one never verifies as the other (a download link's signature
/// cannot be replayed as an upload link for the same stream).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkPurpose {
    /// One `PUT` of a stream's archive (`POST /blob/link/upload`).
    Upload,
    /// `GET` of a stream's archive until it expires (`POST /blob/link/download`).
    Download,
    /// `GET` of the zip of every archive under a key prefix (`POST /blob/download`);
    /// signed over the prefix in place of a key.
    Zip,
}

impl LinkPurpose {
    /// What the link is for, in words (`upload`, `download`, `zip`).
    pub fn name(self) -> &'static str {
        match self {
            LinkPurpose::Upload => "upload",
            LinkPurpose::Download => "download",
            LinkPurpose::Zip => "zip",
        }
    }

    fn domain(self) -> &'static [u8] {
        match self {
            LinkPurpose::Upload => b"runlog-upload\n",
            LinkPurpose::Download => b"runlog-download\n",
            LinkPurpose::Zip => b"runlog-zip\n",
        }
    }
}

/// What a self-signed link's signature binds: its purpose, one stream (or, for a
/// zip link, a key prefix), its expiry and the nonce that makes each link distinct.
#[derive(Debug, Clone, Copy)]
pub struct LinkFields<'a> {
    /// What the link is for.
    pub purpose: LinkPurpose,
    /// The account of the stream.
    pub account: &'a AccountId,
    /// The stream key (the key prefix of a zip link).
    pub subject: &'a str,
    /// Unix seconds after which the link no longer verifies.
    pub expires: u64,
    /// Random, per link.
    pub nonce: &'a str,
}

impl LinkFields<'_> {
    fn mac(&self, secret: &[u8]) -> HmacSha256 {
        let LinkFields {
            account,
            subject,
            expires,
            nonce,
            ..
        } = self;
        let mut m = mac(secret);
        m.update(self.purpose.domain());
        m.update(format!("{account}\n{subject}\n{expires}\n{nonce}").as_bytes());
        m
    }

    /// HMAC of the fields, base64url.
    pub fn sign(&self, secret: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(self.mac(secret).finalize().into_bytes())
    }

    /// Checks the link's signature `sig` (constant time), then its expiry.
    pub fn verify(&self, secret: &[u8], sig: &str) -> Result<(), AuthError> {
        let sig = URL_SAFE_NO_PAD
            .decode(sig)
            .map_err(|_| AuthError::Malformed)?;
        self.mac(secret)
            .verify_slice(&sig)
            .map_err(|_| AuthError::BadSignature)?;
        if self.expires <= now_secs() {
            return Err(AuthError::Expired);
        }
        Ok(())
    }
}

/// A fresh random secret (32 bytes, base64url).
pub fn generate_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Path of the saved admin secret in `data_dir`.
pub fn secret_path(data_dir: &Path) -> PathBuf {
    data_dir.join(SECRET_FILE)
}

/// Reads the admin secret saved in `data_dir`, if any.
pub fn read_saved_secret(data_dir: &Path) -> std::io::Result<Option<String>> {
    match std::fs::read_to_string(secret_path(data_dir)) {
        Ok(s) if !s.trim().is_empty() => Ok(Some(s.trim().to_owned())),
        Ok(_) => Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The admin secret: `given` if set, else the one saved in `data_dir`, else a new one
/// generated and saved there (owner-only permissions) for the next start.
pub fn load_or_create_secret(given: Option<&str>, data_dir: &Path) -> std::io::Result<String> {
    if let Some(s) = given.filter(|s| !s.is_empty()) {
        return Ok(s.to_owned());
    }
    if let Some(s) = read_saved_secret(data_dir)? {
        return Ok(s);
    }
    crate::store::blob::create_private_dir(data_dir)?;
    let secret = generate_secret();
    let path = secret_path(data_dir);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    match opts.open(&path) {
        Ok(mut f) => {
            std::io::Write::write_all(&mut f, secret.as_bytes())?;
            f.sync_all()?;
            Ok(secret)
        }
        // Another process created it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => read_saved_secret(data_dir)?
            .ok_or_else(|| std::io::Error::other("empty admin secret file")),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn acc(s: &str) -> AccountId {
        AccountId::new(s).unwrap()
    }

    #[test]
    fn token_is_bound_to_its_account_and_scope() {
        let t = mint_token(b"k", Some(&acc("a")), Scope::Read, Duration::from_secs(60)).unwrap();
        let c = verify_token(b"k", &t).unwrap();
        assert!(c.allows(&acc("a"), Scope::Read));
        assert!(!c.allows(&acc("a"), Scope::Write));
        assert!(!c.allows(&acc("b"), Scope::Read));
    }

    #[test]
    fn altered_expired_and_garbage_tokens_are_refused() {
        let t = mint_token(b"k", Some(&acc("a")), Scope::Write, Duration::from_secs(60)).unwrap();
        let forged = sign_claims(
            b"other",
            &Claims {
                account: Some(acc("b")),
                scope: Scope::Admin,
                exp: u64::MAX,
            },
        );
        assert_eq!(verify_token(b"k", &forged), Err(AuthError::BadSignature));
        let (body, sig) = t.split_once('.').unwrap();
        let swapped = format!("{}.{sig}", forged.split_once('.').unwrap().0);
        assert_eq!(verify_token(b"k", &swapped), Err(AuthError::BadSignature));
        assert!(verify_token(b"k", body).is_err());
        assert!(verify_token(b"k", "").is_err());
        let expired = sign_claims(
            b"k",
            &Claims {
                account: Some(acc("a")),
                scope: Scope::Write,
                exp: 1,
            },
        );
        assert_eq!(verify_token(b"k", &expired), Err(AuthError::Expired));
    }

    #[test]
    fn admin_tokens_need_no_account_but_others_do() {
        assert!(mint_token(b"k", None, Scope::Write, Duration::from_secs(1)).is_err());
        let t = mint_token(b"k", None, Scope::Admin, Duration::from_secs(60)).unwrap();
        assert!(
            verify_token(b"k", &t)
                .unwrap()
                .allows(&acc("any"), Scope::Admin)
        );
    }

    #[test]
    fn secret_is_generated_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_create_secret(None, dir.path()).unwrap();
        assert_eq!(load_or_create_secret(None, dir.path()).unwrap(), first);
        assert_eq!(
            load_or_create_secret(Some("given"), dir.path()).unwrap(),
            "given"
        );
    }

    #[test]
    fn link_signature_is_bound_to_purpose_key_expiry_and_nonce() {
        use LinkPurpose::{Download, Upload, Zip};
        let a = acc("a");
        let link = LinkFields {
            purpose: Upload,
            account: &a,
            subject: "x",
            expires: now_secs() + 60,
            nonce: "n1",
        };
        let sig = link.sign(b"k");
        assert!(link.verify(b"k", &sig).is_ok());
        let b = acc("b");
        for other in [
            LinkFields {
                purpose: Download,
                ..link
            },
            LinkFields {
                purpose: Zip,
                ..link
            },
            LinkFields {
                account: &b,
                ..link
            },
            LinkFields {
                subject: "y",
                ..link
            },
            LinkFields {
                expires: link.expires + 1,
                ..link
            },
            LinkFields {
                nonce: "n2",
                ..link
            },
        ] {
            assert_eq!(
                other.verify(b"k", &sig),
                Err(AuthError::BadSignature),
                "{other:?}"
            );
        }
        assert_eq!(link.verify(b"other", &sig), Err(AuthError::BadSignature));
        let old = LinkFields {
            purpose: Download,
            expires: now_secs() - 1,
            ..link
        };
        assert_eq!(old.verify(b"k", &old.sign(b"k")), Err(AuthError::Expired));
    }
}
