"""Row-level security and privileges, through raw SQL as the runtime roles' LOGIN roles.

Two shops' rows are committed by the owner; the web's role and the worker's role then see,
write and refuse exactly what migration 0005 says, whatever the query asks for.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DBAPIError

import tenancy

# Every table the seed fills for each shop (tests/tenancy/conftest.py).
SEEDED = (
    "customers",
    "credit_accounts",
    "credit_lots",
    "ledger_entries",
    "entry_allocations",
    "audit_log",
    "idempotency_keys",
    "shopify_outbox",
    "webhook_events",
    "data_requests",
    "api_usage",
    "reconciliation_runs",
    "reconciliation_findings",
    "bulk_imports",
    "bulk_import_rows",
)


@contextmanager
def as_role(
    engine: Engine, shop: int | None = None, *, cross_shop: bool = False
) -> Iterator[Connection]:
    """A transaction as ``engine``'s role, told ``shop`` (and cross-shop) as the app tells it;
    rolled back at the end."""
    with engine.connect() as conn:
        transaction = conn.begin()
        try:
            if shop is not None or cross_shop:
                tenancy.apply(conn, tenancy.Tenancy(shop_id=shop, cross_shop=cross_shop))
            yield conn
        finally:
            transaction.rollback()


def tenant_tables(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return list(
            conn.scalars(
                text(
                    "SELECT table_name FROM information_schema.columns WHERE table_schema = "
                    "'public' AND column_name = 'shop_id' AND table_name <> 'shops' "
                    "ORDER BY table_name"
                )
            )
        )


def count(conn: Connection, table: str, where: str = "true", **params: object) -> int:
    value: int = conn.execute(
        text(f"SELECT count(*) FROM {table} WHERE {where}"), params
    ).scalar_one()  # noqa: S608
    return value


def refused(engine: Engine, statement: str, shop: int | None = None) -> str:
    """The error message PostgreSQL answers ``statement`` with (the test fails if it runs)."""
    with as_role(engine, shop) as conn, pytest.raises(DBAPIError) as caught:
        conn.execute(text(statement))
    return str(caught.value.orig)


def test_every_seeded_table_has_rows_of_both_shops(superuser, two_shops):
    """The seed the other tests rely on: without it, "sees nothing" would prove nothing."""
    assert set(SEEDED) <= set(tenant_tables(superuser))
    with superuser.connect() as conn:
        for shop in two_shops:
            for table in SEEDED:
                assert count(conn, table, "shop_id = :shop", shop=shop.id) >= 1, table


@pytest.mark.parametrize("role", ["app", "worker"])
def test_without_a_shop_no_row_of_any_shop_is_visible(request, superuser, two_shops, role):
    engine = request.getfixturevalue(f"{role}_engine")
    with as_role(engine) as conn:
        for table in tenant_tables(superuser):
            assert count(conn, table, "shop_id IS NOT NULL") == 0, table


def test_a_shop_set_in_an_earlier_transaction_is_gone_in_the_next(app_engine, two_shops):
    """The pool hands the same connection back: a transaction-local setting must not leak
    into the next transaction (where it reads '' rather than NULL, and must not fail)."""
    a, _ = two_shops
    with app_engine.connect() as conn:
        with conn.begin():
            tenancy.apply(conn, tenancy.Tenancy(shop_id=a.id))
            assert count(conn, "customers") == 1
        with conn.begin():
            assert conn.scalar(text("SELECT current_setting('app.shop_id', true)")) == ""
            assert count(conn, "customers") == 0


@pytest.mark.parametrize("role", ["app", "worker"])
def test_with_shop_a_set_a_raw_query_sees_shop_a_alone(request, superuser, two_shops, role):
    engine = request.getfixturevalue(f"{role}_engine")
    a, _ = two_shops
    with superuser.connect() as conn:
        expected = {table: count(conn, table, "shop_id = :shop", shop=a.id) for table in SEEDED}
    with as_role(engine, a.id) as conn:
        entries = conn.execute(text("SELECT * FROM ledger_entries")).mappings().all()
        assert {entry["shop_id"] for entry in entries} == {a.id}
        for table in SEEDED:
            shops = conn.scalars(text(f"SELECT shop_id FROM {table}")).all()  # noqa: S608
            # Deliveries for a domain never installed belong to no shop, and show to everyone.
            shopless = table == "webhook_events"
            assert set(shops) - ({None} if shopless else set()) == {a.id}, table
            assert shops.count(a.id) == expected[table], table


@pytest.mark.parametrize("role", ["app", "worker"])
def test_shop_a_cannot_write_shop_b(request, superuser, two_shops, role):
    engine = request.getfixturevalue(f"{role}_engine")
    a, b = two_shops
    insert = (
        "INSERT INTO customers (shop_id, shopify_customer_id, created_at, updated_at) "
        f"VALUES ({b.id}, 7999, now(), now())"
    )
    assert "row-level security" in refused(engine, insert, a.id)
    audit = (
        "INSERT INTO audit_log (shop_id, actor, action, target_type, outcome, details, "
        f"created_at) VALUES ({b.id}, 'x', 'x', 'x', 'success', '{{}}', now())"
    )
    assert "row-level security" in refused(engine, audit, a.id)
    moved = f"UPDATE customers SET shop_id = {b.id} WHERE shop_id = {a.id}"
    assert "row-level security" in refused(engine, moved, a.id)
    with as_role(engine, a.id) as conn:
        updated = conn.execute(
            text("UPDATE credit_accounts SET native_account_gid = 'x' WHERE shop_id = :b"),
            {"b": b.id},
        )
        assert updated.rowcount == 0
        by_id = conn.execute(
            text(
                "UPDATE customers SET email = 'x@example.com' WHERE id IN "
                "(SELECT id FROM customers WHERE shop_id = :b)"
            ),
            {"b": b.id},
        )
        assert by_id.rowcount == 0
    with superuser.connect() as conn:
        assert count(conn, "credit_accounts", "native_account_gid = 'x'") == 0


def test_the_worker_deletes_nothing_of_another_shop(worker_engine, superuser, two_shops):
    a, b = two_shops
    with as_role(worker_engine, a.id) as conn:
        assert (
            conn.execute(text("DELETE FROM api_usage WHERE shop_id = :b"), {"b": b.id}).rowcount
            == 0
        )
    with superuser.connect() as conn:
        assert count(conn, "api_usage", "shop_id = :b", b=b.id) == 1


def test_cross_shop_sweeps_are_the_workers_alone(app_engine, worker_engine, two_shops):
    a, b = two_shops
    with as_role(app_engine, cross_shop=True) as conn:
        assert count(conn, "ledger_entries") == 0  # the web's role ignores app.cross_shop
    with as_role(app_engine, a.id, cross_shop=True) as conn:
        assert set(conn.scalars(text("SELECT DISTINCT shop_id FROM customers"))) == {a.id}
    with as_role(worker_engine, cross_shop=True) as conn:
        seen = set(conn.scalars(text("SELECT DISTINCT shop_id FROM ledger_entries")))
        assert {a.id, b.id} <= seen


def test_the_webs_role_may_not_delete_truncate_or_change_the_schema(app_engine, two_shops):
    a, _ = two_shops
    for statement in (
        f"DELETE FROM ledger_entries WHERE shop_id = {a.id}",
        f"DELETE FROM customers WHERE shop_id = {a.id}",
        "UPDATE ledger_entries SET note = 'rewritten'",
        "UPDATE entry_allocations SET amount = 1",
        "UPDATE audit_log SET actor = 'someone else'",
        "TRUNCATE ledger_entries CASCADE",
        "TRUNCATE customers CASCADE",
        "UPDATE alembic_version SET version_num = '0000'",
    ):
        assert "permission denied" in refused(app_engine, statement, a.id), statement
    assert_no_ddl(app_engine)


def test_the_workers_role_may_not_truncate_nor_change_the_schema_nor_rewrite_the_ledger(
    worker_engine, two_shops
):
    a, _ = two_shops
    for statement in (
        "TRUNCATE ledger_entries CASCADE",
        "TRUNCATE webhook_events",
        "UPDATE ledger_entries SET note = 'rewritten'",
        f"DELETE FROM shops WHERE id = {a.id}",
    ):
        assert "permission denied" in refused(worker_engine, statement, a.id), statement
    # DELETE it may (erasure), but the append-only trigger refuses it for a shop not erased.
    message = refused(worker_engine, f"DELETE FROM ledger_entries WHERE shop_id = {a.id}", a.id)
    assert "append-only" in message
    assert_no_ddl(worker_engine)


def assert_no_ddl(engine: Engine) -> None:
    assert "permission denied for schema public" in refused(engine, "CREATE TABLE x (id int)")
    for statement in (
        "ALTER TABLE customers DISABLE ROW LEVEL SECURITY",
        "ALTER TABLE customers ADD COLUMN x int",
        "DROP POLICY tenant_isolation ON customers",
        "DROP TABLE webhook_events",
        "CREATE INDEX ix_x ON customers (email)",
    ):
        assert "must be owner" in refused(engine, statement), statement
    assert "permission denied to set role" in refused(engine, "SET ROLE creditcraft_migrator")
