#!/usr/bin/env bash
# The server's CPU instructions per request, counted by callgrind: a figure other jobs on the machine
# cannot move (unlike requests per second or CPU time), for comparing two source trees.
#
#   bench/instructions.sh SRC_DIR PATH [SECONDS]
#
# Starts `jwks-service serve` from SRC_DIR (PYTHONPATH; e.g. this checkout, or the code before a change:
# `git archive REV | tar -x -C DIR`) under valgrind's callgrind with instrumentation off, on SQLite and
# the default ES256 keyset; once it answers, turns instrumentation on, loads PATH with wrk (1 thread, 8
# kept-alive connections, SECONDS, default 20), turns it off, stops the server and prints the
# instructions counted divided by the requests wrk completed. Needs valgrind and wrk (Debian packages).
# The server runs about 50 times slower under valgrind; the count includes the event loop's own work
# while it waits, so compare trees with the same PATH and SECONDS.
set -euo pipefail
SRC=$(cd "$1" && pwd)
URLPATH=$2
SECONDS_RUN=${3:-20}
HERE=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-$HERE/.venv/bin/python}
for tool in valgrind callgrind_control wrk curl; do
  command -v "$tool" > /dev/null || { echo "instructions.sh: $tool is needed" >&2; exit 2; }
done
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
PORT=$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat > "$WORK/jwks.toml" << EOF
issuer = "http://127.0.0.1:$PORT"
listen = "127.0.0.1:$PORT"
[store]
url = "sqlite:///$WORK/jwks.db"
[secrets]
kek_file = "$WORK/kek"
EOF
cd "$WORK"
PYTHONPATH=$SRC valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$WORK/callgrind.out" \
  "$PYTHON" -m jwks_service serve --config "$WORK/jwks.toml" > "$WORK/server.log" 2>&1 &
SERVER=$!
for _ in $(seq 1 600); do
  curl -s -o /dev/null "http://127.0.0.1:$PORT/healthz" && break
  sleep 0.5
done
wrk -t1 -c8 -d2s "http://127.0.0.1:$PORT$URLPATH" > /dev/null  # warm up, not counted
callgrind_control -i on "$SERVER" > /dev/null 2>&1
wrk -t1 -c8 -d"${SECONDS_RUN}s" "http://127.0.0.1:$PORT$URLPATH" > "$WORK/wrk.txt"
callgrind_control -i off "$SERVER" > /dev/null 2>&1
kill -TERM "$SERVER"
wait "$SERVER" || true
REQUESTS=$(grep -oE '^ +[0-9]+ requests' "$WORK/wrk.txt" | awk '{print $1}')
TOTAL=$(grep -E '^totals:' "$WORK/callgrind.out" | awk '{print $2}')
echo "$SRC $URLPATH: $REQUESTS requests, $TOTAL instructions, $((TOTAL / REQUESTS)) per request"
grep -E 'Non-2xx|Socket errors' "$WORK/wrk.txt" || true
