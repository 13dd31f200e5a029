"""Schemathesis over blueprints/openapi.yaml: no 5xx, and no response that breaks the document.

Each operation is a test of its own: its examples, coverage cases and generated cases
(positive and negative) are called in-process (WSGI) on the app, signed in with a real session
token for a seeded shop (tests/openapi/conftest.py), in the test's rolled-back PostgreSQL
transaction (``app_context``: the app's db.session is the test's). Path ids are sometimes the
seeded shop's real customers, lots, imports, data requests, findings, runs and presets, so
requests get past the 404s.

Reproducible and fast: a fixed seed, derandomized generation, no example database, and a cap
on the examples per operation.
"""

from __future__ import annotations

import itertools
import zlib
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, settings
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from blueprints.openapi import load_spec
from jobs.queues import shared_queue
from tests.conftest import session_token
from tests.openapi.conftest import STAFF_ID, Seeded

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
# The queues a call may enqueue to (a started bulk import, a reconciliation run, a repair):
# emptied after each test, so that no later worker runs a job for rows this test's rollback
# removed.
QUEUES = ("bulk", "default")

# A raw text/csv upload is text on the wire, as text/plain is.
schemathesis.serializer.alias("text/csv", "text/plain")

schema = schemathesis.openapi.from_dict(
    load_spec(),
    config=schemathesis.Config.from_dict(
        {
            "seed": 20261122,
            "generation": {"max-examples": 20, "deterministic": True, "database": "none"},
        }
    ),
)


@pytest.fixture
def empty_queues(settings: Any) -> Iterator[None]:
    yield
    if settings.redis_url is not None:
        for name in QUEUES:
            shared_queue(settings.redis_url, name).empty()


def aimed_at_real_objects(case: schemathesis.Case, seeded: Seeded, count: int) -> None:
    """Point about half of the valid cases at the seeded shop's objects, and give every
    other keyed one a key of its own.

    Examples and coverage cases are built when the tests are collected, before the shop is
    seeded, so hooks cannot know its ids (nor can the spec's examples: lot ids are UUIDs the
    ledger makes). The choice hashes the value and the call's number: a run is reproducible.
    Without fresh keys, nearly every valid issue would replay or conflict with the spec's
    example key instead of reaching the ledger.
    """
    if case.meta is None or case.meta.generation.mode is not GenerationMode.POSITIVE:
        return  # a negative case stays as invalid as it was made
    for name, value in (case.path_parameters or {}).items():
        real = seeded.ids.get(name, [])
        pick = zlib.crc32(f"{value}:{count}".encode()) % (2 * len(real) or 1)
        if pick < len(real):
            case.path_parameters[name] = real[pick]  # type: ignore[index]
    key = (case.headers or {}).get("Idempotency-Key")
    if isinstance(key, str) and count % 2 == 0:
        case.headers["Idempotency-Key"] = f"{key[:200]}-{count}"  # type: ignore[index]


@pytest.fixture
def calls() -> Iterator[int]:
    return itertools.count()


@schema.parametrize()
# The fixtures are per test on purpose (the rolled-back transaction, the seeded shop); the
# cases share them, as requests share a database.
@settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_the_api_keeps_its_openapi_contract(
    case: schemathesis.Case,
    app_context: Flask,
    seeded: Seeded,
    calls: Iterator[int],
    empty_queues: None,
) -> None:
    aimed_at_real_objects(case, seeded, next(calls))
    token = session_token(seeded.shop.domain, sub=STAFF_ID, lifetime=timedelta(minutes=10))
    case.call_and_validate(
        app=app_context, headers={"Authorization": f"Bearer {token}"}, checks=CHECKS
    )
