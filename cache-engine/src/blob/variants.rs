//! The compressed and decompressed variants of cached layers, and the
//! substitution of one for the other in a layer list.

use imagecache_core::{BlobInfo, Digest};

use super::layer;
use super::{BlobCache, Compression, LayerCompression, LayerInfo, Result};

impl BlobCache {
    /// The digest noted as the other variant of a cached layer: its
    /// decompressed copy when `to` is [`Compression::None`], else its
    /// compressed copy. Only variants that are cached and look whole count.
    ///
    /// # Errors
    /// Only in [strict](super::BlobCacheOptions::strict) mode: [`Error::Backend`](super::Error::Backend).
    pub async fn variant(&self, digest: &Digest, to: Compression) -> Result<Option<BlobInfo>> {
        let inner = &self.inner;
        let key = if to == Compression::None {
            &inner.notes.decompressed
        } else {
            &inner.notes.compressed
        };
        let Some(other) = inner.note_digest(digest, key).await? else {
            return Ok(None);
        };
        Ok(inner.probe(&other).await?.map(|size| BlobInfo {
            digest: other,
            size,
        }))
    }

    /// Rewrites a list of layers to their cached compressed or decompressed
    /// variants, as buildah's blob cache does when an image is copied.
    ///
    /// With [`LayerCompression::Preserve`], or when the source image is
    /// `signed` (a signature covers the exact manifest, which substitution
    /// would change), the list is returned unchanged. Otherwise each layer
    /// whose other variant is cached (and looks whole) is replaced by it,
    /// with its digest, size and a media type of the same family (OCI or
    /// Docker). Layers without a cached variant, or whose media type has no
    /// name for the variant's compression, are kept as they are.
    ///
    /// # Errors
    /// Only in [strict](super::BlobCacheOptions::strict) mode: [`Error::Backend`](super::Error::Backend).
    pub async fn substitute(
        &self,
        layers: &[LayerInfo],
        mode: LayerCompression,
        signed: bool,
    ) -> Result<Vec<LayerInfo>> {
        if signed || mode == LayerCompression::Preserve {
            return Ok(layers.to_vec());
        }
        let mut out = Vec::with_capacity(layers.len());
        for layer in layers {
            let replaced = self.substitute_one(layer, mode).await?;
            out.push(replaced.unwrap_or_else(|| layer.clone()));
        }
        Ok(out)
    }

    async fn substitute_one(
        &self,
        layer: &LayerInfo,
        mode: LayerCompression,
    ) -> Result<Option<LayerInfo>> {
        let inner = &self.inner;
        let key = match mode {
            LayerCompression::Compress => &inner.notes.compressed,
            LayerCompression::Decompress => &inner.notes.decompressed,
            LayerCompression::Preserve => return Ok(None),
        };
        let Some(other) = inner.note_digest(&layer.digest, key).await? else {
            return Ok(None);
        };
        let Some(size) = inner.probe(&other).await? else {
            return Ok(None);
        };
        let to = match mode {
            LayerCompression::Decompress => Compression::None,
            _ => inner
                .note_text(&other, &inner.notes.compression)
                .await?
                .and_then(|name| name.parse().ok())
                .unwrap_or(Compression::Gzip),
        };
        let Some(media_type) = layer::switched_media_type(&layer.media_type, to) else {
            tracing::debug!(
                digest = %layer.digest,
                media_type = %layer.media_type,
                %to,
                "no media type for the cached variant; keeping the layer"
            );
            return Ok(None);
        };
        tracing::debug!(digest = %layer.digest, substitute = %other, %to, "substituting cached layer");
        Ok(Some(LayerInfo {
            digest: other,
            size,
            media_type: media_type.to_owned(),
        }))
    }
}
