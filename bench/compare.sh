#!/usr/bin/env bash
# Side-by-side benchmark: mailgate against private Postfix, Dovecot and smtp-sink instances on
# loopback, the same scenarios in one run, printed as a markdown table with ratios and server
# CPU per session. See docs/benchmarks.md for what each scenario does and how to read the table.
#
# Usage: bench/compare.sh [--duration 5s] [--runs 1] [--full] [--mailgate-only] [--cluster-only]
#                         [--keep]
#   --full           the issue's protocol: medians of 3 runs of 10 s (about 15 minutes)
#   --mailgate-only  skip Postfix and Dovecot (smtp-sink is still the baseline)
#   --cluster-only   only relay and pbs, in memory and with [cluster] on a private Redis
#                    (the Redis rows run in every mode when redis-server is installed)
#   --keep           leave the temporary folder (configs, logs, spools) for inspection
# Environment: BASE_PORT (default 40000) moves every port; IDLE (default 5000) connections
# held for the memory figure; LARGE_MESSAGES (default 30000) the size of the pop3-large
# maildrop.
#
# Needs: a Rust toolchain; as root, Debian's postfix, dovecot-core, dovecot-pop3d,
# libsasl2-modules and sasl2-bin (installed here if missing; their system services are never
# enabled or started). Every server runs from a private folder under /tmp with its own
# config, spool and pid files, listens on 127.0.0.1 only, and is stopped by its pid at exit.

set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DURATION=5s
RUNS=1
WARMUP=1s
CONC=16
P99_CONC=128
IDLE=${IDLE:-5000}
OTHERS=1
KEEP=0
CLUSTER_ONLY=0
while [ $# -gt 0 ]; do
    case "$1" in
        --duration) DURATION=$2; shift 2 ;;
        --runs) RUNS=$2; shift 2 ;;
        --full) DURATION=10s; RUNS=3; shift ;;
        --mailgate-only) OTHERS=0; shift ;;
        --cluster-only) OTHERS=0; CLUSTER_ONLY=1; shift ;;
        --keep) KEEP=1; shift ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done

B=${BASE_PORT:-40000}
MG_POP3=$((B + 1110)); MG_POP3S=$((B + 1995)); MG_SMTP=$((B + 2525))
MG_SUB=$((B + 2587)); MG_SUBS=$((B + 2465)); MG_CONTROL=$((B + 2526))
SINK=$((B + 3525)); DOWNSTREAM=$((B + 3526))
PF_SMTP=$((B + 4525)); PF_NTLM=$((B + 4526))
DC_POP3=$((B + 5110)); DC_AUTH=$((B + 5200))
NOTE=""

# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"

# The gateway (package mailgate) and the load generator (package mailgate-load), both in the
# workspace's target folder.
bench_build mailgate mailgate-load
MAILGATE=$TARGET_DIR/release/mailgate
LOAD=$TARGET_DIR/release/mailgate-load

T=$(mktemp -d /tmp/mailgate-bench.XXXXXX)
chmod 755 "$T"
PIDS=()
cleanup() {
    set +e
    [ -n "${MG_PID:-}" ] && kill "$MG_PID" 2>/dev/null
    [ -n "${PF_MASTER:-}" ] && kill "$PF_MASTER" 2>/dev/null
    [ -n "${DC_MASTER:-}" ] && kill "$DC_MASTER" 2>/dev/null
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
    sleep 1
    if [ "$KEEP" = 1 ]; then echo "kept $T"; else rm -rf "$T"; fi
}
trap cleanup EXIT

ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"


# --- users: user0000 .. user0999, {PLAIN}bench-password (plus postmaster for mailgate) -------
bench_users "$T"

# --- smtp-sink: the do-nothing baseline, and the downstream that relayed mail goes to --------
smtp-sink -u nobody 127.0.0.1:$SINK 1024 > "$T/sink.log" 2>&1 &
SINK_PID=$!; PIDS+=("$SINK_PID")
smtp-sink -u nobody 127.0.0.1:$DOWNSTREAM 1024 > "$T/downstream.log" 2>&1 &
PIDS+=("$!")
wait_port $SINK; wait_port $DOWNSTREAM

# --- mailgate ------------------------------------------------------------------------------
bench_mailgate_config "$T" "$T/mailgate"
"$MAILGATE" check-config --config "$T/mailgate/mailgate.toml" > /dev/null

start_mailgate() { # a fresh instance with an empty state folder
    stop_mailgate
    set_aside_state
    # With [cluster], every scenario starts from an empty Redis too.
    if [ -n "${REDIS_PORT:-}" ]; then redis-cli -p "$REDIS_PORT" FLUSHALL > /dev/null; fi
    "$MAILGATE" serve --config "$T/mailgate/mailgate.toml" >> "$T/mailgate/log" 2>&1 &
    MG_PID=$!
    wait_port $MG_SMTP; wait_port $MG_POP3
}
stop_mailgate() {
    if [ -n "${MG_PID:-}" ]; then
        kill "$MG_PID" 2>/dev/null || true
        wait "$MG_PID" 2>/dev/null || true
        MG_PID=""
    fi
}

# --- Postfix and Dovecot -------------------------------------------------------------------
setup_others() {
    if [ "$(id -u)" != 0 ]; then NOTE="not root: Postfix and Dovecot skipped"; return 1; fi
    local pkgs=() p
    for p in postfix dovecot-core dovecot-pop3d libsasl2-modules sasl2-bin; do
        dpkg -s "$p" > /dev/null 2>&1 || pkgs+=("$p")
    done
    if [ ${#pkgs[@]} -gt 0 ]; then
        # Debian's policy-rc.d convention: while it answers 101, package scripts start no
        # service. Put one in place for the install if there is none, and remove it after.
        local guard=0 ok=1
        if [ ! -e /usr/sbin/policy-rc.d ]; then
            printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
            chmod 755 /usr/sbin/policy-rc.d
            guard=1
        fi
        local install=(apt-get install -y -q --no-install-recommends "${pkgs[@]}")
        if ! DEBIAN_FRONTEND=noninteractive "${install[@]}" > "$T/apt.log" 2>&1; then
            apt-get update -q >> "$T/apt.log" 2>&1 || true
            DEBIAN_FRONTEND=noninteractive "${install[@]}" >> "$T/apt.log" 2>&1 || ok=0
        fi
        [ "$guard" = 1 ] && rm -f /usr/sbin/policy-rc.d
        if [ "$ok" = 0 ]; then
            NOTE="apt-get install ${pkgs[*]} failed: $(tail -1 "$T/apt.log")"; return 1
        fi
    fi
    local P=$T/postfix D=$T/dovecot
    mkdir -p "$P/conf" "$P/spool" "$P/data" "$D/run" "$D/state" "$D/mail"
    chown postfix "$P/data"
    chown nobody:nogroup "$D/mail"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
        -subj /CN=postfix.bench.test -keyout "$P/conf/key.pem" -out "$P/conf/cert.pem" \
        > /dev/null 2>&1
    chmod 600 "$P/conf/key.pem"

    # Dovecot: POP3 from Maildir, users in a passwd-file, SASL for Postfix over TCP. The
    # login service runs in Dovecot's documented high-performance mode.
    sed 's/$/:{PLAIN}bench-password/' "$T/names" > "$D/users"
    cat > "$D/dovecot.conf" <<EOF
base_dir = $D/run
state_dir = $D/state
log_path = $D/dovecot.log
protocols = pop3
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login cram-md5
mail_location = maildir:$D/mail/%u
first_valid_uid = 1
default_process_limit = 512
default_client_limit = 20000
passdb {
  driver = passwd-file
  args = scheme=PLAIN $D/users
}
userdb {
  driver = static
  args = uid=nobody gid=nogroup home=$D/mail/%u
}
service pop3-login {
  inet_listener pop3 {
    address = 127.0.0.1
    port = $DC_POP3
  }
  service_count = 0
  process_min_avail = 2
}
service auth {
  inet_listener {
    address = 127.0.0.1
    port = $DC_AUTH
  }
}
EOF
    dovecot -c "$D/dovecot.conf"
    wait_port $DC_POP3
    DC_MASTER=$(cat "$D/run/master.pid")

    # Postfix: relay everything from 127/8 to the downstream smtp-sink; SASL from Dovecot
    # (PLAIN, LOGIN, CRAM-MD5) on one port, from Cyrus (NTLM: Debian's Dovecot has none) on
    # another. No chroot, so the private folders need no copies of /etc.
    cat > "$P/conf/main.cf" <<EOF
compatibility_level = 3.6
queue_directory = $P/spool
data_directory = $P/data
command_directory = /usr/sbin
daemon_directory = /usr/lib/postfix/sbin
shlib_directory = /usr/lib/postfix
meta_directory = /etc/postfix
mail_owner = postfix
setgid_group = postdrop
myhostname = postfix.bench.test
mydomain = bench.test
myorigin = bench.test
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relayhost = [127.0.0.1]:$DOWNSTREAM
smtpd_relay_restrictions = permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination
smtpd_peername_lookup = no
smtpd_sasl_auth_enable = yes
smtpd_sasl_type = dovecot
smtpd_sasl_path = inet:127.0.0.1:$DC_AUTH
smtpd_sasl_local_domain = postfix.bench.test
cyrus_sasl_config_path = $P/conf
smtpd_tls_security_level = may
smtpd_tls_cert_file = $P/conf/cert.pem
smtpd_tls_key_file = $P/conf/key.pem
default_process_limit = 512
maillog_file = $P/maillog
maillog_file_prefixes = $T
biff = no
EOF
    cat > "$P/conf/master.cf" <<EOF
127.0.0.1:$PF_SMTP inet n - n - - smtpd
127.0.0.1:$PF_NTLM inet n - n - - smtpd -o smtpd_sasl_type=cyrus -o smtpd_sasl_path=smtpd
pickup    unix  n - n 60 1 pickup
cleanup   unix  n - n - 0 cleanup
qmgr      unix  n - n 300 1 qmgr
tlsmgr    unix  - - n 1000? 1 tlsmgr
rewrite   unix  - - n - - trivial-rewrite
bounce    unix  - - n - 0 bounce
defer     unix  - - n - 0 bounce
trace     unix  - - n - 0 bounce
verify    unix  - - n - 1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n - - proxymap
smtp      unix  - - n - - smtp
relay     unix  - - n - - smtp
showq     unix  n - n - - showq
error     unix  - - n - - error
retry     unix  - - n - - error
discard   unix  - - n - - discard
anvil     unix  - - n - 1 anvil
scache    unix  - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
EOF
    # Debian's Cyrus looks for <cyrus_sasl_config_path>/sasl/smtpd.conf.
    mkdir -p "$P/conf/sasl"
    cat > "$P/conf/sasl/smtpd.conf" <<EOF
pwcheck_method: auxprop
auxprop_plugin: sasldb
sasldb_path: $P/sasldb2
mech_list: NTLM
EOF
    while read -r u; do
        echo bench-password | saslpasswd2 -p -c -f "$P/sasldb2" -u postfix.bench.test "$u"
    done < "$T/names"
    chown postfix "$P/sasldb2"
    # postfix logs its own failures to syslog only unless stderr is a terminal.
    if ! script -qc "postfix -c $P/conf start" /dev/null > "$T/postfix-start.log" 2>&1; then
        NOTE="Postfix did not start: $(tr '\r\n' '  ' < "$T/postfix-start.log")"; return 1
    fi
    wait_port $PF_SMTP
    PF_MASTER=$(tr -d ' ' < "$P/spool/pid/master.pid")
}

if [ "$OTHERS" = 1 ] && ! setup_others; then
    OTHERS=0
    echo "warning: $NOTE" >&2
fi

# --- running the load generator ------------------------------------------------------------
RESULTS=$T/results
: > "$RESULTS"

# run KEY SERVER PIDS LOAD-ARGS...: one measurement; appends "KEY SERVER rate cpu p99 errors".
run() {
    local key=$1 server=$2 pids=$3; shift 3
    local pidargs=() p out line
    for p in $pids; do pidargs+=(--server-pid "$p"); done
    out=$("$LOAD" --duration "$DURATION" --runs "$RUNS" --warmup "$WARMUP" "${pidargs[@]}" \
        --label "$key" "$@" 2>&1) || true
    line=$(grep '^RESULT' <<< "$out" || true)
    if [ -z "$line" ]; then
        echo "$key/$server: no result" >&2; echo "$out" | tail -5 >&2
        echo "$key $server 0 - - fail" >> "$RESULTS"; return
    fi
    field() { result_field "$1" "$line"; }
    echo "$key $server $(field rate) $(field cpu_ms) $(field p99_ms) $(field errors)" >> "$RESULTS"
    printf '%-20s %-16s %9s/s  cpu %8s ms  p99 %8s ms  errors %s  unsettled %s\n' "$key" \
        "$server" "$(field rate)" "$(field cpu_ms)" "$(field p99_ms)" "$(field errors)" \
        "$(field left)"
}

PBS_SOURCES=127.1.0.2-127.1.0.251
echo "== smtp-sink (baseline)"
run relay smtp-sink "$SINK_PID" --scenario relay --target 127.0.0.1:$SINK --concurrency $CONC
run relay-c128 smtp-sink "$SINK_PID" --scenario relay --target 127.0.0.1:$SINK \
    --concurrency $P99_CONC

echo "== mailgate (fresh state for each scenario)"
mg() { # KEY LOAD-ARGS...: counts the CPU of relaying what the sessions queued, too
    local key=$1; shift
    start_mailgate
    run "$key" mailgate "$MG_PID ${MG_EXTRA_PIDS:-}" --settle-dir "$T/mailgate/state/spool" "$@"
}
mg relay --scenario relay --target 127.0.0.1:$MG_SMTP --concurrency $CONC
mg pbs --scenario pbs --target 127.0.0.1:$MG_SMTP --pop3 127.0.0.1:$MG_POP3 \
    --sources $PBS_SOURCES --concurrency $CONC
if [ "$CLUSTER_ONLY" = 0 ]; then
for mech in plain login cram ntlm; do
    mg auth-$mech --scenario auth-$mech --target 127.0.0.1:$MG_SUB --concurrency $CONC
done
mg pop3 --scenario pop3 --target 127.0.0.1:$MG_POP3 --concurrency $CONC
mg relay-starttls --scenario relay --tls starttls --target 127.0.0.1:$MG_SMTP --concurrency $CONC
mg auth-plain-implicit --scenario auth-plain --tls implicit --target 127.0.0.1:$MG_SUBS \
    --concurrency $CONC
mg pop3-stls --scenario pop3 --tls starttls --target 127.0.0.1:$MG_POP3 --concurrency $CONC
mg pop3s --scenario pop3 --tls implicit --target 127.0.0.1:$MG_POP3S --concurrency $CONC
mg relay-c128 --scenario relay --target 127.0.0.1:$MG_SMTP --concurrency $P99_CONC
# Local delivery: the relay session, to a local user's Maildir instead of the smarthost.
mg local --scenario relay --rcpt user0000@example.test --target 127.0.0.1:$MG_SMTP \
    --concurrency $CONC
# A large maildrop: one client at a time logs in to a mailbox of $LARGE_MESSAGES messages and
# reads STAT and the whole UIDL listing; the warm-up lets each server build its index or cache.
bench_large_mailbox "$T/large/user0000" "$LARGE_MESSAGES"
LARGE_ARGS=(--scenario pop3-uidl --users 1 --concurrency 1)
start_mailgate
mkdir -p "$T/mailgate/state/maildir"
cp -a "$T/large/user0000" "$T/mailgate/state/maildir/"
run pop3-large mailgate "$MG_PID" "${LARGE_ARGS[@]}" --target 127.0.0.1:$MG_POP3
idle() { # SCENARIO PORT: holds $IDLE connections on a fresh mailgate; sets HELD and BYTES
    start_mailgate
    local line
    line=$("$LOAD" --scenario "$1" --target 127.0.0.1:"$2" --idle "$IDLE" \
        --server-pid "$MG_PID" --hold 1s 2>&1 | grep '^RESULT' || true)
    HELD=$(result_field held "$line"); BYTES=$(result_field bytes_per_conn "$line")
}
idle relay $MG_SMTP; IDLE_HELD=$HELD; IDLE_BYTES=$BYTES
echo "idle: $IDLE_HELD connections held, ${IDLE_BYTES:-?} bytes each"
idle pop3 $MG_POP3; POP3_IDLE_HELD=$HELD; POP3_IDLE_BYTES=$BYTES
echo "idle: $POP3_IDLE_HELD POP3 connections held, ${POP3_IDLE_BYTES:-?} bytes each"
fi
stop_mailgate

# --- mailgate with [cluster]: the same relay and pbs scenarios on a private Redis ----------
# Redis's CPU is counted with the gateway's.
if command -v redis-server > /dev/null 2>&1; then
    echo "== mailgate with [cluster] on a private Redis"
    REDIS_PORT=$((B + 6379))
    redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no \
        --dir "$T" --logfile "$T/redis.log" --daemonize no &
    REDIS_PID=$!; PIDS+=("$REDIS_PID")
    wait_port "$REDIS_PORT"
    cp "$T/mailgate/mailgate.toml" "$T/mailgate/memory.toml"
    printf '\n[cluster]\nredis = "redis://127.0.0.1:%s/0"\n' "$REDIS_PORT" \
        >> "$T/mailgate/mailgate.toml"
    MG_EXTRA_PIDS=$REDIS_PID
    mg relay-redis --scenario relay --target 127.0.0.1:$MG_SMTP --concurrency $CONC
    mg pbs-redis --scenario pbs --target 127.0.0.1:$MG_SMTP --pop3 127.0.0.1:$MG_POP3 \
        --sources $PBS_SOURCES --concurrency $CONC
    stop_mailgate
    MG_EXTRA_PIDS=""
    cp "$T/mailgate/memory.toml" "$T/mailgate/mailgate.toml"
else
    NOTE="${NOTE:+$NOTE; }redis-server not installed: the [cluster] rows skipped"
fi

if [ "$OTHERS" = 1 ]; then
    echo "== Postfix (+ Dovecot SASL) and Dovecot"
    run relay postfix "$PF_MASTER" --scenario relay --target 127.0.0.1:$PF_SMTP \
        --concurrency $CONC
    for mech in plain login cram; do
        run auth-$mech postfix "$PF_MASTER $DC_MASTER" --scenario auth-$mech \
            --target 127.0.0.1:$PF_SMTP --concurrency $CONC
    done
    run auth-ntlm postfix "$PF_MASTER" --scenario auth-ntlm --target 127.0.0.1:$PF_NTLM \
        --concurrency $CONC
    run pop3 dovecot "$DC_MASTER" --scenario pop3 --target 127.0.0.1:$DC_POP3 \
        --concurrency $CONC
    run pbs dovecot+postfix "$PF_MASTER $DC_MASTER" --scenario pbs \
        --target 127.0.0.1:$PF_SMTP --pop3 127.0.0.1:$DC_POP3 --sources $PBS_SOURCES \
        --concurrency $CONC
    run relay-starttls postfix "$PF_MASTER" --scenario relay --tls starttls \
        --target 127.0.0.1:$PF_SMTP --concurrency $CONC
    run relay-c128 postfix "$PF_MASTER" --scenario relay --target 127.0.0.1:$PF_SMTP \
        --concurrency $P99_CONC
    rm -rf "$T/dovecot/mail/user0000"
    cp -a "$T/large/user0000" "$T/dovecot/mail/"
    chown -R nobody:nogroup "$T/dovecot/mail/user0000"
    run pop3-large dovecot "$DC_MASTER" "${LARGE_ARGS[@]}" --target 127.0.0.1:$DC_POP3
fi

# --- the table -----------------------------------------------------------------------------
echo
echo "Duration $DURATION x $RUNS run(s) (medians), warm-up $WARMUP; concurrency $CONC" \
    "(c128: $P99_CONC); $(nproc) CPUs; $(date -u +%Y-%m-%dT%H:%MZ)"
[ -n "$NOTE" ] && echo "Note: $NOTE"
echo
echo "| scenario | mailgate /s | compared with | its /s | ratio | mailgate CPU ms/session | its CPU ms/session | mailgate p99 ms | its p99 ms |"
echo "|---|---:|---|---:|---:|---:|---:|---:|---:|"
awk '
    { rate[$1" "$2] = $3; cpu[$1" "$2] = $4; p99[$1" "$2] = $5; err[$1" "$2] = $6
      if (!($1 in seen)) { seen[$1] = 1; order[n++] = $1 } }
    END {
        for (i = 0; i < n; i++) {
            k = order[i]; m = k" mailgate"
            if (!(m in rate)) continue
            others = 0
            for (j in rate) {
                split(j, parts, " "); if (parts[1] != k || parts[2] == "mailgate") continue
                others++
                ratio = (rate[j] > 0) ? sprintf("%.2f", rate[m] / rate[j]) : "-"
                flag = (err[m] + 0 > 0 || err[j] + 0 > 0) ? " (errors: " err[m] "/" err[j] ")" : ""
                printf "| %s | %.0f | %s | %.0f | %s%s | %s | %s | %s | %s |\n", k, rate[m], \
                    parts[2], rate[j], ratio, flag, cpu[m], cpu[j], p99[m], p99[j]
            }
            if (others == 0)
                printf "| %s | %.0f | - | - | - | %s | - | %s | - |\n", k, rate[m], cpu[m], p99[m]
        }
    }' "$RESULTS"
echo
echo "- idle: ${IDLE_HELD:-0} SMTP connections held on mailgate: ${IDLE_BYTES:-?} bytes of server RSS each"
echo "- idle: ${POP3_IDLE_HELD:-0} POP3 connections held on mailgate: ${POP3_IDLE_BYTES:-?} bytes of server RSS each"
awk '$2 == "mailgate" { rate[$1] = $3 }
    END { for (k in rate) if (k ~ /-redis$/) { base = substr(k, 1, length(k) - 6)
              if (rate[base] > 0) printf "- cluster: %s with Redis %.0f/s, in memory %.0f/s: %.2fx\n", \
                  base, rate[k], rate[base], rate[k] / rate[base] } }' "$RESULTS"
