"""Log lines: one JSON object per line (or plain text for a developer), with their context.

Every line carries ``timestamp``, ``level``, ``logger``, ``message`` and, when known, the
``request_id`` (a sane ``X-Request-Id`` the caller sent, else one made here; echoed in the
response), the ``shop`` domain, and the RQ ``job_id``; lines about a request or a job add
``duration_ms``. ``observability.web`` writes one access line per request: method, route
pattern, status, duration — never the query string (``id_token``, ``hmac``, ``signature``,
``logged_in_customer_id`` live there) nor any header.

What must never be logged, isn't, by construction: SQL parameter values are hidden by the
engine (``hide_parameters``, config.py), SQLAlchemy's and ShopifyAPI's debug loggers (result
rows, request headers with the access token) are held at WARNING whatever LOG_LEVEL says, and
werkzeug's development-server lines lose their query strings. As a last line of defence the
formatters mask what looks like a session token (a JWT), a Shopify token, an email address or
a secret query parameter in a message or a traceback.
"""

from __future__ import annotations

import contextvars
import logging
import re
import sys
import uuid
from typing import Any

from pythonjsonlogger.json import JsonFormatter as _BaseJsonFormatter
from rq.job import get_current_job

from config import Settings

# Libraries whose DEBUG (or INFO) output carries data: SQLAlchemy logs result rows at DEBUG,
# ShopifyAPI's pyactiveresource logs request headers (the access token) and bodies.
QUIET_LOGGERS = ("sqlalchemy", "pyactiveresource", "shopify")
ACCESS_LOGGER = "creditcraft.access"
REQUEST_ID_HEADER = "X-Request-Id"
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
_HANDLER_MARK = "_creditcraft_handler"

# -- context -------------------------------------------------------------------------------------

# Outside a request (jobs): the shop a job said it is about, tagged with that job's id so a
# later job in the same thread (RQ's SimpleWorker, tests) never inherits it.
_job_shop: contextvars.ContextVar[tuple[str, str] | None] = contextvars.ContextVar(
    "creditcraft_job_shop", default=None
)


def request_id_from(header: str | None) -> str:
    """The caller's request id if it is a plain token, else a new one."""
    if header and _SANE_REQUEST_ID.fullmatch(header):
        return header
    return uuid.uuid4().hex


def current_job_id() -> str | None:
    job = get_current_job()
    return job.id if job is not None else None


def bind_shop(domain: str) -> None:
    """Name the shop this request or job is about, for every line it logs from now on."""
    from flask import g, has_request_context

    if has_request_context():
        g.log_shop = domain
        return
    job_id = current_job_id()
    if job_id is not None:
        _job_shop.set((job_id, domain))


def _context() -> tuple[str | None, str | None, str | None]:
    """(request_id, shop, job_id) of the code logging now."""
    from flask import g, has_request_context

    job_id = current_job_id()
    if has_request_context():
        return g.get("request_id"), g.get("log_shop"), job_id
    bound = _job_shop.get()
    shop = bound[1] if bound is not None and bound[0] == job_id else None
    return None, shop, job_id


class ContextFilter(logging.Filter):
    """Adds request_id, shop and job_id to each record (unless the call passed its own)."""

    def filter(self, record: logging.LogRecord) -> bool:
        request_id, shop, job_id = _context()
        for name, value in (("request_id", request_id), ("shop", shop), ("job_id", job_id)):
            if value is not None and not hasattr(record, name):
                setattr(record, name, value)
        if record.name == "werkzeug":
            _strip_werkzeug_query(record)
        return True


_WERKZEUG_REQUEST_LINE = re.compile(r'"(\S+ [^ ?"]*)\?[^ "]*( HTTP/[0-9.]+")')


def _strip_werkzeug_query(record: logging.LogRecord) -> None:
    """The development server logs each request line whole: keep its path, drop its query."""
    message = record.getMessage()
    cleaned = _WERKZEUG_REQUEST_LINE.sub(r'"\1\2', message)
    if cleaned != message:
        record.msg, record.args = cleaned, ()


# -- masking -------------------------------------------------------------------------------------

_SECRETS = re.compile(
    r"(?P<jwt>\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,})"
    r"|(?P<token>\bshp[a-z]{2}_[A-Za-z0-9]{8,})"
    r"|(?P<email>[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,})"
    # Secret parameters: these names anywhere; code and state (OAuth) only inside a URL.
    r"|(?P<param>(?:\b(?:id_token|subject_token|hmac|signature|access_token|refresh_token"
    r"|client_secret|logged_in_customer_id)|(?<=[?&])(?:code|state))=)[^&\s\"']+"
)


def _mask(match: re.Match[str]) -> str:
    kind = match.lastgroup
    if kind == "param":
        return f"{match.group('param')}[masked]"
    return f"[masked {kind}]"


def mask(text: str) -> str:
    """``text`` with anything that looks like a token, an email or a secret parameter masked."""
    return _SECRETS.sub(_mask, text)


# -- formatters ----------------------------------------------------------------------------------

FIRST_FIELDS = ("timestamp", "level", "logger", "message")


class JsonFormatter(_BaseJsonFormatter):
    """python-json-logger's formatter: our field names first, empty fields dropped, masked."""

    def __init__(self) -> None:
        super().__init__(
            ["levelname", "name", "message"],
            rename_fields={"levelname": "level", "name": "logger"},
            timestamp=True,
        )

    def process_log_record(self, log_data: dict[str, Any]) -> dict[str, Any]:
        ordered = {key: log_data.pop(key) for key in FIRST_FIELDS if key in log_data}
        ordered.update((key, value) for key, value in log_data.items() if value is not None)
        for key in ("message", "exc_info", "stack_info"):
            if isinstance(ordered.get(key), str):
                ordered[key] = mask(ordered[key])
        return ordered


class TextFormatter(logging.Formatter):
    """``12:00:00.123 INFO  jobs.sync: message [request_id=… shop=… job_id=… duration_ms=…]``."""

    CONTEXT = ("request_id", "shop", "job_id", "duration_ms")

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        context = " ".join(
            f"{name}={getattr(record, name)}" for name in self.CONTEXT if hasattr(record, name)
        )
        return mask(f"{line} [{context}]" if context else line)


# -- configuration -------------------------------------------------------------------------------


class _StderrHandler(logging.StreamHandler[Any]):
    """Writes to whatever ``sys.stderr`` is at the time (test runners swap it)."""

    def __init__(self) -> None:
        super().__init__()

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


def build_handler(settings: Settings, handler: logging.Handler | None = None) -> logging.Handler:
    """``handler`` (default: standard error) with the configured format and the context."""
    handler = handler if handler is not None else _StderrHandler()
    handler.setFormatter(JsonFormatter() if settings.log_format == "json" else TextFormatter())
    handler.addFilter(ContextFilter())
    return handler


def configure_logging(settings: Settings) -> bool:
    """The root logger writes through our handler at LOG_LEVEL; True if configured.

    Like ``logging.basicConfig``, it leaves alone a root logger that has handlers of someone
    else's (a test runner capturing records, a host embedding the app): they own logging.
    Idempotent: our own handler from an earlier call is replaced (create_app may run more
    than once in a process).
    """
    root = logging.getLogger()
    ours = [h for h in root.handlers if getattr(h, _HANDLER_MARK, False)]
    if len(ours) != len(root.handlers):
        return False
    for existing in ours:
        root.removeHandler(existing)
        existing.close()
    handler = build_handler(settings)
    setattr(handler, _HANDLER_MARK, True)
    root.addHandler(handler)
    root.setLevel(settings.log_level)
    for name in QUIET_LOGGERS:
        quiet = logging.getLogger(name)
        if quiet.level == logging.NOTSET or quiet.level < logging.WARNING:
            quiet.setLevel(logging.WARNING)
    return True
