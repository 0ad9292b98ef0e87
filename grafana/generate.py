#!/usr/bin/env python3
"""Writes the Grafana dashboards in dashboards/ (provisioning-ready JSON).

Run `python3 grafana/generate.py` after changing a panel; the JSON is what is shipped
and what tests/metrics.rs checks against a live scrape (every metric named must exist).
"""
import json
import pathlib

HERE = pathlib.Path(__file__).parent
DS = {"type": "prometheus", "uid": "${datasource}"}
SEL = 'instance=~"$instance"'


def target(expr, legend, ref):
    return {"datasource": DS, "expr": expr, "legendFormat": legend, "refId": ref}


def panel(pid, title, exprs, unit="short", kind="timeseries", x=0, y=0, w=12, h=8, description=""):
    p = {
        "id": pid,
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DS,
        "gridPos": {"x": x, "y": y, "w": w, "h": h},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "table", "placement": "bottom", "showLegend": True}},
        "targets": [target(e, l, chr(ord("A") + i)) for i, (e, l) in enumerate(exprs)],
    }
    if kind == "stat":
        p["options"] = {"reduceOptions": {"calcs": ["lastNotNull"]}, "colorMode": "value"}
    return p


def dashboard(uid, title, description, panels):
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["mairust"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Prometheus",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                    "hide": 0,
                },
                {
                    "name": "instance",
                    "label": "Node",
                    "type": "query",
                    "datasource": DS,
                    "query": {"query": "label_values(mairust_build_info, instance)", "refId": "A"},
                    "definition": "label_values(mairust_build_info, instance)",
                    "includeAll": True,
                    "multi": True,
                    "allValue": ".*",
                    "current": {"text": "All", "value": "$__all"},
                    "refresh": 2,
                    "hide": 0,
                },
            ]
        },
        "panels": panels,
    }


def per_second(metric, by, legend=None):
    """One series per value of the labels `by` (e.g. "listener, result"): the rate of the
    counter `metric` summed over the selected nodes, named by those labels."""
    legend = legend or " ".join(f"{{{{{label.strip()}}}}}" for label in by.split(","))
    return [(f"sum by ({by}) (rate({metric}{{{SEL}}}[$__rate_interval]))", legend)]


def quantiles(metric, by, legend_by):
    return [
        (
            f"histogram_quantile({q}, sum by (le, {by}) (rate({metric}_bucket{{{SEL}}}[$__rate_interval])))",
            f"p{int(q * 100)} {legend_by}",
        )
        for q in (0.5, 0.95, 0.99)
    ]


DASHBOARDS = [
    dashboard(
        "mairust-smtp",
        "MaiRust / SMTP traffic",
        "SMTP listeners: connections, sessions, messages, errors, latency, logins",
        [
            panel(1, "Connections per second", per_second("mairust_smtp_connections_total", "listener"), "ops", x=0, y=0),
            panel(2, "Open sessions", [(f"sum by (listener) (mairust_smtp_sessions{{{SEL}}})", "{{listener}}")], x=12, y=0),
            panel(3, "Messages per second by result", per_second("mairust_smtp_messages_total", "listener, result"), "ops", x=0, y=8,
                  description="accepted: 250 after DATA; rejected: 5xx (policy, hooks); tempfail: 4xx (dependency down, hook tempfail)"),
            panel(4, "Transaction duration (MAIL FROM to the reply after DATA)", quantiles("mairust_smtp_duration_seconds", "listener", "{{listener}}"), "s", x=12, y=8),
            panel(5, "Error replies per second by code", per_second("mairust_smtp_errors_total", "listener, code"), "ops", x=0, y=16),
            panel(6, "AUTH attempts per second", per_second("mairust_smtp_auth_total", "listener, result"), "ops", x=12, y=16),
            panel(7, "Resource limits hit per second", per_second("mairust_limit_hits_total", "limit"), "ops", x=0, y=24, w=24,
                  description="Clients running into a bound: auth_busy (no password-check slot: 454), auth_locked (lockout: 454), data_spooled (body written to disk), data_memory (no memory for a finished body: 451), data_rate (DATA too slow: 421), session_lifetime, write_timeout (client not reading)"),
        ],
    ),
    dashboard(
        "mairust-api",
        "MaiRust / API performance",
        "REST API: traffic, errors and latency by route pattern",
        [
            panel(1, "Requests per second by route", per_second("mairust_api_requests_total", "route, method", "{{method}} {{route}}"), "reqps", x=0, y=0),
            panel(2, "Server errors (5xx) share", [(f'sum(rate(mairust_api_requests_total{{{SEL},status="5xx"}}[$__rate_interval])) / sum(rate(mairust_api_requests_total{{{SEL}}}[$__rate_interval]))', "5xx")], "percentunit", x=12, y=0),
            panel(3, "Latency by route (p95)", [(f"histogram_quantile(0.95, sum by (le, route) (rate(mairust_api_duration_seconds_bucket{{{SEL}}}[$__rate_interval])))", "{{route}}")], "s", x=0, y=8),
            panel(4, "Latency, all routes", quantiles("mairust_api_duration_seconds", "instance", "{{instance}}"), "s", x=12, y=8),
            panel(5, "Answers per second by status class", per_second("mairust_api_requests_total", "status"), "reqps", x=0, y=16, w=24),
        ],
    ),
    dashboard(
        "mairust-queue",
        "MaiRust / Outbound queue",
        "Outbound queue: backlog, age and delivery results (all nodes share one queue)",
        [
            panel(1, "Queue length", [(f"max(mairust_queue_length{{{SEL}}})", "entries")], x=0, y=0),
            panel(2, "Oldest entry", [(f"max(mairust_queue_oldest_seconds{{{SEL}}})", "age")], "s", x=12, y=0),
            panel(3, "Delivery results per second", per_second("mairust_queue_deliveries_total", "result"), "ops", x=0, y=8, w=24,
                  description="Per recipient and attempt: delivered, deferred (retry later), bounced (5xx), expired (queue.max_age_seconds)"),
        ],
    ),
    dashboard(
        "mairust-hooks",
        "MaiRust / Hooks and plugins",
        "HTTP hooks: verdicts, failures, breaker skips",
        [
            panel(1, "Hook calls per second by result", per_second("mairust_hook_calls_total", "hook, result"), "ops", x=0, y=0, w=24,
                  description="skipped: the circuit breaker is open; timeout/error: on_timeout / on_error applied"),
            panel(2, "Plugin errors per second", per_second("mairust_plugin_errors_total", "plugin"), "ops", x=0, y=8),
            panel(3, "Hook failure share", [(f'sum by (hook) (rate(mairust_hook_calls_total{{{SEL},result=~"timeout|error|invalid"}}[$__rate_interval])) / sum by (hook) (rate(mairust_hook_calls_total{{{SEL}}}[$__rate_interval]))', "{{hook}}")], "percentunit", x=12, y=8),
        ],
    ),
    dashboard(
        "mairust-storage",
        "MaiRust / Storage and dependencies",
        "Message store size against its limit, purges of deleted messages, database and object store health, versions, each node's CPU, memory and descriptors",
        [
            panel(1, "Dependencies up", [(f"min by (dependency) (mairust_up{{{SEL}}})", "{{dependency}}")], kind="stat", x=0, y=0, w=8, h=6),
            panel(2, "Stored bytes", [(f"max(mairust_storage_bytes{{{SEL}}})", "stored")], "bytes", kind="stat", x=8, y=0, w=8, h=6),
            panel(3, "Share of storage.limit_bytes", [(f"max(mairust_storage_bytes{{{SEL}}}) / max(mairust_storage_limit_bytes{{{SEL}}} > 0)", "used")], "percentunit", kind="stat", x=16, y=0, w=8, h=6),
            panel(4, "Stored bytes over time", [(f"max(mairust_storage_bytes{{{SEL}}})", "stored"), (f"max(mairust_storage_limit_bytes{{{SEL}}} > 0)", "limit")], "bytes", x=0, y=6),
            panel(5, "Dependency state over time", [(f"mairust_up{{{SEL}}}", "{{instance}} {{dependency}}")], x=12, y=6),
            panel(7, "Purged by retention", [(f"sum by (kind) (increase(mairust_retention_purged_total{{{SEL}}}[$__rate_interval]))", "{{kind}}")], x=0, y=14, w=24,
                  description="Deleted mailbox entries past retention.deleted_messages_days, and the messages they were the last reference to, purged by all nodes"),
            panel(6, "Versions running", [(f"count by (version) (mairust_build_info{{{SEL}}})", "{{version}}")], kind="stat", x=0, y=22, w=24, h=5),
            panel(8, "CPU use per node (share of its cores)", [(f"rate(process_cpu_seconds_total{{{SEL}}}[$__rate_interval]) / on (instance) mairust_cpu_cores{{{SEL}}}", "{{instance}}")], "percentunit", x=0, y=27, w=8,
                  description="The seed's scale-out trigger: over 80% for 5 minutes (alert HighCpu)"),
            panel(9, "Resident memory per node (share of its limit)", [(f"process_resident_memory_bytes{{{SEL}}} / on (instance) mairust_memory_limit_bytes{{{SEL}}}", "{{instance}}")], "percentunit", x=8, y=27, w=8,
                  description="The seed's scale-up trigger: over 85% (alert HighMemory); the limit is the cgroup's, else the machine's memory"),
            panel(10, "Open file descriptors per node", [(f"process_open_fds{{{SEL}}}", "{{instance}} open"), (f"process_max_fds{{{SEL}}}", "{{instance}} limit")], x=16, y=27, w=8,
                  description="Each SMTP session holds a socket, a spooling one a file too"),
        ],
    ),
]

for board in DASHBOARDS:
    (HERE / "dashboards" / f"{board['uid']}.json").write_text(json.dumps(board, indent=2) + "\n")
print(f"wrote {len(DASHBOARDS)} dashboards")
