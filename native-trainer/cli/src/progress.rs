//! Progress on stderr: an indicatif bar (rate, ETA, redrawn in place) on a terminal, plain lines
//! when stderr is a pipe or a file (logs keep every step).

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::{IsTerminal, Write};
use vicugna_train::{Progress, StepReport};

/// A bar of `total` items, hidden when stderr is not a terminal.
pub fn bar(total: u64, what: &str) -> ProgressBar {
    let target =
        if std::io::stderr().is_terminal() { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() };
    let b = ProgressBar::with_draw_target(Some(total), target);
    b.set_style(
        ProgressStyle::with_template("{prefix} {pos}/{len} [{bar:24}] {msg} {elapsed} (ETA {eta})")
            .expect("valid template")
            .progress_chars("=> "),
    );
    b.set_prefix(what.to_string());
    b
}

/// Training progress: the bar on a terminal, one line per step otherwise.
pub struct TrainBar {
    bar: ProgressBar,
}

impl Default for TrainBar {
    fn default() -> Self {
        TrainBar { bar: bar(0, "step") }
    }
}

impl TrainBar {
    /// A writer for the run's messages that prints them above the bar instead of through it.
    pub fn log(&self) -> Log {
        Log { bar: self.bar.clone(), line: Vec::new() }
    }
}

impl Progress for TrainBar {
    fn start(&mut self, step: u64, total: u64) {
        self.bar.set_length(total);
        self.bar.set_position(step);
        self.bar.reset_eta(); // the ETA is this run's pace, not the resumed steps'
    }
    fn step(&mut self, r: &StepReport) {
        if self.bar.is_hidden() {
            eprintln!("{}", r.line());
        } else {
            self.bar.set_position(r.step);
            self.bar.set_message(format!("loss {:.4} lr {:.3e} {:.0} tok/s", r.loss, r.lr, r.tokens_per_s));
        }
    }
    fn eval(&mut self, step: u64, loss: f64) {
        self.bar.suspend(|| eprintln!("eval loss {loss:.4} at step {step}"));
    }
    fn finish(&mut self) {
        self.bar.finish();
    }
}

/// Lines written while a bar is drawn, printed above it.
pub struct Log {
    bar: ProgressBar,
    line: Vec<u8>,
}

impl Write for Log {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.line.extend_from_slice(buf);
        while let Some(i) = self.line.iter().position(|&c| c == b'\n') {
            let text = String::from_utf8_lossy(&self.line[..i]).into_owned();
            self.line.drain(..=i);
            self.bar.suspend(|| eprintln!("{text}"));
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}
