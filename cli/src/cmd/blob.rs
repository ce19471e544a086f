//! `blob has|get|put|ls|clear`.

use std::path::{Path, PathBuf};

use futures::StreamExt as _;
use imagecache_core::{BlobInfo, BlobNotes, Digest, Hasher};
use imagecache_engine::blob::{BlobCache, Compression, LayerOptions, PutOptions};
use serde::Serialize;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::{BlobOut, Ctx, print_json, print_lines, print_table};
use crate::cli::BlobCommand;
use crate::error::{CliError, EXIT_NOT_FOUND, EXIT_OK, Result};
use crate::units::human_size;

/// Size of the chunks read from files.
const CHUNK: usize = 1 << 20;

pub(super) async fn run(ctx: &Ctx, command: BlobCommand) -> Result<u8> {
    match command {
        BlobCommand::Has { digest } => has(ctx, &digest).await,
        BlobCommand::Get { digest, output } => get(ctx, &digest, output.as_deref()).await,
        BlobCommand::Put {
            file,
            digest,
            media_type,
        } => put(ctx, &file, digest, media_type).await,
        BlobCommand::Ls => ls(ctx).await,
        BlobCommand::Clear => clear(ctx).await,
    }
}

async fn has(ctx: &Ctx, digest: &Digest) -> Result<u8> {
    let size = ctx.blobs().await?.has(digest).await?;
    if ctx.json() {
        #[derive(Serialize)]
        struct Out<'a> {
            digest: &'a Digest,
            cached: bool,
            size: Option<u64>,
        }
        print_json(&Out {
            digest,
            cached: size.is_some(),
            size,
        })?;
    } else if let Some(size) = size {
        print_lines([size.to_string()])?;
    } else {
        eprintln!("blob {digest} is not cached");
    }
    Ok(if size.is_some() {
        EXIT_OK
    } else {
        EXIT_NOT_FOUND
    })
}

fn io_error(path: &Path, action: &'static str) -> impl FnOnce(std::io::Error) -> CliError {
    let path = path.to_owned();
    move |source| CliError::Io {
        path,
        action,
        source,
    }
}

async fn get(ctx: &Ctx, digest: &Digest, output: Option<&Path>) -> Result<u8> {
    let Some(path) = output else {
        if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
            return Err(CliError::Usage {
                what: "output".to_owned(),
                reason: "refusing to write blob bytes to a terminal; give -o FILE or redirect \
                         stdout"
                    .to_owned(),
            });
        }
        let cache = ctx.blobs().await?;
        // To stdout: streamed and verified as it goes; damage found at the
        // end is reported after the bytes were written, as with any pipe.
        let Some(reader) = cache.get(digest).await? else {
            eprintln!("blob {digest} is not cached");
            return Ok(EXIT_NOT_FOUND);
        };
        let mut out = tokio::io::stdout();
        let mut stream = reader;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            out.write_all(&chunk).await.map_err(CliError::Output)?;
        }
        out.flush().await.map_err(CliError::Output)?;
        return Ok(EXIT_OK);
    };
    let cache = ctx.blobs().await?;
    if is_special(path).await {
        return get_into_special(ctx, &cache, digest, path).await;
    }
    // To a file: written beside it, renamed only once every byte verified.
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.imagecache-{}", std::process::id()));
    let mut file = tokio::fs::File::create(&tmp)
        .await
        .map_err(io_error(&tmp, "creating the output file"))?;
    let copied = cache.copy_to(digest, &mut file).await;
    let flushed = match &copied {
        Ok(Some(_)) => file
            .sync_all()
            .await
            .map_err(io_error(&tmp, "writing the output file")),
        _ => Ok(()),
    };
    drop(file);
    match (copied, flushed) {
        (Ok(Some(info)), Ok(())) => {
            tokio::fs::rename(&tmp, path)
                .await
                .map_err(io_error(path, "renaming the output file into place"))?;
            reported(ctx, digest, Some(info))
        }
        (copied, flushed) => {
            let _ = tokio::fs::remove_file(&tmp).await;
            flushed?;
            copied?;
            reported(ctx, digest, None)
        }
    }
}

/// The outcome of `blob get -o`: the blob's info as JSON when asked, or
/// that it is not cached.
fn reported(ctx: &Ctx, digest: &Digest, copied: Option<BlobInfo>) -> Result<u8> {
    match copied {
        Some(info) => {
            if ctx.json() {
                print_json(&BlobOut::from(info))?;
            }
            Ok(EXIT_OK)
        }
        None => {
            eprintln!("blob {digest} is not cached");
            Ok(EXIT_NOT_FOUND)
        }
    }
}

/// Whether `path` exists and is something other than a regular file (a
/// device, a FIFO, a socket): such a path is written into, never replaced.
async fn is_special(path: &Path) -> bool {
    tokio::fs::metadata(path)
        .await
        .is_ok_and(|m| !m.file_type().is_file() && !m.is_dir())
}

/// `blob get -o` into a device or FIFO: the bytes stream into it as they
/// verify, as they would into a pipe; damage found at the end is reported
/// after the bytes were written.
async fn get_into_special(
    ctx: &Ctx,
    cache: &BlobCache,
    digest: &Digest,
    path: &Path,
) -> Result<u8> {
    let mut out = tokio::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .await
        .map_err(io_error(path, "opening the output"))?;
    let copied = cache.copy_to(digest, &mut out).await?;
    reported(ctx, digest, copied)
}

/// The SHA-256 of a file, read on a blocking thread.
async fn hash_file(path: &Path) -> Result<Digest> {
    let owned = path.to_owned();
    tokio::task::spawn_blocking(move || -> std::io::Result<Digest> {
        use std::io::Read as _;
        let mut file = std::fs::File::open(&owned)?;
        let mut hasher = Hasher::new(imagecache_core::Algorithm::Sha256);
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                return Ok(hasher.finish());
            }
            hasher.update(&buf[..n]);
        }
    })
    .await
    .map_err(|source| CliError::Join {
        task: "hashing the file",
        source,
    })?
    .map_err(io_error(path, "reading the file"))
}

/// What `blob put` stored.
#[derive(Debug, Serialize)]
struct Stored {
    digest: Digest,
    size: u64,
    compression: &'static str,
    /// The decompressed copy kept beside a compressed layer.
    decompressed: Option<Digest>,
    decompressed_size: Option<u64>,
}

/// Opens a file to put; returns it rewound, with its size and whether its
/// first bytes say it is a gzip or zstd stream.
async fn open_and_sniff(path: &PathBuf) -> Result<(tokio::fs::File, u64, bool)> {
    use tokio::io::AsyncSeekExt as _;
    let mut file = tokio::fs::File::open(path)
        .await
        .map_err(io_error(path, "opening the file"))?;
    let size = file
        .metadata()
        .await
        .map_err(io_error(path, "reading the file's size"))?
        .len();
    let mut head = [0u8; 8];
    let mut have = 0;
    while have < head.len() {
        let n = file
            .read(&mut head[have..])
            .await
            .map_err(io_error(path, "reading the file"))?;
        if n == 0 {
            break;
        }
        have += n;
    }
    let compressed = matches!(
        Compression::sniff(&head[..have]),
        Ok(Compression::Gzip | Compression::Zstd)
    );
    file.seek(std::io::SeekFrom::Start(0))
        .await
        .map_err(io_error(path, "reading the file"))?;
    Ok((file, size, compressed))
}

async fn put(
    ctx: &Ctx,
    path: &PathBuf,
    digest: Option<Digest>,
    media_type: Option<String>,
) -> Result<u8> {
    let cache = ctx.blobs().await?;
    let digest = match digest {
        Some(d) => d,
        None => hash_file(path).await?,
    };
    let (file, size, compressed) = open_and_sniff(path).await?;
    let stored = if compressed {
        // A compressed layer goes through the layer path, which keeps a
        // decompressed copy and notes each copy against the other.
        let mut options = LayerOptions::new().with_expected_size(size);
        if let Some(mt) = media_type {
            options = options.with_media_type(mt);
        }
        let put = cache
            .put_layer_opts(&digest, imagecache_engine::blob::reader_body(file), options)
            .await?;
        Stored {
            digest,
            size: put.compressed.map_or(size, |c| c.size),
            compression: put.compression.as_str(),
            decompressed: put.compressed.map(|_| put.decompressed.digest),
            decompressed_size: put.compressed.map(|_| put.decompressed.size),
        }
    } else {
        let mut options = PutOptions::new().with_expected_size(size);
        if let Some(mt) = media_type {
            options = options.with_media_type(mt);
        }
        let info = cache
            .put_opts(&digest, imagecache_engine::blob::reader_body(file), options)
            .await?;
        Stored {
            digest,
            size: info.size,
            compression: "none",
            decompressed: None,
            decompressed_size: None,
        }
    };
    if ctx.json() {
        return print_json(&stored);
    }
    let mut lines = vec![stored.digest.to_string()];
    if let Some(d) = &stored.decompressed {
        lines.push(format!("decompressed: {d}"));
    }
    print_lines(lines)?;
    Ok(EXIT_OK)
}

/// One blob as `blob ls` shows it.
#[derive(Debug, Serialize)]
struct Listed {
    digest: Digest,
    size: u64,
    kind: Option<String>,
    compression: Option<String>,
    media_type: Option<String>,
    /// On a compressed layer: its decompressed copy.
    decompressed: Option<String>,
    /// On a decompressed layer: its compressed copy.
    compressed: Option<String>,
}

/// One note of a blob's notes, as text.
fn note(notes: &BlobNotes, key: &str) -> Option<String> {
    notes
        .iter()
        .find(|(k, _)| k.as_str() == key)
        .map(|(_, v)| String::from_utf8_lossy(v).trim().to_owned())
}

async fn ls(ctx: &Ctx) -> Result<u8> {
    let cache = ctx.blobs().await?;
    let mut listed = Vec::new();
    for info in cache.backend().list_blobs().await? {
        let notes = cache.backend().blob_notes(&info.digest).await?;
        listed.push(Listed {
            digest: info.digest,
            size: info.size,
            kind: note(&notes, "kind"),
            compression: note(&notes, "compression"),
            media_type: note(&notes, "media-type"),
            decompressed: note(&notes, "decompressed"),
            compressed: note(&notes, "compressed"),
        });
    }
    if ctx.json() {
        return print_json(&listed);
    }
    let short = |d: &str| d.chars().take(19).collect::<String>();
    let rows: Vec<Vec<String>> = listed
        .iter()
        .map(|b| {
            vec![
                short(&b.digest.to_string()),
                human_size(b.size),
                b.kind.clone().unwrap_or_default(),
                b.compression.clone().unwrap_or_else(|| "none".to_owned()),
                match (&b.decompressed, &b.compressed) {
                    (Some(d), _) => format!("decompressed {}", short(d)),
                    (None, Some(c)) => format!("compressed {}", short(c)),
                    (None, None) => String::new(),
                },
            ]
        })
        .collect();
    print_table(
        &["DIGEST", "SIZE", "KIND", "COMPRESSION", "OTHER COPY"],
        &rows,
    )?;
    Ok(EXIT_OK)
}

async fn clear(ctx: &Ctx) -> Result<u8> {
    let cleared = ctx.blobs().await?.clear().await?;
    if ctx.json() {
        #[derive(Serialize)]
        struct Out {
            blobs: u64,
            bytes: u64,
        }
        return print_json(&Out {
            blobs: cleared.blobs,
            bytes: cleared.bytes,
        });
    }
    print_lines([format!(
        "removed {} blob(s), {}",
        cleared.blobs,
        human_size(cleared.bytes)
    )])?;
    Ok(EXIT_OK)
}
