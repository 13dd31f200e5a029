#!/usr/bin/env bash
# Shopify's Admin GraphQL schema (introspection JSON), which the tests validate every GraphQL
# document against and the fake Shopify executes against:
#
#   scripts/fetch-admin-schema.sh [VERSION ...]      (default: $SHOPIFY_API_VERSION or 2026-10)
#
# Shopify publishes the schema inside the npm package @shopify/dev-mcp (dist/data/
# admin_<version>.json.gz). We pin the package version so every run validates against the same
# schema, fetch it with `npm pack` (npm checks the registry's integrity hash), and keep it under
# .cache/shopify-schema/: admin_<version>.json for the versions asked for, plus every version's
# .json.gz (about 1 MB each), which tests/fake_shopify/schema.py can also read.
# Idempotent: nothing is fetched when the requested files are already there.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGE="@shopify/dev-mcp@1.16.0"
DEST=.cache/shopify-schema
me=fetch-admin-schema
die() { echo "$me: $*" >&2; exit 1; }

if [ "$#" -gt 0 ]; then
    versions=("$@")
else
    versions=("${SHOPIFY_API_VERSION:-2026-10}")
fi

missing=()
for version in "${versions[@]}"; do
    [ -s "$DEST/admin_$version.json" ] || missing+=("$version")
done
[ "${#missing[@]}" -eq 0 ] && exit 0

command -v npm >/dev/null 2>&1 || die "npm is needed to fetch $PACKAGE (apt-get install npm)"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "$me: fetching $PACKAGE for admin ${missing[*]} ..." >&2
tarball=$(cd "$work" && npm pack "$PACKAGE" --silent --pack-destination "$work" | tail -n 1)
[ -s "$work/$tarball" ] || die "npm pack $PACKAGE produced no tarball"
tar -xzf "$work/$tarball" -C "$work" --wildcards 'package/dist/data/admin_*.json.gz'

mkdir -p "$DEST"
for gz in "$work"/package/dist/data/admin_*.json.gz; do
    cp "$gz" "$DEST/$(basename "$gz").tmp"
    mv "$DEST/$(basename "$gz").tmp" "$DEST/$(basename "$gz")"
done
for version in "${missing[@]}"; do
    gz="$DEST/admin_$version.json.gz"
    [ -s "$gz" ] || die "$PACKAGE ships no admin schema for $version (has: $(cd "$DEST" && ls admin_*.json.gz | tr '\n' ' '))"
    gunzip -c "$gz" >"$DEST/admin_$version.json.tmp"
    mv "$DEST/admin_$version.json.tmp" "$DEST/admin_$version.json"
    echo "$me: $DEST/admin_$version.json" >&2
done
