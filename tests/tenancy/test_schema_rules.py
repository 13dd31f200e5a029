"""Rules every migration must keep, read from the migrated schema's catalog.

A table added later with a ``shop_id`` column and no row-level security, a grant the web's
role should not have, an object the runtime roles own: each fails here, naming the table.
A new tenant table needs, in its migration (see docs/architecture.md, "Tenant isolation")::

    ALTER TABLE t ENABLE ROW LEVEL SECURITY;
    CREATE POLICY tenant_isolation ON t TO creditcraft_app, creditcraft_worker
        USING (shop_id = nullif(current_setting('app.shop_id', true), '')::bigint)
        WITH CHECK (shop_id = nullif(current_setting('app.shop_id', true), '')::bigint);
    CREATE POLICY cross_shop_sweep ON t TO creditcraft_worker
        USING (current_setting('app.cross_shop', true) = 'on')
        WITH CHECK (current_setting('app.cross_shop', true) = 'on');
"""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, text

APP, WORKER, OWNER = "creditcraft_app", "creditcraft_worker", "creditcraft_migrator"
APPEND_ONLY = ("ledger_entries", "entry_allocations", "audit_log")
# Retention's tables (migrations 0009, 0010): append-only by privilege too. Only workers
# archive (INSERT); the worker keeps DELETE for a shop's erasure (their trigger refuses any
# other); the web only reads them.
ARCHIVE = (
    "ledger_entries_archive",
    "entry_allocations_archive",
    "shopify_outbox_archive",
    "ledger_checkpoints",
)


@pytest.fixture
def catalog(engine: Engine, on_postgresql: bool) -> Engine:
    if not on_postgresql:
        pytest.skip("roles and row-level security are PostgreSQL's")
    return engine


def rows(engine: Engine, sql: str, **params: object) -> list[tuple]:
    with engine.connect() as conn:
        return [tuple(row) for row in conn.execute(text(sql), params)]


def test_every_table_with_a_shop_id_has_row_level_security_and_both_policies(catalog):
    tables = rows(
        catalog,
        "SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_attribute a "
        "ON a.attrelid = c.oid AND a.attname = 'shop_id' AND NOT a.attisdropped "
        "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND c.relname <> 'shops'",
    )
    assert len(tables) >= 15
    policies = {
        (table, name): (set(roles), command, using, check)
        for table, name, roles, command, using, check in rows(
            catalog,
            "SELECT tablename, policyname, roles, cmd, qual, with_check FROM pg_policies "
            "WHERE schemaname = 'public'",
        )
    }
    missing = []
    for table, secured, forced in tables:
        tenant = policies.get((table, "tenant_isolation"))
        sweep = policies.get((table, "cross_shop_sweep"))
        if not secured or forced or tenant is None or sweep is None:
            missing.append(table)
            continue
        roles, command, using, check = tenant
        assert roles == {APP, WORKER}, table
        assert command == "ALL", table
        assert "shop_id = (NULLIF(current_setting('app.shop_id'::text, true)" in using, table
        assert using == check, table
        roles, command, using, check = sweep
        assert roles == {WORKER}, table
        assert command == "ALL", table
        assert "current_setting('app.cross_shop'::text, true) = 'on'" in using, table
        assert using == check, table
    assert missing == [], f"tables with shop_id but no row-level security + policies: {missing}"
    # No other policy widens what a runtime role sees.
    names = {name for _table, name in policies}
    assert names <= {"tenant_isolation", "cross_shop_sweep"}, names


def test_the_owner_owns_everything_and_the_runtime_roles_nothing(catalog):
    owners = rows(
        catalog,
        "SELECT c.relname, pg_get_userbyid(c.relowner) FROM pg_class c JOIN pg_namespace n "
        "ON n.oid = c.relnamespace WHERE n.nspname = 'public' "
        "AND c.relkind IN ('r', 'p', 'v', 'm', 'S')",
    )
    assert owners
    assert [name for name, owner in owners if owner != OWNER] == []
    attributes = rows(
        catalog,
        "SELECT rolname, rolcanlogin, rolbypassrls, rolsuper, rolcreaterole, rolcreatedb "
        "FROM pg_roles WHERE rolname IN (:app, :worker, :owner) ORDER BY rolname",
        app=APP,
        worker=WORKER,
        owner=OWNER,
    )
    assert attributes == [
        (APP, False, False, False, False, False),
        (OWNER, False, False, False, False, False),
        (WORKER, False, False, False, False, False),
    ]


def test_runtime_privileges_are_the_least_each_role_needs(catalog):
    tables = [
        name
        for (name,) in rows(
            catalog,
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')",
        )
    ]

    def may(role: str, table: str, privilege: str) -> bool:
        (allowed,) = rows(
            catalog, "SELECT has_table_privilege(:r, :t, :p)", r=role, t=table, p=privilege
        )[0]
        return bool(allowed)

    for table in tables:
        for role in (APP, WORKER):
            assert may(role, table, "SELECT"), (role, table)  # default privileges reach new tables
            assert not may(role, table, "TRUNCATE"), (role, table)
            assert not may(role, table, "REFERENCES"), (role, table)
            assert not may(role, table, "TRIGGER"), (role, table)
        assert not may(APP, table, "DELETE"), table
        if table in APPEND_ONLY or table in ARCHIVE or table == "alembic_version":
            assert not may(APP, table, "UPDATE"), table
            assert not may(WORKER, table, "UPDATE"), table
    assert not may(WORKER, "shops", "DELETE")
    for table in ARCHIVE:
        assert table in tables
        assert not may(APP, table, "INSERT"), table
        assert may(WORKER, table, "INSERT"), table
        assert may(WORKER, table, "DELETE"), table  # a shop's erasure
    for role in (APP, WORKER):
        schema = rows(catalog, "SELECT has_schema_privilege(:r, 'public', 'CREATE')", r=role)
        assert schema == [(False,)]
