"""Webhook jobs: process one recorded delivery, re-enqueue the forgotten ones, prune payloads.

``process_webhook`` first *claims* its delivery with one conditional UPDATE (received, or
processing under a claim older than the lease); whoever loses the race finds no row and
returns. The claim's ``claimed_at`` is also its fencing token: the outcome is only written
while the claim is still ours, so a worker that outlived its lease cannot overwrite the
work of the one that took over. Handlers are idempotent, so a delivery run twice (a crash
after the handler committed, a lease taken over) changes nothing twice.

Jobs go to the ``webhooks`` queue with the job id ``webhook-<id>``. A delivery just recorded
cannot have a job yet: its job is saved and queued in one pipelined round trip. The sweeper
uses RQ's unique enqueue, so a job already waiting is never queued twice. The Redis client
is made once per process with short timeouts: a dead Redis costs a refused connect, not
seconds.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from rq import Queue, Retry
from sqlalchemy import Select, Table, and_, func, null, or_, select, update
from sqlalchemy.orm import Session

import tenancy
from config import Settings
from extensions import current_session
from jobs.queues import REDIS_DOWN, enqueue_unique, shared_queue
from models import Shop, WebhookEvent
from observability import metrics
from observability.logs import bind_shop

log = logging.getLogger(__name__)

QUEUE = "webhooks"
# A claim older than this belongs to a worker that died (RQ's job timeout is 3 minutes).
LEASE = timedelta(minutes=10)
# RQ re-runs a failed job after these pauses; the sweeper gives the later chances.
RETRY = Retry(max=3, interval=[30, 120, 600])
# After this many attempts a delivery is left ``failed`` for an operator to look at.
MAX_ATTEMPTS = 6
# A delivery still ``received`` this long after arriving (or after its last attempt) was
# not enqueued (Redis was down) or its job was lost: the sweeper enqueues it again.
SWEEP_AFTER = timedelta(minutes=1)
SWEEP_BATCH = 500
PAYLOAD_RETENTION = timedelta(days=30)
PRUNE_BATCH = 1000
ERROR_LIMIT = 2000
# Redis unavailable: the delivery stays recorded and the sweeper enqueues it later.

_events = cast(Table, WebhookEvent.__table__)


# -- enqueueing --------------------------------------------------------------------------------


def webhook_queue(redis_url: str) -> Queue:
    """This process's ``webhooks`` queue: one client and pool, reused by every request."""
    return shared_queue(redis_url, QUEUE)


def job_id(event_id: int) -> str:
    return f"webhook-{event_id}"


def enqueue(settings: Settings, event_id: int, *, new: bool = True) -> str:
    """Have ``process_webhook(event_id)`` run; says how: ``enqueued``, ``already_queued``,
    ``redis_unavailable`` (left for the sweeper), or ``ran_inline`` / ``failed_inline``.

    ``new``: the delivery was recorded just now, so no job for it can exist yet, and the job
    goes out in one pipelined round trip; otherwise RQ's unique enqueue makes a job that is
    already waiting a no-op. Without REDIS_URL (``make run``) the job runs here and now, in
    the caller's app context.
    """
    if settings.redis_url is None:
        try:
            process_webhook(event_id)
        except Exception:
            log.exception(
                "webhook event %d failed inline; `flask webhooks sweep` retries", event_id
            )
            return "failed_inline"
        return "ran_inline"
    queue = webhook_queue(settings.redis_url)
    try:
        return _enqueue_fresh(queue, event_id) if new else _enqueue_unique(queue, event_id)
    except REDIS_DOWN as error:
        log.warning(
            "webhook event %d recorded but not enqueued (Redis unavailable: %s); "
            "the sweeper will enqueue it",
            event_id,
            error,
        )
        return "redis_unavailable"


def _enqueue_fresh(queue: Queue, event_id: int) -> str:
    """The job for a delivery just recorded: saved and queued in one MULTI/EXEC round trip."""
    pipeline = queue.connection.pipeline()
    queue.enqueue_call(
        process_webhook,
        args=(event_id,),
        job_id=job_id(event_id),
        retry=RETRY,
        description=f"webhook event {event_id}",
        pipeline=pipeline,
    )
    pipeline.execute()
    return "enqueued"


def _enqueue_unique(queue: Queue, event_id: int, *, replace_finished: bool = False) -> str:
    return enqueue_unique(
        queue,
        process_webhook,
        (event_id,),
        job_id=job_id(event_id),
        retry=RETRY,
        description=f"webhook event {event_id}",
        replace_ended=replace_finished,
    )


# -- processing --------------------------------------------------------------------------------


def process_webhook(event_id: int, now_iso: str | None = None) -> str:
    """Process delivery ``event_id`` once; returns the state it is left in (or ``skipped``).

    For its shop only (row-level security): the delivery's, or the one its domain names now.
    """
    session = current_session()
    with tenancy.shop(tenancy.shop_owning(session, _shop_of_event(event_id))):
        return _process(session, event_id, _now(now_iso))


def _shop_of_event(event_id: int) -> Select[tuple[int | None]]:
    c = _events.c
    return (
        select(func.coalesce(c.shop_id, Shop.id))
        .select_from(_events.outerjoin(Shop, Shop.domain == c.shop_domain))
        .where(c.id == event_id)
    )


def _process(session: Session, event_id: int, now: datetime) -> str:
    from webhooks.topics import AFTER_UNINSTALL_TOPICS, Delivery, Ignored, handlers

    claimed = _claim(session, event_id, now)
    session.commit()
    if claimed is None:
        return "skipped"  # done already, or another worker holds a live claim
    bind_shop(claimed["shop_domain"])
    shop = _shop_of(session, claimed)
    handler = handlers().get(claimed["topic"])
    reason = _reason_to_ignore(shop, claimed, handler, AFTER_UNINSTALL_TOPICS)
    if reason is not None:
        return _finish(session, claimed, shop, "ignored", {"reason": reason})
    assert shop is not None
    assert handler is not None
    delivery = Delivery(
        event_id=event_id,
        webhook_id=claimed["webhook_id"],
        topic=claimed["topic"],
        shop=shop,
        payload=claimed["payload"],  # not pruned: _reason_to_ignore checked
        api_version=claimed["api_version"],
        triggered_at=claimed["triggered_at"],
    )
    try:
        outcome = handler(session, delivery, now)
    except Ignored as ignored:
        session.rollback()  # whatever the handler staged before it gave up
        return _finish(session, claimed, shop, "ignored", {"reason": ignored.reason})
    except Exception as error:
        session.rollback()
        _release_after_failure(session, claimed, error)
        raise  # RQ's Retry runs it again
    return _finish(session, claimed, shop, "processed", outcome)


def _claim(session: Session, event_id: int, now: datetime) -> dict[str, Any] | None:
    """Take the delivery: received, or processing under a lease that has run out."""
    c = _events.c
    statement = (
        update(_events)
        .where(
            c.id == event_id,
            or_(
                c.state == "received",
                and_(c.state == "processing", c.claimed_at < now - LEASE),
            ),
        )
        .values(state="processing", claimed_at=now, attempts=c.attempts + 1)
        .returning(
            c.id,
            c.webhook_id,
            c.topic,
            c.shop_id,
            c.shop_domain,
            c.api_version,
            c.triggered_at,
            c.payload,
            c.attempts,
            c.claimed_at,
            c.received_at,
        )
    )
    row = session.execute(statement).mappings().one_or_none()
    return dict(row) if row is not None else None


def _shop_of(session: Session, claimed: dict[str, Any]) -> Shop | None:
    """The shop by id, or by domain if it was installed after the delivery was recorded."""
    if claimed["shop_id"] is not None:
        return session.get(Shop, claimed["shop_id"])
    query = select(Shop).where(Shop.domain == claimed["shop_domain"])
    return session.execute(query).scalar_one_or_none()


def _reason_to_ignore(
    shop: Shop | None, claimed: dict[str, Any], handler: object, after_uninstall: frozenset[str]
) -> str | None:
    if shop is None:
        return "unknown shop"
    if shop.erased_at is not None:
        return "shop erased"
    if not shop.is_installed and claimed["topic"] not in after_uninstall:
        return "shop not installed"
    if handler is None:
        return f"no handler for topic {claimed['topic']}"
    if claimed["payload"] is None:
        return "payload pruned"
    return None


def _still_ours(claimed: dict[str, Any]) -> Any:
    """The fencing condition: the row is still processing under this job's claim."""
    c = _events.c
    return and_(
        c.id == claimed["id"], c.state == "processing", c.claimed_at == claimed["claimed_at"]
    )


def _finish(
    session: Session, claimed: dict[str, Any], shop: Shop | None, state: str, outcome: Any
) -> str:
    processed_at = datetime.now(UTC)
    values: dict[str, Any] = {
        "state": state,
        "outcome": outcome,
        "error": None,
        "processed_at": processed_at,
    }
    if shop is not None and claimed["shop_id"] is None:
        values["shop_id"] = shop.id
    result = session.execute(update(_events).where(_still_ours(claimed)).values(**values))
    session.commit()
    if result.rowcount == 0:  # type: ignore[attr-defined]
        log.warning(
            "webhook event %d: lease lost before finishing; outcome not written", claimed["id"]
        )
        return "lease_lost"
    log.info("webhook event %d %s: %s", claimed["id"], claimed["topic"], state)
    lag = processed_at - claimed["received_at"]
    metrics.webhook_job(claimed["topic"], state, lag.total_seconds())
    return state


def _release_after_failure(session: Session, claimed: dict[str, Any], error: Exception) -> None:
    """Record the error; back to ``received`` for another attempt, or ``failed`` for good."""
    state = "failed" if claimed["attempts"] >= MAX_ATTEMPTS else "received"
    message = f"{type(error).__name__}: {error}"[:ERROR_LIMIT]
    session.execute(update(_events).where(_still_ours(claimed)).values(state=state, error=message))
    session.commit()
    metrics.webhook_job(claimed["topic"], "failed")
    log.warning(
        "webhook event %d %s attempt %d failed (%s): %s",
        claimed["id"],
        claimed["topic"],
        claimed["attempts"],
        state,
        message,
    )


# -- housekeeping ------------------------------------------------------------------------------


def sweep_webhooks(now_iso: str | None = None) -> int:
    """Enqueue again deliveries left behind; returns how many were (re-)enqueued or run.

    Left behind: ``received`` for longer than SWEEP_AFTER since arrival or the last attempt
    (Redis was down at intake, or RQ's retries ran out), or ``processing`` under an expired
    claim (the worker died). Oldest first, at most SWEEP_BATCH per call; a job still waiting
    in Redis is left alone.
    """
    from blueprints.settings import current_settings

    now = _now(now_iso)
    settings = current_settings()
    session = current_session()
    c = _events.c
    stale = now - SWEEP_AFTER
    candidates = select(c.id).where(
        c.state.in_(("received", "processing")),  # the partial index ix_webhook_events_unfinished
        c.received_at < stale,
        or_(
            and_(c.state == "received", func.coalesce(c.claimed_at, c.received_at) < stale),
            and_(c.state == "processing", c.claimed_at < now - LEASE),
        ),
    )
    with tenancy.all_shops():
        ids: list[int] = list(
            session.scalars(candidates.order_by(c.received_at).limit(SWEEP_BATCH))
        )
        session.commit()
    if settings.redis_url is None:
        return sum(enqueue(settings, event_id) == "ran_inline" for event_id in ids)
    queue = webhook_queue(settings.redis_url)
    enqueued = sum(
        _enqueue_unique(queue, event_id, replace_finished=True) == "enqueued" for event_id in ids
    )
    log.info("webhook sweep: %d of %d left-behind deliveries enqueued", enqueued, len(ids))
    return enqueued


def prune_webhook_payloads(now_iso: str | None = None) -> int:
    """Drop stored payloads older than PAYLOAD_RETENTION; the rows and outcomes stay.

    In batches of PRUNE_BATCH, each committed, so a large backlog never holds long locks.
    """
    now = _now(now_iso)
    session = current_session()
    with tenancy.all_shops():
        pruned = _prune(session, now)
    log.info("pruned %d webhook payloads older than %s", pruned, PAYLOAD_RETENTION)
    return pruned


def _prune(session: Session, now: datetime) -> int:
    c = _events.c
    pruned = 0
    while True:
        batch = (
            select(c.id)
            .where(c.payload.is_not(None), c.received_at < now - PAYLOAD_RETENTION)
            .order_by(c.received_at)
            .limit(PRUNE_BATCH)
        )
        result = session.execute(
            update(_events)
            .where(c.id.in_(batch.scalar_subquery()))
            .values(payload=null(), payload_pruned_at=now)  # None would store JSON 'null'
        )
        session.commit()
        count: int = result.rowcount  # type: ignore[attr-defined]
        pruned += count
        if count < PRUNE_BATCH:
            return pruned


def _now(now_iso: str | None) -> datetime:
    if now_iso is None:
        return datetime.now(UTC)
    parsed = datetime.fromisoformat(now_iso)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
