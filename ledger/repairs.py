"""Repairing one finding by hand: what auto-repair would do for it, on a merchant's request.

``start_repair`` does the part that needs no Shopify, at once, and says what is left:

- ``import_external`` (a native credit or debit made outside CreditCraft): imported here as an
  ``external`` entry in the staff member's name, under the same key auto-repair uses
  (``native:{GID}``), so a run that imports it too does nothing twice. Resolved at once.
- ``send_outbox`` (a row the native sync gave up on): put back to ``pending`` here; a job
  sends it (the sweeper would too), and ``settle_repair`` resolves the finding once it landed.
- ``sync_order`` (an order whose entry is missing, or whose spend could not be covered): a
  job reads the order from Shopify and writes what the ledger lacks; ``settle_repair`` then
  says whether that resolved the finding.

Chain breaks, invariant violations and the other kinds are refused (``not_repairable``).
Every request and every outcome is audited in the staff member's name.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ledger import audit
from ledger.errors import FindingResolved, LedgerError, NotRepairable
from ledger.external import ExternalMovement, import_external
from ledger.findings import (
    CHAIN_BREAK,
    IMPORT_EXTERNAL,
    INVARIANT_VIOLATION,
    NATIVE_BALANCE_MISMATCH,
    SEND_OUTBOX,
    SYNC_ORDER,
    get_finding,
    mark_resolved,
    order_of,
    outbox_row_of,
    repair_of,
)
from ledger.money import Money
from ledger.reconcile import requeue_dead_outbox
from ledger.views import iso
from models import ReconciliationFinding, ShopifyOutbox

REQUEST, RESULT = "finding.repair", "finding.repair_result"


@dataclass(frozen=True)
class Repair:
    """What a repair request did, and what a job still has to do (``pending``)."""

    finding: ReconciliationFinding
    method: str
    pending: bool
    entry: dict[str, Any] | None = None  # import_external: the entry written
    order_id: int | None = None  # sync_order
    outbox_entry_id: uuid.UUID | None = None  # send_outbox: the entry whose row is re-sent

    def to_json(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "pending": self.pending,
            "entry": self.entry,
            "order_id": None if self.order_id is None else str(self.order_id),
            "outbox_entry_id": None if self.outbox_entry_id is None else str(self.outbox_entry_id),
        }


def start_repair(
    session: Session, shop_id: int, finding_id: int, *, actor: str, now: datetime
) -> Repair:
    """Repair what can be repaired here and commit; ``pending`` says a job must finish it.

    Raises:
        FindingNotFound: no such finding in this shop.
        FindingResolved, NotRepairable: refused (audited).
        LedgerError: the import was refused (e.g. a debit larger than the account holds
            before the credit it needs is imported; audited).
    """
    finding = get_finding(session, shop_id, finding_id)
    target = audit.Target("finding", str(finding_id))
    method = repair_of(finding)
    try:
        if finding.resolved_at is not None:
            raise FindingResolved(
                "This finding is resolved already.", resolved_at=iso(finding.resolved_at)
            )
        if method is None:
            raise NotRepairable(_why_not(finding.kind), kind=finding.kind)
        if method == IMPORT_EXTERNAL:
            repair = _import(session, shop_id, finding, actor=actor, now=now)
        elif method == SEND_OUTBOX:
            repair = _requeue(session, shop_id, finding, now=now)
        else:
            assert method == SYNC_ORDER
            repair = Repair(finding, method, pending=True, order_id=order_of(finding))
    except LedgerError as error:
        details = {"kind": finding.kind, "method": method}
        raise audit.refused(session, shop_id, actor, REQUEST, target, now, error, details) from None
    details = {"kind": repair.finding.kind, **repair.to_json()}
    audit.record(session, shop_id, actor, REQUEST, target, now, details)
    session.commit()
    return repair


def settle_repair(
    session: Session,
    shop_id: int,
    finding_id: int,
    *,
    actor: str,
    now: datetime,
    notes: list[str] | None = None,
) -> ReconciliationFinding:
    """After a repair job: resolve the finding if its difference is gone, audit the outcome.

    A ``send_outbox`` finding is resolved once its row landed in Shopify. A ``sync_order``
    finding was resolved by what the job ran (the order sync, or the native comparison that
    followed it), if the order's entries are now in the ledger; it is credited to ``actor``.
    """
    finding = get_finding(session, shop_id, finding_id, for_update=True)
    method = repair_of(finding)
    if finding.resolved_at is None and method == SEND_OUTBOX:
        row_id = outbox_row_of(finding)
        state = session.scalar(select(ShopifyOutbox.state).where(ShopifyOutbox.id == row_id))
        if state == "done":
            mark_resolved(finding, actor=actor, now=now, resolution="landed in Shopify", note=None)
    elif finding.resolved_at is not None and finding.resolved_by is None:
        finding.resolved_by = actor  # resolved by the steps this person's repair ran
    target = audit.Target("finding", str(finding_id))
    details = {
        "kind": finding.kind,
        "method": method,
        "resolution": finding.resolution,
        "notes": notes or [],
    }
    failure = None
    if finding.resolved_at is None:
        failure = audit.Failure(
            "repair_incomplete",
            "The repair ran, but the difference is still there (see the finding).",
        )
    audit.record(session, shop_id, actor, RESULT, target, now, details, failure=failure)
    session.commit()
    return finding


def outbox_entry_of(session: Session, finding: ReconciliationFinding) -> uuid.UUID | None:
    """The ledger entry whose outbox row a ``send_outbox`` finding is about."""
    return session.scalar(
        select(ShopifyOutbox.entry_id).where(
            ShopifyOutbox.id == outbox_row_of(finding), ShopifyOutbox.shop_id == finding.shop_id
        )
    )


def _import(
    session: Session, shop_id: int, finding: ReconciliationFinding, *, actor: str, now: datetime
) -> Repair:
    """Import the native transaction the finding recorded, then resolve the finding."""
    details = finding.details
    assert finding.account_id is not None
    assert finding.currency is not None
    expires_at = details.get("expires_at") if details.get("type") == "credit" else None
    movement = ExternalMovement(
        native_gid=str(details["native_transaction"]),
        amount=Money(int(details["amount"]), finding.currency),
        occurred_at=datetime.fromisoformat(str(details["created_at"])),
        event=str(details.get("event") or ""),
        expires_at=datetime.fromisoformat(expires_at) if expires_at else None,
    )
    finding_id = finding.id
    receipt = import_external(session, shop_id, finding.account_id, movement, now=now, actor=actor)
    # The import committed; lock the finding for the resolution (another repair may have won).
    finding = get_finding(session, shop_id, finding_id, for_update=True)
    if finding.resolved_at is None:
        mark_resolved(
            finding,
            actor=actor,
            now=now,
            resolution=f"imported as external entry {receipt.entry['id']}",
            note=None,
        )
    return Repair(finding, IMPORT_EXTERNAL, pending=False, entry=receipt.entry)


def _requeue(
    session: Session, shop_id: int, finding: ReconciliationFinding, *, now: datetime
) -> Repair:
    """Put the dead row back to pending (a row already pending or landed is left as it is)."""
    row_id = outbox_row_of(finding)
    assert row_id is not None
    requeue_dead_outbox(session, [row_id], now)
    return Repair(
        finding, SEND_OUTBOX, pending=True, outbox_entry_id=outbox_entry_of(session, finding)
    )


def _why_not(kind: str) -> str:
    if kind in (CHAIN_BREAK, INVARIANT_VIOLATION):
        return (
            "The ledger is append-only: a broken chain or invariant cannot be repaired. "
            "Look into it, then mark it resolved with a note."
        )
    if kind == NATIVE_BALANCE_MISMATCH:
        return (
            "A balance difference follows from the account's other findings: repair those, "
            "or mark it resolved with a note."
        )
    return "This finding cannot be repaired automatically; mark it resolved with a note."
