"""The merchant's pages in a real browser against the running app, as Shopify admin opens
them: ``?shop=…&id_token=…`` with a session token signed as Shopify signs them, App Bridge and
Polaris unreachable (the pages work without them), every fetch authenticated by that token.

The tests share the demo shop of conftest.py (one server for the run) and leave what they
did in it: each asserts on what it did itself, never on a count another test may change.
"""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from playwright.sync_api import Page, Request, expect
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from cli import DEMO_CUSTOMERS
from ledger.bulk import RESULT_COLUMNS
from models import AuditLog, CreditAccount, Customer, LedgerEntry, Shop
from tests.browser.conftest import MORE_CUSTOMERS, STAFF_ACTOR, Served, Tab, screenshot

pytestmark = pytest.mark.browser

GRACE = DEMO_CUSTOMERS[1]  # (7408348291, "grace@example.com", "Grace", "Hopper")
BULK_ROWS = 200
BULK_AMOUNT = Decimal("5.00")


def amount_in(text: str) -> Decimal:
    """The number in a money figure ("1,234.50 USD", "+12.50", "-3.00")."""
    cleaned = text.replace("USD", "").replace(",", "").replace("\u00a0", "").strip()
    return Decimal(cleaned)


def balance_of(served: Served, shopify_customer_id: int) -> Decimal:
    with Session(served.engine) as session:
        minor = session.execute(
            select(CreditAccount.balance)
            .join(Customer, Customer.id == CreditAccount.customer_id)
            .where(
                Customer.shop_id == served.shop_id(),
                Customer.shopify_customer_id == shopify_customer_id,
                CreditAccount.currency == "USD",
            )
        ).scalar_one()
    return Decimal(minor) / 100


def entries_of(served: Served, shopify_customer_id: int) -> int:
    with Session(served.engine) as session:
        return int(
            session.execute(
                select(func.count())
                .select_from(LedgerEntry)
                .join(CreditAccount, CreditAccount.id == LedgerEntry.account_id)
                .join(Customer, Customer.id == CreditAccount.customer_id)
                .where(
                    Customer.shop_id == served.shop_id(),
                    Customer.shopify_customer_id == shopify_customer_id,
                )
            ).scalar_one()
        )


def submit_and_reload(page: Page, button: str) -> None:
    """Click a form's submit button and wait for the page app.js reloads on success."""
    with page.expect_navigation():
        page.get_by_test_id(button).click()


def issue_credit(page: Page, served: Served, customer: int, amount: str, reason: str) -> None:
    """Issue credit with the form on the customer's page (it reloads when issued)."""
    page.goto(served.url(f"/app/customers/{customer}"))
    page.locator("#issue-form-amount").fill(amount)
    page.locator("#issue-form-reason").fill(reason)
    submit_and_reload(page, "issue-form-submit")


def toggle_setting(page: Page, served: Served, name: str) -> bool:
    """Flip a switch on the settings page and save it; the state it was saved in."""
    page.goto(served.url("/app/settings"))
    switch = page.get_by_test_id(f"setting-{name}")
    wanted = not switch.is_checked()
    switch.set_checked(wanted)
    submit_and_reload(page, "settings-form-submit")
    return wanted


# -- (1) the dashboard -----------------------------------------------------------------------


def test_the_dashboard_shows_the_liability_and_the_activity_chart(served: Served, tab: Tab):
    page = tab.page
    page.goto(served.url("/app"))

    expect(page.locator("h1")).to_have_text("Dashboard")
    with Session(served.engine) as session:
        outstanding = session.execute(
            select(func.sum(CreditAccount.balance)).where(
                CreditAccount.shop_id == served.shop_id(), CreditAccount.currency == "USD"
            )
        ).scalar_one()
    figure = page.get_by_test_id("liability-USD")
    expect(figure).to_be_visible()
    assert amount_in(figure.inner_text()) == Decimal(outstanding) / 100
    chart = page.get_by_test_id("chart-USD")
    expect(chart).to_be_visible()
    assert chart.locator("rect.bar.issued").count() > 0
    assert chart.locator("rect.bar.redeemed").count() > 0
    expect(page.get_by_test_id("open-findings-count")).not_to_have_text("0")
    # The embedded page: App Bridge's tag is there, its script never came (offline).
    expect(page.locator('script[src$="app-bridge.js"]')).to_have_count(1)
    assert page.evaluate("typeof window.shopify") == "undefined"
    screenshot(page, "dashboard")


# -- (2) finding a customer ------------------------------------------------------------------


def test_a_customer_is_found_by_name_and_opened(served: Served, tab: Tab):
    page = tab.page
    page.goto(served.url("/app/customers"))
    expect(page.get_by_test_id("customer-row").first).to_be_visible()
    screenshot(page, "customers")

    page.get_by_test_id("customer-query").fill("hopper")
    with page.expect_navigation():
        page.get_by_test_id("customer-query").press("Enter")

    rows = page.get_by_test_id("customer-row")
    expect(rows).to_have_count(1)
    expect(rows).to_contain_text("Grace Hopper")
    expect(page.get_by_test_id("customer-query")).to_have_value("hopper")
    with page.expect_navigation():
        rows.get_by_test_id("customer-link").click()
    expect(page.locator("h1")).to_have_text("Grace Hopper")
    expect(page.get_by_test_id("customer-id")).to_have_text(str(GRACE[0]))
    assert page.url.split("?")[0].endswith(f"/app/customers/{GRACE[0]}")


# -- (3) issuing credit ----------------------------------------------------------------------


def test_issued_credit_tops_the_ledger_with_the_staff_member_and_moves_the_balance(
    served: Served, tab: Tab
):
    page = tab.page
    page.goto(served.url(f"/app/customers/{GRACE[0]}"))
    before = amount_in(page.get_by_test_id("balance-USD").inner_text())

    page.locator("#issue-form-amount").fill("12.50")
    page.locator("#issue-form-reason").fill("Parcel arrived damaged")
    page.locator("#issue-form-note").fill("Photo in ticket 4411")
    submit_and_reload(page, "issue-form-submit")

    newest = page.get_by_test_id("ledger-row").first
    expect(newest).to_have_attribute("data-kind", "issue")
    expect(newest.get_by_test_id("entry-amount")).to_contain_text("12.50")
    expect(newest.locator("td.actor")).to_have_text(STAFF_ACTOR)
    expect(newest).to_contain_text("Parcel arrived damaged")
    expect(page.get_by_test_id("balance-USD")).to_contain_text(f"{before + Decimal('12.50')} USD")
    assert balance_of(served, GRACE[0]) == before + Decimal("12.50")
    screenshot(page, "customer")


def test_an_invalid_amount_is_explained_beside_the_field_and_issues_nothing(
    served: Served, tab: Tab
):
    page = tab.page
    page.goto(served.url(f"/app/customers/{GRACE[0]}"))
    entries = entries_of(served, GRACE[0])

    page.locator("#issue-form-amount").fill("0")
    page.locator("#issue-form-reason").fill("Nothing, really")
    page.get_by_test_id("issue-form-submit").click()

    message = page.locator("#issue-form-amount-error")
    expect(message).to_be_visible()
    expect(message).not_to_be_empty()
    expect(page.locator("#issue-form-amount")).to_have_attribute("aria-invalid", "true")
    expect(page.get_by_test_id("issue-form-submit")).to_be_enabled()  # the merchant can retry
    assert entries_of(served, GRACE[0]) == entries


def test_a_missing_reason_is_asked_for_by_the_browser_and_nothing_is_sent(served: Served, tab: Tab):
    page = tab.page
    page.goto(served.url(f"/app/customers/{GRACE[0]}"))
    sent: list[Request] = []
    page.on("request", lambda request: sent.append(request))

    page.locator("#issue-form-amount").fill("5.00")
    page.get_by_test_id("issue-form-submit").click()

    reason = page.locator("#issue-form-reason")
    assert reason.evaluate("input => input.validationMessage") != ""
    assert reason.evaluate("input => input.matches(':invalid')")
    page.wait_for_timeout(300)  # a request, if one were sent, would have left by now
    assert [request.url for request in sent if request.method != "GET"] == []


# -- (4) the liability report ----------------------------------------------------------------


def test_the_liability_report_ties_out_and_follows_the_dates_chosen(served: Served, tab: Tab):
    page = tab.page
    page.goto(served.url("/app/liability"))
    ties_out = page.get_by_test_id("ties-out-USD")
    expect(ties_out).to_have_attribute("data-ties-out", "true")
    expect(ties_out).to_contain_text("Ties out")

    today = datetime.now(UTC).date()
    start, end = today - timedelta(days=45), today - timedelta(days=1)  # lapsed lots expired
    page.get_by_test_id("liability-from").fill(start.isoformat())
    page.get_by_test_id("liability-to").fill(end.isoformat())
    page.get_by_test_id("liability-as-of").fill(end.isoformat())
    with page.expect_navigation():
        page.get_by_role("button", name="Show the report").click()

    expect(page.get_by_test_id("liability-from")).to_have_value(start.isoformat())
    expect(page.get_by_test_id("liability-to")).to_have_value(end.isoformat())
    expect(page.locator("#roll-forward-heading")).to_contain_text(
        f"{start:%-d %b %Y} to {end:%-d %b %Y}"
    )
    expect(page.get_by_test_id("ties-out-USD")).to_have_attribute("data-ties-out", "true")
    assert amount_in(page.get_by_test_id("rf-USD-expired").inner_text()) > 0
    # The period ends when the balance is taken: its closing balance is that balance.
    closing = amount_in(page.get_by_test_id("rf-USD-closing").inner_text())
    assert closing == amount_in(page.get_by_test_id("liability-USD").inner_text())
    screenshot(page, "liability")


# -- (5) reconciliation, settings, audit log -------------------------------------------------


def test_reconciliation_lists_the_findings_and_one_is_marked_resolved_with_a_note(
    served: Served, tab: Tab
):
    page = tab.page
    page.goto(served.url("/app/reconciliation"))
    expect(page.get_by_test_id("run-row").first).to_have_attribute("data-state", "finished")
    mismatch = page.locator('[data-testid="finding-row"][data-kind="native_balance_mismatch"]')
    expect(mismatch).to_have_attribute("data-status", "open")
    expect(mismatch.get_by_test_id("finding-expected")).to_contain_text("25.00")
    expect(mismatch.get_by_test_id("finding-actual")).to_contain_text("20.00")

    mismatch.get_by_test_id("resolve-open").click()
    mismatch.locator('textarea[name="note"], input[name="note"]').fill(
        "Shopify's figure predates the refund of order 1042; nothing to change"
    )
    with page.expect_navigation():
        mismatch.get_by_role("button", name="Mark resolved").click()

    expect(
        page.locator('[data-testid="finding-row"][data-kind="native_balance_mismatch"]')
    ).to_have_count(0)
    with page.expect_navigation():
        page.get_by_test_id("tab-all").click()
    resolved = page.locator('[data-testid="finding-row"][data-kind="native_balance_mismatch"]')
    expect(resolved).to_have_attribute("data-status", "resolved")
    expect(resolved.get_by_test_id("finding-note")).to_contain_text("predates the refund")
    expect(resolved.locator(".actor")).to_have_text(STAFF_ACTOR)
    screenshot(page, "reconciliation")


def test_a_setting_saved_on_the_settings_page_stays_saved(served: Served, tab: Tab):
    page = tab.page
    saved = toggle_setting(page, served, "auto_repair")

    expect(page.get_by_test_id("setting-auto_repair")).to_be_checked(checked=saved)
    page.reload()
    expect(page.get_by_test_id("setting-auto_repair")).to_be_checked(checked=saved)
    with Session(served.engine) as session:
        shop = session.get(Shop, served.shop_id())
        assert shop is not None
        assert shop.auto_repair is saved
    screenshot(page, "settings")


def test_the_audit_log_shows_the_staff_members_issue_and_settings_change(served: Served, tab: Tab):
    page = tab.page
    issue_credit(page, served, MORE_CUSTOMERS[0][0], "7.00", "Audit: birthday")
    toggle_setting(page, served, "notify_customer")

    page.goto(served.url("/app/audit"))
    page.get_by_test_id("audit-actor").fill(STAFF_ACTOR)
    with page.expect_navigation():
        page.get_by_role("button", name="Filter").click()

    rows = page.get_by_test_id("audit-row")
    expect(rows.first).to_be_visible()
    actors = set(rows.get_by_test_id("audit-row-actor").all_inner_texts())
    assert actors == {STAFF_ACTOR}
    actions = rows.get_by_test_id("audit-row-action").all_inner_texts()
    details = rows.get_by_test_id("audit-details").all_inner_texts()
    # Newest first: the settings change, then the credit issued just before it.
    assert actions[:2] == ["settings.update", "issue"]
    assert '"notify_customer"' in details[0]
    assert "Audit: birthday" in details[1]
    with Session(served.engine) as session:
        recorded = session.scalars(
            select(AuditLog.actor)
            .where(AuditLog.shop_id == served.shop_id())
            .order_by(AuditLog.created_at.desc(), AuditLog.id.desc())
            .limit(2)
        ).all()
    assert recorded == [STAFF_ACTOR, STAFF_ACTOR]
    screenshot(page, "audit")


# -- (6) bulk issue: last, so its 200 credits do not crowd the other pages' screenshots ---


def bulk_file(expires: date) -> tuple[bytes, list[int]]:
    """200 credits of 5.00: every known customer (the demo's by email), then customers
    Shopify has that CreditCraft has not seen yet (by id). Returns the file and the ids."""
    known = [(c[0], c[1]) for c in DEMO_CUSTOMERS] + [(c[0], "") for c in MORE_CUSTOMERS]
    new = [(7408350000 + n, "") for n in range(BULK_ROWS - len(known))]
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["customer_id", "email", "amount", "currency", "expires_at", "reason"])
    for shopify_id, email in known + new:
        writer.writerow(
            [
                "" if email else shopify_id,
                email,
                BULK_AMOUNT,
                "USD",
                expires.isoformat(),
                "Spring thank-you",
            ]
        )
    return out.getvalue().encode(), [shopify_id for shopify_id, _ in known + new]


def test_a_bulk_import_is_checked_confirmed_issued_to_100_percent_and_its_result_downloaded(
    served: Served, tab: Tab
):
    page = tab.page
    page.goto(served.url("/app/bulk"))
    data, customers = bulk_file(datetime.now(UTC).date() + timedelta(days=90))
    page.locator("#bulk-upload-form-file").set_input_files(
        files=[{"name": "spring-thank-you.csv", "mimeType": "text/csv", "buffer": data}]
    )
    submit_and_reload(page, "bulk-upload-form-submit")

    # The dry run: every row checked, nothing issued yet.
    card = page.get_by_test_id("bulk-import")
    expect(card).to_have_attribute("data-state", "validated")
    expect(page.get_by_test_id("report-rows")).to_have_text(str(BULK_ROWS))
    expect(page.get_by_test_id("report-valid")).to_have_text(str(BULK_ROWS))
    expect(page.get_by_test_id("report-invalid")).to_have_text("0")
    expect(page.get_by_test_id("report-totals")).to_contain_text(f"{BULK_AMOUNT * BULK_ROWS}")
    import_id = card.get_attribute("data-import-id")

    submit_and_reload(page, "bulk-start-form-submit")  # its confirm() is accepted

    # The worker issues the rows; the page polls, then reloads once the import is finished.
    try:
        expect(page.get_by_test_id("bulk-import")).to_have_attribute(
            "data-state", "finished", timeout=45_000
        )
    except AssertionError as error:
        raise AssertionError(f"{error}\n-- worker log:\n{served.worker_output()}") from None
    progress = page.get_by_test_id("bulk-progress")
    expect(progress).to_have_attribute("data-percent", "100")
    expect(progress.locator("progress")).to_have_attribute("value", "100")
    expect(progress.locator('[data-progress="issued"]')).to_have_text(str(BULK_ROWS))
    expect(progress.locator('[data-progress="failed"]')).to_have_text("0")
    expect(
        page.locator(f'[data-testid="import-row"][data-import-id="{import_id}"]')
    ).to_contain_text(f"{BULK_ROWS} / {BULK_ROWS}")
    screenshot(page, "bulk")

    with page.expect_download() as downloading:
        page.get_by_test_id("bulk-download").click()
    download = downloading.value
    assert download.suggested_filename == f"bulk-import-{import_id}-result.csv"
    result = list(csv.DictReader(io.StringIO(download.path().read_text(encoding="utf-8"))))
    assert len(result) == BULK_ROWS
    assert list(result[0]) == list(RESULT_COLUMNS)
    assert {row["state"] for row in result} == {"issued"}
    assert all(row["entry_id"] for row in result)
    assert {Decimal(row["amount"]) for row in result} == {BULK_AMOUNT}
    assert [int(row["customer_id"]) for row in result] == customers
    with Session(served.engine) as session:
        issued = session.execute(
            select(func.count())
            .select_from(LedgerEntry)
            .where(LedgerEntry.id.in_([row["entry_id"] for row in result]))
        ).scalar_one()
    assert issued == BULK_ROWS
