"""A shop's Admin API access: install by token exchange or code grant, tokens kept fresh.

Tokens are Fernet-encrypted at rest (``TokenBox``). Offline tokens are *expiring* (1 h, with a
single-use 90-day refresh token): ``admin_client`` refreshes one that expires within five
minutes before using it, and a 401 forces one refresh. A refresh happens under the shop row's
lock (``SELECT … FOR UPDATE``) and re-reads the row once it holds the lock: of two workers that
both saw a stale token, the second finds the first's fresh pair and does not spend the refresh
token again (Shopify retires a used one at once). The new pair is stored in one statement.
A refused refresh token (``invalid_grant``) marks the shop: nothing calls Shopify for it until
the merchant opens the app again and token exchange runs.

This module is an edge: it joins the database, the encryption keys and ``shopify_client``.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

import tenancy
from config import Settings
from models import ApiUsage, Shop
from shopify_client import documents, oauth
from shopify_client.errors import InvalidGrant, ShopifyClientError
from shopify_client.graphql import AdminClient, CallCost
from shopify_client.ids import numeric_id
from tokens import TokenBox

REFRESH_WHEN_WITHIN = timedelta(minutes=5)

log = logging.getLogger(__name__)


class ShopNotConnected(RuntimeError):
    """The shop has no usable token (uninstalled, or its refresh token was refused)."""


# -- installing ------------------------------------------------------------------------------


def install_with_session_token(
    session: Session, settings: Settings, shop_domain: str, id_token: str, now: datetime
) -> Shop:
    """Token exchange: the embedded app's first load turns its id_token into offline access."""
    tokens = oauth.exchange_session_token(
        shop_domain,
        id_token,
        api_key=settings.shopify_api_key,
        api_secret=settings.shopify_api_secret,
        origin_template=settings.shopify_admin_origin,
        now=now,
    )
    return _installed(session, settings, shop_domain, tokens, now)


def install_with_code(
    session: Session, settings: Settings, shop_domain: str, code: str, now: datetime
) -> Shop:
    """Authorization-code grant (non-embedded installs): the callback's code → offline access."""
    tokens = oauth.exchange_authorization_code(
        shop_domain,
        code,
        api_key=settings.shopify_api_key,
        api_secret=settings.shopify_api_secret,
        origin_template=settings.shopify_admin_origin,
        now=now,
    )
    return _installed(session, settings, shop_domain, tokens, now)


def needs_token_exchange(shop: Shop | None, now: datetime) -> bool:
    """Exchange again only when there is no usable offline token (never on every load)."""
    if shop is None or not shop.is_installed or shop.erased_at is not None:
        return True
    if shop.access_token_encrypted is None or shop.reauthorize_required_at is not None:
        return True
    expires = shop.access_token_expires_at
    refresh_expires = shop.refresh_token_expires_at
    if expires is None or expires - REFRESH_WHEN_WITHIN > now:
        return False
    return shop.refresh_token_encrypted is None or (
        refresh_expires is not None and refresh_expires <= now
    )


def _installed(
    session: Session, settings: Settings, shop_domain: str, tokens: oauth.TokenSet, now: datetime
) -> Shop:
    shop = _locked_shop(session, shop_domain)
    if shop is None:
        shop = Shop(domain=shop_domain, created_at=now)
        session.add(shop)
    if not shop.is_installed or shop.erased_at is not None:
        # A new install, or a reinstall after an uninstall (or an erasure): a fresh start.
        shop.installed_at = now
        shop.uninstalled_at = shop.redact_due_at = shop.erased_at = None
    shop.reauthorize_required_at = None
    _store(shop, tokens, TokenBox(settings.token_encryption_keys))
    session.commit()
    tenancy.use_shop(shop.id)  # known now: the request works for this shop (row-level security)
    _learn_shop_details(session, settings, shop, now)
    return shop


def _learn_shop_details(session: Session, settings: Settings, shop: Shop, now: datetime) -> None:
    """Name, currency, time zone and id from Shopify; an install never fails for want of them."""
    try:
        details = admin_client(session, settings, shop, now).query(documents.SHOP)["shop"]
    except (ShopifyClientError, ShopNotConnected, KeyError, TypeError) as error:
        log.warning("could not read %s's details after install: %s", shop.domain, error)
        return
    shop.name = details.get("name") or shop.name
    shop.currency = details.get("currencyCode") or shop.currency
    shop.timezone = details.get("ianaTimezone") or shop.timezone
    if details.get("id"):
        shop.shopify_shop_id = numeric_id(details["id"])
    session.commit()


# -- using -----------------------------------------------------------------------------------


def admin_client(session: Session, settings: Settings, shop: Shop, now: datetime) -> AdminClient:
    """A client for ``shop``'s Admin API with a token good for the next five minutes.

    The session must hold no uncommitted work: a refresh commits it.
    """
    in_use = [_fresh_access_token(session, settings, shop, now, failed_token=None)]

    def refresh_after_401() -> str:
        in_use[0] = _fresh_access_token(
            session, settings, shop, datetime.now(UTC), failed_token=in_use[0]
        )
        return in_use[0]

    return AdminClient(
        shop.domain,
        in_use[0],
        api_version=settings.shopify_api_version,
        admin_origin_template=settings.shopify_admin_origin,
        on_cost=lambda cost: record_usage(session, shop.id, cost, datetime.now(UTC)),
        refresh_access_token=refresh_after_401,
    )


def _fresh_access_token(
    session: Session, settings: Settings, shop: Shop, now: datetime, *, failed_token: str | None
) -> str:
    box = TokenBox(settings.token_encryption_keys)
    if not _needs_refresh(shop, now, box, failed_token):
        return _access_token(shop, box)
    session.commit()  # nothing of the caller's may ride on the lock's transaction
    locked = _locked_shop(session, shop.domain)
    if locked is None:
        raise ShopNotConnected(f"{shop.domain} is not installed")
    if not _needs_refresh(locked, now, box, failed_token):  # another worker refreshed it
        token = _access_token(locked, box)
        session.commit()
        return token
    if locked.refresh_token_encrypted is None:
        session.commit()
        if failed_token is None and locked.access_token_expires_at is None:
            return _access_token(locked, box)
        raise ShopNotConnected(
            f"{shop.domain} has no refresh token; the merchant must reopen the app"
        )
    try:
        tokens = oauth.refresh_access_token(
            shop.domain,
            box.decrypt(locked.refresh_token_encrypted),
            api_key=settings.shopify_api_key,
            api_secret=settings.shopify_api_secret,
            origin_template=settings.shopify_admin_origin,
            now=now,
        )
    except InvalidGrant:
        locked.reauthorize_required_at = now
        session.commit()
        raise ShopNotConnected(
            f"{shop.domain}'s refresh token was refused; the merchant must reopen the app"
        ) from None
    _store(locked, tokens, box)
    session.commit()
    return tokens.access_token


def _needs_refresh(shop: Shop, now: datetime, box: TokenBox, failed_token: str | None) -> bool:
    if shop.uninstalled_at is not None or shop.erased_at is not None:
        raise ShopNotConnected(f"{shop.domain} has uninstalled the app")
    if shop.reauthorize_required_at is not None:
        raise ShopNotConnected(f"{shop.domain} must reopen the app to grant access again")
    if shop.access_token_encrypted is None:
        raise ShopNotConnected(f"{shop.domain} has no access token")
    if failed_token is not None:
        return box.decrypt(shop.access_token_encrypted) == failed_token
    expires = shop.access_token_expires_at
    return expires is not None and expires - REFRESH_WHEN_WITHIN <= now


def _access_token(shop: Shop, box: TokenBox) -> str:
    assert shop.access_token_encrypted is not None
    return box.decrypt(shop.access_token_encrypted)


def _locked_shop(session: Session, shop_domain: str) -> Shop | None:
    """The shop's row, locked against a concurrent refresh (FOR NO KEY UPDATE: the ledger's
    inserts check their foreign key to this row, and must not wait for a token refresh)."""
    stmt = (
        select(Shop)
        .where(Shop.domain == shop_domain)
        .with_for_update(key_share=True)
        .execution_options(populate_existing=True)
    )
    return session.execute(stmt).scalar_one_or_none()


def _store(shop: Shop, tokens: oauth.TokenSet, box: TokenBox) -> None:
    """Keep the pair together: a new refresh token always comes with its access token."""
    shop.access_token_encrypted = box.encrypt(tokens.access_token)
    shop.access_token_expires_at = tokens.expires_at
    shop.refresh_token_encrypted = (
        box.encrypt(tokens.refresh_token) if tokens.refresh_token else None
    )
    shop.refresh_token_expires_at = tokens.refresh_token_expires_at
    if tokens.scope is not None:
        shop.scopes = ",".join(sorted(set(tokens.scope.split(","))))


def rotate_token_encryption(session: Session, settings: Settings) -> int:
    """Re-encrypt every stored token with the newest key; returns how many shops changed."""
    box = TokenBox(settings.token_encryption_keys)
    changed = 0
    for shop in session.scalars(select(Shop).with_for_update()):
        for column in ("access_token_encrypted", "refresh_token_encrypted"):
            value = getattr(shop, column)
            if value is not None:
                setattr(shop, column, box.rotate(value))
                changed += 1
    session.commit()
    return changed


# -- usage -----------------------------------------------------------------------------------


def record_usage(session: Session, shop_id: int, cost: CallCost, now: datetime) -> None:
    """Add one call's cost to the shop's daily usage row (one upsert, committed at once)."""
    values = {
        "shop_id": shop_id,
        "day": now.date(),
        "calls": 1,
        "throttled": int(cost.throttled),
        "requested_cost": int(cost.requested or 0),
        "actual_cost": int(cost.actual or 0),
    }
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    stmt = insert(ApiUsage).values(**values)
    table = ApiUsage.__table__.c
    stmt = stmt.on_conflict_do_update(
        index_elements=["shop_id", "day"],
        set_={
            "calls": table.calls + 1,
            "throttled": table.throttled + values["throttled"],
            "requested_cost": table.requested_cost + values["requested_cost"],
            "actual_cost": table.actual_cost + values["actual_cost"],
        },
    )
    session.execute(stmt)
    session.commit()
