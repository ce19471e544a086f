//! Errors as one line of text, for messages that must stay on one line.

use std::error::Error as StdError;

/// Any error and its sources on one line; see [`CliError::one_line`](crate::error::CliError::one_line).
pub(crate) fn one_line(err: &dyn StdError) -> String {
    imagecache_core::error_text(err).replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] Inner);

    #[derive(Debug, thiserror::Error)]
    #[error("inner\nline")]
    struct Inner;

    #[test]
    fn sources_are_joined_on_one_line() {
        assert_eq!(one_line(&Outer(Inner)), "outer: inner line");
    }

    #[test]
    fn sources_already_quoted_are_not_repeated() {
        let io = std::io::Error::other("disk on fire");
        let e = imagecache_core::Error::backend("fs", None, io);
        let line = one_line(&e);
        assert_eq!(line.matches("disk on fire").count(), 1, "{line}");
    }
}
