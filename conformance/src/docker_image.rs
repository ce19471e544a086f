//! Docker's `daemon/internal/image/image_test.go`, ported to the image config
//! model of `imagecache-core` (part of the `docker` group).
//!
//! These cases need no backend: they check how a config is read, written and
//! derived, which every store relies on. Each case's first doc line says
//! what it ports; where the port must differ from Docker's test, the case
//! says why.

use bytes::Bytes;
use imagecache_core::{
    ChildConfig, ConfigError, ContainerConfig, DiffId, Digest, History, Image, ImageConfig,
    ImageId, RootFs, Timestamp,
};

use crate::Outcome;

/// Every case of this module: name and function.
pub(crate) const CASES: &[crate::PureCase] = &[
    ("new_from_json_keeps_raw_json", new_from_json_keeps_raw_json),
    (
        "new_from_json_with_invalid_json",
        new_from_json_with_invalid_json,
    ),
    ("marshal_key_order", marshal_key_order),
    ("image_ids_and_defaults", image_ids_and_defaults),
    ("image_os_not_empty", image_os_not_empty),
    (
        "new_child_image_from_image_with_rootfs",
        new_child_image_from_image_with_rootfs,
    ),
];

/// The indented sample config of Docker's test.
const SAMPLE_IMAGE_JSON: &str = "{\n\t\"architecture\": \"amd64\",\n\t\"os\": \"linux\",\n\t\"config\": {},\n\t\"rootfs\": {\n\t\t\"type\": \"layers\",\n\t\t\"diff_ids\": []\n\t}\n}";

/// `TestNewFromJSON`: parsing keeps the exact input bytes, and the ID is
/// their SHA-256.
pub(crate) fn new_from_json_keeps_raw_json() -> Outcome {
    let raw = Bytes::from_static(SAMPLE_IMAGE_JSON.as_bytes());
    let img = match Image::from_bytes(raw.clone()) {
        Ok(img) => img,
        Err(e) => panic!("new_from_json_keeps_raw_json: the sample config was refused: {e}"),
    };
    assert_eq!(
        img.raw_json(),
        &raw,
        "new_from_json_keeps_raw_json: raw bytes changed"
    );
    assert_eq!(
        img.id(),
        ImageId::of_config(SAMPLE_IMAGE_JSON.as_bytes()),
        "new_from_json_keeps_raw_json: the ID is not the hash of the raw bytes"
    );
    assert_eq!(
        (img.architecture.as_str(), img.os.as_str()),
        ("amd64", "linux"),
        "new_from_json_keeps_raw_json: fields not read"
    );
    Outcome::Passed
}

/// `TestNewFromJSONWithInvalidJSON`: `{}` is refused with Docker's text
/// `invalid image JSON, no RootFS key`.
pub(crate) fn new_from_json_with_invalid_json() -> Outcome {
    match Image::from_bytes(Bytes::from_static(b"{}")) {
        Err(e) => {
            assert_eq!(
                e,
                ConfigError::NoRootFs,
                "new_from_json_with_invalid_json: wrong error"
            );
            assert_eq!(
                e.to_string(),
                "invalid image JSON, no RootFS key",
                "new_from_json_with_invalid_json: wrong error text"
            );
        }
        Ok(img) => panic!("new_from_json_with_invalid_json: `{{}}` was accepted as {img:?}"),
    }
    Outcome::Passed
}

/// `TestMarshalKeyOrder`: the written config has its top-level keys sorted
/// (`architecture` before `author` before `comment`).
pub(crate) fn marshal_key_order() -> Outcome {
    let config = ImageConfig {
        comment: "a".into(),
        author: "b".into(),
        architecture: "c".into(),
        ..Default::default()
    };
    let json = String::from_utf8(config.to_json_sorted())
        .unwrap_or_else(|e| panic!("marshal_key_order: output is not UTF-8: {e}"));
    let positions: Vec<usize> = ["\"architecture\"", "\"author\"", "\"comment\""]
        .iter()
        .map(|key| {
            json.find(key)
                .unwrap_or_else(|| panic!("marshal_key_order: {key} missing from {json}"))
        })
        .collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "marshal_key_order: invalid key order in JSON: {json}"
    );
    Outcome::Passed
}

/// `TestImage`: an image's ID is the one computed from its bytes, its
/// operating system defaults to the host's (Linux), and its runtime config
/// is the `config` it was created with.
///
/// Docker's test sets the computed ID by hand; here an image's ID can only
/// come from its bytes, so the case checks that instead.
pub(crate) fn image_ids_and_defaults() -> Outcome {
    let raw: &'static [u8] =
        br#"{"config":{"Hostname":"hostname","Domainname":"domain","User":"root"},"rootfs":{"type":"layers"}}"#;
    let img = Image::from_bytes(Bytes::from_static(raw))
        .unwrap_or_else(|e| panic!("image_ids_and_defaults: config refused: {e}"));
    let expected = Digest::sha256(raw);
    assert_eq!(
        img.id().digest(),
        &expected,
        "image_ids_and_defaults: ID is not sha256 of the bytes"
    );
    assert_eq!(
        img.id().to_string(),
        expected.to_string(),
        "image_ids_and_defaults: ID string"
    );
    assert_eq!(
        img.operating_system(),
        "linux",
        "image_ids_and_defaults: operating system default"
    );
    let run_config = ContainerConfig {
        hostname: "hostname".into(),
        domainname: "domain".into(),
        user: "root".into(),
        ..Default::default()
    };
    assert_eq!(
        img.config.as_ref(),
        Some(&run_config),
        "image_ids_and_defaults: runtime config"
    );
    Outcome::Passed
}

/// `TestImageOSNotEmpty`: the operating system is the `os` field when set.
pub(crate) fn image_os_not_empty() -> Outcome {
    let config = ImageConfig {
        os: "os".into(),
        os_version: "osversion".into(),
        ..Default::default()
    };
    assert_eq!(
        config.operating_system(),
        "os",
        "image_os_not_empty: operating system"
    );
    Outcome::Passed
}

/// `TestNewChildImageFromImageWithRootFS`: a child gets the parent's diff
/// IDs plus its own, the author, configs and OS it was given, the parent's
/// history plus one entry carrying the comment, and the parent is left
/// unchanged.
///
/// Docker's test uses the bare strings `ba5e` and `abcdef` as diff IDs. The
/// parent's (read from a config) is kept verbatim here too; the child's new
/// layer must be a valid digest, so the case uses the SHA-256 of `abcdef`.
pub(crate) fn new_child_image_from_image_with_rootfs() -> Outcome {
    let mut rootfs = RootFs::new();
    rootfs.raw_diff_ids.push("ba5e".into());
    let parent = ImageConfig {
        rootfs,
        history: vec![History {
            author: "a".into(),
            comment: "c".into(),
            created_by: "r".into(),
            created: Some(Timestamp::now_utc()),
            empty_layer: false,
        }],
        ..Default::default()
    };
    let before = parent.clone();
    let layer = DiffId::try_from(Digest::sha256(b"abcdef"))
        .unwrap_or_else(|e| panic!("new_child_image_from_image_with_rootfs: {e}"));
    let child = ChildConfig {
        author: "author".into(),
        comment: "comment".into(),
        diff_id: Some(layer),
        container_config: ContainerConfig {
            cmd: Some(vec!["echo".into(), "foo".into()]),
            ..Default::default()
        },
        config: Some(ContainerConfig::default()),
        created: Timestamp::now_utc(),
    };
    let image = ImageConfig::new_child(Some(&parent), child.clone(), "platform");

    let case = "new_child_image_from_image_with_rootfs";
    assert_eq!(
        image.rootfs.raw_diff_ids,
        vec!["ba5e".to_owned(), layer.to_string()],
        "{case}: diff IDs"
    );
    assert_eq!(image.author, child.author, "{case}: author");
    assert_eq!(image.config, child.config, "{case}: config");
    assert_eq!(
        image.container_config, child.container_config,
        "{case}: container config"
    );
    assert_eq!(image.os, "platform", "{case}: os");
    assert_eq!(image.history.len(), 2, "{case}: history length");
    assert_eq!(
        image.history[1].comment, child.comment,
        "{case}: comment of the new history entry"
    );
    assert_eq!(
        image.history[1].created_by, "echo foo",
        "{case}: created_by of the new history entry"
    );
    assert_eq!(
        parent, before,
        "{case}: RootFS should be copied not mutated"
    );
    assert_ne!(
        parent.rootfs.raw_diff_ids, image.rootfs.raw_diff_ids,
        "{case}: RootFS should be copied not mutated"
    );
    Outcome::Passed
}
