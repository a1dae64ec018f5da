#!/usr/bin/env bash
# RabbitMQ 4.0 (Debian 13's package) in a chroot of its own, beside the machine's broker.
#   rabbitmq4.sh start   make the root file system if missing (~2 min, once), start a fresh node
#   rabbitmq4.sh stop    stop it
#   rabbitmq4.sh ctl ... rabbitmqctl against it
# The test harness's own nodes (RabbitNode) run from the same root when
# BUYONCE_TEST_RABBITMQ_ROOT names it.
# Environment: BUYONCE_RABBITMQ4_ROOT (default ~/.cache/buyonce/rabbitmq4-root),
# BUYONCE_RABBITMQ4_PORT (AMQP, default 5673); node rabbit4@localhost, epmd port 4370,
# distribution port AMQP port + 20000. Prints the AMQP URL on start.
set -euo pipefail
ROOT="${BUYONCE_RABBITMQ4_ROOT:-$HOME/.cache/buyonce/rabbitmq4-root}"
PORT="${BUYONCE_RABBITMQ4_PORT:-5673}"
EPMD_PORT=4370
NODE=rabbit4@localhost
in_root() {
  chroot --userspec=rabbitmq:rabbitmq "$ROOT" env -i PATH=/usr/bin:/bin:/usr/sbin:/sbin \
    HOME=/var/lib/rabbitmq LANG=C.UTF-8 ERL_EPMD_PORT="$EPMD_PORT" RABBITMQ_NODENAME="$NODE" "$@"
}
make_root() {
  [ -x "$ROOT/usr/lib/rabbitmq/bin/rabbitmq-server" ] && return
  command -v debootstrap >/dev/null || {
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq --no-install-recommends debootstrap >/dev/null ||
      { apt-get update -qq && apt-get install -y -qq --no-install-recommends debootstrap >/dev/null; }
  }
  echo "making the RabbitMQ 4 root file system in $ROOT (Debian 13, once)" >&2
  rm -rf "$ROOT.tmp"
  debootstrap --variant=minbase trixie "$ROOT.tmp" http://deb.debian.org/debian >/dev/null
  cp /etc/resolv.conf "$ROOT.tmp/etc/resolv.conf"
  # No service starts inside the chroot while packages install.
  printf '#!/bin/sh\nexit 101\n' >"$ROOT.tmp/usr/sbin/policy-rc.d"
  chmod +x "$ROOT.tmp/usr/sbin/policy-rc.d"
  chroot "$ROOT.tmp" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends rabbitmq-server >/dev/null
  mv "$ROOT.tmp" "$ROOT"
}
answers() {
  python3 - "$PORT" <<'PY'
import socket, sys
try:
    s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=2)
    s.settimeout(5)
    s.sendall(b"AMQP\x00\x00\x09\x01")
    sys.exit(0 if s.recv(1) == b"\x01" else 1)
except OSError:
    sys.exit(1)
PY
}
case "${1:-}" in
  start)
    make_root
    # The broker reads its memory use from /proc (a memory alarm without it is blind).
    mountpoint -q "$ROOT/proc" || mount -t proc proc "$ROOT/proc"
    if answers; then echo "amqp://guest:guest@127.0.0.1:$PORT/%2f"; exit 0; fi
    # A fresh node each time: nothing left over from an earlier run.
    rm -rf "$ROOT/var/lib/rabbitmq/mnesia" "$ROOT/var/log/rabbitmq"/*
    mkdir -p "$ROOT/var/lib/rabbitmq" "$ROOT/var/log/rabbitmq"
    # The chroot's own user (its IDs need not match the machine's rabbitmq user).
    chroot "$ROOT" chown -R rabbitmq:rabbitmq /var/lib/rabbitmq /var/log/rabbitmq
    printf 'listeners.tcp.default = 127.0.0.1:%s\nloopback_users = none\n' "$PORT" \
      >"$ROOT/etc/rabbitmq/rabbitmq.conf"
    printf 'NODENAME=%s\nDIST_PORT=%s\n' "$NODE" "$((PORT + 20000))" \
      >"$ROOT/etc/rabbitmq/rabbitmq-env.conf"
    echo '[].' >"$ROOT/etc/rabbitmq/enabled_plugins"
    in_root /usr/lib/rabbitmq/bin/rabbitmq-server >"$ROOT/var/log/rabbitmq/console.log" 2>&1 </dev/null &
    server=$!
    for _ in $(seq 1 120); do answers && break; kill -0 "$server" 2>/dev/null || break; sleep 1; done
    answers || { echo "RabbitMQ 4 did not start; its console log:" >&2; tail -30 "$ROOT/var/log/rabbitmq/console.log" >&2; exit 1; }
    echo "amqp://guest:guest@127.0.0.1:$PORT/%2f"
    ;;
  stop)
    in_root /usr/lib/rabbitmq/bin/rabbitmqctl -q stop </dev/null >/dev/null 2>&1 || true
    ;;
  ctl)
    shift
    in_root /usr/lib/rabbitmq/bin/rabbitmqctl "$@"
    ;;
  *)
    sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
