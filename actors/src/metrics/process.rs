//! Process metrics in the names Prometheus client libraries use
//! (`process_cpu_seconds_total`, `process_resident_memory_bytes`,
//! `process_virtual_memory_bytes`, `process_open_fds`, `process_max_fds`,
//! `process_start_time_seconds`), plus what the seed's scaling triggers divide by:
//! `mairust_cpu_cores` (the cores this process may use) and
//! `mairust_memory_limit_bytes` (its cgroup's memory limit, else the machine's memory).
//! Read from `/proc` at each scrape ([`ProcessMetrics::refresh`]).

use prometheus::{Counter, Gauge, IntGauge, Opts, Registry};

use super::{gauge, register};

pub struct ProcessMetrics {
    /// One refresh at a time: two scrapes at once would both add the same CPU delta.
    refreshing: std::sync::Mutex<()>,
    cpu_seconds: Counter,
    resident_bytes: IntGauge,
    virtual_bytes: IntGauge,
    open_fds: IntGauge,
    max_fds: IntGauge,
    start_time: Gauge,
    cpu_cores: IntGauge,
    memory_limit: IntGauge,
}

impl ProcessMetrics {
    pub fn new(registry: &Registry) -> Self {
        let cpu_seconds = register(
            registry,
            Counter::with_opts(Opts::new(
                "process_cpu_seconds_total",
                "User and system CPU time spent by this process, in seconds",
            ))
            .expect("valid metric"),
        );
        let start_time = register(
            registry,
            Gauge::with_opts(Opts::new(
                "process_start_time_seconds",
                "When this process started, in seconds since the Unix epoch",
            ))
            .expect("valid metric"),
        );
        let m = ProcessMetrics {
            refreshing: std::sync::Mutex::new(()),
            cpu_seconds,
            resident_bytes: gauge(
                registry,
                "process_resident_memory_bytes",
                "Resident memory of this process, in bytes",
            ),
            virtual_bytes: gauge(
                registry,
                "process_virtual_memory_bytes",
                "Virtual memory of this process, in bytes",
            ),
            open_fds: gauge(
                registry,
                "process_open_fds",
                "Open file descriptors of this process (sockets included)",
            ),
            max_fds: gauge(
                registry,
                "process_max_fds",
                "The process's open-files limit (soft)",
            ),
            start_time,
            cpu_cores: gauge(
                registry,
                "mairust_cpu_cores",
                "CPU cores this process may use (affinity and cgroup quota taken into account)",
            ),
            memory_limit: gauge(
                registry,
                "mairust_memory_limit_bytes",
                "Memory this process may use: its cgroup's limit, else the machine's memory",
            ),
        };
        m.refresh();
        m
    }

    /// Reads `/proc` again. Values that cannot be read keep their last value.
    pub fn refresh(&self) {
        let _one = self.refreshing.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(stat) = read_stat() {
            let total = stat.cpu_seconds;
            let counted = self.cpu_seconds.get();
            if total > counted {
                self.cpu_seconds.inc_by(total - counted);
            }
            self.resident_bytes.set(stat.resident_bytes);
            self.virtual_bytes.set(stat.virtual_bytes);
            if let Some(start) = stat.start_time {
                self.start_time.set(start);
            }
        }
        if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
            // The directory handle read_dir holds is one of them.
            self.open_fds.set(dir.count().saturating_sub(1) as i64);
        }
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes into the local struct it is given.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
            self.max_fds
                .set(i64::try_from(limit.rlim_cur).unwrap_or(i64::MAX));
        }
        if let Ok(n) = std::thread::available_parallelism() {
            self.cpu_cores.set(n.get() as i64);
        }
        if let Some(bytes) = memory_limit() {
            self.memory_limit.set(bytes);
        }
    }
}

struct Stat {
    cpu_seconds: f64,
    resident_bytes: i64,
    virtual_bytes: i64,
    start_time: Option<f64>,
}

/// `/proc/self/stat` (fields after the command name, which may hold spaces and ')').
fn read_stat() -> Option<Stat> {
    let text = std::fs::read_to_string("/proc/self/stat").ok()?;
    parse_stat(&text, ticks_per_second(), page_size(), boot_time())
}

fn parse_stat(text: &str, ticks: f64, page: i64, boot: Option<f64>) -> Option<Stat> {
    let after = &text[text.rfind(')')? + 1..];
    // Field 3 (state) is the first after the command name.
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<f64>().ok());
    let (utime, stime) = (field(14)?, field(15)?);
    Some(Stat {
        cpu_seconds: (utime + stime) / ticks,
        virtual_bytes: field(23)? as i64,
        resident_bytes: field(24)? as i64 * page,
        start_time: boot.zip(field(22)).map(|(b, s)| b + s / ticks),
    })
}

fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

fn page_size() -> i64 {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 { p as i64 } else { 4096 }
}

/// `btime` of `/proc/stat`: when the machine booted, in seconds since the epoch.
fn boot_time() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// The cgroup v2 `memory.max` of this process (`max`: none), else `MemTotal`.
fn memory_limit() -> Option<i64> {
    let cgroup = std::fs::read_to_string("/proc/self/cgroup").ok();
    let limit = cgroup
        .as_deref()
        .and_then(|c| c.lines().find_map(|l| l.strip_prefix("0::")))
        .and_then(|path| {
            std::fs::read_to_string(format!("/sys/fs/cgroup{}/memory.max", path.trim())).ok()
        })
        .and_then(|v| v.trim().parse::<i64>().ok());
    limit.or_else(|| {
        let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
        let kb: i64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        Some(kb * 1024)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_spaces_and_parens_in_the_name() {
        // pid (comm) state ppid ... utime=14 stime=15 ... starttime=22 vsize=23 rss=24
        let mut fields: Vec<String> = (3..=52).map(|n| n.to_string()).collect();
        fields[14 - 3] = "250".into();
        fields[15 - 3] = "150".into();
        fields[22 - 3] = "1000".into();
        fields[23 - 3] = "8192000".into();
        fields[24 - 3] = "300".into();
        let text = format!("4242 (my (odd) name) {}\n", fields.join(" "));
        let s = parse_stat(&text, 100.0, 4096, Some(1_700_000_000.0)).unwrap();
        assert_eq!(s.cpu_seconds, 4.0);
        assert_eq!(s.virtual_bytes, 8_192_000);
        assert_eq!(s.resident_bytes, 300 * 4096);
        assert_eq!(s.start_time, Some(1_700_000_010.0));
        assert!(parse_stat("garbage", 100.0, 4096, None).is_none());
    }

    #[test]
    fn this_process_reads() {
        let s = read_stat().unwrap();
        assert!(s.resident_bytes > 0 && s.virtual_bytes >= s.resident_bytes);
        assert!(memory_limit().unwrap() > 0);
    }
}
