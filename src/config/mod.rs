//! The operator's TOML file, turned into typed, validated settings.
//!
//! Operators never read Rust, so every error here names the file, the key and its line,
//! and says what to do. Secrets are never inline: the config only says where they live
//! (a file, e.g. a systemd credential, or an environment variable) and they are read when
//! a cycle needs them, so `status` and `history` work without them.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;
use url::Url;

/// Where the daemon looks for its configuration when no `--config` is given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/entra-here-sync/config.toml";

/// A configuration problem; always exit code 2.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read at all.
    #[error("cannot read config file {path}: {source}. Pass --config PATH or set ENTRA_HERE_SYNC_CONFIG")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// TOML syntax, unknown key, wrong type or missing key (the message names key and line).
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    /// A value parsed but makes no sense.
    #[error("config file {path}, line {line}: `{key}`: {message}")]
    Invalid {
        path: PathBuf,
        key: String,
        line: usize,
        message: String,
    },
    /// A secret named by the config could not be read.
    #[error("secret for `{key}`: {message}")]
    Secret { key: String, message: String },
}

/// The whole validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file this came from (for messages).
    pub path: PathBuf,
    pub graph: GraphConfig,
    pub here: HereConfig,
    pub schedule: ScheduleConfig,
    pub sync: SyncConfig,
    pub metrics: MetricsConfig,
    pub state: StateConfig,
    pub log: LogConfig,
    pub mapping: MappingConfig,
}

/// Where a secret lives; read only when needed so it spends as little time in memory as possible.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// A file (trimmed of surrounding whitespace), e.g. `$CREDENTIALS_DIRECTORY/...`.
    File(PathBuf),
    /// An environment variable.
    Env(String),
}

/// How the daemon proves its identity to Entra.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GraphCredential {
    /// Client secret.
    Secret(SecretSource),
    /// Certificate: PEM certificate and PEM private key, for a signed client assertion.
    Certificate {
        certificate_file: PathBuf,
        private_key_file: PathBuf,
    },
}

/// `[graph]`: which tenant, app and service principal to read.
#[derive(Debug, Clone)]
pub struct GraphConfig {
    pub tenant_id: String,
    pub client_id: String,
    pub service_principal_id: String,
    pub credential: GraphCredential,
    /// Token authority, e.g. `https://login.microsoftonline.com`.
    pub authority_url: Url,
    /// Graph root, e.g. `https://graph.microsoft.com`.
    pub graph_url: Url,
}

/// `[here]`: the SCIM target.
#[derive(Debug, Clone)]
pub struct HereConfig {
    pub base_url: Url,
    pub token: SecretSource,
    pub max_concurrency: usize,
    pub max_requests_per_second: u32,
    pub max_members_per_patch: usize,
    pub timeout: Duration,
    /// PATCH dialect: RFC 7644 (default) or Entra's default client form.
    pub patch_style: crate::scim::PatchStyle,
    /// Send requests through `/Bulk` when HERE's ServiceProviderConfig advertises it.
    pub bulk: bool,
}

/// `[schedule]`: when `run` starts cycles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleConfig {
    pub when: Schedule,
    pub run_on_start: bool,
}

/// A fixed period or a wall-clock cron expression (the two are not interchangeable).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Schedule {
    Every(Duration),
    Cron(String),
}

/// Which members of an assigned group are in scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GroupMembers {
    /// Entra's behaviour: direct members only.
    Direct,
    /// Members of nested groups too.
    Transitive,
}

/// `[sync]`: scope and safety settings.
#[derive(Debug, Clone)]
pub struct SyncConfig {
    pub max_deactivations: usize,
    pub max_group_deletions: usize,
    pub group_members: GroupMembers,
    pub delete_groups_out_of_scope: bool,
    /// The attribute scoping filter, compiled and validated at load (see `crate::plan::filter`).
    pub scope_filter: crate::plan::filter::ScopeFilter,
}

/// One `[[sync.scope_filter]]` clause (Entra's attribute scoping filter), as written.
/// Clauses with the same `group` must all hold; groups are OR-ed (default group 1).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScopeClause {
    pub attribute: String,
    pub operator: String,
    #[serde(default)]
    pub value: Option<String>,
    /// Filter group number (1, 2, …); clauses of one group are AND-ed, groups OR-ed.
    #[serde(default)]
    pub group: Option<u32>,
}

/// `[metrics]`: optional Prometheus endpoint.
#[derive(Debug, Clone, Default)]
pub struct MetricsConfig {
    pub listen: Option<std::net::SocketAddr>,
}

/// `[state]`: where the SQLite state lives and how long `history` remembers.
#[derive(Debug, Clone)]
pub struct StateConfig {
    pub path: PathBuf,
    /// Operation history older than this many days is pruned at the end of each cycle
    /// (0 keeps everything).
    pub history_days: u32,
}

/// Where log lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogTarget {
    Syslog,
    Journald,
    Stderr,
}

/// `[log]`.
#[derive(Debug, Clone)]
pub struct LogConfig {
    pub target: LogTarget,
    pub level: String,
    pub syslog_facility: String,
    pub syslog_socket: Option<PathBuf>,
}

/// `[mapping.user]` / `[mapping.group]`: operator overrides, interpreted by `crate::mapping`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MappingConfig {
    #[serde(default)]
    pub user: BTreeMap<String, toml::Value>,
    #[serde(default)]
    pub group: BTreeMap<String, toml::Value>,
}

mod raw;
mod scope;
pub use raw::SYSLOG_FACILITIES;
use raw::*;

// ---------------------------------------------------------------- loading

impl Config {
    /// Reads and validates the file; does not touch secrets or the network.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses config text; `path` is used for messages and to resolve nothing else.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })?;
        let v = Validator { text, path };
        Ok(Config {
            path: path.to_path_buf(),
            graph: v.graph(raw.graph)?,
            here: v.here(raw.here)?,
            schedule: v.schedule(raw.schedule)?,
            sync: v.sync(raw.sync)?,
            metrics: v.metrics(raw.metrics)?,
            state: StateConfig {
                path: raw.state.path,
                history_days: raw.state.history_days,
            },
            log: v.log(raw.log)?,
            mapping: raw.mapping,
        })
    }

    /// An `Invalid` error for `section.key`, with the line found in the file (for checks made
    /// outside this module, such as the mapping).
    pub fn invalid(&self, section: &str, key: &str, message: String) -> ConfigError {
        let text = std::fs::read_to_string(&self.path).unwrap_or_default();
        Validator {
            text: &text,
            path: &self.path,
        }
        .invalid(section, key, message)
    }
}

struct Validator<'a> {
    text: &'a str,
    path: &'a Path,
}

impl Validator<'_> {
    fn invalid(&self, section: &str, key: &str, message: String) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.to_path_buf(),
            key: format!("{section}.{key}"),
            line: line_of(self.text, section, key),
            message,
        }
    }

    fn url(&self, section: &str, key: &str, value: &str) -> Result<Url, ConfigError> {
        let url = Url::parse(value)
            .map_err(|e| self.invalid(section, key, format!("{value:?} is not a URL ({e})")))?;
        match url.scheme() {
            "https" => Ok(url),
            "http" if is_loopback(&url) => Ok(url),
            "http" => Err(self.invalid(
                section,
                key,
                format!("{value:?} uses http; https is required except for loopback hosts"),
            )),
            other => Err(self.invalid(
                section,
                key,
                format!("scheme {other:?} is not supported; use https"),
            )),
        }
    }

    fn graph(&self, g: RawGraph) -> Result<GraphConfig, ConfigError> {
        for (key, value) in [
            ("tenant_id", &g.tenant_id),
            ("client_id", &g.client_id),
            ("service_principal_id", &g.service_principal_id),
        ] {
            if value.trim().is_empty() {
                return Err(self.invalid("graph", key, "must not be empty".into()));
            }
        }
        let credential = match (
            g.client_secret_file,
            g.client_secret_env,
            g.certificate_file,
            g.private_key_file,
        ) {
            (Some(f), None, None, None) => GraphCredential::Secret(SecretSource::File(f)),
            (None, Some(e), None, None) => GraphCredential::Secret(SecretSource::Env(e)),
            (None, None, Some(c), Some(k)) => GraphCredential::Certificate {
                certificate_file: c,
                private_key_file: k,
            },
            (None, None, Some(_), None) => {
                return Err(self.invalid(
                    "graph",
                    "certificate_file",
                    "needs private_key_file as well".into(),
                ))
            }
            (None, None, None, Some(_)) => {
                return Err(self.invalid(
                    "graph",
                    "private_key_file",
                    "needs certificate_file as well".into(),
                ))
            }
            (None, None, None, None) => {
                return Err(self.invalid(
                    "graph",
                    "client_secret_file",
                    "no Graph credential: set client_secret_file, client_secret_env, or certificate_file + private_key_file".into(),
                ))
            }
            _ => {
                return Err(self.invalid(
                    "graph",
                    "client_secret_file",
                    "set exactly one Graph credential: client_secret_file, client_secret_env, or certificate_file + private_key_file".into(),
                ))
            }
        };
        let (authority, graph) = match g.cloud.as_str() {
            "global" => (
                "https://login.microsoftonline.com",
                "https://graph.microsoft.com",
            ),
            "usgov" => (
                "https://login.microsoftonline.us",
                "https://graph.microsoft.us",
            ),
            "china" => (
                "https://login.chinacloudapi.cn",
                "https://microsoftgraph.chinacloudapi.cn",
            ),
            other => {
                return Err(self.invalid(
                    "graph",
                    "cloud",
                    format!("unknown cloud {other:?}; use global, usgov or china"),
                ))
            }
        };
        let authority_url = self.url(
            "graph",
            "authority_url",
            g.authority_url.as_deref().unwrap_or(authority),
        )?;
        let graph_url = self.url(
            "graph",
            "graph_url",
            g.graph_url.as_deref().unwrap_or(graph),
        )?;
        Ok(GraphConfig {
            tenant_id: g.tenant_id.trim().to_string(),
            client_id: g.client_id.trim().to_string(),
            service_principal_id: g.service_principal_id.trim().to_string(),
            credential,
            authority_url,
            graph_url,
        })
    }

    fn here(&self, h: RawHere) -> Result<HereConfig, ConfigError> {
        let base_url = self.url("here", "base_url", &h.base_url)?;
        let token = match (h.token_file, h.token_env) {
            (Some(f), None) => SecretSource::File(f),
            (None, Some(e)) => SecretSource::Env(e),
            (None, None) => {
                return Err(self.invalid(
                    "here",
                    "token_file",
                    "no SCIM token: set token_file or token_env".into(),
                ))
            }
            (Some(_), Some(_)) => {
                return Err(self.invalid(
                    "here",
                    "token_env",
                    "set token_file or token_env, not both".into(),
                ))
            }
        };
        for (key, value) in [
            ("max_concurrency", h.max_concurrency),
            (
                "max_requests_per_second",
                h.max_requests_per_second as usize,
            ),
            ("max_members_per_patch", h.max_members_per_patch),
            ("timeout_secs", h.timeout_secs as usize),
        ] {
            if value == 0 {
                return Err(self.invalid("here", key, "must be at least 1".into()));
            }
        }
        Ok(HereConfig {
            base_url,
            token,
            max_concurrency: h.max_concurrency,
            max_requests_per_second: h.max_requests_per_second,
            max_members_per_patch: h.max_members_per_patch,
            timeout: Duration::from_secs(h.timeout_secs),
            patch_style: h.patch_style,
            bulk: h.bulk,
        })
    }

    fn schedule(&self, s: RawSchedule) -> Result<ScheduleConfig, ConfigError> {
        let when = match (s.every, s.cron) {
            (Some(_), Some(_)) => {
                return Err(self.invalid(
                    "schedule",
                    "cron",
                    "set either `every` or `cron`, not both".into(),
                ))
            }
            (None, Some(c)) => Schedule::Cron(c),
            (every, None) => {
                let text = every.unwrap_or_else(|| "40m".into());
                let period = humantime::parse_duration(&text).map_err(|e| {
                    self.invalid(
                        "schedule",
                        "every",
                        format!("{text:?} is not a duration like \"40m\" or \"1h 30m\" ({e})"),
                    )
                })?;
                if period < Duration::from_secs(1) {
                    return Err(self.invalid("schedule", "every", "must be at least 1s".into()));
                }
                Schedule::Every(period)
            }
        };
        Ok(ScheduleConfig {
            when,
            run_on_start: s.run_on_start,
        })
    }

    fn sync(&self, s: RawSync) -> Result<SyncConfig, ConfigError> {
        Ok(SyncConfig {
            max_deactivations: s.max_deactivations,
            max_group_deletions: s.max_group_deletions,
            group_members: s.group_members,
            delete_groups_out_of_scope: s.delete_groups_out_of_scope,
            scope_filter: self.scope_filter(&s.scope_filter)?,
        })
    }

    fn metrics(&self, m: RawMetrics) -> Result<MetricsConfig, ConfigError> {
        let listen = match m.listen {
            None => None,
            Some(text) => Some(text.parse().map_err(|_| {
                self.invalid(
                    "metrics",
                    "listen",
                    format!("{text:?} is not an address like \"127.0.0.1:9464\""),
                )
            })?),
        };
        Ok(MetricsConfig { listen })
    }

    fn log(&self, l: RawLog) -> Result<LogConfig, ConfigError> {
        if !SYSLOG_FACILITIES.contains(&l.syslog_facility.as_str()) {
            return Err(self.invalid(
                "log",
                "syslog_facility",
                format!(
                    "unknown facility {:?}; use one of {}",
                    l.syslog_facility,
                    SYSLOG_FACILITIES.join(", ")
                ),
            ));
        }
        if tracing_subscriber::EnvFilter::try_new(&l.level).is_err() {
            return Err(self.invalid(
                "log",
                "level",
                format!(
                    "{:?} is not a level (error, warn, info, debug, trace)",
                    l.level
                ),
            ));
        }
        Ok(LogConfig {
            target: l.target,
            level: l.level,
            syslog_facility: l.syslog_facility,
            syslog_socket: l.syslog_socket,
        })
    }
}

/// Loopback hosts are the only ones allowed plain http (tests and the demo use them).
fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    }
}

/// The 1-based line where `key` is set inside `[section]` (or the section header, or 1).
fn line_of(text: &str, section: &str, key: &str) -> usize {
    let mut current = String::new();
    let mut section_line = None;
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if t.starts_with('[') {
            current = t.trim_matches(|c| c == '[' || c == ']').trim().to_string();
            if current == section && section_line.is_none() {
                section_line = Some(i + 1);
            }
            continue;
        }
        let name = t.split('=').next().unwrap_or("").trim().trim_matches('"');
        if current == section && t.contains('=') && name == key {
            return i + 1;
        }
    }
    section_line.unwrap_or(1)
}

impl SecretSource {
    /// Reads the secret; a file readable by group/other is allowed but warned about.
    pub fn read(&self, key: &str) -> Result<SecretString, ConfigError> {
        let err = |message: String| ConfigError::Secret {
            key: key.to_string(),
            message,
        };
        let value = match self {
            SecretSource::File(path) => {
                warn_if_exposed(path, key);
                std::fs::read_to_string(path).map_err(|e| {
                    err(format!(
                        "cannot read {}: {e}; check the path and that the service user may read it",
                        path.display()
                    ))
                })?
            }
            SecretSource::Env(name) => std::env::var(name).map_err(|_| {
                err(format!(
                    "environment variable {name} is not set or not valid UTF-8"
                ))
            })?,
        };
        let trimmed = value.trim();
        if trimmed.is_empty() {
            return Err(err(format!("{} is empty", self.describe())));
        }
        Ok(SecretString::from(trimmed.to_string()))
    }

    /// Where the secret lives, for messages (never the value).
    pub fn describe(&self) -> String {
        match self {
            SecretSource::File(p) => format!("file {}", p.display()),
            SecretSource::Env(n) => format!("environment variable {n}"),
        }
    }
}

#[cfg(unix)]
fn warn_if_exposed(path: &Path, key: &str) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0 {
            tracing::warn!(
                key,
                file = %path.display(),
                mode = format_args!("{:o}", mode & 0o777),
                "secret file is readable by group or other; run chmod 600 on it"
            );
        }
    }
}

#[cfg(not(unix))]
fn warn_if_exposed(_path: &Path, _key: &str) {}

#[cfg(test)]
mod tests;
