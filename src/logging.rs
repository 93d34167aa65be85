//! Log output: `tracing` events to syslog, journald or stderr (`[log]`), filtered by
//! `RUST_LOG` when set, else by `log.level`.
//!
//! Syslog is written natively: one RFC 5424 datagram per event to a Unix datagram socket
//! (`/dev/log` or `log.syslog_socket`), so no libc `syslog(3)` (fixed to `/dev/log`) and no
//! bridge through the `log` crate. The message text is formatted by tracing-subscriber's
//! `fmt` layer (message, then `key=value` fields), the RFC 5424 header carries time,
//! severity, host and pid. Logging never blocks or panics at run time: a datagram that
//! cannot be delivered is dropped and counted, and the count is reported once delivery
//! works again.

use std::io::{self, IsTerminal, Write};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use chrono::{SecondsFormat, Utc};
use tracing::{Level, Metadata, Subscriber};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogTarget};

/// RFC 5424 APP-NAME of every syslog message (SPEC §6).
const APP_NAME: &str = "entra-here-sync";

/// Socket used when `log.syslog_socket` is not set.
const DEFAULT_SYSLOG_SOCKET: &str = "/dev/log";

/// Longest datagram sent (header included): what common syslog daemons accept by default
/// (rsyslog's `maxMessageSize` is 8 KiB); longer messages are cut at a char boundary.
const MAX_DATAGRAM: usize = 8 * 1024;

/// Logging could not be set up as configured; the caller exits with the configuration
/// error code, so `key` names the `[log]` key the operator has to fix.
#[derive(Debug, thiserror::Error)]
#[error("log.{key}: {message}")]
pub struct LogError {
    /// The `[log]` key at fault, without the `log.` prefix.
    pub key: &'static str,
    /// What went wrong, naming the path or value involved.
    pub message: String,
}

fn filter(level: &str) -> EnvFilter {
    EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"))
}

/// Installs the global subscriber for the configured target, so that a target that cannot
/// work (no syslog socket, no journald) is reported at start-up as a configuration error
/// instead of silently losing every log line.
pub fn init(cfg: &LogConfig) -> Result<(), LogError> {
    match cfg.target {
        LogTarget::Stderr => {
            init_stderr(&cfg.level);
            Ok(())
        }
        LogTarget::Syslog => {
            let socket = cfg
                .syslog_socket
                .clone()
                .unwrap_or_else(|| PathBuf::from(DEFAULT_SYSLOG_SOCKET));
            let (subscriber, _) =
                syslog_subscriber(filter(&cfg.level), &cfg.syslog_facility, &socket)?;
            // Fails only if a subscriber is already installed; the first one stays.
            let _ = subscriber.try_init();
            Ok(())
        }
        LogTarget::Journald => {
            let _ = journald_subscriber(filter(&cfg.level))?.try_init();
            Ok(())
        }
    }
}

/// Logs to stderr (no colours unless it is a terminal); used before the config is loaded
/// and for `target = "stderr"`.
pub fn init_stderr(level: &str) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter(level))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .try_init();
}

/// Builds (without installing) the syslog subscriber; shared by [`init`] and the tests so
/// that what is tested is what runs. Also returns the writer so tests can read its counters.
fn syslog_subscriber(
    filter: EnvFilter,
    facility: &str,
    socket: &Path,
) -> Result<(impl Subscriber + Send + Sync + 'static, SyslogWriter), LogError> {
    let writer = SyslogWriter::connect(facility, socket)?;
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer.clone())
        .with_ansi(false)
        .without_time()
        .with_level(false)
        .with_target(false)
        .finish();
    Ok((subscriber, writer))
}

/// Builds (without installing) the journald subscriber: structured fields go to the
/// journal as `F_<NAME>` fields next to `MESSAGE` and `PRIORITY`.
fn journald_subscriber(filter: EnvFilter) -> Result<impl Subscriber + Send + Sync, LogError> {
    let layer = tracing_journald::layer().map_err(|e| LogError {
        key: "target",
        message: format!(
            "journald is not reachable ({e}); use target = \"syslog\" or \"stderr\" on hosts without systemd-journald"
        ),
    })?;
    let layer = layer.with_syslog_identifier(APP_NAME.to_string());
    Ok(tracing_subscriber::registry().with(filter).with(layer))
}

/// Numeric syslog facility (RFC 5424 §6.2.1) for a `log.syslog_facility` name.
fn facility_code(name: &str) -> Option<u8> {
    Some(match name {
        "kern" => 0,
        "user" => 1,
        "mail" => 2,
        "daemon" => 3,
        "auth" => 4,
        "syslog" => 5,
        "lpr" => 6,
        "news" => 7,
        "uucp" => 8,
        "cron" => 9,
        "authpriv" => 10,
        "ftp" => 11,
        "local0" => 16,
        "local1" => 17,
        "local2" => 18,
        "local3" => 19,
        "local4" => 20,
        "local5" => 21,
        "local6" => 22,
        "local7" => 23,
        _ => return None,
    })
}

/// Syslog severity for a tracing level: operations (INFO) at info, problems at warning
/// or worse (SPEC §6).
fn severity(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        _ => 7,
    }
}

/// The local host name for the RFC 5424 HOSTNAME field, or the NILVALUE `-` when unknown
/// or not printable ASCII. `/proc/sys` is hidden by the unit's `ProcSubset=pid`, hence the
/// fallback to `/etc/hostname` (kept readable by `ProtectSystem=strict`).
fn hostname() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .map(|name| name.trim().to_string())
        .find(|name| {
            !name.is_empty() && name.len() <= 255 && name.bytes().all(|b| (33..=126).contains(&b))
        })
        .unwrap_or_else(|| "-".to_string())
}

/// Longest prefix of `s` of at most `max` bytes that ends on a char boundary.
fn truncate_at_char_boundary(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

struct SyslogSink {
    /// Unbound, non-blocking: each datagram is addressed to `path`, so a restarted syslog
    /// daemon (new socket at the same path) is picked up without reconnecting, and a full
    /// receive queue drops the line instead of stalling the daemon.
    socket: UnixDatagram,
    path: PathBuf,
    facility: u8,
    hostname: String,
    pid: u32,
    /// Lines dropped since the last successful send.
    dropped: AtomicU64,
}

impl SyslogSink {
    fn send(&self, sev: u8, msg: &str) {
        let header = format!(
            "<{}>1 {} {} {} {} - - ",
            u16::from(self.facility) * 8 + u16::from(sev),
            Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true),
            self.hostname,
            APP_NAME,
            self.pid,
        );
        let msg = msg.trim_end_matches(['\n', '\r']);
        let msg = truncate_at_char_boundary(msg, MAX_DATAGRAM.saturating_sub(header.len()));
        let mut line = String::with_capacity(header.len() + msg.len());
        line.push_str(&header);
        line.push_str(msg);
        if self.socket.send_to(line.as_bytes(), &self.path).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let dropped = self.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            // Not recursive on failure: a failed notice is simply counted again.
            self.send(
                severity(&Level::WARN),
                &format!(
                    "{dropped} earlier log line(s) were dropped: syslog socket unavailable or full"
                ),
            );
        }
    }
}

/// `MakeWriter` for the fmt layer: each event gets a [`SyslogLine`] carrying the severity
/// of its level, which sends exactly one datagram when the event has been written.
#[derive(Clone)]
struct SyslogWriter(Arc<SyslogSink>);

impl SyslogWriter {
    /// Checks at start-up that `path` is a datagram socket we may send to, so a wrong
    /// `log.syslog_socket` fails the start instead of losing every line.
    fn connect(facility: &str, path: &Path) -> Result<Self, LogError> {
        let facility = facility_code(facility).ok_or_else(|| LogError {
            key: "syslog_facility",
            message: format!("unknown facility {facility:?}"),
        })?;
        let socket_error = |e: io::Error| LogError {
            key: "syslog_socket",
            message: format!("cannot connect to syslog socket {}: {e}", path.display()),
        };
        UnixDatagram::unbound()
            .and_then(|probe| probe.connect(path))
            .map_err(socket_error)?;
        let socket = UnixDatagram::unbound().map_err(socket_error)?;
        socket.set_nonblocking(true).map_err(socket_error)?;
        Ok(Self(Arc::new(SyslogSink {
            socket,
            path: path.to_path_buf(),
            facility,
            hostname: hostname(),
            pid: std::process::id(),
            dropped: AtomicU64::new(0),
        })))
    }

    #[cfg(test)]
    fn dropped(&self) -> u64 {
        self.0.dropped.load(Ordering::Relaxed)
    }
}

impl<'a> MakeWriter<'a> for SyslogWriter {
    type Writer = SyslogLine<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        self.make_line(severity(&Level::INFO))
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Self::Writer {
        self.make_line(severity(meta.level()))
    }
}

impl SyslogWriter {
    fn make_line(&self, severity: u8) -> SyslogLine<'_> {
        SyslogLine {
            sink: &self.0,
            severity,
            buf: Vec::new(),
        }
    }
}

/// One event's text, buffered until drop and then sent as one syslog datagram.
struct SyslogLine<'a> {
    sink: &'a SyslogSink,
    severity: u8,
    buf: Vec<u8>,
}

impl Write for SyslogLine<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for SyslogLine<'_> {
    fn drop(&mut self) {
        if !self.buf.is_empty() {
            self.sink
                .send(self.severity, &String::from_utf8_lossy(&self.buf));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Fields of one RFC 5424 message (no structured data expected).
    #[derive(Debug)]
    struct Parsed {
        pri: u16,
        timestamp: String,
        hostname: String,
        app: String,
        procid: String,
        msgid: String,
        sd: String,
        msg: String,
    }

    fn parse(datagram: &[u8]) -> Parsed {
        let text = std::str::from_utf8(datagram).expect("datagram is UTF-8");
        let rest = text.strip_prefix('<').expect("starts with <PRI>");
        let (pri, rest) = rest.split_once('>').expect("PRI is closed");
        let rest = rest.strip_prefix("1 ").expect("VERSION 1");
        let parts: Vec<&str> = rest.splitn(7, ' ').collect();
        assert_eq!(parts.len(), 7, "header has all fields: {text}");
        Parsed {
            pri: pri.parse().expect("PRI is numeric"),
            timestamp: parts[0].to_string(),
            hostname: parts[1].to_string(),
            app: parts[2].to_string(),
            procid: parts[3].to_string(),
            msgid: parts[4].to_string(),
            sd: parts[5].to_string(),
            msg: parts[6].to_string(),
        }
    }

    fn receiver(dir: &tempfile::TempDir) -> (UnixDatagram, PathBuf) {
        let path = dir.path().join("log.sock");
        let rx = UnixDatagram::bind(&path).expect("bind receiver");
        rx.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("read timeout");
        (rx, path)
    }

    fn recv(rx: &UnixDatagram) -> Vec<u8> {
        let mut buf = vec![0u8; 65536];
        let n = rx.recv(&mut buf).expect("a datagram arrives");
        buf.truncate(n);
        buf
    }

    #[test]
    fn events_become_rfc5424_datagrams_with_facility_and_severity() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (rx, path) = receiver(&dir);
        let (subscriber, _) =
            syslog_subscriber(EnvFilter::new("debug"), "local3", &path).expect("subscriber");
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(op = "create_user", userName = "ada@example.com", "pushed");
            tracing::warn!(status = 409, scimType = "uniqueness", "operation failed");
            tracing::error!(deactivations = 812, "safety stop");
            tracing::debug!("details");
        });

        let expected = [
            (
                158,
                "pushed",
                vec!["op=\"create_user\"", "userName=\"ada@example.com\""],
            ),
            (
                156,
                "operation failed",
                vec!["status=409", "scimType=\"uniqueness\""],
            ),
            (155, "safety stop", vec!["deactivations=812"]),
            (159, "details", vec![]),
        ];
        for (pri, message, fields) in expected {
            let m = parse(&recv(&rx));
            assert_eq!(m.pri, pri, "{m:?}");
            assert_eq!(m.app, "entra-here-sync");
            assert_eq!(m.procid, std::process::id().to_string());
            assert_eq!(m.msgid, "-");
            assert_eq!(m.sd, "-");
            assert!(!m.hostname.is_empty() && !m.hostname.contains(' '));
            chrono::DateTime::parse_from_rfc3339(&m.timestamp).expect("RFC 3339 timestamp");
            assert!(
                m.timestamp.contains('.'),
                "fractional seconds: {}",
                m.timestamp
            );
            assert!(m.msg.starts_with(message), "{m:?}");
            for field in fields {
                assert!(m.msg.contains(field), "{field} in {m:?}");
            }
            assert!(!m.msg.ends_with('\n'));
            assert!(!m.msg.contains('\u{1b}'), "no ANSI escapes");
            assert!(
                !m.msg.contains("INFO") && !m.msg.contains("WARN"),
                "no level prefix"
            );
        }
    }

    #[test]
    fn level_filter_applies() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (rx, path) = receiver(&dir);
        let (subscriber, _) =
            syslog_subscriber(EnvFilter::new("warn"), "daemon", &path).expect("subscriber");
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!("hidden");
            tracing::warn!("shown");
        });
        let m = parse(&recv(&rx));
        assert_eq!(m.pri, 3 * 8 + 4);
        assert!(m.msg.starts_with("shown"));
        rx.set_nonblocking(true).expect("nonblocking");
        let mut buf = [0u8; 64];
        assert!(rx.recv(&mut buf).is_err(), "info was filtered out");
    }

    #[test]
    fn long_messages_are_truncated_at_a_char_boundary() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (rx, path) = receiver(&dir);
        let (subscriber, _) =
            syslog_subscriber(EnvFilter::new("info"), "local3", &path).expect("subscriber");
        let long = "é".repeat(10_000);
        tracing::subscriber::with_default(subscriber, || tracing::info!("{long}"));
        let datagram = recv(&rx);
        assert!(datagram.len() <= MAX_DATAGRAM, "{} bytes", datagram.len());
        assert!(datagram.len() > MAX_DATAGRAM - 4);
        let m = parse(&datagram);
        assert!(m.msg.chars().all(|c| c == 'é'));
    }

    #[test]
    fn missing_socket_is_a_config_error_naming_the_key_and_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("no-such.sock");
        let err = match syslog_subscriber(EnvFilter::new("info"), "daemon", &path) {
            Ok(_) => panic!("a missing socket must be refused"),
            Err(e) => e,
        };
        assert_eq!(err.key, "syslog_socket");
        let text = err.to_string();
        assert!(text.starts_with("log.syslog_socket: "), "{text}");
        assert!(text.contains(&path.display().to_string()), "{text}");
    }

    #[test]
    fn send_failures_are_dropped_counted_and_reported_later() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (rx, path) = receiver(&dir);
        let (subscriber, writer) =
            syslog_subscriber(EnvFilter::new("info"), "local3", &path).expect("subscriber");
        let dispatch = tracing::Dispatch::new(subscriber);

        // The syslog daemon goes away: lines are dropped, nothing panics or blocks.
        drop(rx);
        std::fs::remove_file(&path).expect("remove socket");
        tracing::dispatcher::with_default(&dispatch, || {
            tracing::info!("lost one");
            tracing::info!("lost two");
        });
        assert_eq!(writer.dropped(), 2);

        // It comes back at the same path: delivery resumes and the loss is reported.
        let rx = UnixDatagram::bind(&path).expect("rebind");
        rx.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("read timeout");
        tracing::dispatcher::with_default(&dispatch, || tracing::info!("back"));
        let first = parse(&recv(&rx));
        assert!(first.msg.starts_with("back"), "{first:?}");
        let notice = parse(&recv(&rx));
        assert_eq!(notice.pri, 19 * 8 + 4);
        assert!(
            notice.msg.starts_with("2 earlier log line(s) were dropped"),
            "{notice:?}"
        );
        assert_eq!(writer.dropped(), 0);
    }

    #[test]
    fn unknown_facility_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_rx, path) = receiver(&dir);
        let err = match syslog_subscriber(EnvFilter::new("info"), "local9", &path) {
            Ok(_) => panic!("unknown facility must be refused"),
            Err(e) => e,
        };
        assert_eq!(err.key, "syslog_facility");
    }

    #[test]
    fn every_configurable_facility_has_a_code() {
        for name in crate::config::SYSLOG_FACILITIES {
            assert!(facility_code(name).is_some(), "{name}");
        }
        assert_eq!(facility_code("local3"), Some(19));
        assert_eq!(facility_code("daemon"), Some(3));
    }

    #[test]
    fn journald_missing_is_a_target_error() {
        if Path::new("/run/systemd/journal/socket").exists() {
            return; // journald is running here; the error path cannot be exercised.
        }
        match journald_subscriber(EnvFilter::new("info")) {
            Ok(_) => panic!("journald is absent, the layer must fail"),
            Err(e) => assert_eq!(e.key, "target"),
        }
    }
}
