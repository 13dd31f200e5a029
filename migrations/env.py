"""Alembic environment, run through Flask-Migrate (`flask db ...`) inside the app context."""

import logging
from logging.config import fileConfig

from alembic import context
from flask import current_app
from sqlalchemy import text

config = context.config
if config.config_file_name is not None:
    # Keep the app's (and pytest's) loggers working after a migration runs.
    fileConfig(config.config_file_name, disable_existing_loggers=False)
logger = logging.getLogger("alembic.env")

target_db = current_app.extensions["migrate"].db
config.set_main_option(
    "sqlalchemy.url", target_db.engine.url.render_as_string(hide_password=False).replace("%", "%%")
)


def run_migrations_offline():
    """Emit SQL for the configured URL instead of running it."""
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_db.metadata,
        literal_binds=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online():
    """Run the migrations on a connection of the app's engine."""

    def skip_empty_autogenerate(context, revision, directives):
        # An autogenerate that finds no change should write no empty revision.
        if getattr(config.cmd_opts, "autogenerate", False) and directives[0].upgrade_ops.is_empty():
            directives[:] = []
            logger.info("No changes in schema detected.")

    conf_args = current_app.extensions["migrate"].configure_args
    conf_args.setdefault("process_revision_directives", skip_empty_autogenerate)
    conf_args.setdefault("on_version_apply", lambda ctx, **_: act_as_schema_owner(ctx.connection))
    with target_db.engine.connect() as connection:
        context.configure(connection=connection, target_metadata=target_db.metadata, **conf_args)
        with context.begin_transaction():
            act_as_schema_owner(connection)
            context.run_migrations()


SCHEMA_OWNER = "creditcraft_migrator"  # created by migration 0005
_OWNER_USABLE = text(
    "SELECT pg_has_role(current_user, oid, 'MEMBER') AND current_user <> rolname"
    " AND has_schema_privilege(oid, 'public', 'CREATE') FROM pg_roles WHERE rolname = :owner"
)


def act_as_schema_owner(connection):
    """On PostgreSQL, migrate as the schema's owner role, whichever login runs the migrations.

    Once migration 0005 has created ``creditcraft_migrator`` (and let it create in ``public``),
    every migration runs under ``SET LOCAL ROLE`` to it (for the migration transaction), so all
    objects share one owner and its default privileges grant the runtime roles their access.
    Called when the transaction starts and after each step (0005 may just have created it).
    """
    if connection.dialect.name != "postgresql":
        return
    if connection.execute(_OWNER_USABLE, {"owner": SCHEMA_OWNER}).scalar():
        connection.execute(text(f"SET LOCAL ROLE {SCHEMA_OWNER}"))


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
