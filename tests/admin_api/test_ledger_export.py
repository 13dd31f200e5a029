"""The ledger as CSV: one row per entry, oldest first, matching the ledger; filtered by time and
currency; spreadsheet formulas defused; the export audited with who asked for which range."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from extensions import db
from ledger import operations
from ledger.book import Actor
from ledger.export import LEDGER_COLUMNS, _decimal
from ledger.money import Money, exponent, format_amount
from models import CreditAccount, Customer, LedgerEntry
from tests.admin_api.helpers import audit_rows, csv_rows
from tests.api.helpers import assert_error

T0 = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)


def history(shop_id: int) -> None:
    """Two customers, USD and JPY, over four days; one reason a spreadsheet would run."""

    def by(day: int, reason: str = "goodwill", key: str | None = None) -> Actor:
        return Actor(shop_id, T0 + timedelta(days=day), "staff:1", reason, idempotency_key=key)

    operations.issue(db.session, by(0), customer=7_200_001, amount=Money(2500, "USD"))
    operations.issue(db.session, by(1), customer=7_200_002, amount=Money(900, "JPY"))
    operations.redeem(
        db.session, by(2, "order"), customer=7_200_001, amount=Money(1000, "USD"),
        shopify_order_id=5_000_000_001,
    )  # fmt: skip
    operations.issue(
        db.session,
        by(3, '=HYPERLINK("http://evil")'),
        customer=7_200_002,
        amount=Money(100, "USD"),
        note="+1 note",
    )


def ledger_rows(shop_id: int) -> list[dict[str, str]]:
    """What the CSV should hold, read from the tables."""
    stmt = (
        select(LedgerEntry, Customer.shopify_customer_id, CreditAccount.currency)
        .join(CreditAccount, CreditAccount.id == LedgerEntry.account_id)
        .join(Customer, Customer.id == CreditAccount.customer_id)
        .where(LedgerEntry.shop_id == shop_id)
        .order_by(LedgerEntry.created_at, LedgerEntry.id)
    )
    return [
        {
            "created_at": entry.created_at.isoformat().replace("+00:00", "Z"),
            "entry_id": str(entry.id),
            "customer_id": str(customer),
            "currency": currency,
            "kind": entry.kind,
            "amount": format_amount(entry.amount, currency),
            "balance_after": format_amount(entry.balance_after, currency),
            "lot_id": str(entry.lot_id or ""),
            "order_id": str(entry.shopify_order_id or ""),
            "refund_id": str(entry.shopify_refund_id or ""),
            "actor": entry.actor,
            "reason": entry.reason,
            "note": entry.note or "",
            "sequence": str(entry.sequence),
            "hash": entry.hash,
        }
        for entry, customer, currency in db.session.execute(stmt).all()
    ]


def test_the_csv_is_the_ledger_row_for_row(api, other_api):
    history(api.shop.id)
    history(other_api.shop.id)

    response = api.get("/api/ledger.csv")

    rows = csv_rows(response)
    assert response.headers["Cache-Control"] == "no-store"
    assert 'filename="ledger.csv"' in response.headers["Content-Disposition"]
    assert list(rows[0]) == list(LEDGER_COLUMNS)
    expected = ledger_rows(api.shop.id)
    assert len(rows) == len(expected) == 4
    defused = expected[-1] | {"reason": "'" + expected[-1]["reason"], "note": "'+1 note"}
    assert rows == [*expected[:-1], defused]
    assert [row["amount"] for row in rows] == ["25.00", "900", "-10.00", "1.00"]
    assert rows[2]["order_id"] == "5000000001"


def test_the_range_and_currency_filter_the_rows(api):
    history(api.shop.id)
    everything = ledger_rows(api.shop.id)

    window = csv_rows(api.get("/api/ledger.csv", **{"from": "2026-03-02", "to": "2026-03-03"}))
    usd = csv_rows(api.get("/api/ledger.csv", currency="usd"))
    since = csv_rows(api.get("/api/ledger.csv", **{"from": "2026-03-03T09:30:00Z"}))

    def ids(rows: list[dict[str, str]]) -> list[str]:
        return [row["entry_id"] for row in rows]

    assert ids(window) == ids(everything[1:3])  # days 1 and 2 (a date "to" includes its day)
    assert ids(usd) == ids([row for row in everything if row["currency"] == "USD"])
    assert len(usd) == 3
    assert ids(since) == ids(everything[2:])


def test_an_empty_range_is_a_header_only(api):
    history(api.shop.id)

    response = api.get("/api/ledger.csv", **{"from": "2030-01-01"})

    assert csv_rows(response) == []
    assert response.get_data(as_text=True).splitlines() == [",".join(LEDGER_COLUMNS)]


def test_the_export_is_audited_with_who_and_which_range(api):
    csv_rows(api.get("/api/ledger.csv", **{"from": "2026-03-02", "currency": "JPY"}))

    [row] = audit_rows(api.shop.id, "ledger.export")
    assert (row.actor, row.outcome, row.target_type) == (api.actor, "success", "ledger")
    assert row.details == {"from": "2026-03-02T00:00:00Z", "to": None, "currency": "JPY"}


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"from": "yesterday"}, "invalid_parameter"),
        ({"to": "2026-03-01T10:00:00"}, "invalid_parameter"),  # no zone
        ({"from": "2026-03-02", "to": "2026-03-01"}, "invalid_parameter"),
        ({"currency": "DOLLARS"}, "invalid_currency"),
    ],
)
def test_bad_parameters_are_refused_before_anything_is_audited(api, params, code):
    response = api.get("/api/ledger.csv", **params)

    assert response.status_code in (400, 422)
    assert_error(response, response.status_code, code)
    assert audit_rows(api.shop.id, "ledger.export") == []


def test_the_export_needs_a_session_token(client):
    assert_error(client.get("/api/ledger.csv"), 401, "invalid_session_token")


@pytest.mark.parametrize("currency", ["USD", "JPY", "KWD", "CLF"])
@pytest.mark.parametrize("minor", [0, 1, -1, 9, 10, 99, 100, 101, -1250, 123456789, -(10**15)])
def test_the_exports_amounts_are_format_amounts(currency, minor):
    assert _decimal(minor, exponent(currency)) == format_amount(minor, currency)
