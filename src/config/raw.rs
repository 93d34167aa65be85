//! The file's shape as serde sees it (`deny_unknown_fields` everywhere), with the
//! defaults of SPEC §3. Validation into typed settings happens in the parent module.

use std::path::PathBuf;

use serde::Deserialize;

use super::{GroupMembers, LogTarget, MappingConfig, ScopeClause};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) graph: RawGraph,
    pub(super) here: RawHere,
    #[serde(default)]
    pub(super) schedule: RawSchedule,
    #[serde(default)]
    pub(super) sync: RawSync,
    #[serde(default)]
    pub(super) metrics: RawMetrics,
    #[serde(default)]
    pub(super) state: RawState,
    #[serde(default)]
    pub(super) log: RawLog,
    #[serde(default)]
    pub(super) mapping: MappingConfig,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGraph {
    pub(super) tenant_id: String,
    pub(super) client_id: String,
    pub(super) service_principal_id: String,
    pub(super) client_secret_file: Option<PathBuf>,
    pub(super) client_secret_env: Option<String>,
    pub(super) certificate_file: Option<PathBuf>,
    pub(super) private_key_file: Option<PathBuf>,
    #[serde(default = "default_cloud")]
    pub(super) cloud: String,
    pub(super) authority_url: Option<String>,
    pub(super) graph_url: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHere {
    pub(super) base_url: String,
    pub(super) token_file: Option<PathBuf>,
    pub(super) token_env: Option<String>,
    #[serde(default = "default_concurrency")]
    pub(super) max_concurrency: usize,
    #[serde(default = "default_rps")]
    pub(super) max_requests_per_second: u32,
    #[serde(default = "default_members_per_patch")]
    pub(super) max_members_per_patch: usize,
    #[serde(default = "default_timeout")]
    pub(super) timeout_secs: u64,
    #[serde(default)]
    pub(super) patch_style: crate::scim::PatchStyle,
    #[serde(default = "yes")]
    pub(super) bulk: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSchedule {
    pub(super) every: Option<String>,
    pub(super) cron: Option<String>,
    #[serde(default = "yes")]
    pub(super) run_on_start: bool,
}

impl Default for RawSchedule {
    fn default() -> Self {
        RawSchedule {
            every: None,
            cron: None,
            run_on_start: true,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSync {
    #[serde(default = "default_max_deactivations")]
    pub(super) max_deactivations: usize,
    #[serde(default = "default_max_group_deletions")]
    pub(super) max_group_deletions: usize,
    #[serde(default = "default_group_members")]
    pub(super) group_members: GroupMembers,
    #[serde(default = "yes")]
    pub(super) delete_groups_out_of_scope: bool,
    #[serde(default)]
    pub(super) scope_filter: Vec<ScopeClause>,
}

impl Default for RawSync {
    fn default() -> Self {
        RawSync {
            max_deactivations: default_max_deactivations(),
            max_group_deletions: default_max_group_deletions(),
            group_members: GroupMembers::Direct,
            delete_groups_out_of_scope: true,
            scope_filter: Vec::new(),
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMetrics {
    pub(super) listen: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawState {
    #[serde(default = "default_state_path")]
    pub(super) path: PathBuf,
    #[serde(default = "default_history_days")]
    pub(super) history_days: u32,
}

impl Default for RawState {
    fn default() -> Self {
        RawState {
            path: default_state_path(),
            history_days: default_history_days(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLog {
    #[serde(default = "default_log_target")]
    pub(super) target: LogTarget,
    #[serde(default = "default_log_level")]
    pub(super) level: String,
    #[serde(default = "default_facility")]
    pub(super) syslog_facility: String,
    pub(super) syslog_socket: Option<PathBuf>,
}

impl Default for RawLog {
    fn default() -> Self {
        RawLog {
            target: default_log_target(),
            level: default_log_level(),
            syslog_facility: default_facility(),
            syslog_socket: None,
        }
    }
}

pub(super) fn default_cloud() -> String {
    "global".into()
}
pub(super) fn default_concurrency() -> usize {
    8
}
pub(super) fn default_rps() -> u32 {
    50
}
pub(super) fn default_members_per_patch() -> usize {
    100
}
pub(super) fn default_timeout() -> u64 {
    30
}
pub(super) fn yes() -> bool {
    true
}
pub(super) fn default_max_deactivations() -> usize {
    500
}
pub(super) fn default_max_group_deletions() -> usize {
    50
}
pub(super) fn default_group_members() -> GroupMembers {
    GroupMembers::Direct
}
pub(super) fn default_state_path() -> PathBuf {
    PathBuf::from("/var/lib/entra-here-sync/state.db")
}
pub(super) fn default_history_days() -> u32 {
    400
}
pub(super) fn default_log_target() -> LogTarget {
    LogTarget::Syslog
}
pub(super) fn default_log_level() -> String {
    "info".into()
}
pub(super) fn default_facility() -> String {
    "daemon".into()
}

/// Syslog facilities an operator may name.
pub const SYSLOG_FACILITIES: &[&str] = &[
    "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron", "authpriv",
    "ftp", "local0", "local1", "local2", "local3", "local4", "local5", "local6", "local7",
];
