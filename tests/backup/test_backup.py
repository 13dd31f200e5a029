"""`make backup` and `make restore-check`, as an operator runs them.

The scripts the Makefile calls run as subprocesses with the real pg_dump, pg_restore and psql
(PG_BIN_DIR, exported by scripts/with-services.sh), against a database of the test's own:
a dump only sees committed rows, so the data is committed there, not in the per-test
rolled-back transaction, and the database is dropped afterwards.
"""

from __future__ import annotations

import dataclasses
import os
import re
import stat
import subprocess
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from flask_migrate import upgrade
from sqlalchemy import Engine, create_engine, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from app import create_app
from config import Settings
from ledger import operations
from ledger.archive import archive_ledger
from ledger.book import Actor
from ledger.checkpoints import CheckpointKeys
from ledger.money import Money
from models import CreditAccount, Shop

ROOT = Path(__file__).resolve().parents[2]
BACKUP = ROOT / "scripts" / "backup.sh"
RESTORE_CHECK = ROOT / "scripts" / "restore-check.sh"
SIGNING_KEY = "backup-test-signing-key"
DUMP_NAME = re.compile(r"creditcraft-\d{8}T\d{6}Z\.dump")


@pytest.fixture
def admin(settings: Settings) -> Iterator[Engine]:
    engine = create_engine(settings.database_url, isolation_level="AUTOCOMMIT")
    yield engine
    engine.dispose()


@pytest.fixture
def source_url(settings: Settings, admin: Engine) -> Iterator[str]:
    """A migrated database of the test's own (dropped afterwards)."""
    name = f"backup_source_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(settings.database_url).set(database=name).render_as_string(False)
    try:
        app = create_app(dataclasses.replace(settings, database_url=url))
        with app.app_context():
            from extensions import db

            upgrade(directory=str(ROOT / "migrations"))
            db.engine.dispose()
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def operator_env(database_url: str, backups: Path, **extra: str) -> dict[str, str]:
    return os.environ | {
        "CREDITCRAFT_ENV": "test",
        "DATABASE_URL": database_url,
        "BACKUP_DIR": str(backups),
        "ARCHIVE_SIGNING_KEYS": SIGNING_KEY,
        **extra,
    }


def run(script: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(script), *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def seed(url: str, now: datetime) -> dict[str, int]:
    """Two shops with committed history; the first shop's old entries archived. Returns the
    account id per shop domain prefix ("archived", "hot")."""
    engine = create_engine(url)
    accounts: dict[str, int] = {}
    try:
        with Session(engine) as session:
            for label in ("archived", "hot"):
                shop = Shop(
                    domain=f"{label}-{uuid.uuid4().hex[:8]}.myshopify.com",
                    currency="USD",
                    timezone="UTC",
                    created_at=now,
                )
                session.add(shop)
                session.commit()
                t0 = now - timedelta(days=100)
                for day, cents in ((0, 1500), (1, -500), (2, -1000), (3, 2500), (4, -700)):
                    at = t0 + timedelta(days=day)
                    actor = Actor(shop.id, at, "staff:1", "goodwill", f"{label}-{day}")
                    if cents > 0:
                        operations.issue(session, actor, customer=42, amount=Money(cents, "USD"))
                    else:
                        operations.redeem(session, actor, customer=42, amount=Money(-cents, "USD"))
                accounts[label] = session.scalars(
                    select(CreditAccount.id).where(CreditAccount.shop_id == shop.id)
                ).one()
            report = archive_ledger(
                session,
                before=now - timedelta(days=30),
                keys=CheckpointKeys([SIGNING_KEY]),
                now=now,
                shop_id=session.scalars(
                    select(CreditAccount.shop_id).where(CreditAccount.id == accounts["archived"])
                ).one(),
            )
            assert report.entries == 3, report.lines()  # the first lot: issued, spent, spent
    finally:
        engine.dispose()
    return accounts


def tamper(url: str, account_id: int) -> None:
    """As a superuser could: a spend of 7.00 becomes 1.00, the trigger switched off."""
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(
                text("ALTER TABLE ledger_entries DISABLE TRIGGER ledger_entries_append_only")
            )
            conn.execute(
                text(
                    "UPDATE ledger_entries SET amount = -100, balance_after = balance_before - 100 "
                    "WHERE account_id = :a AND amount = -700"
                ),
                {"a": account_id},
            )
            conn.execute(
                text("ALTER TABLE ledger_entries ENABLE TRIGGER ledger_entries_append_only")
            )
    finally:
        engine.dispose()


def scratch_databases(admin: Engine) -> list[str]:
    with admin.connect() as conn:
        names = conn.execute(
            text("SELECT datname FROM pg_database WHERE datname LIKE 'creditcraft_restore_%'")
        )
        return list(names.scalars())


def test_the_makefile_targets_run_these_scripts():
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^backup: .*## .+\n\tscripts/backup\.sh$", makefile, re.M)
    assert re.search(
        r'^restore-check: .*## .+\n\tscripts/restore-check\.sh "\$\(FILE\)"$', makefile, re.M
    )


def test_a_backup_restores_and_verifies_and_a_tampered_one_names_the_account(
    source_url, admin, tmp_path
):
    if not os.environ.get("PG_BIN_DIR"):
        pytest.skip("PG_BIN_DIR is not set: run under scripts/with-services.sh")
    accounts = seed(source_url, datetime.now(UTC))
    env = operator_env(source_url, tmp_path / "backups")

    made = run(BACKUP, env)

    assert made.returncode == 0, made.stderr
    dump = Path(made.stdout.strip())
    assert dump.parent == tmp_path / "backups"
    assert DUMP_NAME.fullmatch(dump.name)
    assert stat.S_IMODE(dump.stat().st_mode) == 0o600  # it holds customers' data

    checked = run(RESTORE_CHECK, env, str(dump))

    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "is the code's head; the schema matches" in checked.stdout
    assert "PASS: 2 accounts, 7 entries (+3 archived) checked; 0 failing accounts" in checked.stdout
    assert checked.stdout.rstrip().endswith(f"restore-check: PASS ({dump.name})")
    assert scratch_databases(admin) == []

    tamper(source_url, accounts["hot"])
    second = run(BACKUP, env | {"BACKUP_DIR": str(tmp_path / "after")})
    assert second.returncode == 0, second.stderr

    failed = run(RESTORE_CHECK, env, second.stdout.strip())

    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert f"FAIL account {accounts['hot']} (hot-" in failed.stdout
    assert "hash_mismatch at sequence 5" in failed.stdout
    assert f"FAIL account {accounts['archived']}" not in failed.stdout
    assert "restore-check: FAIL (ledger)" in failed.stdout
    assert scratch_databases(admin) == []


def test_retention_keeps_the_newest_dumps_and_touches_nothing_else(settings, tmp_path):
    if not os.environ.get("PG_BIN_DIR"):
        pytest.skip("PG_BIN_DIR is not set: run under scripts/with-services.sh")
    backups = tmp_path / "backups"
    backups.mkdir()
    older = [f"creditcraft-2025010{day}T030000Z.dump" for day in range(1, 6)]
    others = [
        "notes.txt",
        "creditcraft-before-upgrade.dump",
        "creditcraft-20250101T030000Z.dump.partial",
    ]
    for name in (*older, *others):
        (backups / name).write_text("x")

    made = run(BACKUP, operator_env(settings.database_url, backups, BACKUP_KEEP="3"))

    assert made.returncode == 0, made.stderr
    new = Path(made.stdout.strip()).name
    assert sorted(path.name for path in backups.iterdir()) == sorted([new, *older[-2:], *others])
    assert "removed creditcraft-20250101T030000Z.dump" in made.stderr


def test_backup_fails_clearly_without_pg_dump_or_with_a_bad_keep(settings, tmp_path):
    env = operator_env(settings.database_url, tmp_path)

    missing = run(BACKUP, env | {"PG_BIN_DIR": str(tmp_path / "nowhere")})
    bad_keep = run(BACKUP, env | {"BACKUP_KEEP": "0"})
    no_file = run(RESTORE_CHECK, env, str(tmp_path / "missing.dump"))

    assert missing.returncode == 1
    assert f"pg_dump not found in PG_BIN_DIR ({tmp_path / 'nowhere'})" in missing.stderr
    assert bad_keep.returncode == 1
    assert "BACKUP_KEEP must be a whole number" in bad_keep.stderr
    assert no_file.returncode == 1
    assert "no such file" in no_file.stderr
    assert list(tmp_path.iterdir()) == []
    assert "postgres" not in missing.stderr + bad_keep.stderr  # no URL (password) is printed
