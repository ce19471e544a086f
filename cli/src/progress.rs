//! Progress of long work on stderr: a progress bar on a terminal, plain
//! lines otherwise (logs, CI, tests), nothing with `--quiet`.

use std::io::IsTerminal as _;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Bars,
    Lines,
    Quiet,
}

/// Where progress goes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ui {
    mode: Mode,
}

impl Ui {
    /// Bars when stderr is a terminal, lines otherwise; nothing when `quiet`.
    pub(crate) fn new(quiet: bool) -> Self {
        let mode = if quiet {
            Mode::Quiet
        } else if std::io::stderr().is_terminal() {
            Mode::Bars
        } else {
            Mode::Lines
        };
        Self { mode }
    }

    /// Prints one line of progress.
    pub(crate) fn line(&self, text: impl AsRef<str>) {
        if self.mode != Mode::Quiet {
            eprintln!("{}", text.as_ref());
        }
    }

    /// Starts a step of `total` units (bytes when `bytes`), announced with
    /// `label`. In line mode the label and the end are printed, not each update.
    pub(crate) fn step(&self, label: impl Into<String>, total: Option<u64>, bytes: bool) -> Step {
        let label = label.into();
        let bar = match self.mode {
            Mode::Bars => {
                let bar = match total {
                    Some(t) => ProgressBar::new(t),
                    None => ProgressBar::new_spinner(),
                };
                bar.set_draw_target(ProgressDrawTarget::stderr());
                let template = match (total.is_some(), bytes) {
                    (true, true) => "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
                    (true, false) => "{msg} [{bar:30}] {pos}/{len}",
                    (false, true) => "{spinner} {msg} {bytes} {bytes_per_sec}",
                    (false, false) => "{spinner} {msg} {pos}",
                };
                if let Ok(style) = ProgressStyle::with_template(template) {
                    bar.set_style(style.progress_chars("=> "));
                }
                bar.set_message(label.clone());
                bar.enable_steady_tick(Duration::from_millis(200));
                Some(bar)
            }
            Mode::Lines => {
                eprintln!("{label}");
                None
            }
            Mode::Quiet => None,
        };
        Step { bar }
    }
}

/// One step in progress; cheap to clone and usable from any thread.
#[derive(Debug, Clone)]
pub(crate) struct Step {
    bar: Option<ProgressBar>,
}

impl Step {
    /// Sets how far the step is.
    pub(crate) fn set(&self, position: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(position);
        }
    }

    /// Advances the step.
    pub(crate) fn inc(&self, delta: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(delta);
        }
    }

    /// Ends the step, leaving `text` as its last word.
    pub(crate) fn finish(&self, ui: &Ui, text: impl AsRef<str>) {
        match &self.bar {
            Some(bar) => {
                // The last word replaces the bar rather than sitting beside it.
                if let Ok(style) = ProgressStyle::with_template("{msg}") {
                    bar.set_style(style);
                }
                bar.finish_with_message(text.as_ref().to_owned());
            }
            None => ui.line(text),
        }
    }

    /// Removes the bar without a last word (on errors, which are printed
    /// on their own).
    pub(crate) fn abandon(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
