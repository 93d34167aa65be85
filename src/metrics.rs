//! Prometheus metrics of the daemon (`[metrics] listen = "127.0.0.1:9464"`): served at
//! `http://LISTEN/metrics` in the OpenMetrics text format (which Prometheus scrapes
//! natively) while `run` runs, so operators can alert on a sync that stopped, a brake that
//! engaged, an escrow that grows or a delta link about to expire — without reading logs.
//!
//! Recorded once after each cycle from its [`Summary`] and the state (operations by kind
//! and result come from the run's history rows), so the numbers match `status` exactly.

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use axum::extract::State as AxumState;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};
use tokio::sync::oneshot;

use crate::cycle::exit;
use crate::report::Summary;
use crate::state::State;

/// Label sets: `[("result", "ok")]`, `[("kind", "create_user"), ("result", "ok")]`, …
type Labels = Vec<(String, String)>;

/// The content type of the OpenMetrics text exposition.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The daemon's metrics; cheap to share (every handle is reference-counted).
pub struct Metrics {
    registry: Registry,
    cycles: Family<Labels, Counter>,
    operations: Family<Labels, Counter>,
    duration: Histogram,
    graph_requests: Counter,
    scim_requests: Counter,
    escrow: Gauge,
    brake: Gauge,
    last_success: Gauge,
    delta_link_age: Family<Labels, Gauge<f64, AtomicU64>>,
    /// (resource, Unix time the link was stored): ages are computed at scrape time.
    delta_links: Mutex<Vec<(String, i64)>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every metric registered (prefix `entra_here_sync_`).
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("entra_here_sync");
        let m = Metrics {
            cycles: Family::default(),
            operations: Family::default(),
            duration: Histogram::new(exponential_buckets(0.25, 2.0, 16)),
            graph_requests: Counter::default(),
            scim_requests: Counter::default(),
            escrow: Gauge::default(),
            brake: Gauge::default(),
            last_success: Gauge::default(),
            delta_link_age: Family::default(),
            delta_links: Mutex::new(Vec::new()),
            registry: Registry::default(),
        };
        registry.register(
            "cycles",
            "Sync cycles by result (ok, partial: some objects failed, brake: safety stop, failed)",
            m.cycles.clone(),
        );
        registry.register(
            "operations",
            "Operations pushed to HERE by kind (create_user, deactivate_user, add_members, ...) and result (ok, failed)",
            m.operations.clone(),
        );
        registry.register_with_unit(
            "cycle_duration",
            "Duration of sync cycles",
            Unit::Seconds,
            m.duration.clone(),
        );
        registry.register(
            "graph_requests",
            "Requests made to Microsoft Graph",
            m.graph_requests.clone(),
        );
        registry.register(
            "scim_requests",
            "Requests made to HERE's SCIM API",
            m.scim_requests.clone(),
        );
        registry.register(
            "escrow_objects",
            "Objects whose push failed and that wait for a retry (see `status`)",
            m.escrow.clone(),
        );
        registry.register(
            "brake_engaged",
            "1 when the last cycle stopped at the mass-deactivation safety brake (exit 4)",
            m.brake.clone(),
        );
        registry.register_with_unit(
            "last_success_timestamp",
            "Unix time of the end of the last cycle that completed (exit 0 or 3)",
            Unit::Seconds,
            m.last_success.clone(),
        );
        registry.register_with_unit(
            "delta_link_age",
            "Age of the stored Graph delta link by resource; Graph expires links after 7 days",
            Unit::Seconds,
            m.delta_link_age.clone(),
        );
        for result in ["ok", "partial", "brake", "failed"] {
            // every result exists from the start, so `increase()` sees the first cycle
            let _ = m.cycles.get_or_create(&label("result", result));
        }
        Metrics { registry, ..m }
    }

    /// Records one finished cycle: its summary, the operations its run recorded, and the
    /// state's escrow and delta links.
    pub fn record_cycle(&self, summary: &Summary, state: &State) {
        let result = match summary.exit_code {
            exit::OK => "ok",
            exit::PARTIAL => "partial",
            exit::BRAKE => "brake",
            _ => "failed",
        };
        self.cycles.get_or_create(&label("result", result)).inc();
        self.duration.observe(summary.duration_ms as f64 / 1000.0);
        self.graph_requests.inc_by(summary.graph_requests);
        self.scim_requests.inc_by(summary.scim_requests);
        self.brake.set(i64::from(summary.exit_code == exit::BRAKE));
        if matches!(summary.exit_code, exit::OK | exit::PARTIAL) {
            self.last_success.set(crate::state::now());
        }
        let run = state
            .recent_runs(1)
            .ok()
            .and_then(|r| r.first().map(|r| r.id));
        let counts = run.map(|id| state.operation_counts(id));
        match counts {
            Some(Ok(rows)) => {
                for (op, ok, n) in rows {
                    let result = if ok { "ok" } else { "failed" };
                    let labels = vec![("kind".into(), op), ("result".into(), result.into())];
                    self.operations.get_or_create(&labels).inc_by(n);
                }
            }
            Some(Err(e)) => {
                tracing::warn!(error = %e, "metrics: cannot count the cycle's operations")
            }
            None => {}
        }
        self.observe_state(state);
    }

    /// Refreshes what the state alone says (escrow size, delta links); also at start.
    pub fn observe_state(&self, state: &State) {
        if let Ok(failures) = state.failures() {
            self.escrow.set(failures.len() as i64);
        }
        if let Ok(ages) = state.delta_link_ages() {
            let now = crate::state::now();
            let links = ages.into_iter().map(|(r, age)| (r, now - age)).collect();
            *self.delta_links.lock().unwrap_or_else(|e| e.into_inner()) = links;
        }
    }

    /// The exposition text (delta link ages computed now).
    pub fn encode(&self) -> String {
        let now = crate::state::now();
        let links = self
            .delta_links
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for (resource, stored_at) in links {
            let age = (now - stored_at).max(0) as f64;
            self.delta_link_age
                .get_or_create(&label("resource", &resource))
                .set(age);
        }
        let mut out = String::new();
        if let Err(e) = encode(&mut out, &self.registry) {
            tracing::warn!(error = %e, "metrics: cannot encode");
        }
        out
    }
}

fn label(key: &str, value: &str) -> Labels {
    vec![(key.to_string(), value.to_string())]
}

/// The running metrics endpoint; dropping it stops the server.
pub struct MetricsServer {
    /// The address actually bound (useful when the config says port 0).
    pub addr: SocketAddr,
    _stop: oneshot::Sender<()>,
}

/// Binds `listen` and serves `GET /metrics` until the returned handle is dropped.
pub async fn serve(listen: SocketAddr, metrics: Arc<Metrics>) -> std::io::Result<MetricsServer> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let app = Router::new()
        .route("/metrics", get(scrape))
        .with_state(metrics);
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(async move {
        let shutdown = async move {
            let _ = stopped.await;
        };
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!(error = %e, "metrics endpoint stopped");
        }
    });
    Ok(MetricsServer { addr, _stop: stop })
}

async fn scrape(AxumState(metrics): AxumState<Arc<Metrics>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], metrics.encode())
}
