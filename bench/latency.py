#!/usr/bin/env python3
"""SMTP transaction latency at a fixed offered rate (open loop), Python stdlib only.

    bench/latency.py [--rate 1000] [--sessions 20] [--seconds 10] [--size 4096]
                     [--from bench@bench.test] [--to rcpt@example.test] [--timeout 30]
                     HOST:PORT

SESSIONS persistent connections are opened (EHLO once each, before the clock starts).
Then messages are due on a fixed timetable, message i at t0 + i/RATE, for SECONDS; each
due message goes to the first idle session as plain SMTP without PIPELINING:
MAIL FROM, RCPT TO, DATA, then the message and its final dot in one write. A message's
latency runs from the moment it was due to the 250 after its final dot, so when the
server falls behind, the messages that wait for a free session count their wait: the
timetable does not slow down with the server (no coordinated omission). The service
time, from MAIL FROM sent to that 250, is given apart (svc_*), and so is the delay
between due and MAIL FROM sent (start lag: queueing for a session, or a slow client).

Prints one line, for example
    offered=1000 achieved=999 due=10000 sent=10000 ok=10000 fail=0 unsent=0
    p50_ms=1.21 p95_ms=3.40 p99_ms=7.80 max_ms=20.10 svc_p50_ms=1.10 svc_p95_ms=3.10
    lag_p99_ms=0.30 client_cpu=0.12
(on one line). achieved = ok / (time from t0 to the last completion). A reply other
than 2xx/354 fails that message (RSET, and the session goes on); a closed connection
fails its message and the session reconnects. After the timetable ends, messages still
in flight get TIMEOUT seconds; what is left then is counted as fail (in flight) or
unsent (never started). client_cpu is this client's user+system CPU over the run, in
cores (0.12 = 12% of one core): well below 1, the client was not the bottleneck.
Exit status: 0 whatever the figures; 2 on a usage error or when the server cannot be
reached or greeted at the start.
"""
import argparse
import collections
import resource
import select
import socket
import sys
import time

IDLE, GREET, EHLO, HELO, MAIL, RCPT, DATA, DOT, RSET = range(9)


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rate", type=float, default=1000.0, help="offered messages/s, all sessions together")
    p.add_argument("--sessions", type=int, default=20)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--size", type=int, default=4096, help="message body bytes (headers added)")
    p.add_argument("--from", dest="sender", default="bench@bench.test")
    p.add_argument("--to", dest="rcpt", default="rcpt@example.test")
    p.add_argument("--timeout", type=float, default=30.0, help="drain time after the timetable ends")
    p.add_argument("--helo", default="latency.bench.test")
    p.add_argument("target", help="HOST:PORT")
    a = p.parse_args()
    host, _, port = a.target.rpartition(":")
    if not host or not port.isdigit():
        p.error("target must be HOST:PORT")
    if a.rate <= 0 or a.sessions <= 0 or a.seconds <= 0 or a.size < 0:
        p.error("rate, sessions and seconds must be positive")
    a.host, a.port = host.strip("[]"), int(port)
    return a


def message_bytes(size, sender, rcpt):
    head = (f"From: <{sender}>\r\nTo: <{rcpt}>\r\nSubject: latency bench\r\n"
            f"Message-ID: <latency@bench.test>\r\n\r\n").encode()
    line = b"X" * 76 + b"\r\n"
    body = line * (size // len(line))
    rest = size - len(body)
    if rest >= 3:
        body += b"X" * (rest - 2) + b"\r\n"
    elif rest:
        body += b"\r\n"
    return head + body + b".\r\n"


class Session:
    __slots__ = ("sock", "fd", "state", "inbuf", "outbuf", "due", "t_mail", "want_out")

    def __init__(self):
        self.sock = None
        self.fd = -1
        self.state = GREET
        self.inbuf = b""
        self.outbuf = b""
        self.due = None
        self.t_mail = 0.0
        self.want_out = False


class Bench:
    def __init__(self, a):
        self.a = a
        self.ep = select.epoll()
        self.by_fd = {}
        self.idle = collections.deque()
        self.cmd_mail = f"MAIL FROM:<{a.sender}>\r\n".encode()
        self.cmd_rcpt = f"RCPT TO:<{a.rcpt}>\r\n".encode()
        self.data = message_bytes(a.size, a.sender, a.rcpt)
        self.lat, self.svc, self.lag = [], [], []
        self.ok = self.fail = self.sent = self.inflight = 0
        self.t_last = 0.0
        self.started = False  # timetable running: connection losses then fail a message

    # -- connections -------------------------------------------------------
    def connect(self, s):
        sock = socket.create_connection((self.a.host, self.a.port), timeout=10)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        s.sock, s.fd, s.state, s.inbuf, s.outbuf, s.want_out = sock, sock.fileno(), GREET, b"", b"", False
        self.by_fd[s.fd] = s
        self.ep.register(s.fd, select.EPOLLIN)

    def drop(self, s):
        try:
            self.ep.unregister(s.fd)
        except (OSError, ValueError):
            pass
        self.by_fd.pop(s.fd, None)
        try:
            s.sock.close()
        except OSError:
            pass
        if s.due is not None:
            self.done(s, False)
        try:
            self.idle.remove(s)
        except ValueError:
            pass

    def reconnect(self, s):
        self.drop(s)
        for _ in range(50):
            try:
                self.connect(s)
                return True
            except OSError:
                time.sleep(0.1)
        return False

    # -- output ------------------------------------------------------------
    def send(self, s, b):
        if not s.outbuf:
            try:
                n = s.sock.send(b)
            except BlockingIOError:
                n = 0
            if n == len(b):
                return
            b = b[n:]
        s.outbuf += b
        if not s.want_out:
            s.want_out = True
            self.ep.modify(s.fd, select.EPOLLIN | select.EPOLLOUT)

    def flush(self, s):
        try:
            n = s.sock.send(s.outbuf)
        except BlockingIOError:
            return
        s.outbuf = s.outbuf[n:]
        if not s.outbuf and s.want_out:
            s.want_out = False
            self.ep.modify(s.fd, select.EPOLLIN)

    # -- protocol ----------------------------------------------------------
    def start(self, s, due, now):
        s.due, s.t_mail, s.state = due, now, MAIL
        self.sent += 1
        self.inflight += 1
        self.lag.append(now - due)
        try:
            self.send(s, self.cmd_mail)
        except OSError:  # the server closed this idle session: its message fails
            self.reconnect(s)

    def on_reply(self, s, code, now):
        st = s.state
        ok = 200 <= code < 300
        if st == GREET:
            if code != 220:
                raise ConnectionError(f"greeting {code}")
            s.state = EHLO
            self.send(s, f"EHLO {self.a.helo}\r\n".encode())
        elif st in (EHLO, HELO):
            if not ok:
                if st == HELO:
                    raise ConnectionError(f"HELO refused: {code}")
                s.state = HELO
                self.send(s, f"HELO {self.a.helo}\r\n".encode())
                return
            s.state = IDLE
            self.idle.append(s)
        elif st == MAIL:
            if not ok:
                return self.refused(s)
            s.state = RCPT
            self.send(s, self.cmd_rcpt)
        elif st == RCPT:
            if not ok:
                return self.refused(s)
            s.state = DATA
            self.send(s, b"DATA\r\n")
        elif st == DATA:
            if code != 354:
                return self.refused(s)
            s.state = DOT
            self.send(s, self.data)
        elif st == DOT:
            if ok:
                self.lat.append(now - s.due)
                self.svc.append(now - s.t_mail)
                self.t_last = now
            self.done(s, ok)
            s.state = IDLE
            self.idle.append(s)
        elif st == RSET:
            s.state = IDLE
            self.idle.append(s)

    def done(self, s, ok):
        if ok:
            self.ok += 1
        else:
            self.fail += 1
        s.due = None
        self.inflight -= 1

    def refused(self, s):
        self.done(s, False)
        s.state = RSET
        self.send(s, b"RSET\r\n")

    def on_readable(self, s, now):
        try:
            d = s.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            d = b""
        if not d:
            raise ConnectionError("closed by the server")
        buf = s.inbuf + d
        # Complete replies: the last line of a reply has a space (or nothing) after the code.
        while True:
            end = buf.find(b"\r\n")
            if end < 0:
                break
            line, buf = buf[:end], buf[end + 2:]
            if len(line) >= 4 and line[3:4] == b"-":
                continue
            try:
                code = int(line[:3])
            except ValueError:
                raise ConnectionError(f"bad reply {line[:40]!r}")
            self.on_reply(s, code, now)
        s.inbuf = buf

    def poll(self, timeout, precise=False):
        if precise:
            # epoll's timeout is in whole milliseconds (rounded up): a message due in
            # 0.3 ms would start 1 ms late. select() on the epoll fd waits to the µs.
            if timeout > 0 and not select.select([self.ep.fileno()], [], [], timeout)[0]:
                return
            timeout = 0
        for fd, ev in self.ep.poll(timeout):
            s = self.by_fd.get(fd)
            if s is None:
                continue
            now = time.perf_counter()
            try:
                if ev & select.EPOLLOUT:
                    self.flush(s)
                if ev & (select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR):
                    self.on_readable(s, now)
            except (ConnectionError, OSError):
                if not self.started:
                    raise
                self.reconnect(s)

    # -- run ---------------------------------------------------------------
    def run(self):
        a = self.a
        sessions = [Session() for _ in range(a.sessions)]
        for s in sessions:
            self.connect(s)
        deadline = time.perf_counter() + 10
        while len(self.idle) < len(sessions):
            if time.perf_counter() > deadline:
                raise ConnectionError("sessions not ready (greeting/EHLO) after 10 s")
            self.poll(0.1)
        self.started = True
        total = int(round(a.rate * a.seconds))
        interval = 1.0 / a.rate
        ru0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.perf_counter()
        self.t_last = t0
        pending = collections.deque()
        i = 0
        end_of_table = t0 + total * interval
        drain_deadline = end_of_table + a.timeout
        while True:
            now = time.perf_counter()
            while i < total and t0 + i * interval <= now:
                pending.append(t0 + i * interval)
                i += 1
            while pending and self.idle:
                self.start(self.idle.popleft(), pending.popleft(), now)
            if i >= total and not pending and self.inflight == 0:
                break
            if now > drain_deadline:
                break
            if i < total and self.idle:
                self.poll(max(0.0, t0 + i * interval - now), precise=True)
            else:
                self.poll(0.05)
        ru1 = resource.getrusage(resource.RUSAGE_SELF)
        wall = time.perf_counter() - t0
        self.fail += self.inflight  # still without an answer at the deadline
        unsent = len(pending) + (total - i)
        cpu = (ru1.ru_utime - ru0.ru_utime + ru1.ru_stime - ru0.ru_stime) / wall
        span = self.t_last - t0
        achieved = self.ok / span if span > 0 else 0.0
        # A message that failed or never got its 250 counts as infinitely late: a
        # server that drops load cannot show a better p95 for it.
        late = [float("inf")] * (self.fail + unsent)
        for s in sessions:
            try:
                s.sock.close()
            except OSError:
                pass
        fields = [
            ("offered", f"{a.rate:g}"), ("achieved", f"{achieved:.0f}"), ("due", total),
            ("sent", self.sent), ("ok", self.ok), ("fail", self.fail), ("unsent", unsent),
            ("p50_ms", pct(self.lat + late, 50)), ("p95_ms", pct(self.lat + late, 95)),
            ("p99_ms", pct(self.lat + late, 99)), ("max_ms", pct(self.lat + late, 100)),
            ("svc_p50_ms", pct(self.svc, 50)), ("svc_p95_ms", pct(self.svc, 95)),
            ("lag_p99_ms", pct(self.lag, 99)), ("client_cpu", f"{cpu:.2f}"),
        ]
        print(" ".join(f"{k}={v}" for k, v in fields), flush=True)


def pct(xs, p):
    if not xs:
        return "nan"
    xs.sort()
    k = max(0, min(len(xs) - 1, -(-len(xs) * p // 100) - 1))  # nearest rank
    return f"{xs[int(k)] * 1000:.2f}"


def main():
    a = parse_args()
    try:  # timers fire up to 50 µs late by default (timer slack); ask for 1 µs
        import ctypes
        ctypes.CDLL(None).prctl(29, 1000, 0, 0, 0)  # PR_SET_TIMERSLACK, ns
    except (OSError, AttributeError):
        pass
    try:
        Bench(a).run()
    except (ConnectionError, OSError) as e:
        print(f"latency.py: {a.host}:{a.port}: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
