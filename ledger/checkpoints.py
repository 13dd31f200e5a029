"""Signed checkpoints: where an account's chain stood when its older entries were archived.

A checkpoint says "entry ``sequence`` of account ``account_id`` hashes to ``hash``, the balance
after it was ``balance``, and ``lifetime_credited``/``lifetime_debited`` had been moved up to
then". The hot chain continues from it, so it must not be forgeable by whoever can write to the
database: it carries an HMAC-SHA256 over a canonical serialisation (sorted-key compact JSON,
times as the chain spells them), made with a key the database never sees.

Keys: ``ARCHIVE_SIGNING_KEYS``, newest first. Each configured secret is turned into the HMAC
key by HMAC-SHA256(secret, PURPOSE), so a secret that is also used for something else still
gives a key for this one purpose only. A key is named by ``key_id``, a fingerprint of the
derived key, stored on the checkpoint: verification picks the key the checkpoint names, so
older keys keep verifying what they signed while new checkpoints use the newest. To retire a
key, ``resign_checkpoints`` adds a copy of every checkpoint it signed, signed with the newest
(after checking the old signature); checkpoints are never changed in place.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from ledger.chain import utc_text
from models import LedgerCheckpoint

PURPOSE = b"creditcraft:ledger-checkpoint:v1"
VERSION = 1
# Accounts per IN list when reading checkpoints.
IN_CHUNK = 1000


class NoSigningKey(Exception):
    """No key is configured, so no checkpoint can be signed (nothing may be archived)."""


@dataclass(frozen=True)
class SignedCheckpoint:
    """A ``ledger_checkpoints`` row as plain values."""

    shop_id: int
    account_id: int
    sequence: int
    hash: str
    balance: int
    lifetime_credited: int
    lifetime_debited: int
    last_entry_at: datetime
    cut_at: datetime
    created_at: datetime
    key_id: str = ""
    signature: str = ""
    id: int | None = None


def canonical_checkpoint(checkpoint: SignedCheckpoint) -> bytes:
    """The bytes that are signed: every field but the row id and the signature itself."""
    doc: dict[str, Any] = {
        "version": VERSION,
        "shop_id": checkpoint.shop_id,
        "account_id": checkpoint.account_id,
        "sequence": checkpoint.sequence,
        "hash": checkpoint.hash,
        "balance": checkpoint.balance,
        "lifetime_credited": checkpoint.lifetime_credited,
        "lifetime_debited": checkpoint.lifetime_debited,
        "last_entry_at": utc_text(checkpoint.last_entry_at),
        "cut_at": utc_text(checkpoint.cut_at),
        "created_at": utc_text(checkpoint.created_at),
        "key_id": checkpoint.key_id,
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


class CheckpointKeys:
    """The configured signing keys, newest first."""

    def __init__(self, secrets: Iterable[str]) -> None:
        derived = [
            hmac.new(secret.encode(), PURPOSE, hashlib.sha256).digest()
            for secret in secrets
            if secret
        ]
        self._keys = {_key_id(key): key for key in derived}
        self.newest_id: str | None = _key_id(derived[0]) if derived else None

    def __bool__(self) -> bool:
        return bool(self._keys)

    def sign(self, checkpoint: SignedCheckpoint) -> SignedCheckpoint:
        """``checkpoint`` signed with the newest key."""
        if self.newest_id is None:
            raise NoSigningKey("ARCHIVE_SIGNING_KEYS is not set: no checkpoint can be signed")
        named = replace(checkpoint, key_id=self.newest_id, signature="")
        return replace(named, signature=self._mac(self.newest_id, named))

    def problem(self, checkpoint: SignedCheckpoint) -> str | None:
        """None when the signature holds; else ``unknown_key`` or ``bad_signature``."""
        if checkpoint.key_id not in self._keys:
            return "unknown_key"
        expected = self._mac(checkpoint.key_id, checkpoint)
        return None if hmac.compare_digest(expected, checkpoint.signature) else "bad_signature"

    def _mac(self, key_id: str, checkpoint: SignedCheckpoint) -> str:
        key = self._keys[key_id]
        return hmac.new(key, canonical_checkpoint(checkpoint), hashlib.sha256).hexdigest()


def _key_id(key: bytes) -> str:
    """A fingerprint naming the key (not the key: SHA-256 of it, cut to 16 hex digits)."""
    return hashlib.sha256(b"key-id:" + key).hexdigest()[:16]


# -- rows -----------------------------------------------------------------------------------

_COLUMNS = (
    LedgerCheckpoint.shop_id,
    LedgerCheckpoint.account_id,
    LedgerCheckpoint.sequence,
    LedgerCheckpoint.hash,
    LedgerCheckpoint.balance,
    LedgerCheckpoint.lifetime_credited,
    LedgerCheckpoint.lifetime_debited,
    LedgerCheckpoint.last_entry_at,
    LedgerCheckpoint.cut_at,
    LedgerCheckpoint.created_at,
    LedgerCheckpoint.key_id,
    LedgerCheckpoint.signature,
    LedgerCheckpoint.id,
)


def latest_checkpoints(session: Session, account_ids: Sequence[int]) -> dict[int, SignedCheckpoint]:
    """Each account's checkpoint the hot chain continues from: the one of highest sequence
    (of copies re-signed by a key rotation, the newest)."""
    latest: dict[int, SignedCheckpoint] = {}
    ids = list(account_ids)
    for start in range(0, len(ids), IN_CHUNK):
        stmt = select(*_COLUMNS).where(
            LedgerCheckpoint.account_id.in_(ids[start : start + IN_CHUNK])
        )
        for row in session.connection().execute(stmt):
            found = SignedCheckpoint(*row)
            held = latest.get(found.account_id)
            if held is None or (found.sequence, found.id or 0) > (held.sequence, held.id or 0):
                latest[found.account_id] = found
    return latest


def record_checkpoint(session: Session, checkpoint: SignedCheckpoint) -> None:
    values = {
        column.key: getattr(checkpoint, column.key) for column in _COLUMNS if column.key != "id"
    }
    session.execute(insert(LedgerCheckpoint).values(**values))


@dataclass
class Resigned:
    resigned: int = 0
    already: int = 0
    refused: list[tuple[int, str]] = field(default_factory=list)  # (account, problem): left be


def resign_checkpoints(session: Session, keys: CheckpointKeys, now: datetime) -> Resigned:
    """Sign again with the newest key every account's latest checkpoint signed by another.

    The old signature is checked first (with the old key, still configured): a checkpoint that
    does not verify is left alone and reported, never laundered by a new signature. One
    transaction for all (checkpoints are few: one per archived account).
    """
    if keys.newest_id is None:
        raise NoSigningKey("ARCHIVE_SIGNING_KEYS is not set: no checkpoint can be signed")
    outcome = Resigned()
    account_ids = list(session.scalars(select(LedgerCheckpoint.account_id).distinct()))
    for checkpoint in latest_checkpoints(session, account_ids).values():
        if checkpoint.key_id == keys.newest_id:
            outcome.already += 1
            continue
        problem = keys.problem(checkpoint)
        if problem is not None:
            outcome.refused.append((checkpoint.account_id, problem))
            continue
        record_checkpoint(session, keys.sign(replace(checkpoint, id=None, created_at=now)))
        outcome.resigned += 1
    session.commit()
    return outcome
