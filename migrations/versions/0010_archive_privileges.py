"""The archive by privilege, not only by trigger; and the archive read by shop and time.

- Privileges (PostgreSQL, when the runtime roles of the tenant-isolation migration exist):
  ``ledger_entries_archive``, ``entry_allocations_archive``, ``shopify_outbox_archive`` and
  ``ledger_checkpoints`` are append-only, as ``ledger_entries`` is. The default privileges
  gave them UPDATE (both runtime roles); now neither role has it. Only workers and operator
  commands archive (INSERT here, DELETE from the hot tables): the web's role keeps SELECT
  alone. The worker keeps DELETE for one thing: a shop's erasure (shop/redact), which 0009's
  trigger still allows only for an erased shop's rows.
- ``ix_ledger_entries_archive_shop_created`` (shop_id, created_at, id), covering account_id,
  kind and amount on PostgreSQL like ``ix_ledger_entries_shop_created``: the liability
  report reads a shop's archived entries over a time range, and the ledger CSV export in
  (created_at, id) order, from it.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-23
"""
from alembic import op

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None

APP = "creditcraft_app"
WORKER = "creditcraft_worker"
APPEND_ONLY = (
    'ledger_entries_archive',
    'entry_allocations_archive',
    'shopify_outbox_archive',
    'ledger_checkpoints',
)
INDEX = 'ix_ledger_entries_archive_shop_created'


def upgrade():
    postgres = op.get_bind().dialect.name == 'postgresql'
    op.create_index(
        INDEX,
        'ledger_entries_archive',
        ['shop_id', 'created_at', 'id'],
        unique=False,
        **({'postgresql_include': ['account_id', 'kind', 'amount']} if postgres else {}),
    )
    if postgres:
        for table in APPEND_ONLY:
            _if_roles_exist(f"REVOKE UPDATE ON {table} FROM {APP}, {WORKER}; "
                            f"REVOKE INSERT, DELETE ON {table} FROM {APP}")


def downgrade():
    if op.get_bind().dialect.name == 'postgresql':
        for table in APPEND_ONLY:
            _if_roles_exist(f"GRANT INSERT, UPDATE ON {table} TO {APP}; "
                            f"GRANT UPDATE ON {table} TO {WORKER}")
    op.drop_index(INDEX, table_name='ledger_entries_archive')


def _if_roles_exist(statements):
    """Run ``statements`` when both runtime roles exist (they do after 0005 on PostgreSQL)."""
    op.execute(f"""
        DO $$ BEGIN
            IF EXISTS (SELECT FROM pg_roles WHERE rolname = '{APP}')
               AND EXISTS (SELECT FROM pg_roles WHERE rolname = '{WORKER}') THEN
                {statements};
            END IF;
        END $$""")
