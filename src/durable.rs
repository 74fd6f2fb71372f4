//! Small state files replaced durably: the users file, the allowlist snapshot, the notices
//! sent. A reader sees the old file or the new one, never a mix, and after a crash the new
//! one is there once [`replace`] has returned.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Replaces `path` with `bytes`: a temporary file in the same folder (mode 0600, or the
/// permissions of the file it replaces), fsync, rename over `path`, folder fsync.
pub fn replace(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let (dir, name) = dir_and_name(path)?;
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    // A temp file left by a crashed run of this same process id is stale.
    let _ = fs::remove_file(&tmp);
    let result = write_then_rename(path, &tmp, &dir, bytes);
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// The folder and file name of `path`.
pub fn dir_and_name(path: &Path) -> io::Result<(PathBuf, String)> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} has no file name", path.display()),
        )
    })?;
    Ok((dir, name.to_string_lossy().into_owned()))
}

fn write_then_rename(path: &Path, tmp: &Path, dir: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(tmp)?;
    // Keep the owner, group and permissions of the file being replaced: a users file made
    // `root:mail 0640` so that the service can read it must stay so when root rewrites it.
    if let Ok(meta) = fs::metadata(path) {
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            let new = file.metadata()?;
            if (new.uid(), new.gid()) != (meta.uid(), meta.gid()) {
                std::os::unix::fs::fchown(&file, Some(meta.uid()), Some(meta.gid())).map_err(
                    |e| {
                        io::Error::new(
                            e.kind(),
                            format!(
                                "cannot keep the owner {}:{} of {}: {e}",
                                meta.uid(),
                                meta.gid(),
                                path.display()
                            ),
                        )
                    },
                )?;
            }
        }
        file.set_permissions(meta.permissions())?;
    }
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    fs::rename(tmp, path)?;
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_whole_keeps_permissions_and_leaves_no_temp_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        replace(&path, b"one").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"one");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        replace(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o640
        );
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().flatten().collect();
        assert_eq!(names.len(), 1, "{names:?}");
        assert!(replace(Path::new("/"), b"x").is_err());
    }

    #[test]
    fn keeps_the_owner_and_group() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users");
        replace(&path, b"one").unwrap();
        // Only root may give a file away; elsewhere there is nothing to keep.
        if std::os::unix::fs::chown(&path, Some(1), Some(8)).is_err() {
            eprintln!("not root: the owner cannot be changed, nothing to check");
            return;
        }
        replace(&path, b"two").unwrap();
        let meta = fs::metadata(&path).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (1, 8));
    }
}
