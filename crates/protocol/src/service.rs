//! Request and answer shapes of the log service's HTTP API (see ARCHITECTURE.md).

use crate::key::{AccountId, StreamKey};
use serde::{Deserialize, Serialize};

/// The query string of every `/stream`, `/blob` and `/blob/link/upload` call:
/// `?accountID=A&key=K`. Both names are validated on parse.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamQuery {
    /// The account that owns the stream.
    #[serde(rename = "accountID")]
    pub account_id: AccountId,
    /// The stream key within the account.
    pub key: StreamKey,
    /// `DELETE /stream` only: make the stored lines the archive.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub snapshot: bool,
}

/// The query string of account-wide calls (`GET /streams`, `POST /token`): `?accountID=A`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountQuery {
    /// The account, validated on parse.
    #[serde(rename = "accountID")]
    pub account_id: AccountId,
}

/// Answer of `PUT /stream`: how the batch was applied, and where the stream stands.
///
/// A client that lost track (a timed-out request that actually landed) resynchronises
/// from `next_pos`: every `pos` below it is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendAck {
    /// Lines of this batch that were stored now.
    pub appended: u64,
    /// Lines of this batch ignored because their `pos` was already stored.
    pub duplicates: u64,
    /// Highest `pos` such that every `pos` from 0 up to it is stored; `None` when
    /// line 0 is not stored yet.
    pub last_contiguous_pos: Option<u64>,
    /// `last_contiguous_pos + 1`, or 0: the first `pos` not yet stored contiguously.
    pub next_pos: u64,
}

/// Response header of `POST /stream` on runlog's log service: the content encodings
/// an archive upload (`POST /blob`, or `PUT` to an upload link it hands out) may use,
/// today `gzip`. A writer that has not seen it — a Harness log service, which stores
/// an upload's body as it arrives, or a writer that never opens its stream — uploads
/// plain NDJSON, which every log service stores as the archive.
pub const ACCEPT_ARCHIVE_ENCODING: &str = "x-runlog-accept-archive-encoding";

/// Query parameter of `DELETE /stream` (value [`ARCHIVE_IF_COMPLETE`]) from a writer
/// that states its totals (`lines`, `digest`, see [`crate::ledger`]) and still holds
/// its whole history: runlog's service builds the archive from its own lines when
/// the ledger proves them complete against those totals, and says so in the
/// answer's `archived`. An answer with `archived: false` — lines the service lacks,
/// or a service that does not know the parameter and ignores it — leaves the
/// archive to the writer, which uploads it. Sent only to a service that announced
/// [`ACCEPT_ARCHIVE_ENCODING`] (a Harness service gets its upload as always).
pub const ARCHIVE_PARAM: &str = "archive";

/// The value of [`ARCHIVE_PARAM`]: archive the held lines only if they are complete.
pub const ARCHIVE_IF_COMPLETE: &str = "if_complete";

/// Request header of `PUT /stream` (value `1`) from a writer that opened the stream
/// itself and, when the service no longer has it, opens it again and sends its whole
/// history from `pos` 0: runlog's service then answers 404 for a stream that is not
/// open instead of opening it implicitly, which would store the batch after a gap that
/// a live tail skips. Without it (lite-engine), a `PUT` opens a stream that is not open.
pub const EXPLICIT_OPEN: &str = "x-runlog-explicit-open";

/// Answer of `POST /blob/link/upload`: a URL that accepts one `PUT` of the archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkResponse {
    /// The signed URL. It carries its own authorisation; never send an account token to it.
    pub link: String,
    /// When the link stops being accepted.
    pub expires: LinkExpires,
}

/// The `expires` of an upload link, in either form a log service answers with.
/// runlog's service answers [`LinkExpires::Nanos`], the form Harness's log service
/// answers and lite-engine decodes (a Go `time.Duration`); runlog's service answered
/// an RFC 3339 time before, and a client still reads that form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum LinkExpires {
    /// How long from now the link is accepted, in nanoseconds (a Go `time.Duration`,
    /// which is signed: a negative one is a link that has expired).
    Nanos(i64),
    /// The RFC 3339 time after which the link is refused.
    Time(String),
}

impl LinkExpires {
    /// The form runlog's service answers: `ttl` from now as nanoseconds (saturating
    /// at `i64::MAX`, about 292 years).
    pub fn after(ttl: std::time::Duration) -> Self {
        LinkExpires::Nanos(i64::try_from(ttl.as_nanos()).unwrap_or(i64::MAX))
    }

    /// Whether the link had already expired when this answer was read: a zero or
    /// negative duration, or a time in the past. A time that cannot be parsed counts
    /// as not expired (the link's host decides).
    pub fn has_passed(&self) -> bool {
        match self {
            LinkExpires::Nanos(n) => *n <= 0,
            LinkExpires::Time(t) => {
                humantime::parse_rfc3339_weak(t).is_ok_and(|at| at <= std::time::SystemTime::now())
            }
        }
    }
}

/// What a token allows. Ordered: `admin` ⊃ `write` ⊃ `read`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Tail and download streams and archives of the account.
    Read,
    /// Everything `read` allows, plus open/append/close streams and upload archives.
    Write,
    /// Everything, for every account, including minting tokens.
    Admin,
}

impl Scope {
    /// Whether a token of this scope may perform an action that needs `needed`.
    pub fn allows(self, needed: Scope) -> bool {
        self >= needed
    }
}

impl std::str::FromStr for Scope {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "read" => Ok(Scope::Read),
            "write" => Ok(Scope::Write),
            "admin" => Ok(Scope::Admin),
            other => Err(format!(
                "unknown scope {other:?}; expected read, write or admin"
            )),
        }
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Scope::Read => "read",
            Scope::Write => "write",
            Scope::Admin => "admin",
        })
    }
}

/// Body of `POST /token?accountID=A` (admin only). All fields optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRequest {
    /// Scope of the new token; `write` when absent.
    #[serde(default)]
    pub scope: Option<Scope>,
    /// Lifetime such as `24h` or `30m` (humantime syntax); `24h` when absent.
    #[serde(default)]
    pub ttl: Option<String>,
}

/// Answer of `POST /token`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenResponse {
    /// The token, to send as `Authorization: Bearer …`.
    pub token: String,
    /// The account it is bound to.
    pub account: AccountId,
    /// What it allows.
    pub scope: Scope,
    /// RFC 3339 expiry.
    pub expires: String,
}

/// One row of `GET /streams?accountID=A`: a stream the account has (live or archived).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamInfo {
    /// The stream key.
    pub key: StreamKey,
    /// Whether the live stream is open (still being written).
    pub open: bool,
    /// Lines stored for the live stream (0 when only an archive exists).
    pub lines: u64,
    /// Bytes of line text stored for the live stream.
    pub bytes: u64,
    /// Whether an archive exists for the key.
    pub archived: bool,
    /// RFC 3339 time of the last write, open, close or upload.
    pub last_activity: String,
    /// Whether the stream's completeness ledger says `complete`: only in
    /// `GET /streams?…&ledger=true`, and only for a stream whose finished index is
    /// stored (closed through the service); absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub complete: Option<bool>,
    /// Only in `POST /stream`'s answer: one past the last `pos` of the run the stream
    /// holds from 0 (0 for an empty stream). A writer opening a stream that already
    /// holds lines (a key reused by a later step, stage or engine) numbers its first
    /// line here, so it continues the stream rather than collide with its lines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_pos: Option<u64>,
}

/// Answer of `GET /healthz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// `true` when every backend answers.
    pub ok: bool,
    /// The runlog version.
    pub version: String,
    /// State of each backend by name (`"streams"`, `"blobs"`): `"ok"` or the error.
    #[serde(default)]
    pub backends: std::collections::BTreeMap<String, String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_uses_lite_engine_names_and_validates() {
        let q: StreamQuery =
            serde_json::from_value(serde_json::json!({"accountID": "acc", "key": "k/1"}))
                .expect("valid");
        assert_eq!(q.account_id.as_str(), "acc");
        assert!(!q.snapshot);
        let bad = serde_json::from_value::<StreamQuery>(
            serde_json::json!({"accountID": "acc", "key": "../k"}),
        );
        assert!(bad.is_err());
    }

    #[test]
    fn scopes_nest() {
        assert!(Scope::Admin.allows(Scope::Write));
        assert!(Scope::Write.allows(Scope::Read));
        assert!(!Scope::Read.allows(Scope::Write));
        assert_eq!("write".parse::<Scope>(), Ok(Scope::Write));
    }
}
