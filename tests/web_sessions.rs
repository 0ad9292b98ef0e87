//! People signing in (the Admin UI's sessions) against the running server: the cookie's
//! attributes, CSRF and cross-site refusals, what an admin's and a normal user's
//! session reach (the access rules of user vs admin vs key), sign-out (one and
//! everywhere), sessions ended by a password change, a disabled user or their expiry,
//! and sign-in throttling shared with SMTP AUTH.

mod common;

use std::time::Duration;

use common::api::{Api, assert_error, cli_key, cli_key_of_domain, error_code};
use common::{DOMAIN, Options, PASSWORD, TestServer, deliver_to, tls_login};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const OK: StatusCode = StatusCode::OK;
const CREATED: StatusCode = StatusCode::CREATED;
const NO_CONTENT: StatusCode = StatusCode::NO_CONTENT;
const UNAUTHORIZED: StatusCode = StatusCode::UNAUTHORIZED;
const FORBIDDEN: StatusCode = StatusCode::FORBIDDEN;
const NOT_FOUND: StatusCode = StatusCode::NOT_FOUND;

/// A browser's view of one session: its cookie and CSRF token.
struct Session<'a> {
    api: &'a Api<'a>,
    cookie: String,
    csrf: String,
}

impl Session<'_> {
    /// A request with the cookie, and the CSRF token when `csrf`.
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        extra: &[(&str, &str)],
        csrf: bool,
    ) -> (StatusCode, Value) {
        let cookie = format!("mairust_session={}", self.cookie);
        let mut headers = vec![("cookie", cookie.as_str())];
        if csrf {
            headers.push(("x-csrf-token", self.csrf.as_str()));
        }
        headers.extend_from_slice(extra);
        self.api.call_with(method, path, None, body, &headers).await
    }

    /// A request as the UI makes it (with the CSRF token) that must answer `want`.
    async fn expect(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        want: StatusCode,
    ) -> Value {
        let (status, answer) = self.send(method.clone(), path, body, &[], true).await;
        assert_eq!(status, want, "{method} {path} with a session: {answer}");
        if !want.is_success() {
            assert_error(status, &answer, want, error_code(want));
        }
        answer
    }
}

/// Signs in; the session, the whole answer and the `Set-Cookie` header.
async fn sign_in<'a>(api: &'a Api<'a>, user: &str) -> (Session<'a>, Value, String) {
    let resp = api
        .request(Method::POST, "/session")
        .json(&json!({"address": format!("{user}@{DOMAIN}"), "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), CREATED);
    let set_cookie = resp
        .headers()
        .get("set-cookie")
        .expect("a session cookie")
        .to_str()
        .unwrap()
        .to_string();
    let body: Value = resp.json().await.unwrap();
    let cookie = set_cookie
        .split(';')
        .next()
        .and_then(|c| c.strip_prefix("mairust_session="))
        .expect("mairust_session=...")
        .to_string();
    let csrf = body["csrf_token"].as_str().unwrap().to_string();
    (Session { api, cookie, csrf }, body, set_cookie)
}

async fn sign_in_status(api: &Api<'_>, address: &str, password: &str) -> (StatusCode, Value) {
    api.call(
        Method::POST,
        "/session",
        None,
        Some(json!({"address": address, "password": password})),
    )
    .await
}

/// The mailbox entries of `user` (through an admin key).
async fn entries_of(api: &Api<'_>, key: &str, user: &str) -> Vec<i64> {
    let b = api
        .get_ok(key, &format!("/messages?user={user}@{DOMAIN}"))
        .await;
    b["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_i64().unwrap())
        .collect()
}

#[tokio::test]
async fn admins_and_users_sign_in_and_reach_what_their_role_allows() {
    let server = TestServer::start();
    let api = Api::new(&server);
    let key = cli_key(&server, &["admin"]);
    let granted = server.cli_ok(&["user", "grant-admin", &format!("bob@{DOMAIN}")], None);
    assert!(granted.contains("has the admin role"), "{granted}");
    let listed = server.cli_ok(&["user", "list"], None);
    assert!(
        listed.contains(&format!("bob@{DOMAIN} (admin)")),
        "{listed}"
    );
    assert!(listed.contains(&format!("alice@{DOMAIN}\n")), "{listed}");

    // Wrong passwords and unknown users get one answer.
    for (address, password) in [
        (format!("bob@{DOMAIN}"), "wrong"),
        (format!("nobody@{DOMAIN}"), PASSWORD),
    ] {
        let (status, b) = sign_in_status(&api, &address, password).await;
        assert_eq!(status, UNAUTHORIZED, "{b}");
        assert_eq!(b["error"]["message"], "wrong address or password");
    }

    // An admin's session: the cookie's attributes, then the API as an admin key.
    let (bob, b, set_cookie) = sign_in(&api, "bob").await;
    assert_eq!(b["user"], format!("bob@{DOMAIN}"));
    assert_eq!(b["admin"], true);
    assert_eq!(bob.cookie.len(), 64, "{set_cookie}");
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=43200"] {
        assert!(
            set_cookie.contains(attribute),
            "{attribute} in {set_cookie}"
        );
    }
    assert!(!set_cookie.contains("Secure"), "plain HTTP: {set_cookie}");
    assert_ne!(bob.csrf, bob.cookie);
    let b = bob.expect(Method::GET, "/session", None, OK).await;
    assert_eq!(b["csrf_token"], bob.csrf.as_str());
    bob.expect(Method::GET, "/domains", None, OK).await;
    bob.expect(Method::GET, "/audit", None, OK).await;

    // Changes need the CSRF token, and a page of this server's own origin.
    let new_domain = Some(json!({"name": "other.test"}));
    let (status, b) = bob
        .send(Method::POST, "/domains", new_domain.clone(), &[], false)
        .await;
    assert_eq!(status, FORBIDDEN, "no token: {b}");
    let (status, b) = bob
        .send(
            Method::POST,
            "/domains",
            new_domain.clone(),
            &[("x-csrf-token", &"0".repeat(64))],
            false,
        )
        .await;
    assert_eq!(status, FORBIDDEN, "wrong token: {b}");
    let (status, b) = bob
        .send(
            Method::POST,
            "/domains",
            new_domain.clone(),
            &[("origin", "http://evil.test")],
            true,
        )
        .await;
    assert_eq!(status, FORBIDDEN, "another site: {b}");
    let origin = format!("http://{}", server.http);
    let (status, b) = bob
        .send(
            Method::POST,
            "/domains",
            new_domain.clone(),
            &[("origin", origin.as_str())],
            true,
        )
        .await;
    assert_eq!(status, CREATED, "own origin with the token: {b}");
    let refused = server.audit_file_events("auth.csrf");
    assert_eq!(refused.len(), 3, "{refused:?}");
    assert_eq!(refused[0]["actor"], format!("web:bob@{DOMAIN}"));
    // A key made by an admin's session: shown once, revoked by the session.
    let b = bob
        .expect(
            Method::POST,
            "/api-keys",
            Some(json!({"name": "from-the-ui", "scopes": ["read"]})),
            CREATED,
        )
        .await;
    let made = b["key"].as_str().unwrap().to_string();
    api.get_ok(&made, "/domains").await;
    let revoke = format!("/api-keys/{}", b["id"]);
    bob.expect(Method::DELETE, &revoke, None, OK).await;
    api.expect(Method::GET, "/domains", Some(&made), None, UNAUTHORIZED)
        .await;
    let created = server.audit_file_events("api_key.create");
    assert_eq!(
        created.last().unwrap()["actor"],
        format!("web:bob@{DOMAIN}")
    );

    // A normal user's session: their own mail only, nothing else.
    for user in ["alice", "carol"] {
        let reply = deliver_to(&server, &TestServer::address(user), &format!("{user}@m")).await;
        assert_eq!(reply.code, 250);
    }
    let alices = entries_of(&api, &key, "alice").await;
    let carols = entries_of(&api, &key, "carol").await;
    assert_eq!((alices.len(), carols.len()), (1, 1));
    let (alice, b, _) = sign_in(&api, "alice").await;
    assert_eq!(b["admin"], false);
    let b = alice.expect(Method::GET, "/messages", None, OK).await;
    let seen: Vec<i64> = b["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_i64().unwrap())
        .collect();
    assert_eq!(seen, alices, "alice sees her own mail only");
    let b = alice
        .expect(
            Method::GET,
            &format!("/messages?user=carol@{DOMAIN}"),
            None,
            OK,
        )
        .await;
    assert_eq!(b["data"], json!([]), "asking for carol's mail finds none");
    let own = format!("/messages/{}", alices[0]);
    let theirs = format!("/messages/{}", carols[0]);
    alice.expect(Method::GET, &own, None, OK).await;
    let (status, _) = alice
        .send(Method::GET, &format!("{own}/raw"), None, &[], false)
        .await;
    assert_eq!(status, OK);
    let flags = Some(json!({"flags": ["\\Seen"]}));
    let b = alice.expect(Method::PATCH, &own, flags.clone(), OK).await;
    assert_eq!(b["flags"], json!(["\\Seen"]));
    alice.expect(Method::GET, &theirs, None, NOT_FOUND).await;
    alice
        .expect(Method::GET, &format!("{theirs}/raw"), None, NOT_FOUND)
        .await;
    alice.expect(Method::PATCH, &theirs, flags, NOT_FOUND).await;
    alice.expect(Method::DELETE, &theirs, None, NOT_FOUND).await;
    assert_eq!(
        entries_of(&api, &key, "carol").await,
        carols,
        "carol's mail untouched"
    );
    let b = alice
        .expect(
            Method::GET,
            &format!("/users/alice@{DOMAIN}/mailboxes"),
            None,
            OK,
        )
        .await;
    assert!(b["data"].to_string().contains("Junk"), "{b}");
    let forbidden = [
        (
            Method::GET,
            format!("/users/carol@{DOMAIN}/mailboxes"),
            None,
        ),
        (Method::GET, format!("/users/alice@{DOMAIN}"), None),
        (Method::GET, "/domains".to_string(), None),
        (Method::GET, "/users".to_string(), None),
        (Method::GET, "/queue".to_string(), None),
        (Method::GET, "/queue/stats".to_string(), None),
        (Method::GET, "/hooks".to_string(), None),
        (Method::GET, "/api-keys".to_string(), None),
        (Method::GET, "/audit".to_string(), None),
        (Method::GET, format!("/domains/{DOMAIN}/dkim"), None),
        (
            Method::POST,
            "/users".to_string(),
            Some(json!({"address": format!("eve@{DOMAIN}"), "password": "x"})),
        ),
        (
            Method::PATCH,
            format!("/users/alice@{DOMAIN}"),
            Some(json!({"admin": true})),
        ),
        (
            Method::POST,
            "/api-keys".to_string(),
            Some(json!({"name": "mine", "scopes": ["read"]})),
        ),
        (
            Method::POST,
            "/send".to_string(),
            Some(
                json!({"from": format!("alice@{DOMAIN}"), "to": ["x@remote.test"], "subject": "s", "text": "t"}),
            ),
        ),
    ];
    for (method, path, body) in forbidden {
        alice.expect(method, &path, body, FORBIDDEN).await;
    }
    alice.expect(Method::DELETE, &own, None, NO_CONTENT).await;
    assert!(entries_of(&api, &key, "alice").await.is_empty());

    // The admin role is read at each request: revoked, bob's session reaches his mail
    // only; given to alice through the API, hers reaches everything.
    server.cli_ok(&["user", "revoke-admin", &format!("bob@{DOMAIN}")], None);
    bob.expect(Method::GET, "/domains", None, FORBIDDEN).await;
    bob.expect(Method::GET, "/messages", None, OK).await;
    let write = cli_key(&server, &["write"]);
    let grant = Some(json!({"admin": true}));
    let path = format!("/users/alice@{DOMAIN}");
    api.expect(Method::PATCH, &path, Some(&write), grant.clone(), FORBIDDEN)
        .await;
    let b = api
        .expect(Method::PATCH, &path, Some(&key), grant, OK)
        .await;
    assert_eq!(b["admin"], true);
    alice.expect(Method::GET, "/domains", None, OK).await;
    let b = api.get_ok(&key, "/users").await;
    let admins: Vec<&Value> = b["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|u| u["admin"] == true)
        .collect();
    assert_eq!(admins.len(), 1, "{b}");

    // Sign-ins are audited (written off the request's path).
    let written = common::eventually(Duration::from_secs(5), || async {
        server.audit_file_events("auth.login").len() >= 3
    });
    assert!(written.await);
    let logins = server.audit_file_events("auth.login");
    assert!(
        logins
            .iter()
            .any(|e| e["actor"] == format!("web:alice@{DOMAIN}") && e["outcome"] == "success"),
        "{logins:?}"
    );
    assert!(
        logins
            .iter()
            .any(|e| e["actor"] == format!("web:bob@{DOMAIN}") && e["outcome"] == "failure"),
        "{logins:?}"
    );
    // An API key has no session to show.
    api.expect(Method::GET, "/session", Some(&key), None, NOT_FOUND)
        .await;
}

#[tokio::test]
async fn sessions_end_on_sign_out_password_change_disable_and_expiry() {
    let server = TestServer::start_with(Options::with_yaml(
        "api:\n  sessions:\n    idle_timeout_seconds: 2\n    lifetime_seconds: 5\n    max_per_user: 2\n",
    ));
    let api = Api::new(&server);
    let key = cli_key(&server, &["admin"]);

    // Sign out: this session ends, the cookie is removed, other sessions stay.
    let (one, _, _) = sign_in(&api, "alice").await;
    let (two, _, _) = sign_in(&api, "alice").await;
    let (status, _) = one.send(Method::DELETE, "/session", None, &[], false).await;
    assert_eq!(
        status, FORBIDDEN,
        "signing out is a change: it needs the token"
    );
    let resp = api
        .request(Method::DELETE, "/session")
        .header("cookie", format!("mairust_session={}", one.cookie))
        .header("x-csrf-token", &one.csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), NO_CONTENT);
    let cleared = resp.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        cleared.starts_with("mairust_session=;") && cleared.contains("Max-Age=0"),
        "{cleared}"
    );
    one.expect(Method::GET, "/session", None, UNAUTHORIZED)
        .await;
    two.expect(Method::GET, "/messages", None, OK).await;
    assert_eq!(server.audit_file_events("auth.logout").len(), 1);

    // At most max_per_user sessions: a third sign-in ends the oldest.
    let (three, _, _) = sign_in(&api, "alice").await;
    let (four, _, _) = sign_in(&api, "alice").await;
    two.expect(Method::GET, "/session", None, UNAUTHORIZED)
        .await;
    three.expect(Method::GET, "/session", None, OK).await;

    // Sign out everywhere.
    four.expect(Method::DELETE, "/sessions", None, NO_CONTENT)
        .await;
    three
        .expect(Method::GET, "/session", None, UNAUTHORIZED)
        .await;
    four.expect(Method::GET, "/session", None, UNAUTHORIZED)
        .await;
    let everywhere = server.audit_file_events("auth.logout_everywhere");
    assert_eq!(everywhere[0]["details"]["sessions"], 2, "{everywhere:?}");

    // A new password ends the user's sessions; so does disabling, which also refuses
    // the sign-in.
    let (five, _, _) = sign_in(&api, "alice").await;
    let path = format!("/users/alice@{DOMAIN}");
    api.expect(
        Method::PATCH,
        &path,
        Some(&key),
        Some(json!({"password": PASSWORD})),
        OK,
    )
    .await;
    five.expect(Method::GET, "/session", None, UNAUTHORIZED)
        .await;
    let (six, _, _) = sign_in(&api, "alice").await;
    server.cli_ok(&["user", "disable", &format!("alice@{DOMAIN}")], None);
    six.expect(Method::GET, "/session", None, UNAUTHORIZED)
        .await;
    let (status, _) = sign_in_status(&api, &format!("alice@{DOMAIN}"), PASSWORD).await;
    assert_eq!(status, UNAUTHORIZED);

    // Idle for longer than idle_timeout_seconds: ended.
    let (idle, _, _) = sign_in(&api, "bob").await;
    idle.expect(Method::GET, "/session", None, OK).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    idle.expect(Method::GET, "/session", None, UNAUTHORIZED)
        .await;

    // Used every second, a session still ends lifetime_seconds after sign-in.
    let (busy, b, _) = sign_in(&api, "bob").await;
    let expires: chrono::DateTime<chrono::Utc> = b["expires_at"].as_str().unwrap().parse().unwrap();
    let left = expires - chrono::Utc::now();
    assert!(
        left <= chrono::Duration::seconds(5) && left > chrono::Duration::seconds(3),
        "{left}"
    );
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_millis(4500) {
        busy.expect(Method::GET, "/session", None, OK).await;
        tokio::time::sleep(Duration::from_millis(900)).await;
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    busy.expect(Method::GET, "/session", None, UNAUTHORIZED)
        .await;

    // A made-up cookie is refused like an ended one.
    let forged = Session {
        api: &api,
        cookie: "ab".repeat(32),
        csrf: String::new(),
    };
    forged
        .expect(Method::GET, "/session", None, UNAUTHORIZED)
        .await;
}

#[tokio::test]
async fn sign_in_is_throttled_with_smtp_auth_and_refuses_other_sites() {
    let server = TestServer::start_with(Options::with_yaml(
        "auth:\n  max_failures_per_account: 3\n  failure_delay_ms: 10\n  max_failure_delay_ms: 20\n",
    ));
    let api = Api::new(&server);
    let carol = format!("carol@{DOMAIN}");
    for _ in 0..3 {
        let (status, _) = sign_in_status(&api, &carol, "wrong").await;
        assert_eq!(status, UNAUTHORIZED);
    }
    // Locked: even the right password is not checked, over the web and over SMTP.
    let (status, b) = sign_in_status(&api, &carol, PASSWORD).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{b}");
    let written = common::eventually(Duration::from_secs(5), || async {
        !server.audit_file_events("auth.lockout").is_empty()
    });
    assert!(written.await, "auth.lockout audited");
    let lockouts = server.audit_file_events("auth.lockout");
    assert_eq!(lockouts.len(), 1, "{lockouts:?}");
    assert_eq!(lockouts[0]["actor"], format!("web:{carol}"));
    assert_eq!(lockouts[0]["target"], format!("account:{carol}"));
    let refused = tls_login(server.submission.port(), false, &carol, PASSWORD).await;
    assert!(refused.is_err(), "SMTP AUTH during the web lockout");
    // Other accounts are not affected.
    let (status, _) = sign_in_status(&api, &format!("bob@{DOMAIN}"), PASSWORD).await;
    assert_eq!(status, CREATED);

    // A sign-in posted by a page of another site is refused before any check.
    let (status, b) = api
        .call_with(
            Method::POST,
            "/session",
            None,
            Some(json!({"address": format!("bob@{DOMAIN}"), "password": PASSWORD})),
            &[("origin", "http://evil.test")],
        )
        .await;
    assert_eq!(status, FORBIDDEN, "{b}");
    // A form post (not JSON) never reaches the check either.
    let resp = api
        .request(Method::POST, "/session")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("address=bob%40{DOMAIN}&password=x"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    // Oversized credentials are refused without hashing them.
    let (status, b) = sign_in_status(&api, &format!("bob@{DOMAIN}"), &"x".repeat(5000)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{b}");
}

#[tokio::test]
async fn admin_accounts_stay_out_of_reach_of_keys_limited_to_a_domain() {
    let server = TestServer::start();
    let api = Api::new(&server);
    server.cli_ok(&["user", "grant-admin", &format!("bob@{DOMAIN}")], None);
    let limited = cli_key_of_domain(&server, "admin", DOMAIN);
    let limited_write = cli_key_of_domain(&server, "write", DOMAIN);
    let bob = format!("/users/bob@{DOMAIN}");
    let spaced = format!("/users/%20BOB@{DOMAIN}");
    let write = cli_key(&server, &["write"]);
    // A new password would be a way to become the admin of every domain, and so would
    // enabling an account whose password leaked: the address as the change finds it.
    for (path, key, body) in [
        (&spaced, &limited, json!({"password": "taken over"})),
        (&bob, &write, json!({"disabled": true})),
    ] {
        api.expect(Method::PATCH, path, Some(key), Some(body), FORBIDDEN)
            .await;
    }
    for (key, body) in [
        (&limited, json!({"password": "taken over"})),
        (&limited, json!({"disabled": true})),
        (&limited_write, json!({"disabled": true})),
    ] {
        api.expect(Method::PATCH, &bob, Some(key), Some(body), FORBIDDEN)
            .await;
    }
    api.expect(Method::DELETE, &bob, Some(&limited), None, FORBIDDEN)
        .await;
    let (status, _) = sign_in_status(&api, &format!("bob@{DOMAIN}"), "taken over").await;
    assert_eq!(status, UNAUTHORIZED, "the password did not change");
    // The same keys still manage the domain's other users.
    let alice = format!("/users/alice@{DOMAIN}");
    api.expect(
        Method::PATCH,
        &alice,
        Some(&limited),
        Some(json!({"password": "new one"})),
        OK,
    )
    .await;
    api.expect(
        Method::PATCH,
        &alice,
        Some(&limited_write),
        Some(json!({"disabled": true})),
        OK,
    )
    .await;
}

#[tokio::test]
async fn a_session_ends_with_the_password_it_was_opened_with() {
    let server = TestServer::start();
    let api = Api::new(&server);
    let (first, _, _) = sign_in(&api, "alice").await;
    // A new sign-in from the same browser ends the session it held.
    let resp = api
        .request(Method::POST, "/session")
        .header("cookie", format!("mairust_session={}", first.cookie))
        .json(&json!({"address": format!("alice@{DOMAIN}"), "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), CREATED);
    first
        .expect(Method::GET, "/session", None, UNAUTHORIZED)
        .await;
    let (second, _, _) = sign_in(&api, "alice").await;
    second.expect(Method::GET, "/session", None, OK).await;
    // A password written by something that knows nothing of sessions (a node of the
    // previous release, a database restore): the session ends all the same.
    let db = sea_orm::Database::connect(&server.backend.db_url)
        .await
        .unwrap();
    use sea_orm::ConnectionTrait;
    db.execute_unprepared(&format!(
        "UPDATE users SET password_hash = 'changed elsewhere' WHERE address = 'alice@{DOMAIN}'"
    ))
    .await
    .unwrap();
    db.close().await.unwrap();
    second
        .expect(Method::GET, "/session", None, UNAUTHORIZED)
        .await;
}

#[tokio::test]
async fn over_https_the_cookie_is_a_secure_host_cookie() {
    let server = TestServer::start();
    let api = Api::new(&server);
    let https = [("x-forwarded-proto", "https")];
    let resp = api
        .request(Method::POST, "/session")
        .header(https[0].0, https[0].1)
        .json(&json!({"address": format!("alice@{DOMAIN}"), "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), CREATED);
    let set_cookie = resp.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        set_cookie.starts_with("__Host-mairust_session="),
        "{set_cookie}"
    );
    assert!(set_cookie.contains("; Secure"), "{set_cookie}");
    let token = set_cookie
        .split(';')
        .next()
        .unwrap()
        .split_once('=')
        .unwrap()
        .1
        .to_string();
    // Over HTTPS only the __Host- cookie counts: the plain name, which a sibling host
    // could plant, is not read.
    let host_cookie = format!("__Host-mairust_session={token}");
    let plain_cookie = format!("mairust_session={token}");
    for (cookie, want) in [(&host_cookie, OK), (&plain_cookie, UNAUTHORIZED)] {
        let (status, b) = api
            .call_with(
                Method::GET,
                "/session",
                None,
                None,
                &[("cookie", cookie), https[0]],
            )
            .await;
        assert_eq!(status, want, "{cookie}: {b}");
    }
}
