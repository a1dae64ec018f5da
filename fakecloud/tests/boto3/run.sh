#!/usr/bin/env bash
# boto3 against fakecloud: every AWS operation the worker calls, parsed by the reference client
# and checked member by member against botocore's models (see check_fakecloud.py).
#
#   fakecloud/tests/boto3/run.sh            # venv in $BUYONCE_VENV (default ~/.cache/buyonce/venv)
set -euo pipefail
cd "$(dirname "$0")/../../.."

venv="${BUYONCE_VENV:-$HOME/.cache/buyonce/venv}"
if ! "$venv/bin/python" -c 'import boto3' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r fakecloud/tests/boto3/requirements.txt
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check -r fakecloud/tests/boto3/requirements.txt

cargo build --quiet -p buyonce-fakecloud --bin buyonce-fakecloud
target="${CARGO_TARGET_DIR:-target}"
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
log=$(mktemp)
"$target/debug/buyonce-fakecloud" --listen "127.0.0.1:$port" --ri-activation-delay 0 >"$log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true; rm -f "$log"' EXIT
python3 - "$port" <<'PY'
import socket, sys, time
for _ in range(100):
    try:
        socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=0.2).close()
        break
    except OSError:
        time.sleep(0.1)
PY
"$venv/bin/python" fakecloud/tests/boto3/check_fakecloud.py "http://127.0.0.1:$port" || {
  echo "fakecloud log:"; tail -50 "$log"; exit 1
}
