"""JSON log lines: their fields, the request id, one access line per request without its query
string, the shop and the job they are about, and the settings that choose the format."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from rq import Queue, SimpleWorker

from config import ConfigError, Settings, load_settings
from observability.logs import (
    JsonFormatter,
    TextFormatter,
    bind_shop,
    build_handler,
    configure_logging,
    mask,
)
from tests.conftest import auth
from tests.factories import ShopFactory
from tests.proxy.helpers import balance_url

PRODUCTION = {
    "SECRET_KEY": "s",
    "SHOPIFY_API_KEY": "k",
    "SHOPIFY_API_SECRET": "x",
    "TOKEN_ENCRYPTION_KEYS": "ZGV2LW9ubHkta2V5LW5vdC1mb3ItcHJvZHVjdGlvbiE=",
}


def access_lines(captured) -> list[dict]:
    return [line for line in captured.lines() if line["logger"] == "creditcraft.access"]


def test_each_line_is_one_json_object_with_the_fields_first(captured):
    logging.getLogger("ops.test").warning("hello %s", "world", extra={"duration_ms": 1.5})
    (line,) = [line for line in captured.lines() if line["logger"] == "ops.test"]
    assert list(line)[:4] == ["timestamp", "level", "logger", "message"]
    assert (line["level"], line["message"], line["duration_ms"]) == ("WARNING", "hello world", 1.5)
    assert line["timestamp"].endswith("+00:00")
    assert "request_id" not in line  # no request: the field is left out, not null


def test_a_request_gets_an_id_echoed_and_one_access_line_without_its_query(captured, client):
    answer = client.get("/healthz?id_token=eyJsecret.eyJsecret.sig&hmac=deadbeef")
    request_id = answer.headers["X-Request-Id"]
    assert len(request_id) == 32
    (line,) = [line for line in access_lines(captured) if line.get("request_id") == request_id]
    assert (line["method"], line["route"], line["status"]) == ("GET", "/healthz", 200)
    assert line["level"] == "DEBUG"  # probes are quiet
    assert line["duration_ms"] >= 0
    assert line["message"] == "GET /healthz 200"
    assert "deadbeef" not in captured.raw_text()
    assert "eyJsecret" not in captured.raw_text()


@pytest.mark.parametrize(
    ("sent", "kept"),
    [("abc-123_DEF.9:x", True), ("a" * 128, True), ("a" * 129, False), ("x y", False), ("", False)],
)
def test_a_sane_incoming_request_id_is_kept_else_replaced(client, sent, kept):
    echoed = client.get("/healthz", headers={"X-Request-Id": sent}).headers["X-Request-Id"]
    assert (echoed == sent) is kept


def test_api_lines_name_the_route_pattern_and_the_shop(captured, client):
    shop = ShopFactory()
    client.get("/api/customers/7408348290?query=ada@example.com", headers=auth(shop.domain))
    (line,) = [line for line in access_lines(captured) if line["route"].startswith("/api/cust")]
    assert line["route"] == "/api/customers/<customer_id>"
    assert line["level"] == "INFO"
    assert line["shop"] == shop.domain
    assert "7408348290" not in line["message"]
    assert "ada@example.com" not in captured.raw_text()


def test_a_storefront_line_names_its_shop_and_never_the_customer(captured, client):
    shop = ShopFactory()
    client.get(balance_url(shop.domain, 7408348290))
    (line,) = [line for line in access_lines(captured) if line["route"] == "/proxy/balance"]
    assert line["shop"] == shop.domain
    assert "7408348290" not in captured.raw_text()
    assert "signature=" not in captured.raw_text()


def test_a_job_line_names_its_job_and_its_shop(captured, app_context, settings):
    if settings.redis_url is None:
        pytest.skip("needs REDIS_URL")
    from redis import Redis

    connection = Redis.from_url(settings.redis_url)
    queue = Queue("ops-log-test", connection=connection)
    queue.empty()
    job = queue.enqueue(_log_from_a_job, "edge-job.myshopify.com")
    try:
        SimpleWorker([queue], connection=connection).work(burst=True)
    finally:
        queue.delete()
        connection.close()
    lines = [line for line in captured.lines() if line["logger"] == "ops.job"]
    assert [(line["job_id"], line["shop"]) for line in lines] == [
        (job.id, "edge-job.myshopify.com")
    ]
    logging.getLogger("ops.job").info("after the job")
    after = [line for line in captured.lines() if line["message"] == "after the job"]
    assert "job_id" not in after[0]
    assert "shop" not in after[0]


def _log_from_a_job(domain: str) -> None:
    bind_shop(domain)
    logging.getLogger("ops.job").info("working")


def test_werkzeug_request_lines_lose_their_query(captured):
    logging.getLogger("werkzeug").info(
        '127.0.0.1 - - [22/Nov/2026 12:00:00] "%s" %s %s',
        "GET /app?shop=a.myshopify.com&id_token=abc.def.ghi HTTP/1.1",
        "200",
        "-",
    )
    (line,) = [line for line in captured.lines() if line["logger"] == "werkzeug"]
    assert '"GET /app HTTP/1.1" 200' in line["message"]
    assert "abc.def" not in captured.raw_text()


def test_what_looks_secret_is_masked_by_the_formatters():
    text = (
        "token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl, shpat_0123456789abcdef, "
        "shprt_0123456789abcdef, mail ada.l@example.co.uk, /auth/callback?code=abc&state=def, "
        "hmac=0f0f signature=abcd logged_in_customer_id=42; state=processed"
    )
    masked = mask(text)
    for secret in ("eyJ", "shpat_", "shprt_", "ada.l@", "code=abc", "state=def", "0f0f", "abcd"):
        assert secret not in masked
    assert "=42" not in masked
    assert "state=processed" in masked  # ordinary words stay
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "to %s", ("ada@example.com",), None)
    assert "ada@example.com" not in JsonFormatter().format(record)
    assert "ada@example.com" not in TextFormatter().format(record)


def test_text_format_for_developers(settings):
    import dataclasses

    stream = io.StringIO()
    handler = build_handler(
        dataclasses.replace(settings, log_format="text"), logging.StreamHandler(stream)
    )
    logger = logging.getLogger("ops.text")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("plain %d", 1, extra={"duration_ms": 2})
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    line = stream.getvalue().strip()
    assert "WARNING" in line
    assert line.endswith("ops.text: plain 1 [duration_ms=2]")
    with pytest.raises(json.JSONDecodeError):
        json.loads(line)


@contextmanager
def bare_root() -> Iterator[logging.Logger]:
    """The root logger without pytest's capturing handlers (as in a fresh process), restored
    afterwards together with the levels configure_logging sets."""
    root = logging.getLogger()
    names = ("sqlalchemy", "pyactiveresource", "shopify")
    saved = (list(root.handlers), root.level, {n: logging.getLogger(n).level for n in names})
    root.handlers = []
    try:
        yield root
    finally:
        for handler in root.handlers:
            handler.close()
        root.handlers = saved[0]
        root.setLevel(saved[1])
        for name, level in saved[2].items():
            logging.getLogger(name).setLevel(level)


def test_configure_logging_is_idempotent_and_keeps_data_loggers_quiet(settings):
    import dataclasses

    with bare_root() as root:
        for _ in range(3):
            assert configure_logging(dataclasses.replace(settings, log_level="DEBUG"))
        (handler,) = root.handlers
        assert isinstance(handler.formatter, JsonFormatter)
        assert root.level == logging.DEBUG
        # SQLAlchemy logs result rows at DEBUG, ShopifyAPI request headers: never.
        for name in ("sqlalchemy.engine", "pyactiveresource.connection", "shopify"):
            assert not logging.getLogger(name).isEnabledFor(logging.INFO)


def test_a_root_logger_someone_else_configured_is_left_alone(settings):
    with bare_root() as root:
        theirs = logging.NullHandler()
        root.addHandler(theirs)
        assert not configure_logging(settings)
        assert root.handlers == [theirs]


def test_log_settings_from_the_environment():
    assert load_settings(PRODUCTION).log_format == "json"
    assert load_settings({"CREDITCRAFT_ENV": "development"}).log_format == "text"
    assert load_settings({"CREDITCRAFT_ENV": "test"}).log_format == "json"
    chosen = load_settings(
        {"CREDITCRAFT_ENV": "development", "LOG_FORMAT": "JSON", "LOG_LEVEL": "debug"}
    )
    assert (chosen.log_format, chosen.log_level) == ("json", "DEBUG")
    with pytest.raises(ConfigError, match="LOG_FORMAT"):
        load_settings(PRODUCTION | {"LOG_FORMAT": "xml"})
    with pytest.raises(ConfigError, match="LOG_LEVEL"):
        load_settings(PRODUCTION | {"LOG_LEVEL": "LOUD"})


def test_database_settings_from_the_environment():
    settings: Settings = load_settings(
        PRODUCTION
        | {
            "DATABASE_URL": "postgresql://u@db/x",
            "DB_POOL_SIZE": "20",
            "DB_MAX_OVERFLOW": "5",
            "DB_POOL_TIMEOUT": "3",
            "DB_POOL_RECYCLE": "600",
            "DB_CONNECT_TIMEOUT": "2",
            "DB_SSLMODE": "verify-full",
            "DB_SSLROOTCERT": "/etc/ssl/rds.pem",
            "WEB_STATEMENT_TIMEOUT_MS": "2500",
        }
    )
    options = settings.engine_options()
    assert (options["pool_size"], options["max_overflow"], options["pool_timeout"]) == (20, 5, 3)
    assert (options["pool_recycle"], options["pool_pre_ping"], options["hide_parameters"]) == (
        600,
        True,
        True,
    )
    assert options["connect_args"] == {
        "connect_timeout": 2,
        "sslmode": "verify-full",
        "sslrootcert": "/etc/ssl/rds.pem",
    }
    assert settings.web_statement_timeout_ms == 2500
    with pytest.raises(ConfigError, match="DB_SSLMODE"):
        load_settings(PRODUCTION | {"DB_SSLMODE": "yes-please"})
    with pytest.raises(ConfigError, match="DB_POOL_RECYCLE"):
        load_settings(PRODUCTION | {"DB_POOL_RECYCLE": "0"})
    with pytest.raises(ConfigError, match="PROMETHEUS_MULTIPROC_DIR"):
        load_settings(PRODUCTION | {"WORKER_METRICS_PORT": "9200"})
