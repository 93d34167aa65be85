//! Simulated Microsoft Entra tenant (identity platform token endpoint + Graph v1.0 subset) and
//! simulated SCIM 2.0 service provider, used by the `demo` command and by integration tests.
//!
//! Both fakes are small axum servers bound to `127.0.0.1:0`. They model the documented wire
//! behaviour of the real services (paging, delta links, error bodies, throttling) closely enough
//! that a client passing against them should pass against the real ones. A Rust API mutates the
//! tenant, inspects what the client did and injects faults from a seeded (deterministic) PRNG.
//!
//! Layout: `graph` (public handle), `graph_tenant` (tenant model + change log), `graph_delta` (delta rounds and projections),
//! `graph_http` (routing, token endpoint), `graph_users` (one user and its relationships), `scim` (public handle), `scim_store` (resources), `scim_http`
//! (routing, faults, bulk), `scim_meta` (discovery documents), `scim_filter` and `scim_patch`
//! (RFC 7644 §3.4.2.2, §3.5.2).

pub mod graph;
mod graph_delta;
mod graph_http;
mod graph_tenant;
mod graph_users;
pub mod scim;
mod scim_filter;
mod scim_http;
mod scim_meta;
mod scim_patch;
mod scim_store;

#[cfg(test)]
mod graph_tests;
#[cfg(test)]
mod scim_tests;

pub use graph::{DeltaExpiry, GraphFaults, GraphRequest, GraphSim};
pub use scim::{BulkSupport, ScimFaults, ScimRequest, ScimSim};

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard};

use axum::body::Body;
use axum::response::Response;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::Value;
use tokio::sync::oneshot;

/// Both fakes started together (demo + tests).
pub struct Simulator {
    /// The fake Entra tenant: token endpoint and Graph v1.0 on one base URL.
    pub graph: GraphSim,
    /// The fake HERE-shaped SCIM 2.0 service provider.
    pub scim: ScimSim,
}

impl Simulator {
    /// Starts both fakes on the current tokio runtime, each on its own loopback port.
    pub async fn start() -> std::io::Result<Simulator> {
        let graph = GraphSim::start().await?;
        let scim = ScimSim::start().await?;
        Ok(Simulator { graph, scim })
    }
}

/// Locks a mutex, recovering the data if another thread panicked while holding it
/// (the fakes' state stays usable for the assertions that follow a failed test step).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Answers `latency_ms` after the request arrived. The fake's own work happens inside that
/// time, as a real server's does, so a benchmark's round trip is the configured latency
/// rather than latency plus the fake's bookkeeping; a write still lands when its answer is
/// lost to a client that gave up waiting.
pub(crate) async fn answer_after(latency_ms: u64, answer: impl FnOnce() -> Response) -> Response {
    let at = std::time::Instant::now() + std::time::Duration::from_millis(latency_ms);
    let response = answer();
    if latency_ms > 0 {
        sleep_until_precisely(at).await;
    }
    response
}

/// tokio's timer ticks in whole milliseconds and wakes up to one late, which would add
/// ~1 ms to every simulated round trip; the last stretch is slept on a blocking thread,
/// which the OS wakes within microseconds.
async fn sleep_until_precisely(at: std::time::Instant) {
    const COARSE_SLACK: std::time::Duration = std::time::Duration::from_millis(2);
    if let Some(coarse) = at.checked_sub(COARSE_SLACK) {
        tokio::time::sleep_until(coarse.into()).await;
    }
    let rest = at.saturating_duration_since(std::time::Instant::now());
    if !rest.is_zero() {
        // a failed join only means the runtime is shutting down: answer at once
        let _ = tokio::task::spawn_blocking(move || std::thread::sleep(rest)).await;
    }
}

/// SplitMix64: a tiny deterministic PRNG so ids, tokens and fault decisions repeat run to run.
pub(crate) struct Rng(u64);

impl Rng {
    /// A generator whose whole output is determined by `seed`.
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// Next 64 random bits.
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform number in `[0, 1)` for probability faults.
    pub(crate) fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// `n` random bytes.
    pub(crate) fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| (self.next_u64() & 0xFF) as u8).collect()
    }

    /// A version-4-shaped UUID string (the format of Entra object ids).
    pub(crate) fn uuid(&mut self) -> String {
        let mut b = [0u8; 16];
        b.copy_from_slice(&self.bytes(16));
        uuid::Builder::from_random_bytes(b).into_uuid().to_string()
    }

    /// An opaque base64url token made of `n` random bytes.
    pub(crate) fn token(&mut self, n: usize) -> String {
        b64url(&self.bytes(n))
    }

    /// A JWT-looking string `header.claims.signature`; the signature is random bytes.
    pub(crate) fn fake_jwt(&mut self, header: &Value, claims: &Value) -> String {
        let sig = self.token(64);
        format!(
            "{}.{}.{}",
            b64url(header.to_string().as_bytes()),
            b64url(claims.to_string().as_bytes()),
            sig
        )
    }
}

/// Base64url without padding (JWT segments, opaque tokens).
pub(crate) fn b64url(data: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(data)
}

/// Decodes base64url with or without padding; `None` when malformed.
pub(crate) fn b64url_decode(s: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(s.trim_end_matches('=')).ok()
}

/// Percent-decodes a URL path segment (`+` is kept: it is literal in paths).
pub(crate) fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
            if let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Decodes a query string (form encoding, as HTTP clients send it) into a sorted map.
pub(crate) fn parse_query(q: Option<&str>) -> BTreeMap<String, String> {
    url::form_urlencoded::parse(q.unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

/// Builds a response with an optional JSON body, a content type and extra headers.
pub(crate) fn respond(
    status: u16,
    body: Option<&Value>,
    content_type: &str,
    headers: &[(String, String)],
) -> Response {
    let mut b = http::Response::builder().status(
        http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR),
    );
    if body.is_some() {
        b = b.header(http::header::CONTENT_TYPE, content_type);
    }
    for (k, v) in headers {
        b = b.header(k.as_str(), v.as_str());
    }
    let bytes = body.map(|v| v.to_string().into_bytes()).unwrap_or_default();
    b.body(Body::from(bytes)).unwrap_or_else(|_| {
        let mut r = Response::new(Body::empty());
        *r.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
        r
    })
}

/// A running axum server; dropping it (or calling `stop`) shuts the server down gracefully.
pub(crate) struct Server {
    addr: SocketAddr,
    stop: Mutex<Option<oneshot::Sender<()>>>,
}

impl Server {
    /// Binds `127.0.0.1:0` (the port is chosen by the OS).
    pub(crate) async fn bind() -> std::io::Result<tokio::net::TcpListener> {
        tokio::net::TcpListener::bind(("127.0.0.1", 0)).await
    }

    /// Spawns the serving task for an already bound listener.
    pub(crate) fn spawn(
        listener: tokio::net::TcpListener,
        router: axum::Router,
    ) -> std::io::Result<Server> {
        let addr = listener.local_addr()?;
        let (tx, rx) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let stop = async move {
                let _ = rx.await;
            };
            let _ = axum::serve(listener, router)
                .with_graceful_shutdown(stop)
                .await;
        });
        Ok(Server {
            addr,
            stop: Mutex::new(Some(tx)),
        })
    }

    /// The bound loopback address.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Asks the server to stop accepting and to close idle connections.
    pub(crate) fn stop(&self) {
        if let Some(tx) = lock(&self.stop).take() {
            let _ = tx.send(());
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_is_deterministic_and_uuid_shaped() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        let (x, y) = (a.uuid(), b.uuid());
        assert_eq!(x, y);
        assert_eq!(x.len(), 36);
        assert_eq!(&x[14..15], "4");
        let u = a.unit();
        assert!((0.0..1.0).contains(&u));
    }

    #[tokio::test]
    async fn simulator_starts_both_and_stops_on_drop() {
        let sim = Simulator::start().await.unwrap();
        assert!(sim.scim.base_url().ends_with("/scim/api/v2"));
        let url = format!("{}/v1.0/users/delta", sim.graph.base_url());
        let http = reqwest::Client::new();
        assert_eq!(http.get(&url).send().await.unwrap().status(), 401);
        let clone = sim.graph.clone();
        drop(sim);
        assert_eq!(
            http.get(&url).send().await.unwrap().status(),
            401,
            "a clone keeps it up"
        );
        drop(clone);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let fresh = reqwest::Client::new();
        assert!(
            fresh.get(&url).send().await.is_err(),
            "server gone with the last clone"
        );
    }

    #[test]
    fn percent_decode_handles_escapes_and_plain_text() {
        assert_eq!(percent_decode("a%40b.com"), "a@b.com");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("x+y"), "x+y");
    }
}
