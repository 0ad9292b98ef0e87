//! `/metrics` (SPEC O1) scraped from a live server before and after real SMTP, API,
//! hook and queue traffic: every family is there, counters moved by exactly what was
//! done, labels stay low-cardinality, and `promtool check metrics` finds no problem.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::hook_receiver::{ALLOW_LOOPBACK, Answer, HookReceiver};
use common::raw::RawClient;
use common::{Options, PASSWORD, TestServer, eventually, message};
use mairust_entities::queue_entry;
use sea_orm::EntityTrait;
use sea_orm::sea_query::Expr;
use serde_json::json;

/// Every family the server exports (the dashboards and rules use only these).
pub const FAMILIES: &[&str] = &[
    "mairust_build_info",
    "mairust_smtp_connections_total",
    "mairust_smtp_sessions",
    "mairust_smtp_messages_total",
    "mairust_smtp_errors_total",
    "mairust_smtp_auth_total",
    "mairust_smtp_duration_seconds",
    "mairust_api_requests_total",
    "mairust_api_duration_seconds",
    "mairust_queue_length",
    "mairust_queue_oldest_seconds",
    "mairust_queue_deliveries_total",
    "mairust_storage_bytes",
    "mairust_storage_limit_bytes",
    "mairust_retention_purged_total",
    "mairust_hook_calls_total",
    "mairust_plugin_errors_total",
    "mairust_limit_hits_total",
    "mairust_smtp_data_memory_bytes",
    "mairust_smtp_spool_bytes",
    "mairust_actor_restarts_total",
    "mairust_up",
];

/// A parsed scrape: `# TYPE` lines and samples.
struct Scrape {
    text: String,
    types: BTreeMap<String, String>,
    samples: Vec<(String, BTreeMap<String, String>, f64)>,
}

impl Scrape {
    fn parse(text: String) -> Scrape {
        let mut types = BTreeMap::new();
        let mut samples = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut parts = rest.split(' ');
                let name = parts.next().unwrap().to_string();
                types.insert(name, parts.next().unwrap().to_string());
                continue;
            }
            if line.starts_with('#') || line.is_empty() {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').expect("name value");
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => {
                    let body = rest.strip_suffix('}').expect("closing brace");
                    let labels = body
                        .split("\",")
                        .filter(|p| !p.is_empty())
                        .map(|p| {
                            let (k, v) = p.split_once("=\"").expect("label");
                            (k.to_string(), v.trim_end_matches('"').to_string())
                        })
                        .collect();
                    (name.to_string(), labels)
                }
                None => (series.to_string(), BTreeMap::new()),
            };
            samples.push((name, labels, value.parse().expect("a number")));
        }
        Scrape {
            text,
            types,
            samples,
        }
    }

    /// Sum of the samples of `name` whose labels include `labels`.
    fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|(n, l, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, _, v)| v)
            .sum()
    }

    fn label_values(&self, name: &str, label: &str) -> BTreeSet<String> {
        self.samples
            .iter()
            .filter(|(n, _, _)| n == name)
            .filter_map(|(_, l, _)| l.get(label).cloned())
            .collect()
    }
}

/// `mairust_*` names in a text.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("mairust_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        // Skip dashboard uids (`mairust-...`) and the like: only metric-shaped names.
        let preceded = rest[..at].chars().last();
        if !preceded.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            names.insert(tail[..end].to_string());
        }
        rest = &tail[end..];
    }
    names
}

async fn scrape(server: &TestServer) -> Scrape {
    let resp = reqwest::get(format!("http://{}/metrics", server.http))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let content_type = resp.headers()["content-type"].to_str().unwrap().to_string();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    Scrape::parse(resp.text().await.unwrap())
}

async fn send_inbound(server: &TestServer, n: usize) {
    let (mut c, _) = RawClient::connect(server.inbound).await;
    c.expect("EHLO client.test", 250).await;
    for i in 0..n {
        c.expect("MAIL FROM:<a@remote.test>", 250).await;
        c.expect(&format!("RCPT TO:<{}>", TestServer::address("bob")), 250)
            .await;
        c.expect("DATA", 354).await;
        let id = format!("m{i}-{}@remote.test", uuid::Uuid::new_v4());
        let body = message("a@remote.test", &TestServer::address("bob"), &id, "hi");
        c.send(format!("{body}.\r\n").as_bytes()).await;
        assert_eq!(c.reply().await.unwrap().code, 250);
    }
    // An unknown user: one 550.
    c.expect("MAIL FROM:<a@remote.test>", 250).await;
    c.expect(&format!("RCPT TO:<nobody@{}>", common::DOMAIN), 550)
        .await;
    c.expect("QUIT", 221).await;
}

#[tokio::test]
async fn metrics_move_with_real_traffic() {
    let receiver = HookReceiver::start("a-secret-of-enough-length");
    receiver.always(Answer::json(json!({"action": "allow"})));
    let dead = common::free_port();
    let server = TestServer::start_with(Options {
        extra_yaml: format!(
            "{ALLOW_LOOPBACK}hooks:\n  - id: scan\n    event: pre_receive\n    url: {}\n    secret: a-secret-of-enough-length\n  - id: archive\n    event: post_receive\n    url: http://127.0.0.1:{dead}/\n    secret: a-secret-of-enough-length\n    breaker_failures: 100\ndelivery:\n  routes:\n    remote.test: 127.0.0.1:{dead}\n  connect_timeout_seconds: 1\nqueue:\n  poll_interval_seconds: 0.2\n",
            receiver.url()
        ),
        ..Options::default()
    });
    let client = reqwest::Client::new();
    let key = server
        .cli_ok(
            &["admin", "create-key", "--scope", "admin", "--name", "m"],
            None,
        )
        .trim()
        .to_string();
    let before = scrape(&server).await;
    // Every family is there from the first scrape (dashboards show 0, absent() alerts
    // work), the error and hook counters included.
    for family in [
        "mairust_build_info",
        "mairust_up",
        "mairust_queue_length",
        "mairust_smtp_errors_total",
        "mairust_hook_calls_total",
        "mairust_plugin_errors_total",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_virtual_memory_bytes",
        "process_open_fds",
        "process_max_fds",
        "process_start_time_seconds",
        "mairust_cpu_cores",
        "mairust_memory_limit_bytes",
    ] {
        assert!(
            before.types.contains_key(family),
            "{family} missing at start"
        );
    }
    assert_eq!(
        before.sum(
            "mairust_smtp_errors_total",
            &[("listener", "inbound"), ("code", "451")]
        ),
        0.0
    );
    assert!(
        before
            .label_values("mairust_smtp_errors_total", "code")
            .contains("550")
    );
    for hook in ["scan", "archive"] {
        let results: BTreeSet<&str> = before
            .samples
            .iter()
            .filter(|(n, l, v)| {
                n == "mairust_hook_calls_total"
                    && l.get("hook").map(String::as_str) == Some(hook)
                    && *v == 0.0
            })
            .filter_map(|(_, l, _)| l.get("result").map(String::as_str))
            .collect();
        assert_eq!(
            results,
            BTreeSet::from([
                "allow", "reject", "tempfail", "invalid", "timeout", "error", "skipped"
            ]),
            "{hook}: every result listed at 0"
        );
        assert_eq!(
            before.sum("mairust_plugin_errors_total", &[("plugin", hook)]),
            0.0
        );
        assert!(
            before
                .label_values("mairust_plugin_errors_total", "plugin")
                .contains(hook)
        );
    }
    // The process's own figures, as /proc has them.
    let pid = server.pid();
    let rss_kb: f64 = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .unwrap()
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap();
    let rss = before.sum("process_resident_memory_bytes", &[]);
    assert!(
        (rss - rss_kb * 1024.0).abs() < rss_kb * 1024.0 * 0.5,
        "resident {rss} vs /proc {rss_kb} kB"
    );
    assert!(before.sum("process_open_fds", &[]) >= 5.0);
    assert!(before.sum("process_max_fds", &[]) >= before.sum("process_open_fds", &[]));
    assert!(before.sum("process_cpu_seconds_total", &[]) > 0.0);
    assert!(before.sum("mairust_cpu_cores", &[]) >= 1.0);
    assert!(before.sum("mairust_memory_limit_bytes", &[]) > rss);
    let started = before.sum("process_start_time_seconds", &[]);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        started <= now + 1.0 && started > now - 120.0,
        "start {started}, now {now}"
    );
    assert_eq!(before.sum("mairust_up", &[("dependency", "database")]), 1.0);
    assert_eq!(before.sum("mairust_up", &[("dependency", "storage")]), 1.0);

    // SMTP: 3 accepted on inbound, one 550; a failed and a good login on submission,
    // the good one sending to a remote domain (queued, its next hop refuses).
    send_inbound(&server, 3).await;
    let port = server.submission.port();
    let bob = TestServer::address("bob");
    assert!(
        common::tls_login(port, false, &bob, "wrong password")
            .await
            .is_err()
    );
    let mut c = common::tls_login(port, false, &bob, PASSWORD)
        .await
        .unwrap();
    let outbound = mail_send::mail_builder::MessageBuilder::new()
        .from(bob.as_str())
        .to("carol@remote.test")
        .subject("out")
        .text_body("hi");
    c.send(outbound).await.unwrap();
    drop(c);

    // API: two 200s, one 401, and a path no route knows.
    for _ in 0..2 {
        let r = client
            .get(format!("http://{}/api/v1/domains", server.http))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let r = client
        .get(format!("http://{}/api/v1/domains", server.http))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = client
        .get(format!(
            "http://{}/no/such/path/{}",
            server.http,
            uuid::Uuid::new_v4()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    // The gauges follow the database probe; the delivery attempt and the post_receive
    // calls happen in the background.
    let settled = eventually(Duration::from_secs(15), || async {
        let now = scrape(&server).await;
        now.sum("mairust_queue_length", &[]) >= 1.0
            && now.sum("mairust_queue_deliveries_total", &[("result", "deferred")])
                > before.sum("mairust_queue_deliveries_total", &[("result", "deferred")])
            && now.sum("mairust_plugin_errors_total", &[("plugin", "archive")]) >= 4.0
            && now.sum("mairust_storage_bytes", &[]) > before.sum("mairust_storage_bytes", &[])
    })
    .await;
    let after = scrape(&server).await;
    assert!(settled, "gauges did not follow:\n{}", after.text);

    for family in FAMILIES {
        assert!(
            after.types.contains_key(*family),
            "{family} missing:\n{}",
            after.text
        );
    }
    // Nothing failed: every kind of supervised child is exported, at zero.
    for actor in ["storage", "queue_worker", "smtp_listener", "health_monitor"] {
        let restarts = after.samples.iter().find(|(name, labels, _)| {
            name == "mairust_actor_restarts_total"
                && labels.get("actor").map(String::as_str) == Some(actor)
        });
        assert_eq!(restarts.map(|(_, _, v)| *v), Some(0.0), "{actor}");
    }
    let delta =
        |name: &str, labels: &[(&str, &str)]| after.sum(name, labels) - before.sum(name, labels);
    let inbound = [("listener", "inbound")];
    let submission = [("listener", "submission")];
    assert_eq!(delta("mairust_smtp_connections_total", &inbound), 1.0);
    assert_eq!(delta("mairust_smtp_connections_total", &submission), 2.0);
    assert_eq!(
        delta(
            "mairust_smtp_messages_total",
            &[("listener", "inbound"), ("result", "accepted")]
        ),
        3.0
    );
    assert_eq!(
        delta(
            "mairust_smtp_messages_total",
            &[("listener", "submission"), ("result", "accepted")]
        ),
        1.0
    );
    assert_eq!(
        delta(
            "mairust_smtp_errors_total",
            &[("listener", "inbound"), ("code", "550")]
        ),
        1.0
    );
    assert_eq!(
        delta(
            "mairust_smtp_errors_total",
            &[("listener", "submission"), ("code", "535")]
        ),
        1.0
    );
    assert_eq!(
        delta(
            "mairust_smtp_auth_total",
            &[("listener", "submission"), ("result", "failure")]
        ),
        1.0
    );
    assert_eq!(
        delta(
            "mairust_smtp_auth_total",
            &[("listener", "submission"), ("result", "success")]
        ),
        1.0
    );
    assert_eq!(
        delta("mairust_smtp_duration_seconds_count", &inbound),
        3.0,
        "one transaction per message"
    );
    assert_eq!(after.types["mairust_smtp_duration_seconds"], "histogram");
    assert_eq!(
        after.sum("mairust_smtp_sessions", &[]),
        0.0,
        "sessions closed"
    );

    let domains = [("route", "/api/v1/domains"), ("method", "GET")];
    assert_eq!(
        delta(
            "mairust_api_requests_total",
            &[domains[0], domains[1], ("status", "2xx")]
        ),
        2.0
    );
    assert_eq!(
        delta(
            "mairust_api_requests_total",
            &[domains[0], domains[1], ("status", "4xx")]
        ),
        1.0
    );
    assert_eq!(
        delta("mairust_api_duration_seconds_count", &[domains[0]]),
        3.0
    );
    let routes = after.label_values("mairust_api_requests_total", "route");
    assert!(routes.contains("UNMATCHED"), "{routes:?}");
    assert!(
        routes.iter().all(|r| !r.contains("no/such")),
        "unmatched paths must not become labels: {routes:?}"
    );
    assert!(!routes.contains("/metrics"), "scrapes are not counted");

    // Hooks: `scan` allowed the 4 messages; `archive` (nothing listens) failed 4 times.
    assert_eq!(
        delta(
            "mairust_hook_calls_total",
            &[("hook", "scan"), ("result", "allow")]
        ),
        4.0
    );
    assert_eq!(
        delta(
            "mairust_hook_calls_total",
            &[("hook", "archive"), ("result", "error")]
        ),
        4.0
    );
    assert_eq!(
        delta("mairust_plugin_errors_total", &[("plugin", "archive")]),
        4.0
    );
    assert_eq!(after.sum("mairust_storage_limit_bytes", &[]), 0.0);
    // The oldest entry's age comes from the queue in the database: the one queued
    // message, moved an hour back, is an hour old at the next probe (0.2 s).
    let db = server.db().await;
    let an_hour_ago = (chrono::Utc::now() - chrono::Duration::hours(1)).fixed_offset();
    let moved = queue_entry::Entity::update_many()
        .col_expr(queue_entry::Column::CreatedAt, Expr::value(an_hour_ago))
        .exec(&db)
        .await
        .unwrap()
        .rows_affected;
    db.close().await.ok();
    assert_eq!(moved, 1, "the submitted message is the only queue entry");
    let moved_at = std::time::Instant::now();
    let aged = eventually(Duration::from_secs(10), || async {
        scrape(&server)
            .await
            .sum("mairust_queue_oldest_seconds", &[])
            >= 3600.0
    })
    .await;
    let age = scrape(&server)
        .await
        .sum("mairust_queue_oldest_seconds", &[]);
    assert!(aged, "the oldest entry's age is not the queue's: {age}");
    assert!(
        age <= 3600.0 + moved_at.elapsed().as_secs_f64().ceil() + 1.0,
        "older than the entry: {age}"
    );

    // No address, message id or client IP ever becomes a label.
    for (name, labels, _) in &after.samples {
        for value in labels.values() {
            assert!(
                !value.contains('@') && !value.contains("127.0.0.1"),
                "{name} has a high-cardinality label value {value}"
            );
        }
    }

    // Every metric the dashboards and alert rules name is exported (SPEC O3).
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("grafana");
    let mut shipped = String::new();
    for dir in ["dashboards", "prometheus"] {
        for entry in std::fs::read_dir(root.join(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.file_name().unwrap().to_string_lossy() != "rules_test.yml" {
                shipped.push_str(&std::fs::read_to_string(path).unwrap());
            }
        }
    }
    let named = metric_names(&shipped);
    assert!(named.len() >= 12, "{named:?}");
    for name in &named {
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                name.strip_suffix(s)
                    .filter(|base| after.types.get(*base).is_some_and(|t| t == "histogram"))
            })
            .unwrap_or(name);
        assert!(
            after.types.contains_key(family),
            "{name} is used in grafana/ but not exported"
        );
    }

    // promtool (Debian package prometheus) lints the exposition.
    match std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    {
        Ok(mut child) => {
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(after.text.as_bytes())
                .unwrap();
            let out = child.wait_with_output().unwrap();
            let said = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(
                out.status.success() && said.trim().is_empty(),
                "promtool: {said}"
            );
        }
        Err(e) if std::env::var("CI").is_ok() => panic!("promtool is needed in CI: {e}"),
        Err(e) => eprintln!("promtool not run ({e}); install the Debian package prometheus"),
    }
}

#[tokio::test]
async fn metrics_can_be_switched_off() {
    let server = TestServer::start_with(Options {
        extra_yaml: "telemetry:\n  metrics:\n    enabled: false\n".into(),
        ..Options::default()
    });
    send_inbound(&server, 1).await;
    let resp = reqwest::get(format!("http://{}/metrics", server.http))
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
}

/// `storage.limit_bytes`: once the stored bytes reach it, MAIL FROM gets 452 4.3.1 and
/// POST /send 503; the gauges show both figures.
#[tokio::test]
async fn storage_limit_refuses_new_mail_with_452() {
    let dir = tempfile::tempdir().unwrap();
    let backend = common::Backend::new(dir.path());
    let storage = format!("{}  limit_bytes: 1000\n", backend.storage_yaml);
    let server = TestServer::start_on(dir, backend, Options::default(), Some(storage));
    let key = server.admin_key();
    // Each message is about 450 bytes stored: three pass the limit.
    for i in 0..3 {
        let id = format!("fill-{i}@remote.test");
        assert_eq!(common::deliver_to_bob(&server, &id).await.code, 250);
    }
    let full = eventually(Duration::from_secs(10), || async {
        scrape(&server).await.sum("mairust_storage_bytes", &[]) >= 1000.0
    })
    .await;
    assert!(full, "stored bytes not counted");
    let after = scrape(&server).await;
    assert_eq!(after.sum("mairust_storage_limit_bytes", &[]), 1000.0);
    let (mut c, _) = RawClient::connect(server.inbound).await;
    c.expect("EHLO client.test", 250).await;
    let reply = c.expect("MAIL FROM:<a@remote.test>", 452).await;
    assert!(reply.text.contains("4.3.1"), "{}", reply.text);
    let resp = reqwest::Client::new()
        .post(format!("http://{}/api/v1/send", server.http))
        .bearer_auth(&key)
        .json(&json!({"from": TestServer::address("bob"), "to": [TestServer::address("alice")], "subject": "s", "text": "t"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("storage.limit_bytes"),
        "{body}"
    );
}
