# shellcheck shell=bash
# CPU time of a server, in clock ticks (getconf CLK_TCK, 100 a second), to be sourced:
#
#   . bench/cpu.sh
#   t0=$(cpu_ticks_postfix); ...run, wait until its queue is empty...; t1=$(cpu_ticks_postfix)
#   cpu_us_per_msg "$t0" "$t1" "$messages"        -> e.g. 212
#
#   cpu_ticks_pid PID        one process (MaiRust): user+system time of all its threads
#                            (/proc/PID/stat fields 14+15) plus that of the children it
#                            has waited for (16+17, cutime+cstime; 0 for a server that
#                            never forks).
#   cpu_ticks_tree PID       PID and every process below it, live or exited; see below.
#   cpu_ticks_postfix        cpu_ticks_tree of Postfix's master.
#   cpu_ticks_opensmtpd      cpu_ticks_tree of the smtpd parent of bench/opensmtpd.sh.
#
# What a tree's figure counts. A process's own time (14+15) is in its /proc entry while
# it lives, and while it is a zombie. Once its parent has waited for it, its entry is gone
# and its time, with that of everything it had waited for itself, is added to the
# parent's cutime+cstime (16+17). Postfix's master waits for every child it starts
# (smtpd, cleanup, trivial-rewrite, discard, qmgr, pickup, anvil...; they come and go:
# smtpd and cleanup exit after 100 uses or 100 s idle); OpenSMTPD's parent for its six
# long-lived children (and for any delivery helper it would fork). So the sum over every
# process of the tree, live or zombie, of 14+15+16+17 counts each process that ever ran
# below the root exactly once, and the difference of two readings is the CPU the whole
# server spent between them, children that came and went included.
#
# Limits. A process that exits between the reading of its entry and that of its
# parent's is counted twice, or not at all if the order is the other way round; so
# cpu_ticks_tree reads the tree until two readings in a row agree (a server at rest does
# not change), and a reading should be taken at rest: after the load, once the queue is
# empty (the delivery to discard or to the sink is part of a message's cost). Work done
# for the server by processes outside its tree is not counted: a syslog daemon (there is
# none on these machines: /dev/log is absent, so every server's log lines go nowhere),
# OpenSMTPD's sink (its own process tree), the kernel's writeback threads, the client.
# Resolution: one tick is 10 ms, so count at least a few thousand messages.

# Sum of 14+15+16+17 over ROOT and its descendants, one reading.
_cpu_ticks_tree_once() {
  # comm (field 2) may hold spaces and parentheses: split after the last ") ".
  # A process may exit between the glob and its read: cat then fails, the rest is read.
  { cat /proc/[0-9]*/stat 2>/dev/null || true; } | awk -v root="$1" '
    {
      i = 0; for (j = length($0); j > 0; j--) if (substr($0, j, 1) == ")") { i = j; break }
      pid = substr($0, 1, index($0, " ") - 1)
      n = split(substr($0, i + 2), f, " ")   # f[1] is field 3 (state)
      ppid[pid] = f[2]; t[pid] = f[12] + f[13] + f[14] + f[15]
    }
    END {
      if (!(root in t)) { print "cpu.sh: no process " root > "/dev/stderr"; exit 1 }
      # Walk down from the root: a process is in the tree if an ancestor is the root.
      sum = 0
      for (p in t) {
        q = p; d = 0
        while (q != root && q in ppid && d < 64) { q = ppid[q]; d++ }
        if (q == root) sum += t[p]
      }
      print sum
    }'
}

cpu_ticks_tree() {
  local a b n=0
  a=$(_cpu_ticks_tree_once "$1") || return 1
  while :; do
    b=$(_cpu_ticks_tree_once "$1") || return 1
    [ "$a" = "$b" ] && break
    n=$((n + 1))
    [ $n -lt 20 ] || { echo "cpu.sh: tree of $1 never at rest; last reading kept" >&2; break; }
    a=$b
    sleep 0.05
  done
  echo "$b"
}

cpu_ticks_pid() {
  local s
  s=$(cat "/proc/$1/stat") || return 1
  s=${s##*) }   # fields from 3 on
  # shellcheck disable=SC2086
  set -- $s
  echo $(( ${12} + ${13} + ${14} + ${15} ))
}

cpu_ticks_postfix() {
  local dir pid
  dir=$(postconf -h queue_directory 2>/dev/null || echo /var/spool/postfix)
  pid=$(tr -d ' ' <"$dir/pid/master.pid" 2>/dev/null) || { echo "cpu.sh: postfix not running" >&2; return 1; }
  cpu_ticks_tree "$pid"
}

cpu_ticks_opensmtpd() {
  local pid
  pid=$("$(dirname "${BASH_SOURCE[0]}")/opensmtpd.sh" pid) || return 1
  cpu_ticks_tree "$pid"
}

# cpu_us_per_msg TICKS_BEFORE TICKS_AFTER MESSAGES -> µs of CPU per message
cpu_us_per_msg() {
  awk -v a="$1" -v b="$2" -v n="$3" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.0f\n", (b - a) * 1e6 / hz / n }'
}
