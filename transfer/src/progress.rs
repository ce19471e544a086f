//! Progress reports and cancellation, shared by import and export.
//!
//! Work happens in steps, one at a time: reading an archive, storing its
//! layers, writing an export. A [`ProgressFn`] receives a
//! [`Progress::Begin`], any number of [`Progress::Position`]s and then a
//! [`Progress::End`] or [`Progress::Abandon`] per step, plus
//! [`Progress::Warning`]s between steps. The callback runs on the thread
//! doing the work, so it should return quickly (set a bar's position, send
//! on a channel).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// One progress report.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Progress {
    /// A step starts.
    Begin {
        /// What the step does, e.g. `reading image.tar`.
        label: String,
        /// Its size in bytes, when known.
        total: Option<u64>,
    },
    /// Bytes done so far in the current step.
    Position {
        /// Bytes done.
        done: u64,
    },
    /// The current step ended well.
    End {
        /// What it did, e.g. `stored 3 layer(s) of image.tar`.
        message: String,
    },
    /// The current step ended with an error, which is returned on its own.
    Abandon,
    /// Something worth telling that did not stop the work.
    Warning {
        /// The warning.
        message: String,
    },
}

/// Receives [`Progress`] reports; see the module docs.
pub type ProgressFn = Arc<dyn Fn(&Progress) + Send + Sync>;

/// A flag that cancels an import or export when set, from any thread (a
/// Ctrl-C handler, another task).
///
/// Dropping the future cancels too; the flag is for callers that want the
/// work to stop and its error ([`Error::Interrupted`](crate::Error::Interrupted))
/// returned.
#[derive(Debug, Clone, Default)]
pub struct Cancel(Arc<AtomicBool>);

impl Cancel {
    /// A flag that is not set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Wraps a flag the caller already shares with a signal handler.
    pub fn from_flag(flag: Arc<AtomicBool>) -> Self {
        Self(flag)
    }

    /// Asks the work to stop.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    /// Whether the work was asked to stop.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// The flag itself, for code that reads it in a loop.
    pub(crate) fn flag(&self) -> &AtomicBool {
        &self.0
    }
}

/// The sending side: a [`ProgressFn`] or nothing, and the position of the
/// current step, so that workers on several threads can add to it.
#[derive(Clone, Default)]
pub(crate) struct Reporter {
    sink: Option<ProgressFn>,
    done: Arc<AtomicU64>,
}

impl std::fmt::Debug for Reporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reporter")
            .field("sink", &self.sink.is_some())
            .finish()
    }
}

impl Reporter {
    pub(crate) fn new(sink: Option<ProgressFn>) -> Self {
        Self {
            sink,
            done: Arc::new(AtomicU64::new(0)),
        }
    }

    fn send(&self, report: Progress) {
        if let Some(sink) = &self.sink {
            sink(&report);
        }
    }

    pub(crate) fn begin(&self, label: String, total: Option<u64>) {
        self.done.store(0, Ordering::Relaxed);
        self.send(Progress::Begin { label, total });
    }

    /// Sets the position of the current step.
    pub(crate) fn set(&self, done: u64) {
        self.done.store(done, Ordering::Relaxed);
        self.send(Progress::Position { done });
    }

    /// Advances the current step by `bytes`.
    pub(crate) fn add(&self, bytes: u64) {
        let done = self.done.fetch_add(bytes, Ordering::Relaxed) + bytes;
        self.send(Progress::Position { done });
    }

    pub(crate) fn end(&self, message: String) {
        self.send(Progress::End { message });
    }

    pub(crate) fn abandon(&self) {
        self.send(Progress::Abandon);
    }

    pub(crate) fn warn(&self, message: String) {
        self.send(Progress::Warning { message });
    }

    /// Ends the step according to `result`.
    pub(crate) fn finish<T, E>(&self, result: &Result<T, E>, message: impl FnOnce(&T) -> String) {
        match result {
            Ok(value) => self.end(message(value)),
            Err(_) => self.abandon(),
        }
    }
}
