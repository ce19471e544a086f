#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

use imagecache_core::{Error, Result};

#[cfg(feature = "fs")]
#[cfg_attr(docsrs, doc(cfg(feature = "fs")))]
pub mod fs;
#[cfg(any(feature = "fs", feature = "redb", feature = "s3"))]
mod leases;
pub mod memory;
mod opened;
#[cfg(feature = "redb")]
#[cfg_attr(docsrs, doc(cfg(feature = "redb")))]
pub mod redb;
#[cfg(feature = "s3")]
#[cfg_attr(docsrs, doc(cfg(feature = "s3")))]
pub mod s3;

pub use memory::MemoryBackend;
pub use opened::Backend;

#[cfg(all(feature = "testing", any(feature = "fs", feature = "redb")))]
mod testing;

/// The schemes [`open`] understands, in this build.
// Each push depends on a feature, which a `vec![]` literal cannot express.
#[allow(clippy::vec_init_then_push)]
pub fn schemes() -> Vec<&'static str> {
    let mut s = Vec::new();
    #[cfg(feature = "fs")]
    s.push(fs::SCHEME);
    #[cfg(feature = "redb")]
    s.push(redb::SCHEME);
    #[cfg(feature = "s3")]
    s.push(s3::SCHEME);
    s.push(memory::SCHEME);
    s
}

fn config_error(reason: String) -> Error {
    Error::Config {
        backend: "imagecache",
        reason,
        source: None,
    }
}

#[cfg(not(all(feature = "fs", feature = "redb", feature = "s3")))]
fn missing_feature(scheme: &str) -> Error {
    config_error(format!(
        "this build has no {scheme} backend; enable the `{scheme}` feature of imagecache-backends"
    ))
}

/// Opens the backend a URL names, both its image and its blob halves:
///
/// | URL | backend |
/// |---|---|
/// | `fs:///var/lib/docker/image/overlay2/imagedb`, `fs://relative/dir` | [`fs::FsBackend`] |
/// | `redb:///var/cache/imagecache.redb` | [`redb::RedbBackend`] |
/// | `s3://bucket/prefix?endpoint=…&region=…` | [`s3::S3Backend`] (feature `s3`) |
/// | `memory://` | [`MemoryBackend`], empty and private to this handle |
///
/// # Errors
/// [`Error::Config`] for an unknown scheme, a scheme this build lacks (say
/// which feature to enable), or an empty path; then whatever opening the
/// backend reports (a locked redb file, a missing bucket, bad credentials,
/// an unreachable endpoint), each naming what to fix.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let dir = tempfile::tempdir().unwrap();
/// let backend = imagecache_backends::open(&format!("fs://{}", dir.path().display())).await?;
/// assert!(backend.images().capabilities().persistent);
/// assert!(imagecache_backends::open("ftp://x").await.is_err());
/// # Ok::<(), imagecache_core::Error>(())
/// # }).unwrap();
/// ```
pub async fn open(url: &str) -> Result<Backend> {
    // Only the local backends read a path.
    #[cfg_attr(not(any(feature = "fs", feature = "redb")), allow(unused_variables))]
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(config_error(format!(
            "{url:?} is not a store URL; write SCHEME://LOCATION with a scheme of {}",
            schemes().join(", ")
        )));
    };
    #[cfg(any(feature = "fs", feature = "redb"))]
    let path = || {
        if rest.is_empty() {
            Err(config_error(format!(
                "{url:?} has no path after {scheme}://"
            )))
        } else {
            Ok(rest)
        }
    };
    match scheme {
        "memory" => Ok(Backend::new(MemoryBackend::new())),
        #[cfg(feature = "fs")]
        "fs" => Ok(Backend::new(fs::FsBackend::open(path()?).await?)),
        #[cfg(feature = "redb")]
        "redb" => Ok(Backend::new(redb::RedbBackend::open(path()?).await?)),
        #[cfg(feature = "s3")]
        "s3" => Ok(Backend::new(
            s3::S3Backend::open(s3::S3Config::from_url(url)?).await?,
        )),
        #[cfg(not(feature = "fs"))]
        "fs" => Err(missing_feature("fs")),
        #[cfg(not(feature = "redb"))]
        "redb" => Err(missing_feature("redb")),
        #[cfg(not(feature = "s3"))]
        "s3" => Err(missing_feature("s3")),
        other => Err(config_error(format!(
            "unknown store URL scheme {other:?} in {url:?}; use one of {}",
            schemes()
                .iter()
                .map(|s| format!("{s}://"))
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// Opens the store `url` names only if it is already there: what readers
/// (listing, inspecting, exporting) use, so that a mistyped URL is an
/// error instead of a new, empty store.
///
/// A `fs://` root must be a directory holding a store (Docker's `content/`
/// or this backend's `imagecache/`), and a `redb://` file must exist.
/// `s3://` opens as [`open`] does, which creates nothing, and `memory://`
/// is always new.
///
/// # Errors
/// [`Error::NotFound`] naming the location when there is no store there;
/// otherwise as [`open`].
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let dir = tempfile::tempdir().unwrap();
/// let url = format!("fs://{}", dir.path().join("typo").display());
/// assert!(imagecache_backends::open_existing(&url).await.unwrap_err().is_not_found());
/// assert!(!dir.path().join("typo").exists());
/// imagecache_backends::open(&url).await?;
/// imagecache_backends::open_existing(&url).await?;
/// # Ok::<(), imagecache_core::Error>(())
/// # }).unwrap();
/// ```
pub async fn open_existing(url: &str) -> Result<Backend> {
    ensure_exists(url)?;
    open(url).await
}

/// Where a local store lives on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalPath {
    /// An `fs://` store's root directory.
    Directory(std::path::PathBuf),
    /// A `redb://` store's database file.
    File(std::path::PathBuf),
}

impl LocalPath {
    /// The directory that holds the store: the root itself, or the file's
    /// directory.
    pub fn directory(&self) -> Option<&std::path::Path> {
        match self {
            Self::Directory(d) => Some(d),
            Self::File(f) => f.parent(),
        }
    }
}

/// The path a local store URL (`fs://DIR`, `redb://FILE`) names; `None`
/// for other schemes.
///
/// ```
/// use imagecache_backends::{LocalPath, local_path};
/// let file = local_path("redb:///var/cache/images.redb").unwrap();
/// assert_eq!(file, LocalPath::File("/var/cache/images.redb".into()));
/// assert_eq!(file.directory(), Some(std::path::Path::new("/var/cache")));
/// assert_eq!(local_path("s3://bucket/prefix"), None);
/// assert_eq!(local_path("fs://"), None);
/// ```
pub fn local_path(url: &str) -> Option<LocalPath> {
    match url.split_once("://")? {
        ("fs", root) if !root.is_empty() => Some(LocalPath::Directory(root.into())),
        ("redb", path) if !path.is_empty() => Some(LocalPath::File(path.into())),
        _ => None,
    }
}

/// Fails with [`Error::NotFound`] when `url` names a local store that is
/// not there; see [`open_existing`].
///
/// # Errors
/// [`Error::NotFound`] naming the location.
pub fn ensure_exists(url: &str) -> Result<()> {
    let absent = |what: &str| {
        Err(Error::NotFound {
            key: imagecache_core::Key::Other(format!(
                "{what} {url} (a command that writes creates it)"
            )),
        })
    };
    match local_path(url) {
        Some(LocalPath::Directory(root)) => {
            let root = root.as_path();
            if !root.is_dir() {
                return absent("store directory");
            }
            if !root.join("content").is_dir() && !root.join("imagecache").is_dir() {
                return absent("store (a directory without content/ or imagecache/)");
            }
            Ok(())
        }
        Some(LocalPath::File(path)) => {
            if path.is_file() {
                Ok(())
            } else {
                absent("store file")
            }
        }
        _ => Ok(()),
    }
}
