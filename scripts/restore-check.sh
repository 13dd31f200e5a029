#!/usr/bin/env bash
# `make restore-check FILE=...`: prove a backup restores, is the code's schema, and its ledger
# verifies. Restores FILE into a scratch database, checks it, and always drops it.
#
#   FILE (argument)       a dump made by scripts/backup.sh (pg_dump custom format)
#   DATABASE_URL          the server (and credentials, which need CREATEDB) the scratch
#                         database is made on; the database it names is not touched
#   RESTORE_DATABASE_URL  another server for the scratch database instead (optional)
#   PG_BIN_DIR            the directory of pg_restore and psql (default: PATH)
#   FLASK                 the flask command (default: .venv/bin/flask --app app:create_app);
#                         it runs with the caller's environment (CREDITCRAFT_ENV, secrets and
#                         ARCHIVE_SIGNING_KEYS, which verify archive checkpoints)
#
# Steps, each reported:
#   1. restore into creditcraft_restore_<UTC time>_<random> (--no-owner --no-privileges,
#      stopping at the first error);
#   2. migrations: the restored revision is the code's head, and the schema has what the
#      models have (what `flask db check` checks);
#   3. the ledger: every account's hash chain from genesis or from its signed archive
#      checkpoint, the archived prefix replayed too, balance = entries = live lots, lifetime
#      totals, lots, and the totals per shop and currency.
#   Steps 2 and 3 are one process: `flask ledger verify --migrations`.
# Ends with "restore-check: PASS" (exit 0) or "restore-check: FAIL ..." (exit 1).
set -euo pipefail
me=restore-check
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
# shellcheck source=scripts/pg-tools.sh
. "$here/pg-tools.sh"

{ [ "$#" -eq 1 ] && [ -n "$1" ]; } || die "usage: scripts/restore-check.sh FILE (a dump from make backup)"
file=$(realpath -e "$1" 2>/dev/null) || die "no such file: $1"
server_url=${RESTORE_DATABASE_URL:-${DATABASE_URL:-}}
[ -n "$server_url" ] || die "DATABASE_URL (or RESTORE_DATABASE_URL) is not set"
read -r -a flask <<<"${FLASK:-$root/.venv/bin/flask --app app:create_app}"
python=$root/.venv/bin/python
[ -x "$python" ] || python=python3

pg_restore=$(pg_tool pg_restore)
psql=$(pg_tool psql)
use_db_tls
admin_url=$(libpq_url "$server_url")
check_versions "$pg_restore" "$psql" "$admin_url"

name="creditcraft_restore_$(date -u +%Y%m%dT%H%M%SZ)_$(od -An -N4 -tx4 /dev/urandom | tr -d ' ')"
# The scratch database's URL, for the app (SQLAlchemy) and for libpq.
app_url=$("$python" -c '
import sys
from sqlalchemy.engine import make_url
url = make_url(sys.argv[1]).set(database=sys.argv[2])
if url.drivername in ("postgresql", "postgres"):
    url = url.set(drivername="postgresql+psycopg")
print(url.render_as_string(hide_password=False))' "$server_url" "$name")
scratch_url=$(libpq_url "$app_url")

sql() { "$psql" -X -q -v ON_ERROR_STOP=1 -d "$admin_url" -c "$1" >/dev/null; }
created=false
# shellcheck disable=SC2317  # run by the EXIT trap
drop_scratch() {
    local rc=$?
    trap - EXIT
    trap '' INT TERM
    if $created; then
        if sql "DROP DATABASE IF EXISTS \"$name\" WITH (FORCE)"; then
            echo "$me: dropped the scratch database $name" >&2
        else
            echo "$me: could not drop the scratch database $name: drop it by hand" >&2
        fi
    fi
    exit "$rc"
}
trap drop_scratch EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

failed=()
echo "$me: restoring $(basename "$file") ($(du -h "$file" | cut -f1)) into the scratch database $name"
sql "CREATE DATABASE \"$name\""
created=true
if ! "$pg_restore" --no-owner --no-privileges --exit-on-error --dbname "$scratch_url" "$file"; then
    echo "$me: FAIL: the dump did not restore (pg_restore said why above)"
    exit 1
fi

# Migrations and the ledger in one process (each start of the app costs seconds).
status=0
DATABASE_URL=$app_url "${flask[@]}" ledger verify --migrations 2>&1 | sed 's/^/  /' || status=$?
case $status in
    0) ;;
    2) failed+=("migrations") ;;
    *) failed+=("ledger") ;;
esac

if [ "${#failed[@]}" -eq 0 ]; then
    echo "$me: PASS ($(basename "$file"))"
    exit 0
fi
echo "$me: FAIL (${failed[*]}) ($(basename "$file"))"
exit 1
