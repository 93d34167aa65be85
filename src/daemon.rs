//! The daemon (`run`): a cycle at start, then one per schedule tick, never two at once;
//! SIGTERM/SIGINT let the current operation finish, commit, and exit 0.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::config::{Config, Schedule};
use crate::cycle::{exit, run_cycle, CycleOptions, Quiet};
use crate::state::State;

/// Runs until SIGTERM or SIGINT; returns the exit code.
pub async fn run(cfg: &Config) -> i32 {
    let mut state = match State::open(&cfg.state.path) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot open the state");
            return exit::RUNTIME;
        }
    };
    let Schedule::Every(period) = cfg.schedule.when.clone() else {
        tracing::error!("schedule.cron is not supported yet; use schedule.every");
        return exit::CONFIG;
    };
    let stop = Arc::new(AtomicBool::new(false));
    let notify = Arc::new(tokio::sync::Notify::new());
    spawn_signal_watch(stop.clone(), notify.clone());
    tracing::info!(every_secs = period.as_secs(), "daemon started");
    let mut first = cfg.schedule.run_on_start;
    while !stop.load(Ordering::Relaxed) {
        if !first {
            tokio::select! {
                _ = tokio::time::sleep(period) => {}
                _ = notify.notified() => break,
            }
        }
        first = false;
        let opts = CycleOptions::default();
        run_cycle(
            cfg,
            &mut state,
            &opts,
            &stop,
            &mut std::io::sink(),
            &mut Quiet,
        )
        .await;
    }
    tracing::info!("stopping: shutdown requested");
    exit::OK
}

fn spawn_signal_watch(stop: Arc<AtomicBool>, notify: Arc<tokio::sync::Notify>) {
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, "cannot watch SIGTERM");
                    return;
                }
            };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        stop.store(true, Ordering::Relaxed);
        notify.notify_waiters();
        notify.notify_one();
    });
}
