# shellcheck shell=bash
# Sourced by scripts/backup.sh and scripts/restore-check.sh: PostgreSQL's client tools and
# the database URL as libpq takes it. The caller sets `me` (its name, for messages).
#
# No message ever prints a URL: it may hold the database password.

die() { echo "${me:-pg-tools}: $*" >&2; exit 1; }

# pg_tool NAME: the tool's path, from PG_BIN_DIR when set, else from PATH.
pg_tool() {
    local name=$1 found
    if [ -n "${PG_BIN_DIR:-}" ]; then
        found="$PG_BIN_DIR/$name"
        [ -x "$found" ] || die "$name not found in PG_BIN_DIR ($PG_BIN_DIR)"
    else
        found=$(command -v "$name" 2>/dev/null) ||
            die "$name not found on PATH: install the PostgreSQL client (e.g. apt-get install postgresql-client) or set PG_BIN_DIR"
    fi
    printf '%s\n' "$found"
}

# libpq_url URL: the app's SQLAlchemy URL (postgresql+psycopg://...) as libpq takes it.
libpq_url() {
    case "$1" in
        postgresql+*://*) printf 'postgresql://%s\n' "${1#*://}" ;;
        postgresql://* | postgres://*) printf '%s\n' "$1" ;;
        *) die "DATABASE_URL is not a PostgreSQL URL (it starts with ${1%%:*}:)" ;;
    esac
}

# The app's TLS settings (DB_SSLMODE, DB_SSLROOTCERT) for libpq, unless PG* are set already.
use_db_tls() {
    if [ -n "${DB_SSLMODE:-}" ] && [ -z "${PGSSLMODE:-}" ]; then export PGSSLMODE=$DB_SSLMODE; fi
    if [ -n "${DB_SSLROOTCERT:-}" ] && [ -z "${PGSSLROOTCERT:-}" ]; then
        export PGSSLROOTCERT=$DB_SSLROOTCERT
    fi
}

# check_versions TOOL PSQL URL: the server's major version must not be newer than TOOL's
# (pg_dump refuses a newer server; better to say so before starting, and what to do).
check_versions() {
    local tool=$1 psql=$2 url=$3 tool_major server_num server_major
    tool_major=$("$tool" --version | sed -nE 's/^[^0-9]*([0-9]+).*/\1/p')
    server_num=$("$psql" -X -A -t -q -d "$url" -c 'SHOW server_version_num') ||
        die "cannot reach the database (psql said why above)"
    server_major=$((server_num / 10000))
    [ -n "$tool_major" ] || die "cannot tell $(basename "$tool")'s version"
    if [ "$server_major" -gt "$tool_major" ]; then
        die "the server runs PostgreSQL $server_major but $(basename "$tool") is version $tool_major: use a client of version $server_major or newer (set PG_BIN_DIR, e.g. /usr/lib/postgresql/$server_major/bin)"
    fi
}
