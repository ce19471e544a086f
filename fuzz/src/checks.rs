//! What each fuzz target checks about one input.
//!
//! Every function here takes arbitrary bytes, calls only the public API of
//! the imagecache crates, and panics only when a promise of that API is
//! broken: a parser that panics, a typed error that names nothing, a
//! serialisation that does not read back the same, or an import that fails
//! yet leaves something behind. A typed error is a fine outcome.
//!
//! The fuzz targets (`fuzz/fuzz_targets/`) call these functions, and so
//! does the test that replays the committed corpora
//! (`transfer/tests/fuzz_corpus.rs`), which includes this file by path.
// A broken promise is reported by panicking: that is what a fuzzer catches.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Cursor;
use std::path::Path;

use bytes::Bytes;
use imagecache_backends::s3::S3Config;
use imagecache_backends::{Backend, LocalPath, MemoryBackend};
use imagecache_core::{
    ChainId, DiffId, Digest, Error, Image, ImageConfig, ImageId, Reference, chain_id, v1,
};
use imagecache_engine::blob::BlobCache;
use imagecache_store::Store;
use imagecache_transfer::{ImportOptions, Input, PlatformChoice};

/// The names of the fuzz targets, one per function of this module.
pub const TARGETS: [&str; 5] = ["config", "names", "store_url", "manifests", "import"];

/// Runs the check of the target `name` on `data`: whether the input was
/// accepted (parsed, imported) rather than refused with a typed error;
/// `None` for an unknown target.
pub fn run(name: &str, data: &[u8]) -> Option<bool> {
    let check = match name {
        "config" => config,
        "names" => names,
        "store_url" => store_url,
        "manifests" => manifests,
        "import" => import,
        _ => return None,
    };
    Some(check(data))
}

/// Image configs: parsing never panics; a config that parses has the
/// SHA-256 of its exact bytes as its ID; both Go-compatible serialisations
/// read back and write the same bytes again (serialise → parse → serialise
/// is stable), and what they write is a config whose ID is its own hash.
/// The v1 readers (`docker load` of old archives) get the same bytes.
pub fn config(data: &[u8]) -> bool {
    let _ = v1::history_from_config(data, false);
    let _ = v1::make_config_from_v1_config(data, &Default::default(), &[]);
    let image = match Image::from_bytes(Bytes::copy_from_slice(data)) {
        Ok(image) => image,
        Err(err) => {
            assert!(!err.to_string().is_empty(), "an error without a message");
            return false;
        }
    };
    assert_eq!(image.id(), ImageId::of_config(data));
    assert_eq!(image.id().digest(), &Digest::sha256(data));
    assert_eq!(image.raw_json().as_ref(), data);
    let writers: [fn(&ImageConfig) -> Vec<u8>; 2] = [
        ImageConfig::to_json_sorted,
        ImageConfig::to_json_struct_order,
    ];
    for write in writers {
        let first = write(image.config());
        let again = Image::from_bytes(Bytes::from(first.clone()))
            .unwrap_or_else(|e| panic!("a written config does not parse: {e}"));
        assert_eq!(again.id(), ImageId::of_config(&first));
        assert_eq!(
            write(again.config()),
            first,
            "serialise → parse → serialise"
        );
    }
    let _ = image.container_config.cache_keys();
    if let Ok(diff_ids) = image.rootfs.diff_ids() {
        assert_eq!(diff_ids.len(), image.rootfs.raw_diff_ids.len());
        assert_eq!(image.rootfs.chain_id().ok(), Some(chain_id(&diff_ids)));
    }
    true
}

/// Digests, image IDs, diff IDs, chain IDs and image references, one
/// candidate per line of the input: whatever parses prints in a form that
/// parses back to the same value, and what is refused is refused with an
/// error that names the input. Accepted when some line is a digest or a
/// reference.
pub fn names(data: &[u8]) -> bool {
    let text = String::from_utf8_lossy(data);
    let mut diff_ids = Vec::new();
    let mut references = 0;
    for line in text.split('\n') {
        if let Some(d) = digest(line) {
            diff_ids.push(DiffId::try_from(d).expect("any digest is a diff ID"));
        }
        references += usize::from(reference(line));
        let _ = v1::validate_id(line);
    }
    let chain = chain_id(&diff_ids);
    assert_eq!(chain.is_some(), !diff_ids.is_empty());
    if let [first, rest @ ..] = diff_ids.as_slice() {
        let folded = rest
            .iter()
            .fold(ChainId::from(*first), |c, next| c.extend(next));
        assert_eq!(chain, Some(folded));
    }
    references > 0 || !diff_ids.is_empty()
}

/// Checks one digest candidate; the digest when it parses.
fn digest(line: &str) -> Option<Digest> {
    let parsed = Digest::parse(line);
    let id = ImageId::parse(line);
    let d = match parsed {
        Ok(d) => d,
        Err(err) => {
            assert!(id.is_err(), "an image ID that is not a digest: {line:?}");
            assert!(!err.to_string().is_empty());
            return None;
        }
    };
    let printed = d.to_string();
    assert_eq!(Digest::parse(&printed).ok(), Some(d), "{printed}");
    assert!(
        printed.eq_ignore_ascii_case(line),
        "{printed} from {line:?}"
    );
    assert_eq!(d.hex().len(), 2 * d.as_bytes().len());
    assert_eq!(
        Digest::from_bytes(d.algorithm(), d.as_bytes()).ok(),
        Some(d)
    );
    match id {
        Ok(id) => {
            assert_eq!(id.digest(), &d);
            assert_eq!(ImageId::from_bytes(id.to_bytes()), id);
        }
        Err(_) => assert_ne!(d.algorithm(), Digest::sha256(b"").algorithm()),
    }
    Some(d)
}

/// Checks one reference candidate, as Docker's `ParseNormalizedNamed`
/// promises: the full and the familiar form parse back to the same
/// reference. Whether it parsed.
fn reference(line: &str) -> bool {
    let r = match Reference::parse(line) {
        Ok(r) => r,
        Err(Error::InvalidReference { reference, reason }) => {
            assert!(!reason.is_empty());
            assert!(reference.chars().count() <= 201, "the echo is bounded");
            return false;
        }
        Err(other) => panic!("a reference refused with {other:?}"),
    };
    assert_eq!(Reference::parse(r.as_str()).ok().as_ref(), Some(&r));
    assert_eq!(Reference::parse(r.familiar()).ok().as_ref(), Some(&r));
    assert!(r.as_str().starts_with(r.name()));
    assert!(r.name().ends_with(r.repository()));
    assert!(r.name().len() <= 255);
    let tagged = r.clone().with_default_tag();
    assert!(!tagged.is_name_only());
    assert_eq!(tagged.name(), r.name());
    true
}

/// Store URLs, parsed only (nothing is opened or created): the local path
/// an `fs://` or `redb://` URL names is the rest of the URL, and an
/// `s3://` URL that parses has a valid bucket and prefix that parse again
/// on their own; what is refused is a configuration error with a reason.
/// Accepted when it names a local path or parses as an S3 URL.
pub fn store_url(data: &[u8]) -> bool {
    let url = String::from_utf8_lossy(data);
    let local = imagecache_backends::local_path(&url);
    match &local {
        Some(LocalPath::Directory(dir)) => {
            let rest = url.strip_prefix("fs://").expect("an fs:// URL");
            assert_eq!(dir, Path::new(rest));
        }
        Some(LocalPath::File(file)) => {
            let rest = url.strip_prefix("redb://").expect("a redb:// URL");
            assert_eq!(file, Path::new(rest));
        }
        None => {
            let named = |scheme: &str| url.strip_prefix(scheme).is_some_and(|r| !r.is_empty());
            assert!(!named("fs://") && !named("redb://"), "no path for {url:?}");
        }
    }
    let config = match S3Config::from_url(&url) {
        Ok(config) => config,
        Err(Error::Config { reason, .. }) => {
            assert!(!reason.is_empty());
            return local.is_some();
        }
        Err(other) => panic!("an S3 URL refused with {other:?}"),
    };
    assert!(url.starts_with("s3://"));
    let (bucket, prefix) = (config.bucket(), config.prefix());
    assert!(!bucket.is_empty() && !bucket.contains('/'));
    assert!(!prefix.starts_with('/') && !prefix.ends_with('/'));
    let plain = format!("s3://{bucket}/{prefix}");
    let again = S3Config::from_url(&plain).expect("a bucket and prefix that parsed parse again");
    assert_eq!((again.bucket(), again.prefix()), (bucket, prefix));
    assert!(config.to_string().starts_with(&plain));
    let built = S3Config::new(bucket, prefix).expect("the same bucket and prefix");
    assert_eq!(built, again);
    true
}

/// Archive documents (`manifest.json`, `oci-layout` with `index.json`,
/// nested indexes, manifests, configs and layers), packed by this check
/// into a tar and imported as [`import`] does. See [`pack`] for how the
/// input becomes an archive.
pub fn manifests(data: &[u8]) -> bool {
    import(&pack(data))
}

/// What separates the documents of a [`manifests`] input.
pub const SEPARATOR: u8 = 0xFF;

/// Turns fuzz input into a docker-archive or an OCI archive, so that the
/// fuzzer works on the documents rather than on tar headers and hashes.
///
/// The input is split at `0xFF` bytes (never part of JSON text) into
/// segments. The first byte of the first segment chooses the layout (even:
/// docker-archive, odd: OCI); the rest of it is the top document (`manifest.json`, or `index.json` beside
/// an `oci-layout` file). Every further segment `n` (1 to 9) is stored as
/// `blobs/sha256/<hex>`. Inside any segment `$n` stands for the hex SHA-256
/// of segment `n` and `#n` for its length, for segments after it (they are
/// filled in from the last to the first), so that documents can name each
/// other by digest and size.
pub fn pack(data: &[u8]) -> Vec<u8> {
    let mut segments: Vec<Vec<u8>> = data
        .split(|&b| b == SEPARATOR)
        .map(<[u8]>::to_vec)
        .collect();
    segments.truncate(10);
    let mut digests: Vec<Option<(String, usize)>> = vec![None; segments.len()];
    for n in (0..segments.len()).rev() {
        let filled = fill(&segments[n], &digests);
        digests[n] = Some((Digest::sha256(&filled).hex(), filled.len()));
        segments[n] = filled;
    }
    let mut top = segments.remove(0);
    let oci = top.first().is_some_and(|b| b % 2 == 1);
    if !top.is_empty() {
        top.remove(0);
    }
    let mut archive = tar::Builder::new(Vec::new());
    let mut add = |name: &str, bytes: &[u8]| {
        let mut header = tar::Header::new_ustar();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        archive
            .append_data(&mut header, name, bytes)
            .expect("appending to a Vec");
    };
    if oci {
        add("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
        add("index.json", &top);
    } else {
        add("manifest.json", &top);
    }
    for segment in &segments {
        add(
            &format!("blobs/sha256/{}", Digest::sha256(segment).hex()),
            segment,
        );
    }
    archive.into_inner().expect("finishing a Vec")
}

/// Replaces `$n` and `#n` in `segment` by the digest and length of segment
/// `n`, where `known` has them.
fn fill(segment: &[u8], known: &[Option<(String, usize)>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(segment.len());
    let mut i = 0;
    while i < segment.len() {
        let marker = segment[i];
        let target = segment
            .get(i + 1)
            .filter(|d| d.is_ascii_digit())
            .and_then(|d| known.get(usize::from(d - b'0')))
            .and_then(Option::as_ref);
        match (marker, target) {
            (b'$', Some((hex, _))) => out.extend_from_slice(hex.as_bytes()),
            (b'#', Some((_, len))) => out.extend_from_slice(len.to_string().as_bytes()),
            _ => {
                out.push(marker);
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    out
}

/// Arbitrary bytes imported as an archive stream (plain or compressed tar)
/// into a fresh `memory://` store: never a panic; a failed import leaves
/// no image, name or blob behind, also as seen by a store opened anew on
/// the same backend; a successful one stored every image it reports,
/// byte for byte under its ID. Accepted when the import succeeded.
pub fn import(data: &[u8]) -> bool {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(import_into_memory(data.to_vec()))
}

/// The body of [`import`].
async fn import_into_memory(data: Vec<u8>) -> bool {
    let backend = Backend::new(MemoryBackend::new());
    let store = Store::open(backend.images()).await.expect("an empty store");
    let blobs = BlobCache::new(backend.blobs()).expect("a blob cache");
    let options = ImportOptions::new().with_platform(PlatformChoice::All);
    let input = Input::reader("fuzz", Cursor::new(data));
    let result = imagecache_transfer::import(&store, &blobs, [input], &options).await;
    let reopened = Store::open(backend.images())
        .await
        .expect("the store reopens");
    let left: Vec<_> = blobs.backend().list_blobs().await.expect("blobs list");
    match result {
        Ok(report) => {
            assert!(!report.images.is_empty());
            for image in &report.images {
                let stored = reopened.get(&image.id).await.expect("an imported image");
                assert_eq!(ImageId::of_config(stored.raw_json()), image.id);
            }
            assert_eq!(reopened.ids().len(), store.ids().len());
            true
        }
        Err(err) => {
            assert!(!err.to_string().is_empty(), "an error without a message");
            assert!(store.ids().is_empty(), "images left by a failed import");
            assert!(store.names().is_empty(), "names left by a failed import");
            assert!(
                reopened.ids().is_empty(),
                "images stored by a failed import"
            );
            assert!(left.is_empty(), "blobs left by a failed import: {left:?}");
            false
        }
    }
}
