//! Compatibility with the legacy v1 image format (Docker's `image/v1`
//! package): v1 IDs, history entries from v1 configs, and v2 configs from
//! v1 ones.
//!
//! The outputs are byte-identical with Docker's: the JSON is written the way
//! Go's `encoding/json` writes a `map[string]*json.RawMessage` (keys sorted
//! bytewise, each raw value compacted and HTML-escaped).

use std::collections::BTreeMap;

use crate::digest::{ChainId, Digest};
use crate::encode::{Member, go_compact, write_history_list, write_str};
use crate::error::ConfigError;
use crate::model::{History, ImageConfig, RootFs};
use crate::parse::{Target, decode, fold_eq, go_string, malformed};

/// The `V1Image` members, in Go struct order. (`Size` sorts first, the rest
/// are lower case.)
const V1_MEMBERS: [Member; 12] = [
    Member::Id,
    Member::Comment,
    Member::Created,
    Member::Container,
    Member::ContainerConfig,
    Member::DockerVersion,
    Member::Author,
    Member::Config,
    Member::Architecture,
    Member::Variant,
    Member::Os,
    Member::Size,
];

/// A JSON object as Go holds it in a `map[string]*json.RawMessage`: keys in
/// byte order, values already in their re-marshalled (compact) form.
type RawMap = BTreeMap<String, Vec<u8>>;

/// The members of a JSON object in document order: decoded key, raw value.
type RawEntries<'a> = Vec<(String, &'a [u8])>;

/// The members Go writes when it marshals `config` as a `V1Image` value,
/// with `id` cleared when `clear_id`.
fn v1_members(config: &ImageConfig, clear_id: bool) -> RawMap {
    let mut map = RawMap::new();
    for member in V1_MEMBERS {
        if clear_id && member == Member::Id {
            continue;
        }
        let mut value = Vec::new();
        if config.write_member(&mut value, member) {
            map.insert(member.name().to_owned(), value);
        }
    }
    // `V1Image.Parent` sits second in the struct; its position does not
    // matter because the result always goes through a sorted map.
    if !config.parent.is_empty() {
        let mut value = Vec::new();
        write_str(&mut value, &config.parent);
        map.insert("parent".to_owned(), value);
    }
    map
}

fn json_string(s: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len() + 2);
    write_str(&mut out, s);
    out
}

/// Writes the map as Go's `json.Marshal(map[string]*json.RawMessage)`.
fn write_map(map: &RawMap) -> Vec<u8> {
    let mut out = Vec::with_capacity(map.values().map(|v| v.len() + 16).sum::<usize>() + 2);
    out.push(b'{');
    for (i, (k, v)) in map.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_str(&mut out, k);
        out.push(b':');
        out.extend_from_slice(v);
    }
    out.push(b'}');
    out
}

/// The legacy v1 ID of an image (Docker's `v1.CreateID`): the SHA-256 of
/// the image's `V1Image` fields (without `id`), plus `layer_id` = the chain
/// ID of its layers and, when given, `parent` = the parent's v1 ID, written
/// as one JSON object with sorted keys.
///
/// `config` is read as a `V1Image`: its `rootfs`, `history`, `os.version`
/// and `os.features` play no part.
pub fn create_id(config: &ImageConfig, layer_id: &ChainId, parent: Option<&Digest>) -> Digest {
    let mut map = v1_members(config, true);
    map.insert("layer_id".to_owned(), json_string(&layer_id.to_string()));
    if let Some(parent) = parent {
        map.insert("parent".to_owned(), json_string(&parent.to_string()));
    }
    Digest::sha256(&write_map(&map))
}

/// A history entry from a v1 config (Docker's `v1.HistoryFromConfig`):
/// its author, created time and comment, `created_by` = the container
/// config's `Cmd` joined by spaces, and the given `empty_layer`.
///
/// # Errors
/// [`ConfigError::Empty`] for no bytes; otherwise the errors of decoding the
/// bytes as a `V1Image` ([`ConfigError::Malformed`],
/// [`ConfigError::InvalidField`]).
pub fn history_from_config(v1_json: &[u8], empty_layer: bool) -> Result<History, ConfigError> {
    if v1_json.is_empty() {
        return Err(ConfigError::Empty);
    }
    let v1 = decode(v1_json, Target::V1Image)?.config;
    Ok(History {
        created: v1.created,
        created_by: v1
            .container_config
            .cmd
            .as_deref()
            .unwrap_or_default()
            .join(" "),
        author: v1.author,
        comment: v1.comment,
        empty_layer,
    })
}

/// Docker versions before this wrote v1 configs with blank fields that must
/// be dropped by a round trip through the `V1Image` struct
/// (`noFallbackMinVersion`).
const NO_FALLBACK_MIN_VERSION: &str = "1.8.3";

/// A v2 image config from a v1 one (Docker's `v1.MakeConfigFromV1Config`):
/// the v1 object without its v1-only keys (`id`, `parent`, `Size`,
/// `parent_id`, `layer_id`, `throwaway`), with `rootfs` and `history`
/// added, written with sorted keys. Other values are kept as they were
/// written, compacted. Configs from Docker before 1.8.3 (by their
/// `docker_version`) are first passed through the `V1Image` fields, which
/// drops blank and unknown fields. An empty `history` is written as `null`,
/// as Go writes a nil slice.
///
/// # Errors
/// [`ConfigError::Empty`] for no bytes; [`ConfigError::Malformed`] for
/// invalid JSON, a top level that is not an object, or a `docker_version`
/// that is not a string; for old configs, the errors of decoding a
/// `V1Image`.
pub fn make_config_from_v1_config(
    v1_json: &[u8],
    rootfs: &RootFs,
    history: &[History],
) -> Result<Vec<u8>, ConfigError> {
    if v1_json.is_empty() {
        return Err(ConfigError::Empty);
    }
    let version = docker_version(v1_json)?;
    let mut map = if version_less_than(&version, NO_FALLBACK_MIN_VERSION) {
        let v1 = decode(v1_json, Target::V1Image)?.config;
        v1_members(&v1, false)
    } else {
        raw_object(v1_json)?
    };
    for key in ["id", "parent", "Size", "parent_id", "layer_id", "throwaway"] {
        map.remove(key);
    }
    let mut value = Vec::new();
    rootfs.write_json(&mut value);
    map.insert("rootfs".to_owned(), value);
    let mut value = Vec::new();
    write_history_list(&mut value, history);
    map.insert("history".to_owned(), value);
    Ok(write_map(&map))
}

/// Docker's `versions.LessThan`: dot-separated parts compared as integers,
/// a part that is not a number counting as 0 and missing parts as 0.
fn version_less_than(v: &str, other: &str) -> bool {
    if v == other {
        return false;
    }
    let a: Vec<&str> = v.split('.').collect();
    let b: Vec<&str> = other.split('.').collect();
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).map_or(0, |s| go_atoi_lenient(s));
        let y = b.get(i).map_or(0, |s| go_atoi_lenient(s));
        if x != y {
            return x < y;
        }
    }
    false
}

/// `strconv.Atoi` with its error ignored: 0 for a syntax error, the nearest
/// 64-bit bound for an out-of-range number.
fn go_atoi_lenient(s: &str) -> i64 {
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return 0;
    }
    s.parse::<i64>().unwrap_or(if s.starts_with('-') {
        i64::MIN
    } else {
        i64::MAX
    })
}

/// Reads only `docker_version` (case-insensitively, last key wins) as Go
/// decodes it into `struct { DockerVersion string }`.
fn docker_version(json: &[u8]) -> Result<String, ConfigError> {
    // A V1Image decode would also fail on errors in unrelated fields, which
    // Docker's one-field struct does not see; validate the syntax, then
    // decode only the one field.
    let doc = raw_entries(json)?;
    let mut version = String::new();
    let Some(entries) = doc else {
        return Ok(version);
    };
    for (key, value) in entries {
        if !fold_eq(key.as_bytes(), "docker_version") {
            continue;
        }
        match value.first() {
            Some(b'"') => version = decode_string(value)?,
            Some(b'n') => {}
            _ => {
                let (line, column) =
                    position(json, value.as_ptr() as usize - json.as_ptr() as usize);
                return Err(ConfigError::Malformed {
                    line,
                    column,
                    message: "invalid type: expected a string for docker_version".to_owned(),
                });
            }
        }
    }
    Ok(version)
}

/// Decodes one JSON string literal as Go would.
fn decode_string(literal: &[u8]) -> Result<String, ConfigError> {
    let mut de = serde_json::Deserializer::from_slice(literal);
    let bytes: StringBytes = serde::Deserialize::deserialize(&mut de).map_err(|e| malformed(&e))?;
    Ok(bytes.0)
}

/// A JSON string read as raw bytes and converted as Go converts them.
struct StringBytes(String);

impl<'de> serde::Deserialize<'de> for StringBytes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = StringBytes;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_bytes<E: serde::de::Error>(
                self,
                v: &'de [u8],
            ) -> Result<StringBytes, E> {
                Ok(StringBytes(go_string(v, false)))
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<StringBytes, E> {
                Ok(StringBytes(go_string(v, true)))
            }
        }
        d.deserialize_bytes(V)
    }
}

/// The top-level object as Go's `map[string]*json.RawMessage` holds it:
/// later duplicate keys replace earlier ones (keys compare exactly), and
/// each value is compacted and HTML-escaped as Go re-marshals it.
fn raw_object(json: &[u8]) -> Result<RawMap, ConfigError> {
    let Some(entries) = raw_entries(json)? else {
        // `null` decodes to a nil map, which Docker then writes into and
        // crashes on; refuse it instead.
        return Err(ConfigError::Malformed {
            line: 1,
            column: 1,
            message: "expected a JSON object, found null".to_owned(),
        });
    };
    let mut map = RawMap::new();
    for (key, value) in entries {
        let mut compact = Vec::with_capacity(value.len());
        go_compact(&mut compact, value);
        map.insert(key, compact);
    }
    Ok(map)
}

/// Splits a JSON document whose top level is an object into its keys
/// (decoded) and raw values, in document order; `None` for `null`.
fn raw_entries(json: &[u8]) -> Result<Option<RawEntries<'_>>, ConfigError> {
    // Validate the whole document first, as Go does before decoding, so the
    // scanner below only ever sees well-formed JSON.
    let mut de = serde_json::Deserializer::from_slice(json);
    serde::de::Deserializer::deserialize_ignored_any(&mut de, serde::de::IgnoredAny)
        .and_then(|_| de.end())
        .map_err(|e| malformed(&e))?;
    let mut i = skip_ws(json, 0);
    match json.get(i) {
        Some(b'{') => {}
        Some(b'n') => return Ok(None),
        _ => {
            let (line, column) = position(json, i);
            return Err(ConfigError::Malformed {
                line,
                column,
                message: "invalid type: expected a JSON object".to_owned(),
            });
        }
    }
    let mut entries = Vec::new();
    i = skip_ws(json, i + 1);
    if json.get(i) == Some(&b'}') {
        return Ok(Some(entries));
    }
    loop {
        let key_end = value_end(json, i);
        let key = decode_string(&json[i..key_end])?;
        i = skip_ws(json, key_end);
        // Past the colon.
        i = skip_ws(json, i + 1);
        let end = value_end(json, i);
        entries.push((key, &json[i..end]));
        i = skip_ws(json, end);
        match json.get(i) {
            Some(b',') => i = skip_ws(json, i + 1),
            _ => break,
        }
    }
    Ok(Some(entries))
}

/// The 1-based line and column of byte `offset`, counted as serde_json
/// counts them (columns in bytes).
fn position(json: &[u8], offset: usize) -> (usize, usize) {
    let before = &json[..offset.min(json.len())];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |p| p + 1);
    (line, offset - line_start + 1)
}

fn skip_ws(json: &[u8], mut i: usize) -> usize {
    while matches!(json.get(i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        i += 1;
    }
    i
}

/// The end of the (valid) JSON value starting at `i`.
fn value_end(json: &[u8], start: usize) -> usize {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    let mut i = start;
    while i < json.len() {
        let b = json[i];
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
                if depth == 0 {
                    return i + 1;
                }
            }
        } else {
            match b {
                b'"' => in_string = true,
                b'{' | b'[' => depth += 1,
                b'}' | b']' => {
                    if depth == 0 {
                        return i;
                    }
                    depth -= 1;
                    if depth == 0 {
                        return i + 1;
                    }
                }
                b',' | b' ' | b'\t' | b'\n' | b'\r' | b':' if depth == 0 => return i,
                _ => {}
            }
        }
        i += 1;
    }
    i
}

/// Checks a legacy v1 image ID: exactly 64 lowercase hex characters
/// (Docker's `v1.ValidateID`).
///
/// # Errors
/// [`ConfigError::InvalidField`] for field `id`, saying what is wrong.
///
/// ```
/// use imagecache_core::v1::validate_id;
/// assert!(validate_id(&"a".repeat(64)).is_ok());
/// assert!(validate_id("sha256:abc").is_err());
/// ```
pub fn validate_id(id: &str) -> Result<(), ConfigError> {
    let reason = if id.len() != 64 {
        format!(
            "image ID {:?} is invalid: it has {} characters, expected 64 lowercase hex characters",
            truncate(id),
            id.len()
        )
    } else if let Some(pos) = id
        .bytes()
        .position(|b| !matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        format!(
            "image ID {:?} is invalid: character {pos} is not lowercase hex",
            truncate(id)
        )
    } else {
        return Ok(());
    };
    Err(ConfigError::InvalidField {
        field: "id".to_owned(),
        reason,
    })
}

fn truncate(s: &str) -> &str {
    let mut end = s.len().min(100);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::DiffId;

    #[test]
    fn version_comparison_like_docker() {
        assert!(version_less_than("", "1.8.3"));
        assert!(version_less_than("1.8.2", "1.8.3"));
        assert!(version_less_than("1.8", "1.8.3"));
        assert!(version_less_than("1.8.3-dev", "1.8.3"));
        assert!(!version_less_than("1.8.3", "1.8.3"));
        assert!(!version_less_than("1.10.0", "1.8.3"));
        assert!(!version_less_than("1.8.3.0", "1.8.3"));
        assert!(!version_less_than("2", "1.8.3"));
        assert!(version_less_than("-1.9", "1.8.3"));
        assert_eq!(go_atoi_lenient("99999999999999999999"), i64::MAX);
        assert_eq!(go_atoi_lenient("x"), 0);
    }

    #[test]
    fn raw_entries_split_values() {
        let doc = br#" { "a" : [1, {"b": "}"}] , "c\u0064":"x\"" ,"e":null,"f":-1.5e3 } "#;
        let entries = raw_entries(doc).unwrap().unwrap();
        let got: Vec<(&str, &str)> = entries
            .iter()
            .map(|(k, v)| (k.as_str(), std::str::from_utf8(v).unwrap()))
            .collect();
        assert_eq!(
            got,
            [
                ("a", r#"[1, {"b": "}"}]"#),
                ("cd", r#""x\"""#),
                ("e", "null"),
                ("f", "-1.5e3")
            ]
        );
        assert_eq!(raw_entries(b"{}").unwrap().unwrap(), vec![]);
        assert_eq!(raw_entries(b" null").unwrap(), None);
        assert!(raw_entries(b"[]").is_err());
        assert!(raw_entries(b"{\"a\":}").is_err());
    }

    #[test]
    fn docker_version_is_read_leniently() {
        assert_eq!(
            docker_version(br#"{"DOCKER_VERSION":"1.9","docker_version":"1.7"}"#).unwrap(),
            "1.7"
        );
        assert_eq!(
            docker_version(br#"{"docker_version":"1.9","docker_version":null}"#).unwrap(),
            "1.9"
        );
        assert_eq!(docker_version(br#"{"Size":"not an int"}"#).unwrap(), "");
        assert_eq!(
            docker_version(b"{\n \"docker_version\": 1}"),
            Err(ConfigError::Malformed {
                line: 2,
                column: 20,
                message: "invalid type: expected a string for docker_version".to_owned()
            })
        );
        assert!(docker_version(br#"[1]"#).is_err());
    }

    #[test]
    fn make_config_keeps_raw_values() {
        let rootfs = RootFs {
            fs_type: "layers".into(),
            raw_diff_ids: vec![DiffId::try_from(Digest::sha256(b"a")).unwrap().to_string()],
        };
        let out = make_config_from_v1_config(
            br#"{"docker_version":"1.9.0", "id":"x", "parent":"y", "Size":3, "parent_id":"p", "layer_id":"l", "throwaway":true, "zz": {"n": 1.50, "s": "<&>"}, "config": {"Cmd": ["a"]}}"#,
            &rootfs,
            &[],
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            format!(
                r#"{{"config":{{"Cmd":["a"]}},"docker_version":"1.9.0","history":null,"rootfs":{{"type":"layers","diff_ids":["{}"]}},"zz":{{"n":1.50,"s":"\u003c\u0026\u003e"}}}}"#,
                rootfs.raw_diff_ids[0]
            )
        );
    }

    #[test]
    fn make_config_falls_back_for_old_docker() {
        let out = make_config_from_v1_config(
            br#"{"docker_version":"1.8.2","unknown":1,"author":"","os":"linux","parent":"p"}"#,
            &RootFs::new(),
            &[History::default()],
        )
        .unwrap();
        let s = String::from_utf8(out).unwrap();
        assert!(s.starts_with(r#"{"container_config":{"Hostname":"#), "{s}");
        assert!(s.ends_with(r#""created":null,"docker_version":"1.8.2","history":[{}],"os":"linux","rootfs":{"type":"layers"}}"#), "{s}");
        assert!(!s.contains("unknown"));
        assert!(make_config_from_v1_config(br#"{"Size":"x"}"#, &RootFs::new(), &[]).is_err());
        assert!(make_config_from_v1_config(b"", &RootFs::new(), &[]).is_err());
    }

    #[test]
    fn history_from_v1() {
        let h = history_from_config(
            br#"{"author":"a","comment":"c","created":"2015-01-01T00:00:00Z","container_config":{"Cmd":["/bin/sh","-c","x"]}}"#,
            true,
        )
        .unwrap();
        assert_eq!(h.author, "a");
        assert_eq!(h.comment, "c");
        assert_eq!(h.created_by, "/bin/sh -c x");
        assert!(h.empty_layer);
        assert_eq!(h.created.unwrap().unix_secs(), 1_420_070_400);
        assert!(history_from_config(br#"{"created":"x"}"#, false).is_err());
        assert!(history_from_config(br#"{"Size":"x"}"#, false).is_err());
    }

    #[test]
    fn create_id_depends_on_everything() {
        let layer = ChainId::from(DiffId::try_from(Digest::sha256(b"a")).unwrap());
        let c = ImageConfig {
            v1_id: "ignored".into(),
            ..Default::default()
        };
        let base = create_id(&c, &layer, None);
        assert_eq!(base, create_id(&ImageConfig::default(), &layer, None));
        let parent = Digest::sha256(b"p");
        assert_ne!(base, create_id(&c, &layer, Some(&parent)));
        let other_layer = ChainId::from(DiffId::try_from(Digest::sha256(b"b")).unwrap());
        assert_ne!(base, create_id(&c, &other_layer, None));
        let c2 = ImageConfig {
            comment: "x".into(),
            ..Default::default()
        };
        assert_ne!(base, create_id(&c2, &layer, None));
    }

    #[test]
    fn v1_ids() {
        assert!(validate_id(&"0123456789abcdef".repeat(4)).is_ok());
        assert!(validate_id(&"0123456789ABCDEF".repeat(4)).is_err());
        assert!(validate_id(&"a".repeat(63)).is_err());
        assert!(validate_id(&"a".repeat(65)).is_err());
        assert!(validate_id("").is_err());
        match validate_id(&format!("{}/", "a".repeat(63))) {
            Err(ConfigError::InvalidField { field, reason }) => {
                assert_eq!(field, "id");
                assert!(reason.contains("character 63"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }
}
