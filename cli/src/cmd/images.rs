//! `import`, `ls`, `inspect`, `history`, `search`, `rm` and `parent`.

use std::sync::Arc;

use imagecache_core::{ChainId, DiffId, Image, ImageId, Platform, Timestamp};
use imagecache_engine::blob::BlobCache;
use imagecache_store::{ImageInfo, Store};
use serde::Serialize;
use serde_json::value::RawValue;

use super::{Ctx, print_json, print_lines, print_rows};
use crate::error::{CliError, EXIT_NOT_FOUND, EXIT_OK, Result, short};
use crate::units::{human_ago, human_size};

/// `os/architecture[/variant]`.
pub(super) fn platform_text(p: &Platform) -> String {
    let mut s = format!("{}/{}", p.os, p.architecture);
    if !p.variant.is_empty() {
        s.push('/');
        s.push_str(&p.variant);
    }
    if s == "/" { String::new() } else { s }
}

/// One image as `ls --format json` shows it.
#[derive(Debug, Serialize)]
struct Listed {
    id: ImageId,
    /// Its names, `repository:tag`.
    names: Vec<String>,
    created: Option<String>,
    platform: PlatformOut,
    layers: u32,
    /// Bytes of its layers the blob cache holds uncompressed.
    size: u64,
    parent: Option<ImageId>,
    children: Vec<ImageId>,
    built_locally: bool,
    last_updated: Option<String>,
    config_size: u64,
}

impl Listed {
    fn new(i: &ImageInfo, names: Vec<String>, size: u64) -> Self {
        Self {
            id: i.id,
            names,
            created: i.created.map(|t| t.to_string()),
            platform: PlatformOut::new(&i.platform),
            layers: i.layers,
            size,
            parent: i.parent,
            children: i.children.clone(),
            built_locally: i.built_locally,
            last_updated: i.last_updated.map(|t| t.to_string()),
            config_size: i.config_len,
        }
    }
}

/// One row of `ls` in a `--format` template: the fields of `docker images
/// --format`, and imagecache's own after them.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct LsRow {
    #[serde(rename = "ID")]
    id: String,
    repository: String,
    tag: String,
    digest: String,
    created_since: String,
    created_at: String,
    size: String,
    platform: String,
    layers: u32,
    parent: String,
    built_locally: bool,
}

/// What `ls --format table` shows: `docker images`' columns.
const LS_TABLE: &str = "{{.Repository}}\t{{.Tag}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}";

/// The column titles of `ls` for a template's fields.
fn ls_header(field: &str) -> String {
    match field {
        "ID" => "IMAGE ID".to_owned(),
        "CreatedSince" => "CREATED".to_owned(),
        other => crate::template::default_header(other),
    }
}

/// The flags of `ls`.
pub(super) struct LsOptions {
    pub(super) all: bool,
    pub(super) quiet: bool,
    pub(super) no_trunc: bool,
    pub(super) digests: bool,
    pub(super) filters: Vec<String>,
}

/// `ls` (alias `images`).
pub(super) async fn ls(ctx: &Ctx, options: &LsOptions) -> Result<u8> {
    let store = ctx.store().await?;
    let filters = options
        .filters
        .iter()
        .map(|f| store.parse_filter(f))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let infos = store.list(options.all, &filters).await?;
    let no_trunc = options.no_trunc;
    let id_text = |id: &ImageId| if no_trunc { id.to_string() } else { short(id) };
    if options.quiet {
        let mut seen = std::collections::HashSet::new();
        let ids = infos.iter().filter(|i| seen.insert(i.id));
        print_lines(ids.map(|i| id_text(&i.id)))?;
        return Ok(EXIT_OK);
    }
    let ids: Vec<ImageId> = infos.iter().map(|i| i.id).collect();
    let sizes = super::lifecycle::lifecycle(ctx)
        .await?
        .image_sizes(&ids)
        .await?;
    let size_of = |id: &ImageId| sizes.get(id).copied().unwrap_or(0);
    if ctx.json() {
        let listed: Vec<Listed> = infos
            .iter()
            .map(|i| {
                let names = store.names_of(&i.id);
                let names = names.iter().map(|n| n.familiar().to_owned()).collect();
                Listed::new(i, names, size_of(&i.id))
            })
            .collect();
        return print_json(&listed);
    }
    let now = Timestamp::now_utc();
    let mut rows = Vec::with_capacity(infos.len());
    for i in &infos {
        for (repository, tag, digest) in name_rows(&store.names_of(&i.id)) {
            rows.push(LsRow {
                id: id_text(&i.id),
                repository,
                tag,
                digest,
                created_since: human_ago(i.created.as_ref(), now),
                created_at: i.created.map(go_time).unwrap_or_default(),
                size: human_size(size_of(&i.id)),
                platform: platform_text(&i.platform),
                layers: i.layers,
                parent: i.parent.as_ref().map(&id_text).unwrap_or_default(),
                built_locally: i.built_locally,
            });
        }
    }
    let table = if options.digests {
        "{{.Repository}}\t{{.Tag}}\t{{.Digest}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}"
    } else {
        LS_TABLE
    };
    let human = format!("table {table}");
    print_rows(ctx, &rows, &human, LS_TABLE, ls_header)
}

/// A time as Go prints it, and so `docker images --format '{{.CreatedAt}}'`:
/// `2024-01-02 03:04:05 +0000 UTC`.
fn go_time(t: Timestamp) -> String {
    let text = t.to_utc().to_string();
    match (text.get(..10), text.get(11..19)) {
        (Some(date), Some(time)) => format!("{date} {time} +0000 UTC"),
        _ => text,
    }
}

/// The REPOSITORY, TAG and DIGEST cells of an image's rows: one per name,
/// as `docker images` shows them, and `<none>` for an image without one.
fn name_rows(names: &[imagecache_core::Reference]) -> Vec<(String, String, String)> {
    if names.is_empty() {
        return vec![("<none>".into(), "<none>".into(), "<none>".into())];
    }
    names
        .iter()
        .map(|n| {
            let familiar = n.familiar();
            let (repository, digest) = match familiar.split_once('@') {
                Some((repo, digest)) => (repo, digest.to_owned()),
                None => (familiar, "<none>".to_owned()),
            };
            let repository = match (n.tag(), repository.rsplit_once(':')) {
                (Some(_), Some((repo, _))) => repo.to_owned(),
                _ => repository.to_owned(),
            };
            (repository, n.tag().unwrap_or("<none>").to_owned(), digest)
        })
        .collect()
}

/// An image as `inspect --format json` shows it: the fields of `docker
/// image inspect`, and what imagecache knows besides under `Imagecache`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct Inspected {
    id: ImageId,
    repo_tags: Vec<String>,
    repo_digests: Vec<String>,
    /// The parent's ID, empty when there is none (as Docker prints it).
    parent: String,
    comment: String,
    /// RFC 3339, empty when the config has no time.
    created: String,
    docker_version: String,
    author: String,
    /// The config's `config` object as stored, `null` when absent.
    config: Box<RawValue>,
    architecture: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    variant: String,
    os: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    os_version: String,
    /// Bytes of the image's layers that the blob cache holds uncompressed.
    size: u64,
    #[serde(rename = "RootFS")]
    root_fs: RootFsOut,
    metadata: MetadataOut,
    imagecache: Extra,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct RootFsOut {
    r#type: String,
    layers: Vec<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct MetadataOut {
    /// When the image was last named; Go's zero time when never.
    last_tag_time: String,
}

/// What imagecache knows beyond Docker's fields.
#[derive(Debug, Serialize)]
struct Extra {
    children: Vec<ImageId>,
    built_locally: bool,
    last_updated: Option<String>,
    last_used: Option<String>,
    platform: PlatformOut,
    layers: u32,
    chain_id: Option<ChainId>,
    config_size: u64,
    /// The config exactly as stored (`inspect --raw` prints its bytes).
    config: Box<RawValue>,
}

/// A platform, as every JSON output shows one.
#[derive(Debug, Serialize)]
struct PlatformOut {
    os: String,
    architecture: String,
    variant: String,
    os_version: String,
    os_features: Vec<String>,
}

impl PlatformOut {
    fn new(p: &Platform) -> Self {
        Self {
            os: p.os.clone(),
            architecture: p.architecture.clone(),
            variant: p.variant.clone(),
            os_version: p.os_version.clone(),
            os_features: p.os_features.clone(),
        }
    }
}

/// The stored bytes as a JSON value, byte for byte when they are UTF-8
/// (Go accepts other bytes in strings; those are shown as a string).
fn raw_config(raw: &[u8]) -> Result<Box<RawValue>> {
    let text = String::from_utf8_lossy(raw).into_owned();
    RawValue::from_string(text.clone())
        .or_else(|_| serde_json::value::to_raw_value(&text))
        .map_err(|e| CliError::Output(std::io::Error::other(e)))
}

pub(super) async fn inspect(ctx: &Ctx, terms: &[String], raw: bool) -> Result<u8> {
    let store = ctx.store().await?;
    let mut found = Vec::new();
    let mut first_error: Option<CliError> = None;
    for term in terms {
        match look_up(&store, term).await {
            Ok(pair) => found.push(pair),
            Err(e) => {
                eprintln!("error: {}", e.one_line());
                first_error.get_or_insert(e);
            }
        }
    }
    if raw {
        // Exact bytes: for one image, the output hashes to its ID.
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        for (n, (image, _)) in found.iter().enumerate() {
            if n > 0 {
                out.write_all(b"\n").map_err(CliError::Output)?;
            }
            out.write_all(image.raw_json()).map_err(CliError::Output)?;
        }
        out.flush().map_err(CliError::Output)?;
    } else if ctx.json() || ctx.template().is_some() {
        let cache = ctx.blobs().await.ok();
        let images = inspected(&store, cache.as_ref(), &found).await?;
        print_rows(ctx, &images, "", "{{.Id}}", crate::template::default_header)?;
    } else {
        print_lines(inspect_lines(&found))?;
    }
    match first_error {
        Some(e) => Ok(e.exit_code()),
        None => Ok(EXIT_OK),
    }
}

/// The image a search term names, with what the store knows of it.
async fn look_up(store: &Store, term: &str) -> Result<(Arc<Image>, ImageInfo)> {
    let id = store.resolve(term)?;
    match (store.get(&id).await, store.info(&id)) {
        (Ok(image), Some(info)) => Ok((image, info)),
        (Err(e), _) => Err(CliError::from(e)),
        (Ok(_), None) => Err(CliError::NotFound {
            what: format!("No such image: {term}"),
        }),
    }
}

/// The config's `config` object (matched without regard to case, as Go
/// decodes it), or `null`.
fn runtime_config(raw: &[u8]) -> Result<Box<RawValue>> {
    let object: Option<serde_json::Map<String, serde_json::Value>> =
        serde_json::from_slice(raw).ok();
    let value = object
        .and_then(|o| {
            o.into_iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("config"))
                .map(|(_, v)| v)
        })
        .unwrap_or(serde_json::Value::Null);
    serde_json::value::to_raw_value(&value).map_err(|e| CliError::Output(std::io::Error::other(e)))
}

/// The images as `inspect --format json` shows them.
async fn inspected(
    store: &Store,
    cache: Option<&BlobCache>,
    found: &[(Arc<Image>, ImageInfo)],
) -> Result<Vec<Inspected>> {
    let mut out = Vec::with_capacity(found.len());
    for (image, info) in found {
        let names = store.names_of(&info.id);
        let (digests, tags): (Vec<_>, Vec<_>) = names
            .iter()
            .map(|n| n.familiar().to_owned())
            .partition(|n| n.contains('@'));
        let mut size = 0;
        if let Some(cache) = cache {
            for raw in &image.rootfs.raw_diff_ids {
                if let Ok(d) = DiffId::parse(raw) {
                    size += cache.has(d.digest()).await.ok().flatten().unwrap_or(0);
                }
            }
        }
        let time = |t: Option<Timestamp>| t.map(|t| t.to_string());
        out.push(Inspected {
            id: info.id,
            repo_tags: tags,
            repo_digests: digests,
            parent: info.parent.map(|p| p.to_string()).unwrap_or_default(),
            comment: image.comment.clone(),
            created: time(image.created).unwrap_or_default(),
            docker_version: image.docker_version.clone(),
            author: image.author.clone(),
            config: runtime_config(image.raw_json())?,
            architecture: image.architecture.clone(),
            variant: image.variant.clone(),
            os: image.os.clone(),
            os_version: image.os_version.clone(),
            size,
            root_fs: RootFsOut {
                r#type: image.rootfs.fs_type.clone(),
                layers: image.rootfs.raw_diff_ids.clone(),
            },
            metadata: MetadataOut {
                last_tag_time: time(info.last_updated)
                    .unwrap_or_else(|| "0001-01-01T00:00:00Z".to_owned()),
            },
            imagecache: Extra {
                children: info.children.clone(),
                built_locally: info.built_locally,
                last_updated: time(info.last_updated),
                last_used: time(store.last_used(&info.id)),
                platform: PlatformOut::new(&info.platform),
                layers: info.layers,
                chain_id: info.chain_id,
                config_size: info.config_len,
                config: raw_config(image.raw_json())?,
            },
        });
    }
    Ok(out)
}

/// The images as `inspect` shows them in text.
fn inspect_lines(found: &[(Arc<Image>, ImageInfo)]) -> Vec<String> {
    let mut lines = Vec::new();
    for (n, (image, info)) in found.iter().enumerate() {
        if n > 0 {
            lines.push(String::new());
        }
        let ids = |v: &[ImageId]| {
            v.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        lines.push(format!("ID:             {}", info.id));
        lines.push(format!(
            "Parent:         {}",
            info.parent.map(|p| p.to_string()).unwrap_or_default()
        ));
        lines.push(format!("Children:       {}", ids(&info.children)));
        lines.push(format!("Built locally:  {}", info.built_locally));
        lines.push(format!(
            "Last updated:   {}",
            info.last_updated.map(|t| t.to_string()).unwrap_or_default()
        ));
        lines.push(format!(
            "Created:        {}",
            info.created.map(|t| t.to_string()).unwrap_or_default()
        ));
        lines.push(format!("Platform:       {}", platform_text(&info.platform)));
        lines.push(format!("Layers:         {}", info.layers));
        lines.push(format!(
            "Chain ID:       {}",
            info.chain_id.map(|c| c.to_string()).unwrap_or_default()
        ));
        lines.push(format!(
            "Config:         {} bytes, as stored:",
            info.config_len
        ));
        let value: Option<serde_json::Value> = serde_json::from_slice(image.raw_json()).ok();
        match value.and_then(|v| serde_json::to_string_pretty(&v).ok()) {
            Some(pretty) => lines.extend(pretty.lines().map(str::to_owned)),
            None => lines.push(String::from_utf8_lossy(image.raw_json()).into_owned()),
        }
    }
    lines
}

/// One history entry as `history` shows it.
#[derive(Debug, Serialize)]
struct HistoryEntry {
    /// The image in the store whose last entry this is, as Docker shows
    /// it; `None` (`<missing>`) when no image of the chain ends here.
    image: Option<ImageId>,
    created: Option<String>,
    created_by: String,
    author: String,
    comment: String,
    empty_layer: bool,
    /// The layer the entry added.
    layer: Option<String>,
    /// The layer's size, when the blob cache holds it uncompressed.
    size: Option<u64>,
}

/// For each history length, the image of `id`'s parent chain (itself
/// included) whose history has that many entries.
async fn owners(store: &Store, id: ImageId) -> Result<std::collections::HashMap<usize, ImageId>> {
    let mut out = std::collections::HashMap::new();
    let mut next = Some(id);
    while let Some(current) = next {
        if out.values().any(|seen| *seen == current) {
            break;
        }
        match store.get(&current).await {
            Ok(image) => {
                out.entry(image.history.len()).or_insert(current);
            }
            Err(e) if e.is_not_found() => break,
            Err(e) => return Err(e.into()),
        }
        next = store.info(&current).and_then(|i| i.parent);
    }
    Ok(out)
}

/// `history`.
pub(super) async fn history(ctx: &Ctx, term: &str, quiet: bool, no_trunc: bool) -> Result<u8> {
    let store = ctx.store().await?;
    let id = store.resolve(term)?;
    let image = store.get(&id).await?;
    let owners = owners(&store, id).await?;
    // Sizes come from the blob cache; a backend without blobs has none.
    let cache: Option<BlobCache> = ctx.blobs().await.ok();
    let mut layer = 0usize;
    let mut entries = Vec::with_capacity(image.history.len());
    for (n, h) in image.history.iter().enumerate() {
        let diff = if h.empty_layer {
            None
        } else {
            let d = image.rootfs.raw_diff_ids.get(layer).cloned();
            layer += 1;
            d
        };
        let size = match (&cache, diff.as_deref().map(DiffId::parse)) {
            (Some(cache), Some(Ok(d))) => cache.has(d.digest()).await.ok().flatten(),
            _ => None,
        };
        entries.push(HistoryEntry {
            image: owners.get(&(n + 1)).copied(),
            created: h.created.map(|t| t.to_string()),
            created_by: h.created_by.clone(),
            author: h.author.clone(),
            comment: h.comment.clone(),
            empty_layer: h.empty_layer,
            layer: diff,
            size,
        });
    }
    entries.reverse();
    let image_text = |e: &HistoryEntry| match (&e.image, no_trunc) {
        (Some(id), true) => id.to_string(),
        (Some(id), false) => short(id),
        (None, _) => "<missing>".to_owned(),
    };
    if quiet {
        print_lines(entries.iter().map(image_text))?;
        return Ok(EXIT_OK);
    }
    let now = Timestamp::now_utc();
    let rows: Vec<HistoryRow> = entries
        .iter()
        .zip(image.history.iter().rev())
        .map(|(e, h)| {
            let mut by = e.created_by.replace(['\n', '\t'], " ");
            if !no_trunc && by.chars().count() > 60 {
                by = by.chars().take(59).collect::<String>() + "…";
            }
            let layer = e.layer.as_deref().unwrap_or_default();
            let layer_len = if no_trunc { layer.len() } else { 19 };
            HistoryRow {
                id: image_text(e),
                created_since: human_ago(h.created.as_ref(), now),
                created_at: h.created.map(go_time).unwrap_or_default(),
                created_by: by,
                size: match (e.empty_layer, e.size) {
                    (true, _) => "0 B".to_owned(),
                    (false, Some(s)) => human_size(s),
                    (false, None) => "?".to_owned(),
                },
                layer: layer.chars().take(layer_len).collect(),
                comment: e.comment.clone(),
            }
        })
        .collect();
    if ctx.json() {
        return print_json(&entries);
    }
    print_rows(
        ctx,
        &rows,
        HISTORY_TABLE_HUMAN,
        HISTORY_TABLE,
        |field| match field {
            "ID" => "IMAGE".to_owned(),
            "CreatedSince" => "CREATED".to_owned(),
            other => crate::template::default_header(other),
        },
    )
}

/// One entry of `history` in a `--format` template: the fields of `docker
/// history --format`, and the layer.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct HistoryRow {
    #[serde(rename = "ID")]
    id: String,
    created_since: String,
    created_at: String,
    created_by: String,
    size: String,
    layer: String,
    comment: String,
}

/// What `history --format table` shows: `docker history`'s columns.
const HISTORY_TABLE: &str = "{{.ID}}\t{{.CreatedSince}}\t{{.CreatedBy}}\t{{.Size}}\t{{.Comment}}";

/// What `history` shows: Docker's columns and the layer.
const HISTORY_TABLE_HUMAN: &str =
    "table {{.ID}}\t{{.CreatedSince}}\t{{.CreatedBy}}\t{{.Size}}\t{{.Layer}}\t{{.Comment}}";

pub(super) async fn search(ctx: &Ctx, prefix: &str) -> Result<u8> {
    let term = prefix.trim();
    let hex = term.strip_prefix("sha256:").unwrap_or(term);
    if hex.is_empty() {
        return Err(CliError::Usage {
            what: "search prefix".to_owned(),
            reason: "give at least one hex digit of an image ID".to_owned(),
        });
    }
    let store = ctx.store().await?;
    let matches: Vec<ImageId> = store
        .ids()
        .into_iter()
        .filter(|id| id.hex().starts_with(hex))
        .collect();
    if ctx.json() {
        print_json(&matches)?;
    } else {
        print_lines(matches.iter().map(ToString::to_string))?;
    }
    if matches.is_empty() {
        eprintln!("No such image: {}", crate::text::printable(prefix));
        return Ok(EXIT_NOT_FOUND);
    }
    Ok(EXIT_OK)
}

/// What `rm` did to one image.
#[derive(Debug, Serialize)]
struct Removed {
    id: ImageId,
    /// The name removed first, when the image was named by it.
    untagged: Option<String>,
    /// Whether the image itself went (not when other names still hold it).
    deleted: bool,
    orphaned: Vec<ImageId>,
}

pub(super) async fn rm(ctx: &Ctx, terms: &[String], force: bool) -> Result<u8> {
    let store = ctx.store().await?;
    let mut removed = Vec::new();
    let mut configs = Vec::new();
    let mut code = EXIT_OK;
    for term in terms {
        ctx.check_cancel()?;
        let outcome = remove_one(&store, term, force).await;
        match outcome {
            Ok((r, image)) => {
                configs.extend(image);
                removed.push(r);
            }
            Err(e) => {
                eprintln!("error: {}", e.one_line());
                code = code.max(e.exit_code());
            }
        }
    }
    let blobs = super::lifecycle::release_blobs(ctx, &configs).await?;
    if ctx.json() {
        #[derive(Serialize)]
        struct Out<'a> {
            removed: &'a [Removed],
            blobs_removed: Vec<String>,
        }
        print_json(&Out {
            removed: &removed,
            blobs_removed: blobs.iter().map(|b| b.digest.to_string()).collect(),
        })?;
    } else {
        let mut lines = Vec::new();
        for r in &removed {
            if let Some(name) = &r.untagged {
                lines.push(format!("Untagged: {name}"));
            }
            if r.deleted {
                lines.push(format!("Deleted: {}", r.id));
            }
        }
        lines.extend(blobs.iter().map(|b| format!("Deleted blob: {}", b.digest)));
        print_lines(lines)?;
    }
    Ok(code)
}

/// Removes what `term` names, as `docker rmi` does: a name is untagged
/// first, and the image goes only when no other name holds it (or with
/// `force`); an ID removes the image and its names.
async fn remove_one(
    store: &Store,
    term: &str,
    force: bool,
) -> Result<(Removed, Option<std::sync::Arc<imagecache_core::Image>>)> {
    let named = imagecache_core::Reference::parse(term)
        .ok()
        .map(imagecache_core::Reference::with_default_tag);
    // A name is untagged first; a term that names nothing is an ID.
    let untagged = match named {
        Some(name) => match store.untag(&name).await {
            Ok(id) => Some((id, name.familiar().to_owned())),
            Err(imagecache_store::Error::NameNotFound { .. }) => None,
            Err(e) => return Err(e.into()),
        },
        None => None,
    };
    let (id, untagged) = match untagged {
        Some((id, name)) => (id, Some(name)),
        None => (store.resolve(term)?, None),
    };
    if untagged.is_some() && !force && !store.names_of(&id).is_empty() {
        return Ok((
            Removed {
                id,
                untagged,
                deleted: false,
                orphaned: Vec::new(),
            },
            None,
        ));
    }
    let children = store.children(&id);
    if !children.is_empty() && !force {
        return Err(CliError::HasChildren { id, children });
    }
    let image = store.get(&id).await?;
    if force {
        store.delete_forced(&id).await?;
    } else {
        store.delete(&id).await?;
    }
    Ok((
        Removed {
            id,
            untagged,
            deleted: true,
            orphaned: children,
        },
        Some(image),
    ))
}

/// `tag SOURCE TARGET`.
pub(super) async fn tag(ctx: &Ctx, source: &str, target: &str) -> Result<u8> {
    let store = ctx.store().await?;
    let id = store.resolve(source)?;
    let name = parse_name(target)?;
    let previous = store.tag(&name, &id).await?;
    if ctx.json() {
        #[derive(Serialize)]
        struct Out {
            name: String,
            id: ImageId,
            previous: Option<ImageId>,
        }
        return print_json(&Out {
            name: name.with_default_tag().familiar().to_owned(),
            id,
            previous,
        });
    }
    Ok(EXIT_OK)
}

/// `untag NAME`.
pub(super) async fn untag(ctx: &Ctx, names: &[String]) -> Result<u8> {
    let store = ctx.store().await?;
    let mut lines = Vec::new();
    for text in names {
        let name = parse_name(text)?.with_default_tag();
        let id = store.untag(&name).await?;
        lines.push(format!("Untagged: {} ({})", name.familiar(), short(&id)));
    }
    print_lines(lines)?;
    Ok(EXIT_OK)
}

fn parse_name(text: &str) -> Result<imagecache_core::Reference> {
    imagecache_core::Reference::parse(text).map_err(|e| CliError::Usage {
        what: format!("name {text:?}"),
        reason: imagecache_core::error_text(&e),
    })
}

pub(super) async fn parent(ctx: &Ctx, term: &str, set: Option<&str>) -> Result<u8> {
    let store = ctx.store().await?;
    let id = store.resolve(term)?;
    if let Some(new) = set {
        let parent = store.resolve(new)?;
        store.set_parent(&id, &parent).await?;
    }
    let parent = store.parent(&id)?;
    if ctx.json() {
        #[derive(Serialize)]
        struct Out {
            id: ImageId,
            parent: Option<ImageId>,
        }
        return print_json(&Out { id, parent });
    }
    print_lines(parent.map(|p| p.to_string()))?;
    Ok(EXIT_OK)
}
