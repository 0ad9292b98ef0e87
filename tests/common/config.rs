//! The server configuration a test runs with: the knobs a test may turn ([`Options`])
//! and the YAML written from them.

use std::path::Path;

/// Knobs a test may turn; the rest of the configuration is fixed.
#[derive(Clone)]
pub struct Options {
    pub max_message_size: usize,
    pub max_recipients: usize,
    pub max_bad_commands: u32,
    pub max_sessions_per_ip: usize,
    pub shutdown_timeout_seconds: u64,
    pub drain_timeout_seconds: u64,
    /// `server.shutdown.close_delay_seconds`: readiness 503, listeners still open.
    pub close_delay_seconds: u64,
    /// Lines added under `server`.
    pub server_yaml: Vec<String>,
    /// Lines added under `smtp.listeners.inbound` (e.g. its proxy_protocol).
    pub inbound_yaml: Vec<String>,
    pub command_timeout_seconds: u64,
    pub allow_plaintext_auth: bool,
    /// Also run the implicit-TLS `submissions` listener.
    pub submissions: bool,
    pub users: Vec<String>,
    /// YAML appended to the configuration (`queue:` and `delivery:` sections).
    pub extra_yaml: String,
    pub audit_retention_days: u32,
    /// Log to `DIR/log/mairust.log` instead of standard output (the harness tails it).
    pub log_file: bool,
    /// YAML lines added under `smtp.limits:` (indented by the harness).
    pub limits_yaml: Vec<String>,
    /// YAML lines added under `smtp:` (indented by the harness).
    pub smtp_yaml: Vec<String>,
    /// Lines added under `http:`.
    pub http_yaml: Vec<String>,
    /// `smtp.workers`: SMTP arbiters, each with an accept loop per listener.
    pub smtp_workers: usize,
    /// Environment variables of the server process (e.g. `FAILPOINTS`).
    pub env: Vec<(String, String)>,
    /// Lines under `mail_auth:`. Off by default: the sender checks would ask the
    /// machine's resolver; their tests turn them on with the in-test DNS server.
    pub mail_auth_yaml: Vec<String>,
    /// Lines under `send_limits:`. None by default: suites submit thousands of
    /// messages as one account; `tests/send_limits.rs` sets its own.
    pub send_limits_yaml: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_message_size: 1024 * 1024,
            max_recipients: 50,
            max_bad_commands: 10,
            max_sessions_per_ip: 200,
            shutdown_timeout_seconds: 10,
            drain_timeout_seconds: 10,
            close_delay_seconds: 0,
            server_yaml: Vec::new(),
            inbound_yaml: Vec::new(),
            command_timeout_seconds: 30,
            allow_plaintext_auth: false,
            submissions: false,
            users: vec!["bob".into(), "alice".into(), "carol".into()],
            extra_yaml: String::new(),
            audit_retention_days: 180,
            log_file: false,
            limits_yaml: Vec::new(),
            smtp_yaml: Vec::new(),
            http_yaml: Vec::new(),
            smtp_workers: 2,
            env: Vec::new(),
            mail_auth_yaml: vec!["verify: false".into()],
            send_limits_yaml: vec![
                "messages_per_hour: 0".into(),
                "recipients_per_hour: 0".into(),
            ],
        }
    }
}

impl Options {
    /// The defaults with `yaml` appended to the configuration.
    pub fn with_yaml(yaml: impl Into<String>) -> Options {
        Options {
            extra_yaml: yaml.into(),
            ..Options::default()
        }
    }
}

pub fn config_yaml(dir: &Path, db_url: &str, storage: &str, o: &Options) -> String {
    format!(
        r#"server:
  hostname: mx.example.test
  pid_file: {dir}/mairust.pid
  shutdown:
    timeout_seconds: {shutdown}
    drain_timeout_seconds: {drain}
    close_delay_seconds: {close_delay}
{server_extra}smtp:
  listeners:
    inbound:
      address: 127.0.0.1:0
{inbound_extra}    submission:
      address: 127.0.0.1:0
    submissions:
      address: 127.0.0.1:0
      enabled: {submissions}
  tls:
    cert_path: {dir}/tls/cert.pem
    key_path: {dir}/tls/key.pem
    self_signed: true
  allow_plaintext_auth: {plain}
  limits:
    max_message_size: {size}
    max_recipients: {rcpts}
    max_bad_commands: {bad}
    max_sessions_per_ip: {per_ip}
    command_timeout_seconds: {cmd_timeout}
{limits_extra}  workers: {smtp_workers}
{smtp_extra}
http:
  address: 127.0.0.1:0
{http_extra}database:
  url: {db_url}
  connect_timeout_seconds: 2
{storage}health:
  interval_seconds: 0.2
  probe_timeout_seconds: 1
logging:
  level: info
  format: json
{log_file}audit:
  path: {dir}/audit.log
  retention_days: {retention}
mail_auth:
{mail_auth}send_limits:
{send_limits}{extra}"#,
        send_limits = o
            .send_limits_yaml
            .iter()
            .map(|l| format!("  {l}\n"))
            .collect::<String>(),
        mail_auth = o
            .mail_auth_yaml
            .iter()
            .map(|l| format!("  {l}\n"))
            .collect::<String>(),
        retention = o.audit_retention_days,
        log_file = if o.log_file {
            format!("  file: {}/log/mairust.log\n", dir.display())
        } else {
            String::new()
        },
        extra = o.extra_yaml,
        http_extra = o
            .http_yaml
            .iter()
            .map(|l| format!("  {l}\n"))
            .collect::<String>(),
        limits_extra = o
            .limits_yaml
            .iter()
            .map(|l| format!("    {l}\n"))
            .collect::<String>(),
        smtp_extra = o
            .smtp_yaml
            .iter()
            .map(|l| format!("  {l}\n"))
            .collect::<String>(),
        dir = dir.display(),
        shutdown = o.shutdown_timeout_seconds,
        drain = o.drain_timeout_seconds,
        close_delay = o.close_delay_seconds,
        server_extra = o
            .server_yaml
            .iter()
            .map(|l| format!("  {l}\n"))
            .collect::<String>(),
        inbound_extra = o
            .inbound_yaml
            .iter()
            .map(|l| format!("      {l}\n"))
            .collect::<String>(),
        plain = o.allow_plaintext_auth,
        submissions = o.submissions,
        size = o.max_message_size,
        rcpts = o.max_recipients,
        bad = o.max_bad_commands,
        per_ip = o.max_sessions_per_ip,
        cmd_timeout = o.command_timeout_seconds,
        smtp_workers = o.smtp_workers,
    )
}

/// Parses a test's config file with the server's own loader rules (types only).
pub fn mairust_actors_config(path: &Path) -> mairust_actors::config::Config {
    let text = std::fs::read_to_string(path).unwrap();
    let value: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
    serde_json::from_value(value).unwrap()
}
