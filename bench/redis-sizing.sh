#!/usr/bin/env bash
# Redis memory per allowlist entry with [cluster] (docs/scaling.md, docs/benchmarks.md): a
# private Redis and a gateway on loopback; N entries (default 20000, one /32 each, user
# names of 8 characters) added through the gateway's control channel, as `mailgate allowlist
# add` does; Redis's used_memory read before and after. Prints the bytes per entry, and one
# entry's key as MEMORY USAGE sees it.
#
# Usage: bench/redis-sizing.sh [N]
# Needs: a Rust toolchain, redis-server and redis-cli (Debian's redis-server), python3.
# Environment: BASE_PORT (default 40000) moves every port.

set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
N=${1:-20000}
B=${BASE_PORT:-40000}
MG_POP3=$((B + 1110)); MG_POP3S=$((B + 1995)); MG_SMTP=$((B + 2525))
MG_SUB=$((B + 2587)); MG_SUBS=$((B + 2465)); MG_CONTROL=$((B + 2526))
DOWNSTREAM=$((B + 3526)); REDIS_PORT=$((B + 6380))

# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
bench_build mailgate
MAILGATE=$TARGET_DIR/release/mailgate

T=$(mktemp -d /tmp/mailgate-sizing.XXXXXX)
PIDS=()
cleanup() {
    set +e
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
    sleep 0.5
    rm -rf "$T"
}
trap cleanup EXIT

redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no --dir "$T" \
    --logfile "$T/redis.log" --daemonize no &
PIDS+=("$!")
wait_port "$REDIS_PORT"
rcli() { redis-cli -p "$REDIS_PORT" "$@"; }

bench_users "$T"
bench_mailgate_config "$T" "$T/mailgate"
printf '\n[cluster]\nredis = "redis://127.0.0.1:%s/0"\n' "$REDIS_PORT" >> "$T/mailgate/mailgate.toml"
"$MAILGATE" serve --config "$T/mailgate/mailgate.toml" > "$T/mailgate/log" 2>&1 &
PIDS+=("$!")
wait_port "$MG_CONTROL"
sleep 0.5

used() { rcli INFO memory | sed -n 's/^used_memory:\([0-9]*\).*/\1/p'; }
before=$(used)
python3 - "$T/mailgate/state/control.key" "$MG_CONTROL" "$N" <<'PY'
import socket, sys
key = open(sys.argv[1]).read().strip()
port, n = int(sys.argv[2]), int(sys.argv[3])
for i in range(n):
    ip = "10.%d.%d.%d" % (i >> 16 & 255, i >> 8 & 255, i & 255)
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(("KEY %s\nADD %s 1800 user%04d\n" % (key, ip, i % 10000)).encode())
        answer = b""
        while not answer.endswith(b"OK\n") and b"ERR" not in answer:
            chunk = s.recv(4096)
            if not chunk:
                break
            answer += chunk
        if b"ERR" in answer:
            sys.exit("ADD %s: %s" % (ip, answer.decode(errors="replace")))
PY
after=$(used)
keys=$(rcli DBSIZE)
echo "entries added: $N; keys in Redis: $keys"
echo "used_memory: $before -> $after bytes"
awk -v a="$after" -v b="$before" -v n="$N" \
    'BEGIN { printf "bytes per allowlist entry: %.0f\n", (a - b) / n }'
echo "MEMORY USAGE of one entry's key (mailgate:allow:10.0.0.1/32):" \
    "$(rcli MEMORY USAGE mailgate:allow:10.0.0.1/32)"
echo "redis $(rcli INFO server | sed -n 's/^redis_version:\(.*\)\r$/\1/p'); $(date -u +%Y-%m-%dT%H:%MZ)"
