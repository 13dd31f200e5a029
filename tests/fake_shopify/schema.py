"""Shopify's real Admin GraphQL schema, for validating documents and executing them in the fake.

The introspection JSON comes from the npm package @shopify/dev-mcp (pinned in
scripts/fetch-admin-schema.sh, which ``make test`` runs first). If it is missing, e.g. when a
developer runs pytest directly, loading it runs that script once.
"""

from __future__ import annotations

import functools
import gzip
import json
import subprocess
from pathlib import Path

from graphql import GraphQLError, GraphQLSchema, build_client_schema, parse, validate

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_DIR = ROOT / ".cache" / "shopify-schema"
FETCH_SCRIPT = ROOT / "scripts" / "fetch-admin-schema.sh"


def schema_path(version: str) -> Path:
    """Where the introspection JSON of ``version`` lives (fetched if missing)."""
    path = SCHEMA_DIR / f"admin_{version}.json"
    if not path.exists() and not path.with_suffix(".json.gz").exists():
        subprocess.run([str(FETCH_SCRIPT), version], check=True)
    return path


@functools.cache
def load_admin_schema(version: str = "2026-10") -> GraphQLSchema:
    """The Admin API schema of ``version`` (built once per process: about 0.3 s)."""
    path = schema_path(version)
    if path.exists():
        introspection = json.loads(path.read_bytes())
    else:
        introspection = json.loads(gzip.decompress(path.with_suffix(".json.gz").read_bytes()))
    return build_client_schema(introspection["data"])


def validate_document(schema: GraphQLSchema, source: str) -> list[str]:
    """Syntax and validation errors of a GraphQL document, each with its line and column."""
    try:
        document = parse(source)
    except GraphQLError as error:
        return [_describe(error)]
    return [_describe(error) for error in validate(schema, document)]


def _describe(error: GraphQLError) -> str:
    where = ", ".join(f"{loc.line}:{loc.column}" for loc in error.locations or ())
    return f"{error.message} (at {where})" if where else error.message
