//! Blobs: chunked storage, streamed in and out in bounded memory.
//!
//! An upload gets a fresh id, registered in `pending_uploads`. Its body is
//! cut into [`CHUNK_SIZE`] chunks, each written by its own short write
//! transaction under `(upload id, index)`, so other writers are never held
//! off for long and no more than two chunks are in memory. Once the body has
//! ended without error, one small transaction maps the digest to the upload
//! and drops the pending entry; only then is the blob visible. A body error
//! removes the chunks, and chunks of an upload cut short by a crash or a
//! dropped future are removed on the next open (the pending entry says
//! which).
//!
//! Chunk writes are non-durable commits: they reach the disk with the
//! publishing commit, which is durable (with [`Durability::Immediate`]), so
//! a blob costs one fsync however large it is. A crash before the publish
//! loses the chunks or leaves them pending, never a visible partial blob.
//!
//! [`Durability::Immediate`]: super::Durability::Immediate

use std::sync::Arc;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::TryStreamExt as _;
use imagecache_core::{
    BlobBackend, BlobInfo, BlobNotes, BlobReader, ByteStream, Digest, Key, MetadataKey, Scratch,
    Timestamp, Usage, normalize_notes,
};
use redb::{ReadableTable as _, TableDefinition};
use tokio::task::JoinHandle;

use super::{Error, Inner, META, META_NEXT_UPLOAD, RedbBackend, blob_not_found, with_key};

#[async_trait]
impl BlobBackend for RedbBackend {
    async fn put_blob(
        &self,
        digest: &Digest,
        body: ByteStream,
    ) -> imagecache_core::Result<BlobInfo> {
        put(self, *digest, body).await
    }

    async fn get_blob(&self, digest: &Digest) -> imagecache_core::Result<BlobReader> {
        get(self, *digest).await
    }

    async fn head_blob(&self, digest: &Digest) -> imagecache_core::Result<BlobInfo> {
        let digest = *digest;
        self.run(Some(Key::Blob(digest)), move |inner| {
            inner
                .blob_info(&digest)?
                .ok_or_else(|| blob_not_found(digest))
        })
        .await
    }

    async fn delete_blob(&self, digest: &Digest) -> imagecache_core::Result<()> {
        let digest = *digest;
        self.run(Some(Key::Blob(digest)), move |inner| {
            inner.delete_blob(&digest)
        })
        .await
    }

    async fn list_blobs(&self) -> imagecache_core::Result<Vec<BlobInfo>> {
        self.run(None, Inner::list_blobs).await
    }

    /// Each blob with the time its upload was published, recorded in
    /// `blob_times`; `None` for blobs stored by a version that did not
    /// record it.
    async fn list_blob_times(&self) -> imagecache_core::Result<Vec<(BlobInfo, Option<Timestamp>)>> {
        self.run(None, Inner::list_blob_times).await
    }

    /// The pages of the blob tables: `blobs`, `blob_chunks` and
    /// `blob_times` as [`UsageKind::Blobs`] (one item per blob),
    /// `blob_notes` as [`UsageKind::Notes`] (one item per note), and the
    /// chunks of uploads still streaming in, with `pending_uploads`, as
    /// [`UsageKind::Temp`] (one item per upload). The rest of the file,
    /// its free pages included, is [`StoreBackend::usage`]'s: merged
    /// ([`Usage::merge`]), the two add up to the file's size, each byte
    /// once. No total, since the file is shared by both.
    ///
    /// [`UsageKind::Blobs`]: imagecache_core::UsageKind::Blobs
    /// [`UsageKind::Notes`]: imagecache_core::UsageKind::Notes
    /// [`UsageKind::Temp`]: imagecache_core::UsageKind::Temp
    /// [`StoreBackend::usage`]: imagecache_core::StoreBackend::usage
    async fn blob_usage(&self) -> imagecache_core::Result<Usage> {
        let measured = self.run(None, Inner::measure).await?;
        Ok(measured.blobs)
    }

    /// Uploads streaming in through this handle, with the bytes of their
    /// chunks so far. Nothing is ever reclaimed here: the file is locked to
    /// one handle, so every unfinished upload is this handle's own, and
    /// those a crash left are removed when the file is next opened.
    async fn scratch(&self) -> imagecache_core::Result<Scratch> {
        self.run(None, Inner::scratch).await
    }

    async fn set_blob_notes(
        &self,
        digest: &Digest,
        notes: BlobNotes,
    ) -> imagecache_core::Result<()> {
        let digest = *digest;
        let notes = normalize_notes(notes);
        self.run(Some(Key::Blob(digest)), move |inner| {
            inner.set_blob_notes(&digest, &notes)
        })
        .await
    }

    async fn blob_notes(&self, digest: &Digest) -> imagecache_core::Result<BlobNotes> {
        let digest = *digest;
        self.run(Some(Key::Blob(digest)), move |inner| {
            inner.blob_notes(&digest)
        })
        .await
    }

    async fn get_blob_note(
        &self,
        digest: &Digest,
        key: &MetadataKey,
    ) -> imagecache_core::Result<Bytes> {
        let (digest, key) = (*digest, key.clone());
        self.run(
            Some(Key::BlobNote {
                digest,
                key: key.clone(),
            }),
            move |inner| inner.get_blob_note(&digest, &key),
        )
        .await
    }
}

pub(super) const BLOBS: TableDefinition<'_, &str, (u64, u64)> = TableDefinition::new("blobs");
pub(super) const BLOB_CHUNKS: TableDefinition<'_, (u64, u32), &[u8]> =
    TableDefinition::new("blob_chunks");
pub(super) const BLOB_NOTES: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("blob_notes");
pub(super) const PENDING_UPLOADS: TableDefinition<'_, u64, &str> =
    TableDefinition::new("pending_uploads");
/// When each stored blob was published: its upload id → Unix time in
/// nanoseconds. Keyed by upload, not digest, because upload ids are never
/// reused: a time left behind by a version that deletes blobs without
/// knowing this table can never be taken for a later blob's. Blobs
/// published before the table existed have no entry.
pub(super) const BLOB_TIMES: TableDefinition<'_, u64, i64> = TableDefinition::new("blob_times");

/// What redb adds to a leaf page that holds one chunk: a 4-byte header,
/// the 4-byte length of the value and the 12-byte key.
const LEAF_OVERHEAD: usize = 20;

/// Size of every chunk but a blob's last: with its leaf's overhead, a chunk
/// fills a 1 MiB page exactly. redb sizes pages in powers of two, so a
/// chunk of a full MiB would take a 2 MiB page and double the space blobs
/// occupy. Files written with 1 MiB chunks read the same: a reader takes
/// the chunks as they come.
pub(super) const CHUNK_SIZE: usize = (1 << 20) - LEAF_OVERHEAD;

/// Creates the blob tables if they are missing and removes the chunks of
/// every pending upload; returns how many there were. Only called while
/// opening, when no upload of this handle can be running.
pub(super) fn prepare(txn: &redb::WriteTransaction) -> Result<usize, Error> {
    txn.open_table(BLOBS)?;
    txn.open_table(BLOB_NOTES)?;
    txn.open_table(BLOB_TIMES)?;
    let mut chunks = txn.open_table(BLOB_CHUNKS)?;
    let mut pending = txn.open_table(PENDING_UPLOADS)?;
    let orphans = pending
        .iter()?
        .map(|entry| entry.map(|(upload, _)| upload.value()))
        .collect::<Result<Vec<u64>, _>>()?;
    for &upload in &orphans {
        remove_chunks(&mut chunks, upload)?;
        pending.remove(upload)?;
    }
    Ok(orphans.len())
}

/// Stores a blob from `body`; see [`BlobBackend::put_blob`].
///
/// [`BlobBackend::put_blob`]: imagecache_core::BlobBackend::put_blob
async fn put(
    backend: &RedbBackend,
    digest: Digest,
    mut body: ByteStream,
) -> imagecache_core::Result<BlobInfo> {
    let key = Some(Key::Blob(digest));
    if let Some(info) = backend
        .run(key.clone(), move |inner| inner.blob_info(&digest))
        .await?
    {
        return Ok(info);
    }
    let upload = backend
        .run(key.clone(), move |inner| inner.begin_upload(&digest))
        .await?;
    let mut guard = UploadGuard {
        inner: Arc::clone(&backend.inner),
        upload,
        armed: true,
    };
    let mut writer = ChunkWriter {
        inner: Arc::clone(&backend.inner),
        upload,
        index: 0,
        in_flight: None,
    };
    let streamed = writer.write_body(&mut body).await;
    // Wait for the last chunk write before anything else touches the
    // upload, so that nothing lands after a publish or a discard.
    let landed = writer.finish().await;
    let result = match (streamed, landed) {
        (Ok(size), Ok(())) => {
            backend
                .run(key.clone(), move |inner| {
                    inner.publish(&digest, upload, size)
                })
                .await
        }
        (Err(err), _) | (Ok(_), Err(err)) => Err(err),
    };
    guard.armed = false;
    if let Err(failure) = &result {
        // After a storage failure redb refuses the handle's transactions,
        // the discard included: reopening removes the upload instead, and
        // gives its space back.
        let storage = is_storage_failure(failure);
        let cleaned = backend
            .run(key, move |inner| {
                if storage {
                    inner.recover()
                } else {
                    inner.discard_upload(upload)
                }
            })
            .await;
        if let Err(err) = cleaned {
            tracing::warn!(%digest, upload, error = %err, "cannot remove the chunks of a failed upload; the next open removes them");
        }
    }
    result
}

/// Whether a failed put met the storage itself failing (I/O), not a bad
/// body.
fn is_storage_failure(err: &imagecache_core::Error) -> bool {
    let imagecache_core::Error::Backend { source, .. } = err else {
        return false;
    };
    source
        .downcast_ref::<Error>()
        .is_some_and(Error::is_storage)
}

/// Opens a blob for reading; see [`BlobBackend::get_blob`].
///
/// Each chunk is read by its own short read transaction on the blocking
/// pool, one chunk ahead of the consumer. A blob deleted while it is being
/// read ends its stream with [`Error::Truncated`].
///
/// [`BlobBackend::get_blob`]: imagecache_core::BlobBackend::get_blob
/// [`Error::Truncated`]: imagecache_core::Error::Truncated
async fn get(backend: &RedbBackend, digest: Digest) -> imagecache_core::Result<BlobReader> {
    let (upload, size) = backend
        .run(Some(Key::Blob(digest)), move |inner| {
            inner
                .blob_entry(&digest)?
                .ok_or_else(|| blob_not_found(digest))
        })
        .await?;
    let reader = ChunkReader {
        inner: Arc::clone(&backend.inner),
        digest,
        upload,
        size,
        index: 0,
        delivered: 0,
        ahead: None,
        done: false,
    };
    let stream = futures::stream::unfold(reader, |mut reader| async move {
        let item = reader.next().await?;
        Some((item, reader))
    });
    Ok(BlobReader {
        size,
        stream: Box::pin(stream),
    })
}

/// Removes every chunk of `upload`.
pub(super) fn remove_chunks(
    chunks: &mut redb::Table<'_, (u64, u32), &[u8]>,
    upload: u64,
) -> Result<(), Error> {
    chunks.retain_in((upload, 0)..=(upload, u32::MAX), |_, _| false)?;
    Ok(())
}

/// Removes a pending upload's chunks if its future is dropped mid-stream.
struct UploadGuard {
    inner: Arc<Inner>,
    upload: u64,
    armed: bool,
}

impl Drop for UploadGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        // Without a runtime the chunks stay pending until the next open,
        // which removes them; nothing partial is visible either way. A chunk
        // write still running when this cleanup commits finds its upload gone
        // and writes nothing.
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let inner = Arc::clone(&self.inner);
            let upload = self.upload;
            handle.spawn_blocking(move || {
                if let Err(err) = inner.discard_upload(upload) {
                    tracing::warn!(upload, error = %err, "cannot remove the chunks of a cancelled upload; the next open removes them");
                }
            });
        }
    }
}

/// Cuts a body into chunks and writes each on the blocking pool while the
/// next one fills.
struct ChunkWriter {
    inner: Arc<Inner>,
    upload: u64,
    index: u32,
    in_flight: Option<JoinHandle<Result<(), Error>>>,
}

impl ChunkWriter {
    /// Writes the whole body; returns its size.
    async fn write_body(&mut self, body: &mut ByteStream) -> imagecache_core::Result<u64> {
        let mut buf = BytesMut::new();
        let mut size: u64 = 0;
        while let Some(mut piece) = body.try_next().await? {
            size += piece.len() as u64;
            while !piece.is_empty() {
                // A piece that holds a whole chunk is sent as a slice of
                // itself, without copying.
                if buf.is_empty() && piece.len() >= CHUNK_SIZE {
                    let chunk = piece.split_to(CHUNK_SIZE);
                    self.push(chunk).await?;
                    continue;
                }
                if buf.capacity() == 0 {
                    buf.reserve(CHUNK_SIZE);
                }
                let take = (CHUNK_SIZE - buf.len()).min(piece.len());
                buf.extend_from_slice(&piece.split_to(take));
                if buf.len() == CHUNK_SIZE {
                    self.push(buf.split().freeze()).await?;
                }
            }
        }
        if !buf.is_empty() {
            self.push(buf.freeze()).await?;
        }
        Ok(size)
    }

    /// Waits for the previous chunk, then starts writing this one.
    async fn push(&mut self, chunk: Bytes) -> imagecache_core::Result<()> {
        self.finish().await?;
        let index = self.index;
        self.index = index
            .checked_add(1)
            .ok_or(imagecache_core::Error::TooLarge {
                key: Key::Other(format!("blob upload {}", self.upload)),
                size: u64::from(u32::MAX) * CHUNK_SIZE as u64,
                limit: u64::from(u32::MAX) * CHUNK_SIZE as u64,
            })?;
        let inner = Arc::clone(&self.inner);
        let upload = self.upload;
        self.in_flight = Some(tokio::task::spawn_blocking(move || {
            inner.write_chunk(upload, index, &chunk)
        }));
        Ok(())
    }

    /// Waits for the chunk being written, if any.
    async fn finish(&mut self) -> imagecache_core::Result<()> {
        let Some(handle) = self.in_flight.take() else {
            return Ok(());
        };
        let result = match handle.await {
            Ok(result) => result,
            Err(join) => Err(Error::Join(join)),
        };
        result.map_err(Into::into)
    }
}

/// Reads a blob's chunks in order, one ahead of the consumer.
struct ChunkReader {
    inner: Arc<Inner>,
    digest: Digest,
    upload: u64,
    size: u64,
    index: u32,
    delivered: u64,
    ahead: Option<JoinHandle<Result<Option<Bytes>, Error>>>,
    done: bool,
}

impl ChunkReader {
    fn spawn(&self, index: u32) -> JoinHandle<Result<Option<Bytes>, Error>> {
        let inner = Arc::clone(&self.inner);
        let upload = self.upload;
        tokio::task::spawn_blocking(move || inner.read_chunk(upload, index))
    }

    async fn next(&mut self) -> Option<imagecache_core::Result<Bytes>> {
        if self.done || (self.delivered >= self.size && self.ahead.is_none()) {
            return None;
        }
        let handle = match self.ahead.take() {
            Some(handle) => handle,
            None => self.spawn(self.index),
        };
        let result = match handle.await {
            Ok(result) => result,
            Err(join) => Err(Error::Join(join)),
        };
        let key = Key::Blob(self.digest);
        match result {
            Ok(Some(chunk)) => {
                self.delivered += chunk.len() as u64;
                if self.delivered > self.size {
                    self.done = true;
                    return Some(Err(imagecache_core::Error::Corrupt {
                        key,
                        reason: format!(
                            "stored chunks hold more than the recorded {} bytes",
                            self.size
                        ),
                        source: None,
                    }));
                }
                if self.delivered < self.size {
                    match self.index.checked_add(1) {
                        Some(next) => {
                            self.index = next;
                            self.ahead = Some(self.spawn(next));
                        }
                        None => self.done = true,
                    }
                }
                Some(Ok(chunk))
            }
            Ok(None) => {
                self.done = true;
                Some(Err(imagecache_core::Error::Truncated {
                    key,
                    expected: self.size,
                    actual: self.delivered,
                }))
            }
            Err(err) => {
                self.done = true;
                Some(Err(with_key(err.into(), Some(key))))
            }
        }
    }
}

/// The `blob_notes` key of one note. Note keys never contain `/`, so the
/// notes of one digest are exactly the keys between `<digest>/` and
/// `<digest>0` (the character after `/`).
fn note_key(digest: &Digest, key: &MetadataKey) -> String {
    format!("{digest}/{key}")
}

/// The bounds of the `blob_notes` keys of one digest; see [`note_key`].
fn notes_range(digest: &Digest) -> (String, String) {
    (format!("{digest}/"), format!("{digest}0"))
}

impl Inner {
    /// The upload id and size of a stored blob.
    pub(super) fn blob_entry(&self, digest: &Digest) -> Result<Option<(u64, u64)>, Error> {
        let txn = self.begin_read()?;
        let blobs = txn.open_table(BLOBS)?;
        Ok(blobs.get(digest.to_string().as_str())?.map(|g| g.value()))
    }

    pub(super) fn blob_info(&self, digest: &Digest) -> Result<Option<BlobInfo>, Error> {
        Ok(self.blob_entry(digest)?.map(|(_, size)| BlobInfo {
            digest: *digest,
            size,
        }))
    }

    pub(super) fn list_blobs(&self) -> Result<Vec<BlobInfo>, Error> {
        let txn = self.begin_read()?;
        let blobs = txn.open_table(BLOBS)?;
        let mut out = Vec::new();
        for entry in blobs.iter()? {
            let (key, value) = entry?;
            let (_, size) = value.value();
            out.push(BlobInfo {
                digest: blob_digest(key.value())?,
                size,
            });
        }
        Ok(out)
    }

    /// Every blob with its publish time, where one was recorded.
    pub(super) fn list_blob_times(&self) -> Result<Vec<(BlobInfo, Option<Timestamp>)>, Error> {
        let txn = self.begin_read()?;
        let blobs = txn.open_table(BLOBS)?;
        // Every file this version opens has the table (`prepare` creates
        // it); a file without it has no times to give.
        let times = match txn.open_table(BLOB_TIMES) {
            Ok(times) => Some(times),
            Err(redb::TableError::TableDoesNotExist(_)) => None,
            Err(err) => return Err(err.into()),
        };
        let mut out = Vec::new();
        for entry in blobs.iter()? {
            let (key, value) = entry?;
            let (upload, size) = value.value();
            let stored = match &times {
                Some(times) => times
                    .get(upload)?
                    .map(|g| Timestamp::from_unix_nanos(i128::from(g.value()))),
                None => None,
            };
            let info = BlobInfo {
                digest: blob_digest(key.value())?,
                size,
            };
            out.push((info, stored));
        }
        Ok(out)
    }

    pub(super) fn delete_blob(&self, digest: &Digest) -> Result<(), Error> {
        let txn = self.begin_write(self.durability())?;
        {
            let name = digest.to_string();
            let removed = txn
                .open_table(BLOBS)?
                .remove(name.as_str())?
                .map(|g| g.value());
            let Some((upload, _)) = removed else {
                // Nothing to remove; dropping the transaction aborts it.
                return Ok(());
            };
            remove_chunks(&mut txn.open_table(BLOB_CHUNKS)?, upload)?;
            txn.open_table(BLOB_TIMES)?.remove(upload)?;
            let (low, high) = notes_range(digest);
            txn.open_table(BLOB_NOTES)?
                .retain_in(low.as_str()..high.as_str(), |_, _| false)?;
        }
        txn.commit()?;
        Ok(())
    }

    /// Sets every note in one write transaction; refused whole when the
    /// blob is absent.
    pub(super) fn set_blob_notes(&self, digest: &Digest, notes: &BlobNotes) -> Result<(), Error> {
        if notes.is_empty() {
            return Ok(());
        }
        let txn = self.begin_write(self.durability())?;
        {
            if txn
                .open_table(BLOBS)?
                .get(digest.to_string().as_str())?
                .is_none()
            {
                return Err(blob_not_found(*digest));
            }
            let mut table = txn.open_table(BLOB_NOTES)?;
            for (key, value) in notes {
                table.insert(note_key(digest, key).as_str(), &value[..])?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// Every note of a blob, sorted by key (the table's own order). Keys
    /// that do not parse as note keys are passed over.
    pub(super) fn blob_notes(&self, digest: &Digest) -> Result<BlobNotes, Error> {
        let txn = self.begin_read()?;
        let notes = txn.open_table(BLOB_NOTES)?;
        let (low, high) = notes_range(digest);
        let mut out = BlobNotes::new();
        for entry in notes.range(low.as_str()..high.as_str())? {
            let (key, value) = entry?;
            if let Some(key) = key
                .value()
                .strip_prefix(low.as_str())
                .and_then(|k| MetadataKey::new(k).ok())
            {
                out.push((key, Bytes::copy_from_slice(value.value())));
            }
        }
        Ok(out)
    }

    /// Writes one note without any check, as a damaged disk would.
    #[cfg(feature = "testing")]
    pub(super) fn insert_raw_note(
        &self,
        digest: &Digest,
        key: &MetadataKey,
        value: &[u8],
    ) -> Result<(), Error> {
        let txn = self.begin_write(self.durability())?;
        txn.open_table(BLOB_NOTES)?
            .insert(note_key(digest, key).as_str(), value)?;
        txn.commit()?;
        Ok(())
    }

    pub(super) fn get_blob_note(&self, digest: &Digest, key: &MetadataKey) -> Result<Bytes, Error> {
        let txn = self.begin_read()?;
        let notes = txn.open_table(BLOB_NOTES)?;
        let value = notes
            .get(note_key(digest, key).as_str())?
            .map(|g| Bytes::copy_from_slice(g.value()));
        value.ok_or_else(|| {
            Error::Contract(imagecache_core::Error::NotFound {
                key: Key::BlobNote {
                    digest: *digest,
                    key: key.clone(),
                },
            })
        })
    }

    /// Allocates an upload id and registers it as pending.
    fn begin_upload(&self, digest: &Digest) -> Result<u64, Error> {
        let txn = self.begin_write(redb::Durability::None)?;
        let upload = {
            let upload = allocate_upload(&txn)?;
            txn.open_table(PENDING_UPLOADS)?
                .insert(upload, digest.to_string().as_str())?;
            upload
        };
        txn.commit()?;
        Ok(upload)
    }

    /// Writes one chunk of a pending upload; refuses if the upload has been
    /// discarded meanwhile, so that no chunk outlives its upload.
    fn write_chunk(&self, upload: u64, index: u32, chunk: &[u8]) -> Result<(), Error> {
        let txn = self.begin_write(redb::Durability::None)?;
        {
            if txn.open_table(PENDING_UPLOADS)?.get(upload)?.is_none() {
                return Err(Error::Contract(imagecache_core::Error::Cancelled));
            }
            txn.open_table(BLOB_CHUNKS)?
                .insert((upload, index), chunk)?;
        }
        txn.commit()?;
        Ok(())
    }

    /// Makes a finished upload visible under `digest`. When a racing upload
    /// of the same digest published first, keeps that one and drops ours.
    fn publish(&self, digest: &Digest, upload: u64, size: u64) -> Result<BlobInfo, Error> {
        let txn = self.begin_write(self.durability())?;
        let info = {
            if txn.open_table(PENDING_UPLOADS)?.remove(upload)?.is_none() {
                return Err(Error::Contract(imagecache_core::Error::Cancelled));
            }
            let name = digest.to_string();
            let mut blobs = txn.open_table(BLOBS)?;
            let existing = blobs.get(name.as_str())?.map(|g| g.value());
            match existing {
                Some((_, existing_size)) => {
                    remove_chunks(&mut txn.open_table(BLOB_CHUNKS)?, upload)?;
                    BlobInfo {
                        digest: *digest,
                        size: existing_size,
                    }
                }
                None => {
                    blobs.insert(name.as_str(), (upload, size))?;
                    txn.open_table(BLOB_TIMES)?.insert(upload, now_nanos())?;
                    BlobInfo {
                        digest: *digest,
                        size,
                    }
                }
            }
        };
        txn.commit()?;
        Ok(info)
    }

    /// Removes a pending upload and its chunks.
    fn discard_upload(&self, upload: u64) -> Result<(), Error> {
        let txn = self.begin_write(redb::Durability::None)?;
        {
            txn.open_table(PENDING_UPLOADS)?.remove(upload)?;
            remove_chunks(&mut txn.open_table(BLOB_CHUNKS)?, upload)?;
        }
        txn.commit()?;
        Ok(())
    }

    /// Reads one chunk in its own read transaction.
    fn read_chunk(&self, upload: u64, index: u32) -> Result<Option<Bytes>, Error> {
        let txn = self.begin_read()?;
        let chunks = txn.open_table(BLOB_CHUNKS)?;
        let chunk = chunks
            .get((upload, index))?
            .map(|g| Bytes::copy_from_slice(g.value()));
        Ok(chunk)
    }

    /// Stores `data` as the blob's bytes without any check (for tests of
    /// corrupt-blob handling).
    #[cfg(feature = "testing")]
    pub(super) fn insert_raw_blob(&self, digest: &Digest, data: &[u8]) -> Result<(), Error> {
        let txn = self.begin_write(self.durability())?;
        {
            let name = digest.to_string();
            let mut blobs = txn.open_table(BLOBS)?;
            let mut chunks = txn.open_table(BLOB_CHUNKS)?;
            let mut times = txn.open_table(BLOB_TIMES)?;
            let old = blobs.get(name.as_str())?.map(|g| g.value());
            if let Some((old_upload, _)) = old {
                remove_chunks(&mut chunks, old_upload)?;
                times.remove(old_upload)?;
            }
            let upload = allocate_upload(&txn)?;
            for (index, chunk) in (0u32..).zip(data.chunks(CHUNK_SIZE)) {
                chunks.insert((upload, index), chunk)?;
            }
            blobs.insert(name.as_str(), (upload, data.len() as u64))?;
            times.insert(upload, now_nanos())?;
        }
        txn.commit()?;
        Ok(())
    }
}

/// The digest of a `blobs` key.
fn blob_digest(key: &str) -> Result<Digest, Error> {
    Digest::parse(key).map_err(|err| {
        Error::Contract(imagecache_core::Error::Corrupt {
            key: Key::Other(format!("blob table key {key:?}")),
            reason: "the key is not a digest".to_owned(),
            source: Some(Box::new(err)),
        })
    })
}

/// The current time in Unix nanoseconds, as `blob_times` keeps it. A clock
/// before 1970 or after 2262 is recorded as the nearest end of the range.
fn now_nanos() -> i64 {
    let nanos = Timestamp::now_utc().unix_nanos();
    i64::try_from(nanos).unwrap_or(if nanos < 0 { i64::MIN } else { i64::MAX })
}

/// Takes the next upload id from `meta`. Ids are never reused, so a reader
/// of a deleted blob can never see the chunks of a later one.
fn allocate_upload(txn: &redb::WriteTransaction) -> Result<u64, Error> {
    let mut meta = txn.open_table(META)?;
    let upload = meta.get(META_NEXT_UPLOAD)?.map_or(0, |g| g.value());
    meta.insert(META_NEXT_UPLOAD, upload + 1)?;
    Ok(upload)
}
