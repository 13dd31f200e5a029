"""An index on every lot of an account (verification and reconciliation read closed lots too).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22
"""
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade():
    op.create_index('ix_credit_lots_account', 'credit_lots', ['account_id'], unique=False)


def downgrade():
    op.drop_index('ix_credit_lots_account', table_name='credit_lots')
