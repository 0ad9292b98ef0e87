//! API keys narrow enough for the open internet (SPEC S4): only `admin` changes
//! passwords and domains, keys limited to domains reach nothing of other domains, a
//! valid key is served from an address with many failures, and behind a trusted proxy
//! the failed-authentication limiter and the audit log see the forwarded client.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use common::TestServer;
use common::api::{Api, cli_key, item_ids};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const OTHER: &str = "other.test";
const FORBIDDEN: StatusCode = StatusCode::FORBIDDEN;
const NOT_FOUND: StatusCode = StatusCode::NOT_FOUND;
const OK: StatusCode = StatusCode::OK;

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

/// A well-formed key that does not exist.
const BAD_KEY: &str = "mr_deadbeef_0000000000000000000000000000000000000000";

/// `n` requests with a bad key from `client`, the i-th forwarded for `claim(i)`: 401
/// until the limit (10 failures), then 429.
async fn fail(client: &Api<'_>, n: usize, claim: impl Fn(usize) -> String) {
    for i in 0..n {
        let claimed = claim(i);
        let headers = [("x-forwarded-for", claimed.as_str())];
        let (s, b) = client
            .call_with(Method::GET, "/domains", Some(BAD_KEY), None, &headers)
            .await;
        let want = if i < 10 {
            StatusCode::UNAUTHORIZED
        } else {
            StatusCode::TOO_MANY_REQUESTS
        };
        assert_eq!(s, want, "attempt {i} for {claimed}: {b}");
    }
}

/// `mairust admin create-key` arguments of a `read` key limited to `domain`.
fn read_key_for(domain: &str) -> [&str; 6] {
    ["admin", "create-key", "--scope", "read", "--domain", domain]
}

fn password(p: &str) -> Option<Value> {
    Some(json!({ "password": p }))
}

#[tokio::test]
async fn a_write_key_can_neither_change_passwords_nor_add_domains() {
    let server = TestServer::start();
    let api = Api::new(&server);
    let writer = cli_key(&server, &["read", "write", "send"]);
    let admin = cli_key(&server, &["admin"]);
    let bob = format!("/users/{}", TestServer::address("bob"));

    let calls = vec![
        (Method::PATCH, bob.clone(), password("taken over")),
        // Nor by removing the user and adding the address again with a new password.
        (Method::DELETE, bob.clone(), None),
        // A new domain would capture the mail local users send to it.
        (
            Method::POST,
            "/domains".into(),
            Some(json!({"name": "gmail.com"})),
        ),
        (Method::DELETE, "/domains/example.test".into(), None),
    ];
    api.expect_all(&writer, calls, FORBIDDEN).await;
    let port = server.submission.port();
    let address = TestServer::address("bob");
    let login = common::tls_login(port, false, &address, common::PASSWORD).await;
    assert!(login.is_ok(), "bob's password changed");
    drop(login);
    let b = api.get_ok(&admin, "/domains").await;
    assert_eq!(names(&b, "name"), set(&["example.test"]), "{b}");

    // `write` still disables and enables users; `admin` changes passwords.
    for disabled in [true, false] {
        let change = Some(json!({ "disabled": disabled }));
        let b = api
            .expect(Method::PATCH, &bob, Some(&writer), change, OK)
            .await;
        assert_eq!(b["disabled"], disabled, "{b}");
    }
    let new = password("a new long password");
    api.expect(Method::PATCH, &bob, Some(&admin), new, OK).await;
    let login = common::tls_login(port, false, &address, "a new long password").await;
    assert!(login.is_ok(), "the admin's password change did not apply");
}

/// Mail for bob (example.test) and dave (other.test), delivered and queued; a key
/// limited to other.test must reach dave's objects only, and answer 404 for bob's.
#[tokio::test]
async fn a_key_limited_to_a_domain_reaches_only_that_domain() {
    // Queued entries stay queued.
    let server = TestServer::start_with(common::Options::with_yaml("queue:\n  workers: 0\n"));
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
        .cli_ok(&read_key_for("Other.Test."), None)
        .trim()
        .to_string();
    let other = json!({
        "name": "other", "scopes": ["read", "write", "send"], "domains": ["OTHER.test"]
    });
    let (limited, limited_id, _) = api.create_key(&admin, other).await;
    let b = api.get_ok(&admin, "/api-keys").await;
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
    let shown = cli_list.matches(&format!("domains {OTHER}")).count();
    assert_eq!(shown, 2, "{cli_list}");
    let b = api.get_ok(&cli_limited, "/users").await;
    assert_eq!(names(&b, "address"), set(&[&dave]));

    // Domains and users: another domain's are missing, to read and to change.
    let b = api.get_ok(&limited, "/domains").await;
    assert_eq!(names(&b, "name"), set(&[OTHER]));
    let b = api.get_ok(&limited, "/users").await;
    assert_eq!(names(&b, "address"), set(&[&dave]));
    api.get_ok(&limited, &format!("/users/{dave}")).await;
    let new_user = |address: &str| Some(json!({"address": address, "password": "long enough"}));
    let calls = vec![
        (Method::GET, "/domains/example.test".into(), None),
        (Method::GET, "/users?domain=example.test".into(), None),
        (Method::GET, format!("/users/{bob}"), None),
        (Method::GET, format!("/users/{bob}/mailboxes"), None),
        (Method::POST, "/users".into(), new_user("eve@example.test")),
        (
            Method::POST,
            format!("/users/{bob}/mailboxes"),
            Some(json!({"name": "Stolen"})),
        ),
        (
            Method::PATCH,
            format!("/users/{bob}"),
            Some(json!({"disabled": true})),
        ),
    ];
    api.expect_all(&limited, calls, NOT_FOUND).await;
    let erin = new_user(&format!("erin@{OTHER}"));
    api.expect(
        Method::POST,
        "/users",
        Some(&limited),
        erin,
        StatusCode::CREATED,
    )
    .await;

    // Messages: dave's only; bob's are missing, to read and to change.
    let b = api.get_ok(&limited, "/messages").await;
    assert_eq!(names(&b, "user"), set(&[&dave]));
    let daves = b["data"][0]["id"].as_i64().unwrap();
    api.get_ok(&limited, &format!("/messages/{daves}/raw"))
        .await;
    let b = api.get_ok(&admin, &format!("/messages?user={bob}")).await;
    let bobs = b["data"][0]["id"].as_i64().expect("bob has mail");
    let calls = vec![
        (Method::GET, format!("/messages/{bobs}"), None),
        (Method::GET, format!("/messages/{bobs}/raw"), None),
        (
            Method::PATCH,
            format!("/messages/{bobs}"),
            Some(json!({"tags": ["seen-by-other"]})),
        ),
        (Method::DELETE, format!("/messages/{bobs}"), None),
    ];
    api.expect_all(&limited, calls, NOT_FOUND).await;
    let b = api.get_ok(&admin, &format!("/messages/{bobs}")).await;
    assert_eq!(b["tags"], json!([]), "bob's message changed: {b}");

    // Sending: only from its domains. Queue: only entries its domains sent.
    let mail = |from: &str| {
        Some(json!({"from": from, "to": ["x@remote.test"], "subject": "s", "text": "t"}))
    };
    let accepted = StatusCode::ACCEPTED;
    api.expect(Method::POST, "/send", Some(&limited), mail(&bob), FORBIDDEN)
        .await;
    let b = api
        .expect(Method::POST, "/send", Some(&admin), mail(&bob), accepted)
        .await;
    let bob_queued = b["id"].as_str().unwrap().to_string();
    let b = api
        .expect(Method::POST, "/send", Some(&limited), mail(&dave), accepted)
        .await;
    let dave_queued = b["id"].as_str().unwrap().to_string();
    let b = api.get_ok(&limited, "/queue").await;
    assert_eq!(names(&b, "id"), set(&[&dave_queued]));
    let b = api.get_ok(&admin, "/queue").await;
    assert_eq!(names(&b, "id"), set(&[&bob_queued, &dave_queued]));
    let calls = vec![
        (Method::POST, format!("/queue/{bob_queued}/retry"), None),
        (Method::POST, format!("/queue/{bob_queued}/retry-now"), None),
        (Method::DELETE, format!("/queue/{bob_queued}"), None),
    ];
    api.expect_all(&limited, calls, NOT_FOUND).await;
    let calls = vec![
        (Method::POST, format!("/queue/{dave_queued}/retry"), None),
        (Method::DELETE, format!("/queue/{dave_queued}"), None),
    ];
    api.expect_all(&limited, calls, StatusCode::NO_CONTENT)
        .await;
    let b = api.get_ok(&admin, "/queue").await;
    assert_eq!(names(&b, "id"), set(&[&bob_queued]), "bob's entry stays");

    // What concerns the whole server is refused, even to a limited admin key.
    let (limited_admin, limited_admin_id, _) = api
        .create_key(
            &admin,
            json!({"name": "other-admin", "scopes": ["admin"], "domains": [OTHER]}),
        )
        .await;
    let calls = vec![
        (
            Method::POST,
            "/domains".into(),
            Some(json!({"name": "new.test"})),
        ),
        (Method::DELETE, format!("/domains/{OTHER}"), None),
        (Method::GET, "/queue/stats".into(), None),
        (Method::GET, "/hooks".into(), None),
        (Method::GET, "/audit".into(), None),
    ];
    api.expect_all(&limited_admin, calls, FORBIDDEN).await;
    // Passwords and users of its own domain only.
    let calls = vec![
        (
            Method::PATCH,
            format!("/users/{bob}"),
            password("taken over"),
        ),
        (Method::DELETE, format!("/users/{bob}"), None),
    ];
    api.expect_all(&limited_admin, calls, NOT_FOUND).await;
    let new = password("dave's new password");
    let path = format!("/users/{dave}");
    api.expect(Method::PATCH, &path, Some(&limited_admin), new, OK)
        .await;

    // Keys: none wider than itself; it sees and revokes keys of its domains only.
    let key_for =
        |domains: Value| Some(json!({"name": "n", "scopes": ["read"], "domains": domains}));
    let calls = vec![
        // Every domain, another one, a wider list, one that does not exist (outside
        // its list all the same).
        (
            Method::POST,
            "/api-keys".into(),
            Some(json!({"name": "n", "scopes": ["read"]})),
        ),
        (
            Method::POST,
            "/api-keys".into(),
            key_for(json!(["example.test"])),
        ),
        (
            Method::POST,
            "/api-keys".into(),
            key_for(json!([OTHER, "example.test"])),
        ),
        (
            Method::POST,
            "/api-keys".into(),
            key_for(json!(["nowhere.test"])),
        ),
    ];
    api.expect_all(&limited_admin, calls, FORBIDDEN).await;
    let (narrow, narrow_id, _) = api
        .create_key(&limited_admin, {
            json!({"name": "narrow", "scopes": ["read"], "domains": [OTHER]})
        })
        .await;
    api.get_ok(&narrow, "/users").await;
    let (_, example_key, _) = api
        .create_key(&admin, {
            json!({"name": "example", "scopes": ["read"], "domains": ["example.test"]})
        })
        .await;
    // In pages of two, so that the keys it may not see fall inside pages.
    let seen: BTreeSet<i64> = item_ids(&api.all_pages("/api-keys?limit=2", &limited_admin).await);
    let mine = [cli_limited_id, limited_id, limited_admin_id, narrow_id];
    assert_eq!(seen, BTreeSet::from(mine));
    let calls = vec![
        (Method::DELETE, format!("/api-keys/{admin_id}"), None),
        (Method::DELETE, format!("/api-keys/{example_key}"), None),
    ];
    api.expect_all(&limited_admin, calls, NOT_FOUND).await;
    let path = format!("/api-keys/{narrow_id}");
    api.expect(Method::DELETE, &path, Some(&limited_admin), None, OK)
        .await;

    // A key of every domain names domains that exist, and at least one.
    let unprocessable = StatusCode::UNPROCESSABLE_ENTITY;
    for domains in [json!(["nowhere.test"]), json!([]), json!(["not a domain"])] {
        let b = api
            .expect(
                Method::POST,
                "/api-keys",
                Some(&admin),
                key_for(domains),
                unprocessable,
            )
            .await;
        assert_eq!(b["error"]["details"][0]["field"], "domains", "{b}");
    }
    let out = server.cli(&read_key_for("nowhere.test"), None);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no domain nowhere.test"), "{err}");

    // The audit log says who did what, with the limit.
    let query = format!("/audit?event=api_key.create&target={limited_id}");
    let b = api.get_ok(&admin, &query).await;
    assert_eq!(b["data"][0]["details"]["domains"], OTHER, "{b}");
    let b = api
        .get_ok(&admin, &format!("/audit?event=user.change&target={dave}"))
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
    let options = common::Options::with_yaml("api:\n  trusted_proxies: [127.0.0.1/32]\n");
    let server = TestServer::start_with(options);
    // The server listens on 127.0.0.1: a client bound to 127.0.0.2 is another peer,
    // one that is not a trusted proxy.
    let proxy = Api::new(&server);
    let stranger = Api::from_address(&server, IpAddr::from([127, 0, 0, 2]));
    let admin = cli_key(&server, &["admin"]);
    let reader = cli_key(&server, &["read"]);
    // Client A (its own spoofed entry first, as a client may write): eleven failures.
    let a = "203.0.113.5, 198.51.100.1";
    fail(&proxy, 11, |_| a.to_string()).await;
    let via_a = [("x-forwarded-for", a)];
    let (s, _) = proxy
        .call_with(Method::GET, "/domains", None, None, &via_a)
        .await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "no key from A");
    // A's valid keys are served, again and again, reading and writing.
    for _ in 0..3 {
        let (s, b) = proxy
            .call_with(Method::GET, "/domains", Some(&reader), None, &via_a)
            .await;
        assert_eq!(s, OK, "{b}");
    }
    let new_domain = Some(json!({"name": "new.test"}));
    let (s, b) = proxy
        .call_with(Method::POST, "/domains", Some(&admin), new_domain, &via_a)
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    // Client B behind the same proxy, and the proxy itself, are not blocked.
    fail(&proxy, 1, |_| "198.51.100.2".into()).await;
    let (s, _) = proxy
        .call(Method::GET, "/domains", Some(BAD_KEY), None)
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "the proxy's own request");

    // The stranger's header is ignored: its failures count for 127.0.0.2 whatever
    // address it claims, and do not touch the addresses it names.
    fail(&stranger, 11, |i| format!("192.0.2.{i}")).await;
    let (s, b) = stranger
        .call(Method::GET, "/domains", Some(&reader), None)
        .await;
    assert_eq!(s, OK, "{b}");
    fail(&proxy, 1, |_| "192.0.2.3".into()).await;

    // The audit log names the forwarded client, never a stranger's claim: ten failures
    // before each block (refusals while blocked are not audited), and one each from B,
    // the proxy itself and the forwarded 192.0.2.3.
    let query = "/audit?event=auth.api_key&limit=500";
    let b = proxy.get_ok(&admin, query).await;
    let mut remotes = BTreeMap::<&str, usize>::new();
    for e in b["data"].as_array().unwrap() {
        *remotes.entry(e["remote"].as_str().unwrap()).or_default() += 1;
    }
    let want = BTreeMap::from([
        ("198.51.100.1", 10),
        ("127.0.0.2", 10),
        ("198.51.100.2", 1),
        ("127.0.0.1", 1),
        ("192.0.2.3", 1),
    ]);
    assert_eq!(remotes, want, "{b}");
    let query = "/audit?event=domain.create&target=new.test";
    let b = proxy.get_ok(&admin, query).await;
    assert_eq!(b["data"][0]["remote"], "198.51.100.1", "{b}");
}

/// Rolling the schema back past `api_key_domains` revokes the limited keys: an older
/// binary knows no limit and must not take them for keys of every domain.
#[tokio::test]
async fn a_rollback_never_widens_a_limited_key() {
    let mut server = TestServer::start();
    let admin = cli_key(&server, &["admin"]);
    let create = [
        "admin",
        "create-key",
        "--name",
        "limited",
        "--scope",
        "read",
        "--domain",
        common::DOMAIN,
    ];
    let limited = server.cli_ok(&create, None).trim().to_string();
    Api::new(&server).get_ok(&limited, "/users").await;
    server.kill();

    let back = ["migrate", "rollback", "--to", "m20261130_000005_audit_log"];
    let out = server.cli(&back, None);
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
    let unauthorized = StatusCode::UNAUTHORIZED;
    api.expect(Method::GET, "/users", Some(&limited), None, unauthorized)
        .await;
    api.get_ok(&admin, "/users").await;
}
