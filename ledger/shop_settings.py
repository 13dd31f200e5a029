"""A shop's settings: default expiry, notifying customers, native sync, auto-repair.

The values live on the shop's row (models/shop.py). A change is checked whole before any of it
is written: one bad field refuses the whole change (audited as a failure), and a good change is
audited with each changed field's value before and after.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ledger import audit
from ledger.errors import InvalidField
from models import Shop
from models.preset import MAX_EXPIRY_DAYS

BOOLEAN_SETTINGS = ("notify_customer", "native_sync", "auto_repair")
SETTINGS = ("default_expiry_days", *BOOLEAN_SETTINGS)
ACTION = "settings.update"


def shop_settings(shop: Shop) -> dict[str, Any]:
    return {name: getattr(shop, name) for name in SETTINGS}


def check_expiry_days(name: str, value: object) -> int | None:
    """None (no expiry) or a whole number of days from 1 to 3650; raises InvalidField."""
    if value is None:
        return None
    if type(value) is not int or not 1 <= value <= MAX_EXPIRY_DAYS:
        raise InvalidField(
            f"{name} must be null or a whole number of days from 1 to {MAX_EXPIRY_DAYS}.",
            field=name,
        )
    return value


def update_settings(
    session: Session, shop_id: int, changes: Mapping[str, Any], *, actor: str, now: datetime
) -> dict[str, Any]:
    """Apply ``changes`` (any of SETTINGS) and commit; returns the settings after.

    Raises:
        InvalidField: an unknown setting or a value of the wrong type or range (nothing is
            changed; the refusal is audited).
    """
    target = audit.Target("shop", str(shop_id))
    try:
        checked = _checked(changes)
    except InvalidField as error:
        raise audit.refused(
            session, shop_id, actor, ACTION, target, now, error, {"changes": dict(changes)}
        ) from None
    shop = session.execute(
        select(Shop)
        .where(Shop.id == shop_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).scalar_one()
    before = shop_settings(shop)
    changed = {name: value for name, value in checked.items() if before[name] != value}
    for name, value in changed.items():
        setattr(shop, name, value)
    if changed:
        details = {"before": {name: before[name] for name in changed}, "after": changed}
        audit.record(session, shop_id, actor, ACTION, target, now, details)
    session.commit()
    return shop_settings(shop)


def _checked(changes: Mapping[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(changes) - set(SETTINGS))
    if unknown:
        raise InvalidField(
            f"Unknown setting: {unknown[0]}. The settings are {', '.join(SETTINGS)}.",
            field=unknown[0],
        )
    checked: dict[str, Any] = {}
    for name, value in changes.items():
        if name == "default_expiry_days":
            checked[name] = check_expiry_days(name, value)
        elif type(value) is not bool:
            raise InvalidField(f"{name} must be true or false.", field=name)
        else:
            checked[name] = value
    return checked
