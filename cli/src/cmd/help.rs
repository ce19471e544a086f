//! `completions` and `man`: generated from the same definitions clap parses.

use std::io::Write as _;

use clap::CommandFactory as _;

use crate::cli::Cli;
use crate::error::{CliError, EXIT_OK, Result};

/// `completions SHELL`.
pub(super) fn completions(shell: clap_complete::Shell) -> Result<u8> {
    let mut command = Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut command, "imagecache", &mut out);
    write_out(&out)
}

/// `man`.
pub(super) fn man() -> Result<u8> {
    let mut out = Vec::new();
    clap_mangen::Man::new(Cli::command())
        .render(&mut out)
        .map_err(CliError::Output)?;
    write_out(&out)
}

fn write_out(bytes: &[u8]) -> Result<u8> {
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(bytes).map_err(CliError::Output)?;
    stdout.flush().map_err(CliError::Output)?;
    Ok(EXIT_OK)
}
