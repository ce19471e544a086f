//! Where exported files go: members of a tar stream, or files of a directory
//! written beside the target and renamed into place at the end.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures::StreamExt as _;
use imagecache_core::Digest;
use imagecache_engine::blob::VerifiedReader;
use tokio::io::{AsyncWrite, AsyncWriteExt as _};

use super::ExportTarget;
use crate::error::{Error, Result};
use crate::progress::{Cancel, Reporter};

/// Tar blocks are 512 bytes.
const BLOCK: u64 = 512;

enum Out {
    Tar(Box<dyn AsyncWrite + Send + Unpin>),
    Dir {
        /// Where files are written until the export is complete.
        work: tempfile::TempDir,
        /// Where the finished directory goes.
        target: PathBuf,
    },
}

/// An export being written.
pub(super) struct Sink {
    out: Out,
    /// The target's name, for errors.
    name: PathBuf,
    /// Directories already written as tar members.
    dirs: BTreeSet<String>,
    /// Blobs written, so that each goes once.
    blobs: BTreeSet<Digest>,
    bytes: u64,
    cancel: Cancel,
    progress: Reporter,
}

impl Sink {
    pub(super) async fn open(
        target: ExportTarget,
        cancel: Cancel,
        progress: Reporter,
    ) -> Result<Self> {
        let (out, name) = match target {
            ExportTarget::Writer { name, writer } => (Out::Tar(writer), PathBuf::from(name)),
            ExportTarget::Dir(target) => {
                let write_error = |source| Error::Write {
                    path: target.clone(),
                    source,
                };
                match std::fs::read_dir(&target) {
                    Ok(mut entries) => {
                        if entries.next().is_some() {
                            return Err(Error::NotEmpty { path: target });
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(write_error(e)),
                }
                let parent = match target.parent() {
                    Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
                    _ => PathBuf::from("."),
                };
                let work = tempfile::Builder::new()
                    .prefix(".imagecache-export-")
                    .tempdir_in(&parent)
                    .map_err(write_error)?;
                (
                    Out::Dir {
                        work,
                        target: target.clone(),
                    },
                    target,
                )
            }
        };
        Ok(Self {
            out,
            name,
            dirs: BTreeSet::new(),
            blobs: BTreeSet::new(),
            bytes: 0,
            cancel,
            progress,
        })
    }

    pub(super) fn blobs(&self) -> usize {
        self.blobs.len()
    }

    pub(super) fn bytes(&self) -> u64 {
        self.bytes
    }

    fn write_error(&self, source: std::io::Error) -> Error {
        Error::Write {
            path: self.name.clone(),
            source,
        }
    }

    fn check_cancel(&self) -> Result<()> {
        if self.cancel.is_cancelled() {
            Err(Error::Interrupted)
        } else {
            Ok(())
        }
    }

    /// Whether the blob still has to be written; marks it written.
    pub(super) fn wants(&mut self, digest: &Digest) -> bool {
        self.blobs.insert(*digest)
    }

    /// Writes a small file whole.
    pub(super) async fn file(&mut self, name: &str, data: &[u8]) -> Result<()> {
        self.check_cancel()?;
        self.parents(name).await?;
        match &mut self.out {
            Out::Tar(_) => {
                self.header(name, data.len() as u64, tar::EntryType::Regular)
                    .await?;
                self.raw(data).await?;
                self.pad(data.len() as u64).await
            }
            Out::Dir { work, .. } => {
                let path = work.path().join(name);
                tokio::fs::write(&path, data)
                    .await
                    .map_err(|e| self.write_error(e))?;
                self.bytes += data.len() as u64;
                Ok(())
            }
        }
    }

    /// Writes a blob read from the blob cache, verified as it streams.
    pub(super) async fn blob(&mut self, name: &str, reader: VerifiedReader) -> Result<()> {
        let digest = *reader.digest();
        let size = reader.size();
        self.parents(name).await?;
        let mut file = match &self.out {
            Out::Tar(_) => {
                self.header(name, size, tar::EntryType::Regular).await?;
                None
            }
            Out::Dir { work, .. } => Some(
                tokio::fs::File::create(work.path().join(name))
                    .await
                    .map_err(|e| self.write_error(e))?,
            ),
        };
        let mut stream = reader.into_byte_stream();
        let mut written = 0u64;
        while let Some(chunk) = stream.next().await {
            self.check_cancel()?;
            let chunk: Bytes = chunk.map_err(|source| Error::BlobVerify { digest, source })?;
            if written + chunk.len() as u64 > size {
                return Err(corrupt(digest, "longer than its recorded size".to_owned()));
            }
            written += chunk.len() as u64;
            match &mut file {
                Some(file) => {
                    file.write_all(&chunk).await.map_err(|e| Error::Write {
                        path: self.name.clone(),
                        source: e,
                    })?;
                    self.bytes += chunk.len() as u64;
                }
                None => self.raw(&chunk).await?,
            }
            self.progress.add(chunk.len() as u64);
        }
        if written != size {
            return Err(corrupt(
                digest,
                format!("{written} bytes read, {size} recorded"),
            ));
        }
        match file {
            Some(mut file) => file.flush().await.map_err(|e| self.write_error(e)),
            None => self.pad(size).await,
        }
    }

    /// Writes the directories above `name` that are not written yet.
    async fn parents(&mut self, name: &str) -> Result<()> {
        let mut at = 0;
        while let Some(slash) = name[at..].find('/') {
            let dir = &name[..at + slash];
            at += slash + 1;
            if !self.dirs.insert(dir.to_owned()) {
                continue;
            }
            match &self.out {
                Out::Tar(_) => {
                    self.header(&format!("{dir}/"), 0, tar::EntryType::Directory)
                        .await?;
                }
                Out::Dir { work, .. } => {
                    let path = work.path().join(dir);
                    tokio::fs::create_dir_all(&path)
                        .await
                        .map_err(|e| self.write_error(e))?;
                }
            }
        }
        Ok(())
    }

    async fn header(&mut self, name: &str, size: u64, kind: tar::EntryType) -> Result<()> {
        let mut header = tar::Header::new_ustar();
        header.set_path(name).map_err(|e| self.write_error(e))?;
        header.set_size(size);
        header.set_entry_type(kind);
        header.set_mode(if kind == tar::EntryType::Directory {
            0o755
        } else {
            0o644
        });
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        header.set_cksum();
        let bytes = header.as_bytes().to_vec();
        self.raw(&bytes).await
    }

    async fn raw(&mut self, data: &[u8]) -> Result<()> {
        let Out::Tar(writer) = &mut self.out else {
            return Ok(());
        };
        let result = writer.write_all(data).await;
        result.map_err(|e| self.write_error(e))?;
        self.bytes += data.len() as u64;
        Ok(())
    }

    /// Pads a member of `size` bytes to a whole block.
    async fn pad(&mut self, size: u64) -> Result<()> {
        let rest = size % BLOCK;
        if rest == 0 {
            return Ok(());
        }
        let zeros = [0u8; BLOCK as usize];
        let fill = usize::try_from(BLOCK - rest).unwrap_or(0);
        self.raw(&zeros[..fill]).await
    }

    /// Ends the tar stream, or moves the finished directory into place.
    pub(super) async fn finish(&mut self) -> Result<()> {
        self.check_cancel()?;
        match &mut self.out {
            Out::Tar(_) => {
                self.raw(&[0u8; 2 * BLOCK as usize]).await?;
                let Out::Tar(writer) = &mut self.out else {
                    return Ok(());
                };
                let flushed = writer.flush().await;
                flushed.map_err(|e| self.write_error(e))
            }
            Out::Dir { work, target } => {
                let (work, target) = (work.path().to_owned(), target.clone());
                publish(&work, &target).map_err(|e| self.write_error(e))
            }
        }
    }
}

fn corrupt(digest: Digest, reason: String) -> Error {
    Error::BlobVerify {
        digest,
        source: imagecache_core::Error::Corrupt {
            key: imagecache_core::Key::Blob(digest),
            reason,
            source: None,
        },
    }
}

/// Moves the finished directory `work` to `target`, which is absent or an
/// empty directory.
fn publish(work: &Path, target: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir(target) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    std::fs::rename(work, target)
}
