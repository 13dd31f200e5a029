#!/usr/bin/env bash
# The whole suite, as `make test` runs it inside scripts/with-services.sh:
#   1. the smoke subset on SQLite (the embedded default `make run` uses),
#   2. everything on the throwaway PostgreSQL (last, so its summary closes the output).
# Extra arguments go to the PostgreSQL run (e.g. `make test PYTEST_ARGS="-k expiry"`).
set -euo pipefail
cd "$(dirname "$0")/.."
python=.venv/bin/python

scripts/fetch-admin-schema.sh  # Shopify's Admin schema, which GraphQL documents are validated against

echo "== smoke subset on SQLite"
"$python" -m pytest -q -p no:cacheprovider --database sqlite -m smoke

echo "== full suite on PostgreSQL"
"$python" -m pytest -p no:cacheprovider "$@"
