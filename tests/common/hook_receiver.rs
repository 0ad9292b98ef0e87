//! A real local HTTP server standing for a hook: it checks every request's HMAC
//! signature with the shared secret, records what it got, and answers from a script
//! (status, JSON body, delay, a redirect, a body without a length).

use std::collections::VecDeque;
use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

#[derive(Debug, Clone)]
pub struct Call {
    pub hook: String,
    pub signature_ok: bool,
    pub body: serde_json::Value,
}

/// YAML that lets hooks reach this receiver: the default `hook_policy` refuses
/// loopback targets.
pub const ALLOW_LOOPBACK: &str = "hook_policy:\n  allowed_networks: [127.0.0.0/8]\n";

#[derive(Clone)]
pub struct Answer {
    pub status: u16,
    pub body: String,
    pub delay: Duration,
    /// A `Location` header.
    pub location: Option<String>,
    /// No `Content-Length`: the body ends when the connection closes.
    pub no_length: bool,
    /// Keeps the connection open for the next request instead of closing it.
    pub keep_alive: bool,
}

impl Answer {
    pub fn json(body: serde_json::Value) -> Self {
        Answer {
            status: 200,
            body: body.to_string(),
            delay: Duration::ZERO,
            location: None,
            no_length: false,
            keep_alive: false,
        }
    }

    /// A 307 to `url` (which would keep the method and the body).
    pub fn redirect(url: &str) -> Self {
        Answer {
            status: 307,
            body: String::new(),
            location: Some(url.to_string()),
            ..Answer::json(serde_json::json!({}))
        }
    }
}

#[derive(Default)]
struct State {
    calls: Vec<Call>,
    script: VecDeque<Answer>,
    /// When the script is used up.
    default: Option<Answer>,
    /// Connections accepted.
    connections: usize,
}

pub struct HookReceiver {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl HookReceiver {
    pub fn start(secret: &str) -> HookReceiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let (st, secret) = (state.clone(), secret.to_string());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                st.lock().unwrap().connections += 1;
                let (st, secret) = (st.clone(), secret.clone());
                std::thread::spawn(move || {
                    let mut out = stream.try_clone().unwrap();
                    let mut reader = std::io::BufReader::new(stream);
                    // One request per connection, unless the answer keeps it alive.
                    while let Some(request) = super::http::read_request_from(&mut reader) {
                        let get = |name: &str| request.header(name);
                        let body = &request.body;
                        let (hook, timestamp) = (get("x-mairust-hook"), get("x-mairust-timestamp"));
                        let mut mac =
                            <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).unwrap();
                        mac.update(
                            format!("{timestamp}\n{hook}\n{}", hex(&Sha256::digest(body)))
                                .as_bytes(),
                        );
                        let expected = format!("sha256={}", hex(&mac.finalize().into_bytes()));
                        let answer = {
                            let mut s = st.lock().unwrap();
                            s.calls.push(Call {
                                hook,
                                signature_ok: get("x-mairust-signature") == expected,
                                body: serde_json::from_slice(body).unwrap_or_default(),
                            });
                            s.script
                                .pop_front()
                                .or_else(|| s.default.clone())
                                .unwrap_or_else(|| {
                                    Answer::json(serde_json::json!({"action": "allow"}))
                                })
                        };
                        std::thread::sleep(answer.delay);
                        let mut head = format!(
                            "HTTP/1.1 {} X\r\nContent-Type: application/json\r\n",
                            answer.status
                        );
                        if !answer.keep_alive {
                            head.push_str("Connection: close\r\n");
                        }
                        if let Some(location) = &answer.location {
                            head.push_str(&format!("Location: {location}\r\n"));
                        }
                        if !answer.no_length {
                            head.push_str(&format!("Content-Length: {}\r\n", answer.body.len()));
                        }
                        let _ = write!(out, "{head}\r\n{}", answer.body);
                        if !answer.keep_alive {
                            break;
                        }
                    }
                });
            }
        });
        HookReceiver { addr, state }
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    pub fn script(&self, answers: &[Answer]) {
        self.state
            .lock()
            .unwrap()
            .script
            .extend(answers.iter().cloned());
    }

    pub fn always(&self, answer: Answer) {
        self.state.lock().unwrap().default = Some(answer);
    }

    pub fn calls(&self) -> Vec<Call> {
        self.state.lock().unwrap().calls.clone()
    }

    /// How many connections the hooks opened to it.
    pub fn connections(&self) -> usize {
        self.state.lock().unwrap().connections
    }
}
