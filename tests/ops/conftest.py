"""Fixtures for the operations tests: captured log records, metric samples, apps of their own.

``captured``: every record that reaches the root logger while the test runs, kept raw and as
the JSON lines our formatter writes. ``scrape(client)``: /metrics parsed into
``{(name, labels): value}``. ``own_app(**changes)``: a separate app on changed settings (for
what must be decided before its first request: extra routes, a bad database URL), closed after.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families

from config import Settings
from observability.logs import build_handler
from storefront.wiring import EXTENSION_KEY as STOREFRONT_KEY

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


class RawRecords(logging.Handler):
    """Keeps each record's whole state as text: message, arguments, extras, traceback."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.texts: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        state = dict(record.__dict__)
        if record.exc_info:
            state["exc_info"] = logging.Formatter().formatException(record.exc_info)
        self.texts.append(record.getMessage() + " " + json.dumps(state, default=repr))


@dataclasses.dataclass
class Captured:
    raw: RawRecords
    stream: io.StringIO

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stream.getvalue().splitlines()]

    def json_text(self) -> str:
        return self.stream.getvalue()

    def raw_text(self) -> str:
        return "\n".join(self.raw.texts)


@pytest.fixture
def captured(settings: Settings) -> Iterator[Captured]:
    """Root at DEBUG (and SQLAlchemy's statements at INFO): a raw handler and our JSON one."""
    root = logging.getLogger()
    engine_logger = logging.getLogger("sqlalchemy.engine")
    saved = (root.level, engine_logger.level)
    stream = io.StringIO()
    json_handler = build_handler(
        dataclasses.replace(settings, log_format="json"), logging.StreamHandler(stream)
    )
    raw = RawRecords()
    raw.addFilter(json_handler.filters[0])  # the same context (request id, shop, job id)
    root.addHandler(json_handler)
    root.addHandler(raw)
    root.setLevel(logging.DEBUG)
    engine_logger.setLevel(logging.INFO)
    try:
        yield Captured(raw, stream)
    finally:
        root.removeHandler(json_handler)
        root.removeHandler(raw)
        root.setLevel(saved[0])
        engine_logger.setLevel(saved[1])


def scrape(client: FlaskClient) -> Samples:
    answer = client.get("/metrics")
    assert answer.status_code == 200, answer.get_data(as_text=True)
    samples: Samples = {}
    for family in text_string_to_metric_families(answer.get_data(as_text=True)):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture(scope="session")
def close_app_storefront(app: Flask) -> Iterator[None]:
    """The session app's storefront (listener thread, Redis sockets) closed when the run ends."""
    yield
    app.extensions[STOREFRONT_KEY].close()


@pytest.fixture
def own_app(settings: Settings) -> Iterator[Callable[..., Flask]]:
    """``own_app(**settings_changes)``: a fresh app (its own engine and storefront), closed
    after the test. Its requests use real connections: nothing it writes is rolled back."""
    from app import create_app
    from extensions import db

    made: list[Flask] = []

    def make(**changes: Any) -> Flask:
        made.append(create_app(dataclasses.replace(settings, **changes)))
        return made[-1]

    yield make
    for flask_app in made:
        flask_app.extensions[STOREFRONT_KEY].close()
        with flask_app.app_context():
            db.engine.dispose()
