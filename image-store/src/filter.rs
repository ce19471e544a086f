//! Listing images with `docker images --filter` semantics.

use std::collections::BTreeMap;

use imagecache_core::{ImageId, Reference};

use crate::{Error, ImageInfo, Result, Store};

/// One filter of [`Store::list`], as `docker images --filter` takes them.
///
/// Filters of the same kind are alternatives (an image passes if any
/// matches); filters of different kinds must all pass.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ImageFilter {
    /// `dangling=true`: images without a name; `dangling=false`: with one.
    Dangling(bool),
    /// `before=IMAGE`: created before that image.
    Before(ImageId),
    /// `since=IMAGE`: created after that image.
    Since(ImageId),
    /// `reference=PATTERN`: a name matches the shell pattern (`*`, `?`,
    /// `[…]`, which do not cross a `/`), in full (`busybox:latest`) or
    /// without its tag (`busybox`).
    Reference(String),
    /// `label=KEY` or `label=KEY=VALUE`.
    Label {
        /// The label's key.
        key: String,
        /// The value it must have, if given.
        value: Option<String>,
    },
}

impl ImageFilter {
    fn kind(&self) -> u8 {
        match self {
            Self::Dangling(_) => 0,
            Self::Before(_) => 1,
            Self::Since(_) => 2,
            Self::Reference(_) => 3,
            Self::Label { .. } => 4,
        }
    }
}

impl Store {
    /// Reads a filter: `dangling=true|false`, `before=IMAGE`, `since=IMAGE`
    /// (an ID, unique prefix or name in this store), `reference=PATTERN`,
    /// `label=KEY[=VALUE]`.
    ///
    /// # Errors
    /// [`Error::InvalidFilter`] naming what is wrong; the errors of
    /// [`Store::resolve`] for `before` and `since`.
    pub fn parse_filter(&self, text: &str) -> Result<ImageFilter> {
        let invalid = |reason: &str| Error::InvalidFilter {
            filter: text.chars().take(200).collect(),
            reason: reason.to_owned(),
        };
        let Some((key, value)) = text.split_once('=') else {
            return Err(invalid("a filter is KEY=VALUE"));
        };
        match key {
            "dangling" => match value {
                "true" | "1" => Ok(ImageFilter::Dangling(true)),
                "false" | "0" => Ok(ImageFilter::Dangling(false)),
                _ => Err(invalid("dangling is true or false")),
            },
            "before" => Ok(ImageFilter::Before(self.resolve(value)?)),
            "since" => Ok(ImageFilter::Since(self.resolve(value)?)),
            "reference" if !value.is_empty() => Ok(ImageFilter::Reference(value.to_owned())),
            "label" if !value.is_empty() => {
                let (key, value) = match value.split_once('=') {
                    Some((k, v)) => (k.to_owned(), Some(v.to_owned())),
                    None => (value.to_owned(), None),
                };
                Ok(ImageFilter::Label { key, value })
            }
            "reference" | "label" => Err(invalid("the filter needs a value")),
            _ => Err(invalid(
                "filters are dangling, before, since, reference and label",
            )),
        }
    }

    /// The images `docker images` lists: heads (images without children),
    /// or every image with `all`, that pass `filters`, newest first (ties
    /// by ID). Reads configs only for `label` filters.
    ///
    /// # Errors
    /// Backend failures reading a config for a `label` filter.
    pub async fn list(&self, all: bool, filters: &[ImageFilter]) -> Result<Vec<ImageInfo>> {
        let ids = if all { self.ids() } else { self.heads() };
        let mut groups: BTreeMap<u8, Vec<&ImageFilter>> = BTreeMap::new();
        for f in filters {
            groups.entry(f.kind()).or_default().push(f);
        }
        let mut out = Vec::new();
        for id in ids {
            let Some(info) = self.info(&id) else {
                continue;
            };
            let mut pass = true;
            for group in groups.values() {
                let mut any = false;
                for f in group {
                    if self.passes(&info, f).await? {
                        any = true;
                        break;
                    }
                }
                if !any {
                    pass = false;
                    break;
                }
            }
            if pass {
                out.push(info);
            }
        }
        out.sort_by(|a, b| {
            let time = |i: &ImageInfo| i.created.map_or(i128::MIN, |t| t.unix_nanos());
            time(b).cmp(&time(a)).then_with(|| a.id.cmp(&b.id))
        });
        Ok(out)
    }

    async fn passes(&self, info: &ImageInfo, filter: &ImageFilter) -> Result<bool> {
        let created = |id: &ImageId| self.info(id).and_then(|i| i.created);
        let time = info.created.map(|t| t.unix_nanos());
        Ok(match filter {
            ImageFilter::Dangling(want) => self.names_of(&info.id).is_empty() == *want,
            ImageFilter::Before(other) => match (time, created(other)) {
                (Some(t), Some(o)) => t < o.unix_nanos(),
                _ => false,
            },
            ImageFilter::Since(other) => match (time, created(other)) {
                (Some(t), Some(o)) => t > o.unix_nanos(),
                _ => false,
            },
            ImageFilter::Reference(pattern) => self
                .names_of(&info.id)
                .iter()
                .any(|name| reference_matches(pattern, name)),
            ImageFilter::Label { key, value } => {
                let image = match self.get(&info.id).await {
                    Ok(image) => image,
                    Err(Error::NotFound { .. } | Error::Corrupt { .. }) => return Ok(false),
                    Err(e) => return Err(e),
                };
                image
                    .config
                    .as_ref()
                    .and_then(|c| c.labels.as_ref())
                    .and_then(|l| l.get(key))
                    .is_some_and(|v| value.as_ref().is_none_or(|want| want == v))
            }
        })
    }
}

/// Whether `pattern` matches a name in full or without its tag or digest,
/// in the familiar form (`busybox:latest`, `busybox`).
fn reference_matches(pattern: &str, name: &Reference) -> bool {
    let full = name.familiar();
    if glob(pattern.as_bytes(), full.as_bytes()) {
        return true;
    }
    let bare = full.split('@').next().unwrap_or(full);
    let bare = match (name.tag(), bare.rsplit_once(':')) {
        (Some(_), Some((repo, _))) => repo,
        _ => bare,
    };
    glob(pattern.as_bytes(), bare.as_bytes())
}

/// Shell-pattern matching as Go's `path.Match`: `*` any run and `?` any one
/// character except `/`, `[…]` a class (`^` negates, `a-z` ranges), `\\`
/// escapes. A malformed pattern matches nothing.
///
/// As Go does, the pattern is taken chunk by chunk (a run of stars and the
/// text up to the next one), each chunk placed at the first position that
/// lets the match go on, so time grows with the pattern's length times
/// the text's, and no pattern nests calls: many stars cannot exhaust the
/// stack or take exponential time.
fn glob(mut pattern: &[u8], mut text: &[u8]) -> bool {
    'chunks: while !pattern.is_empty() {
        let (star, chunk, rest) = scan_chunk(pattern);
        pattern = rest;
        if star && chunk.is_empty() {
            // Trailing stars match the rest, unless it crosses a '/'.
            return !text.contains(&b'/');
        }
        if let Some(after) = match_chunk(chunk, text)
            && (after.is_empty() || !pattern.is_empty())
        {
            text = after;
            continue;
        }
        if star {
            // Let the star take one more character, up to a '/'.
            let mut i = 0;
            while i < text.len() && text[i] != b'/' {
                if let Some(after) = match_chunk(chunk, &text[i + 1..])
                    && (after.is_empty() || !pattern.is_empty())
                {
                    text = after;
                    continue 'chunks;
                }
                i += 1;
            }
        }
        return false;
    }
    text.is_empty()
}

/// Splits `pattern` into whether it starts with stars, the chunk after
/// them up to the next star outside a class, and the rest.
fn scan_chunk(pattern: &[u8]) -> (bool, &[u8], &[u8]) {
    let start = pattern.iter().take_while(|&&b| b == b'*').count();
    let p = &pattern[start..];
    let (mut i, mut in_class) = (0, false);
    while i < p.len() {
        match p[i] {
            // The escaped character is part of the chunk, even a star.
            b'\\' => i += 1,
            b'[' => in_class = true,
            b']' => in_class = false,
            b'*' if !in_class => break,
            _ => {}
        }
        i += 1;
    }
    let end = i.min(p.len());
    (start > 0, &p[..end], &p[end..])
}

/// Matches a chunk without stars at the start of `text`; the rest of the
/// text, or `None` when it does not match or is malformed.
fn match_chunk<'t>(mut chunk: &[u8], mut text: &'t [u8]) -> Option<&'t [u8]> {
    while let Some((&p, rest)) = chunk.split_first() {
        let (&c, tail) = text.split_first()?;
        chunk = match p {
            b'?' if c != b'/' => rest,
            b'[' if c != b'/' => match class(rest, c)? {
                (true, after) => after,
                (false, _) => return None,
            },
            b'\\' => match rest.split_first() {
                Some((&e, after)) if e == c => after,
                _ => return None,
            },
            b'?' | b'[' => return None,
            _ if p == c => rest,
            _ => return None,
        };
        text = tail;
    }
    Some(text)
}

/// Matches `c` against the class that starts `pattern` (after its `[`);
/// returns whether it matched and the pattern after the closing `]`, or
/// `None` for a malformed class.
fn class(pattern: &[u8], c: u8) -> Option<(bool, &[u8])> {
    let (negate, mut p) = match pattern.split_first() {
        Some((b'^', rest)) => (true, rest),
        _ => (false, pattern),
    };
    let mut matched = false;
    let mut first = true;
    loop {
        let (&lo, rest) = p.split_first()?;
        if lo == b']' && !first {
            return Some((matched != negate, rest));
        }
        first = false;
        let (lo, rest) = if lo == b'\\' {
            let (&e, r) = rest.split_first()?;
            (e, r)
        } else {
            (lo, rest)
        };
        let (hi, rest) = match rest {
            [b'-', hi, r @ ..] if *hi != b']' => (*hi, r),
            _ => (lo, rest),
        };
        if lo <= c && c <= hi {
            matched = true;
        }
        p = rest;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_follows_path_match() {
        for (pattern, text, want) in [
            ("busybox", "busybox", true),
            ("busy*", "busybox", true),
            ("*", "library/busybox", false),
            ("*/*", "library/busybox", true),
            ("b?sybox", "busybox", true),
            ("b[a-v]sybox", "busybox", true),
            ("b[^u]sybox", "busybox", false),
            ("b[", "b[", false),
            ("a\\*", "a*", true),
            ("a\\*", "ab", false),
            ("*:1.*", "app:1.2", true),
            ("", "", true),
            ("*", "", true),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxbyyd", false),
            ("*x", "xxx", true),
            ("a*", "ab/c", false),
            ("[", "a", false),
            ("*[", "ab", false),
        ] {
            assert_eq!(
                glob(pattern.as_bytes(), text.as_bytes()),
                want,
                "{pattern} ~ {text}"
            );
        }
    }

    #[test]
    fn many_stars_neither_overflow_nor_take_exponential_time() {
        let text = format!("example/{}", "a".repeat(200));
        let stars = "*".repeat(200_000);
        assert!(!glob(stars.as_bytes(), text.as_bytes()));
        assert!(glob(format!("example/{stars}").as_bytes(), text.as_bytes()));
        let pattern = format!("example/{}b", "*a".repeat(30));
        assert!(!glob(pattern.as_bytes(), text.as_bytes()));
        let pattern = format!("example/{}*", "*a".repeat(30));
        assert!(glob(pattern.as_bytes(), text.as_bytes()));
    }

    #[test]
    fn references_match_with_or_without_tag() {
        let name: Reference = "ghcr.io/org/tool:v2".parse().unwrap();
        assert!(reference_matches("ghcr.io/org/tool", &name));
        assert!(reference_matches("ghcr.io/*/tool:v*", &name));
        assert!(!reference_matches("tool", &name));
        let hub: Reference = "busybox:latest".parse().unwrap();
        assert!(reference_matches("busy*", &hub));
        assert!(reference_matches("busybox:latest", &hub));
    }
}
