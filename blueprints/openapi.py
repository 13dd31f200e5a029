"""``GET /api/openapi.json``: the merchant API's OpenAPI 3.1 document, for anyone to read.

The document is maintained by hand in ``openapi.yaml`` beside this module (YAML, so it can
carry comments and share definitions); tests/openapi/ keeps it true to the routes. It is read
and turned into JSON on the first request only (nothing is read at import or in create_app),
then served from memory.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import yaml
from flask import Blueprint, Response

SPEC_PATH = Path(__file__).with_name("openapi.yaml")
CACHE_CONTROL = "public, max-age=300"

bp = Blueprint("openapi", __name__)


def load_spec() -> dict[str, Any]:
    """The document as a JSON-ready dict (a fresh copy each call, for callers to change)."""
    return dict(json.loads(_spec_json()))


@functools.cache
def _spec_json() -> bytes:
    with SPEC_PATH.open(encoding="utf-8") as file:
        spec = yaml.safe_load(file)
    # json refuses what YAML reads as dates or other non-JSON values: quote those in the file.
    return json.dumps(spec, ensure_ascii=False, allow_nan=False).encode()


@bp.get("/openapi.json")
def openapi_json() -> Response:
    """No session token: the document describes the API, it holds no shop's data."""
    response = Response(_spec_json(), mimetype="application/json")
    response.headers["Cache-Control"] = CACHE_CONTROL
    return response
