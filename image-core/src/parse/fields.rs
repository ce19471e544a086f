//! The JSON names of Docker's config structs and the field each selects.

use std::collections::{BTreeMap, BTreeSet};

use super::Decoded;
use crate::model::{ContainerConfig, HealthConfig, History, RootFs};
use crate::time::Timestamp;

/// A JSON name of a struct `T` and the field of `T` it selects.
pub(super) type Field<T> = (&'static str, fn(&mut T) -> Slot<'_>);

/// A field of the model, by its Go type (see [`super::seed::Decode`] for
/// how each is read).
pub(super) enum Slot<'a> {
    /// `string`.
    Str(&'a mut String),
    /// `bool`.
    Bool(&'a mut bool),
    /// `int64`, `int` or `time.Duration`.
    Int(&'a mut i64),
    /// `*int`.
    OptInt(&'a mut Option<i64>),
    /// `*time.Time`.
    Time(&'a mut Option<Timestamp>),
    /// `[]string`.
    List(&'a mut Option<Vec<String>>),
    /// `[]string` whose nil and empty values the model does not tell apart.
    Vec(&'a mut Vec<String>),
    /// `strslice.StrSlice`.
    StrSlice(&'a mut Option<Vec<String>>),
    /// `map[string]struct{}` whose nil and empty values the model does not
    /// tell apart.
    Set(&'a mut BTreeSet<String>),
    /// `map[string]struct{}`.
    OptSet(&'a mut Option<BTreeSet<String>>),
    /// `map[string]string`.
    Labels(&'a mut Option<BTreeMap<String, String>>),
    /// `container.Config`.
    Config(&'a mut ContainerConfig),
    /// `*container.Config`.
    OptConfig(&'a mut Option<ContainerConfig>),
    /// `*container.HealthConfig`.
    Health(&'a mut Option<HealthConfig>),
    /// `*image.RootFS`.
    RootFs(&'a mut Option<RootFs>),
    /// `[]ocispec.History`.
    History(&'a mut Vec<History>),
}

/// `container.Config`.
pub(super) const CONFIG: &[Field<ContainerConfig>] = &[
    ("Hostname", |c| Slot::Str(&mut c.hostname)),
    ("Domainname", |c| Slot::Str(&mut c.domainname)),
    ("User", |c| Slot::Str(&mut c.user)),
    ("AttachStdin", |c| Slot::Bool(&mut c.attach_stdin)),
    ("AttachStdout", |c| Slot::Bool(&mut c.attach_stdout)),
    ("AttachStderr", |c| Slot::Bool(&mut c.attach_stderr)),
    ("ExposedPorts", |c| Slot::Set(&mut c.exposed_ports)),
    ("Tty", |c| Slot::Bool(&mut c.tty)),
    ("OpenStdin", |c| Slot::Bool(&mut c.open_stdin)),
    ("StdinOnce", |c| Slot::Bool(&mut c.stdin_once)),
    ("Env", |c| Slot::List(&mut c.env)),
    ("Cmd", |c| Slot::StrSlice(&mut c.cmd)),
    ("Healthcheck", |c| Slot::Health(&mut c.healthcheck)),
    ("ArgsEscaped", |c| Slot::Bool(&mut c.args_escaped)),
    ("Image", |c| Slot::Str(&mut c.image)),
    ("Volumes", |c| Slot::OptSet(&mut c.volumes)),
    ("WorkingDir", |c| Slot::Str(&mut c.working_dir)),
    ("Entrypoint", |c| Slot::StrSlice(&mut c.entrypoint)),
    ("NetworkDisabled", |c| Slot::Bool(&mut c.network_disabled)),
    ("MacAddress", |c| Slot::Str(&mut c.mac_address)),
    ("OnBuild", |c| Slot::List(&mut c.on_build)),
    ("Labels", |c| Slot::Labels(&mut c.labels)),
    ("StopSignal", |c| Slot::Str(&mut c.stop_signal)),
    ("StopTimeout", |c| Slot::OptInt(&mut c.stop_timeout)),
    ("Shell", |c| Slot::StrSlice(&mut c.shell)),
];

/// `container.HealthConfig`.
pub(super) const HEALTH: &[Field<HealthConfig>] = &[
    ("Test", |h| Slot::List(&mut h.test)),
    ("Interval", |h| Slot::Int(&mut h.interval)),
    ("Timeout", |h| Slot::Int(&mut h.timeout)),
    ("StartPeriod", |h| Slot::Int(&mut h.start_period)),
    ("StartInterval", |h| Slot::Int(&mut h.start_interval)),
    ("Retries", |h| Slot::Int(&mut h.retries)),
];

/// `image.RootFS`.
pub(super) const ROOTFS: &[Field<RootFs>] = &[
    ("type", |r| Slot::Str(&mut r.fs_type)),
    ("diff_ids", |r| Slot::Vec(&mut r.raw_diff_ids)),
];

/// `ocispec.History`.
pub(super) const HISTORY: &[Field<History>] = &[
    ("created", |h| Slot::Time(&mut h.created)),
    ("created_by", |h| Slot::Str(&mut h.created_by)),
    ("author", |h| Slot::Str(&mut h.author)),
    ("comment", |h| Slot::Str(&mut h.comment)),
    ("empty_layer", |h| Slot::Bool(&mut h.empty_layer)),
];

/// The keys of Go's `Image` (which embeds `V1Image`; its own `parent`
/// shadows the embedded one, and both are read into the same field).
pub(super) const IMAGE: &[Field<Decoded>] = &[
    ("id", |d| Slot::Str(&mut d.config.v1_id)),
    ("parent", |d| Slot::Str(&mut d.config.parent)),
    ("comment", |d| Slot::Str(&mut d.config.comment)),
    ("created", |d| Slot::Time(&mut d.config.created)),
    ("container", |d| Slot::Str(&mut d.config.container)),
    ("container_config", |d| {
        Slot::Config(&mut d.config.container_config)
    }),
    ("docker_version", |d| {
        Slot::Str(&mut d.config.docker_version)
    }),
    ("author", |d| Slot::Str(&mut d.config.author)),
    ("config", |d| Slot::OptConfig(&mut d.config.config)),
    ("architecture", |d| Slot::Str(&mut d.config.architecture)),
    ("variant", |d| Slot::Str(&mut d.config.variant)),
    ("os", |d| Slot::Str(&mut d.config.os)),
    ("Size", |d| Slot::Int(&mut d.config.size)),
    ("rootfs", |d| Slot::RootFs(&mut d.rootfs)),
    ("history", |d| Slot::History(&mut d.config.history)),
    ("os.version", |d| Slot::Str(&mut d.config.os_version)),
    ("os.features", |d| Slot::Vec(&mut d.config.os_features)),
];

/// The keys of Go's `V1Image`: the first thirteen of `Image`'s.
pub(super) const V1_IMAGE: &[Field<Decoded>] = IMAGE.split_at(13).0;
