#!/usr/bin/env bash
# OpenSMTPD on loopback as a second reference MTA beside Postfix (../shared/anchors/postfix.sh).
#
#   bench/opensmtpd.sh start [PORT]   fetch if needed, configure, start on 127.0.0.1:PORT (2525)
#   bench/opensmtpd.sh stop           stop it and its sink, empty its queue
#   bench/opensmtpd.sh queued         messages now in its queue (being received or queued)
#   bench/opensmtpd.sh wait-empty [S] wait up to S seconds (60) for the queue to drain
#   bench/opensmtpd.sh pid            the smtpd parent's PID (for bench/cpu.sh)
#
# It accepts mail for example.test from 127.0.0.1 into its queue (/var/spool/smtpd,
# its compile-time spool: no option or config setting moves it), then relays each
# message to a sink on 127.0.0.1:SINK_PORT (PORT+1, or OPENSMTPD_SINK_PORT) that accepts
# and forgets: its nearest equivalent of Postfix's discard transport. OpenSMTPD has no
# discard action; its local actions (mda, lmtp, maildir, mbox) fork a helper from
# /usr/libexec/opensmtpd and a shell per message, a cost Postfix's discard does not pay.
# Its relay client is held to one SMTP session to the sink, kept open (mta limit
# max-conn-per-route 1, session-mail-max and session-keepalive large, task-hiwat large):
# with the defaults (100 messages a session, a session quits when it finds no task at
# once, 5 s between connections, 10 s before it looks for a source again) the queue
# drained in bursts with pauses of 5-10 s, and during a run at 20 sessions it held
# thousands of messages. One kept session keeps up with its intake. Even so its queue
# can lag by a few thousand messages behind a fast run: wait for `wait-empty` before
# reading its CPU time (bench/cpu.sh), so that each message's delivery is counted.
# Nothing can leave the machine: the only action relays to 127.0.0.1, bounces match
# no rule and are dropped, and its resolver reads a private /etc/resolv.conf (see
# start) so no DNS query leaves either.
#
# The sink is a few lines of Python here, not Postfix's smtp-sink: OpenSMTPD's SMTP
# client writes the final "." apart from the body without TCP_NODELAY, so against a
# receiver that delays its ACK (Linux does, 40 ms) every message waits for the delayed
# ACK: 25 msg/s per session, and the queue grows without end during a benchmark. The
# sink sets TCP_QUICKACK after every read, which takes the stall away. Its CPU time is
# not OpenSMTPD's (cpu_ticks_opensmtpd in bench/cpu.sh does not count it).
#
# DURABILITY: OpenSMTPD 6.8 (Debian 12's) and its upstream up to 7.x do NOT fsync a
# message before its 250: queue_fs.c writes the message and its envelope and renames
# them into the queue without fsync (it fsyncs only envelope updates, after a deferral).
# With OPENSMTPD_SYNC_SPOOL=1, start mounts a 2 GiB ext4 image on /var/spool/smtpd with
# `-o sync,dirsync`, so its writes are on disk before the 250 as Postfix's and
# MaiRust's are; every write and directory change is then synchronous, which costs more
# than the one fsync per message a careful design needs, so read its figures as a bound
# from below. Default 0: the spool on the root file system, as shipped (no fsync).
#
# Debian's opensmtpd package conflicts with postfix (both are mail-transport-agent), so
# it is not installed: `apt-get download` fetches the .deb and `dpkg-deb -x` unpacks it
# into OPENSMTPD_ROOT (/var/tmp/mairust-bench-opensmtpd); its libraries are ordinary
# packages that conflict with nothing and are installed with apt-get if one is missing.
# The users its build wants (opensmtpd, opensmtpq) and its chroot directory
# /var/lib/opensmtpd/empty are created as its postinst does. It refuses to run where
# the opensmtpd package itself is installed (the spool and /var/run/smtpd.sock, both
# compile-time paths, would be shared). Needs root (users, mount namespace).
set -euo pipefail
cmd=${1:-start}
port=${2:-2525}
root=${OPENSMTPD_ROOT:-/var/tmp/mairust-bench-opensmtpd}
sink_port=${OPENSMTPD_SINK_PORT:-$((port + 1))}
sync_spool=${OPENSMTPD_SYNC_SPOOL:-0}
backlog=${OPENSMTPD_LISTEN_BACKLOG:-128}
spool=/var/spool/smtpd          # PATH_SPOOL, compile-time
smtpd=$root/usr/sbin/smtpd

die() { echo "opensmtpd: $*" >&2; exit 1; }

not_the_package() {
  if dpkg-query -W -f='${Status}' opensmtpd 2>/dev/null | grep -q 'install ok installed'; then
    die "the opensmtpd package is installed here; it owns $spool and /var/run/smtpd.sock: not touching them"
  fi
}

install_opensmtpd() {
  not_the_package
  if [ ! -x "$smtpd" ]; then
    mkdir -p "$root/deb"
    ( cd "$root/deb"
      rm -f opensmtpd_*.deb
      apt-get download opensmtpd >/dev/null 2>&1 || {
        apt-get update >/dev/null 2>&1
        apt-get download opensmtpd >/dev/null 2>&1
      } || die "apt-get download opensmtpd failed" )
    dpkg-deb -x "$root"/deb/opensmtpd_*.deb "$root"
    [ -x "$smtpd" ] || die "no usr/sbin/smtpd in the package"
  fi
  if ldd "$smtpd" | grep -q 'not found'; then
    # The library packages it depends on (never opensmtpd itself).
    local libs
    libs=$(dpkg-deb -f "$root"/deb/opensmtpd_*.deb Depends | tr ',' '\n' \
      | sed -E 's/\(.*\)//; s/\|.*//; s/ //g' | grep '^lib' || true)
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $libs >/dev/null 2>&1 || {
      apt-get update >/dev/null 2>&1
      DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $libs >/dev/null
    }
    ! ldd "$smtpd" | grep 'not found' || die "libraries still missing"
  fi
  for name in opensmtpd opensmtpq; do
    getent group "$name" >/dev/null || groupadd --system "$name"
    id "$name" >/dev/null 2>&1 || useradd --system --gid "$name" --home-dir /var/lib/opensmtpd/empty \
      --no-create-home --shell /usr/sbin/nologin --comment "OpenSMTPD (MaiRust bench)" "$name"
  done
  mkdir -p /var/lib/opensmtpd/empty
}

# PID from FILE if that process's command line still contains WORD.
pid_of() {
  local p
  p=$(cat "$1" 2>/dev/null) || return 1
  tr '\0' ' ' 2>/dev/null <"/proc/$p/cmdline" | grep -qF -- "$2" && echo "$p"
}

stop_pidfile() { # FILE WORD
  local p
  if p=$(pid_of "$1" "$2"); then
    kill -TERM "$p" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
  fi
  rm -f "$1"
}

running_smtpd() {
  local p
  for p in /proc/[0-9]*; do
    [ "$(readlink "$p/exe" 2>/dev/null)" = "$smtpd" ] && return 0
  done
  return 1
}

stop_all() {
  not_the_package
  stop_pidfile "$root/run/smtpd.pid" "$smtpd"
  # An smtpd child of ours that outlived its parent (they exit with it normally).
  local p
  for p in /proc/[0-9]*; do
    [ "$(readlink "$p/exe" 2>/dev/null)" = "$smtpd" ] && kill -KILL "${p#/proc/}" 2>/dev/null || true
  done
  stop_pidfile "$root/run/sink.pid" "$root/sink.py"
  if [ -f "$root/run/spool.mounted" ]; then
    # Its processes hold files there until they are gone.
    for _ in $(seq 50); do
      running_smtpd || break
      sleep 0.1
    done
    umount "$spool" || die "could not unmount $spool (still in use?); run \`$0 stop\` again"
    rm -f "$root/run/spool.mounted"
  fi
  rm -rf "${spool:?}"/* 2>/dev/null || true
}

queued() {
  # A message is a directory incoming/MSGID while received, then queue/BUCKET/MSGID.
  local a b
  a=$(find "$spool/incoming" -mindepth 1 -maxdepth 1 -type d 2>/dev/null | wc -l)
  b=$(find "$spool/queue" -mindepth 2 -maxdepth 2 -type d 2>/dev/null | wc -l)
  echo $((a + b))
}

wait_port() {
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

write_sink() {
  cat >"$root/sink.py" <<'PY'
# Accepts SMTP and forgets every message; ACKs every read at once (TCP_QUICKACK).
import socket, sys, threading

def session(c):
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    c.sendall(b"220 sink ESMTP\r\n")
    buf, data = b"", False
    while True:
        d = c.recv(65536)
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
        if not d:
            break
        buf += d
        out = []
        while True:
            if data:
                i = buf.find(b"\r\n.\r\n")
                if i < 0:
                    buf = buf[-4:]
                    break
                buf, data = buf[i + 5:], False
                out.append(b"250 2.0.0 Ok: discarded\r\n")
                continue
            i = buf.find(b"\r\n")
            if i < 0:
                break
            verb, buf = buf[:4].upper(), buf[i + 2:]
            if verb == b"DATA":
                out.append(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                buf, data = b"\r\n" + buf, True
            elif verb == b"QUIT":
                out.append(b"221 2.0.0 Bye\r\n")
            else:
                out.append(b"250 Ok\r\n")
        if out:
            c.sendall(b"".join(out))
    c.close()

ls = socket.socket()
ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind(("127.0.0.1", int(sys.argv[1])))
ls.listen(128)
while True:
    conn, _ = ls.accept()
    threading.Thread(target=session, args=(conn,), daemon=True).start()
PY
}

# OpenSMTPD listens with a backlog of 5 (SMTPD_BACKLOG, compile-time). A client that
# opens a connection per message from 20 sessions (smtp-source) overflows it: Linux drops
# the SYN and the client resends it 1 s, 3 s, ... later (TcpExtListenOverflows), and
# 2,000 messages take 300 s, which measures the backlog, not the MTA. So, unless
# OPENSMTPD_LISTEN_BACKLOG=0, the listening socket's backlog is raised once it runs:
# pidfd_getfd(2) (Linux >= 5.6, root) gives us a copy of the socket from the smtpd
# process that holds it, and listen(2) on that copy changes the backlog of the one socket.
# (Postfix's master listens with a backlog of its process limit, 200 here; tokio's is 1024.)
raise_backlog() {
  local pids p
  pids=$(for p in /proc/[0-9]*; do [ "$(readlink "$p/exe" 2>/dev/null)" != "$smtpd" ] || echo "${p#/proc/}"; done)
  # shellcheck disable=SC2086
  python3 - "$port" "$backlog" $pids <<'PY' || die "could not raise the listen backlog"
import ctypes, os, socket, sys
port, backlog, pids = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
inodes = set()
for line in open("/proc/net/tcp").read().splitlines()[1:]:
    f = line.split()
    if f[1] == "0100007F:%04X" % port and f[3] == "0A":  # 127.0.0.1:port, LISTEN
        inodes.add("socket:[%s]" % f[9])
libc = ctypes.CDLL(None, use_errno=True)
SYS_pidfd_getfd = 438  # the same number on every Linux architecture
for pid in pids:
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link in inodes:
            pidfd = os.pidfd_open(int(pid))
            copy = libc.syscall(SYS_pidfd_getfd, pidfd, int(fd), 0)
            if copy < 0:
                sys.exit("pidfd_getfd: " + os.strerror(ctypes.get_errno()))
            socket.socket(fileno=copy).listen(backlog)
            sys.exit(0)
sys.exit("listening socket not found")
PY
}

case "$cmd" in
start)
  [ "$port" != 25 ] && [ "$sink_port" != 25 ] || die "port 25 is Postfix's"
  install_opensmtpd
  stop_all
  # A start that fails half-way leaves nothing running or mounted.
  trap 'rc=$?; [ $rc = 0 ] || stop_all' EXIT
  mkdir -p "$root/run" "$root/etc"
  if [ "$sync_spool" = 1 ]; then
    [ -f "$root/spool.img" ] || { truncate -s 2G "$root/spool.img"; mkfs.ext4 -q -F "$root/spool.img"; }
    mkdir -p "$spool"
    mount -o loop,sync,dirsync "$root/spool.img" "$spool"
    touch "$root/run/spool.mounted"
    rm -rf "${spool:?}"/*
    chown root:root "$spool"; chmod 0711 "$spool"   # what smtpd checks for
  fi
  write_sink
  setsid python3 "$root/sink.py" "$sink_port" </dev/null >"$root/run/sink.log" 2>&1 &
  echo $! >"$root/run/sink.pid"
  wait_port "$sink_port" && kill -0 "$(cat "$root/run/sink.pid")" 2>/dev/null \
    || die "the sink did not start on 127.0.0.1:$sink_port (port taken?)"
  cat >"$root/etc/smtpd.conf" <<CONF
# Written by bench/opensmtpd.sh: accept for example.test, queue, relay to the local sink.
# max-mails: messages a client session may send (default 100; bench/latency.py keeps
# its sessions). queue ttl: nothing should wait long, the sink is local.
smtp limit max-mails 1000000
queue ttl 1h
mta limit max-conn-per-host 1 max-conn-per-route 1 conn-delay-route 0 conn-delay-relay 0 session-mail-max 100000000 session-keepalive 86400 task-hiwat 100000 task-lowat 50000 task-release 1000
listen on 127.0.0.1 port $port hostname opensmtpd.bench.test
action "sink" relay host smtp+notls://127.0.0.1:$sink_port
match from local for domain "example.test" action "sink"
CONF
  chmod 644 "$root/etc/smtpd.conf"
  "$smtpd" -n -f "$root/etc/smtpd.conf" >/dev/null 2>&1 || { "$smtpd" -n -f "$root/etc/smtpd.conf"; die "bad config"; }
  # OpenSMTPD resolves every client's address (PTR) and the relay's with its own resolver
  # (libasr: DNS first, then /etc/hosts), and nothing turns that off: each connection
  # would query the nameserver in /etc/resolv.conf, off the machine, and wait for its
  # answer (5 s stalls seen). So it runs in a mount namespace of its own where
  # /etc/resolv.conf says `lookup file` (libasr's keyword: /etc/hosts only) and, where
  # it exists, /etc/mailname gives its name without a lookup. -F: foreground (so $! is
  # the smtpd parent), log to syslog, like Postfix (on these machines there is no
  # syslog daemon: every server's log lines go nowhere, at the same small cost);
  # OPENSMTPD_LOG=1: -d, log to run/smtpd.log instead (about 6 lines per message).
  logopt=-F; [ "${OPENSMTPD_LOG:-0}" = 1 ] && logopt=-d
  printf 'lookup file\n' >"$root/etc/resolv.conf"
  echo opensmtpd.bench.test >"$root/etc/mailname"
  binds="mount --bind $root/etc/resolv.conf /etc/resolv.conf"
  [ -f /etc/mailname ] && binds="$binds && mount --bind $root/etc/mailname /etc/mailname"
  setsid unshare --mount --propagation private sh -c "$binds && exec $smtpd $logopt -f $root/etc/smtpd.conf" \
    </dev/null >"$root/run/smtpd.log" 2>&1 &
  echo $! >"$root/run/smtpd.pid"
  wait_port "$port" && kill -0 "$(cat "$root/run/smtpd.pid")" 2>/dev/null \
    || { tail -20 "$root/run/smtpd.log" >&2; die "did not start on 127.0.0.1:$port (port taken? OPENSMTPD_LOG=1 shows its log)"; }
  [ "$backlog" = 0 ] || raise_backlog
  echo "opensmtpd: listening on 127.0.0.1:$port (queue $spool, sync mount: $sync_spool, listen backlog: ${backlog/#0/5 as built}; relays to the sink on 127.0.0.1:$sink_port)" ;;
stop)
  stop_all ;;
queued)
  queued ;;
wait-empty)
  end=$((SECONDS + ${2:-60}))
  while [ "$(queued)" != 0 ]; do
    [ $SECONDS -lt $end ] || { echo "opensmtpd: $(queued) messages still queued" >&2; exit 1; }
    sleep 0.2
  done ;;
pid)
  pid_of "$root/run/smtpd.pid" "$smtpd" || die "not running" ;;
*)
  echo "usage: $0 start [PORT] | stop | queued | wait-empty [SECONDS] | pid" >&2; exit 2 ;;
esac
