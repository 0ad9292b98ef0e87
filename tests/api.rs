//! The REST API against the running server with reqwest: auth and scopes, the error
//! and list shapes of SPEC A3, pagination, and the OpenAPI document.

mod common;

use std::collections::HashSet;

use common::TestServer;
use common::api::{Api, assert_error, cli_key};
use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};

#[tokio::test]
async fn keys_scopes_and_errors() {
    let server = TestServer::start();
    let api = Api::new(&server);
    let admin = cli_key(&server, &["admin"]);
    assert!(admin.starts_with("mr_"), "{admin}");

    let (s, b) = api.call(Method::GET, "/domains", None, None).await;
    assert_error(s, &b, StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
    let (s, b) = api
        .call(Method::GET, "/domains", Some("mr_00000000_nonsense"), None)
        .await;
    assert_error(s, &b, StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
    let (s, b) = api.call(Method::GET, "/domains", Some(&admin), None).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["data"][0]["name"], common::DOMAIN);
    assert_eq!(b["pagination"]["has_more"], false);

    // A read-only key, made through the API.
    let (s, b) = api
        .call(
            Method::POST,
            "/api-keys",
            Some(&admin),
            Some(json!({"name": "reader", "scopes": ["read"]})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let reader = b["key"].as_str().unwrap().to_string();
    let reader_id = b["id"].as_i64().unwrap();
    assert_eq!(b["scopes"], json!(["read"]));
    let (s, _) = api.call(Method::GET, "/domains", Some(&reader), None).await;
    assert_eq!(s, StatusCode::OK);
    let (s, b) = api
        .call(
            Method::POST,
            "/domains",
            Some(&reader),
            Some(json!({"name": "other.test"})),
        )
        .await;
    assert_error(s, &b, StatusCode::FORBIDDEN, "FORBIDDEN");
    let (s, b) = api
        .call(Method::GET, "/api-keys", Some(&reader), None)
        .await;
    assert_error(s, &b, StatusCode::FORBIDDEN, "FORBIDDEN");
    let (s, b) = api
        .call(
            Method::POST,
            "/api-keys",
            Some(&admin),
            Some(json!({"name": "bad", "scopes": ["root"]})),
        )
        .await;
    assert_error(s, &b, StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_ERROR");
    assert_eq!(b["error"]["details"][0]["field"], "scopes", "{b}");

    // Listing never shows secrets; revoking stops the key at once.
    let (s, b) = api.call(Method::GET, "/api-keys", Some(&admin), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["data"].as_array().unwrap().len(), 2);
    assert!(!b.to_string().contains(&reader), "secret listed");
    let (s, b) = api
        .call(
            Method::DELETE,
            &format!("/api-keys/{reader_id}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert!(b["revoked_at"].is_string(), "{b}");
    let (s, b) = api.call(Method::GET, "/domains", Some(&reader), None).await;
    assert_error(s, &b, StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
    let (s, b) = api
        .call(Method::DELETE, "/api-keys/999999", Some(&admin), None)
        .await;
    assert_error(s, &b, StatusCode::NOT_FOUND, "NOT_FOUND");
    let (_, b) = api.call(Method::GET, "/api-keys", Some(&admin), None).await;
    let admin_id = b["data"][0]["id"].as_i64().unwrap();
    let (s, b) = api
        .call(
            Method::DELETE,
            &format!("/api-keys/{admin_id}"),
            Some(&admin),
            None,
        )
        .await;
    assert_error(s, &b, StatusCode::CONFLICT, "CONFLICT");

    // Bad bodies and unknown routes keep the error shape.
    let resp = api
        .client
        .post(format!("http://{}/api/v1/domains", server.http))
        .bearer_auth(&admin)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let body: Value = resp.json().await.unwrap();
    assert_error(status, &body, StatusCode::BAD_REQUEST, "INVALID_REQUEST");
    let (s, b) = api
        .call(
            Method::POST,
            "/domains",
            Some(&admin),
            Some(json!({"name": "x.test", "color": "blue"})),
        )
        .await;
    assert_error(s, &b, StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_ERROR");
    let (s, b) = api
        .call(Method::GET, "/nothing-here", Some(&admin), None)
        .await;
    assert_error(s, &b, StatusCode::NOT_FOUND, "NOT_FOUND");
    let (s, b) = api
        .call(Method::GET, "/domains?limit=0", Some(&admin), None)
        .await;
    assert_error(s, &b, StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_ERROR");
}

#[tokio::test]
async fn domains_and_users_with_pagination() {
    let server = TestServer::start();
    let api = Api::new(&server);
    let key = cli_key(&server, &["read", "write"]);
    // Domains come and go, and users go, with an admin key only.
    let admin = cli_key(&server, &["admin"]);

    for n in 0..6 {
        let (s, b) = api
            .call(
                Method::POST,
                "/domains",
                Some(&admin),
                Some(json!({"name": format!("D{n}.Example.org")})),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
        assert_eq!(b["name"], format!("d{n}.example.org"));
    }
    let (s, b) = api
        .call(
            Method::POST,
            "/domains",
            Some(&admin),
            Some(json!({"name": "d0.example.org"})),
        )
        .await;
    assert_error(s, &b, StatusCode::CONFLICT, "CONFLICT");
    let (s, b) = api
        .call(
            Method::POST,
            "/domains",
            Some(&admin),
            Some(json!({"name": "not a domain"})),
        )
        .await;
    assert_error(s, &b, StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_ERROR");

    // 7 domains in pages of 3: every one once, in order.
    let seen: Vec<String> = api
        .all_pages("/domains?limit=3", &key)
        .await
        .iter()
        .map(|d| d["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(seen.len(), 7, "{seen:?}");
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 7, "no repeats");

    // Users.
    let (s, b) = api
        .call(
            Method::POST,
            "/users",
            Some(&key),
            Some(json!({"address": "Dora@d1.example.org", "password": "long enough secret"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    assert_eq!(b["address"], "dora@d1.example.org");
    assert_eq!(b["mailboxes"], json!(["INBOX", "Sent"]));
    let (s, b) = api
        .call(
            Method::POST,
            "/users",
            Some(&key),
            Some(json!({"address": "x@nowhere.example", "password": "pw"})),
        )
        .await;
    assert_error(s, &b, StatusCode::NOT_FOUND, "NOT_FOUND");
    let (s, b) = api
        .call(
            Method::POST,
            "/users",
            Some(&key),
            Some(json!({"address": "y@d1.example.org", "password": ""})),
        )
        .await;
    assert_error(s, &b, StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_ERROR");
    let (s, b) = api
        .call(
            Method::GET,
            "/users?domain=d1.example.org",
            Some(&key),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["data"].as_array().unwrap().len(), 1);
    let (s, b) = api
        .call(Method::GET, "/users/dora@d1.example.org", Some(&key), None)
        .await;
    assert_eq!(
        (s, b["address"].clone()),
        (StatusCode::OK, json!("dora@d1.example.org"))
    );
    // Mailboxes.
    let boxes = "/users/dora@d1.example.org/mailboxes";
    let (s, b) = api
        .call(
            Method::POST,
            boxes,
            Some(&key),
            Some(json!({"name": "Invoices"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let (s, b) = api
        .call(
            Method::POST,
            boxes,
            Some(&key),
            Some(json!({"name": "Invoices"})),
        )
        .await;
    assert_error(s, &b, StatusCode::CONFLICT, "CONFLICT");
    let (s, b) = api
        .call(Method::POST, boxes, Some(&key), Some(json!({"name": ""})))
        .await;
    assert_error(s, &b, StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_ERROR");
    let (_, b) = api.call(Method::GET, boxes, Some(&key), None).await;
    let names: Vec<&str> = b["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["INBOX", "Sent", "Invoices"]);
    let (s, b) = api
        .call(Method::DELETE, &format!("{boxes}/INBOX"), Some(&key), None)
        .await;
    assert_error(s, &b, StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_ERROR");
    let (s, _) = api
        .call(
            Method::DELETE,
            &format!("{boxes}/Invoices"),
            Some(&key),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, b) = api
        .call(
            Method::DELETE,
            &format!("{boxes}/Invoices"),
            Some(&key),
            None,
        )
        .await;
    assert_error(s, &b, StatusCode::NOT_FOUND, "NOT_FOUND");

    // `write` cannot remove users or domains; `admin` can.
    let forbidden = StatusCode::FORBIDDEN;
    for (path, want, who) in [
        ("/users/dora@d1.example.org", forbidden, &key),
        ("/users/dora@d1.example.org", StatusCode::NO_CONTENT, &admin),
        ("/domains/d5.example.org", forbidden, &key),
        ("/domains/d5.example.org", StatusCode::NO_CONTENT, &admin),
    ] {
        api.expect(Method::DELETE, path, Some(who), None, want)
            .await;
    }
    let (s, b) = api
        .call(Method::GET, "/users/dora@d1.example.org", Some(&key), None)
        .await;
    assert_error(s, &b, StatusCode::NOT_FOUND, "NOT_FOUND");
    let (s, b) = api
        .call(Method::GET, "/domains/d5.example.org", Some(&key), None)
        .await;
    assert_error(s, &b, StatusCode::NOT_FOUND, "NOT_FOUND");

    // The queue routes answer in the same shapes.
    let (s, b) = api.call(Method::GET, "/queue", Some(&key), None).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["data"], json!([]));
    let (s, b) = api
        .call(Method::GET, "/queue/stats", Some(&key), None)
        .await;
    assert_eq!((s, b["entries"].clone()), (StatusCode::OK, json!(0)));
    let (s, b) = api
        .call(Method::POST, "/queue/nope/retry", Some(&key), None)
        .await;
    assert_error(s, &b, StatusCode::NOT_FOUND, "NOT_FOUND");
}

#[tokio::test]
async fn deprecated_alias_announces_its_sunset() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let options = common::Options {
        extra_yaml: format!(
            "queue:\n  retry:\n    initial_seconds: 600\ndelivery:\n  routes: {{remote.test: {closed}}}\n"
        ),
        ..common::Options::default()
    };
    let server = TestServer::start_with(options);
    let api = Api::new(&server);
    let key = cli_key(&server, &["send", "write", "read"]);
    let bob = TestServer::address("bob");
    let (s, b) = api
        .call(
            Method::POST,
            "/send",
            Some(&key),
            Some(json!({"from": bob, "to": ["x@remote.test"], "subject": "s", "text": "t"})),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    let id = b["id"].as_str().unwrap().to_string();
    let resp = api
        .client
        .post(format!(
            "http://{}/api/v1/queue/{id}/retry-now",
            server.http
        ))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let h = resp.headers();
    assert_eq!(h["deprecation"], "@1795910400");
    assert_eq!(h["sunset"], "Mon, 29 Nov 2027 00:00:00 GMT");
    assert_eq!(
        h["link"].to_str().unwrap(),
        format!("</api/v1/queue/{id}/retry>; rel=\"successor-version\"")
    );
    // The successor carries none of that.
    let resp = api
        .client
        .post(format!("http://{}/api/v1/queue/{id}/retry", server.http))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert!(resp.headers().get("deprecation").is_none());
}

#[tokio::test]
async fn failed_authentication_is_rate_limited() {
    let server = TestServer::start();
    let api = Api::new(&server);
    let good = cli_key(&server, &["read"]);
    let mut last = StatusCode::OK;
    for _ in 0..12 {
        last = api
            .call(Method::GET, "/domains", Some("mr_deadbeef_wrong"), None)
            .await
            .0;
    }
    assert_eq!(last, StatusCode::TOO_MANY_REQUESTS);
    // Bad keys stay blocked for this address until the window ends; a good key is
    // served all the same (tests/api_keys.rs has the rest).
    let (s, b) = api.call(Method::GET, "/domains", Some(&good), None).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, b) = api.call(Method::GET, "/domains", None, None).await;
    assert_error(s, &b, StatusCode::TOO_MANY_REQUESTS, "RATE_LIMITED");
}

#[tokio::test]
async fn openapi_document_describes_every_route() {
    let server = TestServer::start();
    let resp = reqwest::get(format!("http://{}/api/v1/openapi.json", server.http))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let doc: Value = resp.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{doc}");
    let expected = [
        ("/api/v1/domains", vec!["get", "post"]),
        ("/api/v1/domains/{name}", vec!["get", "delete"]),
        ("/api/v1/users", vec!["get", "post"]),
        ("/api/v1/users/{address}", vec!["get", "patch", "delete"]),
        ("/api/v1/users/{address}/mailboxes", vec!["get", "post"]),
        ("/api/v1/users/{address}/mailboxes/{name}", vec!["delete"]),
        ("/api/v1/messages", vec!["get"]),
        ("/api/v1/messages/{id}", vec!["get", "patch", "delete"]),
        ("/api/v1/messages/{id}/raw", vec!["get"]),
        ("/api/v1/send", vec!["post"]),
        ("/api/v1/queue", vec!["get"]),
        ("/api/v1/queue/stats", vec!["get"]),
        ("/api/v1/queue/{id}/retry", vec!["post"]),
        ("/api/v1/queue/{id}/retry-now", vec!["post"]),
        ("/api/v1/queue/{id}", vec!["delete"]),
        ("/api/v1/hooks", vec!["get", "post"]),
        ("/api/v1/hooks/{id}", vec!["get", "put", "delete"]),
        ("/api/v1/hooks/{id}/reset", vec!["post"]),
        ("/api/v1/hooks/{id}/test", vec!["post"]),
        ("/api/v1/api-keys", vec!["get", "post"]),
        ("/api/v1/api-keys/{id}", vec!["delete"]),
        ("/api/v1/audit", vec!["get"]),
    ];
    let paths = doc["paths"].as_object().unwrap();
    assert_eq!(paths.len(), expected.len(), "{:?}", paths.keys());
    for (path, methods) in expected {
        let item = &paths[path];
        for m in methods {
            let op = &item[m];
            assert!(op.is_object(), "{m} {path} missing");
            assert!(
                op["responses"]["401"].is_object(),
                "{m} {path}: 401 documented"
            );
            assert!(op["security"].is_array(), "{m} {path}: security");
        }
    }
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    assert_eq!(
        paths["/api/v1/queue/{id}/retry-now"]["post"]["deprecated"],
        true
    );
    assert!(paths["/api/v1/queue/{id}/retry"]["post"]["deprecated"].is_null());
    assert!(doc["components"]["schemas"]["ErrorBody"].is_object());
}

/// Delivers a message to local users over the inbound listener.
async fn deliver(server: &TestServer, to: &[&str], message_id: &str, subject_word: &str) -> String {
    let from = "sender@remote.test";
    let body = common::message(from, to[0], message_id, subject_word);
    let mut client =
        mail_send::SmtpClientBuilder::new("localhost".to_string(), server.inbound.port())
            .unwrap()
            .connect_plain()
            .await
            .unwrap();
    client
        .send(mail_send::smtp::message::Message::new(
            from,
            to.iter().copied(),
            body.strip_suffix("\r\n").unwrap().as_bytes(),
        ))
        .await
        .unwrap();
    client.quit().await.ok();
    body
}

#[tokio::test]
async fn messages_list_filter_raw_flags_and_soft_delete() {
    let server = TestServer::start();
    let api = Api::new(&server);
    let key = cli_key(&server, &["read", "write"]);
    let bob = TestServer::address("bob");
    let alice = TestServer::address("alice");
    let mut bodies = Vec::new();
    for n in 0..5 {
        bodies.push(
            deliver(
                &server,
                &[&bob],
                &format!("m{n}@remote.test"),
                &format!("word{n}"),
            )
            .await,
        );
    }
    deliver(&server, &[&bob, &alice], "shared@remote.test", "both").await;

    // Newest first, pages of 2 with no gaps or repeats: 7 entries (the shared one twice).
    let ids: Vec<i64> = api
        .all_pages("/messages?limit=2", &key)
        .await
        .iter()
        .map(|m| m["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids.len(), 7, "{ids:?}");
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first: {ids:?}");

    // Filters.
    let count = |b: &Value| {
        b["data"]
            .as_array()
            .unwrap_or_else(|| {
                let logs = server.logs.lock().unwrap().join("\n");
                panic!(
                    "{b}\n{}",
                    logs.lines()
                        .filter(|l| l.contains("error"))
                        .collect::<Vec<_>>()
                        .join("\n")
                )
            })
            .len()
    };
    let (_, b) = api
        .call(
            Method::GET,
            &format!("/messages?user={alice}"),
            Some(&key),
            None,
        )
        .await;
    assert_eq!(count(&b), 1, "{b}");
    assert_eq!(b["data"][0]["mailbox"], "INBOX");
    assert_eq!(b["data"][0]["header_message_id"], "shared@remote.test");
    let (_, b) = api
        .call(Method::GET, "/messages?q=M3@REMOTE", Some(&key), None)
        .await;
    assert_eq!(count(&b), 1, "q matches the subject, case-insensitive: {b}");
    let (_, b) = api
        .call(
            Method::GET,
            "/messages?from=sender%40remote",
            Some(&key),
            None,
        )
        .await;
    assert_eq!(count(&b), 7, "{b}");
    let (_, b) = api
        .call(
            Method::GET,
            &format!("/messages?to={alice}"),
            Some(&key),
            None,
        )
        .await;
    assert_eq!(count(&b), 0, "the To header names bob only: {b}");
    let (_, b) = api
        .call(
            Method::GET,
            "/messages?before=2000-01-01T00:00:00Z",
            Some(&key),
            None,
        )
        .await;
    assert_eq!(count(&b), 0, "{b}");
    let (_, b) = api
        .call(
            Method::GET,
            "/messages?after=2000-01-01T00:00:00Z",
            Some(&key),
            None,
        )
        .await;
    assert_eq!(count(&b), 7, "{b}");
    let mailbox = b["data"][0]["mailbox_id"].as_i64().unwrap();
    let (_, b) = api
        .call(
            Method::GET,
            &format!("/messages?mailbox={mailbox}"),
            Some(&key),
            None,
        )
        .await;
    assert!(count(&b) >= 1, "{b}");
    let (s, b) = api
        .call(Method::GET, "/messages?after=yesterday", Some(&key), None)
        .await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "INVALID_REQUEST");

    // Raw bytes are what was received, after our Received header.
    let (_, b) = api
        .call(Method::GET, "/messages?q=m0@remote", Some(&key), None)
        .await;
    let id = b["data"][0]["id"].as_i64().unwrap();
    let raw = api
        .client
        .get(format!("http://{}/api/v1/messages/{id}/raw", server.http))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), StatusCode::OK);
    assert_eq!(raw.headers()["content-type"], "message/rfc822");
    let raw = raw.text().await.unwrap();
    assert!(raw.starts_with("Received: from "), "{raw}");
    assert!(raw.ends_with(&bodies[0]), "{raw}");
    let stored = server.messages_with_id("m0@remote.test").await;
    assert_eq!(
        raw.as_bytes(),
        server.object(&stored[0].object_key).await.unwrap()
    );

    // Flags and tags.
    let (s, b) = api
        .call(
            Method::PATCH,
            &format!("/messages/{id}"),
            Some(&key),
            Some(json!({"flags": ["\\Seen"], "tags": ["invoice", "2026:q4", "invoice"]})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["flags"], json!(["\\Seen"]));
    assert_eq!(b["tags"], json!(["invoice", "2026:q4"]));
    let (_, b) = api
        .call(Method::GET, "/messages?tag=invoice", Some(&key), None)
        .await;
    assert_eq!(count(&b), 1, "{b}");
    assert_eq!(b["data"][0]["id"], id);
    let (_, b) = api
        .call(Method::GET, "/messages?tag=invo", Some(&key), None)
        .await;
    assert_eq!(count(&b), 0, "whole tags only: {b}");
    let (s, b) = api
        .call(
            Method::PATCH,
            &format!("/messages/{id}"),
            Some(&key),
            Some(json!({"tags": ["has space"]})),
        )
        .await;
    assert_error(s, &b, StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_ERROR");

    // Soft delete: gone from the API, the stored message stays for the purge job.
    let (s, _) = api
        .call(Method::DELETE, &format!("/messages/{id}"), Some(&key), None)
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, b) = api
        .call(Method::GET, &format!("/messages/{id}"), Some(&key), None)
        .await;
    assert_error(s, &b, StatusCode::NOT_FOUND, "NOT_FOUND");
    let (s, b) = api
        .call(Method::DELETE, &format!("/messages/{id}"), Some(&key), None)
        .await;
    assert_error(s, &b, StatusCode::NOT_FOUND, "NOT_FOUND");
    let (_, b) = api.call(Method::GET, "/messages", Some(&key), None).await;
    assert_eq!(count(&b), 6);
    assert_eq!(server.messages_with_id("m0@remote.test").await.len(), 1);
}

#[tokio::test]
async fn send_delivers_locally_and_through_the_queue() {
    let sink = common::sink::Sink::start();
    let options = common::Options {
        extra_yaml: format!(
            "queue:\n  poll_interval_seconds: 0.2\ndelivery:\n  routes: {{remote.test: {}}}\n",
            sink.addr
        ),
        ..common::Options::default()
    };
    let server = TestServer::start_with(options);
    let api = Api::new(&server);
    let key = cli_key(&server, &["send"]);
    let reader = cli_key(&server, &["read"]);
    let bob = TestServer::address("bob");
    let alice = TestServer::address("alice");
    let request = json!({
        "from": bob,
        "from_name": "Bob Example",
        "to": [alice, "friend@remote.test"],
        "bcc": ["hidden@remote.test"],
        "subject": "Built by the API",
        "text": "Hello from the API",
    });
    let (s, b) = api
        .call(Method::POST, "/send", Some(&reader), Some(request.clone()))
        .await;
    assert_error(s, &b, StatusCode::FORBIDDEN, "FORBIDDEN");
    let (s, b) = api
        .call(Method::POST, "/send", Some(&key), Some(request))
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    assert_eq!(b["delivered"], json!([alice]));
    assert_eq!(
        b["queued"],
        json!(["friend@remote.test", "hidden@remote.test"])
    );
    assert!(
        sink.wait_for(1, std::time::Duration::from_secs(10)),
        "queued and delivered"
    );
    let got = &sink.received()[0];
    assert_eq!(got.from, bob);
    assert_eq!(got.rcpts, ["friend@remote.test", "hidden@remote.test"]);
    let text = String::from_utf8_lossy(&got.data);
    assert!(text.contains("Subject: Built by the API"), "{text}");
    assert!(text.contains("Hello from the API"), "{text}");
    assert!(
        !text.contains("hidden@remote.test"),
        "Bcc not in the headers: {text}"
    );
    assert_eq!(server.inbox("alice").await.len(), 1);

    for (body, field) in [
        (
            json!({"from": "x@elsewhere.test", "to": [alice], "subject": "s", "text": "t"}),
            "from",
        ),
        (
            json!({"from": bob, "to": ["nobody@example.test"], "subject": "s", "text": "t"}),
            "to",
        ),
        (
            json!({"from": bob, "to": ["not an address"], "subject": "s", "text": "t"}),
            "to",
        ),
        (json!({"from": bob, "to": [alice], "subject": "s"}), "text"),
        (
            json!({"from": bob, "to": [], "subject": "s", "text": "t"}),
            "to",
        ),
    ] {
        let (s, b) = api
            .call(Method::POST, "/send", Some(&key), Some(body))
            .await;
        assert_error(s, &b, StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_ERROR");
        assert_eq!(b["error"]["details"][0]["field"], field, "{b}");
    }
}

#[tokio::test]
async fn database_outage_answers_503_quickly() {
    let server = TestServer::start();
    if !common::backend_available(
        server.backend.is_postgres(),
        "MAIRUST_TEST_POSTGRES_URL (a database that can be stopped)",
    ) {
        return;
    }
    let api = Api::new(&server);
    let key = cli_key(&server, &["read"]);
    let (s, _) = api.call(Method::GET, "/domains", Some(&key), None).await;
    assert_eq!(s, StatusCode::OK);
    server.backend.pg_block(true);
    // Once the health monitor has seen it (0.2 s probes in tests), every route that
    // needs the database answers at once.
    assert!(
        server
            .wait_ready_status(503, std::time::Duration::from_secs(10))
            .await
    );
    let started = std::time::Instant::now();
    let (s, b) = api.call(Method::GET, "/domains", Some(&key), None).await;
    assert_error(s, &b, StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE");
    assert!(
        started.elapsed() < std::time::Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    server.backend.pg_block(false);
    assert!(
        server
            .wait_ready_status(200, std::time::Duration::from_secs(15))
            .await
    );
    let (s, _) = api.call(Method::GET, "/domains", Some(&key), None).await;
    assert_eq!(s, StatusCode::OK, "recovered by itself");
}

#[tokio::test]
async fn cors_for_the_configured_admin_ui_origin_only() {
    let options = common::Options {
        extra_yaml: "api:\n  cors:\n    allowed_origins: [\"https://admin.example.test\"]\n".into(),
        ..common::Options::default()
    };
    let server = TestServer::start_with(options);
    let key = cli_key(&server, &["read"]);
    let client = Client::new();
    let url = format!("http://{}/api/v1/domains", server.http);
    let preflight = client
        .request(Method::OPTIONS, &url)
        .header("Origin", "https://admin.example.test")
        .header("Access-Control-Request-Method", "GET")
        .header("Access-Control-Request-Headers", "authorization")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), StatusCode::OK);
    assert_eq!(
        preflight.headers()["access-control-allow-origin"],
        "https://admin.example.test"
    );
    let methods = preflight.headers()["access-control-allow-methods"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(methods.contains("PATCH"), "{methods}");
    let get = client
        .get(&url)
        .bearer_auth(&key)
        .header("Origin", "https://admin.example.test")
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), StatusCode::OK);
    assert_eq!(
        get.headers()["access-control-allow-origin"],
        "https://admin.example.test"
    );
    let other = client
        .get(&url)
        .bearer_auth(&key)
        .header("Origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());

    // A bad origin is a configuration error naming the key.
    std::fs::write(
        server.dir.path().join("bad.yaml"),
        std::fs::read_to_string(&server.config_path)
            .unwrap()
            .replace(
                "https://admin.example.test",
                "https://admin.example.test/ui",
            ),
    )
    .unwrap();
    let out = std::process::Command::new(common::BIN)
        .args([
            "--config",
            server.dir.path().join("bad.yaml").to_str().unwrap(),
            "config-check",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("api.cors.allowed_origins[0]"));
}

/// Audit entries (SPEC O5) for key creation and revocation, account changes and failed
/// logins, in the file and through the admin-only read route.
#[tokio::test]
async fn audit_entries_for_keys_accounts_and_failed_logins() {
    let server = TestServer::start();
    let api = Api::new(&server);
    let admin = cli_key(&server, &["admin"]);
    let bob = TestServer::address("bob");

    let (s, b) = api
        .call(
            Method::POST,
            "/api-keys",
            Some(&admin),
            Some(json!({"name": "ui", "scopes": ["read", "write"]})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let ui_id = b["id"].as_i64().unwrap();
    let ui_key = b["key"].as_str().unwrap().to_string();
    let ui_target = ui_id.to_string();
    let (s, b) = api
        .call(
            Method::DELETE,
            &format!("/api-keys/{ui_id}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    // The revoked key, a made-up key and no key: three failed authentications.
    let (s, _) = api.call(Method::GET, "/domains", Some(&ui_key), None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _) = api
        .call(Method::GET, "/domains", Some("mr_deadbeef_nonsense"), None)
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _) = api.call(Method::GET, "/domains", None, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    // A password change: the old password stops working, the new one works.
    let (s, b) = api
        .call(
            Method::PATCH,
            &format!("/users/{bob}"),
            Some(&admin),
            Some(json!({"password": "a new long password"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["disabled"], false);
    let port = server.submission.port();
    assert!(
        common::tls_login(port, false, &bob, common::PASSWORD)
            .await
            .is_err()
    );
    let ok = common::tls_login(port, false, &bob, "a new long password").await;
    assert!(ok.is_ok(), "new password refused");
    drop(ok);
    // Disabled: no login even with the right password.
    let (s, b) = api
        .call(
            Method::PATCH,
            &format!("/users/{bob}"),
            Some(&admin),
            Some(json!({"disabled": true})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["disabled"], true);
    assert!(
        common::tls_login(port, false, &bob, "a new long password")
            .await
            .is_err()
    );
    // Nothing to change, an empty password, an unknown user.
    for (body, want, code) in [
        (
            json!({}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "VALIDATION_ERROR",
        ),
        (
            json!({"password": ""}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "VALIDATION_ERROR",
        ),
    ] {
        let (s, b) = api
            .call(
                Method::PATCH,
                &format!("/users/{bob}"),
                Some(&admin),
                Some(body),
            )
            .await;
        assert_error(s, &b, want, code);
    }
    let (s, b) = api
        .call(
            Method::PATCH,
            "/users/nobody@example.test",
            Some(&admin),
            Some(json!({"disabled": false})),
        )
        .await;
    assert_error(s, &b, StatusCode::NOT_FOUND, "NOT_FOUND");
    // A domain from the CLI.
    server.cli_ok(&["domain", "add", "audited.test"], None);

    // Read back: admin only, newest first, filters.
    let reader = cli_key(&server, &["read"]);
    let (s, b) = api.call(Method::GET, "/audit", Some(&reader), None).await;
    assert_error(s, &b, StatusCode::FORBIDDEN, "FORBIDDEN");
    let all = |query: &'static str| {
        let (api, admin) = (&api, &admin);
        async move {
            let (s, b) = api
                .call(Method::GET, &format!("/audit{query}"), Some(admin), None)
                .await;
            assert_eq!(s, StatusCode::OK, "{b}");
            b["data"].as_array().unwrap().clone()
        }
    };
    let entries = all("?limit=500").await;
    let ids: Vec<i64> = entries.iter().map(|e| e["id"].as_i64().unwrap()).collect();
    assert!(
        ids.windows(2).all(|w| w[0] > w[1]),
        "not newest first: {ids:?}"
    );
    let created = all("?event=api_key.create").await;
    // The CLI's admin key, the API's `ui` key, the CLI's reader key.
    assert_eq!(created.len(), 3, "{created:?}");
    let by_api = created
        .iter()
        .find(|e| e["target"].as_str() == Some(ui_target.as_str()))
        .expect("API key creation audited");
    assert_eq!(by_api["outcome"], "success");
    assert!(
        by_api["actor"]
            .as_str()
            .unwrap()
            .starts_with("api-key:test#"),
        "{by_api}"
    );
    assert_eq!(by_api["remote"], "127.0.0.1");
    assert_eq!(by_api["details"]["scopes"], "read write");
    assert!(
        created
            .iter()
            .any(|e| e["actor"].as_str().unwrap().starts_with("cli:"))
    );
    let revoked = all("?event=api_key.revoke").await;
    assert_eq!(revoked.len(), 1);
    assert_eq!(revoked[0]["target"].as_str(), Some(ui_target.as_str()));
    let failed_api = all("?event=auth.api_key&outcome=failure").await;
    assert_eq!(failed_api.len(), 3, "{failed_api:?}");
    let reasons: HashSet<&str> = failed_api
        .iter()
        .map(|e| e["details"]["reason"].as_str().unwrap())
        .collect();
    assert_eq!(
        reasons,
        HashSet::from(["no key", "invalid or revoked key"]),
        "{failed_api:?}"
    );
    // SMTP logins are recorded without waiting; give them a moment.
    let mut logins = Vec::new();
    for _ in 0..50 {
        logins = all("?event=auth.login").await;
        if logins.len() >= 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let outcome_reason: Vec<(String, Value)> = logins
        .iter()
        .rev()
        .map(|e| {
            assert_eq!(e["actor"], format!("smtp:{bob}"));
            assert_eq!(e["details"]["listener"], "submission");
            (
                e["outcome"].as_str().unwrap().to_string(),
                e["details"]["reason"].clone(),
            )
        })
        .collect();
    // The first failure of an address in a summary period is an entry of its own; the
    // later one (the disabled user's) goes into that address's summary, written at the
    // end of the period or at shutdown (checked at the end).
    assert_eq!(
        outcome_reason,
        vec![
            ("failure".into(), json!("wrong password")),
            ("success".into(), Value::Null),
        ]
    );
    let changes = all("?event=user.change").await;
    assert_eq!(changes.len(), 2);
    assert_eq!(changes[0]["details"]["disabled"], true);
    assert_eq!(changes[1]["details"]["password_changed"], true);
    let domain = all("?event=domain.create&target=audited.test").await;
    assert_eq!(domain.len(), 1);
    assert!(domain[0]["actor"].as_str().unwrap().starts_with("cli:"));
    // Pagination across the whole log: no gaps, no repeats.
    let seen: Vec<i64> = api
        .all_pages("/audit?limit=2", &admin)
        .await
        .iter()
        .map(|e| e["id"].as_i64().unwrap())
        .collect();
    let now = all("?limit=500").await;
    let now_ids: Vec<i64> = now.iter().map(|e| e["id"].as_i64().unwrap()).collect();
    assert_eq!(seen, now_ids);
    let (s, b) = api
        .call(Method::GET, "/audit?outcome=maybe", Some(&admin), None)
        .await;
    assert_error(s, &b, StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_ERROR");

    // The file has every database entry, as JSON lines, in order.
    let text = std::fs::read_to_string(server.dir.path().join("audit.log")).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    for key in ["timestamp", "node", "event", "outcome", "actor"] {
        assert!(lines.iter().all(|l| !l[key].is_null()), "{key} missing");
    }
    let file_events: Vec<&str> = lines.iter().map(|l| l["event"].as_str().unwrap()).collect();
    for e in &now {
        assert!(file_events.contains(&e["event"].as_str().unwrap()));
    }
    assert_eq!(
        lines
            .iter()
            .filter(|l| l["event"] == "api_key.create")
            .count(),
        3
    );
    // At shutdown the summary of the failures after the first is written.
    let mut server = server;
    server.signal(libc::SIGTERM);
    assert!(
        server
            .wait_exit(std::time::Duration::from_secs(15))
            .success()
    );
    let text = std::fs::read_to_string(server.dir.path().join("audit.log")).unwrap();
    let summaries: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|l| l["event"] == "auth.login_failures")
        .collect();
    assert_eq!(summaries.len(), 1, "{summaries:?}");
    assert_eq!(summaries[0]["details"]["failures"], 1);
    assert_eq!(summaries[0]["remote"], "127.0.0.1");
    assert_eq!(summaries[0]["details"]["accounts"], json!([bob]));
}

/// Database audit entries older than `audit.retention_days` are pruned (at start, then
/// hourly); younger ones stay.
#[tokio::test]
async fn old_audit_entries_are_pruned() {
    use mairust_entities::audit_entry;
    use sea_orm::{ActiveValue::Set, EntityTrait};
    let mut server = TestServer::start_with(common::Options {
        audit_retention_days: 2,
        ..Default::default()
    });
    let db = server.db().await;
    for (event, age_hours) in [("test.old", 24 * 3), ("test.recent", 1)] {
        audit_entry::Entity::insert(audit_entry::ActiveModel {
            at: Set((chrono::Utc::now() - chrono::Duration::hours(age_hours)).into()),
            node: Set("test".into()),
            event: Set(event.into()),
            outcome: Set("success".into()),
            actor: Set("test".into()),
            remote: Set(None),
            target: Set(None),
            details: Set("{}".into()),
            ..Default::default()
        })
        .exec(&db)
        .await
        .unwrap();
    }
    server.kill();
    server.spawn();
    let events = || async {
        audit_entry::Entity::find()
            .all(&db)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.event)
            .collect::<Vec<_>>()
    };
    assert!(
        common::eventually(std::time::Duration::from_secs(10), || async {
            !events().await.contains(&"test.old".to_string())
        })
        .await,
        "old entry kept"
    );
    assert!(events().await.contains(&"test.recent".to_string()));
    assert!(server.log_contains("audit_pruned"));
}
