//! Platform matching for the builder cache: Docker's `comparePlatform`, which
//! is containerd's `platforms.Only(builder).Match(image)` plus a Windows rule.

use std::borrow::Cow;

use crate::model::{ImageConfig, Platform};

impl ImageConfig {
    /// The platform the image declares: `os`, `architecture`, `variant`,
    /// `os.version` and `os.features`, as written (Docker's
    /// `Image.Platform()`).
    pub fn platform(&self) -> Platform {
        Platform {
            os: self.os.clone(),
            architecture: self.architecture.clone(),
            variant: self.variant.clone(),
            os_version: self.os_version.clone(),
            os_features: self.os_features.clone(),
        }
    }

    /// The image's operating system: `os`, or `linux` when it is empty
    /// (Docker substitutes the host's OS, and Linux is the only host OS this
    /// project models).
    pub fn operating_system(&self) -> &str {
        if self.os.is_empty() {
            "linux"
        } else {
            &self.os
        }
    }
}

impl Platform {
    /// The platform this process runs on, in Go's naming (`linux/amd64`,
    /// `linux/arm64`, …): what Docker picks from a multi-platform image by
    /// default.
    ///
    /// ```
    /// let host = imagecache_core::Platform::host();
    /// assert!(!host.architecture.is_empty());
    /// ```
    pub fn host() -> Self {
        Self {
            os: std::env::consts::OS.to_owned(),
            architecture: host_architecture().to_owned(),
            ..Self::default()
        }
    }
}

/// The host's CPU architecture in Go's `GOARCH` naming (`amd64`, `arm64`, …),
/// which is what Docker records for images built without a base.
pub(crate) fn host_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "x86" => "386",
        "aarch64" => "arm64",
        "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
        "powerpc64" => "ppc64",
        "powerpc" => "ppc",
        "loongarch64" => "loong64",
        other => other,
    }
}

/// Whether a cached image built for `image` may serve a build for `builder`
/// (Docker's `comparePlatform`).
///
/// The match is containerd's `platforms.Only(builder).Match(image)` on
/// normalised platforms: OS lower-cased (empty means `linux`, `macos` means
/// `darwin`), architecture aliases resolved (`x86_64`, `aarch64`, `armhf`,
/// `armel`, `i386`, …), default variants applied (`arm` is `v7`; `v8` for
/// `arm64` and `v1` for `amd64` are implied). The builder also accepts what
/// its CPU can run: `amd64/vN` accepts `amd64/v1..vN` and `386`; `arm/vN`
/// accepts `arm/v5..vN`; `arm64/v8.x` accepts `arm64/v8.0..v8.x`, and
/// `arm64/v9.x` also `v9.0..v9.x` and `v8.0..v8.(x+5)`; every `arm64`
/// accepts `arm` v8 and below. An image variant above the builder's never
/// matches. The image's `os.features` must be a subset of the builder's.
///
/// For Windows (builder OS `windows`), Docker first rewrites the image's
/// `os.version` to the image's major and minor followed by the builder's
/// build and revision when both versions have at least three dot-separated
/// parts, so only major and minor count; the versions must then be
/// compatible per containerd's Windows rule (same major and minor; the same
/// build below Windows Server 2022, else a build from 20348 up to the
/// builder's).
///
/// ```
/// use imagecache_core::{Platform, compare_platform};
/// let p = |arch: &str, variant: &str| Platform {
///     os: "linux".into(), architecture: arch.into(), variant: variant.into(), ..Default::default()
/// };
/// assert!(compare_platform(&p("arm", "v8"), &p("arm", "v7")));
/// assert!(!compare_platform(&p("arm", "v7"), &p("arm", "v8")));
/// assert!(compare_platform(&p("x86_64", ""), &p("386", "")));
/// ```
pub fn compare_platform(builder: &Platform, image: &Platform) -> bool {
    let image_os_version: Cow<'_, str> = windows_os_version(builder, image);

    let builder_os = normalize_os(&builder.os);
    let (builder_arch, builder_variant) = normalize_arch(&builder.architecture, &builder.variant);
    let image_os = normalize_os(&image.os);
    let (image_arch, image_variant) = normalize_arch(&image.architecture, &image.variant);

    // Every matcher in containerd's vector shares the builder's OS, OS
    // version and OS features, so those checks are done once.
    if builder_os != image_os {
        return false;
    }
    if builder_os == "windows" {
        let host = WindowsVersion::parse(&builder.os_version);
        if !host.is_empty()
            && !image_os_version.is_empty()
            && !host.accepts(&WindowsVersion::parse(&image_os_version))
        {
            return false;
        }
    }
    if !features_subset(&image.os_features, &builder.os_features) {
        return false;
    }
    platform_vector(&builder_arch, &builder_variant)
        .into_iter()
        .any(|(arch, variant)| {
            let (arch, variant) = normalize_arch(&arch, &variant);
            arch == image_arch && variant == image_variant
        })
}

/// Docker's Windows rule: the image's version with the builder's build and
/// revision (moby#47307).
fn windows_os_version<'a>(builder: &Platform, image: &'a Platform) -> Cow<'a, str> {
    if builder.os != "windows" || image.os != builder.os {
        return Cow::Borrowed(&image.os_version);
    }
    let mut builder_parts: Vec<&str> = builder.os_version.split('.').collect();
    let image_parts: Vec<&str> = image.os_version.split('.').collect();
    if builder_parts.len() < 3 || image_parts.len() < 3 {
        return Cow::Borrowed(&image.os_version);
    }
    builder_parts[0] = image_parts[0];
    builder_parts[1] = image_parts[1];
    Cow::Owned(builder_parts.join("."))
}

/// Whether every feature of `image` is among those of `builder` (containerd
/// sorts and deduplicates both lists before comparing).
fn features_subset(image: &[String], builder: &[String]) -> bool {
    image.iter().all(|f| builder.contains(f))
}

fn normalize_os(os: &str) -> Cow<'_, str> {
    if os.is_empty() {
        return Cow::Borrowed("linux");
    }
    let lower = if os.bytes().any(|b| b.is_ascii_uppercase()) || !os.is_ascii() {
        Cow::Owned(os.to_lowercase())
    } else {
        Cow::Borrowed(os)
    };
    if lower == "macos" {
        Cow::Borrowed("darwin")
    } else {
        lower
    }
}

/// containerd's `normalizeArch`: aliases and default variants.
fn normalize_arch(arch: &str, variant: &str) -> (String, String) {
    let arch = arch.to_lowercase();
    let variant = variant.to_lowercase();
    match arch.as_str() {
        "i386" => ("386".into(), String::new()),
        "x86_64" | "x86-64" | "amd64" => {
            let variant = if variant == "v1" {
                String::new()
            } else {
                variant
            };
            ("amd64".into(), variant)
        }
        "aarch64" | "arm64" => {
            let variant = if variant == "8" || variant == "v8" {
                String::new()
            } else {
                variant
            };
            ("arm64".into(), variant)
        }
        "armhf" => ("arm".into(), "v7".into()),
        "armel" => ("arm".into(), "v6".into()),
        "arm" => {
            let variant = match variant.as_str() {
                "" | "7" => "v7".into(),
                "5" | "6" | "8" => format!("v{variant}"),
                _ => variant,
            };
            ("arm".into(), variant)
        }
        _ => (arch, variant),
    }
}

/// Go's `strconv.Atoi`: an optional sign and decimal digits that fit in 64
/// bits.
fn go_atoi(s: &str) -> Option<i64> {
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse::<i64>().ok()
}

/// containerd's `platformVector` for a normalised architecture and variant:
/// the builder itself, then every (architecture, variant) it can also run,
/// best first.
fn platform_vector(arch: &str, variant: &str) -> Vec<(String, String)> {
    let mut vector = vec![(arch.to_owned(), variant.to_owned())];
    match arch {
        "amd64" => {
            if let Some(v) = go_atoi(variant.strip_prefix('v').unwrap_or(variant)) {
                for lower in (1..v).rev() {
                    vector.push(("amd64".into(), format!("v{lower}")));
                }
            }
            vector.push(("386".into(), String::new()));
        }
        "arm" => {
            if let Some(v) = go_atoi(variant.strip_prefix('v').unwrap_or(variant)) {
                for lower in (5..v).rev() {
                    vector.push(("arm".into(), format!("v{lower}")));
                }
            }
        }
        "arm64" => {
            let mut variant = if variant.is_empty() { "v8" } else { variant };
            let (major, minor, has_minor) = match variant.split_once('.') {
                Some((major, minor)) => (major, minor, true),
                None => (variant, "", false),
            };
            let major = go_atoi(major.strip_prefix('v').unwrap_or(major));
            if let Some(mut major) = major.filter(|&m| m >= 8) {
                // Only a single-digit minor (`v8.x`) is read, as containerd does.
                let mut minor = if variant.len() == 4 && has_minor {
                    go_atoi(minor).unwrap_or(0)
                } else {
                    0
                };
                let name = |major: i64, minor: i64| {
                    if minor == 0 {
                        format!("v{major}")
                    } else {
                        format!("v{major}.{minor}")
                    }
                };
                if major == 9 {
                    for m in (0..minor).rev() {
                        vector.push(("arm64".into(), name(9, m)));
                    }
                    // v9.0 diverged from v8.5: v9.x runs v8.(x+5) code.
                    minor += 5;
                    major = 8;
                    vector.push(("arm64".into(), format!("v8.{minor}")));
                }
                for m in (0..minor).rev() {
                    vector.push(("arm64".into(), name(major, m)));
                }
            }
            if variant.starts_with("v8.") || variant.starts_with("v9.") {
                variant = "v8";
            }
            vector.extend(platform_vector("arm", variant));
        }
        _ => {}
    }
    vector
}

/// A Windows version as containerd reads it: `major.minor.build`, any parse
/// failure giving all zeros.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct WindowsVersion {
    major: u8,
    minor: u8,
    build: u16,
}

/// Windows Server 2022 (ltsc2022): from this build on, hosts run containers
/// of older builds down to this one.
const WS2022_BUILD: u16 = 20348;

impl WindowsVersion {
    fn parse(s: &str) -> Self {
        let mut parts = s.splitn(4, '.');
        if s.matches('.').count() < 2 {
            return Self::default();
        }
        let (Some(major), Some(minor), Some(build)) = (parts.next(), parts.next(), parts.next())
        else {
            return Self::default();
        };
        let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
        if !digits(major) || !digits(minor) || !digits(build) {
            return Self::default();
        }
        match (major.parse(), minor.parse(), build.parse()) {
            (Ok(major), Ok(minor), Ok(build)) => Self {
                major,
                minor,
                build,
            },
            _ => Self::default(),
        }
    }

    fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Whether a host of this version runs a container of version `ctr`.
    fn accepts(&self, ctr: &Self) -> bool {
        if self.major != ctr.major || self.minor != ctr.minor {
            return false;
        }
        if self.build < WS2022_BUILD {
            return self.build == ctr.build;
        }
        ctr.build >= WS2022_BUILD && ctr.build <= self.build
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(os: &str, arch: &str, variant: &str) -> Platform {
        Platform {
            os: os.into(),
            architecture: arch.into(),
            variant: variant.into(),
            ..Default::default()
        }
    }

    fn win(arch: &str, version: &str) -> Platform {
        Platform {
            os_version: version.into(),
            ..p("windows", arch, "")
        }
    }

    fn vector(arch: &str, variant: &str) -> Vec<String> {
        let (a, v) = normalize_arch(arch, variant);
        platform_vector(&a, &v)
            .into_iter()
            .map(|(a, v)| if v.is_empty() { a } else { format!("{a}/{v}") })
            .collect()
    }

    #[test]
    fn vectors_match_containerd() {
        assert_eq!(vector("amd64", ""), ["amd64", "386"]);
        assert_eq!(
            vector("amd64", "v3"),
            ["amd64/v3", "amd64/v2", "amd64/v1", "386"]
        );
        assert_eq!(vector("arm", ""), ["arm/v7", "arm/v6", "arm/v5"]);
        assert_eq!(vector("arm", "v5"), ["arm/v5"]);
        assert_eq!(
            vector("arm64", ""),
            ["arm64", "arm/v8", "arm/v7", "arm/v6", "arm/v5"]
        );
        assert_eq!(
            vector("arm64", "v8.2"),
            [
                "arm64/v8.2",
                "arm64/v8.1",
                "arm64/v8",
                "arm/v8",
                "arm/v7",
                "arm/v6",
                "arm/v5"
            ]
        );
        assert_eq!(
            vector("arm64", "v9.1"),
            [
                "arm64/v9.1",
                "arm64/v9",
                "arm64/v8.6",
                "arm64/v8.5",
                "arm64/v8.4",
                "arm64/v8.3",
                "arm64/v8.2",
                "arm64/v8.1",
                "arm64/v8",
                "arm/v8",
                "arm/v7",
                "arm/v6",
                "arm/v5"
            ]
        );
        assert_eq!(vector("s390x", ""), ["s390x"]);
    }

    #[test]
    fn normalisation() {
        assert!(compare_platform(
            &p("Linux", "x86_64", ""),
            &p("linux", "amd64", "v1")
        ));
        assert!(compare_platform(
            &p("", "amd64", ""),
            &p("linux", "amd64", "")
        ));
        assert!(compare_platform(
            &p("linux", "aarch64", "8"),
            &p("linux", "arm64", "v8")
        ));
        assert!(compare_platform(
            &p("linux", "armhf", ""),
            &p("linux", "arm", "")
        ));
        assert!(compare_platform(
            &p("linux", "arm", "7"),
            &p("linux", "armel", "")
        ));
        assert!(compare_platform(
            &p("macos", "arm64", ""),
            &p("darwin", "arm64", "")
        ));
        assert!(!compare_platform(
            &p("linux", "amd64", ""),
            &p("windows", "amd64", "")
        ));
    }

    #[test]
    fn compatibility_rules() {
        let linux = |a: &str, v: &str| p("linux", a, v);
        assert!(compare_platform(&linux("amd64", ""), &linux("386", "")));
        assert!(!compare_platform(&linux("386", ""), &linux("amd64", "")));
        assert!(compare_platform(
            &linux("amd64", "v3"),
            &linux("amd64", "v2")
        ));
        assert!(!compare_platform(
            &linux("amd64", "v2"),
            &linux("amd64", "v3")
        ));
        assert!(compare_platform(&linux("arm", "v8"), &linux("arm", "v7")));
        assert!(!compare_platform(&linux("arm", "v7"), &linux("arm", "v8")));
        assert!(compare_platform(&linux("arm64", ""), &linux("arm", "v6")));
        assert!(!compare_platform(&linux("arm", "v8"), &linux("arm64", "")));
        assert!(compare_platform(
            &linux("arm64", "v9.1"),
            &linux("arm64", "v8.6")
        ));
        assert!(!compare_platform(
            &linux("arm64", "v9.1"),
            &linux("arm64", "v8.7")
        ));
        assert!(!compare_platform(
            &linux("arm64", "v8"),
            &linux("arm64", "v8.1")
        ));
        assert!(!compare_platform(&linux("amd64", ""), &linux("arm64", "")));
    }

    #[test]
    fn os_features_must_be_a_subset() {
        let mut builder = p("windows", "amd64", "");
        let mut image = builder.clone();
        image.os_features = vec!["win32k".into()];
        assert!(!compare_platform(&builder, &image));
        builder.os_features = vec!["a".into(), "win32k".into()];
        assert!(compare_platform(&builder, &image));
    }

    #[test]
    fn windows_versions() {
        // The cases of moby's TestPlatformCompare.
        assert!(compare_platform(
            &win("amd64", "10.0.22621"),
            &win("amd64", "10.0.17763.5329")
        ));
        assert!(compare_platform(
            &win("amd64", "10.0.17763.1234"),
            &win("amd64", "10.0.17763.5329")
        ));
        assert!(!compare_platform(
            &win("amd64", "11.0.17763.5329"),
            &win("amd64", "10.0.17763.5329")
        ));
        assert!(!compare_platform(
            &win("amd64", "10.0.17763.5329"),
            &win("amd64", "10.1.17763.5329")
        ));
        assert!(!compare_platform(
            &win("arm64", "10.0.17763.5329"),
            &win("amd64", "10.0.17763.5329")
        ));
        // Without Docker's rewrite (two-part versions), containerd's rule
        // applies as is: an unparsable image version never matches a parsed
        // host version, and an empty one always does.
        assert!(!compare_platform(
            &win("amd64", "10.0.17763"),
            &win("amd64", "10.0")
        ));
        assert!(compare_platform(
            &win("amd64", "10.0.17763"),
            &win("amd64", "")
        ));
        assert!(compare_platform(&win("amd64", ""), &win("amd64", "10.0.1")));
    }

    #[test]
    fn windows_version_rules() {
        let v = WindowsVersion::parse;
        assert_eq!(
            v("10.0.17763.5329"),
            WindowsVersion {
                major: 10,
                minor: 0,
                build: 17763
            }
        );
        assert!(v("10.0").is_empty());
        assert!(v("256.0.1").is_empty());
        assert!(v("10.0.x").is_empty());
        assert!(v("10.0.70000").is_empty());
        assert!(v("10.0.17763").accepts(&v("10.0.17763.1")));
        assert!(!v("10.0.17763").accepts(&v("10.0.17134")));
        assert!(v("10.0.22621").accepts(&v("10.0.20348")));
        assert!(!v("10.0.22621").accepts(&v("10.0.17763")));
        assert!(!v("10.0.20348").accepts(&v("10.0.22621")));
    }

    #[test]
    fn image_platform_and_os() {
        let c = ImageConfig {
            architecture: "arm".into(),
            variant: "v7".into(),
            os_version: "x".into(),
            ..Default::default()
        };
        let pl = c.platform();
        assert_eq!(
            (
                pl.os.as_str(),
                pl.architecture.as_str(),
                pl.variant.as_str()
            ),
            ("", "arm", "v7")
        );
        assert_eq!(c.operating_system(), "linux");
        let c = ImageConfig {
            os: "windows".into(),
            ..c
        };
        assert_eq!(c.operating_system(), "windows");
    }

    #[test]
    fn atoi_like_go() {
        assert_eq!(go_atoi("7"), Some(7));
        assert_eq!(go_atoi("+7"), Some(7));
        assert_eq!(go_atoi("-7"), Some(-7));
        assert_eq!(go_atoi(""), None);
        assert_eq!(go_atoi("7a"), None);
        assert_eq!(go_atoi("99999999999999999999"), None);
    }
}
