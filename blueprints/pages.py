"""The merchant's pages under ``/app``: server-rendered, embedded in Shopify admin by App Bridge.

Every figure, table and form is in the HTML the server sends, so a page reads whole without
Shopify's CDN (tests and CI run offline); static/app.js only adds the session token to
navigation and sends the forms to the JSON API (blueprints/api.py).

A page request is authenticated by its ``id_token`` query parameter (a session token, checked
like the API's Bearer token); the staff member (``sub``) is the actor. Without a valid one the
request goes to the bounce page, where App Bridge reloads it with a fresh token.

Adding a page:
  1. a view here: ``@bp.get("/app/<name>")`` then ``@staff_page``, reading through ``ledger``
     with ``current_session()`` and ``g.staff.shop``, answering ``render_page(...)``;
  2. a template ``templates/app/<name>.html`` extending ``app/layout.html`` (macros for money,
     badges, tables, pagination and forms in ``app/macros.html``);
  3. one line in ``NAV`` if it belongs in the navigation.
"""

from __future__ import annotations

import functools
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from flask import Blueprint, Response, g, render_template, request
from flask.typing import ResponseReturnValue

from blueprints import inputs
from blueprints.charts import activity_charts
from blueprints.errors import APIError
from blueprints.html import bounce, html_page
from blueprints.session_token import (
    DEV_CLAIM,
    StaffSession,
    installed_shop,
    shop_domain_of,
    verified_claims,
)
from blueprints.settings import current_settings
from extensions import current_session
from ledger import bulk, presets, queries, reports
from ledger.kinds import LotSource, LotStatus
from models import Shop

bp = Blueprint("pages", __name__)


@dataclass(frozen=True)
class NavItem:
    path: str
    label: str


# The app's navigation, in order: the nav bar of every page and App Bridge's <ui-nav-menu>
# (whose first item is the app's home). A new page is one line here.
NAV: list[NavItem] = [
    NavItem("/app", "Dashboard"),
    NavItem("/app/customers", "Customers"),
    NavItem("/app/bulk", "Bulk issue"),
    NavItem("/app/liability", "Liability"),  # these four: blueprints/report_pages.py
    NavItem("/app/reconciliation", "Reconciliation"),
    NavItem("/app/settings", "Settings"),
    NavItem("/app/audit", "Audit log"),
]

CUSTOMERS_PER_PAGE = 50
ENTRIES_PER_PAGE = 25
CLOSED_LOTS_SHOWN = 20  # per account, newest first; every active lot is shown
IMPORTS_LISTED = 10
REPORT_ERRORS_SHOWN = 200
# The sources a merchant picks when issuing by hand (the API accepts exactly these).
ISSUE_SOURCES = (LotSource.MANUAL, LotSource.GOODWILL, LotSource.CASHBACK, LotSource.MIGRATION)
# Shopify's ``host`` is base64url of the admin's address: anything else is not passed on.
_HOST_PARAM = re.compile(r"^[A-Za-z0-9_\-=]{1,512}$")


@dataclass(frozen=True)
class PageLoad:
    """What the layout needs to know about this load besides the staff member."""

    token: str  # the verified id_token: app.js falls back on it when App Bridge is absent
    embedded: bool  # inside Shopify admin (App Bridge loaded); False for a dev-login token
    admin_context: tuple[tuple[str, str], ...]  # shop, host, embedded: every link keeps them


# -- authentication ------------------------------------------------------------------------


def open_page(shop: Shop, claims: dict[str, Any], id_token: str) -> None:
    """Make this request a page load of ``shop``'s staff member ``sub`` (``g.staff``)."""
    g.staff = StaffSession(shop=shop, user_id=str(claims["sub"]))
    g.page = PageLoad(
        token=id_token,
        embedded=not _minted_for_development(claims),
        admin_context=_admin_context(shop),
    )


def staff_page(view: Callable[..., ResponseReturnValue]) -> Callable[..., ResponseReturnValue]:
    """A page view, for the staff member whose session token is the ``id_token`` parameter.

    No valid token: the bounce page (App Bridge comes back with a fresh one). A valid token of
    a shop without the app installed: through the bounce to ``/app``, whose first load
    installs it (token exchange).
    """

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> ResponseReturnValue:
        id_token = request.args.get("id_token", "")
        claims = verified_claims(id_token) if id_token else None
        if claims is None:
            return bounce()
        domain = shop_domain_of(claims)
        shop = installed_shop(domain)
        if shop is None:
            return bounce(f"/app?{urlencode(_forwarded_context(domain))}")
        open_page(shop, claims, id_token)
        return view(*args, **kwargs)

    return wrapper


def _minted_for_development(claims: dict[str, Any]) -> bool:
    """A token from ``mint_development_token`` (the dev login): the page is outside Shopify
    admin, where App Bridge would send the whole window to admin. Honoured in development
    only."""
    return current_settings().env == "development" and claims.get(DEV_CLAIM) is True


def _admin_context(shop: Shop) -> tuple[tuple[str, str], ...]:
    return tuple(_forwarded_context(shop.domain))


def _forwarded_context(shop_domain: str) -> list[tuple[str, str]]:
    """The verified shop, with the ``host`` and ``embedded`` Shopify loaded the app with."""
    context = [("shop", shop_domain)]
    host = request.args.get("host", "")
    if _HOST_PARAM.fullmatch(host):
        context.append(("host", host))
    if request.args.get("embedded") == "1":
        context.append(("embedded", "1"))
    return context


# -- rendering -----------------------------------------------------------------------------


def app_url(path: str, **params: object) -> str:
    """``path`` with the admin context (shop, host, embedded) and ``params`` (None or "" left
    out). Links carry no token: app.js adds a fresh one, or the bounce fetches one."""
    page: PageLoad = g.page
    query = [*page.admin_context]
    query += [(name, str(value)) for name, value in params.items() if value not in (None, "")]
    return f"{path}?{urlencode(query)}"


def render_page(template: str, *, title: str, status: int = 200, **context: Any) -> Response:
    """An HTML page in the layout (nav, App Bridge when embedded) with the HTML headers."""
    staff: StaffSession = g.staff
    body = render_template(
        template,
        title=title,
        nav=NAV,
        current_nav=_current_nav(request.path),
        shop=staff.shop,
        staff=staff,
        page=g.page,
        api_key=current_settings().shopify_api_key,
        app_url=app_url,
        **context,
    )
    return html_page(body, staff.shop.domain, status)


def message_page(status: int, title: str, message: str) -> Response:
    """A not-found or bad-request answer inside the layout, so the nav stays."""
    return render_page("app/message.html", title=title, status=status, message=message)


def _current_nav(path: str) -> str | None:
    matches = [item.path for item in NAV if path == item.path or path.startswith(item.path + "/")]
    return max(matches, key=len) if matches else None


@bp.app_template_filter("when")
def when(value: str | datetime | None, with_time: bool = True) -> str:
    """An ISO time (as the ledger's views give them) in the shop's time zone."""
    if value is None or value == "":
        return "—"
    at = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    local = at.astimezone(_shop_zone())
    return local.strftime("%-d %b %Y, %H:%M") if with_time else local.strftime("%-d %b %Y")


def _shop_zone() -> ZoneInfo:
    staff: StaffSession | None = g.get("staff")
    try:
        return ZoneInfo(staff.shop.timezone if staff else "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


# -- Dashboard -----------------------------------------------------------------------------


def dashboard() -> Response:
    """The home page (``/app``, whose view in auth.py installs the shop on its first load)."""
    staff: StaffSession = g.staff
    figures = reports.dashboard(current_session(), staff.shop.id, datetime.now(UTC))
    return render_page(
        "app/dashboard.html",
        title="Dashboard",
        figures=figures,
        charts=activity_charts(figures["activity"]),
    )


# -- Customers -----------------------------------------------------------------------------


@bp.get("/app/customers")
@staff_page
def customers() -> ResponseReturnValue:
    staff: StaffSession = g.staff
    query = request.args.get("query", "").strip()[:200]
    after = _whole_number_arg("after")
    found, last = queries.search_customers(
        current_session(), staff.shop.id, query, after=after, limit=CUSTOMERS_PER_PAGE
    )
    return render_page(
        "app/customers.html",
        title="Customers",
        customers=found,
        query=query,
        paged=after is not None,
        next_url=None if last is None else app_url("/app/customers", query=query, after=last),
        first_url=app_url("/app/customers", query=query),
    )


@bp.get("/app/customers/<customer_id>")
@staff_page
def customer(customer_id: str) -> ResponseReturnValue:
    staff: StaffSession = g.staff
    session = current_session()
    row = None
    if customer_id.isascii() and customer_id.isdigit() and 0 < int(customer_id) < 2**63:
        row = queries.find_customer_row(session, staff.shop.id, int(customer_id))
    if row is None:
        return message_page(404, "Customer not found", "This shop has no such customer.")
    try:
        before = _ledger_cursor_arg()
    except ValueError:
        return message_page(400, "Page not found", "That ledger page link is not one we made.")
    detail = queries.customer_detail(session, row, closed_lots=CLOSED_LOTS_SHOWN)
    entries, last = queries.ledger_page(
        session, row, currency=None, before=before, limit=ENTRIES_PER_PAGE
    )
    found_presets = presets.list_presets(session, staff.shop.id)
    here = f"/app/customers/{row.shopify_customer_id}"
    return render_page(
        "app/customer.html",
        title=detail["customer"]["name"],
        customer=detail["customer"],
        accounts=detail["accounts"],
        entries=entries,
        ledger_paged=before is not None,
        ledger_next_url=None if last is None else app_url(here, cursor=inputs.cursor_out(last)),
        ledger_first_url=app_url(here),
        currencies=_issue_currencies(staff.shop, detail["accounts"], found_presets),
        presets=found_presets,
        preset_expiry={p["id"]: _expiry_date(p["expiry_days"]) for p in found_presets},
        sources=[(source.value, source.value.capitalize()) for source in ISSUE_SOURCES],
        default_expiry=_default_expiry(staff.shop),
        today=datetime.now(_shop_zone()).date().isoformat(),
        admin_link=_admin_customer_link(staff.shop, row.shopify_customer_id),
        active=LotStatus.ACTIVE.value,
    )


def _issue_currencies(
    shop: Shop, accounts: list[dict[str, Any]], found_presets: list[dict[str, Any]]
) -> list[str]:
    """The shop's currency first, then any other the customer holds or a preset issues in."""
    others = {account["currency"] for account in accounts}
    others |= {preset["currency"] for preset in found_presets}
    return [shop.currency, *sorted(others - {shop.currency})]


def _default_expiry(shop: Shop) -> str:
    return _expiry_date(shop.default_expiry_days)


def _expiry_date(days: int | None) -> str:
    """The date (in the shop's zone) ``days`` from today: the issue form's expiry field."""
    if not days:
        return ""
    return (datetime.now(_shop_zone()).date() + timedelta(days=days)).isoformat()


@dataclass(frozen=True)
class AdminLink:
    href: str
    target: str


def _admin_customer_link(shop: Shop, shopify_customer_id: int) -> AdminLink:
    """The customer in Shopify admin: App Bridge's ``shopify://admin`` link when embedded;
    admin.shopify.com's address (the store handle is the myshopify subdomain) otherwise."""
    page: PageLoad = g.page
    if page.embedded:
        return AdminLink(f"shopify://admin/customers/{shopify_customer_id}", "_top")
    handle = shop.domain.removesuffix(".myshopify.com")
    return AdminLink(
        f"https://admin.shopify.com/store/{handle}/customers/{shopify_customer_id}", "_blank"
    )


# -- Bulk issue ----------------------------------------------------------------------------


@bp.get("/app/bulk")
@staff_page
def bulk_issue() -> ResponseReturnValue:
    staff: StaffSession = g.staff
    session = current_session()
    selected = None
    raw = request.args.get("import")
    if raw is not None:
        if raw.isascii() and raw.isdigit() and int(raw) < 2**63:
            try:
                selected = bulk.import_json(bulk.find_import(session, staff.shop.id, int(raw)))
            except bulk.ImportNotFound:
                selected = None
        if selected is None:
            return message_page(404, "Import not found", "This shop has no such bulk import.")
    imports = [
        bulk.import_json(each, with_report=False)
        for each in bulk.list_imports(session, staff.shop.id, limit=IMPORTS_LISTED)
    ]
    return render_page(
        "app/bulk.html",
        title="Bulk issue",
        selected=selected,
        imports=imports,
        errors_shown=REPORT_ERRORS_SHOWN,
        columns=bulk.HEADERS,
        max_rows=bulk.MAX_ROWS,
    )


# -- query arguments -----------------------------------------------------------------------


def _whole_number_arg(name: str) -> int | None:
    raw = request.args.get(name, "")
    return int(raw) if raw.isascii() and raw.isdigit() and int(raw) < 2**63 else None


def _ledger_cursor_arg() -> tuple[str, str] | None:
    """The ledger page cursor (created_at with a zone, entry id) ``ledger_page`` gave out."""
    if not request.args.get("cursor"):
        return None
    try:
        at, entry_id = inputs.cursor_in()
        if datetime.fromisoformat(at.replace("Z", "+00:00")).tzinfo is None:
            raise ValueError(at)
        uuid.UUID(entry_id)
    except (APIError, TypeError, ValueError, AttributeError):
        raise ValueError("not a ledger cursor") from None
    return at, entry_id
