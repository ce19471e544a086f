//! `cache lookup`: ask the classic builder cache about one step.

use std::collections::BTreeMap;
use std::path::Path;

use imagecache_core::{ConfigError, ContainerConfig, ImageConfig, ImageId, Platform};
use imagecache_engine::{CacheFrom, IdResolver, ImageCache as _, LocalCache};
use serde::Serialize;
use tokio::io::AsyncReadExt as _;

use super::{Ctx, print_json, print_lines};
use crate::cli::{CacheCommand, LookupArgs};
use crate::error::{CliError, EXIT_NOT_FOUND, EXIT_OK, Result};

/// Largest probe config file read.
const MAX_PROBE: u64 = 1 << 20;

pub(super) async fn run(ctx: &Ctx, command: CacheCommand) -> Result<u8> {
    match command {
        CacheCommand::Lookup(args) => lookup(ctx, &args).await,
    }
}

/// Parses `os/arch[/variant]`.
fn parse_platform(text: &str) -> Result<Platform> {
    let parts: Vec<&str> = text.split('/').collect();
    let bad = |reason: &str| CliError::Usage {
        what: format!("platform {text:?}"),
        reason: reason.to_owned(),
    };
    if !(2..=3).contains(&parts.len()) || parts.iter().any(|p| p.trim().is_empty()) {
        return Err(bad("write OS/ARCH or OS/ARCH/VARIANT, e.g. linux/arm64/v8"));
    }
    Ok(Platform {
        os: parts[0].to_owned(),
        architecture: parts[1].to_owned(),
        variant: parts.get(2).map(|v| (*v).to_owned()).unwrap_or_default(),
        ..Platform::default()
    })
}

/// Splits `KEY=VALUE`.
fn key_value<'a>(flag: &str, text: &'a str) -> Result<(&'a str, &'a str)> {
    match text.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k, v)),
        _ => Err(CliError::Usage {
            what: format!("--{flag} {text:?}"),
            reason: "write KEY=VALUE".to_owned(),
        }),
    }
}

/// Parses a container config document (`{"Cmd": …, "Env": …}`) with the
/// same Go-lenient rules as image configs.
fn parse_container_config(path: &Path, bytes: &[u8]) -> Result<ContainerConfig> {
    let bad = |reason: String, source: Option<Box<dyn std::error::Error + Send + Sync>>| {
        CliError::BadFile {
            path: path.to_owned(),
            reason,
            source,
        }
    };
    // Strict JSON first, so that positions in errors are the file's own.
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| {
        bad(
            format!(
                "not a JSON container config (line {}, column {})",
                e.line(),
                e.column()
            ),
            Some(Box::new(e)),
        )
    })?;
    if !value.is_object() {
        return Err(bad(
            "a container config is a JSON object, e.g. {\"Cmd\": [\"/bin/sh\", \"-c\", \"make\"]}"
                .to_owned(),
            None,
        ));
    }
    // The image config parser reads `container_config` with Docker's rules
    // (case-insensitive keys, a bare string for Cmd, typed errors); the
    // document goes on its own line so that reported lines shift by one.
    let mut doc = Vec::with_capacity(bytes.len() + 64);
    doc.extend_from_slice(b"{\"rootfs\":{\"type\":\"layers\"},\"container_config\":\n");
    doc.extend_from_slice(bytes);
    doc.extend_from_slice(b"\n}");
    match ImageConfig::from_json(&doc) {
        Ok(config) => Ok(config.container_config),
        Err(ConfigError::Malformed {
            line,
            column,
            message,
        }) => Err(bad(
            format!(
                "invalid container config at line {} column {column}: {message}",
                line.saturating_sub(1)
            ),
            None,
        )),
        Err(e) => Err(bad(
            "invalid container config".to_owned(),
            Some(Box::new(e)),
        )),
    }
}

/// The probe the flags describe.
fn probe_from_flags(args: &LookupArgs) -> Result<ContainerConfig> {
    let mut config = ContainerConfig::default();
    if !args.cmd.is_empty() {
        config.cmd = Some(args.cmd.clone());
    }
    if !args.entrypoint.is_empty() {
        config.entrypoint = Some(args.entrypoint.clone());
    }
    if !args.env.is_empty() {
        for e in &args.env {
            key_value("env", e)?;
        }
        config.env = Some(args.env.clone());
    }
    if !args.label.is_empty() {
        let mut labels = BTreeMap::new();
        for l in &args.label {
            let (k, v) = key_value("label", l)?;
            labels.insert(k.to_owned(), v.to_owned());
        }
        config.labels = Some(labels);
    }
    if let Some(w) = &args.workdir {
        config.working_dir = w.clone();
    }
    if let Some(u) = &args.user {
        config.user = u.clone();
    }
    for port in &args.expose {
        config.exposed_ports.insert(exposed_port(port)?);
    }
    Ok(config)
}

/// A port as Docker's `EXPOSE` takes it: `PORT[/PROTO]` or
/// `START-END[/PROTO]`, ports 1–65535, protocol tcp (the default), udp or
/// sctp; the key it has in a config's `ExposedPorts`.
fn exposed_port(text: &str) -> Result<String> {
    let bad = |reason: &str| CliError::Usage {
        what: format!("--expose {text:?}"),
        reason: reason.to_owned(),
    };
    let (ports, proto) = text.split_once('/').unwrap_or((text, "tcp"));
    let proto = proto.to_ascii_lowercase();
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(bad("the protocol is tcp, udp or sctp"));
    }
    let port = |p: &str| p.parse::<u16>().ok().filter(|p| *p > 0);
    let valid = match ports.split_once('-') {
        Some((start, end)) => matches!((port(start), port(end)), (Some(a), Some(b)) if a <= b),
        None => port(ports).is_some(),
    };
    if !valid {
        return Err(bad(
            "write PORT[/PROTO] or START-END[/PROTO], ports 1-65535",
        ));
    }
    Ok(format!("{ports}/{proto}"))
}

/// The answer of a lookup.
#[derive(Debug, Serialize)]
struct Answer {
    hit: bool,
    id: Option<ImageId>,
    parent: Option<ImageId>,
    platform: String,
    /// `--cache-from` references that could not be used, with why.
    skipped: Vec<Skipped>,
}

#[derive(Debug, Serialize)]
struct Skipped {
    reference: String,
    reason: String,
}

async fn lookup(ctx: &Ctx, args: &LookupArgs) -> Result<u8> {
    let platform = parse_platform(&args.platform)?;
    let probe = match &args.config {
        Some(path) => {
            let mut bytes = Vec::new();
            let read = match tokio::fs::File::open(path).await {
                Ok(file) => file.take(MAX_PROBE + 1).read_to_end(&mut bytes).await,
                Err(e) => Err(e),
            };
            read.map_err(|source| CliError::Io {
                path: path.clone(),
                action: "reading the probe config",
                source,
            })?;
            if bytes.len() as u64 > MAX_PROBE {
                return Err(CliError::BadFile {
                    path: path.clone(),
                    reason: format!("over the limit of {MAX_PROBE} bytes for a container config"),
                    source: None,
                });
            }
            parse_container_config(path, &bytes)?
        }
        None => probe_from_flags(args)?,
    };
    let store = ctx.store().await?;
    let parent = match &args.parent {
        Some(term) => Some(store.resolve(term)?),
        None => None,
    };
    let (hit, skipped) = if args.cache_from.is_empty() {
        let cache = LocalCache::new(store.clone());
        (
            cache
                .lookup(parent.as_ref(), Some(&probe), &platform)
                .await?,
            Vec::new(),
        )
    } else {
        let cache = CacheFrom::new(store.clone(), &args.cache_from, &IdResolver).await?;
        let skipped = cache
            .skipped()
            .iter()
            .map(|(reference, reason)| Skipped {
                reference: reference.clone(),
                reason: reason.clone(),
            })
            .collect();
        (
            cache
                .get_cache(parent.as_ref(), Some(&probe), &platform)
                .await?,
            skipped,
        )
    };
    let answer = Answer {
        hit: hit.is_some(),
        id: hit,
        parent,
        platform: args.platform.clone(),
        skipped,
    };
    if ctx.json() {
        print_json(&answer)?;
    } else {
        for s in &answer.skipped {
            eprintln!(
                "warning: --cache-from {} skipped: {}",
                s.reference, s.reason
            );
        }
        match &answer.id {
            Some(id) => print_lines([id.to_string()])?,
            None => eprintln!("cache miss"),
        }
    }
    Ok(if answer.hit { EXIT_OK } else { EXIT_NOT_FOUND })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms_parse() {
        let p = parse_platform("linux/arm64/v8").unwrap();
        assert_eq!(
            (p.os.as_str(), p.architecture.as_str(), p.variant.as_str()),
            ("linux", "arm64", "v8")
        );
        assert!(parse_platform("linux").is_err());
        assert!(parse_platform("linux//v7").is_err());
        assert!(parse_platform("a/b/c/d").is_err());
    }

    #[test]
    fn container_configs_parse_leniently_and_refuse_garbage() {
        let c = parse_container_config(
            Path::new("p.json"),
            br#"{"cmd": "echo hi", "Env": ["A=1"]}"#,
        )
        .unwrap();
        assert_eq!(c.cmd, Some(vec!["echo hi".to_owned()]));
        assert_eq!(c.env, Some(vec!["A=1".to_owned()]));
        assert!(parse_container_config(Path::new("p.json"), b"{\"Cmd\": [").is_err());
        assert!(parse_container_config(Path::new("p.json"), b"[1]").is_err());
        let e = parse_container_config(Path::new("p.json"), b"{\n\"Cmd\": 5}").unwrap_err();
        assert!(e.to_string().contains("line 2"), "{e}");
    }
}
