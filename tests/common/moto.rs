//! A private moto_server (PyPI `moto[server]`, the S3 stand-in) for tests that stop
//! "S3" or need a bucket nobody else uses; killed when dropped.

use std::time::{Duration, Instant};

pub struct Moto {
    child: std::process::Child,
    pub port: u16,
}

fn program() -> String {
    std::env::var("MAIRUST_TEST_MOTO_SERVER").unwrap_or_else(|_| "moto_server".into())
}

impl Moto {
    /// Whether moto_server can be run; a test without it is skipped, except in CI
    /// (`.ci/run` installs it), where that fails.
    pub fn available() -> bool {
        let found = std::process::Command::new(program())
            .arg("--help")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok();
        super::tool_available(found, "moto_server", "pip install 'moto[server]'")
    }

    /// Starts moto_server on `port` (`MAIRUST_TEST_MOTO_SERVER` or `moto_server` on
    /// PATH) and creates `bucket` (again, when restarted on the same port).
    pub fn start(port: u16, bucket: &str) -> Moto {
        let child = super::die_with_test(&mut std::process::Command::new(program()))
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("moto_server on PATH");
        // Owned before anything can panic: dropping it kills the server.
        let moto = Moto { child, port };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "moto_server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        let url = format!("http://127.0.0.1:{port}/{bucket}");
        super::block_on(async move {
            reqwest::Client::new()
                .put(url)
                .send()
                .await
                .expect("create bucket");
        });
        moto
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The keys of the objects in `bucket` (moto answers unsigned listings).
    pub async fn keys(&self, bucket: &str) -> Vec<String> {
        let xml = reqwest::get(format!("{}/{bucket}?list-type=2", self.endpoint()))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        xml.split("<Key>")
            .skip(1)
            .filter_map(|s| s.split_once("</Key>").map(|(k, _)| k.to_string()))
            .collect()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
