"""Sample requests for every GET page (``/app``) and API route (``/api``) of the app.

One table, used twice: bench/pages.py times each route over its samples on the seeded large
shop, and tests/seed/test_explain.py runs them on a medium one and EXPLAINs every statement
they send. Both walk the app's url_map, so a route added without a sample here is named by the
bench and fails the test: add one line to ``SAMPLES`` (the URL rule → the requests that
exercise it, made from the shop's ``Facts``; ``fetch`` reads a JSON answer, for a cursor to
page 2).

A sample is a path and its query parameters; ``request_for`` adds the staff member's session
token the way each side expects it (a Bearer header for the API, ``id_token`` for pages).
Samples for a rule the app does not (yet) have are never sent; the bench lists them.

Import it as ``bench._samples`` once the project root is on ``sys.path``.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from flask import Flask
from sqlalchemy import String, cast, func, select, text
from sqlalchemy.orm import Session

from ledger.findings import Finding, record_finding
from ledger.privacy import record_data_request
from models import CreditAccount, Customer, ReconciliationFinding, ReconciliationRun

IN_SCOPE = ("/api/", "/app/")  # and /app itself
Sample = tuple[str, dict[str, str]]
Fetch = Callable[[str, dict[str, str]], Any]  # a GET answered with JSON, decoded


@dataclass(frozen=True)
class Facts:
    """What the samples are made of: the shop and some of its records."""

    domain: str
    shop_id: int
    long_customer: int  # the Shopify id with the longest ledger
    multi_currency_customer: int  # a customer with accounts in two currencies
    customers: tuple[int, ...]  # ordinary customers, to rotate among
    search_terms: tuple[str, ...]  # a last name, a first name, an email, a Shopify id, no match
    today: date
    # Made by ``create_objects``:
    import_id: int | None = None  # a bulk import
    data_request_id: int | None = None  # the longest ledger's data request
    run_id: int | None = None  # a reconciliation run
    finding_id: int | None = None  # an open reconciliation finding


def facts_of(session: Session, shop_id: int, domain: str, *, sample: int = 50) -> Facts:
    """The shop's longest ledgers and a spread of ordinary customers, read from the database."""
    by_length = (
        select(Customer.shopify_customer_id, func.count(CreditAccount.id))
        .join(CreditAccount, CreditAccount.customer_id == Customer.id)
        .where(Customer.shop_id == shop_id)
        .group_by(Customer.id)
        .order_by(func.sum(CreditAccount.last_sequence).desc())
    )
    ranked = session.execute(by_length.limit(500)).all()
    multi = next(shopify_id for shopify_id, accounts in ranked if accounts > 1)
    spread = session.scalars(
        select(Customer.shopify_customer_id)
        .where(Customer.shop_id == shop_id)
        .order_by(func.md5(cast(Customer.id, String)))  # a spread, the same every run
        .limit(sample)
    ).all()
    someone = session.execute(
        select(Customer.first_name, Customer.last_name, Customer.email)
        .where(Customer.shop_id == shop_id, Customer.email.is_not(None))
        .order_by(Customer.id)
        .limit(1)
    ).one()
    terms = (
        someone.last_name.lower(),
        someone.first_name,
        someone.email,
        str(spread[0]),
        "no-such-customer-zzz",
    )
    return Facts(
        domain=domain,
        shop_id=shop_id,
        long_customer=ranked[0][0],
        multi_currency_customer=multi,
        customers=tuple(spread),
        search_terms=terms,
        today=datetime.now(UTC).date(),
    )


def create_objects(
    session: Session, facts: Facts, post_csv: Callable[[str, bytes], Any], actor: str
) -> Facts:
    """Records the seed does not make: a bulk import (its CSV posted to the API, a dry run:
    nothing issued), a customer's data request (as the webhook records it), and a week of
    nightly reconciliation runs with a finding (as rows: a run needs Shopify)."""
    rows = ["customer_id,amount,currency,reason"]
    rows += [f"{customer},5.00,USD,Bench bulk" for customer in facts.customers[:20]]
    created = post_csv("/api/bulk-imports", ("\n".join(rows) + "\n").encode())
    import_id = int(created["bulk_import"]["id"])
    now = datetime.now(UTC)
    key = f"bench-{facts.shop_id}-{now.timestamp()}"
    record_data_request(session, facts.shop_id, key, facts.long_customer, actor, now)
    request_id = session.scalar(
        text("SELECT id FROM data_requests WHERE shop_id = :shop AND request_key = :key"),
        {"shop": facts.shop_id, "key": key},
    )
    run_id, finding_id = _reconciliation(session, facts, now)
    return Facts(
        **{
            **facts.__dict__,
            "import_id": import_id,
            "data_request_id": request_id,
            "run_id": run_id,
            "finding_id": finding_id,
        }
    )


def _reconciliation(session: Session, facts: Facts, now: datetime) -> tuple[int, int]:
    """Seven finished nightly runs and one open finding; (last run's id, the finding's id)."""
    runs = [
        ReconciliationRun(
            shop_id=facts.shop_id,
            kind="full" if day == 0 else "incremental",
            state="finished",
            started_at=now - timedelta(days=day, minutes=5),
            finished_at=now - timedelta(days=day),
            accounts_checked=len(facts.customers),
            entries_checked=1000,
        )
        for day in range(7)
    ]
    session.add_all(runs)
    key = f"bench:{now.timestamp()}"
    finding = Finding(
        kind="unmatched_native_spend",
        key=key,
        shopify_customer_id=facts.customers[0],
        currency="USD",
        expected=1250,
        actual=0,
        details={"order_id": "6000000001"},
    )
    record_finding(session, facts.shop_id, finding, now)
    session.commit()
    finding_id = session.scalar(
        select(ReconciliationFinding.id).where(
            ReconciliationFinding.shop_id == facts.shop_id,
            ReconciliationFinding.finding_key == key,
        )
    )
    assert finding_id is not None
    return runs[0].id, finding_id


# -- the table ----------------------------------------------------------------------------------


def _decoded_cursor(cursor: str) -> Any:
    return json.loads(base64.urlsafe_b64decode(cursor.encode() + b"=" * (-len(cursor) % 4)))


def _api_customers(f: Facts, fetch: Fetch) -> list[Sample]:
    page_two = fetch("/api/customers", {})["next_cursor"]
    return [
        ("/api/customers", {}),
        ("/api/customers", {"cursor": page_two}),
        *[("/api/customers", {"query": term}) for term in f.search_terms],
    ]


def _app_customers(f: Facts, fetch: Fetch) -> list[Sample]:
    after = _decoded_cursor(fetch("/api/customers", {"limit": "50"})["next_cursor"])
    return [
        ("/app/customers", {}),
        ("/app/customers", {"after": str(after)}),
        *[("/app/customers", {"query": term}) for term in f.search_terms],
    ]


def _ledger_cursor(f: Facts, fetch: Fetch, customer: int, limit: str) -> str:
    answer = fetch(f"/api/customers/{customer}/ledger", {"limit": limit})
    cursor: str = answer["next_cursor"]
    return cursor


def _api_ledger(f: Facts, fetch: Fetch) -> list[Sample]:
    long_ = f"/api/customers/{f.long_customer}/ledger"
    deep = _ledger_cursor(f, fetch, f.long_customer, "100")
    return [
        (long_, {}),
        (long_, {"cursor": _ledger_cursor(f, fetch, f.long_customer, "50")}),
        (long_, {"cursor": deep, "limit": "100"}),
        (f"/api/customers/{f.multi_currency_customer}/ledger", {"currency": "USD"}),
        *[(f"/api/customers/{c}/ledger", {}) for c in f.customers[:10]],
    ]


def _app_customer(f: Facts, fetch: Fetch) -> list[Sample]:
    long_ = f"/app/customers/{f.long_customer}"
    return [
        (long_, {}),
        (long_, {"cursor": _ledger_cursor(f, fetch, f.long_customer, "25")}),
        (f"/app/customers/{f.multi_currency_customer}", {}),
        *[(f"/app/customers/{c}", {}) for c in f.customers[:10]],
    ]


def _customers(prefix: str) -> Callable[[Facts, Fetch], list[Sample]]:
    def samples(f: Facts, _fetch: Fetch) -> list[Sample]:
        chosen = (f.long_customer, f.multi_currency_customer, *f.customers[:10])
        return [(f"{prefix}/{customer}", {}) for customer in chosen]

    return samples


def _fixed(*samples: Sample) -> Callable[[Facts, Fetch], list[Sample]]:
    return lambda _f, _fetch: list(samples)


def _import(path: str) -> Callable[[Facts, Fetch], list[Sample]]:
    return lambda f, _fetch: [(path.format(id=f.import_id), {})]


def _audit_log(f: Facts, fetch: Fetch) -> list[Sample]:
    page_two = fetch("/api/audit-log", {})["next_cursor"]
    month_ago = str(f.today - timedelta(days=30))
    return [
        ("/api/audit-log", {}),
        ("/api/audit-log", {"cursor": page_two}),
        ("/api/audit-log", {"actor": "webhook:orders/paid"}),
        ("/api/audit-log", {"action": "revoke", "from": month_ago}),
        ("/api/audit-log", {"outcome": "failure"}),
    ]


def _app_audit(f: Facts, fetch: Fetch) -> list[Sample]:
    """The API's samples on the page (a page of 50 either way): the API's ``cursor`` is the
    page's ``after``."""
    return [
        ("/app/audit", {("after" if name == "cursor" else name): v for name, v in params.items()})
        for _, params in _audit_log(f, fetch)
    ]


def _liability(path: str) -> Callable[[Facts, Fetch], list[Sample]]:
    """Today; as of a past date; a month, a quarter and a year of roll-forward."""

    def samples(f: Facts, _fetch: Fetch) -> list[Sample]:
        def ago(days: int) -> str:
            return str(f.today - timedelta(days=days))

        return [
            (path, {}),
            (path, {"as_of": ago(180)}),
            (path, {"from": ago(30), "to": ago(0)}),
            (path, {"from": ago(120), "to": ago(30)}),
            (path, {"from": ago(365), "to": ago(0), "as_of": ago(0)}),
        ]

    return samples


# The URL rule (as Flask spells it) → the requests that exercise it.
SAMPLES: dict[str, Callable[[Facts, Fetch], list[Sample]]] = {
    # API
    "/api/customers": _api_customers,
    "/api/customers/<customer_id>": _customers("/api/customers"),
    "/api/customers/<customer_id>/ledger": _api_ledger,
    "/api/data-requests": _fixed(("/api/data-requests", {})),
    "/api/data-requests/<request_id>": lambda f, _fetch: [
        (f"/api/data-requests/{f.data_request_id}", {})
    ],
    "/api/bulk-imports": _fixed(("/api/bulk-imports", {})),
    "/api/bulk-imports/<import_id>": _import("/api/bulk-imports/{id}"),
    "/api/bulk-imports/<import_id>/result": _import("/api/bulk-imports/{id}/result"),
    "/api/openapi.json": _fixed(("/api/openapi.json", {})),
    "/api/reconciliation/runs": _fixed(("/api/reconciliation/runs", {})),
    "/api/reconciliation/runs/<run_id>": lambda f, _fetch: [
        (f"/api/reconciliation/runs/{f.run_id}", {})
    ],
    "/api/reconciliation/findings": _fixed(
        ("/api/reconciliation/findings", {}),
        ("/api/reconciliation/findings", {"status": "open"}),
        ("/api/reconciliation/findings", {"status": "resolved"}),
    ),
    "/api/reconciliation/findings/<finding_id>": lambda f, _fetch: [
        (f"/api/reconciliation/findings/{f.finding_id}", {})
    ],
    "/api/settings": _fixed(("/api/settings", {})),
    "/api/presets": _fixed(("/api/presets", {})),
    "/api/audit-log": _audit_log,
    "/api/audit-log.csv": lambda f, _fetch: [
        ("/api/audit-log.csv", {"action": "issue", "from": str(f.today - timedelta(days=30))})
    ],
    "/api/ledger.csv": lambda f, _fetch: [
        ("/api/ledger.csv", {}),
        ("/api/ledger.csv", {"from": str(f.today - timedelta(days=30)), "currency": "EUR"}),
    ],
    "/api/liability": _liability("/api/liability"),
    "/api/liability.csv": _liability("/api/liability.csv"),
    "/api/dashboard": _fixed(("/api/dashboard", {})),
    # pages
    "/app": _fixed(("/app", {})),
    "/app/bounce": _fixed(("/app/bounce", {"shopify-reload": "/app/customers"})),
    "/app/customers": _app_customers,
    "/app/customers/<customer_id>": _app_customer,
    "/app/bulk": lambda f, _fetch: [("/app/bulk", {}), ("/app/bulk", {"import": str(f.import_id)})],
    "/app/liability": _liability("/app/liability"),
    "/app/reconciliation": _fixed(
        ("/app/reconciliation", {}),
        ("/app/reconciliation", {"status": "resolved"}),
        ("/app/reconciliation", {"status": "all", "kind": "unmatched_native_spend"}),
    ),
    "/app/settings": _fixed(("/app/settings", {})),
    "/app/audit": _app_audit,
}


# -- the app's routes ---------------------------------------------------------------------------


def get_rules(app: Flask) -> list[str]:
    """Every GET route under /api and /app, as its URL rule."""
    rules = {
        rule.rule
        for rule in app.url_map.iter_rules()
        if "GET" in (rule.methods or ()) and (rule.rule == "/app" or rule.rule.startswith(IN_SCOPE))
    }
    return sorted(rules)


def missing_samples(app: Flask) -> list[str]:
    """GET routes this table has no samples for."""
    return [rule for rule in get_rules(app) if rule not in SAMPLES]


def stale_samples(app: Flask) -> list[str]:
    """Samples for routes the app no longer has."""
    rules = set(get_rules(app))
    return sorted(rule for rule in SAMPLES if rule not in rules)


def request_for(sample: Sample, token: str, domain: str) -> tuple[str, dict[str, str]]:
    """The URL and headers of ``sample`` sent by the staff member whose session token it is."""
    path, params = sample
    if path.startswith("/app"):  # pages: the session token is the id_token parameter
        params = {**params, "shop": domain, "id_token": token}
        return f"{path}?{urlencode(params)}", {}
    url = f"{path}?{urlencode(params)}" if params else path
    return url, {"Authorization": f"Bearer {token}"}


def session_claims(domain: str, api_key: str, sub: str, minutes: int = 120) -> dict[str, Any]:
    """A session token's claims as App Bridge mints them (sign with the app's API secret)."""
    now = datetime.now(UTC)
    return {
        "iss": f"https://{domain}/admin",
        "dest": f"https://{domain}",
        "aud": api_key,
        "sub": sub,
        "exp": int((now + timedelta(minutes=minutes)).timestamp()),
        "nbf": int(now.timestamp()) - 5,
        "iat": int(now.timestamp()),
        "jti": "bench",
        "sid": "bench-session",
    }
