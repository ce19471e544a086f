//! Errors as one line of text, for messages that must stay on one line.

use std::error::Error as StdError;

/// Any error and its sources on one line; see [`CliError::one_line`](crate::error::CliError::one_line).
///
/// Line breaks become spaces and other control characters are escaped (see
/// [`printable`]): errors quote what they were given, which may hold
/// anything.
pub(crate) fn one_line(err: &dyn StdError) -> String {
    printable(&imagecache_core::error_text(err).replace(['\n', '\r'], " "))
}

/// `text` safe to print on a terminal: control characters other than
/// newline and tab, and the bidirectional controls that reorder what a
/// terminal shows, are written as `\u{…}` escapes.
pub(crate) fn printable(text: &str) -> String {
    let unsafe_char = |c: char| {
        (c.is_control() && c != '\n' && c != '\t')
            || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    };
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if unsafe_char(c) {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
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
    fn control_characters_are_escaped() {
        let e = std::io::Error::other("bad \u{1b}[31mname\u{7}\u{0}\u{202e}\r\nend\tok");
        assert_eq!(
            one_line(&e),
            "bad \\u{1b}[31mname\\u{7}\\u{0}\\u{202e}  end\tok"
        );
    }

    #[test]
    fn sources_already_quoted_are_not_repeated() {
        let io = std::io::Error::other("disk on fire");
        let e = imagecache_core::Error::backend("fs", None, io);
        let line = one_line(&e);
        assert_eq!(line.matches("disk on fire").count(), 1, "{line}");
    }
}
