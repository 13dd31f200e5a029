#!/usr/bin/env bash
# Run a command against a throwaway PostgreSQL cluster and Redis server.
#
#   scripts/with-services.sh CMD [ARGS...]
#
# Both servers listen on free 127.0.0.1 ports inside a temp dir and are always
# stopped (and the temp dir removed) when CMD ends, fails or is interrupted.
# The script exits with CMD's status. CMD sees:
#   DATABASE_URL, TEST_DATABASE_URL, PGSUPERUSER_URL
#                     postgresql+psycopg://postgres@127.0.0.1:PORT/creditcraft_test
#   REDIS_URL         redis://127.0.0.1:RPORT/0
#   PG_BIN_DIR        the PostgreSQL bin dir used (psql, pg_dump, ...)
#   PGHOST_SOCKET_DIR the temp dir holding the PostgreSQL Unix socket
# Debian's chromium (for the browser tests) is installed the same way when missing.
# Missing servers are installed with apt-get when run as root (CI); otherwise
# the script says what to install and fails.
set -euo pipefail

DB_NAME=creditcraft_test
me=with-services
die() { echo "$me: $*" >&2; exit 1; }

[ "$#" -ge 1 ] || die "usage: scripts/with-services.sh CMD [ARGS...]"

is_root=false
[ "$(id -u)" -eq 0 ] && is_root=true

# ---------------------------------------------------------------- locate/install
find_pg_bin() {
    local initdb
    initdb=$(printf '%s\n' /usr/lib/postgresql/*/bin/initdb | sort -V | tail -n 1)
    if [ -x "$initdb" ]; then
        dirname "$initdb"
    elif initdb=$(command -v initdb 2>/dev/null) && [ -n "$initdb" ]; then
        dirname "$(readlink -f "$initdb")"  # non-Debian layout: initdb on PATH
    fi
}

PG_BIN_DIR=$(find_pg_bin)
missing=()
[ -n "$PG_BIN_DIR" ] || missing+=(postgresql)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
# Headless Chromium for the browser tests (Debian's; Playwright never downloads a browser).
[ -x /usr/bin/chromium ] || missing+=(chromium)

if [ "${#missing[@]}" -gt 0 ]; then
    if ! $is_root; then
        die "missing ${missing[*]}; install it first (e.g. sudo apt-get install ${missing[*]}) or run as root"
    fi
    command -v apt-get >/dev/null 2>&1 || die "missing ${missing[*]} and apt-get is not available"
    echo "$me: installing ${missing[*]} with apt-get ..." >&2
    apt_log=$(mktemp)
    # Keep the package's own service (e.g. Debian's 15/main cluster on 5432)
    # from starting: we only want the binaries.
    added_policy=false
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        added_policy=true
        trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    apt_ok=true
    { apt-get update -qq &&
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"; } \
        </dev/null >"$apt_log" 2>&1 || apt_ok=false
    if $added_policy; then rm -f /usr/sbin/policy-rc.d; trap - EXIT; fi
    if ! $apt_ok; then
        tail -n 20 "$apt_log" >&2
        rm -f "$apt_log"
        die "apt-get install ${missing[*]} failed"
    fi
    rm -f "$apt_log"
    PG_BIN_DIR=$(find_pg_bin)
    [ -n "$PG_BIN_DIR" ] || die "postgresql installed but no initdb found under /usr/lib/postgresql/*/bin"
    command -v redis-server >/dev/null 2>&1 || die "redis-server still missing after apt-get install"
fi

# ---------------------------------------------------------------- state/cleanup
TMP_DIR=$(mktemp -d /tmp/creditcraft-svc.XXXXXX)
PG_DATA=$TMP_DIR/pgdata
PG_LOG=$TMP_DIR/postgres.log
REDIS_PID=$TMP_DIR/redis.pid
REDIS_LOG=$TMP_DIR/redis.log
pg_started=false

# initdb refuses to run as root: as root run the PG tools as `postgres`, from
# the temp dir (the caller's cwd may not be readable by that user).
as_pg() {
    if $is_root; then
        (cd "$TMP_DIR" && runuser -u postgres -- "$@")
    else
        "$@"
    fi
}

# shellcheck disable=SC2317  # called from the EXIT trap (cleanup)
running() {  # running PID: alive and not a zombie
    local st
    if [ -r "/proc/$1/stat" ]; then
        st=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
        st=${st##*) }
        [ "${st%% *}" != Z ]
    else
        kill -0 "$1" 2>/dev/null
    fi
}

# shellcheck disable=SC2317  # run by the EXIT trap
cleanup() {
    local rc=$?
    trap - EXIT
    trap '' INT TERM  # a second Ctrl-C must not cut the cleanup short
    set +e
    if $pg_started; then
        as_pg "$PG_BIN_DIR/pg_ctl" -D "$PG_DATA" -m immediate -w -t 30 stop >/dev/null 2>&1
    fi
    if [ -s "$REDIS_PID" ]; then
        local pid
        pid=$(cat "$REDIS_PID")
        if kill "$pid" 2>/dev/null; then
            # Redis removes its pidfile on the way out; a zombie waiting for
            # init to reap it counts as gone.
            for _ in $(seq 50); do
                if ! running "$pid" || [ ! -e "$REDIS_PID" ]; then break; fi
                sleep 0.1
            done
            if running "$pid"; then kill -9 "$pid" 2>/dev/null; fi
        fi
    fi
    rm -rf "$TMP_DIR"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

show_log() {  # show_log NAME FILE
    echo "$me: --- last lines of $1 ---" >&2
    tail -n 25 "$2" >&2 2>/dev/null || echo "(no log)" >&2
}

# Two distinct free loopback ports (kernel-assigned; held together so they differ).
free_ports() {
    if command -v python3 >/dev/null 2>&1; then
        python3 - <<'EOF'
import socket
socks = []
for _ in range(2):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(*(s.getsockname()[1] for s in socks))
EOF
    else  # fallback: random high ports nobody answers on
        local p ports=()
        while [ "${#ports[@]}" -lt 2 ]; do
            p=$((20000 + RANDOM % 40000))
            [ "${ports[0]:-}" = "$p" ] && continue
            (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || ports+=("$p")
        done
        echo "${ports[@]}"
    fi
}

redis_ping() {  # redis_ping PORT -> prints the reply
    if command -v redis-cli >/dev/null 2>&1; then
        redis-cli -h 127.0.0.1 -p "$1" ping 2>/dev/null
    else
        (exec 3<>"/dev/tcp/127.0.0.1/$1" && printf 'PING\r\n' >&3 && IFS= read -r -t 2 line <&3 &&
            line=${line%$'\r'} && printf '%s\n' "${line#+}") 2>/dev/null  # "+PONG" -> PONG
    fi
}

# ---------------------------------------------------------------- PostgreSQL
if $is_root; then
    id postgres >/dev/null 2>&1 || die "running as root but there is no 'postgres' user to run initdb as"
    chown postgres: "$TMP_DIR"
fi
if ! as_pg "$PG_BIN_DIR/initdb" -D "$PG_DATA" -U postgres --auth=trust -E UTF8 --no-locale --no-sync \
    >"$TMP_DIR/initdb.log" 2>&1; then
    show_log initdb "$TMP_DIR/initdb.log"
    die "initdb failed"
fi

# A port can be taken between picking it and binding it (e.g. a parallel run):
# retry a few times with fresh ports.
for attempt in 1 2 3 4 5; do
    read -r PG_PORT REDIS_PORT < <(free_ports) || true
    [ -n "${REDIS_PORT:-}" ] || die "could not find free ports"
    pg_started=true  # from here on cleanup must try to stop it
    if as_pg "$PG_BIN_DIR/pg_ctl" -D "$PG_DATA" -l "$PG_LOG" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -p $PG_PORT -k $TMP_DIR -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" \
        start >/dev/null 2>&1; then
        break
    fi
    as_pg "$PG_BIN_DIR/pg_ctl" -D "$PG_DATA" -m immediate -w stop >/dev/null 2>&1 || true
    pg_started=false
    if [ "$attempt" -lt 5 ] && grep -q 'could not bind\|Address already in use' "$PG_LOG" 2>/dev/null; then
        : >"$PG_LOG" 2>/dev/null || true
        continue
    fi
    show_log "PostgreSQL ($PG_LOG)" "$PG_LOG"
    die "PostgreSQL did not start on 127.0.0.1:$PG_PORT"
done

if ! "$PG_BIN_DIR/createdb" -h 127.0.0.1 -p "$PG_PORT" -U postgres "$DB_NAME" >"$TMP_DIR/createdb.log" 2>&1; then
    show_log createdb "$TMP_DIR/createdb.log"
    show_log "PostgreSQL" "$PG_LOG"
    die "createdb $DB_NAME failed"
fi

# ---------------------------------------------------------------- Redis
redis_up=false
for attempt in 1 2 3 4 5; do
    if [ "$attempt" -gt 1 ]; then read -r _ REDIS_PORT < <(free_ports) || true; fi
    rm -f "$REDIS_PID"
    # (exits non-zero only when it fails before daemonizing, e.g. bad option)
    redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save '' --appendonly no --daemonize yes \
        --pidfile "$REDIS_PID" --logfile "$REDIS_LOG" --dir "$TMP_DIR" >"$TMP_DIR/redis-start.log" 2>&1 || break
    for _ in $(seq 100); do  # up to ~10 s
        if [ "$(redis_ping "$REDIS_PORT")" = PONG ]; then redis_up=true; break; fi
        # gave up already (e.g. port taken)? then stop waiting
        if grep -q 'Address already in use\|Failed listening' "$REDIS_LOG" 2>/dev/null; then break; fi
        sleep 0.1
    done
    if $redis_up; then
        for _ in $(seq 50); do [ -s "$REDIS_PID" ] && break; sleep 0.1; done  # pidfile for cleanup
        break
    fi
    if [ "$attempt" -ge 5 ] || ! grep -q 'Address already in use\|Failed listening' "$REDIS_LOG" 2>/dev/null; then
        break
    fi
    : >"$REDIS_LOG"
done
if ! $redis_up; then
    [ -s "$TMP_DIR/redis-start.log" ] && show_log "redis-server output" "$TMP_DIR/redis-start.log"
    show_log "Redis ($REDIS_LOG)" "$REDIS_LOG"
    die "Redis did not start (no PONG on 127.0.0.1:$REDIS_PORT within 10 s)"
fi

# ---------------------------------------------------------------- run
export DATABASE_URL="postgresql+psycopg://postgres@127.0.0.1:$PG_PORT/$DB_NAME"
export TEST_DATABASE_URL="$DATABASE_URL"
export PGSUPERUSER_URL="$DATABASE_URL"
export REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0"
export PG_BIN_DIR
export PGHOST_SOCKET_DIR="$TMP_DIR"

echo "services: postgresql on 127.0.0.1:$PG_PORT, redis on 127.0.0.1:$REDIS_PORT" >&2

# Not exec: the EXIT trap must still stop the servers afterwards.
set +e
"$@"
status=$?
set -e
exit "$status"
