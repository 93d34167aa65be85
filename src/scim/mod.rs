//! The SCIM 2.0 client for HERE: requests, typed errors, retries and the rate limit.
//!
//! Every write is retried on throttling and transient failures. A retried POST whose
//! first answer was lost meets `409 uniqueness` and is resolved by adoption in the push
//! stage, never by a duplicate.

pub mod patch;
pub mod path;

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use crate::config::HereConfig;
use crate::http::{is_transient, RetryPolicy};

pub use patch::PatchStyle;

/// The SCIM media type (RFC 7644 §8.1).
pub const SCIM_JSON: &str = "application/scim+json";
/// Core user schema.
pub const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
/// Core group schema.
pub const GROUP_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";

/// `/Users` or `/Groups`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Users,
    Groups,
}

impl Kind {
    /// The collection's path segment.
    pub fn endpoint(self) -> &'static str {
        match self {
            Kind::Users => "Users",
            Kind::Groups => "Groups",
        }
    }
}

/// What HERE's `/ServiceProviderConfig` advertises for `/Bulk` (RFC 7643 §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BulkLimits {
    /// Most operations in one bulk request.
    pub max_operations: usize,
    /// Largest bulk request body, in bytes.
    pub max_payload_size: usize,
}

/// The payload limit assumed when HERE advertises bulk support without one.
const DEFAULT_BULK_PAYLOAD: usize = 1_048_576;

impl BulkLimits {
    /// Reads the `bulk` block of a ServiceProviderConfig; `None` unless bulk is supported
    /// with room for more than one operation.
    pub fn from_service_provider_config(config: &Value) -> Option<BulkLimits> {
        let bulk = config.get("bulk")?;
        let number = |key: &str| bulk.get(key).and_then(Value::as_u64).unwrap_or(0) as usize;
        let supported = bulk.get("supported").and_then(Value::as_bool) == Some(true);
        let max_operations = number("maxOperations");
        let payload = number("maxPayloadSize");
        (supported && max_operations > 1).then_some(BulkLimits {
            max_operations,
            max_payload_size: if payload == 0 {
                DEFAULT_BULK_PAYLOAD
            } else {
                payload
            },
        })
    }
}

/// What can go wrong talking to HERE.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ScimError {
    /// HERE answered with an error (after retries where they make sense).
    #[error("SCIM {method} {path}: {status}{}{}", scim_type.as_ref().map(|t| format!(" {t}")).unwrap_or_default(), detail.as_ref().map(|d| format!(": {d}")).unwrap_or_default())]
    Http {
        method: String,
        path: String,
        status: u16,
        scim_type: Option<String>,
        detail: Option<String>,
    },
    /// The bearer token was refused: nothing else can succeed this cycle.
    #[error("HERE refused the SCIM token ({status} on {method} {path}); the JWT in here.token_file / here.token_env is wrong, expired or lacks Full Admin rights: ask HERE Support for a new one")]
    Unauthorized {
        method: String,
        path: String,
        status: u16,
    },
    /// The network failed (after retries).
    #[error("HERE unreachable ({method} {path}): {detail}")]
    Transport {
        method: String,
        path: String,
        detail: String,
    },
    /// A 2xx answer we could not read.
    #[error("SCIM {method} {path}: unreadable answer: {detail}")]
    Malformed {
        method: String,
        path: String,
        detail: String,
    },
}

impl ScimError {
    /// The HTTP status, when HERE gave one.
    pub fn status(&self) -> Option<u16> {
        match self {
            ScimError::Http { status, .. } | ScimError::Unauthorized { status, .. } => {
                Some(*status)
            }
            _ => None,
        }
    }

    /// 409 uniqueness: the object already exists and can be adopted.
    pub fn is_conflict(&self) -> bool {
        self.status() == Some(409)
    }
}

/// An authenticated, rate-limited SCIM client.
pub struct ScimClient {
    http: reqwest::Client,
    base: String,
    token: SecretString,
    retry: RetryPolicy,
    limiter: DefaultDirectRateLimiter,
    requests: Arc<AtomicU64>,
    /// Requests by `METHOD Resource` (e.g. `POST Users`), for the summary and benchmarks.
    by_kind: std::sync::Mutex<std::collections::BTreeMap<String, u64>>,
}

impl ScimClient {
    /// Builds the client; reads the token from its file or environment variable.
    pub fn new(cfg: &HereConfig) -> Result<ScimClient, crate::config::ConfigError> {
        let token = cfg.token.read("here.token")?;
        let http =
            crate::http::client(cfg.timeout).map_err(|e| crate::config::ConfigError::Secret {
                key: "here".into(),
                message: format!("cannot build the HTTP client: {e}"),
            })?;
        let rps = NonZeroU32::new(cfg.max_requests_per_second).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(cfg.max_concurrency as u32).unwrap_or(NonZeroU32::MIN);
        Ok(ScimClient {
            http,
            base: cfg.base_url.as_str().trim_end_matches('/').to_string(),
            token,
            retry: RetryPolicy::default(),
            limiter: RateLimiter::direct(Quota::per_second(rps).allow_burst(burst.min(rps))),
            requests: Arc::new(AtomicU64::new(0)),
            by_kind: std::sync::Mutex::new(std::collections::BTreeMap::new()),
        })
    }

    /// Requests made so far, retries included.
    pub fn request_count(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Requests made so far by `METHOD Resource`, retries included.
    pub fn request_counts(&self) -> std::collections::BTreeMap<String, u64> {
        self.by_kind
            .lock()
            .map(|m| m.clone())
            .unwrap_or_else(|e| e.into_inner().clone())
    }

    fn count(&self, method: &Method, path: &str) {
        let resource = path.split(['/', '?']).next().unwrap_or(path);
        let key = format!("{method} {resource}");
        let mut map = self.by_kind.lock().unwrap_or_else(|e| e.into_inner());
        *map.entry(key).or_insert(0) += 1;
    }

    /// Sends one request with retries; returns the status and the JSON body, if any.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(StatusCode, Option<Value>), ScimError> {
        self.send(method, path, body.map(Value::to_string)).await
    }

    /// [`ScimClient::request`] with the JSON body already serialised.
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<String>,
    ) -> Result<(StatusCode, Option<Value>), ScimError> {
        let url = format!("{}/{}", self.base, path.trim_start_matches('/'));
        let shown = path.split('?').next().unwrap_or(path).to_string();
        let mut attempt = 0;
        loop {
            attempt += 1;
            self.limiter.until_ready().await;
            let mut req = self
                .http
                .request(method.clone(), &url)
                .bearer_auth(self.token.expose_secret())
                .header(reqwest::header::ACCEPT, SCIM_JSON);
            if let Some(b) = &body {
                req = req
                    .header(reqwest::header::CONTENT_TYPE, SCIM_JSON)
                    .body(b.clone());
            }
            self.requests.fetch_add(1, Ordering::Relaxed);
            self.count(&method, path.trim_start_matches('/'));
            let sent = std::time::Instant::now();
            let resp = match req.send().await {
                Ok(r) => r,
                Err(e) if attempt < self.retry.attempts => {
                    tracing::debug!(method = %method, path = %shown, error = %e.without_url(), "SCIM request failed; retrying");
                    tokio::time::sleep(self.retry.delay(attempt, None)).await;
                    continue;
                }
                Err(e) => {
                    return Err(ScimError::Transport {
                        method: method.to_string(),
                        path: shown,
                        detail: e.without_url().to_string(),
                    })
                }
            };
            let status = resp.status();
            if is_transient(status) && attempt < self.retry.attempts {
                let wait = self.retry.delay(attempt, Some(resp.headers()));
                tracing::debug!(method = %method, path = %shown, status = status.as_u16(), wait_ms = wait.as_millis() as u64, "SCIM throttled or failing; retrying");
                tokio::time::sleep(wait).await;
                continue;
            }
            let bytes = resp.bytes().await.map_err(|e| ScimError::Transport {
                method: method.to_string(),
                path: shown.clone(),
                detail: e.without_url().to_string(),
            })?;
            let json: Option<Value> = serde_json::from_slice(&bytes).ok();
            tracing::trace!(method = %method, path = %shown, status = status.as_u16(), elapsed_us = sent.elapsed().as_micros() as u64, "SCIM answer");
            if status.is_success() {
                return Ok((status, json));
            }
            if matches!(status.as_u16(), 401 | 403) {
                return Err(ScimError::Unauthorized {
                    method: method.to_string(),
                    path: shown,
                    status: status.as_u16(),
                });
            }
            let (scim_type, detail) = error_fields(json.as_ref());
            return Err(ScimError::Http {
                method: method.to_string(),
                path: shown,
                status: status.as_u16(),
                scim_type,
                detail,
            });
        }
    }

    /// The request path of a collection or of one resource in it.
    pub fn path(&self, kind: Kind, id: Option<&str>) -> String {
        match id {
            Some(id) => format!("{}/{}", kind.endpoint(), urlencode(id)),
            None => kind.endpoint().to_string(),
        }
    }

    /// What HERE advertises for `/Bulk`; `None` when it does not support it or its
    /// ServiceProviderConfig cannot be read (single requests then).
    pub async fn bulk_limits(&self) -> Option<BulkLimits> {
        match self.probe().await {
            Ok(config) => BulkLimits::from_service_provider_config(&config),
            Err(e) => {
                tracing::debug!(error = %e, "no ServiceProviderConfig; sending single requests");
                None
            }
        }
    }

    /// POST a BulkRequest (serialised JSON: it can be large); returns the BulkResponse.
    pub async fn bulk(&self, request: String) -> Result<Value, ScimError> {
        let (_, body) = self.send(Method::POST, "Bulk", Some(request)).await?;
        body.ok_or_else(|| ScimError::Malformed {
            method: "POST".into(),
            path: "Bulk".into(),
            detail: "the BulkResponse is not JSON".into(),
        })
    }

    /// Finds one resource by an attribute (`userName`, `displayName`), for adoption.
    pub async fn find(
        &self,
        kind: Kind,
        attribute: &str,
        value: &str,
    ) -> Result<Option<Value>, ScimError> {
        let literal = serde_json::to_string(value).unwrap_or_default();
        let filter = format!("{attribute} eq {literal}");
        let mut path = format!("{}?filter={}", kind.endpoint(), urlencode(&filter));
        if kind == Kind::Groups {
            path.push_str("&excludedAttributes=members");
        }
        let (_, body) = self.request(Method::GET, &path, None).await?;
        Ok(find_in_list(body.as_ref(), attribute, value))
    }

    /// PATCH a resource with some operations.
    pub async fn patch(&self, kind: Kind, id: &str, ops: Vec<Value>) -> Result<(), ScimError> {
        let path = format!("{}/{}", kind.endpoint(), urlencode(id));
        self.request(Method::PATCH, &path, Some(&patch::body(ops)))
            .await
            .map(|_| ())
    }

    /// One authenticated read (for `check`).
    pub async fn probe(&self) -> Result<Value, ScimError> {
        let (_, body) = self
            .request(Method::GET, "ServiceProviderConfig", None)
            .await?;
        Ok(body.unwrap_or(Value::Null))
    }
}

/// `scimType` and `detail` (at most 500 characters) of a SCIM error body (RFC 7644 §3.12).
pub fn error_fields(body: Option<&Value>) -> (Option<String>, Option<String>) {
    let field = |k: &str| {
        body.and_then(|j| j.get(k))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    (
        field("scimType"),
        field("detail").map(|d| d.chars().take(500).collect()),
    )
}

/// The resource of a `ListResponse` whose `attribute` equals `value` (case-insensitively).
pub fn find_in_list(body: Option<&Value>, attribute: &str, value: &str) -> Option<Value> {
    body.and_then(|b| b.get("Resources"))
        .and_then(Value::as_array)?
        .iter()
        .find(|r| {
            r.get(attribute)
                .and_then(Value::as_str)
                .is_some_and(|v| v.eq_ignore_ascii_case(value))
        })
        .cloned()
}

/// Percent-encodes a query or path component.
fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bulk_is_used_only_when_advertised_with_room() {
        let read = |bulk: Value| BulkLimits::from_service_provider_config(&json!({"bulk": bulk}));
        assert_eq!(
            read(json!({"supported": false, "maxOperations": 1000})),
            None
        );
        assert_eq!(read(json!({"supported": true, "maxOperations": 1})), None);
        assert_eq!(
            read(json!({"supported": true, "maxOperations": 1000, "maxPayloadSize": 0})),
            Some(BulkLimits {
                max_operations: 1000,
                max_payload_size: DEFAULT_BULK_PAYLOAD
            })
        );
        assert_eq!(
            read(json!({"supported": true, "maxOperations": 50, "maxPayloadSize": 4096})),
            Some(BulkLimits {
                max_operations: 50,
                max_payload_size: 4096
            })
        );
        assert_eq!(BulkLimits::from_service_provider_config(&json!({})), None);
    }
}
