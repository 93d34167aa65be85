//! When `run` starts cycles: a tokio-cron-scheduler job (a fixed-period repeated job for
//! `schedule.every`, a cron job for `schedule.cron`) that only drops a tick into a
//! one-slot channel. The daemon's loop runs the cycles itself, so two can never overlap;
//! ticks that arrive while a cycle runs collapse into one, which starts the next cycle as
//! soon as the long one ends.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_cron_scheduler::{Job, JobScheduler};
use tracing::instrument::WithSubscriber;
use uuid::Uuid;

use crate::config::Schedule;

/// The longest the quarantine backoff ever waits.
pub const MAX_BACKOFF: Duration = Duration::from_secs(24 * 3600);

/// Parses `schedule.cron` exactly as the scheduler will (six fields, seconds first, UTC).
fn parse_cron(expr: &str) -> Result<croner::Cron, String> {
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Required)
        .dom_and_dow(true)
        .build()
        .parse(expr)
        .map_err(|e| {
            format!(
                "schedule.cron: {expr:?} is not a cron expression with six fields \"sec min hour day-of-month month day-of-week\" in UTC, e.g. \"0 0 * * * *\" ({e})"
            )
        })
}

/// Checks the schedule the way the daemon will use it; the message names the key.
pub fn validate(when: &Schedule) -> Result<(), String> {
    period(when).map(|_| ())
}

/// The nominal time between two cycles: the fixed period, or for a cron the gap between
/// its next two firings (the base of the quarantine backoff and of the overrun warning).
pub fn period(when: &Schedule) -> Result<Duration, String> {
    match when {
        Schedule::Every(p) => Ok(*p),
        Schedule::Cron(expr) => {
            let cron = parse_cron(expr)?;
            let never = || format!("schedule.cron: {expr:?} never fires again");
            let now = chrono::Utc::now();
            let first = cron
                .find_next_occurrence(&now, false)
                .map_err(|_| never())?;
            let second = cron
                .find_next_occurrence(&first, false)
                .map_err(|_| never())?;
            Ok((second - first).to_std().unwrap_or(Duration::from_secs(1)))
        }
    }
}

/// How long to wait before the cycle after a quarantined one: `period × 2^level`, at most
/// [`MAX_BACKOFF`]; `None` when HERE is healthy (`level` 0).
pub fn backoff(period: Duration, level: u32) -> Option<Duration> {
    if level == 0 {
        return None;
    }
    let factor = 1u32.checked_shl(level.min(31)).unwrap_or(u32::MAX);
    Some(
        period
            .checked_mul(factor)
            .unwrap_or(MAX_BACKOFF)
            .min(MAX_BACKOFF),
    )
}

/// "40m", "1h 30m": durations as operators write them in the config.
pub fn human(d: Duration) -> String {
    humantime::format_duration(Duration::from_secs(d.as_secs().max(1))).to_string()
}

/// The running scheduler and the receiving end of its ticks.
pub struct Ticker {
    scheduler: JobScheduler,
    job: Option<Uuid>,
    tx: mpsc::Sender<()>,
    rx: mpsc::Receiver<()>,
}

type Fire = Pin<Box<dyn Future<Output = ()> + Send>>;

fn job(when: &Schedule, tx: mpsc::Sender<()>) -> Result<Job, String> {
    let fire = move |_id: Uuid, _sched: JobScheduler| -> Fire {
        let tx = tx.clone();
        Box::pin(async move {
            // a full slot means a tick is already waiting: they collapse into one
            let _ = tx.try_send(());
        })
    };
    match when {
        Schedule::Every(p) => Job::new_repeated_async(*p, fire)
            .map_err(|e| format!("schedule.every: cannot schedule {}: {e:?}", human(*p))),
        Schedule::Cron(expr) => {
            parse_cron(expr)?;
            Job::new_async(expr.as_str(), fire)
                .map_err(|e| format!("schedule.cron: cannot schedule {expr:?}: {e:?}"))
        }
    }
}

impl Ticker {
    /// Starts the scheduler with one job for `when`.
    pub async fn start(when: &Schedule) -> Result<Ticker, String> {
        let scheduler = JobScheduler::new()
            .await
            .map_err(|e| format!("cannot start the scheduler: {e:?}"))?;
        let (tx, rx) = mpsc::channel(1);
        let mut ticker = Ticker {
            scheduler,
            job: None,
            tx,
            rx,
        };
        ticker.set(when).await?;
        ticker
            .scheduler
            .start()
            .await
            .map_err(|e| format!("cannot start the scheduler: {e:?}"))?;
        Ok(ticker)
    }

    /// Replaces the job (after a reload changed the schedule).
    pub async fn set(&mut self, when: &Schedule) -> Result<(), String> {
        let new = job(when, self.tx.clone())?;
        if let Some(old) = self.job.take() {
            if let Err(e) = self.scheduler.remove(&old).await {
                tracing::warn!(error = ?e, "cannot remove the previous schedule");
            }
        }
        // the scheduler announces every added job at INFO ("Uninited", "Job creator
        // created"): noise in an operator's syslog, so its own events are muted here
        let id = self
            .scheduler
            .add(new)
            .with_subscriber(tracing::subscriber::NoSubscriber::default())
            .await
            .map_err(|e| format!("cannot add the schedule: {e:?}"))?;
        self.job = Some(id);
        self.drain();
        Ok(())
    }

    /// Waits for the next tick (pending forever if the scheduler went away).
    pub async fn tick(&mut self) {
        if self.rx.recv().await.is_none() {
            std::future::pending::<()>().await;
        }
    }

    /// Forgets a waiting tick; true if there was one.
    pub fn drain(&mut self) -> bool {
        let mut had = false;
        while self.rx.try_recv().is_ok() {
            had = true;
        }
        had
    }

    /// When the job fires next, if the scheduler knows.
    pub async fn next_tick(&mut self) -> Option<chrono::DateTime<chrono::Utc>> {
        let id = self.job?;
        self.scheduler.next_tick_for_job(id).await.ok().flatten()
    }

    /// Stops the scheduler.
    pub async fn shutdown(mut self) {
        if let Err(e) = self.scheduler.shutdown().await {
            tracing::debug!(error = ?e, "scheduler shutdown");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_per_level_and_is_capped_at_a_day() {
        let p = Duration::from_secs(40 * 60);
        assert_eq!(backoff(p, 0), None);
        assert_eq!(backoff(p, 1), Some(Duration::from_secs(80 * 60)));
        assert_eq!(backoff(p, 3), Some(Duration::from_secs(320 * 60)));
        assert_eq!(backoff(p, 6), Some(MAX_BACKOFF));
        assert_eq!(backoff(p, 200), Some(MAX_BACKOFF));
        assert_eq!(
            backoff(Duration::from_secs(2), 2),
            Some(Duration::from_secs(8))
        );
    }

    #[test]
    fn cron_period_is_the_gap_between_firings_and_bad_crons_name_the_key() {
        let hourly = Schedule::Cron("0 0 * * * *".into());
        assert_eq!(period(&hourly), Ok(Duration::from_secs(3600)));
        let every = Schedule::Every(Duration::from_secs(2400));
        assert_eq!(period(&every), Ok(Duration::from_secs(2400)));
        let bad = period(&Schedule::Cron("every 40 minutes".into())).unwrap_err();
        assert!(bad.starts_with("schedule.cron:"), "{bad}");
        let never = validate(&Schedule::Cron("0 0 0 1 1 * 2017".into())).unwrap_err();
        assert!(never.contains("schedule.cron"), "{never}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn repeated_job_ticks_and_ticks_collapse_while_busy() {
        let mut t = Ticker::start(&Schedule::Every(Duration::from_secs(1)))
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(4), t.tick())
            .await
            .expect("a tick within 4 s");
        // nobody consumes for 2.6 s: at most one tick waits
        tokio::time::sleep(Duration::from_millis(2600)).await;
        assert!(t.drain(), "a tick waited");
        assert!(!t.drain(), "ticks collapsed into one");
        t.set(&Schedule::Cron("0 0 0 1 1 *".into())).await.unwrap();
        assert!(t.next_tick().await.is_some());
        t.shutdown().await;
    }
}
