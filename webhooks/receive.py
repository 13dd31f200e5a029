"""Webhook intake: verify the signature, read the headers and the body, and record the delivery.

``read_delivery`` is pure: raw body, headers and secrets in, an ``Incoming`` delivery or a
``Rejected`` (with the HTTP status CONTRACT.md gives) out. ``record`` writes it in one
statement: an INSERT that looks the shop up in a subquery and does nothing on a webhook id it
has seen before, so a redelivery (also a concurrent one) is recorded once.

Only the body is signed; Shopify's headers are not. Where the payload itself names the shop
(``shop_domain`` in compliance payloads, ``myshopify_domain`` in the Shop resource), it must be
the shop in the header: a body signed for one shop must not be replayed as another's.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, Engine, String, Text, bindparam, cast, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session
from sqlalchemy.sql.dml import Insert
from werkzeug.datastructures import Headers

import tenancy
from models import Shop, WebhookEvent
from models.shop import is_shop_domain
from webhooks.topics import COMPLIANCE_TOPICS
from webhooks.verify import is_authentic

# The headers Shopify always sends (the Node library refuses a delivery without them).
REQUIRED_HEADERS = {
    "X-Shopify-Topic": 64,
    "X-Shopify-Shop-Domain": 255,
    "X-Shopify-Webhook-Id": 255,
    "X-Shopify-API-Version": 16,
}
EVENT_ID_MAX = 255
MAX_BIGINT = 2**63 - 1
# Payload fields that name the shop the body was signed for; they must agree with the header.
SHOP_NAMING_FIELDS = ("shop_domain", "myshopify_domain")


class Rejected(Exception):  # noqa: N818 - it names an answer, like werkzeug's exceptions
    """The delivery is refused with ``status``; nothing is recorded."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass(frozen=True)
class Incoming:
    """A verified delivery, ready to record."""

    webhook_id: str
    event_id: str | None
    shop_domain: str
    topic: str
    api_version: str
    triggered_at: datetime | None
    shopify_customer_id: int | None
    payload: dict[str, Any]
    payload_json: str  # the body as received when storable as is (PostgreSQL parses it once)


def read_delivery(
    body: bytes, headers: Headers, secrets: Iterable[str | None], *, compliance: bool
) -> Incoming:
    """Check ``body`` and ``headers`` as they arrived at /webhooks (or /webhooks/compliance).

    401: missing or wrong HMAC, or a payload naming another shop than the header (forged).
    400: a valid HMAC with a required header missing or unusable, a body that is not a JSON
    object, a shop domain that is not ``<name>.myshopify.com``, or a topic sent to the wrong
    endpoint (compliance topics belong on /webhooks/compliance and only there).
    """
    if not is_authentic(body, headers.get("X-Shopify-Hmac-Sha256"), secrets):
        raise Rejected(401, "invalid_hmac", "The X-Shopify-Hmac-Sha256 signature is not valid.")
    values = {
        name: _required_header(headers, name, limit) for name, limit in REQUIRED_HEADERS.items()
    }
    topic, shop_domain = values["X-Shopify-Topic"], values["X-Shopify-Shop-Domain"]
    payload, payload_json = _json_object(body)
    if not is_shop_domain(shop_domain):
        raise Rejected(400, "invalid_shop_domain", "X-Shopify-Shop-Domain is not a shop domain.")
    if (topic in COMPLIANCE_TOPICS) != compliance:
        right = "/webhooks/compliance" if topic in COMPLIANCE_TOPICS else "/webhooks"
        raise Rejected(400, "wrong_endpoint", f"Topic {topic} is delivered to {right}.")
    _check_shop_named_in_payload(payload, shop_domain, compliance=compliance)
    event_id = (headers.get("X-Shopify-Event-Id") or "").strip() or None
    if event_id is not None and len(event_id) > EVENT_ID_MAX:
        raise Rejected(400, "invalid_header", "X-Shopify-Event-Id is too long.")
    return Incoming(
        webhook_id=values["X-Shopify-Webhook-Id"],
        event_id=event_id,
        shop_domain=shop_domain,
        topic=topic,
        api_version=values["X-Shopify-API-Version"],
        triggered_at=_timestamp(headers.get("X-Shopify-Triggered-At")),
        shopify_customer_id=customer_of(topic, payload),
        payload=payload,
        payload_json=payload_json,
    )


def customer_of(topic: str, payload: dict[str, Any]) -> int | None:
    """The Shopify customer a payload is about, so a redaction can find it later.

    customers/*: the payload is the customer; orders/* and the compliance topics carry a
    ``customer`` object (null for a guest order).
    """
    if topic in COMPLIANCE_TOPICS or topic.startswith("orders/"):
        customer = payload.get("customer")
        return _bigint(customer.get("id")) if isinstance(customer, dict) else None
    if topic.startswith("customers/"):
        return _bigint(payload.get("id"))
    return None


def record(session: Session, delivery: Incoming, now: datetime) -> int | None:
    """Insert and commit the delivery; its new ``webhook_events.id``, or None if seen before.

    One statement: the shop is looked up in a subquery (an unknown domain leaves ``shop_id``
    empty) and a conflict on the unique webhook id does nothing, which PostgreSQL also
    resolves for two requests inserting the same id at once. On PostgreSQL it runs in a short
    transaction of its own after the statement that names the delivery's shop for row-level
    security (tenancy.py); on SQLite, autocommitted. Inside a transaction the caller already
    holds (tests bind the session to one), it joins that transaction and commits the session.
    """
    statement = _INSERTS[session.get_bind().dialect.name]
    params = {
        "webhook_id": delivery.webhook_id,
        "event_id": delivery.event_id,
        "shop_domain": delivery.shop_domain,
        "topic": delivery.topic,
        "api_version": delivery.api_version,
        "triggered_at": delivery.triggered_at,
        "shopify_customer_id": delivery.shopify_customer_id,
        "payload": delivery.payload_json,
        "received_at": now,
    }
    bind = session.get_bind()
    if isinstance(bind, Engine) and bind.dialect.name == "postgresql":
        # Row-level security: the row may only be written for the transaction's shop, so the
        # delivery's shop (by its domain) is named first, in the same short transaction.
        with bind.begin() as connection:
            tenancy.use_shop_of_domain(connection, delivery.shop_domain)
            recorded: int | None = connection.execute(statement, params).scalar_one_or_none()
            return recorded
    if isinstance(bind, Engine):
        with bind.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            autocommitted: int | None = connection.execute(statement, params).scalar_one_or_none()
            return autocommitted
    tenancy.use_shop_of_domain(session.connection(), delivery.shop_domain)
    new_id: int | None = session.execute(statement, params).scalar_one_or_none()
    session.commit()
    return new_id


# -- reading ---------------------------------------------------------------------------------


def _required_header(headers: Headers, name: str, limit: int) -> str:
    value = (headers.get(name) or "").strip()
    if not value:
        raise Rejected(400, "missing_header", f"The {name} header is missing.")
    if len(value) > limit or not value.isprintable():
        raise Rejected(400, "invalid_header", f"The {name} header is not usable.")
    return value


def _json_object(body: bytes) -> tuple[dict[str, Any], str]:
    """The body as a dict, and as JSON text to store (the body itself when that is safe)."""
    try:
        payload = json.loads(body, parse_constant=_refuse_constant)
    except (ValueError, RecursionError):
        raise Rejected(400, "invalid_json", "The body is not valid JSON.") from None
    if not isinstance(payload, dict):
        raise Rejected(400, "invalid_json", "The body must be a JSON object.")
    if b"\\u0000" in body:  # rare: PostgreSQL's jsonb cannot store NUL in text
        cleaned: dict[str, Any] = _without_nul(payload)
        return cleaned, json.dumps(cleaned)
    try:
        return payload, body.decode("utf-8")
    except UnicodeDecodeError:  # JSON in UTF-16 or UTF-32: Python reads it, store it re-encoded
        return payload, json.dumps(payload)


def _refuse_constant(name: str) -> Any:
    """NaN and Infinity are not JSON (Python accepts them; PostgreSQL's jsonb does not)."""
    raise ValueError(f"{name} is not JSON")


def _without_nul(value: Any) -> Any:
    """``value`` with every NUL character in its strings (and keys) replaced by U+FFFD."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, list):
        return [_without_nul(item) for item in value]
    if isinstance(value, dict):
        return {_without_nul(key): _without_nul(item) for key, item in value.items()}
    return value


def _check_shop_named_in_payload(
    payload: dict[str, Any], shop_domain: str, *, compliance: bool
) -> None:
    for field in SHOP_NAMING_FIELDS:
        if field in payload and payload[field] != shop_domain:
            raise Rejected(401, "forged_delivery", f"The payload's {field} is not the shop's.")
    # A genuine compliance payload always names its shop; a body without it is another
    # topic's signed body relabelled as a redaction.
    if compliance and payload.get("shop_domain") != shop_domain:
        raise Rejected(401, "forged_delivery", "The compliance payload does not name the shop.")


def _timestamp(value: str | None) -> datetime | None:
    """X-Shopify-Triggered-At (``2026-11-22T12:00:00.123456789Z``), or None if unreadable."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _bigint(value: Any) -> int | None:
    """A Shopify numeric id as a number or a digit string; None if absent or unusable."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, int) and 0 < value <= MAX_BIGINT:
        return value
    return None


# -- the one INSERT ----------------------------------------------------------------------------


def _insert_statement(insert: Any, payload: ColumnElement[Any]) -> Insert:
    """``INSERT … VALUES (…, (SELECT id FROM shops WHERE domain = …), …) ON CONFLICT DO NOTHING``.

    Built once per dialect with named parameters, so a request only binds values. The
    payload is bound as JSON text: PostgreSQL casts it to jsonb, SQLite stores the text.
    """
    table = WebhookEvent.__table__
    column = table.c
    shop_domain = bindparam("shop_domain", type_=String())
    statement: Insert = (
        insert(table)
        .values(
            webhook_id=bindparam("webhook_id", type_=column.webhook_id.type),
            event_id=bindparam("event_id", type_=column.event_id.type),
            shop_id=select(Shop.id).where(Shop.domain == shop_domain).scalar_subquery(),
            shop_domain=shop_domain,
            topic=bindparam("topic", type_=column.topic.type),
            api_version=bindparam("api_version", type_=column.api_version.type),
            triggered_at=bindparam("triggered_at", type_=column.triggered_at.type),
            shopify_customer_id=bindparam(
                "shopify_customer_id", type_=column.shopify_customer_id.type
            ),
            payload=payload,
            received_at=bindparam("received_at", type_=column.received_at.type),
            state="received",
            attempts=0,
        )
        .on_conflict_do_nothing(index_elements=[column.webhook_id])
        .returning(column.id)
    )
    return statement


_PAYLOAD_TEXT = bindparam("payload", type_=Text())
_INSERTS = {
    "postgresql": _insert_statement(postgresql.insert, cast(_PAYLOAD_TEXT, postgresql.JSONB)),
    "sqlite": _insert_statement(sqlite.insert, _PAYLOAD_TEXT),
}
