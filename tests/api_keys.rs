//! API keys narrow enough for the open internet (SPEC S4): only `admin` changes
//! passwords and domains, keys limited to domains reach nothing of other domains, a
//! valid key is served from an address with many failures, and behind a trusted proxy
//! the failed-authentication limiter and the audit log see the forwarded client.

mod common;

use std::collections::BTreeSet;
use std::net::IpAddr;

use common::TestServer;
use common::api::{Api, assert_error, cli_key};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const OTHER: &str = "other.test";

/// `field` of every item of a list answer, as a set.
fn names(body: &Value, field: &str) -> BTreeSet<String> {
    body["data"]
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {body}"))
        .iter()
        .map(|i| i[field].as_str().unwrap().to_string())
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// A key made through the API; its secret and id.
async fn api_key(api: &Api<'_>, admin: &str, body: Value) -> (String, i64) {
    let (s, b) = api
        .call(Method::POST, "/api-keys", Some(admin), Some(body))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    (
        b["key"].as_str().unwrap().to_string(),
        b["id"].as_i64().unwrap(),
    )
}

#[tokio::test]
async fn a_write_key_can_neither_change_passwords_nor_add_domains() {
    let server = TestServer::start();
    let api = Api::new(&server);
    let writer = cli_key(&server, &["read", "write", "send"]);
    let admin = cli_key(&server, &["admin"]);
    let bob = TestServer::address("bob");

    let (s, b) = api
        .call(
            Method::PATCH,
            &format!("/users/{bob}"),
            Some(&writer),
            Some(json!({"password": "taken over"})),
        )
        .await;
    assert_error(s, &b, StatusCode::FORBIDDEN, "FORBIDDEN");
    // Nor by removing the user and adding the address again with a new password.
    let (s, b) = api
        .call(
            Method::DELETE,
            &format!("/users/{bob}"),
            Some(&writer),
            None,
        )
        .await;
    assert_error(s, &b, StatusCode::FORBIDDEN, "FORBIDDEN");
    let port = server.submission.port();
    let login = common::tls_login(port, false, &bob, common::PASSWORD).await;
    assert!(login.is_ok(), "bob's password changed");
    drop(login);

    // A new domain would capture the mail local users send to it.
    let (s, b) = api
        .call(
            Method::POST,
            "/domains",
            Some(&writer),
            Some(json!({"name": "gmail.com"})),
        )
        .await;
    assert_error(s, &b, StatusCode::FORBIDDEN, "FORBIDDEN");
    let (s, b) = api
        .call(Method::DELETE, "/domains/example.test", Some(&writer), None)
        .await;
    assert_error(s, &b, StatusCode::FORBIDDEN, "FORBIDDEN");
    let (s, b) = api.call(Method::GET, "/domains", Some(&admin), None).await;
    assert_eq!(names(&b, "name"), set(&["example.test"]), "{s} {b}");

    // `write` still disables and enables users; `admin` changes passwords.
    for disabled in [true, false] {
        let (s, b) = api
            .call(
                Method::PATCH,
                &format!("/users/{bob}"),
                Some(&writer),
                Some(json!({"disabled": disabled})),
            )
            .await;
        assert_eq!(
            (s, &b["disabled"]),
            (StatusCode::OK, &json!(disabled)),
            "{b}"
        );
    }
    let (s, b) = api
        .call(
            Method::PATCH,
            &format!("/users/{bob}"),
            Some(&admin),
            Some(json!({"password": "a new long password"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let login = common::tls_login(port, false, &bob, "a new long password").await;
    assert!(login.is_ok(), "the admin's password change did not apply");
}

/// Mail for bob (example.test) and dave (other.test), both queued and delivered; a key
/// limited to other.test must reach dave's objects only, and answer 404 for bob's.
#[tokio::test]
async fn a_key_limited_to_a_domain_reaches_only_that_domain() {
    let options = common::Options {
        // Queued entries stay queued.
        extra_yaml: "queue:\n  workers: 0\n".into(),
        ..common::Options::default()
    };
    let server = TestServer::start_with(options);
    let api = Api::new(&server);
    let admin = cli_key(&server, &["admin"]);
    let bob = TestServer::address("bob");
    let dave = format!("dave@{OTHER}");
    server.cli_ok(&["domain", "add", OTHER], None);
    server.cli_ok(
        &["user", "add", &dave, "--password-stdin"],
        Some(common::PASSWORD),
    );
    for (to, id) in [
        (&bob, "for-bob@remote.test"),
        (&dave, "for-dave@remote.test"),
    ] {
        assert_eq!(common::deliver_to(&server, to, id).await.code, 250);
    }
    // One key limited by the CLI, one through the API (names are normalized).
    let cli_limited = server
        .cli_ok(
            &[
                "admin",
                "create-key",
                "--scope",
                "read",
                "--domain",
                "Other.Test.",
            ],
            None,
        )
        .trim()
        .to_string();
    let (limited, limited_id) = api_key(
        &api,
        &admin,
        json!({"name": "other", "scopes": ["read", "write", "send"], "domains": ["OTHER.test"]}),
    )
    .await;
    let (s, b) = api.call(Method::GET, "/api-keys", Some(&admin), None).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let listed = |name: &str| {
        b["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no key {name}: {b}"))
    };
    assert_eq!(listed("other")["domains"], json!([OTHER]));
    assert_eq!(listed("cli")["domains"], json!([OTHER]));
    assert_eq!(listed("test")["domains"], Value::Null, "the admin key: {b}");
    let admin_id = listed("test")["id"].as_i64().unwrap();
    let cli_limited_id = listed("cli")["id"].as_i64().unwrap();
    let cli_list = server.cli_ok(&["admin", "list-keys"], None);
    assert_eq!(
        cli_list.matches(&format!("domains {OTHER}")).count(),
        2,
        "{cli_list}"
    );
    let (s, b) = api
        .call(Method::GET, "/users", Some(&cli_limited), None)
        .await;
    assert_eq!((s, names(&b, "address")), (StatusCode::OK, set(&[&dave])));

    // Domains and users: another domain's are missing.
    let call = |method: Method, path: String, body: Option<Value>| {
        let (api, limited) = (&api, &limited);
        async move { api.call(method, &path, Some(limited), body).await }
    };
    let (s, b) = call(Method::GET, "/domains".into(), None).await;
    assert_eq!((s, names(&b, "name")), (StatusCode::OK, set(&[OTHER])));
    let (s, b) = call(Method::GET, "/users".into(), None).await;
    assert_eq!((s, names(&b, "address")), (StatusCode::OK, set(&[&dave])));
    for path in [
        "/domains/example.test".to_string(),
        "/users?domain=example.test".into(),
        format!("/users/{bob}"),
        format!("/users/{bob}/mailboxes"),
    ] {
        let (s, b) = call(Method::GET, path.clone(), None).await;
        assert_error(s, &b, StatusCode::NOT_FOUND, "NOT_FOUND");
    }
    let (s, b) = call(Method::GET, format!("/users/{dave}"), None).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, b) = call(
        Method::POST,
        "/users".into(),
        Some(json!({"address": "eve@example.test", "password": "long enough"})),
    )
    .await;
    assert_error(s, &b, StatusCode::NOT_FOUND, "NOT_FOUND");
    let (s, b) = call(
        Method::POST,
        format!("/users/{bob}/mailboxes"),
        Some(json!({"name": "Stolen"})),
    )
    .await;
    assert_error(s, &b, StatusCode::NOT_FOUND, "NOT_FOUND");
    let (s, b) = call(
        Method::POST,
        "/users".into(),
        Some(json!({"address": format!("erin@{OTHER}"), "password": "long enough"})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let (s, b) = call(
        Method::PATCH,
        format!("/users/{bob}"),
        Some(json!({"disabled": true})),
    )
    .await;
    assert_error(s, &b, StatusCode::NOT_FOUND, "NOT_FOUND");

    // Messages: dave's only; bob's are missing, to read and to change.
    let (s, b) = call(Method::GET, "/messages".into(), None).await;
    assert_eq!((s, names(&b, "user")), (StatusCode::OK, set(&[&dave])));
    let (_, b) = api
        .call(
            Method::GET,
            &format!("/messages?user={bob}"),
            Some(&admin),
            None,
        )
        .await;
    let bobs = b["data"][0]["id"].as_i64().expect("bob has mail");
    for (method, path, body) in [
        (Method::GET, format!("/messages/{bobs}"), None),
        (Method::GET, format!("/messages/{bobs}/raw"), None),
        (
            Method::PATCH,
            format!("/messages/{bobs}"),
            Some(json!({"tags": ["seen-by-other"]})),
        ),
        (Method::DELETE, format!("/messages/{bobs}"), None),
    ] {
        let (s, b) = call(method.clone(), path.clone(), body).await;
        assert_error(s, &b, StatusCode::NOT_FOUND, "NOT_FOUND");
    }
    let (s, b) = api
        .call(
            Method::GET,
            &format!("/messages/{bobs}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(
        (s, &b["tags"]),
        (StatusCode::OK, &json!([])),
        "untouched: {b}"
    );
    let (_, b) = call(Method::GET, "/messages".into(), None).await;
    let daves = b["data"][0]["id"].as_i64().unwrap();
    let (s, _) = call(Method::GET, format!("/messages/{daves}/raw"), None).await;
    assert_eq!(s, StatusCode::OK);

    // Sending: only from its domains. Queue: only entries its domains sent.
    let send = |key: &str, from: &str| {
        let (api, key, from) = (&api, key.to_string(), from.to_string());
        async move {
            api.call(
                Method::POST,
                "/send",
                Some(&key),
                Some(json!({"from": from, "to": ["x@remote.test"], "subject": "s", "text": "t"})),
            )
            .await
        }
    };
    let (s, b) = send(&limited, &bob).await;
    assert_error(s, &b, StatusCode::FORBIDDEN, "FORBIDDEN");
    let (s, b) = send(&admin, &bob).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    let bob_queued = b["id"].as_str().unwrap().to_string();
    let (s, b) = send(&limited, &dave).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    let dave_queued = b["id"].as_str().unwrap().to_string();
    let (s, b) = call(Method::GET, "/queue".into(), None).await;
    assert_eq!((s, names(&b, "id")), (StatusCode::OK, set(&[&dave_queued])));
    let (_, b) = api.call(Method::GET, "/queue", Some(&admin), None).await;
    assert_eq!(names(&b, "id"), set(&[&bob_queued, &dave_queued]));
    for (method, path) in [
        (Method::POST, format!("/queue/{bob_queued}/retry")),
        (Method::POST, format!("/queue/{bob_queued}/retry-now")),
        (Method::DELETE, format!("/queue/{bob_queued}")),
    ] {
        let (s, b) = call(method, path, None).await;
        assert_error(s, &b, StatusCode::NOT_FOUND, "NOT_FOUND");
    }
    let (s, _) = call(Method::POST, format!("/queue/{dave_queued}/retry"), None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = call(Method::DELETE, format!("/queue/{dave_queued}"), None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (_, b) = api.call(Method::GET, "/queue", Some(&admin), None).await;
    assert_eq!(names(&b, "id"), set(&[&bob_queued]), "bob's entry stays");

    // What concerns the whole server is refused, even to a limited admin key.
    let (limited_admin, limited_admin_id) = api_key(
        &api,
        &admin,
        json!({"name": "other-admin", "scopes": ["admin"], "domains": [OTHER]}),
    )
    .await;
    for (method, path, body) in [
        (Method::POST, "/domains", Some(json!({"name": "new.test"}))),
        (Method::DELETE, "/domains/other.test", None),
        (Method::GET, "/queue/stats", None),
        (Method::GET, "/hooks", None),
        (Method::GET, "/audit", None),
    ] {
        let (s, b) = api
            .call(method.clone(), path, Some(&limited_admin), body)
            .await;
        assert_error(s, &b, StatusCode::FORBIDDEN, "FORBIDDEN");
    }
    // Passwords and users of its own domain only.
    let (s, b) = api
        .call(
            Method::PATCH,
            &format!("/users/{bob}"),
            Some(&limited_admin),
            Some(json!({"password": "taken over"})),
        )
        .await;
    assert_error(s, &b, StatusCode::NOT_FOUND, "NOT_FOUND");
    let (s, b) = api
        .call(
            Method::PATCH,
            &format!("/users/{dave}"),
            Some(&limited_admin),
            Some(json!({"password": "dave's new password"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, b) = api
        .call(
            Method::DELETE,
            &format!("/users/{bob}"),
            Some(&limited_admin),
            None,
        )
        .await;
    assert_error(s, &b, StatusCode::NOT_FOUND, "NOT_FOUND");

    // Keys: none wider than itself; it sees and revokes keys of its domains only.
    for (body, field) in [
        (json!({"name": "n", "scopes": ["read"]}), "every domain"),
        (
            json!({"name": "n", "scopes": ["read"], "domains": ["example.test"]}),
            "another",
        ),
        (
            json!({"name": "n", "scopes": ["read"], "domains": [OTHER, "example.test"]}),
            "a wider one",
        ),
        (
            json!({"name": "n", "scopes": ["read"], "domains": ["nowhere.test"]}),
            "one that does not exist",
        ),
    ] {
        let (s, b) = api
            .call(Method::POST, "/api-keys", Some(&limited_admin), Some(body))
            .await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{field}: {b}");
    }
    let (narrow, narrow_id) = api_key(
        &api,
        &limited_admin,
        json!({"name": "narrow", "scopes": ["read"], "domains": [OTHER]}),
    )
    .await;
    let (s, b) = api.call(Method::GET, "/users", Some(&narrow), None).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let example_key = api_key(
        &api,
        &admin,
        json!({"name": "example", "scopes": ["read"], "domains": ["example.test"]}),
    )
    .await
    .1;
    // In pages of two, so that the keys it may not see fall inside pages.
    let seen: BTreeSet<i64> = api
        .all_pages("/api-keys?limit=2", &limited_admin)
        .await
        .iter()
        .map(|k| k["id"].as_i64().unwrap())
        .collect();
    assert_eq!(
        seen,
        BTreeSet::from([cli_limited_id, limited_id, limited_admin_id, narrow_id])
    );
    for id in [admin_id, example_key] {
        let (s, b) = api
            .call(
                Method::DELETE,
                &format!("/api-keys/{id}"),
                Some(&limited_admin),
                None,
            )
            .await;
        assert_error(s, &b, StatusCode::NOT_FOUND, "NOT_FOUND");
    }
    let (s, b) = api
        .call(
            Method::DELETE,
            &format!("/api-keys/{narrow_id}"),
            Some(&limited_admin),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");

    // A key of every domain names domains that exist, and at least one.
    for domains in [json!(["nowhere.test"]), json!([]), json!(["not a domain"])] {
        let (s, b) = api
            .call(
                Method::POST,
                "/api-keys",
                Some(&admin),
                Some(json!({"name": "n", "scopes": ["read"], "domains": domains})),
            )
            .await;
        assert_error(s, &b, StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_ERROR");
        assert_eq!(b["error"]["details"][0]["field"], "domains", "{b}");
    }
    let out = server.cli(
        &[
            "admin",
            "create-key",
            "--scope",
            "read",
            "--domain",
            "nowhere.test",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no domain nowhere.test"),
        "{out:?}"
    );

    // The audit log says who did what, with the limit.
    let (_, b) = api
        .call(
            Method::GET,
            &format!("/audit?event=api_key.create&target={limited_id}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(b["data"][0]["details"]["domains"], OTHER, "{b}");
    let (_, b) = api
        .call(
            Method::GET,
            &format!("/audit?event=user.change&target={dave}"),
            Some(&admin),
            None,
        )
        .await;
    let actor = format!("api-key:other-admin#{limited_admin_id}");
    assert_eq!(b["data"][0]["actor"], actor.as_str(), "{b}");
    assert_eq!(b["data"][0]["details"]["password_changed"], true, "{b}");
}

/// Bad keys from a client lock out that client's bad keys only; with a trusted proxy in
/// front, the client is the forwarded address; another peer's forwarding header is
/// ignored.
#[tokio::test]
async fn failures_are_counted_per_client_and_never_block_a_valid_key() {
    let options = common::Options {
        extra_yaml: "api:\n  trusted_proxies: [127.0.0.1/32]\n".into(),
        ..common::Options::default()
    };
    let server = TestServer::start_with(options);
    // The server listens on 127.0.0.1: a client bound to 127.0.0.2 is another peer,
    // one that is not a trusted proxy.
    let proxy = Api::new(&server);
    let stranger = Api::from_address(&server, IpAddr::from([127, 0, 0, 2]));
    let admin = cli_key(&server, &["admin"]);
    let reader = cli_key(&server, &["read"]);
    let bad = "mr_deadbeef_0000000000000000000000000000000000000000";
    let via = |client: &'static str| [("x-forwarded-for", client)];

    // Eleven failures of client A (its own spoofed entry first, as a client may write).
    let a = "203.0.113.5, 198.51.100.1";
    for n in 0..11 {
        let (s, b) = proxy
            .call_with(Method::GET, "/domains", Some(bad), None, &via(a))
            .await;
        let want = if n < 10 {
            StatusCode::UNAUTHORIZED
        } else {
            StatusCode::TOO_MANY_REQUESTS
        };
        assert_eq!(s, want, "attempt {n}: {b}");
    }
    let (s, b) = proxy
        .call_with(Method::GET, "/domains", None, None, &via(a))
        .await;
    assert_error(s, &b, StatusCode::TOO_MANY_REQUESTS, "RATE_LIMITED");
    // A's valid keys are served, again and again, reading and writing.
    for _ in 0..3 {
        let (s, b) = proxy
            .call_with(Method::GET, "/domains", Some(&reader), None, &via(a))
            .await;
        assert_eq!(s, StatusCode::OK, "{b}");
    }
    let (s, b) = proxy
        .call_with(
            Method::POST,
            "/domains",
            Some(&admin),
            Some(json!({"name": "new.test"})),
            &via(a),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    // Client B behind the same proxy, and the proxy itself, are not blocked.
    for headers in [&via("198.51.100.2")[..], &[]] {
        let (s, b) = proxy
            .call_with(Method::GET, "/domains", Some(bad), None, headers)
            .await;
        assert_error(s, &b, StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
    }

    // The stranger's header is ignored: its failures count for 127.0.0.2 whatever
    // address it claims, and do not touch the addresses it names.
    for n in 0..11 {
        let claimed = format!("192.0.2.{n}");
        let (s, b) = stranger
            .call_with(
                Method::GET,
                "/domains",
                Some(bad),
                None,
                &[("x-forwarded-for", claimed.as_str())],
            )
            .await;
        let want = if n < 10 {
            StatusCode::UNAUTHORIZED
        } else {
            StatusCode::TOO_MANY_REQUESTS
        };
        assert_eq!(s, want, "attempt {n}: {b}");
    }
    let (s, b) = stranger
        .call(Method::GET, "/domains", Some(&reader), None)
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, b) = proxy
        .call_with(Method::GET, "/domains", Some(bad), None, &via("192.0.2.3"))
        .await;
    assert_error(s, &b, StatusCode::UNAUTHORIZED, "UNAUTHORIZED");

    // The audit log names the forwarded client, never a stranger's claim.
    let (s, b) = proxy
        .call(
            Method::GET,
            "/audit?event=auth.api_key&limit=500",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let mut remotes = std::collections::BTreeMap::<String, usize>::new();
    for e in b["data"].as_array().unwrap() {
        *remotes
            .entry(e["remote"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    // Ten failures each before the block (refusals while blocked are not audited), and
    // one each from B, the proxy itself and the forwarded 192.0.2.3.
    let want = [
        ("198.51.100.1", 10),
        ("127.0.0.2", 10),
        ("198.51.100.2", 1),
        ("127.0.0.1", 1),
        ("192.0.2.3", 1),
    ];
    assert_eq!(
        remotes,
        want.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        "{b}"
    );
    let (_, b) = proxy
        .call(
            Method::GET,
            "/audit?event=domain.create&target=new.test",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(b["data"][0]["remote"], "198.51.100.1", "{b}");
}

/// Rolling the schema back past `api_key_domains` revokes the limited keys: an older
/// binary knows no limit and must not take them for keys of every domain.
#[tokio::test]
async fn a_rollback_never_widens_a_limited_key() {
    let mut server = TestServer::start();
    let admin = cli_key(&server, &["admin"]);
    let limited = server
        .cli_ok(
            &[
                "admin",
                "create-key",
                "--name",
                "limited",
                "--scope",
                "read",
                "--domain",
                common::DOMAIN,
            ],
            None,
        )
        .trim()
        .to_string();
    let api = Api::new(&server);
    let (s, b) = api.call(Method::GET, "/users", Some(&limited), None).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    server.kill();

    let out = server.cli(
        &["migrate", "rollback", "--to", "m20261130_000005_audit_log"],
        None,
    );
    assert!(out.status.success(), "{out:?}");
    let db = server.db().await;
    let revoked = || {
        let db = db.clone();
        async move {
            use sea_orm::ConnectionTrait;
            let rows = db
                .query_all_raw(sea_orm::Statement::from_string(
                    db.get_database_backend(),
                    "SELECT name, CASE WHEN revoked_at IS NULL THEN 0 ELSE 1 END AS revoked \
                     FROM api_keys ORDER BY id",
                ))
                .await
                .unwrap();
            rows.iter()
                .map(|r| {
                    (
                        r.try_get::<String>("", "name").unwrap(),
                        r.try_get::<i32>("", "revoked").unwrap() == 1,
                    )
                })
                .collect::<Vec<_>>()
        }
    };
    let want = vec![("test".to_string(), false), ("limited".to_string(), true)];
    assert_eq!(revoked().await, want);

    // Up again: the key stays revoked; the other still works.
    let out = server.cli(&["migrate"], None);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(revoked().await, want);
    db.close().await.ok();
    server.spawn();
    let api = Api::new(&server);
    let (s, b) = api.call(Method::GET, "/users", Some(&limited), None).await;
    assert_error(s, &b, StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
    let (s, b) = api.call(Method::GET, "/users", Some(&admin), None).await;
    assert_eq!(s, StatusCode::OK, "{b}");
}
