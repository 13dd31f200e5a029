#!/usr/bin/env bash
# Run benchmarks: `scripts/run-bench.sh NAME` runs bench/NAME.py; with no NAME,
# every bench/*.py not starting with "_", in name order. Exits non-zero if a
# named bench does not exist or if any bench fails (the others still run).
# `make bench` wraps this in scripts/with-services.sh (throwaway PG + Redis).
set -euo pipefail
cd "$(dirname "$0")/.."

PY=.venv/bin/python
[ -x "$PY" ] || { echo "run-bench: $PY not found; run 'make install' first" >&2; exit 1; }

benches=()
if [ "$#" -gt 0 ] && [ -n "$1" ]; then
    for name in "$@"; do
        name=${name%.py}; name=${name#bench/}
        [ -f "bench/$name.py" ] || { echo "run-bench: no such bench: bench/$name.py" >&2; exit 1; }
        benches+=("bench/$name.py")
    done
else
    shopt -s nullglob
    for f in bench/*.py; do
        case ${f#bench/} in _*) continue ;; esac
        benches+=("$f")
    done
    [ "${#benches[@]}" -gt 0 ] || { echo "run-bench: no benchmarks under bench/" >&2; exit 0; }
fi

failed=()
for b in "${benches[@]}"; do
    echo "== $b"
    if ! "$PY" "$b"; then
        failed+=("$b")
        echo "run-bench: FAILED: $b" >&2
    fi
done
if [ "${#failed[@]}" -gt 0 ]; then
    echo "run-bench: ${#failed[@]} of ${#benches[@]} failed: ${failed[*]}" >&2
    exit 1
fi
