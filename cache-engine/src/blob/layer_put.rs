//! Putting layers: the compression is found, a compressed layer is verified,
//! stored and decompressed in one pass, and both copies are noted against
//! each other.

use std::future::Future;

use bytes::Bytes;
use futures::{StreamExt as _, TryStreamExt as _};
use imagecache_core::{BlobBackend, BlobInfo, BlobNotes, ByteStream, Digest};

use super::inner::{KIND_LAYER, Link};
use super::layer::{self, Declared, Decoded};
use super::pipe::{self, Check, Fed, Msg, Origin};
use super::{BlobCache, Compression, Error, LayerOptions, LayerPut, PutOptions, Result};

/// What one pass over a compressed layer does; see [`BlobCache::layer_pass`].
#[derive(Debug, Clone, Copy)]
struct LayerPass {
    /// The compressed layer.
    digest: Digest,
    /// How it is compressed.
    compression: Compression,
    /// Where the body comes from.
    origin: Origin,
    /// The compressed size to insist on.
    expected_size: Option<u64>,
    /// Whether to store the compressed bytes.
    store_compressed: bool,
    /// The decompressed digest, when known: verified, and the key to store under.
    diff: Option<Digest>,
    /// Whether to store the decompressed bytes under `diff`.
    store_diff: bool,
}

/// What the cache holds of a compressed layer before its body is read.
#[derive(Debug, Clone, Copy)]
struct Cached {
    /// The size of the compressed copy, if it is cached and looks whole.
    compressed: Option<u64>,
    /// The decompressed digest: given by the caller, else noted on the
    /// cached compressed copy.
    diff: Option<Digest>,
    /// The size of the decompressed copy, if it is cached and looks whole.
    decompressed: Option<u64>,
}

impl BlobCache {
    /// Stores a layer and a decompressed copy of it; see [`BlobCache::put_layer_opts`].
    ///
    /// # Errors
    /// As [`BlobCache::put_layer_opts`].
    pub async fn put_layer(&self, digest: &Digest, body: ByteStream) -> Result<LayerPut> {
        self.put_layer_opts(digest, body, LayerOptions::default())
            .await
    }

    /// Stores a layer; a compressed layer is also kept decompressed.
    ///
    /// The compression comes from [`LayerOptions::compression`], else the
    /// media type, else the first bytes. An uncompressed layer is stored as
    /// it is. A gzip or zstd layer is stored verified, and decompressed on a
    /// blocking thread as it streams; the decompressed copy is stored under
    /// its own digest and each copy gets a note naming the other. Neither is
    /// published unless the compressed digest matched, the data decoded,
    /// and (with [`LayerOptions::diff_id`]) the decompressed digest matched.
    /// Without a diff ID the decompressed digest is learned in the first
    /// pass and the copy is made from the stored compressed blob in a second.
    ///
    /// Needs a Tokio runtime (for the blocking thread).
    ///
    /// # Errors
    /// Nothing is stored on [`Error::UnsupportedCompression`] (for example
    /// xz, bzip2), [`Error::Decompress`] (invalid data),
    /// [`Error::DecompressedMismatch`], [`Error::DecompressionBomb`] (the
    /// layer decompresses past a limit of [`BlobCacheOptions`](super::BlobCacheOptions);
    /// decompression stops there), or any error of [`BlobCache::put_opts`]
    /// about the body. [`Error::Backend`] when the backend fails;
    /// [`Error::NoRuntime`] outside Tokio.
    pub async fn put_layer_opts(
        &self,
        digest: &Digest,
        body: ByteStream,
        opts: LayerOptions,
    ) -> Result<LayerPut> {
        let (compression, body) = compression_of(digest, &opts, body).await?;
        if compression == Compression::None {
            return self.put_plain_layer(digest, body, opts).await;
        }
        let cached = self.cached_copies(digest, opts.diff_id).await?;
        let (compressed, decompressed) = match cached {
            // Both copies are already cached; the body is not needed.
            Cached {
                compressed: Some(c_size),
                diff: Some(diff),
                decompressed: Some(d_size),
            } => (
                BlobInfo {
                    digest: *digest,
                    size: c_size,
                },
                BlobInfo {
                    digest: diff,
                    size: d_size,
                },
            ),
            _ => {
                self.store_copies(digest, compression, body, opts.expected_size, cached)
                    .await?
            }
        };
        self.note_copies(
            digest,
            compression,
            &compressed,
            &decompressed,
            opts.media_type,
        )
        .await;
        tracing::debug!(%digest, decompressed = %decompressed.digest, %compression, "layer cached in both forms");
        Ok(LayerPut {
            compression,
            compressed: Some(compressed),
            decompressed,
        })
    }

    /// An uncompressed layer is one blob, noted as a layer.
    async fn put_plain_layer(
        &self,
        digest: &Digest,
        body: ByteStream,
        opts: LayerOptions,
    ) -> Result<LayerPut> {
        let mut put = PutOptions::new();
        put.expected_size = opts.expected_size;
        put.media_type = opts.media_type;
        let kind = vec![(
            self.inner.notes.kind.clone(),
            Bytes::from_static(KIND_LAYER),
        )];
        let info = self.put_noted(digest, body, put, kind).await?;
        Ok(LayerPut {
            compression: Compression::None,
            compressed: None,
            decompressed: info,
        })
    }

    /// Which copies of a compressed layer the cache already holds.
    async fn cached_copies(&self, digest: &Digest, diff_id: Option<Digest>) -> Result<Cached> {
        let inner = &self.inner;
        let compressed = inner.probe(digest).await?;
        let diff = match (diff_id, compressed) {
            (Some(diff), _) => Some(diff),
            // Only a link both copies confirm is taken for the diff ID; an
            // unconfirmed one costs a decompression to learn it again.
            (None, Some(_)) => inner
                .linked(digest, Link::ToDecompressed)
                .await?
                .map(|info| info.digest),
            (None, None) => None,
        };
        let decompressed = match diff {
            Some(diff) => inner.probe(&diff).await?,
            None => None,
        };
        Ok(Cached {
            compressed,
            diff,
            decompressed,
        })
    }

    /// Reads the body once, storing whichever copies are missing; returns
    /// the info of both copies.
    async fn store_copies(
        &self,
        digest: &Digest,
        compression: Compression,
        body: ByteStream,
        expected_size: Option<u64>,
        cached: Cached,
    ) -> Result<(BlobInfo, BlobInfo)> {
        let store_diff = cached.diff.filter(|_| cached.decompressed.is_none());
        let pass = LayerPass {
            digest: *digest,
            compression,
            origin: Origin::Caller,
            expected_size,
            store_compressed: cached.compressed.is_none(),
            diff: cached.diff,
            store_diff: store_diff.is_some(),
        };
        let (c_size, decoded) = self.layer_pass(pass, body).await?;
        let diff = decoded.digest;
        if store_diff.is_none() && self.inner.probe(&diff).await?.is_none() {
            // The decompressed digest was unknown up front, so the copy is
            // made now from the stored compressed blob.
            self.decompress_stored(digest, compression, c_size, diff)
                .await?;
        }
        let compressed = BlobInfo {
            digest: *digest,
            size: c_size,
        };
        Ok((compressed, decoded))
    }

    /// Writes the notes of both copies, each naming the other: one call per
    /// copy, both in flight at once.
    async fn note_copies(
        &self,
        digest: &Digest,
        compression: Compression,
        compressed: &BlobInfo,
        decompressed: &BlobInfo,
        media_type: Option<String>,
    ) {
        let inner = &self.inner;
        let keys = &inner.notes;
        let diff = &decompressed.digest;
        let mut compressed_notes: BlobNotes = vec![
            (keys.size.clone(), Bytes::from(compressed.size.to_string())),
            (keys.kind.clone(), Bytes::from_static(KIND_LAYER)),
            (
                keys.compression.clone(),
                Bytes::from_static(compression.as_str().as_bytes()),
            ),
            (keys.decompressed.clone(), Bytes::from(diff.to_string())),
        ];
        if let Some(media_type) = media_type {
            compressed_notes.push((keys.media_type.clone(), Bytes::from(media_type)));
        }
        let decompressed_notes: BlobNotes = vec![
            (
                keys.size.clone(),
                Bytes::from(decompressed.size.to_string()),
            ),
            (keys.kind.clone(), Bytes::from_static(KIND_LAYER)),
            (keys.compressed.clone(), Bytes::from(digest.to_string())),
        ];
        futures::join!(
            inner.note(digest, compressed_notes),
            inner.note(diff, decompressed_notes)
        );
    }

    /// Makes the decompressed copy of a stored compressed layer.
    async fn decompress_stored(
        &self,
        digest: &Digest,
        compression: Compression,
        size: u64,
        diff: Digest,
    ) -> Result<()> {
        let reader = self
            .inner
            .backend
            .get_blob(digest)
            .await
            .map_err(|e| Error::backend("get_blob", Some(*digest), e))?;
        let body: ByteStream = Box::pin(pipe::ReadAhead::new(reader.stream));
        let pass = LayerPass {
            digest: *digest,
            compression,
            origin: Origin::Stored,
            expected_size: Some(size),
            store_compressed: false,
            diff: Some(diff),
            store_diff: true,
        };
        let result = self.layer_pass(pass, body).await;
        match result {
            Ok(_) => Ok(()),
            // The compressed blob verified a moment ago; if it does not now,
            // it was damaged in storage.
            Err(
                err @ (Error::DigestMismatch { .. }
                | Error::Truncated { .. }
                | Error::TooLarge { .. }),
            ) => Err(self.inner.corrupt(*digest, err.to_string()).await),
            Err(err) => Err(err),
        }
    }

    /// One pass over a compressed layer: verify it, optionally store it,
    /// decompress it, optionally store the decompressed copy under `diff`.
    /// Returns the compressed size and the decompressed blob's info.
    async fn layer_pass(&self, pass: LayerPass, body: ByteStream) -> Result<(u64, BlobInfo)> {
        let digest = pass.digest;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime {
            operation: "put_layer",
        })?;
        let backend = &*self.inner.backend;
        let (decode_tx, decode_rx) = pipe::pipe();
        let (verdict_tx, verdict_rx) = tokio::sync::oneshot::channel();
        let (store_tx, store_compressed) = put_if(backend, pass.store_compressed.then_some(digest));
        let (out_tx, store_decompressed) = put_if(backend, pass.diff.filter(|_| pass.store_diff));

        let (compression, diff) = (pass.compression, pass.diff);
        let limits = layer::Limits::new(&self.inner.options);
        let decoder = runtime.spawn_blocking(move || {
            layer::decode_blocking(
                digest,
                compression,
                decode_rx,
                out_tx,
                diff,
                limits,
                verdict_tx,
            )
        });
        let feeder = layer::feed_tee(
            body,
            Check::new(digest, pass.expected_size),
            store_tx,
            decode_tx,
            verdict_rx,
            pass.origin,
            digest,
        );
        let (stored, fed, stored_diff, decoded) =
            futures::join!(store_compressed, feeder, store_decompressed, decoder);
        let interrupted = || Error::Interrupted {
            digest,
            stage: "decompression",
        };
        let size = match fed? {
            Fed::Verified(size) => Some(size),
            Fed::Abandoned => None,
        };
        let decoded: Decoded = decoded.map_err(|_| interrupted())??;
        let size = size.ok_or_else(interrupted)?;
        if let Some(Err(source)) = stored {
            return Err(Error::backend("put_blob", Some(digest), source));
        }
        if let Some(Err(source)) = stored_diff {
            let diff = decoded.info.digest;
            return Err(Error::backend("put_blob", Some(diff), source));
        }
        Ok((size, decoded.info))
    }
}

/// With a digest: a pipe whose receiving end a backend put of that digest
/// reads, and that put. Without: neither, and a put that does nothing.
fn put_if<'a>(
    backend: &'a dyn BlobBackend,
    digest: Option<Digest>,
) -> (
    Option<tokio::sync::mpsc::Sender<Msg>>,
    impl Future<Output = Option<imagecache_core::Result<BlobInfo>>> + 'a,
) {
    let (tx, rx) = match digest {
        Some(_) => {
            let (tx, rx) = pipe::pipe();
            (Some(tx), Some(rx))
        }
        None => (None, None),
    };
    let put = async move {
        match (digest, rx) {
            (Some(digest), Some(rx)) => {
                Some(backend.put_blob(&digest, pipe::receiver_stream(rx)).await)
            }
            _ => None,
        }
    };
    (tx, put)
}

/// The compression of a layer: as the options or the media type declare
/// it, else as its first bytes show. Returns a body that still yields
/// every byte.
async fn compression_of(
    digest: &Digest,
    opts: &LayerOptions,
    body: ByteStream,
) -> Result<(Compression, ByteStream)> {
    let declared = match (opts.compression, opts.media_type.as_deref()) {
        (Some(c), _) => Declared::Known(c),
        (None, Some(media_type)) => layer::declared_by(media_type),
        (None, None) => Declared::Unknown,
    };
    let unsupported = |compression| Error::UnsupportedCompression {
        digest: *digest,
        compression,
    };
    if let Declared::Unsupported(compression) = declared {
        return Err(unsupported(compression));
    }
    let (head, body) = peek(body, 8, digest).await?;
    let compression = match declared {
        Declared::Known(c) => c,
        _ => match layer::sniffed(&head) {
            Declared::Known(c) => c,
            Declared::Unsupported(compression) => return Err(unsupported(compression)),
            Declared::Unknown => Compression::None,
        },
    };
    Ok((compression, body))
}

/// Reads the first `want` bytes of a body (fewer if it is shorter) and
/// returns them with a body that still yields everything. A body that
/// ended is not polled again: many streams panic if they are.
async fn peek(mut body: ByteStream, want: usize, digest: &Digest) -> Result<(Vec<u8>, ByteStream)> {
    let mut prefix = Vec::new();
    let mut have = 0;
    let mut ended = false;
    while have < want {
        match body.try_next().await {
            Ok(Some(chunk)) => {
                have += chunk.len();
                prefix.push(chunk);
            }
            Ok(None) => {
                ended = true;
                break;
            }
            Err(source) => {
                return Err(Error::Source {
                    digest: *digest,
                    source,
                });
            }
        }
    }
    let head: Vec<u8> = prefix
        .iter()
        .flat_map(|c| c.iter().copied())
        .take(want)
        .collect();
    let replay = futures::stream::iter(prefix.into_iter().map(Ok));
    if ended {
        return Ok((head, Box::pin(replay)));
    }
    Ok((head, Box::pin(replay.chain(body))))
}
