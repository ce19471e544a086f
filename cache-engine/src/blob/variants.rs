//! The compressed and decompressed variants of cached layers, and the
//! substitution of one for the other in a layer list.

use imagecache_core::{BlobInfo, Digest};

use super::inner::Link;
use super::layer;
use super::{BlobCache, Compression, LayerCompression, LayerInfo, Result};

impl BlobCache {
    /// The digest noted as the other variant of a cached layer: its
    /// decompressed copy when `to` is [`Compression::None`], else its
    /// compressed copy. Only variants that are cached and look whole count.
    ///
    /// Notes are not trusted on their own word: the variant is returned
    /// only if `digest` itself is cached, the note names another blob, and
    /// that blob's note in the other direction names `digest` back. A
    /// decompressed copy shared by several compressed layers (a gzip and a
    /// zstd one) names only the one stored last, so only that one is its
    /// variant. See the [module docs](super#notes) for what this check does
    /// not cover.
    ///
    /// # Errors
    /// Only in [strict](super::BlobCacheOptions::strict) mode: [`Error::Backend`](super::Error::Backend).
    pub async fn variant(&self, digest: &Digest, to: Compression) -> Result<Option<BlobInfo>> {
        let link = if to == Compression::None {
            Link::ToDecompressed
        } else {
            Link::ToCompressed
        };
        self.inner.linked(digest, link).await
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
    /// name for the variant's compression, are kept as they are. A variant
    /// counts only when its notes and the layer's name each other, as for
    /// [`BlobCache::variant`].
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
        let link = match mode {
            LayerCompression::Compress => Link::ToCompressed,
            LayerCompression::Decompress => Link::ToDecompressed,
            LayerCompression::Preserve => return Ok(None),
        };
        let Some(BlobInfo {
            digest: other,
            size,
        }) = inner.linked(&layer.digest, link).await?
        else {
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
