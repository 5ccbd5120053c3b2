//! Stage workspaces: one directory per stage, files written only inside it.

use crate::error::EngineError;
use runlog_protocol::engine::SetupFile;
use std::path::{Component, Path, PathBuf};

/// Default permission bits of files written by setup.
const DEFAULT_FILE_MODE: u32 = 0o644;

/// `root/rel`, refusing anything that could leave `root`: absolute paths, `..`,
/// NUL bytes, an empty path.
pub fn resolve(root: &Path, rel: &str) -> Result<PathBuf, EngineError> {
    if rel.is_empty() || rel.contains('\0') {
        return Err(EngineError::BadRequest(format!(
            "path {rel:?} must be a non-empty relative path"
        )));
    }
    let path = Path::new(rel);
    let mut out = root.to_path_buf();
    for c in path.components() {
        match c {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                return Err(EngineError::BadRequest(format!(
                    "path {rel:?} must stay inside the workspace (no absolute paths, no '..')"
                )));
            }
        }
    }
    Ok(out)
}

/// Writes setup's files (and directories) into the workspace with their modes.
pub fn write_files(root: &Path, files: &[SetupFile]) -> Result<(), EngineError> {
    // Validate everything before writing anything: a bad entry leaves no half-setup.
    let targets = files
        .iter()
        .map(|f| resolve(root, &f.path))
        .collect::<Result<Vec<_>, _>>()?;
    for (file, target) in files.iter().zip(targets) {
        let io = |e: std::io::Error| {
            EngineError::Internal(format!("could not write {:?}: {e}", file.path))
        };
        if file.is_dir {
            std::fs::create_dir_all(&target).map_err(io)?;
        } else {
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent).map_err(io)?;
            }
            std::fs::write(&target, file.data.as_bytes()).map_err(io)?;
        }
        let mode = file.mode.unwrap_or(if file.is_dir {
            0o755
        } else {
            DEFAULT_FILE_MODE
        });
        set_mode(&target, mode & 0o7777).map_err(io)?;
    }
    Ok(())
}

#[cfg(unix)]
fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

#[cfg(not(unix))]
fn set_mode(_path: &Path, _mode: u32) -> std::io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_paths_are_refused() {
        let root = Path::new("/ws");
        for bad in ["", "/etc/passwd", "../x", "a/../../b", "a/..", "a\0b"] {
            assert!(resolve(root, bad).is_err(), "{bad:?}");
        }
        assert_eq!(resolve(root, "a/./b").expect("ok"), Path::new("/ws/a/b"));
    }

    #[cfg(unix)]
    #[test]
    fn files_are_written_with_their_mode() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("tempdir");
        let files = vec![
            SetupFile {
                path: "bin/run.sh".into(),
                data: "echo hi\n".into(),
                mode: Some(0o755),
                is_dir: false,
            },
            SetupFile {
                path: "cache".into(),
                is_dir: true,
                ..SetupFile::default()
            },
        ];
        write_files(dir.path(), &files).expect("write");
        let meta = std::fs::metadata(dir.path().join("bin/run.sh")).expect("meta");
        assert_eq!(meta.permissions().mode() & 0o777, 0o755);
        assert!(dir.path().join("cache").is_dir());
    }

    #[test]
    fn one_bad_path_writes_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = vec![
            SetupFile {
                path: "ok.txt".into(),
                ..SetupFile::default()
            },
            SetupFile {
                path: "../evil".into(),
                ..SetupFile::default()
            },
        ];
        assert!(write_files(dir.path(), &files).is_err());
        assert!(!dir.path().join("ok.txt").exists());
    }
}
