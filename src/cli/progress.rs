//! The progress bar the commands draw on a terminal, fed by the library's `Progress` calls.

use indicatif::{ProgressBar, ProgressStyle};
use shardfs::progress::{Progress, Reporter};
use std::io::IsTerminal;
use std::sync::Arc;

/// A bar of bytes done of the total, with the rate and the time left.
struct Bar(ProgressBar);

impl Progress for Bar {
    fn start(&self, what: &str, total: u64) {
        self.0.set_length(total);
        self.0.set_message(what.to_string());
    }
    fn advance(&self, bytes: u64) {
        self.0.inc(bytes);
    }
    fn finish(&self) {
        self.0.finish_and_clear();
    }
}

/// A bar on stderr when it is a terminal and `wanted`; otherwise nothing is drawn.
pub fn bar(wanted: bool) -> Reporter {
    if !wanted || !std::io::stderr().is_terminal() {
        return Reporter::default();
    }
    let bar = ProgressBar::new(0);
    let template =
        "{spinner} {msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}";
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    Reporter(Arc::new(Bar(bar)))
}
