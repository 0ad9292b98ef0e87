//! A real rspamd (Debian package `rspamd`) for the tests, on a small configuration of
//! its own written into a temporary directory, started in the foreground and killed
//! when dropped.
//!
//! The packaged `/etc/rspamd/rspamd.conf` is not used: even with its network modules
//! turned off it loads maps from `maps.rspamd.com` (multimap's freemail lists, `mid`,
//! `mime_types`, whitelists, phishing feeds) and rules from `updates.rspamd.com`. This
//! configuration (`rspamadm configtest` accepts it, and `rspamadm configdump` shows no
//! URL but in regular expressions) holds:
//! - rspamd's core: the GTUBE patterns, with `enable_test_patterns` (`XJS…` → `reject`,
//!   `YJS…` → `add header`, `ZJS…` → `rewrite subject`, `AJS…` → `no action`);
//! - its own Lua rules, `$RULESDIR/rspamd.lua` (header, MIME, Message-ID and subject
//!   checks that read only the message), run by the one C module kept,
//!   `filters = "regexp"`;
//! - rspamd's default thresholds `reject = 15` and `add_header = 6` (no `greylist`
//!   threshold, so a test message is never greylisted by its score);
//! - one `normal` worker on a free loopback port;
//! - a test rule, `rspamd.local.lua` (loaded by `rspamd.lua` from `LOCAL_CONFDIR`,
//!   here the temporary directory): a message with `X-MaiRust-Test-Action: soft
//!   reject` or `greylist` gets that action, and one with `envelope` gets `soft
//!   reject` with the envelope rspamd was given as its SMTP message
//!   (`envelope ip=… helo=… from=… rcpt=…,… user=… queue_id=…`).
//!
//! Left out, so nothing asks a server anywhere:
//! - every Lua plugin (`modules.d`: rbl, surbl, spf, dkim, dmarc, arc, fuzzy_check,
//!   multimap, rspamd_update, phishing, mx_check, asn, reputation, neural, ratelimit,
//!   greylist, replies, …): there is no `modules` section, so none is loaded;
//! - the C modules `chartable`, `dkim` and `fuzzy_check` (not in `filters`);
//! - statistics (Bayes needs Redis), and the controller, proxy and fuzzy workers.
//!
//! Nothing kept resolves names; DNS still points at `127.0.0.1:9`, where nobody
//! answers, so a lookup added by a later rspamd fails at once instead of reaching out.
//! The compiled expressions are cached under the target directory, so only the first
//! start of a run pays for them.

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The test rule (see the module's text).
const TEST_RULE: &str = r#"local function addresses(list)
  local out = {}
  for _, a in ipairs(list or {}) do
    out[#out + 1] = a.addr
  end
  return table.concat(out, ',')
end

rspamd_config:register_symbol{
  name = 'MAIRUST_TEST_ACTION',
  type = 'prefilter',
  priority = 10,
  callback = function(task)
    local wanted = task:get_header('X-MaiRust-Test-Action')
    if wanted == 'soft reject' or wanted == 'greylist' then
      task:set_pre_result(wanted, 'the test rule asks for ' .. wanted, 'mairust_test')
    elseif wanted == 'envelope' then
      local said = string.format('envelope ip=%s helo=%s from=%s rcpt=%s user=%s queue_id=%s',
        tostring(task:get_from_ip()), task:get_helo() or '-',
        addresses(task:get_from('smtp')), addresses(task:get_recipients('smtp')),
        task:get_user() or '-', task:get_queue_id() or '-')
      task:set_pre_result('soft reject', said, 'mairust_test')
    end
  end,
}
"#;

pub struct Rspamd {
    pub addr: SocketAddr,
    /// Taken by the first [`Rspamd::kill`]: its group is never signalled twice.
    child: Option<Child>,
    _dir: tempfile::TempDir,
}

impl Rspamd {
    /// Starts rspamd; `None` when it is not installed outside CI (`.ci/run` installs
    /// it, and there its absence fails the test).
    pub fn start() -> Option<Rspamd> {
        let found = Command::new("rspamd").arg("--version").output().is_ok();
        if !super::tool_available(found, "rspamd", "Debian package rspamd") {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let port = super::free_port();
        // The compiled expressions are kept between runs; everything else an instance
        // writes stays in its own directory.
        let cache = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("rspamd-hs-cache");
        std::fs::create_dir_all(&cache).unwrap();
        let config = dir.path().join("rspamd.conf");
        std::fs::write(
            &config,
            format!(
                r#"options {{
  pidfile = "{dir}/rspamd.pid";
  filters = "regexp";
  enable_test_patterns = true;
  hs_cache_dir = "{cache}";
  dns {{
    nameserver = ["127.0.0.1:9"];
    timeout = 0.5s;
    retransmits = 1;
  }}
}}
logging {{
  type = "console";
  level = "error";
}}
actions {{
  reject = 15;
  add_header = 6;
}}
lua = "$RULESDIR/rspamd.lua";
worker "normal" {{
  bind_socket = "127.0.0.1:{port}";
  count = 1;
}}
"#,
                dir = dir.path().display(),
                cache = cache.display(),
            ),
        )
        .unwrap();
        std::fs::write(dir.path().join("rspamd.local.lua"), TEST_RULE).unwrap();
        // The packaged directories are not read: every path rspamd derives from these
        // variables is inside the temporary directory.
        let var = |k: &str| format!("--var={k}={}", dir.path().display());
        use std::os::unix::process::CommandExt;
        let child = Command::new("rspamd")
            .arg("-f")
            .arg("-i")
            .arg("-c")
            .arg(&config)
            .args(["LOCAL_CONFDIR", "DBDIR", "RUNDIR", "LOGDIR"].map(var))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group: the workers it forks are stopped with it.
            .process_group(0)
            .spawn()
            .expect("start rspamd");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let mut rspamd = Rspamd {
            addr,
            child: Some(child),
            _dir: dir,
        };
        // The first start of a run compiles the rules' expressions (seconds); later
        // starts find them in the cache.
        let deadline = Instant::now() + Duration::from_secs(180);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if let Some(Ok(Some(status))) = rspamd.child.as_mut().map(|c| c.try_wait()) {
                panic!(
                    "rspamd exited at start ({status}): check the configuration with `rspamadm configtest -c` on what this helper writes"
                );
            }
            assert!(
                Instant::now() < deadline,
                "rspamd did not listen within 180 s"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        Some(rspamd)
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops it and its workers now (a dead scanner): SIGTERM to the group, SIGKILL
    /// after 5 s.
    pub fn kill(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let group = -(child.id() as i32);
        // SAFETY: signals to the process group this harness started.
        unsafe { libc::kill(group, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // SAFETY: as above; the group's leader is not reaped yet, so its id is ours.
        unsafe { libc::kill(group, libc::SIGKILL) };
        let _ = child.wait();
    }
}

impl Drop for Rspamd {
    fn drop(&mut self) {
        self.kill();
    }
}
