"""Reconciliation job: the ledger against itself, then each account against Shopify.

``reconcile_shop(shop_id, full=False)`` is what the schedule runs hourly (incremental) and
nightly (``full=True``) per shop, and what ``flask credits reconcile`` runs inline. The rules
are the domain's (``ledger/reconcile.py``); this module adds what touches Shopify: reading each
account's native ``StoreCreditAccount`` (balance and transactions since its watermark) and
re-running an order's sync.

- **Which accounts.** Incremental: those whose chain moved since their checkpoint, plus, for
  the native comparison, every account known to have a native account (a staff edit in
  Shopify admin changes nothing on our side, so only asking Shopify finds it). Full: all, the
  ledger from each account's first entry; natively, from each account's watermark as always.
- **Repairs**, with the shop's auto-repair on: native transactions the ledger lacks imported
  as ``external`` entries; orders the ledger lacks synced again; outbox rows the native sync
  gave up on put back to ``pending`` (the outbox sweeper sends them, matching first); then the
  order sync is re-run for spends that could not be covered when they came. Chain breaks,
  tampering and invariant violations are never repaired.
- **Shops with native sync off**: only the ledger's own checks.
- **One run per shop at a time**: a Redis lock (renewed as the run goes, expiring if its worker
  dies); a second run finds it held and returns ``skipped``. Without Redis (``make run``) jobs
  run inline in one process and there is nothing to race. Everything a run writes is
  idempotent anyway (checkpoints compare-and-set, imports keyed by native GID, findings
  upserted), so a run killed half-way is simply run again: what it verified is kept, the rest
  is done by the next run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime, timedelta
from typing import Any

from redis.exceptions import LockError
from redis.lock import Lock
from rq import Retry
from sqlalchemy.orm import Session

import tenancy
from blueprints.settings import current_settings
from config import Settings
from extensions import current_session
from jobs.native import find_account, native_money, native_transaction
from jobs.queues import REDIS_DOWN, enqueue_unique, redis_connection, shared_queue
from jobs.sync import sync_to_shopify
from ledger.checkpoints import CheckpointKeys
from ledger.errors import FindingNotFound, LedgerError
from ledger.findings import (
    SEND_OUTBOX,
    SYNC_ORDER,
    get_finding,
    open_finding_keys,
    open_findings,
    order_of,
    repair_of,
)
from ledger.money import Money
from ledger.reconcile import (
    UNMATCHED_NATIVE_SPEND,
    NativeAccount,
    NativeTarget,
    NativeTransaction,
    Tally,
    all_accounts,
    changed_accounts,
    check_ledger,
    check_outbox,
    finish_run,
    native_target,
    natively_linked_accounts,
    reconcile_native_account,
    remember_native_account,
    retry_unmatched_spends,
    start_run,
    summary,
)
from ledger.repairs import outbox_entry_of, settle_repair
from models import Shop
from shop_access import ShopNotConnected, admin_client
from shopify_client import documents
from shopify_client.errors import ShopifyClientError
from shopify_client.graphql import AdminClient
from webhooks.handlers._orders import sync_order_from_shopify
from webhooks.topics import Ignored

log = logging.getLogger(__name__)

ACTOR = "system:reconciliation"
# The lock outlives a stalled renewal by this much; a dead worker's lock expires after it.
LOCK_TTL = timedelta(minutes=10)
# Native transactions, newest first: a first page of one (most accounts have nothing new since
# their watermark, and the balance comes with it: 9 cost points, so a Standard shop's 100
# points a second compare about 11 idle accounts a second), then full pages of 50.
FIRST_PAGE, PAGE = 1, 50
# What one account's native comparison may fail with and leave for the next run.
_NATIVE_FAILURES = (ShopifyClientError, LedgerError, KeyError, TypeError, ValueError)


@tenancy.per_shop
def reconcile_shop(shop_id: int, full: bool = False, now_iso: str | None = None) -> dict[str, Any]:
    """Reconcile one shop; returns the run's counts (``result`` says whether it ran)."""
    now = datetime.fromisoformat(now_iso) if now_iso else datetime.now(UTC)
    session = current_session()
    settings = current_settings()
    shop = session.get(Shop, shop_id)
    session.commit()
    if shop is None or shop.erased_at is not None:
        return {"result": "no_shop", "shop_id": shop_id}
    with shop_lock(settings, shop_id) as keep_alive:
        if keep_alive is None:
            log.info("reconciliation of shop %d skipped: another run holds it", shop_id)
            return {"result": "skipped", "shop_id": shop_id}
        run_id = start_run(session, shop_id, full=full, now=now)
        tally = Tally()
        try:
            _reconcile(session, settings, shop, full=full, now=now, tally=tally, keep=keep_alive)
        except BaseException as error:
            session.rollback()
            finish_run(session, run_id, tally, now, failure=f"{type(error).__name__}: {error}")
            raise
        finish_run(session, run_id, tally, now)
    still_open = len(open_findings(session, shop_id))
    session.commit()
    log.info("reconciled shop %d (%s): %s", shop_id, "full" if full else "incremental", tally)
    return {
        "result": "finished",
        "shop_id": shop_id,
        "run_id": run_id,
        "kind": "full" if full else "incremental",
        "open_findings": still_open,
        **summary(tally),
    }


@contextmanager
def shop_lock(settings: Settings, shop_id: int) -> Iterator[Callable[[], None] | None]:
    """Hold the shop's reconciliation lock: yields a renewer, or None when another run has it."""
    if settings.redis_url is None:
        yield lambda: None
        return
    connection = redis_connection(settings)
    lock = Lock(
        connection,
        f"creditcraft:reconcile:{shop_id}",
        timeout=LOCK_TTL.total_seconds(),
        blocking=False,
    )
    try:
        if not lock.acquire(blocking=False):
            yield None
            return

        def renew() -> None:
            try:
                lock.reacquire()
            except LockError:
                # Lost (the run stalled past LOCK_TTL): another run may be going. Carrying on
                # is safe, since everything a run writes is idempotent; it only costs twice.
                log.warning("reconciliation lock of shop %d lost; carrying on", shop_id)

        try:
            yield renew
        finally:
            with suppress(LockError):  # expired meanwhile: another run may hold it now
                lock.release()
    finally:
        connection.close()


def _reconcile(
    session: Session,
    settings: Settings,
    shop: Shop,
    *,
    full: bool,
    now: datetime,
    tally: Tally,
    keep: Callable[[], None],
) -> None:
    changed = all_accounts(session, shop.id) if full else changed_accounts(session, shop.id)
    keys = CheckpointKeys(settings.archive_signing_keys)
    check_ledger(
        session, shop.id, changed, full=full, now=now, tally=tally, keep_alive=keep, keys=keys
    )
    if not shop.native_sync:
        return
    if not shop.is_installed:
        tally.errors.append("native comparison skipped: the shop is not installed")
        return
    spends_before = set(open_finding_keys(session, shop.id, kinds=[UNMATCHED_NATIVE_SPEND]))
    session.commit()
    try:
        client = admin_client(session, settings, shop, now)
    except ShopNotConnected as error:
        tally.errors.append(f"native comparison skipped: {error}")
        return

    def sync_order(order_id: int) -> None:
        with suppress(Ignored):  # the order is gone, or moved no store credit after all
            sync_order_from_shopify(session, shop, order_id, now, actor=ACTOR)

    linked = [] if full else natively_linked_accounts(session, shop.id)
    for account_id in sorted({*changed, *linked}):
        keep()
        _compare_account(
            session, client, shop, account_id, now, tally, sync_order, auto_repair=shop.auto_repair
        )
    check_outbox(session, shop.id, auto_repair=shop.auto_repair, now=now, tally=tally)
    if shop.auto_repair:
        retry_unmatched_spends(session, shop.id, tally=tally, sync_order=sync_order)
    spends_after = set(open_finding_keys(session, shop.id, kinds=[UNMATCHED_NATIVE_SPEND]))
    session.commit()
    tally.findings_resolved += len(spends_before - spends_after)


def _compare_account(
    session: Session,
    client: AdminClient,
    shop: Shop,
    account_id: int,
    now: datetime,
    tally: Tally,
    sync_order: Callable[[int], None],
    *,
    auto_repair: bool,
) -> None:
    """One account against its native account; a failure is noted and left for the next run."""
    target = native_target(session, account_id)
    try:
        native = read_native(session, client, target)
        reconcile_native_account(
            session,
            shop.id,
            target,
            native,
            auto_repair=auto_repair,
            now=now,
            tally=tally,
            sync_order=sync_order,
        )
    except _NATIVE_FAILURES as error:
        session.rollback()
        tally.errors.append(f"account {account_id}: {type(error).__name__}: {error}")
        log.warning("native comparison of account %d failed: %s", account_id, error)


# -- reading the native side -----------------------------------------------------------------


def read_native(session: Session, client: AdminClient, target: NativeTarget) -> NativeAccount:
    """The account's native balance and its transactions back to ``target.read_since``.

    Pages newest first and stops at the first transaction older than the watermark, so an
    account with nothing new costs one small page. The native account's GID is looked up
    (and kept) the first time.
    """
    account_gid = target.native_gid or find_account(
        client, target.shopify_customer_id, target.currency
    )
    if account_gid is None:
        return NativeAccount(None, Money(0, target.currency), [])
    if target.native_gid is None:
        remember_native_account(session, target.account_id, account_gid)
    transactions: list[NativeTransaction] = []
    balance: Money | None = None
    after: str | None = None
    first = FIRST_PAGE
    while True:
        data = client.query(
            documents.STORE_CREDIT_ACTIVITY, {"id": account_gid, "first": first, "after": after}
        )
        account = data.get("storeCreditAccount")
        if account is None:  # closed in Shopify since
            return NativeAccount(None, Money(0, target.currency), [])
        if balance is None:  # the first page's: read with the newest transactions
            balance = native_money(account["balance"])
        page = account["transactions"]
        reached = False
        for node in page["nodes"]:
            transaction = native_transaction(node)
            if target.read_since is not None and transaction.created_at < target.read_since:
                reached = True
                break
            transactions.append(transaction)
        if reached or not page["pageInfo"]["hasNextPage"]:
            break
        after, first = page["pageInfo"]["endCursor"], PAGE
    transactions.reverse()
    return NativeAccount(account_gid, balance, transactions)


# -- on a merchant's request -----------------------------------------------------------------

# A run or repair the merchant asked for: retried once (they can ask again).
REQUESTED_RETRY = Retry(max=1, interval=[60])
RUN_TIMEOUT = {False: timedelta(minutes=15), True: timedelta(hours=2)}


def run_job_id(shop_id: int, full: bool) -> str:
    return f"reconcile-{shop_id}-{'full' if full else 'incremental'}-requested"


def enqueue_reconcile(settings: Settings, shop_id: int, *, full: bool) -> str:
    """Have ``reconcile_shop(shop_id, full)`` run: ``enqueued``, ``already_queued`` (one is
    waiting or running), ``redis_unavailable``; without REDIS_URL (``make run``) it runs here:
    ``ran_inline`` / ``failed_inline``. Full runs go to the ``bulk`` queue, as scheduled."""
    if settings.redis_url is None:
        try:
            reconcile_shop(shop_id, full)
        except Exception:
            log.exception("reconciliation of shop %d failed inline", shop_id)
            return "failed_inline"
        return "ran_inline"
    try:
        return enqueue_unique(
            shared_queue(settings.redis_url, "bulk" if full else "default"),
            reconcile_shop,
            (shop_id, full),
            job_id=run_job_id(shop_id, full),
            retry=REQUESTED_RETRY,
            timeout=int(RUN_TIMEOUT[full].total_seconds()),
            description=f"{'full' if full else 'incremental'} reconciliation of shop {shop_id}",
        )
    except REDIS_DOWN as error:
        log.warning("reconciliation of shop %d not enqueued (Redis: %s)", shop_id, error)
        return "redis_unavailable"


def repair_job_id(finding_id: int) -> str:
    return f"repair-finding-{finding_id}"


def enqueue_repair(settings: Settings, shop_id: int, finding_id: int, actor: str) -> str:
    """Have ``repair_finding`` finish a repair started by ``ledger.repairs.start_repair``;
    the same outcomes as ``enqueue_reconcile``."""
    if settings.redis_url is None:
        try:
            repair_finding(shop_id, finding_id, actor)
        except Exception:
            log.exception("repair of finding %d failed inline", finding_id)
            return "failed_inline"
        return "ran_inline"
    try:
        return enqueue_unique(
            shared_queue(settings.redis_url, "default"),
            repair_finding,
            (shop_id, finding_id, actor),
            job_id=repair_job_id(finding_id),
            retry=REQUESTED_RETRY,
            description=f"repair of finding {finding_id} for {actor}",
        )
    except REDIS_DOWN as error:
        log.warning("repair of finding %d not enqueued (Redis: %s)", finding_id, error)
        return "redis_unavailable"


@tenancy.per_shop
def repair_finding(
    shop_id: int, finding_id: int, actor: str, now_iso: str | None = None
) -> dict[str, Any]:
    """The part of a finding's repair that talks to Shopify, in ``actor``'s name.

    ``send_outbox``: the row (put back to pending by the request) is sent now. ``sync_order``:
    the order is read from Shopify and what the ledger lacks of it written; then the account
    is compared with its native account, which resolves the finding once the order's entries
    match. Either way the outcome is settled and audited (``finding.repair_result``); a
    failure leaves the finding open for the merchant to try again.
    """
    now = datetime.fromisoformat(now_iso) if now_iso else datetime.now(UTC)
    session = current_session()
    try:
        finding = get_finding(session, shop_id, finding_id)
    except FindingNotFound:  # erased with its shop meanwhile
        session.rollback()
        return {"result": "not_found", "finding_id": finding_id}
    method, order_id, account_id = repair_of(finding), order_of(finding), finding.account_id
    resolved = finding.resolved_at is not None
    entry_id = outbox_entry_of(session, finding) if method == SEND_OUTBOX else None
    shop = session.get(Shop, shop_id)
    session.commit()
    if resolved or shop is None:
        return {"result": "resolved_already", "finding_id": finding_id}
    notes: list[str] = []
    if entry_id is not None:
        notes.append(f"native sync: {sync_to_shopify(str(entry_id), now_iso)}")
    elif method == SYNC_ORDER and order_id is not None:
        notes += _sync_and_compare(session, shop, order_id, account_id, actor, now)
    settled = settle_repair(session, shop_id, finding_id, actor=actor, now=now, notes=notes)
    outcome = "resolved" if settled.resolved_at is not None else "still_open"
    log.info("repair of finding %d by %s: %s %s", finding_id, actor, outcome, notes)
    return {"result": outcome, "finding_id": finding_id, "method": method, "notes": notes}


def _sync_and_compare(
    session: Session, shop: Shop, order_id: int, account_id: int | None, actor: str, now: datetime
) -> list[str]:
    """Sync the order, then compare its account natively; returns what went wrong, if any."""
    try:
        with suppress(Ignored):  # the order is gone, or moved no store credit after all
            sync_order_from_shopify(session, shop, order_id, now, actor=actor)
    except (ShopNotConnected, *_NATIVE_FAILURES) as error:
        session.rollback()
        return [f"order {order_id} sync failed: {type(error).__name__}: {error}"]
    if account_id is None:
        return []
    try:
        client = admin_client(session, current_settings(), shop, now)
    except ShopNotConnected as error:
        return [f"native comparison skipped: {error}"]
    tally = Tally()
    _compare_account(
        session, client, shop, account_id, now, tally, lambda _order: None, auto_repair=False
    )
    return tally.errors
