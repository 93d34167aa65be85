//! Microsoft Graph: authentication, the app's assignments, and delta rounds over users
//! and groups.
//!
//! Every request carries `x-ms-throttle-priority: Low` (a background sync should yield to
//! interactive traffic), retries throttling and transient errors with backoff, and
//! refreshes the token once on a 401.

mod auth;
mod delta;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use reqwest::StatusCode;
use secrecy::ExposeSecret;
use serde_json::Value;

pub use auth::TokenSource;
pub(crate) use delta::{apply_page, Resource};
pub use delta::{read_directory, ReadStats};

use crate::config::GraphConfig;
use crate::http::{is_transient, RetryPolicy};

/// What can go wrong talking to Graph.
#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    /// The credential could not be read or used locally.
    #[error("Graph credential: {0}")]
    Credential(String),
    /// Entra refused to issue a token.
    #[error("Graph token request refused: {code}: {description}. Check graph.tenant_id, graph.client_id and the client secret or certificate")]
    Auth { code: String, description: String },
    /// Graph answered with an error.
    #[error("Graph {status} {code} on {url}: {message}{hint}")]
    Http {
        status: u16,
        code: String,
        message: String,
        url: String,
        hint: &'static str,
    },
    /// The network failed (after retries).
    #[error("Graph unreachable ({url}): {detail}")]
    Transport { url: String, detail: String },
    /// The stored delta link is no longer valid; a full resync is needed.
    #[error("Graph delta link expired or reset ({status} {code}); a full resync is needed")]
    ResyncRequired { status: u16, code: String },
    /// Graph answered 200 with something we cannot read.
    #[error("Graph answered {url} with an unreadable body: {detail}")]
    Malformed { url: String, detail: String },
    /// Writing the mirror failed.
    #[error(transparent)]
    State(#[from] crate::state::StateError),
}

/// An authenticated Graph client.
pub struct GraphClient {
    http: reqwest::Client,
    tokens: TokenSource,
    base: url::Url,
    service_principal_id: String,
    retry: RetryPolicy,
    requests: Arc<AtomicU64>,
}

impl GraphClient {
    /// Builds the client and reads the credential (no request yet).
    pub fn new(cfg: &GraphConfig, timeout: std::time::Duration) -> Result<GraphClient, GraphError> {
        let http = crate::http::client(timeout).map_err(|e| GraphError::Transport {
            url: cfg.graph_url.to_string(),
            detail: e.to_string(),
        })?;
        Ok(GraphClient {
            tokens: TokenSource::new(cfg, http.clone())?,
            http,
            base: cfg.graph_url.clone(),
            service_principal_id: cfg.service_principal_id.clone(),
            retry: RetryPolicy::default(),
            requests: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Requests made so far (token requests excluded).
    pub fn request_count(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Fetches a token now (for `check`).
    pub async fn check_token(&self) -> Result<(), GraphError> {
        self.tokens.token().await.map(|_| ())
    }

    /// An absolute URL under `{graph_url}/v1.0/`.
    pub fn url(&self, path: &str) -> String {
        let mut base = self.base.to_string();
        if !base.ends_with('/') {
            base.push('/');
        }
        format!("{base}v1.0/{path}")
    }

    /// GET a Graph URL as JSON, with retries and one token refresh on 401.
    pub async fn get(&self, url: &str, prefer_minimal: bool) -> Result<Value, GraphError> {
        let mut refreshed = false;
        let mut attempt = 0;
        let started = std::time::Instant::now();
        loop {
            attempt += 1;
            let token = self.tokens.token().await?;
            let mut req = self
                .http
                .get(url)
                .bearer_auth(token.expose_secret())
                .header("x-ms-throttle-priority", "Low")
                .header("Accept", "application/json");
            if prefer_minimal {
                req = req.header("Prefer", "return=minimal");
            }
            self.requests.fetch_add(1, Ordering::Relaxed);
            let resp = match req.send().await {
                Ok(r) => r,
                Err(e) if attempt < self.retry.attempts => {
                    tracing::debug!(url = %strip_query(url), error = %e.without_url(), "Graph request failed; retrying");
                    tokio::time::sleep(self.retry.delay(attempt, None)).await;
                    continue;
                }
                Err(e) => {
                    return Err(GraphError::Transport {
                        url: strip_query(url),
                        detail: e.without_url().to_string(),
                    })
                }
            };
            let status = resp.status();
            if status.is_success() {
                let page = resp.json().await.map_err(|e| GraphError::Malformed {
                    url: strip_query(url),
                    detail: e.without_url().to_string(),
                });
                tracing::trace!(url = %strip_query(url), elapsed_ms = started.elapsed().as_millis() as u64, "Graph page read");
                return page;
            }
            if status == StatusCode::UNAUTHORIZED && !refreshed {
                refreshed = true;
                self.tokens.invalidate().await;
                continue;
            }
            if is_transient(status) && attempt < self.retry.attempts {
                let wait = self.retry.delay(attempt, Some(resp.headers()));
                tracing::warn!(url = %strip_query(url), status = status.as_u16(), wait_ms = wait.as_millis() as u64, "Graph throttled or unavailable; waiting");
                tokio::time::sleep(wait).await;
                continue;
            }
            return Err(error_from(url, status, resp).await);
        }
    }

    /// The enterprise app's service principal (for `check`).
    pub async fn service_principal(&self) -> Result<Value, GraphError> {
        let url = self.url(&format!(
            "servicePrincipals/{}?$select=id,appId,displayName",
            self.service_principal_id
        ));
        self.get(&url, false).await
    }

    /// Every (principal id, principal type) assigned to the app, all pages.
    pub async fn assignments(&self) -> Result<Vec<(String, String)>, GraphError> {
        let mut url = self.url(&format!(
            "servicePrincipals/{}/appRoleAssignedTo?$top=999&$select=principalId,principalType,deletedDateTime",
            self.service_principal_id
        ));
        let mut out = Vec::new();
        loop {
            let page = self.get(&url, false).await?;
            out.extend(assignments_of(&page, &url)?);
            match page.get("@odata.nextLink").and_then(Value::as_str) {
                Some(next) => url = next.to_string(),
                None => return Ok(out),
            }
        }
    }
}

/// The live user and group principals of one `appRoleAssignedTo` page, as (id, type).
pub fn assignments_of(page: &Value, url: &str) -> Result<Vec<(String, String)>, GraphError> {
    let mut out = Vec::new();
    for a in page_values(page, url)? {
        let id = a.get("principalId").and_then(Value::as_str);
        let kind = a.get("principalType").and_then(Value::as_str);
        let deleted = a.get("deletedDateTime").is_some_and(|d| !d.is_null());
        if let (Some(id), Some(kind @ ("User" | "Group")), false) = (id, kind, deleted) {
            out.push((id.to_string(), kind.to_string()));
        }
    }
    Ok(out)
}

/// The `value` array of a Graph collection page.
pub fn page_values<'a>(page: &'a Value, url: &str) -> Result<&'a Vec<Value>, GraphError> {
    page.get("value")
        .and_then(Value::as_array)
        .ok_or_else(|| GraphError::Malformed {
            url: strip_query(url),
            detail: "no `value` array".into(),
        })
}

/// A URL without its query (delta and skip tokens are long and say nothing to an operator).
pub fn strip_query(url: &str) -> String {
    url.split('?').next().unwrap_or(url).to_string()
}

async fn error_from(url: &str, status: StatusCode, resp: reqwest::Response) -> GraphError {
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    let code = body["error"]["code"].as_str().unwrap_or("").to_string();
    let message = body["error"]["message"].as_str().unwrap_or("").to_string();
    let resync = status == StatusCode::GONE
        || (status.is_client_error()
            && ["syncStateNotFound", "resyncRequired", "syncStateInvalid"]
                .iter()
                .any(|c| c.eq_ignore_ascii_case(&code)));
    if resync {
        return GraphError::ResyncRequired {
            status: status.as_u16(),
            code,
        };
    }
    let hint = match status.as_u16() {
        401 => " — the token was refused; check the app registration's credentials",
        403 => " — grant the app the application permissions Application.Read.All, User.Read.All and GroupMember.Read.All, with admin consent",
        404 if url.contains("servicePrincipals") => " — check graph.service_principal_id (the enterprise app's object id)",
        _ => "",
    };
    GraphError::Http {
        status: status.as_u16(),
        code,
        message,
        url: strip_query(url),
        hint,
    }
}
