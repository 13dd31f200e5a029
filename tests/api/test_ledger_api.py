"""The ledger routes of the JSON API: what each answers, and that shops never see each other."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from extensions import db
from ledger import operations
from ledger.money import Money
from models import AuditLog, Customer, LedgerEntry
from tests.api.helpers import STAFF_ID, Api, assert_error, row_counts
from tests.factories import CustomerFactory
from tests.ledger.helpers import keyed

CUSTOMER = 7408348290


def cursor_pages(api: Api, path: str, key: str, **params: object) -> list[list[dict]]:
    """Follow next_cursor to the end; each page's items."""
    pages: list[list[dict]] = []
    cursor = None
    while True:
        query = dict(params) | ({"cursor": cursor} if cursor else {})
        response = api.get(path, **query)
        assert response.status_code == 200, response.get_data(as_text=True)
        body = response.get_json()
        pages.append(body[key])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages
        assert len(pages) < 50, "pagination does not end"


# -- issue credit and read it back ----------------------------------------------------------


@pytest.mark.smoke
def test_issue_credit_creates_the_customer_and_reads_back(api, shop):
    expires = (datetime.now(UTC) + timedelta(days=30)).replace(microsecond=0)
    body = api.credit(CUSTOMER, "12.50", expires_at=expires.isoformat(), note="late parcel")

    assert set(body) == {"entry", "lot", "account"}
    entry, lot, account = body["entry"], body["lot"], body["account"]
    assert (entry["kind"], entry["amount"], entry["currency"]) == ("issue", "12.50", "USD")
    assert (entry["balance_after"], entry["sequence"], entry["lot_id"]) == ("12.50", 1, lot["id"])
    assert (entry["reason"], entry["note"]) == ("goodwill", "late parcel")
    assert (lot["amount"], lot["remaining"], lot["status"]) == ("12.50", "12.50", "active")
    assert lot["expires_at"] == expires.isoformat().replace("+00:00", "Z")
    assert (account["currency"], account["balance"]) == ("USD", "12.50")

    detail = api.get(f"/api/customers/{CUSTOMER}")
    assert detail.status_code == 200
    data = detail.get_json()
    assert data["customer"]["id"] == str(CUSTOMER)
    assert data["customer"]["balances"] == [{"currency": "USD", "amount": "12.50"}]
    [usd] = data["accounts"]
    assert usd["balance"] == "12.50"
    assert [x["id"] for x in usd["lots"]] == [lot["id"]]

    ledger = api.get(f"/api/customers/{CUSTOMER}/ledger").get_json()
    assert ledger == {"entries": [entry], "next_cursor": None}
    assert row_counts(shop.id)["customers"] == 1


@pytest.mark.parametrize(
    ("currency", "amount", "shown"),
    [
        ("USD", "10", "10.00"),
        ("USD", "0.5", "0.50"),
        ("JPY", "500", "500"),
        ("KWD", "1.25", "1.250"),
    ],
)
def test_amounts_are_decimal_strings_with_the_currencys_decimals(api, currency, amount, shown):
    body = api.credit(CUSTOMER, amount, currency.lower() if currency == "JPY" else currency)
    assert body["entry"]["amount"] == shown
    assert body["entry"]["currency"] == currency
    assert body["lot"]["remaining"] == shown
    assert body["account"]["balance"] == shown


def test_customer_detail_has_one_account_per_currency_with_its_lots(api):
    first = api.credit(CUSTOMER, "10.00")["lot"]["id"]
    second = api.credit(CUSTOMER, "5.00")["lot"]["id"]
    yen = api.credit(CUSTOMER, "700", "JPY")["lot"]["id"]
    assert api.debit(CUSTOMER, "12.00").status_code == 201

    data = api.get(f"/api/customers/{CUSTOMER}").get_json()
    assert data["customer"]["balances"] == [
        {"currency": "JPY", "amount": "700"},
        {"currency": "USD", "amount": "3.00"},
    ]
    jpy, usd = data["accounts"]
    assert (jpy["currency"], jpy["balance"], [x["id"] for x in jpy["lots"]]) == (
        "JPY",
        "700",
        [yen],
    )
    assert (usd["currency"], usd["balance"]) == ("USD", "3.00")
    assert (usd["lifetime_credited"], usd["lifetime_debited"]) == ("15.00", "12.00")
    lots = {x["id"]: (x["remaining"], x["status"]) for x in usd["lots"]}
    # No expiry on either: the older lot is spent first.
    assert lots == {first: ("0.00", "depleted"), second: ("3.00", "active")}


def test_an_unknown_customer_is_404(api):
    for path in (f"/api/customers/{CUSTOMER}", f"/api/customers/{CUSTOMER}/ledger"):
        assert_error(api.get(path), 404, "customer_not_found")
    assert_error(api.debit(CUSTOMER, "1.00"), 404, "customer_not_found")


# -- searching customers --------------------------------------------------------------------


@pytest.fixture
def people(shop, other_shop):
    made = {
        "grace": CustomerFactory(
            shop_id=shop.id,
            shopify_customer_id=5550001,
            first_name="Grace",
            last_name="Hopper",
            email="grace@navy.example",
        ),
        "alan": CustomerFactory(
            shop_id=shop.id,
            shopify_customer_id=5550002,
            first_name="Alan",
            last_name="Turing",
            email="alan@bletchley.example",
        ),
        "ada": CustomerFactory(
            shop_id=shop.id,
            shopify_customer_id=5550003,
            first_name="Ada",
            last_name="Lovelace",
            email="ada_l@engine.example",
        ),
    }
    # Same name, same email, same Shopify id, but another shop's: never found.
    CustomerFactory(
        shop_id=other_shop.id,
        shopify_customer_id=5550001,
        first_name="Grace",
        last_name="Hopper",
        email="grace@navy.example",
    )
    return made


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("grace", ["5550001"]),
        ("HOPPER", ["5550001"]),
        ("bletchley", ["5550002"]),
        ("alan@bletchley.example", ["5550002"]),
        ("5550003", ["5550003"]),
        ("a", ["5550001", "5550002", "5550003"]),
        ("", ["5550001", "5550002", "5550003"]),
        ("nobody", []),
        ("_", ["5550003"]),  # LIKE wildcards are matched literally
        ("%", []),
    ],
)
def test_search_by_name_email_or_shopify_id_stays_in_the_shop(api, people, query, expected):
    response = api.get("/api/customers", query=query)
    assert response.status_code == 200
    body = response.get_json()
    assert [c["id"] for c in body["customers"]] == expected
    assert body["next_cursor"] is None


def test_search_results_carry_balances(api, people):
    api.credit(5550002, "4.00")
    api.credit(5550002, "300", "JPY")
    [alan] = api.get("/api/customers", query="turing").get_json()["customers"]
    assert alan["name"] == "Alan Turing"
    assert alan["email"] == "alan@bletchley.example"
    assert alan["balances"] == [
        {"currency": "JPY", "amount": "300"},
        {"currency": "USD", "amount": "4.00"},
    ]


def test_customer_pages_cover_everyone_once(api, shop):
    ids = {str(CustomerFactory(shop_id=shop.id).shopify_customer_id) for _ in range(5)}
    pages = cursor_pages(api, "/api/customers", "customers", limit=2)
    assert [len(p) for p in pages] == [2, 2, 1]
    seen = [c["id"] for page in pages for c in page]
    assert sorted(seen) == sorted(ids)
    # An exact multiple of the limit: the last full page says there is no more.
    pages = cursor_pages(api, "/api/customers", "customers", limit=5)
    assert [len(p) for p in pages] == [5]


@pytest.mark.parametrize("limit", ["0", "-1", "201", "abc", "1.5", ""])
def test_a_bad_limit_is_400(api, limit):
    assert_error(api.get("/api/customers", limit=limit), 400, "invalid_limit")


BAD_CURSORS = {
    "not_base64": "!!!",
    "not_json": "bm90IGpzb24",  # "not json"
    "a_string": "InN0cmluZyI",  # "string"
    "a_boolean": "dHJ1ZQ",  # true
    "a_float": "MS41",  # 1.5
    "huge_int": "MTAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMA",  # 10**27
}


@pytest.mark.parametrize("cursor", list(BAD_CURSORS.values()), ids=list(BAD_CURSORS))
def test_a_bad_customer_cursor_is_400(api, people, cursor):
    assert_error(api.get("/api/customers", cursor=cursor), 400, "invalid_cursor")


# -- a customer's ledger --------------------------------------------------------------------


def test_the_ledger_is_newest_first_and_filters_by_currency(api):
    api.credit(CUSTOMER, "10.00")
    api.credit(CUSTOMER, "1000", "JPY")
    assert api.debit(CUSTOMER, "2.50").status_code == 201
    api.credit(CUSTOMER, "3.000", "KWD")

    entries = api.get(f"/api/customers/{CUSTOMER}/ledger").get_json()["entries"]
    assert [(e["kind"], e["amount"], e["currency"]) for e in entries] == [
        ("issue", "3.000", "KWD"),
        ("adjust", "-2.50", "USD"),
        ("issue", "1000", "JPY"),
        ("issue", "10.00", "USD"),
    ]
    usd = api.get(f"/api/customers/{CUSTOMER}/ledger", currency="usd").get_json()
    assert [(e["amount"], e["balance_after"]) for e in usd["entries"]] == [
        ("-2.50", "7.50"),
        ("10.00", "10.00"),
    ]
    none = api.get(f"/api/customers/{CUSTOMER}/ledger", currency="EUR").get_json()
    assert none == {"entries": [], "next_cursor": None}
    bad = api.get(f"/api/customers/{CUSTOMER}/ledger", currency="XYZ")
    assert_error(bad, 422, "invalid_currency")


def test_ledger_pages_have_no_duplicates_or_gaps(api):
    for n in range(1, 8):
        api.credit(CUSTOMER, f"{n}.00")
    full = api.get(f"/api/customers/{CUSTOMER}/ledger").get_json()["entries"]
    assert [e["sequence"] for e in full] == [7, 6, 5, 4, 3, 2, 1]

    pages = cursor_pages(api, f"/api/customers/{CUSTOMER}/ledger", "entries", limit=3)
    assert [len(p) for p in pages] == [3, 3, 1]
    assert [e for page in pages for e in page] == full


def test_ledger_pages_split_entries_written_at_the_same_instant(api, shop, now):
    """Entries sharing created_at are ordered by id, and the cursor keeps that order."""
    for n in range(6):
        operations.issue(
            db.session, keyed(shop.id, now), customer=CUSTOMER, amount=Money(100 + n, "USD")
        )
    full = api.get(f"/api/customers/{CUSTOMER}/ledger").get_json()["entries"]
    assert len({e["created_at"] for e in full}) == 1
    pages = cursor_pages(api, f"/api/customers/{CUSTOMER}/ledger", "entries", limit=4)
    assert [len(p) for p in pages] == [4, 2]
    assert [e for page in pages for e in page] == full
    for limit in (1, 2, 5):
        pages = cursor_pages(api, f"/api/customers/{CUSTOMER}/ledger", "entries", limit=limit)
        assert [e["id"] for page in pages for e in page] == [e["id"] for e in full]


@pytest.mark.parametrize(
    "cursor",
    [
        *BAD_CURSORS.values(),
        "WyJ4IiwgInkiXQ",  # ["x", "y"]
        "WzEsIDJd",  # [1, 2]
        "WyIyMDI2LTAxLTAxVDAwOjAwOjAwWiIsICJub3QtYS11dWlkIl0",  # [time, "not-a-uuid"]
        "WyIyMDI2LTAxLTAxVDAwOjAwOjAwIiwgIjAwMDAwMDAwLTAwMDAtMDAwMC0wMDAwLTAwMDAwMDAwMDAwMCJd",
        "WzFd",  # [1]
    ],
)
def test_a_bad_ledger_cursor_is_400(api, cursor):
    api.credit(CUSTOMER, "1.00")
    response = api.get(f"/api/customers/{CUSTOMER}/ledger", cursor=cursor)
    assert_error(response, 400, "invalid_cursor")


# -- debits and revocations -----------------------------------------------------------------


def test_a_debit_takes_from_the_balance_or_is_refused_as_insufficient(api, shop):
    api.credit(CUSTOMER, "10.00")
    response = api.debit(CUSTOMER, "4.00")
    assert response.status_code == 201
    body = response.get_json()
    assert (body["entry"]["kind"], body["entry"]["amount"]) == ("adjust", "-4.00")
    assert body["account"]["balance"] == "6.00"
    assert body["lot"] is None

    before = row_counts(shop.id)
    error = assert_error(api.debit(CUSTOMER, "6.01"), 422, "insufficient_funds")
    assert error["details"]
    after = row_counts(shop.id)
    assert after["ledger_entries"] == before["ledger_entries"]
    assert after["audit_log"] == before["audit_log"] + 1  # the refusal is audited
    assert api.get(f"/api/customers/{CUSTOMER}").get_json()["accounts"][0]["balance"] == "6.00"
    # In a currency the customer holds nothing in.
    assert_error(api.debit(CUSTOMER, "1", "JPY"), 422, "insufficient_funds")


def test_revoke_takes_the_rest_of_a_lot_once(api, shop):
    lot = api.credit(CUSTOMER, "10.00")["lot"]["id"]
    api.credit(CUSTOMER, "5.00")
    assert api.debit(CUSTOMER, "3.00").status_code == 201

    response = api.post(f"/api/lots/{lot}/revoke", {"reason": "issued by mistake"})
    assert response.status_code == 201, response.get_data(as_text=True)
    body = response.get_json()
    assert (body["entry"]["kind"], body["entry"]["amount"]) == ("revoke", "-7.00")
    assert (body["lot"]["id"], body["lot"]["status"]) == (lot, "revoked")
    assert body["lot"]["remaining"] == "0.00"
    assert body["account"]["balance"] == "5.00"

    entries = row_counts(shop.id)["ledger_entries"]
    again = api.post(f"/api/lots/{lot}/revoke", {"reason": "issued by mistake"})
    assert_error(again, 409, "lot_not_active")
    assert row_counts(shop.id)["ledger_entries"] == entries


@pytest.mark.parametrize("lot_id", ["not-a-uuid", "123", str(uuid.uuid4())])
def test_revoking_a_lot_that_is_not_there_is_404(api, shop, lot_id):
    response = api.post(f"/api/lots/{lot_id}/revoke", {"reason": "r"})
    error = assert_error(response, 404, "lot_not_found")
    assert error["message"] == "No such credit lot."
    assert row_counts(shop.id)["ledger_entries"] == 0


# -- tenant isolation -----------------------------------------------------------------------


@pytest.fixture
def theirs(other_api):
    """Another shop's customer (CUSTOMER) with credit, and that credit's lot id."""
    return other_api.credit(CUSTOMER, "10.00")["lot"]["id"]


def _attempts(lot: str, customer: int) -> list[tuple[str, str, dict | None]]:
    return [
        ("GET", f"/api/customers/{customer}", None),
        ("GET", f"/api/customers/{customer}/ledger", None),
        (
            "POST",
            f"/api/customers/{customer}/debits",
            {"amount": "1.00", "currency": "USD", "reason": "r"},
        ),
        ("POST", f"/api/lots/{lot}/revoke", {"reason": "r"}),
    ]


def _send(api: Api, method: str, path: str, body: dict | None):
    return api.get(path) if method == "GET" else api.post(path, body)


@pytest.mark.parametrize("route", range(4), ids=["detail", "ledger", "debit", "revoke"])
def test_another_shops_records_are_404_exactly_like_missing_ones(
    api, other_shop, shop, theirs, route
):
    method, path, body = _attempts(theirs, CUSTOMER)[route]
    _, missing_path, _ = _attempts(str(uuid.uuid4()), CUSTOMER + 1)[route]
    their_rows = row_counts(other_shop.id)

    before = row_counts(shop.id)
    foreign = _send(api, method, path, body)
    between = row_counts(shop.id)
    missing = _send(api, method, missing_path, body)
    after = row_counts(shop.id)

    assert foreign.status_code == missing.status_code == 404
    f_error, m_error = foreign.get_json()["error"], missing.get_json()["error"]
    assert (f_error["code"], f_error["message"]) == (m_error["code"], m_error["message"])
    assert set(f_error["details"]) == set(m_error["details"])
    assert str(CUSTOMER) not in foreign.get_data(as_text=True)
    # The other shop is untouched; ours gains no ledger rows, and the same side effects
    # either way (a refused revoke is audited, like every refused ledger operation).
    assert row_counts(other_shop.id) == their_rows
    their_entries = db.session.execute(
        select(LedgerEntry.kind, LedgerEntry.amount).where(LedgerEntry.shop_id == other_shop.id)
    ).all()
    assert [tuple(row) for row in their_entries] == [("issue", 1000)]
    assert after["ledger_entries"] == after["credit_lots"] == after["customers"] == 0
    assert {k: between[k] - before[k] for k in before} == {k: after[k] - between[k] for k in before}


def test_another_shops_customers_are_not_listed(api, other_api, theirs):
    assert api.get("/api/customers").get_json()["customers"] == []
    assert api.get("/api/customers", query=str(CUSTOMER)).get_json()["customers"] == []
    assert len(other_api.get("/api/customers").get_json()["customers"]) == 1


def test_crediting_a_shopify_id_another_shop_uses_makes_our_own_customer(
    api, shop, other_shop, theirs
):
    api.credit(CUSTOMER, "2.00")
    ours = db.session.scalars(
        select(Customer).where(Customer.shopify_customer_id == CUSTOMER)
    ).all()
    assert sorted(c.shop_id for c in ours) == sorted([shop.id, other_shop.id])
    detail = api.get(f"/api/customers/{CUSTOMER}").get_json()
    assert detail["customer"]["balances"] == [{"currency": "USD", "amount": "2.00"}]


# -- the actor ------------------------------------------------------------------------------


def test_entries_and_audit_rows_name_the_staff_member_of_the_token(api, shop):
    lot = api.credit(CUSTOMER, "10.00")["lot"]["id"]
    debit = api.debit(CUSTOMER, "1.00").get_json()
    revoke = api.post(f"/api/lots/{lot}/revoke", {"reason": "r"}).get_json()
    refused = api.debit(CUSTOMER, "100.00")
    assert refused.status_code == 422

    actor = f"staff:{STAFF_ID}"
    assert debit["entry"]["actor"] == revoke["entry"]["actor"] == actor
    entries = db.session.scalars(select(LedgerEntry).where(LedgerEntry.shop_id == shop.id)).all()
    assert [e.actor for e in entries] == [actor] * 3
    audit = db.session.scalars(
        select(AuditLog).where(AuditLog.shop_id == shop.id).order_by(AuditLog.id)
    ).all()
    assert [(a.action, a.outcome, a.actor) for a in audit] == [
        ("issue", "success", actor),
        ("adjust", "success", actor),
        ("revoke", "success", actor),
        ("adjust", "failure", actor),
    ]


def test_the_actor_follows_the_token_not_the_shop(api, shop):
    api.credit(CUSTOMER, "1.00")
    api.sub = "8410000777"
    assert api.credit(CUSTOMER, "1.00")["entry"]["actor"] == "staff:8410000777"
    actors = db.session.scalars(
        select(LedgerEntry.actor).where(LedgerEntry.shop_id == shop.id)
    ).all()
    assert sorted(actors) == [f"staff:{STAFF_ID}", "staff:8410000777"]
