//! `load` (alias `import`) and `save`: a shell over `imagecache-transfer`.

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use imagecache_core::Platform;
use imagecache_transfer::{
    Cancel, ExportFormat, ExportOptions, ExportTarget, ImportOptions, Input, PlatformChoice,
    Progress, ProgressFn,
};

use super::{Ctx, print_json, print_lines, print_table};
use crate::error::{CliError, EXIT_OK, Result, short};
use crate::progress::{Step, Ui};

/// Shows the library's progress reports with the command line's bars or lines.
fn progress(ui: Ui) -> ProgressFn {
    let current: Mutex<Option<Step>> = Mutex::new(None);
    Arc::new(move |report: &Progress| {
        let Ok(mut current) = current.lock() else {
            return;
        };
        match report {
            Progress::Begin { label, total } => {
                *current = Some(ui.step(label.clone(), *total, true));
            }
            Progress::Position { done } => {
                if let Some(step) = current.as_ref() {
                    step.set(*done);
                }
            }
            Progress::End { message } => {
                if let Some(step) = current.take() {
                    step.finish(&ui, message);
                }
            }
            Progress::Abandon => {
                if let Some(step) = current.take() {
                    step.abandon();
                }
            }
            Progress::Warning { message } => ui.line(format!("warning: {message}")),
            _ => {}
        }
    })
}

/// `os/arch[/variant]`, or `all`.
fn platform_choice(text: Option<&str>) -> Result<PlatformChoice> {
    let Some(text) = text else {
        return Ok(PlatformChoice::Host);
    };
    if text == "all" {
        return Ok(PlatformChoice::All);
    }
    let parts: Vec<&str> = text.split('/').collect();
    let (os, architecture, variant) = match parts.as_slice() {
        [os, arch] => (*os, *arch, ""),
        [os, arch, variant] => (*os, *arch, *variant),
        _ => {
            return Err(CliError::Usage {
                what: format!("platform {text:?}"),
                reason: "expected OS/ARCH[/VARIANT] (e.g. linux/arm64) or all".to_owned(),
            });
        }
    };
    if os.is_empty() || architecture.is_empty() {
        return Err(CliError::Usage {
            what: format!("platform {text:?}"),
            reason: "OS and architecture must not be empty".to_owned(),
        });
    }
    Ok(PlatformChoice::Only(Platform {
        os: os.to_owned(),
        architecture: architecture.to_owned(),
        variant: variant.to_owned(),
        ..Platform::default()
    }))
}

pub(super) async fn load(ctx: &Ctx, paths: &[PathBuf], platform: Option<&str>) -> Result<u8> {
    let choice = platform_choice(platform)?;
    let inputs: Vec<Input> = if paths.is_empty() || paths == [PathBuf::from("-")] {
        if std::io::stdin().is_terminal() {
            return Err(CliError::Usage {
                what: "input".to_owned(),
                reason: "stdin is a terminal; give -i FILE|DIR or pipe an archive in".to_owned(),
            });
        }
        vec![Input::reader("stdin", tokio::io::stdin())]
    } else {
        paths.iter().map(Input::path).collect()
    };
    let store = ctx.store().await?;
    let cache = ctx.blobs().await?;
    let options = ImportOptions::new()
        .with_platform(choice)
        .with_progress(progress(ctx.ui))
        .with_cancel(Cancel::from_flag(ctx.cancel.clone()));
    let report = imagecache_transfer::import(&store, &cache, inputs, &options).await?;
    if ctx.json() {
        return print_json(&report);
    }
    let rows: Vec<Vec<String>> = report
        .images
        .iter()
        .map(|i| {
            vec![
                short(&i.id),
                if i.created {
                    "imported"
                } else {
                    "already present"
                }
                .to_owned(),
                i.layers.to_string(),
                i.parent.as_ref().map(short).unwrap_or_default(),
                i.names.join(", "),
            ]
        })
        .collect();
    print_table(&["IMAGE ID", "STATUS", "LAYERS", "PARENT", "NAMES"], &rows)?;
    let mut lines = vec![format!(
        "{} image(s) from {} input(s); {} layer(s), {} blob(s) stored, {} already present",
        report.images.len(),
        report.archives.len(),
        report.layers,
        report.blobs_stored,
        report.blobs_present,
    )];
    for conflict in &report.parent_conflicts {
        lines.push(format!(
            "kept the stored parent {} of {}; the archive names {}",
            conflict.stored.as_ref().map(short).unwrap_or_default(),
            short(&conflict.image),
            short(&conflict.archive),
        ));
    }
    for archive in &report.archives {
        for skipped in &archive.skipped {
            lines.push(format!(
                "{}: skipped {} ({}): {}",
                archive.path.display(),
                skipped.digest,
                skipped.platform.as_deref().unwrap_or("no platform"),
                skipped.reason
            ));
        }
    }
    print_lines(lines)?;
    Ok(EXIT_OK)
}

pub(super) async fn save(
    ctx: &Ctx,
    images: &[String],
    output: Option<&Path>,
    format: ExportFormat,
) -> Result<u8> {
    let store = ctx.store().await?;
    let cache = ctx.blobs().await?;
    let options = ExportOptions::new()
        .with_format(format)
        .with_progress(progress(ctx.ui))
        .with_cancel(Cancel::from_flag(ctx.cancel.clone()));
    let report = match output {
        None => {
            if std::io::stdout().is_terminal() {
                return Err(CliError::Usage {
                    what: "output".to_owned(),
                    reason: "refusing to write a tar archive to a terminal; give -o FILE|DIR or redirect stdout".to_owned(),
                });
            }
            let target = ExportTarget::writer(
                "stdout",
                tokio::io::BufWriter::with_capacity(1 << 20, tokio::io::stdout()),
            );
            imagecache_transfer::export(&store, &cache, images, target, &options).await?
        }
        Some(path) if path.is_dir() || path.to_string_lossy().ends_with('/') => {
            imagecache_transfer::export(&store, &cache, images, ExportTarget::dir(path), &options)
                .await?
        }
        Some(path) => save_file(&store, &cache, images, path, &options).await?,
    };
    if ctx.json() {
        return print_json(&report);
    }
    if output.is_some() {
        print_lines([format!(
            "saved {} image(s) as {}: {} blob(s), {} byte(s)",
            report.images.len(),
            report.format,
            report.blobs,
            report.bytes
        )])?;
    }
    Ok(EXIT_OK)
}

/// A tar into a file: written beside it and renamed into place when
/// complete; into a FIFO or device: streamed.
async fn save_file(
    store: &imagecache_store::Store,
    cache: &imagecache_engine::blob::BlobCache,
    images: &[String],
    path: &Path,
    options: &ExportOptions,
) -> Result<imagecache_transfer::ExportReport> {
    let io = |action: &'static str, path: &Path| {
        let path = path.to_owned();
        move |source| CliError::Io {
            path,
            action,
            source,
        }
    };
    let special = tokio::fs::metadata(path)
        .await
        .is_ok_and(|m| !m.file_type().is_file() && !m.is_dir());
    if special {
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .await
            .map_err(io("opening the output", path))?;
        let target = ExportTarget::writer(path.display().to_string(), file);
        return Ok(imagecache_transfer::export(store, cache, images, target, options).await?);
    }
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    let temp = tempfile::Builder::new()
        .prefix(".imagecache-save-")
        .tempfile_in(&dir)
        .map_err(io("creating the output file", path))?;
    let (file, temp) = temp.into_parts();
    let target = ExportTarget::writer(
        path.display().to_string(),
        tokio::io::BufWriter::with_capacity(1 << 20, tokio::fs::File::from_std(file)),
    );
    let report = imagecache_transfer::export(store, cache, images, target, options).await?;
    temp.persist(path).map_err(|e| CliError::Io {
        path: path.to_owned(),
        action: "renaming the output file into place",
        source: e.error,
    })?;
    Ok(report)
}
