//! Applying a mutation to the tree (without fsync): by the flusher once its record is durable,
//! by pending writers at once, and by replay.

use super::*;

/// Applies one mutation to the tree, without fsync. Directories are created as needed and
/// pruned when a delete empties them (as the backend does).
pub(in super::super) fn apply(root: &Path, a: Apply) -> io::Result<Applied> {
    match a {
        Apply::Put { path, bytes } => {
            let temp = write_temp(root, &path, &bytes)?;
            std::fs::rename(&temp, &path).inspect_err(|_| {
                let _ = std::fs::remove_file(&temp);
            })?;
            Ok(true)
        }
        Apply::PutIfAbsent { path, bytes } => {
            let temp = write_temp(root, &path, &bytes)?;
            let linked = std::fs::hard_link(&temp, &path);
            let _ = std::fs::remove_file(&temp);
            match linked {
                Ok(()) => Ok(true),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
                Err(e) => Err(e),
            }
        }
        Apply::Delete { path } => match std::fs::remove_file(&path) {
            Ok(()) => {
                prune(root, path.parent());
                Ok(true)
            }
            Err(e) if is_absent(&e) || e.kind() == io::ErrorKind::IsADirectory => Ok(false),
            Err(e) => Err(e),
        },
    }
}

fn write_temp(root: &Path, path: &Path, bytes: &[u8]) -> io::Result<PathBuf> {
    use std::io::Write;
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::other("storage path without parent"))?;
    let mut attempt = 0;
    loop {
        let temp = dir.join(super::super::files::temp_name()?);
        match OpenOptions::new().write(true).create_new(true).open(&temp) {
            Ok(mut f) => {
                f.write_all(bytes).inspect_err(|_| {
                    let _ = std::fs::remove_file(&temp);
                })?;
                return Ok(temp);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound && attempt < DIR_RACE_RETRIES_MAX => {
                attempt += 1;
                if dir.starts_with(root) {
                    std::fs::create_dir_all(dir)?;
                }
            }
            Err(e) => return Err(e),
        }
    }
}

fn prune(root: &Path, mut dir: Option<&Path>) {
    while let Some(d) = dir {
        if d == root || !d.starts_with(root) || std::fs::remove_dir(d).is_err() {
            return;
        }
        dir = d.parent();
    }
}
