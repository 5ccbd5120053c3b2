//! Directories that hold streams' logs (spools, the outbox, reserves): this user's
//! alone. A leaf every module that makes one uses, so none of them needs another's.

use std::path::Path;

/// Creates `dir` and its missing parents for this user alone (`0700` on Unix): spools
/// and the outbox hold the streams' logs. A directory that exists keeps its mode.
pub fn create(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}
