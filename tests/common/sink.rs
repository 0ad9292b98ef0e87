//! An in-test SMTP server standing for "the rest of the Internet": it records every
//! message it accepts and answers RCPT and the end of DATA from a script, so tests can
//! make a remote server refuse, defer or accept.

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One message the sink accepted.
#[derive(Debug, Clone)]
pub struct Received {
    pub from: String,
    pub rcpts: Vec<String>,
    /// Data as sent, dot-unstuffed, without the final `.` line.
    pub data: Vec<u8>,
}

impl Received {
    pub fn message_id(&self) -> Option<String> {
        let text = String::from_utf8_lossy(&self.data);
        text.lines()
            .find_map(|l| {
                l.strip_prefix("Message-ID:")
                    .or_else(|| l.strip_prefix("Message-Id:"))
            })
            .map(|v| v.trim().trim_matches(['<', '>']).to_string())
    }
}

#[derive(Default)]
struct State {
    /// Replies to RCPT per recipient, used up in order; then `250`.
    rcpt_script: HashMap<String, VecDeque<String>>,
    /// Replies to the end of DATA, used up in order; then `250`.
    data_script: VecDeque<String>,
    received: Vec<Received>,
    /// Every RCPT seen, accepted or not.
    rcpt_attempts: Vec<String>,
    /// Wait before answering the end of DATA (a slow remote server).
    data_delay: Duration,
    /// Bodies fully received, answered or not.
    data_started: usize,
}

pub struct Sink {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    pub connections: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Sink {
    pub fn start() -> Sink {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind sink");
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let connections = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        {
            let (state, connections, stop) = (state.clone(), connections.clone(), stop.clone());
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::Acquire) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    connections.fetch_add(1, Ordering::AcqRel);
                    let state = state.clone();
                    std::thread::spawn(move || {
                        let _ = serve(stream, &state);
                    });
                }
            });
        }
        Sink {
            addr,
            state,
            connections,
            stop,
        }
    }

    /// `delivery.routes` entry sending `domain` here.
    pub fn route_yaml(&self, domains: &[&str]) -> String {
        let mut s = String::from("delivery:\n  routes:\n");
        for d in domains {
            s.push_str(&format!("    {d}: {}\n", self.addr));
        }
        s
    }

    /// The next replies to `RCPT TO:<rcpt>`, in order (e.g. `451 4.3.0 busy`).
    pub fn script_rcpt(&self, rcpt: &str, replies: &[&str]) {
        self.state
            .lock()
            .unwrap()
            .rcpt_script
            .entry(rcpt.to_string())
            .or_default()
            .extend(replies.iter().map(|r| r.to_string()));
    }

    pub fn script_data(&self, replies: &[&str]) {
        self.state
            .lock()
            .unwrap()
            .data_script
            .extend(replies.iter().map(|r| r.to_string()));
    }

    /// Makes the sink wait this long before answering each message's final dot.
    pub fn set_data_delay(&self, delay: Duration) {
        self.state.lock().unwrap().data_delay = delay;
    }

    /// Messages whose data arrived (answered or still being answered).
    pub fn data_started(&self) -> usize {
        self.state.lock().unwrap().data_started
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.lock().unwrap().received.clone()
    }

    /// The message with the header field `Subject: {subject}`, waiting up to 10 s.
    pub fn with_subject(&self, subject: &str) -> Received {
        let wanted = format!("Subject: {subject}\r\n");
        for _ in 0..500 {
            if let Some(m) = self
                .received()
                .into_iter()
                .find(|m| String::from_utf8_lossy(&m.data).contains(&wanted))
            {
                return m;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        panic!("{subject} never reached the remote server");
    }

    pub fn count(&self) -> usize {
        self.state.lock().unwrap().received.len()
    }

    pub fn rcpt_attempts(&self, rcpt: &str) -> usize {
        self.state
            .lock()
            .unwrap()
            .rcpt_attempts
            .iter()
            .filter(|r| *r == rcpt)
            .count()
    }

    /// Waits until at least `n` messages arrived; false after `timeout`.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.count() >= n {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.count() >= n
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}

fn serve(stream: TcpStream, state: &Mutex<State>) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut out = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    out.write_all(b"220 sink.test ESMTP test sink\r\n")?;
    let mut from: Option<String> = None;
    let mut rcpts: Vec<String> = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let command = line.trim_end().to_string();
        let upper = command.to_ascii_uppercase();
        let reply: String = if upper.starts_with("EHLO") {
            "250-sink.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SIZE 10485760".into()
        } else if upper.starts_with("HELO") {
            "250 sink.test".into()
        } else if upper.starts_with("MAIL FROM:") {
            from = Some(path(&command[10..]));
            rcpts.clear();
            "250 2.1.0 OK".into()
        } else if upper.starts_with("RCPT TO:") {
            let rcpt = path(&command[8..]);
            let mut st = state.lock().unwrap();
            st.rcpt_attempts.push(rcpt.clone());
            let reply = st
                .rcpt_script
                .get_mut(&rcpt)
                .and_then(VecDeque::pop_front)
                .unwrap_or_else(|| "250 2.1.5 OK".into());
            if reply.starts_with('2') {
                rcpts.push(rcpt);
            }
            reply
        } else if upper == "DATA" {
            if from.is_none() || rcpts.is_empty() {
                "554 5.5.1 no valid recipients".into()
            } else {
                out.write_all(b"354 go ahead\r\n")?;
                let mut data = Vec::new();
                loop {
                    let mut l = Vec::new();
                    if reader.read_until(b'\n', &mut l)? == 0 {
                        return Ok(());
                    }
                    if l == b".\r\n" {
                        break;
                    }
                    if l.starts_with(b"..") {
                        l.remove(0);
                    }
                    data.extend_from_slice(&l);
                }
                let delay = {
                    let mut st = state.lock().unwrap();
                    st.data_started += 1;
                    st.data_delay
                };
                std::thread::sleep(delay);
                let mut st = state.lock().unwrap();
                let reply = st
                    .data_script
                    .pop_front()
                    .unwrap_or_else(|| "250 2.0.0 accepted".into());
                if reply.starts_with('2') {
                    st.received.push(Received {
                        from: from.take().unwrap_or_default(),
                        rcpts: std::mem::take(&mut rcpts),
                        data,
                    });
                }
                from = None;
                rcpts.clear();
                reply
            }
        } else if upper == "RSET" {
            from = None;
            rcpts.clear();
            "250 2.0.0 OK".into()
        } else if upper == "NOOP" {
            "250 2.0.0 OK".into()
        } else if upper == "QUIT" {
            out.write_all(b"221 2.0.0 bye\r\n")?;
            return Ok(());
        } else {
            "500 5.5.2 unknown command".into()
        };
        out.write_all(reply.as_bytes())?;
        out.write_all(b"\r\n")?;
    }
}

/// `<a@b> SIZE=1` → `a@b`.
fn path(arg: &str) -> String {
    let arg = arg.trim();
    let end = arg.find('>').map(|i| i + 1).unwrap_or(arg.len());
    arg[..end].trim_matches(['<', '>']).to_string()
}
