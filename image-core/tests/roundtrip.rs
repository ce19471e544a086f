//! Properties of reading and writing configs: what is written reads back as
//! the same config, and no input makes the parser panic.

mod common;

use imagecache_core::{ImageConfig, v1};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn parse_of_encode_is_identity(config in common::image_config()) {
        prop_assume!(config.non_empty_history_count() <= config.rootfs.raw_diff_ids.len());
        let expected = common::normalise(config.clone());
        let sorted = config.to_json_sorted();
        prop_assert_eq!(&ImageConfig::from_json(&sorted).unwrap(), &expected);
        let value = config.to_json_struct_order();
        prop_assert_eq!(&ImageConfig::from_json(&value).unwrap(), &expected);
        // Both orders carry the same members.
        prop_assert_eq!(sorted.len(), value.len());
        // Writing is deterministic and stable under a round trip.
        prop_assert_eq!(expected.to_json_sorted(), sorted);
    }

    #[test]
    fn container_config_json_reads_back(cc in common::container_config_from(common::any_string())) {
        let doc = format!(
            r#"{{"rootfs":{{}},"container_config":{}}}"#,
            String::from_utf8(cc.to_json()).unwrap()
        );
        let parsed = ImageConfig::from_json(doc.as_bytes()).unwrap();
        let expected = common::normalise(ImageConfig { container_config: cc, ..Default::default() });
        prop_assert_eq!(parsed.container_config, expected.container_config);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = ImageConfig::from_json(&bytes);
        let _ = v1::history_from_config(&bytes, false);
        let _ = v1::make_config_from_v1_config(&bytes, &Default::default(), &[]);
    }

    #[test]
    fn damaged_configs_never_panic(
        config in common::image_config(),
        cut in any::<prop::sample::Index>(),
        junk in proptest::collection::vec(any::<u8>(), 0..4),
    ) {
        let mut bytes = config.to_json_sorted();
        let at = cut.index(bytes.len());
        bytes.splice(at..at, junk);
        let _ = ImageConfig::from_json(&bytes);
        let _ = v1::make_config_from_v1_config(&bytes, &Default::default(), &[]);
        // Any proper prefix of an object lacks its closing brace.
        let whole = config.to_json_sorted();
        prop_assert!(ImageConfig::from_json(&whole[..at]).is_err());
    }
}
