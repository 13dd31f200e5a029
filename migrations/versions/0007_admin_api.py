"""The merchant's admin API: issuance presets, who resolved a finding, audit-log filters.

- ``issuance_presets``: credit packages a merchant picks from when issuing (unique name per
  shop, amount > 0, expiry days null or 1..3650, an issuable source).
- ``reconciliation_findings``: ``resolved_by`` and ``resolution_note`` (a person's resolution),
  and indexes for the merchant's list (newest first, all kinds or one).
- ``audit_log``: indexes for filtering by actor, by action, and to failures, in time order.

On PostgreSQL, ``issuance_presets`` gets the tenant policies every ``shop_id`` table has
(row-level security for the runtime roles), when those roles exist.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-22
"""
from alembic import op
import sqlalchemy as sa

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None

CURRENT_SHOP = "shop_id = nullif(current_setting('app.shop_id', true), '')::bigint"
CROSS_SHOP = "current_setting('app.cross_shop', true) = 'on'"


def upgrade():
    op.create_table('issuance_presets',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('shop_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('amount', sa.BigInteger(), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('expiry_days', sa.Integer(), nullable=True),
    sa.Column('reason', sa.String(length=255), nullable=False),
    sa.Column('source', sa.String(length=16), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint('amount > 0', name=op.f('ck_issuance_presets_amount_positive')),
    sa.CheckConstraint('expiry_days IS NULL OR (expiry_days >= 1 AND expiry_days <= 3650)', name=op.f('ck_issuance_presets_expiry_days_range')),
    sa.CheckConstraint("source IN ('manual', 'goodwill', 'cashback', 'migration')", name=op.f('ck_issuance_presets_source_issuable')),
    sa.ForeignKeyConstraint(['shop_id'], ['shops.id'], name=op.f('fk_issuance_presets_shop_id_shops'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_issuance_presets')),
    sa.UniqueConstraint('shop_id', 'name', name=op.f('uq_issuance_presets_shop_id_name'))
    )
    _isolate('issuance_presets')
    with op.batch_alter_table('reconciliation_findings', schema=None) as batch_op:
        batch_op.add_column(sa.Column('resolved_by', sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column('resolution_note', sa.String(length=1000), nullable=True))
        batch_op.create_index('ix_reconciliation_findings_shop_id', ['shop_id', 'id'], unique=False)
        batch_op.create_index('ix_reconciliation_findings_shop_kind', ['shop_id', 'kind', 'id'], unique=False)

    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.create_index('ix_audit_log_shop_actor_created', ['shop_id', 'actor', 'created_at'], unique=False)
        batch_op.create_index('ix_audit_log_shop_action_created', ['shop_id', 'action', 'created_at'], unique=False)
        batch_op.create_index('ix_audit_log_shop_failures', ['shop_id', 'created_at'], unique=False, postgresql_where=sa.text("outcome = 'failure'"), sqlite_where=sa.text("outcome = 'failure'"))


def downgrade():
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.drop_index('ix_audit_log_shop_failures', postgresql_where=sa.text("outcome = 'failure'"), sqlite_where=sa.text("outcome = 'failure'"))
        batch_op.drop_index('ix_audit_log_shop_action_created')
        batch_op.drop_index('ix_audit_log_shop_actor_created')

    with op.batch_alter_table('reconciliation_findings', schema=None) as batch_op:
        batch_op.drop_index('ix_reconciliation_findings_shop_kind')
        batch_op.drop_index('ix_reconciliation_findings_shop_id')
        batch_op.drop_column('resolution_note')
        batch_op.drop_column('resolved_by')

    op.drop_table('issuance_presets')


def _isolate(table):
    """The tenant policies of migration 0005 (tenant isolation), for a new ``shop_id`` table."""
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(f"""
        DO $$ BEGIN
            IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'creditcraft_app')
               AND EXISTS (SELECT FROM pg_roles WHERE rolname = 'creditcraft_worker') THEN
                ALTER TABLE "{table}" ENABLE ROW LEVEL SECURITY;
                CREATE POLICY tenant_isolation ON "{table}" TO creditcraft_app, creditcraft_worker
                    USING ({CURRENT_SHOP}) WITH CHECK ({CURRENT_SHOP});
                CREATE POLICY cross_shop_sweep ON "{table}" TO creditcraft_worker
                    USING ({CROSS_SHOP}) WITH CHECK ({CROSS_SHOP});
            END IF;
        END $$""")
