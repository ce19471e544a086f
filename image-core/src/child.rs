//! Building the config of a new image on top of a parent, as Docker's
//! `NewChildImage` does when the builder commits a step.

use crate::digest::DiffId;
use crate::model::{ContainerConfig, History, ImageConfig, RootFs};
use crate::platform::host_architecture;
use crate::time::Timestamp;

/// The diff ID of an empty layer tar (1024 zero bytes), which Docker never
/// adds to `rootfs.diff_ids` (`layer.DigestSHA256EmptyTar`).
pub const EMPTY_LAYER_DIFF_ID: &str =
    "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef";

/// What a build step contributes to the image it commits (Docker's
/// `ChildConfig`); everything else is inherited from the parent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildConfig {
    /// `author` of the image and of its history entry.
    pub author: String,
    /// `comment` of the history entry.
    pub comment: String,
    /// The layer the step produced. `None` or the empty-tar digest
    /// ([`EMPTY_LAYER_DIFF_ID`]) means the step added no layer.
    pub diff_id: Option<DiffId>,
    /// The configuration of the step's container (recorded as
    /// `container_config`; its `Cmd` becomes the history's `created_by`).
    pub container_config: ContainerConfig,
    /// The runtime configuration of the new image (`config`).
    pub config: Option<ContainerConfig>,
    /// When the step ran: the history entry's and the image's `created`.
    /// Docker uses the current time in UTC.
    pub created: Timestamp,
}

impl ChildConfig {
    /// Whether the step added a layer.
    pub fn adds_layer(&self) -> bool {
        self.diff_id
            .is_some_and(|d| d.to_string() != EMPTY_LAYER_DIFF_ID)
    }
}

impl ImageConfig {
    /// The config of a new image committed on top of `parent` (`None` for
    /// `FROM scratch`), as Docker's `NewChildImage` builds it:
    ///
    /// * `rootfs` is a copy of the parent's (or a new `layers` one) with the
    ///   step's layer appended, unless the step added none;
    /// * `history` is the parent's plus one entry with the author, comment,
    ///   `created`, `created_by` = the container config's `Cmd` joined by
    ///   spaces, and `empty_layer` when no layer was added;
    /// * `architecture`, `variant`, `os.version` and `os.features` come from
    ///   the parent (the architecture defaults to the host's, in Go's
    ///   naming, when the parent has none); `os` is the argument;
    /// * `config`, `container_config` and `author` come from `child`, and
    ///   `created` equals the history entry's.
    ///
    /// The parent is not modified. `docker_version` stays empty, as in Docker
    /// 29 and later.
    pub fn new_child(parent: Option<&Self>, child: ChildConfig, os: &str) -> Self {
        let adds_layer = child.adds_layer();
        let mut rootfs = parent.map_or_else(RootFs::new, |p| p.rootfs.clone());
        if let (true, Some(diff_id)) = (adds_layer, child.diff_id) {
            rootfs.append(diff_id);
        }
        let entry = History {
            created: Some(child.created),
            created_by: child
                .container_config
                .cmd
                .as_deref()
                .unwrap_or_default()
                .join(" "),
            author: child.author.clone(),
            comment: child.comment,
            empty_layer: !adds_layer,
        };
        let mut history = parent.map(|p| p.history.clone()).unwrap_or_default();
        history.push(entry);
        let architecture = match parent {
            Some(p) if !p.architecture.is_empty() => p.architecture.clone(),
            _ => host_architecture().to_owned(),
        };
        Self {
            created: Some(child.created),
            container_config: child.container_config,
            author: child.author,
            config: child.config,
            architecture,
            variant: parent.map(|p| p.variant.clone()).unwrap_or_default(),
            os: os.to_owned(),
            rootfs,
            history,
            os_version: parent.map(|p| p.os_version.clone()).unwrap_or_default(),
            os_features: parent.map(|p| p.os_features.clone()).unwrap_or_default(),
            ..Self::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Digest;

    fn ts(s: &str) -> Timestamp {
        Timestamp::parse_rfc3339(s).unwrap()
    }

    fn child(diff: Option<DiffId>) -> ChildConfig {
        ChildConfig {
            author: "me".into(),
            comment: "step".into(),
            diff_id: diff,
            container_config: ContainerConfig {
                cmd: Some(vec![
                    "/bin/sh".into(),
                    "-c".into(),
                    "make && make install".into(),
                ]),
                ..Default::default()
            },
            config: Some(ContainerConfig::default()),
            created: ts("2024-01-02T03:04:05.5Z"),
        }
    }

    #[test]
    fn appends_layer_and_history() {
        let layer = DiffId::try_from(Digest::sha256(b"layer")).unwrap();
        let parent = ImageConfig {
            architecture: "arm".into(),
            variant: "v7".into(),
            os_version: "1.0".into(),
            os_features: vec!["f".into()],
            rootfs: RootFs {
                fs_type: "layers".into(),
                raw_diff_ids: vec!["ba5e".into()],
            },
            history: vec![History {
                created_by: "base".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let before = parent.clone();
        let img = ImageConfig::new_child(Some(&parent), child(Some(layer)), "linux");
        assert_eq!(parent, before);
        assert_eq!(
            img.rootfs.raw_diff_ids,
            vec!["ba5e".to_owned(), layer.to_string()]
        );
        assert_eq!(img.history.len(), 2);
        let h = &img.history[1];
        assert_eq!(h.created_by, "/bin/sh -c make && make install");
        assert_eq!(h.comment, "step");
        assert_eq!(h.author, "me");
        assert!(!h.empty_layer);
        assert_eq!(img.created, h.created);
        assert_eq!(img.architecture, "arm");
        assert_eq!(img.variant, "v7");
        assert_eq!(img.os_version, "1.0");
        assert_eq!(img.os_features, vec!["f"]);
        assert_eq!(img.os, "linux");
        assert_eq!(img.author, "me");
        assert_eq!(img.config, Some(ContainerConfig::default()));
        assert_eq!(img.docker_version, "");
    }

    #[test]
    fn empty_layer_is_not_appended() {
        let empty = DiffId::parse(EMPTY_LAYER_DIFF_ID).unwrap();
        for diff in [None, Some(empty)] {
            let img = ImageConfig::new_child(None, child(diff), "linux");
            assert_eq!(img.rootfs, RootFs::new());
            assert_eq!(img.history.len(), 1);
            assert!(img.history[0].empty_layer);
            assert_eq!(img.architecture, host_architecture());
        }
        // The empty tar really is 1024 zero bytes.
        assert_eq!(
            Digest::sha256(&[0u8; 1024]).to_string(),
            EMPTY_LAYER_DIFF_ID
        );
    }

    #[test]
    fn rootfs_digests_are_validated_when_used() {
        let a = DiffId::try_from(Digest::sha256(b"a")).unwrap();
        let b = DiffId::try_from(Digest::sha256(b"b")).unwrap();
        let mut rootfs = RootFs::new();
        assert_eq!(rootfs.fs_type, RootFs::TYPE_LAYERS);
        assert_eq!(rootfs.chain_id(), Ok(None));
        rootfs.append(a);
        assert_eq!(
            rootfs.chain_id().unwrap().unwrap().to_string(),
            a.to_string()
        );
        rootfs.append(b);
        assert_eq!(rootfs.diff_ids().unwrap(), vec![a, b]);
        assert_eq!(
            rootfs.chain_id().unwrap().unwrap().to_string(),
            "sha256:51c0c8ace48498d6f5fee6b0592cc06f2da0f3cbe09c5a34a97dce85c3889676"
        );
        // Docker's own tests use bare hex; it is kept, and refused only
        // when a digest is needed.
        rootfs.raw_diff_ids.push("ba5e".into());
        let err = rootfs.diff_ids().unwrap_err();
        assert_eq!(err.input, "ba5e");
        assert!(rootfs.chain_id().is_err());
    }

    #[test]
    fn nil_cmd_gives_empty_created_by() {
        let mut c = child(None);
        c.container_config.cmd = None;
        let img = ImageConfig::new_child(None, c, "linux");
        assert_eq!(img.history[0].created_by, "");
    }
}
