"""The books re-checked whole: every account, and the totals per shop and currency.

``check_books`` is what an operator runs on a restored backup (``make restore-check``) or on
the live database (``flask ledger verify``): every account is verified with
``verify_accounts`` (chain, sequence, balance = Σ entries = Σ live lots, lifetime totals, and
every lot of the account, closed ones and ones no entry names included) from its first entry,
or from its signed archive checkpoint, whose signature is checked and whose archived prefix is
replayed from genesis too (``archived``). Then, independently of the replay, the database's own
sums per shop and currency must agree: the accounts' balances, what their live lots hold, and
what their entries add up to (the hot ones plus the balance at each account's checkpoint).

Everything is read in one REPEATABLE READ snapshot (when the session owns its connection), so
a live ledger that keeps changing is still seen at one instant.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ledger.checkpoints import CheckpointKeys, latest_checkpoints
from ledger.kinds import LotStatus
from ledger.money import format_amount
from ledger.reconcile import begin_snapshot
from ledger.verify import Violation, verify_accounts
from models import CreditAccount, CreditLot, Customer, LedgerEntry, Shop

# Accounts verified per call (bounds the memory of one batch: its lots).
BATCH_ACCOUNTS = 200
# Violations named per failing account in the summary.
SHOWN = 5


@dataclass
class Totals:
    """One shop's figures in one currency, in minor units."""

    shop_id: int
    domain: str
    currency: str
    accounts: int = 0
    balances: int = 0  # Σ credit_accounts.balance
    live_lots: int = 0  # Σ remaining of active lots
    entries: int = 0  # Σ hot entries' amounts + Σ balances at the accounts' checkpoints

    @property
    def agree(self) -> bool:
        return self.balances == self.live_lots == self.entries


@dataclass(frozen=True)
class Failure:
    account_id: int
    domain: str
    shopify_customer_id: int | None
    currency: str
    violations: list[Violation]


@dataclass
class BooksReport:
    accounts: int = 0
    entries: int = 0
    archived_entries: int = 0
    totals: list[Totals] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures and all(totals.agree for totals in self.totals)

    def lines(self) -> list[str]:
        """The summary an operator reads: totals, then each failure, then PASS or FAIL."""
        out = [
            f"{t.domain} {t.currency}: {t.accounts} accounts, balances "
            f"{format_amount(t.balances, t.currency)}, live lots "
            f"{format_amount(t.live_lots, t.currency)}, entries "
            f"{format_amount(t.entries, t.currency)}" + ("" if t.agree else "  <- MISMATCH")
            for t in self.totals
        ]
        for failure in self.failures:
            customer = failure.shopify_customer_id
            codes = "; ".join(_describe(v) for v in failure.violations[:SHOWN])
            more = len(failure.violations) - SHOWN
            out.append(
                f"FAIL account {failure.account_id} ({failure.domain}, customer {customer}, "
                f"{failure.currency}): {codes}" + (f"; and {more} more" if more > 0 else "")
            )
        mismatched = sum(not t.agree for t in self.totals)
        verdict = "PASS" if self.ok else "FAIL"
        out.append(
            f"{verdict}: {self.accounts} accounts, {self.entries} entries "
            f"(+{self.archived_entries} archived) checked; {len(self.failures)} failing "
            f"accounts, {mismatched} shop/currency totals that disagree"
        )
        return out


def _describe(violation: Violation) -> str:
    where = violation.details.get("sequence")
    return violation.code + (f" at sequence {where}" if where is not None else "")


def check_books(
    session: Session,
    *,
    keys: CheckpointKeys | None,
    shop_id: int | None = None,
    archived: bool = True,
    batch: int = BATCH_ACCOUNTS,
) -> BooksReport:
    """Verify every account (of ``shop_id``, or all) and the totals; ends the transaction."""
    report = BooksReport()
    session.commit()
    begin_snapshot(session)
    try:
        labels = _labels(session, shop_id)
        account_ids = sorted(labels)
        for start in range(0, len(account_ids), batch):
            chunk = account_ids[start : start + batch]
            checks = verify_accounts(session, chunk, every_lot=True, keys=keys, archived=archived)
            for check in checks:
                report.accounts += 1
                report.entries += check.entries_checked
                report.archived_entries += check.archived_checked
                if not check.clean:
                    domain, customer, currency = labels[check.account_id]
                    report.failures.append(
                        Failure(check.account_id, domain, customer, currency, check.violations)
                    )
        report.totals = _totals(session, shop_id, account_ids)
    finally:
        session.commit()
    return report


def _labels(session: Session, shop_id: int | None) -> dict[int, tuple[str, int | None, str]]:
    """(shop domain, Shopify customer id, currency) per account."""
    stmt = (
        select(CreditAccount.id, Shop.domain, Customer.shopify_customer_id, CreditAccount.currency)
        .join(Shop, Shop.id == CreditAccount.shop_id)
        .outerjoin(Customer, Customer.id == CreditAccount.customer_id)
    )
    if shop_id is not None:
        stmt = stmt.where(CreditAccount.shop_id == shop_id)
    return {row[0]: (row[1], row[2], row[3]) for row in session.execute(stmt)}


def _totals(session: Session, shop_id: int | None, account_ids: Sequence[int]) -> list[Totals]:
    """The database's own sums per (shop, currency), each from a different table."""
    found: dict[tuple[int, str], Totals] = {}

    def at(shop: int, domain: str, currency: str) -> Totals:
        return found.setdefault((shop, currency), Totals(shop, domain, currency))

    scope = [] if shop_id is None else [CreditAccount.shop_id == shop_id]
    keys = (CreditAccount.shop_id, Shop.domain, CreditAccount.currency)
    accounts = (
        select(*keys, func.count(), func.coalesce(func.sum(CreditAccount.balance), 0))
        .join(Shop, Shop.id == CreditAccount.shop_id)
        .where(*scope)
        .group_by(*keys)
    )
    for shop, domain, currency, count, balances in session.execute(accounts):
        totals = at(shop, domain, currency)
        totals.accounts, totals.balances = int(count), int(balances)
    lots = (
        select(*keys, func.coalesce(func.sum(CreditLot.remaining), 0))
        .join(CreditAccount, CreditAccount.id == CreditLot.account_id)
        .join(Shop, Shop.id == CreditAccount.shop_id)
        .where(CreditLot.status == LotStatus.ACTIVE.value, *scope)
        .group_by(*keys)
    )
    for shop, domain, currency, remaining in session.execute(lots):
        at(shop, domain, currency).live_lots = int(remaining)
    entries = (
        select(*keys, func.coalesce(func.sum(LedgerEntry.amount), 0))
        .join(CreditAccount, CreditAccount.id == LedgerEntry.account_id)
        .join(Shop, Shop.id == CreditAccount.shop_id)
        .where(*scope)
        .group_by(*keys)
    )
    for shop, domain, currency, amount in session.execute(entries):
        at(shop, domain, currency).entries += int(amount)
    at_checkpoints: dict[tuple[int, str, str], int] = defaultdict(int)
    signed = latest_checkpoints(session, account_ids)
    if signed:
        where = select(*keys, CreditAccount.id).join(Shop, Shop.id == CreditAccount.shop_id)
        for shop, domain, currency, account_id in session.execute(
            where.where(CreditAccount.id.in_(list(signed)))
        ):
            at_checkpoints[(shop, domain, currency)] += signed[account_id].balance
    for (shop, domain, currency), balance in at_checkpoints.items():
        at(shop, domain, currency).entries += balance
    return sorted(found.values(), key=lambda t: (t.domain, t.currency))
