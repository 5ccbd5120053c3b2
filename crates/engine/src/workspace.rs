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

/// Where a file or directory of a request goes: a relative path inside `root`; an
/// absolute path as it is, only when `allow_host_paths` (the engine serves a
/// machine dedicated to the stage), and never with `..` in it.
pub fn target(root: &Path, path: &str, allow_host_paths: bool) -> Result<PathBuf, EngineError> {
    if !Path::new(path).is_absolute() {
        return resolve(root, path);
    }
    if !allow_host_paths {
        return Err(EngineError::BadRequest(format!(
            "path {path:?} is absolute: this engine writes files and volumes only inside the \
             workspace; start it with --allow-host-paths on a machine dedicated to the stage \
             to write host paths"
        )));
    }
    if path.contains('\0')
        || Path::new(path)
            .components()
            .any(|c| c == Component::ParentDir)
    {
        return Err(EngineError::BadRequest(format!(
            "path {path:?} must not contain '..' or NUL"
        )));
    }
    Ok(PathBuf::from(path))
}

/// Writes setup's files (and directories) with their modes: into the workspace, or
/// at absolute paths when `allow_host_paths`.
pub fn write_files(
    root: &Path,
    files: &[SetupFile],
    allow_host_paths: bool,
) -> Result<(), EngineError> {
    // Validate everything before writing anything: a bad entry leaves no half-setup.
    let targets = files
        .iter()
        .map(|f| target(root, &f.path, allow_host_paths))
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
        write_files(dir.path(), &files, false).expect("write");
        let meta = std::fs::metadata(dir.path().join("bin/run.sh")).expect("meta");
        assert_eq!(meta.permissions().mode() & 0o777, 0o755);
        assert!(dir.path().join("cache").is_dir());
    }

    #[test]
    fn absolute_paths_need_the_host_paths_switch() {
        let root = Path::new("/ws");
        let refused = target(root, "/etc/x", false).expect_err("refused");
        assert!(
            refused.to_string().contains("--allow-host-paths"),
            "{refused}"
        );
        assert_eq!(
            target(root, "/tmp/h/x", true).expect("allowed"),
            Path::new("/tmp/h/x")
        );
        assert!(target(root, "/tmp/../etc/x", true).is_err());
        assert_eq!(target(root, "a", true).expect("rel"), Path::new("/ws/a"));
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
        assert!(write_files(dir.path(), &files, false).is_err());
        assert!(!dir.path().join("ok.txt").exists());
    }
}
