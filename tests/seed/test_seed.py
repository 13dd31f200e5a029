"""The large demo shop (ledger/seed.py, ``flask demo seed --large``) is a ledger that verifies.

Seeded small (50 customers, about 3,000 entries) in the test's rolled-back transaction: every
account passes ``verify_account`` (the check reconciliation runs), and the same facts are
re-added here in SQL, independently: balance = Σ entries = Σ active lots' remaining, each lot's
remaining = amount + Σ its allocations, each spending entry = Σ its allocations, the head is
the last entry. A second run adds nothing.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from app import create_app
from config import DEVELOPMENT_FERNET_KEY, Settings
from extensions import db
from ledger.seed import FIRST_SHOPIFY_ID, Plan, SeedRefused, entry_budgets, seed_large_shop
from ledger.verify import verify_account
from models import AuditLog, CreditAccount, CreditLot, Customer, EntryAllocation, LedgerEntry, Shop
from tests.factories import ShopFactory

PLAN = Plan(customers=50, entries=3000)


@pytest.fixture
def seeded(session: Session) -> int:
    shop_id = int(ShopFactory().id)
    report = seed_large_shop(session, shop_id, PLAN, now=datetime.now(UTC))
    assert (report.customers, report.already) == (50, 0)
    return shop_id


def _rows(session: Session, shop_id: int) -> dict[str, int]:
    tables = (Customer, CreditAccount, CreditLot, LedgerEntry, EntryAllocation, AuditLog)
    return {
        table.__tablename__: session.scalar(
            select(func.count()).select_from(table).where(table.shop_id == shop_id)
        )
        or 0
        for table in tables
    }


def test_every_seeded_account_verifies(session, seeded):
    accounts = session.scalars(select(CreditAccount.id).where(CreditAccount.shop_id == seeded))

    failures = {account: verify_account(session, account) for account in accounts}

    assert len(failures) >= 50
    assert {account: found for account, found in failures.items() if found} == {}


def test_balances_lots_and_allocations_add_up_in_sql(session, seeded):
    params = {"shop": seeded}
    off_balance = session.execute(
        text(
            "SELECT a.id FROM credit_accounts a"
            " LEFT JOIN (SELECT account_id, sum(amount) AS total, count(*) AS n, max(sequence) AS"
            "   last FROM ledger_entries WHERE shop_id = :shop GROUP BY account_id) e"
            "   ON e.account_id = a.id"
            " LEFT JOIN (SELECT account_id, sum(remaining) AS live FROM credit_lots"
            "   WHERE shop_id = :shop AND status = 'active' GROUP BY account_id) l"
            "   ON l.account_id = a.id"
            " WHERE a.shop_id = :shop AND (a.balance <> coalesce(e.total, 0)"
            "   OR a.balance <> coalesce(l.live, 0) OR a.last_sequence <> coalesce(e.n, 0)"
            "   OR a.last_sequence <> coalesce(e.last, 0)"
            "   OR a.balance <> a.lifetime_credited - a.lifetime_debited)"
        ),
        params,
    ).all()
    lots_off = session.execute(
        text(
            "SELECT l.id FROM credit_lots l LEFT JOIN entry_allocations x ON x.lot_id = l.id"
            " WHERE l.shop_id = :shop GROUP BY l.id"
            " HAVING l.remaining <> l.amount + coalesce(sum(x.amount), 0)"
        ),
        params,
    ).all()
    spends_off = session.execute(
        text(
            "SELECT e.id FROM ledger_entries e JOIN entry_allocations x ON x.entry_id = e.id"
            " WHERE e.shop_id = :shop GROUP BY e.id HAVING e.amount <> sum(x.amount)"
        ),
        params,
    ).all()
    heads_off = session.execute(
        text(
            "SELECT a.id FROM credit_accounts a JOIN ledger_entries e ON e.account_id = a.id"
            " AND e.sequence = a.last_sequence WHERE a.shop_id = :shop AND e.hash <> a.last_hash"
        ),
        params,
    ).all()

    assert (off_balance, lots_off, spends_off, heads_off) == ([], [], [], [])


def test_the_shop_looks_like_a_shop(session, seeded):
    kinds = dict(
        session.execute(
            select(LedgerEntry.kind, func.count())
            .where(LedgerEntry.shop_id == seeded)
            .group_by(LedgerEntry.kind)
        ).all()
    )
    currencies = set(
        session.scalars(select(CreditAccount.currency).where(CreditAccount.shop_id == seeded))
    )
    sources = set(session.scalars(select(CreditLot.source).where(CreditLot.shop_id == seeded)))
    entries = sum(kinds.values())
    span = session.execute(
        select(func.min(LedgerEntry.created_at), func.max(LedgerEntry.created_at)).where(
            LedgerEntry.shop_id == seeded
        )
    ).one()
    searchable = session.scalar(
        select(func.count())
        .select_from(Customer)
        .where(Customer.shop_id == seeded, Customer.email.is_not(None), Customer.last_name != "")
    )

    assert set(kinds) == {
        "issue", "redeem", "refund_credit", "redeem_reversal", "adjust", "revoke", "expire",
    }  # fmt: skip
    assert abs(entries - PLAN.entries) <= PLAN.entries // 20
    assert "USD" in currencies
    assert len(currencies) >= 2
    assert {"manual", "goodwill", "cashback", "bulk", "refund"} <= sources
    assert (span[1] - span[0]).days > 300
    assert searchable == PLAN.customers
    assert _rows(session, seeded)["audit_log"] > 0


def test_a_second_run_changes_nothing(session, seeded):
    before = _rows(session, seeded)
    heads = session.execute(
        select(CreditAccount.id, CreditAccount.last_hash).where(CreditAccount.shop_id == seeded)
    ).all()

    again = seed_large_shop(session, seeded, PLAN, now=datetime.now(UTC))

    assert (again.customers, again.entries, again.already) == (0, 0, 50)
    assert _rows(session, seeded) == before
    assert (
        session.execute(
            select(CreditAccount.id, CreditAccount.last_hash).where(CreditAccount.shop_id == seeded)
        ).all()
        == heads
    )


def test_a_run_cut_short_is_completed_by_the_next(session):
    shop_id = int(ShopFactory().id)
    now = datetime.now(UTC)
    seed_large_shop(session, shop_id, Plan(customers=20, entries=600), now=now)

    grown = seed_large_shop(session, shop_id, Plan(customers=30, entries=900), now=now)

    assert (grown.already, grown.customers) == (20, 10)
    shopify_ids = set(
        session.scalars(select(Customer.shopify_customer_id).where(Customer.shop_id == shop_id))
    )
    assert shopify_ids == set(range(FIRST_SHOPIFY_ID + 1, FIRST_SHOPIFY_ID + 31))


def test_entry_budgets_are_heavy_tailed_and_add_up():
    budgets = entry_budgets(Plan(customers=10_000, entries=1_000_000))

    assert abs(sum(budgets) - 1_000_000) < 10_000
    assert budgets[0] == max(budgets) == 2000  # the first customer has the longest ledger
    assert sorted(budgets)[len(budgets) // 2] < 100  # most customers have a short one


def test_a_login_under_row_level_security_is_refused_before_anything_is_written(session):
    """COPY FROM is refused under row-level security: say whom to seed as, up front."""
    shop_id = int(ShopFactory().id)
    session.execute(text("CREATE ROLE creditcraft_seed_probe NOLOGIN"))
    session.execute(text("ALTER TABLE ledger_entries ENABLE ROW LEVEL SECURITY"))
    session.execute(text("SET LOCAL ROLE creditcraft_seed_probe"))

    with pytest.raises(SeedRefused, match="row-level security: seed as the schema's owner"):
        seed_large_shop(session, shop_id, PLAN, now=datetime.now(UTC))


# -- the command ------------------------------------------------------------------------------


def test_flask_demo_seed_large_seeds_once_then_says_so(app_context):
    runner = app_context.test_cli_runner()
    domain = "seed-large.myshopify.com"
    args = ["demo", "seed", "--shop", domain, "--large", "--customers", "12", "--entries", "400"]

    first = runner.invoke(args=args)
    second = runner.invoke(args=args)

    assert first.exit_code == 0, first.output
    assert f"large shop {domain}: 12 customers added (0 already there)" in first.output
    assert "tables analyzed" in first.output
    assert second.exit_code == 0, second.output
    assert f"large shop {domain} already holds its 12 customers" in second.output
    shop_id = db.session.scalar(select(Shop.id).where(Shop.domain == domain))
    assert (
        db.session.scalar(
            select(func.count()).select_from(Customer).where(Customer.shop_id == shop_id)
        )
        == 12 + 6
    )  # and the small demo seed's six


def test_customers_and_entries_need_large(app_context):
    result = app_context.test_cli_runner().invoke(args=["demo", "seed", "--customers", "5"])

    assert result.exit_code == 2
    assert "go with --large" in result.output


@pytest.mark.smoke
def test_large_is_refused_on_sqlite_with_a_clear_message(tmp_path):
    """make run's SQLite cannot take COPY: the command says what to do, before touching it."""
    settings = Settings(
        env="development",
        secret_key="k",
        shopify_api_key="key",
        shopify_api_secret="secret-0123456789abcdef0123456789abcdef",
        token_encryption_keys=(DEVELOPMENT_FERNET_KEY,),
        database_url=f"sqlite:///{tmp_path / 'dev.sqlite3'}",
    )
    sqlite_app = create_app(settings)

    result = sqlite_app.test_cli_runner().invoke(args=["demo", "seed", "--large"])

    with sqlite_app.app_context():
        db.engine.dispose()
    assert result.exit_code == 1
    assert "--large loads rows with PostgreSQL's COPY" in result.output
    assert "make run uses SQLite" in result.output
