"""Findings: differences to look at, recorded once per ``finding_key`` in a shop.

A finding is opened (or seen again) with one upsert on the unique ``(shop_id, finding_key)``,
so however often a run, a webhook or two concurrent runs see the same difference, there is one
row: ``first_seen_at`` stays, ``last_seen_at`` moves, and a finding resolved earlier that is
seen again is open again — unless a person resolved it and the difference is still the one
they looked at (the same amounts, the same number of violations): a broken chain stays broken
for ever, and a merchant who has looked into it should not see it reopen every hour.
Recording and resolving by runs does not commit; callers commit with the rest of their work.

The merchant reads findings newest first (``list_findings``) and resolves one by hand with a
note (``resolve_finding``, audited); ``repair_of`` says which kinds can be repaired and how
(ledger/repairs.py does it).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import and_, case, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from ledger import audit
from ledger.errors import FindingNotFound, FindingResolved
from ledger.money import format_amount
from ledger.views import iso
from models import ReconciliationFinding

# Finding kinds. Chain breaks and invariant violations are never resolved by a run: the ledger
# is append-only, nothing can "repair" it, and a person has to look.
CHAIN_BREAK = "chain_break"
INVARIANT_VIOLATION = "invariant_violation"
NATIVE_BALANCE_MISMATCH = "native_balance_mismatch"
NATIVE_TRANSACTION_MISSING = "native_transaction_missing"
NATIVE_ORDER_UNRECORDED = "native_order_unrecorded"
NATIVE_EXPIRY_MISMATCH = "native_expiry_mismatch"
OUTBOX_NOT_LANDED = "outbox_not_landed"
UNMATCHED_NATIVE_SPEND = "unmatched_native_spend"  # opened by order sync (ledger/orders.py)
KINDS = (
    CHAIN_BREAK,
    INVARIANT_VIOLATION,
    NATIVE_BALANCE_MISMATCH,
    NATIVE_TRANSACTION_MISSING,
    NATIVE_ORDER_UNRECORDED,
    NATIVE_EXPIRY_MISMATCH,
    OUTBOX_NOT_LANDED,
    UNMATCHED_NATIVE_SPEND,
)

# How each repairable kind is repaired: what auto-repair would do for it.
IMPORT_EXTERNAL = "import_external"  # the native transaction becomes an ``external`` entry
SYNC_ORDER = "sync_order"  # the order's store credit is read from Shopify again
SEND_OUTBOX = "send_outbox"  # the dead outbox row is queued and sent again
NOTE_LENGTH = 1000


@dataclass(frozen=True)
class Finding:
    kind: str
    key: str
    account_id: int | None = None
    shopify_customer_id: int | None = None
    currency: str | None = None
    expected: int | None = None
    actual: int | None = None
    details: dict[str, Any] = field(default_factory=dict)


def record_finding(session: Session, shop_id: int, finding: Finding, now: datetime) -> bool:
    """Open or see again ``finding``; True when it is new (first seen now)."""
    values = {
        "shop_id": shop_id,
        "kind": finding.kind,
        "finding_key": finding.key,
        "account_id": finding.account_id,
        "shopify_customer_id": finding.shopify_customer_id,
        "currency": finding.currency,
        "expected": finding.expected,
        "actual": finding.actual,
        "details": finding.details,
        "first_seen_at": now,
        "last_seen_at": now,
    }
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    upsert = insert(ReconciliationFinding).values(**values)
    seen = upsert.excluded
    row = ReconciliationFinding
    # Evaluated on the stored row: a person's resolution of this very difference stands.
    kept = and_(
        row.resolved_by.is_not(None),
        row.expected.is_not_distinct_from(seen.expected),
        row.actual.is_not_distinct_from(seen.actual),
        row.details["count"].is_not_distinct_from(seen.details["count"]),
    )
    stmt = upsert.on_conflict_do_update(
        index_elements=["shop_id", "finding_key"],
        set_={
            "last_seen_at": now,
            "expected": finding.expected,
            "actual": finding.actual,
            "details": finding.details,
            **{
                name: case((kept, getattr(row, name)), else_=None)
                for name in ("resolved_at", "resolution", "resolved_by", "resolution_note")
            },
        },
    ).returning(row.first_seen_at)
    first_seen: datetime = session.execute(stmt).scalar_one()
    return first_seen == now


def resolve_findings(
    session: Session, shop_id: int, keys: Iterable[str], now: datetime, resolution: str
) -> int:
    """Resolve the open findings among ``keys``; returns how many were open."""
    wanted = sorted(set(keys))
    if not wanted:
        return 0
    stmt = (
        update(ReconciliationFinding)
        .where(
            ReconciliationFinding.shop_id == shop_id,
            ReconciliationFinding.finding_key.in_(wanted),
            ReconciliationFinding.resolved_at.is_(None),
        )
        .values(resolved_at=now, resolution=resolution)
        .returning(ReconciliationFinding.id)
    )
    return len(session.execute(stmt).all())


def open_finding_keys(
    session: Session,
    shop_id: int,
    *,
    kinds: Iterable[str] | None = None,
    account_id: int | None = None,
) -> list[str]:
    stmt = select(ReconciliationFinding.finding_key).where(
        ReconciliationFinding.shop_id == shop_id, ReconciliationFinding.resolved_at.is_(None)
    )
    if kinds is not None:
        stmt = stmt.where(ReconciliationFinding.kind.in_(sorted(kinds)))
    if account_id is not None:
        stmt = stmt.where(ReconciliationFinding.account_id == account_id)
    return list(session.scalars(stmt.order_by(ReconciliationFinding.id)))


def open_findings(session: Session, shop_id: int) -> list[ReconciliationFinding]:
    """The shop's open findings, oldest first."""
    stmt = (
        select(ReconciliationFinding)
        .where(
            ReconciliationFinding.shop_id == shop_id, ReconciliationFinding.resolved_at.is_(None)
        )
        .order_by(ReconciliationFinding.first_seen_at, ReconciliationFinding.id)
    )
    return list(session.scalars(stmt))


# -- the merchant's view ---------------------------------------------------------------------


def repair_of(finding: ReconciliationFinding) -> str | None:
    """How the finding can be repaired (IMPORT_EXTERNAL, SYNC_ORDER, SEND_OUTBOX), or None.

    Exactly what auto-repair does: a native credit or debit made outside CreditCraft is
    imported; an order whose entry is missing, or whose spend could not be covered, is synced
    again; an outbox row the sync gave up on is sent again. Chain breaks and invariant
    violations cannot be repaired, a balance mismatch follows from the other findings, and an
    expiry Shopify made that the ledger does not know has nothing to import.
    """
    details = finding.details or {}
    if finding.kind == NATIVE_TRANSACTION_MISSING:
        importable = details.get("native_transaction") and details.get("type") != "expiration"
        return IMPORT_EXTERNAL if importable and finding.account_id is not None else None
    if finding.kind in (NATIVE_ORDER_UNRECORDED, UNMATCHED_NATIVE_SPEND):
        return SYNC_ORDER if order_of(finding) is not None else None
    if finding.kind == OUTBOX_NOT_LANDED and outbox_row_of(finding) is not None:
        return SEND_OUTBOX
    return None


def order_of(finding: ReconciliationFinding) -> int | None:
    """The Shopify order a finding is about (native_order_unrecorded, unmatched_native_spend)."""
    raw = (finding.details or {}).get("order") or (finding.details or {}).get("order_id")
    if raw is None:
        return None
    text = str(raw)
    return int(text) if text.isascii() and text.isdigit() else None


def outbox_row_of(finding: ReconciliationFinding) -> int | None:
    """The outbox row an ``outbox_not_landed`` finding is about (its key is ``outbox:{id}``)."""
    row_id = finding.finding_key.removeprefix("outbox:")
    return int(row_id) if row_id.isascii() and row_id.isdigit() else None


def finding_json(finding: ReconciliationFinding) -> dict[str, Any]:
    """A finding for the merchant. ``expected``/``actual`` are decimal strings when the
    finding has a currency; ``details`` is the record as reconciliation wrote it (amounts in
    minor units)."""
    return {
        "id": finding.id,
        "kind": finding.kind,
        "key": finding.finding_key,
        "status": "open" if finding.resolved_at is None else "resolved",
        "repair": repair_of(finding) if finding.resolved_at is None else None,
        "customer_id": _str(finding.shopify_customer_id),
        "account_id": _str(finding.account_id),
        "currency": finding.currency,
        "expected": _amount(finding.expected, finding.currency),
        "actual": _amount(finding.actual, finding.currency),
        "details": finding.details or {},
        "first_seen_at": iso(finding.first_seen_at),
        "last_seen_at": iso(finding.last_seen_at),
        "resolved_at": iso(finding.resolved_at),
        "resolution": finding.resolution,
        "resolved_by": finding.resolved_by,
        "resolution_note": finding.resolution_note,
    }


def list_findings(
    session: Session,
    shop_id: int,
    *,
    status: str | None = None,
    kind: str | None = None,
    after: int | None = None,
    limit: int = 50,
) -> tuple[list[dict[str, Any]], int | None]:
    """A page of the shop's findings, newest first (by id), ``status`` "open" or "resolved"
    (None: both), of one ``kind`` or all; ``after`` is the last id already seen. Returns the
    page and the id to continue after (None: no more)."""
    stmt = select(ReconciliationFinding).where(ReconciliationFinding.shop_id == shop_id)
    if status == "open":
        stmt = stmt.where(ReconciliationFinding.resolved_at.is_(None))
    elif status == "resolved":
        stmt = stmt.where(ReconciliationFinding.resolved_at.is_not(None))
    if kind is not None:
        stmt = stmt.where(ReconciliationFinding.kind == kind)
    if after is not None:
        stmt = stmt.where(ReconciliationFinding.id < after)
    stmt = stmt.order_by(ReconciliationFinding.id.desc()).limit(limit + 1)
    found = list(session.scalars(stmt))
    more = len(found) > limit
    found = found[:limit]
    return [finding_json(f) for f in found], (found[-1].id if more else None)


def get_finding(
    session: Session, shop_id: int, finding_id: int, *, for_update: bool = False
) -> ReconciliationFinding:
    """Raises FindingNotFound for another shop's finding as for one that does not exist."""
    stmt = select(ReconciliationFinding).where(
        ReconciliationFinding.shop_id == shop_id, ReconciliationFinding.id == finding_id
    )
    if for_update:
        stmt = stmt.with_for_update().execution_options(populate_existing=True)
    finding = session.execute(stmt).scalar_one_or_none()
    if finding is None:
        raise FindingNotFound("No such finding.", finding_id=finding_id)
    return finding


def resolve_finding(
    session: Session, shop_id: int, finding_id: int, *, note: str, actor: str, now: datetime
) -> ReconciliationFinding:
    """Mark an open finding resolved by ``actor`` with ``note`` (audited), and commit.

    Raises:
        FindingNotFound: no such finding in this shop.
        FindingResolved: it is resolved already (the refusal is audited).
    """
    action, target = "finding.resolve", audit.Target("finding", str(finding_id))
    finding = get_finding(session, shop_id, finding_id, for_update=True)
    if finding.resolved_at is not None:
        raise audit.refused(
            session,
            shop_id,
            actor,
            action,
            target,
            now,
            FindingResolved(
                "This finding is resolved already.",
                resolved_at=iso(finding.resolved_at),
                resolved_by=finding.resolved_by,
            ),
            {"note": note},
        )
    mark_resolved(finding, actor=actor, now=now, resolution="marked resolved", note=note)
    audit.record(session, shop_id, actor, action, target, now, {"kind": finding.kind, "note": note})
    session.commit()
    return finding


def mark_resolved(
    finding: ReconciliationFinding, *, actor: str, now: datetime, resolution: str, note: str | None
) -> None:
    """Resolve ``finding`` (locked by the caller) in a person's name."""
    finding.resolved_at = now
    finding.resolution = resolution
    finding.resolved_by = actor
    finding.resolution_note = note


def _amount(minor: int | None, currency: str | None) -> str | None:
    if minor is None:
        return None
    return format_amount(minor, currency) if currency else str(minor)


def _str(value: int | None) -> str | None:
    return None if value is None else str(value)
