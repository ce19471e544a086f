//! Serialisation that reproduces Go's `encoding/json` byte for byte.
//!
//! Docker computes an image ID from the config bytes it writes, so a config
//! generated here (a cache-restored image, a v1-compatible config) only gets
//! Docker's ID if it is written exactly as Go writes it:
//!
//! * compact output, fields in Go struct order (or sorted, see
//!   [`ImageConfig::to_json_sorted`]), map keys sorted bytewise;
//! * `omitempty` fields left out when empty, nil lists and maps as `null`;
//! * strings escaped as Go ≥ 1.22 does: `"` and `\` with a backslash;
//!   `\n`, `\r`, `\t`, `\b`, `\f` by name; other control characters as
//!   `\u00XX` (lowercase hex); `<`, `>`, `&` as `\u003c`, `\u003e`,
//!   `\u0026`; U+2028 and U+2029 as `\u2028` and `\u2029`; everything else,
//!   including non-ASCII, as is. (Go before 1.22 wrote `\b` and `\f` as
//!   `\u0008` and `\u000c`.)
//! * times as RFC 3339 with nanoseconds, trailing zeros trimmed, `Z` for UTC.

use std::collections::{BTreeMap, BTreeSet};

use crate::model::{ContainerConfig, HealthConfig, History, ImageConfig, RootFs};

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Writes `s` as a JSON string, escaped as Go's encoder does with HTML
/// escaping on (its default).
pub(crate) fn write_str(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b < 0x80 {
            let escape: Option<&[u8]> = match b {
                b'"' => Some(b"\\\""),
                b'\\' => Some(b"\\\\"),
                b'\n' => Some(b"\\n"),
                b'\r' => Some(b"\\r"),
                b'\t' => Some(b"\\t"),
                0x08 => Some(b"\\b"),
                0x0c => Some(b"\\f"),
                b'<' | b'>' | b'&' | 0x00..=0x1f => None,
                _ => {
                    i += 1;
                    continue;
                }
            };
            out.extend_from_slice(&bytes[start..i]);
            match escape {
                Some(e) => out.extend_from_slice(e),
                None => out.extend_from_slice(&[
                    b'\\',
                    b'u',
                    b'0',
                    b'0',
                    HEX[usize::from(b >> 4)],
                    HEX[usize::from(b & 0xf)],
                ]),
            }
            i += 1;
            start = i;
            continue;
        }
        // U+2028 and U+2029 are E2 80 A8 and E2 80 A9 in UTF-8; they are
        // valid JSON but break JavaScript string literals, so Go escapes them.
        if b == 0xE2
            && bytes.get(i + 1) == Some(&0x80)
            && matches!(bytes.get(i + 2), Some(0xA8 | 0xA9))
        {
            out.extend_from_slice(&bytes[start..i]);
            out.extend_from_slice(b"\\u202");
            out.push(HEX[usize::from(bytes[i + 2] & 0xf)]);
            i += 3;
            start = i;
            continue;
        }
        i += 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

fn write_i64(out: &mut Vec<u8>, v: i64) {
    out.extend_from_slice(v.to_string().as_bytes());
}

fn write_bool(out: &mut Vec<u8>, v: bool) {
    out.extend_from_slice(if v { b"true" } else { b"false" });
}

/// A `[]string`: `null` when absent, `[...]` otherwise.
fn write_list(out: &mut Vec<u8>, list: Option<&[String]>) {
    let Some(list) = list else {
        out.extend_from_slice(b"null");
        return;
    };
    out.push(b'[');
    for (i, s) in list.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_str(out, s);
    }
    out.push(b']');
}

/// A `map[string]struct{}`: `{"k":{},...}` in key order.
fn write_set(out: &mut Vec<u8>, set: &BTreeSet<String>) {
    out.push(b'{');
    for (i, k) in set.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_str(out, k);
        out.extend_from_slice(b":{}");
    }
    out.push(b'}');
}

/// A `map[string]string` in key order. `BTreeMap` orders `String`s by their
/// UTF-8 bytes, which is the order Go sorts map keys in.
fn write_labels(out: &mut Vec<u8>, labels: &BTreeMap<String, String>) {
    out.push(b'{');
    for (i, (k, v)) in labels.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_str(out, k);
        out.push(b':');
        write_str(out, v);
    }
    out.push(b'}');
}

/// Writes the members of one JSON object, placing commas.
struct Obj<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
}

impl<'a> Obj<'a> {
    fn open(out: &'a mut Vec<u8>) -> Self {
        out.push(b'{');
        Self { out, first: true }
    }

    /// Starts a member; the caller writes its value into the returned buffer.
    /// `name` is a Go field's JSON name and needs no escaping.
    fn key(&mut self, name: &str) -> &mut Vec<u8> {
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        self.out.push(b'"');
        self.out.extend_from_slice(name.as_bytes());
        self.out.extend_from_slice(b"\":");
        self.out
    }

    fn str(&mut self, name: &str, v: &str) {
        write_str(self.key(name), v);
    }

    fn str_omitempty(&mut self, name: &str, v: &str) {
        if !v.is_empty() {
            self.str(name, v);
        }
    }

    fn bool(&mut self, name: &str, v: bool) {
        write_bool(self.key(name), v);
    }

    fn bool_omitempty(&mut self, name: &str, v: bool) {
        if v {
            self.bool(name, v);
        }
    }

    fn i64_omitempty(&mut self, name: &str, v: i64) {
        if v != 0 {
            write_i64(self.key(name), v);
        }
    }

    fn list(&mut self, name: &str, v: Option<&[String]>) {
        write_list(self.key(name), v);
    }

    fn list_omitempty(&mut self, name: &str, v: Option<&[String]>) {
        if let Some(v) = v.filter(|v| !v.is_empty()) {
            write_list(self.key(name), Some(v));
        }
    }

    fn close(self) {
        self.out.push(b'}');
    }
}

impl ContainerConfig {
    /// Serialises as Go marshals a `container.Config`: fields in Docker's
    /// struct order, `omitempty` fields (`ExposedPorts`, `Healthcheck`,
    /// `ArgsEscaped`, `NetworkDisabled`, `MacAddress`, `OnBuild`,
    /// `StopSignal`, `StopTimeout`, `Shell`) left out when empty, and absent
    /// lists and maps written as `null`.
    ///
    /// ```
    /// use imagecache_core::ContainerConfig;
    /// let json = ContainerConfig { cmd: Some(vec!["a && b".into()]), ..Default::default() }.to_json();
    /// assert!(String::from_utf8(json).unwrap().contains(r#""Cmd":["a \u0026\u0026 b"]"#));
    /// ```
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        self.write_json(&mut out);
        out
    }

    pub(crate) fn write_json(&self, out: &mut Vec<u8>) {
        let mut o = Obj::open(out);
        o.str("Hostname", &self.hostname);
        o.str("Domainname", &self.domainname);
        o.str("User", &self.user);
        o.bool("AttachStdin", self.attach_stdin);
        o.bool("AttachStdout", self.attach_stdout);
        o.bool("AttachStderr", self.attach_stderr);
        if !self.exposed_ports.is_empty() {
            write_set(o.key("ExposedPorts"), &self.exposed_ports);
        }
        o.bool("Tty", self.tty);
        o.bool("OpenStdin", self.open_stdin);
        o.bool("StdinOnce", self.stdin_once);
        o.list("Env", self.env.as_deref());
        o.list("Cmd", self.cmd.as_deref());
        if let Some(hc) = &self.healthcheck {
            hc.write_json(o.key("Healthcheck"));
        }
        o.bool_omitempty("ArgsEscaped", self.args_escaped);
        o.str("Image", &self.image);
        match &self.volumes {
            Some(v) => write_set(o.key("Volumes"), v),
            None => o.key("Volumes").extend_from_slice(b"null"),
        }
        o.str("WorkingDir", &self.working_dir);
        o.list("Entrypoint", self.entrypoint.as_deref());
        o.bool_omitempty("NetworkDisabled", self.network_disabled);
        o.str_omitempty("MacAddress", &self.mac_address);
        o.list_omitempty("OnBuild", self.on_build.as_deref());
        match &self.labels {
            Some(l) => write_labels(o.key("Labels"), l),
            None => o.key("Labels").extend_from_slice(b"null"),
        }
        o.str_omitempty("StopSignal", &self.stop_signal);
        if let Some(t) = self.stop_timeout {
            write_i64(o.key("StopTimeout"), t);
        }
        o.list_omitempty("Shell", self.shell.as_deref());
        o.close();
    }
}

impl HealthConfig {
    fn write_json(&self, out: &mut Vec<u8>) {
        let mut o = Obj::open(out);
        o.list_omitempty("Test", self.test.as_deref());
        o.i64_omitempty("Interval", self.interval);
        o.i64_omitempty("Timeout", self.timeout);
        o.i64_omitempty("StartPeriod", self.start_period);
        o.i64_omitempty("StartInterval", self.start_interval);
        o.i64_omitempty("Retries", self.retries);
        o.close();
    }
}

impl History {
    /// Writes one entry as Go marshals `ocispec.History` (every field
    /// `omitempty`).
    pub(crate) fn write_json(&self, out: &mut Vec<u8>) {
        let mut o = Obj::open(out);
        if let Some(t) = &self.created {
            write_str(o.key("created"), &t.to_rfc3339_nano());
        }
        o.str_omitempty("created_by", &self.created_by);
        o.str_omitempty("author", &self.author);
        o.str_omitempty("comment", &self.comment);
        o.bool_omitempty("empty_layer", self.empty_layer);
        o.close();
    }
}

/// A `[]History`; `null` when empty (Go's nil slice).
pub(crate) fn write_history_list(out: &mut Vec<u8>, history: &[History]) {
    if history.is_empty() {
        out.extend_from_slice(b"null");
        return;
    }
    out.push(b'[');
    for (i, h) in history.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        h.write_json(out);
    }
    out.push(b']');
}

impl RootFs {
    /// Writes the object as Go marshals Docker's `RootFS`.
    pub(crate) fn write_json(&self, out: &mut Vec<u8>) {
        let mut o = Obj::open(out);
        o.str("type", &self.fs_type);
        if !self.raw_diff_ids.is_empty() {
            write_list(o.key("diff_ids"), Some(&self.raw_diff_ids));
        }
        o.close();
    }
}

/// The top-level members of Docker's `Image`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Member {
    Id,
    Comment,
    Created,
    Container,
    ContainerConfig,
    DockerVersion,
    Author,
    Config,
    Architecture,
    Variant,
    Os,
    Size,
    Parent,
    RootFs,
    History,
    OsVersion,
    OsFeatures,
}

impl Member {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Id => "id",
            Self::Comment => "comment",
            Self::Created => "created",
            Self::Container => "container",
            Self::ContainerConfig => "container_config",
            Self::DockerVersion => "docker_version",
            Self::Author => "author",
            Self::Config => "config",
            Self::Architecture => "architecture",
            Self::Variant => "variant",
            Self::Os => "os",
            Self::Size => "Size",
            Self::Parent => "parent",
            Self::RootFs => "rootfs",
            Self::History => "history",
            Self::OsVersion => "os.version",
            Self::OsFeatures => "os.features",
        }
    }
}

/// Go's field order for a marshalled `Image` value: the embedded `V1Image`
/// fields (its `parent` is shadowed by `Image.Parent` and dropped), then
/// `Image`'s own.
pub(crate) const STRUCT_ORDER: [Member; 17] = [
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
    Member::Parent,
    Member::RootFs,
    Member::History,
    Member::OsVersion,
    Member::OsFeatures,
];

/// The same members sorted bytewise by name, as `(*Image).MarshalJSON`
/// writes them.
pub(crate) const SORTED_ORDER: [Member; 17] = [
    Member::Size,
    Member::Architecture,
    Member::Author,
    Member::Comment,
    Member::Config,
    Member::Container,
    Member::ContainerConfig,
    Member::Created,
    Member::DockerVersion,
    Member::History,
    Member::Id,
    Member::Os,
    Member::OsFeatures,
    Member::OsVersion,
    Member::Parent,
    Member::RootFs,
    Member::Variant,
];

impl ImageConfig {
    /// Serialises as Docker's `json.Marshal(&img)` (the `*Image` pointer
    /// path, through `Image.MarshalJSON`): top-level keys sorted bytewise,
    /// nested objects in struct order. The builder's commit and export write
    /// configs this way.
    ///
    /// ```
    /// use imagecache_core::ImageConfig;
    /// let c = ImageConfig { comment: "a".into(), author: "b".into(), architecture: "c".into(), ..Default::default() };
    /// let s = String::from_utf8(c.to_json_sorted()).unwrap();
    /// assert!(s.find("architecture") < s.find("author") && s.find("author") < s.find("comment"));
    /// ```
    pub fn to_json_sorted(&self) -> Vec<u8> {
        self.write_members(&SORTED_ORDER)
    }

    /// Serialises as Go's `json.Marshal(img)` on an `Image` *value*, which
    /// does not use `MarshalJSON`: the `V1Image` fields in struct order, then
    /// `parent`, `rootfs`, `history`, `os.version`, `os.features`. Docker's
    /// cache writes restored intermediate images this way.
    pub fn to_json_struct_order(&self) -> Vec<u8> {
        self.write_members(&STRUCT_ORDER)
    }

    fn write_members(&self, order: &[Member]) -> Vec<u8> {
        let mut out = Vec::with_capacity(1024);
        out.push(b'{');
        let mut first = true;
        for &m in order {
            let start = out.len();
            if !first {
                out.push(b',');
            }
            write_str(&mut out, m.name());
            out.push(b':');
            if self.write_member(&mut out, m) {
                first = false;
            } else {
                out.truncate(start);
            }
        }
        out.push(b'}');
        out
    }

    /// Writes the value of `member`; returns `false` when `omitempty` leaves
    /// it out (and nothing was written).
    pub(crate) fn write_member(&self, out: &mut Vec<u8>, member: Member) -> bool {
        let s = |out: &mut Vec<u8>, v: &str| {
            if v.is_empty() {
                return false;
            }
            write_str(out, v);
            true
        };
        match member {
            Member::Id => s(out, &self.v1_id),
            Member::Comment => s(out, &self.comment),
            Member::Created => {
                match &self.created {
                    Some(t) => write_str(out, &t.to_rfc3339_nano()),
                    None => out.extend_from_slice(b"null"),
                }
                true
            }
            Member::Container => s(out, &self.container),
            Member::ContainerConfig => {
                self.container_config.write_json(out);
                true
            }
            Member::DockerVersion => s(out, &self.docker_version),
            Member::Author => s(out, &self.author),
            Member::Config => match &self.config {
                Some(c) => {
                    c.write_json(out);
                    true
                }
                None => false,
            },
            Member::Architecture => s(out, &self.architecture),
            Member::Variant => s(out, &self.variant),
            Member::Os => s(out, &self.os),
            Member::Size => {
                if self.size == 0 {
                    return false;
                }
                write_i64(out, self.size);
                true
            }
            Member::Parent => s(out, &self.parent),
            Member::RootFs => {
                self.rootfs.write_json(out);
                true
            }
            Member::History => {
                if self.history.is_empty() {
                    return false;
                }
                write_history_list(out, &self.history);
                true
            }
            Member::OsVersion => s(out, &self.os_version),
            Member::OsFeatures => {
                if self.os_features.is_empty() {
                    return false;
                }
                write_list(out, Some(&self.os_features));
                true
            }
        }
    }
}

/// Re-emits a valid JSON value as Go re-marshals a `json.RawMessage`:
/// insignificant whitespace removed, and `<`, `>`, `&`, U+2028 and U+2029
/// escaped. Everything else (escapes, number spellings) is kept verbatim.
pub(crate) fn go_compact(out: &mut Vec<u8>, src: &[u8]) {
    let mut in_string = false;
    let mut escaped = false;
    let mut i = 0;
    while i < src.len() {
        let b = src[i];
        match b {
            b'<' | b'>' | b'&' => out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xf)],
            ]),
            0xE2 if src.get(i + 1) == Some(&0x80)
                && matches!(src.get(i + 2), Some(0xA8 | 0xA9)) =>
            {
                out.extend_from_slice(b"\\u202");
                out.push(HEX[usize::from(src[i + 2] & 0xf)]);
                i += 3;
                continue;
            }
            b' ' | b'\t' | b'\n' | b'\r' if !in_string => {}
            _ => out.push(b),
        }
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else if b == b'"' {
            in_string = true;
        }
        i += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::Timestamp;

    fn esc(s: &str) -> String {
        let mut out = Vec::new();
        write_str(&mut out, s);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn string_escaping_matches_go() {
        assert_eq!(esc("plain"), r#""plain""#);
        assert_eq!(esc("a<b>&c"), r#""a\u003cb\u003e\u0026c""#);
        assert_eq!(esc("q\"b\\"), r#""q\"b\\""#);
        assert_eq!(esc("\n\r\t"), r#""\n\r\t""#);
        // Go 1.22 and later name \b and \f.
        assert_eq!(esc("\u{8}\u{c}"), r#""\b\f""#);
        assert_eq!(esc("\u{0}\u{1f}\u{1}"), r#""\u0000\u001f\u0001""#);
        assert_eq!(esc("\u{7f}é日\u{1F600}"), "\"\u{7f}é日\u{1F600}\"");
        assert_eq!(esc("x\u{2028}y\u{2029}"), r#""x\u2028y\u2029""#);
        // A genuine U+FFFD is not an encoding error and is written as is.
        assert_eq!(esc("\u{FFFD}"), "\"\u{FFFD}\"");
        assert_eq!(esc(""), r#""""#);
    }

    #[test]
    fn sorted_order_is_sorted_and_complete() {
        let names: Vec<&str> = SORTED_ORDER.iter().map(|m| m.name()).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        assert_eq!(names, sorted);
        let mut a: Vec<&str> = STRUCT_ORDER.iter().map(|m| m.name()).collect();
        a.sort_unstable();
        assert_eq!(a, sorted);
    }

    #[test]
    fn empty_container_config() {
        let json = ContainerConfig::default().to_json();
        assert_eq!(
            String::from_utf8(json).unwrap(),
            r#"{"Hostname":"","Domainname":"","User":"","AttachStdin":false,"AttachStdout":false,"AttachStderr":false,"Tty":false,"OpenStdin":false,"StdinOnce":false,"Env":null,"Cmd":null,"Image":"","Volumes":null,"WorkingDir":"","Entrypoint":null,"Labels":null}"#
        );
    }

    #[test]
    fn omitempty_and_always_emitted_fields() {
        let cc = ContainerConfig {
            exposed_ports: ["80/tcp".to_owned()].into(),
            volumes: Some(BTreeSet::new()),
            labels: Some(BTreeMap::new()),
            env: Some(vec![]),
            on_build: Some(vec![]),
            shell: Some(vec![]),
            stop_timeout: Some(0),
            healthcheck: Some(HealthConfig::default()),
            ..Default::default()
        };
        let s = String::from_utf8(cc.to_json()).unwrap();
        assert!(s.contains(r#""ExposedPorts":{"80/tcp":{}}"#), "{s}");
        assert!(s.contains(r#""Volumes":{}"#), "{s}");
        assert!(s.contains(r#""Labels":{}"#), "{s}");
        assert!(s.contains(r#""Env":[]"#), "{s}");
        assert!(s.contains(r#""Healthcheck":{}"#), "{s}");
        assert!(s.contains(r#""StopTimeout":0"#), "{s}");
        assert!(!s.contains("OnBuild"), "{s}");
        assert!(!s.contains("Shell"), "{s}");
        assert!(!s.contains("MacAddress"), "{s}");
    }

    #[test]
    fn image_orders() {
        let c = ImageConfig {
            parent: "sha256:p".into(),
            size: 5,
            os: "linux".into(),
            created: Some(Timestamp::parse_rfc3339("2020-01-01T00:00:00.120Z").unwrap()),
            rootfs: RootFs::new(),
            ..Default::default()
        };
        let sorted = String::from_utf8(c.to_json_sorted()).unwrap();
        assert!(
            sorted.starts_with(r#"{"Size":5,"container_config":{"#),
            "{sorted}"
        );
        assert!(
            sorted.ends_with(
                r#""created":"2020-01-01T00:00:00.12Z","os":"linux","parent":"sha256:p","rootfs":{"type":"layers"}}"#
            ),
            "{sorted}"
        );
        let value = String::from_utf8(c.to_json_struct_order()).unwrap();
        assert!(value.starts_with(r#"{"created":"2020-01-01T00:00:00.12Z","container_config":{"#));
        assert!(
            value.ends_with(
                r#""os":"linux","Size":5,"parent":"sha256:p","rootfs":{"type":"layers"}}"#
            ),
            "{value}"
        );
        let empty = String::from_utf8(ImageConfig::default().to_json_sorted()).unwrap();
        assert!(empty.starts_with(r#"{"container_config":{"#), "{empty}");
        assert!(
            empty.ends_with(r#""created":null,"rootfs":{"type":""}}"#),
            "{empty}"
        );
    }

    #[test]
    fn compact_like_go() {
        let mut out = Vec::new();
        go_compact(
            &mut out,
            b" { \"a b\" : [ 1 , 2.50e1 ] , \"<\\\"&>\" : \"\\u0041 \xe2\x80\xa8\" } ",
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"a b":[1,2.50e1],"\u003c\"\u0026\u003e":"\u0041 \u2028"}"#
        );
    }
}
