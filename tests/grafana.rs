//! The shipped alert rules and dashboards (SPEC O3): `promtool check rules`, the rules'
//! unit tests (`promtool test rules`), the example Prometheus configuration, and the
//! dashboards' shape (provisioning-ready, every query on the `datasource` variable).
//! That every metric they name exists is checked against a live scrape in metrics.rs.

use std::path::Path;
use std::process::Command;

fn promtool(args: &[&str]) -> Option<String> {
    let out = match Command::new("promtool")
        .args(args)
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("grafana/prometheus"))
        .output()
    {
        Ok(out) => out,
        Err(e) if std::env::var("CI").is_ok() => panic!("promtool is needed in CI: {e}"),
        Err(e) => {
            eprintln!("promtool not run ({e}); install the Debian package prometheus");
            return None;
        }
    };
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?}: {said}");
    Some(said)
}

#[test]
fn alert_rules_pass_promtool_and_their_unit_tests() {
    if let Some(said) = promtool(&["check", "rules", "rules.yml"]) {
        assert!(said.contains("SUCCESS: 9 rules found"), "{said}");
    }
    if let Some(said) = promtool(&["test", "rules", "rules_test.yml"]) {
        assert!(said.contains("SUCCESS"), "{said}");
    }
    promtool(&["check", "config", "prometheus.yml"]);
    let rules = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("grafana/prometheus/rules.yml"),
    )
    .unwrap();
    for alert in [
        "DependencyDown",
        "HighErrorRate",
        "QueueBacklog",
        "StorageAlmostFull",
        "ActorRestarting",
        "TargetDown",
        "HighCpu",
        "HighMemory",
    ] {
        assert!(
            rules.contains(&format!("alert: {alert}")),
            "{alert} missing"
        );
    }
}

#[test]
fn dashboards_are_provisioning_ready() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("grafana/dashboards");
    let mut titles = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let board: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let name = path.display().to_string();
        assert!(
            board["uid"]
                .as_str()
                .is_some_and(|u| u.starts_with("mairust-")),
            "{name}"
        );
        assert!(
            board["id"].is_null(),
            "{name}: provisioned dashboards carry no id"
        );
        titles.push(board["title"].as_str().unwrap().to_string());
        let vars = board["templating"]["list"].as_array().unwrap();
        assert!(
            vars.iter()
                .any(|v| v["name"] == "datasource" && v["query"] == "prometheus"),
            "{name}"
        );
        let panels = board["panels"].as_array().unwrap();
        assert!(!panels.is_empty(), "{name}");
        for panel in panels {
            let targets = panel["targets"].as_array().unwrap();
            assert!(!targets.is_empty(), "{name}: {}", panel["title"]);
            for t in targets {
                assert_eq!(t["datasource"]["uid"], "${datasource}", "{name}");
                let expr = t["expr"].as_str().unwrap();
                assert!(
                    expr.contains("mairust_") || expr.contains("process_"),
                    "{name}: {expr}"
                );
            }
        }
    }
    titles.sort();
    assert_eq!(
        titles,
        [
            "MaiRust / API performance",
            "MaiRust / Hooks and plugins",
            "MaiRust / Outbound queue",
            "MaiRust / SMTP traffic",
            "MaiRust / Storage and dependencies",
        ]
    );
}
