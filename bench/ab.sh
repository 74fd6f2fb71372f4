#!/usr/bin/env bash
# Checks a change: alternating runs of two mailgate builds, with smtp-sink measured before
# each pair, so that both builds see the same machine (throughput here moves by 10% from run
# to run, more than most single changes gain). Prints every round and the medians.
# See docs/benchmarks.md, "Checking a change".
# CPU per session is shown twice: mailgate's own, and the whole machine's less the load
# generator's (it also counts work left to kernel threads, such as writing back files).
#
# Usage: bench/ab.sh [--rounds 3] [--duration 10s] [--concurrency 16] [--scenario relay]
#                    OLD-BINARY NEW-BINARY
#   e.g.  git stash; cargo build --release -p mailgate; cp target/release/mailgate /tmp/mg-old
#         git stash pop; cargo build --release -p mailgate
#         bench/ab.sh /tmp/mg-old target/release/mailgate
# (the load generator, package mailgate-load, is built here from the current tree)
# Scenarios: relay, auth-plain, auth-login, auth-cram, auth-ntlm, pop3, local, pop3-large (as
# in compare.sh; pop3-large is one client at a time on a maildrop of LARGE_MESSAGES).
# Environment: BASE_PORT (default 30000) moves every port. Needs smtp-sink (Debian: postfix).

set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
ROUNDS=3
DURATION=10s
CONC=16
SCENARIO=relay
while [ $# -gt 2 ]; do
    case "$1" in
        --rounds) ROUNDS=$2; shift 2 ;;
        --duration) DURATION=$2; shift 2 ;;
        --concurrency) CONC=$2; shift 2 ;;
        --scenario) SCENARIO=$2; shift 2 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done
if [ $# -ne 2 ]; then
    sed -n '2,14p' "$0" >&2
    exit 2
fi
OLD=$(realpath "$1"); NEW=$(realpath "$2")
command -v smtp-sink > /dev/null || { echo "smtp-sink not found (Debian: postfix)" >&2; exit 1; }

B=${BASE_PORT:-30000}
MG_POP3=$((B + 1110)); MG_POP3S=$((B + 1995)); MG_SMTP=$((B + 2525))
MG_SUB=$((B + 2587)); MG_SUBS=$((B + 2465)); MG_CONTROL=$((B + 2526))
SINK=$((B + 3525)); DOWNSTREAM=$((B + 3526))
LOAD_ARGS=(--scenario "$SCENARIO")
case "$SCENARIO" in
    relay) TARGET=$MG_SMTP ;;
    auth-*) TARGET=$MG_SUB ;;
    pop3) TARGET=$MG_POP3 ;;
    local) TARGET=$MG_SMTP; LOAD_ARGS=(--scenario relay --rcpt user0000@example.test) ;;
    pop3-large) TARGET=$MG_POP3; CONC=1; LOAD_ARGS=(--scenario pop3-uidl --users 1) ;;
    *) echo "unknown scenario $SCENARIO" >&2; exit 2 ;;
esac

# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"

bench_build mailgate-load
LOAD=$TARGET_DIR/release/mailgate-load

T=$(mktemp -d /tmp/mailgate-ab.XXXXXX)
chmod 755 "$T"
PIDS=()
MG_PID=""
cleanup_servers() {
    set +e
    [ -n "$MG_PID" ] && kill "$MG_PID" 2>/dev/null
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
}
trap 'cleanup_servers; rm -rf "$T"' EXIT

bench_users "$T"
bench_mailgate_config "$T" "$T/mailgate"
[ "$SCENARIO" = pop3-large ] && bench_large_mailbox "$T/large/user0000" "$LARGE_MESSAGES"
smtp-sink -u nobody 127.0.0.1:$SINK 1024 > "$T/sink.log" 2>&1 &
SINK_PID=$!; PIDS+=("$SINK_PID")
smtp-sink -u nobody 127.0.0.1:$DOWNSTREAM 1024 > "$T/downstream.log" 2>&1 &
PIDS+=("$!")
wait_port $SINK; wait_port $DOWNSTREAM

measure() { # label target pids...: one run; prints "rate cpu machine-cpu" (ms per session)
    local label=$1 target=$2; shift 2
    local pidargs=() p line
    for p in "$@"; do pidargs+=(--server-pid "$p"); done
    # mailgate's CPU includes relaying what the sessions queued.
    [ "$label" = mailgate ] && pidargs+=(--settle-dir "$T/mailgate/state/spool")
    local args=("${LOAD_ARGS[@]}")
    [ "$label" = smtp-sink ] && args=(--scenario relay)
    line=$("$LOAD" "${args[@]}" --target 127.0.0.1:"$target" \
        --pop3 127.0.0.1:$MG_POP3 --concurrency "$CONC" --duration "$DURATION" --runs 1 \
        --warmup 1s "${pidargs[@]}" 2>&1 |
        grep '^RESULT' || true)
    if [ -z "$line" ] || [ "$(result_field errors "$line")" != 0 ]; then
        echo "$label: failed: ${line:-no result}" >&2
        return
    fi
    echo "$(result_field rate "$line") $(result_field cpu_ms "$line") $(result_field machine_ms "$line")"
}

run_mailgate() { # binary: a fresh instance, one run
    set_aside_state
    "$1" serve --config "$T/mailgate/mailgate.toml" >> "$T/mailgate/log" 2>&1 &
    MG_PID=$!
    wait_port $MG_SMTP; wait_port $MG_POP3
    if [ "$SCENARIO" = pop3-large ]; then
        mkdir -p "$T/mailgate/state/maildir"
        cp -a "$T/large/user0000" "$T/mailgate/state/maildir/"
    fi
    measure mailgate "$TARGET" "$MG_PID"
    kill "$MG_PID"; wait "$MG_PID" 2>/dev/null || true
    MG_PID=""
}

echo "scenario $SCENARIO, concurrency $CONC, $ROUNDS rounds of $DURATION; old: $OLD; new: $NEW"
printf '%-6s %10s %30s %30s\n' round smtp-sink/s "old /s (ratio, ms, machine)" "new /s (ratio, ms, machine)"
: > "$T/rows"
for r in $(seq "$ROUNDS"); do
    # The sink's rate is a reference only for relay; it is measured every round regardless,
    # so each round costs the same.
    sink=$(measure smtp-sink $SINK "$SINK_PID")
    old=$(run_mailgate "$OLD")
    new=$(run_mailgate "$NEW")
    if [ -z "$sink" ] || [ -z "$old" ] || [ -z "$new" ]; then
        echo "round $r failed; the servers' logs are in $T (kept)" >&2
        trap - EXIT; cleanup_servers; exit 1
    fi
    read -r srate _ _ <<< "$sink"
    read -r orate ocpu omach <<< "$old"
    read -r nrate ncpu nmach <<< "$new"
    echo "$srate $orate $ocpu $nrate $ncpu $omach $nmach" >> "$T/rows"
    awk -v r="$r" '{ printf "%-6s %10.0f %9.0f (%.2f, %.3f, %.3f) %9.0f (%.2f, %.3f, %.3f)\n", r, $1, $2, $2/$1, $3, $6, $4, $4/$1, $5, $7 }' \
        <<< "$srate $orate $ocpu $nrate $ncpu $omach $nmach"
done
median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
mo=$(awk '{ print $2 }' "$T/rows" | median); mn=$(awk '{ print $4 }' "$T/rows" | median)
co=$(awk '{ print $3 }' "$T/rows" | median); cn=$(awk '{ print $5 }' "$T/rows" | median)
mco=$(awk '{ print $6 }' "$T/rows" | median); mcn=$(awk '{ print $7 }' "$T/rows" | median)
ro=$(awk '{ print $2 / $1 }' "$T/rows" | median); rn=$(awk '{ print $4 / $1 }' "$T/rows" | median)
printf 'median: old %.0f/s (%.2f x smtp-sink, %.3f ms CPU, machine %.3f), new %.0f/s (%.2f x, %.3f ms, machine %.3f): new/old %.3f\n' \
    "$mo" "$ro" "$co" "$mco" "$mn" "$rn" "$cn" "$mcn" "$(awk -v a="$mn" -v b="$mo" 'BEGIN { print a / b }')"
