"""Shopify webhook intake: ``POST /webhooks`` and ``POST /webhooks/compliance``.

Verify → record (one autocommitted INSERT) → enqueue → 200, nothing more: the work happens in
``jobs.webhooks.process_webhook``. Statuses as CONTRACT.md gives them:

* 200 for every valid delivery: a new one, a duplicate (recorded once), one for an unknown or
  uninstalled shop or a topic without a handler (recorded; the job marks it ignored), and one
  recorded while Redis is down (the sweeper enqueues it later);
* 401 for a missing or wrong HMAC, and for a payload naming another shop than the header;
* 400 for a valid HMAC with a required header missing, a body that is not a JSON object, a
  shop domain that is not ``<name>.myshopify.com``, or a topic on the wrong endpoint
  (compliance topics only on /webhooks/compliance, the others only on /webhooks). Shopify
  sends each topic where ``shopify.app.toml`` subscribes it, so a mismatch is a
  misconfiguration: a 400 shows up in Shopify's delivery metrics instead of a silent skip;
* 405 for any other method (OPTIONS included); 413 for a body over MAX_BODY_BYTES.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from flask import Blueprint, Response, jsonify, request

from blueprints.errors import APIError
from blueprints.settings import current_settings
from extensions import current_session
from jobs.webhooks import enqueue
from observability import metrics
from observability.logs import bind_shop
from webhooks.receive import Rejected, read_delivery, record

log = logging.getLogger(__name__)

bp = Blueprint("webhooks", __name__)

# Far above any real delivery (an order with hundreds of lines is well under 1 MiB); the
# body must be read whole to check its HMAC, so the limit bounds what a stranger can send.
MAX_BODY_BYTES = 8 * 1024 * 1024


@bp.route("/webhooks", methods=["POST"], provide_automatic_options=False)
def receive() -> Response:
    return _intake(compliance=False)


@bp.route("/webhooks/compliance", methods=["POST"], provide_automatic_options=False)
def receive_compliance() -> Response:
    return _intake(compliance=True)


def _intake(*, compliance: bool) -> Response:
    settings = current_settings()
    request.max_content_length = MAX_BODY_BYTES
    secrets = (settings.shopify_api_secret, settings.shopify_api_secret_previous)
    try:
        delivery = read_delivery(
            request.get_data(), request.headers, secrets, compliance=compliance
        )
    except Rejected as rejected:
        metrics.webhook_rejected(rejected.status, request.headers.get("X-Shopify-Topic"))
        raise APIError(rejected.status, rejected.code, rejected.message) from None
    bind_shop(delivery.shop_domain)
    event_id = record(current_session(), delivery, datetime.now(UTC))  # committed on return
    if event_id is None:
        metrics.webhook_delivery(delivery.topic, "duplicate")
        log.info("webhook %s (%s) is a duplicate", delivery.webhook_id, delivery.topic)
        return jsonify(status="duplicate")
    metrics.webhook_delivery(delivery.topic, "recorded")
    enqueue(settings, event_id)  # never raises for Redis being down: the row is recorded
    return jsonify(status="recorded")
