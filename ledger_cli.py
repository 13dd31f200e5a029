"""`flask ledger ...`: verify the books, archive old entries, re-sign checkpoints. Thin edges.

- ``flask ledger verify [--shop DOMAIN] [--skip-archive] [--migrations]``: every account's
  chain and invariants and the totals per shop and currency (ledger/integrity.py); prints the
  summary, exits 1 on any failure. ``--migrations`` first checks what ``flask db check`` does
  (the database is at the code's head revision, its schema has what the models have) and
  exits 2 if not, without reading the ledger. ``make restore-check`` runs it that way on a
  restored backup (one process instead of three: each start costs seconds).
- ``flask ledger archive --before DATE [--shop DOMAIN] [--dry-run] [--min-entries N]``: move
  entries older than DATE out of the hot table behind signed checkpoints (ledger/archive.py);
  exits 1 when an account was refused (it did not verify).
- ``flask ledger resign-checkpoints``: sign the checkpoints again with the newest
  ARCHIVE_SIGNING_KEYS key, so an older key can be retired.
"""

from __future__ import annotations

from datetime import UTC, datetime

import click
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from flask import current_app
from flask.cli import AppGroup
from sqlalchemy import select

import tenancy
from blueprints.settings import current_settings
from extensions import current_session, db
from ledger.archive import archive_ledger
from ledger.checkpoints import CheckpointKeys, NoSigningKey, resign_checkpoints
from ledger.integrity import check_books
from models import Base, Shop

ledger_cli = AppGroup("ledger", help="Verify, archive and re-sign the ledger (operators).")


def _keys() -> CheckpointKeys:
    return CheckpointKeys(current_settings().archive_signing_keys)


def _shop_id(domain: str | None) -> int | None:
    if domain is None:
        return None
    found = current_session().scalar(select(Shop.id).where(Shop.domain == domain))
    if found is None:
        raise click.ClickException(f"no shop {domain}")
    return int(found)


def _cut(value: str) -> datetime:
    """A date (midnight UTC) or an ISO time (UTC when it names no zone)."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter("must be a date (2025-01-31) or an ISO time") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def migration_problems() -> tuple[str, list[str]]:
    """The database's revision, and why it is not the code's schema (nothing: it is)."""
    config = current_app.extensions["migrate"]
    script = ScriptDirectory.from_config(config.migrate.get_config(config.directory))
    heads = set(script.get_heads())
    with db.engine.connect() as connection:
        context = MigrationContext.configure(connection)
        current = set(context.get_current_heads())
        drift = compare_metadata(context, Base.metadata) if current == heads else []
    revision = ", ".join(sorted(current)) or "none"
    if current != heads:
        return revision, [f"the code's head is {', '.join(sorted(heads))}"]
    return revision, [f"the schema differs from the models: {change}" for change in drift]


@ledger_cli.command("verify")
@click.option("--shop", "domain", help="Only this shop (default: every shop).")
@click.option(
    "--skip-archive",
    is_flag=True,
    help="Trust signed checkpoints without replaying the archived entries behind them.",
)
@click.option(
    "--migrations",
    "check_migrations",
    is_flag=True,
    help="First check the schema is the code's head (as flask db check); exit 2 if not.",
)
@click.pass_context
def ledger_verify(
    ctx: click.Context, domain: str | None, skip_archive: bool, check_migrations: bool
) -> None:
    """Re-verify every account's hash chain, balances and lots, and the totals; exit 1 on FAIL."""
    if check_migrations:
        revision, problems = migration_problems()
        for problem in problems:
            click.echo(f"migrations: FAIL: revision {revision}: {problem}")
        if problems:
            ctx.exit(2)
        click.echo(f"migrations: revision {revision} is the code's head; the schema matches")
    keys, shop_id = _keys(), _shop_id(domain)
    with tenancy.all_shops():  # every shop's rows (row-level security), or the one asked
        report = check_books(
            current_session(), keys=keys or None, shop_id=shop_id, archived=not skip_archive
        )
    for line in report.lines():
        click.echo(line)
    ctx.exit(0 if report.ok else 1)


@ledger_cli.command("archive")
@click.option("--before", "before", required=True, help="Archive entries older than this.")
@click.option("--shop", "domain", help="Only this shop (default: every shop).")
@click.option("--dry-run", is_flag=True, help="Plan and verify; move nothing.")
@click.option(
    "--min-entries",
    default=1,
    show_default=True,
    type=click.IntRange(1),
    help="Move an account's prefix only when it is at least this many entries.",
)
@click.pass_context
def ledger_archive(
    ctx: click.Context, before: str, domain: str | None, dry_run: bool, min_entries: int
) -> None:
    """Move entries older than BEFORE to the archive, behind a signed checkpoint per account."""
    cut, now = _cut(before), datetime.now(UTC)
    if cut > now:
        raise click.BadParameter("is in the future", param_hint="--before")
    shop_id = _shop_id(domain)
    try:
        with tenancy.all_shops():
            report = archive_ledger(
                current_session(),
                before=cut,
                keys=_keys(),
                now=now,
                shop_id=shop_id,
                dry_run=dry_run,
                min_entries=min_entries,
            )
    except NoSigningKey as error:
        raise click.ClickException(str(error)) from None
    for line in report.lines():
        click.echo(line)
    ctx.exit(1 if report.refused else 0)


@ledger_cli.command("resign-checkpoints")
@click.pass_context
def ledger_resign(ctx: click.Context) -> None:
    """Sign each account's checkpoint again with the newest key (after checking the old one)."""
    try:
        with tenancy.all_shops():
            outcome = resign_checkpoints(current_session(), _keys(), datetime.now(UTC))
    except NoSigningKey as error:
        raise click.ClickException(str(error)) from None
    click.echo(
        f"re-signed {outcome.resigned} checkpoints; {outcome.already} already signed with the "
        f"newest key; {len(outcome.refused)} refused"
    )
    for account_id, problem in outcome.refused:
        click.echo(f"  refused account {account_id}: {problem}")
    ctx.exit(1 if outcome.refused else 0)
