"""Findings: differences to look at, recorded once per ``finding_key`` in a shop.

A finding is opened (or seen again) with one upsert on the unique ``(shop_id, finding_key)``,
so however often a run, a webhook or two concurrent runs see the same difference, there is one
row: ``first_seen_at`` stays, ``last_seen_at`` moves, and a finding resolved earlier that is
seen again is open again. Nothing here commits; callers commit with the rest of their work.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from models import ReconciliationFinding


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
    stmt = (
        insert(ReconciliationFinding)
        .values(**values)
        .on_conflict_do_update(
            index_elements=["shop_id", "finding_key"],
            set_={
                "last_seen_at": now,
                "expected": finding.expected,
                "actual": finding.actual,
                "details": finding.details,
                "resolved_at": None,
                "resolution": None,
            },
        )
        .returning(ReconciliationFinding.first_seen_at)
    )
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
