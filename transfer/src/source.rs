//! Where an import reads from: a path (archive file, layout directory, FIFO,
//! device) or any [`AsyncRead`].
//!
//! An archive is read more than once (its metadata usually comes last, so
//! layers can only be checked and stored in a second pass). A regular file
//! is read in place; anything that can be read only once — a pipe, stdin,
//! a FIFO, a socket, an HTTP body — is first copied to a temporary file,
//! as `docker load` does with its input. The copy is removed when the
//! import ends, however it ends (error, cancellation, a dropped future).

use std::path::{Path, PathBuf};

use tokio::io::{AsyncRead, AsyncWriteExt as _};

use crate::error::{Error, Result};
use crate::progress::{Cancel, Reporter};

/// One thing to import.
#[non_exhaustive]
pub enum Input {
    /// A docker-archive or OCI archive file (plain or compressed with gzip,
    /// bzip2, xz or zstd), an extracted archive or OCI layout directory, or
    /// a FIFO or device to read an archive from.
    Path(PathBuf),
    /// An archive read from a stream (stdin, a pipe, an HTTP body), named
    /// for messages and reports.
    Reader {
        /// The name shown in reports and errors, e.g. `stdin`.
        name: String,
        /// The archive's bytes.
        reader: Box<dyn AsyncRead + Send + Unpin>,
    },
}

impl std::fmt::Debug for Input {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Path(path) => f.debug_tuple("Path").field(path).finish(),
            Self::Reader { name, .. } => f.debug_struct("Reader").field("name", name).finish(),
        }
    }
}

impl Input {
    /// An archive or layout at `path`.
    pub fn path(path: impl Into<PathBuf>) -> Self {
        Self::Path(path.into())
    }

    /// An archive read from `reader`, called `name` in reports.
    pub fn reader(
        name: impl Into<String>,
        reader: impl AsyncRead + Send + Unpin + 'static,
    ) -> Self {
        Self::Reader {
            name: name.into(),
            reader: Box::new(reader),
        }
    }
}

/// An input made readable more than once.
#[derive(Debug)]
pub(crate) struct Local {
    /// The name given (a path, or a stream's name).
    pub(crate) name: PathBuf,
    /// What to read: the path itself or the temporary copy.
    pub(crate) path: PathBuf,
    /// The temporary copy, removed on drop.
    _spool: Option<tempfile::TempPath>,
}

impl Local {
    /// Makes `input` readable more than once, copying streams into `dir`.
    pub(crate) async fn prepare(
        input: Input,
        dir: &Path,
        cancel: &Cancel,
        progress: &Reporter,
    ) -> Result<Self> {
        match input {
            Input::Path(path) => {
                let meta = tokio::fs::metadata(&path)
                    .await
                    .map_err(|source| Error::Open {
                        path: path.clone(),
                        source,
                    })?;
                if meta.is_dir() || meta.is_file() {
                    return Ok(Self {
                        name: path.clone(),
                        path,
                        _spool: None,
                    });
                }
                let file = tokio::fs::File::open(&path)
                    .await
                    .map_err(|source| Error::Open {
                        path: path.clone(),
                        source,
                    })?;
                spool(path, file, dir, cancel, progress).await
            }
            Input::Reader { name, reader } => {
                spool(PathBuf::from(name), reader, dir, cancel, progress).await
            }
        }
    }
}

/// Copies `reader` into a new temporary file in `dir`.
async fn spool(
    name: PathBuf,
    mut reader: impl AsyncRead + Unpin,
    dir: &Path,
    cancel: &Cancel,
    progress: &Reporter,
) -> Result<Local> {
    let failed = |source: std::io::Error| Error::Spool {
        path: name.clone(),
        dir: dir.to_owned(),
        source,
    };
    let temp = tempfile::Builder::new()
        .prefix(".imagecache-import-")
        .tempfile_in(dir)
        .map_err(failed)?;
    let (file, temp) = temp.into_parts();
    let mut file = tokio::fs::File::from_std(file);
    progress.begin(format!("receiving {}", name.display()), None);
    let mut buf = vec![0u8; 1 << 20];
    let copied = async {
        loop {
            if cancel.is_cancelled() {
                return Err(Error::Interrupted);
            }
            let n = tokio::io::AsyncReadExt::read(&mut reader, &mut buf)
                .await
                .map_err(|source| Error::Read {
                    path: name.clone(),
                    entry: None,
                    source,
                })?;
            if n == 0 {
                break;
            }
            file.write_all(&buf[..n]).await.map_err(failed)?;
            progress.add(n as u64);
        }
        file.flush().await.map_err(failed)
    }
    .await;
    progress.finish(&copied, |()| format!("received {}", name.display()));
    copied?;
    Ok(Local {
        path: temp.to_path_buf(),
        name,
        _spool: Some(temp),
    })
}
