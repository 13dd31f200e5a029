"""The Liability report and Reconciliation pages: the figures and findings of the signed-in
shop (never another's), the roll-forward as the API computes it and adding up by the page's
own signs, query parameters refused with the API's message, and the forms' API paths."""

from __future__ import annotations

import html as html_lib
import re
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from blueprints.report_pages import FINDING_KINDS, REPAIR_ACTIONS, ROLL_FORWARD_LINES
from extensions import current_session, db
from ledger import findings, reports
from ledger.findings import Finding, record_finding
from ledger.money import parse_amount
from models import ReconciliationFinding, ReconciliationRun, Shop
from tests.conftest import auth
from tests.factories import ShopFactory
from tests.pages.conftest import STAFF_ID, Pages
from tests.reports.history import History, build_history

PAGES = ("/app/liability", "/app/reconciliation", "/app/settings", "/app/audit")
WHOLE_HISTORY = {"from": "2026-09-01", "to": "2026-11-22", "as_of": "2026-11-22"}
SIGNS = {"+": 1, "−": -1, "±": 1}  # how each movement line moves the liability


def cell(html: str, testid: str) -> str:
    """The text of the element with data-testid=testid (plain text inside)."""
    found = re.findall(rf'data-testid="{re.escape(testid)}"[^>]*>([^<]*)<', html)
    assert len(found) == 1, (testid, found)
    return found[0].strip()


def attribute(html: str, testid: str, name: str) -> str:
    found = re.search(rf'<[^>]*data-testid="{re.escape(testid)}"[^>]*>', html)
    assert found is not None, testid
    value = re.search(rf'\s{name}="([^"]*)"', found.group(0))
    assert value is not None, (testid, name)
    return html_lib.unescape(value.group(1))


def page_error(html: str) -> str:
    return html_lib.unescape(cell(html, "page-error"))


@pytest.mark.smoke
@pytest.mark.parametrize("path", PAGES)
def test_a_page_without_a_token_goes_to_the_bounce(client, shop, path):
    answer = client.get(path, query_string={"shop": shop.domain, "status": "open"})

    assert answer.status_code == 302
    target = urlsplit(answer.headers["Location"])
    assert target.path == "/app/bounce"
    assert urlsplit(parse_qs(target.query)["shopify-reload"][0]).path == path


@pytest.mark.smoke
@pytest.mark.parametrize("path", PAGES)
def test_each_page_is_in_the_nav_and_marked_current_on_itself(pages, path):
    html = pages.get(path).text

    for other in PAGES:
        assert f'href="{other}?shop=' in html
    current = re.search(
        r'href="([^"?]+)\?[^"]*" data-app-link data-testid="nav-[^"]+" aria-current', html
    )
    assert current is not None
    assert current.group(1) == path


# -- Liability report ----------------------------------------------------------------------------


@pytest.fixture
def history(app_context: Any) -> History:
    return build_history(current_session())


@pytest.fixture
def shop_a(client, history) -> Pages:
    return Pages(client, db.session.get(Shop, history.shop_a))


@pytest.mark.smoke
def test_the_statement_has_a_line_for_every_column_of_the_report():
    keys = [line.key for line in ROLL_FORWARD_LINES]
    assert keys == ["opening", *reports.MOVEMENTS, "closing"]
    signs = {line.key: line.sign for line in ROLL_FORWARD_LINES}
    for column, (_, sign) in reports.MOVEMENTS.items():
        # Columns shown positive and subtracted say "−"; signed ones "±"; the rest "+".
        expected = "−" if sign < 0 else ("±" if column in ("adjusted", "external") else "+")
        assert signs[column] == expected


def test_the_roll_forward_is_the_api_s_and_adds_up_by_the_page_s_signs(shop_a, client, history):
    answer = shop_a.get("/app/liability", **WHOLE_HISTORY)
    html = answer.text
    api = client.get(
        "/api/liability", query_string=WHOLE_HISTORY, headers=auth(history.domain_a)
    ).get_json()

    assert answer.status_code == 200
    assert [row["currency"] for row in api["roll_forward"]] == ["JPY", "USD"]
    for row in api["roll_forward"]:
        currency = row["currency"]
        shown = {line.key: cell(html, f"rf-{currency}-{line.key}") for line in ROLL_FORWARD_LINES}
        assert shown == {key: row[key] for key in shown}
        minor = {
            key: parse_amount(value, currency, allow_zero=True, allow_negative=True)
            for key, value in shown.items()
        }
        moved = sum(
            SIGNS[line.sign] * minor[line.key] for line in ROLL_FORWARD_LINES if line.sign in SIGNS
        )
        assert minor["opening"] + moved == minor["closing"]
        assert attribute(html, f"ties-out-{currency}", "data-ties-out") == "true"
    # Issues, spends, a reversal, a refund, adjustments, an expiry, a revocation, a change
    # made in Shopify: every column moved.
    usd = {line.key: cell(html, f"rf-USD-{line.key}") for line in ROLL_FORWARD_LINES}
    assert usd == {
        "opening": "0.00",
        "issued": "227.00",
        "refunded": "20.00",
        "redeemed": "40.00",
        "reversed": "10.00",
        "expired": "75.00",
        "revoked": "20.00",
        "adjusted": "10.00",
        "external": "7.00",
        "closing": "139.00",
    }
    assert "Does not tie out" not in html
    assert 'data-testid="roll-forward-broken"' not in html


def test_the_report_shows_the_balance_aging_and_breakage_of_this_shop_only(shop_a, history):
    html = shop_a.get(
        "/app/liability", **{"from": "2026-10-01", "to": "2026-10-31", "as_of": "2026-11-22"}
    ).text

    assert cell(html, "liability-USD") == "139.00&nbsp;"
    assert cell(html, "liability-JPY") == "1000&nbsp;"
    # Carol's 12.00 expired on 21 Nov and no expiry run has swept it yet.
    past_due = html[html.index('data-testid="aging-USD-past_due"') :]
    assert "12.00" in past_due[: past_due.index("</tr>")]
    assert "width: 8.6%" in past_due[: past_due.index("</tr>")]  # 12 of 139
    october = html[html.index('data-testid="breakage-USD-2026-10"') :]
    october = october[: october.index("</tr>")]
    shown = re.findall(r"<td[^>]*>([^<]+)</td>", october)
    assert shown == ["Oct 2026", "75.00", "40.00", "187.50%"]
    assert cell(html, "breakage-JPY-rate") == "345.45%"  # 3800 expired of 1100 granted
    # Shop B's figures are of the same days and currencies: none of them shows.
    for theirs in ("999.00", "333.00", "899.00", "70000", "1332.00"):
        assert theirs not in html
    assert "Period from" in html
    assert attribute(html, "liability-from", "value") == "2026-10-01"
    assert attribute(html, "liability-to", "value") == "2026-10-31"


def test_the_csv_button_downloads_the_figures_on_the_page(shop_a, client, history):
    html = shop_a.get("/app/liability", **WHOLE_HISTORY).text
    url = attribute(html, "liability-download", "data-download")
    name = attribute(html, "liability-download", "data-filename")

    assert urlsplit(url).path == "/api/liability.csv"
    assert parse_qs(urlsplit(url).query) == {
        "as_of": ["2026-11-23T04:59:59.999999Z"],
        "from": ["2026-09-01T04:00:00Z"],
        "to": ["2026-11-23T05:00:00Z"],
    }
    assert name == "liability-20260901-20261122.csv"
    download = client.get(url, headers=auth(history.domain_a))
    by_dates = client.get(
        "/api/liability.csv", query_string=WHOLE_HISTORY, headers=auth(history.domain_a)
    )
    assert download.status_code == 200
    assert download.get_data(as_text=True) == by_dates.get_data(as_text=True)
    assert "USD,0.00,227.00,20.00,40.00,10.00,75.00,20.00,10.00,7.00,139.00,true" in (
        download.get_data(as_text=True)
    )


@pytest.mark.smoke
def test_a_shop_without_credit_shows_zeroes_that_tie_out(pages):
    html = pages.get("/app/liability").text

    assert cell(html, "liability-USD") == "0.00&nbsp;"
    assert cell(html, "rf-USD-closing") == "0.00"
    assert attribute(html, "ties-out-USD", "data-ties-out") == "true"
    assert 'data-testid="aging-USD"' in html
    assert cell(html, "breakage-USD-rate") == "—"  # nothing granted: no rate
    assert "No store credit in this period." not in html  # a row per currency, of zeroes


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"as_of": "2026-13-45"}, "as_of must be a date (YYYY-MM-DD) or an ISO 8601 time"),
        ({"from": "2026-11-03", "to": "2026-11-01"}, "from must not be after to."),
        ({"to": "1969-12-30"}, "to must lie between 1970 and 9000."),
        ({"from": "2010-01-01", "to": "2026-01-01"}, "The period is at most ten years long."),
        ({"from": "2026-11-01T00:00:00"}, "from must be a date"),
    ],
)
def test_dates_the_api_refuses_show_its_message_with_a_400(pages, params, message):
    answer = pages.get("/app/liability", **params)

    assert answer.status_code == 400
    assert page_error(answer.text).startswith(message)
    for name, value in params.items():  # kept in the form, to correct
        assert attribute(answer.text, f"liability-{name.replace('_', '-')}", "value") == value
    assert 'data-testid="roll-forward"' not in answer.text
    assert 'data-testid="liability-download"' not in answer.text


def test_what_the_query_carries_is_escaped(pages):
    answer = pages.get("/app/liability", as_of='"><script>alert(1)</script>')

    assert answer.status_code == 400
    assert "<script>alert(1)</script>" not in answer.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in answer.text


# -- Reconciliation ------------------------------------------------------------------------------


def add_finding(
    shop: Shop, key: str, now: datetime, kind: str = findings.CHAIN_BREAK, **fields: Any
) -> ReconciliationFinding:
    record_finding(db.session, shop.id, Finding(kind=kind, key=key, **fields), now)
    db.session.commit()
    return db.session.execute(
        db.select(ReconciliationFinding).where(
            ReconciliationFinding.shop_id == shop.id, ReconciliationFinding.finding_key == key
        )
    ).scalar_one()


def add_run(shop: Shop, started: datetime, **fields: Any) -> ReconciliationRun:
    fields = {"kind": "incremental", "state": "finished"} | fields
    run = ReconciliationRun(shop_id=shop.id, started_at=started, **fields)
    db.session.add(run)
    db.session.commit()
    return run


@pytest.fixture
def other_shop(app_context: Any) -> Shop:
    shop: Shop = ShopFactory()
    return shop


def finding_ids(html: str) -> list[int]:
    return [int(n) for n in re.findall(r'data-testid="finding-row" data-finding-id="(\d+)"', html)]


def test_reconciliation_shows_this_shop_s_runs_and_open_findings_with_their_actions(
    pages, shop, other_shop, now
):
    chain = add_finding(shop, "chain:1", now - timedelta(hours=2), account_id=None)
    outbox = add_finding(
        shop,
        "outbox:77",
        now - timedelta(hours=1),
        kind=findings.OUTBOX_NOT_LANDED,
        shopify_customer_id=7100000042,
        currency="USD",
        expected=1250,
        actual=0,
    )
    add_finding(shop, "outbox:78", now, kind=findings.OUTBOX_NOT_LANDED)  # then a run settles it
    findings.resolve_findings(db.session, shop.id, ["outbox:78"], now, "settled by a run")
    theirs = add_finding(other_shop, "chain:theirs", now)
    add_run(shop, now - timedelta(days=1), kind="full", accounts_checked=1234, findings_opened=2)
    add_run(other_shop, now, accounts_checked=98765)
    db.session.commit()

    answer = pages.get("/app/reconciliation")
    html = answer.text

    assert answer.status_code == 200
    assert finding_ids(html) == [outbox.id, chain.id]  # open ones, newest first
    assert theirs.id not in finding_ids(html)
    row = html[html.index(f'data-finding-id="{outbox.id}"') :]
    row = row[: row.index("</tr>")]
    assert FINDING_KINDS[findings.OUTBOX_NOT_LANDED] in row
    assert re.findall(r'data-testid="finding-(?:expected|actual)">\s*<span[^>]*>([^&]+)', row) == [
        "12.50",
        "0.00",
    ]
    assert "/app/customers/7100000042?" in row
    # Repair where a repair exists; mark resolved (with a required note) everywhere.
    assert f'data-api-path="/api/reconciliation/findings/{outbox.id}/repair"' in row
    assert REPAIR_ACTIONS[findings.SEND_OUTBOX].button in row
    assert f"/api/reconciliation/findings/{chain.id}/repair" not in html
    for finding in (outbox, chain):
        form = html[html.index(f'id="resolve-{finding.id}"') :]
        form = form[: form.index("</form>")]
        assert f'data-api-path="/api/reconciliation/findings/{finding.id}/resolve"' in form
        assert re.search(r'name="note"[^>]* required', form)
    # The runs of this shop, with what they checked and found.
    assert html.count('data-testid="run-row"') == 1
    assert cell(html, "run-accounts") == "1,234"
    assert "98,765" not in html
    assert 'data-api-path="/api/reconciliation/runs"' in html


def test_a_finding_resolved_through_the_page_s_form_shows_who_when_and_the_note(pages, shop, now):
    chain = add_finding(shop, "chain:2", now)
    html = pages.get("/app/reconciliation").text
    path = attribute(html, f"resolve-{chain.id}", "data-api-path")

    answer = pages.client.post(
        path,
        json={"note": "Restored from <b>backup</b>; checked with the owner."},
        headers=auth(shop.domain, sub=STAFF_ID),
    )
    assert answer.status_code == 200, answer.get_data(as_text=True)

    open_now = pages.get("/app/reconciliation").text
    resolved = pages.get("/app/reconciliation", status="resolved").text
    assert chain.id not in finding_ids(open_now)
    assert "No open findings" in open_now
    assert finding_ids(resolved) == [chain.id]
    assert f"staff:{STAFF_ID}" in resolved
    assert "marked resolved" in resolved
    assert "Restored from &lt;b&gt;backup&lt;/b&gt;; checked with the owner." in resolved
    assert "<b>backup</b>" not in resolved
    assert f"/api/reconciliation/findings/{chain.id}/resolve" not in resolved  # done with


def test_findings_filter_by_kind_and_page_by_id(pages, shop, now):
    ids = [add_finding(shop, f"chain:{n}", now + timedelta(seconds=n)).id for n in range(51)]
    outbox = add_finding(shop, "outbox:9", now, kind=findings.OUTBOX_NOT_LANDED)

    first = pages.get("/app/reconciliation", kind=findings.CHAIN_BREAK).text
    assert finding_ids(first) == ids[::-1][:50]
    next_url = attribute(first, "next-page", "href")
    query = parse_qs(urlsplit(next_url).query)
    assert query["after"] == [str(ids[1])]
    assert query["kind"] == [findings.CHAIN_BREAK]
    second = pages.get("/app/reconciliation", **{k: v[0] for k, v in query.items() if k != "shop"})
    assert finding_ids(second.text) == [ids[0]]
    assert 'data-testid="next-page"' not in second.text
    only_outbox = pages.get("/app/reconciliation", kind=findings.OUTBOX_NOT_LANDED).text
    assert finding_ids(only_outbox) == [outbox.id]
    everything = pages.get("/app/reconciliation", status="all").text
    assert len(finding_ids(everything)) == 50


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"status": "closed"}, "status must be one of open, resolved, all."),
        ({"kind": "nonsense"}, "kind must be one of chain_break"),
        ({"after": "abc"}, "That page link is not one we made."),
        ({"after": "0"}, "That page link is not one we made."),
    ],
)
def test_filters_the_api_would_refuse_are_a_400_with_the_message(pages, params, message):
    answer = pages.get("/app/reconciliation", **params)

    assert answer.status_code == 400
    assert page_error(answer.text).startswith(message)
    assert 'data-testid="findings-table"' not in answer.text


@pytest.mark.smoke
def test_a_shop_never_reconciled_says_so(pages):
    html = pages.get("/app/reconciliation").text

    assert "No open findings: the ledger and Shopify agree." in html
    assert 'data-testid="no-runs"' in html


@pytest.mark.smoke
def test_every_finding_kind_has_words_for_the_merchant():
    assert set(FINDING_KINDS) == set(findings.KINDS)
    assert set(REPAIR_ACTIONS) == {
        findings.IMPORT_EXTERNAL,
        findings.SYNC_ORDER,
        findings.SEND_OUTBOX,
    }
