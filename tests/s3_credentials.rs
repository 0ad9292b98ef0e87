//! S3 credentials from the standard AWS chain when `storage.s3` names no keys (issue
//! 17), against moto: keys from the environment, and EKS Pod Identity (a credential
//! endpoint with a bearer token from a file), served here by a small HTTP endpoint that
//! counts its callers. Keys half-configured are refused; no credentials at all (instance
//! metadata pointed at a closed local port) make `serve` refuse to start.

mod common;

use std::io::Write;
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::moto::Moto;
use common::{Backend, Options, TestServer, deliver_to_bob};

const BUCKET: &str = "chain";

/// `storage.s3` without keys.
fn keyless_yaml(moto: &Moto) -> String {
    format!(
        "storage:\n  backend: s3\n  s3:\n    bucket: {BUCKET}\n    endpoint: {}\n    region: us-east-1\n    allow_http: true\n    prefix: p\n",
        moto.endpoint()
    )
}

fn server_with(moto: &Moto, env: Vec<(String, String)>) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let backend = Backend::new(dir.path());
    TestServer::start_on(
        dir,
        backend,
        Options {
            env,
            ..Options::default()
        },
        Some(keyless_yaml(moto)),
    )
}

/// Stored bodies in the bucket (the identity marker aside).
async fn bodies(moto: &Moto) -> usize {
    moto.keys(BUCKET)
        .await
        .iter()
        .filter(|k| k.ends_with(".eml"))
        .count()
}

#[tokio::test]
async fn keys_from_the_environment() {
    if !Moto::available() {
        return;
    }
    let moto = Moto::start(common::free_port(), BUCKET);
    let server = server_with(
        &moto,
        vec![
            ("AWS_ACCESS_KEY_ID".into(), "from-env".into()),
            ("AWS_SECRET_ACCESS_KEY".into(), "from-env-secret".into()),
            // Not a credential: ignored (how the store is addressed is config.yaml's
            // business); taken, it would send the requests without the bucket in the
            // path and nothing would be stored.
            ("AWS_VIRTUAL_HOSTED_STYLE_REQUEST".into(), "true".into()),
        ],
    );
    assert_eq!(deliver_to_bob(&server, "env@remote.test").await.code, 250);
    assert_eq!(bodies(&moto).await, 1);
}

/// A credential endpoint like EKS Pod Identity's agent: answers temporary keys to a
/// caller that presents the token.
struct CredentialEndpoint {
    url: String,
    calls: Arc<AtomicUsize>,
    tokens: Arc<Mutex<Vec<String>>>,
}

impl CredentialEndpoint {
    fn start() -> CredentialEndpoint {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/v1/credentials", listener.local_addr().unwrap());
        let calls = Arc::new(AtomicUsize::new(0));
        let tokens = Arc::new(Mutex::new(Vec::new()));
        let (counted, seen) = (calls.clone(), tokens.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { break };
                let Some(request) = common::http::read_request(stream.try_clone().unwrap()) else {
                    continue;
                };
                counted.fetch_add(1, Ordering::SeqCst);
                seen.lock().unwrap().push(request.header("authorization"));
                let body = format!(
                    r#"{{"AccessKeyId":"from-pod-identity","SecretAccessKey":"pod-secret","Token":"pod-session","Expiration":"{}"}}"#,
                    (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339()
                );
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        CredentialEndpoint { url, calls, tokens }
    }
}

#[tokio::test]
async fn eks_pod_identity_credentials() {
    if !Moto::available() {
        return;
    }
    let moto = Moto::start(common::free_port(), BUCKET);
    let endpoint = CredentialEndpoint::start();
    let token_dir = tempfile::tempdir().unwrap();
    let token_file = token_dir.path().join("token");
    std::fs::write(&token_file, "pod-token-123").unwrap();
    let server = server_with(
        &moto,
        vec![
            (
                "AWS_CONTAINER_CREDENTIALS_FULL_URI".into(),
                endpoint.url.clone(),
            ),
            (
                "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE".into(),
                token_file.display().to_string(),
            ),
        ],
    );
    assert_eq!(deliver_to_bob(&server, "pod@remote.test").await.code, 250);
    assert_eq!(bodies(&moto).await, 1);
    assert!(
        endpoint.calls.load(Ordering::SeqCst) >= 1,
        "credentials never fetched"
    );
    assert!(
        endpoint
            .tokens
            .lock()
            .unwrap()
            .iter()
            .all(|t| t == "pod-token-123"),
        "{:?}",
        endpoint.tokens.lock().unwrap()
    );
}

#[tokio::test]
async fn no_credentials_anywhere_refuses_to_start_and_half_keys_are_refused() {
    if !Moto::available() {
        return;
    }
    let moto = Moto::start(common::free_port(), BUCKET);
    // Instance metadata is the chain's last resort: pointed at a closed local port.
    let server = TestServer::prepare_on(
        Options {
            env: vec![("AWS_METADATA_ENDPOINT".into(), "http://127.0.0.1:9".into())],
            ..Options::default()
        },
        keyless_yaml(&moto),
    );
    let (status, output) = server.spawn_refused(Duration::from_secs(60));
    assert!(!status.success(), "{output}");
    assert!(output.contains("object store"), "{output}");
    // The chain ended at instance metadata (IMDSv2 asks for a session token first).
    assert!(output.contains("127.0.0.1:9/latest/api/token"), "{output}");
    assert_eq!(bodies(&moto).await, 0);

    // One key without the other: a configuration error naming both.
    let keyless = std::fs::read_to_string(&server.config_path).unwrap();
    let half = keyless.replace(
        "    allow_http: true\n",
        "    allow_http: true\n    access_key_id: only-one\n",
    );
    std::fs::write(&server.config_path, half).unwrap();
    let out = server.cli(&["config-check"], None);
    assert!(!out.status.success());
    assert!(
        common::output(&out).contains("set both access_key_id and secret_access_key"),
        "{}",
        common::output(&out)
    );
}
