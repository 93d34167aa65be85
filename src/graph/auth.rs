//! Client-credentials tokens for Graph (client secret or certificate assertion), cached
//! until shortly before they expire.

use std::time::{Duration, Instant};

use base64::Engine;
use oauth2::basic::{BasicClient, BasicErrorResponse, BasicRequestTokenError};
use oauth2::{AuthType, ClientId, ClientSecret, Scope, TokenResponse, TokenUrl};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use tokio::sync::Mutex;

use super::GraphError;
use crate::config::{GraphConfig, GraphCredential};

/// Refresh this long before the token's stated expiry.
const EARLY_REFRESH: Duration = Duration::from_secs(300);

/// Hands out a valid access token, fetching a new one only when needed.
pub struct TokenSource {
    http: reqwest::Client,
    token_url: String,
    scope: String,
    client_id: String,
    credential: Credential,
    cached: Mutex<Option<(SecretString, Instant)>>,
}

enum Credential {
    Secret(SecretString),
    Certificate {
        /// base64url SHA-256 of the certificate's DER (`x5t#S256`).
        thumbprint: String,
        key: Box<jsonwebtoken::EncodingKey>,
    },
}

impl TokenSource {
    /// Reads the credential named by the config (secret file/env or certificate + key).
    pub fn new(cfg: &GraphConfig, http: reqwest::Client) -> Result<TokenSource, GraphError> {
        let credential = match &cfg.credential {
            GraphCredential::Secret(source) => Credential::Secret(
                source
                    .read("graph.client_secret")
                    .map_err(|e| GraphError::Credential(e.to_string()))?,
            ),
            GraphCredential::Certificate {
                certificate_file,
                private_key_file,
            } => load_certificate(certificate_file, private_key_file)?,
        };
        let token_url = cfg
            .authority_url
            .join(&format!("{}/oauth2/v2.0/token", cfg.tenant_id))
            .map_err(|e| GraphError::Credential(format!("graph.authority_url: {e}")))?;
        let scope = cfg
            .graph_url
            .join(".default")
            .map_err(|e| GraphError::Credential(format!("graph.graph_url: {e}")))?;
        Ok(TokenSource {
            http,
            token_url: token_url.to_string(),
            scope: scope.to_string(),
            client_id: cfg.client_id.clone(),
            credential,
            cached: Mutex::new(None),
        })
    }

    /// A token valid for at least a few more minutes.
    pub async fn token(&self) -> Result<SecretString, GraphError> {
        let mut cached = self.cached.lock().await;
        if let Some((token, valid_until)) = cached.as_ref() {
            if Instant::now() < *valid_until {
                return Ok(token.clone());
            }
        }
        let (token, lifetime) = self.fetch().await?;
        let valid_for = lifetime.saturating_sub(EARLY_REFRESH).max(lifetime / 2);
        *cached = Some((token.clone(), Instant::now() + valid_for));
        Ok(token)
    }

    /// Forgets the cached token (after a 401) so the next call fetches a new one.
    pub async fn invalidate(&self) {
        *self.cached.lock().await = None;
    }

    async fn fetch(&self) -> Result<(SecretString, Duration), GraphError> {
        let token_url = TokenUrl::new(self.token_url.clone())
            .map_err(|e| GraphError::Credential(format!("token URL: {e}")))?;
        let client = BasicClient::new(ClientId::new(self.client_id.clone()))
            .set_auth_type(AuthType::RequestBody)
            .set_token_uri(token_url);
        let http = |req: oauth2::HttpRequest| self.send(req);
        let result = match &self.credential {
            Credential::Secret(secret) => {
                client
                    .set_client_secret(ClientSecret::new(secret.expose_secret().to_string()))
                    .exchange_client_credentials()
                    .add_scope(Scope::new(self.scope.clone()))
                    .request_async(&http)
                    .await
            }
            Credential::Certificate { thumbprint, key } => {
                let assertion = self.client_assertion(thumbprint, key)?;
                client
                    .exchange_client_credentials()
                    .add_scope(Scope::new(self.scope.clone()))
                    .add_extra_param(
                        "client_assertion_type",
                        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                    )
                    .add_extra_param("client_assertion", assertion)
                    .request_async(&http)
                    .await
            }
        };
        let response = result.map_err(token_error)?;
        let lifetime = response.expires_in().unwrap_or(Duration::from_secs(3599));
        Ok((
            SecretString::from(response.access_token().secret().to_string()),
            lifetime,
        ))
    }

    async fn send(&self, req: oauth2::HttpRequest) -> Result<oauth2::HttpResponse, reqwest::Error> {
        let req = reqwest::Request::try_from(req)?;
        let resp = self.http.execute(req).await?;
        let mut out = http::Response::builder().status(resp.status());
        for (k, v) in resp.headers() {
            out = out.header(k, v);
        }
        let body = resp.bytes().await?.to_vec();
        Ok(out.body(body).unwrap_or_default())
    }

    /// The signed JWT that proves possession of the certificate (PS256, `x5t#S256`).
    fn client_assertion(
        &self,
        thumbprint: &str,
        key: &jsonwebtoken::EncodingKey,
    ) -> Result<String, GraphError> {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::PS256);
        header.x5t_s256 = Some(thumbprint.to_string());
        let now = chrono::Utc::now().timestamp();
        let claims = serde_json::json!({
            "aud": self.token_url,
            "iss": self.client_id,
            "sub": self.client_id,
            "jti": uuid::Uuid::new_v4().to_string(),
            "nbf": now,
            "iat": now,
            "exp": now + 600,
        });
        jsonwebtoken::encode(&header, &claims, key)
            .map_err(|e| GraphError::Credential(format!("cannot sign the client assertion: {e}")))
    }
}

fn load_certificate(
    certificate_file: &std::path::Path,
    private_key_file: &std::path::Path,
) -> Result<Credential, GraphError> {
    let read = |p: &std::path::Path, key: &str| {
        std::fs::read(p).map_err(|e| {
            GraphError::Credential(format!("graph.{key}: cannot read {}: {e}", p.display()))
        })
    };
    let cert_pem = read(certificate_file, "certificate_file")?;
    let der = pem_block(&cert_pem, "CERTIFICATE").ok_or_else(|| {
        GraphError::Credential(format!(
            "graph.certificate_file: {} holds no PEM CERTIFICATE block",
            certificate_file.display()
        ))
    })?;
    let thumbprint = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(&der));
    let key_pem = read(private_key_file, "private_key_file")?;
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(&key_pem).map_err(|e| {
        GraphError::Credential(format!(
            "graph.private_key_file: {} is not an RSA private key in PEM form ({e})",
            private_key_file.display()
        ))
    })?;
    Ok(Credential::Certificate {
        thumbprint,
        key: Box::new(key),
    })
}

/// The DER bytes of the first PEM block with this label.
fn pem_block(pem: &[u8], label: &str) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(pem).ok()?;
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = text.find(&begin)? + begin.len();
    let stop = start + text[start..].find(&end)?;
    let body: String = text[start..stop]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD.decode(body).ok()
}

fn token_error(e: BasicRequestTokenError<reqwest::Error>) -> GraphError {
    match e {
        oauth2::RequestTokenError::ServerResponse(r) => GraphError::Auth {
            code: r.error().to_string(),
            description: describe(&r),
        },
        oauth2::RequestTokenError::Request(e) => GraphError::Transport {
            url: "token endpoint".into(),
            detail: e.without_url().to_string(),
        },
        other => GraphError::Auth {
            code: "invalid_response".into(),
            description: other.to_string(),
        },
    }
}

fn describe(r: &BasicErrorResponse) -> String {
    r.error_description()
        .cloned()
        .unwrap_or_else(|| r.error().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_blocks_decode() {
        let pem = b"junk\n-----BEGIN CERTIFICATE-----\nAQID\nBA==\n-----END CERTIFICATE-----\n";
        assert_eq!(pem_block(pem, "CERTIFICATE"), Some(vec![1, 2, 3, 4]));
        assert_eq!(pem_block(pem, "PRIVATE KEY"), None);
    }
}
