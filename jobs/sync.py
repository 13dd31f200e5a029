"""Mirroring the merchant's credits into Shopify's native store credit (the outbox's jobs).

``sync_to_shopify(entry_id)`` sends one outbox row: a native credit (amount, ``expiresAt``,
``notify`` as the shop set it) or debit, through ``storeCreditAccountCredit`` / ``Debit``, and
records the native transaction id on the row, the lot and the account. Shopify's mutations are
not idempotent, so:

- the row is claimed first (``pending`` → ``in_flight``, with a lease), so two workers never
  send the same row at once;
- an attempt that ended ambiguously (timeout, lost response, 5xx) marks the row ``ambiguous``;
  the next attempt reads the account's recent native transactions and, if the mutation did
  land, records that transaction instead of sending again (``ledger.outbox.match_native``);
- throttling waits (the client paces from the shop's cost budget) and never counts against
  the row; other failures back off and, after ``MAX_ATTEMPTS``, leave the row ``dead`` with
  its error for the merchant and reconciliation to see.

``sweep_outbox`` (every minute, from the schedule) enqueues rows that are due: new rows whose
enqueue was lost, rows backing off, and rows whose worker died mid-send.
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from rq import Retry
from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

import tenancy
from blueprints.settings import current_settings
from config import Settings
from extensions import current_session
from jobs.native import find_account, recent_transactions
from jobs.queues import REDIS_DOWN, enqueue_unique, shared_queue
from ledger.money import format_amount
from ledger.outbox import match_native
from models import CreditAccount, CreditLot, Customer, Shop, ShopifyOutbox
from observability import metrics
from observability.logs import bind_shop
from shop_access import ShopNotConnected, admin_client
from shopify_client import documents
from shopify_client.errors import (
    AdminAPIError,
    AmbiguousMutation,
    ShopifyClientError,
    Throttled,
)
from shopify_client.ids import gid

log = logging.getLogger(__name__)

QUEUE = "sync"
RETRY = Retry(max=3, interval=[15, 60, 300])
LEASE = timedelta(minutes=5)
MAX_ATTEMPTS = 10
SWEEP_BATCH = 500
# Errors Shopify will give again however often we ask: the row is dead at once.
PERMANENT = {"OWNER_NOT_FOUND", "ACCOUNT_NOT_FOUND", "UNSUPPORTED_CURRENCY", "MISMATCHING_CURRENCY",
             "NEGATIVE_OR_ZERO_AMOUNT", "CREDIT_LIMIT_EXCEEDED", "INSUFFICIENT_FUNDS"}  # fmt: skip


class _Dead(Exception):  # noqa: N818 - an outcome: the row will never succeed
    pass


class _Skipped(Exception):  # noqa: N818 - an outcome: nothing to send, and that is fine
    pass


# -- enqueueing ----------------------------------------------------------------------------------


def job_id(entry_id: uuid.UUID | str) -> str:
    return f"sync-{entry_id}"


def enqueue(settings: Settings, entry_id: uuid.UUID | str) -> str:
    """Have ``sync_to_shopify(entry_id)`` run; a duplicate enqueue is a no-op.

    Without REDIS_URL (``make run``) it runs here and now; with Redis down the row waits for
    the sweeper. Never raises: the outbox row is the record of what is owed.
    """
    if settings.redis_url is None:
        try:
            return sync_to_shopify(str(entry_id))
        except Exception:
            log.exception("native sync of entry %s failed inline; the sweeper retries", entry_id)
            return "failed_inline"
    queue = shared_queue(settings.redis_url, QUEUE)
    try:
        return enqueue_unique(
            queue,
            sync_to_shopify,
            (str(entry_id),),
            job_id=job_id(entry_id),
            retry=RETRY,
            description=f"native sync of entry {entry_id}",
        )
    except REDIS_DOWN as error:
        log.warning("native sync of entry %s left for the sweeper (Redis: %s)", entry_id, error)
        return "redis_unavailable"


def sweep_outbox(now_iso: str | None = None) -> int:
    """Enqueue every row that is due (or run it inline without Redis); returns how many."""
    now = _now(now_iso)
    session = current_session()
    with tenancy.all_shops():
        due = session.scalars(
            select(ShopifyOutbox.entry_id)
            .where(
                or_(
                    (ShopifyOutbox.state == "pending") & (ShopifyOutbox.next_attempt_at <= now),
                    (ShopifyOutbox.state == "in_flight") & (ShopifyOutbox.claimed_at < now - LEASE),
                )
            )
            .order_by(ShopifyOutbox.next_attempt_at)
            .limit(SWEEP_BATCH)
        ).all()
        session.commit()
    settings = current_settings()
    for entry_id in due:
        enqueue(settings, entry_id)
    return len(due)


# -- the job -------------------------------------------------------------------------------------


def sync_to_shopify(entry_id: str, now_iso: str | None = None) -> str:
    """Send one outbox row to Shopify; ``done``, ``skipped``, ``dead``, ``deferred``,
    ``retrying`` or ``not_due`` (someone else has it, or it is finished). For the row's shop
    only (row-level security)."""
    session = current_session()
    owner = select(ShopifyOutbox.shop_id).where(ShopifyOutbox.entry_id == uuid.UUID(entry_id))
    with tenancy.shop(tenancy.shop_owning(session, owner)):
        return _sync(session, uuid.UUID(entry_id), _now(now_iso))


def _sync(session: Session, entry_id: uuid.UUID, now: datetime) -> str:
    row = _claim(session, entry_id, now)
    if row is None:
        metrics.sync_attempt("not_due")
        return "not_due"
    try:
        transaction = _mirror(session, row, now)
    except _Skipped as skipped:
        return _finish(session, row, now, skipped_reason=str(skipped))
    except _Dead as dead:
        return _bury(session, row, now, str(dead))
    except Throttled as error:
        # The shop's budget is spent: wait for it, without counting an attempt.
        return _release(session, row, now, error, delay=timedelta(seconds=30), counted=False)
    except ShopNotConnected as error:
        # The merchant must reopen the app (or reinstall): keep the row, look again later.
        return _release(session, row, now, error, delay=timedelta(hours=1), counted=False)
    except AmbiguousMutation as error:
        if row.attempts >= MAX_ATTEMPTS:
            # Reconciliation tells whether it landed (and re-queues the row if it did not).
            return _bury(
                session, row, now, f"still ambiguous after {row.attempts} attempts: {error}"
            )
        _release(session, row, now, error, delay=_backoff(row.attempts), ambiguous=True)
        raise  # RQ's Retry runs it again soon; the next attempt matches before it sends
    except (ShopifyClientError, OSError) as error:
        if row.attempts >= MAX_ATTEMPTS:
            return _bury(session, row, now, f"gave up after {row.attempts} attempts: {error}")
        _release(session, row, now, error, delay=_backoff(row.attempts))
        raise
    return _finish(session, row, now, transaction=transaction)


def _claim(session: Session, entry_id: uuid.UUID, now: datetime) -> ShopifyOutbox | None:
    """Take the row if it is due: pending, or in flight under a lease that has run out."""
    outbox = ShopifyOutbox.__table__.c
    claimed = session.execute(
        update(ShopifyOutbox)
        .where(
            outbox.entry_id == entry_id,
            or_(
                outbox.state == "pending",
                (outbox.state == "in_flight") & (outbox.claimed_at < now - LEASE),
            ),
        )
        .values(
            state="in_flight",
            claimed_at=now,
            attempts=outbox.attempts + 1,
            updated_at=now,
            # Taking over a dead worker's lease: its send may have landed, so match first.
            ambiguous=outbox.ambiguous | (outbox.state == "in_flight"),
        )
        .returning(outbox.id)
    ).scalar_one_or_none()
    session.commit()
    return None if claimed is None else session.get(ShopifyOutbox, claimed)


def _mirror(session: Session, row: ShopifyOutbox, now: datetime) -> dict[str, Any]:
    shop = session.get(Shop, row.shop_id)
    assert shop is not None
    bind_shop(shop.domain)
    if not shop.native_sync:
        raise _Skipped("native sync is off for this shop")
    if row.operation == "credit" and row.expires_at is not None and row.expires_at <= now:
        raise _Skipped("the credit expired before it could be mirrored")
    account = session.get(CreditAccount, row.account_id)
    customer = session.get(Customer, account.customer_id) if account else None
    assert account is not None
    assert customer is not None
    session.commit()  # admin_client may refresh the token: nothing of ours rides along
    client = admin_client(session, current_settings(), shop, now)
    if row.ambiguous:
        landed = _landed(session, client, row, account, customer.shopify_customer_id)
        if landed is not None:
            return landed
    return _send(client, row, account, customer.shopify_customer_id)


def _landed(
    session: Session, client: Any, row: ShopifyOutbox, account: CreditAccount, customer_id: int
) -> dict[str, Any] | None:
    """The native transaction an earlier ambiguous attempt made, if it made one."""
    account_gid = account.native_account_gid or find_account(client, customer_id, row.currency)
    if account_gid is None:
        return None  # no native account at all: the credit certainly did not land
    taken: set[str] = set(
        session.scalars(
            select(ShopifyOutbox.native_transaction_gid).where(
                ShopifyOutbox.account_id == row.account_id,
                ShopifyOutbox.native_transaction_gid.is_not(None),
            )
        ).all()  # type: ignore[arg-type]  # not None by the WHERE clause
    )
    match = match_native(row, recent_transactions(client, account_gid), taken)
    if match is None:
        return None
    log.info("outbox row %d had landed as %s; not sent again", row.id, match.gid)
    return {"id": match.gid, "account": {"id": account_gid}}


def _send(
    client: Any, row: ShopifyOutbox, account: CreditAccount, customer_id: int
) -> dict[str, Any]:
    target = account.native_account_gid or gid("Customer", customer_id)
    money = {"amount": format_amount(row.amount, row.currency), "currencyCode": row.currency}
    if row.operation == "credit":
        credit_input: dict[str, Any] = {"creditAmount": money, "notify": row.notify}
        if row.expires_at is not None:
            credit_input["expiresAt"] = row.expires_at.isoformat().replace("+00:00", "Z")
        data = client.mutate(
            documents.STORE_CREDIT_CREDIT, {"id": target, "creditInput": credit_input}
        )
        payload = data["storeCreditAccountCredit"]
    else:
        data = client.mutate(
            documents.STORE_CREDIT_DEBIT, {"id": target, "debitInput": {"debitAmount": money}}
        )
        payload = data["storeCreditAccountDebit"]
    errors = payload.get("userErrors") or []
    if errors:
        codes = {e.get("code") for e in errors}
        message = "; ".join(f"{e.get('code')}: {e.get('message')}" for e in errors)
        if "EXPIRES_AT_IN_PAST" in codes:
            raise _Skipped(f"Shopify refused an expiry in the past ({message})")
        if codes & PERMANENT:
            raise _Dead(message)
        raise AdminAPIError(message, shop=client.shop, operation="store credit", status=200)
    transaction: dict[str, Any] = payload["storeCreditAccountTransaction"]
    return transaction


# -- outcomes ------------------------------------------------------------------------------------


def _finish(
    session: Session,
    row: ShopifyOutbox,
    now: datetime,
    *,
    transaction: dict[str, Any] | None = None,
    skipped_reason: str | None = None,
) -> str:
    # The row first (its CHECK wants state and result together), then what the result names.
    row.native_transaction_gid = None if transaction is None else transaction["id"]
    row.skipped_reason = skipped_reason
    row.state, row.done_at, row.updated_at, row.claimed_at = "done", now, now, None
    if transaction is not None:
        row.last_error = None
        session.flush()
        account_gid = (transaction.get("account") or {}).get("id")
        if account_gid:
            session.execute(
                update(CreditAccount)
                .where(
                    CreditAccount.id == row.account_id, CreditAccount.native_account_gid.is_(None)
                )
                .values(native_account_gid=account_gid)
            )
        if row.lot_id is not None and row.operation == "credit":
            session.execute(
                update(CreditLot)
                .where(CreditLot.id == row.lot_id)
                .values(native_transaction_gid=transaction["id"])
            )
    session.commit()
    outcome = "done" if transaction is not None else "skipped"
    metrics.sync_attempt(outcome)
    return outcome


def _bury(session: Session, row: ShopifyOutbox, now: datetime, error: str) -> str:
    log.error("outbox row %d (entry %s) is dead: %s", row.id, row.entry_id, error)
    row.state, row.last_error, row.updated_at, row.claimed_at = "dead", error[:2000], now, None
    session.commit()
    metrics.sync_attempt("dead")
    return "dead"


def _release(
    session: Session,
    row: ShopifyOutbox,
    now: datetime,
    error: Exception,
    *,
    delay: timedelta,
    counted: bool = True,
    ambiguous: bool = False,
) -> str:
    """Put the row back for a later attempt (``ambiguous``: this one may have landed)."""
    row_id = row.id
    session.rollback()
    fresh = session.get(ShopifyOutbox, row_id)
    assert fresh is not None
    fresh.state, fresh.claimed_at, fresh.updated_at = "pending", None, now
    fresh.ambiguous = fresh.ambiguous or ambiguous
    fresh.next_attempt_at = now + delay
    fresh.last_error = f"{type(error).__name__}: {error}"[:2000]
    if not counted:
        fresh.attempts = max(fresh.attempts - 1, 0)
    session.commit()
    metrics.sync_attempt("deferred" if not counted else "ambiguous" if ambiguous else "retrying")
    return "deferred" if not counted else "retrying"


def _backoff(attempts: int) -> timedelta:
    return timedelta(seconds=min(15 * 2 ** max(attempts - 1, 0), 3600))


def _now(now_iso: str | None) -> datetime:
    return datetime.fromisoformat(now_iso) if now_iso else datetime.now(UTC)
