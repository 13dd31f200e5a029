"""What /metrics reads across shops: dead outbox rows by index, and one aggregate function.

- ``ix_shopify_outbox_dead``: a partial index on dead outbox rows (few), so counting them never
  reads the done rows (one per mirrored entry, ever).
- ``creditcraft_ops_counts()`` (PostgreSQL): the native-sync backlog by state, unfinished
  webhook deliveries by state and open reconciliation findings by kind, across every shop.
  Row-level security shows the web role one shop's rows at most; this function runs as its
  owner (the schema owner, whom the policies do not restrict) and answers these counts and
  nothing else, so the web's /metrics can report them without any power to read rows.
  EXECUTE is granted to the runtime roles (when they exist) and to nobody else.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-23
"""
from alembic import op
import sqlalchemy as sa

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None

RUNTIME_ROLES = ("creditcraft_app", "creditcraft_worker")
FUNCTION = "creditcraft_ops_counts()"


def upgrade():
    op.create_index(
        'ix_shopify_outbox_dead', 'shopify_outbox', ['shop_id'], unique=False,
        postgresql_where=sa.text("state = 'dead'"), sqlite_where=sa.text("state = 'dead'"),
    )
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(f"""
        CREATE FUNCTION {FUNCTION}
        RETURNS TABLE (metric text, label text, value bigint)
        LANGUAGE sql STABLE SECURITY DEFINER
        SET search_path = public, pg_temp
        AS $$
            SELECT 'native_sync_backlog'::text,
                   CASE WHEN ambiguous THEN 'ambiguous' ELSE state END::text, count(*)
              FROM public.shopify_outbox WHERE state IN ('pending', 'in_flight') GROUP BY 1, 2
            UNION ALL
            SELECT 'native_sync_backlog', 'dead', count(*)
              FROM public.shopify_outbox WHERE state = 'dead'
            UNION ALL
            SELECT 'webhook_backlog', state, count(*) FROM public.webhook_events
             WHERE state IN ('received', 'processing') GROUP BY 1, 2
            UNION ALL
            SELECT 'findings_open', kind, count(*) FROM public.reconciliation_findings
             WHERE resolved_at IS NULL GROUP BY 1, 2
        $$""")
    op.execute(f"REVOKE ALL ON FUNCTION {FUNCTION} FROM PUBLIC")
    for role in RUNTIME_ROLES:
        op.execute(f"""
            DO $$ BEGIN
                IF EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') THEN
                    GRANT EXECUTE ON FUNCTION {FUNCTION} TO {role};
                END IF;
            END $$""")


def downgrade():
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP FUNCTION IF EXISTS {FUNCTION}")
    op.drop_index('ix_shopify_outbox_dead', table_name='shopify_outbox',
                  postgresql_where=sa.text("state = 'dead'"), sqlite_where=sa.text("state = 'dead'"))
