//! The commands, and what they share: the store, output, cancellation.

mod blob;
mod cache;
mod conformance;
mod help;
mod images;
mod info;
mod lifecycle;
mod transfer;

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use imagecache_backends::Backend;
use imagecache_engine::blob::{BlobCache, BlobCacheOptions};
use imagecache_store::Store;
use serde::Serialize;
use tokio::sync::OnceCell;

use crate::cli::{Cli, Command, Format};
use crate::error::{CliError, EXIT_OK, Result};
use crate::progress::Ui;

/// What every command runs with.
pub(crate) struct Ctx {
    /// The store URL.
    pub(crate) url: String,
    /// The output format.
    pub(crate) format: Format,
    /// Where progress goes.
    pub(crate) ui: Ui,
    /// Set by Ctrl-C; long work stops between atomic steps.
    pub(crate) cancel: Arc<AtomicBool>,
    /// How the command may open the store.
    pub(crate) access: Access,
    backend: OnceCell<Backend>,
    store: OnceCell<Store>,
}

/// How a command opens its store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// The command writes: a store that is not there yet is created.
    Write,
    /// The command only reads: a store that is not there is an error.
    Read,
    /// The command only reads the default store, which may not exist yet:
    /// then it reads as empty, and nothing is created.
    ReadDefault,
}

impl Access {
    /// What `command` needs; `default_store` when no URL was given.
    fn of(command: &Command, default_store: bool) -> Self {
        let writes = match command {
            Command::Load { .. }
            | Command::Rm { .. }
            | Command::Tag { .. }
            | Command::Untag { .. }
            | Command::Cache { .. }
            | Command::Conformance(_)
            | Command::Check
            | Command::Compact => true,
            Command::Parent { set, .. } => set.is_some(),
            Command::Prune(args) => !args.dry_run,
            Command::Lease { command } => !matches!(command, crate::cli::LeaseCommand::Ls),
            Command::Blob { command } => command.writes(),
            Command::Ls { .. }
            | Command::Inspect { .. }
            | Command::History { .. }
            | Command::Search { .. }
            | Command::Save { .. }
            | Command::Stats
            | Command::Df
            | Command::Completions { .. }
            | Command::Man
            | Command::Info => false,
        };
        match (writes, default_store) {
            (true, _) => Self::Write,
            (false, true) => Self::ReadDefault,
            (false, false) => Self::Read,
        }
    }
}

impl Ctx {
    /// The backend, opened on first use.
    pub(crate) async fn backend(&self) -> Result<Backend> {
        self.backend
            .get_or_try_init(|| async {
                open_backend(&self.url, self.access)
                    .await
                    .map_err(|source| CliError::OpenStore {
                        url: self.url.clone(),
                        source,
                    })
            })
            .await
            .cloned()
    }

    /// The image store, opened on first use.
    pub(crate) async fn store(&self) -> Result<Store> {
        let backend = self.backend().await?.images();
        self.store
            .get_or_try_init(|| async { Ok::<_, CliError>(Store::open(backend).await?) })
            .await
            .cloned()
    }

    /// The blob cache over the store's backend, in strict mode: a command
    /// line reports backend failures rather than counting them as misses.
    pub(crate) async fn blobs(&self) -> Result<BlobCache> {
        let options = BlobCacheOptions::new().with_strict(true);
        Ok(BlobCache::with_options(
            self.backend().await?.blobs(),
            options,
        )?)
    }

    /// Whether Ctrl-C was pressed.
    pub(crate) fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }

    /// Fails with [`CliError::Interrupted`] once Ctrl-C was pressed.
    pub(crate) fn check_cancel(&self) -> Result<()> {
        if self.cancelled() {
            Err(CliError::Interrupted)
        } else {
            Ok(())
        }
    }

    /// Whether output is JSON.
    pub(crate) fn json(&self) -> bool {
        self.format == Format::Json
    }

    /// The `--format` template, when one was given.
    pub(crate) fn template(&self) -> Option<&str> {
        match &self.format {
            Format::Template(t) => Some(t),
            _ => None,
        }
    }
}

/// Page cache of a redb store opened by the command line.
///
/// The library's default (64 MiB) serves long-lived processes that read the
/// same pages again and again. One command reads each page about once, and
/// redb bounds its write buffer by the same figure, so a small cache costs
/// a command nothing and keeps an import of gigabytes of layers small.
const REDB_CACHE: usize = 16 << 20;

/// Opens the backend a URL names, as `access` allows; redb stores with
/// [`REDB_CACHE`].
async fn open_backend(url: &str, access: Access) -> imagecache_core::Result<Backend> {
    use imagecache_backends::redb::{RedbBackend, RedbConfig, SCHEME};
    match (access, imagecache_backends::ensure_exists(url)) {
        (Access::Write, _) | (_, Ok(())) => {}
        // Nothing to read yet: an empty store, and nothing created.
        (Access::ReadDefault, Err(e)) if e.is_not_found() => {
            return Ok(Backend::new(imagecache_backends::MemoryBackend::new()));
        }
        (_, Err(e)) => return Err(e),
    }
    match url
        .strip_prefix(SCHEME)
        .and_then(|rest| rest.strip_prefix("://"))
        .filter(|path| !path.is_empty())
    {
        Some(path) => {
            let config = RedbConfig::new().with_cache_size(REDB_CACHE);
            Ok(Backend::new(RedbBackend::open_with(path, config).await?))
        }
        None => imagecache_backends::open(url).await,
    }
}

/// Runs the command line; returns the exit code.
///
/// # Errors
/// The command's error; `main` prints it and exits with its code.
pub(crate) async fn run(
    cli: Cli,
    url: String,
    default_store: bool,
    cancel: Arc<AtomicBool>,
) -> Result<u8> {
    let verbose = cli.verbose;
    let ctx = Ctx {
        access: Access::of(&cli.command, default_store),
        url,
        format: cli.format,
        ui: Ui::new(cli.quiet),
        cancel,
        backend: OnceCell::new(),
        store: OnceCell::new(),
    };
    if ctx.template().is_some()
        && !matches!(
            cli.command,
            Command::Ls { .. } | Command::History { .. } | Command::Inspect { .. }
        )
    {
        return Err(CliError::Usage {
            what: "--format".into(),
            reason: "templates apply to ls, history and inspect; use human or json here".into(),
        });
    }
    match cli.command {
        Command::Load {
            mut inputs,
            paths,
            platform,
        } => {
            inputs.extend(paths);
            transfer::load(&ctx, &inputs, platform.as_deref()).await
        }
        Command::Save {
            output,
            layout,
            images,
        } => transfer::save(&ctx, &images, output.as_deref(), layout).await,
        Command::Ls {
            all,
            quiet,
            no_trunc,
            digests,
            filter,
        } => {
            let options = images::LsOptions {
                all,
                quiet,
                no_trunc,
                digests,
                filters: filter,
            };
            images::ls(&ctx, &options).await
        }
        Command::Inspect { ids, raw } => images::inspect(&ctx, &ids, raw).await,
        Command::History {
            id,
            quiet,
            no_trunc,
        } => images::history(&ctx, &id, quiet, no_trunc).await,
        Command::Search { prefix } => images::search(&ctx, &prefix).await,
        Command::Rm { ids, force } => images::rm(&ctx, &ids, force).await,
        Command::Tag { source, target } => images::tag(&ctx, &source, &target).await,
        Command::Untag { names } => images::untag(&ctx, &names).await,
        Command::Parent { id, set } => images::parent(&ctx, &id, set.as_deref()).await,
        Command::Prune(args) => lifecycle::prune(&ctx, &args).await,
        Command::Lease { command } => lifecycle::lease(&ctx, &command).await,
        Command::Df => lifecycle::df(&ctx, verbose > 0).await,
        Command::Compact => lifecycle::compact(&ctx).await,
        Command::Check => lifecycle::check(&ctx).await,
        Command::Completions { shell } => help::completions(shell),
        Command::Man => help::man(),
        Command::Cache { command } => cache::run(&ctx, command).await,
        Command::Blob { command } => blob::run(&ctx, command).await,
        Command::Stats => info::stats(&ctx).await,
        Command::Info => info::info(&ctx).await,
        Command::Conformance(args) => conformance::run(&ctx, &args).await,
    }
}

/// A blob and its size, as commands print them.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct BlobOut {
    /// The digest.
    pub(crate) digest: imagecache_core::Digest,
    /// Its size in bytes.
    pub(crate) size: u64,
}

impl From<imagecache_core::BlobInfo> for BlobOut {
    fn from(b: imagecache_core::BlobInfo) -> Self {
        Self {
            digest: b.digest,
            size: b.size,
        }
    }
}

/// Prints a value as pretty JSON on stdout.
pub(crate) fn print_json(value: &impl Serialize) -> Result<u8> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value)
        .map_err(|e| CliError::Output(std::io::Error::other(e)))?;
    writeln!(out).map_err(CliError::Output)?;
    Ok(EXIT_OK)
}

/// Prints rows through a template: the user's `--format` template, or in
/// human form `human` (the command's own table). `table` is what a bare
/// `--format table` shows; `header` names a field's column.
pub(crate) fn print_rows<T: Serialize>(
    ctx: &Ctx,
    rows: &[T],
    human: &str,
    table: &str,
    header: impl Fn(&str) -> String,
) -> Result<u8> {
    let text = match &ctx.format {
        Format::Json => return print_json(&rows),
        Format::Human => human,
        Format::Template(t) => t.as_str(),
    };
    let bad = |e: crate::template::TemplateError| CliError::Usage {
        what: "--format".into(),
        reason: e.to_string(),
    };
    let template = crate::template::Template::parse(text, table).map_err(bad)?;
    let rows = rows
        .iter()
        .map(serde_json::to_value)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| CliError::Output(std::io::Error::other(e)))?;
    print_lines(template.render(&rows, header).map_err(bad)?)?;
    Ok(EXIT_OK)
}

/// Prints lines on stdout.
pub(crate) fn print_lines<I, S>(lines: I) -> Result<()>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let mut out = std::io::stdout().lock();
    for line in lines {
        writeln!(out, "{}", line.as_ref()).map_err(CliError::Output)?;
    }
    out.flush().map_err(CliError::Output)
}

/// Prints a table with a header row, columns padded to their widest cell.
pub(crate) fn print_table(header: &[&str], rows: &[Vec<String>]) -> Result<()> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let render = |cells: &mut dyn Iterator<Item = &str>| {
        let mut line = String::new();
        for (i, cell) in cells.enumerate() {
            if i > 0 {
                line.push_str("   ");
            }
            line.push_str(cell);
            let pad = widths
                .get(i)
                .copied()
                .unwrap_or(0)
                .saturating_sub(cell.chars().count());
            line.extend(std::iter::repeat_n(' ', pad));
        }
        line.trim_end().to_owned()
    };
    let mut lines = vec![render(&mut header.iter().copied())];
    lines.extend(
        rows.iter()
            .map(|r| render(&mut r.iter().map(String::as_str))),
    );
    print_lines(lines)
}

/// The directory the default store lives in: `$XDG_DATA_HOME/imagecache`,
/// else `$HOME/.local/share/imagecache`.
pub(crate) fn default_store_dir() -> Option<PathBuf> {
    let from = |var: &str| {
        std::env::var_os(var)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    from("XDG_DATA_HOME")
        .or_else(|| from("HOME").map(|h| h.join(".local").join("share")))
        .map(|d| d.join("imagecache"))
}
