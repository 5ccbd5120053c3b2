//! The worker harness, embedded in the binary and written next to the virtualenv.

use std::path::{Path, PathBuf};

/// Source of `harness.py` (see `crates/engine/python/harness.py` for the protocol).
pub const HARNESS_PY: &str = include_str!("../../python/harness.py");

/// Writes the harness into `dir` unless an identical copy is there, and returns its
/// path. The file name carries a hash of the source, so an upgraded engine never runs
/// an old harness and concurrent engines never write over a file another one runs.
pub fn install(dir: &Path) -> std::io::Result<PathBuf> {
    let path = dir.join(format!("harness-{:016x}.py", fnv1a(HARNESS_PY.as_bytes())));
    if std::fs::read(&path).is_ok_and(|on_disk| on_disk == HARNESS_PY.as_bytes()) {
        return Ok(path);
    }
    std::fs::create_dir_all(dir)?;
    // Written under a unique name, then renamed: a reader never sees half a file.
    let tmp = dir.join(format!(
        ".harness-{}-{}.tmp",
        std::process::id(),
        rand::random::<u64>()
    ));
    std::fs::write(&tmp, HARNESS_PY)?;
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

/// FNV-1a: a stable content hash for a file name (not for security).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_writes_the_embedded_source_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = install(dir.path()).expect("installs");
        let second = install(dir.path()).expect("reinstalls");
        assert_eq!(first, second);
        assert_eq!(
            std::fs::read_to_string(&first).expect("readable"),
            HARNESS_PY
        );
        let files = std::fs::read_dir(dir.path()).expect("listable").count();
        assert_eq!(files, 1, "no temporary file left behind");
    }
}
