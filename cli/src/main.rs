#![doc = include_str!("../README.md")]

mod cli;
mod cmd;
mod error;
mod progress;
mod recorder;
mod template;
mod text;
mod units;

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::Parser as _;

use crate::cli::{Cli, LogFormat};
use crate::error::{CliError, EXIT_ERROR, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE};

/// Sends the libraries' `tracing` events to stderr: nothing by default,
/// more with each `-v`, or what `RUST_LOG` asks for.
fn install_logging(cli: &Cli) {
    use std::io::IsTerminal as _;
    use tracing_subscriber::EnvFilter;
    // `df -v` asks for detail, as `docker system df -v` does; the next
    // `-v` turns logging up.
    let verbose = match cli.command {
        crate::cli::Command::Df => cli.verbose.saturating_sub(1),
        _ => cli.verbose,
    };
    let level = match verbose {
        0 => "off",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = match std::env::var("RUST_LOG") {
        Ok(spec) if !spec.is_empty() => EnvFilter::new(spec),
        _ => EnvFilter::new(level),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let installed = match cli.log_format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
    };
    if let Err(e) = installed {
        eprintln!("warning: logging is off: {e}");
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    install_logging(&cli);
    let recorder = (cli.metrics || matches!(cli.command, crate::cli::Command::Stats))
        .then(recorder::install)
        .flatten();
    let print_metrics = cli.metrics;
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_ERROR);
        }
    };
    let code = runtime.block_on(async {
        let cancel = Arc::new(AtomicBool::new(false));
        tokio::spawn(watch_interrupts(Arc::clone(&cancel)));
        let default_store = cli.store.as_deref().is_none_or(str::is_empty);
        let result = match store_url(cli.store.clone()).await {
            Ok(url) => cmd::run(cli, url, default_store, cancel).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(code) => code,
            // A reader that stopped early (`imagecache ls | head`) is not
            // an error: end quietly, as Docker does.
            Err(CliError::Output(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => EXIT_OK,
            Err(e) => {
                eprintln!("error: {}", e.one_line());
                e.exit_code()
            }
        }
    });
    // Blocking tasks (a reader stopped by Ctrl-C) must not hold the exit.
    runtime.shutdown_background();
    if let (true, Some(recorder)) = (print_metrics, recorder) {
        for r in recorder.readings() {
            match r.sum {
                Some(sum) => eprintln!("metric: {} count={} sum={sum:.6}", r.metric, r.count),
                None => eprintln!("metric: {} {}", r.metric, r.count),
            }
        }
    }
    ExitCode::from(code)
}

/// Reports a command line clap refused. Help and version are printed as
/// clap prints them; errors quote the arguments given, so they are printed
/// with control characters escaped.
fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        e.exit()
    }
    eprint!("{}", text::printable(&e.render().to_string()));
    ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(EXIT_USAGE))
}

/// The first Ctrl-C asks long work to stop between atomic steps; a second
/// one ends the process at once.
async fn watch_interrupts(cancel: Arc<AtomicBool>) {
    loop {
        if tokio::signal::ctrl_c().await.is_err() {
            return;
        }
        if cancel.swap(true, Ordering::SeqCst) {
            std::process::exit(i32::from(EXIT_INTERRUPTED));
        }
        eprintln!("interrupted: stopping after the current step (press Ctrl-C again to abort)");
    }
}

/// The store URL given, or the default redb file in the user's data
/// directory (made by the first command that writes).
async fn store_url(given: Option<String>) -> Result<String, CliError> {
    if let Some(url) = given.filter(|u| !u.is_empty()) {
        return Ok(url);
    }
    let dir = cmd::default_store_dir().ok_or(CliError::NoDefaultStore)?;
    Ok(format!("redb://{}", dir.join("store.redb").display()))
}
