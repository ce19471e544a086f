//! The image config model: every field Docker reads or writes.
//!
//! Field names follow Rust conventions; the JSON key of each field is given
//! in its docs. Parsing is Go-lenient (see [`ImageConfig::from_json`]);
//! serialisation reproduces Go's `encoding/json` byte for byte (see
//! [`ImageConfig::to_json_sorted`] and [`ImageConfig::to_json_struct_order`]).

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Deref;

use bytes::Bytes;

use crate::digest::{ChainId, DiffId, DigestError, ImageId, chain_id};
use crate::time::Timestamp;

/// Docker's `container.Config`: the runtime configuration of an image or of
/// the container a build step ran in.
///
/// JSON keys are the Go field names (`Hostname`, `Env`, …). Collections that
/// Go would write as `null` when nil are `Option`s so that generated configs
/// serialise exactly as Docker's do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerConfig {
    /// `Hostname`.
    pub hostname: String,
    /// `Domainname`.
    pub domainname: String,
    /// `User`.
    pub user: String,
    /// `AttachStdin`.
    pub attach_stdin: bool,
    /// `AttachStdout`.
    pub attach_stdout: bool,
    /// `AttachStderr`.
    pub attach_stderr: bool,
    /// `ExposedPorts` (omitempty): a set of `port/proto` strings.
    pub exposed_ports: BTreeSet<String>,
    /// `Tty`.
    pub tty: bool,
    /// `OpenStdin`.
    pub open_stdin: bool,
    /// `StdinOnce`.
    pub stdin_once: bool,
    /// `Env`.
    pub env: Option<Vec<String>>,
    /// `Cmd`. A bare JSON string is accepted on input as a one-element list.
    pub cmd: Option<Vec<String>>,
    /// `Healthcheck` (omitempty).
    pub healthcheck: Option<HealthConfig>,
    /// `ArgsEscaped` (omitempty).
    pub args_escaped: bool,
    /// `Image`.
    pub image: String,
    /// `Volumes`: a set of paths.
    pub volumes: Option<BTreeSet<String>>,
    /// `WorkingDir`.
    pub working_dir: String,
    /// `Entrypoint`. A bare JSON string is accepted on input.
    pub entrypoint: Option<Vec<String>>,
    /// `NetworkDisabled` (omitempty).
    pub network_disabled: bool,
    /// `MacAddress` (omitempty; Docker ≤ 28 only). Read and written, never compared.
    pub mac_address: String,
    /// `OnBuild` (omitempty).
    pub on_build: Option<Vec<String>>,
    /// `Labels`.
    pub labels: Option<BTreeMap<String, String>>,
    /// `StopSignal` (omitempty).
    pub stop_signal: String,
    /// `StopTimeout` (omitempty), in seconds.
    pub stop_timeout: Option<i64>,
    /// `Shell` (omitempty).
    pub shell: Option<Vec<String>>,
}

/// Docker's `HealthConfig`; durations are Go `time.Duration` nanoseconds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HealthConfig {
    /// `Test` (omitempty).
    pub test: Option<Vec<String>>,
    /// `Interval` (omitempty).
    pub interval: i64,
    /// `Timeout` (omitempty).
    pub timeout: i64,
    /// `StartPeriod` (omitempty).
    pub start_period: i64,
    /// `StartInterval` (omitempty).
    pub start_interval: i64,
    /// `Retries` (omitempty).
    pub retries: i64,
}

/// One entry of an image's `history`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct History {
    /// `created` (omitempty).
    pub created: Option<Timestamp>,
    /// `created_by` (omitempty).
    pub created_by: String,
    /// `author` (omitempty).
    pub author: String,
    /// `comment` (omitempty).
    pub comment: String,
    /// `empty_layer` (omitempty): the step added no layer.
    pub empty_layer: bool,
}

/// The `rootfs` object: the layer diff IDs of the image, bottom first.
///
/// Diff IDs are kept exactly as written (Docker does not validate them);
/// [`RootFs::diff_ids`] validates them when they are needed as digests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RootFs {
    /// `type`, normally `layers`.
    pub fs_type: String,
    /// `diff_ids` (omitempty), verbatim.
    pub raw_diff_ids: Vec<String>,
}

/// OS and CPU an image is built for. Serialised with the OCI field names
/// (`os.version`, `os.features`), empty fields left out.
#[derive(
    Debug,
    Clone,
    Default,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(default)]
pub struct Platform {
    /// `os`, e.g. `linux`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub os: String,
    /// `architecture`, e.g. `amd64`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub architecture: String,
    /// `variant`, e.g. `v7`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub variant: String,
    /// `os.version`, e.g. `10.0.17763.5329` on Windows.
    #[serde(rename = "os.version", skip_serializing_if = "String::is_empty")]
    pub os_version: String,
    /// `os.features`.
    #[serde(rename = "os.features", skip_serializing_if = "Vec::is_empty")]
    pub os_features: Vec<String>,
}

/// A parsed image config document: Docker's `Image` with its embedded
/// `V1Image` fields.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageConfig {
    /// `id` (omitempty): the legacy v1 ID, if any.
    pub v1_id: String,
    /// `parent` (omitempty) as written in the document. The store's parent
    /// link lives in metadata and overrides this; see the image store.
    pub parent: String,
    /// `comment` (omitempty).
    pub comment: String,
    /// `created`; `null` when absent.
    pub created: Option<Timestamp>,
    /// `container` (omitempty).
    pub container: String,
    /// `container_config`: the configuration of the build step's container,
    /// which the classic builder cache compares against.
    pub container_config: ContainerConfig,
    /// `docker_version` (omitempty).
    pub docker_version: String,
    /// `author` (omitempty).
    pub author: String,
    /// `config` (omitempty): the runtime configuration of the image.
    pub config: Option<ContainerConfig>,
    /// `architecture` (omitempty).
    pub architecture: String,
    /// `variant` (omitempty).
    pub variant: String,
    /// `os` (omitempty).
    pub os: String,
    /// `Size` (omitempty).
    pub size: i64,
    /// `rootfs`; required when parsing.
    pub rootfs: RootFs,
    /// `history` (omitempty).
    pub history: Vec<History>,
    /// `os.version` (omitempty).
    pub os_version: String,
    /// `os.features` (omitempty).
    pub os_features: Vec<String>,
}

/// A stored image: its exact config bytes, their ID and the parsed document.
///
/// Dereferences to [`ImageConfig`] for field access. The ID is always the
/// SHA-256 of [`Image::raw_json`], never of a re-serialisation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    pub(crate) id: ImageId,
    pub(crate) raw: Bytes,
    pub(crate) config: ImageConfig,
}

impl Image {
    /// The image ID.
    pub fn id(&self) -> ImageId {
        self.id
    }

    /// The exact bytes the image was created from.
    pub fn raw_json(&self) -> &Bytes {
        &self.raw
    }

    /// The parsed document.
    pub fn config(&self) -> &ImageConfig {
        &self.config
    }
}

impl Deref for Image {
    type Target = ImageConfig;
    fn deref(&self) -> &ImageConfig {
        &self.config
    }
}

impl RootFs {
    /// The `type` Docker writes for layered root filesystems.
    pub const TYPE_LAYERS: &'static str = "layers";

    /// An empty root filesystem of type `layers` (Docker's `NewRootFS`).
    pub fn new() -> Self {
        Self {
            fs_type: Self::TYPE_LAYERS.to_owned(),
            raw_diff_ids: Vec::new(),
        }
    }

    /// Adds a layer on top.
    pub fn append(&mut self, diff_id: DiffId) {
        self.raw_diff_ids.push(diff_id.to_string());
    }

    /// The diff IDs, validated.
    ///
    /// # Errors
    /// The [`DigestError`] of the first diff ID that is not a valid digest
    /// (Docker accepts any string here; digests are only checked when used).
    pub fn diff_ids(&self) -> Result<Vec<DiffId>, DigestError> {
        self.raw_diff_ids.iter().map(|s| DiffId::parse(s)).collect()
    }

    /// The chain ID of all layers; `None` for no layers.
    ///
    /// # Errors
    /// As [`RootFs::diff_ids`].
    pub fn chain_id(&self) -> Result<Option<ChainId>, DigestError> {
        Ok(chain_id(&self.diff_ids()?))
    }
}

impl ImageConfig {
    /// The number of history entries that added a layer (`empty_layer` false
    /// or absent); Docker refuses configs where this exceeds the number of
    /// diff IDs.
    pub fn non_empty_history_count(&self) -> usize {
        self.history.iter().filter(|h| !h.empty_layer).count()
    }
}
