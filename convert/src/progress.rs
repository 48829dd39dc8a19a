//! Progress reporting: a small trait so the library stays quiet in tests and the CLI can draw
//! bars on stderr.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Receives progress of long steps (downloads, tensor writing). Totals are in bytes.
pub trait ProgressSink: Sync {
    /// A new step of `total` units begins.
    fn begin(&self, step: &str, total: u64);
    /// `n` more units are done; `item` names what is being worked on.
    fn advance(&self, n: u64, item: &str);
    /// The current step is finished.
    fn end(&self);
    /// A one-line notice for the user (e.g. cleanup done on the way).
    fn note(&self, _line: &str) {}
    /// Polled between tensors (and between chunks of large ones): returning true abandons the
    /// conversion with [`crate::ConvertError::Cancelled`], removing the temporary file. A CLI
    /// sets this from its Ctrl-C handler.
    fn cancelled(&self) -> bool {
        false
    }
}

/// Reports nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoProgress;

impl ProgressSink for NoProgress {
    fn begin(&self, _: &str, _: u64) {}
    fn advance(&self, _: u64, _: &str) {}
    fn end(&self) {}
}

/// Byte progress bars on stderr (hidden when stderr is not a terminal).
#[derive(Debug, Default)]
pub struct StderrProgress {
    bar: Mutex<Option<ProgressBar>>,
    cancel: Option<Arc<AtomicBool>>,
}

impl StderrProgress {
    pub fn new() -> Self {
        Self::default()
    }

    /// Also reports [`ProgressSink::cancelled`] once `flag` is set (e.g. by a Ctrl-C handler).
    pub fn with_cancel_flag(flag: Arc<AtomicBool>) -> Self {
        StderrProgress {
            bar: Mutex::default(),
            cancel: Some(flag),
        }
    }
}

impl ProgressSink for StderrProgress {
    fn begin(&self, step: &str, total: u64) {
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template(
            "{prefix:>12} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta} {wide_msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        bar.set_style(style);
        bar.set_prefix(step.to_string());
        if let Ok(mut slot) = self.bar.lock() {
            if let Some(old) = slot.replace(bar) {
                old.finish_and_clear();
            }
        }
    }

    fn advance(&self, n: u64, item: &str) {
        if let Ok(slot) = self.bar.lock() {
            if let Some(bar) = slot.as_ref() {
                bar.set_message(item.to_string());
                bar.inc(n);
            }
        }
    }

    fn end(&self) {
        if let Ok(mut slot) = self.bar.lock() {
            if let Some(bar) = slot.take() {
                bar.finish_with_message("done");
            }
        }
    }

    fn note(&self, line: &str) {
        eprintln!("{line}");
    }

    fn cancelled(&self) -> bool {
        self.cancel
            .as_ref()
            .is_some_and(|f| f.load(Ordering::Relaxed))
    }
}
