//! Options of an import and an export.

use std::path::PathBuf;

use imagecache_core::Platform;

use crate::progress::{Cancel, ProgressFn};

/// Which images of a multi-platform index an import takes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum PlatformChoice {
    /// The platform this process runs on, as `docker load` does.
    #[default]
    Host,
    /// The best match for one platform (containerd's matching: `arm64` runs
    /// `arm/v7`, `amd64` runs `386`, the exact platform preferred).
    Only(Platform),
    /// Every platform whose blobs the archive holds; the others are skipped
    /// and named in the report.
    All,
}

/// How an import runs.
///
/// ```
/// use imagecache_transfer::{ImportOptions, PlatformChoice};
/// let options = ImportOptions::new().with_platform(PlatformChoice::All);
/// assert_eq!(options.platform(), &PlatformChoice::All);
/// ```
#[derive(Clone, Default)]
pub struct ImportOptions {
    pub(crate) platform: PlatformChoice,
    pub(crate) progress: Option<ProgressFn>,
    pub(crate) cancel: Cancel,
    pub(crate) spool_dir: Option<PathBuf>,
}

impl std::fmt::Debug for ImportOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImportOptions")
            .field("platform", &self.platform)
            .field("progress", &self.progress.is_some())
            .field("cancel", &self.cancel)
            .field("spool_dir", &self.spool_dir)
            .finish()
    }
}

impl ImportOptions {
    /// The host platform, no progress, never cancelled, streams copied to
    /// the system's temporary directory.
    pub fn new() -> Self {
        Self::default()
    }

    /// Which platform of a multi-platform index to import.
    pub fn with_platform(mut self, platform: PlatformChoice) -> Self {
        self.platform = platform;
        self
    }

    /// Where [`Progress`](crate::Progress) reports go.
    pub fn with_progress(mut self, progress: ProgressFn) -> Self {
        self.progress = Some(progress);
        self
    }

    /// A flag that stops the import when set.
    pub fn with_cancel(mut self, cancel: Cancel) -> Self {
        self.cancel = cancel;
        self
    }

    /// Where a stream is copied before it is read (by default the system's
    /// temporary directory); the copy is removed when the import ends.
    pub fn with_spool_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.spool_dir = Some(dir.into());
        self
    }

    /// The platform choice.
    pub fn platform(&self) -> &PlatformChoice {
        &self.platform
    }
}

/// The layout an export writes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ExportFormat {
    /// What current `docker save` writes: `manifest.json` (with `RepoTags`,
    /// the config and uncompressed layers) and, beside it, an OCI image
    /// layout (`oci-layout`, `index.json`) over the same blobs.
    #[default]
    DockerArchive,
    /// An OCI image layout: `oci-layout`, `index.json` naming one manifest
    /// per image, blobs by digest.
    Oci,
}

impl ExportFormat {
    /// `docker-archive` or `oci`.
    pub fn name(self) -> &'static str {
        match self {
            Self::DockerArchive => "docker-archive",
            Self::Oci => "oci",
        }
    }
}

impl std::str::FromStr for ExportFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "docker-archive" | "docker" => Ok(Self::DockerArchive),
            "oci" | "oci-archive" | "oci-layout" => Ok(Self::Oci),
            other => Err(format!(
                "unknown export format {other:?}; expected docker-archive or oci"
            )),
        }
    }
}

/// How an export runs.
#[derive(Clone, Default)]
pub struct ExportOptions {
    pub(crate) format: ExportFormat,
    pub(crate) progress: Option<ProgressFn>,
    pub(crate) cancel: Cancel,
}

impl std::fmt::Debug for ExportOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExportOptions")
            .field("format", &self.format)
            .field("progress", &self.progress.is_some())
            .field("cancel", &self.cancel)
            .finish()
    }
}

impl ExportOptions {
    /// A docker-archive, no progress, never cancelled.
    pub fn new() -> Self {
        Self::default()
    }

    /// The layout to write.
    pub fn with_format(mut self, format: ExportFormat) -> Self {
        self.format = format;
        self
    }

    /// Where [`Progress`](crate::Progress) reports go.
    pub fn with_progress(mut self, progress: ProgressFn) -> Self {
        self.progress = Some(progress);
        self
    }

    /// A flag that stops the export when set.
    pub fn with_cancel(mut self, cancel: Cancel) -> Self {
        self.cancel = cancel;
        self
    }

    /// The layout written.
    pub fn format(&self) -> ExportFormat {
        self.format
    }
}
