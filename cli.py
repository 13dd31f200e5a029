"""`flask` commands for operators and scripts. Thin: parse, call the domain, print counts.

The wording of each command is part of CONTRACT.md; scripts rely on it.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any, BinaryIO

import click
from flask import Flask, current_app
from flask.cli import AppGroup, with_appcontext
from sqlalchemy import select

import tenancy
from blueprints.session_token import mint_development_token
from blueprints.settings import current_settings
from extensions import current_session
from jobs.bulk import bulk_issue
from jobs.credits import expire_credits
from jobs.queues import RedisNotConfigured, redis_connection, run_worker
from jobs.reconcile import reconcile_shop
from jobs.schedule import Scheduler, beside_worker, stop_on_signals
from jobs.webhooks import REDIS_DOWN, prune_webhook_payloads, sweep_webhooks
from ledger import bulk, operations, presets, seed
from ledger.accounts import find_account
from ledger.book import Actor
from ledger.findings import open_findings
from ledger.kinds import LotSource
from ledger.money import Money, format_amount
from ledger_cli import ledger_cli
from models import Customer, ReconciliationFinding, Shop
from models.shop import is_shop_domain
from observability.worker import serve_worker_metrics
from shop_access import rotate_token_encryption
from tokens import TokenBox

DEMO_SHOP = "creditcraft-demo.myshopify.com"
DEMO_CUSTOMERS = [
    (7408348290, "ada@example.com", "Ada", "Lovelace"),
    (7408348291, "grace@example.com", "Grace", "Hopper"),
    (7408348292, "alan@example.com", "Alan", "Turing"),
    (7408348293, "edsger@example.com", "Edsger", "Dijkstra"),
    (7408348294, "barbara@example.com", "Barbara", "Liskov"),
    (7408348295, "ken@example.com", "Ken", "Thompson"),
]

shops_cli = AppGroup("shops", help="Register and inspect installed shops.")
credits_cli = AppGroup("credits", help="Run credit jobs inline.")
demo_cli = AppGroup("demo", help="Demo data for `make run`.")
webhooks_cli = AppGroup("webhooks", help="Webhook delivery housekeeping, inline.")


def register_commands(app: Flask) -> None:
    for group in (shops_cli, credits_cli, demo_cli, webhooks_cli):
        app.cli.add_command(group)
    app.cli.add_command(worker_command)
    app.cli.add_command(scheduler_command)
    app.cli.add_command(ledger_cli)


@click.command("worker")
@click.option("--burst", is_flag=True, help="Work until the queues are empty, then exit.")
@click.option(
    "--schedule",
    is_flag=True,
    help="Also run the periodic schedule, in a child process (one scheduler acts at a time).",
)
@with_appcontext
def worker_command(burst: bool, schedule: bool) -> None:
    """An RQ worker on the webhooks, sync, default and bulk queues, in that order."""
    if burst and schedule:
        raise click.UsageError("--schedule runs until stopped; it does not go with --burst")
    settings = current_settings()
    serve_worker_metrics(settings)  # WORKER_METRICS_PORT: what the jobs counted
    try:
        if not schedule:
            run_worker(settings, burst=burst)
            return
        with beside_worker(current_app, settings):
            run_worker(settings, burst=False)
    except RedisNotConfigured as error:
        raise click.ClickException(str(error)) from None


@click.command("scheduler")
@click.option("--once", is_flag=True, help="Enqueue what is due now, then exit.")
@with_appcontext
def scheduler_command(once: bool) -> None:
    """The periodic schedule (jobs/schedule.py): each job enqueued once per period.

    However many schedulers are started, one acts at a time (a Redis lock); a run missed
    while none was running is caught up once.
    """
    try:
        connection = redis_connection(current_settings())
    except RedisNotConfigured as error:
        raise click.ClickException(str(error)) from None
    scheduler = Scheduler(connection)
    try:
        if not once:
            with stop_on_signals() as stop:
                scheduler.run(stop)
            return
        enqueued = scheduler.tick()
        scheduler.resign()
    finally:
        connection.close()
    if enqueued is None:
        click.echo("another scheduler is acting: nothing enqueued")
    else:
        click.echo(f"enqueued {len(enqueued)} periodic jobs")


def _utc(value: str | None) -> datetime:
    if value is None:
        return datetime.now(UTC)
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _shop_by_domain(domain: str) -> Shop:
    shop = current_session().execute(select(Shop).where(Shop.domain == domain)).scalar_one_or_none()
    if shop is None:
        raise click.ClickException(f"no shop {domain}")
    tenancy.use_shop(shop.id)  # the command works for this shop (row-level security)
    return shop


def install_shop(domain: str, token: str, *, native_sync: bool, now: datetime) -> Shop:
    """Create or re-install ``domain`` with an offline access token (stored encrypted)."""
    if not is_shop_domain(domain):
        raise click.BadParameter("must be <name>.myshopify.com", param_hint="DOMAIN")
    box = TokenBox(current_settings().token_encryption_keys)
    shop = current_session().execute(select(Shop).where(Shop.domain == domain)).scalar_one_or_none()
    if shop is None:
        shop = Shop(domain=domain, created_at=now)
        current_session().add(shop)
    shop.access_token_encrypted = box.encrypt(token)
    shop.installed_at, shop.uninstalled_at, shop.redact_due_at = now, None, None
    shop.native_sync = native_sync
    current_session().commit()
    return shop


@shops_cli.command("install")
@click.argument("domain")
@click.option("--token", required=True, help="The shop's offline Admin API access token.")
@click.option("--no-native-sync", is_flag=True, help="Keep credit in CreditCraft only.")
def shops_install(domain: str, token: str, no_native_sync: bool) -> None:
    """Register DOMAIN as installed, by hand (operators, tests)."""
    shop = install_shop(domain, token, native_sync=not no_native_sync, now=_utc(None))
    sync = "off" if no_native_sync else "on"
    click.echo(f"installed {shop.domain} (shop id {shop.id}, native sync {sync})")


@shops_cli.command("rotate-keys")
def shops_rotate_keys() -> None:
    """Re-encrypt every stored Shopify token with the newest TOKEN_ENCRYPTION_KEYS key."""
    changed = rotate_token_encryption(current_session(), current_settings())
    click.echo(f"re-encrypted {changed} tokens with the newest key")


@credits_cli.command("expire")
@click.option("--shop", "domain", help="Only this shop (default: every shop).")
@click.option("--now", "now_iso", help="Expire as of this ISO time (default: now).")
def credits_expire(domain: str | None, now_iso: str | None) -> None:
    """Expire every lot due now, inline; print counts."""
    shop_id = _shop_by_domain(domain).id if domain else None
    report = expire_credits(shop_id, _utc(now_iso).isoformat())
    totals = ", ".join(f"{format_amount(v, c)} {c}" for c, v in sorted(report.amounts.items()))
    click.echo(
        f"expired {report.lots} lots in {report.accounts} accounts"
        + (f" ({totals})" if totals else "")
    )


CLI_ACTOR = "system:cli"


@credits_cli.command("import")
@click.argument("file", type=click.File("rb"))
@click.option("--shop", "domain", required=True, help="The shop to credit.")
@click.option("--dry-run", is_flag=True, help="Check the file, print the report, change nothing.")
@click.option(
    "--result", "result_file", type=click.File("wb"), help="Write the per-row result CSV here."
)
@click.pass_context
def credits_import(
    ctx: click.Context, file: BinaryIO, domain: str, dry_run: bool, result_file: BinaryIO | None
) -> None:
    """Issue credit from a CSV: customer_id or email, amount, currency, expires_at, reason.

    The file is checked whole first; a file with any error issues nothing (exit 1). The same
    file again is the same import: it resumes, and never issues a row twice.
    """
    shop, data, now = _shop_by_domain(domain), file.read(), _utc(None)
    if dry_run:
        checked = bulk.check_file(current_session(), shop, data, now=now)
        current_session().rollback()
        _echo_lines(bulk.report_lines(checked.report.to_json()))
        ctx.exit(0 if checked.report.ok else 1)
    try:
        created = bulk.create_import(
            current_session(), shop, data, filename=file.name, actor=CLI_ACTOR, now=now
        )
    except bulk.FileRejected as rejected:
        _echo_lines(bulk.report_lines(rejected.report.to_json()))
        ctx.exit(1)
    found = created.bulk_import
    again = "" if created.created else " (this file, uploaded before)"
    click.echo(f"import {found.id}{again}: {found.state}")
    _echo_lines(bulk.report_lines(found.report))
    if found.state == "invalid":
        ctx.exit(1)
    started = bulk.start_import(current_session(), shop.id, found.id, actor=CLI_ACTOR, now=now)
    outcome = _issue_with_progress_bar(started.id, started.valid_rows)
    click.echo(
        f"import {started.id} {outcome['state']}: {outcome['issued_rows']} issued, "
        f"{outcome['failed_rows']} failed, {outcome['pending_rows']} pending"
    )
    if result_file is not None:
        for chunk in bulk.result_csv(current_session(), started.id):
            result_file.write(chunk.encode())
        current_session().rollback()
    ctx.exit(0 if outcome["state"] == "finished" and not outcome["failed_rows"] else 1)


def _issue_with_progress_bar(import_id: int, rows: int) -> dict[str, Any]:
    with click.progressbar(length=rows, label="issuing", show_pos=True) as bar:
        lock = threading.Lock()  # the job's lanes report from their own threads

        def advance(progress: bulk.Progress) -> None:
            with lock:
                bar.update(max(0, progress.done_rows - bar.pos))

        advance(bulk.read_progress(current_session(), import_id))  # a resumed import
        return bulk_issue(import_id, on_batch=advance)


def _echo_lines(lines: list[str]) -> None:
    for line in lines:
        click.echo(line)


@credits_cli.command("reconcile")
@click.option("--shop", "domain", help="Only this shop (default: every installed shop).")
@click.option("--full", is_flag=True, help="Verify every entry from the first, not what changed.")
@click.option("--now", "now_iso", help="Reconcile as of this ISO time (default: now).")
@click.pass_context
def credits_reconcile(
    ctx: click.Context, domain: str | None, full: bool, now_iso: str | None
) -> None:
    """Reconcile inline (ledger, then Shopify); print open findings; exit 1 while any is open."""
    shops = [_shop_by_domain(domain)] if domain else _installed_shops()
    now = _utc(now_iso).isoformat()
    still_open = 0
    for shop in shops:
        click.echo(_run_line(shop.domain, reconcile_shop(shop.id, full=full, now_iso=now)))
        with tenancy.shop(shop.id):
            for finding in open_findings(current_session(), shop.id):
                click.echo(f"  {_finding_line(finding)}")
                still_open += 1
            current_session().commit()
    click.echo(f"{still_open} open findings")
    if still_open:
        ctx.exit(1)


def _installed_shops() -> list[Shop]:
    return list(
        current_session().scalars(
            select(Shop)
            .where(
                Shop.installed_at.is_not(None),
                Shop.uninstalled_at.is_(None),
                Shop.erased_at.is_(None),
            )
            .order_by(Shop.id)
        )
    )


def _run_line(domain: str, result: dict[str, object]) -> str:
    if result["result"] != "finished":
        return f"{domain}: {result['result']} (another reconciliation of it is running)"
    line = (
        f"{domain}: {result['kind']} run {result['run_id']}: {result['accounts_checked']} "
        f"accounts, {result['entries_checked']} entries and {result['native_checked']} native "
        f"transactions checked; {result['findings_opened']} findings opened, "
        f"{result['findings_resolved']} resolved; {result['repairs']} repairs"
    )
    errors = result.get("errors") or []
    assert isinstance(errors, list)
    return "\n".join([line, *(f"  ! {error}" for error in errors)])


def _finding_line(finding: ReconciliationFinding) -> str:
    def amount(minor: int | None) -> str:
        if minor is None:
            return "-"
        return format_amount(minor, finding.currency) if finding.currency else str(minor)

    whose = ", ".join(
        part
        for part in (
            f"account {finding.account_id}" if finding.account_id else "",
            f"customer {finding.shopify_customer_id}" if finding.shopify_customer_id else "",
            finding.currency or "",
        )
        if part
    )
    return (
        f"open {finding.kind} {finding.finding_key}"
        + (f" ({whose})" if whose else "")
        + f" expected {amount(finding.expected)} actual {amount(finding.actual)}"
        + f" since {finding.first_seen_at.isoformat()}"
    )


@webhooks_cli.command("sweep")
@click.option("--now", "now_iso", help="Sweep as of this ISO time (default: now).")
def webhooks_sweep(now_iso: str | None) -> None:
    """Enqueue again deliveries left unprocessed (Redis was down, a worker died)."""
    try:
        count = sweep_webhooks(_utc(now_iso).isoformat())
    except REDIS_DOWN as error:
        raise click.ClickException(f"Redis is unavailable: {error}") from None
    click.echo(f"enqueued {count} left-behind webhook deliveries")


@webhooks_cli.command("prune")
@click.option("--now", "now_iso", help="Prune as of this ISO time (default: now).")
def webhooks_prune(now_iso: str | None) -> None:
    """Drop stored payloads older than 30 days; the delivery rows and outcomes stay."""
    count = prune_webhook_payloads(_utc(now_iso).isoformat())
    click.echo(f"pruned {count} webhook payloads")


@demo_cli.command("seed")
@click.option("--shop", "domain", default=DEMO_SHOP, show_default=True)
@click.option("--large", is_flag=True, help="Also a large shop's history (PostgreSQL only).")
@click.option("--customers", type=click.IntRange(1), help="With --large: customers [10000].")
@click.option("--entries", type=click.IntRange(1), help="With --large: about this many entries.")
def demo_seed(domain: str, large: bool, customers: int | None, entries: int | None) -> None:
    """An installed demo shop with customers, lots and history (safe to run again).

    With --large, also 10,000 customers and 1,000,000 ledger entries over two years, loaded
    with COPY (see ledger/seed.py); customers already seeded are kept, so a rerun adds nothing.
    """
    plan = _large_plan(customers, entries) if large else None
    if not large and (customers or entries):
        raise click.UsageError("--customers and --entries go with --large")
    if plan is not None and current_session().get_bind().dialect.name != "postgresql":
        raise click.ClickException(
            "--large loads rows with PostgreSQL's COPY: point DATABASE_URL at PostgreSQL "
            "(make run uses SQLite; `flask demo seed` without --large works there)"
        )
    now = _utc(None)
    shop = current_session().execute(select(Shop).where(Shop.domain == domain)).scalar_one_or_none()
    if shop is None:
        shop = install_shop(domain, "demo-offline-token", native_sync=False, now=now)
    tenancy.use_shop(shop.id)  # row-level security: the seed writes this shop's rows
    _seed_customers(shop, now)
    _seed_history(shop, now)
    _seed_presets(shop, now)
    click.echo(f"demo shop {shop.domain} ready with {len(DEMO_CUSTOMERS)} customers")
    if plan is not None:
        _seed_large(shop, plan, now)


def _large_plan(customers: int | None, entries: int | None) -> seed.Plan:
    try:
        return seed.Plan(customers or seed.Plan.customers, entries or seed.Plan.entries)
    except ValueError as wrong:
        raise click.UsageError(f"--customers/--entries: {wrong}") from None


def _seed_large(shop: Shop, plan: seed.Plan, now: datetime) -> None:
    def progress(report: seed.SeedReport, customers: int) -> None:
        click.echo(
            f"  {report.already + report.customers:,}/{customers:,} customers, "
            f"{report.entries:,} entries, {report.seconds:.1f} s"
        )

    try:
        report = seed.seed_large_shop(current_session(), shop.id, plan, now=now, progress=progress)
    except seed.SeedRefused as refused:
        raise click.ClickException(str(refused)) from None
    if report.customers == 0:
        click.echo(f"large shop {shop.domain} already holds its {plan.customers:,} customers")
        return
    seed.analyze(current_session().connection())
    current_session().commit()
    click.echo(
        f"large shop {shop.domain}: {report.customers:,} customers added "
        f"({report.already:,} already there), {report.accounts:,} accounts, {report.lots:,} lots, "
        f"{report.entries:,} entries, {report.allocations:,} allocations, "
        f"{report.audits:,} audit rows in {report.seconds:.1f} s; tables analyzed"
    )


@demo_cli.command("token")
@click.option("--shop", "domain", default=DEMO_SHOP, show_default=True)
@click.option("--user", default="1", show_default=True, help="The staff user id (``sub``).")
@click.option("--minutes", default=60, show_default=True, type=click.IntRange(1, 24 * 60))
def demo_token(domain: str, user: str, minutes: int) -> None:
    """Print a session token for DOMAIN (development only), to call the API with curl."""
    settings = current_settings()
    if settings.is_production:
        raise click.ClickException("demo token exists only in development and tests")
    _shop_by_domain(domain)
    token = mint_development_token(settings, domain, user=user, minutes=minutes, now=_utc(None))
    click.echo(token)


# Issuance presets: name, amount, expiry days, reason, source.
DEMO_PRESETS = [
    ("Goodwill $10, 90 days", "10.00", 90, "goodwill gesture", "goodwill"),
    ("Birthday $15, 30 days", "15.00", 30, "happy birthday", "goodwill"),
    ("Loyalty $25, 365 days", "25.00", 365, "loyalty reward", "cashback"),
]


def _seed_presets(shop: Shop, now: datetime) -> None:
    """The demo presets, each unless the shop has a preset of that name already."""
    have = {preset["name"] for preset in presets.list_presets(current_session(), shop.id)}
    for name, amount, days, reason, source in DEMO_PRESETS:
        if name in have:
            continue
        body = {"name": name, "amount": amount, "currency": shop.currency, "expiry_days": days}
        body |= {"reason": reason, "source": source}
        presets.create_preset(current_session(), shop.id, body, actor="system:demo", now=now)


def _seed_customers(shop: Shop, now: datetime) -> None:
    for shopify_id, email, first, last in DEMO_CUSTOMERS:
        customer = (
            current_session()
            .execute(
                select(Customer).where(
                    Customer.shop_id == shop.id, Customer.shopify_customer_id == shopify_id
                )
            )
            .scalar_one_or_none()
        )
        if customer is None:
            current_session().add(
                Customer(
                    shop_id=shop.id,
                    shopify_customer_id=shopify_id,
                    email=email,
                    first_name=first,
                    last_name=last,
                    created_at=now,
                    updated_at=now,
                )
            )
    current_session().commit()


def _seed_history(shop: Shop, now: datetime) -> None:
    """Issue, spend and expire through the ledger itself; customers with history are kept."""
    start = now.replace(microsecond=0) - timedelta(days=60)
    for index, (shopify_id, *_rest) in enumerate(DEMO_CUSTOMERS):
        if find_account(current_session(), shop.id, shopify_id, "USD") is None:
            _seed_customer_history(shop.id, shopify_id, index, start, now)
    expire_credits(shop.id, now.isoformat())


def _seed_customer_history(
    shop_id: int, shopify_id: int, index: int, start: datetime, now: datetime
) -> None:
    def by(step: str, days: int, reason: str) -> Actor:
        return Actor(
            shop_id=shop_id,
            now=start + timedelta(days=days),
            actor="system:demo",
            reason=reason,
            idempotency_key=f"demo:{shopify_id}:{step}",
        )

    operations.issue(
        current_session(),
        by("welcome", 0, "welcome credit"),
        customer=shopify_id,
        amount=Money(2500 + 500 * index, "USD"),
        expires_at=start + timedelta(days=45),
        source=LotSource.GOODWILL,
    )
    operations.issue(
        current_session(),
        by("cashback", 10, "cashback"),
        customer=shopify_id,
        amount=Money(1000, "USD"),
        expires_at=now + timedelta(days=20 + index),
        source=LotSource.CASHBACK,
    )
    if index % 2 == 0:
        operations.redeem(
            current_session(),
            by("order", 20, "order"),
            customer=shopify_id,
            amount=Money(1500, "USD"),
            shopify_order_id=5_000_000_000 + index,
        )
