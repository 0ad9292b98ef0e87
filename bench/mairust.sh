# shellcheck shell=bash
# A MaiRust server for the benchmarks, to be sourced:
#
#   . bench/mairust.sh
#   mairust_start DIR BINARY [DATABASE_URL]   -> sets MAIRUST_PID and MAIRUST_PORT
#   mairust_stop                               stops the server mairust_start started
#
# DIR (created, must not hold another server's files) gets config.yaml, the fs object
# store (fsync on) and, without DATABASE_URL, the SQLite database: the embedded default.
# It accepts mail for rcpt@example.test on 127.0.0.1:MAIRUST_PORT; submission and HTTP
# are off, logging at warn. The caller's trap should call mairust_stop.

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# wait_port PORT: up to 10 s for something to accept on 127.0.0.1:PORT.
wait_port() {
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done
  return 1
}

MAIRUST_PID=
MAIRUST_PORT=

mairust_start() {
  local dir=$1 bin=$2 url=${3:-}
  mkdir -p "$dir"
  [ -n "$url" ] || url="sqlite://$dir/mairust.db?mode=rwc"
  MAIRUST_PORT=$(free_port)
  cat >"$dir/config.yaml" <<YAML
server:
  hostname: bench.localhost
smtp:
  listeners:
    inbound:
      address: 127.0.0.1:$MAIRUST_PORT
    submission:
      enabled: false
      address: 127.0.0.1:0
  limits:
    max_sessions_per_ip: 1000
http:
  enabled: false
database:
  url: $url
storage:
  backend: fs
  fs:
    path: $dir/objects
    fsync: true
logging:
  level: warn
$(mail_auth_off "$bin")
YAML
  "$bin" --config "$dir/config.yaml" domain add example.test >/dev/null
  echo 'bench password' | "$bin" --config "$dir/config.yaml" user add rcpt@example.test --password-stdin >/dev/null
  "$bin" --config "$dir/config.yaml" serve >"$dir/serve.log" 2>&1 &
  MAIRUST_PID=$!
  wait_port "$MAIRUST_PORT" || { tail -20 "$dir/serve.log" >&2; echo "mairust did not start" >&2; return 1; }
}

# The sender checks (SPF/DKIM/DMARC DNS lookups) are off: the benches measure the
# SMTP and storage path, as Postfix and OpenSMTPD run beside them with no such checks.
# A binary older than the checks (bench/ab's base) does not know the section: it is
# left out when that binary's config-check refuses it.
mail_auth_off() {
  local probe
  probe=$(mktemp)
  printf 'database:\n  url: "sqlite::memory:"\nstorage:\n  backend: fs\n  fs:\n    path: /nonexistent\nmail_auth:\n  verify: false\n' >"$probe"
  if "$1" --config "$probe" config-check >/dev/null 2>&1; then
    printf 'mail_auth:\n  verify: false\n'
  fi
  rm -f "$probe"
}

mairust_stop() {
  [ -n "$MAIRUST_PID" ] || return 0
  kill "$MAIRUST_PID" 2>/dev/null || true
  wait "$MAIRUST_PID" 2>/dev/null || true
  MAIRUST_PID=
}
