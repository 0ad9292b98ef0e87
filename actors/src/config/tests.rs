//! [`Config::validate`] as a whole: every message it can give, word for word (operators
//! and the CLI tests match them), and the settings it must accept.

use serde_json::{Value, json};

use super::*;

/// The least a configuration needs: a database and a storage backend.
fn minimal() -> Value {
    json!({
        "database": {"url": "sqlite://x.db"},
        "storage": {"backend": "fs", "fs": {"path": "./objects"}},
    })
}

/// Writes `patch` over `base`, object by object (other values are replaced).
fn merge(base: &mut Value, patch: Value) {
    match (base, patch) {
        (Value::Object(base), Value::Object(patch)) => {
            for (key, value) in patch {
                merge(base.entry(key).or_insert(Value::Null), value);
            }
        }
        (base, patch) => *base = patch,
    }
}

/// The minimal configuration with `patch` written over it, as the loader would give it.
fn config(patch: Value) -> Config {
    let mut value = minimal();
    merge(&mut value, patch);
    serde_json::from_value(value).expect("the patch deserializes")
}

/// What `validate` says about the minimal configuration with `patch`, without the
/// `invalid configuration: ` prefix; `None` when it accepts it.
fn verdict(patch: Value) -> Option<String> {
    config(patch).validate().err().map(|e| {
        let text = e.to_string();
        assert_eq!(
            text,
            format!("invalid configuration: {}: {}", e.key, e.reason)
        );
        format!("{}: {}", e.key, e.reason)
    })
}

fn assert_rejected(cases: Vec<(Value, &str)>) {
    for (patch, expected) in cases {
        let shown = patch.to_string();
        assert_eq!(verdict(patch).as_deref(), Some(expected), "for {shown}");
    }
}

fn assert_accepted(cases: Vec<Value>) {
    for patch in cases {
        let shown = patch.to_string();
        assert_eq!(verdict(patch), None, "for {shown}");
    }
}

const A_SECRET: &str = "0123456789abcdef";

fn hook(id: &str) -> Value {
    json!({"id": id, "event": "pre_receive", "url": "https://filter.example/", "secret": A_SECRET})
}

#[test]
fn minimal_and_usual_settings_are_accepted() {
    assert_accepted(vec![
        json!({}),
        json!({"http": {"enabled": false, "address": "nowhere"}}),
        json!({"smtp": {"listeners": {"inbound": {"address": "nowhere", "enabled": false}}}}),
        json!({"smtp": {
            "listeners": {"submissions": {"address": "[::1]:465"}},
            "tls": {"cert_path": "c.pem", "key_path": "k.pem"},
        }}),
        json!({"smtp": {"require_sender_match": false,
            "submission": {"enforce_envelope_sender": false}}}),
        json!({"smtp": {"limits": {"max_line_length": 1000, "ipv6_prefix_length": 128,
            "command_timeout_seconds": 86_400}}}),
        json!({"logging": {"level": "mairust=debug,info"}}),
        json!({"telemetry": {"tracing": {"enabled": true, "endpoint": "https://c:4318",
            "sample_rate": 0.0}}}),
        json!({"retention": {"deleted_messages_days": 0}}),
        json!({"storage": {"backend": "s3", "s3": {"bucket": "mail"}}}),
        json!({"delivery": {"routes": {"example.org": "[2001:db8::1]:25"},
            "smarthost": "relay.example:587", "dns": {"nameservers": ["192.0.2.1", "[::1]:5353"]}}}),
        json!({"hooks": [hook("a"), hook("b")], "hook_policy": {"allowed_networks": ["10.0.0.1"]}}),
        json!({"api": {"trusted_proxies": ["127.0.0.1", "10.0.0.0/8"],
            "cors": {"allowed_origins": ["https://admin.example.org:8443", "http://x"]}}}),
    ]);
}

#[test]
fn smtp_listener_and_http_errors() {
    assert_rejected(vec![
        (
            json!({"smtp": {"listeners": {"submission": {"address": "nowhere"}}}}),
            "smtp.listeners.submission.address: `nowhere` is not an IP:port address",
        ),
        (
            json!({"smtp": {"listeners": {"submissions": {"address": "127.0.0.1:465"}}}}),
            "smtp.listeners.submissions: implicit TLS needs smtp.tls (cert_path, key_path)",
        ),
        (
            json!({"http": {"address": "localhost:8080"}}),
            "http.address: `localhost:8080` is not an IP:port address",
        ),
    ]);
}

#[test]
fn smtp_limit_errors() {
    for key in [
        "max_message_size",
        "max_recipients",
        "command_timeout_seconds",
        "data_timeout_seconds",
        "max_sessions",
        "max_sessions_per_ip",
        "write_timeout_seconds",
        "max_session_seconds",
        "data_memory_bytes",
        "max_inflight_data_bytes",
    ] {
        let expected = format!("smtp.limits.{key}: must be greater than 0");
        assert_rejected(vec![(
            json!({"smtp": {"limits": {key: 0}}}),
            expected.as_str(),
        )]);
    }
    for key in [
        "command_timeout_seconds",
        "data_timeout_seconds",
        "write_timeout_seconds",
        "max_session_seconds",
    ] {
        let expected = format!("smtp.limits.{key}: must be at most 86400 (one day)");
        assert_rejected(vec![(
            json!({"smtp": {"limits": {key: 86_401}}}),
            expected.as_str(),
        )]);
    }
    assert_rejected(vec![
        (
            json!({"smtp": {"limits": {"max_line_length": 999}}}),
            "smtp.limits.max_line_length: must be at least 1000 (RFC 5321 §4.5.3.1.6)",
        ),
        (
            json!({"smtp": {"limits": {"ipv6_prefix_length": 31}}}),
            "smtp.limits.ipv6_prefix_length: must be between 32 and 128",
        ),
        (
            json!({"smtp": {"limits": {"ipv6_prefix_length": 129}}}),
            "smtp.limits.ipv6_prefix_length: must be between 32 and 128",
        ),
        (
            json!({"smtp": {"limits": {"max_message_size": 1000, "max_inflight_data_bytes": 133_071}}}),
            "smtp.limits.max_inflight_data_bytes: must be at least 133072: twice smtp.limits.max_message_size plus 64 KiB (half of it holds finished bodies)",
        ),
        (
            json!({"smtp": {"limits": {"max_spool_bytes": 1000}}}),
            "smtp.limits.max_spool_bytes: must be at least smtp.limits.max_message_size (one whole message)",
        ),
        (
            json!({"smtp": {"limits": {"max_spool_bytes_per_client": 1000}}}),
            "smtp.limits.max_spool_bytes_per_client: must be at least smtp.limits.max_message_size (one whole message)",
        ),
        (
            json!({"smtp": {"require_sender_match": false,
                "submission": {"enforce_envelope_sender": true}}}),
            "smtp.require_sender_match: deprecated spelling of smtp.submission.enforce_envelope_sender, and the two disagree (false and true): remove smtp.require_sender_match",
        ),
    ]);
}

#[test]
fn auth_errors() {
    for key in [
        "max_failures_per_address",
        "max_failures_per_account",
        "failure_window_seconds",
        "lockout_seconds",
        "audit_summary_seconds",
    ] {
        let expected = format!("auth.{key}: must be greater than 0");
        assert_rejected(vec![(json!({"auth": {key: 0}}), expected.as_str())]);
    }
    assert_rejected(vec![(
        json!({"auth": {"failure_delay_ms": 300, "max_failure_delay_ms": 299}}),
        "auth.max_failure_delay_ms: must be at least auth.failure_delay_ms",
    )]);
}

#[test]
fn server_database_storage_and_health_errors() {
    assert_rejected(vec![
        (
            json!({"server": {"hostname": ""}}),
            "server.hostname: must be a host name",
        ),
        (
            json!({"server": {"hostname": "mx .example"}}),
            "server.hostname: must be a host name",
        ),
        (
            json!({"database": {"url": "mysql://db"}}),
            "database.url: must start with sqlite: or postgres:",
        ),
        (
            json!({"database": {"max_connections": 0}}),
            "database.max_connections: must be greater than 0",
        ),
        (
            json!({"storage": {"backend": "fs", "fs": null}}),
            "storage.fs: missing for backend fs",
        ),
        (
            json!({"storage": {"backend": "s3"}}),
            "storage.s3: missing for backend s3",
        ),
        (
            json!({"storage": {"backend": "s3", "s3": {"bucket": ""}}}),
            "storage.s3.bucket: must not be empty",
        ),
        (
            json!({"health": {"interval_seconds": 0.0}}),
            "health: interval and probe timeout must be > 0 and at most 86400 seconds",
        ),
        (
            json!({"health": {"probe_timeout_seconds": 86_400.5}}),
            "health: interval and probe timeout must be > 0 and at most 86400 seconds",
        ),
        (
            json!({"health": {"failures_before_down": 0}}),
            "health.failures_before_down: must be at least 1",
        ),
    ]);
}

#[test]
fn queue_and_delivery_errors() {
    for key in [
        "queue.poll_interval_seconds",
        "queue.lease_seconds",
        "queue.max_age_seconds",
        "queue.retry.initial_seconds",
        "queue.retry.max_seconds",
        "delivery.connect_timeout_seconds",
        "delivery.command_timeout_seconds",
    ] {
        let mut patch = json!(-1.0);
        for part in key.rsplit('.') {
            patch = json!({ part: patch });
        }
        let expected = format!("{key}: must be a number greater than 0");
        assert_rejected(vec![(patch, expected.as_str())]);
    }
    assert_rejected(vec![
        (
            json!({"queue": {"retry": {"factor": 0.5}}}),
            "queue.retry.factor: must be at least 1",
        ),
        (
            json!({"queue": {"max_batch_bytes": 0}}),
            "queue.max_batch_bytes: must be greater than 0",
        ),
        (
            json!({"queue": {"batch_size": 0}}),
            "queue.batch_size: must be greater than 0",
        ),
        (
            json!({"delivery": {"max_messages_per_connection": 0}}),
            "delivery.max_messages_per_connection: must be greater than 0",
        ),
        (
            json!({"delivery": {"routes": {"example.org": "mx.example.org"}}}),
            "delivery.routes.example.org: `mx.example.org` is not host:port",
        ),
        (
            json!({"delivery": {"smarthost": ":25"}}),
            "delivery.smarthost: `:25` is not host:port",
        ),
        (
            json!({"delivery": {"smarthost": "relay:0"}}),
            "delivery.smarthost: `relay:0` is not host:port",
        ),
        (
            json!({"delivery": {"dns": {"nameservers": ["ns1.example"]}}}),
            "delivery.dns.nameservers: `ns1.example` is not an IP or IP:port",
        ),
    ]);
}

#[test]
fn hook_errors() {
    let with = |field: &str, value: Value| {
        let mut h = hook("a");
        h[field] = value;
        json!({ "hooks": [h] })
    };
    assert_rejected(vec![
        (
            json!({"hook_policy": {"allowed_networks": ["10.0.0.0/8", "10.0.0.0/33"]}}),
            "hook_policy.allowed_networks[1]: `10.0.0.0/33` is not a network like 10.20.0.0/16 or an IP address",
        ),
        (
            json!({"hook_policy": {"max_response_bytes": 0}}),
            "hook_policy.max_response_bytes: must be between 1 and 16777216",
        ),
        (
            json!({"hooks": [hook("a"), hook("a")]}),
            "hooks[1].id: must be unique",
        ),
        (
            with("id", json!("a b")),
            "hooks[0].id: 1 to 64 letters, digits, '-', '_' or '.'",
        ),
        (
            with("url", json!("ftp://x")),
            "hooks[0].url: must be an http:// or https:// URL",
        ),
        (
            with("secret", json!("short")),
            "hooks[0].secret: must be at least 16 characters",
        ),
        (
            with("timeout_ms", json!(0)),
            "hooks[0].timeout_ms: must be between 1 and 600000",
        ),
        (
            with("breaker_failures", json!(0)),
            "hooks[0].breaker_failures: must be greater than 0",
        ),
        (
            with("breaker_cooldown_seconds", json!(0.0)),
            "hooks[0].breaker_cooldown_seconds: must be greater than 0",
        ),
    ]);
}

#[test]
fn logging_telemetry_audit_api_and_retention_errors() {
    assert_rejected(vec![
        (
            json!({"logging": {"rotation": {"max_size_mb": 0.0}}}),
            "logging.rotation.max_size_mb: must be greater than 0",
        ),
        (
            json!({"logging": {"rotation": {"max_files": 0}}}),
            "logging.rotation.max_files: must be at least 1",
        ),
        (
            json!({"logging": {"level": "loud"}}),
            "logging.level: must be trace, debug, info, warn, error or a filter directive",
        ),
        (
            json!({"telemetry": {"tracing": {"sample_rate": 1.5}}}),
            "telemetry.tracing.sample_rate: must be between 0 and 1",
        ),
        (
            json!({"telemetry": {"tracing": {"enabled": true, "endpoint": "collector:4318"}}}),
            "telemetry.tracing.endpoint: must be an http:// or https:// URL (OTLP/HTTP, e.g. http://collector:4318)",
        ),
        (
            json!({"audit": {"retention_days": 0}}),
            "audit.retention_days: must be between 1 and 36500 (100 years)",
        ),
        (
            json!({"api": {"trusted_proxies": ["proxy.example"]}}),
            "api.trusted_proxies[0]: `proxy.example` is not a network like 10.20.0.0/16 or an IP address",
        ),
        (
            json!({"api": {"cors": {"allowed_origins": ["https://a.example", "https://b.example/ui"]}}}),
            "api.cors.allowed_origins[1]: `https://b.example/ui` is not an origin like https://admin.example.org",
        ),
        (
            json!({"api": {"cors": {"allowed_origins": ["*"]}}}),
            "api.cors.allowed_origins[0]: `*` is not an origin like https://admin.example.org",
        ),
        (
            json!({"retention": {"deleted_messages_days": 36_501}}),
            "retention.deleted_messages_days: must be at most 36500 (100 years); 0 keeps deleted messages for ever",
        ),
        (
            json!({"retention": {"purge_interval_seconds": 0.0}}),
            "retention.purge_interval_seconds: must be greater than 0 and at most 86400 (one day)",
        ),
        (
            json!({"retention": {"purge_batch_size": 10_001}}),
            "retention.purge_batch_size: must be between 1 and 10000",
        ),
    ]);
}

#[test]
fn dkim_mail_auth_spam_and_send_limits_settings_are_accepted() {
    assert_accepted(vec![
        json!({"dkim": {"sign": false, "headers": ["from", "Subject", "X-Custom"],
            "rotation_delay_hours": 2160, "rotation_grace_days": 365}}),
        json!({"dkim": {"rotation_delay_hours": 0, "rotation_grace_days": 0}}),
        json!({"mail_auth": {"verify": false, "authserv_id": "mx-1.example_org",
            "timeout_seconds": 300, "dmarc_reject": "junk", "dmarc_quarantine": "accept",
            "spf_fail": "reject"}}),
        json!({"spam": {"rspamd": {"url": "https://rspamd.internal:11333/", "timeout_seconds": 600,
            "on_error": "tempfail", "scan_outbound": true, "breaker_failures": 1,
            "breaker_cooldown_seconds": 86_400}}}),
        json!({"spam": {"rspamd": {"url": "", "timeout_seconds": 0.5}}}),
        json!({"send_limits": {"messages_per_hour": 0, "recipients_per_hour": 1_000_000_000_000u64,
            "domain_messages_per_hour": 10, "domain_recipients_per_hour": 0}}),
    ]);
}

#[test]
fn dkim_and_mail_auth_errors() {
    assert_rejected(vec![
        (
            json!({"dkim": {"master_key_file": ""}}),
            "dkim.master_key_file: must not be empty",
        ),
        (
            json!({"dkim": {"headers": ["Subject", "Date"]}}),
            "dkim.headers: must include From (RFC 6376 §5.4)",
        ),
        (
            json!({"dkim": {"headers": ["From", "X Mailer"]}}),
            "dkim.headers: `X Mailer` is not a header field name",
        ),
        (
            json!({"dkim": {"headers": ["From", "Subject:"]}}),
            "dkim.headers: `Subject:` is not a header field name",
        ),
        (
            json!({"dkim": {"headers": ["From", ""]}}),
            "dkim.headers: `` is not a header field name",
        ),
        (
            json!({"dkim": {"rotation_delay_hours": 2161}}),
            "dkim.rotation_delay_hours: must be at most 2160 (90 days)",
        ),
        (
            json!({"dkim": {"rotation_grace_days": 366}}),
            "dkim.rotation_grace_days: must be at most 365",
        ),
        (
            json!({"mail_auth": {"timeout_seconds": 0}}),
            "mail_auth.timeout_seconds: must be greater than 0 and at most 300",
        ),
        (
            json!({"mail_auth": {"timeout_seconds": 300.5}}),
            "mail_auth.timeout_seconds: must be greater than 0 and at most 300",
        ),
        (
            json!({"mail_auth": {"authserv_id": "mx.example.org; dkim=pass"}}),
            "mail_auth.authserv_id: must be a host name (letters, digits, '-', '.', '_')",
        ),
    ]);
}

#[test]
fn spam_and_send_limits_errors() {
    let url = |u: &str| json!({"spam": {"rspamd": {"url": u}}});
    let rspamd = |key: &str, value: Value| json!({"spam": {"rspamd": { key: value }}});
    assert_rejected(vec![
        (
            url("rspamd:11333"),
            "spam.rspamd.url: `rspamd:11333` is not an http:// or https:// URL",
        ),
        (
            url("ftp://rspamd:11333"),
            "spam.rspamd.url: `ftp://rspamd:11333` is not an http:// or https:// URL",
        ),
        (
            url("http://"),
            "spam.rspamd.url: `http://` is not an http:// or https:// URL",
        ),
        (
            rspamd("timeout_seconds", json!(0)),
            "spam.rspamd.timeout_seconds: must be a number greater than 0",
        ),
        (
            rspamd("timeout_seconds", json!(-1.5)),
            "spam.rspamd.timeout_seconds: must be a number greater than 0",
        ),
        (
            rspamd("timeout_seconds", json!(600.5)),
            "spam.rspamd.timeout_seconds: must be at most 600 (ten minutes)",
        ),
        (
            rspamd("breaker_cooldown_seconds", json!(0.0)),
            "spam.rspamd.breaker_cooldown_seconds: must be a number greater than 0",
        ),
        (
            // Past what a Duration holds: refused here, not a panic at the first scan.
            rspamd("breaker_cooldown_seconds", json!(1e30)),
            "spam.rspamd.breaker_cooldown_seconds: must be at most 86400 (one day)",
        ),
        (
            rspamd("breaker_failures", json!(0)),
            "spam.rspamd.breaker_failures: must be greater than 0",
        ),
    ]);
    for key in [
        "messages_per_hour",
        "recipients_per_hour",
        "domain_messages_per_hour",
        "domain_recipients_per_hour",
    ] {
        let expected = format!("send_limits.{key}: must be at most 1000000000000 (0: no limit)");
        assert_rejected(vec![(
            json!({"send_limits": { key: 1_000_000_000_001u64 }}),
            expected.as_str(),
        )]);
    }
    // A word that is no choice is refused by the loader, naming the choices.
    for (patch, choices) in [
        (
            rspamd("on_error", json!("drop")),
            "expected `accept` or `tempfail`",
        ),
        (
            json!({"mail_auth": {"spf_fail": "quarantine"}}),
            "expected one of `accept`, `junk`, `reject`",
        ),
    ] {
        let mut value = minimal();
        merge(&mut value, patch);
        let err = serde_json::from_value::<Config>(value)
            .unwrap_err()
            .to_string();
        assert!(err.contains(choices), "{err}");
    }
}

#[test]
fn unknown_keys_are_refused_by_every_section() {
    for section in [
        "server",
        "smtp",
        "http",
        "database",
        "storage",
        "health",
        "logging",
        "api",
        "hook_policy",
        "queue",
        "delivery",
        "audit",
        "retention",
        "telemetry",
        "auth",
        "dkim",
        "mail_auth",
        "spam",
        "send_limits",
    ] {
        let mut value = minimal();
        merge(&mut value, json!({ section: {"no_such_key": 1} }));
        let err = serde_json::from_value::<Config>(value)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no_such_key"), "{section}: {err}");
    }
    let mut value = minimal();
    merge(&mut value, json!({"spam": {"rspamd": {"no_such_key": 1}}}));
    let err = serde_json::from_value::<Config>(value)
        .unwrap_err()
        .to_string();
    assert!(err.contains("no_such_key"), "spam.rspamd: {err}");
}
