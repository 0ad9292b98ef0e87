#!/usr/bin/env python3
"""Abuse bench for MaiRust: one fresh server per attack, default limits, one table.

    python3 bench/abuse.py BINARY      (normally run through bench/abuse)

Each attack runs against its own server (loopback ports chosen by the OS, SQLite + fs
in a temporary directory, STARTTLS with a self-signed certificate, JSON logs, an audit
file). Only ports, paths, the domain example.test and the user bob@example.test are
configured, except where a row says otherwise. While an attack runs, a well-behaved
client from 127.0.0.200 delivers a small message to bob on `inbound` over and over; its
whole-transaction latency is reported. Peak RSS is the server's VmHWM at the end of the
attack; "after" is VmRSS a moment after the attackers hung up.

Standard library only; every loop is bounded in count and time; loopback only.
Exit status 0 unless a server could not be started.

Environment: ABUSE_ONLY=auth,data,trickle,noread,authin,api runs a subset;
ABUSE_KEEP=1 keeps the temporary directory (configs, serve.log, audit.log);
ABUSE_TRACE=1 prints each server's RSS over time to standard error.
"""

import base64
import collections
import http.client
import json
import os
import select
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time

PASSWORD = "abuse bench password"
BOB = "bob@example.test"
GOOD_SRC = "127.0.0.200"
SERVERS = []
WORK = None


class StartError(Exception):
    pass


# ---------------------------------------------------------------------------- server


class Server:
    def __init__(self, binary, name, limits=None):
        self.binary = binary
        self.name = name
        self.dir = os.path.join(WORK, name)
        os.makedirs(os.path.join(self.dir, "tls"))
        os.makedirs(os.path.join(self.dir, "spool"))
        self.config = os.path.join(self.dir, "config.yaml")
        self.log_path = os.path.join(self.dir, "serve.log")
        self.audit_path = os.path.join(self.dir, "audit.log")
        lines = [f"    spool_dir: {self.dir}/spool"]
        for k, v in (limits or {}).items():
            lines.append(f"    {k}: {v}")
        d = self.dir
        with open(self.config, "w") as f:
            f.write(
                f"""server:
  hostname: mx.example.test
smtp:
  listeners:
    inbound:
      address: 127.0.0.1:0
    submission:
      address: 127.0.0.1:0
  tls:
    cert_path: {d}/tls/cert.pem
    key_path: {d}/tls/key.pem
    self_signed: true
  limits:
{chr(10).join(lines)}
http:
  address: 127.0.0.1:0
database:
  url: sqlite://{d}/mairust.db?mode=rwc
storage:
  backend: fs
  fs:
    path: {d}/objects
logging:
  level: info
  format: json
mail_auth:
  verify: false
audit:
  path: {self.audit_path}
"""
            )
        self.cli("domain", "add", "example.test")
        self.cli("user", "add", BOB, "--password-stdin", stdin=PASSWORD + "\n")
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [binary, "--config", self.config, "serve"],
            cwd=self.dir,
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        SERVERS.append(self)
        self.ports = {}
        deadline = time.monotonic() + 90
        while True:
            for ev in self.events():
                if ev.get("event") == "listening" and ev.get("listener"):
                    self.ports[ev["listener"]] = int(ev["addr"].rsplit(":", 1)[1])
                if ev.get("event") == "ready":
                    self.baseline = self.status()
                    return
            if self.proc.poll() is not None or time.monotonic() > deadline:
                tail = open(self.log_path, "rb").read()[-2000:].decode(errors="replace")
                self.stop()
                raise StartError(f"server for {name} did not start:\n{tail}")
            time.sleep(0.1)

    def cli(self, *args, stdin=None):
        r = subprocess.run(
            [self.binary, "--config", self.config, *args],
            cwd=self.dir,
            input=(stdin or "").encode(),
            capture_output=True,
            timeout=120,
        )
        if r.returncode != 0:
            raise StartError(f"mairust {' '.join(args)} failed: {r.stderr.decode(errors='replace')}")
        return r.stdout.decode().strip()

    def events(self):
        out = []
        try:
            with open(self.log_path, "rb") as f:
                for line in f:
                    try:
                        out.append(json.loads(line))
                    except ValueError:
                        pass
        except OSError:
            pass
        return out

    def status(self):
        """(VmHWM, VmRSS) in MiB, or (None, None) once the process is gone."""
        try:
            vals = {}
            with open(f"/proc/{self.proc.pid}/status") as f:
                for line in f:
                    k, _, v = line.partition(":")
                    if k in ("VmHWM", "VmRSS"):
                        vals[k] = int(v.split()[0]) / 1024
            return vals.get("VmHWM"), vals.get("VmRSS")
        except OSError:
            return None, None

    def stop(self):
        """SIGTERM (the audit summaries are written at shutdown), SIGKILL after 20 s."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self in SERVERS:
            SERVERS.remove(self)
        self.log.close()


TICK = os.sysconf("SC_CLK_TCK")


def cpu_ticks(path):
    with open(path) as f:
        fields = f.read().rpartition(")")[2].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def cpu_snapshot(pid):
    """(process CPU s, {thread name: CPU s}, s its live threads waited for a CPU, bench CPU s).

    The wait (schedstat run_delay) tells CPU starvation by other work on the host from a
    server that is slow on its own."""
    threads = collections.Counter()
    waited = 0.0
    me = os.times()
    try:
        total = cpu_ticks(f"/proc/{pid}/stat") / TICK
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/comm") as f:
                    name = f.read().strip().rstrip("0123456789").rstrip(":-_ ") or "?"
                threads[name] += cpu_ticks(f"/proc/{pid}/task/{tid}/stat") / TICK
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    waited += int(f.read().split()[1]) / 1e9
            except (OSError, IndexError, ValueError):
                pass
    except OSError:
        total = 0.0
    return total, threads, waited, me[0] + me[1]


def host_cpu():
    """(all jiffies, idle+iowait jiffies) from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return sum(v), v[3] + v[4]


def cpu_text(before, after):
    total = after[0] - before[0]
    diff = collections.Counter({k: v - before[1].get(k, 0) for k, v in after[1].items()})
    top = ", ".join(f"{k} {v:.1f}" for k, v in diff.most_common(3) if v >= 0.05)
    text = f"server CPU {total:.1f} s ({top})" if top else f"server CPU {total:.1f} s"
    return (
        f"{text}, its threads waited {max(after[2] - before[2], 0):.1f} s (summed) for a CPU; "
        f"bench clients' CPU {after[3] - before[3]:.1f} s"
    )


class RssMonitor(threading.Thread):
    def __init__(self, server):
        super().__init__(daemon=True)
        self.server, self.max_rss, self.stop_ev = server, 0.0, threading.Event()
        self.t0, self.max_at, self.trace = time.monotonic() + 0.5, 0.0, []
        self.start()

    def run(self):
        while not self.stop_ev.wait(0.2):
            rss = self.server.status()[1]
            if rss:
                self.trace.append((time.monotonic() - self.t0, rss))
                if rss > self.max_rss:
                    self.max_rss, self.max_at = rss, time.monotonic() - self.t0


# ---------------------------------------------------------------------------- SMTP client


class Closed(Exception):
    pass


class Smtp:
    def __init__(self, port, src, timeout=15.0, rcvbuf=None):
        s = socket.socket()
        if rcvbuf:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        s.bind((src, 0))
        s.settimeout(timeout)
        s.connect(("127.0.0.1", port))
        self.sock, self.f = s, s.makefile("rb")

    def reply(self):
        """(code, text of the last line); Closed when the server hung up."""
        lines = []
        while True:
            try:
                line = self.f.readline(8192)
            except (ConnectionError, ssl.SSLError) as e:
                raise Closed(str(e))
            if not line:
                raise Closed("EOF")
            lines.append(line)
            if line[3:4] != b"-":
                break
        try:
            code = int(lines[-1][:3])
        except ValueError:
            code = 0
        self.last_lines = [l.decode(errors="replace").rstrip() for l in lines]
        return code, self.last_lines[-1]

    def send(self, data):
        try:
            self.sock.sendall(data)
        except (ConnectionError, ssl.SSLError, BrokenPipeError) as e:
            raise Closed(str(e))

    def cmd(self, line):
        self.send(line.encode() + b"\r\n")
        return self.reply()

    def starttls(self):
        code, text = self.cmd("STARTTLS")
        if code != 220:
            raise Closed(f"STARTTLS refused: {text}")
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        self.sock = ctx.wrap_socket(self.sock, server_hostname="mx.example.test")
        self.f = self.sock.makefile("rb")

    def close(self):
        for c in (self.f, self.sock):
            try:
                c.close()
            except OSError:
                pass


def expect(c, line, code):
    got, text = c.cmd(line) if line is not None else c.reply()
    if got != code:
        raise Closed(f"{line or 'greeting'} -> {text}")


class GoodClient(threading.Thread):
    """Full transactions to bob on inbound from 127.0.0.200 (max 500, or `count`)."""

    PHASES = ("connect+greeting", "EHLO", "MAIL", "RCPT", "DATA", "body+dot")

    def __init__(self, server, pause=0.3, count=500):
        super().__init__(daemon=True)
        self.port, self.pause, self.count = server.ports["inbound"], pause, count
        self.stop_ev = threading.Event()
        self.times, self.failures = [], collections.Counter()
        self.slow = []  # (start relative to the attack's start, seconds, slowest phase)
        self.t0 = time.monotonic() + 0.5
        self.start()

    def one(self):
        t0 = last = time.monotonic()
        phases = []

        def step():
            nonlocal last
            now = time.monotonic()
            phases.append(now - last)
            last = now

        c = None
        try:
            c = Smtp(self.port, GOOD_SRC, timeout=30)
            expect(c, None, 220)
            step()
            for line, code in (
                ("EHLO good.test", 250),
                ("MAIL FROM:<good@remote.test>", 250),
                (f"RCPT TO:<{BOB}>", 250),
                ("DATA", 354),
            ):
                expect(c, line, code)
                step()
            c.send(b"From: good@remote.test\r\nTo: bob@example.test\r\nSubject: ping\r\n\r\nhello\r\n.\r\n")
            code, text = c.reply()
            if code != 250:
                raise Closed(text)
            step()
            self.times.append(time.monotonic() - t0)
            if self.times[-1] > 2:
                worst = max(range(len(phases)), key=phases.__getitem__)
                self.slow.append((t0 - self.t0, self.times[-1], f"{self.PHASES[worst]} {phases[worst]:.1f}s"))
            try:
                c.cmd("QUIT")
            except (Closed, OSError):
                pass
        except (Closed, OSError) as e:
            self.failures[f"{str(e)[:60] or type(e).__name__} @t={t0 - self.t0:.0f}s"] += 1
        finally:
            if c:
                c.close()

    def run(self):
        for _ in range(self.count):
            if self.stop_ev.is_set():
                break
            self.one()
            self.stop_ev.wait(self.pause)

    def finish(self):
        self.stop_ev.set()
        self.join(60)
        if not self.times:
            return "no transaction completed" + self.fail_text()
        ms = sorted(t * 1000 for t in self.times)
        slow = sum(1 for t in ms if t > 2000)
        s = f"{statistics.median(ms):.0f}/{ms[-1]:.0f} ms (n={len(ms)}"
        if slow:
            s += f"; {slow} over 2 s: " + ", ".join(
                f"{d:.1f}s@t={t:.0f}s [{ph}]" for t, d, ph in self.slow[:5]
            )
        return s + ")" + self.fail_text()

    def fail_text(self):
        if not self.failures:
            return ""
        return " FAILED " + "; ".join(f"{n}× {k}" for k, n in self.failures.items())


def counts(counter):
    return " ".join(f"{k}×{v}" for k, v in sorted(counter.items(), key=lambda kv: -kv[1]))


def fmt_secs(xs):
    if not xs:
        return "-"
    xs = sorted(xs)
    return f"{xs[0]:.1f}–{xs[-1]:.1f} s" if xs[-1] - xs[0] >= 0.1 else f"{xs[0]:.1f} s"


def auth_label(code, text):
    """454 split by cause: no free verification slot / lockout."""
    if code == 454 and "in progress" in text:
        return "454busy"
    if code == 454 and "failed authentications" in text:
        return "454locked"
    return str(code)


def plain(user, password):
    return base64.b64encode(f"\0{user}\0{password}".encode()).decode()


def run_attackers(worker, n, join_seconds, extra=()):
    """Runs worker(0) … worker(n - 1), and each callable of `extra`, on daemon threads;
    waits for each at most `join_seconds` (a stuck one is left behind, not waited for)."""
    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(n)]
    threads += [threading.Thread(target=f, daemon=True) for f in extra]
    for t in threads:
        t.start()
    for t in threads:
        t.join(join_seconds)


# ---------------------------------------------------------------------------- attacks


def attack_auth_flood(server):
    """150 sessions from 127.0.0.2-4 on submission: STARTTLS, wrong AUTH PLAIN for 15 s."""
    port = server.ports["submission"]
    deadline = time.monotonic() + 15
    lock = threading.Lock()
    replies, drops, errors = collections.Counter(), collections.Counter(), collections.Counter()
    stats = {"attempts": 0, "sessions": 0, "no_auth_offered": 0}

    def worker(i):
        src = f"127.0.0.{2 + i % 3}"
        n = 0
        for _ in range(200):  # sessions per worker
            if time.monotonic() >= deadline:
                return
            c = None
            try:
                c = Smtp(port, src, timeout=20)
                code, text = c.reply()
                if code != 220:
                    with lock:
                        drops[f"greeting {code}"] += 1
                    time.sleep(0.1)
                    continue
                expect(c, "EHLO attacker.test", 250)
                c.starttls()
                expect(c, "EHLO attacker.test", 250)
                with lock:
                    stats["sessions"] += 1
                    if not any("AUTH" in l for l in c.last_lines):
                        stats["no_auth_offered"] += 1
                while time.monotonic() < deadline:
                    n += 1
                    code, text = c.cmd(f"AUTH PLAIN {plain(BOB, f'wrong-{i}-{n}')}")
                    with lock:
                        stats["attempts"] += 1
                        replies[auth_label(code, text)] += 1
                    if code == 421:
                        with lock:
                            drops["421 then closed"] += 1
                        break
                else:
                    return
            except Closed as e:
                with lock:
                    drops["closed" if "EOF" in str(e) or "reset" in str(e).lower() else str(e)[:40]] += 1
            except OSError as e:
                with lock:
                    errors[type(e).__name__] += 1
                time.sleep(0.05)
            finally:
                if c:
                    c.close()

    legit = collections.Counter()

    def legit_user():
        """bob with the right password from 127.0.0.201, one login a second."""
        for _ in range(30):
            if time.monotonic() >= deadline:
                return
            c = None
            try:
                c = Smtp(port, "127.0.0.201", timeout=20)
                expect(c, None, 220)
                expect(c, "EHLO legit.test", 250)
                c.starttls()
                expect(c, "EHLO legit.test", 250)
                code, text = c.cmd(f"AUTH PLAIN {plain(BOB, PASSWORD)}")
                legit[auth_label(code, text)] += 1
            except (Closed, OSError) as e:
                legit[str(e)[:30] or type(e).__name__] += 1
            finally:
                if c:
                    c.close()
            time.sleep(1)

    run_attackers(worker, 150, 60, extra=(legit_user,))

    def after_stop():
        ev = server.events()
        dep_down = sum(1 for e in ev if e.get("event") == "dependency_down")
        audit = collections.Counter()
        summarized = 0
        try:
            with open(server.audit_path) as f:
                for line in f:
                    try:
                        e = json.loads(line)
                    except ValueError:
                        continue
                    name = e.get("event") or e.get("action") or "?"
                    audit[name] += 1
                    if name == "auth.login_failures":
                        d = e.get("details") or e.get("detail") or e
                        summarized += sum(int(d.get(k, 0)) for k in ("failures", "refused_locked_out", "refused_busy"))
        except OSError:
            pass
        out = (
            f"AUTH tries {stats['attempts']} in {stats['sessions']} TLS sessions: {counts(replies)}; "
            f"server ended sessions: {counts(drops) or 'none'}"
        )
        out += f"; bob's own logins (right password, 127.0.0.201, 1/s): {counts(legit)}"
        if errors:
            out += f"; client errors {counts(errors)}"
        if stats["no_auth_offered"]:
            out += f"; AUTH not offered in {stats['no_auth_offered']} sessions"
        out += (
            f"; dependency_down in log: {dep_down}; audit file {sum(audit.values())} lines "
            f"({counts(audit)}) for {stats['attempts']} attempts"
            f" (summaries cover {summarized})"
        )
        return out

    return after_stop


def spooled(server):
    """Open files of the server in its spool_dir: (count, bytes allocated on disk)."""
    n = size = 0
    fd_dir = f"/proc/{server.proc.pid}/fd"
    try:
        fds = os.listdir(fd_dir)
    except OSError:
        return 0, 0
    for fd in fds:
        try:
            if os.readlink(f"{fd_dir}/{fd}").startswith(os.path.join(server.dir, "spool")):
                n += 1
                size += os.stat(f"{fd_dir}/{fd}").st_blocks * 512
        except OSError:
            pass
    return n, size


def attack_unterminated_data(server):
    """40 sessions on inbound: DATA then 24 MiB of body, no final dot, held open."""
    port = server.ports["inbound"]
    body_total = 24 * 1024 * 1024
    line = b"X" * 998 + b"\r\n"
    block = line * 1024  # ~1 MiB
    send_deadline = time.monotonic() + 60
    lock = threading.Lock()
    res = {"sent": 0, "complete": 0}
    errors = collections.Counter()
    conns = []
    done_times = []
    t0 = time.monotonic()

    def worker(i):
        c = None
        try:
            c = Smtp(port, f"127.0.0.{2 + i % 2}", timeout=30)
            expect(c, None, 220)
            expect(c, "EHLO attacker.test", 250)
            expect(c, "MAIL FROM:<big@remote.test>", 250)
            expect(c, f"RCPT TO:<{BOB}>", 250)
            expect(c, "DATA", 354)
            with lock:
                conns.append(c)
            c.send(b"Subject: unterminated\r\n\r\n")
            sent = 0
            while sent < body_total and time.monotonic() < send_deadline:
                c.send(block)
                sent += len(block)
            with lock:
                res["sent"] += sent
                if sent >= body_total:
                    res["complete"] += 1
                    done_times.append(time.monotonic() - t0)
        except (Closed, OSError) as e:
            with lock:
                errors[str(e)[:50] or type(e).__name__] += 1

    run_attackers(worker, 40, 90)
    hold = 8
    time.sleep(hold / 2)  # held open, no final dot, while the good client measures
    spool_files, spool_bytes = spooled(server)
    time.sleep(hold / 2)
    alive = closed = replied = 0
    for c in conns:
        try:
            c.sock.setblocking(False)
            data = c.sock.recv(512)
            if data:
                replied += 1
            else:
                closed += 1
        except BlockingIOError:
            alive += 1
        except OSError:
            closed += 1
    out = (
        f"{len(conns)} sessions in DATA; sent {res['sent'] / 2**20:.0f} MiB, "
        f"{res['complete']}/40 sent all 24 MiB (last at {max(done_times, default=0):.1f} s); "
        f"after {hold} s hold: {alive} open, {closed} closed, {replied} got a reply; "
        f"spooled meanwhile: {spool_files} files, {spool_bytes / 2**20:.0f} MiB on disk"
    )
    if errors:
        out += f"; errors: {counts(errors)}"

    def closer():
        for c in conns:
            c.close()

    return out, closer


def attack_trickle(server):
    """10 sessions sending one DATA byte every 2 s (data_timeout 10 s, min rate 500 B/s)."""
    port = server.ports["inbound"]
    lock = threading.Lock()
    ended, replies = [], collections.Counter()
    survivors = [0]

    def worker(i):
        c = None
        try:
            c = Smtp(port, "127.0.0.2", timeout=10)
            expect(c, None, 220)
            expect(c, "EHLO trickle.test", 250)
            expect(c, "MAIL FROM:<slow@remote.test>", 250)
            expect(c, f"RCPT TO:<{BOB}>", 250)
            expect(c, "DATA", 354)
            t0 = time.monotonic()
            for _ in range(30):  # at most 60 s
                if not select.select([c.sock], [], [], 2.0)[0]:
                    try:
                        c.sock.sendall(b"x")
                    except OSError:
                        pass
                    continue
                try:
                    code, text = c.reply()
                    with lock:
                        replies[f"{code} {text[4:9]}"] += 1
                        ended.append(time.monotonic() - t0)
                    return
                except Closed:
                    with lock:
                        replies["closed without reply"] += 1
                        ended.append(time.monotonic() - t0)
                    return
            with lock:
                survivors[0] += 1
        except (Closed, OSError) as e:
            with lock:
                replies[f"setup: {str(e)[:40]}"] += 1
        finally:
            if c:
                c.close()

    run_attackers(worker, 10, 90)
    out = f"ended {len(ended)}/10 after {fmt_secs(ended)} of DATA: {counts(replies)}"
    if survivors[0]:
        out += f"; {survivors[0]} still open after 60 s (NOT bounded)"
    return out


def attack_non_reading(server):
    """5 clients that pipeline NOOP as fast as they can and never read (SO_RCVBUF 4 KiB)."""
    port = server.ports["inbound"]
    lock = threading.Lock()
    dropped, stalled_for, sent_total = [], [], [0]
    how = collections.Counter()

    def worker(i):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.bind(("127.0.0.2", 0))
        s.connect(("127.0.0.1", port))
        s.settimeout(1.0)
        chunk = b"NOOP\r\n" * 1000
        t0 = time.monotonic()
        first_stall = None
        sent = 0
        try:
            while time.monotonic() - t0 < 60:
                try:
                    sent += s.send(chunk)
                except socket.timeout:
                    if first_stall is None:
                        first_stall = time.monotonic()
                except OSError as e:
                    now = time.monotonic()
                    with lock:
                        dropped.append(now - t0)
                        if first_stall:
                            stalled_for.append(now - first_stall)
                        how[type(e).__name__] += 1
                    return
            with lock:
                how["never dropped in 60 s"] += 1
        finally:
            with lock:
                sent_total[0] += sent
            s.close()

    run_attackers(worker, 5, 90)
    return (
        f"dropped {len(dropped)}/5 after {fmt_secs(dropped)} "
        f"({fmt_secs(stalled_for)} after the client's send first blocked); "
        f"{sent_total[0] / 2**20:.1f} MiB of NOOPs sent; {counts(how)}"
    )


def attack_auth_inbound(server):
    """EHLO + AUTH PLAIN (right password) on inbound, without and with STARTTLS."""
    port = server.ports["inbound"]
    parts = []
    for tls in (False, True):
        c = Smtp(port, "127.0.0.2")
        try:
            expect(c, None, 220)
            expect(c, "EHLO client.test", 250)
            if tls:
                c.starttls()
                expect(c, "EHLO client.test", 250)
            offered = any(l[4:].upper().startswith("AUTH") for l in c.last_lines)
            code, text = c.cmd(f"AUTH PLAIN {plain(BOB, PASSWORD)}")
            parts.append(
                f"{'after STARTTLS' if tls else 'plain'}: AUTH {'OFFERED' if offered else 'not offered'}, "
                f"reply {text}"
            )
        except (Closed, OSError) as e:
            parts.append(f"{'after STARTTLS' if tls else 'plain'}: {e}")
        finally:
            c.close()
    return "; ".join(parts)


def attack_api_send(server):
    """POST /api/v1/send with ~1 MiB of JSON: 16,000 recipients, 5 times."""
    key = server.cli("admin", "create-key", "--scope", "admin").splitlines()[-1].strip()
    to = [f"recipient-{i:05d}-padding-padding-pad@remote-{i % 97}.example.org" for i in range(16000)]
    body = json.dumps({"from": BOB, "to": to, "subject": "many", "text": "hi"}).encode()
    results, times = collections.Counter(), []
    detail = ""
    for _ in range(5):
        conn = http.client.HTTPConnection("127.0.0.1", server.ports["http"], timeout=60)
        t0 = time.monotonic()
        try:
            conn.request(
                "POST",
                "/api/v1/send",
                body=body,
                headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"},
            )
            r = conn.getresponse()
            text = r.read()
            times.append(time.monotonic() - t0)
            results[r.status] += 1
            detail = text[:140].decode(errors="replace")
        except OSError as e:
            results[type(e).__name__] += 1
        finally:
            conn.close()
    ms = [t * 1000 for t in times]
    timing = f"{statistics.median(ms):.0f}/{max(ms):.0f} ms p50/max" if ms else "-"
    return f"{len(body) / 2**20:.2f} MiB body ×5: status {counts(results)}, {timing}; answer: {detail}"


# ---------------------------------------------------------------------------- main


def run(binary, name, label, attack, limits=None, idle_after=2.0):
    """Start a server, run `attack` with the good client and the RSS monitor; a row."""
    t_start = time.monotonic()
    server = Server(binary, name, limits)
    base = server.baseline[1] or 0
    idle = GoodClient(server, pause=0.1, count=5)
    idle.join(60)
    idle_text = idle.finish().split(" (")[0]
    mon = RssMonitor(server)
    good = GoodClient(server)
    time.sleep(0.5)
    cpu0 = cpu_snapshot(server.proc.pid)
    host0 = host_cpu()
    closer = after_stop = None
    try:
        result = attack(server)
    except Exception as e:  # a broken attack is a row, not a failed bench
        result = f"attack error: {type(e).__name__}: {e}"
    if isinstance(result, tuple):
        result, closer = result
    elif callable(result):
        after_stop, result = result, ""
    time.sleep(0.5)
    latency = good.finish()
    cpu = cpu_text(cpu0, cpu_snapshot(server.proc.pid))
    host1 = host_cpu()
    cpu += f"; host CPU busy {100 * (1 - (host1[1] - host0[1]) / max(host1[0] - host0[0], 1)):.0f}%"
    latency += f"; idle before: {idle_text}"
    hwm, _ = server.status()
    mon.stop_ev.set()
    if closer:
        closer()
    time.sleep(idle_after)
    rss_after = server.status()[1]
    server.stop()
    if after_stop:
        result = after_stop()
    result = f"{result}; {cpu}"
    peak = max(hwm or 0, mon.max_rss)
    rss = f"{peak:.0f} / {rss_after or 0:.0f} (start {base:.0f}; max VmRSS at t={mon.max_at:.0f}s)"
    if os.environ.get("ABUSE_TRACE"):
        print(f"  RSS trace {name}: " + " ".join(f"{t:.0f}s:{r:.0f}" for t, r in mon.trace[::5]), file=sys.stderr)
    if peak > 300:
        rss += " >300!"
    print(f"  [{label}: {time.monotonic() - t_start:.0f} s]", file=sys.stderr, flush=True)
    return label, rss, latency, result


def cleanup(*_):
    for s in list(SERVERS):
        try:
            s.stop()
        except Exception:
            pass
    if WORK and os.environ.get("ABUSE_KEEP"):
        print(f"kept {WORK}", file=sys.stderr)
    elif WORK:
        shutil.rmtree(WORK, ignore_errors=True)


def main():
    global WORK
    given = os.path.abspath(sys.argv[1])
    WORK = tempfile.mkdtemp(prefix="mairust-abuse-")
    # A private link (or copy) of the binary, so a rebuild during the run changes nothing.
    binary = os.path.join(WORK, "mairust")
    try:
        os.link(given, binary)
    except OSError:
        shutil.copy2(given, binary)

    def on_signal(signum, _frame):
        cleanup()
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    rows = []
    t0 = time.monotonic()
    load0 = open("/proc/loadavg").read().split()[0]
    try:
        plan = [
            ("auth", "1 AUTH flood: 150 sessions, 3 source IPs, submission+STARTTLS, 15 s", attack_auth_flood, None),
            ("data", "2 unterminated DATA: 40 × 24 MiB, no dot, held 8 s", attack_unterminated_data, None),
            (
                "trickle",
                "3 trickle: 10 × 1 byte/2 s after DATA [data_timeout_seconds: 10, data_min_rate_bytes_per_second: 500]",
                attack_trickle,
                {"data_timeout_seconds": 10, "data_min_rate_bytes_per_second": 500},
            ),
            (
                "noread",
                "4 non-reading: 5 × pipelined NOOP, never read, SO_RCVBUF 4 KiB [write_timeout_seconds: 10]",
                attack_non_reading,
                {"write_timeout_seconds": 10},
            ),
            ("authin", "5 AUTH on inbound", attack_auth_inbound, None),
            ("api", "6 POST /api/v1/send, 16,000 recipients", attack_api_send, None),
        ]
        only = os.environ.get("ABUSE_ONLY", "").split(",")  # e.g. ABUSE_ONLY=auth,data
        for name, label, attack, limits in plan:
            if only != [""] and name not in only:
                continue
            rows.append(run(binary, name, label, attack, limits))
    except StartError as e:
        print(e, file=sys.stderr)
        cleanup()
        return 1
    finally:
        cleanup()

    print()
    print(f"MaiRust abuse bench ({given}); default limits unless [in brackets]; {time.monotonic() - t0:.0f} s")
    print(
        f"host: {os.cpu_count()} CPUs, load average {load0} at start, {open('/proc/loadavg').read().split()[0]} at end"
        " (other work on the host inflates latencies)"
    )
    print("RSS: server peak (VmHWM) / VmRSS after the attackers left (at start), MiB.")
    print(
        f"good client: p50/max of full transactions to {BOB} on inbound from {GOOD_SRC} during the attack"
        " ([slowest step] of those over 2 s; t = seconds into the attack); 'idle before': 5 on the fresh server."
    )
    print(
        "server CPU / wait: CPU used during the attack, and time its threads sat runnable without a CPU"
        " (high = starved by other work on the host, the bench clients included)."
    )
    print()
    print("| attack | RSS MiB peak / after | good client p50/max | outcome |")
    print("|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(str(x).replace("|", "/") for x in row) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
