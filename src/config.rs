//! Finding and loading `config.yaml` (SPEC O15).
//!
//! Search order: `--config`, `$MAIRUST_CONFIG`, `./config.yaml`,
//! `~/.config/mairust/config.yaml`, `/etc/mairust/config.yaml`. A string value
//! `env:NAME` is replaced by the environment variable NAME. Unknown keys, wrong types
//! and out-of-range values are errors that name the key.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use mairust_actors::config::{Config, ConfigError};
use serde_json::Value;

pub fn search_path(explicit: Option<&Path>) -> Vec<PathBuf> {
    if let Some(p) = explicit {
        return vec![p.to_path_buf()];
    }
    if let Ok(p) = std::env::var("MAIRUST_CONFIG")
        && !p.is_empty()
    {
        return vec![PathBuf::from(p)];
    }
    let mut paths = vec![PathBuf::from("config.yaml")];
    if let Some(home) = std::env::var_os("HOME") {
        paths.push(PathBuf::from(home).join(".config/mairust/config.yaml"));
    }
    paths.push(PathBuf::from("/etc/mairust/config.yaml"));
    paths
}

/// Loads the first configuration file of the search path.
pub fn load(explicit: Option<&Path>) -> anyhow::Result<(Config, PathBuf)> {
    let candidates = search_path(explicit);
    let Some(path) = candidates.iter().find(|p| p.is_file()) else {
        let tried: Vec<String> = candidates.iter().map(|p| p.display().to_string()).collect();
        bail!("no configuration file found (tried: {})", tried.join(", "));
    };
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let config = parse(&text).with_context(|| format!("in {}", path.display()))?;
    Ok((config, path.clone()))
}

pub fn parse(text: &str) -> anyhow::Result<Config> {
    let mut value: Value =
        serde_saphyr::from_str(text).map_err(|e| anyhow::anyhow!("YAML syntax: {e}"))?;
    if value.is_null() {
        value = Value::Object(Default::default());
    }
    resolve_env(&mut value, "")?;
    let config: Config = serde_path_to_error::deserialize(value).map_err(|e| {
        let key = e.path().to_string();
        let key = if key == "." {
            "(top level)".to_string()
        } else {
            key
        };
        ConfigError::new(key, e.inner().to_string())
    })?;
    config.validate()?;
    Ok(config)
}

/// Replaces every `env:NAME` string by the variable's value.
fn resolve_env(value: &mut Value, path: &str) -> anyhow::Result<()> {
    match value {
        Value::String(s) => {
            if let Some(name) = s.strip_prefix("env:") {
                *s = std::env::var(name).map_err(|_| {
                    ConfigError::new(path, format!("environment variable {name} is not set"))
                })?;
            }
        }
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                let sub = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                resolve_env(v, &sub)?;
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter_mut().enumerate() {
                resolve_env(v, &format!("{path}[{i}]"))?;
            }
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str =
        "database:\n  url: sqlite://x.db\nstorage:\n  backend: fs\n  fs:\n    path: ./objects\n";

    /// The error `parse` gives for `text`, as the operator reads it.
    fn rejection(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.smtp.listeners.inbound.address, "127.0.0.1:2525");
        assert_eq!(c.smtp.limits.max_recipients, 100);
        assert_eq!(c.server.shutdown.timeout_seconds, 60);
    }

    #[test]
    fn unknown_key_is_named() {
        let err = rejection(&format!(
            "{MINIMAL}smtp:\n  limits:\n    max_recipents: 5\n"
        ));
        assert!(err.contains("smtp.limits"), "{err}");
        assert!(err.contains("max_recipents"), "{err}");
    }

    #[test]
    fn wrong_type_is_named() {
        let err = rejection(&format!(
            "{MINIMAL}smtp:\n  limits:\n    max_recipients: many\n"
        ));
        assert!(err.contains("smtp.limits.max_recipients"), "{err}");
    }

    #[test]
    fn invalid_value_is_named() {
        let err = rejection(&format!("{MINIMAL}http:\n  address: nowhere\n"));
        assert!(err.contains("http.address"), "{err}");
    }

    #[test]
    fn env_values_are_resolved() {
        // SAFETY: test-local variable name, set before it is read.
        unsafe { std::env::set_var("MAIRUST_TEST_DB_URL_X", "sqlite://from-env.db") };
        let c = parse("database:\n  url: env:MAIRUST_TEST_DB_URL_X\nstorage:\n  backend: fs\n  fs:\n    path: o\n").unwrap();
        assert_eq!(c.database.url, "sqlite://from-env.db");
        let err = rejection(
            "database:\n  url: env:MAIRUST_TEST_UNSET_Y\nstorage:\n  backend: fs\n  fs:\n    path: o\n",
        );
        assert!(
            err.contains("database.url") && err.contains("MAIRUST_TEST_UNSET_Y"),
            "{err}"
        );
    }

    #[test]
    fn storage_section_must_match_backend() {
        let err = rejection("database:\n  url: sqlite://x.db\nstorage:\n  backend: s3\n");
        assert!(err.contains("storage.s3"), "{err}");
    }

    #[test]
    fn submission_checks_are_strict_by_default_and_switchable() {
        let c = parse(MINIMAL).unwrap();
        assert!(!c.smtp.submission.allow_null_sender);
        assert!(c.smtp.enforce_envelope_sender());
        assert!(c.smtp.submission.enforce_from_header);
        let c = parse(&format!(
            "{MINIMAL}smtp:\n  submission:\n    allow_null_sender: true\n    enforce_envelope_sender: false\n    enforce_from_header: false\n"
        ))
        .unwrap();
        assert!(c.smtp.submission.allow_null_sender);
        assert!(!c.smtp.enforce_envelope_sender());
        assert!(!c.smtp.submission.enforce_from_header);
        let err = rejection(&format!(
            "{MINIMAL}smtp:\n  submission:\n    enforce_from: false\n"
        ));
        assert!(
            err.contains("smtp.submission") && err.contains("enforce_from"),
            "{err}"
        );
    }

    #[test]
    fn deprecated_sender_match_key_still_works_unless_contradicted() {
        let c = parse(&format!("{MINIMAL}smtp:\n  require_sender_match: false\n")).unwrap();
        assert!(!c.smtp.enforce_envelope_sender());
        assert_eq!(
            c.smtp.deprecated_keys(),
            [(
                "smtp.require_sender_match",
                "smtp.submission.enforce_envelope_sender"
            )]
        );
        let both =
            "smtp:\n  require_sender_match: false\n  submission:\n    enforce_envelope_sender:";
        assert!(parse(&format!("{MINIMAL}{both} false\n")).is_ok());
        let err = rejection(&format!("{MINIMAL}{both} true\n"));
        assert!(
            err.contains("smtp.require_sender_match") && err.contains("disagree"),
            "{err}"
        );
    }

    #[test]
    fn shipped_config_is_valid() {
        parse(include_str!("../config.yaml")).unwrap();
    }
}
