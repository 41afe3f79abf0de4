//! File modes: what gaitkeeper writes (behavioural features, models, sealed secrets, the
//! audit trail) is readable by the user it runs as and nobody else.
//!
//! Owns: the process's file-creation mask, tightening files an older version (or a lax umask)
//! left readable, and the check that a secret file is not readable by others. Imports no
//! other gaitkeeper module.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Files and directories created from now on get no group or other permissions (0600 /
/// 0700). Called once at start, before anything is written.
pub fn private_by_default() {
    // SAFETY: umask only swaps the process's creation mask; it cannot fail.
    unsafe {
        libc::umask(0o077);
    }
}

/// Removes group and other permissions from `path` and, for a directory, from everything
/// below it (not following symbolic links). Returns the paths that were changed.
pub fn make_private(path: &Path) -> io::Result<Vec<PathBuf>> {
    let mut changed = Vec::new();
    let mut pending = vec![path.to_path_buf()];
    // Bounded: a data directory holds a handful of files.
    while let Some(path) = pending.pop() {
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        if meta.file_type().is_symlink() {
            continue;
        }
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0 {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode & 0o700))?;
            changed.push(path.clone());
        }
        if meta.is_dir() && pending.len() < 10_000 {
            for entry in std::fs::read_dir(&path)? {
                pending.push(entry?.path());
            }
        }
    }
    Ok(changed)
}

/// Why a secret file may not be used: it can be read by users other than its owner.
pub(crate) fn check_secret_file(path: &Path) -> Result<(), String> {
    let meta = std::fs::metadata(path)
        .map_err(|e| format!("cannot read secret file {:?}: {e}", path.display()))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "secret file {:?} can be read by other users (mode {mode:04o}); make it private with `chmod 600 {}`",
            path.display(),
            path.display()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readable_files_are_made_private_and_secrets_checked() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("spool");
        std::fs::create_dir(&sub).unwrap();
        let file = sub.join("a.db");
        std::fs::write(&file, b"x").unwrap();
        for p in [dir.path(), &sub, &file] {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        assert!(check_secret_file(&file).unwrap_err().contains("chmod 600"));
        let changed = make_private(dir.path()).unwrap();
        assert_eq!(changed.len(), 3);
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&file), 0o700 & 0o755);
        assert_eq!(mode(&sub), 0o700);
        assert!(check_secret_file(&file).is_ok());
        assert!(make_private(dir.path()).unwrap().is_empty());
    }
}
