"""The liability report's aging from an index: credit_lots (shop_id, expires_at) of active lots,
covering account_id and remaining (PostgreSQL INCLUDE).

Aging sums a shop's active lots' remaining amounts by how long until they expire, per
currency. The lots index by account (ix_credit_lots_account_active) found them, but every
one was then read from the table: on bench/pages.py's 1,000,000-entry shop, 74,908 active
lots on 6,185 heap pages, 20-40 ms warm and several times that when those pages had left the
buffer cache. From this index alone (455 pages) it is 15-20 ms. Lots without an expiry are
in it too (ix_credit_lots_shop_due leaves them out). The cost: a spend that changes a lot's
remaining amount is no longer a HOT update. SQLite has no INCLUDE and gets the plain partial
index.

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-22
"""
import sqlalchemy as sa
from alembic import op

revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None

INDEX = 'ix_credit_lots_shop_active'
ACTIVE = sa.text("status = 'active'")


def upgrade():
    op.create_index(
        INDEX,
        'credit_lots',
        ['shop_id', 'expires_at'],
        unique=False,
        postgresql_include=['account_id', 'remaining'],
        postgresql_where=ACTIVE,
        sqlite_where=ACTIVE,
    )


def downgrade():
    op.drop_index(INDEX, table_name='credit_lots')
