//! The daemon (`run`): a cycle at start (unless `schedule.run_on_start = false`), then one
//! per schedule tick, never two at once.
//!
//! - **Schedule**: [`schedule::Ticker`] (tokio-cron-scheduler) drops ticks into a one-slot
//!   channel; this loop runs the cycles, so a cycle longer than the interval delays the
//!   next one (with a warning) instead of overlapping it.
//! - **Quarantine backoff**: after a cycle in which HERE failed most operations
//!   (`cycle::quarantine_level` = n > 0), the next cycle waits period × 2^n, at most 24 h.
//! - **SIGTERM/SIGINT**: the push stops issuing operations, the ones in flight finish and
//!   are committed, and `run` exits 0. If in-flight requests would hold the exit past
//!   [`STOP_GRACE`], they are abandoned: acknowledged work is committed already, and an
//!   unacknowledged operation is planned again at the next start (a repeated create is
//!   adopted on `409`).
//! - **SIGHUP**: re-reads the configuration (see [`reload`]).
//! - **systemd** (`Type=notify`): READY, STATUS, RELOADING, STOPPING and the watchdog
//!   (see [`notify`]).

mod notify;
mod reload;
pub mod schedule;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::config::{Config, Schedule};
use crate::cycle::{exit, quarantine_level, run_cycle, CycleOptions, Quiet};
use crate::metrics::{Metrics, MetricsServer};
use crate::report::Summary;
use crate::state::State;
use schedule::{human, Ticker};

/// How long after SIGTERM/SIGINT in-flight requests may take before they are abandoned
/// (the unit's `TimeoutStopSec=` is longer; the SPEC promises an exit within 15 s).
pub const STOP_GRACE: Duration = Duration::from_secs(7);

/// What the signal task reports.
#[derive(Debug, Clone, Copy)]
enum Event {
    Stop(&'static str),
    Reload,
}

/// Runs until SIGTERM or SIGINT; returns the exit code.
pub async fn run(cfg: Config) -> i32 {
    let stop = Arc::new(AtomicBool::new(false));
    let (events_tx, events) = mpsc::unbounded_channel();
    // signals first: a SIGTERM that arrives while the state opens is not lost
    if let Err(e) = watch_signals(stop.clone(), events_tx.clone()) {
        tracing::error!(error = %e, "cannot install the signal handlers");
        return exit::RUNTIME;
    }
    if let Err(e) = schedule::validate(&cfg.schedule.when) {
        tracing::error!(config = %cfg.path.display(), "{e}");
        eprintln!("entra-here-sync: config file {}: {e}", cfg.path.display());
        return exit::CONFIG;
    }
    let state = match State::open(&cfg.state.path) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot open the state");
            eprintln!("entra-here-sync: {e}");
            return exit::RUNTIME;
        }
    };
    let metrics = match start_metrics(&cfg, &state).await {
        Ok(m) => m,
        Err(code) => return code,
    };
    let ticker = match Ticker::start(&cfg.schedule.when).await {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the schedule");
            return exit::RUNTIME;
        }
    };
    let watchdog = notify::spawn_watchdog();
    let mut daemon = Daemon {
        cfg,
        state,
        ticker,
        stop,
        events,
        _events_tx: events_tx,
        backoff_until: None,
        status: "started".into(),
        metrics,
    };
    tracing::info!(
        schedule = %describe(&daemon.cfg.schedule.when),
        run_on_start = daemon.cfg.schedule.run_on_start,
        state = %daemon.cfg.state.path.display(),
        "daemon started"
    );
    let first = if daemon.cfg.schedule.run_on_start {
        "started; first cycle now".to_string()
    } else {
        format!("started; {}", daemon.next_text().await)
    };
    daemon.status = first;
    notify::ready(&daemon.status);
    daemon.main_loop().await;
    notify::stopping();
    tracing::info!("daemon stopped");
    if let Some(w) = watchdog {
        w.abort();
    }
    let Daemon { ticker, state, .. } = daemon;
    let _ = tokio::time::timeout(Duration::from_secs(1), ticker.shutdown()).await;
    drop(state);
    exit::OK
}

/// Starts the metrics endpoint when `[metrics] listen` is set; an address that cannot be
/// bound stops the daemon at start (exit 1) rather than running unobserved.
async fn start_metrics(
    cfg: &Config,
    state: &State,
) -> Result<Option<(Arc<Metrics>, MetricsServer)>, i32> {
    let Some(listen) = cfg.metrics.listen else {
        return Ok(None);
    };
    let metrics = Arc::new(Metrics::new());
    metrics.observe_state(state);
    match crate::metrics::serve(listen, metrics.clone()).await {
        Ok(server) => {
            tracing::info!(listen = %server.addr, "metrics at http://{}/metrics", server.addr);
            Ok(Some((metrics, server)))
        }
        Err(e) => {
            tracing::error!(listen = %listen, error = %e, "cannot serve metrics.listen");
            eprintln!("entra-here-sync: cannot listen on metrics.listen = {listen}: {e}");
            Err(exit::RUNTIME)
        }
    }
}

fn describe(when: &Schedule) -> String {
    match when {
        Schedule::Every(p) => format!("every {}", human(*p)),
        Schedule::Cron(c) => format!("cron {c:?} (UTC)"),
    }
}

/// Turns SIGTERM/SIGINT (stop) and SIGHUP (reload) into events; a stop also sets the
/// flag the push checks between operations, at once.
fn watch_signals(stop: Arc<AtomicBool>, tx: mpsc::UnboundedSender<Event>) -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        loop {
            let event = tokio::select! {
                _ = term.recv() => Event::Stop("SIGTERM"),
                _ = int.recv() => Event::Stop("SIGINT"),
                _ = hup.recv() => Event::Reload,
            };
            if let Event::Stop(_) = event {
                stop.store(true, Ordering::SeqCst);
            }
            if tx.send(event).is_err() {
                return;
            }
        }
    });
    Ok(())
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

struct Daemon {
    cfg: Config,
    state: State,
    ticker: Ticker,
    stop: Arc<AtomicBool>,
    events: mpsc::UnboundedReceiver<Event>,
    /// Keeps the channel open, so `events.recv()` never returns `None`.
    _events_tx: mpsc::UnboundedSender<Event>,
    /// Set after a quarantined cycle: no cycle before this instant.
    backoff_until: Option<Instant>,
    /// The last STATUS= line sent to systemd.
    status: String,
    /// The Prometheus endpoint (`[metrics] listen`), when configured.
    metrics: Option<(Arc<Metrics>, MetricsServer)>,
}

impl Daemon {
    async fn main_loop(&mut self) {
        let mut run_now = self.cfg.schedule.run_on_start;
        loop {
            if !run_now && !self.wait().await {
                return;
            }
            run_now = false;
            if !self.cycle().await || self.stop.load(Ordering::SeqCst) {
                return;
            }
        }
    }

    /// Waits for the next tick (or the end of a backoff), handling reloads meanwhile;
    /// false when asked to stop.
    async fn wait(&mut self) -> bool {
        loop {
            let backoff = self.backoff_until;
            tokio::select! {
                biased;
                event = self.events.recv() => match event {
                    Some(Event::Reload) => self.reload().await,
                    Some(Event::Stop(signal)) => {
                        tracing::info!(signal, "stopping: shutdown requested between cycles");
                        return false;
                    }
                    None => return false,
                },
                _ = sleep_until(backoff) => {
                    self.backoff_until = None;
                    return true;
                }
                // during a backoff ticks wait in their slot and are dropped when it ends
                _ = self.ticker.tick(), if backoff.is_none() => return true,
            }
        }
    }

    /// Runs one cycle under supervision; false when the daemon must stop now.
    async fn cycle(&mut self) -> bool {
        self.ticker.drain();
        let started = Instant::now();
        notify::status(&format!(
            "cycle running since {}; {}",
            clock(),
            self.status_tail()
        ));
        let opts = CycleOptions::default();
        let mut reload_pending = false;
        let mut stop_at: Option<Instant> = None;
        let summary = {
            let mut plan_out = std::io::sink();
            let mut quiet = Quiet;
            let cycle = run_cycle(
                &self.cfg,
                &mut self.state,
                &opts,
                &self.stop,
                &mut plan_out,
                &mut quiet,
            );
            tokio::pin!(cycle);
            loop {
                tokio::select! {
                    summary = &mut cycle => break Some(summary),
                    event = self.events.recv(), if stop_at.is_none() => {
                        if let Some(Event::Reload) = event {
                            reload_pending = true;
                        } else {
                            let signal = signal_name(event);
                            tracing::info!(signal, grace_secs = STOP_GRACE.as_secs(), "stopping: no new operations are started; waiting for the ones in flight");
                            stop_at = Some(Instant::now() + STOP_GRACE);
                        }
                    }
                    _ = sleep_until(stop_at) => break None,
                }
            }
        };
        let Some(summary) = summary else {
            tracing::warn!(
                grace_secs = STOP_GRACE.as_secs(),
                "stopping: abandoned the requests still in flight; every acknowledged operation is committed, the unacknowledged ones are repeated safely at the next start"
            );
            return false;
        };
        if let Some((metrics, _)) = &self.metrics {
            metrics.record_cycle(&summary, &self.state);
        }
        self.after_cycle(&summary, started.elapsed()).await;
        if reload_pending && !self.stop.load(Ordering::SeqCst) {
            self.reload().await;
        }
        true
    }

    /// STATUS=, the overrun warning and the quarantine backoff.
    async fn after_cycle(&mut self, summary: &Summary, took: Duration) {
        let period = schedule::period(&self.cfg.schedule.when).unwrap_or(Duration::from_secs(2400));
        if took > period && !self.stop.load(Ordering::SeqCst) {
            tracing::warn!(
                took = %human(took),
                interval = %human(period),
                "the cycle took longer than the schedule's interval: the next cycle starts now, late (cycles never overlap); consider a longer schedule.every"
            );
        }
        let level = quarantine_level(&self.state);
        self.backoff_until = None;
        if let Some(wait) = schedule::backoff(period, level) {
            self.backoff_until = Some(Instant::now() + wait);
            tracing::warn!(
                quarantine_level = level,
                next_cycle_in = %human(wait),
                "HERE failed most operations in {level} cycle(s) in a row: backing off, the next cycle waits the interval × 2^{level} (at most 24 h)"
            );
        }
        let outcome = match summary.exit_code {
            exit::OK => "ok",
            exit::PARTIAL => "some objects failed",
            exit::BRAKE => "SAFETY STOP",
            _ => "FAILED",
        };
        let next = if self.stop.load(Ordering::SeqCst) {
            "stopping".to_string()
        } else {
            self.next_text().await
        };
        self.status = format!(
            "last cycle {outcome} at {}: {}; {next}",
            clock(),
            summary.one_line()
        );
        notify::status(&self.status);
    }

    /// "next cycle at …" for STATUS= and the log.
    async fn next_text(&mut self) -> String {
        if let Some(until) = self.backoff_until {
            let wait = until.saturating_duration_since(Instant::now());
            return format!("backing off: next cycle in {}", human(wait));
        }
        match self.ticker.next_tick().await {
            Some(t) => format!("next cycle at {}", t.format("%Y-%m-%dT%H:%M:%SZ")),
            None => format!("next cycle {}", describe(&self.cfg.schedule.when)),
        }
    }

    fn status_tail(&self) -> String {
        match self.status.split_once("; ") {
            Some((head, _)) if head.starts_with("last cycle") => head.to_string(),
            _ => "no cycle finished yet".into(),
        }
    }

    async fn reload(&mut self) {
        notify::reloading();
        tracing::info!(config = %self.cfg.path.display(), "SIGHUP: re-reading the configuration");
        if let Some(mut new) = reload::reload(&self.cfg) {
            if new.schedule.when != self.cfg.schedule.when {
                match self.ticker.set(&new.schedule.when).await {
                    Ok(()) => tracing::info!(
                        schedule = %describe(&new.schedule.when),
                        "schedule changed"
                    ),
                    Err(e) => {
                        tracing::error!(error = %e, "cannot apply the new schedule; keeping the old one");
                        new.schedule = self.cfg.schedule.clone();
                    }
                }
            }
            self.cfg = new;
        }
        notify::ready(&self.status);
    }
}

fn signal_name(event: Option<Event>) -> &'static str {
    match event {
        Some(Event::Stop(s)) => s,
        _ => "shutdown",
    }
}

fn clock() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}
