//! The web viewer: static pages embedded in the binary, served at `/` (the
//! account's streams) and `/ui/stream?accountID=A&key=K` (one stream).
//!
//! The pages read the same API as every other client (`/streams`, `/stream`,
//! `/blob`) with the token the user gave once; nothing here touches a store. The
//! assets are compiled in, so the viewer works offline and cannot drift from the
//! service version; `build.rs` lists every file of `ui/`, so a file added there is
//! served with no change here. Every answer carries a strict Content-Security-Policy:
//! scripts and styles from this origin only, no inline code, no framing, so a log
//! line can never run script in the page even if it were rendered as markup.
//! `script-src 'self'` is also what the pages' ES modules need: module scripts and
//! the modules they import are fetched from this origin like any other script.

use axum::Router;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use runlog_protocol::ErrorBody;
use std::hash::{Hash, Hasher};

/// The policy of every viewer answer. `connect-src 'self'`: the page talks to this
/// service only; `img-src data:` allows the empty favicon.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// One embedded file.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static str,
}

/// Every file of `ui/` (pages, scripts, styles), listed by `build.rs` when the crate is
/// built, in name order. Pages are served at their routes (`PAGES`), everything else
/// at `/ui/assets/{name}`.
const FILES: &[Asset] = include!(concat!(env!("OUT_DIR"), "/viewer_files.rs"));

/// The file of `FILES` named `name`; a name that is missing stops the build.
const fn file(name: &str) -> &'static Asset {
    let mut i = 0;
    while i < FILES.len() {
        if same(FILES[i].name.as_bytes(), name.as_bytes()) {
            return &FILES[i];
        }
        i += 1;
    }
    panic!("a page the viewer routes to is missing from ui/");
}

/// Byte equality, usable in a `const fn`.
const fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

const INDEX: &Asset = file("index.html");
const STREAM: &Asset = file("stream.html");

/// The pages and the paths they are served at; every `.html` file is one of them.
const PAGES: &[(&str, &Asset)] = &[
    ("/", INDEX),
    ("/ui", INDEX),
    ("/ui/", INDEX),
    ("/ui/stream", STREAM),
];

/// The file served at `/ui/assets/{name}`: any file but a page.
fn asset(name: &str) -> Option<&'static Asset> {
    FILES
        .iter()
        .find(|a| a.name == name && !a.name.ends_with(".html"))
}

/// Routes of the viewer, for any router state: `/`, `/ui`, `/ui/`, `/ui/stream`
/// and `/ui/assets/{file}`.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    let mut router = Router::new();
    for &(path, page) in PAGES {
        router = router.route(
            path,
            get(move |h: HeaderMap| async move { serve(page, &h) }),
        );
    }
    router.route(
        "/ui/assets/{file}",
        get(
            |file: Result<axum::extract::Path<String>, axum::extract::rejection::PathRejection>,
             h: HeaderMap| async move {
                // A name that is not UTF-8 names no asset: the same JSON 404, not
                // the extractor's plain-text 400.
                let Ok(axum::extract::Path(file)) = file else {
                    return not_found("(a name that is not UTF-8)");
                };
                match asset(&file) {
                    Some(asset) => serve(asset, &h),
                    None => not_found(&file),
                }
            },
        ),
    )
}

fn serve(asset: &Asset, request: &HeaderMap) -> Response {
    let etag = etag(asset);
    let mut resp = if request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag))
    {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, asset.content_type)], asset.body).into_response()
    };
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    // Revalidate every time (a cheap 304): a new binary must never run old scripts.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    security_headers(h);
    resp
}

fn not_found(file: &str) -> Response {
    let body = ErrorBody::new(format!(
        "no viewer asset {:?}",
        file.chars().take(64).collect::<String>()
    ));
    let mut resp = (StatusCode::NOT_FOUND, axum::Json(body)).into_response();
    security_headers(resp.headers_mut());
    resp
}

fn security_headers(h: &mut HeaderMap) {
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // A link may carry `?token=`; the page removes it, and no referrer leaks it meanwhile.
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
}

/// A strong validator from the content (SipHash with fixed keys: stable across runs).
fn etag(asset: &Asset) -> String {
    #[allow(
        deprecated,
        reason = "SipHasher's fixed keys are what makes the tag stable"
    )]
    let mut hasher = std::hash::SipHasher::new();
    asset.body.hash(&mut hasher);
    format!("\"{:016x}\"", hasher.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_script_the_pages_load_is_embedded() {
        for page in [INDEX, STREAM] {
            for part in page.body.split("/ui/assets/").skip(1) {
                let name = part.split('"').next().unwrap_or_default();
                assert!(asset(name).is_some(), "{} loads missing {name}", page.name);
            }
        }
        for script in FILES.iter().filter(|a| a.name.ends_with(".js")) {
            for part in script.body.split("from \"./").skip(1) {
                let name = part.split('"').next().unwrap_or_default();
                assert!(
                    asset(name).is_some(),
                    "{} imports missing {name}",
                    script.name
                );
            }
        }
    }

    #[test]
    fn every_page_has_a_route() {
        for page in FILES.iter().filter(|a| a.name.ends_with(".html")) {
            assert!(
                PAGES.iter().any(|(_, p)| p.name == page.name),
                "ui/{} is served nowhere",
                page.name
            );
        }
    }

    #[test]
    fn pages_load_nothing_from_other_origins() {
        for asset in FILES {
            for needle in ["http://", "https://", "//fonts.", "<script>", "style=\""] {
                assert!(
                    !asset.body.contains(needle),
                    "{} contains {needle:?}",
                    asset.name
                );
            }
        }
    }
}
