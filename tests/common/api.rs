//! A REST API client for the tests (reqwest): calls that answer the status and the JSON
//! body, tables of calls that must all answer one status, list pages followed to the
//! end, keys made with the CLI or through the API.

use std::net::IpAddr;

use reqwest::{Client, Method, RequestBuilder, StatusCode};
use serde_json::Value;

use super::TestServer;

/// One request of a table: method, path, body.
pub type Call = (Method, String, Option<Value>);

pub struct Api<'a> {
    pub server: &'a TestServer,
    pub client: Client,
}

impl<'a> Api<'a> {
    pub fn new(server: &'a TestServer) -> Self {
        Api {
            server,
            client: Client::new(),
        }
    }

    /// A client whose connections come from `local` (another loopback address: the
    /// server sees another peer).
    pub fn from_address(server: &'a TestServer, local: IpAddr) -> Self {
        Api {
            server,
            client: Client::builder().local_address(local).build().unwrap(),
        }
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        self.call_with(method, path, key, body, &[]).await
    }

    /// [`Api::call`] that checks the answer's status, and for an error its shape (the
    /// code that goes with the status, a message); the body.
    pub async fn expect(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
        want: StatusCode,
    ) -> Value {
        let (status, answer) = self.call(method.clone(), path, key, body).await;
        assert_eq!(status, want, "{method} {path}: {answer}");
        if !want.is_success() {
            assert_error(status, &answer, want, error_code(want));
        }
        answer
    }

    /// Sends every call of `calls` with `key` and checks each answers `want` (as
    /// [`Api::expect`] does).
    pub async fn expect_all(&self, key: &str, calls: Vec<Call>, want: StatusCode) {
        for (method, path, body) in calls {
            self.expect(method, &path, Some(key), body, want).await;
        }
    }

    /// A key made through the API with the admin key `admin` (201): its secret, its id
    /// and the whole answer.
    pub async fn create_key(&self, admin: &str, body: Value) -> (String, i64, Value) {
        let answer = self
            .expect(
                Method::POST,
                "/api-keys",
                Some(admin),
                Some(body),
                StatusCode::CREATED,
            )
            .await;
        (
            answer["key"].as_str().unwrap().to_string(),
            answer["id"].as_i64().unwrap(),
            answer,
        )
    }

    /// A request to `/api/v1{path}`, for what [`Api::call`] does not cover (raw bodies,
    /// answer headers, non-JSON answers).
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.client
            .request(method, format!("http://{}/api/v1{path}", self.server.http))
    }

    /// A GET with `key` that must answer 200; the body.
    pub async fn get_ok(&self, key: &str, path: &str) -> Value {
        self.expect(Method::GET, path, Some(key), None, StatusCode::OK)
            .await
    }

    /// [`Api::call`] with extra request headers.
    pub async fn call_with(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> (StatusCode, Value) {
        let mut req = self.request(method, path);
        if let Some(key) = key {
            req = req.bearer_auth(key);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Every item of a list, following `pagination.cursor` page by page; checks each
    /// page answers 200 and that the cursor is null exactly on the last page.
    pub async fn all_pages(&self, path: &str, key: &str) -> Vec<Value> {
        let sep = if path.contains('?') { '&' } else { '?' };
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let page = match &cursor {
                Some(c) => format!("{path}{sep}cursor={c}"),
                None => path.to_string(),
            };
            let (s, b) = self.call(Method::GET, &page, Some(key), None).await;
            assert_eq!(s, StatusCode::OK, "{b}");
            items.extend(b["data"].as_array().unwrap().iter().cloned());
            let has_more = b["pagination"]["has_more"].as_bool().unwrap();
            match b["pagination"]["cursor"].as_str() {
                Some(c) if has_more => cursor = Some(c.to_string()),
                None if !has_more => return items,
                _ => panic!("cursor and has_more disagree: {b}"),
            }
        }
    }
}

/// The numeric `id` of every list item, in order (into a `Vec`, a set…).
pub fn item_ids<C: FromIterator<i64>>(items: &[Value]) -> C {
    items.iter().map(|i| i["id"].as_i64().unwrap()).collect()
}

/// A key with `scope` limited to `domain`, made with the CLI.
pub fn cli_key_of_domain(server: &TestServer, scope: &str, domain: &str) -> String {
    let args = ["admin", "create-key", "--scope", scope, "--domain", domain];
    server.cli_ok(&args, None).trim().to_string()
}

/// A key made with the CLI, as an operator makes the first one.
pub fn cli_key(server: &TestServer, scopes: &[&str]) -> String {
    let mut args = vec!["admin", "create-key", "--name", "test"];
    for s in scopes {
        args.extend(["--scope", s]);
    }
    server.cli_ok(&args, None).trim().to_string()
}

/// The error code of SPEC A3 that goes with an HTTP status.
pub fn error_code(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "INVALID_REQUEST",
        401 => "UNAUTHORIZED",
        403 => "FORBIDDEN",
        404 => "NOT_FOUND",
        409 => "CONFLICT",
        422 => "VALIDATION_ERROR",
        429 => "RATE_LIMITED",
        500 => "INTERNAL_ERROR",
        503 => "UNAVAILABLE",
        other => panic!("no error code for status {other}"),
    }
}

/// An error answer in the shape of SPEC A3, with a message.
pub fn assert_error(status: StatusCode, body: &Value, want: StatusCode, code: &str) {
    assert_eq!(status, want, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}
