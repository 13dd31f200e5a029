#!/usr/bin/env bash
# `make backup`: a pg_dump of DATABASE_URL (custom format) into BACKUP_DIR, keeping the newest
# BACKUP_KEEP dumps.
#
#   DATABASE_URL   the app's database (postgresql+psycopg://... is fine)          required
#   BACKUP_DIR     where dumps go (default: backups/ in the repository; git-ignored)
#   BACKUP_KEEP    how many creditcraft-*.dump to keep, newest first (default 14)
#   PG_BIN_DIR     the directory of pg_dump, pg_restore and psql (default: PATH)
#   DB_SSLMODE, DB_SSLROOTCERT   the app's TLS settings, passed on to libpq
#
# The dump is written as creditcraft-YYYYMMDDTHHMMSSZ.dump (UTC), readable by its owner only
# (it holds customers' personal data), checked to be a readable archive (pg_restore --list),
# and only then are older dumps of that exact name pattern deleted; nothing else in
# BACKUP_DIR is touched. Prints the new file's absolute path on stdout.
# `make restore-check FILE=...` proves a dump restores and its ledger verifies.
set -euo pipefail
me=backup
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=scripts/pg-tools.sh
. "$here/pg-tools.sh"

[ -n "${DATABASE_URL:-}" ] || die "DATABASE_URL is not set"
url=$(libpq_url "$DATABASE_URL")
dir=$(realpath -m "${BACKUP_DIR:-$here/../backups}")
keep=${BACKUP_KEEP:-14}
[[ "$keep" =~ ^[1-9][0-9]*$ ]] || die "BACKUP_KEEP must be a whole number, at least 1 (got '$keep')"

pg_dump=$(pg_tool pg_dump)
pg_restore=$(pg_tool pg_restore)
psql=$(pg_tool psql)
use_db_tls
check_versions "$pg_dump" "$psql" "$url"

umask 077
mkdir -p "$dir"
file="$dir/creditcraft-$(date -u +%Y%m%dT%H%M%SZ).dump"
[ ! -e "$file" ] || die "$file exists already (two backups in the same second?)"
partial="$file.partial"
trap 'rm -f "$partial"' EXIT
echo "$me: dumping the database into $file ..." >&2
"$pg_dump" --format=custom --file "$partial" --dbname "$url"
"$pg_restore" --list "$partial" >/dev/null || die "the dump is not a readable archive"
mv "$partial" "$file"
trap - EXIT

mapfile -t dumps < <(find "$dir" -maxdepth 1 -type f -name 'creditcraft-*.dump' -printf '%f\n' |
    grep -E '^creditcraft-[0-9]{8}T[0-9]{6}Z\.dump$' | sort -r)
for old in "${dumps[@]:$keep}"; do
    rm -f -- "${dir:?}/$old"
    echo "$me: removed $old (keeping the newest $keep)" >&2
done
echo "$me: done ($(du -h "$file" | cut -f1))" >&2
printf '%s\n' "$file"
