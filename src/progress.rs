//! Progress of an interactive `sync` on a terminal (indicatif): a spinner while Entra is
//! read, then a bar of operations pushed with rate and ETA. Non-terminals get log lines
//! only: the bar is hidden and draws nothing.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::cycle::Progress;

/// The progress display on stderr, or nothing.
pub struct Bar {
    bar: ProgressBar,
    pushing: bool,
}

impl Bar {
    /// `enabled` only when stderr is a terminal (and no `--json`): otherwise hidden.
    pub fn new(enabled: bool) -> Bar {
        let target = if enabled {
            ProgressDrawTarget::stderr_with_hz(10)
        } else {
            ProgressDrawTarget::hidden()
        };
        let bar = ProgressBar::with_draw_target(None, target);
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg} [{elapsed}]")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        if enabled {
            bar.enable_steady_tick(Duration::from_millis(120));
        }
        bar.set_message("reading Entra");
        Bar {
            bar,
            pushing: false,
        }
    }

    /// True when it draws nothing (stderr is not a terminal).
    pub fn is_hidden(&self) -> bool {
        self.bar.is_hidden()
    }

    /// Clears the display.
    pub fn finish(&mut self) {
        self.bar.finish_and_clear();
    }
}

impl Progress for Bar {
    fn pages(&mut self, pages: usize) {
        self.bar
            .set_message(format!("reading Entra: {pages} delta page(s)"));
    }

    fn pushed(&mut self, done: usize, total: usize) {
        if !self.pushing {
            self.pushing = true;
            self.bar.set_style(
                ProgressStyle::with_template(
                    "pushing to HERE {bar:30} {pos}/{len} operation(s), {per_sec}, ETA {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            self.bar.set_length(total as u64);
            self.bar.reset_eta();
        }
        self.bar.set_position(done as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hidden_bar_takes_every_callback_and_draws_nothing() {
        let mut b = Bar::new(false);
        assert!(b.is_hidden());
        b.pages(3);
        b.pushed(1, 10);
        b.pushed(10, 10);
        assert_eq!(b.bar.position(), 10);
        assert_eq!(b.bar.length(), Some(10));
        b.finish();
    }
}
