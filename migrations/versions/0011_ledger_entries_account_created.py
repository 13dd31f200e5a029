"""The customer's ledger, newest first, from an index: ledger_entries (account_id, created_at, id).

The ledger page (``GET /api/customers/{id}/ledger`` and the customer page) reads an account's
entries newest first, 25 to 50 at a time, ordered by (created_at, id). Without this index
PostgreSQL either sorts all of the account's entries or walks the whole shop's entries
backwards through ix_ledger_entries_shop_created until it has found a page of this account's.
Measured on bench/pages.py's 1,000,000-entry shop, for customers with 2,000 entries: 1.3 ms
and 5.2 ms (sorting) and 1,554 ms for one whose newest entries were not among the shop's
newest (486,255 other entries read and dropped); with the index, 0.1-0.2 ms for each: a page
is the first rows of one index range, however long the history and however large the shop.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-22
"""
from alembic import op

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None

INDEX = 'ix_ledger_entries_account_created'


def upgrade():
    op.create_index(INDEX, 'ledger_entries', ['account_id', 'created_at', 'id'], unique=False)


def downgrade():
    op.drop_index(INDEX, table_name='ledger_entries')
