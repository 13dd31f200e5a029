"""Issuance presets: the credit packages a merchant picks from when issuing.

A preset is configuration, not ledger: it is created, replaced and deleted freely (each change
audited, with the preset before and after), and credit issued from one records its own amount,
expiry and reason. Names are unique per shop; a shop keeps at most ``MAX_PRESETS``, so the list
is always one small query.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ledger import audit
from ledger.errors import (
    InvalidField,
    LedgerError,
    PresetLimitReached,
    PresetNameTaken,
    PresetNotFound,
)
from ledger.money import Money, format_amount
from ledger.shop_settings import check_expiry_days
from ledger.views import iso
from models import IssuancePreset, Shop
from models.preset import ISSUABLE_SOURCES

MAX_PRESETS = 100
NAME_LENGTH, REASON_LENGTH = 100, 255
FIELDS = ("name", "amount", "currency", "expiry_days", "reason", "source")


@dataclass(frozen=True)
class PresetFields:
    name: str
    amount: Money
    expiry_days: int | None
    reason: str
    source: str

    def columns(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "amount": self.amount.minor,
            "currency": self.amount.currency,
            "expiry_days": self.expiry_days,
            "reason": self.reason,
            "source": self.source,
        }


def preset_fields(body: Mapping[str, Any]) -> PresetFields:
    """Check a preset as the merchant sent it (every field of FIELDS; ``expiry_days`` null or
    absent for none, ``source`` absent for manual).

    Raises:
        InvalidField: a missing, unknown or malformed field (``details.field`` names it).
        InvalidAmount, UnknownCurrency: the amount is not a positive decimal string in a
            known currency.
    """
    unknown = sorted(set(body) - set(FIELDS))
    if unknown:
        raise InvalidField(f"Unknown field: {unknown[0]}.", field=unknown[0])
    amount = Money.parse(_required(body, "amount"), _required(body, "currency"))  # > 0
    source = body.get("source", "manual")
    if source not in ISSUABLE_SOURCES:
        raise InvalidField(f"source must be one of {', '.join(ISSUABLE_SOURCES)}.", field="source")
    return PresetFields(
        name=_text(body, "name", NAME_LENGTH),
        amount=amount,
        expiry_days=check_expiry_days("expiry_days", body.get("expiry_days")),
        reason=_text(body, "reason", REASON_LENGTH),
        source=source,
    )


def preset_json(preset: IssuancePreset) -> dict[str, Any]:
    return {
        "id": preset.id,
        "name": preset.name,
        "amount": format_amount(preset.amount, preset.currency),
        "currency": preset.currency,
        "expiry_days": preset.expiry_days,
        "reason": preset.reason,
        "source": preset.source,
        "created_at": iso(preset.created_at),
        "updated_at": iso(preset.updated_at),
    }


def list_presets(session: Session, shop_id: int) -> list[dict[str, Any]]:
    """The shop's presets by name."""
    stmt = (
        select(IssuancePreset)
        .where(IssuancePreset.shop_id == shop_id)
        .order_by(IssuancePreset.name, IssuancePreset.id)
    )
    return [preset_json(preset) for preset in session.scalars(stmt)]


def get_preset(session: Session, shop_id: int, preset_id: int) -> IssuancePreset:
    """Raises PresetNotFound for another shop's preset as for one that does not exist."""
    preset = session.execute(
        select(IssuancePreset).where(
            IssuancePreset.shop_id == shop_id, IssuancePreset.id == preset_id
        )
    ).scalar_one_or_none()
    if preset is None:
        raise PresetNotFound("No such preset.", preset_id=preset_id)
    return preset


def create_preset(
    session: Session, shop_id: int, body: Mapping[str, Any], *, actor: str, now: datetime
) -> dict[str, Any]:
    """Check and add a preset; raises (and audits) as ``preset_fields``, PresetNameTaken or
    PresetLimitReached."""
    action, target = "preset.create", audit.Target("preset")
    try:
        fields = preset_fields(body)
        # The shop's row lock makes the count and the insert one step for concurrent creates.
        session.execute(select(Shop.id).where(Shop.id == shop_id).with_for_update())
        count = session.scalar(
            select(func.count())
            .select_from(IssuancePreset)
            .where(IssuancePreset.shop_id == shop_id)
        )
        if (count or 0) >= MAX_PRESETS:
            raise PresetLimitReached(
                f"A shop keeps at most {MAX_PRESETS} presets.", limit=MAX_PRESETS
            )
        preset = IssuancePreset(shop_id=shop_id, created_at=now, updated_at=now, **fields.columns())
        session.add(preset)
        _flush_unique(session, fields.name)
    except LedgerError as error:
        raise audit.refused(
            session, shop_id, actor, action, target, now, error, {"preset": dict(body)}
        ) from None
    shown = preset_json(preset)
    target = audit.Target("preset", str(preset.id))
    audit.record(session, shop_id, actor, action, target, now, {"after": shown})
    session.commit()
    return shown


def update_preset(
    session: Session,
    shop_id: int,
    preset_id: int,
    body: Mapping[str, Any],
    *,
    actor: str,
    now: datetime,
) -> dict[str, Any]:
    """Replace a preset with ``body`` (every field, as when created)."""
    preset = get_preset(session, shop_id, preset_id)
    action, target = "preset.update", audit.Target("preset", str(preset_id))
    before = preset_json(preset)
    try:
        fields = preset_fields(body)
        for name, value in fields.columns().items():
            setattr(preset, name, value)
        preset.updated_at = now
        _flush_unique(session, fields.name)
    except LedgerError as error:
        raise audit.refused(
            session, shop_id, actor, action, target, now, error, {"preset": dict(body)}
        ) from None
    after = preset_json(preset)
    audit.record(session, shop_id, actor, action, target, now, {"before": before, "after": after})
    session.commit()
    return after


def delete_preset(
    session: Session, shop_id: int, preset_id: int, *, actor: str, now: datetime
) -> None:
    preset = get_preset(session, shop_id, preset_id)
    target = audit.Target("preset", str(preset_id))
    before = preset_json(preset)
    session.delete(preset)
    audit.record(session, shop_id, actor, "preset.delete", target, now, {"before": before})
    session.commit()


def _flush_unique(session: Session, name: str) -> None:
    """Write now, so a name another preset of the shop holds is refused here."""
    try:
        session.flush()
    except IntegrityError:
        raise PresetNameTaken(
            "Another preset of this shop has that name.", field="name", name=name
        ) from None


def _required(body: Mapping[str, Any], name: str) -> Any:
    value = body.get(name)
    if value is None:
        raise InvalidField(f"{name} is required.", field=name)
    return value


def _text(body: Mapping[str, Any], name: str, max_length: int) -> str:
    value = _required(body, name)
    if not isinstance(value, str) or not value.strip():
        raise InvalidField(f"{name} must be a non-empty string.", field=name)
    if len(value.strip()) > max_length:
        raise InvalidField(f"{name} is longer than {max_length} characters.", field=name)
    if not audit.storable(value):
        raise InvalidField(f"{name} must not contain NUL or unpaired surrogates.", field=name)
    return value.strip()
