//! The deployment files under deploy/: each is checked by the tool that reads it
//! (`systemd-analyze verify`, `systemd-sysusers`, `systemd-tmpfiles`,
//! `kubernetes-validate --strict`, `haproxy -c`, `docker build`, `mairust config-check`)
//! and against the others: listener ports, probe paths, grace periods, writable
//! directories, environment variables and trusted networks must agree with the
//! configuration file each deployment ships.
//!
//! Tools: `systemd` and `haproxy` (Debian packages), `kubernetes-validate` (PyPI);
//! `.ci/run` installs them, and a missing one fails its test saying what to install.
//! The image is built when a Docker engine answers `docker info`, under a tag of its
//! own that is removed afterwards (`docker rmi -f`, also when the build fails); without
//! an engine the build is skipped with a note (the Dockerfile is still checked against
//! its config).
//!
//! kubernetes-validate has no schema for custom resources (the ServiceMonitor) nor for
//! a misspelt kind or apiVersion: it prints a WARN and exits 0. So the core manifests
//! must each print `passed`, and the ServiceMonitor is checked here against the Service
//! it selects. The migrate Job (applied apart from kustomization.yaml) must run the
//! Deployment's image with its environment, volumes and security context, and the
//! `migrate --check` Job its header derives with sed must validate too.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_mairust");

/// Seconds a stop timeout must leave beyond the configured shutdown phases: sessions
/// and queue workers may each overrun their timeout by up to 10 s, then the database
/// and the HTTP server close.
const MARGIN: u64 = 20;

/// Manifests kubernetes-validate has schemas for (secret.example.yaml included).
const CORE_MANIFESTS: [&str; 6] = [
    "configmap.yaml",
    "secret.example.yaml",
    "deployment.yaml",
    "service.yaml",
    "pdb.yaml",
    "migrate-job.yaml",
];

/// Core manifests kustomization.yaml must not list: the example Secret (`apply -k`
/// would overwrite the real one) and the migrate Job (immutable: applied by hand before
/// the rest, see its header).
const APPLIED_APART: [&str; 2] = ["secret.example.yaml", "migrate-job.yaml"];

/// migrate-job.yaml's header turns it into the `migrate --check` Job with these sed
/// expressions (checked to be there, then run, in kubernetes_migrate_job_*).
const CHECK_JOB_SED: [&str; 3] = [
    r#"s/^  name: mairust-migrate$/  name: mairust-migrate-check/"#,
    r#"s/^  backoffLimit: 3$/  backoffLimit: 0/"#,
    r#"s/args: \["migrate"\]/args: ["migrate", "--check"]/"#,
];

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    let path = repo().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Standard output and error of a finished command, for assertion messages.
fn said(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs an external tool in the repository; a missing tool fails the test.
fn tool(program: &str, args: &[&str], install: &str) -> Output {
    Command::new(program)
        .args(args)
        .current_dir(repo())
        .output()
        .unwrap_or_else(|e| {
            panic!("{program} could not be run ({e}): install {install} (.ci/run does)")
        })
}

fn yaml(text: &str, what: &str) -> Value {
    serde_saphyr::from_str(text).unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// Every document of a YAML file of the repository.
fn yaml_docs(rel: &str) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(&read(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn single<'a>(found: Vec<&'a Value>, what: &str) -> &'a Value {
    assert_eq!(found.len(), 1, "exactly one {what} expected");
    found[0]
}

/// `close_delay_seconds + timeout_seconds + drain_timeout_seconds` of a configuration
/// (defaults 0, 60, 30).
fn shutdown_seconds(config: &Value) -> u64 {
    let s = &config["server"]["shutdown"];
    s["close_delay_seconds"].as_u64().unwrap_or(0)
        + s["timeout_seconds"].as_u64().unwrap_or(60)
        + s["drain_timeout_seconds"].as_u64().unwrap_or(30)
}

/// "120", "120s" or "2min" in seconds.
fn seconds(value: &str) -> u64 {
    let parsed = match value.strip_suffix("min") {
        Some(minutes) => minutes.trim().parse::<u64>().map(|m| m * 60),
        None => value.trim_end_matches('s').trim().parse::<u64>(),
    };
    parsed.unwrap_or_else(|e| panic!("`{value}` is not a duration: {e}"))
}

fn port_of(address: &Value, what: &str) -> u16 {
    address
        .as_str()
        .and_then(|a| a.rsplit_once(':'))
        .and_then(|(_, port)| port.parse().ok())
        .unwrap_or_else(|| panic!("{what}: `{address}` is not IP:port"))
}

/// The ports of the enabled SMTP listeners by name, and of `http`.
fn listener_ports(config: &Value) -> BTreeMap<String, u16> {
    let mut ports = BTreeMap::new();
    for name in ["inbound", "submission", "submissions"] {
        let listener = &config["smtp"]["listeners"][name];
        if listener["enabled"]
            .as_bool()
            .unwrap_or(name != "submissions")
        {
            ports.insert(
                name.to_string(),
                port_of(&listener["address"], &format!("smtp.listeners.{name}")),
            );
        }
    }
    ports.insert(
        "http".to_string(),
        port_of(&config["http"]["address"], "http.address"),
    );
    ports
}

/// The NAMEs of every `env:NAME` value.
fn env_names(value: &Value, names: &mut BTreeSet<String>) {
    match value {
        Value::String(s) => {
            if let Some(name) = s.strip_prefix("env:") {
                names.insert(name.to_string());
            }
        }
        Value::Array(items) => items.iter().for_each(|v| env_names(v, names)),
        Value::Object(map) => map.values().for_each(|v| env_names(v, names)),
        _ => {}
    }
}

/// What the server (or its CLI beside it) writes, by key: the deployment must make
/// these places writable.
fn written_paths(config: &Value) -> Vec<(String, String)> {
    let mut paths = Vec::new();
    let mut keys = vec![
        ("server.pid_file", &config["server"]["pid_file"]),
        (
            "smtp.limits.spool_dir",
            &config["smtp"]["limits"]["spool_dir"],
        ),
        ("storage.fs.path", &config["storage"]["fs"]["path"]),
        ("audit.path", &config["audit"]["path"]),
        ("logging.file", &config["logging"]["file"]),
        ("dkim.master_key_file", &config["dkim"]["master_key_file"]),
    ];
    if config["smtp"]["tls"]["self_signed"] == true {
        keys.push(("smtp.tls.cert_path", &config["smtp"]["tls"]["cert_path"]));
        keys.push(("smtp.tls.key_path", &config["smtp"]["tls"]["key_path"]));
    }
    for (key, value) in keys {
        if let Some(path) = value.as_str() {
            paths.push((key.to_string(), path.to_string()));
        }
    }
    if let Some(db) = config["database"]["url"]
        .as_str()
        .and_then(|url| url.strip_prefix("sqlite://"))
    {
        let file = db.split('?').next().unwrap_or(db);
        paths.push(("database.url".to_string(), file.to_string()));
    }
    for (key, path) in &paths {
        assert!(
            path.starts_with('/'),
            "{key} = {path}: not an absolute path"
        );
    }
    paths
}

fn assert_written_under(config: &Value, writable: &[String], what: &str) {
    for (key, path) in written_paths(config) {
        assert!(
            writable.iter().any(|dir| path.starts_with(dir.as_str())),
            "{what}: {key} = {path} is outside the writable directories {writable:?}"
        );
    }
}

/// Whether `selector` (a label map) is non-empty and every label of it is in `labels`.
fn selects(selector: &Value, labels: &Value) -> bool {
    selector
        .as_object()
        .is_some_and(|s| !s.is_empty() && s.iter().all(|(k, v)| labels[k.as_str()] == *v))
}

fn in_network(network: &str, address: &str) -> bool {
    let (net, len) = network
        .split_once('/')
        .unwrap_or_else(|| panic!("`{network}` is not a network"));
    let net: Ipv4Addr = net.parse().unwrap();
    let len: u32 = len.parse().unwrap();
    let address: Ipv4Addr = address.parse().unwrap();
    let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
    u32::from(net) & mask == u32::from(address) & mask
}

// --- systemd --------------------------------------------------------------------------

/// The `Key=value` settings of a unit file in order (comments and sections left out).
fn unit_settings(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with(['#', ';', '[']))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

#[test]
fn systemd_unit_passes_systemd_analyze_and_fits_its_config() {
    let unit = read("deploy/systemd/mairust.service");
    let settings = unit_settings(&unit);
    let one = |key: &str| -> String {
        let values: Vec<&String> = settings
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v)
            .collect();
        assert_eq!(
            values.len(),
            1,
            "{key}= once in mairust.service: {values:?}"
        );
        values[0].clone()
    };
    for (key, value) in [
        ("Type", "notify"),
        ("NotifyAccess", "main"),
        (
            "ExecStart",
            "/usr/bin/mairust --config /etc/mairust/config.yaml serve",
        ),
        ("ExecReload", "/bin/kill -HUP $MAINPID"),
        ("User", "mairust"),
        ("Group", "mairust"),
        ("AmbientCapabilities", "CAP_NET_BIND_SERVICE"),
        ("CapabilityBoundingSet", "CAP_NET_BIND_SERVICE"),
        ("WatchdogSec", "30"),
        ("Restart", "on-failure"),
        ("LimitNOFILE", "65536"),
        ("StateDirectory", "mairust"),
        ("LogsDirectory", "mairust"),
        ("RuntimeDirectory", "mairust"),
        ("ProtectSystem", "strict"),
        ("NoNewPrivileges", "yes"),
        ("RestrictAddressFamilies", "AF_UNIX AF_INET AF_INET6"),
        ("SystemCallFilter", "@system-service"),
        ("ReadWritePaths", "/var/lib/mairust /var/log/mairust"),
        ("UMask", "0077"),
    ] {
        assert_eq!(one(key), value, "{key}= in mairust.service");
    }

    // The configuration it starts: every phase of the drain fits in the stop timeout,
    // and everything the server writes is in the unit's own writable directories.
    let config = yaml(
        &read("deploy/systemd/config.yaml"),
        "deploy/systemd/config.yaml",
    );
    let stop = seconds(&one("TimeoutStopSec"));
    assert!(
        stop >= shutdown_seconds(&config) + MARGIN,
        "TimeoutStopSec={stop} leaves no margin beyond the shutdown phases ({} s)",
        shutdown_seconds(&config)
    );
    let pid_file = config["server"]["pid_file"].as_str().unwrap_or_default();
    assert!(
        pid_file.starts_with("/run/mairust/"),
        "server.pid_file {pid_file} should be in the RuntimeDirectory"
    );
    assert_written_under(
        &config,
        &[
            "/var/lib/mairust/".into(),
            "/var/log/mairust/".into(),
            "/run/mairust/".into(),
        ],
        "deploy/systemd/config.yaml",
    );
    let ports = listener_ports(&config);
    assert_eq!(
        (
            ports["inbound"],
            ports["submission"],
            ports.get("submissions")
        ),
        (25, 587, Some(&465)),
        "the unit grants CAP_NET_BIND_SERVICE for the standard ports"
    );

    // systemd-analyze checks that ExecStart names an executable: a copy starts the
    // binary under test instead of /usr/bin/mairust.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("mairust.service");
    assert!(
        !BIN.contains(char::is_whitespace),
        "{BIN}: a path with spaces"
    );
    std::fs::write(&copy, unit.replace("/usr/bin/mairust", BIN)).unwrap();
    let out = tool(
        "systemd-analyze",
        &["verify", copy.to_str().unwrap()],
        "systemd (Debian package systemd)",
    );
    let text = said(&out);
    assert!(out.status.success(), "systemd-analyze verify: {text}");
    assert!(
        !text.contains("mairust.service"),
        "systemd-analyze verify complains about the unit: {text}"
    );
}

#[test]
fn sysusers_and_tmpfiles_make_the_user_and_directories() {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir(root.path().join("etc")).unwrap();
    let root_arg = format!("--root={}", root.path().display());
    let sysusers = repo().join("deploy/systemd/mairust.sysusers");
    let out = tool(
        "systemd-sysusers",
        &[&root_arg, sysusers.to_str().unwrap()],
        "systemd (Debian package systemd)",
    );
    assert!(out.status.success(), "systemd-sysusers: {}", said(&out));
    let passwd = std::fs::read_to_string(root.path().join("etc/passwd")).unwrap();
    let user: Vec<&str> = passwd
        .lines()
        .find(|l| l.starts_with("mairust:"))
        .unwrap_or_else(|| panic!("no user mairust in {passwd}"))
        .split(':')
        .collect();
    assert_eq!(user[5], "/var/lib/mairust", "home of mairust");
    assert!(
        user[6].ends_with("nologin"),
        "shell of mairust: {}",
        user[6]
    );

    let tmpfiles = repo().join("deploy/systemd/mairust.tmpfiles");
    let out = tool(
        "systemd-tmpfiles",
        &[&root_arg, "--create", tmpfiles.to_str().unwrap()],
        "systemd (Debian package systemd)",
    );
    // SAFETY: geteuid has no preconditions and cannot fail.
    let is_root = unsafe { libc::geteuid() } == 0;
    if !out.status.success() && !is_root {
        // The file was read; only handing the directories to mairust needs root.
        let text = said(&out);
        assert!(
            text.lines().all(|l| l.contains("Operation not permitted")),
            "systemd-tmpfiles: {text}"
        );
        eprintln!("systemd-tmpfiles could not chown as a user; run as root to check owners");
        return;
    }
    assert!(out.status.success(), "systemd-tmpfiles: {}", said(&out));
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let uid: u32 = user[2].parse().unwrap();
    let gid: u32 = user[3].parse().unwrap();
    for (dir, mode, owner, group) in [
        ("var/lib/mairust", 0o700, uid, gid),
        ("var/log/mairust", 0o700, uid, gid),
        ("etc/mairust", 0o750, 0, gid),
    ] {
        let meta = std::fs::metadata(root.path().join(dir)).unwrap();
        assert_eq!(
            (meta.permissions().mode() & 0o7777, meta.uid(), meta.gid()),
            (mode, owner, group),
            "/{dir}"
        );
    }
}

// --- shipped configurations -----------------------------------------------------------

/// `mairust config-check` on `text`, with every `env:NAME` it reads set to a dummy.
fn config_check(what: &str, text: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, text).unwrap();
    let mut names = BTreeSet::new();
    env_names(&yaml(text, what), &mut names);
    let mut command = Command::new(BIN);
    command
        .arg("--config")
        .arg(&path)
        .arg("config-check")
        .current_dir(dir.path());
    for name in &names {
        let value = if name.ends_with("DATABASE_URL") {
            "postgres://mairust:secret@127.0.0.1:5432/mairust?sslmode=verify-full&sslrootcert=/etc/mairust/ca.pem"
        } else {
            "dummy-value"
        };
        command.env(name, value);
    }
    let out = command.output().unwrap();
    assert!(
        out.status.success() && said(&out).contains("configuration OK"),
        "config-check of {what} (environment {names:?}): {}",
        said(&out)
    );
}

/// config.yaml of the Kubernetes ConfigMap.
fn configmap_config() -> String {
    let docs = yaml_docs("deploy/kubernetes/configmap.yaml");
    let configmap = single(
        docs.iter().filter(|d| d["kind"] == "ConfigMap").collect(),
        "ConfigMap in configmap.yaml",
    );
    configmap["data"]["config.yaml"]
        .as_str()
        .expect("configmap.yaml: data.config.yaml")
        .to_string()
}

#[test]
fn every_shipped_config_passes_config_check() {
    let files = [
        "deploy/systemd/config.yaml",
        "deploy/container/config.yaml",
        "deploy/container/node.yaml",
    ];
    for rel in files {
        config_check(rel, &read(rel));
    }
    config_check("deploy/kubernetes/configmap.yaml", &configmap_config());
    // A configuration added later is checked too, or this test says so.
    for dir in ["deploy/systemd", "deploy/container"] {
        for entry in std::fs::read_dir(repo().join(dir)).unwrap() {
            let name = entry.unwrap().file_name().to_string_lossy().into_owned();
            if name.ends_with(".yaml") && name != "compose.yaml" {
                assert!(
                    files.contains(&format!("{dir}/{name}").as_str()),
                    "{dir}/{name} is not config-checked"
                );
            }
        }
    }
}

// --- container ------------------------------------------------------------------------

#[test]
fn container_image_builds_and_fits_its_config() {
    let dockerfile = read("deploy/container/Dockerfile");
    let rust_version = read("Cargo.toml")
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = "))
        .map(|v| v.trim_matches('"').to_string())
        .expect("rust-version in Cargo.toml");
    for needle in [
        format!("FROM rust:{rust_version}-slim-bookworm AS builder"),
        "cargo build --release --locked --bin mairust".into(),
        "FROM debian:bookworm-slim".into(),
        "COPY --from=builder".into(),
        "deploy/container/config.yaml /etc/mairust/config.yaml".into(),
        "USER 10001:10001".into(),
        r#"VOLUME ["/etc/mairust", "/var/lib/mairust"]"#.into(),
        "STOPSIGNAL SIGTERM".into(),
        r#"CMD ["mairust", "--config", "/etc/mairust/config.yaml", "health", "live"]"#.into(),
        r#"ENTRYPOINT ["mairust", "--config", "/etc/mairust/config.yaml"]"#.into(),
        r#"CMD ["serve"]"#.into(),
    ] {
        assert!(dockerfile.contains(&needle), "Dockerfile: no `{needle}`");
    }
    // The HEALTHCHECK's command exists.
    let out = Command::new(BIN)
        .args(["health", "live", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success(), "mairust health live: {}", said(&out));
    let config = yaml(
        &read("deploy/container/config.yaml"),
        "deploy/container/config.yaml",
    );
    let exposed: BTreeSet<u16> = dockerfile
        .lines()
        .filter_map(|l| l.strip_prefix("EXPOSE "))
        .flat_map(|ports| ports.split_whitespace().map(|p| p.parse().unwrap()))
        .collect();
    let listening: BTreeSet<u16> = listener_ports(&config).into_values().collect();
    assert_eq!(exposed, listening, "EXPOSE vs the listeners of config.yaml");
    assert!(
        listening.iter().all(|p| *p >= 1024),
        "the image runs as uid 10001: no port below 1024 ({listening:?})"
    );
    assert_written_under(
        &config,
        &["/var/lib/mairust/".into()],
        "deploy/container/config.yaml",
    );
    let ignored = read(".dockerignore");
    for entry in ["target/", "data/", ".git/"] {
        assert!(
            ignored.lines().any(|l| l.trim() == entry),
            ".dockerignore: {entry}"
        );
    }

    match Command::new("docker").arg("info").output() {
        Ok(info) if info.status.success() => {
            // A tag of this run alone, removed again whatever happens below.
            let image = BuiltImage(format!(
                "mairust-deploy-test:{}-{}",
                std::process::id(),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos()
            ));
            let out = tool(
                "docker",
                &[
                    "build",
                    "-f",
                    "deploy/container/Dockerfile",
                    "-t",
                    &image.0,
                    ".",
                ],
                "Docker",
            );
            assert!(out.status.success(), "docker build: {}", said(&out));
        }
        Ok(info) => eprintln!(
            "Docker engine absent (docker info: {}): image build skipped",
            said(&info).lines().last().unwrap_or("no answer")
        ),
        Err(e) => eprintln!("Docker engine absent (no docker command: {e}): image build skipped"),
    }
}

/// An image tag this test builds: `docker rmi -f` when dropped, also when the build or
/// an assertion failed (a tag the build never made is only a note).
struct BuiltImage(String);

impl Drop for BuiltImage {
    fn drop(&mut self) {
        match Command::new("docker").args(["rmi", "-f", &self.0]).output() {
            Ok(out) if out.status.success() => {}
            Ok(out) => eprintln!("docker rmi -f {}: {}", self.0, said(&out).trim()),
            Err(e) => eprintln!("docker rmi -f {}: {e}", self.0),
        }
    }
}

/// The sections of an HAProxy configuration: header line, then its settings.
fn haproxy_sections(cfg: &str) -> Vec<(String, Vec<String>)> {
    let mut sections: Vec<(String, Vec<String>)> = Vec::new();
    for line in cfg.lines() {
        let text = line.split('#').next().unwrap_or_default().trim();
        if text.is_empty() {
            continue;
        }
        if line.starts_with([' ', '\t']) {
            let (_, settings) = sections.last_mut().expect("a setting before any section");
            settings.push(text.to_string());
        } else {
            sections.push((text.to_string(), Vec::new()));
        }
    }
    sections
}

#[test]
fn haproxy_config_passes_haproxy_check_and_fits_the_nodes() {
    let out = tool(
        "haproxy",
        &["-c", "-f", "deploy/container/haproxy.cfg"],
        "haproxy (Debian package haproxy)",
    );
    let text = said(&out);
    assert!(
        out.status.success() && text.contains("Configuration file is valid"),
        "haproxy -c: {text}"
    );
    // The nodes' names resolve on the compose network only (init-addr none).
    for line in text
        .lines()
        .filter(|l| l.contains("[WARNING]") || l.contains("[ALERT]"))
    {
        assert!(
            line.contains("[WARNING]") && line.contains("could not resolve address"),
            "haproxy -c: {line}"
        );
    }

    let node = yaml(&read("deploy/container/node.yaml"), "node.yaml");
    let ports = listener_ports(&node);
    let http = ports["http"];
    let smtp: BTreeSet<u16> = ports
        .iter()
        .filter(|(name, _)| *name != "http")
        .map(|(_, port)| *port)
        .collect();
    let sections = haproxy_sections(&read("deploy/container/haproxy.cfg"));
    assert_eq!(
        sections.iter().filter(|(h, _)| h == "defaults").count(),
        1,
        "one defaults section"
    );
    let default_server = sections
        .iter()
        .filter(|(h, _)| h == "defaults")
        .flat_map(|(_, s)| s)
        .find(|s| s.starts_with("default-server "))
        .expect("default-server in defaults");
    for needle in [
        format!("check port {http}"),
        "init-addr".into(),
        "resolvers docker".into(),
    ] {
        assert!(
            default_server.contains(&needle),
            "default-server: no `{needle}`"
        );
    }

    let mut bound = BTreeSet::new();
    let mut smtp_backends = BTreeSet::new();
    for (header, settings) in &sections {
        if header.starts_with("frontend ") {
            for bind in settings.iter().filter_map(|s| s.strip_prefix("bind ")) {
                let port = bind.rsplit_once(':').map(|(_, p)| p).unwrap_or(bind);
                bound.insert(port.trim().parse::<u16>().unwrap());
            }
        }
        let Some(backend) = header.strip_prefix("backend ") else {
            continue;
        };
        assert!(
            settings.contains(&"option httpchk GET /health/ready".to_string())
                && settings.contains(&"http-check expect status 200".to_string()),
            "backend {backend}: health check on /health/ready"
        );
        let servers: Vec<Vec<&str>> = settings
            .iter()
            .filter(|s| s.starts_with("server "))
            .map(|s| s.split_whitespace().collect())
            .collect();
        let names: BTreeSet<&str> = servers.iter().map(|s| s[1]).collect();
        assert_eq!(
            names,
            BTreeSet::from(["mairust-1", "mairust-2"]),
            "backend {backend}"
        );
        let mut backend_ports = BTreeSet::new();
        for server in &servers {
            let (host, port) = server[2].rsplit_once(':').unwrap();
            assert_eq!(host, server[1], "backend {backend}: {server:?}");
            let port: u16 = port.parse().unwrap();
            backend_ports.insert(port);
            if port == http {
                assert!(!server.contains(&"send-proxy-v2"), "{server:?}");
            } else {
                assert!(
                    smtp.contains(&port) && server.contains(&"send-proxy-v2"),
                    "backend {backend}: {server:?} (SMTP ports {smtp:?}, with send-proxy-v2)"
                );
                smtp_backends.insert(port);
            }
        }
        assert_eq!(backend_ports.len(), 1, "backend {backend}: one port");
    }
    assert_eq!(smtp_backends, smtp, "an SMTP backend per listener");
    let mut all: BTreeSet<u16> = smtp.clone();
    all.insert(http);
    assert_eq!(bound, all, "frontends bind the nodes' ports");
}

#[test]
fn compose_stack_fits_the_node_config() {
    let compose = yaml(&read("deploy/container/compose.yaml"), "compose.yaml");
    let node = yaml(&read("deploy/container/node.yaml"), "node.yaml");
    let services = compose["services"].as_object().expect("services");
    let subnet = compose["networks"]["mail"]["ipam"]["config"][0]["subnet"]
        .as_str()
        .expect("a pinned subnet for the network mail");

    // HAProxy: inside that network at a fixed address, publishing 25/587/465 on the
    // nodes' listener ports.
    let haproxy = &services["haproxy"];
    assert!(
        haproxy["image"]
            .as_str()
            .is_some_and(|i| i.starts_with("haproxy:2.8")),
        "haproxy image"
    );
    let address = haproxy["networks"]["mail"]["ipv4_address"]
        .as_str()
        .expect("haproxy's ipv4_address (pinned: the nodes trust exactly it)");
    assert!(in_network(subnet, address), "{address} not in {subnet}");
    // What the nodes trust for the PROXY protocol and X-Forwarded-For: HAProxy alone,
    // never the network (any container on it could claim any client address).
    let haproxy_only = serde_json::json!([format!("{address}/32")]);
    let published: Vec<&str> = haproxy["ports"]
        .as_array()
        .expect("haproxy ports")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let ports = listener_ports(&node);
    for (name, outside) in [("inbound", 25), ("submission", 587), ("submissions", 465)] {
        let mapping = format!("{outside}:{}", ports[name]);
        assert!(
            published.contains(&mapping.as_str()),
            "haproxy publishes {mapping}"
        );
        // Every listener behind HAProxy reads the PROXY header from HAProxy only.
        let proxy = &node["smtp"]["listeners"][name]["proxy_protocol"];
        assert_eq!(
            proxy["trusted"], haproxy_only,
            "smtp.listeners.{name}.proxy_protocol.trusted: HAProxy's address only"
        );
    }
    assert_eq!(
        node["api"]["trusted_proxies"], haproxy_only,
        "api.trusted_proxies: HAProxy's address only"
    );

    // The nodes: the same config file, the environment it reads, a stop grace period
    // covering the drain, the schema applied before they start.
    let mut names = BTreeSet::new();
    env_names(&node, &mut names);
    let nodes: Vec<(&String, &Value)> = services
        .iter()
        .filter(|(name, _)| name.starts_with("mairust-"))
        .collect();
    assert_eq!(nodes.len(), 2, "two MaiRust nodes");
    let users = nodes
        .iter()
        .map(|(name, service)| (name.as_str(), *service))
        .chain([("migrate", &services["migrate"])]);
    for (name, service) in users {
        let environment = service["environment"].as_object().expect("environment");
        for var in &names {
            assert!(environment.contains_key(var), "{name}: no {var}");
        }
        let volumes: Vec<&str> = service["volumes"]
            .as_array()
            .expect("volumes")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert!(
            volumes.contains(&"./node.yaml:/etc/mairust/config.yaml:ro"),
            "{name}: node.yaml as its config"
        );
        let grace = seconds(
            service["stop_grace_period"]
                .as_str()
                .expect("stop_grace_period"),
        );
        assert!(
            grace >= shutdown_seconds(&node) + MARGIN,
            "{name}: stop_grace_period {grace} s"
        );
    }
    assert_eq!(
        services["migrate"]["command"],
        serde_json::json!(["migrate"])
    );
    for (name, service) in &nodes {
        assert_eq!(
            service["depends_on"]["migrate"]["condition"], "service_completed_successfully",
            "{name}"
        );
    }
    assert!(services.contains_key("postgres") && services.contains_key("minio"));
    assert_written_under(&node, &["/var/lib/mairust/".into()], "node.yaml");
}

// --- Kubernetes -----------------------------------------------------------------------

#[test]
fn kubernetes_manifests_pass_kubernetes_validate_strictly() {
    let dir = repo().join("deploy/kubernetes");
    let files: Vec<String> = CORE_MANIFESTS
        .iter()
        .map(|f| dir.join(f).display().to_string())
        .collect();
    let mut args = vec!["--strict"];
    args.extend(files.iter().map(String::as_str));
    let out = tool(
        "kubernetes-validate",
        &args,
        "kubernetes-validate (pip install kubernetes-validate)",
    );
    let text = said(&out);
    assert!(out.status.success(), "kubernetes-validate --strict: {text}");
    // An unknown kind or apiVersion is only a WARN, exit 0: each resource must pass.
    assert!(
        !text.contains("WARN") && !text.contains("ERROR"),
        "kubernetes-validate --strict: {text}"
    );
    let resources: usize = CORE_MANIFESTS
        .iter()
        .map(|f| yaml_docs(&format!("deploy/kubernetes/{f}")).len())
        .sum();
    assert_eq!(
        text.matches(" passed for resource ").count(),
        resources,
        "every resource validated: {text}"
    );

    // Nothing escapes: every file is a core manifest, the ServiceMonitor (checked in
    // kubernetes_services_and_servicemonitor_select_the_pods) or the kustomization.
    for entry in std::fs::read_dir(&dir).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        assert!(
            CORE_MANIFESTS.contains(&name.as_str())
                || name == "servicemonitor.yaml"
                || name == "kustomization.yaml",
            "deploy/kubernetes/{name} is not validated"
        );
    }
    let kustomization = yaml(
        &read("deploy/kubernetes/kustomization.yaml"),
        "kustomization",
    );
    assert_eq!(kustomization["kind"], "Kustomization");
    let listed: BTreeSet<&str> = kustomization["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let expected: BTreeSet<&str> = CORE_MANIFESTS
        .iter()
        .copied()
        .filter(|f| !APPLIED_APART.contains(f))
        .chain(["servicemonitor.yaml"])
        .collect();
    assert_eq!(
        listed, expected,
        "kustomization.yaml: every manifest but the example Secret and the migrate Job"
    );
}

/// Every document of the Kubernetes manifests (ServiceMonitor included).
fn kubernetes_docs() -> Vec<Value> {
    CORE_MANIFESTS
        .iter()
        .chain(["servicemonitor.yaml"].iter())
        .flat_map(|f| yaml_docs(&format!("deploy/kubernetes/{f}")))
        .collect()
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

fn named<'a>(items: &'a Value, name: &str, what: &str) -> &'a Value {
    items
        .as_array()
        .and_then(|items| items.iter().find(|i| i["name"] == name))
        .unwrap_or_else(|| panic!("no {what} named {name}"))
}

#[test]
fn kubernetes_deployment_fits_its_config() {
    let docs = kubernetes_docs();
    let configmap = single(of_kind(&docs, "ConfigMap"), "ConfigMap");
    let config = yaml(&configmap_config(), "configmap.yaml config.yaml");
    let deployment = single(of_kind(&docs, "Deployment"), "Deployment");
    assert_eq!(deployment["spec"]["replicas"], 2);
    let pod = &deployment["spec"]["template"];
    assert!(selects(
        &deployment["spec"]["selector"]["matchLabels"],
        &pod["metadata"]["labels"]
    ));
    let spec = &pod["spec"];
    let container = named(&spec["containers"], "mairust", "container");

    // Ports named as the Services and probes use them, on the config's listeners.
    let ports: BTreeMap<&str, u64> = container["ports"]
        .as_array()
        .expect("container ports")
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap(),
                p["containerPort"].as_u64().unwrap(),
            )
        })
        .collect();
    let listening = listener_ports(&config);
    for (port, listener) in [
        ("smtp", "inbound"),
        ("submission", "submission"),
        ("submissions", "submissions"),
        ("http", "http"),
    ] {
        assert_eq!(
            ports.get(port).copied(),
            listening.get(listener).map(|p| u64::from(*p)),
            "container port {port} vs the {listener} listener"
        );
    }

    // Probes: ready on /health/ready, alive on /health/live, on the http port.
    for (probe, path) in [
        ("readinessProbe", "/health/ready"),
        ("livenessProbe", "/health/live"),
        ("startupProbe", "/health/live"),
    ] {
        let get = &container[probe]["httpGet"];
        assert_eq!(get["path"], path, "{probe}");
        assert_eq!(get["port"], "http", "{probe}");
    }

    // The grace period covers the preStop sleep, the close delay, the session timeout
    // and the queue drain, with a margin.
    let sleep = &container["lifecycle"]["preStop"]["exec"]["command"];
    assert_eq!(
        sleep[0], "sleep",
        "preStop: exec sleep (in the Debian image)"
    );
    let sleep: u64 = sleep[1]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("sleep N");
    let close_delay = config["server"]["shutdown"]["close_delay_seconds"].as_u64();
    assert!(
        close_delay.is_some_and(|d| d > 0),
        "close_delay_seconds set"
    );
    let grace = spec["terminationGracePeriodSeconds"]
        .as_u64()
        .expect("terminationGracePeriodSeconds");
    assert!(
        grace >= sleep + shutdown_seconds(&config) + MARGIN,
        "terminationGracePeriodSeconds {grace} < preStop {sleep} + shutdown {} + {MARGIN}",
        shutdown_seconds(&config)
    );

    // Not root, read-only root file system: the server writes into emptyDirs only.
    assert_eq!(spec["securityContext"]["runAsNonRoot"], true);
    assert_eq!(spec["securityContext"]["runAsUser"], 10001);
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(
        container["securityContext"]["allowPrivilegeEscalation"],
        false
    );
    assert!(
        spec["topologySpreadConstraints"]
            .as_array()
            .is_some_and(|c| !c.is_empty())
    );
    let volumes = spec["volumes"].as_array().expect("volumes");
    let mounts = container["volumeMounts"].as_array().expect("volumeMounts");
    let mount_of = |volume: &Value| -> Vec<String> {
        mounts
            .iter()
            .filter(|m| m["name"] == volume["name"])
            .map(|m| format!("{}/", m["mountPath"].as_str().unwrap()))
            .collect()
    };
    let writable: Vec<String> = volumes
        .iter()
        .filter(|v| v.get("emptyDir").is_some())
        .flat_map(mount_of)
        .collect();
    assert_written_under(&config, &writable, "configmap.yaml");

    // The config file is the ConfigMap's, where the image's ENTRYPOINT reads it.
    let config_mount = mounts
        .iter()
        .find(|m| m["mountPath"] == "/etc/mairust/config.yaml")
        .expect("/etc/mairust/config.yaml mounted");
    assert_eq!(config_mount["subPath"], "config.yaml");
    let config_volume = named(
        &spec["volumes"],
        config_mount["name"].as_str().unwrap(),
        "volume",
    );
    assert_eq!(
        config_volume["configMap"]["name"],
        configmap["metadata"]["name"]
    );

    // Secrets: volumes and environment name Secrets and keys the example has, and
    // every `env:NAME` of the config is set.
    let secrets = of_kind(&docs, "Secret");
    let secret_has = |name: &str, key: Option<&str>| {
        secrets.iter().any(|s| {
            s["metadata"]["name"] == name
                && key.is_none_or(|k| s["data"].get(k).or(s["stringData"].get(k)).is_some())
        })
    };
    for volume in volumes {
        if let Some(name) = volume["secret"]["secretName"].as_str() {
            assert!(secret_has(name, None), "volume from Secret {name}");
        }
    }
    let env = container["env"].as_array().expect("env");
    for var in env {
        if let Some(reference) = var["valueFrom"].get("secretKeyRef") {
            let (name, key) = (
                reference["name"].as_str().unwrap(),
                reference["key"].as_str(),
            );
            assert!(
                secret_has(name, key),
                "{}: Secret {name} key {key:?}",
                var["name"]
            );
        }
    }
    let mut needed = BTreeSet::new();
    env_names(&config, &mut needed);
    for name in needed {
        assert!(
            env.iter().any(|v| v["name"] == name.as_str()),
            "env:{name} in configmap.yaml but not set in deployment.yaml"
        );
    }

    // TLS from a mounted Secret; the DKIM master key copied by the init container.
    let cert = config["smtp"]["tls"]["cert_path"]
        .as_str()
        .expect("smtp.tls");
    assert!(
        volumes
            .iter()
            .filter(|v| v.get("secret").is_some())
            .flat_map(mount_of)
            .any(|dir| cert.starts_with(&dir)),
        "smtp.tls.cert_path {cert} is not in a mounted Secret"
    );
    let master = config["dkim"]["master_key_file"]
        .as_str()
        .expect("dkim.master_key_file");
    let init = named(&spec["initContainers"], "dkim-master-key", "init container");
    assert!(
        init["command"].to_string().contains(master),
        "the init container writes {master}"
    );
}

#[test]
fn kubernetes_services_and_servicemonitor_select_the_pods() {
    let docs = kubernetes_docs();
    let deployment = single(of_kind(&docs, "Deployment"), "Deployment");
    let pod_labels = &deployment["spec"]["template"]["metadata"]["labels"];
    let container = named(
        &deployment["spec"]["template"]["spec"]["containers"],
        "mairust",
        "container",
    );
    let container_ports: BTreeSet<&str> = container["ports"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();

    let services = of_kind(&docs, "Service");
    for service in &services {
        let name = &service["metadata"]["name"];
        assert!(
            selects(&service["spec"]["selector"], pod_labels),
            "{name} selects the pods"
        );
        for port in service["spec"]["ports"].as_array().unwrap() {
            let target = port["targetPort"].as_str().unwrap_or_default();
            assert!(
                container_ports.contains(target),
                "{name}: targetPort {target}"
            );
        }
    }
    let smtp = single(
        services
            .iter()
            .copied()
            .filter(|s| s["spec"]["type"] == "LoadBalancer")
            .collect(),
        "LoadBalancer Service",
    );
    assert_eq!(smtp["spec"]["externalTrafficPolicy"], "Local");
    let published: BTreeMap<u64, &str> = smtp["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["port"].as_u64().unwrap(),
                p["targetPort"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        published,
        BTreeMap::from([(25, "smtp"), (465, "submissions"), (587, "submission")])
    );

    let pdb = single(of_kind(&docs, "PodDisruptionBudget"), "PodDisruptionBudget");
    assert_eq!(pdb["spec"]["minAvailable"], 1);
    assert!(selects(&pdb["spec"]["selector"]["matchLabels"], pod_labels));

    // kubernetes-validate has no schema for it: its shape is checked here.
    let monitor = single(of_kind(&docs, "ServiceMonitor"), "ServiceMonitor");
    assert_eq!(monitor["apiVersion"], "monitoring.coreos.com/v1");
    let selected = single(
        services
            .iter()
            .copied()
            .filter(|s| {
                selects(
                    &monitor["spec"]["selector"]["matchLabels"],
                    &s["metadata"]["labels"],
                )
            })
            .collect(),
        "Service selected by the ServiceMonitor",
    );
    assert_eq!(selected["spec"]["type"], "ClusterIP");
    let endpoints = monitor["spec"]["endpoints"].as_array().expect("endpoints");
    assert!(!endpoints.is_empty());
    for endpoint in endpoints {
        let port = named(
            &selected["spec"]["ports"],
            endpoint["port"].as_str().expect("endpoint port name"),
            "Service port",
        );
        assert_eq!(port["targetPort"], "http");
        assert_eq!(endpoint["path"], "/metrics");
    }
}

#[test]
fn kubernetes_migrate_job_runs_the_deployments_image_and_config() {
    let docs = kubernetes_docs();
    let deployment = single(of_kind(&docs, "Deployment"), "Deployment");
    let job = single(of_kind(&docs, "Job"), "Job");
    assert_eq!(job["apiVersion"], "batch/v1");
    assert_eq!(job["metadata"]["name"], "mairust-migrate");
    for key in [
        "backoffLimit",
        "ttlSecondsAfterFinished",
        "activeDeadlineSeconds",
    ] {
        assert!(
            job["spec"][key].as_u64().is_some_and(|n| n > 0),
            "migrate-job.yaml: spec.{key}"
        );
    }
    let pod = &deployment["spec"]["template"]["spec"];
    let job_pod = &job["spec"]["template"]["spec"];
    assert_eq!(job_pod["restartPolicy"], "Never");
    let server = named(&pod["containers"], "mairust", "container");
    let containers = job_pod["containers"].as_array().expect("Job containers");
    assert_eq!(containers.len(), 1, "one container in the Job");
    let migrate = &containers[0];
    // `mairust --config /etc/mairust/config.yaml` (the image's ENTRYPOINT) `migrate`.
    assert_eq!(migrate["args"], serde_json::json!(["migrate"]));
    assert!(
        migrate.get("command").is_none(),
        "the Job keeps the image's ENTRYPOINT"
    );
    let out = Command::new(BIN)
        .args(["migrate", "--help"])
        .output()
        .unwrap();
    assert!(
        out.status.success() && said(&out).contains("--check"),
        "mairust migrate --check: {}",
        said(&out)
    );

    // The Deployment's image, environment, configuration, Secrets and confinement: the
    // same config file must load (every `env:NAME` set) and reach the same database.
    for key in [
        "image",
        "imagePullPolicy",
        "env",
        "volumeMounts",
        "securityContext",
    ] {
        assert_eq!(
            migrate[key], server[key],
            "migrate-job.yaml container {key} vs deployment.yaml's"
        );
    }
    for key in [
        "volumes",
        "securityContext",
        "automountServiceAccountToken",
        "serviceAccountName",
    ] {
        assert_eq!(
            job_pod[key], pod[key],
            "migrate-job.yaml pod {key} vs deployment.yaml's"
        );
    }

    // Its pod is nobody's backend: no Service, PodDisruptionBudget or the Deployment
    // selects it.
    let labels = &job["spec"]["template"]["metadata"]["labels"];
    assert_eq!(labels["app.kubernetes.io/name"], "mairust");
    assert!(!selects(
        &deployment["spec"]["selector"]["matchLabels"],
        labels
    ));
    for service in of_kind(&docs, "Service") {
        assert!(
            !selects(&service["spec"]["selector"], labels),
            "{} selects the migrate Job's pod",
            service["metadata"]["name"]
        );
    }
    for pdb in of_kind(&docs, "PodDisruptionBudget") {
        assert!(!selects(&pdb["spec"]["selector"]["matchLabels"], labels));
    }

    // The order the header and kustomization.yaml give: the Job, wait, then apply -k.
    let header = read("deploy/kubernetes/migrate-job.yaml");
    let kustomization = read("deploy/kubernetes/kustomization.yaml");
    for (file, text) in [
        ("migrate-job.yaml", &header),
        ("kustomization.yaml", &kustomization),
    ] {
        let steps = [
            "kubectl apply -f deploy/kubernetes/migrate-job.yaml",
            "kubectl wait --for=condition=complete --timeout=15m job/mairust-migrate",
            "kubectl apply -k deploy/kubernetes",
        ];
        let mut rest = text.as_str();
        for step in steps {
            let at = rest
                .find(step)
                .unwrap_or_else(|| panic!("{file}: `{step}` (after {steps:?} before it)"));
            rest = &rest[at + step.len()..];
        }
        assert!(text.contains("migrate --check"), "{file}: migrate --check");
    }

    // The header's `migrate --check` Job: its sed expressions are there, and what they
    // make is a valid Job of its own name running `migrate --check` once.
    for expression in CHECK_JOB_SED {
        assert!(
            header.contains(&format!("-e '{expression}'")),
            "migrate-job.yaml's header: sed -e '{expression}'"
        );
    }
    let mut sed = vec![];
    for expression in CHECK_JOB_SED {
        sed.extend(["-e", expression]);
    }
    sed.push("deploy/kubernetes/migrate-job.yaml");
    let out = tool("sed", &sed, "sed");
    assert!(out.status.success(), "sed: {}", said(&out));
    let dir = tempfile::tempdir().unwrap();
    let check_file = dir.path().join("migrate-check-job.yaml");
    std::fs::write(&check_file, &out.stdout).unwrap();
    let check: Value = yaml(&String::from_utf8_lossy(&out.stdout), "the check Job");
    assert_eq!(check["metadata"]["name"], "mairust-migrate-check");
    assert_eq!(check["spec"]["backoffLimit"], 0);
    assert_eq!(
        check["spec"]["template"]["spec"]["containers"][0]["args"],
        serde_json::json!(["migrate", "--check"])
    );
    let out = tool(
        "kubernetes-validate",
        &["--strict", check_file.to_str().unwrap()],
        "kubernetes-validate (pip install kubernetes-validate)",
    );
    let text = said(&out);
    assert!(
        out.status.success() && text.contains(" passed for resource job/mairust-migrate-check"),
        "kubernetes-validate --strict on the check Job: {text}"
    );
}
