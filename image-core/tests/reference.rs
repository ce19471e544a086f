//! Property tests of `Reference`: no input panics the parser, and whatever
//! parses is stable through its full and familiar forms.

use imagecache_core::{Error, Reference};
use proptest::prelude::*;

/// Checks what every parsed reference must satisfy.
fn check_stable(input: &str) -> Result<(), TestCaseError> {
    match Reference::parse(input) {
        Ok(r) => {
            let full = Reference::parse(r.as_str());
            prop_assert_eq!(full.as_ref().ok(), Some(&r), "full form of {:?}", input);
            let familiar = Reference::parse(r.familiar());
            prop_assert_eq!(
                familiar.as_ref().ok(),
                Some(&r),
                "familiar form of {:?}",
                input
            );
            prop_assert!(r.name().len() <= 255);
            prop_assert!(r.as_str().starts_with(r.name()));
            prop_assert!(r.familiar().contains(r.tag().unwrap_or_default()));
            let tagged = r.clone().with_default_tag();
            prop_assert!(!tagged.is_name_only());
            prop_assert_eq!(tagged.name(), r.name());
        }
        Err(Error::InvalidReference { reference, reason }) => {
            prop_assert!(!reason.is_empty());
            prop_assert!(reference.len() <= 200 + '…'.len_utf8());
        }
        Err(other) => prop_assert!(false, "unexpected error {other:?}"),
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn any_string_parses_or_is_refused(input in any::<String>()) {
        check_stable(&input)?;
    }

    #[test]
    fn reference_shaped_strings_are_stable(
        input in "([a-zA-Z0-9.:-]{1,12}/)?[a-z0-9._-]{1,12}(/[a-z0-9._-]{1,8}){0,2}(:[A-Za-z0-9_.-]{1,10})?(@sha256:[0-9a-f]{64})?"
    ) {
        check_stable(&input)?;
    }
}
