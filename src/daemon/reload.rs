//! SIGHUP: re-read the configuration. A new file that does not validate is refused (the
//! running configuration stays); settings that only take effect at start (`state.path`,
//! `[log]`, `[metrics]`) are kept as they were, with a warning that a restart applies them.

use std::path::Path;

use crate::config::Config;

/// Loads and fully validates a config as `run` needs it (mapping and schedule included).
pub fn load(path: &Path) -> Result<Config, String> {
    let cfg = Config::load(path).map_err(|e| e.to_string())?;
    crate::mapping::Mapping::from_config(&cfg.mapping)
        .map_err(|e| format!("config file {}: {e}", path.display()))?;
    super::schedule::validate(&cfg.schedule.when)
        .map_err(|e| format!("config file {}: {e}", path.display()))?;
    Ok(cfg)
}

/// What changed in a reload that the daemon cannot apply while running.
pub fn needs_restart(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut keys = Vec::new();
    if old.state.path != new.state.path {
        keys.push("state.path");
    }
    let (a, b) = (&old.log, &new.log);
    if a.target != b.target {
        keys.push("log.target");
    }
    if a.level != b.level {
        keys.push("log.level");
    }
    if a.syslog_facility != b.syslog_facility {
        keys.push("log.syslog_facility");
    }
    if a.syslog_socket != b.syslog_socket {
        keys.push("log.syslog_socket");
    }
    if old.metrics.listen != new.metrics.listen {
        keys.push("metrics.listen");
    }
    keys
}

/// Re-reads `current.path`: `Some(new)` to run with from now on, `None` to keep `current`.
pub fn reload(current: &Config) -> Option<Config> {
    let mut new = match load(&current.path) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "reload refused: the new configuration is invalid; still running with the previous one");
            return None;
        }
    };
    let pending = needs_restart(current, &new);
    if !pending.is_empty() {
        tracing::warn!(
            keys = %pending.join(", "),
            "these settings changed but apply only at start: restart the service (systemctl restart entra-here-sync) to use them; the old values stay in effect until then"
        );
        new.state.path = current.state.path.clone();
        new.log = current.log.clone();
        new.metrics = current.metrics.clone();
    }
    tracing::info!(config = %current.path.display(), "configuration reloaded");
    Some(new)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, extra: &str) -> std::path::PathBuf {
        let p = dir.join("c.toml");
        let text = format!(
            "[graph]\ntenant_id = \"t\"\nclient_id = \"c\"\nservice_principal_id = \"s\"\nclient_secret_env = \"X\"\n\
             [here]\nbase_url = \"http://127.0.0.1:1/scim\"\ntoken_env = \"Y\"\n{extra}"
        );
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn invalid_reload_keeps_the_old_config_and_restart_keys_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "[state]\npath = \"/a.db\"\n");
        let old = load(&path).unwrap();
        write(dir.path(), "[schedule]\ncron = \"nonsense\"\n");
        assert!(reload(&old).is_none(), "a bad cron is refused");
        write(dir.path(), "[bogus]\n");
        assert!(reload(&old).is_none(), "an unknown key is refused");
        write(
            dir.path(),
            "[schedule]\nevery = \"5m\"\n[state]\npath = \"/b.db\"\n[log]\ntarget = \"journald\"\n",
        );
        let new = reload(&old).expect("valid");
        assert_eq!(
            new.schedule.when,
            crate::config::Schedule::Every(std::time::Duration::from_secs(300))
        );
        assert_eq!(new.state.path, old.state.path, "state.path needs a restart");
        assert_eq!(new.log.target, old.log.target, "log.target needs a restart");
        let fresh = load(&path).unwrap();
        assert_eq!(
            needs_restart(&old, &fresh),
            vec!["state.path", "log.target"]
        );
    }
}
