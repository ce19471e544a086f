//! What the conformance harnesses of the local backends share: handing out
//! fresh directories, either temporary or below a directory the caller
//! names.

use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Where a harness makes its namespaces.
#[derive(Debug)]
pub(crate) enum Namespaces {
    /// A new temporary directory each, removed when the harness goes.
    Temporary(Mutex<Vec<tempfile::TempDir>>),
    /// `<dir>/<n>` for n = 0, 1, …; the caller removes `dir` when it is done.
    Under {
        /// The parent of every namespace.
        dir: PathBuf,
        /// The next number to hand out.
        next: AtomicUsize,
    },
}

impl Namespaces {
    pub(crate) fn temporary() -> Self {
        Self::Temporary(Mutex::new(Vec::new()))
    }

    pub(crate) fn under(dir: impl Into<PathBuf>) -> Self {
        Self::Under {
            dir: dir.into(),
            next: AtomicUsize::new(0),
        }
    }

    /// A new directory path that nothing else uses. Temporary ones exist
    /// already; ones below a named directory are made by the backend.
    ///
    /// A harness cannot report errors (its cases fail by panicking), so a
    /// temporary directory that cannot be made fails the case that asked.
    pub(crate) fn fresh(&self) -> PathBuf {
        match self {
            Self::Temporary(dirs) => {
                let dir = match tempfile::tempdir() {
                    Ok(dir) => dir,
                    Err(e) => panic!("cannot make a temporary directory for a case: {e}"),
                };
                let path = dir.path().to_path_buf();
                dirs.lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push(dir);
                path
            }
            Self::Under { dir, next } => dir.join(next.fetch_add(1, Ordering::Relaxed).to_string()),
        }
    }
}

#[cfg(feature = "fs")]
/// Overwrites an existing file with `data`, as damage below the backend.
///
/// # Errors
/// The file is missing (there is nothing to damage), or cannot be written.
pub(crate) async fn overwrite(
    hook: &'static str,
    path: &std::path::Path,
    data: bytes::Bytes,
    must_exist: bool,
) -> imagecache_conformance::HookResult {
    let path = path.to_path_buf();
    let result = tokio::task::spawn_blocking(move || {
        if must_exist && !path.is_file() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("{} is not a file", path.display()),
            ));
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, &data)
    })
    .await;
    match result {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(imagecache_conformance::HookError::failed(hook, e)),
        Err(e) => Err(imagecache_conformance::HookError::failed(hook, e)),
    }
}
