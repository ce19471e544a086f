//! Go-lenient decoding of image configs.
//!
//! Docker reads image configs with Go's `encoding/json`, and a store written
//! by Docker must open here unchanged, so this decoder follows that package's
//! rules rather than serde's defaults:
//!
//! * Object keys are matched against the JSON names case-insensitively (ASCII
//!   folding, plus the Kelvin sign `K` for `k` and the long s `ſ` for `s`, the
//!   only non-ASCII characters that fold onto the ASCII letters of the names).
//!   Keys are taken in document order and each assigns its value, so of two
//!   keys naming the same field the later one wins, whatever its case.
//! * Unknown keys are skipped (but must still be valid JSON).
//! * `null` leaves a string, number, boolean or struct field as it is, and
//!   makes a list, map or pointer-like field (`Option`) absent.
//! * A repeated object-valued key decodes *into* the value the first one
//!   produced, as Go does: struct fields and map entries merge, and list
//!   elements are decoded into the existing elements. (Go can additionally
//!   resurrect stale list elements beyond the current length after three or
//!   more repetitions of the same key; that is not reproduced.)
//! * A value of the wrong JSON type is an error; integers must be integer
//!   literals that fit in 64 bits (Go's `strconv.ParseInt`), so `1.0`, `1e3`
//!   and `"1"` are refused. `-0` is refused too, where Go would read 0.
//! * Strings may hold invalid UTF-8; each invalid byte becomes U+FFFD, as Go's
//!   decoder does.
//! * `Cmd`, `Entrypoint` and `Shell` also accept a bare string (Docker ≤ 28's
//!   `strslice.StrSlice`), which becomes a one-element list; like that type
//!   they are replaced, never merged, when repeated.
//!
//! Two deliberate differences remain, both about documents no Docker writes:
//! a time string containing escape sequences is unescaped before parsing
//! (Go reads the raw bytes and refuses it), and the nesting depth of unknown
//! values is not limited (serde_json skips them without recursing, so any
//! depth is safe; Go refuses documents nested deeper than 10 000 levels).
//! Values of known fields nest at most a few levels, so a document nested
//! deeper than 128 levels there is refused as malformed.
//!
//! The decoder streams over the document with serde and writes straight into
//! the model; no intermediate JSON tree is built. One seed, [`Fill`], reads
//! a value into any Go type that implements [`Decode`], the trait that says
//! which JSON values the type takes and what they do to it. A Go struct is
//! a table of its JSON names ([`fields`]), each with a function that picks
//! the field the name selects, typed as a [`fields::Slot`].

mod fields;
mod seed;

use std::cell::Cell;

use bytes::Bytes;
use serde::de::{DeserializeSeed, MapAccess};

use crate::digest::ImageId;
use crate::error::ConfigError;
use crate::model::{Image, ImageConfig, RootFs};
use crate::time::TimestampError;

use self::fields::Field;
use self::seed::{At, Decode, Fill, Shape};

/// Which Go type the top-level object is decoded into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    /// Docker's `Image`: `V1Image` plus `parent`, `rootfs`, `history`,
    /// `os.version` and `os.features`.
    Image,
    /// Docker's `V1Image` alone; the `Image`-only keys are unknown to it.
    V1Image,
}

/// A decoded document and whether it named a non-null `rootfs`.
#[derive(Debug, Default)]
pub(crate) struct Decoded {
    pub(crate) config: ImageConfig,
    pub(crate) rootfs: Option<RootFs>,
}

/// State shared by all visitors of one decode: the first invalid field value
/// (a timestamp that does not parse), reported as a typed error instead of a
/// bare syntax error.
#[derive(Default)]
struct Ctx {
    invalid: Cell<Option<(String, TimestampError)>>,
}

impl Ctx {
    fn record(&self, field: String, err: TimestampError) {
        // Keep the first error: it is the one the decoder stopped at.
        let previous = self.invalid.take();
        self.invalid.set(Some(previous.unwrap_or((field, err))));
    }
}

impl ImageConfig {
    /// Parses an image config document as Docker does (Go-lenient; see the
    /// rules below) and checks what Docker's image store checks.
    ///
    /// Rules, from Go's `encoding/json`: keys match case-insensitively and the
    /// last of several keys for one field wins; unknown keys are ignored;
    /// `null` leaves scalars unchanged and makes lists, maps and optional
    /// objects absent; values of the wrong JSON type and integers that are not
    /// integer literals are errors. `Cmd`, `Entrypoint` and `Shell` accept a
    /// bare string. Diff IDs are kept verbatim in
    /// [`RootFs::raw_diff_ids`]; they are validated by [`RootFs::diff_ids`].
    ///
    /// # Errors
    /// * [`ConfigError::Empty`] for zero bytes;
    /// * [`ConfigError::Malformed`] for invalid JSON or a wrong JSON type,
    ///   with the line and column;
    /// * [`ConfigError::InvalidField`] for a timestamp that is not RFC 3339,
    ///   naming the field (`created`, `history[2].created`, …);
    /// * [`ConfigError::NoRootFs`] when `rootfs` is absent or `null`;
    /// * [`ConfigError::TooManyHistoryLayers`] when more history entries add a
    ///   layer than there are diff IDs.
    ///
    /// ```
    /// use imagecache_core::ImageConfig;
    /// let c = ImageConfig::from_json(br#"{"OS":"linux","rootfs":{"type":"layers"},"x":1}"#)?;
    /// assert_eq!(c.os, "linux");
    /// assert!(ImageConfig::from_json(b"{}").is_err());
    /// # Ok::<(), imagecache_core::ConfigError>(())
    /// ```
    pub fn from_json(json: &[u8]) -> Result<Self, ConfigError> {
        if json.is_empty() {
            return Err(ConfigError::Empty);
        }
        let Decoded { mut config, rootfs } = decode(json, Target::Image)?;
        config.rootfs = rootfs.ok_or(ConfigError::NoRootFs)?;
        let non_empty = config.non_empty_history_count();
        let diff_ids = config.rootfs.raw_diff_ids.len();
        if non_empty > diff_ids {
            return Err(ConfigError::TooManyHistoryLayers {
                non_empty,
                diff_ids,
            });
        }
        Ok(config)
    }
}

impl Image {
    /// Parses stored or received config bytes into an [`Image`] whose ID is
    /// the SHA-256 of exactly these bytes, and keeps the bytes.
    ///
    /// # Errors
    /// As [`ImageConfig::from_json`].
    ///
    /// ```
    /// use bytes::Bytes;
    /// use imagecache_core::Image;
    /// let raw = Bytes::from_static(br#"{"rootfs": {"type": "layers"}}"#);
    /// let img = Image::from_bytes(raw.clone())?;
    /// assert_eq!(img.raw_json(), &raw);
    /// assert_eq!(img.rootfs.fs_type, "layers");
    /// # Ok::<(), imagecache_core::ConfigError>(())
    /// ```
    pub fn from_bytes(raw: Bytes) -> Result<Self, ConfigError> {
        let config = ImageConfig::from_json(&raw)?;
        Ok(Self {
            id: ImageId::of_config(&raw),
            raw,
            config,
        })
    }
}

/// Decodes `json` into the Go type `target` names, without the checks
/// [`ImageConfig::from_json`] adds.
pub(crate) fn decode(json: &[u8], target: Target) -> Result<Decoded, ConfigError> {
    if let Some(err) = raw_control_in_string(json) {
        return Err(err);
    }
    let ctx = Ctx::default();
    let mut de = serde_json::Deserializer::from_slice(json);
    let fields = match target {
        Target::Image => fields::IMAGE,
        Target::V1Image => fields::V1_IMAGE,
    };
    let mut doc = Doc {
        out: Decoded::default(),
        fields,
    };
    let root = At::root(&ctx);
    let result = Fill {
        dst: &mut doc,
        at: &root,
    }
    .deserialize(&mut de)
    .and_then(|()| de.end());
    match result {
        Ok(()) => Ok(doc.out),
        Err(err) => Err(match ctx.invalid.take() {
            Some((field, source)) => ConfigError::InvalidField {
                field,
                reason: source.to_string(),
            },
            None => malformed(&err),
        }),
    }
}

/// The document: the keys of one Go type, read into a [`Decoded`].
struct Doc {
    out: Decoded,
    fields: &'static [Field<Decoded>],
}

impl Decode for Doc {
    const EXPECTED: &'static str = "a JSON object (an image config)";
    const SHAPE: Shape = Shape::Map;
    fn map<'de, A: MapAccess<'de>>(&mut self, map: A, at: &At<'_>) -> Result<(), A::Error> {
        seed::fields(map, &mut self.out, self.fields, at)
    }
}

/// A [`ConfigError::Malformed`] from a serde_json error, with the position
/// moved out of the message into fields.
pub(crate) fn malformed(err: &serde_json::Error) -> ConfigError {
    let text = err.to_string();
    let suffix = format!(" at line {} column {}", err.line(), err.column());
    let message = text.strip_suffix(&suffix).unwrap_or(&text).to_owned();
    ConfigError::Malformed {
        line: err.line(),
        column: err.column(),
        message,
    }
}

/// Go's decoder refuses a control character (below U+0020) written raw
/// inside a string, and Docker would not load such a config; serde_json lets
/// them through in byte strings, so they are looked for here. Documents
/// without any such byte, the usual case, cost one scan.
fn raw_control_in_string(json: &[u8]) -> Option<ConfigError> {
    // Whole chunks without an early exit, which the compiler vectorises.
    let any_control = json
        .chunks(64)
        .any(|chunk| chunk.iter().fold(false, |seen, &b| seen | (b < 0x20)));
    if !any_control {
        return None;
    }
    let (mut in_string, mut escaped) = (false, false);
    let (mut line, mut column) = (1usize, 0usize);
    for &b in json {
        if b == b'\n' {
            line += 1;
            column = 0;
        } else {
            column += 1;
        }
        if !in_string {
            in_string = b == b'"';
        } else if escaped {
            escaped = false;
        } else if b == b'\\' {
            escaped = true;
        } else if b == b'"' {
            in_string = false;
        } else if b < 0x20 {
            return Some(ConfigError::Malformed {
                line,
                column,
                message: format!("control character (\\u{b:04X}) found while parsing a string"),
            });
        }
    }
    None
}

/// Converts bytes to a string as Go's JSON decoder does: every byte that does
/// not start a valid UTF-8 sequence becomes U+FFFD.
///
/// `escaped` says the bytes came out of a string with escape sequences; then
/// the three-byte encoding of a surrogate code point can only stem from a
/// lone `\uD800`-style escape, which Go turns into a single U+FFFD.
pub(crate) fn go_string(bytes: &[u8], escaped: bool) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_owned(),
        Err(_) => go_string_lossy(bytes, escaped),
    }
}

fn go_string_lossy(mut bytes: &[u8], escaped: bool) -> String {
    let mut out = String::with_capacity(bytes.len() + 8);
    while !bytes.is_empty() {
        match std::str::from_utf8(bytes) {
            Ok(s) => {
                out.push_str(s);
                break;
            }
            Err(e) => {
                let (valid, rest) = bytes.split_at(e.valid_up_to());
                // `valid` is valid UTF-8 by construction.
                out.push_str(std::str::from_utf8(valid).unwrap_or_default());
                out.push(char::REPLACEMENT_CHARACTER);
                let skip = match rest {
                    [0xED, 0xA0..=0xBF, 0x80..=0xBF, ..] if escaped => 3,
                    _ => 1,
                };
                bytes = &rest[skip.min(rest.len())..];
            }
        }
    }
    out
}

/// Whether a JSON object key names `name`, under Go's case folding.
pub(crate) fn fold_eq(key: &[u8], name: &str) -> bool {
    let Ok(key) = std::str::from_utf8(key) else {
        // A key with invalid UTF-8 decodes to U+FFFD somewhere, which folds
        // onto no ASCII letter.
        return false;
    };
    let mut name = name.bytes();
    for c in key.chars() {
        let Some(n) = name.next() else { return false };
        let same = match c {
            '\u{212A}' => n.eq_ignore_ascii_case(&b'k'),
            '\u{017F}' => n.eq_ignore_ascii_case(&b's'),
            c if c.is_ascii() => n.eq_ignore_ascii_case(&(c as u8)),
            _ => false,
        };
        if !same {
            return false;
        }
    }
    name.next().is_none()
}

/// Finds the field a key names: an exact match first, then a folded one (as
/// Go does; no two names of one struct fold onto each other, so the order
/// only matters for speed).
fn lookup<'t, F>(key: &[u8], table: &'t [(&'static str, F)]) -> Option<&'t (&'static str, F)> {
    table
        .iter()
        .find(|(name, _)| name.as_bytes() == key)
        .or_else(|| table.iter().find(|(name, _)| fold_eq(key, name)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_control_characters_in_strings_are_refused_as_go_does() {
        for raw in [&b"a\tb"[..], b"a\x00b", b"a\nb", b"\x1f"] {
            let mut json = br#"{"rootfs":{"type":"layers"},"comment":""#.to_vec();
            json.extend_from_slice(raw);
            json.extend_from_slice(br#""}"#);
            match ImageConfig::from_json(&json) {
                Err(ConfigError::Malformed { message, .. }) => {
                    assert!(message.contains("control character"), "{message}");
                }
                other => panic!("{raw:?}: {other:?}"),
            }
        }
        // Escaped, they are ordinary characters; raw white space between
        // tokens is fine.
        let c = ImageConfig::from_json(
            b"{\"rootfs\":{\"type\":\"layers\"},\n\t\"comment\":\"a\\tb\\u0000\\n\"}\r\n",
        )
        .unwrap();
        assert_eq!(c.comment, "a\tb\u{0}\n");
        // An escaped quote or backslash does not end or hide the string's
        // end, and keys are strings too.
        for json in [
            &b"{\"rootfs\":{\"type\":\"layers\"},\"comment\":\"a\\\"\tb\"}"[..],
            b"{\"rootfs\":{\"type\":\"layers\"},\"co\tmment\":\"x\"}",
        ] {
            assert!(
                matches!(
                    ImageConfig::from_json(json),
                    Err(ConfigError::Malformed { .. })
                ),
                "{}",
                String::from_utf8_lossy(json)
            );
        }
        let c =
            ImageConfig::from_json(b"{\"rootfs\":{\"type\":\"layers\"},\"comment\":\"a\\\\\"\n}")
                .unwrap();
        assert_eq!(c.comment, "a\\");
    }

    fn parse(s: &str) -> Result<ImageConfig, ConfigError> {
        ImageConfig::from_json(s.as_bytes())
    }

    fn ok(s: &str) -> ImageConfig {
        match parse(s) {
            Ok(c) => c,
            Err(e) => panic!("{s}: {e}"),
        }
    }

    fn malformed(s: &str) -> String {
        match parse(s) {
            Err(ConfigError::Malformed { message, .. }) => message,
            other => panic!("{s}: expected Malformed, got {other:?}"),
        }
    }

    #[test]
    fn folds_keys_and_last_key_wins() {
        let c = ok(r#"{"OS":"a","os":"b","ARCHITECTURE":"x","rootfs":{"TYPE":"layers"}}"#);
        assert_eq!(c.os, "b");
        assert_eq!(c.architecture, "x");
        assert_eq!(c.rootfs.fs_type, "layers");
        // An exact match does not beat a later folded one.
        let c = ok(r#"{"os":"exact","Os":"folded","rootfs":{}}"#);
        assert_eq!(c.os, "folded");
        // Kelvin sign and long s fold onto k and s.
        let c = ok("{\"\u{17F}ize\":7,\"doc\u{212A}er_version\":\"1\",\"rootfs\":{}}");
        assert_eq!(c.size, 7);
        assert_eq!(c.docker_version, "1");
        // Escaped keys are unescaped before matching.
        let c = ok(r#"{"\u006fs":"esc","rootfs":{}}"#);
        assert_eq!(c.os, "esc");
        // Punctuation must match exactly.
        let c = ok(r#"{"os_version":"no","OS.VERSION":"yes","rootfs":{}}"#);
        assert_eq!(c.os_version, "yes");
    }

    #[test]
    fn container_config_keys_fold() {
        let c = ok(
            r#"{"container_config":{"cmd":["a"],"ENV":["x=1"],"tty":true,"user":"u","labels":{"k":"v"}},"rootfs":{}}"#,
        );
        let cc = c.container_config;
        assert_eq!(cc.cmd, Some(vec!["a".to_owned()]));
        assert_eq!(cc.env, Some(vec!["x=1".to_owned()]));
        assert!(cc.tty);
        assert_eq!(cc.user, "u");
        assert_eq!(cc.labels.unwrap()["k"], "v");
    }

    #[test]
    fn null_semantics() {
        let c = ok(
            r#"{"os":"linux","os":null,"config":{"Env":["a"],"Env":null,"User":"u","User":null},"container_config":null,"created":null,"rootfs":{}}"#,
        );
        // Scalars keep what they had; lists and pointers become absent.
        assert_eq!(c.os, "linux");
        let cfg = c.config.unwrap();
        assert_eq!(cfg.env, None);
        assert_eq!(cfg.user, "u");
        assert_eq!(c.created, None);
        let c = ok(r#"{"config":{},"config":null,"rootfs":{}}"#);
        assert_eq!(c.config, None);
        let c = ok(
            r#"{"config":{"Labels":{"a":null},"StopTimeout":5,"StopTimeout":null},"rootfs":{}}"#,
        );
        let cfg = c.config.unwrap();
        assert_eq!(cfg.labels.unwrap()["a"], "");
        assert_eq!(cfg.stop_timeout, None);
        // Top-level null is an empty document, hence no rootfs.
        assert_eq!(parse("null"), Err(ConfigError::NoRootFs));
        assert_eq!(parse(" null "), Err(ConfigError::NoRootFs));
    }

    #[test]
    fn repeated_objects_merge_like_go() {
        let c = ok(
            r#"{"container_config":{"User":"a"},"container_config":{"Tty":true},"config":{"Labels":{"a":"1"}},"config":{"Labels":{"b":"2"}},"rootfs":{"type":"x"},"rootfs":{"diff_ids":["d"]}}"#,
        );
        assert_eq!(c.container_config.user, "a");
        assert!(c.container_config.tty);
        let labels = c.config.unwrap().labels.unwrap();
        assert_eq!(labels.len(), 2);
        assert_eq!(c.rootfs.fs_type, "x");
        assert_eq!(c.rootfs.raw_diff_ids, vec!["d"]);
        // List elements decode into the existing ones; the length follows
        // the later list.
        let c = ok(
            r#"{"history":[{"author":"a"},{"author":"b"}],"history":[{"comment":"c"}],"rootfs":{"diff_ids":["x"]}}"#,
        );
        assert_eq!(c.history.len(), 1);
        assert_eq!(c.history[0].author, "a");
        assert_eq!(c.history[0].comment, "c");
        let c = ok(r#"{"config":{"Env":["a","b"],"Env":[null]},"rootfs":{}}"#);
        assert_eq!(c.config.unwrap().env, Some(vec!["a".to_owned()]));
        // StrSlice fields are replaced, not merged.
        let c = ok(r#"{"config":{"Cmd":["a","b"],"Cmd":[null]},"rootfs":{}}"#);
        assert_eq!(c.config.unwrap().cmd, Some(vec![String::new()]));
    }

    #[test]
    fn strslice_accepts_bare_string() {
        let c = ok(r#"{"config":{"Cmd":"echo hi","Entrypoint":"sh","Shell":"bash"},"rootfs":{}}"#);
        let cfg = c.config.unwrap();
        assert_eq!(cfg.cmd, Some(vec!["echo hi".to_owned()]));
        assert_eq!(cfg.entrypoint, Some(vec!["sh".to_owned()]));
        assert_eq!(cfg.shell, Some(vec!["bash".to_owned()]));
        // Env is a plain list.
        assert!(malformed(r#"{"config":{"Env":"A=1"},"rootfs":{}}"#).contains("Env"));
        // Empty list is present but empty.
        let c = ok(r#"{"config":{"Cmd":[]},"rootfs":{}}"#);
        assert_eq!(c.config.unwrap().cmd, Some(vec![]));
    }

    #[test]
    fn wrong_types_are_malformed() {
        for (doc, field) in [
            (r#"{"os":1,"rootfs":{}}"#, "os"),
            (r#"{"Size":1.5,"rootfs":{}}"#, "Size"),
            (r#"{"Size":"1","rootfs":{}}"#, "Size"),
            (r#"{"Size":1e3,"rootfs":{}}"#, "Size"),
            (r#"{"Size":9223372036854775808,"rootfs":{}}"#, "Size"),
            (r#"{"config":{"Tty":"true"},"rootfs":{}}"#, "config.Tty"),
            (
                r#"{"config":{"StopTimeout":1.0},"rootfs":{}}"#,
                "config.StopTimeout",
            ),
            (
                r#"{"config":{"Volumes":{"/a":1}},"rootfs":{}}"#,
                "config.Volumes",
            ),
            (
                r#"{"config":{"Volumes":["/a"]},"rootfs":{}}"#,
                "config.Volumes",
            ),
            (
                r#"{"config":{"Labels":{"a":1}},"rootfs":{}}"#,
                "config.Labels",
            ),
            (
                r#"{"config":{"Healthcheck":{"Retries":"3"}},"rootfs":{}}"#,
                "Healthcheck.Retries",
            ),
            (r#"{"config":[],"rootfs":{}}"#, "config"),
            (r#"{"history":{},"rootfs":{}}"#, "history"),
            (r#"{"history":[1],"rootfs":{}}"#, "history[0]"),
            (r#"{"rootfs":{"diff_ids":"x"}}"#, "rootfs.diff_ids"),
            (r#"{"rootfs":[]}"#, "rootfs"),
        ] {
            let message = malformed(doc);
            assert!(message.contains(field), "{doc}: {message}");
        }
        assert!(malformed("[]").contains("object"));
        assert!(matches!(
            parse("{\"rootfs\":{}}\n x"),
            Err(ConfigError::Malformed { line: 2, .. })
        ));
        assert!(matches!(parse("{"), Err(ConfigError::Malformed { .. })));
        assert!(matches!(parse("   "), Err(ConfigError::Malformed { .. })));
        assert_eq!(parse(""), Err(ConfigError::Empty));
    }

    #[test]
    fn integers_and_negative_values() {
        let c = ok(
            r#"{"Size":-5,"config":{"StopTimeout":0,"Healthcheck":{"Interval":9223372036854775807,"Retries":-1}},"rootfs":{}}"#,
        );
        assert_eq!(c.size, -5);
        let cfg = c.config.unwrap();
        assert_eq!(cfg.stop_timeout, Some(0));
        let hc = cfg.healthcheck.unwrap();
        assert_eq!(hc.interval, i64::MAX);
        assert_eq!(hc.retries, -1);
    }

    #[test]
    fn timestamps_are_checked_and_named() {
        let c = ok(
            r#"{"created":"2024-05-01T12:00:00.5+02:00","history":[{"created":"2024-05-01T10:00:00Z","empty_layer":true}],"rootfs":{}}"#,
        );
        assert_eq!(
            c.created.unwrap().to_rfc3339_nano(),
            "2024-05-01T12:00:00.5+02:00"
        );
        assert!(c.history[0].empty_layer);
        match parse(r#"{"created":"yesterday","rootfs":{}}"#) {
            Err(ConfigError::InvalidField { field, .. }) => assert_eq!(field, "created"),
            other => panic!("{other:?}"),
        }
        match parse(r#"{"history":[{},{"created":"2024-13-01T00:00:00Z"}],"rootfs":{}}"#) {
            Err(ConfigError::InvalidField { field, reason }) => {
                assert_eq!(field, "history[1].created");
                assert!(reason.contains("month"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        assert!(malformed(r#"{"created":5,"rootfs":{}}"#).contains("created"));
    }

    #[test]
    fn rootfs_and_history_rules() {
        assert_eq!(parse("{}"), Err(ConfigError::NoRootFs));
        assert_eq!(parse(r#"{"rootfs":null}"#), Err(ConfigError::NoRootFs));
        assert_eq!(
            parse(r#"{"rootfs":{},"rootfs":null}"#),
            Err(ConfigError::NoRootFs)
        );
        ok(r#"{"rootfs":null,"rootfs":{}}"#);
        let c = ok(
            r#"{"rootfs":{"type":"layers","diff_ids":["ba5e"]},"history":[{"empty_layer":true},{},{"empty_layer":true}]}"#,
        );
        assert_eq!(c.rootfs.raw_diff_ids, vec!["ba5e"]);
        assert_eq!(c.non_empty_history_count(), 1);
        assert_eq!(
            parse(r#"{"rootfs":{"diff_ids":["a"]},"history":[{},{"empty_layer":false}]}"#),
            Err(ConfigError::TooManyHistoryLayers {
                non_empty: 2,
                diff_ids: 1
            })
        );
    }

    #[test]
    fn unknown_keys_are_skipped_but_must_be_json() {
        let c = ok(
            r#"{"x":{"deep":[1,2,{"a":null}]},"container_config":{"Foo":[true]},"history":[{"bar":1,"empty_layer":true}],"rootfs":{"extra":"y"}}"#,
        );
        assert_eq!(c.history.len(), 1);
        assert!(matches!(
            parse(r#"{"x":[1,],"rootfs":{}}"#),
            Err(ConfigError::Malformed { .. })
        ));
    }

    #[test]
    fn invalid_utf8_becomes_replacement_chars() {
        let doc =
            b"{\"os\":\"a\xffb\xe2\x80\",\"config\":{\"Labels\":{\"k\xfe\":\"v\"}},\"rootfs\":{}}";
        let c = ImageConfig::from_json(doc).unwrap();
        assert_eq!(c.os, "a\u{FFFD}b\u{FFFD}\u{FFFD}");
        assert!(c.config.unwrap().labels.unwrap().contains_key("k\u{FFFD}"));
        // A lone surrogate escape is one replacement character.
        let c = ok(r#"{"os":"x\ud800y","rootfs":{}}"#);
        assert_eq!(c.os, "x\u{FFFD}y");
        // A valid pair is kept.
        let c = ok(r#"{"os":"\ud83d\ude00","rootfs":{}}"#);
        assert_eq!(c.os, "\u{1F600}");
    }

    #[test]
    fn v1_target_ignores_image_keys() {
        let d = decode(
            br#"{"parent":"p","rootfs":5,"history":"x","os.version":1,"Size":3}"#,
            Target::V1Image,
        )
        .unwrap();
        assert_eq!(d.config.parent, "p");
        assert_eq!(d.config.size, 3);
        assert!(d.rootfs.is_none());
    }

    #[test]
    fn image_keeps_raw_bytes_and_id() {
        let raw = Bytes::from_static(
            br#"{"comment": "abc", "rootfs": {"type": "layers", "diff_ids": ["2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"]}}"#,
        );
        let img = Image::from_bytes(raw.clone()).unwrap();
        assert_eq!(
            img.id().to_string(),
            "sha256:8d25a9c45df515f9d0fe8e4a6b1c64dd3b965a84790ddbcc7954bb9bc89eb993"
        );
        assert_eq!(img.raw_json(), &raw);
        assert_eq!(img.comment, "abc");
        assert_eq!(Image::from_bytes(Bytes::new()), Err(ConfigError::Empty));
    }

    #[test]
    fn go_string_lossy_is_per_byte() {
        assert_eq!(go_string(b"ok", false), "ok");
        assert_eq!(go_string(b"\xe2\x80", false), "\u{FFFD}\u{FFFD}");
        assert_eq!(
            go_string(b"\xed\xa0\x80", false),
            "\u{FFFD}\u{FFFD}\u{FFFD}"
        );
        assert_eq!(go_string(b"\xed\xa0\x80", true), "\u{FFFD}");
        assert_eq!(go_string(b"a\xc3", false), "a\u{FFFD}");
    }

    #[test]
    fn fold_eq_rules() {
        assert!(fold_eq(b"HOSTNAME", "Hostname"));
        assert!(!fold_eq(b"Hostnam", "Hostname"));
        assert!(!fold_eq(b"Hostnamee", "Hostname"));
        assert!(fold_eq("\u{212A}".as_bytes(), "k"));
        assert!(fold_eq("\u{17F}".as_bytes(), "S"));
        assert!(!fold_eq(b"os_version", "os.version"));
        assert!(!fold_eq(b"\xff", "a"));
    }
}
