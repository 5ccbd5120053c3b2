//! Lists the web viewer's files (`ui/` at the workspace root) for `src/viewer.rs`, so a
//! file added there is served without a change to the Rust code.
//!
//! Every file directly in `ui/` is embedded, with its content type decided here by its
//! extension: a type this script does not know fails the build rather than being
//! served with a guess. Not embedded: hidden files, `package.json` and the `test/`
//! folder (the node unit tests and their configuration). The generated file is
//! `$OUT_DIR/viewer_files.rs`, an array of `Asset`s in name order.
//!
//! A build script rather than `include_dir` or `rust-embed`: cargo reruns it when a
//! file is added to or removed from `ui/` (a folder given to `rerun-if-changed` is
//! scanned whole), where `include_dir!` notices new files only on nightly Rust
//! (`proc_macro::tracked_path`) and `rust-embed` reads the folder at run time in debug
//! builds unless told otherwise; content types are fixed here instead of guessed from
//! a MIME table; and it needs no dependency.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Files and folders of `ui/` that are tooling, not pages.
const NOT_SERVED: &[&str] = &["package.json", "test"];

/// The content type of each extension the viewer may use.
const TYPES: &[(&str, &str)] = &[
    ("html", "text/html; charset=utf-8"),
    ("js", "text/javascript; charset=utf-8"),
    ("css", "text/css; charset=utf-8"),
    ("svg", "image/svg+xml"),
];

fn main() {
    let manifest = PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"),
    );
    let ui = manifest.join("../../ui");
    // A directory here makes cargo rerun this script when any file under it changes,
    // including a file added or removed.
    println!("cargo:rerun-if-changed={}", ui.display());
    println!("cargo:rerun-if-changed=build.rs");

    let mut files = Vec::new();
    for entry in std::fs::read_dir(&ui).unwrap_or_else(|e| panic!("reading {}: {e}", ui.display()))
    {
        let entry = entry.unwrap_or_else(|e| panic!("reading {}: {e}", ui.display()));
        let name = entry
            .file_name()
            .into_string()
            .unwrap_or_else(|n| panic!("ui/{n:?}: a file name that is not UTF-8"));
        if name.starts_with('.') || NOT_SERVED.contains(&name.as_str()) {
            continue;
        }
        let path = entry.path();
        assert!(
            path.is_file(),
            "ui/{name}: the viewer serves the files directly in ui/, not folders"
        );
        files.push((name, path));
    }
    files.sort();

    let mut out = String::from("&[\n");
    for (name, path) in &files {
        let content_type = content_type(name);
        let path = absolute(path);
        writeln!(
            out,
            "    Asset {{ name: {name:?}, content_type: {content_type:?}, body: include_str!({path:?}) }},"
        )
        .expect("writing to a String");
    }
    out.push_str("]\n");
    let dest = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"))
        .join("viewer_files.rs");
    std::fs::write(&dest, out).unwrap_or_else(|e| panic!("writing {}: {e}", dest.display()));
}

fn content_type(name: &str) -> &'static str {
    let ext = name.rsplit_once('.').map(|(_, e)| e).unwrap_or_default();
    match TYPES.iter().find(|(e, _)| *e == ext) {
        Some((_, t)) => t,
        None => panic!(
            "ui/{name}: no content type for {ext:?}; add it to TYPES in crates/service/build.rs"
        ),
    }
}

fn absolute(path: &Path) -> String {
    let path = path
        .canonicalize()
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    path.to_str()
        .unwrap_or_else(|| panic!("{}: a path that is not UTF-8", path.display()))
        .to_owned()
}
