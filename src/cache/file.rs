//! The cache's files: creating them private, recognising them, deleting them, and the
//! temporary file behind [`super::ResponseCache::temporary`].

use std::fs::{self, OpenOptions};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use redb::Database;

use crate::error::{Error, Result};

/// Deletes the cache file (the file itself, not only its entries); `Ok(false)` when it did not
/// exist.
///
/// Refuses a file that is not a redb database (a mistyped `--cache` must not delete a lead
/// file) and a cache another process has open.
pub fn remove_file(path: &Path) -> Result<bool> {
    let fail = |reason: String| Error::Cache {
        path: path.display().to_string(),
        reason,
    };
    let metadata = match fs::metadata(path) {
        Ok(metadata) => metadata,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(fail(e.to_string())),
    };
    if !metadata.is_file() {
        return Err(fail("not a file; nothing removed".into()));
    }
    if metadata.len() > 0 {
        if is_redb_file(path).map_err(|e| fail(e.to_string()))? != Some(true) {
            return Err(fail(
                "not a response cache (not a redb database); nothing removed".into(),
            ));
        }
        // Opening takes the lock: a cache in use by another process must not vanish under it.
        // Any other failure (a damaged file) does not stop the removal.
        match Database::builder().set_cache_size(1 << 20).open(path) {
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
                return Err(Error::CacheInUse {
                    path: path.display().to_string(),
                });
            }
            Ok(db) => drop(db),
            Err(_) => {}
        }
    }
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(fail(e.to_string())),
    }
}

/// The first bytes of every redb file.
const REDB_MAGIC: [u8; 9] = [b'r', b'e', b'd', b'b', 0x1A, 0x0A, 0xA9, 0x0D, 0x0A];

/// Whether the file at `path` starts like a redb database; `None` when it is missing or empty
/// (redb initialises an empty file).
pub(super) fn is_redb_file(path: &Path) -> io::Result<Option<bool>> {
    let mut file = match fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut start = Vec::with_capacity(REDB_MAGIC.len());
    (&mut file)
        .take(REDB_MAGIC.len() as u64)
        .read_to_end(&mut start)?;
    if start.is_empty() {
        return Ok(None);
    }
    Ok(Some(start == REDB_MAGIC))
}

/// Creates `dir` and its missing parents; those it creates get mode 0700 on Unix. Existing
/// directories are left as they are.
pub(super) fn create_private_dirs(dir: &Path) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

/// The error of the cache at `path` (as errors name it) that redb's `e` is: another process
/// holding the file is [`Error::CacheInUse`], anything else [`Error::Cache`] in words.
pub(super) fn redb_error(path: String, e: redb::Error) -> Error {
    match e {
        redb::Error::DatabaseAlreadyOpen => Error::CacheInUse { path },
        e => Error::Cache {
            path,
            reason: describe(e),
        },
    }
}

/// A redb error in words, with what to do for the errors a user can act on.
pub(super) fn describe(e: redb::Error) -> String {
    match e {
        redb::Error::DatabaseAlreadyOpen => "another prospeo process is using this cache".into(),
        redb::Error::Corrupted(reason) => format!(
            "the file is damaged or is not a response cache ({reason}); move it away or use another --cache PATH"
        ),
        redb::Error::UpgradeRequired(version) => format!(
            "the file was written by a newer format of the cache (redb file format {version}); use a newer prospeo or another --cache PATH"
        ),
        other => other.to_string(),
    }
}

/// Opens `path` for reading and writing, creating it when missing; a new file gets mode 0600
/// on Unix before anything is written to it (the cache holds personal data).
pub(super) fn open_private(path: &Path, create_new: bool) -> io::Result<fs::File> {
    let mut options = OpenOptions::new();
    options.read(true).write(true);
    if create_new {
        options.create_new(true);
    } else {
        options.create(true).truncate(false);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)
}

/// The file of a temporary store, while it still has a name: removed (with its private
/// directory) on drop.
///
/// On Unix the name is removed as soon as the file is open, so nothing is left behind even
/// when the process is killed; the open descriptor keeps the data until the store is dropped.
/// Where an open file cannot be removed (Windows), the removal waits for the drop.
#[derive(Debug)]
pub(super) struct TemporaryFile {
    /// The file and its directory, while they exist.
    names: Option<(PathBuf, PathBuf)>,
}

impl TemporaryFile {
    /// Creates a private directory (0700) under the system's temporary directory (`TMPDIR` on
    /// Unix) and a new file (0600) in it.
    pub(super) fn create() -> io::Result<(fs::File, TemporaryFile)> {
        static SEQUENCE: AtomicU64 = AtomicU64::new(0);
        let base = std::env::temp_dir();
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let mut builder = fs::DirBuilder::new();
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            builder.mode(0o700);
        }
        let mut attempt = 0;
        let dir = loop {
            let n = SEQUENCE.fetch_add(1, Ordering::Relaxed);
            let dir = base.join(format!(
                "prospeo-answers-{}-{nanos:08x}-{n}",
                std::process::id()
            ));
            match builder.create(&dir) {
                Ok(()) => break dir,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempt < 100 => {
                    attempt += 1;
                }
                Err(e) => {
                    return Err(io::Error::new(
                        e.kind(),
                        format!("cannot create a directory in {}: {e}", base.display()),
                    ));
                }
            }
        };
        let path = dir.join("answers.redb");
        let file = match open_private(&path, true) {
            Ok(file) => file,
            Err(e) => {
                let _ = fs::remove_dir(&dir);
                return Err(e);
            }
        };
        let mut temporary = TemporaryFile {
            names: Some((path, dir)),
        };
        if cfg!(unix) {
            temporary.remove();
        }
        Ok((file, temporary))
    }

    /// Removes the file and its directory, once.
    fn remove(&mut self) {
        if let Some((path, dir)) = self.names.take() {
            let _ = fs::remove_file(&path);
            let _ = fs::remove_dir(&dir);
        }
    }
}

impl Drop for TemporaryFile {
    fn drop(&mut self) {
        self.remove();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::fixtures::*;
    use crate::cache::{CachedAnswer, ResponseCache};

    #[test]
    fn remove_file_deletes_the_cache_file_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("responses.redb");
        assert!(!remove_file(&path).unwrap());
        {
            let cache = ResponseCache::open(&path).unwrap();
            cache
                .put_many(&[(key("a@x.io"), entry(CachedAnswer::NotMatched, false, at(0)))])
                .unwrap();
            // In use: refused.
            let err = remove_file(&path).unwrap_err().to_string();
            assert!(err.contains("another prospeo process"), "{err}");
            assert!(path.exists());
        }
        assert!(remove_file(&path).unwrap());
        assert!(!path.exists());
        assert!(!remove_file(&path).unwrap());
        // Not a cache: kept.
        let leads = dir.path().join("leads.csv");
        fs::write(&leads, "First Name,Last Name\nEva,Kiegler\n").unwrap();
        let err = remove_file(&leads).unwrap_err().to_string();
        assert!(err.contains("not a response cache"), "{err}");
        assert!(leads.exists());
        // An empty file (a create interrupted before the header was written) goes.
        let empty = dir.path().join("empty.redb");
        fs::write(&empty, "").unwrap();
        assert!(remove_file(&empty).unwrap());
    }

    #[test]
    fn a_temporary_file_leaves_nothing_behind() {
        let (file, temporary) = TemporaryFile::create().unwrap();
        let names = temporary.names.clone();
        if cfg!(unix) {
            assert!(names.is_none(), "removed as soon as it is open");
        } else {
            let (path, _) = names.clone().unwrap();
            assert!(path.exists());
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(file.metadata().unwrap().permissions().mode() & 0o777, 0o600);
        }
        drop(file);
        drop(temporary);
        if let Some((path, dir)) = names {
            assert!(!path.exists());
            assert!(!dir.exists());
        }
    }
}
