"""Tenant isolation: least-privilege roles and row-level security per shop (PostgreSQL only).

Roles (NOLOGIN groups, created once per cluster if missing; operators GRANT them to their
LOGIN roles):

- ``creditcraft_migrator`` owns every table, sequence and function of the schema. Migrations
  run as it: this one hands it everything created so far, and migrations/env.py switches to
  it (``SET LOCAL ROLE``) for every later one, whichever login runs them.
- ``creditcraft_app`` (web): SELECT, INSERT, UPDATE; on the append-only tables
  (``ledger_entries``, ``entry_allocations``, ``audit_log``) SELECT and INSERT only; no
  DELETE, no TRUNCATE, no DDL. Sees one shop's rows: ``app.shop_id``.
- ``creditcraft_worker`` (RQ workers, scheduler, operator commands): the web's privileges plus
  DELETE (a shop's erasure, expired idempotency keys; the append-only trigger still refuses
  any ledger DELETE but an erased shop's). Sees one shop's rows too, or every shop's when the
  transaction sets ``app.cross_shop`` to ``on`` (the few cross-shop sweeps).

Policies: every table with a ``shop_id`` column (``shops`` itself excepted: its rows are looked
up by domain before any tenant is known, and hold nothing of another shop's customers) gets
row-level security and a ``tenant_isolation`` policy for both runtime roles, ``shop_id =
app.shop_id`` for reading and writing (unset: no row), plus a ``cross_shop_sweep`` policy for
the worker. ``webhook_events`` also shows both roles its rows without a shop (deliveries for a
domain that never installed the app belong to no tenant). No FORCE ROW LEVEL SECURITY: the
owner is never a runtime role. Default privileges give tables and sequences that later
migrations create the same grants; their policies are each migration's to add (a test fails
for a ``shop_id`` table without them).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23
"""
from alembic import op
import sqlalchemy as sa

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

MIGRATOR = "creditcraft_migrator"
APP = "creditcraft_app"
WORKER = "creditcraft_worker"
APPEND_ONLY = ("ledger_entries", "entry_allocations", "audit_log")
# Rows without a shop belong to no tenant (deliveries for a domain never installed).
SHOPLESS_ROWS_SHARED = ("webhook_events",)

CURRENT_SHOP = "shop_id = nullif(current_setting('app.shop_id', true), '')::bigint"
CROSS_SHOP = "current_setting('app.cross_shop', true) = 'on'"


def upgrade():
    if op.get_bind().dialect.name != "postgresql":
        return  # SQLite (make run) has no roles and no row-level security
    _create_roles()
    _hand_everything_to_the_migrator()
    _grant_runtime_privileges()
    for table, nullable in _tenant_tables():
        _isolate(table, shopless_shared=nullable and table in SHOPLESS_ROWS_SHARED)


def downgrade():
    """Policies, row-level security and grants go; the roles (cluster-wide, perhaps in use by
    another database) and the migrator's ownership (harmless) stay."""
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, _nullable in _tenant_tables():
        op.execute(f'DROP POLICY IF EXISTS cross_shop_sweep ON "{table}"')
        op.execute(f'DROP POLICY IF EXISTS tenant_isolation ON "{table}"')
        op.execute(f'ALTER TABLE "{table}" DISABLE ROW LEVEL SECURITY')
    for role in (APP, WORKER):
        op.execute(f"ALTER DEFAULT PRIVILEGES FOR ROLE {MIGRATOR} IN SCHEMA public "
                   f"REVOKE ALL ON TABLES FROM {role}")
        op.execute(f"ALTER DEFAULT PRIVILEGES FOR ROLE {MIGRATOR} IN SCHEMA public "
                   f"REVOKE ALL ON SEQUENCES FROM {role}")
        op.execute(f"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {role}")
        op.execute(f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM {role}")


def _create_roles():
    # IF NOT EXISTS by hand: roles belong to the cluster, and every database of it (tests,
    # restore checks) runs this migration.
    for role in (MIGRATOR, APP, WORKER):
        op.execute(f"""
            DO $$ BEGIN
                IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') THEN
                    CREATE ROLE {role} NOLOGIN NOBYPASSRLS;
                END IF;
            END $$""")
    # Whoever runs the migrations may act as the owner (env.py switches to it from now on).
    op.execute(f"""
        DO $$ BEGIN
            IF NOT pg_has_role(current_user, '{MIGRATOR}', 'MEMBER') THEN
                EXECUTE format('GRANT {MIGRATOR} TO %I', current_user);
            END IF;
        END $$""")


def _hand_everything_to_the_migrator():
    op.execute(f"""
        DO $$ BEGIN
            IF NOT has_schema_privilege('{MIGRATOR}', 'public', 'CREATE') THEN
                GRANT USAGE, CREATE ON SCHEMA public TO {MIGRATOR};
            END IF;
        END $$""")
    # Before PostgreSQL 15 every role may create in ``public``: the runtime roles must not.
    op.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
    # Tables first: a sequence owned by a column follows its table. Extensions' objects stay
    # their owner's.
    op.execute(f"""
        DO $$
        DECLARE item record;
        BEGIN
            FOR item IN
                SELECT c.relname, c.relkind FROM pg_class c
                JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm')
                  AND pg_get_userbyid(c.relowner) <> '{MIGRATOR}'
                  AND NOT EXISTS (SELECT FROM pg_depend d
                                  WHERE d.objid = c.oid AND d.deptype = 'e')
            LOOP
                EXECUTE format(
                    'ALTER %s %I OWNER TO {MIGRATOR}',
                    CASE item.relkind WHEN 'v' THEN 'VIEW'
                                      WHEN 'm' THEN 'MATERIALIZED VIEW' ELSE 'TABLE' END,
                    item.relname);
            END LOOP;
            FOR item IN
                SELECT c.relname FROM pg_class c
                JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE n.nspname = 'public' AND c.relkind = 'S'
                  AND pg_get_userbyid(c.relowner) <> '{MIGRATOR}'
                  AND NOT EXISTS (SELECT FROM pg_depend d
                                  WHERE d.objid = c.oid AND d.deptype = 'e')
            LOOP
                EXECUTE format('ALTER SEQUENCE %I OWNER TO {MIGRATOR}', item.relname);
            END LOOP;
            FOR item IN
                SELECT p.oid::regprocedure AS signature FROM pg_proc p
                JOIN pg_namespace n ON n.oid = p.pronamespace
                WHERE n.nspname = 'public' AND p.prokind IN ('f', 'p')
                  AND pg_get_userbyid(p.proowner) <> '{MIGRATOR}'
                  AND NOT EXISTS (SELECT FROM pg_depend d
                                  WHERE d.objid = p.oid AND d.deptype = 'e')
            LOOP
                EXECUTE format('ALTER ROUTINE %s OWNER TO {MIGRATOR}', item.signature);
            END LOOP;
        END $$""")


def _grant_runtime_privileges():
    for role in (APP, WORKER):
        op.execute(f"GRANT USAGE ON SCHEMA public TO {role}")
        op.execute(f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {role}")
        op.execute(f"ALTER DEFAULT PRIVILEGES FOR ROLE {MIGRATOR} IN SCHEMA public "
                   f"GRANT USAGE, SELECT ON SEQUENCES TO {role}")
    op.execute(f"GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA public TO {APP}")
    op.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {WORKER}")
    op.execute(f"ALTER DEFAULT PRIVILEGES FOR ROLE {MIGRATOR} IN SCHEMA public "
               f"GRANT SELECT, INSERT, UPDATE ON TABLES TO {APP}")
    op.execute(f"ALTER DEFAULT PRIVILEGES FOR ROLE {MIGRATOR} IN SCHEMA public "
               f"GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {WORKER}")
    for table in APPEND_ONLY:
        op.execute(f"REVOKE UPDATE ON {table} FROM {APP}, {WORKER}")
    # Shops are never deleted (an erased shop stays as a tombstone); only migrations write
    # the schema's version.
    op.execute(f"REVOKE DELETE ON shops FROM {WORKER}")
    op.execute(f"REVOKE INSERT, UPDATE, DELETE ON alembic_version FROM {APP}, {WORKER}")


def _tenant_tables():
    """Every table with a ``shop_id`` column but ``shops``: (name, shop_id is nullable)."""
    rows = op.get_bind().execute(sa.text("""
        SELECT c.table_name, c.is_nullable = 'YES' FROM information_schema.columns c
        JOIN information_schema.tables t
          ON t.table_schema = c.table_schema AND t.table_name = c.table_name
        WHERE c.table_schema = 'public' AND c.column_name = 'shop_id'
          AND t.table_type = 'BASE TABLE' AND c.table_name <> 'shops'
        ORDER BY c.table_name"""))
    return [(name, nullable) for name, nullable in rows]


def _isolate(table, *, shopless_shared):
    own = f"({CURRENT_SHOP} OR shop_id IS NULL)" if shopless_shared else f"({CURRENT_SHOP})"
    op.execute(f'ALTER TABLE "{table}" ENABLE ROW LEVEL SECURITY')
    op.execute(f'CREATE POLICY tenant_isolation ON "{table}" TO {APP}, {WORKER} '
               f"USING {own} WITH CHECK {own}")
    op.execute(f'CREATE POLICY cross_shop_sweep ON "{table}" TO {WORKER} '
               f"USING ({CROSS_SHOP}) WITH CHECK ({CROSS_SHOP})")
