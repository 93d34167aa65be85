//! Progress on an interactive terminal: pages read, operations pushed, with a rate.
//! Non-terminals get log lines only.

use std::io::Write;
use std::time::Instant;

use crate::cycle::Progress;

/// A one-line progress display on stderr, or nothing.
pub struct Bar {
    enabled: bool,
    started: Instant,
    last_draw: Option<Instant>,
}

impl Bar {
    /// `enabled` only when stderr is a terminal.
    pub fn new(enabled: bool) -> Bar {
        Bar {
            enabled,
            started: Instant::now(),
            last_draw: None,
        }
    }

    fn draw(&mut self, text: String, force: bool) {
        if !self.enabled {
            return;
        }
        let now = Instant::now();
        if !force
            && self
                .last_draw
                .is_some_and(|t| now.duration_since(t).as_millis() < 100)
        {
            return;
        }
        self.last_draw = Some(now);
        let mut err = std::io::stderr();
        let _ = write!(err, "\r\x1b[2K{text}");
        let _ = err.flush();
    }

    /// Clears the line.
    pub fn finish(&mut self) {
        if self.enabled && self.last_draw.is_some() {
            let _ = write!(std::io::stderr(), "\r\x1b[2K");
        }
    }
}

impl Progress for Bar {
    fn pages(&mut self, pages: usize) {
        self.draw(format!("reading Entra: {pages} delta page(s)"), false);
    }

    fn pushed(&mut self, done: usize, total: usize) {
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        let rate = done as f64 / secs;
        self.draw(
            format!("pushing to HERE: {done}/{total} operation(s), {rate:.0}/s"),
            done == total,
        );
    }
}
