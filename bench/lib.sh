# Helpers shared by bench/compare.sh and bench/ab.sh; sourced, not run. They expect the
# port variables (MG_POP3, MG_POP3S, MG_SMTP, MG_SUB, MG_SUBS, MG_CONTROL, DOWNSTREAM) and
# ROOT (the repository) to be set.

wait_port() { # port: until something accepts on 127.0.0.1:port (10 s)
    for _ in $(seq 100); do
        (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "nothing listens on 127.0.0.1:$1" >&2
    return 1
}

bench_users() { # dir: writes dir/names (user0000 .. user0999) and dir/users ({PLAIN})
    for i in $(seq 0 999); do printf 'user%04d\n' "$i"; done > "$1/names"
    sed 's/$/:{PLAIN}bench-password/' "$1/names" > "$1/users"
}

bench_mailgate_config() { # users-dir dest: bench/mailgate.toml on this run's ports, users
    mkdir -p "$2"
    cp "$1/users" "$2/users"
    echo 'postmaster:{PLAIN}bench-password' >> "$2/users"
    sed -e "s/:41110/:$MG_POP3/; s/:41995/:$MG_POP3S/; s/:42525/:$MG_SMTP/; s/:42587/:$MG_SUB/" \
        -e "s/:42465/:$MG_SUBS/; s/:42526/:$MG_CONTROL/; s/:43526/:$DOWNSTREAM/" \
        "$ROOT/bench/mailgate.toml" > "$2/mailgate.toml"
}

bench_build() { # package...: release-builds the binaries of each workspace package named
    # (mailgate, mailgate-load); sets TARGET_DIR to the workspace's target folder, where they are
    local args=() p
    for p in "$@"; do args+=(-p "$p"); done
    (cd "$ROOT" && cargo build --release --quiet --bins "${args[@]}")
    if [ -n "${CARGO_TARGET_DIR:-}" ]; then
        TARGET_DIR=$CARGO_TARGET_DIR
    else
        TARGET_DIR=$(cd "$ROOT" && cargo metadata --format-version 1 --no-deps |
            sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
    fi
}

set_aside_state() { # moves the last run's $T/mailgate/state aside; deleted with $T at exit
    # Not deleted here: on ext4 without a journal (this machine's disk), the inode allocator
    # skips inodes freed in the last 30 s, reading their inode table blocks, so deleting the
    # tens of thousands of Maildir files of a `local` run just before the next run made every
    # file that run created cost several times as much, and more with each run.
    [ -e "$T/mailgate/state" ] || return 0
    mv "$T/mailgate/state" "$(mktemp -d "$T/old-state.XXXXXX")/"
}

result_field() { # name line: the value of name=... in a mailgate-load RESULT line
    sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<< "$2"
}

# The large-mailbox POP3 scenario (pop3-large): user0000 keeps years of mail on the server.
LARGE_MESSAGES=${LARGE_MESSAGES:-30000}

bench_large_mailbox() { # dir count: a Maildir at dir ({cur,new,tmp}) with count messages of
    # 1 KiB in cur/, named as Dovecot and mailgate name them (`<time>.M<n>P<pid>.<host>,S=<size>`
    # and the `:2,S` info of a message seen), one every 20 minutes or so: a year and a half.
    local dir=$1 count=$2 i body
    mkdir -p "$dir/cur" "$dir/new" "$dir/tmp"
    body=$(printf 'From: <a@example.test>\r\nTo: <user0000@example.test>\r\nSubject: kept\r\n\r\n')
    while [ ${#body} -lt 1022 ]; do body+="x"; done
    body+=$'\r\n'
    for ((i = 0; i < count; i++)); do
        printf '%s' "$body" > "$dir/cur/$((1600000000 + i * 1200)).M${i}P4242.bench.test,S=1024:2,S"
    done
}
