//! The Admin UI in a real headless Chromium (Debian's `chromium` + `chromedriver`,
//! `tests/common/webdriver.rs`): an admin signs in, creates a domain and a user, sees
//! mail sent to that user over SMTP appear and opens it, retries and deletes a queue
//! entry, makes and revokes an API key; the user signs in and sees only their own mail,
//! on a narrow screen too; a message whose subject and HTML carry script and `onerror`
//! payloads renders inert (a listener the payloads would call hears nothing, while the
//! same payload on a page of its own does call it); forged posts from another origin
//! of the same site (the cookie goes along) and from another site are refused; a session ends and the UI asks to sign in again. A screenshot of each page
//! is written under `target/ui-screenshots/` and the list printed.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::api::Api;
use common::raw::RawClient;
use common::webdriver::{self, Browser};
use common::{DOMAIN, Options, PASSWORD, TestServer};
use reqwest::Method;
use serde_json::{Value, json};

/// A local web server standing for other sites: it records every request (what a
/// payload that ran would send), and serves pages for the control and forgery checks.
struct Probe {
    port: u16,
    hits: Arc<Mutex<Vec<String>>>,
}

impl Probe {
    /// `pages(port)`: the pages it serves, by path (they may name its own port).
    fn start(pages: impl Fn(u16) -> Vec<(&'static str, String)>) -> Probe {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let pages = pages(port);
        let hits = Arc::new(Mutex::new(Vec::new()));
        let seen = hits.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut reader = BufReader::new(&stream);
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    continue;
                }
                // Drain the request head.
                let mut header = String::new();
                while reader.read_line(&mut header).is_ok_and(|n| n > 2) {
                    header.clear();
                }
                let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
                seen.lock().unwrap().push(path.clone());
                let page = path.split('?').next().unwrap_or("");
                let body = pages
                    .iter()
                    .find(|(p, _)| *p == page)
                    .map(|(_, b)| b.clone())
                    .unwrap_or_default();
                let mut out = &stream;
                let _ = write!(
                    out,
                    "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nAccess-Control-Allow-Origin: *\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        Probe { port, hits }
    }

    fn hits(&self) -> Vec<String> {
        self.hits.lock().unwrap().clone()
    }
}

/// A page of another origin that posts to `?target=` with the browser's cookies, as a
/// fetch and as a form: simple requests (no body to refuse), so only the session's CSRF
/// check (or the cookie's SameSite) stands between them and the change.
const FORGE: &str = "<form id=f method=post></form><script>\
    const target = new URLSearchParams(location.search).get('target');\
    const form = document.getElementById('f'); form.action = target;\
    fetch(target, {method: 'POST', credentials: 'include', mode: 'no-cors'})\
    .finally(() => form.submit());</script>";

/// The hostile HTML part: a script, event handlers and a remote image, each calling
/// the probe.
fn payload(probe: u16) -> String {
    format!(
        "<p>Hello Dave</p><script>fetch('http://127.0.0.1:{probe}/script')</script>\
         <img src=\"x\" onerror=\"fetch('http://127.0.0.1:{probe}/onerror')\">\
         <img src=\"http://127.0.0.1:{probe}/pixel.gif\">\
         <svg onload=\"fetch('http://127.0.0.1:{probe}/svg')\"></svg>\
         <a href=\"javascript:fetch('http://127.0.0.1:{probe}/link')\">click</a>"
    )
}

/// One message over the inbound listener; the reply code to the final dot.
async fn deliver(server: &TestServer, to: &str, subject: &str, body: &str) -> u16 {
    let (mut c, _) = RawClient::connect(server.inbound).await;
    c.expect("EHLO client.test", 250).await;
    c.expect("MAIL FROM:<eve@remote.test>", 250).await;
    c.expect(&format!("RCPT TO:<{to}>"), 250).await;
    c.expect("DATA", 354).await;
    let message = format!(
        "From: Eve <eve@remote.test>\r\nTo: <{to}>\r\nSubject: {subject}\r\nMessage-ID: <{}@remote.test>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nHello Dave (text)\r\n--b\r\nContent-Type: text/html\r\n\r\n{body}\r\n--b--\r\n.\r\n",
        uuid::Uuid::new_v4()
    );
    c.send(message.as_bytes()).await;
    c.reply().await.expect("a reply to the data").code
}

fn shots_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/ui-screenshots")
}

async fn sign_in(b: &Browser, base: &str, address: &str) {
    b.goto(&format!("{base}/admin/")).await;
    b.fill("signin-address", address).await;
    b.fill("signin-password", PASSWORD).await;
    b.click_test("signin-submit").await;
    b.test_id("signout").await;
}

/// Waits until the page's text contains `text`.
async fn shows(b: &Browser, text: &str) {
    b.wait_for(
        text,
        &format!(
            "return document.body.innerText.includes({});",
            serde_json::to_string(text).unwrap()
        ),
    )
    .await;
}

/// An API call with `key`: the status and the JSON body.
async fn api(
    server: &TestServer,
    key: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let (status, body) = Api::new(server).call(method, path, Some(key), body).await;
    (status.as_u16(), body)
}

/// root@example.test, with the admin role.
fn add_admin(server: &TestServer) {
    let address = format!("root@{DOMAIN}");
    let args = ["user", "add", &address, "--password-stdin", "--admin"];
    server.cli_ok(&args, Some(PASSWORD));
}

/// Whether the browser is installed (outside CI a missing one skips the test).
fn browser_available() -> bool {
    common::tool_available(
        webdriver::available(),
        "chromium and chromedriver",
        "apt-get install chromium chromium-driver",
    )
}

#[tokio::test]
async fn admins_and_users_work_in_a_real_browser_and_hostile_mail_stays_inert() {
    if !browser_available() {
        return;
    }
    // Remote mail goes to a port nobody listens on: it stays queued.
    let dead = common::free_port();
    let server = TestServer::start_with(Options {
        users: vec!["bob".into()],
        extra_yaml: format!("delivery:\n  routes:\n    remote.test: 127.0.0.1:{dead}\n"),
        ..Options::default()
    });
    let base = format!("http://{}", server.http);
    let key = server.admin_key();
    add_admin(&server);
    // The control page is the payload itself, served without any protection; the
    // forgery page posts to `?target=` from wherever it is served (the same site on
    // another port, or another site: `localhost`).
    let probe =
        Probe::start(|port| vec![("/control", payload(port)), ("/forge", FORGE.to_string())]);
    let hostile = payload(probe.port);

    let mut b = Browser::start(1280, 900, &shots_dir()).await;

    // The admin signs in: the dashboard.
    sign_in(&b, &base, &format!("root@{DOMAIN}")).await;
    b.find("[data-test^=\"node-row-\"]").await;
    shows(&b, "Ready").await;
    b.screenshot("01-dashboard").await;

    // A domain and a user, made in the browser.
    b.click_test("nav-domains").await;
    b.fill("domain-name-input", "shop.test").await;
    b.click_test("domain-create").await;
    b.test_id("domain-row-shop.test").await;
    b.screenshot("02-domains").await;
    b.click_test("nav-users").await;
    b.fill("user-address-input", "dave@shop.test").await;
    b.fill("user-password-input", PASSWORD).await;
    b.click_test("user-create").await;
    b.test_id("user-row-dave@shop.test").await;
    b.screenshot("03-users").await;
    let (status, _) = api(&server, &key, Method::GET, "/users/dave@shop.test", None).await;
    assert_eq!(status, 200, "the user exists through the API");

    // Mail for dave over SMTP: a hostile one and a plain one; another for bob.
    let subject = format!(
        "<img src=x onerror=\"fetch('http://127.0.0.1:{}/subject')\"> invoice",
        probe.port
    );
    assert_eq!(
        deliver(&server, "dave@shop.test", &subject, &hostile).await,
        250
    );
    assert_eq!(
        deliver(&server, "dave@shop.test", "Plain note", "<p>plain</p>").await,
        250
    );
    assert_eq!(
        deliver(
            &server,
            &format!("bob@{DOMAIN}"),
            "For bob only",
            "<p>bob</p>"
        )
        .await,
        250
    );
    let (_, listed) = api(
        &server,
        &key,
        Method::GET,
        "/messages?user=dave@shop.test",
        None,
    )
    .await;
    let ids: Vec<i64> = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids.len(), 2, "{listed}");
    let hostile_id = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["subject"].as_str().unwrap_or("").contains("invoice"))
        .unwrap()["id"]
        .as_i64()
        .unwrap();

    // The admin sees it appear in the mail list, and opens it.
    b.click_test("nav-mail").await;
    b.test_id(&format!("message-row-{hostile_id}")).await;
    b.screenshot("04-mail-list").await;
    b.click_test(&format!("message-link-{hostile_id}")).await;
    let shown = b.test_id("message-subject").await;
    let text = b.text(&shown).await;
    assert!(
        text.contains("<img src=x onerror="),
        "the subject is shown as text: {text}"
    );
    let frame = b.test_id("message-html-frame").await;
    let sandbox = b
        .script(
            "return document.querySelector('[data-test=\"message-html-frame\"]').getAttribute('sandbox');",
            vec![],
        )
        .await;
    assert_eq!(sandbox, "", "the frame is sandboxed with no permission");
    b.frame(Some(&frame)).await;
    let body = b.find("body").await;
    assert!(b.text(&body).await.contains("Hello Dave"));
    b.frame(None).await;
    // What the frame was given: sanitized, and under a sandboxing policy.
    let served = b
        .script(
            "const id = arguments[0]; const done = arguments[arguments.length - 1];
             return fetch('/api/v1/messages/' + id + '/html').then(async r =>
               [r.headers.get('content-security-policy'), await r.text()]);",
            vec![json!(hostile_id)],
        )
        .await;
    let policy = served[0].as_str().unwrap();
    let html = served[1].as_str().unwrap();
    assert!(
        policy.contains("sandbox") && policy.contains("default-src 'none'"),
        "{policy}"
    );
    for gone in ["<script", "onerror", "onload", "javascript:", "pixel.gif"] {
        assert!(!html.contains(gone), "{gone} served: {html}");
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    b.screenshot("05-message-hostile").await;
    assert!(
        probe.hits().is_empty(),
        "a payload ran or fetched: {:?}",
        probe.hits()
    );
    // The same payload on a page of its own does call the probe: the check above can
    // see a payload that runs.
    b.goto(&format!("http://127.0.0.1:{}/control", probe.port))
        .await;
    let ran = common::eventually(Duration::from_secs(10), || async {
        let hits = probe.hits();
        ["/script", "/onerror", "/pixel.gif"]
            .iter()
            .all(|p| hits.iter().any(|h| h == p))
    });
    assert!(
        ran.await,
        "the control page's payload did not run: {:?}",
        probe.hits()
    );

    // The queue: a message to a remote address waits (its server is down); retried
    // and deleted in the browser.
    let (status, sent) = api(
        &server,
        &key,
        Method::POST,
        "/send",
        Some(json!({"from": format!("bob@{DOMAIN}"), "to": ["friend@remote.test"], "subject": "queued", "text": "hi"})),
    )
    .await;
    assert!(status == 202 || status == 200, "{sent}");
    let queued = common::eventually(Duration::from_secs(10), || async {
        let (_, q) = api(&server, &key, Method::GET, "/queue", None).await;
        q["data"].as_array().is_some_and(|d| !d.is_empty())
    });
    assert!(queued.await);
    let (_, q) = api(&server, &key, Method::GET, "/queue", None).await;
    let entry = q["data"][0]["id"].as_str().unwrap().to_string();
    // Back from the control page: still signed in.
    b.goto(&format!("{base}/admin/")).await;
    b.test_id("signout").await;
    b.click_test("nav-queue").await;
    b.click_test(&format!("queue-retry-{entry}")).await;
    shows(&b, "is due now").await;
    b.screenshot("06-queue").await;

    // Forged posts to the same change from other pages: of the same site (the cookie
    // goes along, the CSRF token cannot) and of another site (no cookie at all).
    let target = format!("{base}/api/v1/queue/{entry}/retry");
    for host in ["127.0.0.1", "localhost"] {
        b.goto(&format!(
            "http://{host}:{}/forge?target={target}",
            probe.port
        ))
        .await;
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let route = "/api/v1/queue/{id}/retry";
    let answered: Vec<u64> = server
        .log_lines()
        .iter()
        .filter(|l| l["event"] == "request" && l["method"] == "POST" && l["route"] == route)
        .map(|l| l["status"].as_u64().unwrap())
        .collect();
    assert_eq!(
        answered,
        [204, 403, 403, 401, 401],
        "the UI's retry, then the same-site forgeries (cookie, no token), then the \
         cross-site ones (no cookie)"
    );
    let refused = server.audit_file_events("auth.csrf");
    assert_eq!(refused.len(), 2, "{refused:?}");
    assert_eq!(refused[0]["details"]["reason"], "request from another site");
    b.goto(&format!("{base}/admin/#/queue")).await;
    b.click_test(&format!("queue-delete-{entry}")).await;
    b.click_test("confirm-yes").await;
    let gone = common::eventually(Duration::from_secs(10), || async {
        api(&server, &key, Method::GET, "/queue", None).await.1["data"] == json!([])
    });
    assert!(gone.await, "the entry deleted from the browser");
    let history = server.audit_file_events("queue.delete");
    assert_eq!(history.len(), 1, "{history:?}");
    assert_eq!(history[0]["actor"], format!("web:root@{DOMAIN}"));

    // An API key: made in the browser (its secret shown once), then revoked there.
    b.click_test("nav-keys").await;
    b.fill("key-name-input", "from-the-browser").await;
    b.click_test("key-scope-read").await;
    b.click_test("key-create").await;
    let secret = b.test_id("key-secret").await;
    let secret = b.text(&secret).await;
    assert!(secret.starts_with("mr_"), "{secret}");
    assert_eq!(
        api(&server, &secret, Method::GET, "/domains", None).await.0,
        200
    );
    b.screenshot("07-keys").await;
    let (_, keys) = api(&server, &key, Method::GET, "/api-keys", None).await;
    let made = keys["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "from-the-browser")
        .unwrap()["id"]
        .clone();
    b.click_test(&format!("key-revoke-{made}")).await;
    b.click_test("confirm-yes").await;
    let revoked = common::eventually(Duration::from_secs(10), || async {
        api(&server, &secret, Method::GET, "/domains", None).await.0 == 401
    });
    assert!(revoked.await, "the key revoked from the browser");

    // The other pages render.
    for (nav, shot) in [("nav-hooks", "08-hooks"), ("nav-audit", "09-audit")] {
        b.click_test(nav).await;
        b.test_id("page-title").await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        b.screenshot(shot).await;
    }

    // Sign out; dave signs in and sees his own mail only, on a narrow screen too.
    b.goto(&format!("{base}/admin/")).await;
    b.click_test("signout").await;
    b.test_id("signin-form").await;
    sign_in(&b, &base, "dave@shop.test").await;
    assert!(
        b.find_within("[data-test=\"nav-domains\"]", Duration::from_millis(500))
            .await
            .is_none(),
        "a user sees no admin page"
    );
    for id in &ids {
        b.test_id(&format!("message-row-{id}")).await;
    }
    shows(&b, "Plain note").await;
    let rows = b
        .script(
            "return document.querySelectorAll('[data-test^=\"message-row-\"]').length;",
            vec![],
        )
        .await;
    assert_eq!(rows, 2, "dave sees his two messages and not bob's");
    assert!(
        !b.script("return document.body.innerText;", vec![])
            .await
            .as_str()
            .unwrap()
            .contains("For bob only")
    );
    b.screenshot("10-user-mail").await;
    b.set_size(375, 800).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let fits = b
        .script(
            "return document.documentElement.scrollWidth <= window.innerWidth + 1;",
            vec![],
        )
        .await;
    assert_eq!(fits, true, "the page fits a narrow screen");
    b.screenshot("11-user-mail-narrow").await;

    // Swagger UI, from the binary.
    b.set_size(1280, 900).await;
    b.goto(&format!("{base}/api/v1/docs/")).await;
    shows(&b, "MaiRust API").await;
    b.screenshot("12-api-docs").await;

    println!("screenshots:");
    for shot in &b.taken {
        println!("  {}", shot.display());
    }
}

#[tokio::test]
async fn an_ended_session_brings_the_sign_in_form_back() {
    if !browser_available() {
        return;
    }
    let server = TestServer::start_with(Options::with_yaml(
        "api:\n  sessions:\n    lifetime_seconds: 3\n",
    ));
    add_admin(&server);
    let base = format!("http://{}", server.http);
    let mut b = Browser::start(1280, 900, &shots_dir()).await;
    sign_in(&b, &base, &format!("root@{DOMAIN}")).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    // Whether the page noticed on its own or on this next request: sign in again.
    b.script("location.hash = '#/domains'; return true;", vec![])
        .await;
    b.test_id("signin-form").await;
    b.screenshot("13-session-ended").await;
    // Wrong password: the API's message, shown to the user.
    b.fill("signin-address", &format!("root@{DOMAIN}")).await;
    b.fill("signin-password", "wrong").await;
    b.click_test("signin-submit").await;
    shows(&b, "wrong address or password").await;
    b.screenshot("14-sign-in-refused").await;
    println!("screenshots:");
    for shot in &b.taken {
        println!("  {}", shot.display());
    }
}
